//! The column types a warehouse schema can declare, and how they map to Arrow.
//!
//! The names follow Flink SQL where Flink has one (`STRING`, `BIGINT`,
//! `DECIMAL(p, s)`, `TIMESTAMP`), and accept the common aliases users bring
//! from Spark, Arrow and Avro (`long`, `int64`, `text`), so a schema copied
//! from an existing job usually parses as it is.
//!
//! Every type maps to an Arrow type that Delta Lake can store, so the same
//! [`FieldType`] decides how JSON is decoded, how Parquet is written and what
//! Flight SQL clients see.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};

/// The time zone of every timestamp column: Delta's `timestamp` type is
/// microseconds since the Unix epoch, adjusted to UTC.
pub const TIMESTAMP_TZ: &str = "UTC";

/// A column type in a warehouse schema.
///
/// ```
/// use strata_schemas::FieldType;
///
/// let t: FieldType = "decimal(18, 2)".parse().unwrap();
/// assert_eq!(t, FieldType::Decimal { precision: 18, scale: 2 });
/// assert_eq!(t.to_string(), "decimal(18,2)");
/// assert!("varchar".parse::<FieldType>().is_ok());
/// assert!("datetime".parse::<FieldType>().unwrap_err().to_string().contains("timestamp"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// `true` / `false`.
    Boolean,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit IEEE float.
    Float32,
    /// 64-bit IEEE float.
    Float64,
    /// Exact decimal with `precision` digits, `scale` of them after the point
    /// (money: use this, not a float).
    Decimal {
        /// Total number of digits, 1..=38.
        precision: u8,
        /// Digits after the decimal point, 0..=precision.
        scale: u8,
    },
    /// UTF-8 text.
    String,
    /// Calendar date (days since the Unix epoch).
    Date,
    /// Instant in time, microsecond precision, UTC.
    Timestamp,
    /// Any JSON value, kept as its JSON text (query it with JSON functions).
    Json,
}

impl FieldType {
    /// The Arrow type columns of this type are decoded into and written as.
    pub fn to_arrow(self) -> DataType {
        match self {
            FieldType::Boolean => DataType::Boolean,
            FieldType::Int32 => DataType::Int32,
            FieldType::Int64 => DataType::Int64,
            FieldType::Float32 => DataType::Float32,
            FieldType::Float64 => DataType::Float64,
            FieldType::Decimal { precision, scale } => DataType::Decimal128(precision, scale as i8),
            FieldType::String | FieldType::Json => DataType::Utf8,
            FieldType::Date => DataType::Date32,
            FieldType::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(TIMESTAMP_TZ)))
            }
        }
    }

    /// The canonical spelling, as accepted by [`FromStr`] and shown in errors.
    pub fn name(self) -> String {
        self.to_string()
    }

    /// Every spelling [`FromStr`] accepts without arguments (for
    /// "did you mean" suggestions).
    pub fn accepted_names() -> impl Iterator<Item = &'static str> {
        NAMES.iter().map(|(name, _)| *name).chain(["decimal"])
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::Boolean => f.write_str("boolean"),
            FieldType::Int32 => f.write_str("int"),
            FieldType::Int64 => f.write_str("bigint"),
            FieldType::Float32 => f.write_str("float"),
            FieldType::Float64 => f.write_str("double"),
            FieldType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            FieldType::String => f.write_str("string"),
            FieldType::Date => f.write_str("date"),
            FieldType::Timestamp => f.write_str("timestamp"),
            FieldType::Json => f.write_str("json"),
        }
    }
}

/// A type name that is not one of the [`FieldType`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown type `{given}`: {hint}")]
pub struct FieldTypeError {
    /// What was written.
    pub given: String,
    /// What to write instead.
    pub hint: String,
}

/// Every accepted spelling, and the type it means. Aliases come from Flink SQL,
/// Spark, Arrow and Avro.
const NAMES: &[(&str, FieldType)] = &[
    ("boolean", FieldType::Boolean),
    ("bool", FieldType::Boolean),
    ("int", FieldType::Int32),
    ("integer", FieldType::Int32),
    ("int32", FieldType::Int32),
    ("bigint", FieldType::Int64),
    ("long", FieldType::Int64),
    ("int64", FieldType::Int64),
    ("float", FieldType::Float32),
    ("real", FieldType::Float32),
    ("float32", FieldType::Float32),
    ("double", FieldType::Float64),
    ("float64", FieldType::Float64),
    ("string", FieldType::String),
    ("varchar", FieldType::String),
    ("text", FieldType::String),
    ("utf8", FieldType::String),
    ("date", FieldType::Date),
    ("timestamp", FieldType::Timestamp),
    ("timestamp_ltz", FieldType::Timestamp),
    ("json", FieldType::Json),
];

