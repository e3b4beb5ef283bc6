//! JSON records decoded straight into Arrow column builders.
//!
//! Kafka hands us one JSON document per message, and some of those are bad:
//! not JSON, a string where a number belongs, a required field missing. A bad
//! record must go to the dead-letter output whole, with the reason, and must
//! not leave half a row in the batch. So decoding is per record and atomic:
//! the record is parsed into a small row of typed values first (borrowing
//! strings from the message bytes, no `serde_json::Value` tree), checked
//! against the schema, and only then appended to the builders.
//!
//! Coercions follow Flink's JSON format, so data that Flink accepted is
//! accepted here: numbers may arrive as numeric strings, booleans as
//! `"true"`/`"false"`, and a string column takes numbers and booleans as their
//! text. Timestamps take RFC 3339 strings, `YYYY-MM-DD HH:MM:SS[.f]` (UTC), or
//! integer epoch milliseconds. Keys the schema does not name are ignored.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::field_type::TIMESTAMP_TZ;
use crate::temporal::{parse_date, parse_timestamp_micros, timestamp_from_epoch_millis};
use crate::{FieldType, Schema};

/// Why a record could not be decoded. The message names the field and says
/// what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// A sentence for the dead-letter table and the logs.
    pub reason: String,
}

/// Decodes JSON records of one [`Schema`] into Arrow [`RecordBatch`]es.
///
/// ```
/// use strata_schemas::{Field, FieldType, JsonDecoder, Schema};
///
/// let schema = Schema::new(
///     "deal",
///     vec![
///         Field::new("id", FieldType::Int64).required(),
///         Field::new("city", FieldType::String),
///     ],
/// );
/// let mut decoder = JsonDecoder::new(&schema);
/// decoder.decode(br#"{"id": 1, "city": "Beijing"}"#).unwrap();
/// let err = decoder.decode(br#"{"city": "Shanghai"}"#).unwrap_err();
/// assert!(err.reason.contains("`id`"));
/// decoder.decode(br#"{"id": "2"}"#).unwrap(); // numeric strings are accepted
/// let batch = decoder.finish().unwrap();
/// assert_eq!(batch.num_rows(), 2); // the bad record left nothing behind
/// ```
pub struct JsonDecoder {
    schema: SchemaRef,
    columns: Vec<ColumnSpec>,
    by_name: HashMap<String, usize>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
}

#[derive(Debug, Clone)]
struct ColumnSpec {
    name: String,
    field_type: FieldType,
    nullable: bool,
}

/// One parsed value of a record, typed by its column. Strings borrow from the
/// message bytes where JSON escapes allow.
#[derive(Debug, Clone, PartialEq)]
enum Parsed<'a> {
    Missing,
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal(i128),
    Str(Cow<'a, str>),
    Date(i32),
    Timestamp(i64),
}

impl JsonDecoder {
    /// A decoder for records of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let columns: Vec<ColumnSpec> = schema
            .fields
            .iter()
            .map(|f| ColumnSpec {
                name: f.name.clone(),
                field_type: f.field_type,
                nullable: f.nullable,
            })
            .collect();
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let builders = columns
            .iter()
            .map(|c| ColumnBuilder::new(c.field_type))
            .collect();
        JsonDecoder {
            schema: schema.to_arrow(),
            columns,
            by_name,
            builders,
            rows: 0,
        }
    }

    /// The Arrow schema of the batches [`finish`](Self::finish) returns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes one record and appends it, or returns why it cannot be decoded
    /// and appends nothing.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut row = vec![Parsed::Missing; self.columns.len()];
        let mut de = serde_json::Deserializer::from_slice(bytes);
        RecordSeed {
            columns: &self.columns,
            by_name: &self.by_name,
            row: &mut row,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| DecodeError {
            reason: describe_json_error(&e),
        })?;
        for (spec, value) in self.columns.iter().zip(&row) {
            match value {
                Parsed::Missing if !spec.nullable => {
                    return Err(DecodeError {
                        reason: format!("required field `{}` is missing", spec.name),
                    });
                }
                Parsed::Null if !spec.nullable => {
                    return Err(DecodeError {
                        reason: format!("required field `{}` is null", spec.name),
                    });
                }
                _ => {}
            }
        }
        for (builder, value) in self.builders.iter_mut().zip(row) {
            builder.append(value);
        }
        self.rows += 1;
        Ok(())
    }

    /// How many records have been appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no record has been appended since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The appended records as a batch; the decoder starts a new one.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
    }
}

