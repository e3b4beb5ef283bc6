//! Incremental windowed aggregation: `GROUP BY window_start, window_end,
//! keys...`, emitted when the watermark passes `window_end`.
//!
//! The window TVF rewrite has already given every row its window (TUMBLE)
//! or its slice (HOP and CUMULATE: see [`Slicing`]), so one operator serves
//! the three: groups are kept per `window_end` (per slice end), and a window
//! is final, emitted and forgotten once the watermark reaches its end
//! (append-only output, as Flink's window aggregations); a HOP or CUMULATE
//! window is merged from its slices' states then. A row whose windows have
//! all been emitted is dropped: a window is never emitted twice. A row of a
//! slice whose earlier windows were emitted still counts in its later ones.
//!
//! The aggregation itself is DataFusion's: its `GroupValues` map keys to
//! group ids and its vectorized `GroupsAccumulator`s (COUNT, SUM, AVG,
//! MIN/MAX, COUNT(DISTINCT), APPROX_DISTINCT's HyperLogLog, percentile
//! digests...) keep one state per group. State is as large as the number of
//! groups in open windows, never the number of rows. Checkpoints store each
//! accumulator's intermediate state (the same state DataFusion exchanges
//! between partial and final aggregation) and restore by merging it back.
//!
//! Taking that state consumes DataFusion's accumulators, so a checkpoint
//! *freezes* the groups of each window rows arrived in into a state batch,
//! one more *part* of the window, and the window's next rows start new
//! groups: partial states merge (the same merge DataFusion's final
//! aggregation does), so a window is its parts and its live groups, merged
//! only when it closes. A checkpoint then costs what the epoch brought (the
//! groups its rows touched), not every open window's hash tables rebuilt,
//! nor an hour's distinct sets copied, five times a second; and it writes
//! only the new parts (see `checkpoint::state_log`). When a checkpoint asks
//! for every part (a run's first, and periodically, to bound the files a
//! restore reads), each window's parts are merged into one.
//!
//! Without a `window_end` key the same operator keeps one never-closing
//! bucket: a plain `GROUP BY` whose current results are emitted as updates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::group_values::new_group_values;
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

use crate::event_time::after;
use crate::operators::slicing::Slicing;
use crate::predicate::null_is_false;

#[path = "window_state_carry.rs"]
mod carry;
#[path = "window_groups.rs"]
mod groups;
#[path = "window_snapshot.rs"]
mod snapshot;

use groups::{Groups, Part, Window};

/// The bucket of a plain (windowless) `GROUP BY`.
const NO_WINDOW: i64 = i64::MAX;

/// A windowed (or plain) `GROUP BY`, planned by DataFusion, run incrementally.
pub struct WindowAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_schema: SchemaRef,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    window_end: Option<usize>,
    windows: BTreeMap<i64, Window>,
    output_schema: SchemaRef,
    state_schema: SchemaRef,
    /// How many state columns each accumulator has.
    state_widths: Vec<usize>,
    ids: Vec<usize>,
    /// Plain `GROUP BY`: which groups changed since the last `take_changed`.
    changed: Vec<bool>,
    /// Windows ending at or before this have been emitted.
    closed_through: Option<i64>,
    /// HOP and CUMULATE: `windows` holds slices, merged per window.
    slicing: Option<Slicing>,
    /// The `window_start` group key, if grouped by.
    window_start: Option<usize>,
    /// The aggregate's input rows (what its arguments are evaluated on).
    input_schema: SchemaRef,
    /// The id of the next part a window is frozen into.
    next_part: i64,
}

