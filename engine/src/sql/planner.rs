//! From a layer's SQL to a streaming program.
//!
//! DataFusion plans the (window-rewritten) SQL as if the inputs were tables.
//! The physical plan is then cut at its one stateful node, the aggregate:
//! - below it, a stateless [`Segment`] run on every input batch;
//! - the aggregate becomes Strata's window operator (TUMBLE, HOP,
//!   CUMULATE, or a plain `GROUP BY`), or a session operator
//!   (`aggregate_plan`);
//! - above it, a stateless segment run on every batch the aggregate emits:
//!   HAVING, projections, and per-window Top-N (`ROW_NUMBER() OVER
//!   (PARTITION BY window_start ...)`), which only ever see whole windows.
//!
//! Anything that would need state DataFusion keeps (a sort or a LIMIT over
//! the whole stream, a second aggregation) is refused with what to write
//! instead, rather than run with batch semantics that would be wrong.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::displayable;

use crate::lookup::Dimension;
use crate::sql::aggregate_plan::plan_aggregate;
use crate::sql::lookup_join::{LookupHandling, dimension_slot};
use crate::sql::lookup_plan::{LayerLookups, plan_lookups};
use crate::sql::over_plan::plan_over;
pub(crate) use crate::sql::plan_nodes::{NodeKind, STATELESS, check_nodes, nodes_of, replace};
use crate::sql::program::{LateInput, Lateness, Program, duration};
use crate::sql::segment::Segment;
use crate::sql::stream_join_plan::{StreamJoinKind, plan_stream_join};
use crate::sql::stream_table::StreamTable;
use crate::sql::system_time::strip_system_time;
use crate::sql::window_tvf::{Assign, WindowTvf, rewrite, rewrite_as};
use crate::sql::window_udfs::window_udfs;

/// Why a layer's SQL cannot run as a stream.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The SQL itself is wrong (syntax, unknown column, types).
    #[error("{0}")]
    Sql(String),
    /// Valid SQL that has no streaming meaning (yet); says what to write.
    #[error("{0}")]
    Unsupported(String),
}

impl From<DataFusionError> for PlanError {
    fn from(e: DataFusionError) -> Self {
        PlanError::Sql(e.find_root().to_string())
    }
}

/// A layer's query, ready to run.
pub struct PlannedQuery {
    /// The layer's output rows.
    pub output_schema: SchemaRef,
    /// How the rows are computed.
    pub program: Program,
    /// The window TVF, if the query has one.
    pub window: Option<WindowTvf>,
    /// The input names the query reads.
    pub inputs: Vec<String>,
    /// The output column carrying event time, if any: what downstream
    /// layers window on.
    pub output_time_column: Option<String>,
    /// The inputs whose rows can be late, and when they are (a window
    /// TVF's, an OVER aggregation's, both sides of a stream join).
    pub late_inputs: Vec<LateInput>,
    /// The dimensions its lookup joins read.
    pub dimensions: Vec<Arc<Dimension>>,
    /// Its lookup failure handling (with lookup joins).
    pub lookup_handling: Option<Arc<LookupHandling>>,
}

impl PlannedQuery {
    /// The streaming plan as text: the operator, when each input's rows
    /// are late, the watermark it forwards, and each stateless segment's
    /// DataFusion plan.
    pub fn explain(&self) -> String {
        let mut out = vec![self.program.describe()];
        for late in &self.late_inputs {
            out.push(format!(
                "late rows of {} (by {}): {}",
                late.input,
                late.time_column,
                late.rule.describe()
            ));
        }
        let lag = self.program.output_lag_us();
        out.push(if lag == 0 {
            "output watermark: the layer's own".into()
        } else {
            format!("output watermark: the layer's minus {}", duration(lag))
        });
        for (role, segment) in self.program.segments() {
            out.push(format!("{role}:"));
            let text = displayable(segment.plan().as_ref())
                .indent(true)
                .to_string();
            out.extend(text.lines().map(|l| format!("  {l}")));
        }
        out.join("\n")
    }
}

