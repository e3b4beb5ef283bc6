//! Comparing a warehouse file with what its storage root holds, layer by
//! layer, without I/O: `strata plan` prints the result, and `strata run`
//! refuses a deployment it calls incompatible before it opens anything.
//!
//! Per layer, three things can change:
//! - its definition (SQL, filter): applied from the next epoch on; rows
//!   already written keep the old values (`strata backfill` recomputes them);
//! - its state layout (see [`super::layout`]): the same operator, window
//!   and group keys keep their state, aggregates matched by expression keep
//!   theirs, new ones start empty, dropped ones are forgotten; another
//!   operator, window or key set cannot read the old state;
//! - its tables' schemas: new nullable columns are merged in; widened
//!   types rewrite the table (proven row for row first); other type
//!   changes, NOT NULL columns and renames are refused (see
//!   [`crate::delta::schema_change`]).

use deltalake::kernel::StructType;
use serde::Serialize;

use crate::delta::schema_change::{SchemaChange, schema_change};
use crate::evolution::layout::{AggregateState, StateLayout};

/// What a checkpoint says about a layer it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedLayer {
    /// The layer.
    pub name: String,
    /// Its definition's hash and state layout, if the run recorded them.
    pub shape: Option<LayerShape>,
    /// Whether the checkpoint holds operator state for it.
    pub has_state: bool,
}

/// A layer's definition and state layout, as manifests record them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LayerShape {
    /// sha256 of its SQL and filter.
    pub definition: String,
    /// Its state layout (`None`: it keeps no state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateLayout>,
}

impl LayerShape {
    /// The shape of a layer with `sql` and `filter` and state `state`.
    pub fn new(sql: Option<&str>, filter: Option<&str>, state: Option<StateLayout>) -> Self {
        let text = format!(
            "{}\n--filter--\n{}",
            normalized(sql.unwrap_or("")),
            normalized(filter.unwrap_or(""))
        );
        LayerShape {
            definition: crate::versions::hash_of(text.as_bytes()),
            state,
        }
    }
}

/// Whitespace runs as one space: reformatting SQL changes nothing.
fn normalized(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table a layer writes: the schema it holds now (`None`: not created
/// yet) and the schema the file's layer writes.
#[derive(Debug, Clone)]
pub struct TableSchemas {
    /// The table's name.
    pub table: String,
    /// Its schema in the storage root.
    pub existing: Option<StructType>,
    /// What the layer now writes.
    pub wanted: StructType,
}

/// One layer of the file, planned.
#[derive(Debug, Clone)]
pub struct ProposedLayer {
    /// The layer.
    pub name: String,
    /// Its definition and state layout.
    pub shape: LayerShape,
    /// Its tables.
    pub tables: Vec<TableSchemas>,
}

/// What a deployment does to a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not in the checkpoint: starts from its configured positions' state.
    New,
    /// Same definition, state and tables.
    Unchanged,
    /// Changed, and the change is applied in place (how: `changes`).
    Compatible,
    /// The new file cannot take over this layer's state or tables.
    Incompatible,
    /// In the checkpoint but not in the file: its state is left behind.
    Removed,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::New => "new",
            Verdict::Unchanged => "unchanged",
            Verdict::Compatible => "compatible change",
            Verdict::Incompatible => "INCOMPATIBLE",
            Verdict::Removed => "removed",
        })
    }
}

/// How a layer's aggregates carry over to the new SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCarry {
    /// Aggregates whose state is restored.
    pub kept: Vec<String>,
    /// New aggregates, starting empty.
    pub fresh: Vec<String>,
    /// Aggregates no longer computed: their state is dropped.
    pub dropped: Vec<String>,
}

/// The plan of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerPlanEntry {
    /// The layer.
    pub layer: String,
    /// What happens to it.
    pub verdict: Verdict,
    /// How each change is applied.
    pub changes: Vec<String>,
    /// Why it is incompatible.
    pub problems: Vec<String>,
    /// What to do about it (incompatible layers).
    pub choices: Vec<String>,
    /// How its aggregate state carries over, if it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateCarry>,
}

/// Compares each layer of the file with the checkpoint's (`deployed`
/// empty: nothing ran yet). `file` names the warehouse file in the choices.
pub fn compare(
    deployed: &[DeployedLayer],
    proposed: &[ProposedLayer],
    file: &str,
) -> Vec<LayerPlanEntry> {
    let mut entries: Vec<LayerPlanEntry> = proposed
        .iter()
        .map(|p| {
            compare_layer(
                deployed.iter().find(|d| d.name == p.name),
                p,
                !deployed.is_empty(),
                file,
            )
        })
        .collect();
    for gone in deployed
        .iter()
        .filter(|d| proposed.iter().all(|p| p.name != d.name))
    {
        entries.push(LayerPlanEntry {
            layer: gone.name.clone(),
            verdict: Verdict::Removed,
            changes: vec![
                "no longer run: its table stays as it is, and its state in the checkpoint is not read"
                    .into(),
            ],
            problems: Vec::new(),
            choices: Vec::new(),
            state: None,
        });
    }
    entries
}

