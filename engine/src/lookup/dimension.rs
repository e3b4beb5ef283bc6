//! A dimension, ready for lookups: its source, its cache, its counters.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::{cast, interleave_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use tokio::sync::Mutex;

use crate::lookup::cache::{Cached, LookupCache};
use crate::lookup::delta_source::DeltaSource;
use crate::lookup::metrics::{LookupMetrics, LookupStats};
use crate::lookup::postgres_source::PostgresSource;
use crate::lookup::redis_source::RedisSource;
use crate::lookup::spec::{DimensionSource, DimensionSpec};

/// Why a lookup gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lookup in dimension `{dimension}` failed: {message}")]
pub struct LookupError {
    /// The dimension.
    pub dimension: String,
    /// What went wrong.
    pub message: String,
    /// Whether it ran out of time.
    pub timeout: bool,
    /// Whether asking again cannot help (a value that does not convert, a
    /// key column of an unsupported type): retrying would stall the layer
    /// for ever.
    pub permanent: bool,
    /// What the cache could answer: its rows, and the keys it could not.
    /// (`None`: nothing was answered; every key is unanswered.)
    pub partial: Option<(RecordBatch, Vec<String>)>,
}

/// A source's failure: transient (connection, query) or permanent (data
/// or types that will not change by asking again).
#[derive(Debug)]
pub(crate) struct SourceError {
    pub(crate) message: String,
    pub(crate) permanent: bool,
}

impl SourceError {
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            permanent: false,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            permanent: true,
        }
    }
}

/// A cached row: the batch a query returned, and the row's index in it.
/// A batch stays in memory while any of its rows is cached; since a query's
/// keys enter the cache together and leave it in write order, that is at
/// most `max_rows` rows plus the oldest batch's remainder.
type RowHandle = (Arc<RecordBatch>, usize);

enum Remote {
    Postgres(PostgresSource),
    Redis(RedisSource),
}

enum Backend {
    Delta(DeltaSource),
    Remote {
        source: Remote,
        cache: Option<Mutex<LookupCache<RowHandle>>>,
    },
}

/// A dimension of a warehouse. Cheap to create: nothing connects until the
/// first lookup, so planning (and `strata validate`) needs no database.
pub struct Dimension {
    spec: DimensionSpec,
    backend: Backend,
    metrics: LookupMetrics,
}

impl std::fmt::Debug for Dimension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dimension({})", self.spec.name)
    }
}

