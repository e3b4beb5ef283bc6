//! Listing a local table's `_delta_log` from a version on, in time that
//! grows with the versions listed, not with the log.
//!
//! The Delta kernel finds a table's newest commits by listing `_delta_log`
//! from the version it knows ("list after `00000000000000000123`"): after
//! every epoch commit (the committer's new snapshot), before every Flight
//! SQL scan (the newest version) and at every open. On S3 that listing
//! starts after the offset; object_store's local file system walks the
//! whole directory and filters. A table that commits every 200 ms gains
//! 432,000 log entries a day, kept for the 30-day log retention: every
//! commit and every query would read millions of directory entries, and
//! the soak bench saw epochs and point queries slow as the log grew.
//!
//! Delta names commits `{version:020}.json`, contiguous from the oldest
//! kept; checkpoints `{version:020}.checkpoint.parquet`. So the entries
//! after version `v` are found by asking for `v`, `v + 1`, ... until a
//! version has no commit: one metadata lookup per name, and a listing that
//! costs what it returns. Everything else (other prefixes, an offset that
//! is not a version, a first version that is gone, as after log cleanup)
//! is the inner store's full listing.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use deltalake::DeltaResult;
use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use url::Url;

/// The versioned names a log holds for one version, besides its commit.
const BESIDE_COMMIT: [&str; 1] = ["checkpoint.parquet"];

/// Where listing after `offset` under `prefix` can start probing: the
/// version `offset` names, when `prefix` is a `_delta_log` and `offset` a
/// versioned name in it.
///
/// ```
/// use object_store::path::Path;
/// use strata_engine::delta::log_listing::probe_start;
/// let log = Path::from("t/_delta_log");
/// assert_eq!(probe_start(&log, &Path::from("t/_delta_log/00000000000000000123")), Some(123));
/// assert_eq!(probe_start(&log, &Path::from("t/_delta_log/00000000000000000007.json")), Some(7));
/// assert_eq!(probe_start(&log, &Path::from("t/_delta_log/_last_checkpoint")), None);
/// assert_eq!(probe_start(&Path::from("t/part=1"), &Path::from("t/part=1/00000000000000000001")), None);
/// ```
pub fn probe_start(prefix: &Path, offset: &Path) -> Option<u64> {
    if prefix.filename() != Some("_delta_log") {
        return None;
    }
    let name = offset.prefix_match(prefix)?.collect::<Vec<_>>();
    let [name] = name.as_slice() else {
        return None;
    };
    let digits = name.as_ref().get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An object store whose `_delta_log` listings from a version probe the
/// versioned names instead of walking the directory.
pub struct LogListing {
    inner: Arc<dyn ObjectStore>,
}

impl LogListing {
    /// Wraps `inner` (a local file system store).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        LogListing { inner }
    }
}

impl fmt::Debug for LogListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogListing({})", self.inner)
    }
}

impl fmt::Display for LogListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogListing({})", self.inner)
    }
}

/// The log entries after `offset`, from version `start` on; `None` when
/// neither `start` nor the version before it has a commit (the log was
/// cleaned up past it, or the name is not one Delta writes: the caller
/// lists in full).
async fn probe(
    store: &dyn ObjectStore,
    log: &Path,
    start: u64,
    offset: &Path,
) -> Result<Option<Vec<ObjectMeta>>> {
    let mut found = Vec::new();
    let mut version = start;
    while let Some(commit) = head(store, &log.clone().join(format!("{version:020}.json"))).await? {
        found.push(commit);
        for suffix in BESIDE_COMMIT {
            let path = log.clone().join(format!("{version:020}.{suffix}"));
            found.extend(head(store, &path).await?);
        }
        version += 1;
    }
    if version == start {
        // Nothing newer than the version before: an empty listing, as
        // after every commit nobody else made.
        let before = match start.checked_sub(1) {
            Some(v) => head(store, &log.clone().join(format!("{v:020}.json"))).await?,
            None => None,
        };
        return Ok(before.map(|_| Vec::new()));
    }
    found.retain(|m| m.location.as_ref() > offset.as_ref());
    Ok(Some(found))
}

async fn head(store: &dyn ObjectStore, path: &Path) -> Result<Option<ObjectMeta>> {
    match store.head(path).await {
        Ok(meta) => Ok(Some(meta)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl ObjectStore for LogListing {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let Some((log, start)) = prefix.and_then(|p| Some((p.clone(), probe_start(p, offset)?)))
        else {
            return self.inner.list_with_offset(prefix, offset);
        };
        let inner = Arc::clone(&self.inner);
        let offset = offset.clone();
        stream::once(async move {
            match probe(inner.as_ref(), &log, start, &offset).await {
                Ok(Some(found)) => stream::iter(found.into_iter().map(Ok)).boxed(),
                Ok(None) => inner.list_with_offset(Some(&log), &offset),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Builds `file://` stores for delta-rs as its default factory does,
/// wrapped in [`LogListing`].
#[derive(Debug, Default)]
pub struct LocalLogListingFactory;

impl ObjectStoreFactory for LocalLogListingFactory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let (store, path) = object_store::parse_url_opts(url, &config.raw)?;
        Ok((Arc::new(LogListing::new(Arc::from(store))), path))
    }
}

/// Makes delta-rs build every `file://` table's store with
/// [`LocalLogListingFactory`] (once per process).
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(file) = Url::parse("file://") {
            deltalake::logstore::object_store_factories()
                .insert(file, Arc::new(LocalLogListingFactory));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::local::LocalFileSystem;

    /// The versioned names listed (the entries the kernel reads; it skips
    /// `_last_checkpoint`, which the full listing also returns).
    async fn listed(store: &dyn ObjectStore, prefix: &Path, offset: &Path) -> Vec<String> {
        let mut names: Vec<String> = store
            .list_with_offset(Some(prefix), offset)
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_filter(|name| std::future::ready(name.starts_with(|c: char| c.is_ascii_digit())))
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    /// The probing listing returns what the full listing returns, for
    /// every offset the kernel uses, and falls back where it cannot probe.
    #[tokio::test]
    async fn probing_lists_what_the_directory_holds() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let probing = LogListing::new(Arc::clone(&local));
        let log = Path::from("t/_delta_log");
        for v in 3..=12u64 {
            local
                .put(&log.clone().join(format!("{v:020}.json")), "{}".into())
                .await
                .unwrap();
        }
        for name in [
            format!("{:020}.checkpoint.parquet", 10),
            "_last_checkpoint".to_string(),
        ] {
            local
                .put(&log.clone().join(name), "x".into())
                .await
                .unwrap();
        }
        for offset in [
            format!("{:020}", 10),
            format!("{:020}.json", 10),
            format!("{:020}", 12),
            format!("{:020}", 13), // nothing newer
            format!("{:020}", 14), // not probed: the full listing
            format!("{:020}", 0),  // cleaned up: the full listing
            "_last_checkpoint".to_string(),
        ] {
            let offset = log.clone().join(offset.as_str());
            assert_eq!(
                listed(&probing, &log, &offset).await,
                listed(local.as_ref(), &log, &offset).await,
                "after {offset}"
            );
        }
        let from_ten = listed(
            &probing,
            &log,
            &log.clone().join(format!("{:020}", 10).as_str()),
        )
        .await;
        assert_eq!(
            from_ten.len(),
            4,
            "10.json, 10.checkpoint.parquet, 11 and 12: {from_ten:?}"
        );
    }
}
