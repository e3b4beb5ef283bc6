//! Window queries against a brute-force reference, with disorder within the
//! watermark delay and state checkpointed and restored mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::sql::planner::StreamingPlanner;

const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;
const DELAY: i64 = 20 * SEC;

#[derive(Clone, Debug)]
struct Deal {
    city: &'static str,
    agent: String,
    amount: i64,
    ts: i64,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("agent", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Deals over ~30 minutes, each arriving up to DELAY late (never more).
fn deals(seed: u64, n: usize) -> Vec<Deal> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = 1_795_000_000 * SEC;
    let mut out: Vec<Deal> = (0..n)
        .map(|i| Deal {
            city: ["beijing", "shanghai", "shenzhen"][rng.random_range(0..3)],
            agent: format!("a{}", rng.random_range(0..12)),
            amount: rng.random_range(1..10_000),
            ts: base + (i as i64) * 30 * MIN / n as i64,
        })
        .collect();
    // Disorder within the delay: swap each row with a later one close in time.
    for i in 0..out.len() {
        let j = (i + rng.random_range(0..8)).min(out.len() - 1);
        if out[j].ts - out[i].ts < DELAY {
            out.swap(i, j);
        }
    }
    out
}

fn batch(rows: &[Deal]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|d| d.city))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|d| d.agent.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|d| d.amount))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|d| d.ts))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

/// Feeds `rows` in batches of 50, advancing the watermark (max seen - DELAY)
/// after each; takes a checkpoint after each batch and goes on with the same
/// query (as epochs do: its windows are left frozen), and restores one into
/// a fresh query half way; ends with a watermark past everything.
async fn run(sql: &str, rows: &[Deal]) -> Vec<RecordBatch> {
    let planner = StreamingPlanner::new(vec![]);
    let inputs = vec![("deals".to_string(), schema())];
    let plan = || async { planner.plan(sql, &inputs).await.unwrap() };
    let mut query = LayerQuery::new(plan().await, planner.task_ctx().unwrap()).unwrap();
    let mut out = Vec::new();
    let mut max_ts = i64::MIN;
    for (i, chunk) in rows.chunks(50).enumerate() {
        if i == rows.len() / 100 {
            let state = query.snapshot().unwrap();
            query = LayerQuery::new(plan().await, planner.task_ctx().unwrap()).unwrap();
            let watermark = (max_ts > i64::MIN).then(|| max_ts - DELAY);
            query.restore(state, watermark).unwrap();
        }
        let emitted = query.on_batch("deals", batch(chunk)).await.unwrap();
        assert!(
            emitted.late.is_empty(),
            "disorder within the delay is never late"
        );
        out.extend(emitted.rows);
        max_ts = max_ts.max(chunk.iter().map(|d| d.ts).max().unwrap());
        out.extend(query.on_watermark(max_ts - DELAY).await.unwrap());
        query.snapshot().unwrap();
    }
    out.extend(query.on_watermark(i64::MAX).await.unwrap());
    out
}

type Key = (i64, i64, String);

/// (window_start, window_end, key) -> (count, sum, distinct agents).
fn reference(
    rows: &[Deal],
    windows: impl Fn(i64) -> Vec<(i64, i64)>,
    key: impl Fn(&Deal) -> String,
) -> BTreeMap<Key, (i64, i64, i64)> {
    let mut acc: BTreeMap<Key, (i64, i64, BTreeSet<String>)> = BTreeMap::new();
    for d in rows {
        for (s, e) in windows(d.ts) {
            let slot = acc.entry((s, e, key(d))).or_default();
            slot.0 += 1;
            slot.1 += d.amount;
            slot.2.insert(d.agent.clone());
        }
    }
    acc.into_iter()
        .map(|(k, (c, s, a))| (k, (c, s, a.len() as i64)))
        .collect()
}

