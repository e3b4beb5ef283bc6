//! A Delta table as a dimension, held whole in memory.
//!
//! Loading reads every row once and indexes it by key; a lookup is then a
//! hash probe. At most every `reload_interval` the table's log is brought up
//! to date (only the commits since the last check are read), and a new
//! version is loaded in full and swapped in: lookups see one version or the
//! next, never a mix.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, interleave_record_batch};
use arrow::datatypes::SchemaRef;
use datafusion::execution::context::SessionContext;
use deltalake::{DeltaTable, DeltaTableBuilder};
use tokio::sync::Mutex;
use tracing::info;

use crate::delta::storable::conform;
use crate::lookup::dimension::rows_by_key;
use crate::lookup::metrics::LookupMetrics;
use crate::storage::TableLocation;

struct Loaded {
    table: DeltaTable,
    version: Option<u64>,
    rows: Arc<RecordBatch>,
    index: HashMap<String, Vec<usize>>,
    checked: Instant,
}

pub(crate) struct DeltaSource {
    location: TableLocation,
    reload_interval: Duration,
    schema: SchemaRef,
    key: String,
    loaded: Mutex<Option<Loaded>>,
}

impl DeltaSource {
    pub(crate) fn new(
        location: TableLocation,
        reload_interval: Duration,
        schema: SchemaRef,
        key: &str,
    ) -> Self {
        DeltaSource {
            location,
            reload_interval,
            schema,
            key: key.to_string(),
            loaded: Mutex::new(None),
        }
    }

    /// The rows for `keys`, loading or reloading the table first if due.
    pub(crate) async fn fetch(
        &self,
        keys: &[String],
        metrics: &LookupMetrics,
    ) -> Result<RecordBatch, String> {
        let mut loaded = self.loaded.lock().await;
        let due = loaded
            .as_ref()
            .is_none_or(|l| l.checked.elapsed() >= self.reload_interval);
        if due {
            match self.refresh(&mut loaded).await {
                Ok(true) => metrics.reload(),
                Ok(false) => {}
                // Keep serving the version held, if there is one.
                Err(e) if loaded.is_some() => {
                    tracing::warn!(table = %self.location.url, error = %e, "could not load the Delta dimension's new version; serving the one held")
                }
                Err(e) => return Err(e),
            }
        }
        let Some(l) = loaded.as_ref() else {
            return Err("the Delta dimension is not loaded".into());
        };
        let picks: Vec<(usize, usize)> = keys
            .iter()
            .filter_map(|k| l.index.get(k))
            .flatten()
            .map(|&row| (0, row))
            .collect();
        interleave_record_batch(&[l.rows.as_ref()], &picks).map_err(|e| e.to_string())
    }

    /// Brings `loaded` to the table's newest version; whether it loaded
    /// one. On failure `loaded` keeps what it held, and is not checked
    /// again before the next interval.
    async fn refresh(&self, loaded: &mut Option<Loaded>) -> Result<bool, String> {
        let url = self.location.url.to_string();
        if let Some(l) = loaded.as_mut() {
            l.checked = Instant::now();
            l.table
                .update_state()
                .await
                .map_err(|e| format!("updating {url}: {e}"))?;
            if l.table.version() == l.version {
                return Ok(false);
            }
            let (rows, index) = self.read_all(&mut l.table).await?;
            l.version = l.table.version();
            l.rows = Arc::new(rows);
            l.index = index;
            info!(table = %url, version = ?l.version, rows = l.rows.num_rows(), "reloaded Delta dimension");
            return Ok(true);
        }
        let mut table = DeltaTableBuilder::from_url(self.location.url.clone())
            .and_then(|b| {
                b.with_storage_options(self.location.options.clone())
                    .build()
            })
            .map_err(|e| format!("opening {url}: {e}"))?;
        table
            .load()
            .await
            .map_err(|e| format!("loading {url}: {e}"))?;
        let (rows, index) = self.read_all(&mut table).await?;
        let version = table.version();
        info!(table = %url, version = ?version, rows = rows.num_rows(), "loaded Delta dimension");
        *loaded = Some(Loaded {
            table,
            version,
            rows: Arc::new(rows),
            index,
            checked: Instant::now(),
        });
        Ok(true)
    }

    async fn read_all(
        &self,
        table: &mut DeltaTable,
    ) -> Result<(RecordBatch, HashMap<String, Vec<usize>>), String> {
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| e.to_string())?;
        let provider = table
            .table_provider()
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let batches = ctx
            .read_table(Arc::new(provider))
            .and_then(|df| df.select_columns(&names))
            .map_err(|e| format!("the Delta dimension lacks a column of its schema: {e}"))?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut conformed = Vec::with_capacity(batches.len());
        for b in batches {
            conformed.push(conform(b, &self.schema).map_err(|e| e.to_string())?);
        }
        let rows = concat_batches(&self.schema, &conformed).map_err(|e| e.to_string())?;
        let index = rows_by_key(&rows, &self.key)?;
        Ok((rows, index))
    }
}
