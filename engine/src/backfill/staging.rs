//! A backfill's staging directories: one run per layer at a time, and the
//! removal of what killed runs left.
//!
//! A run stages under `<root>/_strata/backfill/<layer>-<run>/` and, on
//! start, removes the directories earlier runs of the layer left behind
//! (a SIGKILL leaves its staging). That is only safe while no other run of
//! the layer is using one, so a run holds an OS file lock on
//! `<root>/_strata/backfill/<layer>.lock` for its whole life: the kernel
//! releases it however the process ends, so a killed run never leaves a
//! stale lock to clear by hand. Local roots only: object stores have no
//! such lock, so there a run removes its own staging when it ends (swapped
//! or refused), and a killed run's staging stays until removed by hand (or
//! by a lifecycle rule on `_strata/backfill/`).

use std::fs::{File, OpenOptions, TryLockError};

use futures::{StreamExt, TryStreamExt};
use tracing::{info, warn};

use crate::storage::StorageRoot;

/// The staging root, under the warehouse's storage root.
pub(crate) const DIR: &str = "_strata/backfill";

/// Held while a backfill of a layer runs; released on drop (or exit).
#[derive(Debug)]
pub(crate) struct LayerLock {
    _file: Option<File>,
}

/// Takes the layer's backfill lock, or says which run holds it.
pub(crate) fn lock_layer(root: &StorageRoot, layer: &str) -> Result<LayerLock, String> {
    let Ok(dir) = root.child(DIR) else {
        return Ok(LayerLock { _file: None });
    };
    let Ok(dir) = dir.url().to_file_path() else {
        return Ok(LayerLock { _file: None });
    };
    let path = dir.join(format!("{layer}.lock"));
    let failed = |what: &str, e: std::io::Error| {
        format!(
            "{what} {}: {e}; check that the storage root is writable",
            path.display()
        )
    };
    std::fs::create_dir_all(&dir).map_err(|e| failed("creating the directory of", e))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| failed("opening", e))?;
    match file.try_lock() {
        Ok(()) => Ok(LayerLock { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => Err(format!(
            "another `strata backfill` of `{layer}` is running (it holds {}); wait for it to finish, or stop it, then run this again",
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(failed("locking", e)),
    }
}

/// Whether a backfill of `layer` runs now: its lock is held. It is probed
/// with a shared lock held for an instant (a backfill starting in that
/// instant would be refused as if another ran: run it again). `None` where
/// it cannot be told (object-store roots have no lock).
pub fn running(root: &StorageRoot, layer: &str) -> Option<bool> {
    let dir = root.child(DIR).ok()?.url().to_file_path().ok()?;
    let file = match File::open(dir.join(format!("{layer}.lock"))) {
        Ok(file) => file,
        // Never backfilled here.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(TryLockError::WouldBlock) => Some(true),
        Err(TryLockError::Error(_)) => None,
    }
}

/// Removes staging directories earlier runs of this layer's backfill left
/// (killed, or interrupted). Call it holding the layer's lock.
pub(crate) fn remove_abandoned(root: &StorageRoot, layer: &str) {
    let Ok(dir) = root.child(DIR) else {
        return;
    };
    let Ok(path) = dir.url().to_file_path() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&path) else {
        return;
    };
    let prefix = format!("{layer}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let is_run = name.len() == prefix.len() + 12 && entry.path().is_dir();
        if name.starts_with(&prefix) && is_run {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    info!(dir = %entry.path().display(), "removed an earlier backfill's staging")
                }
                Err(e) => {
                    warn!(dir = %entry.path().display(), error = %e, "could not remove an earlier backfill's staging")
                }
            }
        }
    }
}

/// Removes this run's staging once its tables are swapped in, or the swap
/// was refused: the directory on a local root, every object under the
/// staging prefix on an object store.
pub(crate) async fn remove_staging(staging: &StorageRoot) {
    if let Ok(path) = staging.url().to_file_path() {
        if let Err(e) = std::fs::remove_dir_all(&path) {
            warn!(dir = %path.display(), error = %e, "could not remove the backfill's staging");
        }
        return;
    }
    match remove_objects(staging).await {
        Ok(n) => info!(staging = %staging.url(), objects = n, "removed the backfill's staging"),
        Err(e) => {
            warn!(staging = %staging.url(), error = %e, "could not remove the backfill's staging; delete its prefix by hand")
        }
    }
}

async fn remove_objects(staging: &StorageRoot) -> crate::error::Result<usize> {
    let (store, prefix) = staging.object_store("")?;
    let failed = |source| {
        crate::error::EngineError::object_store(
            staging.url().to_string(),
            "removing a backfill's staging",
        )(source)
    };
    let locations = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .boxed();
    let mut deleted = store.delete_stream(locations);
    let mut n = 0;
    while let Some(done) = deleted.next().await {
        done.map_err(failed)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &std::path::Path) -> StorageRoot {
        let url = url::Url::from_directory_path(dir).unwrap_or_else(|()| panic!("{dir:?}"));
        StorageRoot::new(url.as_str(), Default::default()).unwrap_or_else(|e| panic!("root: {e}"))
    }

    #[test]
    fn a_running_backfill_is_seen_by_its_lock() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = root(dir.path());
        assert_eq!(running(&root, "dws"), Some(false));
        let lock = lock_layer(&root, "dws").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(running(&root, "dws"), Some(true));
        assert_eq!(running(&root, "ods"), Some(false));
        drop(lock);
        assert_eq!(running(&root, "dws"), Some(false));
    }

    #[test]
    fn one_run_per_layer_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = root(dir.path());
        let held = lock_layer(&root, "dws_city").unwrap_or_else(|e| panic!("{e}"));
        let refused = lock_layer(&root, "dws_city").map(|_| ()).unwrap_err();
        assert!(
            refused.contains("another `strata backfill` of `dws_city`"),
            "{refused}"
        );
        assert!(
            lock_layer(&root, "dws_agent").is_ok(),
            "other layers are not held"
        );
        drop(held);
        assert!(lock_layer(&root, "dws_city").is_ok());
    }

    #[test]
    fn abandoned_runs_of_the_layer_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = dir.path().join(DIR);
        for name in [
            "dws_city-0123456789ab",
            "dws_city_hourly-0123456789ab",
            "dws_city-short",
        ] {
            std::fs::create_dir_all(base.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
        let _lock = lock_layer(&root(dir.path()), "dws_city").unwrap_or_else(|e| panic!("{e}"));
        remove_abandoned(&root(dir.path()), "dws_city");
        let mut left: Vec<String> = std::fs::read_dir(&base)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "dws_city-short",
                "dws_city.lock",
                "dws_city_hourly-0123456789ab"
            ]
        );
    }
}