impl Dimension {
    /// The dimension `spec` describes.
    pub fn new(mut spec: DimensionSpec) -> Self {
        // A dimension is data from elsewhere: any column may be null, and a
        // failed lookup under the `nulls` policy is all nulls but the key.
        spec.schema = Arc::new(arrow::datatypes::Schema::new(
            spec.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let schema = spec.schema.clone();
        let backend = match &spec.source {
            DimensionSource::Delta {
                location,
                reload_interval,
            } => Backend::Delta(DeltaSource::new(
                location.clone(),
                *reload_interval,
                schema,
                &spec.key,
            )),
            DimensionSource::Postgres { url, table } => Backend::Remote {
                source: Remote::Postgres(PostgresSource::new(url, table, schema, &spec.key)),
                cache: spec.cache.map(|c| Mutex::new(LookupCache::new(c))),
            },
            DimensionSource::Redis {
                url,
                key_prefix,
                format,
            } => Backend::Remote {
                source: Remote::Redis(RedisSource::new(
                    url, key_prefix, *format, schema, &spec.key,
                )),
                cache: spec.cache.map(|c| Mutex::new(LookupCache::new(c))),
            },
        };
        Dimension {
            spec,
            backend,
            metrics: LookupMetrics::default(),
        }
    }

    /// The name the SQL joins it by.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its rows.
    pub fn schema(&self) -> SchemaRef {
        self.spec.schema.clone()
    }

    /// The column lookups are keyed on.
    pub fn key(&self) -> &str {
        &self.spec.key
    }

    /// Its counters now.
    pub fn stats(&self) -> LookupStats {
        self.metrics.stats(&self.spec.name)
    }

    /// The dimension's rows whose key is one of `keys` (distinct, as text),
    /// in one round trip to the source for the keys the cache lacks.
    pub async fn lookup(&self, keys: &[String]) -> Result<RecordBatch, LookupError> {
        let fail = |e: SourceError, timeout: bool| {
            self.metrics.failure(timeout);
            LookupError {
                dimension: self.spec.name.clone(),
                message: e.message,
                timeout,
                permanent: e.permanent,
                partial: None,
            }
        };
        let timeout = self.spec.timeout;
        let timed = |message: &str| format!("{message} took longer than {timeout:?}");
        match &self.backend {
            // No timeout: a lookup is a hash probe, and a (re)load that was
            // cut short would have to start over at the next lookup.
            Backend::Delta(source) => {
                let rows = source
                    .fetch(keys, &self.metrics)
                    .await
                    .map_err(|e| fail(SourceError::transient(e), false))?;
                self.metrics.keys(keys.len(), keys.len());
                Ok(rows)
            }
            Backend::Remote { source, cache } => {
                let now = Instant::now();
                let mut picks: Vec<RowHandle> = Vec::new();
                let mut misses: Vec<String> = Vec::new();
                match cache {
                    Some(cache) => {
                        let cache = cache.lock().await;
                        for k in keys {
                            match cache.get(k, now) {
                                Some(Cached::Rows(rows)) => picks.extend(rows.iter().cloned()),
                                Some(Cached::Missing) => {}
                                None => misses.push(k.clone()),
                            }
                        }
                    }
                    None => misses = keys.to_vec(),
                }
                self.metrics.keys(keys.len(), keys.len() - misses.len());
                if !misses.is_empty() {
                    let fetch = async {
                        match source {
                            Remote::Postgres(s) => s.fetch(&misses).await,
                            Remote::Redis(s) => s.fetch(&misses).await,
                        }
                    };
                    // The cache's answers stay good: a policy that goes on
                    // (nulls) uses them.
                    let answered = || {
                        (!picks.is_empty())
                            .then(|| assemble(&self.spec.schema, &picks).ok())
                            .flatten()
                            .map(|rows| (rows, misses.clone()))
                    };
                    let fetched = match tokio::time::timeout(timeout, fetch).await {
                        Ok(Ok(rows)) => rows,
                        Ok(Err(e)) => {
                            let mut error = fail(e, false);
                            error.partial = answered();
                            return Err(error);
                        }
                        Err(_) => {
                            let mut error = fail(SourceError::transient(timed("the query")), true);
                            error.partial = answered();
                            return Err(error);
                        }
                    };
                    self.metrics.query(fetched.num_rows());
                    let fetched = Arc::new(fetched);
                    let by_key = rows_by_key(&fetched, &self.spec.key)
                        .map_err(|e| fail(SourceError::permanent(e), false))?;
                    if let Some(cache) = cache {
                        let mut cache = cache.lock().await;
                        for k in &misses {
                            let rows = by_key
                                .get(k.as_str())
                                .map(|rows| rows.iter().map(|&r| (fetched.clone(), r)).collect())
                                .unwrap_or_default();
                            cache.put(k.clone(), rows, now);
                        }
                    }
                    picks.extend((0..fetched.num_rows()).map(|r| (fetched.clone(), r)));
                }
                assemble(&self.spec.schema, &picks)
                    .map_err(|e| fail(SourceError::permanent(e), false))
            }
        }
    }
}

/// Row numbers of `rows` by their key, as text.
pub(crate) fn rows_by_key(
    rows: &RecordBatch,
    key: &str,
) -> Result<std::collections::HashMap<String, Vec<usize>>, String> {
    let index = rows.schema().index_of(key).map_err(|e| e.to_string())?;
    let text = cast(rows.column(index), &DataType::Utf8).map_err(|e| e.to_string())?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("the key column does not cast to text")?;
    let mut by_key: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (row, k) in text.iter().enumerate() {
        if let Some(k) = k {
            by_key.entry(k.to_string()).or_default().push(row);
        }
    }
    Ok(by_key)
}

/// One batch of the picked rows, from whichever fetched batch holds each.
fn assemble(
    schema: &SchemaRef,
    picks: &[(Arc<RecordBatch>, usize)],
) -> Result<RecordBatch, String> {
    if picks.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let mut batches: Vec<&RecordBatch> = Vec::new();
    let mut numbers: std::collections::HashMap<*const RecordBatch, usize> = Default::default();
    let mut indices = Vec::with_capacity(picks.len());
    for (batch, row) in picks {
        let b = *numbers.entry(Arc::as_ptr(batch)).or_insert_with(|| {
            batches.push(batch.as_ref());
            batches.len() - 1
        });
        indices.push((b, *row));
    }
    interleave_record_batch(&batches, &indices).map_err(|e| e.to_string())
}
