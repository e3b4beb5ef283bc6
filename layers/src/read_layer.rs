//! Reading `layers:`: each layer's kind, inputs, SQL and time settings.

use std::time::Duration;

use strata_engine::lookup::LookupFailurePolicy;
use strata_engine::{StartPosition, WatermarkSpec};
use strata_schemas::parse_timestamp_micros;

use crate::diagnostic::Diagnostics;
use crate::model::{Input, Layer, LayerBody, LayerKind, Source, SqlLayer};
use crate::names::check_name;
use crate::node_reader::{Located, MapReader, scalar_text};
use crate::read_publish::{read_publish, read_side_topics};
use crate::yaml_tree::{Node, NodeValue};

const LAYER_KEYS: &[&str] = &[
    "name",
    "kind",
    "source",
    "inputs",
    "sql",
    "checkpoint_interval",
    "watermark",
    "future_skew",
    "filter",
    "keep_rejected",
    "publish",
    "side_topics",
    "lookup_failure",
    "maintenance",
    "state_ttl",
];
const SOURCE_KEYS: &[&str] = &["topic", "topics", "format", "schema", "start", "group_id"];
const INPUT_KEYS: &[&str] = &["topic", "schema", "name"];
const WATERMARK_KEYS: &[&str] = &["delay", "idle_timeout"];

fn peek_name(node: &Node) -> Option<&str> {
    let NodeValue::Map(pairs) = &node.value else {
        return None;
    };
    pairs.iter().find_map(|(k, v)| match (&k.value, &v.value) {
        (NodeValue::Str(k), NodeValue::Str(v)) if k == "name" => Some(v.as_str()),
        _ => None,
    })
}

/// A layer as far as it could be read: its name may be known even when the
/// rest is broken, and still counts for the duplicate-name check.
#[derive(Default)]
pub(crate) struct ReadLayer {
    pub(crate) name: Option<Located<String>>,
    pub(crate) layer: Option<Layer>,
    pub(crate) schema_ref: Option<Located<String>>,
}

pub(crate) fn read_layer(d: &mut Diagnostics, node: &Node, index_path: &str) -> ReadLayer {
    // Name the layer by its name in every diagnostic, once it has one.
    let path = match peek_name(node) {
        Some(name) => format!("layers.{name}"),
        None => index_path.to_string(),
    };
    let Some(section) = MapReader::new(d, node, &path, LAYER_KEYS) else {
        return ReadLayer::default();
    };
    let Some(name) = section.required_string(d, "name", "name the layer: `name: ods_deals`") else {
        return ReadLayer::default();
    };
    check_name(d, &name, &format!("{path}.name"));
    let (layer, schema_ref) = match read_layer_body(d, &section, &path, &name) {
        Some((layer, schema_ref)) => (Some(layer), schema_ref),
        None => (None, None),
    };
    ReadLayer {
        name: Some(name),
        layer,
        schema_ref,
    }
}

