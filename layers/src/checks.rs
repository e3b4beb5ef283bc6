//! Checks across sections: names that must be unique, references that must
//! resolve, and layers that must not feed each other in a circle.

use std::collections::HashMap;

use strata_engine::ods::{DEAD_LETTER_SUFFIX, reserved_column};

use crate::diagnostic::Diagnostics;
use crate::model::{DeltaDimension, DimensionSourceModel, Input, LayerBody};
use crate::node_reader::Located;
use crate::read_model::ReadWarehouse;
use strata_schemas::closest;

pub(crate) fn check_references(d: &mut Diagnostics, read: &ReadWarehouse) {
    let w = &read.warehouse;
    check_unique(d, &read.schema_names, "schemas", "schema");
    check_unique(d, &read.all_layer_names, "layers", "layer");
    for name in &read.all_layer_names {
        if name.value.ends_with(DEAD_LETTER_SUFFIX) {
            d.error(
                name.pos,
                &format!("layers.{}.name", name.value),
                format!("layer names may not end in `{DEAD_LETTER_SUFFIX}`"),
                Some(format!(
                    "that suffix names each layer's dead-letter table; rename the layer, e.g. `{}`",
                    name.value.trim_end_matches(DEAD_LETTER_SUFFIX)
                )),
            );
        }
    }
    let schema_names: Vec<&str> = w.schemas.iter().map(|s| s.name.as_str()).collect();
    for (layer_index, schema_ref) in &read.source_schemas {
        let layer = &w.layers[*layer_index];
        let path = format!("layers.{}.source.schema", layer.name);
        match w.schema(&schema_ref.value) {
            None => unknown_name(d, schema_ref, &path, "schema", &schema_names),
            Some(schema) => {
                if schema.event_time.is_none() {
                    d.error(
                        schema_ref.pos,
                        &path,
                        format!("schema `{}` has no `event_time`", schema.name),
                        Some(format!(
                            "ods tables are partitioned by event date: add `event_time: <a timestamp field>` to schema `{}`",
                            schema.name
                        )),
                    );
                }
                for field in &schema.fields {
                    if reserved_column(&field.name) {
                        d.error(
                            schema_ref.pos,
                            &path,
                            format!(
                                "field `{}` of schema `{}` clashes with a column Strata adds to ods tables",
                                field.name, schema.name
                            ),
                            Some("rename the field: `event_date` and names starting with `_kafka_` or `_strata_` are reserved".into()),
                        );
                    }
                }
            }
        }
    }
    let layer_names: Vec<&str> = w.layers.iter().map(|l| l.name.as_str()).collect();
    check_dimensions(d, read, &schema_names, &layer_names);
    for layer in &w.layers {
        let LayerBody::Sql(sql) = &layer.body else {
            continue;
        };
        let path = format!("layers.{}", layer.name);
        if let Some(filter) = &layer.filter
            && sql.inputs.len() != 1
        {
            d.error(
                filter.pos,
                &format!("{path}.filter"),
                "a filter applies to a layer with one input",
                Some("filter each input in the layer that produces it, or put the condition in the SQL's WHERE".into()),
            );
        }
        let topics: Vec<&Located<String>> = sql
            .inputs
            .iter()
            .filter_map(|i| match i {
                Input::Topic { name, .. } => Some(name),
                Input::Layer(_) => None,
            })
            .collect();
        if topics.len() > 1 {
            d.error(
                topics[1].pos,
                &format!("{path}.inputs"),
                "a layer reads at most one topic directly",
                Some("land the other topics in ods layers and read those layers".into()),
            );
        }
        let names: Vec<&Located<String>> = sql
            .inputs
            .iter()
            .map(|i| match i {
                Input::Topic { name, .. } | Input::Layer(name) => name,
            })
            .collect();
        check_unique(
            d,
            &names.into_iter().cloned().collect::<Vec<_>>(),
            &format!("{path}.inputs"),
            "input",
        );
        for input in &sql.inputs {
            match input {
                Input::Layer(name) if w.layer(&name.value).is_none() => unknown_name(
                    d,
                    name,
                    &format!("layers.{}.inputs", layer.name),
                    "layer",
                    &layer_names,
                ),
                Input::Topic { schema, .. } if w.schema(&schema.value).is_none() => unknown_name(
                    d,
                    schema,
                    &format!("layers.{}.inputs", layer.name),
                    "schema",
                    &schema_names,
                ),
                _ => {}
            }
        }
    }
    check_cycles(d, read);
}

