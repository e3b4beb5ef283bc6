//! Carrying a window aggregate's state over to a changed query: a new
//! version of a layer's SQL with the same window and group keys (checked
//! before the run, see `evolution::compare`) keeps the state of every
//! aggregate it still computes, matched by its state columns (named after
//! the aggregate's expression, e.g. `0_count(Int64(1))[count]`), and starts
//! new aggregates empty. Dropped aggregates' columns are left behind.

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, new_null_array};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;

use super::WindowAggregate;

/// A state column's name without its aggregate's position (`3_sum(x)[sum]`
/// -> `sum(x)[sum]`).
fn unnumbered(name: &str) -> &str {
    match name.split_once('_') {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => name,
    }
}

impl WindowAggregate {
    /// `old` (the state of an earlier version of the query) in this
    /// query's state layout: group keys as they were, each aggregate's
    /// state where `old` has it, empty state for new aggregates.
    pub(crate) fn carried(&self, old: &RecordBatch) -> Result<RecordBatch> {
        if old.schema().fields() == self.state_schema.fields() {
            return Ok(old.clone());
        }
        let keys = self.group_schema.fields().len();
        let old_schema = old.schema();
        for (i, key) in self.group_schema.fields().iter().enumerate() {
            let same = old_schema
                .fields()
                .get(i)
                .is_some_and(|f| f.name() == key.name() && f.data_type() == key.data_type());
            if !same {
                return Err(DataFusionError::Execution(format!(
                    "the checkpointed state is not grouped by `{}` as this query is: backfill the layer, or run with --reset-state",
                    key.name()
                )));
            }
        }
        let rows = old.num_rows();
        let mut columns: Vec<ArrayRef> = old.columns()[..keys].to_vec();
        let mut next = keys;
        for (a, width) in self.state_widths.iter().enumerate() {
            let wanted = &self.state_schema.fields()[next..next + width];
            next += width;
            let found: Option<Vec<ArrayRef>> = wanted
                .iter()
                .map(|f| {
                    old_schema.fields()[keys..]
                        .iter()
                        .position(|o| {
                            unnumbered(o.name()) == unnumbered(f.name())
                                && o.data_type() == f.data_type()
                        })
                        .map(|p| old.column(keys + p).clone())
                })
                .collect();
            match found {
                Some(found) => columns.extend(found),
                None => columns.extend(self.empty_state(a, rows)?),
            }
        }
        Ok(RecordBatch::try_new(self.state_schema.clone(), columns)?)
    }

    /// The state of aggregate `a` for `groups` groups that saw no row.
    fn empty_state(&self, a: usize, groups: usize) -> Result<Vec<ArrayRef>> {
        let aggregate = self.aggregates[a].clone();
        let mut acc: Box<dyn GroupsAccumulator> = if aggregate.groups_accumulator_supported() {
            aggregate.create_groups_accumulator()?
        } else {
            let a = aggregate.clone();
            Box::new(GroupsAccumulatorAdapter::new(move || {
                a.create_accumulator()
            }))
        };
        let args = aggregate
            .expressions()
            .iter()
            .map(|e| Ok(new_null_array(&e.data_type(&self.input_schema)?, groups)))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<usize> = (0..groups).collect();
        // Every row filtered out: each group is sized, none is updated.
        let none = BooleanArray::from(vec![false; groups]);
        acc.update_batch(&args, &ids, Some(&none), groups)?;
        let state = acc.state(EmitTo::All)?;
        Ok(state)
    }
}