/// Compares one layer; `checkpointed` says whether the root has a checkpoint.
pub fn compare_layer(
    old: Option<&DeployedLayer>,
    new: &ProposedLayer,
    checkpointed: bool,
    file: &str,
) -> LayerPlanEntry {
    let mut entry = LayerPlanEntry {
        layer: new.name.clone(),
        verdict: Verdict::Unchanged,
        changes: Vec::new(),
        problems: Vec::new(),
        choices: Vec::new(),
        state: None,
    };
    for table in &new.tables {
        match &table.existing {
            None => entry
                .changes
                .push(format!("table `{}` is created", table.table)),
            Some(existing) => match schema_change(existing, &table.wanted) {
                Ok(SchemaChange::Unchanged) => {}
                Ok(SchemaChange::AddColumns(fields)) => entry.changes.push(format!(
                    "table `{}` gains nullable column(s) {} (one schema merge on start; older rows read null)",
                    table.table,
                    fields
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Ok(SchemaChange::Widen { columns, .. }) => entry.changes.push(format!(
                    "table `{}` widens {} (the table is rewritten on start in the wider type(s): staged, proven row for row, then swapped in one commit)",
                    table.table,
                    columns
                        .iter()
                        .map(|(name, from, to)| format!("`{name}` {from} -> {to}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(reason) => entry
                    .problems
                    .push(format!("table `{}`: {reason}", table.table)),
            },
        }
    }
    match old {
        None if checkpointed => {
            entry.verdict = Verdict::New;
            entry.changes.insert(
                0,
                "not in the newest checkpoint: it starts from its source's configured start position with empty state".into(),
            );
        }
        None => entry.verdict = Verdict::New,
        Some(old) => compare_shape(old, &new.shape, &mut entry),
    }
    if !entry.problems.is_empty() {
        entry.verdict = Verdict::Incompatible;
        entry.choices = choices(&new.name, file);
    } else if entry.verdict == Verdict::Unchanged && !entry.changes.is_empty() {
        entry.verdict = Verdict::Compatible;
    }
    entry
}

fn compare_shape(old: &DeployedLayer, new: &LayerShape, entry: &mut LayerPlanEntry) {
    let Some(old_shape) = &old.shape else {
        // A checkpoint of a Strata that did not record layouts.
        if old.has_state || new.state.is_some() {
            entry.changes.push(
                "the checkpoint does not record this layer's SQL or state layout (written by an older Strata): its state is restored only if its columns match the new SQL's, otherwise the run refuses".into(),
            );
        }
        return;
    };
    if old_shape.definition != new.definition {
        entry.changes.push(
            "SQL or filter changed: applied from the next epoch on; rows already written keep the old values (`strata backfill` recomputes a range)".into(),
        );
    }
    match (&old_shape.state, &new.state) {
        (None, None) => {}
        (Some(_), None) => entry
            .changes
            .push("keeps no state now: the checkpointed state is dropped".into()),
        (None, Some(layout)) => entry.changes.push(format!(
            "now keeps state ({}): it starts empty, so the first window holds only rows read from now on",
            layout.describe()
        )),
        (Some(old_layout), Some(new_layout)) => {
            match carry_over(old_layout, new_layout) {
                Ok(carry) => {
                    if !carry.fresh.is_empty() || !carry.dropped.is_empty() {
                        if !carry.fresh.is_empty() {
                            entry.changes.push(format!(
                                "new aggregate(s) {} start empty: windows open at the restart count them only from the rows read after it; later windows are complete",
                                carry.fresh.join(", ")
                            ));
                        }
                        if !carry.dropped.is_empty() {
                            entry.changes.push(format!(
                                "aggregate(s) {} are no longer computed: their state is dropped",
                                carry.dropped.join(", ")
                            ));
                        }
                        if !carry.kept.is_empty() {
                            entry.changes.push(format!(
                                "state of {} is restored: open windows keep their values",
                                carry.kept.join(", ")
                            ));
                        }
                        entry.state = Some(carry);
                    }
                }
                Err(problems) => entry.problems.extend(problems),
            }
        }
    }
}

/// How `old`'s state carries over to `new`, or why it cannot.
pub fn carry_over(old: &StateLayout, new: &StateLayout) -> Result<StateCarry, Vec<String>> {
    let mut problems = Vec::new();
    if old.operator != new.operator || old.window != new.window {
        problems.push(format!(
            "its state was kept by {} and the new SQL needs {}: the open windows cannot be carried over",
            old.describe(),
            new.describe()
        ));
    }
    if old.keys != new.keys {
        let names = |l: &StateLayout| {
            l.keys
                .iter()
                .map(|k| format!("{} {}", k.name, k.data_type))
                .collect::<Vec<_>>()
                .join(", ")
        };
        problems.push(format!(
            "its state is grouped by ({}) and the new SQL groups by ({})",
            names(old),
            names(new)
        ));
    }
    if old.fingerprint != new.fingerprint {
        problems.push(
            "it keeps rows (session, OVER or join) and its SQL or inputs changed: the kept rows do not fit the new query".into(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let same = |a: &AggregateState, b: &AggregateState| a.name == b.name && a.state == b.state;
    let mut carry = StateCarry::default();
    for a in &new.aggregates {
        if old.aggregates.iter().any(|o| same(o, a)) {
            carry.kept.push(a.name.clone());
        } else {
            carry.fresh.push(a.name.clone());
        }
    }
    for o in &old.aggregates {
        if !new.aggregates.iter().any(|a| same(o, a)) {
            carry.dropped.push(o.name.clone());
        }
    }
    Ok(carry)
}

/// What to do about an incompatible layer.
pub fn choices(layer: &str, file: &str) -> Vec<String> {
    vec![
        format!(
            "replay the layer's state from the log with the new SQL: strata run {file} --reset-state {layer} --from TIME (its table's rows from TIME on are recomputed)"
        ),
        format!(
            "recompute a range of its table with the new SQL: strata backfill {file} {layer} --from TIME"
        ),
        "keep the old table and state: deploy the previous version of the file (strata history lists them), or give the changed layer a new name (a new table, started empty)".into(),
    ]
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