/// Plans layer queries with DataFusion.
pub struct StreamingPlanner {
    udfs: Vec<ScalarUDF>,
}

impl StreamingPlanner {
    /// A planner; `udfs` are users' scalar functions, callable by name.
    pub fn new(udfs: Vec<ScalarUDF>) -> Self {
        StreamingPlanner { udfs }
    }

    fn context(&self) -> Result<SessionContext, PlanError> {
        // One partition: there is no repartitioning on a stream, and the
        // aggregate is planned as a single-phase node.
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        // Segments run again and again on new batches: no filter learned
        // from one run's build side may carry over to the next.
        config
            .options_mut()
            .optimizer
            .enable_dynamic_filter_pushdown = false;
        let ctx = SessionContext::new_with_config(config);
        // COUNT(DISTINCT x) alone would become two stacked aggregations.
        ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
        let mut ctx = ctx;
        // json_get_str(payload, 'a', 'b'), payload->'a'->>'b', ...
        datafusion_functions_json::register_all(&mut ctx)?;
        // Users' functions last: a UDF may replace a built-in of its name.
        for f in window_udfs().into_iter().chain(self.udfs.iter().cloned()) {
            ctx.register_udf(f);
        }
        Ok(ctx)
    }

    /// The task context segments run in.
    pub fn task_ctx(&self) -> Result<Arc<TaskContext>, PlanError> {
        Ok(self.context()?.task_ctx())
    }

    /// Plans `sql` over `inputs` (name, schema); an input's event-time column
    /// is named in its schema's metadata under [`TIME_COLUMN_KEY`].
    pub async fn plan(
        &self,
        sql: &str,
        inputs: &[(String, SchemaRef)],
    ) -> Result<PlannedQuery, PlanError> {
        self.plan_with_lookups(sql, inputs, None).await
    }

