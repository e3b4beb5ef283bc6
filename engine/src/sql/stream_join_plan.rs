//! Joins of two streams: Flink's window join and interval join.
//!
//! DataFusion plans `a JOIN b ON ...` as a hash join of two tables. Each
//! side below the join is a stateless segment of one input; the join and
//! everything above it become one segment whose two slots Strata fills:
//!
//! - **window join** (both sides a window TVF, joined on `window_start` and
//!   `window_end`): rows wait per side until the watermark passes their
//!   window's end, then the window's rows of both sides are joined at once,
//!   so `JOIN`, `LEFT`, `RIGHT` and `FULL JOIN` mean what they mean in SQL;
//! - **interval join** (`b.ts BETWEEN a.ts - INTERVAL ... AND a.ts +
//!   INTERVAL ...` on the inputs' event times, plus an equality): each new
//!   batch is joined at once with the other side's rows kept so far, and
//!   kept itself; a row is dropped once the watermark shows no row of the
//!   other side can still fall in its interval. Inner joins only: an outer
//!   interval join would have to emit unmatched rows when they expire.
//!
//! Both keep their rows in checkpoints. Rows behind the watermark on either
//! input go to the layer's late tables, as for a window aggregation.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::{JoinSide, JoinType, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::HashJoinExec;

use crate::sql::batch_slot::BatchSlot;
use crate::sql::plan_nodes::column_name;
use crate::sql::planner::{NodeKind, PlanError, STATELESS, TIME_COLUMN_KEY, check_nodes, replace};
use crate::sql::program::{LateInput, Lateness};
use crate::sql::segment::Segment;
use crate::sql::window_tvf::{WindowKind, WindowTvf};

/// The slot of the join's left side, in the joined segment.
pub const JOIN_LEFT_SLOT: &str = "__strata_join_left";
/// The slot of the join's right side.
pub const JOIN_RIGHT_SLOT: &str = "__strata_join_right";

/// Which kind of stream join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamJoinKind {
    /// Rows join within their window, when it closes.
    Window {
        /// The windows' size (CUMULATE: the period), microseconds.
        size_us: i64,
    },
    /// `right.time - left.time` in `[lower_us, upper_us]`.
    Interval {
        /// Left side's event-time column (in the left segment's output).
        left_time: String,
        /// Right side's.
        right_time: String,
        /// Least `right.time - left.time`, microseconds.
        lower_us: i64,
        /// Greatest.
        upper_us: i64,
    },
}

/// A planned join of two streams.
pub struct StreamJoin {
    /// Rows of the left input, as they enter the join.
    pub left: Segment,
    /// Rows of the right input.
    pub right: Segment,
    /// The join and what is above it, reading [`JOIN_LEFT_SLOT`] and
    /// [`JOIN_RIGHT_SLOT`].
    pub joined: Segment,
    /// The left input's name.
    pub left_input: String,
    /// The right input's name.
    pub right_input: String,
    /// Window or interval.
    pub kind: StreamJoinKind,
    /// Inputs whose rows can be late, and when they are.
    pub late_inputs: Vec<LateInput>,
}

