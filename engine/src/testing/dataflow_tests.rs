//! Whole dataflows in one process (see [`Harness`]): barrier alignment,
//! exactly-once commits across crashes at every step of an epoch, and
//! watermarks with idle and slow partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checkpoint::manifest::Manifest;
use crate::failpoint::Point;
use crate::testing::harness::{Harness, deal_json};

const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;
/// 2026-10-05T08:00:00Z: in the past, so nothing is future-dated.
const BASE: i64 = 1_791_187_200 * SEC;

fn ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("deal_id")
                .expect("a deal_id column")
                .as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_layer_aligns_barriers_across_skewed_inputs() {
    let h = Harness::new(
        &[("a", 1), ("b", 1)],
        Duration::from_secs(1),
        &[(
            "both",
            &["ods_a", "ods_b"],
            "SELECT deal_id, amount FROM ods_a UNION ALL SELECT deal_id, amount FROM ods_b",
        )],
    );
    for i in 0..400 {
        h.log
            .produce("a", 0, deal_json(&format!("a{i}"), "x", i, BASE + i * SEC));
        h.log
            .produce("b", 0, deal_json(&format!("b{i}"), "x", i, BASE + i * SEC));
    }
    // b is held back while a flows, then released.
    h.log.hold("b", 0, true);
    let log = h.log.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        log.hold("b", 0, false);
    });
    let (result, _) = h.run(None).await;
    result.expect("the run");
    release.await.expect("released");

    let manifests = h.manifests().await;
    assert!(manifests.len() >= 3, "{} epochs", manifests.len());
    let mut skewed = false;
    for m in &manifests {
        let offset = |id: &str| {
            m.sources
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.offsets.get(if id == "ods_a" { "a" } else { "b" }, 0))
                .unwrap_or(0)
        };
        let (a, b) = (offset("ods_a"), offset("ods_b"));
        skewed |= a > 0 && b == 0;
        // The layer's table at epoch n holds exactly the rows its inputs
        // had read when their barriers of epoch n passed.
        let got: BTreeSet<String> = h
            .tables
            .with_table("both", |t| ids(&t.rows_through(m.epoch)))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let want: BTreeSet<String> = (0..a)
            .map(|i| format!("a{i}"))
            .chain((0..b).map(|i| format!("b{i}")))
            .collect();
        assert_eq!(got, want, "epoch {}: offsets a {a}, b {b}", m.epoch);
    }
    assert!(
        skewed,
        "no epoch had a's rows without b's: the inputs were not skewed"
    );
    assert_eq!(ids(&h.rows("both")).len(), 800);
}

const PER_MINUTE: &str = "SELECT window_start, window_end, city, COUNT(*) AS n, SUM(amount) AS total \
     FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) \
     GROUP BY window_start, window_end, city";

/// (window start, city) -> (count, sum)
fn windows(batches: &[RecordBatch]) -> BTreeMap<(i64, String), (i64, i64)> {
    let mut out = BTreeMap::new();
    for b in batches {
        let start = b
            .column_by_name("window_start")
            .expect("window_start")
            .as_primitive::<TimestampMicrosecondType>();
        let city = b.column_by_name("city").expect("city").as_string::<i32>();
        let n = b
            .column_by_name("n")
            .expect("n")
            .as_primitive::<Int64Type>();
        let total = b
            .column_by_name("total")
            .expect("total")
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let previous = out.insert(
                (start.value(i), city.value(i).to_string()),
                (n.value(i), total.value(i)),
            );
            assert!(
                previous.is_none(),
                "window {} {} emitted twice",
                start.value(i),
                city.value(i)
            );
        }
    }
    out
}

/// Deals over `minutes`, disordered within the watermark delay, then a
/// sentinel per partition far ahead that closes every window. Returns the
/// reference windows.
fn produce_deals(
    h: &Harness,
    rng: &mut StdRng,
    n: i64,
    minutes: i64,
) -> BTreeMap<(i64, String), (i64, i64)> {
    let mut want: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for i in 0..n {
        let t = BASE + i * minutes * MIN / n - rng.random_range(0..SEC);
        let city = ["beijing", "wuhan", "xian"][rng.random_range(0..3)];
        let amount = rng.random_range(1..1000);
        h.log.produce(
            "deals",
            (i % 2) as i32,
            deal_json(&format!("d{i}"), city, amount, t),
        );
        let w = want
            .entry((t - t.rem_euclid(MIN), city.to_string()))
            .or_default();
        w.0 += 1;
        w.1 += amount;
    }
    for p in 0..2 {
        h.log.produce(
            "deals",
            p,
            deal_json(&format!("s{p}"), "zz", 0, BASE + 24 * 60 * MIN),
        );
    }
    want
}

