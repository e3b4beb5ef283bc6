//! Reading a layer's `publish: {topic: t, delivery: exactly_once}`.

use strata_engine::dataflow::Delivery;

use crate::diagnostic::Diagnostics;
use crate::model::{LayerKind, Publish};
use crate::node_reader::MapReader;

const PUBLISH_KEYS: &[&str] = &["topic", "delivery"];

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
    let delivery = match p.string(d, "delivery") {
        None => Delivery::AtLeastOnce,
        Some(text) => match text.value.as_str() {
            "exactly_once" => Delivery::ExactlyOnce,
            "at_least_once" => Delivery::AtLeastOnce,
            other => {
                d.error(
                    text.pos,
                    &format!("{path}.delivery"),
                    format!("unknown delivery `{other}`"),
                    Some("write `exactly_once` (a Kafka transaction per checkpoint; readers use isolation.level=read_committed) or `at_least_once` (the default)".into()),
                );
                return None;
            }
        },
    };
    Some(Publish {
        topic: topic.value,
        delivery,
    })
}
