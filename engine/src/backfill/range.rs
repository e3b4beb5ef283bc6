//! What a backfill range means for a layer's rows, and how much of the log
//! it replays. Pure logic, no I/O.
//!
//! A row's time is its event-time column. For a windowed layer that column
//! is `window_end`, and a window's time is its last instant (Flink's
//! `window_time`, `window_end` minus one tick): a range `[from, to)` holds
//! the windows ending in `(from, to]`, so `--from 10:00 --to 11:00` on
//! hourly windows replaces the 10:00-11:00 window, and the last window in
//! the range closes at `--to`. A row-by-row layer's range is its event
//! times in `[from, to)`.
//!
//! The replay reads event times `[from - lookback, to)`: the lookback is
//! the sum of the window sizes the rows pass through (a 1-minute window
//! over a 1-second deduplication window needs 61 s before `from`), so the
//! first window in the range is complete.

use datafusion::logical_expr::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use strata_schemas::TIMESTAMP_TZ;

use crate::dataflow::layer_plan::PlannedLayer;
use crate::sql::program::Program;
use crate::sql::stream_join_plan::StreamJoinKind;
use crate::sql::window_tvf::WindowKind;

/// The range a backfill replaces, microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Start (inclusive).
    pub from_us: i64,
    /// End (exclusive).
    pub to_us: i64,
}

/// How a layer's rows are placed in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowTime {
    /// Rows stamped with their own event time, in this column.
    Event(String),
    /// Rows of closed windows, stamped with the window's end in this column.
    WindowEnd(String),
}

impl RowTime {
    /// The column.
    pub fn column(&self) -> &str {
        match self {
            RowTime::Event(c) | RowTime::WindowEnd(c) => c,
        }
    }

    /// The rows of `range`, as a predicate on the column (the
    /// `replaceWhere` of the swap).
    ///
    /// ```
    /// use strata_engine::backfill::{RowTime, TimeRange};
    /// let r = TimeRange { from_us: 0, to_us: 60_000_000 };
    /// let p = RowTime::WindowEnd("window_end".into()).predicate(r);
    /// assert!(p.to_string().contains("window_end > "));
    /// assert!(p.to_string().contains("window_end <= "));
    /// ```
    pub fn predicate(&self, range: TimeRange) -> Expr {
        let instant = |us: i64| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(us),
                Some(TIMESTAMP_TZ.into()),
            ))
        };
        let c = col(format!("\"{}\"", self.column()));
        match self {
            RowTime::Event(_) => c
                .clone()
                .gt_eq(instant(range.from_us))
                .and(c.lt(instant(range.to_us))),
            RowTime::WindowEnd(_) => c
                .clone()
                .gt(instant(range.from_us))
                .and(c.lt_eq(instant(range.to_us))),
        }
    }
}

/// How a layer places its rows in time, or why a range of it cannot be
/// replaced.
pub fn row_time(layer: &PlannedLayer, event_time: Option<&str>) -> Result<RowTime, String> {
    let Some(query) = &layer.query else {
        return event_time
            .map(|c| RowTime::Event(c.to_string()))
            .ok_or_else(|| "its schema names no event-time field".to_string());
    };
    let Some(column) = query.output_time_column.clone() else {
        return Err(match query.program {
            Program::Updating { .. } => "its rows are upserted by key (a GROUP BY without windows), not placed in time: rebuild it by moving the table aside and running the layer from the start".into(),
            _ => "its rows carry no event-time column: select window_end (windowed layers) or the input's event-time column".into(),
        });
    };
    let windowed = match &query.program {
        Program::Window { .. } | Program::Session { .. } => true,
        Program::Join(j) => matches!(j.kind, StreamJoinKind::Window { .. }),
        _ => false,
    };
    Ok(if windowed {
        RowTime::WindowEnd(column)
    } else {
        RowTime::Event(column)
    })
}

