//! Opening a layer's Delta table, creating it on first use.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::prelude::DataFrame;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use tracing::{debug, info};

use crate::delta::schema_change::{SchemaChange, schema_change};
use crate::delta::widen::rewrite_widened;
use crate::error::{EngineError, Result};
use crate::storage::TableLocation;

/// How long a Delta checkpoint keeps the `remove` of a replaced file
/// (`delta.deletedFileRetentionDuration`, 7 days unless set).
///
/// Delta keeps every remove younger than that in every checkpoint, so
/// VACUUM can tell a recently replaced file from an old one. A table that
/// commits every 200 ms replaces each epoch's small file within minutes
/// (compaction): with 7 days, a checkpoint would carry millions of removes,
/// be rewritten every 100 commits and be read whole by every reader that
/// sees a new one, its cost growing for a week. Strata's VACUUM does not
/// need them (it reads the version at the retention's edge, see
/// `crate::maintenance::vacuum`), so its tables keep removes 5 minutes.
/// Another engine's VACUUM takes that as its retention: vacuum Strata's
/// tables with `strata maintain --vacuum`.
pub const REMOVES_KEPT_FOR: &str = "interval 5 minutes";

/// [`REMOVES_KEPT_FOR`] as a duration.
const REMOVES_KEPT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Loads the table at `location`, or creates it with `schema`, partitioned
/// by `partition_columns`. An existing table gains the schema's new nullable
/// columns, and [`REMOVES_KEPT_FOR`] if it has another value; other
/// differences are refused.
pub async fn open_or_create(
    location: &TableLocation,
    schema: &SchemaRef,
    partition_columns: &[&str],
) -> Result<DeltaTable> {
    let url = location.url.to_string();
    if location.url.scheme() == "file"
        && let Ok(dir) = location.url.to_file_path()
    {
        std::fs::create_dir_all(&dir)
            .map_err(EngineError::io(format!("cannot create {}", dir.display())))?;
    }
    let mut table = unloaded(location)?;
    match table.load().await {
        Ok(()) => {
            let table = keep_removes_briefly(table, &url).await?;
            evolve_schema(table, location, schema, &url).await
        }
        Err(DeltaTableError::NotATable(_)) => {
            let kernel_schema: StructType = schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| EngineError::delta(&url, "converting the schema")(e.into()))?;
            // Min/max statistics of raw bytes skip no file and make the
            // writer warn on every commit: collect them for the rest.
            let stats_columns: Vec<&str> = schema
                .fields()
                .iter()
                .filter(|f| !matches!(f.data_type(), DataType::Binary | DataType::LargeBinary))
                .map(|f| f.name().as_str())
                .collect();
            let table = table
                .create()
                .with_columns(kernel_schema.fields().cloned())
                .with_partition_columns(partition_columns.iter().copied())
                .with_configuration_property(
                    TableProperty::DataSkippingStatsColumns,
                    Some(stats_columns.join(",")),
                )
                .with_configuration_property(
                    TableProperty::DeletedFileRetentionDuration,
                    Some(REMOVES_KEPT_FOR),
                )
                .await
                .map_err(EngineError::delta(&url, "creating the table"))?;
            debug!(table = %url, "created delta table");
            Ok(table)
        }
        Err(e) => Err(EngineError::delta(&url, "loading the table")(e)),
    }
}

/// Sets [`REMOVES_KEPT_FOR`] on a table that has another value (one created
/// before Strata set it): one metadata commit, at open.
async fn keep_removes_briefly(table: DeltaTable, url: &str) -> Result<DeltaTable> {
    let key = TableProperty::DeletedFileRetentionDuration.as_ref();
    let current = table
        .snapshot()
        .map_err(EngineError::delta(url, "reading the table state"))?
        .table_config()
        .deleted_file_retention_duration;
    if current == Some(REMOVES_KEPT) {
        return Ok(table);
    }
    let table = table
        .set_tbl_properties()
        .with_properties(HashMap::from([(
            key.to_string(),
            REMOVES_KEPT_FOR.to_string(),
        )]))
        .with_raise_if_not_exists(false)
        .await
        .map_err(EngineError::delta(
            url,
            "setting how long checkpoints keep removes",
        ))?;
    info!(table = %url, was = ?current.unwrap_or(std::time::Duration::from_secs(7 * 24 * 3600)), now = REMOVES_KEPT_FOR,
          "checkpoints of this table now keep replaced files' removes briefly (Strata's VACUUM reads the version at the retention's edge instead)");
    Ok(table)
}

