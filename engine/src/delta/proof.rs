//! What a destructive step checks before it changes anything.

use std::collections::HashSet;

use deltalake::DeltaTable;
use futures::TryStreamExt;
use object_store::path::Path;

use crate::error::{EngineError, Result};

/// The table's files (as the log names them, object-store paths relative
/// to the table) and their sizes.
pub(crate) fn active_files(table: &DeltaTable, url: &str) -> Result<Vec<(Path, i64)>> {
    let state = table
        .snapshot()
        .map_err(EngineError::delta(url, "reading the table state"))?;
    Ok(state
        .log_data()
        .iter()
        .map(|f| (f.object_store_path(), f.size()))
        .collect())
}

/// Refuses unless every file the table's newest version names exists: a
/// table missing files is damaged, and rewriting or vacuuming it would
/// bury the evidence (and VACUUM could remove what restoring it needs).
pub(crate) async fn every_file_present(table: &DeltaTable, url: &str) -> Result<()> {
    let store = table.log_store().object_store(None);
    let present: HashSet<Path> = store
        .list(None)
        .map_ok(|o| o.location)
        .try_collect()
        .await
        .map_err(EngineError::object_store(
            url.to_string(),
            "listing the table's files",
        ))?;
    let missing: Vec<String> = active_files(table, url)?
        .into_iter()
        .filter(|(p, _)| !present.contains(p))
        .map(|(p, _)| p.to_string())
        .collect();
    if let Some(first) = missing.first() {
        return Err(EngineError::Config(format!(
            "table {url} names {} file(s) that do not exist (first: {first}); compaction, VACUUM and rewrites refuse to change a damaged table. Restore the files from a backup, or restore the table to an earlier version",
            missing.len()
        )));
    }
    Ok(())
}
