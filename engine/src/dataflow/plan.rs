//! A dataflow, planned: every layer's query, inputs, tables, side tables,
//! topics and downstream layers, worked out from the spec alone before
//! anything is opened, and printable (`strata validate --plan`).
//!
//! Planning is pure (schemas and SQL, no storage, no broker), so every
//! mistake in the file is found before the first table is created; building
//! (`dataflow::build`) then opens exactly what the plan
//! names, in one pass.

use std::fmt;

use arrow::datatypes::{Schema, SchemaRef};

use crate::dataflow::layer_plan::{PlannedLayer, config, plan_layers};
use crate::dataflow::side_output::{Side, side_schema};
use crate::dataflow::spec::{DataflowSpec, InputFrom, LayerInput, PublishSpec, SourceSpec};
use crate::error::Result;
use crate::ods::{DEAD_LETTER_SUFFIX, EVENT_DATE, dead_letter_schema};
use crate::sql::planner::StreamingPlanner;
use crate::sql::program::{Program, duration};
use crate::storage::TableLocation;

/// How rows reach a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableWrite {
    /// Appended (ODS, row-by-row and windowed layers, side tables).
    Append,
    /// Upserted by these columns (a `GROUP BY` without windows).
    Upsert(Vec<String>),
}

/// What a side table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideRole {
    /// Records that could not be decoded, or whose lookup failed.
    DeadLetter,
    /// Rows dated too far ahead of the clock.
    Future,
    /// Late rows of this input.
    Late(String),
    /// Rows the layer's filter rejected.
    Rejected,
}

/// One Delta table a layer writes.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// The table's name (the layer's, or the layer's with a suffix).
    pub name: String,
    /// Where it lives.
    pub location: TableLocation,
    /// Its columns (no metadata: Delta keeps none).
    pub schema: SchemaRef,
    /// Its partition columns.
    pub partitions: Vec<String>,
    /// Appended or upserted.
    pub write: TableWrite,
    /// The Kafka topic its rows also go to, if any.
    pub topic: Option<PublishSpec>,
}

/// A side table of a layer.
#[derive(Debug, Clone)]
pub struct SidePlan {
    /// What it holds.
    pub role: SideRole,
    /// The table.
    pub table: TablePlan,
}

/// One layer, planned.
pub struct LayerPlan {
    /// Its query and schemas.
    pub planned: PlannedLayer,
    /// Its inputs, in the order of its channels.
    pub inputs: Vec<LayerInput>,
    /// Its own table (and topic, with `publish:`).
    pub main: TablePlan,
    /// Its side tables.
    pub sides: Vec<SidePlan>,
    /// The layers that read it.
    pub downstream: Vec<String>,
}

impl LayerPlan {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.planned.spec.name
    }
}

/// A whole dataflow, planned.
pub struct DataflowPlan {
    /// The checkpoint namespace (the warehouse's name).
    pub id: String,
    /// Its sources.
    pub sources: Vec<SourceSpec>,
    /// Its layers, upstream first.
    pub layers: Vec<LayerPlan>,
    /// The spec it was planned from.
    pub spec: DataflowSpec,
}

impl DataflowPlan {
    /// Plans `spec`: every layer's SQL, then its tables.
    pub async fn new(spec: &DataflowSpec, planner: &StreamingPlanner) -> Result<Self> {
        let planned = plan_layers(spec, planner).await?;
        let mut layers = Vec::with_capacity(planned.len());
        for layer in planned {
            layers.push(plan_tables(spec, layer)?);
        }
        let names: Vec<String> = layers.iter().map(|l| l.name().to_string()).collect();
        for name in names {
            let readers: Vec<String> = layers
                .iter()
                .filter(|l| {
                    l.inputs
                        .iter()
                        .any(|i| i.from == InputFrom::Layer(name.clone()))
                })
                .map(|l| l.name().to_string())
                .collect();
            if let Some(layer) = layers.iter_mut().find(|l| l.name() == name) {
                layer.downstream = readers;
            }
        }
        Ok(DataflowPlan {
            id: spec.id.clone(),
            sources: spec.sources.clone(),
            layers,
            spec: spec.clone(),
        })
    }
}

