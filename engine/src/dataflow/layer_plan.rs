//! Planning every layer of a dataflow from schemas alone, before anything
//! is opened: a mistake in the third layer's SQL is reported before the
//! first layer has created a table, and `strata validate` can run the same
//! planning.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionContext;

use crate::dataflow::layer_task::RowFilter;
use crate::dataflow::spec::{DataflowSpec, InputFrom, LayerSpec, SourceSpec};
use crate::delta::storable::storable_schema;
use crate::error::{EngineError, Result};
use crate::lookup::Dimension;
use crate::ods::ods_schema;
use crate::sql::lookup_join::LookupHandling;
use crate::sql::lookup_plan::LayerLookups;
use crate::sql::planner::{PlannedQuery, StreamingPlanner, TIME_COLUMN_KEY};
use crate::sql::program::{Program, WindowCadence};

/// A layer's query and schemas, planned.
pub struct PlannedLayer {
    /// What the file says.
    pub spec: LayerSpec,
    /// Its inputs: the names its SQL reads, and their rows.
    pub inputs: Vec<(String, SchemaRef)>,
    /// The planned SQL (`None`: an ODS layer).
    pub query: Option<PlannedQuery>,
    /// Its output rows; the event-time column is named in the metadata.
    pub output: SchemaRef,
    /// Whether its rows are upserted (a `GROUP BY` without windows).
    pub updating: bool,
    /// Its compiled `filter:`.
    pub(crate) filter: Option<RowFilter>,
    /// The rows of its source input, if it reads a topic.
    pub source_rows: Option<SchemaRef>,
}

/// Plans every layer of `spec`, upstream first.
pub async fn plan_layers(
    spec: &DataflowSpec,
    planner: &StreamingPlanner,
) -> Result<Vec<PlannedLayer>> {
    let sources: HashMap<&str, &SourceSpec> =
        spec.sources.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut planned: Vec<PlannedLayer> = Vec::new();
    // One of each dimension, shared by the layers that join it.
    let dimensions: Vec<Arc<Dimension>> = spec
        .dimensions
        .iter()
        .map(|d| Arc::new(Dimension::new(d.clone())))
        .collect();
    for layer in &spec.layers {
        let mut inputs = Vec::new();
        let mut source_rows_of = None;
        for input in &layer.inputs {
            let schema = match &input.from {
                InputFrom::Source(id) => {
                    let source = sources
                        .get(id.as_str())
                        .ok_or_else(|| config(layer, format!("no source `{id}`")))?;
                    let rows = source_rows(source);
                    source_rows_of = Some(rows.clone());
                    rows
                }
                InputFrom::Layer(up) => {
                    let upstream =
                        planned.iter().find(|p| p.spec.name == *up).ok_or_else(|| {
                            config(
                                layer,
                                format!(
                                    "reads layer `{up}`, which is not run with it; run `{up}` too"
                                ),
                            )
                        })?;
                    if upstream.updating {
                        return Err(config(
                            layer,
                            format!(
                                "reads `{up}`, whose rows are updated in place (a GROUP BY without windows); streaming layers can only read append-only layers"
                            ),
                        ));
                    }
                    upstream.output.clone()
                }
            };
            inputs.push((input.name.clone(), schema));
        }
        let query = match &layer.sql {
            None => None,
            Some(sql) => {
                let lookups = LayerLookups {
                    dimensions: dimensions.clone(),
                    handling: Arc::new(LookupHandling::new(&layer.name, layer.lookup_failure)),
                };
                let mut query = planner
                    .plan_with_lookups(sql, &inputs, Some(&lookups))
                    .await
                    .map_err(|e| config(layer, e.to_string()))?;
                set_state_ttl(layer, &mut query.program)?;
                Some(query)
            }
        };
        if layer.sql.is_none() && layer.state_ttl.is_some() {
            return Err(config(
                layer,
                "`state_ttl` applies to a layer whose SQL is a GROUP BY without windows; an ods layer keeps no state: remove it".into(),
            ));
        }
        let output = match &query {
            None => inputs
                .first()
                .map(|(_, rows)| rows.clone())
                .ok_or_else(|| config(layer, "an ods layer needs its source".into()))?,
            Some(q) => storable_schema(&with_time_column(
                q.output_schema.clone(),
                q.output_time_column.as_deref(),
            )),
        };
        let filter = match &layer.filter {
            None => None,
            Some(text) => {
                let [(_, schema)] = inputs.as_slice() else {
                    return Err(config(layer, "a filter needs exactly one input".into()));
                };
                Some(plan_filter(layer, text, schema)?)
            }
        };
        planned.push(PlannedLayer {
            spec: layer.clone(),
            updating: query
                .as_ref()
                .is_some_and(|q| matches!(q.program, Program::Updating { .. })),
            inputs,
            query,
            output,
            filter,
            source_rows: source_rows_of,
        });
    }
    Ok(planned)
}