#[tokio::test(start_paused = true)]
async fn every_epoch_is_committed_once_whatever_step_a_crash_hits() {
    let points = [
        Point::BeforeManifest,
        Point::AfterManifest,
        Point::BetweenTableCommits,
    ];
    let mut crashed = 0;
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let h = Harness::new(
            &[("deals", 2)],
            Duration::from_secs(2),
            &[("per_minute", &["ods_deals"], PER_MINUTE)],
        );
        let n = rng.random_range(200..800);
        let want = produce_deals(&h, &mut rng, n, 5);
        let point = points[rng.random_range(0..points.len())];
        let epoch = rng.random_range(1..5);
        let (first, happened) = h.run(Some((point, epoch))).await;
        if happened {
            crashed += 1;
            assert!(first.is_err(), "seed {seed}: the crash must fail the run");
        } else {
            first.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        // Sometimes a kill at a random moment of the next run too.
        if rng.random_bool(0.3) {
            h.run_and_kill(Duration::from_millis(rng.random_range(50..1500)))
                .await;
        }
        let (last, _) = h.run(None).await;
        last.unwrap_or_else(|e| panic!("seed {seed}, crash at {point:?}:{epoch}: {e}"));

        let ods = ids(&h.rows("ods_deals"));
        let unique: BTreeSet<&String> = ods.iter().collect();
        assert_eq!(
            ods.len(),
            unique.len(),
            "seed {seed}: a record committed twice"
        );
        assert_eq!(ods.len() as i64, n + 2, "seed {seed}: a record lost");
        let got = windows(&h.rows("per_minute"));
        assert_eq!(got, want, "seed {seed}, crash at {point:?}:{epoch}");
        let manifests = h.manifests().await;
        for table in ["ods_deals", "per_minute", "ods_deals_dead_letter"] {
            let epochs = h.commits(table);
            assert!(
                epochs.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: {table} committed {epochs:?}"
            );
            // Exactly the epochs that added rows to the table committed.
            assert_eq!(
                epochs,
                epochs_with_rows(&manifests, table),
                "seed {seed}, crash at {point:?}:{epoch}: {table}"
            );
        }
    }
    assert!(
        crashed > 60,
        "only {crashed} of the cases reached their crash point"
    );
}