fn read_layer_body(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
    name: &Located<String>,
) -> Option<(Layer, Option<Located<String>>)> {
    let kind_text = section.required_string(d, "kind", "write `kind: ods` (or dwd, dws, ads)")?;
    let kind = match kind_text.value.to_ascii_lowercase().as_str() {
        "ods" => LayerKind::Ods,
        "dwd" => LayerKind::Dwd,
        "dws" => LayerKind::Dws,
        "ads" => LayerKind::Ads,
        other => {
            d.error(
                kind_text.pos,
                &format!("{path}.kind"),
                format!("unknown layer kind `{other}`"),
                Some("write one of: ods (raw from Kafka), dwd, dws, ads (SQL over inputs)".into()),
            );
            return None;
        }
    };
    let checkpoint_interval = section.duration(d, "checkpoint_interval").map(|l| l.value);
    let state_ttl = section.duration(d, "state_ttl").map(|l| l.value);
    let mut schema_ref = None;
    let body = if kind == LayerKind::Ods {
        for key in ["sql", "inputs"] {
            if let Some(n) = section.node(key) {
                d.error(
                    n.pos,
                    &format!("{path}.{key}"),
                    format!("an ods layer lands its source as it is and takes no `{key}`"),
                    Some("put the transform in a dwd layer with `inputs: [this layer]`".into()),
                );
            }
        }
        let Some(node) = section.node("source") else {
            section.missing(
                d,
                "source",
                "an ods layer needs `source:` with `topic:` and `schema:`",
            );
            return None;
        };
        let (source, schema) = read_source(d, node, &format!("{path}.source"))?;
        schema_ref = Some(schema);
        LayerBody::Source(source)
    } else {
        if let Some(n) = section.node("source") {
            d.error(
                n.pos,
                &format!("{path}.source"),
                format!("a {kind} layer reads `inputs:`, not `source:`"),
                Some("land the topic in an ods layer and name it under `inputs:`, or write `inputs: [{topic: t, schema: s}]`".into()),
            );
        }
        let sql = section.required_string(
            d,
            "sql",
            "write the layer's transform: `sql: SELECT ... FROM input`",
        );
        let inputs = read_inputs(d, section, path);
        LayerBody::Sql(SqlLayer {
            inputs,
            sql: sql.unwrap_or(Located {
                value: String::new(),
                pos: section.pos(),
            }),
        })
    };
    let reads_topics = match &body {
        LayerBody::Source(_) => true,
        LayerBody::Sql(sql) => sql.inputs.iter().any(|i| matches!(i, Input::Topic { .. })),
    };
    let watermark = read_watermark(d, section, path, reads_topics);
    let future_skew = read_future_skew(d, section, path, reads_topics);
    let filter = section.string(d, "filter");
    let keep_rejected = section.bool(d, "keep_rejected").unwrap_or(false);
    let publish = read_publish(d, section, path, kind);
    let side_topics = read_side_topics(d, section, path);
    let lookup_failure = match section.string(d, "lookup_failure") {
        None => LookupFailurePolicy::default(),
        Some(p) => match p.value.as_str() {
            "retry" => LookupFailurePolicy::Retry,
            "nulls" => LookupFailurePolicy::Nulls,
            "dead_letter" => LookupFailurePolicy::DeadLetter,
            other => {
                d.error(
                    p.pos,
                    &format!("{path}.lookup_failure"),
                    format!("unknown lookup failure policy `{other}`"),
                    Some("write `retry` (wait for the dimension; the default), `nulls` (emit with the dimension's columns null) or `dead_letter` (rows to <layer>_dead_letter with the reason)".into()),
                );
                LookupFailurePolicy::default()
            }
        },
    };
    if keep_rejected && filter.is_none() {
        d.error(
            section.pos(),
            &format!("{path}.keep_rejected"),
            "keep_rejected without a filter keeps nothing",
            Some("add `filter: <condition>`, or remove keep_rejected".into()),
        );
    }
    let maintenance = crate::read_maintenance::read_maintenance(d, section, path);
    Some((
        Layer {
            name: name.value.clone(),
            kind,
            body,
            checkpoint_interval,
            watermark,
            future_skew,
            filter,
            keep_rejected,
            publish,
            side_topics,
            lookup_failure,
            maintenance,
            state_ttl,
        },
        schema_ref,
    ))
}

/// `watermark: {delay: 5s, idle_timeout: 30s}`.
fn read_watermark(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
    reads_topics: bool,
) -> WatermarkSpec {
    let mut spec = WatermarkSpec::default();
    let Some(w) = section
        .node("watermark")
        .and_then(|n| MapReader::new(d, n, &format!("{path}.watermark"), WATERMARK_KEYS))
    else {
        return spec;
    };
    if let Some(delay) = w.string(d, "delay") {
        match crate::duration::parse_duration(&delay.value) {
            Some(v) => spec.delay = v,
            None => d.error(
                delay.pos,
                &format!("{path}.watermark.delay"),
                format!("`{}` is not a duration", delay.value),
                Some("write the allowed out-of-orderness, e.g. `delay: 5s` (0s: none)".into()),
            ),
        }
    }
    if let Some(idle) = w.duration(d, "idle_timeout") {
        if !reads_topics {
            d.error(
                idle.pos,
                &format!("{path}.watermark.idle_timeout"),
                "idle_timeout applies to topic partitions; this layer reads none",
                Some("set it on the layer that reads the topic".into()),
            );
        }
        spec.idle_timeout = idle.value;
    }
    spec
}

