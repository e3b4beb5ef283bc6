//! `strata status FILE [--json]`: how each layer of a warehouse stands.
//!
//! An operator asks "is it running, how far behind is it, when did it
//! last commit?" The newest checkpoint manifest under the storage root
//! answers for a stopped warehouse (its epoch and age, each layer's
//! watermark, and the lag of its offsets against the broker's ends, when
//! the broker answers); when the warehouse runs with `metrics:`, its live
//! endpoint answers with current numbers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use strata_engine::KafkaConfig;
use strata_engine::checkpoint::manifest::Manifest;
use strata_engine::checkpoint::store::CheckpointStore;
use strata_layers::Warehouse;

use crate::commands::load_warehouse;
use crate::commands::status_scrape::{Scrape, scrape};
use crate::failure::{Failure, print};

/// How long to wait for the broker's end offsets.
const BROKER_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn status(file: &Path, as_json: bool) -> Result<(), Failure> {
    let warehouse = load_warehouse(file)?;
    let manifest = newest_manifest(&warehouse).await.map_err(|e| {
        Failure::io(format!(
            "reading the checkpoints of `{}`: {e}",
            warehouse.name
        ))
    })?;
    let live = match &warehouse.metrics {
        Some(m) => scrape(local(m.listen)).await,
        None => None,
    };
    let running = live.as_ref().is_some_and(|s| {
        s.with("strata_dataflow_running", "dataflow", &warehouse.name)
            .any(|v| v == 1.0)
    });
    // Stopped: the lag is the broker's ends past the checkpointed offsets.
    let broker_lag = match (&manifest, running) {
        (Some(m), false) => checkpoint_lag(&warehouse, m).await,
        _ => None,
    };
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let rows: Vec<Value> = warehouse
        .layers
        .iter()
        .map(|layer| {
            layer_row(
                &warehouse,
                &layer.name,
                manifest.as_ref(),
                live.as_ref().filter(|_| running),
                broker_lag.as_ref(),
                now,
            )
        })
        .collect();
    let report = json!({
        "warehouse": warehouse.name,
        "running": running,
        "layers": rows,
    });
    if as_json {
        print(format!("{report:#}"))
    } else {
        print_table(&report)
    }
}

/// The metrics endpoint as seen from here (a wildcard listen address is
/// reached on loopback).
fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

async fn newest_manifest(warehouse: &Warehouse) -> Result<Option<Manifest>, String> {
    let root = warehouse.storage.open().map_err(|e| e.to_string())?;
    let store = CheckpointStore::open(&root, &warehouse.name).map_err(|e| e.to_string())?;
    store.latest().await.map_err(|e| e.to_string())
}

/// Whether a source (its id: the layer, or `layer.input`) feeds `layer`.
fn feeds(source: &str, layer: &str) -> bool {
    source == layer
        || source
            .strip_prefix(layer)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Records behind the broker's end per source, from the checkpoint's
/// offsets; `None` when the broker does not answer.
async fn checkpoint_lag(
    warehouse: &Warehouse,
    manifest: &Manifest,
) -> Option<HashMap<String, i64>> {
    let kafka = KafkaConfig {
        bootstrap_servers: warehouse.kafka.bootstrap_servers.clone(),
        properties: warehouse.kafka.properties.clone(),
    };
    let sources = manifest.sources.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka.consumer("strata-status").create().ok()?;
        let mut lag = HashMap::new();
        for source in &sources {
            let mut behind = 0;
            for (tp, next) in source.offsets.iter() {
                let (_, high) = consumer
                    .fetch_watermarks(&tp.topic, tp.partition, BROKER_TIMEOUT)
                    .ok()?;
                behind += (high - next).max(0);
            }
            lag.insert(source.id.clone(), behind);
        }
        Some(lag)
    })
    .await
    .ok()
    .flatten()
}