fn check_unique(d: &mut Diagnostics, names: &[Located<String>], section: &str, what: &str) {
    let mut first: HashMap<&str, &Located<String>> = HashMap::new();
    for name in names {
        if let Some(prev) = first.get(name.value.as_str()) {
            d.error(
                name.pos,
                &format!("{section}.{}", name.value),
                format!("{what} `{}` is defined twice", name.value),
                Some(format!(
                    "the first is on line {}; rename one of them",
                    prev.pos.line
                )),
            );
        } else {
            first.insert(&name.value, name);
        }
    }
}

fn unknown_name(
    d: &mut Diagnostics,
    name: &Located<String>,
    path: &str,
    what: &str,
    known: &[&str],
) {
    let help = match closest(&name.value, known.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None if known.is_empty() => format!("no {what} is defined; define one first"),
        None => format!("known {what}s: {}", known.join(", ")),
    };
    d.error(
        name.pos,
        path,
        format!("no {what} named `{}`", name.value),
        Some(help),
    );
}

/// Depth-first search over layer -> input layer edges; a back edge is a
/// cycle, reported once at the layer that closes it.
fn check_cycles(d: &mut Diagnostics, read: &ReadWarehouse) {
    let w = &read.warehouse;
    let index: HashMap<&str, usize> = w
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = w
        .layers
        .iter()
        .map(|l| match &l.body {
            LayerBody::Sql(sql) => sql
                .inputs
                .iter()
                .filter_map(|i| match i {
                    Input::Layer(n) => index.get(n.value.as_str()).copied(),
                    Input::Topic { .. } => None,
                })
                .collect(),
            LayerBody::Source(_) => Vec::new(),
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; w.layers.len()];
    for start in 0..w.layers.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // (node, next edge to follow); `stack` is the current path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Open;
        while let Some((node, next)) = stack.last().copied() {
            if let Some(&to) = edges[node].get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match marks[to] {
                    Mark::New => {
                        marks[to] = Mark::Open;
                        stack.push((to, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(n, _)| w.layers[*n].name.as_str())
                            .collect();
                        cycle.push(&w.layers[to].name);
                        let name = &read.layer_names[node];
                        d.error(
                            name.pos,
                            &format!("layers.{}.inputs", name.value),
                            format!("layers read each other in a cycle: {}", cycle.join(" <- ")),
                            Some(
                                "a layer may only read layers above it; remove one of these inputs"
                                    .into(),
                            ),
                        );
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
}

/// Each dimension's schema, key and Delta layer exist; its name is free.
fn check_dimensions(
    d: &mut Diagnostics,
    read: &ReadWarehouse,
    schema_names: &[&str],
    layer_names: &[&str],
) {
    let w = &read.warehouse;
    let names: Vec<Located<String>> = w.dimensions.iter().map(|x| x.name.clone()).collect();
    check_unique(d, &names, "dimensions", "dimension");
    for dim in &w.dimensions {
        let path = format!("dimensions.{}", dim.name.value);
        if layer_names.contains(&dim.name.value.as_str()) {
            d.error(
                dim.name.pos,
                &format!("{path}.name"),
                format!("`{}` is also a layer's name", dim.name.value),
                Some("SQL names both the same way: rename the dimension, e.g. `dim_...`".into()),
            );
        }
        match w.schema(&dim.schema.value) {
            None => unknown_name(
                d,
                &dim.schema,
                &format!("{path}.schema"),
                "schema",
                schema_names,
            ),
            Some(schema) => {
                let fields: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
                if !fields.contains(&dim.key.value.as_str()) {
                    unknown_name(d, &dim.key, &format!("{path}.key"), "field", &fields);
                }
            }
        }
        if let DimensionSourceModel::Delta {
            table: DeltaDimension::Layer(layer),
            ..
        } = &dim.source
            && !layer_names.contains(&layer.value.as_str())
        {
            unknown_name(
                d,
                layer,
                &format!("{path}.delta.layer"),
                "layer",
                layer_names,
            );
        }
    }
}
