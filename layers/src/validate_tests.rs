//! Every class of problem `strata validate` must report, with its position.

use std::path::Path;

use super::*;

const GOOD: &str = r#"warehouse: beike
storage:
  root: ./data
kafka:
  bootstrap_servers: 127.0.0.1:9092
  properties:
    client.id: strata
checkpoint:
  interval: 500ms
schemas:
  deal_event:
    event_time: event_time
    fields:
      - {name: deal_id, type: string, nullable: false}
      - {name: amount, type: "decimal(18,2)"}
      - {name: event_time, type: timestamp}
layers:
  - name: ods_deals
    kind: ods
    source:
      topic: deals
      schema: deal_event
      start: "2026-11-01T00:00:00Z"
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: SELECT * FROM ods_deals
"#;

fn problems(text: &str) -> Vec<Diagnostic> {
    match parse_str(text, Path::new("/w/wh.yaml")) {
        Ok(_) => Vec::new(),
        Err(LoadError::Invalid(d)) => d,
        Err(e) => panic!("{e}"),
    }
}

fn find<'a>(ds: &'a [Diagnostic], needle: &str) -> &'a Diagnostic {
    ds.iter()
        .find(|d| d.to_string().contains(needle))
        .unwrap_or_else(|| panic!("no diagnostic mentions {needle:?} in:\n{ds:#?}"))
}

#[test]
fn the_reference_file_is_valid() {
    let w = parse_str(GOOD, Path::new("/w/wh.yaml")).unwrap();
    assert_eq!(w.storage.root, "file:///w/data");
    assert_eq!(w.checkpoint.interval, std::time::Duration::from_millis(500));
    assert_eq!(w.kafka.properties["client.id"], "strata");
    let schema = w.schema("deal_event").unwrap();
    // The event-time field is required even though the file did not say so.
    assert!(!schema.fields[2].nullable);
    let LayerBody::Source(source) = &w.layers[0].body else {
        panic!()
    };
    assert_eq!(
        source.start,
        strata_engine::StartPosition::Timestamp {
            millis: 1_793_491_200_000
        }
    );
}

