//! Reading `schemas:`: named record schemas with typed fields and an
//! event-time field.

use strata_schemas::{Field, FieldType, Schema};

use crate::diagnostic::Diagnostics;
use crate::names::{check_identifier, check_name};
use crate::node_reader::{Located, MapReader, scalar_text};
use crate::yaml_tree::{Node, NodeValue};

const SCHEMA_KEYS: &[&str] = &["fields", "event_time"];
const FIELD_KEYS: &[&str] = &["name", "type", "nullable"];

pub(crate) fn read_schemas(
    d: &mut Diagnostics,
    top: &MapReader<'_>,
) -> (Vec<Schema>, Vec<Located<String>>) {
    let mut schemas = Vec::new();
    let mut names = Vec::new();
    let Some(node) = top.node("schemas") else {
        return (schemas, names);
    };
    let NodeValue::Map(entries) = &node.value else {
        d.error(
            node.pos,
            "schemas",
            format!(
                "expected a mapping of schema names, found {}",
                node.value.kind()
            ),
            Some("write `schemas:` then `deal_event:` with `fields:` under it".into()),
        );
        return (schemas, names);
    };
    for (key, body) in entries {
        let Some(name) = scalar_text(d, key, "schemas") else {
            continue;
        };
        let path = format!("schemas.{}", name.value);
        check_name(d, &name, &path);
        if let Some(schema) = read_schema(d, &name.value, body, &path) {
            schemas.push(schema);
            names.push(name);
        }
    }
    (schemas, names)
}

fn read_schema(d: &mut Diagnostics, name: &str, node: &Node, path: &str) -> Option<Schema> {
    let section = MapReader::new(d, node, path, SCHEMA_KEYS)?;
    let mut fields: Vec<Field> = Vec::new();
    let mut field_names: Vec<Located<String>> = Vec::new();
    match section.seq(d, "fields") {
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let fpath = format!("{path}.fields[{i}]");
                let Some(f) = MapReader::new(d, item, &fpath, FIELD_KEYS) else {
                    continue;
                };
                let fname = f.required_string(d, "name", "give the field a name: `name: deal_id`");
                let ftype =
                    f.required_string(d, "type", "give the field a type, e.g. `type: string`");
                let nullable = f.bool(d, "nullable").unwrap_or(true);
                let (Some(fname), Some(ftype)) = (fname, ftype) else {
                    continue;
                };
                check_identifier(d, &fname, &format!("{fpath}.name"));
                if let Some(prev) = field_names.iter().find(|p| p.value == fname.value) {
                    d.error(
                        fname.pos,
                        &format!("{fpath}.name"),
                        format!("field `{}` is declared twice", fname.value),
                        Some(format!(
                            "the first is on line {}; rename or remove one",
                            prev.pos.line
                        )),
                    );
                    continue;
                }
                match ftype.value.parse::<FieldType>() {
                    Ok(t) => {
                        let mut field = Field::new(fname.value.clone(), t);
                        field.nullable = nullable;
                        fields.push(field);
                        field_names.push(fname);
                    }
                    Err(e) => {
                        let base = e
                            .given
                            .split('(')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase();
                        let hint = match strata_schemas::closest(&base, FieldType::accepted_names())
                        {
                            Some(near) if near != base => {
                                format!("did you mean `{near}`? ({})", e.hint)
                            }
                            _ => e.hint,
                        };
                        d.error(
                            ftype.pos,
                            &format!("{fpath}.type"),
                            format!("unknown type `{}`", e.given),
                            Some(hint),
                        )
                    }
                }
            }
            if items.is_empty() {
                d.error(
                    section.pos(),
                    &format!("{path}.fields"),
                    "a schema needs at least one field",
                    None,
                );
            }
        }
        None if section.node("fields").is_none() => section.missing(
            d,
            "fields",
            "list the fields: `fields:` then `- {name: deal_id, type: string}`",
        ),
        None => {}
    }
    let mut schema = Schema::new(name, fields);
    if let Some(et) = section.string(d, "event_time") {
        match schema.fields.iter_mut().find(|f| f.name == et.value) {
            Some(f) if f.field_type == FieldType::Timestamp => {
                // A record without its event time cannot be placed in time:
                // it goes to the dead-letter table rather than a null partition.
                f.nullable = false;
                schema = schema.with_event_time(et.value);
            }
            Some(f) => d.error(
                et.pos,
                &format!("{path}.event_time"),
                format!("event-time field `{}` has type {}, not timestamp", f.name, f.field_type),
                Some(format!("declare `{}` with `type: timestamp` (it accepts RFC 3339 text and epoch milliseconds)", f.name)),
            ),
            None => {
                let known: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
                d.error(
                    et.pos,
                    &format!("{path}.event_time"),
                    format!("`{}` is not a field of this schema", et.value),
                    Some(match strata_schemas::closest(&et.value, known.iter().copied()) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => format!("name one of its timestamp fields: {}", known.join(", ")),
                    }),
                );
            }
        }
    }
    Some(schema)
}
