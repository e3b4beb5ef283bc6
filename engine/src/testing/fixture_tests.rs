//! Restoring from the fixture checkpoints (`engine/tests/fixtures/
//! checkpoints/format-*`): each stateful operator's state, as a real run of
//! an older version wrote it, restores into today's operator and carries on
//! exactly as a reference computed from the fixture's records says.
//!
//! The layers' SQL is that of the fixture's `warehouse.yaml`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimestampMicrosecondType};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use serde_json::Value;

use crate::checkpoint::store::CheckpointStore;
use crate::ods::ods_schema;
use crate::operators::layer_query::LayerQuery;
use crate::sql::planner::{StreamingPlanner, TIME_COLUMN_KEY};
use crate::testing::harness::deal_schema;

const SEC: i64 = 1_000_000;

struct Deal {
    id: String,
    city: String,
    agent: String,
    amount: i64,
    t: i64,
}

/// A fixture directory per manifest format (format 3: windows kept by
/// parts, read from the slices the manifest names).
fn fixture_dirs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
    let dirs: Vec<PathBuf> = ["format-2", "format-3"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    for dir in &dirs {
        assert!(dir.is_dir(), "{} is missing", dir.display());
    }
    dirs
}

fn deals(dir: &std::path::Path) -> Vec<Deal> {
    let text = std::fs::read_to_string(dir.join("deals.jsonl")).expect("deals.jsonl");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a deal");
            Deal {
                id: v["deal_id"].as_str().unwrap_or_default().into(),
                city: v["city"].as_str().unwrap_or_default().into(),
                agent: v["agent"].as_str().unwrap_or_default().into(),
                amount: v["amount"].as_i64().unwrap_or_default(),
                t: v["event_time"].as_i64().unwrap_or_default() * 1000,
            }
        })
        .collect()
}

fn ods_rows() -> SchemaRef {
    let mut schema = deal_schema();
    schema.fields.insert(
        2,
        strata_schemas::Field::new("agent", strata_schemas::FieldType::String),
    );
    let ods = ods_schema(&schema.to_arrow());
    Arc::new(
        ods.as_ref()
            .clone()
            .with_metadata([(TIME_COLUMN_KEY.to_string(), "event_time".to_string())].into()),
    )
}

/// The fixture's newest checkpoint: its watermark, and the layer's state.
async fn restored(dir: &std::path::Path, layer: &str, sql: &str) -> (LayerQuery, i64) {
    let local = LocalFileSystem::new_with_prefix(dir).expect("the fixture directory");
    let store = CheckpointStore::new(Arc::new(local), Path::from(""), "fixture", "fixture");
    let manifest = store.latest().await.expect("readable").expect("a manifest");
    let saved = manifest
        .layers
        .iter()
        .find(|l| l.name == layer)
        .expect("the layer");
    let state = store
        .read_layer_state(saved)
        .await
        .expect("its state")
        .expect("state");
    let planner = StreamingPlanner::new(vec![]);
    let planned = planner
        .plan(sql, &[("ods_deals".to_string(), ods_rows())])
        .await
        .unwrap_or_else(|e| panic!("{layer}: {e}"));
    let mut query =
        LayerQuery::new(planned, planner.task_ctx().expect("a context")).expect("a query");
    query
        .restore(Some(state), saved.watermark)
        .unwrap_or_else(|e| panic!("{layer}: restoring: {e}"));
    (query, saved.watermark.expect("a watermark"))
}

