//! Scalar functions in layer SQL: DataFusion's own, the JSON functions, and
//! users' Rust functions registered by name.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

use crate::operators::layer_query::LayerQuery;
use crate::sql::planner::StreamingPlanner;

fn events() -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("phone", DataType::Utf8, false),
        Field::new("extra", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["13812345678", "13998765432"])),
            Arc::new(StringArray::from(vec![
                Some(r#"{"channel": "app", "rooms": 3, "tags": ["a", "b"]}"#),
                None,
            ])),
            // 01:02:03 and 02:03:04.5 on 1970-01-01.
            Arc::new(
                TimestampMicrosecondArray::from(vec![3_723_000_000, 7_384_500_000])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    (schema, batch)
}

async fn run(planner: &StreamingPlanner, sql: &str) -> RecordBatch {
    let (schema, batch) = events();
    let planned = planner
        .plan(sql, &[("events".into(), schema)])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut query = LayerQuery::new(planned, planner.task_ctx().unwrap()).unwrap();
    let out = query.on_batch("events", batch).await.unwrap().rows;
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

#[tokio::test]
async fn json_functions_read_json_text() {
    let planner = StreamingPlanner::new(vec![]);
    let out = run(
        &planner,
        "SELECT json_get_str(extra, 'channel') AS channel, json_get_int(extra, 'rooms') AS rooms, \
         extra->>'channel' AS channel_text, json_length(extra, 'tags') AS tags FROM events",
    )
    .await;
    let channel = out.column(0).as_string::<i32>();
    assert_eq!(channel.value(0), "app");
    assert!(channel.is_null(1));
    assert_eq!(out.column(1).as_primitive::<Int64Type>().value(0), 3);
    let text = arrow::compute::cast(out.column(2), &DataType::Utf8).unwrap();
    assert_eq!(text.as_string::<i32>().value(0), "app");
    assert_eq!(
        arrow::compute::cast(out.column(3), &DataType::Int64)
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        2
    );
}

#[tokio::test]
async fn datafusion_scalar_functions_are_available() {
    let planner = StreamingPlanner::new(vec![]);
    let out = run(
        &planner,
        "SELECT upper(substr(phone, 1, 3)) AS prefix, date_trunc('hour', ts) AS hour, \
         make_array(1, 2) AS pair FROM events",
    )
    .await;
    assert_eq!(out.num_rows(), 2);
    let prefix = out.column(0).as_string::<i32>();
    assert_eq!((prefix.value(0), prefix.value(1)), ("138", "139"));
    // 01:02:03 and 02:03:04.5 truncated to their hours.
    let hours = arrow::compute::cast(
        out.column(1),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )
    .unwrap();
    let hours = hours.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(
        (hours.value(0), hours.value(1)),
        (3_600_000_000, 7_200_000_000)
    );
    let pairs = out.column(2).as_list::<i32>();
    for row in 0..2 {
        let pair = pairs.value(row);
        let pair = pair.as_primitive::<Int64Type>();
        assert_eq!(pair.values().to_vec(), vec![1, 2], "row {row}");
    }
}

#[tokio::test]
async fn rust_udfs_are_called_by_name() {
    // A user's function: masks the middle of a phone number.
    let mask = create_udf(
        "mask_phone",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let phones = arrays[0].as_string::<i32>();
            let masked: StringArray = phones
                .iter()
                .map(|p| p.map(|p| format!("{}****{}", &p[..3], &p[p.len() - 4..])))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(masked)))
        }),
    );
    let planner = StreamingPlanner::new(vec![mask]);
    let out = run(&planner, "SELECT mask_phone(phone) AS masked FROM events").await;
    let masked = out.column(0).as_string::<i32>();
    assert_eq!(masked.value(0), "138****5678");
    assert_eq!(masked.value(1), "139****5432");

    // Without registration the name is unknown, and the error says so.
    let err = StreamingPlanner::new(vec![])
        .plan(
            "SELECT mask_phone(phone) AS masked FROM events",
            &[("events".into(), events().0)],
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("mask_phone"), "{err}");
}

#[tokio::test]
async fn a_json_value_of_any_type_must_be_given_one() {
    let planner = StreamingPlanner::new(vec![]);
    let err = planner
        .plan(
            "SELECT json_get(extra, 'channel') AS channel FROM events",
            &[("events".into(), events().0)],
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("json_get_str"), "{err}");
}
