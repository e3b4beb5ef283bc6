//! The version at the retention's edge: the oldest version VACUUM must keep
//! readable, found without listing the log.
//!
//! Time travel to a time reads the newest version committed at or before
//! it (commit times are the commit files' modification times, as delta-rs
//! reads them). So the versions within a retention are that version for
//! "now minus the retention", and every newer one. Delta names commits
//! `{version:020}.json`, in commit order, so that version is found by a
//! binary search over the names: about 20 metadata lookups for a million
//! versions, where listing `_delta_log` would read every entry. Versions
//! whose commit log cleanup removed count as older than the edge: cleanup
//! only removes entries older than the log retention, and the version
//! after them is the oldest a reader can still load.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{EngineError, Result};

/// The version a reader that time-travels to `edge` sees, of a table whose
/// newest version is `newest` and whose files `store` holds (rooted at the
/// table): the newest committed at or before `edge`; if none is, the oldest
/// version whose commit exists.
pub(crate) async fn version_at(
    store: &dyn ObjectStore,
    url: &str,
    newest: u64,
    edge: DateTime<Utc>,
) -> Result<u64> {
    // The first version in 0..=newest committed after `edge`: versions
    // before it are gone or at or before the edge (commit times grow with
    // versions).
    let (mut lo, mut hi) = (0u64, newest + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match committed_at(store, url, mid).await? {
            Some(at) if at > edge => hi = mid,
            _ => lo = mid + 1,
        }
    }
    let Some(before) = lo.checked_sub(1) else {
        return Ok(0);
    };
    // The newest version not after the edge, or, when its commit is gone
    // (cleaned up), the oldest one kept.
    Ok(match committed_at(store, url, before).await? {
        Some(_) => before,
        None => lo.min(newest),
    })
}

/// When `version` was committed (its commit file's modification time), or
/// `None` if its commit does not exist.
async fn committed_at(
    store: &dyn ObjectStore,
    url: &str,
    version: u64,
) -> Result<Option<DateTime<Utc>>> {
    let path = Path::from(format!("_delta_log/{version:020}.json"));
    match store.head(&path).await {
        Ok(meta) => Ok(Some(meta.last_modified)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(EngineError::object_store(
            format!("{url}{path}"),
            "looking up when a version was committed",
        )(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use object_store::local::LocalFileSystem;

    use super::*;

    /// A log of commits `versions`, version `v` committed `minutes_ago(v)`.
    fn log(
        dir: &std::path::Path,
        versions: std::ops::Range<u64>,
        minutes_ago: impl Fn(u64) -> u64,
    ) {
        std::fs::create_dir_all(dir.join("_delta_log")).unwrap();
        for v in versions {
            let path = dir.join(format!("_delta_log/{v:020}.json"));
            let file = std::fs::File::create(&path).unwrap();
            let at = SystemTime::now() - Duration::from_secs(60 * minutes_ago(v));
            file.set_modified(at).unwrap();
        }
    }

    fn minutes_ago(m: i64) -> DateTime<Utc> {
        Utc::now() - chrono::Duration::minutes(m)
    }

    #[tokio::test]
    async fn the_newest_version_committed_at_or_before_the_edge() {
        let dir = tempfile::tempdir().unwrap();
        // Versions 0-9, committed 100, 90, ..., 10 minutes ago.
        log(dir.path(), 0..10, |v| 100 - 10 * v);
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let at = |m| version_at(&store, "t", 9, minutes_ago(m));
        assert_eq!(at(55).await.unwrap(), 4, "committed 60 minutes ago");
        assert_eq!(at(60).await.unwrap(), 4);
        assert_eq!(at(5).await.unwrap(), 9, "the newest");
        assert_eq!(at(500).await.unwrap(), 0, "before the first commit");
    }

    #[tokio::test]
    async fn versions_log_cleanup_removed_count_as_older() {
        let dir = tempfile::tempdir().unwrap();
        // Versions 0-5 were cleaned up; 6-9 committed 40, 30, 20, 10
        // minutes ago.
        log(dir.path(), 6..10, |v| 100 - 10 * v);
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let at = |m| version_at(&store, "t", 9, minutes_ago(m));
        assert_eq!(at(25).await.unwrap(), 7);
        assert_eq!(at(500).await.unwrap(), 6, "the oldest version kept");
    }
}
