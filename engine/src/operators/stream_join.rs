//! The rows a join of two streams keeps: each side's rows until the
//! watermark says they can no longer match (see
//! `sql::stream_join_plan`), written into checkpoints.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, LargeBinaryArray, RecordBatch, StringArray};
use arrow::compute::{concat_batches, filter_record_batch, not};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::error::{DataFusionError, Result};

use crate::event_time::before;
use crate::predicate::null_is_false;

/// Left or right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The join's left input.
    Left,
    /// Its right input.
    Right,
}

/// Both sides' kept rows.
pub struct JoinBuffers {
    schemas: [SchemaRef; 2],
    rows: [Vec<RecordBatch>; 2],
}

fn at(side: Side) -> usize {
    match side {
        Side::Left => 0,
        Side::Right => 1,
    }
}

impl JoinBuffers {
    /// Empty buffers for sides of these schemas.
    pub fn new(left: SchemaRef, right: SchemaRef) -> Self {
        JoinBuffers {
            schemas: [left, right],
            rows: [Vec::new(), Vec::new()],
        }
    }

    /// The rows kept on `side`.
    pub fn rows(&self, side: Side) -> &[RecordBatch] {
        &self.rows[at(side)]
    }

    /// Keeps `rows` on `side`.
    pub fn push(&mut self, side: Side, rows: Vec<RecordBatch>) {
        self.rows[at(side)].extend(rows.into_iter().filter(|b| b.num_rows() > 0));
    }

    /// Rows kept on `side`, in all.
    pub fn len(&self, side: Side) -> usize {
        self.rows[at(side)].iter().map(|b| b.num_rows()).sum()
    }

    /// Removes and returns the rows of `side` whose `column` (a timestamp)
    /// is before `limit`.
    pub fn take_before(
        &mut self,
        side: Side,
        column: &str,
        limit: i64,
    ) -> Result<Option<RecordBatch>> {
        let schema = self.schemas[at(side)].clone();
        let rows = std::mem::take(&mut self.rows[at(side)]);
        if rows.is_empty() {
            return Ok(None);
        }
        let all = concat_batches(&schema, &rows)?;
        let index = schema.index_of(column)?;
        let times = all
            .column(index)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("join column `{column}` is not a timestamp"))
            })?;
        let mask = null_is_false(&before(times, limit)?);
        let taken = filter_record_batch(&all, &mask)?;
        let kept = filter_record_batch(&all, &not(&mask)?)?;
        if kept.num_rows() > 0 {
            self.rows[at(side)].push(kept);
        }
        Ok((taken.num_rows() > 0).then_some(taken))
    }

    /// Both sides as one batch (`side`, Arrow IPC of its rows), for a
    /// checkpoint; `None` when nothing is kept.
    pub fn snapshot(&self) -> Result<Option<RecordBatch>> {
        if self.rows.iter().all(|r| r.is_empty()) {
            return Ok(None);
        }
        let mut sides = Vec::new();
        let mut blobs = Vec::new();
        for (name, i) in [("left", 0), ("right", 1)] {
            let mut bytes = Vec::new();
            {
                let mut w = StreamWriter::try_new(&mut bytes, &self.schemas[i])?;
                for b in &self.rows[i] {
                    w.write(b)?;
                }
                w.finish()?;
            }
            sides.push(name);
            blobs.push(bytes);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("side", DataType::Utf8, false),
            Field::new("rows", DataType::LargeBinary, false),
        ]));
        Ok(Some(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(sides)),
                Arc::new(LargeBinaryArray::from_iter_values(blobs.iter())),
            ],
        )?))
    }

    /// Loads what [`snapshot`](Self::snapshot) wrote.
    pub fn restore(&mut self, state: &RecordBatch) -> Result<()> {
        let bad = || DataFusionError::Internal("join state is not (side, rows)".into());
        let sides = state
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(bad)?;
        let blobs = state
            .column(1)
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .ok_or_else(bad)?;
        for row in 0..state.num_rows() {
            let i = match sides.value(row) {
                "left" => 0,
                "right" => 1,
                _ => return Err(bad()),
            };
            let reader = StreamReader::try_new(Cursor::new(blobs.value(row).to_vec()), None)?;
            let mut rows = Vec::new();
            for b in reader {
                let b = b?;
                // The schema in the file is the one written; the planned
                // one must still match it.
                if b.schema().fields() != self.schemas[i].fields() {
                    return Err(DataFusionError::Plan(
                        "the layer's join changed since its checkpoint; backfill the layer, or restore the old query".into(),
                    ));
                }
                rows.push(RecordBatch::try_new(
                    self.schemas[i].clone(),
                    b.columns().to_vec(),
                )?);
            }
            self.rows[i] = rows;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, TimestampMicrosecondArray};

    use super::*;

    fn side_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]))
    }

    fn rows(ks: &[i64], ts: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            side_schema(),
            vec![
                Arc::new(Int64Array::from(ks.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_leave_once_the_limit_passes_them() {
        let mut b = JoinBuffers::new(side_schema(), side_schema());
        b.push(Side::Left, vec![rows(&[1, 2, 3], &[10, 20, 30])]);
        let taken = b.take_before(Side::Left, "ts", 25).unwrap().unwrap();
        assert_eq!(taken.num_rows(), 2);
        assert_eq!(b.len(Side::Left), 1);
        assert!(b.take_before(Side::Right, "ts", 25).unwrap().is_none());
    }

    #[test]
    fn state_round_trips() {
        let mut b = JoinBuffers::new(side_schema(), side_schema());
        b.push(Side::Left, vec![rows(&[1], &[10])]);
        b.push(Side::Right, vec![rows(&[2, 3], &[20, 30])]);
        b.push(Side::Right, vec![rows(&[4], &[40])]);
        let state = b.snapshot().unwrap().unwrap();
        let mut back = JoinBuffers::new(side_schema(), side_schema());
        back.restore(&state).unwrap();
        // Every kept row comes back on its own side, with its values.
        for side in [Side::Left, Side::Right] {
            let before = concat_batches(&side_schema(), b.rows(side)).unwrap();
            let after = concat_batches(&side_schema(), back.rows(side)).unwrap();
            assert_eq!(after, before, "{side:?}");
        }
        assert_eq!(
            concat_batches(&side_schema(), back.rows(Side::Right)).unwrap(),
            rows(&[2, 3, 4], &[20, 30, 40])
        );
        assert_eq!(back.rows(Side::Left), &[rows(&[1], &[10])]);
    }

    #[test]
    fn a_changed_join_refuses_the_old_state() {
        let mut b = JoinBuffers::new(side_schema(), side_schema());
        b.push(Side::Left, vec![rows(&[1], &[10])]);
        let state = b.snapshot().unwrap().unwrap();
        let other = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false)]));
        let mut back = JoinBuffers::new(other, side_schema());
        let err = back.restore(&state).unwrap_err().to_string();
        assert!(err.contains("the layer's join changed"), "{err}");
    }
}
