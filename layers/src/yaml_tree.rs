//! A YAML document as a tree of nodes that remember where they were written.
//!
//! `serde`'s derive stops at the first error and forgets positions, but
//! `strata validate` must report every problem in a warehouse file with its
//! line and column. So the file is first read into this position-carrying
//! tree (through serde-saphyr's `Spanned`), and the warehouse model is then
//! read from the tree by hand, collecting diagnostics as it goes.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column in the warehouse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: NodeValue,
    /// Where it was written.
    pub pos: Position,
}

/// The content of a YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Any other scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the order written; keys are nodes too, so that an unknown
    /// key can be pointed at.
    Map(Vec<(Node, Node)>),
}

impl NodeValue {
    /// What kind of value this is, for messages ("expected a list, found a string").
    pub fn kind(&self) -> &'static str {
        match self {
            NodeValue::Null => "nothing (null)",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error, with where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where, if the parser knew.
    pub pos: Option<Position>,
    /// The parser's message.
    pub message: String,
}

/// Parses YAML text into a [`Node`] tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let spanned: Spanned<NodeValue> = serde_saphyr::from_str(text).map_err(|e| SyntaxError {
        pos: e.location().map(|l| Position {
            line: l.line() as u32,
            column: l.column() as u32,
        }),
        message: first_line(&e.to_string()),
    })?;
    Ok(node_of(spanned))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_string()
}

fn node_of(spanned: Spanned<NodeValue>) -> Node {
    Node {
        value: spanned.value,
        pos: Position {
            line: spanned.referenced.line() as u32,
            column: spanned.referenced.column() as u32,
        },
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        d.deserialize_any(NodeVisitor)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => NodeValue::Int(v),
            Err(_) => NodeValue::Float(v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
            items.push(node_of(item));
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<NodeValue>>()? {
            let value = map.next_value::<Spanned<NodeValue>>()?;
            entries.push((node_of(key), node_of(value)));
        }
        Ok(NodeValue::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_positions() {
        let tree = parse("a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
        let NodeValue::Map(entries) = &tree.value else {
            panic!("{tree:?}")
        };
        assert_eq!(entries[0].0.pos, Position { line: 1, column: 1 });
        assert_eq!(entries[0].1.value, NodeValue::Int(1));
        assert_eq!(entries[1].0.pos, Position { line: 2, column: 1 });
        let NodeValue::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Position { line: 3, column: 5 });
        assert_eq!(items[1].pos.line, 4);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.is_some(), "{err:?}");
        assert!(!err.message.is_empty());
    }
}