fn collect(out: &[RecordBatch], key: &str) -> BTreeMap<Key, (i64, i64, i64)> {
    let mut got = BTreeMap::new();
    for b in out {
        let start = b
            .column_by_name("window_start")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let end = b
            .column_by_name("window_end")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let k = b.column_by_name(key).unwrap().as_string::<i32>();
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        let total = b
            .column_by_name("total")
            .unwrap()
            .as_primitive::<Int64Type>();
        let agents = b
            .column_by_name("agents")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let previous = got.insert(
                (start.value(i), end.value(i), k.value(i).to_string()),
                (n.value(i), total.value(i), agents.value(i)),
            );
            assert!(
                previous.is_none(),
                "window emitted twice: {:?}",
                (start.value(i), k.value(i))
            );
        }
    }
    got
}

const AGGS: &str = "COUNT(*) AS n, SUM(amount) AS total, COUNT(DISTINCT agent) AS agents";

#[tokio::test]
async fn tumble_equals_the_reference() {
    let rows = deals(1, 3000);
    let sql = format!(
        "SELECT window_start, window_end, city, {AGGS} FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, city"
    );
    let got = collect(&run(&sql, &rows).await, "city");
    let want = reference(
        &rows,
        |ts| vec![(ts - ts.rem_euclid(MIN), ts - ts.rem_euclid(MIN) + MIN)],
        |d| d.city.to_string(),
    );
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[tokio::test]
async fn hop_equals_the_reference() {
    let rows = deals(2, 2000);
    let sql = format!(
        "SELECT window_start, window_end, city, {AGGS} FROM TABLE(HOP(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '3' MINUTE)) GROUP BY window_start, window_end, city"
    );
    let got = collect(&run(&sql, &rows).await, "city");
    let want = reference(
        &rows,
        |ts| {
            let last = ts - ts.rem_euclid(MIN);
            (0..3)
                .map(|k| (last - k * MIN, last - k * MIN + 3 * MIN))
                .collect()
        },
        |d| d.city.to_string(),
    );
    assert_eq!(got, want);
}

#[tokio::test]
async fn cumulate_equals_the_reference() {
    let rows = deals(3, 2000);
    let sql = format!(
        "SELECT window_start, window_end, city, {AGGS} FROM TABLE(CUMULATE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)) GROUP BY window_start, window_end, city"
    );
    let got = collect(&run(&sql, &rows).await, "city");
    let want = reference(
        &rows,
        |ts| {
            let start = ts - ts.rem_euclid(5 * MIN);
            (1..=5)
                .map(|k| (start, start + k * MIN))
                .filter(|(_, e)| *e > ts)
                .collect()
        },
        |d| d.city.to_string(),
    );
    assert_eq!(got, want);
}

#[tokio::test]
async fn session_equals_the_reference() {
    // Sparse rows, so sessions per agent have gaps.
    let mut rows = deals(4, 400);
    for (i, d) in rows.iter_mut().enumerate() {
        d.ts += (i as i64 % 7) * 17 * SEC;
    }
    let gap = 45 * SEC;
    let sql = format!(
        "SELECT window_start, window_end, agent, {AGGS} FROM TABLE(SESSION(TABLE deals PARTITION BY agent, DESCRIPTOR(ts), INTERVAL '45' SECOND)) GROUP BY window_start, window_end, agent"
    );
    // Disorder must stay within the delay for the reference to hold.
    let mut sorted = rows.clone();
    sorted.sort_by_key(|d| d.ts);
    let got = collect(&run(&sql, &sorted).await, "agent");
    let mut want: BTreeMap<Key, (i64, i64, i64)> = BTreeMap::new();
    let mut by_agent: BTreeMap<String, Vec<&Deal>> = BTreeMap::new();
    for d in &sorted {
        by_agent.entry(d.agent.clone()).or_default().push(d);
    }
    for (agent, ds) in by_agent {
        let mut session: Vec<&Deal> = Vec::new();
        let mut flush = |session: &mut Vec<&Deal>| {
            if let (Some(first), Some(last)) = (session.first(), session.last()) {
                want.insert(
                    (first.ts, last.ts + gap, agent.clone()),
                    (
                        session.len() as i64,
                        session.iter().map(|d| d.amount).sum(),
                        1,
                    ),
                );
            }
            session.clear();
        };
        for d in ds {
            if session.last().is_some_and(|l| d.ts - l.ts >= gap) {
                flush(&mut session);
            }
            session.push(d);
        }
        flush(&mut session);
    }
    assert!(want.len() > 20, "the data should make many sessions");
    assert_eq!(got, want);
}

#[tokio::test]
async fn top_n_per_window() {
    let rows = deals(5, 3000);
    let sql = "SELECT window_start, window_end, city, total FROM (\
        SELECT window_start, window_end, city, SUM(amount) AS total, \
               ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY SUM(amount) DESC) AS rn \
        FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) \
        GROUP BY window_start, window_end, city) WHERE rn <= 2";
    let out = run(sql, &rows).await;
    let mut got: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for b in &out {
        let start = b
            .column_by_name("window_start")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let city = b.column_by_name("city").unwrap().as_string::<i32>();
        let total = b
            .column_by_name("total")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            got.entry(start.value(i))
                .or_default()
                .push((total.value(i), city.value(i).to_string()));
        }
    }
    let want = reference(
        &rows,
        |ts| vec![(ts - ts.rem_euclid(MIN), 0)],
        |d| d.city.to_string(),
    );
    let mut want_top: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for ((start, _, city), (_, total, _)) in want {
        want_top.entry(start).or_default().push((total, city));
    }
    for v in want_top.values_mut() {
        v.sort_by(|a, b| b.cmp(a));
        v.truncate(2);
    }
    for v in got.values_mut() {
        v.sort_by(|a, b| b.cmp(a));
    }
    assert_eq!(got, want_top);
}

