//! The scalar functions the window TVF rewrite calls: which windows a row's
//! event time falls in. Windows are aligned to the Unix epoch (UTC), as in
//! Flink; TUMBLE takes an offset to align them elsewhere (e.g. `-8 hours`
//! for days that start at midnight in Beijing).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ListBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Every window UDF, to register in a session.
pub fn window_udfs() -> Vec<ScalarUDF> {
    [
        WindowFn::Start,
        WindowFn::End,
        WindowFn::AddMicros,
        WindowFn::HopStarts,
        WindowFn::CumulateEnds,
    ]
    .into_iter()
    .map(|f| ScalarUDF::new_from_impl(WindowUdf::new(f)))
    .collect()
}

/// The start of the window of `size` (offset from the epoch by `offset`)
/// that `ts` falls in; all in microseconds.
///
/// ```
/// use strata_engine::sql::window_udfs::window_start;
/// assert_eq!(window_start(125, 60, 0), 120);
/// assert_eq!(window_start(-1, 60, 0), -60);
/// assert_eq!(window_start(125, 60, 10), 70);
/// ```
pub fn window_start(ts: i64, size: i64, offset: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

/// The starts of the HOP windows of `size`, sliding by `slide`, that `ts`
/// falls in, latest first.
///
/// ```
/// use strata_engine::sql::window_udfs::hop_starts;
/// assert_eq!(hop_starts(125, 60, 180).collect::<Vec<_>>(), [120, 60, 0]);
/// ```
pub fn hop_starts(ts: i64, slide: i64, size: i64) -> impl Iterator<Item = i64> {
    let last = window_start(ts, slide, 0);
    (0..size / slide).map(move |k| last - k * slide)
}

/// The ends of the CUMULATE windows (growing by `step` from the start of a
/// `max`-sized period) that `ts` falls in, earliest first.
///
/// ```
/// use strata_engine::sql::window_udfs::cumulate_ends;
/// assert_eq!(cumulate_ends(125, 60, 240).collect::<Vec<_>>(), [180, 240]);
/// ```
pub fn cumulate_ends(ts: i64, step: i64, max: i64) -> impl Iterator<Item = i64> {
    let start = window_start(ts, max, 0);
    (1..=max / step)
        .map(move |k| start + k * step)
        .filter(move |end| *end > ts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WindowFn {
    Start,
    End,
    AddMicros,
    HopStarts,
    CumulateEnds,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    f: WindowFn,
    signature: Signature,
}

impl WindowUdf {
    fn new(f: WindowFn) -> Self {
        let arity = match f {
            WindowFn::AddMicros => 2,
            _ => 3,
        };
        WindowUdf {
            f,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }
}

fn timestamp_tz(t: &DataType) -> Result<Option<Arc<str>>> {
    match t {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Ok(tz.clone()),
        other => plan_err!(
            "a window's time column must be a timestamp (declare it `type: timestamp` in the schema), not {other}"
        ),
    }
}

fn int_arg(args: &[ColumnarValue], i: usize, name: &str) -> Result<i64> {
    match args.get(i) {
        Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(v)))) => Ok(*v),
        _ => exec_err!("{name}: argument {i} must be a constant number of microseconds"),
    }
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        match self.f {
            WindowFn::Start => "strata_window_start",
            WindowFn::End => "strata_window_end",
            WindowFn::AddMicros => "strata_add_micros",
            WindowFn::HopStarts => "strata_hop_starts",
            WindowFn::CumulateEnds => "strata_cumulate_ends",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let tz = timestamp_tz(&arg_types[0])?;
        let ts = DataType::Timestamp(TimeUnit::Microsecond, tz);
        Ok(match self.f {
            WindowFn::Start | WindowFn::End | WindowFn::AddMicros => ts,
            WindowFn::HopStarts | WindowFn::CumulateEnds => {
                DataType::List(Arc::new(Field::new("item", ts, false)))
            }
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tz = timestamp_tz(args.arg_fields[0].data_type())?;
        let times = args.args[0].clone().into_array(args.number_rows)?;
        let Some(times) = times.as_any().downcast_ref::<TimestampMicrosecondArray>() else {
            return exec_err!("{}: expected microsecond timestamps", self.name());
        };
        let a = int_arg(&args.args, 1, self.name())?;
        let result: ArrayRef = match self.f {
            WindowFn::Start | WindowFn::End => {
                let b = int_arg(&args.args, 2, self.name())?;
                if a <= 0 {
                    return exec_err!("window size must be positive");
                }
                let shift = if self.f == WindowFn::End { a } else { 0 };
                Arc::new(
                    times
                        .unary::<_, arrow::datatypes::TimestampMicrosecondType>(|t| {
                            window_start(t, a, b) + shift
                        })
                        .with_timezone_opt(tz),
                )
            }
            WindowFn::AddMicros => Arc::new(
                times
                    .unary::<_, arrow::datatypes::TimestampMicrosecondType>(|t| t + a)
                    .with_timezone_opt(tz),
            ),
            WindowFn::HopStarts | WindowFn::CumulateEnds => {
                let b = int_arg(&args.args, 2, self.name())?;
                if a <= 0 || b <= 0 || b % a != 0 {
                    return exec_err!(
                        "window sizes must be positive, the size a multiple of the step"
                    );
                }
                let item = TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone());
                let mut list = ListBuilder::new(item).with_field(Arc::new(Field::new(
                    "item",
                    DataType::Timestamp(TimeUnit::Microsecond, tz),
                    false,
                )));
                for i in 0..times.len() {
                    if times.is_null(i) {
                        list.append_null();
                        continue;
                    }
                    let t = times.value(i);
                    match self.f {
                        WindowFn::HopStarts => list
                            .values()
                            .append_slice(&hop_starts(t, a, b).collect::<Vec<_>>()),
                        _ => {
                            for end in cumulate_ends(t, a, b) {
                                list.values().append_value(end);
                            }
                        }
                    }
                    list.append(true);
                }
                Arc::new(list.finish())
            }
        };
        Ok(ColumnarValue::Array(result))
    }
}
