//! Deployed versions of a warehouse file: what each `strata run` ran.
//!
//! A warehouse changes while it runs (a field added, a window's SQL fixed),
//! and the tables only say what was written, not by which SQL. So every run
//! records the file it ran beside the checkpoints, under
//! `<root>/_strata/versions/<dataflow>/`: the file itself
//! (`<first-epoch>-<hash>.yaml`) and a small JSON index entry
//! (`<first-epoch>-<hash>.json`: hash, first epoch, when, where from), both
//! written create-only, so a record is never rewritten. Each manifest names
//! the hash it was written under; `strata history` joins the two into the
//! epoch range each version ran.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::storage::StorageRoot;

/// A warehouse file as a run deploys it.
#[derive(Clone, PartialEq, Eq)]
pub struct WarehouseVersion {
    /// sha256 of the file's bytes, lowercase hex.
    pub hash: String,
    /// The file's text.
    pub content: String,
    /// Where it was read from (for people reading the history).
    pub source: String,
}

impl std::fmt::Debug for WarehouseVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarehouseVersion")
            .field("hash", &self.hash)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl WarehouseVersion {
    /// The version of a file's text.
    pub fn of(content: String, source: &str) -> Self {
        WarehouseVersion {
            hash: hash_of(content.as_bytes()),
            content,
            source: source.to_string(),
        }
    }

    /// The hash's first 12 characters, as logs and tables show it.
    pub fn short(&self) -> &str {
        short_hash(&self.hash)
    }
}

/// The first 12 characters of a hash.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// sha256 of `bytes`, lowercase hex.
pub fn hash_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One deployment: a version that a run started at `first_epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// sha256 of the file.
    pub hash: String,
    /// The first epoch the run would commit.
    pub first_epoch: u64,
    /// When the run started, ms since the Unix epoch.
    pub deployed_at_ms: i64,
    /// Where the file was read from.
    pub source: String,
    /// The recorded file, relative to the versions directory.
    pub file: String,
}

/// The recorded versions of one dataflow.
pub struct VersionStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
}

impl VersionStore {
    /// The versions of `dataflow` under `root`.
    pub fn open(root: &StorageRoot, dataflow: &str) -> Result<Self> {
        let sub = format!("_strata/versions/{dataflow}/");
        let (store, prefix) = root.object_store(&sub)?;
        Ok(Self::new(store, prefix, &format!("{}{sub}", root.url())))
    }

    /// The versions in `store` under `prefix` (`location` names it in
    /// errors): any object store, an in-memory one in tests.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, location: &str) -> Self {
        VersionStore {
            store,
            prefix,
            location: location.to_string(),
        }
    }

    fn err(&self, context: &str) -> impl FnOnce(object_store::Error) -> EngineError {
        EngineError::object_store(&self.location, context)
    }

    /// Records that `version` runs from `first_epoch` on. A run restarted
    /// with the same file before it committed anything finds its record
    /// there already, and keeps it.
    pub async fn record(&self, version: &WarehouseVersion, first_epoch: u64) -> Result<Deployment> {
        let stem = format!("{first_epoch:020}-{}", version.hash);
        let deployment = Deployment {
            hash: version.hash.clone(),
            first_epoch,
            deployed_at_ms: chrono::Utc::now().timestamp_millis(),
            source: version.source.clone(),
            file: format!("{stem}.yaml"),
        };
        // The file first: an index entry always has its file.
        self.create(
            &format!("{stem}.yaml"),
            version.content.clone().into_bytes(),
        )
        .await?;
        let index = serde_json::to_vec(&deployment)
            .map_err(|e| EngineError::Config(format!("cannot serialize a version record: {e}")))?;
        self.create(&format!("{stem}.json"), index).await?;
        Ok(deployment)
    }

    async fn create(&self, name: &str, body: Vec<u8>) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(
                &self.prefix.clone().join(name),
                PutPayload::from(body),
                opts,
            )
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.err("recording the warehouse version")(e)),
        }
    }

    /// Every deployment recorded, oldest first.
    pub async fn list(&self) -> Result<Vec<Deployment>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(self.err("listing versions"))?;
        let mut out = Vec::new();
        for object in objects {
            if object.location.extension() != Some("json") {
                continue;
            }
            let bytes = self
                .store
                .get(&object.location)
                .await
                .map_err(self.err("reading a version record"))?
                .bytes()
                .await
                .map_err(self.err("reading a version record"))?;
            let deployment: Deployment =
                serde_json::from_slice(&bytes).map_err(|e| EngineError::CorruptManifest {
                    path: format!("{}{}", self.location, object.location),
                    reason: format!("not a version record: {e}"),
                })?;
            out.push(deployment);
        }
        out.sort_by_key(|d| (d.first_epoch, d.deployed_at_ms));
        Ok(out)
    }

    /// The text of a recorded file.
    pub async fn content(&self, deployment: &Deployment) -> Result<String> {
        let bytes = self
            .store
            .get(&self.prefix.clone().join(deployment.file.as_str()))
            .await
            .map_err(self.err("reading a recorded warehouse file"))?
            .bytes()
            .await
            .map_err(self.err("reading a recorded warehouse file"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn store() -> VersionStore {
        VersionStore::new(Arc::new(InMemory::new()), Path::from("v"), "memory://v/")
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_of(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn records_are_listed_by_first_epoch_and_kept_on_a_rerun() {
        let versions = store();
        let a = WarehouseVersion::of("name: a\n".into(), "w.yaml");
        let b = WarehouseVersion::of("name: b\n".into(), "w.yaml");
        versions.record(&b, 12).await.unwrap();
        let first = versions.record(&a, 1).await.unwrap();
        // The same file restarted before committing: one record.
        versions.record(&a, 1).await.unwrap();
        let listed = versions.list().await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|d| (d.first_epoch, d.hash.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, a.hash.as_str()), (12, b.hash.as_str())]
        );
        assert_eq!(listed[0].deployed_at_ms, first.deployed_at_ms);
        assert_eq!(versions.content(&listed[1]).await.unwrap(), "name: b\n");
    }
}