/// Plans `plan`, whose one stream join is `node`.
pub fn plan_stream_join(
    plan: &Arc<dyn ExecutionPlan>,
    node: &Arc<dyn ExecutionPlan>,
    windows: &[WindowTvf],
    inputs: &[(String, SchemaRef)],
) -> Result<StreamJoin, PlanError> {
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Err(PlanError::Unsupported(format!(
            "{}: a join of two streams needs an equality on a key (ON a.k = b.k AND ...), as in Flink",
            node.name()
        )));
    };
    let left = Segment::new(join.left().clone())?;
    let right = Segment::new(join.right().clone())?;
    check_nodes(left.plan(), STATELESS, "before a join")?;
    check_nodes(right.plan(), STATELESS, "before a join")?;
    let (left_input, right_input) = match (left.inputs().as_slice(), right.inputs().as_slice()) {
        ([l], [r]) => (l.clone(), r.clone()),
        _ => {
            return Err(PlanError::Unsupported(
                "each side of a join of two streams reads one input".into(),
            ));
        }
    };
    let slots: Vec<Arc<dyn ExecutionPlan>> = vec![
        Arc::new(BatchSlot::new(JOIN_LEFT_SLOT, left.schema(), None)),
        Arc::new(BatchSlot::new(JOIN_RIGHT_SLOT, right.schema(), None)),
    ];
    let with_slots = replace_children_if_necessary(node.clone(), slots)?;
    let joined_plan = replace(plan, node, with_slots)?;
    check_nodes(
        &joined_plan,
        &[STATELESS, &[NodeKind::HashJoin]].concat(),
        "on a join's results",
    )
    .map_err(|e| match e {
        PlanError::Unsupported(m) if m.starts_with("AggregateExec") => PlanError::Unsupported(
            "aggregate a join's rows in a downstream layer that reads this one".into(),
        ),
        other => other,
    })?;
    let joined = Segment::new(joined_plan)?;
    let time_of = |input: &str| {
        inputs
            .iter()
            .find(|(n, _)| n == input)
            .and_then(|(_, s)| s.metadata().get(TIME_COLUMN_KEY).cloned())
    };
    let on_names: Vec<(Option<&str>, Option<&str>)> = join
        .on()
        .iter()
        .map(|(l, r)| (column_name(l), column_name(r)))
        .collect();
    let joins_on = |c: &str| on_names.contains(&(Some(c), Some(c)));
    if !windows.is_empty() {
        let [a, b] = windows else {
            return Err(PlanError::Unsupported(
                "a window join windows both sides: FROM TABLE(TUMBLE(TABLE a, ...)) a JOIN TABLE(TUMBLE(TABLE b, ...)) b".into(),
            ));
        };
        if a.input == b.input && a.time_column != b.time_column {
            return Err(PlanError::Unsupported(format!(
                "a window self-join of `{}` windows both sides by the same column; window the other column in a layer of its own",
                a.input
            )));
        }
        if a.kind == WindowKind::Session {
            return Err(PlanError::Unsupported(
                "a window join joins TUMBLE, HOP or CUMULATE windows; session bounds are only known per key after the fact: aggregate each side's sessions in its own layer and interval-join them".into(),
            ));
        }
        if a.kind != b.kind || a.size_us != b.size_us || a.step_us != b.step_us {
            return Err(PlanError::Unsupported(
                "a window join needs the same window on both sides (same function, size and step)"
                    .into(),
            ));
        }
        if !(joins_on("window_start") && joins_on("window_end")) {
            return Err(PlanError::Unsupported(
                "a window join matches windows: ON a.window_start = b.window_start AND a.window_end = b.window_end AND a.k = b.k".into(),
            ));
        }
        let late_inputs = windows
            .iter()
            .map(|w| LateInput {
                input: w.input.clone(),
                time_column: w.time_column.clone(),
                rule: Lateness::of_window(w),
            })
            .collect();
        return Ok(StreamJoin {
            left,
            right,
            joined,
            left_input,
            right_input,
            kind: StreamJoinKind::Window { size_us: a.size_us },
            late_inputs,
        });
    }
    if *join.join_type() != JoinType::Inner {
        return Err(PlanError::Unsupported(format!(
            "an interval join is an inner join (this one is {}); for rows without a match, join on windows",
            join.join_type()
        )));
    }
    let (Some(left_time), Some(right_time)) = (time_of(&left_input), time_of(&right_input)) else {
        return Err(PlanError::Unsupported(
            "an interval join bounds the inputs' event times; both inputs need one".into(),
        ));
    };
    let advice = format!(
        "an interval join bounds the event times on both sides: ON a.k = b.k AND b.{right_time} BETWEEN a.{left_time} - INTERVAL '5' MINUTE AND a.{left_time} + INTERVAL '5' MINUTE"
    );
    let filter = join
        .filter()
        .ok_or_else(|| PlanError::Unsupported(advice.clone()))?;
    let (mut lower, mut upper) = (None::<i64>, None::<i64>);
    for conjunct in conjuncts(filter.expression()) {
        let Some(bound) = time_bound(conjunct, filter.column_indices(), &left, &right) else {
            continue;
        };
        if bound.left_column != left_time || bound.right_column != right_time {
            continue;
        }
        match bound.kind {
            BoundKind::Lower(v) => lower = Some(lower.map_or(v, |l| l.max(v))),
            BoundKind::Upper(v) => upper = Some(upper.map_or(v, |u| u.min(v))),
        }
    }
    let (Some(lower_us), Some(upper_us)) = (lower, upper) else {
        return Err(PlanError::Unsupported(advice));
    };
    Ok(StreamJoin {
        late_inputs: [(&left_input, &left_time), (&right_input, &right_time)]
            .into_iter()
            .map(|(input, time)| LateInput {
                input: input.clone(),
                time_column: time.clone(),
                rule: Lateness::EventTime,
            })
            .collect(),
        left,
        right,
        joined,
        left_input,
        right_input,
        kind: StreamJoinKind::Interval {
            left_time,
            right_time,
            lower_us,
            upper_us,
        },
    })
}