impl WindowAggregate {
    /// The operator for `agg`; `window_end` names its window-end group key
    /// (`None` for a plain `GROUP BY`).
    pub fn from_exec(agg: &AggregateExec, window_end: Option<&str>) -> Result<Self> {
        if !matches!(
            agg.mode(),
            AggregateMode::Single | AggregateMode::SinglePartitioned
        ) {
            return Err(DataFusionError::Internal(format!(
                "expected a single-phase aggregate, got {:?}",
                agg.mode()
            )));
        }
        let group_by = agg.group_expr();
        if !group_by.is_single() {
            return Err(DataFusionError::NotImplemented(
                "GROUPING SETS, CUBE and ROLLUP on a stream".into(),
            ));
        }
        let input = agg.input_schema();
        let mut fields = Vec::new();
        for (expr, name) in group_by.expr() {
            fields.push(Field::new(
                name,
                expr.data_type(&input)?,
                expr.nullable(&input)?,
            ));
        }
        let group_schema = Arc::new(Schema::new(fields));
        let window_end = match window_end {
            Some(name) => Some(group_schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!("a windowed aggregation must GROUP BY {name}"))
            })?),
            None => None,
        };
        if let Some(i) = window_end
            && !matches!(group_schema.field(i).data_type(), DataType::Timestamp(_, _))
        {
            return Err(DataFusionError::Plan(
                "window_end must be a timestamp".into(),
            ));
        }
        let aggregates = agg.aggr_expr().to_vec();
        let mut state_fields: Vec<Field> = group_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut state_widths = Vec::with_capacity(aggregates.len());
        for (i, a) in aggregates.iter().enumerate() {
            let fields = a.state_fields()?;
            state_widths.push(fields.len());
            for f in fields {
                state_fields.push(Field::new(
                    format!("{i}_{}", f.name()),
                    f.data_type().clone(),
                    true,
                ));
            }
        }
        Ok(WindowAggregate {
            group_exprs: group_by.expr().iter().map(|(e, _)| e.clone()).collect(),
            group_schema,
            aggregates,
            filters: agg.filter_expr().to_vec(),
            window_end,
            windows: BTreeMap::new(),
            output_schema: ExecutionPlan::schema(agg),
            state_schema: Arc::new(Schema::new(state_fields)),
            state_widths,
            ids: Vec::new(),
            changed: Vec::new(),
            closed_through: None,
            slicing: None,
            window_start: group_schema_index(agg.group_expr().expr(), "window_start"),
            input_schema: input,
            next_part: 0,
        })
    }

    /// Aggregates rows into slices of overlapping (HOP, CUMULATE) windows,
    /// merged per window when it closes; the rows' `window_start` and
    /// `window_end` are their slice's.
    pub fn sliced(mut self, slicing: Option<Slicing>) -> Self {
        self.slicing = slicing;
        self
    }

    /// Whether a row of the slice (or window) ending at `end` still counts
    /// in a window not yet emitted.
    fn open_after(&self, end: i64, closed: i64) -> bool {
        match &self.slicing {
            Some(s) => s.last_end(end) > closed,
            None => end > closed,
        }
    }

    /// The schema of emitted rows: group keys, then aggregate values.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// Open windows (a plain `GROUP BY` has one).
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Groups held across all open windows.
    pub fn groups(&self) -> usize {
        self.windows.values().map(Window::groups).sum()
    }

    fn new_groups(&self) -> Result<Groups> {
        let values = new_group_values(self.group_schema.clone(), &GroupOrdering::None)?;
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| -> Result<Box<dyn GroupsAccumulator>> {
                if a.groups_accumulator_supported() {
                    a.create_groups_accumulator()
                } else {
                    let a = a.clone();
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        a.create_accumulator()
                    })))
                }
            })
            .collect::<Result<_>>()?;
        Ok(Groups {
            values,
            accumulators,
        })
    }

    /// Windows ending at or before `watermark` count as emitted (after a
    /// restore: they were emitted before the checkpoint).
    pub fn closed_until(&mut self, watermark: i64) {
        self.closed_through = Some(self.closed_through.map_or(watermark, |c| c.max(watermark)));
    }

    /// Adds a batch of the aggregate's input; rows of windows already
    /// emitted are dropped.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let mut keys = evaluate(&self.group_exprs, batch)?;
        let open;
        let mut batch = batch;
        if let (Some(end_index), Some(closed)) = (self.window_end, self.closed_through) {
            let ends = timestamps(&keys[end_index])?;
            let mask = match self.slicing {
                None => null_is_false(&after(ends, closed)?),
                Some(_) => ends
                    .iter()
                    .map(|e| Some(e.is_some_and(|e| self.open_after(e, closed))))
                    .collect(),
            };
            if mask.true_count() == 0 {
                return Ok(());
            }
            if mask.true_count() < n {
                open = filter_record_batch(batch, &mask)?;
                batch = &open;
                keys = evaluate(&self.group_exprs, batch)?;
            }
        }
        let n = batch.num_rows();
        let args: Vec<Vec<ArrayRef>> = self
            .aggregates
            .iter()
            .map(|a| evaluate(&a.expressions(), batch))
            .collect::<Result<_>>()?;
        let filters: Vec<Option<ArrayRef>> = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| f.evaluate(batch)?.into_array(n))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let Some(end_index) = self.window_end else {
            return self.update(NO_WINDOW, &keys, &args, &filters);
        };
        let ends = timestamps(&keys[end_index])?;
        if ends.null_count() > 0 {
            return Err(DataFusionError::Execution(
                "a row has no window_end: is its time column null?".into(),
            ));
        }
        let values = ends.values();
        if values.iter().all(|v| *v == values[0]) {
            return self.update(values[0], &keys, &args, &filters);
        }
        // HOP rows, or a batch spanning windows: update each window with its rows.
        let mut by_window: HashMap<i64, Vec<u32>> = HashMap::new();
        for (row, end) in values.iter().enumerate() {
            by_window.entry(*end).or_default().push(row as u32);
        }
        for (end, rows) in by_window {
            let rows = UInt32Array::from(rows);
            let pick = |cols: &[ArrayRef]| -> Result<Vec<ArrayRef>> {
                cols.iter()
                    .map(|c| take(c.as_ref(), &rows, None).map_err(DataFusionError::from))
                    .collect()
            };
            let keys = pick(&keys)?;
            let args = args.iter().map(|a| pick(a)).collect::<Result<Vec<_>>>()?;
            let filters = filters
                .iter()
                .map(|f| {
                    f.as_ref()
                        .map(|f| take(f.as_ref(), &rows, None))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.update(end, &keys, &args, &filters)?;
        }
        Ok(())
    }

    fn update(
        &mut self,
        window: i64,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> Result<()> {
        let mut w = self.windows.remove(&window).unwrap_or_default();
        if window == NO_WINDOW && !w.parts.is_empty() {
            // A plain GROUP BY keeps one set of groups: its updated results
            // are read by group id (see `take_changed`).
            let groups = self.groups_of(w)?;
            w = Window {
                parts: Vec::new(),
                live: Some(groups),
            };
        }
        let groups = match &mut w.live {
            Some(groups) => groups,
            None => w.live.insert(self.new_groups()?),
        };
        groups.values.intern(keys, &mut self.ids)?;
        let total = groups.values.len();
        if window == NO_WINDOW {
            self.changed.resize(total, false);
            for id in &self.ids {
                self.changed[*id] = true;
            }
        }
        for ((acc, args), filter) in groups.accumulators.iter_mut().zip(args).zip(filters) {
            let filter = filter
                .as_ref()
                .and_then(|f| f.as_any().downcast_ref::<BooleanArray>());
            acc.update_batch(args, &self.ids, filter, total)?;
        }
        self.windows.insert(window, w);
        Ok(())
    }

    /// Emits and forgets every window that ends at or before `watermark`
    /// (microseconds).
    pub fn close_until(&mut self, watermark: i64) -> Result<Option<RecordBatch>> {
        if self.window_end.is_none() {
            return Ok(None);
        }
        if let Some(slicing) = self.slicing {
            return self.close_slices_until(slicing, watermark);
        }
        self.closed_until(watermark);
        let closed: Vec<i64> = self.windows.range(..=watermark).map(|(k, _)| *k).collect();
        let mut out = Vec::with_capacity(closed.len());
        for end in closed {
            if let Some(window) = self.windows.remove(&end) {
                let groups = self.groups_of(window)?;
                out.push(self.emit(groups)?);
            }
        }
        concat(&self.output_schema, out)
    }

    /// Emits every HOP or CUMULATE window ending in (last close,
    /// `watermark`] that has rows, each merged from its slices, in order of
    /// window end; forgets the slices no open window needs.
    fn close_slices_until(
        &mut self,
        slicing: Slicing,
        watermark: i64,
    ) -> Result<Option<RecordBatch>> {
        let after = self.closed_through.unwrap_or(i64::MIN);
        self.closed_until(watermark);
        let mut ends = BTreeSet::new();
        for slice_end in self.windows.keys() {
            slicing.window_ends(*slice_end, after, watermark, &mut ends);
        }
        let mut out = Vec::with_capacity(ends.len());
        if let Some(last) = ends.last().copied() {
            // Each slice's state is read once, for all the windows it is in.
            let needed: Vec<i64> = self.windows.range(..=last).map(|(k, _)| *k).collect();
            let mut states: BTreeMap<i64, RecordBatch> = BTreeMap::new();
            for end in needed {
                if let Some(mut window) = self.windows.remove(&end) {
                    states.insert(end, self.state_of(&mut window)?);
                    self.windows.insert(end, window);
                }
            }
            for end in &ends {
                let start = slicing.start_of(*end);
                let parts = states
                    .range(start + 1..=*end)
                    .map(|(_, s)| self.rekeyed(s, start, *end))
                    .collect::<Result<Vec<_>>>()?;
                if let Some(merged) = concat(&self.state_schema, parts)? {
                    let groups = self.groups_from(&merged)?;
                    out.push(self.emit(groups)?);
                }
            }
        }
        self.windows
            .retain(|end, _| slicing.last_end(*end) > watermark);
        concat(&self.output_schema, out)
    }

    /// A slice's state with the window's start and end as its keys.
    fn rekeyed(&self, state: &RecordBatch, start: i64, end: i64) -> Result<RecordBatch> {
        let mut columns = state.columns().to_vec();
        let n = state.num_rows();
        for (index, value) in [(self.window_start, start), (self.window_end, end)] {
            if let Some(i) = index {
                let DataType::Timestamp(_, tz) = self.group_schema.field(i).data_type() else {
                    return Err(DataFusionError::Internal(
                        "window_start / window_end must be timestamps".into(),
                    ));
                };
                columns[i] = Arc::new(
                    TimestampMicrosecondArray::from_value(value, n).with_timezone_opt(tz.clone()),
                );
            }
        }
        Ok(RecordBatch::try_new(self.state_schema.clone(), columns)?)
    }

    /// Groups' state batch: keys, then each accumulator's intermediate
    /// state (this consumes the groups).
    fn state_from(&self, mut groups: Groups) -> Result<RecordBatch> {
        let mut columns = groups.values.emit(EmitTo::All)?;
        for acc in &mut groups.accumulators {
            columns.extend(acc.state(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(self.state_schema.clone(), columns)?)
    }

    /// Freezes a window's live groups into a new part.
    fn freeze(&mut self, window: &mut Window) -> Result<()> {
        if let Some(groups) = window.live.take() {
            let state = self.state_from(groups)?;
            window.parts.push(self.new_part(state));
        }
        Ok(())
    }

    /// A new part, not yet taken by an incremental snapshot.
    fn new_part(&mut self, state: RecordBatch) -> Part {
        let id = self.next_part;
        self.next_part += 1;
        Part {
            id,
            state,
            taken: false,
        }
    }

    /// One window's (or slice's) state: its parts, its live groups frozen
    /// into one more first (a group may have rows in several parts).
    fn state_of(&mut self, window: &mut Window) -> Result<RecordBatch> {
        self.freeze(window)?;
        let parts = window.parts.iter().map(|p| p.state.clone()).collect();
        Ok(concat(&self.state_schema, parts)?
            .unwrap_or_else(|| RecordBatch::new_empty(self.state_schema.clone())))
    }

    /// One window's (or slice's) groups, its parts merged.
    fn groups_of(&mut self, mut window: Window) -> Result<Groups> {
        if window.parts.is_empty()
            && let Some(groups) = window.live
        {
            return Ok(groups);
        }
        let state = self.state_of(&mut window)?;
        self.groups_from(&state)
    }

    /// The current results of the groups of a plain `GROUP BY` that changed
    /// since the last call (state is kept).
    pub fn take_changed(&mut self) -> Result<Option<RecordBatch>> {
        if !self.changed.contains(&true) {
            return Ok(None);
        }
        // Snapshotting re-interns the keys in group-id order, so the ids the
        // `changed` flags refer to stay the same.
        let Some(snapshot) = self.snapshot()? else {
            return Ok(None);
        };
        let groups = self.groups_from(&snapshot)?;
        let all = self.emit(groups)?;
        let mask = BooleanArray::from(std::mem::take(&mut self.changed));
        Ok(Some(arrow::compute::filter_record_batch(&all, &mask)?))
    }

    /// Plain `GROUP BY`: which groups (by id, the order of
    /// [`snapshot`](Self::snapshot) rows) changed since the last
    /// [`take_changed`](Self::take_changed).
    pub fn changed_flags(&self) -> &[bool] {
        &self.changed
    }

    /// Plain `GROUP BY`: keeps only the groups `keep` marks (by id, as the
    /// rows of [`snapshot`](Self::snapshot)); the kept ones are renumbered in
    /// order. Call after [`take_changed`](Self::take_changed).
    pub fn retain_groups(&mut self, keep: &BooleanArray) -> Result<()> {
        let Some(snapshot) = self.snapshot()? else {
            return Ok(());
        };
        let kept = arrow::compute::filter_record_batch(&snapshot, keep)?;
        self.windows.clear();
        self.changed.clear();
        if kept.num_rows() > 0 {
            self.restore(&kept)?;
        }
        Ok(())
    }

    fn emit(&self, mut groups: Groups) -> Result<RecordBatch> {
        let mut columns = groups.values.emit(EmitTo::All)?;
        for acc in &mut groups.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(self.output_schema.clone(), columns)?)
    }

    fn groups_from(&mut self, state: &RecordBatch) -> Result<Groups> {
        let mut groups = self.new_groups()?;
        let keys = &state.columns()[..self.group_schema.fields().len()];
        groups.values.intern(keys, &mut self.ids)?;
        let total = groups.values.len();
        let mut next = keys.len();
        for (acc, width) in groups.accumulators.iter_mut().zip(&self.state_widths) {
            let width = *width;
            let columns = &state.columns()[next..next + width];
            next += width;
            acc.merge_batch(columns, &self.ids, total)?;
        }
        Ok(groups)
    }
}

/// The position of the group key named `name`.
fn group_schema_index(keys: &[(Arc<dyn PhysicalExpr>, String)], name: &str) -> Option<usize> {
    keys.iter().position(|(_, n)| n == name)
}

fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

fn timestamps(array: &ArrayRef) -> Result<&TimestampMicrosecondArray> {
    array
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| DataFusionError::Plan("window_end must be a microsecond timestamp".into()))
}

fn concat(schema: &SchemaRef, parts: Vec<RecordBatch>) -> Result<Option<RecordBatch>> {
    match parts.len() {
        0 => Ok(None),
        1 => Ok(parts.into_iter().next()),
        _ => Ok(Some(concat_batches(schema, &parts)?)),
    }
}
