//! What the console page shows: the warehouse's dataflow plan as a graph
//! (sources -> layers -> tables) with each node's numbers, read from the
//! process's metrics registry.
//!
//! The numbers are taken from the registry's own text encoding, the one
//! `/metrics` serves, parsed back: so the console and Prometheus show the
//! same values, and a metric reaches the console by being exported.

use serde_json::{Value, json};
use strata_dashboard::ConsoleSource;
use strata_engine::Metrics;
use strata_engine::dataflow::spec::{DataflowSpec, InputFrom};
use strata_layers::Warehouse;

use crate::commands::status_scrape::Scrape;

/// The side tables a layer may route rows to, by their metric label.
const SIDES: [&str; 4] = ["late", "future", "rejected", "dead_letter"];

/// A source: its id, the layer it feeds, its topics.
#[derive(Debug, Clone)]
struct SourceNode {
    id: String,
    layer: String,
    topics: Vec<String>,
}

/// A layer: its name, kind, inputs (layer or source) and known side tables.
#[derive(Debug, Clone)]
struct LayerNode {
    name: String,
    kind: String,
    inputs: Vec<(String, InputFrom)>,
    /// Side tables it always has (ODS dead letters, kept rejected rows).
    sides: Vec<&'static str>,
}

/// The console's numbers for one warehouse.
#[derive(Debug)]
pub struct WarehouseConsole {
    name: String,
    sources: Vec<SourceNode>,
    layers: Vec<LayerNode>,
    metrics: Metrics,
}

impl WarehouseConsole {
    /// The graph of `warehouse`'s layers (from its plan, if it can be
    /// planned; else its layers alone), numbered from `metrics`.
    pub fn new(warehouse: &Warehouse, plan: Option<&DataflowSpec>, metrics: Metrics) -> Self {
        let (sources, layers) = match plan {
            Some(plan) => (
                plan.sources
                    .iter()
                    .map(|s| SourceNode {
                        id: s.id.clone(),
                        layer: s.layer.clone(),
                        topics: s.topics.clone(),
                    })
                    .collect(),
                plan.layers
                    .iter()
                    .map(|l| LayerNode {
                        name: l.name.clone(),
                        kind: l.kind.clone(),
                        inputs: l
                            .inputs
                            .iter()
                            .map(|i| (i.name.clone(), i.from.clone()))
                            .collect(),
                        sides: [
                            (l.sql.is_none(), "dead_letter"),
                            (l.keep_rejected, "rejected"),
                        ]
                        .into_iter()
                        .filter_map(|(has, side)| has.then_some(side))
                        .collect(),
                    })
                    .collect(),
            ),
            None => (
                Vec::new(),
                warehouse
                    .layers
                    .iter()
                    .map(|l| LayerNode {
                        name: l.name.clone(),
                        kind: String::new(),
                        inputs: Vec::new(),
                        sides: Vec::new(),
                    })
                    .collect(),
            ),
        };
        WarehouseConsole {
            name: warehouse.name.clone(),
            sources,
            layers,
            metrics,
        }
    }
}

impl ConsoleSource for WarehouseConsole {
    fn snapshot(&self) -> Value {
        let sampled_at = strata_engine::metrics::now_seconds();
        let scrape = Scrape::parse(&self.metrics.encode());
        let one = |name: &str, key: &str, value: &str| scrape.with(name, key, value).next();
        let dataflow = json!({
            "running": one("strata_dataflow_running", "dataflow", &self.name).map(|v| v == 1.0),
            "last_epoch": one("strata_dataflow_last_epoch", "dataflow", &self.name),
            "last_epoch_timestamp": one("strata_dataflow_last_epoch_timestamp_seconds", "dataflow", &self.name),
            "last_epoch_age_seconds": one("strata_dataflow_last_epoch_age_seconds", "dataflow", &self.name),
        });
        let sources: Vec<Value> = self.sources.iter().map(|s| source(&scrape, s)).collect();
        let mut tables = Vec::new();
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                let (value, mine) = layer(&scrape, l, &self.sources);
                tables.extend(mine);
                value
            })
            .collect();
        json!({
            "warehouse": self.name,
            "sampled_at": sampled_at,
            "dataflow": dataflow,
            "sources": sources,
            "layers": layers,
            "tables": tables,
        })
    }
}

