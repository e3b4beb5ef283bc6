//! What the planner hands the operators: the shape of a layer's streaming
//! program, when its input rows are late, and how far its output lags its
//! watermark.
//!
//! The planner (`sql`) produces these; the operators (`operators`) run
//! them. Keeping them here, apart from both, is what lets the dependency
//! point one way: operators read plans, the planner never reads operators.
//!
//! # Lateness, per operator kind (Flink's rules)
//!
//! A row is late when the state it would go to has already been emitted:
//! - TUMBLE / HOP / CUMULATE: when every window it belongs to has closed
//!   (window end <= watermark). A HOP or CUMULATE row late for some of its
//!   windows still counts in the open ones.
//! - SESSION: when a session of its own would already have closed (event
//!   time + gap <= watermark).
//! - OVER and interval joins: when it is behind the watermark (the rows its
//!   frame or interval needs have been emitted or dropped).
//!
//! # Output watermarks
//!
//! A layer that emits rows dated before its watermark holds the watermark
//! it forwards back by as much ([`Program::output_lag_us`]), so a correct
//! downstream layer never sees its inputs' normal output as late: a window
//! emits its rows when the watermark passes its end, dated as early as its
//! start; a session as early as its last row (its end minus the gap); an
//! interval join pairs a new row with kept rows up to the interval behind.

use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

use crate::sql::segment::Segment;
use crate::sql::stream_join_plan::{StreamJoin, StreamJoinKind};
use crate::sql::window_tvf::{WindowKind, WindowTvf};
use crate::sql::window_udfs::window_start;

/// The slot the aggregate's output is fed through, in the segment above it.
pub const AGGREGATE_SLOT: &str = "__strata_aggregate";
/// The slot closed sessions are fed through.
pub const SESSION_SLOT: &str = "__strata_session";

/// The shapes of streaming program.
pub enum Program {
    /// Row by row: filters, projections, functions.
    Stateless(Segment),
    /// A TUMBLE / HOP / CUMULATE aggregation.
    Window {
        /// Up to the aggregate's input.
        below: Segment,
        /// The aggregate.
        aggregate: AggregateNode,
        /// On emitted windows.
        above: Segment,
        /// The window TVF.
        window: WindowTvf,
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
        aggregate: AggregateNode,
        /// On current results.
        above: Segment,
        /// Output columns that identify a row (the GROUP BY keys).
        keys: Vec<String>,
        /// Groups not updated for this long are forgotten (`state_ttl:`).
        state_ttl: Option<std::time::Duration>,
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

/// When a windowed layer emits: each time its watermark passes a window
/// end, and window ends are `offset_us + k * every_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCadence {
    /// Microseconds between window ends (TUMBLE size, HOP slide, CUMULATE
    /// step, window-join size).
    pub every_us: i64,
    /// Offset of window ends from the epoch, microseconds.
    pub offset_us: i64,
}

impl WindowCadence {
    /// The first window end after `watermark_us`: when the layer emits next.
    ///
    /// ```
    /// use strata_engine::sql::program::WindowCadence;
    /// let minute = WindowCadence { every_us: 60_000_000, offset_us: 0 };
    /// assert_eq!(minute.next_end(90_000_000), 120_000_000);
    /// assert_eq!(minute.next_end(120_000_000), 180_000_000);
    /// ```
    pub fn next_end(&self, watermark_us: i64) -> i64 {
        let every = self.every_us.max(1);
        let k = (watermark_us - self.offset_us).div_euclid(every) + 1;
        self.offset_us + k * every
    }
}

impl Program {
    /// When the layer emits, if it emits at window ends (TUMBLE, HOP,
    /// CUMULATE, window joins).
    pub fn emits_every(&self) -> Option<WindowCadence> {
        match self {
            Program::Window { window, .. } if window.kind != WindowKind::Session => {
                Some(WindowCadence {
                    every_us: window.step_us.unwrap_or(window.size_us),
                    offset_us: window.offset_us,
                })
            }
            Program::Join(j) => match &j.kind {
                StreamJoinKind::Window { size_us } => Some(WindowCadence {
                    every_us: *size_us,
                    offset_us: 0,
                }),
                StreamJoinKind::Interval { .. } => None,
            },
            _ => None,
        }
    }

    /// How far behind the layer's watermark the rows it emits can be dated,
    /// in microseconds: the watermark it forwards is held back by as much.
    pub fn output_lag_us(&self) -> i64 {
        match self {
            Program::Window { window, .. } => window.size_us,
            Program::Session { gap_us, .. } => *gap_us,
            Program::Join(j) => match &j.kind {
                StreamJoinKind::Window { size_us } => *size_us,
                StreamJoinKind::Interval {
                    lower_us, upper_us, ..
                } => (*upper_us).max(-*lower_us).max(0),
            },
            Program::Stateless(_) | Program::Updating { .. } | Program::Over { .. } => 0,
        }
    }

