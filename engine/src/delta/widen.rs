//! Widening a column's type by rewriting the table, proven row for row
//! before the swap.
//!
//! Delta's `typeWidening` feature would change the type in the log alone,
//! but delta-rs 1.1 and the Python `deltalake` can neither read nor write a
//! table with it. So a widening (int -> bigint, float -> double, a decimal
//! with more digits) rewrites the table: every row of the version it
//! read, cast to the wider type, replaces the old files in one overwrite
//! commit that also sets the new schema. That commit is destructive (it
//! removes every file), so it is made only once a staged copy is shown to
//! hold exactly the rows it replaces:
//!
//! 1. every file the version names exists (a damaged table is refused);
//! 2. the rows are written, cast, to a staging table beside the table
//!    (`_strata_widen/`, which Delta readers and VACUUM skip: `_` names are
//!    hidden), in the table's partitioning;
//! 3. the staging table and the version read are compared as multisets
//!    (`EXCEPT ALL` both ways, in the wider type, and the counts);
//! 4. the overwrite from the staging table commits on the version read, and
//!    fails rather than retries if anything committed since;
//! 5. the new version's rows are counted against the staging table's, and
//!    the staging table is removed.
//!
//! A refusal at 1-4 leaves the table as it was. The epochs' `txn` entries
//! are kept by the overwrite (Delta keeps the newest per application until
//! they expire), so exactly-once recovery reads the same positions after.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::prelude::{DataFrame, Expr, cast, col, lit};
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{DataType, StructType};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tracing::info;

use crate::delta::proof::every_file_present;
use crate::delta::table::read_version;
use crate::error::{EngineError, Result};
use crate::storage::TableLocation;

/// The staging table's directory, inside the table's.
const STAGING: &str = "_strata_widen";

/// Rewrites `table` (at `location`) in `schema`, whose `columns` are wider
/// than the table's; returns the table at the new version.
pub async fn rewrite_widened(
    table: DeltaTable,
    location: &TableLocation,
    schema: &StructType,
    columns: &[(String, DataType, DataType)],
) -> Result<DeltaTable> {
    let url = location.url.to_string();
    let fail = |what: &str, reason: String| {
        EngineError::Config(format!(
            "table {url}: widening {} needs a rewrite of the table, which was refused before it changed anything: {what}: {reason}",
            describe(columns)
        ))
    };
    every_file_present(&table, &url).await?;
    let version = table.version().unwrap_or(0);
    let snapshot = table
        .snapshot()
        .map_err(EngineError::delta(&url, "reading the table state"))?;
    let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let target: Schema = schema
        .try_into_arrow()
        .map_err(|e| fail("converting the schema", e.to_string()))?;

    let ctx = DeltaSessionContext::new().into_inner();
    let old = read_version(&table, &ctx).await?;
    let select = casts(&target, old.schema().fields());
    let old = old
        .select(select)
        .map_err(|e| fail("casting the rows", e.to_string()))?;

    let staging = staging_location(location)?;
    remove_staging(&staging).await?;
    let staged = DeltaTableBuilder::from_url(staging.url.clone())
        .and_then(|b| b.with_storage_options(staging.options.clone()).build())
        .map_err(EngineError::delta(&url, "opening the staging table"))?
        .write(Vec::new())
        .with_input_plan(old.logical_plan().clone())
        .with_session_state(Arc::new(ctx.state()))
        .with_partition_columns(partitions.clone())
        .await
        .map_err(EngineError::delta(&url, "writing the staging table"))?;
    // In the target's column order (a provider lists partition columns last).
    let names: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
    let staged_rows = read_version(&staged, &ctx)
        .await?
        .select_columns(&names)
        .map_err(|e| fail("reading the staging table", e.to_string()))?;

    let proven = prove_same_rows(&old, &staged_rows)
        .await
        .map_err(|e| fail("comparing the staged rows with the table's", e.to_string()))?;
    if let Err(reason) = proven {
        remove_staging(&staging).await?;
        return Err(fail("the staged copy is not the table's rows", reason));
    }
    let rows = count(&staged_rows).await?;

    let note = json!({
        "from_version": version,
        "rows": rows,
        "columns": columns.iter().map(|(name, from, to)| json!({"column": name, "from": from.to_string(), "to": to.to_string()})).collect::<Vec<_>>(),
    });
    let properties = CommitProperties::default()
        .with_max_retries(0)
        .with_cleanup_expired_logs(Some(false))
        .with_metadata([("strata.widen".to_string(), note)]);
    let rewritten = table
        .write(Vec::new())
        .with_input_plan(staged_rows.logical_plan().clone())
        .with_session_state(Arc::new(ctx.state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_partition_columns(partitions)
        .with_commit_properties(properties)
        .await
        .map_err(|e| {
            fail(
                "the overwrite commit (did another writer commit meanwhile? stop it and start again)",
                e.to_string(),
            )
        })?;
    let now = count(&read_version(&rewritten, &ctx).await?).await?;
    remove_staging(&staging).await?;
    if now != rows {
        return Err(EngineError::Config(format!(
            "table {url}: the rewrite in the wider types committed version {} with {now} rows where {rows} were staged; version {version} holds the rows before it: restore the table to it (e.g. Python `DeltaTable(...).restore({version})`) and report this",
            rewritten.version().unwrap_or(0)
        )));
    }
    info!(table = %url, columns = %describe(columns), rows, from_version = version,
          version = rewritten.version().unwrap_or(0), "rewrote the table in the wider types (staged copy proven row for row first)");
    Ok(rewritten)
}

/// `EXCEPT ALL` both ways: `Ok(Err(why))` when the two differ.
async fn prove_same_rows(
    a: &DataFrame,
    b: &DataFrame,
) -> datafusion::error::Result<std::result::Result<(), String>> {
    let only_a = a.clone().except(b.clone())?.count().await?;
    let only_b = b.clone().except(a.clone())?.count().await?;
    if only_a > 0 || only_b > 0 {
        return Ok(Err(format!(
            "{only_a} row(s) of the table are missing from it, {only_b} row(s) in it are not the table's"
        )));
    }
    Ok(Ok(()))
}

/// The select list casting each of the table's `present` columns to its
/// type in `target`, and the columns the table lacks as nulls.
fn casts(target: &Schema, present: &arrow::datatypes::Fields) -> Vec<Expr> {
    target
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            let value = if present.iter().any(|f| f.name() == name) {
                cast(col(format!("\"{name}\"")), field.data_type().clone())
            } else {
                let null = ScalarValue::try_from(field.data_type()).unwrap_or(ScalarValue::Null);
                cast(lit(null), field.data_type().clone())
            };
            value.alias(name)
        })
        .collect()
}

