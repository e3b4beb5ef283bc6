//! A layer's state layout: what its checkpointed operator state holds, so
//! that a redeploy can tell whether the new SQL can take the old state.
//!
//! The state file of a windowed or plain `GROUP BY` is its group keys and
//! each aggregate's intermediate state; what it does not say is the window
//! those keys came from (a 1-minute and a 2-minute TUMBLE have the same
//! columns). So each manifest records the layout its layers ran with, and a
//! new deployment compares its own with it before anything is opened
//! (see [`super::compare()`]). Operators that keep rows rather than
//! aggregates (sessions, OVER, stream joins) are described by their SQL and
//! input columns: any change to them is a new state.

use serde::{Deserialize, Serialize};

use crate::sql::program::Program;
use crate::sql::window_tvf::WindowKind;
use crate::versions::hash_of;

/// What a layer's operator state holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLayout {
    /// `tumble`, `hop`, `cumulate`, `group by`, or `rows` (sessions, OVER,
    /// joins: state of kept rows).
    pub operator: String,
    /// The window, for windowed aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowShape>,
    /// Group keys, in state order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<StateColumn>,
    /// Aggregates, in state order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregates: Vec<AggregateState>,
    /// Kept-rows operators: sha256 of their description, SQL and input
    /// columns (any change: a state this SQL cannot read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A window's shape, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowShape {
    /// TUMBLE / HOP size, CUMULATE max size.
    pub size_us: i64,
    /// HOP slide, CUMULATE step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_us: Option<i64>,
    /// TUMBLE offset.
    #[serde(default)]
    pub offset_us: i64,
}

/// A column of the state, by name and Arrow type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateColumn {
    /// Its name.
    pub name: String,
    /// Its Arrow type, as Arrow prints it.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// One aggregate's state: its expression (as DataFusion names it, e.g.
/// `sum(dwd_deals.amount)`) and its intermediate state columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateState {
    /// The aggregate expression.
    pub name: String,
    /// Its state columns.
    pub state: Vec<StateColumn>,
}

impl StateLayout {
    /// The layout of `program`'s state, `sql` being the layer's SQL and
    /// `inputs` its inputs' columns (`None`: a row-by-row layer keeps no
    /// state).
    pub fn of(program: &Program, sql: &str, inputs: &str) -> Option<StateLayout> {
        match program {
            Program::Stateless(_) => None,
            Program::Window {
                aggregate, window, ..
            } => {
                let operator = match window.kind {
                    WindowKind::Tumble => "tumble",
                    WindowKind::Hop => "hop",
                    WindowKind::Cumulate => "cumulate",
                    WindowKind::Session => "session",
                };
                Some(aggregate_layout(
                    operator,
                    Some(WindowShape {
                        size_us: window.size_us,
                        step_us: window.step_us,
                        offset_us: window.offset_us,
                    }),
                    aggregate.exec(),
                ))
            }
            Program::Updating { aggregate, .. } => {
                Some(aggregate_layout("group by", None, aggregate.exec()))
            }
            Program::Session { .. } | Program::Over { .. } | Program::Join(_) => {
                let text = format!("{}\n{sql}\n{inputs}", program.describe());
                Some(StateLayout {
                    operator: "rows".into(),
                    window: None,
                    keys: Vec::new(),
                    aggregates: Vec::new(),
                    fingerprint: Some(hash_of(text.as_bytes())),
                })
            }
        }
    }

    /// The operator as people read it: `tumble 1m`, `group by`, ...
    pub fn describe(&self) -> String {
        match &self.window {
            Some(w) => {
                let mut text = format!("{} {}", self.operator, micros(w.size_us));
                if let Some(step) = w.step_us {
                    text.push_str(&format!(" step {}", micros(step)));
                }
                if w.offset_us != 0 {
                    text.push_str(&format!(" offset {}", micros(w.offset_us)));
                }
                text
            }
            None => self.operator.clone(),
        }
    }
}

fn aggregate_layout(
    operator: &str,
    window: Option<WindowShape>,
    agg: &datafusion::physical_plan::aggregates::AggregateExec,
) -> StateLayout {
    let input = agg.input_schema();
    let keys = agg
        .group_expr()
        .expr()
        .iter()
        .map(|(expr, name)| StateColumn {
            name: name.clone(),
            data_type: expr
                .data_type(&input)
                .map_or_else(|e| format!("unknown ({e})"), |t| t.to_string()),
        })
        .collect();
    let aggregates = agg
        .aggr_expr()
        .iter()
        .map(|a| AggregateState {
            name: a.name().to_string(),
            state: a
                .state_fields()
                .map(|fields| {
                    fields
                        .iter()
                        .map(|f| StateColumn {
                            name: f.name().clone(),
                            data_type: f.data_type().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    StateLayout {
        operator: operator.into(),
        window,
        keys,
        aggregates,
        fingerprint: None,
    }
}

/// `us` microseconds as `90s`, `1m`, `2h`.
pub fn micros(us: i64) -> String {
    crate::sql::program::duration(us)
}