/// Names users often try that mean something we do accept under another name.
const NEAR_MISSES: &[(&str, &str)] = &[
    ("datetime", "timestamp"),
    ("time", "timestamp"),
    ("instant", "timestamp"),
    ("number", "double, bigint or decimal(p,s)"),
    ("numeric", "decimal(p,s)"),
    ("money", "decimal(18,2)"),
    ("str", "string"),
    ("char", "string"),
    ("object", "json"),
    ("map", "json"),
    ("array", "json"),
];

impl FromStr for FieldType {
    type Err = FieldTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().to_ascii_lowercase();
        // `VARCHAR(64)` and `TIMESTAMP(3)` are common in Flink DDL; the length or
        // precision does not change how Strata stores them.
        let (base, args) = match normalized.split_once('(') {
            Some((base, rest)) => match rest.strip_suffix(')') {
                Some(args) => (base.trim(), Some(args)),
                None => {
                    return Err(FieldTypeError {
                        given: s.to_string(),
                        hint: "a `(` without a closing `)`; write e.g. `decimal(18,2)`".into(),
                    });
                }
            },
            None => (normalized.as_str(), None),
        };
        if base == "decimal" {
            return parse_decimal_args(s, args);
        }
        if let Some((_, t)) = NAMES.iter().find(|(name, _)| *name == base) {
            let ignorable_args = matches!(t, FieldType::String | FieldType::Timestamp);
            if args.is_some() && !ignorable_args {
                return Err(FieldTypeError {
                    given: s.to_string(),
                    hint: format!("`{base}` takes no arguments; write `{t}`"),
                });
            }
            return Ok(*t);
        }
        let hint = match NEAR_MISSES.iter().find(|(name, _)| *name == base) {
            Some((_, instead)) => format!("write `{instead}` instead"),
            None => format!(
                "write one of: {}",
                "boolean, int, bigint, float, double, decimal(p,s), string, date, timestamp, json"
            ),
        };
        Err(FieldTypeError {
            given: s.to_string(),
            hint,
        })
    }
}

fn parse_decimal_args(given: &str, args: Option<&str>) -> Result<FieldType, FieldTypeError> {
    let bad = |hint: &str| FieldTypeError {
        given: given.to_string(),
        hint: hint.to_string(),
    };
    let Some(args) = args else {
        return Err(bad(
            "decimal needs a precision and scale; write e.g. `decimal(18,2)`",
        ));
    };
    let mut parts = args.split(',').map(str::trim);
    let precision = parts.next().and_then(|p| p.parse::<u8>().ok());
    let scale = match parts.next() {
        Some(s) => s.parse::<u8>().ok(),
        None => Some(0),
    };
    match (precision, scale, parts.next()) {
        (Some(p), Some(s), None) if (1..=38).contains(&p) && s <= p => Ok(FieldType::Decimal {
            precision: p,
            scale: s,
        }),
        _ => Err(bad(
            "precision must be 1..=38 and scale 0..=precision; write e.g. `decimal(18,2)`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_parse_to_the_same_type() {
        for name in ["bigint", "LONG", "int64", " BigInt "] {
            assert_eq!(name.parse::<FieldType>(), Ok(FieldType::Int64), "{name}");
        }
        assert_eq!("VARCHAR(64)".parse::<FieldType>(), Ok(FieldType::String));
        assert_eq!(
            "TIMESTAMP(3)".parse::<FieldType>(),
            Ok(FieldType::Timestamp)
        );
        assert_eq!(
            "decimal(10)".parse::<FieldType>(),
            Ok(FieldType::Decimal {
                precision: 10,
                scale: 0
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for (name, t) in NAMES {
            let shown = t.to_string();
            assert_eq!(shown.parse::<FieldType>().as_ref(), Ok(t), "{name}");
        }
    }

    #[test]
    fn bad_names_say_what_to_write() {
        let err = "datetime".parse::<FieldType>().unwrap_err();
        assert!(err.hint.contains("timestamp"), "{err}");
        let err = "decimal(40,2)".parse::<FieldType>().unwrap_err();
        assert!(err.hint.contains("1..=38"), "{err}");
        let err = "decimal(5,6)".parse::<FieldType>().unwrap_err();
        assert!(err.hint.contains("scale"), "{err}");
        let err = "int(3)".parse::<FieldType>().unwrap_err();
        assert!(err.hint.contains("no arguments"), "{err}");
        let err = "blob".parse::<FieldType>().unwrap_err();
        assert!(err.hint.contains("decimal(p,s)"), "{err}");
    }

    #[test]
    fn arrow_types_are_delta_compatible() {
        assert_eq!(
            FieldType::Timestamp.to_arrow(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
        );
        assert_eq!(
            FieldType::Decimal {
                precision: 18,
                scale: 2
            }
            .to_arrow(),
            DataType::Decimal128(18, 2)
        );
    }
}