    /// Its stateless stretches, by role, in the order rows pass them.
    pub fn segments(&self) -> Vec<(&'static str, &Segment)> {
        match self {
            Program::Stateless(s) => vec![("rows", s)],
            Program::Window { below, above, .. } | Program::Updating { below, above, .. } => {
                vec![("below the aggregate", below), ("on results", above)]
            }
            Program::Session { below, closed, .. } => {
                vec![
                    ("below the sessions", below),
                    ("on closed sessions", closed),
                ]
            }
            Program::Over {
                below,
                window,
                above,
                ..
            } => vec![
                ("below the window", below),
                ("the window", window),
                ("on results", above),
            ],
            Program::Join(j) => vec![
                ("left", &j.left),
                ("right", &j.right),
                ("joined", &j.joined),
            ],
        }
    }

    /// The kind of program, as `strata validate --plan` and the golden
    /// tests show it.
    pub fn describe(&self) -> String {
        match self {
            Program::Stateless(_) => "row by row".into(),
            Program::Window { window, .. } => format!("window aggregate: {}", describe_tvf(window)),
            Program::Session { gap_us, keys, .. } => format!(
                "session aggregate: gap {}, per {}",
                duration(*gap_us),
                keys.join(", ")
            ),
            Program::Updating {
                keys, state_ttl, ..
            } => format!(
                "updating aggregate (GROUP BY without windows), upserted by {}{}",
                keys.join(", "),
                state_ttl.map_or_else(String::new, |ttl| format!(
                    "; groups not updated for {} are forgotten (state_ttl)",
                    duration(ttl.as_micros() as i64)
                ))
            ),
            Program::Join(j) => match &j.kind {
                StreamJoinKind::Window { size_us } => format!(
                    "window join of {} and {}: windows of {}",
                    j.left_input,
                    j.right_input,
                    duration(*size_us)
                ),
                StreamJoinKind::Interval {
                    left_time,
                    right_time,
                    lower_us,
                    upper_us,
                } => format!(
                    "interval join of {} and {}: {}.{right_time} - {}.{left_time} in [{}, {}]",
                    j.left_input,
                    j.right_input,
                    j.right_input,
                    j.left_input,
                    signed_duration(*lower_us),
                    signed_duration(*upper_us)
                ),
            },
            Program::Over {
                time_column,
                keys,
                frame,
                ..
            } => format!(
                "OVER aggregate: ORDER BY {time_column}, PARTITION BY [{}], {frame}",
                keys.join(", ")
            ),
        }
    }
}

fn describe_tvf(w: &WindowTvf) -> String {
    let step = |label: &str| {
        w.step_us
            .map(|s| format!(", {label} {}", duration(s)))
            .unwrap_or_default()
    };
    match w.kind {
        WindowKind::Tumble => format!(
            "TUMBLE {} on {}.{}",
            duration(w.size_us),
            w.input,
            w.time_column
        ),
        WindowKind::Hop => format!(
            "HOP {}{} on {}.{}",
            duration(w.size_us),
            step("every"),
            w.input,
            w.time_column
        ),
        WindowKind::Cumulate => format!(
            "CUMULATE up to {}{} on {}.{}",
            duration(w.size_us),
            step("by"),
            w.input,
            w.time_column
        ),
        WindowKind::Session => format!(
            "SESSION gap {} on {}.{}",
            duration(w.size_us),
            w.input,
            w.time_column
        ),
    }
}

/// A duration in microseconds, as a person writes it (`1m`, `1.5s`, `0s`).
///
/// ```
/// use strata_engine::sql::program::duration;
/// assert_eq!(duration(86_400_000_000), "1d");
/// assert_eq!(duration(90_000_000), "1m30s");
/// assert_eq!(duration(1_500_000), "1.5s");
/// assert_eq!(duration(0), "0s");
/// ```
pub fn duration(us: i64) -> String {
    if us < 0 {
        return format!("-{}", duration(-us));
    }
    if us == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = us;
    for (unit, size) in [
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest > 0 {
        let secs = rest as f64 / 1e6;
        out.push_str(&format!("{secs}s"));
    }
    out
}

fn signed_duration(us: i64) -> String {
    if us < 0 {
        duration(us)
    } else {
        format!("+{}", duration(us))
    }
}

/// A windowed or plain `GROUP BY`'s aggregate node, as DataFusion planned
/// it (single phase, one grouping set: checked by the planner).
#[derive(Debug, Clone)]
pub struct AggregateNode(Arc<dyn ExecutionPlan>);

impl AggregateNode {
    /// The node, if it is an aggregate.
    pub fn new(node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        node.downcast_ref::<AggregateExec>()
            .map(|_| AggregateNode(node.clone()))
    }

    /// The aggregate.
    pub fn exec(&self) -> &AggregateExec {
        // Only `new` makes one, from an aggregate.
        match self.0.downcast_ref::<AggregateExec>() {
            Some(agg) => agg,
            None => unreachable!("AggregateNode holds an AggregateExec"),
        }
    }
}

/// How far back a row's OVER frame reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW`, microseconds.
    Range(i64),
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(usize),
}

impl fmt::Display for OverFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverFrame::Range(us) => write!(f, "RANGE {} PRECEDING", duration(*us)),
            OverFrame::Rows(n) => write!(f, "ROWS {n} PRECEDING"),
        }
    }
}

