//! Redis keys as a dimension: one pipelined round trip per batch.
//!
//! A row is a hash (`HGETALL`, one field per column) or a JSON object in a
//! string (`MGET`); either way its values go through text into the
//! dimension's Arrow types. The key column, when a row does not store it,
//! is the key looked up.

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::lookup::dimension::SourceError;
use crate::lookup::spec::RedisFormat;
use crate::lookup::text_rows::text_rows_to_batch;

pub(crate) struct RedisSource {
    url: String,
    key_prefix: String,
    format: RedisFormat,
    schema: SchemaRef,
    key: String,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisSource {
    pub(crate) fn new(
        url: &str,
        key_prefix: &str,
        format: RedisFormat,
        schema: SchemaRef,
        key: &str,
    ) -> Self {
        RedisSource {
            url: url.to_string(),
            key_prefix: key_prefix.to_string(),
            format,
            schema,
            key: key.to_string(),
            connection: Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, SourceError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // The URL may hold a password: it is not repeated in errors.
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| SourceError::permanent(format!("the Redis URL is not valid: {e}")))?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| SourceError::transient(format!("connecting to Redis: {e}")))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    pub(crate) async fn fetch(&self, keys: &[String]) -> Result<RecordBatch, SourceError> {
        let mut connection = self.connection().await?;
        let redis_keys: Vec<String> = keys
            .iter()
            .map(|k| format!("{}{k}", self.key_prefix))
            .collect();
        let found: Vec<Option<HashMap<String, String>>> = match self.format {
            RedisFormat::Hash => {
                let mut pipe = redis::pipe();
                for k in &redis_keys {
                    pipe.cmd("HGETALL").arg(k);
                }
                let maps: Vec<HashMap<String, String>> =
                    match pipe.query_async(&mut connection).await {
                        Ok(maps) => maps,
                        Err(e) => return Err(self.failed(e).await),
                    };
                maps.into_iter()
                    .map(|m| (!m.is_empty()).then_some(m))
                    .collect()
            }
            RedisFormat::Json => {
                let values: Vec<Option<String>> = match redis::cmd("MGET")
                    .arg(&redis_keys)
                    .query_async(&mut connection)
                    .await
                {
                    Ok(v) => v,
                    Err(e) => return Err(self.failed(e).await),
                };
                values
                    .into_iter()
                    .zip(&redis_keys)
                    .map(|(v, k)| v.map(|text| json_fields(k, &text)).transpose())
                    .collect::<Result<_, _>>()
                    .map_err(SourceError::permanent)?
            }
        };
        let mut rows = Vec::new();
        for (key, fields) in keys.iter().zip(found) {
            let Some(mut fields) = fields else {
                continue;
            };
            fields
                .entry(self.key.clone())
                .or_insert_with(|| key.clone());
            rows.push(
                self.schema
                    .fields()
                    .iter()
                    .map(|f| fields.remove(f.name()))
                    .collect(),
            );
        }
        text_rows_to_batch(&self.schema, &rows).map_err(SourceError::permanent)
    }

    /// Forgets the connection (the next lookup connects again) and says why.
    async fn failed(&self, e: redis::RedisError) -> SourceError {
        *self.connection.lock().await = None;
        SourceError::transient(format!("querying Redis: {e}"))
    }
}

/// A JSON object's fields as text (strings unquoted, other values as JSON).
fn json_fields(key: &str, text: &str) -> Result<HashMap<String, String>, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("Redis key `{key}` does not hold a JSON object: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err(format!(
            "Redis key `{key}` holds JSON that is not an object"
        ));
    };
    Ok(map
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect())
}