/// The table at `location`, not loaded yet.
fn unloaded(location: &TableLocation) -> Result<DeltaTable> {
    let url = location.url.to_string();
    DeltaTableBuilder::from_url(location.url.clone())
        .map_err(EngineError::delta(&url, "resolving the table location"))?
        .with_storage_options(location.options.clone())
        .build()
        .map_err(EngineError::delta(&url, "opening the table"))
}

/// Loads the existing table at `location` (an error if there is none).
pub async fn open_existing(location: &TableLocation) -> Result<DeltaTable> {
    let url = location.url.to_string();
    let mut table = unloaded(location)?;
    table
        .load()
        .await
        .map_err(EngineError::delta(&url, "loading the table"))?;
    Ok(table)
}

/// Loads `version` of the existing table at `location`.
pub async fn open_version(location: &TableLocation, version: u64) -> Result<DeltaTable> {
    let url = location.url.to_string();
    let mut table = unloaded(location)?;
    table
        .load_version(version)
        .await
        .map_err(EngineError::delta(
            &url,
            format!("loading version {version}"),
        ))?;
    Ok(table)
}

/// The existing table at `location`, read as a DataFrame of `ctx` (its
/// object store registered there, so later plans of `ctx` can read it too).
pub async fn read_existing(location: &TableLocation, ctx: &SessionContext) -> Result<DataFrame> {
    let table = open_existing(location).await?;
    read_version(&table, ctx).await
}

/// The version `table` holds, read as a DataFrame of `ctx` (as
/// [`read_existing`], for a table already loaded).
pub async fn read_version(table: &DeltaTable, ctx: &SessionContext) -> Result<DataFrame> {
    let url = table.table_url().to_string();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(EngineError::delta(&url, "preparing the scan"))?;
    let provider = table
        .table_provider()
        .build()
        .await
        .map_err(|e| EngineError::datafusion(&url, "preparing the scan")(e))?;
    ctx.read_table(Arc::new(provider))
        .map_err(|e| EngineError::datafusion(&url, "reading the table")(e))
}

/// An existing table must have the columns the pipeline writes; new
/// nullable ones are added to it, wider types rewrite it (see
/// [`schema_change`], [`rewrite_widened`]), anything else is refused here,
/// rather than by every write later with a less helpful message.
async fn evolve_schema(
    table: DeltaTable,
    location: &TableLocation,
    expected: &SchemaRef,
    url: &str,
) -> Result<DeltaTable> {
    let actual = table
        .snapshot()
        .map_err(EngineError::delta(url, "reading the table state"))?
        .schema();
    let wanted: StructType = expected
        .as_ref()
        .try_into_kernel()
        .map_err(|e| EngineError::delta(url, "converting the schema")(e.into()))?;
    match schema_change(&actual, &wanted) {
        Ok(SchemaChange::Unchanged) => Ok(table),
        Ok(SchemaChange::AddColumns(fields)) => {
            let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
            let table = table
                .add_columns()
                .with_fields(fields)
                .await
                .map_err(EngineError::delta(url, "adding the layer's new columns"))?;
            info!(table = %url, columns = %names.join(", "), "added the layer's new nullable columns to the table (older rows read them as null)");
            Ok(table)
        }
        Ok(SchemaChange::Widen { columns, schema }) => {
            rewrite_widened(table, location, &schema, &columns).await
        }
        Err(reason) => Err(EngineError::Config(format!(
            "table {url} cannot take the layer's output as it is now: {reason}"
        ))),
    }
}