/// An input whose rows can be late, and when they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateInput {
    /// The input's name.
    pub input: String,
    /// Its event-time column.
    pub time_column: String,
    /// When a row of it is late.
    pub rule: Lateness,
}

/// When a row is late, by the kind of operator it enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// Every window the row belongs to has closed.
    Windows {
        /// TUMBLE, HOP or CUMULATE.
        kind: WindowKind,
        /// Window size (CUMULATE: the period), microseconds.
        size_us: i64,
        /// HOP: slide; CUMULATE: step.
        step_us: Option<i64>,
        /// TUMBLE: offset of window starts from the epoch.
        offset_us: i64,
    },
    /// A session of the row's own would already have closed.
    SessionGap(i64),
    /// The row is behind the watermark.
    EventTime,
}

impl Lateness {
    /// The rule of a window TVF's input.
    pub fn of_window(w: &WindowTvf) -> Self {
        match w.kind {
            WindowKind::Session => Lateness::SessionGap(w.size_us),
            kind => Lateness::Windows {
                kind,
                size_us: w.size_us,
                step_us: w.step_us,
                offset_us: w.offset_us,
            },
        }
    }

    /// The watermark at which a row dated `t` becomes late: it is late once
    /// the watermark is at or past this.
    ///
    /// ```
    /// use strata_engine::sql::program::Lateness;
    /// use strata_engine::sql::window_tvf::WindowKind;
    /// let tumble = Lateness::Windows { kind: WindowKind::Tumble, size_us: 60, step_us: None, offset_us: 0 };
    /// assert_eq!(tumble.late_from(125), 180); // its window [120, 180) closes at 180
    /// let hop = Lateness::Windows { kind: WindowKind::Hop, size_us: 60, step_us: Some(20), offset_us: 0 };
    /// assert_eq!(hop.late_from(125), 180); // its last window [120, 180)
    /// let cumulate = Lateness::Windows { kind: WindowKind::Cumulate, size_us: 60, step_us: Some(20), offset_us: 0 };
    /// assert_eq!(cumulate.late_from(125), 180); // the period [120, 180)
    /// assert_eq!(Lateness::SessionGap(30).late_from(125), 155);
    /// assert_eq!(Lateness::EventTime.late_from(125), 126); // late once the watermark passes it
    /// ```
    pub fn late_from(&self, t: i64) -> i64 {
        match *self {
            Lateness::Windows {
                kind: WindowKind::Hop,
                size_us,
                step_us,
                ..
            } => window_start(t, step_us.unwrap_or(size_us).max(1), 0).saturating_add(size_us),
            Lateness::Windows {
                kind: WindowKind::Cumulate,
                size_us,
                ..
            } => window_start(t, size_us.max(1), 0).saturating_add(size_us),
            Lateness::Windows {
                size_us, offset_us, ..
            } => window_start(t, size_us.max(1), offset_us).saturating_add(size_us),
            Lateness::SessionGap(gap) => t.saturating_add(gap),
            Lateness::EventTime => t.saturating_add(1),
        }
    }

    /// The rule in words.
    pub fn describe(&self) -> String {
        match self {
            Lateness::Windows {
                kind: WindowKind::Tumble,
                ..
            } => "late once its window has closed (window end <= watermark)".into(),
            Lateness::Windows { .. } => "late once its last window has closed (window end <= watermark); until then it counts in its open windows".into(),
            Lateness::SessionGap(gap) => format!(
                "late once event time + {} <= watermark (a session of its own would have closed)",
                duration(*gap)
            ),
            Lateness::EventTime => "late once behind the watermark".into(),
        }
    }

    /// Why a row that is late under this rule was set aside.
    pub fn reason(&self) -> &'static str {
        match self {
            Lateness::Windows { .. } => {
                "behind the watermark: every window it belongs to had closed"
            }
            Lateness::SessionGap(_) => {
                "behind the watermark: a session of its own would already have closed"
            }
            Lateness::EventTime => {
                "behind the watermark: the rows its frame or join interval needs had been emitted"
            }
        }
    }
}