async fn count(rows: &DataFrame) -> Result<u64> {
    let n = rows
        .clone()
        .count()
        .await
        .map_err(|e| EngineError::datafusion("the rewrite", "counting rows")(e))?;
    Ok(n as u64)
}

fn staging_location(location: &TableLocation) -> Result<TableLocation> {
    let mut base = location.url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let url = base.join(&format!("{STAGING}/")).map_err(|e| {
        EngineError::Config(format!("table {}: no staging location: {e}", location.url))
    })?;
    Ok(TableLocation {
        url,
        options: location.options.clone(),
    })
}

/// Removes the staging table (one a killed rewrite left, or this one's).
async fn remove_staging(staging: &TableLocation) -> Result<()> {
    let url = staging.url.to_string();
    let table = DeltaTableBuilder::from_url(staging.url.clone())
        .and_then(|b| b.with_storage_options(staging.options.clone()).build())
        .map_err(EngineError::delta(&url, "opening the staging table"))?;
    let store = table.log_store().object_store(None);
    let paths = store.list(None).map_ok(|o| o.location).boxed();
    store
        .delete_stream(paths)
        .try_collect::<Vec<_>>()
        .await
        .map_err(EngineError::object_store(
            url.clone(),
            "removing the staging table",
        ))?;
    // A local store leaves the emptied directories behind.
    if let Ok(dir) = staging.url.to_file_path() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EngineError::io(format!("cannot remove {}", dir.display()))(
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// `amount decimal(18,2) -> decimal(20,2), n integer -> long`.
fn describe(columns: &[(String, DataType, DataType)]) -> String {
    columns
        .iter()
        .map(|(name, from, to)| format!("{name} {from} -> {to}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType as ArrowType, Field};

    use super::*;

    #[test]
    fn the_select_list_casts_present_columns_and_fills_new_ones_with_null() {
        let target = Schema::new(vec![
            Field::new("n", ArrowType::Int64, true),
            Field::new("agent", ArrowType::Utf8, true),
        ]);
        let present = arrow::datatypes::Fields::from(vec![Field::new("n", ArrowType::Int32, true)]);
        let exprs: Vec<String> = casts(&target, &present)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(exprs.len(), 2);
        assert!(exprs[0].contains("CAST(n AS Int64) AS n"), "{exprs:?}");
        assert!(exprs[1].contains("AS agent"), "{exprs:?}");
    }
}
