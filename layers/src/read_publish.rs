//! Reading a layer's `publish: {topic: t, delivery: exactly_once}` and
//! `side_topics: {late: t1, rejected: t2, delivery: at_least_once}`.

use strata_engine::dataflow::Delivery;

use crate::diagnostic::Diagnostics;
use crate::model::{LayerKind, Publish};
use crate::node_reader::MapReader;

const PUBLISH_KEYS: &[&str] = &["topic", "delivery"];
/// Side tables that can be published, by key, with their table suffix.
const SIDES: &[(&str, &str)] = &[
    ("late", "_late"),
    ("future", "_future"),
    ("rejected", "_rejected"),
    ("dead_letter", "_dead_letter"),
];
const SIDE_TOPIC_KEYS: &[&str] = &["late", "future", "rejected", "dead_letter", "delivery"];

/// The layer's `publish:` section, if it has one and it is valid.
pub(crate) fn read_publish(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
    kind: LayerKind,
) -> Option<Publish> {
    let node = section.node("publish")?;
    let path = format!("{path}.publish");
    if kind == LayerKind::Ods {
        d.error(
            node.pos,
            &path,
            "an ods layer's records are already in Kafka",
            Some("publish from a dwd/dws/ads layer, whose rows are computed".into()),
        );
        return None;
    }
    let p = MapReader::new(d, node, &path, PUBLISH_KEYS)?;
    let topic = p.required_string(
        d,
        "topic",
        "name the topic the rows go to: `publish: {topic: dws_gmv}`",
    )?;
    let delivery = read_delivery(d, &p, &path)?;
    Some(Publish {
        topic: topic.value,
        delivery,
    })
}

/// The layer's `side_topics:`: (side table suffix, where it is published).
pub(crate) fn read_side_topics(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
) -> Vec<(String, Publish)> {
    let Some(node) = section.node("side_topics") else {
        return Vec::new();
    };
    let path = format!("{path}.side_topics");
    let Some(p) = MapReader::new(d, node, &path, SIDE_TOPIC_KEYS) else {
        return Vec::new();
    };
    let Some(delivery) = read_delivery(d, &p, &path) else {
        return Vec::new();
    };
    SIDES
        .iter()
        .filter_map(|(key, suffix)| {
            let topic = p.string(d, key)?;
            Some((
                suffix.to_string(),
                Publish {
                    topic: topic.value,
                    delivery,
                },
            ))
        })
        .collect()
}

fn read_delivery(d: &mut Diagnostics, p: &MapReader<'_>, path: &str) -> Option<Delivery> {
    let Some(text) = p.string(d, "delivery") else {
        return Some(Delivery::AtLeastOnce);
    };
    match text.value.as_str() {
        "exactly_once" => Some(Delivery::ExactlyOnce),
        "at_least_once" => Some(Delivery::AtLeastOnce),
        other => {
            d.error(
                text.pos,
                &format!("{path}.delivery"),
                format!("unknown delivery `{other}`"),
                Some("write `exactly_once` (a Kafka transaction per checkpoint; readers use isolation.level=read_committed) or `at_least_once` (the default)".into()),
            );
            None
        }
    }
}
