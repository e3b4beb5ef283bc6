//! A cap on rows a query makes out of nothing: `generate_series` and
//! `range`, as tables (`FROM generate_series(1, 5000000000)`) or as list
//! values (`SELECT range(1, 5000000000)`), refused with RESOURCE_EXHAUSTED
//! when they would produce more than `serve.limits.generated_rows` values,
//! before anything is allocated. The table form takes literals, so it is
//! refused when the query is planned; the list form is checked on the
//! values it is called with, which covers the optimizer folding a constant
//! call too.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

const SERIES: [&str; 2] = ["generate_series", "range"];
const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;

/// Replaces the session's series functions (tables and lists) with
/// capped ones.
pub(crate) fn cap_series_functions(ctx: &SessionContext, cap: u64) {
    for name in SERIES {
        if let Ok(function) = ctx.table_function(name) {
            ctx.register_udtf(
                name,
                Arc::new(CappedSeries {
                    name,
                    inner: function.function().clone(),
                    cap,
                }),
            );
        }
        if let Some(function) = ctx.state().scalar_functions().get(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(CappedList {
                inner: function.as_ref().clone(),
                cap,
            }));
        }
    }
}

#[derive(Debug)]
struct CappedSeries {
    name: &'static str,
    inner: Arc<dyn TableFunctionImpl>,
    cap: u64,
}

impl TableFunctionImpl for CappedSeries {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let literals: Option<Vec<&ScalarValue>> = args
            .exprs()
            .iter()
            .map(|e| match e {
                Expr::Literal(v, _) => Some(v),
                _ => None,
            })
            .collect();
        if let Some(values) = literals {
            check(self.name, series_len(&values), self.cap)?;
        }
        self.inner.call_with_args(args)
    }
}

/// `range(...)` / `generate_series(...)` as list values, checked on each
/// call's values (the rows of a batch together).
#[derive(Debug, PartialEq, Eq, Hash)]
struct CappedList {
    inner: ScalarUDF,
    cap: u64,
}

impl ScalarUDFImpl for CappedList {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mut total: u128 = 0;
        for row in 0..args.number_rows {
            let values: Vec<ScalarValue> = args
                .args
                .iter()
                .map(|a| match a {
                    ColumnarValue::Scalar(v) => Ok(v.clone()),
                    ColumnarValue::Array(array) => ScalarValue::try_from_array(array, row),
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&ScalarValue> = values.iter().collect();
            total = total.saturating_add(series_len(&refs).unwrap_or(0));
            check(self.name(), Some(total), self.cap)?;
            if args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)))
            {
                // Every row is the same call.
                check(
                    self.name(),
                    Some(total.saturating_mul(args.number_rows as u128)),
                    self.cap,
                )?;
                break;
            }
        }
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

fn check(name: &str, values: Option<u128>, cap: u64) -> Result<()> {
    match values {
        Some(n) if n > u128::from(cap) => Err(DataFusionError::ResourcesExhausted(format!(
            "{name}(...) would generate {n} values; this server generates at most {cap} in one call (serve.limits.generated_rows)"
        ))),
        _ => Ok(()),
    }
}

/// How many values a series of these arguments holds at most; `None` when
/// they are not of a known shape (DataFusion then refuses them itself) or
/// the step does not advance.
fn series_len(args: &[&ScalarValue]) -> Option<u128> {
    let literal = |i: usize| args.get(i).copied();
    let (start, end, step) = match args.len() {
        1 => (0, int(literal(0)?)?, 1),
        2 => (int(literal(0)?)?, int(literal(1)?)?, 1),
        3 => match (literal(0)?, literal(1)?, literal(2)?) {
            (a, b, ScalarValue::IntervalMonthDayNano(Some(step))) => {
                // Months are at least 28 days: the shortest step, the most values.
                let step = i128::from(step.months) * 28 * NANOS_PER_DAY
                    + i128::from(step.days) * NANOS_PER_DAY
                    + i128::from(step.nanoseconds);
                (instant(a)?, instant(b)?, step)
            }
            (a, b, c) => (int(a)?, int(b)?, int(c)?),
        },
        _ => return None,
    };
    if step == 0 {
        return None;
    }
    let span = end - start;
    if span != 0 && (span > 0) != (step > 0) {
        return Some(0);
    }
    Some((span / step).unsigned_abs() + 1)
}

fn int(v: &ScalarValue) -> Option<i128> {
    match v {
        ScalarValue::Int64(Some(n)) => Some(i128::from(*n)),
        ScalarValue::Int32(Some(n)) => Some(i128::from(*n)),
        _ => None,
    }
}

/// A timestamp or date literal, in nanoseconds.
fn instant(v: &ScalarValue) -> Option<i128> {
    match v {
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(i128::from(*n)),
        ScalarValue::TimestampMicrosecond(Some(n), _) => Some(i128::from(*n) * 1_000),
        ScalarValue::TimestampMillisecond(Some(n), _) => Some(i128::from(*n) * 1_000_000),
        ScalarValue::TimestampSecond(Some(n), _) => Some(i128::from(*n) * 1_000_000_000),
        ScalarValue::Date32(Some(d)) => Some(i128::from(*d) * NANOS_PER_DAY),
        ScalarValue::Date64(Some(ms)) => Some(i128::from(*ms) * 1_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(values: &[ScalarValue]) -> Option<u128> {
        series_len(&values.iter().collect::<Vec<_>>())
    }

    #[test]
    fn series_lengths() {
        let i = |n: i64| ScalarValue::Int64(Some(n));
        assert_eq!(len(&[i(10)]), Some(11));
        assert_eq!(len(&[i(1), i(5_000_000_000)]), Some(5_000_000_000));
        assert_eq!(len(&[i(0), i(100), i(10)]), Some(11));
        assert_eq!(len(&[i(0), i(100), i(-1)]), Some(0));
        assert_eq!(len(&[i(100), i(0), i(-1)]), Some(101));
        assert_eq!(len(&[i(0), i(100), i(0)]), None);
        let day = ScalarValue::IntervalMonthDayNano(Some(
            datafusion::arrow::datatypes::IntervalMonthDayNano::new(0, 1, 0),
        ));
        let dates = [
            ScalarValue::Date32(Some(0)),
            ScalarValue::Date32(Some(365)),
            day,
        ];
        assert_eq!(len(&dates), Some(366));
    }

    #[tokio::test]
    async fn generated_rows_over_the_cap_are_refused_before_running() {
        let ctx = SessionContext::new();
        cap_series_functions(&ctx, 1_000);
        let ok = ctx
            .sql("SELECT count(*) FROM generate_series(1, 1000)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ok[0].num_rows(), 1);
        for sql in [
            "SELECT count(*) FROM generate_series(1, 5000000000)",
            "SELECT count(*) FROM range(2000)",
        ] {
            let e = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.unwrap_err(),
                Err(e) => e,
            };
            assert!(
                matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)),
                "{sql}: {e}"
            );
            assert!(e.to_string().contains("generated_rows"), "{e}");
        }
        // The list form, folded by the optimizer or run over a column.
        for sql in [
            "SELECT range(1, 5000000000)",
            "SELECT range(1, 1000000 * 5000)",
            "SELECT range(id * 1000) FROM range(10) AS t(id)",
        ] {
            let e = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.unwrap_err(),
                Err(e) => e,
            };
            assert!(
                matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)),
                "{sql}: {e}"
            );
        }
        let ok = ctx
            .sql("SELECT range(1, 10)")
            .await
            .unwrap()
            .collect()
            .await;
        assert!(ok.is_ok());
    }
}
