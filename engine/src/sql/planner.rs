//! From a layer's SQL to a streaming program.
//!
//! DataFusion plans the (window-rewritten) SQL as if the inputs were tables.
//! The physical plan is then cut at its one stateful node, the aggregate:
//! - below it, a stateless [`Segment`] run on every input batch;
//! - the aggregate becomes Strata's [`WindowAggregate`] (TUMBLE, HOP,
//!   CUMULATE, or a plain `GROUP BY`), or a session operator;
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
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};

use crate::lookup::Dimension;
use crate::operators::over_window::OverFrame;
use crate::operators::window_aggregate::WindowAggregate;
use crate::sql::batch_slot::BatchSlot;
use crate::sql::lookup_join::{LookupHandling, dimension_slot};
use crate::sql::lookup_plan::{LayerLookups, plan_lookups};
use crate::sql::over_plan::plan_over;
use crate::sql::plan_nodes::nodes_named_like;
pub(crate) use crate::sql::plan_nodes::{check_nodes, nodes_named, replace};
use crate::sql::segment::Segment;
use crate::sql::stream_join_plan::{StreamJoin, StreamJoinKind, plan_stream_join};
use crate::sql::stream_table::StreamTable;
use crate::sql::system_time::strip_system_time;
use crate::sql::window_tvf::{WindowKind, WindowTvf, rewrite};
use crate::sql::window_udfs::window_udfs;

/// The slot the aggregate's output is fed through, in the segment above it.
pub const AGGREGATE_SLOT: &str = "__strata_aggregate";
/// The slot closed sessions are fed through.
pub const SESSION_SLOT: &str = "__strata_session";

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
    /// The inputs and time columns whose rows behind the watermark are late
    /// (a window TVF's, an OVER aggregation's, both sides of a stream join).
    pub late_inputs: Vec<(String, String)>,
    /// The dimensions its lookup joins read.
    pub dimensions: Vec<Arc<Dimension>>,
    /// Its lookup failure handling (with lookup joins).
    pub lookup_handling: Option<Arc<LookupHandling>>,
}

/// The shapes of streaming program.
pub enum Program {
    /// Row by row: filters, projections, functions.
    Stateless(Segment),
    /// A TUMBLE / HOP / CUMULATE aggregation.
    Window {
        /// Up to the aggregate's input.
        below: Segment,
        /// The aggregate.
        aggregate: WindowAggregate,
        /// On emitted windows.
        above: Segment,
    },
    /// A SESSION aggregation: rows wait per key until their session closes.
    Session {
        /// Up to the aggregate's input.
        below: Segment,
        /// The aggregate and what is above it, run on closed sessions.
        closed: Segment,
        /// The inactivity gap, microseconds.
        gap_us: i64,
        /// Session keys (columns of `below`'s output).
        keys: Vec<String>,
    },
    /// A plain `GROUP BY`: results are updated as rows arrive and upserted
    /// by their group keys.
    Updating {
        /// Up to the aggregate's input.
        below: Segment,
        /// The aggregate (one never-closing bucket).
        aggregate: WindowAggregate,
        /// On current results.
        above: Segment,
        /// Output columns that identify a row (the GROUP BY keys).
        keys: Vec<String>,
    },
    /// A join of two streams on windows or event-time intervals.
    Join(Box<StreamJoin>),
    /// An OVER aggregation on a raw stream: each row's result once the
    /// watermark passes it.
    Over {
        /// Up to the window node's input.
        below: Segment,
        /// The window node (and its sort), on ready rows plus history.
        window: Segment,
        /// On new results.
        above: Segment,
        /// The event-time column the frame is ordered by.
        time_column: String,
        /// PARTITION BY columns.
        keys: Vec<String>,
        /// How far back a frame reaches.
        frame: OverFrame,
    },
}

/// Plans layer queries with DataFusion.
pub struct StreamingPlanner {
    udfs: Vec<ScalarUDF>,
}

/// DataFusion nodes that keep no state between batches.
pub(crate) const STATELESS: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "UnnestExec",
    "CooperativeExec",
    "CoalesceBatchesExec",
    "BatchSlot",
    "UnionExec",
    "InterleaveExec",
    "RepartitionExec",
    "CoalescePartitionsExec",
    "LookupJoinExec",
];
/// What may run on each emitted window, on top of the stateless nodes.
const PER_WINDOW: &[&str] = &[
    "SortExec",
    "BoundedWindowAggExec",
    "WindowAggExec",
    "SortPreservingMergeExec",
];

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
        let rewritten = rewrite(&system_time.sql).map_err(|e| PlanError::Sql(e.message))?;
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
        if nodes_named(&plan, "BatchSlot").is_empty() {
            let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(PlanError::Sql(format!(
                "the query reads no input: select FROM one of the layer's inputs ({})",
                names.join(", ")
            )));
        }
        let aggregates = nodes_named(&plan, "AggregateExec");
        let window_nodes: Vec<_> = nodes_named(&plan, "BoundedWindowAggExec")
            .into_iter()
            .chain(nodes_named(&plan, "WindowAggExec"))
            .collect();
        let mut late_inputs: Vec<(String, String)> = window
            .iter()
            .map(|w| (w.input.clone(), w.time_column.clone()))
            .collect();
        let stream_joins: Vec<_> = nodes_named_like(&plan, "Join")
            .into_iter()
            .filter(|n| n.name() != "LookupJoinExec")
            .collect();
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
                late_inputs = vec![over.late_input];
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

