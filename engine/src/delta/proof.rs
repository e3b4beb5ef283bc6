//! What a destructive step checks before it changes anything.

use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{EngineError, Result};

/// How many files [`every_file_present`] looks up at once.
const LOOKUPS_AT_ONCE: usize = 32;

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
///
/// Asks for each named file (a metadata lookup, a few at a time) rather
/// than listing the table: the table's directory also holds every file
/// replaced within the VACUUM retention (at 200 ms epochs, thousands an
/// hour for 7 days), while compaction keeps the named ones to a few
/// hundred, so the proof costs what the version holds, not what the
/// retention keeps.
pub(crate) async fn every_file_present(table: &DeltaTable, url: &str) -> Result<()> {
    let store = table.log_store().object_store(None);
    let mut missing: Vec<String> = stream::iter(active_files(table, url)?)
        .map(|(path, _)| {
            let store = store.clone();
            async move {
                match store.head(&path).await {
                    Ok(_) => Ok(None),
                    Err(object_store::Error::NotFound { .. }) => Ok(Some(path.to_string())),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .try_filter_map(|m| std::future::ready(Ok(m)))
        .try_collect()
        .await
        .map_err(EngineError::object_store(
            url.to_string(),
            "looking up the table's files",
        ))?;
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(EngineError::Config(format!(
            "table {url} names {} file(s) that do not exist (first: {first}); compaction, VACUUM and rewrites refuse to change a damaged table. Restore the files from a backup, or restore the table to an earlier version",
            missing.len()
        )));
    }
    Ok(())
}