/// Sum of a series over the samples whose `key` label is `value`, or
/// `None` if there are none.
fn sum(scrape: &Scrape, name: &str, key: &str, value: &str) -> Option<f64> {
    let values: Vec<f64> = scrape.with(name, key, value).collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn max(scrape: &Scrape, name: &str, key: &str, value: &str) -> Option<f64> {
    scrape.with(name, key, value).reduce(f64::max)
}

fn source(scrape: &Scrape, s: &SourceNode) -> Value {
    json!({
        "id": s.id,
        "layer": s.layer,
        "topics": s.topics,
        "records_total": sum(scrape, "strata_source_records_total", "source", &s.id),
        "records_per_second": sum(scrape, "strata_source_records_per_second", "source", &s.id),
        "lag_records": sum(scrape, "strata_source_lag_records", "source", &s.id),
        "lag_seconds": max(scrape, "strata_source_lag_seconds", "source", &s.id),
        "broker_up": scrape.with("strata_source_broker_up", "source", &s.id).next(),
    })
}

/// A layer's node, and its tables' nodes.
fn layer(scrape: &Scrape, l: &LayerNode, sources: &[SourceNode]) -> (Value, Vec<Value>) {
    let one = |name: &str| scrape.with(name, "layer", &l.name).next();
    // Side tables: those it always has, and any it routed rows to.
    let mut sides: Vec<(String, String)> = l
        .sides
        .iter()
        .map(|side| (side.to_string(), format!("{}_{side}", l.name)))
        .collect();
    for sample in scrape.samples("strata_layer_side_rows_total") {
        if sample.labels.get("layer") == Some(&l.name)
            && let (Some(side), Some(table)) =
                (sample.labels.get("side"), sample.labels.get("table"))
            && !sides.iter().any(|(_, t)| t == table)
        {
            sides.push((side.clone(), table.clone()));
        }
    }
    sides.sort_by_key(|(side, _)| SIDES.iter().position(|s| s == side));
    let side_rows = |table: &str, name: &str| scrape.with(name, "table", table).next();
    let side_values: Vec<Value> = sides
        .iter()
        .map(|(side, table)| {
            json!({
                "side": side,
                "table": table,
                "rows_total": side_rows(table, "strata_layer_side_rows_total"),
                "per_second": side_rows(table, "strata_layer_side_rows_per_second"),
            })
        })
        .collect();
    // Its lag: what its sources have not read yet (none for a layer that
    // reads only layers).
    let mine: Vec<&SourceNode> = sources.iter().filter(|s| s.layer == l.name).collect();
    let lag = |name: &str, pick: fn(&Scrape, &str, &str, &str) -> Option<f64>| {
        let values: Vec<f64> = mine
            .iter()
            .filter_map(|s| pick(scrape, name, "source", &s.id))
            .collect();
        (!values.is_empty()).then_some(values)
    };
    let lag_records = lag("strata_source_lag_records", sum).map(|v| v.iter().sum::<f64>());
    let lag_seconds =
        lag("strata_source_lag_seconds", max).and_then(|v| v.into_iter().reduce(f64::max));
    let inputs: Vec<Value> = l
        .inputs
        .iter()
        .map(|(name, from)| match from {
            InputFrom::Layer(layer) => json!({"name": name, "layer": layer, "source": null}),
            InputFrom::Source(source) => json!({"name": name, "layer": null, "source": source}),
        })
        .collect();
    let table_names: Vec<(String, Option<String>)> = std::iter::once((l.name.clone(), None))
        .chain(
            sides
                .iter()
                .map(|(side, t)| (t.clone(), Some(side.clone()))),
        )
        .collect();
    let tables = table_names
        .iter()
        .map(|(name, side)| {
            let t = |metric: &str| scrape.with(metric, "table", name).next();
            json!({
                "name": name,
                "layer": l.name,
                "side": side,
                "version": t("strata_table_version"),
                "last_commit": t("strata_table_last_commit_timestamp_seconds"),
                "rows_added_total": t("strata_table_rows_added_total"),
                "files_added_total": t("strata_table_files_added_total"),
                "bytes_added_total": t("strata_table_bytes_added_total"),
            })
        })
        .collect();
    let value = json!({
        "name": l.name,
        "kind": l.kind,
        "inputs": inputs,
        "rows_in_total": one("strata_layer_rows_in_total"),
        "rows_in_per_second": one("strata_layer_rows_in_per_second"),
        "rows_out_total": one("strata_layer_rows_out_total"),
        "lag_records": lag_records,
        "lag_seconds": lag_seconds,
        "watermark": one("strata_layer_watermark_timestamp_seconds"),
        "watermark_delay_seconds": one("strata_layer_watermark_delay_seconds"),
        "state_bytes": one("strata_layer_state_bytes"),
        "sides": side_values,
        "tables": table_names.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    });
    (value, tables)
}