/// serde_json appends " at line L column C" to every message; one-line Kafka
/// records only need the column.
fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let base = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    if e.is_syntax() || e.is_eof() {
        return format!("not valid JSON: {base} (at byte column {})", e.column());
    }
    // serde says "invalid type: sequence, expected a JSON object"; say it
    // the way round people read it.
    match base
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        Some((found, expected)) => {
            let found = match found {
                "sequence" => "a JSON array",
                "map" => "a JSON object",
                other => other,
            };
            format!("expected {expected}, found {found}")
        }
        None => base.to_string(),
    }
}

struct RecordSeed<'s, 'a> {
    columns: &'s [ColumnSpec],
    by_name: &'s HashMap<String, usize>,
    row: &'s mut Vec<Parsed<'a>>,
}

impl<'de, 's> DeserializeSeed<'de> for RecordSeed<'s, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for RecordSeed<'s, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with the record's fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Producers usually write keys in schema order, so guess the next
        // column before falling back to the name lookup.
        let mut guess = 0usize;
        while let Some(index) = map.next_key_seed(KeySeed {
            columns: self.columns,
            by_name: self.by_name,
            guess,
        })? {
            match index {
                Some(i) => {
                    self.row[i] = map.next_value_seed(ValueSeed {
                        spec: &self.columns[i],
                    })?;
                    guess = i + 1;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct KeySeed<'s> {
    columns: &'s [ColumnSpec],
    by_name: &'s HashMap<String, usize>,
    guess: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if self.columns.get(self.guess).is_some_and(|c| c.name == key) {
            return Ok(Some(self.guess));
        }
        Ok(self.by_name.get(key).copied())
    }
}

struct ValueSeed<'s> {
    spec: &'s ColumnSpec,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Parsed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.spec.field_type {
            // Exact decimals and JSON passthrough need the number's or value's
            // text, before serde_json turns it into an f64.
            FieldType::Decimal { precision, scale } => {
                let raw = <&RawValue>::deserialize(deserializer)?;
                parse_decimal_raw(self.spec, raw.get(), precision, scale)
            }
            FieldType::Json => {
                let raw = <&RawValue>::deserialize(deserializer)?;
                Ok(match raw.get() {
                    "null" => Parsed::Null,
                    text => Parsed::Str(Cow::Borrowed(text)),
                })
            }
            _ => deserializer.deserialize_any(ScalarVisitor { spec: self.spec }),
        }
    }
}

use serde::Deserialize as _;

fn parse_decimal_raw<'de, E: de::Error>(
    spec: &ColumnSpec,
    raw: &'de str,
    precision: u8,
    scale: u8,
) -> Result<Parsed<'de>, E> {
    if raw == "null" {
        return Ok(Parsed::Null);
    }
    let text = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(raw)
        .trim();
    arrow::compute::kernels::cast_utils::parse_decimal::<arrow::datatypes::Decimal128Type>(
        text,
        precision,
        scale as i8,
    )
    .map(Parsed::Decimal)
    .map_err(|_| mismatch(spec, &format!("`{raw}`")))
}

fn mismatch<E: de::Error>(spec: &ColumnSpec, found: &str) -> E {
    E::custom(format!(
        "field `{}`: expected {}, found {found}",
        spec.name, spec.field_type
    ))
}

struct ScalarVisitor<'s> {
    spec: &'s ColumnSpec,
}

impl ScalarVisitor<'_> {
    fn parse_i64<'de, E: de::Error>(&self, v: i64) -> Result<Parsed<'de>, E> {
        match self.spec.field_type {
            FieldType::Int32 => i32::try_from(v)
                .map(Parsed::I32)
                .map_err(|_| mismatch(self.spec, &format!("{v}, which does not fit"))),
            FieldType::Int64 => Ok(Parsed::I64(v)),
            FieldType::Float32 => Ok(Parsed::F32(v as f32)),
            FieldType::Float64 => Ok(Parsed::F64(v as f64)),
            FieldType::String => Ok(Parsed::Str(Cow::Owned(v.to_string()))),
            FieldType::Timestamp => timestamp_from_epoch_millis(v)
                .map(Parsed::Timestamp)
                .ok_or_else(|| mismatch(self.spec, &format!("{v} ms, out of range"))),
            _ => Err(mismatch(self.spec, &format!("the number {v}"))),
        }
    }

    fn parse_text<'de, E: de::Error>(&self, v: Cow<'de, str>) -> Result<Parsed<'de>, E> {
        let t = v.trim();
        let parsed = match self.spec.field_type {
            FieldType::String => return Ok(Parsed::Str(v)),
            FieldType::Boolean => match t {
                "true" => Some(Parsed::Bool(true)),
                "false" => Some(Parsed::Bool(false)),
                _ => None,
            },
            FieldType::Int32 => t.parse().ok().map(Parsed::I32),
            FieldType::Int64 => t.parse().ok().map(Parsed::I64),
            FieldType::Float32 => t.parse().ok().map(Parsed::F32),
            FieldType::Float64 => t.parse().ok().map(Parsed::F64),
            FieldType::Date => parse_date(t).map(Parsed::Date),
            FieldType::Timestamp => parse_timestamp_micros(t).map(Parsed::Timestamp),
            // Handled in ValueSeed, before serde_json loses the number's text.
            FieldType::Decimal { .. } | FieldType::Json => None,
        };
        parsed.ok_or_else(|| mismatch(self.spec, &format!("the string {:?}", v.as_ref())))
    }
}

