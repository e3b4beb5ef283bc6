//! Reading and writing manifests in the object store.
//!
//! A manifest is written with a create-only put: object stores make that
//! atomic (a local rename, an S3 conditional put), so a manifest is either
//! whole or absent, and a second process running the same pipeline fails
//! loudly instead of interleaving epochs with the first.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::checkpoint::manifest::Manifest;
use crate::error::{EngineError, Result};
use crate::storage::StorageRoot;

/// The manifests of one pipeline, under `<root>/_strata/checkpoints/<pipeline>/`.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    pipeline: String,
}

impl CheckpointStore {
    /// The checkpoint store of `pipeline` under `root`.
    pub fn open(root: &StorageRoot, pipeline: &str) -> Result<Self> {
        let sub = format!("_strata/checkpoints/{pipeline}/");
        let (store, prefix) = root.object_store(&sub)?;
        Ok(CheckpointStore {
            store,
            prefix,
            location: format!("{}{sub}", root.url()),
            pipeline: pipeline.to_string(),
        })
    }

    fn err(&self, context: &str) -> impl FnOnce(object_store::Error) -> EngineError {
        let location = self.location.clone();
        let context = context.to_string();
        move |source| EngineError::ObjectStore {
            location,
            context,
            source,
        }
    }

    /// The epochs that have a manifest, oldest first.
    pub async fn epochs(&self) -> Result<Vec<u64>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(self.err("listing manifests"))?;
        let mut epochs: Vec<u64> = objects
            .iter()
            .filter_map(|o| o.location.filename().and_then(Manifest::epoch_of))
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// The newest manifest, if the pipeline has committed any epoch.
    pub async fn latest(&self) -> Result<Option<Manifest>> {
        match self.epochs().await?.last() {
            Some(&epoch) => self.read(epoch).await.map(Some),
            None => Ok(None),
        }
    }

    /// The manifest of `epoch`.
    pub async fn read(&self, epoch: u64) -> Result<Manifest> {
        let path = self.prefix.clone().join(Manifest::file_name(epoch));
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(self.err("reading a manifest"))?
            .bytes()
            .await
            .map_err(self.err("reading a manifest"))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| EngineError::CorruptManifest {
                path: format!("{}{}", self.location, Manifest::file_name(epoch)),
                reason: e.to_string(),
            })?;
        if manifest.epoch != epoch || manifest.pipeline != self.pipeline {
            return Err(EngineError::CorruptManifest {
                path: format!("{}{}", self.location, Manifest::file_name(epoch)),
                reason: format!(
                    "it is epoch {} of pipeline `{}`",
                    manifest.epoch, manifest.pipeline
                ),
            });
        }
        Ok(manifest)
    }

    /// Writes `manifest`, failing if that epoch already has one.
    pub async fn write(&self, manifest: &Manifest) -> Result<()> {
        let path = self
            .prefix
            .clone()
            .join(Manifest::file_name(manifest.epoch));
        let body = serde_json::to_vec(manifest)
            .map_err(|e| EngineError::Config(format!("cannot serialize manifest: {e}")))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(EngineError::ConcurrentRun {
                pipeline: self.pipeline.clone(),
                epoch: manifest.epoch,
            }),
            Err(e) => Err(self.err("writing a manifest")(e)),
        }
    }

    /// Deletes all but the newest `keep` manifests.
    pub async fn prune(&self, keep: usize) -> Result<()> {
        let epochs = self.epochs().await?;
        let excess = epochs.len().saturating_sub(keep);
        for epoch in &epochs[..excess] {
            let path = self.prefix.clone().join(Manifest::file_name(*epoch));
            self.store
                .delete(&path)
                .await
                .map_err(self.err("deleting an old manifest"))?;
        }
        Ok(())
    }
}
