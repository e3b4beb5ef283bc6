//! Typed reads from the YAML tree that record a diagnostic instead of failing,
//! so reading goes on and every problem in the file is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::byte_size::parse_byte_size;
use crate::diagnostic::Diagnostics;
use crate::duration::parse_duration;
use crate::interpolate::interpolate;
use crate::yaml_tree::{Node, NodeValue, Position};
use strata_schemas::closest;

/// A value and where it was written, kept for checks that run after reading
/// (a layer naming a schema that does not exist points at the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Position,
}

/// A YAML mapping being read as a config section with a fixed set of keys.
pub(crate) struct MapReader<'n> {
    path: String,
    pos: Position,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> MapReader<'n> {
    /// Reads `node` as a mapping whose keys must be among `allowed`; unknown
    /// keys are reported with the nearest allowed one.
    pub(crate) fn new(
        d: &mut Diagnostics,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Self> {
        let NodeValue::Map(pairs) = &node.value else {
            d.error(
                node.pos,
                path,
                format!("expected a mapping of keys, found {}", node.value.kind()),
                Some(format!(
                    "write `key: value` lines here; keys: {}",
                    allowed.join(", ")
                )),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let NodeValue::Str(name) = &key.value else {
                d.error(
                    key.pos,
                    path,
                    format!("keys must be names, found {}", key.value.kind()),
                    Some(format!("use one of: {}", allowed.join(", "))),
                );
                continue;
            };
            if !allowed.contains(&name.as_str()) {
                let help = match closest(name, allowed.iter().copied()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("allowed keys here: {}", allowed.join(", ")),
                };
                d.error(
                    key.pos,
                    &join(path, name),
                    format!("unknown key `{name}`"),
                    Some(help),
                );
                continue;
            }
            entries.push((name.as_str(), value));
        }
        Some(MapReader {
            path: path.to_string(),
            pos: node.pos,
            entries,
        })
    }

    /// Where the mapping starts.
    pub(crate) fn pos(&self) -> Position {
        self.pos
    }

    /// The dotted path of a key in this mapping.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The node under `key`, if written.
    pub(crate) fn node(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// Reports that `key` is required here.
    pub(crate) fn missing(&self, d: &mut Diagnostics, key: &str, help: &str) {
        d.error(
            self.pos,
            &self.path_of(key),
            format!("missing required key `{key}`"),
            Some(help.to_string()),
        );
    }

    /// A scalar under `key`, as text (`${VAR}` expanded).
    pub(crate) fn string(&self, d: &mut Diagnostics, key: &str) -> Option<Located<String>> {
        let node = self.node(key)?;
        scalar_text(d, node, &self.path_of(key))
    }

    /// Like [`string`](Self::string), reporting a missing key with `help`.
    pub(crate) fn required_string(
        &self,
        d: &mut Diagnostics,
        key: &str,
        help: &str,
    ) -> Option<Located<String>> {
        if self.node(key).is_none() {
            self.missing(d, key, help);
            return None;
        }
        self.string(d, key)
    }

    /// A boolean under `key`.
    pub(crate) fn bool(&self, d: &mut Diagnostics, key: &str) -> Option<bool> {
        let node = self.node(key)?;
        match &node.value {
            NodeValue::Bool(b) => Some(*b),
            other => {
                d.error(
                    node.pos,
                    &self.path_of(key),
                    format!("expected true or false, found {}", other.kind()),
                    Some(format!("write `{key}: true` or `{key}: false`")),
                );
                None
            }
        }
    }

    /// A non-negative integer under `key`.
    pub(crate) fn count(&self, d: &mut Diagnostics, key: &str) -> Option<u64> {
        let node = self.node(key)?;
        match &node.value {
            NodeValue::Int(n) if *n >= 0 => Some(*n as u64),
            other => {
                d.error(
                    node.pos,
                    &self.path_of(key),
                    format!("expected a whole number >= 0, found {}", other.kind()),
                    Some(format!("write e.g. `{key}: 10`")),
                );
                None
            }
        }
    }

    /// A duration under `key` (`500ms`, `1s`, `5m`; a bare integer is ms).
    pub(crate) fn duration(&self, d: &mut Diagnostics, key: &str) -> Option<Located<Duration>> {
        let text = self.string(d, key)?;
        match parse_duration(&text.value) {
            Some(value) if !value.is_zero() => Some(Located {
                value,
                pos: text.pos,
            }),
            _ => {
                d.error(
                    text.pos,
                    &self.path_of(key),
                    format!("`{}` is not a positive duration", text.value),
                    Some("write a number and a unit: `500ms`, `1s`, `5m` or `1h`".into()),
                );
                None
            }
        }
    }

    /// A size in bytes under `key` (`256MiB`, `1GiB`; a bare integer is
    /// bytes).
    pub(crate) fn byte_size(&self, d: &mut Diagnostics, key: &str) -> Option<Located<u64>> {
        let text = self.string(d, key)?;
        match parse_byte_size(&text.value) {
            Some(value) => Some(Located {
                value,
                pos: text.pos,
            }),
            None => {
                d.error(
                    text.pos,
                    &self.path_of(key),
                    format!("`{}` is not a size", text.value),
                    Some("write a number and a unit: `512KiB`, `256MiB` or `1GiB`".into()),
                );
                None
            }
        }
    }

    /// A mapping of scalars under `key` (e.g. extra Kafka properties).
    pub(crate) fn string_map(&self, d: &mut Diagnostics, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(node) = self.node(key) else {
            return out;
        };
        let path = self.path_of(key);
        let NodeValue::Map(pairs) = &node.value else {
            d.error(
                node.pos,
                &path,
                format!("expected a mapping, found {}", node.value.kind()),
                Some("write one `name: value` per line".into()),
            );
            return out;
        };
        for (k, v) in pairs {
            let (Some(k), Some(v)) = (scalar_text(d, k, &path), scalar_text(d, v, &path)) else {
                continue;
            };
            out.insert(k.value, v.value);
        }
        out
    }

    /// A sequence under `key`.
    pub(crate) fn seq(&self, d: &mut Diagnostics, key: &str) -> Option<&'n [Node]> {
        let node = self.node(key)?;
        match &node.value {
            NodeValue::Seq(items) => Some(items),
            other => {
                d.error(
                    node.pos,
                    &self.path_of(key),
                    format!("expected a list, found {}", other.kind()),
                    Some(format!(
                        "write `{key}:` followed by `- item` lines, or `[a, b]`"
                    )),
                );
                None
            }
        }
    }
}

/// A scalar node as text; `${VAR}` references are expanded from the
/// environment.
pub(crate) fn scalar_text(d: &mut Diagnostics, node: &Node, path: &str) -> Option<Located<String>> {
    let raw = match &node.value {
        NodeValue::Str(s) => s.clone(),
        NodeValue::Int(n) => n.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Bool(b) => b.to_string(),
        other => {
            d.error(
                node.pos,
                path,
                format!("expected a single value, found {}", other.kind()),
                None,
            );
            return None;
        }
    };
    match interpolate(&raw, |name| std::env::var(name).ok()) {
        Ok(value) => Some(Located {
            value,
            pos: node.pos,
        }),
        Err(var) => {
            d.error(
                node.pos,
                path,
                format!("environment variable `{var}` is not set"),
                Some(format!("set {var}, or give a default: `${{{var}:-value}}`")),
            );
            None
        }
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}
