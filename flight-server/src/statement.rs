//! Statement handles: what a Flight SQL ticket or prepared-statement handle
//! carries between a client's calls.
//!
//! Handles are self-contained (the SQL, and the bound parameters once a
//! client binds them), so any server process can execute any ticket: Flight
//! SQL servers stay stateless readers that scale behind a load balancer.
//! Clients that ignore the updated handle returned by a parameter bind (some
//! older JDBC drivers) are served from a small per-process map keyed by the
//! handle's id.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use serde::{Deserialize, Serialize};

/// A statement as handed to clients in tickets and prepared-statement handles.
///
/// ```
/// use strata_flight_server::StatementHandle;
/// let h = StatementHandle::new("SELECT 1");
/// let back = StatementHandle::decode(&h.encode()).unwrap();
/// assert_eq!(back.sql, "SELECT 1");
/// assert!(StatementHandle::decode(b"garbage").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementHandle {
    /// Identifies a prepared statement across binds.
    pub id: String,
    /// The SQL, with `?` placeholders already numbered (`$1`, `$2`, ...).
    pub sql: String,
    /// Bound parameters: one row, as base64 Arrow IPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
}

/// A handle that this server did not produce, or that was damaged.
#[derive(Debug, thiserror::Error)]
#[error("not a statement handle of this server: {0}")]
pub struct BadHandle(String);

impl StatementHandle {
    /// A handle for `sql` with no parameters bound.
    pub fn new(sql: impl Into<String>) -> Self {
        StatementHandle {
            id: format!("{:032x}", rand::random::<u128>()),
            sql: sql.into(),
            params: None,
        }
    }

    /// The handle's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses handle bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, BadHandle> {
        serde_json::from_slice(bytes).map_err(|e| BadHandle(e.to_string()))
    }

    /// The same statement with `batch` (one row) bound as its parameters.
    pub fn with_params(&self, batch: &RecordBatch) -> Result<Self, arrow::error::ArrowError> {
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        Ok(StatementHandle {
            id: self.id.clone(),
            sql: self.sql.clone(),
            params: Some(STANDARD.encode(bytes)),
        })
    }

    /// The bound parameters, if any.
    pub fn params(&self) -> Result<Option<RecordBatch>, BadHandle> {
        let Some(text) = &self.params else {
            return Ok(None);
        };
        let bytes = STANDARD
            .decode(text)
            .map_err(|e| BadHandle(format!("parameters: {e}")))?;
        let mut reader = StreamReader::try_new(Cursor::new(bytes), None)
            .map_err(|e| BadHandle(format!("parameters: {e}")))?;
        reader
            .next()
            .transpose()
            .map_err(|e| BadHandle(format!("parameters: {e}")))
    }
}

/// Numbers `?` placeholders as `$1`, `$2`, ... (DataFusion's style), leaving
/// `?` inside string literals and comments alone. ODBC, JDBC and Python's
/// DB-API (ADBC) write `?`.
///
/// ```
/// use strata_flight_server::number_placeholders;
/// assert_eq!(
///     number_placeholders("SELECT '?' AS q FROM t WHERE a = ? AND b > ?").unwrap(),
///     "SELECT '?' AS q FROM t WHERE a = $1 AND b > $2"
/// );
/// ```
pub fn number_placeholders(sql: &str) -> Result<String, String> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|e| e.to_string())?;
    let mut next = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                next += 1;
                out.push_str(&format!("${next}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn params_round_trip_through_the_handle() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Utf8, true),
            Field::new("$2", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["beijing"])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap();
        let handle = StatementHandle::new("SELECT $1, $2")
            .with_params(&batch)
            .unwrap();
        let back = StatementHandle::decode(&handle.encode()).unwrap();
        assert_eq!(back.params().unwrap().unwrap(), batch);
        assert_eq!(back.id, handle.id);
    }

    #[test]
    fn placeholders_in_comments_and_strings_stay() {
        let sql = "SELECT \"?\" , x -- what?\nFROM t WHERE y = ?";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT \"?\" , x -- what?\nFROM t WHERE y = $1"
        );
    }
}
