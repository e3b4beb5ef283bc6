//! OVER aggregations on a stream against a brute-force reference, with
//! disorder within the watermark delay, random batch boundaries and state
//! checkpointed and restored mid-stream.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::operators::layer_query::LayerQuery;
use crate::sql::planner::{StreamingPlanner, TIME_COLUMN_KEY};

const SEC: i64 = 1_000_000;
const DELAY: i64 = 20 * SEC;

#[derive(Clone, Debug)]
struct Deal {
    agent: String,
    amount: i64,
    ts: i64,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("agent", DataType::Utf8, false),
            Field::new("amount", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ],
        HashMap::from([(TIME_COLUMN_KEY.to_string(), "ts".to_string())]),
    ))
}

/// Deals a few seconds apart (distinct times), shuffled within the delay.
fn deals(seed: u64, n: usize) -> Vec<Deal> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = 1_795_000_000 * SEC;
    let mut out: Vec<Deal> = (0..n)
        .map(|i| Deal {
            agent: format!("a{}", rng.random_range(0..5)),
            amount: rng.random_range(1..1000),
            ts: base + i as i64 * 3 * SEC + rng.random_range(0..SEC),
        })
        .collect();
    for i in 0..out.len() {
        let j = (i + rng.random_range(0..5)).min(out.len() - 1);
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

type Row = (String, i64, i64, i64);

/// Streams `input` through `sql` in random batches, with a watermark after
/// each and a snapshot/restore into a fresh query every few batches; then a
/// final watermark past every row. Rows behind the watermark are held back,
/// as the layer sends them to its late table: returns the results and the
/// rows that went in.
async fn run(sql: &str, input: &[Deal], seed: u64) -> (BTreeSet<Row>, Vec<Deal>) {
    let planner = StreamingPlanner::new(vec![]);
    let plan = || async {
        planner
            .plan(sql, &[("deals".into(), schema())])
            .await
            .unwrap()
    };
    let mut query = LayerQuery::new(plan().await, planner.task_ctx().unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let (mut i, mut max_ts, mut batches) = (0, i64::MIN, 0);
    let mut on_time = Vec::new();
    while i < input.len() {
        let n = rng.random_range(1..40).min(input.len() - i);
        let watermark = max_ts.saturating_sub(DELAY);
        let rows: Vec<Deal> = input[i..i + n]
            .iter()
            .filter(|d| d.ts >= watermark)
            .cloned()
            .collect();
        i += n;
        on_time.extend(rows.iter().cloned());
        max_ts = max_ts.max(rows.iter().map(|d| d.ts).max().unwrap_or(i64::MIN));
        out.extend(query.on_batch("deals", batch(&rows)).await.unwrap().rows);
        out.extend(query.on_watermark(max_ts - DELAY).await.unwrap());
        batches += 1;
        if batches % 7 == 0 {
            let state = query.snapshot().unwrap();
            query = LayerQuery::new(plan().await, planner.task_ctx().unwrap()).unwrap();
            query.restore(state, Some(max_ts - DELAY)).unwrap();
        }
    }
    out.extend(query.on_watermark(i64::MAX).await.unwrap());
    let mut rows = Vec::new();
    for b in &out {
        let agent = b.column_by_name("agent").unwrap().as_string::<i32>();
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let total = b
            .column_by_name("total")
            .unwrap()
            .as_primitive::<Int64Type>();
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            rows.push((
                agent.value(r).to_string(),
                ts.value(r),
                total.value(r),
                n.value(r),
            ));
        }
    }
    let set: BTreeSet<Row> = rows.iter().cloned().collect();
    assert_eq!(set.len(), rows.len(), "a row was emitted twice");
    assert!(
        on_time.len() > input.len() * 9 / 10,
        "most rows must be on time"
    );
    (set, on_time)
}

fn assert_same(got: &BTreeSet<Row>, want: &BTreeSet<Row>) {
    let missing: Vec<_> = want.difference(got).take(3).collect();
    let extra: Vec<_> = got.difference(want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} rows differ ({} got, {} wanted): missing {missing:?}, extra {extra:?}",
        want.symmetric_difference(got).count(),
        got.len(),
        want.len()
    );
}

fn reference(input: &[Deal], in_frame: impl Fn(&Deal, &[&Deal]) -> Vec<i64>) -> BTreeSet<Row> {
    let mut out = BTreeSet::new();
    for d in input {
        let mut same: Vec<&Deal> = input
            .iter()
            .filter(|o| o.agent == d.agent && o.ts <= d.ts)
            .collect();
        same.sort_by_key(|o| o.ts);
        let amounts = in_frame(d, &same);
        out.insert((
            d.agent.clone(),
            d.ts,
            amounts.iter().sum(),
            amounts.len() as i64,
        ));
    }
    out
}

#[tokio::test]
async fn range_frames_equal_the_reference() {
    let input = deals(11, 600);
    let (got, input) = run(
        "SELECT agent, ts, SUM(amount) OVER w AS total, COUNT(*) OVER w AS n FROM deals \
         WINDOW w AS (PARTITION BY agent ORDER BY ts RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW)",
        &input,
        5,
    )
    .await;
    let want = reference(&input, |d, same| {
        same.iter()
            .filter(|o| o.ts >= d.ts - 60 * SEC)
            .map(|o| o.amount)
            .collect()
    });
    assert_same(&got, &want);
}

#[tokio::test]
async fn rows_frames_equal_the_reference() {
    let input = deals(12, 600);
    let (got, input) = run(
        "SELECT agent, ts, SUM(amount) OVER (PARTITION BY agent ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS total, \
         COUNT(*) OVER (PARTITION BY agent ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS n FROM deals",
        &input,
        6,
    )
    .await;
    let want = reference(&input, |_, same| {
        same.iter().rev().take(4).map(|o| o.amount).collect()
    });
    assert_same(&got, &want);
}

#[tokio::test]
async fn unbounded_or_unordered_over_is_refused_with_what_to_write() {
    let planner = StreamingPlanner::new(vec![]);
    for (sql, needle) in [
        (
            "SELECT agent, SUM(amount) OVER (PARTITION BY agent ORDER BY ts) AS s FROM deals",
            "must be bounded",
        ),
        (
            "SELECT agent, SUM(amount) OVER (PARTITION BY agent ORDER BY amount ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM deals",
            "event time",
        ),
        (
            "SELECT agent, ROW_NUMBER() OVER (PARTITION BY agent ORDER BY ts) AS r FROM deals",
            "window Top-N",
        ),
    ] {
        let err = match planner.plan(sql, &[("deals".into(), schema())]).await {
            Ok(_) => panic!("{sql} should not plan"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{sql}: {err}");
    }
}
