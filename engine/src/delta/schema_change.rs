//! What to do when a layer now writes other columns than its table has.
//!
//! Warehouses change while they run: a topic's records gain a field, a layer
//! gains a column. Moving the table aside to rebuild it would lose the ODS
//! history older than Kafka's retention, so a change Delta can take in place
//! is merged into the table's schema on start (a new nullable column: old
//! rows read as null). A widening Delta allows (int -> bigint, float ->
//! double, a decimal with more digits) is applied by rewriting the table in
//! the wider type (`crate::delta::widen`): Delta's `typeWidening` feature
//! would do it in place, but neither delta-rs 1.1 nor the Python `deltalake`
//! can read or write a table with that feature. What would change the
//! meaning of rows already written (a narrowing or other type change, a new
//! NOT NULL column, a rename) is refused with what to do instead.
//!
//! Types are compared as Delta types (the kernel's), the form both the table
//! and the layer's Arrow schema convert to, so an Arrow spelling Delta does
//! not keep (string views, timestamp units) is no change.

use deltalake::kernel::{DataType, PrimitiveType, StructField, StructType};

/// How a table's schema must change for a layer's output.
#[derive(Debug, PartialEq)]
pub enum SchemaChange {
    /// The table has every column the layer writes, with its type.
    Unchanged,
    /// New nullable columns to add to the table.
    AddColumns(Vec<StructField>),
    /// Columns the layer now writes in a wider type (and maybe new
    /// nullable columns): the table is rewritten in `schema`.
    Widen {
        /// The widened columns: name, the table's type, the new one.
        columns: Vec<(String, DataType, DataType)>,
        /// The table's schema after the rewrite: its columns in their
        /// order, the widened ones in the new type, then the new columns.
        schema: StructType,
    },
}