    /// Plans `sql` as [`plan`](Self::plan) does, with `lookups`' dimensions
    /// joinable `FOR SYSTEM_TIME AS OF`.
    pub async fn plan_with_lookups(
        &self,
        sql: &str,
        inputs: &[(String, SchemaRef)],
        lookups: Option<&LayerLookups>,
    ) -> Result<PlannedQuery, PlanError> {
        let system_time = strip_system_time(sql).map_err(PlanError::Sql)?;
        let mut rewritten = rewrite(&system_time.sql).map_err(|e| PlanError::Sql(e.message))?;
        // Two windows are a window join, which matches whole windows.
        if rewritten.windows.len() == 2 {
            rewritten = rewrite_as(&system_time.sql, Assign::Windows)
                .map_err(|e| PlanError::Sql(e.message))?;
        }
        if rewritten.windows.len() > 2 {
            return Err(PlanError::Unsupported(
                "one window TVF per layer, or one per side of a window join: window the others in layers of their own".into(),
            ));
        }
        // Two windows are the two sides of a window join.
        let window = match rewritten.windows.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let ctx = self.context()?;
        for (name, schema) in inputs {
            ctx.register_table(
                name.as_str(),
                Arc::new(StreamTable::new(name, schema.clone())),
            )?;
        }
        let dims: &[Arc<Dimension>] = lookups.map_or(&[], |l| &l.dimensions);
        for table in &system_time.tables {
            if !dims.iter().any(|d| d.name().eq_ignore_ascii_case(table)) {
                let names: Vec<&str> = dims.iter().map(|d| d.name()).collect();
                return Err(PlanError::Sql(format!(
                    "`{table}` is joined FOR SYSTEM_TIME AS OF but is not a dimension; declare it under `dimensions:` (declared: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        for d in dims {
            ctx.register_table(
                d.name(),
                Arc::new(StreamTable::new(&dimension_slot(d.name()), d.schema())),
            )?;
        }
        for w in &rewritten.windows {
            check_time_column(w, inputs)?;
        }
        let plan = ctx
            .sql(&rewritten.sql)
            .await?
            .create_physical_plan()
            .await?;
        let (plan, dimensions) = match lookups {
            Some(l) => {
                let planned = plan_lookups(plan, l, &system_time.tables)?;
                (planned.plan, planned.dimensions)
            }
            None => (plan, Vec::new()),
        };
        if nodes_of(&plan, &[NodeKind::Slot]).is_empty() {
            let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(PlanError::Sql(format!(
                "the query reads no input: select FROM one of the layer's inputs ({})",
                names.join(", ")
            )));
        }
        let aggregates = nodes_of(&plan, &[NodeKind::Aggregate]);
        let window_nodes = nodes_of(&plan, &[NodeKind::Window]);
        let mut late_inputs: Vec<LateInput> = window
            .iter()
            .map(|w| LateInput {
                input: w.input.clone(),
                time_column: w.time_column.clone(),
                rule: Lateness::of_window(w),
            })
            .collect();
        let stream_joins = nodes_of(&plan, &[NodeKind::HashJoin, NodeKind::OtherJoin]);
        if rewritten.windows.len() == 2 && stream_joins.is_empty() {
            return Err(PlanError::Unsupported(
                "two window TVFs in one layer are the two sides of a window join: JOIN them ON a.window_start = b.window_start AND a.window_end = b.window_end".into(),
            ));
        }
        let (program, read) = match aggregates.as_slice() {
            _ if !stream_joins.is_empty() => {
                let [node] = stream_joins.as_slice() else {
                    return Err(PlanError::Unsupported(
                        "one join of two streams per layer: join the third stream in a downstream layer".into(),
                    ));
                };
                let join = plan_stream_join(&plan, node, &rewritten.windows, inputs)?;
                late_inputs = join.late_inputs.clone();
                let read = vec![join.left_input.clone(), join.right_input.clone()];
                (Program::Join(Box::new(join)), read)
            }
            [] if window.is_none() && !window_nodes.is_empty() => {
                let [node] = window_nodes.as_slice() else {
                    return Err(PlanError::Unsupported(
                        "every OVER clause of a layer needs the same PARTITION BY, ORDER BY and frame (Flink's rule too); compute the others in another layer".into(),
                    ));
                };
                let over = plan_over(&plan, node, inputs)?;
                late_inputs = vec![LateInput {
                    input: over.late_input.0,
                    time_column: over.late_input.1,
                    rule: Lateness::EventTime,
                }];
                (over.program, over.inputs)
            }
            [] => {
                check_nodes(&plan, STATELESS, "in a layer without aggregation")?;
                if window.is_some() {
                    return Err(PlanError::Unsupported(
                        "a window TVF needs an aggregation: GROUP BY window_start, window_end, ..."
                            .into(),
                    ));
                }
                let segment = Segment::new(plan.clone())?;
                let read = segment.inputs();
                (Program::Stateless(segment), read)
            }
            [agg_node] => plan_aggregate(&plan, agg_node, window.as_ref())?,
            _ => {
                return Err(PlanError::Unsupported(
                    "one aggregation per layer: compute the second in a downstream layer that reads this one".into(),
                ));
            }
        };
        let declared: HashSet<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        let used: HashSet<&str> = read.iter().map(String::as_str).collect();
        if let Some(unused) = declared.iter().find(|n| !used.contains(*n)) {
            return Err(PlanError::Sql(format!(
                "input `{unused}` is declared but the SQL never reads it; name it in FROM or remove it from inputs (its rows would be dropped)"
            )));
        }
        let output_schema = plan.schema();
        check_column_names(&output_schema)?;
        let output_time_column = output_time_column(&output_schema, inputs, &program);
        Ok(PlannedQuery {
            output_schema,
            program,
            window,
            inputs: read,
            output_time_column,
            late_inputs,
            lookup_handling: (!dimensions.is_empty())
                .then(|| lookups.map(|l| l.handling.clone()))
                .flatten(),
            dimensions,
        })
    }
}

/// Output columns become Delta columns and names downstream SQL refers to:
/// an expression's generated name (`count(deals.id)`) is neither.
fn check_column_names(schema: &SchemaRef) -> Result<(), PlanError> {
    let plain = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if let Some(f) = schema.fields().iter().find(|f| !plain(f.name())) {
        return Err(PlanError::Sql(format!(
            "output column `{}` needs a name: alias it, e.g. `{} AS total`",
            f.name(),
            f.name()
        )));
    }
    // json_get returns a union of JSON types, which no table can store.
    if let Some(f) = schema
        .fields()
        .iter()
        .find(|f| matches!(f.data_type(), arrow::datatypes::DataType::Union(..)))
    {
        return Err(PlanError::Unsupported(format!(
            "output column `{}` is a JSON value of any type (json_get / ->): pick one with json_get_str, json_get_int, json_get_float, json_get_bool or json_get_json (->> gives text)",
            f.name()
        )));
    }
    Ok(())
}

fn check_time_column(w: &WindowTvf, inputs: &[(String, SchemaRef)]) -> Result<(), PlanError> {
    let Some((_, schema)) = inputs.iter().find(|(n, _)| *n == w.input) else {
        let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(PlanError::Sql(format!(
            "{}(TABLE {}, ...): `{}` is not an input of this layer; inputs: {}",
            w.kind,
            w.input,
            w.input,
            names.join(", ")
        )));
    };
    if let Some(taken) = ["window_start", "window_end"]
        .into_iter()
        .find(|c| schema.field_with_name(c).is_ok())
    {
        return Err(PlanError::Sql(format!(
            "{}(TABLE {}, ...) adds window_start and window_end, but `{}` already has a `{taken}` column (it was windowed upstream): rename the upstream layer's window columns (window_end AS {}_end) or leave them out of its SELECT",
            w.kind, w.input, w.input, w.input
        )));
    }
    match schema.field_with_name(&w.time_column) {
        Ok(f) if matches!(f.data_type(), arrow::datatypes::DataType::Timestamp(_, _)) => Ok(()),
        Ok(f) => Err(PlanError::Sql(format!(
            "DESCRIPTOR({}) must name a timestamp column; it is {}",
            w.time_column,
            f.data_type()
        ))),
        Err(_) => Err(PlanError::Sql(format!(
            "DESCRIPTOR({}): `{}` has no such column",
            w.time_column, w.input
        ))),
    }
}

fn output_time_column(
    output: &SchemaRef,
    inputs: &[(String, SchemaRef)],
    program: &Program,
) -> Option<String> {
    let has = |name: &str| output.field_with_name(name).is_ok();
    match program {
        // Emitted after their window closed: rows are stamped by its end.
        Program::Window { .. } | Program::Session { .. } => {
            has("window_end").then(|| "window_end".into())
        }
        Program::Updating { .. } => None,
        // Emitted when their window closes: stamped by its end.
        Program::Join(j) if matches!(j.kind, StreamJoinKind::Window { .. }) => {
            has("window_end").then(|| "window_end".into())
        }
        Program::Join(j) => inputs
            .iter()
            .filter(|(n, _)| *n == j.left_input || *n == j.right_input)
            .flat_map(|(_, s)| s.metadata().get(TIME_COLUMN_KEY).cloned())
            .find(|c| has(c)),
        Program::Stateless(_) | Program::Over { .. } => inputs
            .iter()
            .flat_map(|(_, s)| s.metadata().get(TIME_COLUMN_KEY).cloned())
            .find(|c| has(c)),
    }
}

#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod lookup_tests;

/// Schema metadata naming a stream's event-time column.
pub const TIME_COLUMN_KEY: &str = "strata.event_time";