/// `schema` without the metadata the planner reads (Delta tables keep none).
pub(crate) fn without_metadata(schema: &SchemaRef) -> SchemaRef {
    std::sync::Arc::new(Schema::new(schema.fields().clone()))
}

/// The tables of `layer`, and the checks that need them.
fn plan_tables(spec: &DataflowSpec, layer: PlannedLayer) -> Result<LayerPlan> {
    let name = layer.spec.name.clone();
    let kind = layer.spec.kind.clone();
    if layer.spec.publish.is_some() && (layer.query.is_none() || layer.updating) {
        return Err(config(
            &layer.spec,
            "publish: is for SQL layers whose rows are appended (windowed or row-by-row): an ods layer's topic is already in Kafka, and a GROUP BY without windows updates rows in place".into(),
        ));
    }
    let main = TablePlan {
        name: name.clone(),
        location: spec.storage.table(&kind, &name)?,
        schema: without_metadata(&layer.output),
        partitions: if layer.query.is_none() {
            vec![EVENT_DATE.to_string()]
        } else {
            Vec::new()
        },
        write: match layer.query.as_ref().map(|q| &q.program) {
            Some(Program::Updating { keys, .. }) => TableWrite::Upsert(keys.clone()),
            _ => TableWrite::Append,
        },
        topic: layer.spec.publish.clone(),
    };
    let side = |suffix: &str, role: SideRole, schema: SchemaRef| -> Result<SidePlan> {
        let table = format!("{name}{suffix}");
        Ok(SidePlan {
            role,
            table: TablePlan {
                location: spec.storage.table(&kind, &table)?,
                name: table,
                schema: without_metadata(&schema),
                partitions: Vec::new(),
                write: TableWrite::Append,
                topic: layer
                    .spec
                    .side_topics
                    .iter()
                    .find(|(s, _)| s == suffix)
                    .map(|(_, p)| p.clone()),
            },
        })
    };
    let mut sides = Vec::new();
    // Undecodable records (a topic input) and rows whose lookup failed
    // (lookup joins) are dead letters.
    let looks_up = layer
        .query
        .as_ref()
        .is_some_and(|q| !q.dimensions.is_empty());
    if layer.source_rows.is_some() || looks_up {
        sides.push(side(
            DEAD_LETTER_SUFFIX,
            SideRole::DeadLetter,
            dead_letter_schema(),
        )?);
    }
    if let Some(rows) = &layer.source_rows {
        sides.push(side(
            Side::Future.suffix(),
            SideRole::Future,
            side_schema(rows),
        )?);
    }
    let mut late_inputs: Vec<(String, String)> = Vec::new();
    for late in layer.query.iter().flat_map(|q| q.late_inputs.iter()) {
        // A self-join checks its one input once.
        if !late_inputs.iter().any(|(i, _)| *i == late.input) {
            late_inputs.push((late.input.clone(), late.time_column.clone()));
        }
    }
    for (input, time_column) in &late_inputs {
        let schema = &layer
            .inputs
            .iter()
            .find(|(n, _)| n == input)
            .ok_or_else(|| config(&layer.spec, format!("no input `{input}`")))?
            .1;
        if schema.index_of(time_column).is_err() {
            return Err(config(
                &layer.spec,
                format!("no column `{time_column}` in `{input}`"),
            ));
        }
        // One input: `<layer>_late`; a join's two: `<layer>_late_<input>`.
        let suffix = if late_inputs.len() == 1 {
            Side::Late.suffix().to_string()
        } else {
            format!("{}_{input}", Side::Late.suffix())
        };
        sides.push(side(
            &suffix,
            SideRole::Late(input.clone()),
            side_schema(schema),
        )?);
    }
    if layer.filter.is_some() && layer.spec.keep_rejected {
        let (_, schema) = layer
            .inputs
            .first()
            .ok_or_else(|| config(&layer.spec, "a filter needs an input".into()))?;
        sides.push(side(
            Side::Rejected.suffix(),
            SideRole::Rejected,
            side_schema(schema),
        )?);
    }
    for (suffix, _) in &layer.spec.side_topics {
        if !sides
            .iter()
            .any(|s| s.table.name == format!("{name}{suffix}"))
        {
            return Err(config(
                &layer.spec,
                format!(
                    "side_topics names a topic for `{name}{suffix}`, but the layer has no such table (late rows need a window or OVER aggregation, and a join's late tables are `_late_<input>`, which take no topic; rejected rows a filter with keep_rejected, future and dead-letter rows a topic input)"
                ),
            ));
        }
    }
    Ok(LayerPlan {
        inputs: layer.spec.inputs.clone(),
        planned: layer,
        main,
        sides,
        downstream: Vec::new(),
    })
}

