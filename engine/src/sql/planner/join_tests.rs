//! Planning joins of two streams: which shapes run, and what is refused.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::sql::planner::{PlannedQuery, StreamingPlanner, TIME_COLUMN_KEY};
use crate::sql::program::Program;
use crate::sql::stream_join_plan::StreamJoinKind;

fn stream(name: &str, id: &str) -> (String, SchemaRef) {
    let schema = Schema::new_with_metadata(
        vec![
            Field::new(id, DataType::Utf8, false),
            Field::new("agent", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ],
        HashMap::from([(TIME_COLUMN_KEY.to_string(), "ts".to_string())]),
    );
    (name.to_string(), Arc::new(schema))
}

async fn plan(sql: &str) -> Result<PlannedQuery, String> {
    let inputs = vec![stream("deals", "deal_id"), stream("showings", "showing_id")];
    StreamingPlanner::new(Vec::new())
        .plan(sql, &inputs)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn interval_bounds_are_read_from_the_condition() {
    let planned = plan(
        "SELECT d.deal_id, s.showing_id FROM deals d JOIN showings s ON d.agent = s.agent \
         AND s.ts BETWEEN d.ts - INTERVAL '2' MINUTE AND d.ts + INTERVAL '1' MINUTE",
    )
    .await
    .unwrap();
    let Program::Join(join) = &planned.program else {
        panic!("not a join");
    };
    assert_eq!(
        join.kind,
        StreamJoinKind::Interval {
            left_time: "ts".into(),
            right_time: "ts".into(),
            lower_us: -120_000_000,
            upper_us: 60_000_000,
        }
    );
    assert_eq!(planned.late_inputs.len(), 2);
}

#[tokio::test]
async fn a_join_without_time_bounds_is_refused() {
    let e = plan("SELECT d.deal_id FROM deals d JOIN showings s ON d.agent = s.agent")
        .await
        .err()
        .unwrap();
    assert!(e.contains("BETWEEN"), "{e}");
}

#[tokio::test]
async fn an_outer_interval_join_is_refused() {
    let e = plan(
        "SELECT d.deal_id FROM deals d LEFT JOIN showings s ON d.agent = s.agent \
         AND s.ts BETWEEN d.ts - INTERVAL '2' MINUTE AND d.ts",
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("inner join"), "{e}");
}

#[tokio::test]
async fn a_window_join_matches_whole_windows() {
    let windows = "FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) d \
         FULL JOIN TABLE(TUMBLE(TABLE showings, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) s";
    let planned = plan(&format!(
        "SELECT d.window_start, d.window_end, d.deal_id, s.showing_id {windows} \
         ON d.window_start = s.window_start AND d.window_end = s.window_end AND d.agent = s.agent"
    ))
    .await
    .unwrap();
    assert!(
        matches!(&planned.program, Program::Join(j) if matches!(j.kind, StreamJoinKind::Window { .. }))
    );
    assert_eq!(planned.output_time_column.as_deref(), Some("window_end"));
    let e = plan(&format!(
        "SELECT d.deal_id {windows} ON d.window_start = s.window_start AND d.agent = s.agent"
    ))
    .await
    .err()
    .unwrap();
    assert!(e.contains("a.window_end = b.window_end"), "{e}");
}

#[tokio::test]
async fn aggregating_a_join_is_left_to_a_downstream_layer() {
    let e = plan(
        "SELECT d.agent, COUNT(*) AS n FROM deals d JOIN showings s ON d.agent = s.agent \
         AND s.ts BETWEEN d.ts AND d.ts + INTERVAL '1' MINUTE GROUP BY d.agent",
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("downstream"), "{e}");
}
