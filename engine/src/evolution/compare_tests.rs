use deltalake::kernel::{DataType, StructField, StructType};

use super::*;
use crate::evolution::layout::{StateColumn, WindowShape};

fn col(name: &str, t: &str) -> StateColumn {
    StateColumn {
        name: name.into(),
        data_type: t.into(),
    }
}

fn agg(name: &str, state: &str) -> AggregateState {
    AggregateState {
        name: name.into(),
        state: vec![col(&format!("{name}[{state}]"), "Int64")],
    }
}

fn tumble(minutes: i64, keys: &[&str], aggregates: &[&str]) -> StateLayout {
    StateLayout {
        operator: "tumble".into(),
        window: Some(WindowShape {
            size_us: minutes * 60_000_000,
            step_us: None,
            offset_us: 0,
        }),
        keys: keys.iter().map(|k| col(k, "Utf8")).collect(),
        aggregates: aggregates.iter().map(|a| agg(a, "count")).collect(),
        fingerprint: None,
    }
}

fn schema(columns: &[(&str, bool)]) -> StructType {
    StructType::try_new(
        columns
            .iter()
            .map(|(n, nullable)| StructField::new(*n, DataType::LONG, *nullable)),
    )
    .unwrap()
}

fn deployed(sql: &str, state: Option<StateLayout>) -> DeployedLayer {
    DeployedLayer {
        name: "dws".into(),
        shape: Some(LayerShape::new(Some(sql), None, state)),
        has_state: true,
    }
}

fn proposed(sql: &str, state: Option<StateLayout>, table: Option<StructType>) -> ProposedLayer {
    ProposedLayer {
        name: "dws".into(),
        shape: LayerShape::new(Some(sql), None, state),
        tables: vec![TableSchemas {
            table: "dws".into(),
            existing: table,
            wanted: schema(&[("a", false), ("n", true)]),
        }],
    }
}

fn table() -> Option<StructType> {
    Some(schema(&[("a", false), ("n", true)]))
}

#[test]
fn the_same_layer_is_unchanged_even_reformatted() {
    let old = deployed(
        "SELECT a,\n  count(*) n",
        Some(tumble(1, &["city"], &["count(*)"])),
    );
    let new = proposed(
        "SELECT a, count(*) n",
        Some(tumble(1, &["city"], &["count(*)"])),
        table(),
    );
    let plan = compare(&[old], &[new], "w.yaml");
    assert_eq!(plan[0].verdict, Verdict::Unchanged, "{plan:?}");
    assert!(plan[0].changes.is_empty());
}

#[test]
fn a_new_aggregate_keeps_the_old_ones_state() {
    let old = deployed("v1", Some(tumble(1, &["city"], &["count(*)"])));
    let new = proposed(
        "v2",
        Some(tumble(1, &["city"], &["count(*)", "sum(amount)"])),
        table(),
    );
    let entry = &compare(&[old], &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Compatible, "{entry:?}");
    assert_eq!(
        entry.state,
        Some(StateCarry {
            kept: vec!["count(*)".into()],
            fresh: vec!["sum(amount)".into()],
            dropped: vec![],
        })
    );
    assert!(
        entry
            .changes
            .iter()
            .any(|c| c.contains("sum(amount) start empty")),
        "{entry:?}"
    );
}

#[test]
fn a_dropped_aggregate_and_a_changed_filter_are_compatible() {
    let old = deployed("v1", Some(tumble(1, &["city"], &["count(*)", "max(x)"])));
    let new = proposed("v2", Some(tumble(1, &["city"], &["count(*)"])), table());
    let entry = &compare(&[old], &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Compatible);
    assert_eq!(entry.state.as_ref().unwrap().dropped, vec!["max(x)"]);
    let old = deployed("v1", None);
    let new = proposed("v2", None, table());
    let entry = &compare(&[old], &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Compatible);
    assert!(
        entry.changes[0].contains("SQL or filter changed"),
        "{entry:?}"
    );
}

#[test]
fn another_window_size_or_key_set_is_incompatible_with_the_choices() {
    let old = deployed("v1", Some(tumble(1, &["city"], &["count(*)"])));
    let new = proposed("v2", Some(tumble(2, &["city"], &["count(*)"])), table());
    let entry = &compare(std::slice::from_ref(&old), &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Incompatible);
    assert!(
        entry.problems[0].contains("tumble 1m") && entry.problems[0].contains("tumble 2m"),
        "{entry:?}"
    );
    assert!(
        entry.choices[0].contains("strata run w.yaml --reset-state dws --from TIME"),
        "{entry:?}"
    );
    assert!(entry.choices[1].contains("strata backfill w.yaml dws"));
    let new = proposed(
        "v2",
        Some(tumble(1, &["city", "store"], &["count(*)"])),
        table(),
    );
    let entry = &compare(&[old], &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Incompatible);
    assert!(entry.problems[0].contains("grouped by"), "{entry:?}");
}

#[test]
fn table_schemas_merge_nullable_columns_widen_and_refuse_other_type_changes() {
    let old = deployed("v1", None);
    let new = proposed("v1", None, Some(schema(&[("a", false)])));
    let entry = &compare(std::slice::from_ref(&old), &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Compatible);
    assert!(
        entry.changes[0].contains("gains nullable column(s) n"),
        "{entry:?}"
    );
    let mut new = proposed("v1", None, table());
    new.tables[0].wanted = StructType::try_new([
        StructField::new("a", DataType::STRING, false),
        StructField::new("n", DataType::LONG, true),
    ])
    .unwrap();
    let entry = &compare(std::slice::from_ref(&old), &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Incompatible);
    assert!(entry.problems[0].contains("only widenings"), "{entry:?}");
    let mut new = proposed("v1", None, table());
    new.tables[0].existing = Some(
        StructType::try_new([
            StructField::new("a", DataType::LONG, false),
            StructField::new("n", DataType::INTEGER, true),
        ])
        .unwrap(),
    );
    let entry = &compare(&[old], &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Compatible);
    assert!(
        entry.changes[0].contains("widens `n` integer -> long"),
        "{entry:?}"
    );
}

#[test]
fn new_and_removed_layers() {
    let old = DeployedLayer {
        name: "gone".into(),
        shape: None,
        has_state: false,
    };
    let new = proposed("v1", None, None);
    let plan = compare(&[old], &[new], "w.yaml");
    assert_eq!(plan[0].verdict, Verdict::New);
    assert!(
        plan[0]
            .changes
            .iter()
            .any(|c| c.contains("table `dws` is created"))
    );
    assert_eq!(plan[1].layer, "gone");
    assert_eq!(plan[1].verdict, Verdict::Removed);
}

#[test]
fn kept_rows_operators_change_only_as_a_whole() {
    let rows = |f: &str| StateLayout {
        operator: "rows".into(),
        window: None,
        keys: vec![],
        aggregates: vec![],
        fingerprint: Some(f.into()),
    };
    let old = deployed("v1", Some(rows("a")));
    let new = proposed("v2", Some(rows("b")), table());
    let entry = &compare(&[old], &[new], "w.yaml")[0];
    assert_eq!(entry.verdict, Verdict::Incompatible);
}