fn layer_row(
    warehouse: &Warehouse,
    layer: &str,
    manifest: Option<&Manifest>,
    live: Option<&Scrape>,
    broker_lag: Option<&HashMap<String, i64>>,
    now: f64,
) -> Value {
    let saved = manifest.and_then(|m| m.layers.iter().find(|l| l.name == layer));
    let reads_kafka = manifest.is_some_and(|m| m.sources.iter().any(|s| feeds(&s.id, layer)));
    let lag: Option<f64> = match live {
        Some(s) => {
            let lags: Vec<f64> = s
                .matching("strata_source_lag_records", "source", |id| feeds(id, layer))
                .collect();
            (!lags.is_empty()).then(|| lags.iter().sum())
        }
        None => broker_lag.filter(|_| reads_kafka).map(|lags| {
            lags.iter()
                .filter(|(id, _)| feeds(id, layer))
                .map(|(_, n)| *n as f64)
                .sum()
        }),
    };
    let watermark = live
        .and_then(|s| {
            s.with("strata_layer_watermark_timestamp_seconds", "layer", layer)
                .next()
        })
        .or_else(|| saved.and_then(|l| l.watermark).map(|w| w as f64 / 1e6));
    let live_epoch = live.and_then(|s| {
        let epoch = s
            .with("strata_dataflow_last_epoch", "dataflow", &warehouse.name)
            .next()?;
        let at = s
            .with(
                "strata_dataflow_last_epoch_timestamp_seconds",
                "dataflow",
                &warehouse.name,
            )
            .next()?;
        Some((epoch as u64, at))
    });
    let saved_epoch = manifest
        .filter(|_| saved.is_some())
        .map(|m| (m.epoch, m.created_at_ms as f64 / 1000.0));
    let epoch = match (live_epoch, saved_epoch) {
        (Some(l), Some(s)) => Some(if l.0 >= s.0 { l } else { s }),
        (l, s) => l.or(s),
    };
    // Rates over the last minute, from the live endpoint only.
    let rows_per_second = live.and_then(|s| {
        s.with("strata_layer_rows_in_per_second", "layer", layer)
            .next()
            .map(round)
    });
    let side_rates = live.map(|s| {
        s.samples("strata_layer_side_rows_per_second")
            .filter(|x| x.labels.get("layer").is_some_and(|l| l == layer))
            .filter_map(|x| Some((x.labels.get("side")?.clone(), json!(round(x.value)))))
            .collect::<serde_json::Map<String, Value>>()
    });
    json!({
        "layer": layer,
        "status": if live.is_some() { "running" } else { "stopped" },
        "rows_per_second": rows_per_second,
        "side_rows_per_second": side_rates,
        "backfill": backfill_running(warehouse, layer),
        "lag_records": lag,
        "watermark": watermark.map(|w| chrono::DateTime::from_timestamp_micros((w * 1e6) as i64).map(|t| t.to_rfc3339())),
        "watermark_delay_seconds": watermark.map(|w| round((now - w).max(0.0))),
        "last_epoch": epoch.map(|e| e.0),
        "last_epoch_age_seconds": epoch.map(|e| round((now - e.1).max(0.0))),
    })
}

/// Whether a `strata backfill` of `layer` runs now (`None`: cannot be told
/// on this storage root).
fn backfill_running(warehouse: &Warehouse, layer: &str) -> Option<bool> {
    let root = warehouse.storage.open().ok()?;
    strata_engine::backfill::running(&root, layer)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn print_table(report: &Value) -> Result<(), Failure> {
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "running" } else { "-" }.to_string(),
        Value::Object(m) if m.is_empty() => "-".to_string(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let header = [
        "LAYER",
        "STATUS",
        "LAG",
        "WATERMARK",
        "DELAY_S",
        "EPOCH",
        "AGE_S",
        "ROWS_S",
        "SIDE_ROWS_S",
        "BACKFILL",
    ];
    let keys = [
        "layer",
        "status",
        "lag_records",
        "watermark",
        "watermark_delay_seconds",
        "last_epoch",
        "last_epoch_age_seconds",
        "rows_per_second",
        "side_rows_per_second",
        "backfill",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for layer in report["layers"].as_array().into_iter().flatten() {
        rows.push(keys.iter().map(|k| cell(&layer[k])).collect());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        print(line.join("  ").trim_end())?;
    }
    Ok(())
}
