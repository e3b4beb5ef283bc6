//! SESSION windows: per key, rows within `gap` of each other form a
//! session, which closes when the watermark passes its last row + gap.
//!
//! A session's bounds depend on rows that have not arrived yet, so rows wait
//! in a buffer, per key, until their session is closed; then the closed
//! sessions' rows (with `window_start` / `window_end` set to the session's
//! bounds) go through DataFusion's own aggregate. Memory is the rows of open
//! sessions, which the gap bounds.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};

/// Rows waiting for their sessions to close.
pub struct SessionBuffer {
    schema: SchemaRef,
    keys: Vec<usize>,
    start: usize,
    end: usize,
    gap: i64,
    rows: Vec<RecordBatch>,
    /// The earliest row time buffered: no session can close before it + gap.
    earliest: Option<i64>,
}

impl SessionBuffer {
    /// A buffer for rows of `schema`, sessions per `keys`, split by `gap`
    /// microseconds of inactivity.
    pub fn new(schema: SchemaRef, keys: &[String], gap: i64) -> Result<Self> {
        let index = |name: &str| {
            schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!("session column `{name}` is not in the rows"))
            })
        };
        Ok(SessionBuffer {
            keys: keys.iter().map(|k| index(k)).collect::<Result<_>>()?,
            start: index("window_start")?,
            end: index("window_end")?,
            schema,
            gap,
            rows: Vec::new(),
            earliest: None,
        })
    }

    /// Rows currently waiting.
    pub fn len(&self) -> usize {
        self.rows.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether no row is waiting.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn times<'a>(&self, batch: &'a RecordBatch) -> Result<&'a TimestampMicrosecondArray> {
        batch
            .column(self.start)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| {
                DataFusionError::Plan(
                    "a session's time column must be a microsecond timestamp".into(),
                )
            })
    }

    /// Adds rows (their `window_start` holds the row's time).
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = self.times(&batch)?;
        if let Some(min) = arrow::compute::min(times) {
            self.earliest = Some(self.earliest.map_or(min, |e| e.min(min)));
        }
        self.rows.push(batch);
        Ok(())
    }

    /// Takes the rows of every session that ends at or before `watermark`,
    /// with `window_start` / `window_end` set to their session's bounds.
    pub fn close_until(&mut self, watermark: i64) -> Result<Option<RecordBatch>> {
        match self.earliest {
            Some(e) if e.saturating_add(self.gap) <= watermark => {}
            _ => return Ok(None),
        }
        let all = concat_batches(&self.schema, &self.rows)?;
        self.rows.clear();
        self.earliest = None;
        let times = self.times(&all)?.clone();
        // Order by key, then time, and walk the sessions of each key.
        let mut sort: Vec<SortColumn> = self
            .keys
            .iter()
            .map(|&k| SortColumn {
                values: all.column(k).clone(),
                options: None,
            })
            .collect();
        sort.push(SortColumn {
            values: Arc::new(times.clone()) as ArrayRef,
            options: None,
        });
        let order = lexsort_to_indices(&sort, None)?;
        let converter = RowConverter::new(
            self.keys
                .iter()
                .map(|&k| SortField::new(all.column(k).data_type().clone()))
                .collect(),
        )?;
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|&k| all.column(k).clone()).collect();
        let key_rows = converter.convert_columns(&key_columns)?;

        let mut closed: Vec<u32> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut open: Vec<u32> = Vec::new();
        let order = order.values();
        let mut i = 0;
        while i < order.len() {
            // One session: same key, each row within `gap` of the previous.
            let first = order[i] as usize;
            let mut j = i + 1;
            let mut last_time = times.value(first);
            while j < order.len() {
                let row = order[j] as usize;
                if key_rows.row(row) != key_rows.row(first)
                    || times.value(row) - last_time >= self.gap
                {
                    break;
                }
                last_time = times.value(row);
                j += 1;
            }
            let (start, end) = (times.value(first), last_time + self.gap);
            if end <= watermark {
                closed.extend_from_slice(&order[i..j]);
                bounds.extend(std::iter::repeat_n((start, end), j - i));
            } else {
                open.extend_from_slice(&order[i..j]);
                self.earliest = Some(self.earliest.map_or(start, |e| e.min(start)));
            }
            i = j;
        }
        if !open.is_empty() {
            self.rows.push(take_rows(&all, &open)?);
        }
        if closed.is_empty() {
            return Ok(None);
        }
        let mut rows = take_rows(&all, &closed)?;
        let tz = times.timezone().map(Arc::<str>::from);
        let starts = TimestampMicrosecondArray::from_iter_values(bounds.iter().map(|b| b.0))
            .with_timezone_opt(tz.clone());
        let ends = TimestampMicrosecondArray::from_iter_values(bounds.iter().map(|b| b.1))
            .with_timezone_opt(tz);
        let mut columns = rows.columns().to_vec();
        columns[self.start] = Arc::new(starts);
        columns[self.end] = Arc::new(ends);
        rows = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Some(rows))
    }

    /// The waiting rows, for a checkpoint.
    pub fn snapshot(&self) -> Result<Option<RecordBatch>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(concat_batches(&self.schema, &self.rows)?))
    }

    /// Loads rows a [`snapshot`](Self::snapshot) returned.
    pub fn restore(&mut self, rows: RecordBatch) -> Result<()> {
        self.push(rows)
    }
}

fn take_rows(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    let indices = UInt32Array::from(rows.to_vec());
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}