/// The epochs whose manifest has rows for `table`.
fn epochs_with_rows(manifests: &[Manifest], table: &str) -> Vec<u64> {
    let suffix = format!("/{table}/");
    manifests
        .iter()
        .filter(|m| {
            m.sinks
                .iter()
                .any(|s| s.table.ends_with(&suffix) && !s.is_empty())
        })
        .map(|m| m.epoch)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_table_an_epoch_leaves_empty_gets_no_commit_and_recovery_knows_its_epochs() {
    // Deals within one minute: the ODS table gets rows every epoch, the
    // per-minute table only in the epochs where a window closes (the
    // sentinels close them), the dead-letter table never.
    let new = || {
        Harness::new(
            &[("deals", 2)],
            Duration::from_secs(2),
            &[("per_minute", &["ods_deals"], PER_MINUTE)],
        )
    };
    let h = new();
    let want = produce_deals(&h, &mut StdRng::seed_from_u64(7), 600, 1);
    let (result, _) = h.run(None).await;
    result.expect("the run");
    let manifests = h.manifests().await;
    let (ods, per_minute) = (h.commits("ods_deals"), h.commits("per_minute"));
    assert!(
        !per_minute.is_empty() && per_minute.len() < ods.len(),
        "ods {ods:?}, per_minute {per_minute:?}"
    );
    assert_eq!(per_minute, epochs_with_rows(&manifests, "per_minute"));
    assert_eq!(ods, epochs_with_rows(&manifests, "ods_deals"));
    assert!(h.commits("ods_deals_dead_letter").is_empty());
    assert_eq!(windows(&h.rows("per_minute")), want);

    // A crash in each epoch that leaves the per-minute table empty, right
    // after the ODS table committed it, or with no table committed yet:
    // recovery commits each epoch once, to the tables it added rows to.
    let empty: Vec<u64> = ods
        .iter()
        .copied()
        .filter(|e| !per_minute.contains(e))
        .collect();
    assert!(!empty.is_empty(), "ods {ods:?}, per_minute {per_minute:?}");
    for point in [Point::BetweenTableCommits, Point::AfterManifest] {
        for &crash_epoch in &empty {
            let h = new();
            let want = produce_deals(&h, &mut StdRng::seed_from_u64(7), 600, 1);
            let (first, happened) = h.run(Some((point, crash_epoch))).await;
            assert!(happened && first.is_err(), "{point:?}:{crash_epoch}");
            let (last, _) = h.run(None).await;
            last.unwrap_or_else(|e| panic!("{point:?}:{crash_epoch}: {e}"));
            let manifests = h.manifests().await;
            for table in ["ods_deals", "per_minute"] {
                assert_eq!(
                    h.commits(table),
                    epochs_with_rows(&manifests, table),
                    "{point:?}:{crash_epoch}: {table}"
                );
            }
            assert_eq!(ids(&h.rows("ods_deals")).len(), 602);
            assert_eq!(
                windows(&h.rows("per_minute")),
                want,
                "{point:?}:{crash_epoch}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_partition_stops_holding_time_back_and_a_slow_one_does_not() {
    // Partition 1 has nothing at all: idle after 5 s, the windows close on
    // partition 0's time.
    let h = Harness::new(
        &[("deals", 2)],
        Duration::from_secs(1),
        &[("per_minute", &["ods_deals"], PER_MINUTE)],
    );
    for i in 0..120 {
        h.log.produce(
            "deals",
            0,
            deal_json(&format!("d{i}"), "x", 1, BASE + i * SEC),
        );
    }
    h.run_and_kill(Duration::from_secs(20)).await;
    let closed = windows(&h.rows("per_minute"));
    assert_eq!(
        closed.len(),
        1,
        "the first minute closes on partition 0 alone: {closed:?}"
    );

    // Partition 1 has records it cannot read yet (a slow partition): it is
    // not idle, so no window closes without it, and none of its rows is
    // late once it is read.
    let h = Harness::new(
        &[("deals", 2)],
        Duration::from_secs(1),
        &[("per_minute", &["ods_deals"], PER_MINUTE)],
    );
    for i in 0..120 {
        h.log.produce(
            "deals",
            0,
            deal_json(&format!("d{i}"), "x", 1, BASE + i * SEC),
        );
        h.log.produce(
            "deals",
            1,
            deal_json(&format!("e{i}"), "x", 1, BASE + i * SEC),
        );
    }
    h.log.hold("deals", 1, true);
    h.run_and_kill(Duration::from_secs(20)).await;
    assert!(
        h.rows("per_minute").is_empty(),
        "a window closed without the slow partition"
    );
    h.log.hold("deals", 1, false);
    for p in 0..2 {
        h.log.produce(
            "deals",
            p,
            deal_json(&format!("s{p}"), "zz", 0, BASE + 60 * MIN),
        );
    }
    let (result, _) = h.run(None).await;
    result.expect("the run");
    let got = windows(&h.rows("per_minute"));
    assert_eq!(got.get(&(BASE, "x".to_string())), Some(&(120, 120)));
    assert_eq!(got.get(&(BASE + MIN, "x".to_string())), Some(&(120, 120)));
    assert!(h.rows("per_minute_late").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_may_be_lost_commits_nothing_and_the_next_run_commits_all() {
    // A fence closed from the start: a run stalled past half its lease's
    // time to live, which another run may take over.
    let mut h = Harness::new(
        &[("deals", 2)],
        Duration::from_secs(2),
        &[("per_minute", &["ods_deals"], PER_MINUTE)],
    );
    let want = produce_deals(&h, &mut StdRng::seed_from_u64(11), 300, 1);
    h.fence = crate::fence::Fence::held(Duration::ZERO, tokio::time::Instant::now());
    let (fenced, _) = h.run(None).await;
    let err = fenced
        .map(|_| ())
        .expect_err("a fenced run must not finish");
    assert!(err.to_string().contains("was not committed"), "{err}");
    assert!(h.manifests().await.is_empty());
    assert!(h.commits("ods_deals").is_empty());
    assert!(h.commits("per_minute").is_empty());

    // The run that holds the lease next commits every epoch, once.
    h.fence = crate::fence::Fence::unfenced();
    let (result, _) = h.run(None).await;
    result.expect("the unfenced run");
    assert_eq!(ids(&h.rows("ods_deals")).len(), 302);
    assert_eq!(windows(&h.rows("per_minute")), want);
}
