//! Generated SQL of every shape that once overflowed a stack (operator
//! chains, huge IN lists, long ORs on a Delta table, UNION chains, nesting
//! past the parser's limit), at, just past and far past the depth limit,
//! through a real server: each statement runs or is refused with a clear
//! status, the process survives (a stack overflow would abort this test
//! binary), and the server answers `SELECT 1` afterwards.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::limits::for_tests;
use crate::test_server::{client, run, start_server};

/// The limit for the generated statements (small, so the test is quick;
/// the threads' stacks are sized from it as from any other).
const DEPTH: usize = 300;
/// `serve.limits.expression_depth`'s default.
const DEFAULT_DEPTH: usize = 1_000;

/// `n` operands joined by operators drawn from `ops`.
fn chain(
    rng: &mut StdRng,
    n: usize,
    ops: &[&str],
    operand: &dyn Fn(&mut StdRng) -> String,
) -> String {
    let mut out = operand(rng);
    for _ in 1..n {
        out.push(' ');
        out.push_str(ops[rng.random_range(0..ops.len())]);
        out.push(' ');
        out.push_str(&operand(rng));
    }
    out
}

/// Statements of `n` terms in every shape.
fn statements(rng: &mut StdRng, n: usize) -> Vec<String> {
    let number = |rng: &mut StdRng| rng.random_range(0..100).to_string();
    let column =
        |rng: &mut StdRng| ["id", "amount", "1", "2.5"][rng.random_range(0..4)].to_string();
    let condition = |rng: &mut StdRng| format!("id = {}", rng.random_range(0..20_000));
    let values: Vec<String> = (0..n).map(|i| (i * 7).to_string()).collect();
    let cities: Vec<String> = (0..n).map(|i| format!("'c{i}'")).collect();
    let nest = n.min(200);
    vec![
        format!("SELECT {}", chain(rng, n, &["+"], &number)),
        format!("SELECT {}", chain(rng, n, &["+", "-", "*"], &number)),
        format!("SELECT {}", chain(rng, n, &["||"], &|_| "'a'".to_string())),
        format!(
            "SELECT {} FROM ods.deals",
            chain(rng, n, &["+", "*", "-"], &column)
        ),
        format!(
            "SELECT count(*) FROM ods.deals WHERE {}",
            chain(rng, n, &["OR"], &condition)
        ),
        format!(
            "SELECT count(*) FROM ods.deals WHERE {}",
            chain(rng, n, &["AND", "OR"], &condition)
        ),
        format!(
            "SELECT count(*) FROM ods.deals WHERE id IN ({})",
            values.join(", ")
        ),
        format!(
            "SELECT count(*) FROM ods.deals WHERE city NOT IN ({})",
            cities.join(", ")
        ),
        format!(
            "SELECT count(*) FROM ods.deals a JOIN ods.deals b ON a.id = b.id AND {} WHERE {}",
            chain(rng, n / 2, &["AND"], &|rng| format!(
                "a.amount > {}",
                rng.random_range(0..9)
            )),
            chain(rng, n / 2, &["AND"], &|rng| format!(
                "b.id <> {}",
                rng.random_range(0..9)
            ))
        ),
        vec!["SELECT 1"; n.min(2_000)].join(" UNION ALL "),
        format!("SELECT {}1{}", "(".repeat(nest), ")".repeat(nest)),
        format!("SELECT {}1{}", "abs(".repeat(nest), ")".repeat(nest)),
        format!("SELECT {}true", "NOT ".repeat(nest)),
        format!(
            "SELECT {}1{}",
            "CASE WHEN true THEN ".repeat(nest),
            " END".repeat(nest)
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_overflows_a_stack_or_stops_the_server() {
    let mut limits = for_tests();
    limits.expression_depth = DEPTH;
    let server = start_server(limits).await;
    let mut client = client(server.addr).await;
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("STRATA_TEST_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sizes = vec![DEPTH / 2, DEPTH - 2, DEPTH + 1, 2 * DEPTH + 1, 20 * DEPTH];
    sizes.extend((0..3).map(|_| rng.random_range(2..3 * DEPTH)));
    let (mut ran, mut refused) = (0, 0);
    for n in sizes {
        for sql in statements(&mut rng, n) {
            match run(&mut client, &sql).await {
                Ok(_) => ran += 1,
                Err(s) => {
                    refused += 1;
                    assert!(
                        matches!(
                            s.code(),
                            Code::InvalidArgument | Code::ResourceExhausted | Code::NotFound
                        ),
                        "{n} terms, {:?}: {} ({}...)",
                        s.code(),
                        s.message(),
                        &sql[..sql.len().min(120)]
                    );
                }
            }
        }
    }
    println!("{ran} statements ran, {refused} were refused");
    assert!(ran > 0 && refused > 0);
    // Operator chains within the limit run, and give the right answer.
    let ones = vec!["1"; DEPTH - 1].join(" + ");
    assert_eq!(
        run(&mut client, &format!("SELECT {ones}")).await.unwrap(),
        1
    );
    // A long chain past it is refused before planning, saying why.
    let e = run(
        &mut client,
        &format!("SELECT {}", vec!["1"; 2 * DEPTH].join("+")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("expression_depth"), "{}", e.message());
    assert_eq!(run(&mut client, "SELECT 1").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_statements_the_default_limit_accepts_fit_the_stacks() {
    let mut limits = for_tests();
    limits.expression_depth = DEFAULT_DEPTH;
    let server = start_server(limits).await;
    let mut client = client(server.addr).await;
    let n = DEFAULT_DEPTH - 1;
    let terms = |f: &dyn Fn(usize) -> String, n: usize, op: &str| {
        (0..n).map(f).collect::<Vec<_>>().join(op)
    };
    let columns = ["id", "amount"];
    for sql in [
        // The most stack per level: evaluated over a table's columns.
        format!(
            "SELECT {} FROM ods.deals",
            terms(&|i| columns[i % 2].to_string(), n, " - ")
        ),
        format!(
            "SELECT count(*) FROM ods.deals WHERE {}",
            terms(&|i| format!("id = {i}"), n / 2, " OR ")
        ),
        format!(
            "SELECT count(*) FROM ods.deals WHERE id IN ({})",
            terms(&|i| i.to_string(), 16 * n, ", ")
        ),
    ] {
        let rows = run(&mut client, &sql).await;
        assert!(rows.is_ok(), "{:?}: {}...", rows, &sql[..80]);
    }
}
