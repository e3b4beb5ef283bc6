//! Epochs while a backlog is caught up: a fast source in front of a slow
//! layer fills every edge, and each barrier waits behind what is queued on
//! it. Edges bounded by the time their receiver takes to drain them
//! (`dataflow::edge_budget`) keep epochs near the checkpoint interval;
//! edges of 16 batches made them last as long as 16 batches take.
//!
//! Virtual time (tokio's paused clock): the slow layer's table takes
//! [`PER_ROW`] per row written, so every figure is exact, not a timing.

use std::time::Duration;

use crate::testing::harness::{Harness, deal_json};

const SEC: i64 = 1_000_000;
/// 2026-10-05T08:00:00Z.
const BASE: i64 = 1_791_187_200 * SEC;
const INTERVAL: Duration = Duration::from_secs(1);
/// The slow layer: 10,000 rows/s.
const PER_ROW: Duration = Duration::from_micros(100);
/// The source reads 2,048 records per 10 ms step: 200,000 records/s.
const SOURCE_BATCH: usize = 2048;
const RECORDS: usize = 60_000;

#[tokio::test(start_paused = true)]
async fn epochs_stay_near_the_interval_while_a_slow_layer_catches_up() {
    let mut h = Harness::new(
        &[("deals", 1)],
        Duration::from_secs(1),
        &[(
            "dwd",
            &["ods_deals"],
            "SELECT deal_id, amount FROM ods_deals",
        )],
    );
    h.spec.checkpoint_interval = INTERVAL;
    for i in 0..RECORDS as i64 {
        h.log.produce(
            "deals",
            0,
            deal_json(&format!("d{i}"), "x", i, BASE + i * 1000),
        );
    }
    h.log.read_per_step(SOURCE_BATCH);
    h.tables.slow_writes("dwd", PER_ROW);

    let started = tokio::time::Instant::now();
    let (result, _) = h.run(None).await;
    result.expect("the run");
    let rows: usize = h.rows("dwd").iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, RECORDS);

    // Every epoch of the catch-up added rows to dwd, so its commits are the
    // epochs' ends: a gap between two is the interval, or the epoch's
    // duration (barrier to commit) when that is longer.
    let times = h.commit_times("dwd");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    let drain = PER_ROW * RECORDS as u32;
    let took = times.last().map(|t| *t - started).unwrap_or_default();
    let figures = format!(
        "{} epochs; gaps between them {gaps:?}; all rows committed after {took:?} (the slow layer alone needs {drain:?})",
        times.len()
    );
    assert!(times.len() >= 5, "{figures}");
    assert!(
        longest <= INTERVAL * 3 / 2,
        "an epoch outlasted the interval: {figures}"
    );
    // The bound costs no throughput: the slow layer never waits for rows.
    assert!(
        took <= drain + INTERVAL * 2,
        "the catch-up slowed down: {figures}"
    );
}
