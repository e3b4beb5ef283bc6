//! Planning lookup joins: what is accepted and what is refused, with what
//! to write instead. (Running them against real dimensions is in the
//! integration tests.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::lookup::{Dimension, DimensionSource, DimensionSpec, LookupFailurePolicy};
use crate::sql::lookup_join::LookupHandling;
use crate::sql::lookup_plan::LayerLookups;
use crate::sql::planner::{NodeKind, PlannedQuery, StreamingPlanner, nodes_of};
use crate::sql::program::Program;
use crate::storage::StorageRoot;

fn deals() -> Vec<(String, SchemaRef)> {
    vec![(
        "deals".to_string(),
        Arc::new(Schema::new(vec![
            Field::new("deal_id", DataType::Utf8, false),
            Field::new("agent", DataType::Utf8, true),
        ])),
    )]
}

fn lookups() -> LayerLookups {
    let root = StorageRoot::new("file:///tmp/strata-lookup-tests", HashMap::new()).unwrap();
    let agents = DimensionSpec {
        name: "agents".into(),
        schema: Arc::new(Schema::new(vec![
            Field::new("agent", DataType::Utf8, false),
            Field::new("agent_name", DataType::Utf8, true),
        ])),
        key: "agent".into(),
        source: DimensionSource::Delta {
            location: root.table("dims", "agents").unwrap(),
            reload_interval: Duration::from_secs(10),
        },
        cache: None,
        timeout: Duration::from_secs(1),
    };
    LayerLookups {
        dimensions: vec![Arc::new(Dimension::new(agents))],
        handling: Arc::new(LookupHandling::new("dwd", LookupFailurePolicy::Retry)),
    }
}

async fn plan(sql: &str) -> Result<PlannedQuery, String> {
    StreamingPlanner::new(Vec::new())
        .plan_with_lookups(sql, &deals(), Some(&lookups()))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_lookup_join_is_a_stateless_step() {
    let planned = plan(
        "SELECT d.deal_id, a.agent_name FROM deals d \
         LEFT JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent = a.agent",
    )
    .await
    .unwrap();
    let Program::Stateless(segment) = &planned.program else {
        panic!("not stateless");
    };
    assert_eq!(nodes_of(segment.plan(), &[NodeKind::LookupJoin]).len(), 1);
    assert_eq!(planned.dimensions.len(), 1);
    assert!(planned.lookup_handling.is_some());
    let names: Vec<&str> = planned
        .output_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["deal_id", "agent_name"]);
}

#[tokio::test]
async fn a_dimension_joined_without_system_time_is_refused() {
    let e = plan("SELECT d.deal_id FROM deals d JOIN agents a ON d.agent = a.agent")
        .await
        .err()
        .unwrap();
    assert!(e.contains("FOR SYSTEM_TIME AS OF"), "{e}");
}

#[tokio::test]
async fn system_time_on_something_else_is_refused() {
    let e = plan(
        "SELECT d.deal_id FROM deals d JOIN stores FOR SYSTEM_TIME AS OF d.t AS s ON d.agent = s.agent",
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("not a dimension") && e.contains("agents"), "{e}");
}

#[tokio::test]
async fn a_lookup_not_by_the_key_is_refused() {
    let e = plan(
        "SELECT d.deal_id FROM deals d JOIN agents FOR SYSTEM_TIME AS OF d.t AS a ON d.agent = a.agent_name",
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("by its key") && e.contains("d.agent"), "{e}");
}

#[tokio::test]
async fn a_right_join_keeping_dimension_rows_is_refused() {
    let e = plan(
        "SELECT d.deal_id FROM deals d RIGHT JOIN agents FOR SYSTEM_TIME AS OF d.t AS a ON d.agent = a.agent",
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("LEFT JOIN"), "{e}");
}