#[test]
fn relative_roots_are_resolved_against_the_file_directory() {
    let w = parse_str(GOOD, Path::new("wh.yaml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(w.storage.root, format!("file://{}/data", cwd.display()));
    let w = parse_str(
        &GOOD.replace("root: ./data", "root: s3://bucket/wh/"),
        Path::new("wh.yaml"),
    )
    .unwrap();
    assert_eq!(w.storage.root, "s3://bucket/wh");
}

#[test]
fn unknown_keys_point_at_the_key_and_suggest() {
    let ds = problems(&GOOD.replace("      topic: deals", "      topik: deals"));
    let d = find(&ds, "unknown key `topik`");
    assert_eq!((d.pos.line, d.pos.column), (21, 7));
    assert_eq!(d.field, "layers.ods_deals.source.topik");
    assert_eq!(d.help.as_deref(), Some("did you mean `topic`?"));
    // The missing topic is reported too, not hidden by the first problem.
    find(&ds, "missing required key `topic`");
}

#[test]
fn missing_schema_and_unknown_input_suggest_close_names() {
    let text = GOOD
        .replace(
            "schema: deal_event\n      start",
            "schema: deal_events\n      start",
        )
        .replace("inputs: [ods_deals]", "inputs: [ods_deal]");
    let ds = problems(&text);
    let d = find(&ds, "no schema named `deal_events`");
    assert_eq!(d.pos.line, 22);
    assert!(d.help.as_deref().unwrap().contains("`deal_event`"));
    let d = find(&ds, "no layer named `ods_deal`");
    assert_eq!(d.pos.line, 26);
    assert!(d.help.as_deref().unwrap().contains("`ods_deals`"));
}

#[test]
fn bad_types_say_what_to_write() {
    let ds = problems(&GOOD.replace("type: \"decimal(18,2)\"", "type: money"));
    let d = find(&ds, "unknown type `money`");
    assert_eq!(d.pos.line, 15);
    assert_eq!(d.field, "schemas.deal_event.fields[1].type");
    assert!(d.help.as_deref().unwrap().contains("decimal(18,2)"));
}

#[test]
fn duplicate_layers_name_the_first() {
    let text = GOOD.replace("name: dwd_deals", "name: ods_deals");
    let ds = problems(&text);
    let d = find(&ds, "layer `ods_deals` is defined twice");
    assert_eq!(d.pos.line, 24);
    assert!(d.help.as_deref().unwrap().contains("line 18"));
}

#[test]
fn cycles_are_reported() {
    let text = format!(
        "{GOOD}  - name: dws_a\n    kind: dws\n    inputs: [dws_b]\n    sql: SELECT 1\n  - name: dws_b\n    kind: dws\n    inputs: [dws_a]\n    sql: SELECT 1\n"
    );
    let ds = problems(&text);
    let d = find(&ds, "cycle");
    assert!(
        d.message.contains("dws_a") && d.message.contains("dws_b"),
        "{d}"
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = GOOD
        .replace("interval: 500ms", "interval: soon")
        .replace("kind: dwd", "kind: dwx")
        .replace(
            "bootstrap_servers: 127.0.0.1:9092",
            "bootstrap_servers: localhost",
        )
        .replace("event_time: event_time\n", "event_time: created_at\n");
    let ds = problems(&text);
    find(&ds, "`soon` is not a positive duration");
    find(&ds, "unknown layer kind `dwx`");
    find(&ds, "`localhost` is not host:port");
    find(&ds, "`created_at` is not a field of this schema");
    // ... and sorted by position.
    let lines: Vec<u32> = ds.iter().map(|d| d.pos.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn event_time_must_be_a_timestamp_and_ods_needs_one() {
    let ds = problems(&GOOD.replace("event_time: event_time\n", "event_time: amount\n"));
    find(&ds, "has type decimal(18,2), not timestamp");
    find(&ds, "schema `deal_event` has no `event_time`");
}

#[test]
fn reserved_columns_and_bad_names() {
    let text = GOOD
        .replace("name: deal_id,", "name: event_date,")
        .replace("name: ods_deals\n", "name: Ods-Deals\n");
    let ds = problems(&text);
    find(&ds, "clashes with a column Strata adds");
    let d = find(&ds, "`Ods-Deals` is not a valid name");
    assert!(d.help.as_deref().unwrap().contains("ods_deals"));
}

#[test]
fn environment_variables_expand_or_are_reported() {
    let text = GOOD.replace(
        "bootstrap_servers: 127.0.0.1:9092",
        "bootstrap_servers: ${STRATA_TEST_SURELY_UNSET_VAR}",
    );
    let ds = problems(&text);
    let d = find(
        &ds,
        "environment variable `STRATA_TEST_SURELY_UNSET_VAR` is not set",
    );
    assert!(d.help.as_deref().unwrap().contains(":-"));
    let text = GOOD.replace(
        "bootstrap_servers: 127.0.0.1:9092",
        "bootstrap_servers: ${STRATA_TEST_SURELY_UNSET_VAR:-10.0.0.1:9093}",
    );
    let w = parse_str(&text, Path::new("/w/wh.yaml")).unwrap();
    assert_eq!(w.kafka.bootstrap_servers, "10.0.0.1:9093");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let ds = problems("warehouse: x\nlayers: [\n");
    let d = find(&ds, "not valid YAML");
    assert!(d.pos.line >= 2, "{d}");
}

#[test]
fn ods_layers_take_no_sql_and_sql_layers_no_source() {
    let text = GOOD.replace(
        "      start: \"2026-11-01T00:00:00Z\"\n",
        "      start: \"2026-11-01T00:00:00Z\"\n    sql: SELECT 1\n",
    );
    let ds = problems(&text);
    find(
        &ds,
        "an ods layer lands its source as it is and takes no `sql`",
    );
}

#[test]
fn publish_names_a_topic_and_a_known_delivery() {
    let with = |publish: &str| {
        GOOD.replace(
            "    inputs: [ods_deals]\n",
            &format!("    inputs: [ods_deals]\n    publish: {publish}\n"),
        )
    };
    let w = parse_str(
        &with("{topic: dwd_out, delivery: exactly_once}"),
        Path::new("/w/wh.yaml"),
    )
    .unwrap();
    let publish = w.layers[1].publish.clone().unwrap();
    assert_eq!(publish.topic, "dwd_out");
    assert_eq!(
        publish.delivery,
        strata_engine::dataflow::Delivery::ExactlyOnce
    );
    let w = parse_str(&with("{topic: dwd_out}"), Path::new("/w/wh.yaml")).unwrap();
    assert_eq!(
        w.layers[1].publish.as_ref().unwrap().delivery,
        strata_engine::dataflow::Delivery::AtLeastOnce
    );

    let ds = problems(&with("{topic: dwd_out, delivery: exactly-once}"));
    let d = find(
        &ds,
        "layers.dwd_deals.publish.delivery: unknown delivery `exactly-once`",
    );
    assert_eq!((d.pos.line, d.pos.column), (27, 41), "{d}");
    find(
        &problems(&with("{delivery: exactly_once}")),
        "missing required key `topic`",
    );
    let ods = GOOD.replace(
        "      start: \"2026-11-01T00:00:00Z\"\n",
        "      start: \"2026-11-01T00:00:00Z\"\n    publish: {topic: x}\n",
    );
    find(
        &problems(&ods),
        "an ods layer's records are already in Kafka",
    );
}

#[test]
fn dimensions_are_checked_where_they_are_written() {
    let text = GOOD
        .replace(
            "layers:\n",
            r#"dimensions:
  - name: agents
    schema: deal_evnt
    key: agent_id
    postgres: {url: "postgres://x@db/crm", table: agents}
  - name: regions
    schema: deal_event
    key: region
    delta: {path: dims/regions}
    cache: {max_rows: 10}
  - name: stores
    schema: deal_event
    key: deal_id
    redis: {url: "redis://cache:6379", format: xml}
  - name: both
    schema: deal_event
    key: deal_id
    postgres: {url: "postgres://x@db/crm", table: t}
    redis: {url: "redis://cache:6379"}
layers:
"#,
        )
        .replace(
            "    inputs: [ods_deals]\n",
            "    inputs: [ods_deals]\n    lookup_failure: skip\n",
        );
    let ds = problems(&text);
    let d = find(&ds, "no schema named `deal_evnt`");
    assert_eq!(
        (d.pos.line, d.field.as_str()),
        (19, "dimensions.agents.schema")
    );
    find(&ds, "did you mean `deal_event`");
    let d = find(&ds, "no field named `region`");
    assert_eq!(d.field, "dimensions.regions.key");
    find(&ds, "takes no cache");
    find(&ds, "unknown Redis format `xml`");
    find(&ds, "names postgres and redis");
    let d = find(&ds, "unknown lookup failure policy `skip`");
    assert_eq!(d.field, "layers.dwd_deals.lookup_failure");
}

#[test]
fn maintenance_is_read_per_warehouse_and_per_layer_with_defaults() {
    let text = GOOD.replace(
        "layers:\n",
        "maintenance:\n  min_small_files: 8\n  vacuum_retention: 2d\nlayers:\n",
    )
    .replace(
        "    sql: SELECT * FROM ods_deals\n",
        "    sql: SELECT * FROM ods_deals\n    maintenance: {vacuum_retention: 1h, interval: off, vacuum_interval: 10m}\n",
    );
    let w = parse_str(&text, Path::new("/w/wh.yaml")).unwrap();
    let day = std::time::Duration::from_secs(86_400);
    let ods = w.maintenance_for("ods_deals");
    assert_eq!(ods.min_small_files, 8);
    assert_eq!(ods.vacuum_retention, 2 * day);
    assert_eq!(ods.log_retention, 30 * day, "the default");
    assert!(ods.interval.is_some());
    let dwd = w.maintenance_for("dwd_deals");
    assert_eq!(dwd.min_small_files, 8, "the warehouse's");
    assert_eq!(dwd.vacuum_retention, std::time::Duration::from_secs(3600));
    assert_eq!(dwd.interval, None);
    assert_eq!(
        dwd.vacuum_every,
        strata_engine::maintenance::VacuumEvery::Every(std::time::Duration::from_secs(600))
    );
    assert_eq!(dwd.vacuum_interval(), None, "no background maintenance");
    assert_eq!(
        ods.vacuum_every,
        strata_engine::maintenance::VacuumEvery::Auto,
        "the default"
    );
}

#[test]
fn maintenance_problems_point_at_their_line() {
    let text = GOOD.replace(
        "layers:\n",
        "maintenance:\n  vacuum_retention: 1s\n  target_file_size_mb: 0\n  compact: yes\n  vacuum_interval: daily\nlayers:\n",
    );
    let ds = problems(&text);
    let short = find(&ds, "maintenance.vacuum_retention");
    assert_eq!(short.pos.line, 18, "{short}");
    assert!(
        short.to_string().contains("still being committed"),
        "{short}"
    );
    find(&ds, "maintenance.target_file_size_mb");
    let unknown = find(&ds, "compact");
    assert_eq!(unknown.pos.line, 20, "{unknown}");
    let every = find(&ds, "maintenance.vacuum_interval");
    assert_eq!(every.pos.line, 21, "{every}");
    assert!(every.to_string().contains("`auto`"), "{every}");
}

#[test]
fn serve_limits_are_read_with_defaults_and_checked() {
    let with = |serve: &str| GOOD.replace("layers:\n", &format!("serve:\n{serve}layers:\n"));
    let w = parse_str(GOOD, Path::new("/w/wh.yaml")).unwrap();
    assert_eq!(w.serve.limits, ServeLimits::default());
    assert!(!w.serve.string_view);
    assert!(w.serve.handle_key.is_none());

    let w = parse_str(
        &with(
            "  string_view: true\n  handle_key: 0123456789abcdef0123456789abcdef\n  limits:\n    query_threads: 3\n    query_memory: 64MiB\n    memory: 512MiB\n    query_timeout: 30s\n    concurrent_queries: 2\n    queued_queries: 0\n    expression_depth: 200\n    spill: 0\n",
        ),
        Path::new("/w/wh.yaml"),
    )
    .unwrap();
    let l = &w.serve.limits;
    assert!(w.serve.string_view);
    assert_eq!(w.serve.handle_key.as_deref().map(str::len), Some(32));
    assert_eq!(
        (l.query_threads, l.query_memory, l.memory, l.spill),
        (3, 64 << 20, 512 << 20, 0)
    );
    assert_eq!(l.query_timeout, std::time::Duration::from_secs(30));
    assert_eq!((l.concurrent_queries, l.queued_queries), (2, 0));
    assert_eq!(l.expression_depth, 200);

    let ds = problems(&with(
        "  handle_key: short\n  limits:\n    query_memory: 2GiB\n    memory: 1GiB\n    query_threads: 0\n    expression_depth: 1000000\n    sql_bytes: 3MiB\n    query_timeout: soon\n    memory_limit: 1GiB\n",
    ));
    let d = find(&ds, "serve.handle_key: the handle key has 5 characters");
    assert_eq!(d.pos.line, 18, "{d}");
    let d = find(
        &ds,
        "one query may use 2048.0 MiB but all queries together only 1024.0 MiB",
    );
    assert_eq!(
        (d.pos.line, d.field.as_str()),
        (20, "serve.limits.query_memory")
    );
    find(&ds, "query_threads is 0; it must be between 1");
    find(
        &ds,
        "expression_depth is 1000000; it must be between 8 and 10000",
    );
    find(&ds, "a statement handle carries both");
    find(&ds, "`soon` is not a positive duration");
    let d = find(&ds, "unknown key `memory_limit`");
    assert_eq!(d.field, "serve.limits.memory_limit");
    find(
        &problems(&with("  limits:\n    memory: lots\n")),
        "`lots` is not a size",
    );
}

#[test]
fn metrics_section_defaults_and_bad_values_have_positions() {
    let w = parse_str(GOOD, Path::new("/w/wh.yaml")).unwrap();
    assert_eq!(w.metrics, None);
    let with = GOOD.replace("layers:\n", "metrics:\n  listen: 127.0.0.1:9999\nlayers:\n");
    let w = parse_str(&with, Path::new("/w/wh.yaml")).unwrap();
    let m = w.metrics.unwrap();
    assert_eq!(m.listen.port(), 9999);
    assert_eq!(m.stale_after, None);
    let bad = GOOD.replace(
        "layers:\n",
        "metrics:\n  listen: nowhere\n  stale_after: soon\n  port: 1\nlayers:\n",
    );
    let ds = problems(&bad);
    let d = find(&ds, "`nowhere` is not an ip:port address");
    assert_eq!((d.pos.line, d.field.as_str()), (18, "metrics.listen"));
    let d = find(&ds, "`soon` is not a positive duration");
    assert_eq!(d.pos.line, 19);
    find(&ds, "unknown key `port`");
}