impl fmt::Display for DataflowPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dataflow `{}`: {} source(s), {} layer(s), an epoch every {}",
            self.id,
            self.sources.len(),
            self.layers.len(),
            duration(self.spec.checkpoint_interval.as_micros() as i64)
        )?;
        for s in &self.sources {
            writeln!(
                f,
                "source {}: topics {} -> layer {} (as `{}`), watermark delay {}, idle after {}",
                s.id,
                s.topics.join(", "),
                s.layer,
                s.input,
                duration(s.watermark.delay.as_micros() as i64),
                duration(s.watermark.idle_timeout.as_micros() as i64)
            )?;
        }
        for layer in &self.layers {
            let inputs: Vec<String> = layer
                .inputs
                .iter()
                .map(|i| match &i.from {
                    InputFrom::Source(id) => format!("{} (source {id})", i.name),
                    InputFrom::Layer(up) if *up == i.name => format!("{up} (layer)"),
                    InputFrom::Layer(up) => format!("{} (layer {up})", i.name),
                })
                .collect();
            writeln!(
                f,
                "layer {} ({}): reads {}",
                layer.name(),
                layer.planned.spec.kind,
                inputs.join(", ")
            )?;
            match &layer.planned.query {
                Some(q) => {
                    for line in q.explain().lines() {
                        writeln!(f, "  {line}")?;
                    }
                }
                None => writeln!(f, "  lands its source's records as they are")?,
            }
            if let Some(filter) = &layer.planned.spec.filter {
                writeln!(f, "  filter: {filter}")?;
            }
            for (table, what) in std::iter::once((&layer.main, "rows".to_string())).chain(
                layer
                    .sides
                    .iter()
                    .map(|s| (&s.table, describe_role(&s.role))),
            ) {
                let write = match &table.write {
                    TableWrite::Append => "appended".to_string(),
                    TableWrite::Upsert(keys) => format!("upserted by {}", keys.join(", ")),
                };
                let parts = if table.partitions.is_empty() {
                    String::new()
                } else {
                    format!(", partitioned by {}", table.partitions.join(", "))
                };
                let topic = table
                    .topic
                    .as_ref()
                    .map(|t| format!(", also to topic {} ({:?})", t.topic, t.delivery))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  table {} ({what}, {write}{parts}{topic}): {}",
                    table.name, table.location.url
                )?;
            }
            if !layer.downstream.is_empty() {
                writeln!(f, "  read by {}", layer.downstream.join(", "))?;
            }
        }
        Ok(())
    }
}

fn describe_role(role: &SideRole) -> String {
    match role {
        SideRole::DeadLetter => "dead letters".into(),
        SideRole::Future => "future-dated rows".into(),
        SideRole::Late(input) => format!("late rows of {input}"),
        SideRole::Rejected => "rows the filter rejected".into(),
    }
}