/// `future_skew: 1h` (or `off`).
fn read_future_skew(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
    reads_topics: bool,
) -> Option<Duration> {
    let Some(text) = section.string(d, "future_skew") else {
        return reads_topics.then_some(crate::model::DEFAULT_FUTURE_SKEW);
    };
    if !reads_topics {
        d.error(
            text.pos,
            &format!("{path}.future_skew"),
            "future-dated rows are caught where topics are read; this layer reads none",
            Some("set future_skew on the layer that reads the topic".into()),
        );
        return None;
    }
    if text.value == "off" {
        return None;
    }
    match crate::duration::parse_duration(&text.value) {
        Some(v) => Some(v),
        None => {
            d.error(
                text.pos,
                &format!("{path}.future_skew"),
                format!("`{}` is not a duration", text.value),
                Some("write how far ahead of the clock a row may be, e.g. `future_skew: 10m`, or `off`".into()),
            );
            None
        }
    }
}

fn read_source(d: &mut Diagnostics, node: &Node, path: &str) -> Option<(Source, Located<String>)> {
    let section = MapReader::new(d, node, path, SOURCE_KEYS)?;
    let mut topics: Vec<String> = Vec::new();
    if let Some(t) = section.string(d, "topic") {
        topics.push(t.value);
    }
    if let Some(items) = section.seq(d, "topics") {
        for item in items {
            if let Some(t) = scalar_text(d, item, &format!("{path}.topics")) {
                topics.push(t.value);
            }
        }
    }
    if topics.is_empty() && section.node("topic").is_none() && section.node("topics").is_none() {
        section.missing(
            d,
            "topic",
            "name the Kafka topic: `topic: deals` (or `topics: [a, b]`)",
        );
    }
    if let Some(format) = section.string(d, "format")
        && format.value != "json"
    {
        d.error(
            format.pos,
            &format!("{path}.format"),
            format!("format `{}` is not supported yet", format.value),
            Some("write `format: json` (the default); Avro is planned".into()),
        );
    }
    let schema = section.required_string(
        d,
        "schema",
        "name the schema records are decoded with: `schema: deal_event`",
    )?;
    let start = match section.string(d, "start") {
        Some(s) => parse_start(d, &s, &format!("{path}.start")).unwrap_or(StartPosition::Earliest),
        None => StartPosition::Earliest,
    };
    let group_id = section.string(d, "group_id").map(|g| g.value);
    Some((
        Source {
            topics,
            schema: schema.value.clone(),
            start,
            group_id,
        },
        schema,
    ))
}

fn parse_start(d: &mut Diagnostics, text: &Located<String>, path: &str) -> Option<StartPosition> {
    match text.value.trim() {
        "earliest" => Some(StartPosition::Earliest),
        "latest" => Some(StartPosition::Latest),
        "group" => Some(StartPosition::Group),
        other => match parse_timestamp_micros(other) {
            Some(micros) => Some(StartPosition::Timestamp {
                millis: micros.div_euclid(1_000),
            }),
            None => {
                d.error(
                    text.pos,
                    path,
                    format!("`{other}` is not a start position"),
                    Some("write earliest, latest, group (the consumer group's committed offsets), or a time such as 2026-11-21T00:00:00Z".into()),
                );
                None
            }
        },
    }
}

fn read_inputs(d: &mut Diagnostics, section: &MapReader<'_>, path: &str) -> Vec<Input> {
    let mut inputs = Vec::new();
    let Some(items) = section.seq(d, "inputs") else {
        if section.node("inputs").is_none() {
            section.missing(
                d,
                "inputs",
                "name what the SQL reads: `inputs: [ods_deals]`",
            );
        }
        return inputs;
    };
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}.inputs[{i}]");
        if let NodeValue::Map(_) = item.value {
            let Some(m) = MapReader::new(d, item, &ipath, INPUT_KEYS) else {
                continue;
            };
            let topic = m.required_string(d, "topic", "name the topic: `topic: deals`");
            let schema =
                m.required_string(d, "schema", "name the topic's schema: `schema: deal_event`");
            if let (Some(topic), Some(schema)) = (topic, schema) {
                // The SQL reads it by its name, the topic's by default.
                let name = m.string(d, "name").unwrap_or_else(|| Located {
                    value: topic.value.clone(),
                    pos: topic.pos,
                });
                crate::names::check_name(d, &name, &format!("{ipath}.name"));
                inputs.push(Input::Topic {
                    topic: topic.value,
                    schema,
                    name,
                });
            }
        } else if let Some(name) = scalar_text(d, item, &ipath) {
            inputs.push(Input::Layer(name));
        }
    }
    if items.is_empty() {
        section.missing(
            d,
            "inputs",
            "name at least one input: `inputs: [ods_deals]`",
        );
    }
    inputs
}