/// How much event time before a row's own a layer needs to compute it,
/// microseconds; an error when it has no bound (sessions, OVER and
/// interval joins: give `--lookback`).
pub fn lookback_us(layer: &PlannedLayer) -> Result<i64, String> {
    let Some(query) = &layer.query else {
        return Ok(0);
    };
    match (&query.program, &query.window) {
        (Program::Stateless(_), _) => Ok(0),
        (Program::Window { .. }, Some(w)) if w.kind != WindowKind::Session => Ok(w.size_us),
        (Program::Join(j), Some(w)) if matches!(j.kind, StreamJoinKind::Window { .. }) => {
            Ok(w.size_us)
        }
        (Program::Session { .. }, _) => Err("a SESSION window has no bounded length".into()),
        (Program::Over { .. }, _) => {
            Err("an OVER aggregation reads rows back without a bound the planner knows".into())
        }
        (Program::Join(_), _) => {
            Err("an interval join's reach back is not known to the backfill".into())
        }
        (Program::Updating { .. }, _) => {
            Err("a GROUP BY without windows reads all of history".into())
        }
        (Program::Window { .. }, _) => Err("the window's size is not known".into()),
    }
}

/// The event times a replay reads for `range` with `lookback_us`.
///
/// ```
/// use strata_engine::backfill::{TimeRange, replay_span};
/// let r = TimeRange { from_us: 3_600_000_000, to_us: 7_200_000_000 };
/// assert_eq!(replay_span(r, 61_000_000), (3_539_000_000, 7_200_000_000));
/// ```
pub fn replay_span(range: TimeRange, lookback_us: i64) -> (i64, i64) {
    (range.from_us.saturating_sub(lookback_us), range.to_us)
}

/// The Kafka timestamps (milliseconds) whose records can hold event times
/// of `span`: records reach the log up to `late_us` after their event time
/// (watermark delays: later ones were late live too) and at most
/// `early_us` before it (the future skew).
///
/// ```
/// use strata_engine::backfill::log_span_ms;
/// assert_eq!(log_span_ms((10_000_000, 20_000_000), 2_000_000, 1_000_000), (9_000, 22_001));
/// ```
pub fn log_span_ms(span: (i64, i64), late_us: i64, early_us: i64) -> (i64, i64) {
    (
        span.0.saturating_sub(early_us).div_euclid(1000),
        span.1.saturating_add(late_us).div_euclid(1000) + 1,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::common::DFSchema;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The `values` of the row-time column that `time.predicate(range)`
    /// keeps, evaluated by DataFusion as the swap's `replaceWhere` is.
    fn kept(time: &RowTime, range: TimeRange, values: &[i64]) -> Vec<i64> {
        let field = Field::new(
            time.column(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into())),
            false,
        );
        let schema = Arc::new(Schema::new(vec![field]));
        let column = TimestampMicrosecondArray::from(values.to_vec()).with_timezone(TIMESTAMP_TZ);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let expr = SessionContext::new()
            .create_physical_expr(time.predicate(range), &df_schema)
            .unwrap();
        let mask = expr
            .evaluate(&batch)
            .unwrap()
            .into_array(values.len())
            .unwrap();
        values
            .iter()
            .zip(mask.as_boolean().iter())
            .filter(|(_, keep)| *keep == Some(true))
            .map(|(v, _)| *v)
            .collect()
    }

    const RANGE: TimeRange = TimeRange {
        from_us: 10,
        to_us: 20,
    };

    #[test]
    fn event_rows_are_half_open_at_the_end() {
        let time = RowTime::Event("Event Time".into());
        assert_eq!(kept(&time, RANGE, &[9, 10, 11, 19, 20, 21]), [10, 11, 19]);
    }

    #[test]
    fn windows_are_placed_by_their_last_instant() {
        // A window ending at `from` holds times before `from`; the one
        // ending at `to` holds times up to `to` minus one tick.
        let time = RowTime::WindowEnd("window_end".into());
        assert_eq!(kept(&time, RANGE, &[9, 10, 11, 19, 20, 21]), [11, 19, 20]);
    }

    #[test]
    fn a_lookback_never_wraps() {
        let r = TimeRange {
            from_us: i64::MIN + 5,
            to_us: 0,
        };
        assert_eq!(replay_span(r, 10).0, i64::MIN);
    }
}