/// A layer as `strata validate` reports it.
pub struct CheckedLayer {
    /// The layer.
    pub name: String,
    /// Its output rows.
    pub output: SchemaRef,
    /// What runs its query (`None`: an ODS layer).
    pub operator: Option<String>,
    /// How far its watermark is behind the newest event of its sources,
    /// microseconds: the allowed delays on the way and the lags of the
    /// layers upstream.
    pub behind_us: i64,
    /// How far behind its own watermark the rows it emits can be dated:
    /// the watermark it forwards is held back by as much.
    pub output_lag_us: i64,
    /// Whether a layer of the dataflow reads it.
    pub read_downstream: bool,
    /// When it emits, if at window ends.
    pub emits: Option<WindowCadence>,
}

/// Plans every layer and returns what `strata validate` reports of each,
/// or the first problem.
pub async fn check(spec: &DataflowSpec) -> Result<Vec<CheckedLayer>> {
    let planner = StreamingPlanner::new(spec.udfs.clone());
    let planned = plan_layers(spec, &planner).await?;
    let mut checked: Vec<CheckedLayer> = Vec::new();
    for layer in planned {
        let mut behind_inputs = 0;
        for input in &layer.spec.inputs {
            let behind = match &input.from {
                InputFrom::Source(id) => spec
                    .sources
                    .iter()
                    .find(|s| s.id == *id)
                    .map_or(0, |s| s.watermark.delay.as_micros() as i64),
                InputFrom::Layer(up) => checked
                    .iter()
                    .find(|c| c.name == *up)
                    .map_or(0, |c| c.behind_us.saturating_add(c.output_lag_us)),
            };
            behind_inputs = behind_inputs.max(behind);
        }
        checked.push(CheckedLayer {
            name: layer.spec.name.clone(),
            operator: layer.query.as_ref().map(|q| q.program.describe()),
            emits: layer.query.as_ref().and_then(|q| q.program.emits_every()),
            behind_us: behind_inputs.saturating_add(layer.spec.delay.as_micros() as i64),
            output_lag_us: layer
                .query
                .as_ref()
                .map_or(0, |q| q.program.output_lag_us()),
            read_downstream: spec.layers.iter().any(|l| {
                l.inputs
                    .iter()
                    .any(|i| i.from == InputFrom::Layer(layer.spec.name.clone()))
            }),
            output: layer.output,
        });
    }
    Ok(checked)
}

pub(crate) fn config(layer: &LayerSpec, message: String) -> EngineError {
    EngineError::Plan {
        layer: layer.name.clone(),
        reason: message,
    }
}

/// `schema` with its event-time column named in the metadata the planner
/// reads.
fn with_time_column(schema: SchemaRef, column: Option<&str>) -> SchemaRef {
    let mut metadata = HashMap::new();
    if let Some(c) = column {
        metadata.insert(TIME_COLUMN_KEY.to_string(), c.to_string());
    }
    Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata))
}

/// The rows a source produces: the record's fields and Kafka metadata.
fn source_rows(source: &SourceSpec) -> SchemaRef {
    with_time_column(
        ods_schema(&source.schema.to_arrow()),
        source.schema.event_time.as_deref(),
    )
}

/// Gives an updating aggregate the layer's `state_ttl`; refuses one on
/// any other query (windowed state is freed when its window closes, join
/// state when the watermark passes it).
fn set_state_ttl(layer: &LayerSpec, program: &mut Program) -> Result<()> {
    let Some(ttl) = layer.state_ttl else {
        return Ok(());
    };
    match program {
        Program::Updating { state_ttl, .. } => {
            *state_ttl = Some(ttl);
            Ok(())
        }
        other => Err(config(
            layer,
            format!(
                "`state_ttl` applies to a GROUP BY without windows, whose groups never close; this layer runs {} (what state it keeps is freed as the watermark passes): remove `state_ttl`",
                other.describe()
            ),
        )),
    }
}

fn plan_filter(layer: &LayerSpec, text: &str, schema: &SchemaRef) -> Result<RowFilter> {
    let ctx = SessionContext::new();
    let bad = |e: datafusion::error::DataFusionError| {
        config(layer, format!("filter `{text}`: {}", e.find_root()))
    };
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(bad)?;
    let expr = ctx.parse_sql_expr(text, &df_schema).map_err(bad)?;
    let predicate = ctx.create_physical_expr(expr, &df_schema).map_err(bad)?;
    Ok(RowFilter {
        predicate,
        text: text.to_string(),
    })
}
