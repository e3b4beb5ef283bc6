use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, StringArray, TimestampMicrosecondArray,
};

use super::*;
use crate::Field;

fn all_types() -> Schema {
    Schema::new(
        "all",
        vec![
            Field::new("b", FieldType::Boolean),
            Field::new("i", FieldType::Int32),
            Field::new("l", FieldType::Int64),
            Field::new("d", FieldType::Float64),
            Field::new(
                "m",
                FieldType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            Field::new("s", FieldType::String),
            Field::new("day", FieldType::Date),
            Field::new("t", FieldType::Timestamp),
            Field::new("j", FieldType::Json),
        ],
    )
}

fn reason(decoder: &mut JsonDecoder, json: &str) -> String {
    decoder.decode(json.as_bytes()).unwrap_err().reason
}

#[test]
fn decodes_every_type() {
    let mut d = JsonDecoder::new(&all_types());
    d.decode(
        br#"{"b":true,"i":7,"l":9007199254740993,"d":1.5,"m":12.34,"s":"x\"y",
            "day":"2026-11-21","t":"2026-11-21T00:00:00Z","j":{"k":[1,2]}}"#,
    )
    .unwrap();
    d.decode(br#"{"b":"false","i":"8","l":3.0,"d":"2.5","m":"-0.5","s":42,"t":1000}"#)
        .unwrap();
    let batch = d.finish().unwrap();
    assert_eq!(batch.num_rows(), 2);
    let col = |i: usize| batch.column(i);
    let b = col(0).as_any().downcast_ref::<BooleanArray>().unwrap();
    assert!(b.value(0) && !b.value(1));
    let i = col(1).as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!((i.value(0), i.value(1)), (7, 8));
    let l = col(2).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!((l.value(0), l.value(1)), (9_007_199_254_740_993, 3));
    let f = col(3).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!((f.value(0), f.value(1)), (1.5, 2.5));
    let m = col(4).as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!((m.value(0), m.value(1)), (1234, -50));
    let s = col(5).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!((s.value(0), s.value(1)), ("x\"y", "42"));
    let day = col(6).as_any().downcast_ref::<Date32Array>().unwrap();
    assert_eq!(day.value(0), 20_778);
    assert!(day.is_null(1));
    let t = col(7)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(t.value(0), 1_795_219_200_000_000);
    assert_eq!(t.value(1), 1_000_000);
    let j = col(8).as_string::<i32>();
    assert_eq!(j.value(0), r#"{"k":[1,2]}"#);
    assert!(j.is_null(1));
}

#[test]
fn a_bad_record_leaves_nothing_behind() {
    let schema = Schema::new(
        "r",
        vec![
            Field::new("a", FieldType::Int64).required(),
            Field::new("b", FieldType::String),
        ],
    );
    let mut d = JsonDecoder::new(&schema);
    d.decode(br#"{"a":1,"b":"one"}"#).unwrap();
    // `b` parses before `a` fails: the row must still not be half appended.
    assert!(d.decode(br#"{"b":"two","a":"x"}"#).is_err());
    d.decode(br#"{"a":3}"#).unwrap();
    let batch = d.finish().unwrap();
    assert_eq!(batch.num_rows(), 2);
    let b = batch.column(1).as_string::<i32>();
    assert_eq!(b.value(0), "one");
    assert!(b.is_null(1));
}

#[test]
fn reasons_name_the_field_and_the_problem() {
    let schema = Schema::new(
        "r",
        vec![
            Field::new("id", FieldType::Int32).required(),
            Field::new(
                "amount",
                FieldType::Decimal {
                    precision: 5,
                    scale: 2,
                },
            ),
            Field::new("at", FieldType::Timestamp),
            Field::new("city", FieldType::String),
        ],
    );
    let mut d = JsonDecoder::new(&schema);
    let r = reason(&mut d, "not json");
    assert!(r.starts_with("not valid JSON"), "{r}");
    let r = reason(&mut d, r#"{"id":1"#);
    assert!(r.starts_with("not valid JSON"), "{r}");
    let r = reason(&mut d, r#"{"id":1} trailing"#);
    assert!(r.starts_with("not valid JSON"), "{r}");
    let r = reason(&mut d, "[1,2]");
    assert_eq!(
        r,
        "expected a JSON object with the record's fields, found a JSON array"
    );
    let r = reason(&mut d, "7");
    assert_eq!(
        r,
        "expected a JSON object with the record's fields, found integer `7`"
    );
    let r = reason(&mut d, r#"{"city":"x"}"#);
    assert_eq!(r, "required field `id` is missing");
    let r = reason(&mut d, r#"{"id":null}"#);
    assert_eq!(r, "required field `id` is null");
    let r = reason(&mut d, r#"{"id":3000000000}"#);
    assert!(r.contains("field `id`: expected int"), "{r}");
    let r = reason(&mut d, r#"{"id":1,"amount":"lots"}"#);
    assert!(r.contains("field `amount`: expected decimal(5,2)"), "{r}");
    let r = reason(&mut d, r#"{"id":1,"amount":123456}"#);
    assert!(r.contains("field `amount`"), "{r}");
    let r = reason(&mut d, r#"{"id":1,"at":"tomorrow"}"#);
    assert!(
        r.contains(r#"field `at`: expected timestamp, found the string "tomorrow""#),
        "{r}"
    );
    let r = reason(&mut d, r#"{"id":1,"city":{"name":"x"}}"#);
    assert!(r.contains("declare the field as `json`"), "{r}");
    assert_eq!(d.len(), 0);
}

#[test]
fn unknown_keys_are_ignored_and_duplicates_take_the_last() {
    let schema = Schema::new("r", vec![Field::new("a", FieldType::Int64)]);
    let mut d = JsonDecoder::new(&schema);
    d.decode(br#"{"z":{"deep":[1,{"x":2}]},"a":1,"a":2}"#)
        .unwrap();
    let batch = d.finish().unwrap();
    let a = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(a.value(0), 2);
}

#[test]
fn keys_out_of_schema_order_still_land_in_their_columns() {
    let schema = Schema::new(
        "r",
        vec![
            Field::new("a", FieldType::Int64),
            Field::new("b", FieldType::Int64),
            Field::new("c", FieldType::Int64),
        ],
    );
    let mut d = JsonDecoder::new(&schema);
    d.decode(br#"{"c":3,"a":1,"b":2}"#).unwrap();
    let batch = d.finish().unwrap();
    let got: Vec<i64> = (0..3)
        .map(|i| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        })
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
}