/// One ODS row of a new deal.
fn new_row(id: &str, city: &str, agent: &str, amount: i64, t: i64) -> RecordBatch {
    let schema = ods_rows();
    let columns: Vec<arrow::array::ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> arrow::array::ArrayRef {
            match f.name().as_str() {
                "deal_id" => Arc::new(StringArray::from(vec![id])),
                "city" => Arc::new(StringArray::from(vec![city])),
                "agent" => Arc::new(StringArray::from(vec![agent])),
                "amount" => Arc::new(Int64Array::from(vec![amount])),
                "event_time" | "_kafka_timestamp" | "_strata_ingest_time" => {
                    Arc::new(TimestampMicrosecondArray::from(vec![t]).with_timezone("UTC"))
                }
                _ => match f.data_type() {
                    DataType::Utf8 => Arc::new(StringArray::from(vec!["fixture"])),
                    DataType::Int32 => Arc::new(arrow::array::Int32Array::from(vec![0])),
                    DataType::Int64 => Arc::new(Int64Array::from(vec![0])),
                    DataType::Date32 => Arc::new(arrow::array::Date32Array::from(vec![0])),
                    other => arrow::array::new_null_array(other, 1),
                },
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("a row")
}

fn strings(b: &RecordBatch, c: &str) -> Vec<String> {
    let a = b.column_by_name(c).expect("a column").as_string::<i32>();
    (0..b.num_rows()).map(|i| a.value(i).to_string()).collect()
}
fn ints(b: &RecordBatch, c: &str) -> Vec<i64> {
    b.column_by_name(c)
        .expect("a column")
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}
fn times(b: &RecordBatch, c: &str) -> Vec<i64> {
    b.column_by_name(c)
        .expect("a column")
        .as_primitive::<TimestampMicrosecondType>()
        .values()
        .to_vec()
}

#[tokio::test]
async fn tumble_windows_restore_and_close_as_the_reference() {
    for dir in fixture_dirs() {
        let sql = "SELECT window_start, window_end, city, COUNT(*) AS n, SUM(amount) AS total, \
               COUNT(DISTINCT agent) AS agents \
               FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) \
               GROUP BY window_start, window_end, city";
        let (mut q, watermark) = restored(&dir, "dws_minute", sql).await;
        let mut want: BTreeMap<(i64, String), (i64, i64, std::collections::BTreeSet<String>)> =
            BTreeMap::new();
        for d in deals(&dir) {
            let start = d.t - d.t.rem_euclid(60 * SEC);
            if start + 60 * SEC > watermark {
                let w = want.entry((start, d.city.clone())).or_default();
                w.0 += 1;
                w.1 += d.amount;
                w.2.insert(d.agent.clone());
            }
        }
        let mut got = BTreeMap::new();
        for b in q.on_watermark(i64::MAX).await.expect("closing") {
            for (i, ((s, c), (n, t))) in times(&b, "window_start")
                .into_iter()
                .zip(strings(&b, "city"))
                .zip(ints(&b, "n").into_iter().zip(ints(&b, "total")))
                .enumerate()
            {
                got.insert((s, c), (n, t, ints(&b, "agents")[i]));
            }
        }
        let want: BTreeMap<_, _> = want
            .into_iter()
            .map(|(k, (n, t, a))| (k, (n, t, a.len() as i64)))
            .collect();
        assert!(!want.is_empty(), "the checkpoint should hold open windows");
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn sessions_restore_and_close_as_the_reference() {
    for dir in fixture_dirs() {
        let sql = "SELECT window_start, window_end, agent, COUNT(*) AS n, SUM(amount) AS total \
               FROM TABLE(SESSION(TABLE ods_deals PARTITION BY agent, DESCRIPTOR(event_time), INTERVAL '30' SECOND)) \
               GROUP BY window_start, window_end, agent";
        let (mut q, watermark) = restored(&dir, "dws_sessions", sql).await;
        let gap = 30 * SEC;
        let mut by_agent: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for d in deals(&dir) {
            by_agent
                .entry(d.agent.clone())
                .or_default()
                .push((d.t, d.amount));
        }
        let mut want = BTreeMap::new();
        for (agent, mut rows) in by_agent {
            rows.sort();
            let mut session: Vec<(i64, i64)> = Vec::new();
            let mut flush = |s: &mut Vec<(i64, i64)>| {
                if let (Some(first), Some(last)) = (s.first(), s.last())
                    && last.0 + gap > watermark
                {
                    want.insert(
                        (first.0, agent.clone()),
                        (
                            last.0 + gap,
                            s.len() as i64,
                            s.iter().map(|r| r.1).sum::<i64>(),
                        ),
                    );
                }
                s.clear();
            };
            for r in rows {
                if session.last().is_some_and(|l| r.0 - l.0 >= gap) {
                    flush(&mut session);
                }
                session.push(r);
            }
            flush(&mut session);
        }
        let mut got = BTreeMap::new();
        for b in q.on_watermark(i64::MAX).await.expect("closing") {
            let (s, e, a, n, t) = (
                times(&b, "window_start"),
                times(&b, "window_end"),
                strings(&b, "agent"),
                ints(&b, "n"),
                ints(&b, "total"),
            );
            for i in 0..b.num_rows() {
                got.insert((s[i], a[i].clone()), (e[i], n[i], t[i]));
            }
        }
        assert!(!want.is_empty(), "the checkpoint should hold open sessions");
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn over_frames_restore_with_their_history() {
    for dir in fixture_dirs() {
        let sql = "SELECT deal_id, agent, event_time, SUM(amount) OVER w AS total_2m FROM ods_deals \
               WINDOW w AS (PARTITION BY agent ORDER BY event_time \
               RANGE BETWEEN INTERVAL '2' MINUTE PRECEDING AND CURRENT ROW)";
        let (mut q, watermark) = restored(&dir, "dwd_running", sql).await;
        let all = deals(&dir);
        let want: BTreeMap<String, i64> = all
            .iter()
            .filter(|d| d.t >= watermark)
            .map(|d| {
                let total = all
                    .iter()
                    .filter(|o| o.agent == d.agent && o.t >= d.t - 120 * SEC && o.t <= d.t)
                    .map(|o| o.amount)
                    .sum();
                (d.id.clone(), total)
            })
            .collect();
        let mut got = BTreeMap::new();
        for b in q.on_watermark(i64::MAX).await.expect("emitting") {
            for (id, total) in strings(&b, "deal_id").into_iter().zip(ints(&b, "total_2m")) {
                got.insert(id, total);
            }
        }
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn an_updating_aggregate_restores_its_totals() {
    for dir in fixture_dirs() {
        let sql = "SELECT city, COUNT(*) AS n, SUM(amount) AS total FROM ods_deals GROUP BY city";
        let (mut q, watermark) = restored(&dir, "ads_totals", sql).await;
        let all = deals(&dir);
        let (n, total) = all
            .iter()
            .filter(|d| d.city == "beijing")
            .fold((0, 0), |(n, t), d| (n + 1, t + d.amount));
        q.on_batch(
            "ods_deals",
            new_row("new", "beijing", "a0", 5, watermark + SEC),
        )
        .await
        .expect("a row");
        let updates = q.on_checkpoint().await.expect("updates");
        let b = &updates[0];
        assert_eq!(
            (strings(b, "city"), ints(b, "n"), ints(b, "total")),
            (vec!["beijing".to_string()], vec![n + 1], vec![total + 5])
        );
    }
}

#[tokio::test]
async fn interval_join_rows_restore_and_meet_new_rows() {
    for dir in fixture_dirs() {
        let sql = "SELECT a.deal_id AS first_id, b.deal_id AS next_id, a.event_time AS first_time \
               FROM ods_deals a JOIN ods_deals b ON a.agent = b.agent \
               AND b.event_time BETWEEN a.event_time + INTERVAL '1' SECOND AND a.event_time + INTERVAL '40' SECOND";
        let (mut q, watermark) = restored(&dir, "dwd_followups", sql).await;
        let all = deals(&dir);
        let at = all.iter().map(|d| d.t).max().unwrap_or_default() + 10 * SEC;
        assert!(at > watermark);
        let mut want: Vec<String> = all
            .iter()
            .filter(|d| d.agent == "a0" && d.t >= at - 40 * SEC && d.t <= at - SEC)
            .map(|d| d.id.clone())
            .collect();
        want.sort();
        let emitted = q
            .on_batch("ods_deals", new_row("new", "x", "a0", 1, at))
            .await
            .expect("a row");
        let mut got: Vec<String> = emitted
            .rows
            .iter()
            .flat_map(|b| {
                strings(b, "first_id")
                    .into_iter()
                    .zip(strings(b, "next_id"))
            })
            .filter(|(_, next)| next == "new")
            .map(|(first, _)| first)
            .collect();
        got.sort();
        assert!(!want.is_empty(), "a0 should have kept rows within 40 s");
        assert_eq!(got, want);
    }
}