fn conjuncts(expr: &Arc<dyn PhysicalExpr>) -> Vec<&Arc<dyn PhysicalExpr>> {
    match expr.downcast_ref::<BinaryExpr>() {
        Some(b) if *b.op() == Operator::And => {
            let mut out = conjuncts(b.left());
            out.extend(conjuncts(b.right()));
            out
        }
        _ => vec![expr],
    }
}

enum BoundKind {
    /// `right - left >= v`.
    Lower(i64),
    /// `right - left <= v`.
    Upper(i64),
}

struct TimeBound {
    left_column: String,
    right_column: String,
    kind: BoundKind,
}

/// `x op y` with each side `column [± interval]` of opposite join sides, as
/// a bound on `right.time - left.time`.
fn time_bound(
    expr: &Arc<dyn PhysicalExpr>,
    indices: &[datafusion::physical_plan::joins::utils::ColumnIndex],
    left: &Segment,
    right: &Segment,
) -> Option<TimeBound> {
    let b = expr.downcast_ref::<BinaryExpr>()?;
    let (x_side, x_col, x_off) = shifted_column(b.left(), indices, left, right)?;
    let (y_side, y_col, y_off) = shifted_column(b.right(), indices, left, right)?;
    // x + x_off OP y + y_off, rewritten as right - left OP' value.
    let (op, value, left_column, right_column) = match (x_side, y_side) {
        (JoinSide::Right, JoinSide::Left) => (*b.op(), y_off - x_off, y_col, x_col),
        (JoinSide::Left, JoinSide::Right) => (flip(*b.op())?, x_off - y_off, x_col, y_col),
        _ => return None,
    };
    let kind = match op {
        Operator::GtEq => BoundKind::Lower(value),
        Operator::Gt => BoundKind::Lower(value.saturating_add(1)),
        Operator::LtEq => BoundKind::Upper(value),
        Operator::Lt => BoundKind::Upper(value.saturating_sub(1)),
        _ => return None,
    };
    Some(TimeBound {
        left_column,
        right_column,
        kind,
    })
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::GtEq => Operator::LtEq,
        Operator::Gt => Operator::Lt,
        Operator::LtEq => Operator::GtEq,
        Operator::Lt => Operator::Gt,
        _ => return None,
    })
}

/// `column`, `column + interval` or `column - interval`: the column's side,
/// name and the offset in microseconds.
fn shifted_column(
    expr: &Arc<dyn PhysicalExpr>,
    indices: &[datafusion::physical_plan::joins::utils::ColumnIndex],
    left: &Segment,
    right: &Segment,
) -> Option<(JoinSide, String, i64)> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        let index = indices.get(c.index())?;
        let schema = match index.side {
            JoinSide::Left => left.schema(),
            JoinSide::Right => right.schema(),
            JoinSide::None => return None,
        };
        let name = schema.fields().get(index.index)?.name().clone();
        return Some((index.side, name, 0));
    }
    // Only a cast that keeps microsecond timestamps keeps the bound: a
    // cast to a date or a coarser unit widens it.
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        if !matches!(
            c.cast_type(),
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, _)
        ) {
            return None;
        }
        return shifted_column(c.expr(), indices, left, right);
    }
    let b = expr.downcast_ref::<BinaryExpr>()?;
    let sign = match b.op() {
        Operator::Plus => 1,
        Operator::Minus => -1,
        _ => return None,
    };
    let (side, name, base) = shifted_column(b.left(), indices, left, right)?;
    let literal = b.right().downcast_ref::<Literal>()?;
    Some((side, name, base + sign * interval_us(literal.value())?))
}

fn interval_us(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000_000 + v.nanoseconds / 1_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(v.days as i64 * 86_400_000_000 + v.milliseconds as i64 * 1_000)
        }
        ScalarValue::DurationMicrosecond(Some(v)) => Some(*v),
        ScalarValue::DurationMillisecond(Some(v)) => Some(v * 1_000),
        ScalarValue::DurationSecond(Some(v)) => Some(v * 1_000_000),
        _ => None,
    }
}