impl<'de> Visitor<'de> for ScalarVisitor<'_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} for field `{}`", self.spec.field_type, self.spec.name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Parsed::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        match self.spec.field_type {
            FieldType::Boolean => Ok(Parsed::Bool(v)),
            FieldType::String => Ok(Parsed::Str(Cow::Borrowed(if v { "true" } else { "false" }))),
            _ => Err(mismatch(self.spec, &format!("the boolean {v}"))),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.parse_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.parse_i64(v),
            Err(_) => match self.spec.field_type {
                FieldType::Float32 => Ok(Parsed::F32(v as f32)),
                FieldType::Float64 => Ok(Parsed::F64(v as f64)),
                FieldType::String => Ok(Parsed::Str(Cow::Owned(v.to_string()))),
                _ => Err(mismatch(self.spec, &format!("{v}, which does not fit"))),
            },
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let integral = v.fract() == 0.0 && v.abs() < 9.0e15;
        match self.spec.field_type {
            FieldType::Float32 => Ok(Parsed::F32(v as f32)),
            FieldType::Float64 => Ok(Parsed::F64(v)),
            FieldType::String => Ok(Parsed::Str(Cow::Owned(v.to_string()))),
            // JavaScript producers write whole numbers as 3.0.
            FieldType::Int32 | FieldType::Int64 | FieldType::Timestamp if integral => {
                self.parse_i64(v as i64)
            }
            _ => Err(mismatch(self.spec, &format!("the number {v}"))),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.parse_text(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.parse_text(Cow::Owned(v.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!(
            "field `{}`: expected {}, found an object (declare the field as `json` to keep nested values)",
            self.spec.name, self.spec.field_type
        )))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!(
            "field `{}`: expected {}, found an array (declare the field as `json` to keep nested values)",
            self.spec.name, self.spec.field_type
        )))
    }
}

/// An Arrow builder for one column. `append` only sees values produced by the
/// column's own seed, so a value never meets a builder of another type.
enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder),
    Utf8(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn new(field_type: FieldType) -> Self {
        match field_type {
            FieldType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::new()),
            FieldType::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            FieldType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            FieldType::Float32 => ColumnBuilder::Float32(Float32Builder::new()),
            FieldType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            // Precision and scale were validated when the type was parsed.
            FieldType::Decimal { .. } => ColumnBuilder::Decimal(
                Decimal128Builder::new().with_data_type(field_type.to_arrow()),
            ),
            FieldType::String | FieldType::Json => ColumnBuilder::Utf8(StringBuilder::new()),
            FieldType::Date => ColumnBuilder::Date(Date32Builder::new()),
            FieldType::Timestamp => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::new().with_timezone(TIMESTAMP_TZ),
            ),
        }
    }

    fn append(&mut self, value: Parsed<'_>) {
        match (self, value) {
            (ColumnBuilder::Boolean(b), Parsed::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Int32(b), Parsed::I32(v)) => b.append_value(v),
            (ColumnBuilder::Int64(b), Parsed::I64(v)) => b.append_value(v),
            (ColumnBuilder::Float32(b), Parsed::F32(v)) => b.append_value(v),
            (ColumnBuilder::Float64(b), Parsed::F64(v)) => b.append_value(v),
            (ColumnBuilder::Decimal(b), Parsed::Decimal(v)) => b.append_value(v),
            (ColumnBuilder::Utf8(b), Parsed::Str(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), Parsed::Date(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Parsed::Timestamp(v)) => b.append_value(v),
            (builder, Parsed::Missing | Parsed::Null) => builder.append_null(),
            (builder, other) => {
                debug_assert!(false, "value {other:?} does not fit its column's builder");
                builder.append_null()
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Decimal(b) => b.append_null(),
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        use std::sync::Arc;
        match self {
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
#[path = "json_decoder_tests.rs"]
mod tests;