fn plan_aggregate(
    plan: &Arc<dyn ExecutionPlan>,
    agg_node: &Arc<dyn ExecutionPlan>,
    window: Option<&WindowTvf>,
) -> Result<(Program, Vec<String>), PlanError> {
    let Some(agg) = agg_node.downcast_ref::<AggregateExec>() else {
        return Err(PlanError::Sql("internal: not an aggregate".into()));
    };
    let below = Segment::new(agg.input().clone())?;
    check_nodes(below.plan(), STATELESS, "before the aggregation")?;
    let read = below.inputs();
    let names: Vec<&str> = agg
        .group_expr()
        .expr()
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    let windowed = names.contains(&"window_start") || names.contains(&"window_end");
    let program = match window {
        Some(w) if w.kind == WindowKind::Session => {
            if !(names.contains(&"window_start") && names.contains(&"window_end")) {
                return Err(PlanError::Unsupported(
                    "a SESSION aggregation must GROUP BY window_start, window_end (and its PARTITION BY keys)".into(),
                ));
            }
            let below_schema = below.schema();
            for key in &w.partition_by {
                if below_schema.field_with_name(key).is_err() || !names.contains(&key.as_str()) {
                    return Err(PlanError::Unsupported(format!(
                        "SESSION ... PARTITION BY {key}: GROUP BY {key} too, so each session's result is one row"
                    )));
                }
            }
            let slot: Arc<dyn ExecutionPlan> =
                Arc::new(BatchSlot::new(SESSION_SLOT, below_schema, None));
            let input = agg.input().clone();
            let closed = replace(plan, &input, slot)?;
            check_nodes(
                &closed,
                &[STATELESS, PER_WINDOW, &["AggregateExec"]].concat(),
                "on a session window",
            )?;
            check_per_window(&closed)?;
            Program::Session {
                below,
                closed: Segment::new(closed)?,
                gap_us: w.size_us,
                keys: w.partition_by.clone(),
            }
        }
        Some(_) => {
            if !(windowed && names.contains(&"window_end")) {
                return Err(PlanError::Unsupported(
                    "a windowed aggregation must GROUP BY window_start, window_end, ... (Flink's window TVF aggregation)".into(),
                ));
            }
            let aggregate = WindowAggregate::from_exec(agg, Some("window_end"))?;
            let above = above_segment(plan, agg_node, agg)?;
            check_nodes(
                above.plan(),
                &[STATELESS, PER_WINDOW].concat(),
                "on a window's results",
            )?;
            check_per_window(above.plan())?;
            Program::Window {
                below,
                aggregate,
                above,
            }
        }
        None => {
            if windowed {
                return Err(PlanError::Unsupported(
                    "window_start / window_end come from a window TVF: FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))".into(),
                ));
            }
            let aggregate = WindowAggregate::from_exec(agg, None)?;
            let above = above_segment(plan, agg_node, agg)?;
            check_nodes(
                above.plan(),
                STATELESS,
                "on the results of a GROUP BY without windows",
            )?;
            let output = above.schema();
            let mut keys = Vec::new();
            for name in &names {
                if output.field_with_name(name).is_err() {
                    return Err(PlanError::Unsupported(format!(
                        "a GROUP BY without windows is kept up to date by its keys: select `{name}` (every GROUP BY column) in the result"
                    )));
                }
                keys.push(name.to_string());
            }
            Program::Updating {
                below,
                aggregate,
                above,
                keys,
            }
        }
    };
    Ok((program, read))
}

fn above_segment(
    plan: &Arc<dyn ExecutionPlan>,
    agg_node: &Arc<dyn ExecutionPlan>,
    agg: &AggregateExec,
) -> Result<Segment, PlanError> {
    let slot: Arc<dyn ExecutionPlan> = Arc::new(BatchSlot::new(
        AGGREGATE_SLOT,
        ExecutionPlan::schema(agg),
        None,
    ));
    Ok(Segment::new(replace(plan, agg_node, slot)?)?)
}

/// Window functions on a window's results must stay within one window.
fn check_per_window(plan: &Arc<dyn ExecutionPlan>) -> Result<(), PlanError> {
    let mut problem = None;
    plan.apply(|node| {
        let exprs = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            w.window_expr().to_vec()
        } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
            w.window_expr().to_vec()
        } else {
            return Ok(TreeNodeRecursion::Continue);
        };
        for e in exprs {
            let per_window = e.partition_by().iter().any(|p| {
                p.downcast_ref::<Column>()
                    .is_some_and(|c| c.name() == "window_start" || c.name() == "window_end")
            });
            if !per_window {
                problem = Some(e.name().to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match problem {
        None => Ok(()),
        Some(name) => Err(PlanError::Unsupported(format!(
            "{name}: an OVER clause on window results must PARTITION BY window_start (or window_end), so each window is ranked on its own (window Top-N)"
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
        Program::Join(j) if j.kind == StreamJoinKind::Window => {
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
mod function_tests;
#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod lookup_tests;

/// Schema metadata naming a stream's event-time column.
pub const TIME_COLUMN_KEY: &str = "strata.event_time";
