//! The swap: a range of a live table replaced by the staged rows in one
//! Delta commit.
//!
//! `replaceWhere` removes the rows matching the range predicate (files
//! wholly inside it are dropped, files straddling it are rewritten without
//! those rows) and adds the staged rows of the range, in a single commit: a
//! reader sees the version before (all old rows) or after (all new), never
//! a mix. The live pipeline keeps committing meanwhile. Its appends are
//! blind appends, which this commit's conflict check lets through (delta-rs
//! retries it on top of them); and when the swap lands first, the live
//! commit is made again on top of it (`crate::delta::commit_race`).

use std::sync::Arc;

use datafusion::logical_expr::Expr;
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use serde_json::json;

use crate::delta::table::{open_existing, read_existing};
use crate::error::{EngineError, Result};
use crate::storage::TableLocation;

/// What a swap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swapped {
    /// The live table's version holding the new rows.
    pub version: u64,
    /// Rows written for the range.
    pub rows: u64,
}

/// Replaces the rows of `live` matching `range` with the rows of `staged`
/// that match it. `note` goes into the commit's metadata.
pub async fn replace_range(
    staged: &TableLocation,
    live: &TableLocation,
    range: Expr,
    note: serde_json::Value,
) -> Result<Swapped> {
    // Delta's planner: the write plans nodes of its own.
    let ctx = DeltaSessionContext::new().into_inner();
    let staged_rows = read_existing(staged, &ctx).await?;
    let staged_url = staged.url.to_string();
    let live_table = open_existing(live).await?;
    let live_url = live.url.to_string();
    live_table
        .update_datafusion_session(&ctx.state())
        .map_err(EngineError::delta(&live_url, "preparing the write"))?;
    // The live table's column order (a table keeps the order it was
    // created with).
    let columns: Vec<String> = live_table
        .snapshot()
        .map_err(EngineError::delta(&live_url, "reading the table state"))?
        .snapshot()
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let rows = staged_rows
        .filter(range.clone())
        .and_then(|df| df.select_columns(&names))
        .map_err(|e| {
            EngineError::datafusion(
                &staged_url,
                "selecting the range (the new query's columns must be the table's)",
            )(e)
        })?;
    let count = rows
        .clone()
        .count()
        .await
        .map_err(|e| EngineError::datafusion(&staged_url, "counting the staged rows")(e))?;
    let plan = rows.logical_plan().clone();
    let table = live_table
        .write(Vec::new())
        .with_input_plan(plan)
        .with_session_state(Arc::new(ctx.state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(range)
        .with_commit_properties(
            CommitProperties::default().with_metadata([("strata.backfill".to_string(), note)]),
        )
        .await
        .map_err(EngineError::delta(&live_url, "replacing the range"))?;
    Ok(Swapped {
        version: table.version().unwrap_or(0),
        rows: count as u64,
    })
}

/// How many rows of `staged` match `range`.
pub async fn staged_rows(staged: &TableLocation, range: Expr) -> Result<u64> {
    let url = staged.url.to_string();
    let ctx = DeltaSessionContext::new().into_inner();
    let count = read_existing(staged, &ctx)
        .await?
        .filter(range)
        .map_err(|e| EngineError::datafusion(&url, "selecting the range")(e))?
        .count()
        .await
        .map_err(|e| EngineError::datafusion(&url, "counting the staged rows")(e))?;
    Ok(count as u64)
}

/// The commit note of a backfill.
pub(crate) fn note(layer: &str, from: &str, to: &str, source: &str) -> serde_json::Value {
    json!({ "layer": layer, "from": from, "to": to, "source": source })
}
