//! What a storage root holds on disk, counted the way an operator would
//! with `ls` and `du`: data files, `_delta_log` entries, checkpoint and
//! state bytes. Files that vanish while being counted (compaction, vacuum,
//! pruned manifests) are skipped, since the run goes on while they are read.

use std::collections::BTreeMap;
use std::path::Path;

use super::manifests::named_state_files;

/// A table's directory as it is on disk.
pub struct TableFiles {
    /// Parquet files outside `_delta_log` (live or replaced, until vacuumed).
    pub files: u64,
    /// Files the table's newest version reads (what a full scan opens).
    pub live_files: u64,
    /// Entries of `_delta_log` (commits, checkpoints, checksums).
    pub log_entries: u64,
    /// Bytes of the newest Delta checkpoint (what a reader that sees a new
    /// checkpoint reads whole; it carries the live files and the removes
    /// younger than `delta.deletedFileRetentionDuration`).
    pub checkpoint_bytes: u64,
}

/// Every directory under `root` with a `_delta_log`, by its path relative to
/// the root. Files that vanish while being counted (compaction, vacuum,
/// pruned manifests) are skipped.
pub fn tables_on_disk(root: &Path) -> BTreeMap<String, TableFiles> {
    let mut tables = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let log = dir.join("_delta_log");
        if log.is_dir() {
            let name = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
            tables.insert(
                name,
                TableFiles {
                    files: count_files(&dir, true),
                    live_files: 0,
                    log_entries: entries(&log).count() as u64,
                    checkpoint_bytes: newest_checkpoint_bytes(&log),
                },
            );
            continue;
        }
        dirs.extend(
            entries(&dir)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    tables
}

/// Files the newest version of the table at `dir` reads (0 when it cannot
/// be opened).
pub async fn live_files(dir: &Path) -> u64 {
    let Ok(url) = url::Url::from_directory_path(dir) else {
        return 0;
    };
    match deltalake::open_table(url).await {
        Ok(table) => table.get_file_uris().map_or(0, |f| f.count() as u64),
        Err(_) => 0,
    }
}

/// Bytes of the newest `*.checkpoint.parquet` in `log` (0 if none).
pub fn newest_checkpoint_bytes(log: &Path) -> u64 {
    entries(log)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .max_by_key(|e| e.file_name())
        .and_then(|e| e.metadata().ok())
        .map_or(0, |m| m.len())
}

/// A directory's entries that can still be read.
pub fn entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir).into_iter().flatten().flatten()
}

/// Parquet files under a table directory, outside its `_delta_log`.
pub fn count_files(dir: &Path, top: bool) -> u64 {
    let mut n = 0;
    for entry in entries(dir) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if !(top && entry.file_name() == "_delta_log") {
                n += count_files(&entry.path(), false);
            }
        } else if entry.file_name().to_string_lossy().ends_with(".parquet") {
            n += 1;
        }
    }
    n
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in entries(dir) {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&entry.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// The operator state of warehouse `name`'s newest checkpoint: bytes of
/// the state files it names (what a restore reads: the windows and groups
/// the layers hold, which grow with their windows, an hour's distinct
/// clients, a day's cumulative slices), and bytes of the files it wrote
/// itself (what the epoch brought: with window state kept by parts, only
/// the groups its rows touched).
pub fn state_bytes(root: &Path, name: &str) -> (u64, u64) {
    let Some((epoch, files)) = named_state_files(root, name) else {
        return (0, 0);
    };
    let dir = root.join("_strata/checkpoints").join(name);
    let size = |file: &str| std::fs::metadata(dir.join(file)).map_or(0, |m| m.len());
    let named = files.iter().map(|f| size(f)).sum();
    let prefix = format!("{epoch:020}-");
    let written = entries(&dir.join("state"))
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    (named, written)
}