/// Compares the table's schema with what the layer writes; an `Err` says
/// why the change cannot be applied in place, and what to do.
pub fn schema_change(table: &StructType, layer: &StructType) -> Result<SchemaChange, String> {
    let mut added = Vec::new();
    let mut widened = Vec::new();
    let mut problems = Vec::new();
    for field in layer.fields() {
        match table.field(field.name()) {
            Some(existing)
                if existing.data_type() != field.data_type()
                    && widens(existing.data_type(), field.data_type()) =>
            {
                widened.push((
                    field.name().clone(),
                    existing.data_type().clone(),
                    field.data_type().clone(),
                ))
            }
            Some(existing) if existing.data_type() != field.data_type() => problems.push(format!(
                "column `{}` is {} in the table but the layer now writes {} (only widenings are applied: a wider integer, float to double, a decimal with more digits; restore the type, e.g. `CAST(x AS {}) AS x`, or write it as a new column)",
                field.name(),
                existing.data_type(),
                field.data_type(),
                sql_type(existing.data_type())
            )),
            Some(_) => {}
            None if !field.is_nullable() => problems.push(format!(
                "new column `{}` is NOT NULL, but the rows already written have no value for it (make it nullable)",
                field.name()
            )),
            None => added.push(field.clone()),
        }
    }
    let gone: Vec<&str> = table
        .fields()
        .filter(|f| layer.field(f.name()).is_none())
        .map(|f| f.name().as_str())
        .collect();
    if !added.is_empty() && !gone.is_empty() {
        problems.push(format!(
            "the table's column(s) {} are no longer written while {} are new: renames and drops are not applied in place (keep the old name, e.g. `new AS old`, or backfill the layer into a new table)",
            gone.join(", "),
            added
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if !widened.is_empty() {
        let wider = |f: &StructField| {
            let to = widened.iter().find(|(name, _, _)| name == f.name());
            match to {
                Some((_, _, to)) => StructField::new(f.name(), to.clone(), f.is_nullable())
                    .with_metadata(f.metadata().clone()),
                None => f.clone(),
            }
        };
        let fields: Vec<StructField> = table.fields().map(wider).chain(added).collect();
        let schema = StructType::try_new(fields).map_err(|e| e.to_string())?;
        return Ok(SchemaChange::Widen {
            columns: widened,
            schema,
        });
    }
    Ok(if added.is_empty() {
        SchemaChange::Unchanged
    } else {
        SchemaChange::AddColumns(added)
    })
}

/// Whether `from` -> `to` is a widening Delta's `typeWidening` feature
/// allows (byte/short/int -> a wider integer, float -> double, a decimal
/// with more digits on both sides).
fn widens(from: &DataType, to: &DataType) -> bool {
    let ints = [
        DataType::BYTE,
        DataType::SHORT,
        DataType::INTEGER,
        DataType::LONG,
    ];
    let rank = |t: &DataType| ints.iter().position(|i| i == t);
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a < b;
    }
    match (from, to) {
        (f, t) if *f == DataType::FLOAT && *t == DataType::DOUBLE => true,
        (
            DataType::Primitive(PrimitiveType::Decimal(a)),
            DataType::Primitive(PrimitiveType::Decimal(b)),
        ) => {
            b.precision() >= a.precision()
                && b.scale() >= a.scale()
                && b.precision() - b.scale() >= a.precision() - a.scale()
                && a != b
        }
        _ => false,
    }
}

/// The type as the layer's SQL writes it.
fn sql_type(t: &DataType) -> String {
    match t {
        t if *t == DataType::BYTE => "TINYINT".into(),
        t if *t == DataType::SHORT => "SMALLINT".into(),
        t if *t == DataType::INTEGER => "INT".into(),
        t if *t == DataType::LONG => "BIGINT".into(),
        t if *t == DataType::FLOAT => "FLOAT".into(),
        DataType::Primitive(PrimitiveType::Decimal(d)) => {
            format!("DECIMAL({}, {})", d.precision(), d.scale())
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::DataType;

    use super::*;

    fn schema(fields: &[(&str, DataType, bool)]) -> StructType {
        StructType::try_new(
            fields
                .iter()
                .map(|(n, t, nullable)| StructField::new(*n, t.clone(), *nullable)),
        )
        .unwrap()
    }

    #[test]
    fn a_new_nullable_column_is_added() {
        let table = schema(&[("id", DataType::STRING, false)]);
        let layer = schema(&[
            ("id", DataType::STRING, false),
            ("agent", DataType::STRING, true),
        ]);
        assert_eq!(
            schema_change(&table, &layer),
            Ok(SchemaChange::AddColumns(vec![StructField::new(
                "agent",
                DataType::STRING,
                true
            )]))
        );
        assert_eq!(schema_change(&layer, &layer), Ok(SchemaChange::Unchanged));
    }

    #[test]
    fn widenings_delta_allows_rewrite_the_table_in_the_wider_types() {
        let table = schema(&[
            ("id", DataType::STRING, false),
            ("n", DataType::INTEGER, true),
            ("x", DataType::FLOAT, true),
        ]);
        let wider = schema(&[
            ("x", DataType::DOUBLE, true),
            ("id", DataType::STRING, false),
            ("n", DataType::LONG, true),
            ("agent", DataType::STRING, true),
        ]);
        let Ok(SchemaChange::Widen {
            columns,
            schema: after,
        }) = schema_change(&table, &wider)
        else {
            panic!("{:?}", schema_change(&table, &wider));
        };
        assert_eq!(
            columns,
            vec![
                ("x".to_string(), DataType::FLOAT, DataType::DOUBLE),
                ("n".to_string(), DataType::INTEGER, DataType::LONG),
            ]
        );
        // The table's column order, then the new column.
        assert_eq!(
            after,
            schema(&[
                ("id", DataType::STRING, false),
                ("n", DataType::LONG, true),
                ("x", DataType::DOUBLE, true),
                ("agent", DataType::STRING, true),
            ])
        );
        let narrower = schema(&[
            ("id", DataType::STRING, false),
            ("n", DataType::SHORT, true),
        ]);
        let e = schema_change(&table, &narrower).unwrap_err();
        assert!(
            e.contains("only widenings") && e.contains("CAST(x AS INT)"),
            "{e}"
        );
        assert!(widens(
            &DataType::decimal(10, 2).unwrap(),
            &DataType::decimal(12, 2).unwrap()
        ));
        assert!(!widens(
            &DataType::decimal(10, 2).unwrap(),
            &DataType::decimal(10, 3).unwrap()
        ));
        assert!(!widens(&DataType::LONG, &DataType::INTEGER));
    }

    #[test]
    fn type_changes_not_null_columns_and_renames_are_refused() {
        let table = schema(&[
            ("id", DataType::STRING, false),
            ("n", DataType::INTEGER, true),
        ]);
        let retyped = schema(&[
            ("id", DataType::STRING, false),
            ("n", DataType::STRING, true),
        ]);
        let e = schema_change(&table, &retyped).unwrap_err();
        assert!(
            e.contains("column `n` is integer") && e.contains("only widenings are applied"),
            "{e}"
        );
        let not_null = schema(&[
            ("id", DataType::STRING, false),
            ("n", DataType::INTEGER, true),
            ("m", DataType::LONG, false),
        ]);
        let e = schema_change(&table, &not_null).unwrap_err();
        assert!(e.contains("new column `m` is NOT NULL"), "{e}");
        let renamed = schema(&[
            ("id", DataType::STRING, false),
            ("count", DataType::INTEGER, true),
        ]);
        let e = schema_change(&table, &renamed).unwrap_err();
        assert!(
            e.contains("n are no longer written while count are new"),
            "{e}"
        );
    }
}