#[tokio::test]
async fn plain_group_by_emits_changed_groups_at_checkpoints() {
    let planner = StreamingPlanner::new(vec![]);
    let inputs = vec![("deals".to_string(), schema())];
    let planned = planner
        .plan(
            "SELECT city, COUNT(*) AS n FROM deals GROUP BY city",
            &inputs,
        )
        .await
        .unwrap();
    let mut q = LayerQuery::new(planned, planner.task_ctx().unwrap()).unwrap();
    assert!(q.is_updating());
    let d = |city| Deal {
        city,
        agent: "a".into(),
        amount: 1,
        ts: 0,
    };
    q.on_batch("deals", batch(&[d("beijing"), d("beijing"), d("wuhan")]))
        .await
        .unwrap();
    let first = q.on_checkpoint().await.unwrap();
    assert_eq!(first.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    q.on_batch("deals", batch(&[d("wuhan")])).await.unwrap();
    let second = q.on_checkpoint().await.unwrap();
    let b = &second[0];
    assert_eq!(b.num_rows(), 1, "only wuhan changed");
    assert_eq!(b.column(0).as_string::<i32>().value(0), "wuhan");
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 2);
    assert!(q.on_checkpoint().await.unwrap().is_empty());
}

#[tokio::test]
async fn unsupported_queries_say_what_to_write() {
    let planner = StreamingPlanner::new(vec![]);
    let inputs = vec![("deals".to_string(), schema())];
    for (sql, needle) in [
        (
            "SELECT * FROM deals ORDER BY ts",
            "ORDER BY over a whole stream",
        ),
        ("SELECT * FROM deals LIMIT 5", "ROW_NUMBER()"),
        (
            "SELECT window_start, city, ROW_NUMBER() OVER (PARTITION BY city ORDER BY SUM(amount)) FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, city",
            "PARTITION BY window_start",
        ),
        (
            "SELECT city, COUNT(*) FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY city",
            "GROUP BY window_start, window_end",
        ),
        (
            "SELECT COUNT(*) AS n FROM deals GROUP BY city",
            "select `city`",
        ),
        (
            "SELECT * FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(city), INTERVAL '1' MINUTE))",
            "timestamp",
        ),
        ("SELECT 1 AS one", "reads no input"),
        ("SELECT city, COUNT(*) FROM deals GROUP BY city", "alias it"),
    ] {
        let err = match planner.plan(sql, &inputs).await {
            Ok(_) => panic!("{sql} should not plan"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{sql}: {err}");
    }
}

/// Output rows keyed by (window_start, city), with the named Int64 columns.
fn by_window(out: &[RecordBatch], columns: &[&str]) -> BTreeMap<(i64, String), Vec<i64>> {
    let mut got = BTreeMap::new();
    for b in out {
        let start = b
            .column_by_name("window_start")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let city = b.column_by_name("city").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let values = columns
                .iter()
                .map(|c| {
                    b.column_by_name(c)
                        .unwrap()
                        .as_primitive::<Int64Type>()
                        .value(i)
                })
                .collect();
            let previous = got.insert((start.value(i), city.value(i).to_string()), values);
            assert!(previous.is_none(), "window emitted twice");
        }
    }
    got
}

/// A layer's SQL gains an aggregate (and reorders the others) between a
/// checkpoint and its restore: the kept aggregates' open windows go on
/// exactly (equal to the reference over every row), the new one counts
/// only the rows read after the restore; another window size is refused
/// by the layout check.
#[tokio::test]
async fn a_new_aggregate_carries_the_old_state_over() {
    use crate::evolution::{StateLayout, carry_over};
    let rows = deals(3, 3000);
    let tumble = |aggs: &str, size: &str| {
        format!(
            "SELECT window_start, window_end, city, {aggs} FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '{size}' MINUTE)) GROUP BY window_start, window_end, city"
        )
    };
    let v1 = tumble("COUNT(*) AS n, COUNT(DISTINCT agent) AS agents", "1");
    let v2 = tumble(
        "SUM(amount) AS total, COUNT(*) AS n, COUNT(DISTINCT agent) AS agents",
        "1",
    );
    let planner = StreamingPlanner::new(vec![]);
    let inputs = vec![("deals".to_string(), schema())];
    let layout = |p: &PlannedQuery| StateLayout::of(&p.program, "", "").unwrap();
    let (p1, p2) = (
        planner.plan(&v1, &inputs).await.unwrap(),
        planner.plan(&v2, &inputs).await.unwrap(),
    );
    let p3 = planner
        .plan(&tumble("COUNT(*) AS n", "2"), &inputs)
        .await
        .unwrap();
    let carry = carry_over(&layout(&p1), &layout(&p2)).unwrap();
    assert_eq!(carry.fresh, vec!["sum(deals.amount)"], "{carry:?}");
    assert_eq!(carry.kept.len(), 2, "{carry:?}");
    assert!(carry_over(&layout(&p1), &layout(&p3)).is_err());

    let half = rows.len() / 2;
    let mut query = LayerQuery::new(p1, planner.task_ctx().unwrap()).unwrap();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut max_ts = i64::MIN;
    for chunk in rows[..half].chunks(50) {
        query.on_batch("deals", batch(chunk)).await.unwrap();
        max_ts = max_ts.max(chunk.iter().map(|d| d.ts).max().unwrap());
        before.extend(query.on_watermark(max_ts - DELAY).await.unwrap());
    }
    let state = query.snapshot().unwrap();
    let mut query = LayerQuery::new(p2, planner.task_ctx().unwrap()).unwrap();
    query.restore_carried(state, Some(max_ts - DELAY)).unwrap();
    for chunk in rows[half..].chunks(50) {
        query.on_batch("deals", batch(chunk)).await.unwrap();
        max_ts = max_ts.max(chunk.iter().map(|d| d.ts).max().unwrap());
        after.extend(query.on_watermark(max_ts - DELAY).await.unwrap());
    }
    after.extend(query.on_watermark(i64::MAX).await.unwrap());

    let minute = |ts: i64| vec![(ts - ts.rem_euclid(MIN), ts - ts.rem_euclid(MIN) + MIN)];
    let want = reference(&rows, minute, |d| d.city.to_string());
    let late_sums = reference(&rows[half..], minute, |d| d.city.to_string());
    let mut got = by_window(&before, &["n", "agents"]);
    let got_after = by_window(&after, &["n", "agents", "total"]);
    assert!(!got.is_empty() && !got_after.is_empty());
    for ((start, city), values) in &got_after {
        let new_rows_sum = late_sums
            .get(&(*start, start + MIN, city.clone()))
            .map_or(0, |v| v.1);
        assert_eq!(values[2], new_rows_sum, "total of {start} {city}");
        got.insert((*start, city.clone()), values[..2].to_vec());
    }
    let want: BTreeMap<(i64, String), Vec<i64>> = want
        .into_iter()
        .map(|((s, _, c), (n, _, a))| ((s, c), vec![n, a]))
        .collect();
    assert_eq!(got, want);
}
