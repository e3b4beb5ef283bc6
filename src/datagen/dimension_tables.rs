//! Writing the reference warehouse's dimension tables (cities, stores,
//! agents) as Delta tables, where its `dimensions:` point.
//!
//! In a brokerage these tables live in the CRM and are synced to the lake;
//! the generator plays that sync. Each write replaces the whole table
//! (a new Delta version), which the lookup joins pick up on their next
//! reload check.

use std::path::Path;

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use tracing::info;

use crate::datagen::beike_world::World;

/// Writes `cities`, `stores` and `agents` under `dir` (a local directory).
pub async fn write_dimensions(dir: &Path, world: &World) -> Result<(), String> {
    let tables: [(&str, Result<RecordBatch, _>); 3] = [
        ("cities", world.cities_batch()),
        ("stores", world.stores_batch()),
        ("agents", world.agents_batch()),
    ];
    for (name, batch) in tables {
        let batch = batch.map_err(|e| format!("building the {name} table: {e}"))?;
        let path = dir.join(name);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let path = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let url = url::Url::from_directory_path(&path)
            .map_err(|()| format!("{}: not a directory path", path.display()))?;
        let rows = batch.num_rows();
        let table = DeltaTable::try_from_url(url)
            .await
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        table
            .write(vec![batch])
            .with_save_mode(SaveMode::Overwrite)
            .await
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        info!(table = name, rows, path = %path.display(), "dimension table written");
    }
    Ok(())
}
