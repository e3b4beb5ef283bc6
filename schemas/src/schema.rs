//! A record schema: named, typed fields and the field that carries event time.

use std::sync::Arc;

use arrow::datatypes::{Field as ArrowField, Schema as ArrowSchema, SchemaRef};

use crate::FieldType;

/// One field of a record schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name, both the JSON key and the column name.
    pub name: String,
    /// Its type.
    pub field_type: FieldType,
    /// Whether a record may omit it or set it to `null`.
    pub nullable: bool,
}

impl Field {
    /// A field of `field_type`, nullable.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        Field {
            name: name.into(),
            field_type,
            nullable: true,
        }
    }

    /// The same field, required (not nullable).
    pub fn required(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// A named record schema, as declared under `schemas:` in a warehouse file.
///
/// ```
/// use strata_schemas::{Field, FieldType, Schema};
///
/// let schema = Schema::new(
///     "deal",
///     vec![
///         Field::new("deal_id", FieldType::String).required(),
///         Field::new("event_time", FieldType::Timestamp).required(),
///     ],
/// )
/// .with_event_time("event_time");
/// let arrow = schema.to_arrow();
/// assert_eq!(arrow.fields().len(), 2);
/// assert!(!arrow.field(0).is_nullable());
/// assert_eq!(schema.event_time_index(), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The schema's name.
    pub name: String,
    /// Its fields, in column order.
    pub fields: Vec<Field>,
    /// The field that holds each record's event time, if the schema has one.
    pub event_time: Option<String>,
}

impl Schema {
    /// A schema without an event-time field.
    pub fn new(name: impl Into<String>, fields: Vec<Field>) -> Self {
        Schema {
            name: name.into(),
            fields,
            event_time: None,
        }
    }

    /// The same schema, with `field` as its event time.
    pub fn with_event_time(mut self, field: impl Into<String>) -> Self {
        self.event_time = Some(field.into());
        self
    }

    /// The Arrow schema records of this schema are decoded into.
    pub fn to_arrow(&self) -> SchemaRef {
        Arc::new(ArrowSchema::new(
            self.fields
                .iter()
                .map(|f| ArrowField::new(&f.name, f.field_type.to_arrow(), f.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// The position of a field by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The column position of the event-time field.
    pub fn event_time_index(&self) -> Option<usize> {
        self.event_time.as_deref().and_then(|n| self.index_of(n))
    }
}
