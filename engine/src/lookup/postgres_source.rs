//! A PostgreSQL table as a dimension: one `= ANY($1)` query per batch.
//!
//! Every column is selected as text (timestamps as microseconds since the
//! epoch) and converted to the dimension's Arrow types on this side, so
//! any PostgreSQL type with a text form maps to any Arrow type it can be
//! cast to. The key parameter is bound in the key column's own type
//! (which PostgreSQL infers when the statement is prepared), so the query
//! uses the table's index on the key.

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use tokio::sync::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use tracing::warn;

use crate::lookup::dimension::SourceError;
use crate::lookup::text_rows::text_rows_to_batch;

/// PostgreSQL errors that asking again cannot fix: syntax or undefined
/// objects (42), data exceptions (22), unsupported features (0A). The rest
/// (connection loss, admin shutdown, resources) are transient.
fn classify(context: &str, e: tokio_postgres::Error) -> SourceError {
    let permanent = e.code().is_some_and(|c| {
        ["42", "22", "0A"]
            .iter()
            .any(|class| c.code().starts_with(class))
    });
    let message = format!("{context}: {e}");
    if permanent {
        SourceError::permanent(message)
    } else {
        SourceError::transient(message)
    }
}

pub(crate) struct PostgresSource {
    url: String,
    sql: String,
    schema: SchemaRef,
    session: Mutex<Option<(Client, Statement)>>,
}

/// `"a"."b"`: each part of a (qualified) name quoted.
fn quote(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

impl PostgresSource {
    pub(crate) fn new(url: &str, table: &str, schema: SchemaRef, key: &str) -> Self {
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let c = quote(f.name());
                match f.data_type() {
                    DataType::Timestamp(_, _) => {
                        format!("(extract(epoch from {c}) * 1000000)::bigint::text")
                    }
                    _ => format!("{c}::text"),
                }
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ANY($1)",
            columns.join(", "),
            quote(table),
            quote(key)
        );
        PostgresSource {
            url: url.to_string(),
            sql,
            schema,
            session: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<(Client, Statement), SourceError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| classify("connecting to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "PostgreSQL dimension connection ended");
            }
        });
        let statement = client
            .prepare(&self.sql)
            .await
            .map_err(|e| classify(&format!("preparing `{}`", self.sql), e))?;
        Ok((client, statement))
    }

    pub(crate) async fn fetch(&self, keys: &[String]) -> Result<RecordBatch, SourceError> {
        let mut session = self.session.lock().await;
        if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            *session = Some(self.connect().await?);
        }
        let Some((client, statement)) = session.as_ref() else {
            return Err(SourceError::transient("no PostgreSQL connection"));
        };
        let param_type = statement
            .params()
            .first()
            .cloned()
            .unwrap_or(Type::TEXT_ARRAY);
        // A key that is not a value of the column's type matches no row.
        fn parsed<T: std::str::FromStr>(keys: &[String]) -> Vec<T> {
            keys.iter().filter_map(|k| k.parse().ok()).collect()
        }
        let param: Box<dyn ToSql + Sync + Send> = match param_type {
            Type::INT8_ARRAY => Box::new(parsed::<i64>(keys)),
            Type::INT4_ARRAY => Box::new(parsed::<i32>(keys)),
            Type::INT2_ARRAY => Box::new(parsed::<i16>(keys)),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY | Type::NAME_ARRAY => {
                Box::new(keys.to_vec())
            }
            other => {
                return Err(SourceError::permanent(format!(
                    "the key column is of PostgreSQL type {other}; key dimensions by a bigint, integer, smallint or text column"
                )));
            }
        };
        let rows = match client.query(statement, &[param.as_ref()]).await {
            Ok(rows) => rows,
            Err(e) => {
                // The next lookup connects again.
                *session = None;
                return Err(classify("querying PostgreSQL", e));
            }
        };
        drop(session);
        let mut text = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(self.schema.fields().len());
            for i in 0..self.schema.fields().len() {
                values.push(row.try_get::<_, Option<String>>(i).map_err(|e| {
                    SourceError::permanent(format!("reading PostgreSQL column {i}: {e}"))
                })?);
            }
            text.push(values);
        }
        text_rows_to_batch(&self.schema, &text).map_err(SourceError::permanent)
    }
}
