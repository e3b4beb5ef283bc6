//! `state_ttl` through the operator: a plain `GROUP BY` planned from SQL,
//! its groups expiring by a test's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use crate::operators::operator::Operator;
use crate::operators::updating_aggregate::UpdatingOperator;
use crate::sql::planner::StreamingPlanner;
use crate::sql::program::Program;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("city", DataType::Utf8, false)]))
}

fn cities(names: &[&str]) -> RecordBatch {
    RecordBatch::try_new(schema(), vec![Arc::new(StringArray::from(names.to_vec()))])
        .unwrap_or_else(|e| panic!("a batch: {e}"))
}

/// The operator of `SELECT city, count(*) ... GROUP BY city` with a 10 s
/// time to live, on the clock `now` (ms).
async fn operator(now: &Arc<AtomicI64>) -> UpdatingOperator {
    let planner = StreamingPlanner::new(vec![]);
    let planned = planner
        .plan(
            "SELECT city, count(*) AS n FROM deals GROUP BY city",
            &[("deals".into(), schema())],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Program::Updating {
        below,
        aggregate,
        above,
        ..
    } = planned.program
    else {
        panic!("not an updating aggregate")
    };
    let read = now.clone();
    UpdatingOperator::with_clock(
        below,
        &aggregate,
        above,
        Some(Duration::from_secs(10)),
        Arc::new(move || read.load(Ordering::SeqCst)),
        planner.task_ctx().unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// (city, n) of a checkpoint's upserts, sorted.
async fn upserts(op: &mut UpdatingOperator) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in op.on_checkpoint().await.unwrap_or_else(|e| panic!("{e}")) {
        let city = b.column(0).as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((city.value(i).to_string(), n.value(i)));
        }
    }
    out.sort();
    out
}

fn rows(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

#[tokio::test]
async fn a_group_not_updated_for_the_ttl_starts_again_and_the_others_keep_counting() {
    let now = Arc::new(AtomicI64::new(1_000_000));
    let mut op = operator(&now).await;
    op.on_batch("deals", cities(&["bj", "bj", "wh"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(upserts(&mut op).await, rows(&[("bj", 2), ("wh", 1)]));

    now.fetch_add(6_000, Ordering::SeqCst);
    op.on_batch("deals", cities(&["bj"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(upserts(&mut op).await, rows(&[("bj", 3)]));

    // wh is 10 s old at this checkpoint: forgotten. bj (4 s) is kept, also
    // through a checkpoint and a restore.
    now.fetch_add(4_000, Ordering::SeqCst);
    assert!(upserts(&mut op).await.is_empty());
    let state = op.snapshot().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.as_ref().map(|s| s.num_rows()), Some(1));
    let mut op = operator(&now).await;
    op.restore(state, None).unwrap_or_else(|e| panic!("{e}"));

    op.on_batch("deals", cities(&["wh", "bj"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(upserts(&mut op).await, rows(&[("bj", 4), ("wh", 1)]));

    // The restored times are bj's own: 10 s after its last update it goes.
    now.fetch_add(10_000, Ordering::SeqCst);
    assert!(upserts(&mut op).await.is_empty());
    assert_eq!(op.snapshot().unwrap_or_else(|e| panic!("{e}")), None);
}
