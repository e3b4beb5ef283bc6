//! Reading and writing manifests and operator state in the object store.
//!
//! A manifest is written with a create-only put: object stores make that
//! atomic (a local rename, an S3 conditional put), so a manifest is either
//! whole or absent, and a second process running the same pipeline fails
//! loudly instead of interleaving epochs with the first.
//!
//! State files are create-only too, and named by epoch *and run*: a run
//! that lost its lease while stalled can never overwrite a state file the
//! next run's manifest names, even for the same epoch (the manifest is the
//! commit point; only the files it names are read).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::checkpoint::format::{FormatError, decode, encode};
use crate::checkpoint::manifest::{LayerCheckpoint, Manifest};
use crate::error::{EngineError, Result};
use crate::storage::{StorageRoot, numbered_objects};

/// The checkpoints of one dataflow, under
/// `<root>/_strata/checkpoints/<dataflow>/`: a manifest per epoch, and the
/// operator state files they name, under `state/`.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    dataflow: String,
    /// This process's run, in the names of the state files it writes.
    run: String,
}

impl CheckpointStore {
    /// The checkpoint store of `dataflow` under `root`.
    pub fn open(root: &StorageRoot, dataflow: &str) -> Result<Self> {
        let sub = format!("_strata/checkpoints/{dataflow}/");
        let (store, prefix) = root.object_store(&sub)?;
        Ok(Self::new(
            store,
            prefix,
            &format!("{}{sub}", root.url()),
            dataflow,
        ))
    }

    /// The checkpoint store of `dataflow` in `store` under `prefix`
    /// (`location` names it in errors): any object store, an in-memory one
    /// in tests.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, location: &str, dataflow: &str) -> Self {
        CheckpointStore {
            store,
            prefix,
            location: location.to_string(),
            dataflow: dataflow.to_string(),
            run: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        }
    }

    /// The same checkpoints, for a new run of the dataflow: the state files
    /// it writes carry a run id of their own.
    pub fn for_run(&self) -> Self {
        Self::new(
            self.store.clone(),
            self.prefix.clone(),
            &self.location,
            &self.dataflow,
        )
    }

    fn err(&self, context: &str) -> impl FnOnce(object_store::Error) -> EngineError {
        EngineError::object_store(&self.location, context)
    }

    /// The epochs that have a manifest, oldest first.
    pub async fn epochs(&self) -> Result<Vec<u64>> {
        numbered_objects(self.store.as_ref(), &self.prefix, Manifest::epoch_of)
            .await
            .map_err(self.err("listing manifests"))
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
        let path = format!("{}{}", self.location, Manifest::file_name(epoch));
        let manifest = decode(&bytes).map_err(|e| match e {
            FormatError::Unreadable(reason) => EngineError::CorruptManifest { path, reason },
            other => EngineError::ManifestFormat {
                path,
                reason: other.to_string(),
            },
        })?;
        if manifest.epoch != epoch || manifest.dataflow != self.dataflow {
            return Err(EngineError::CorruptManifest {
                path: format!("{}{}", self.location, Manifest::file_name(epoch)),
                reason: format!(
                    "it is epoch {} of dataflow `{}`",
                    manifest.epoch, manifest.dataflow
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
        let body = encode(manifest)
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
                pipeline: self.dataflow.clone(),
                epoch: manifest.epoch,
            }),
            Err(e) => Err(self.err("writing a manifest")(e)),
        }
    }

    /// Writes a layer's operator state for `epoch`; returns its name for
    /// the manifest, and its size in bytes.
    pub async fn write_state(
        &self,
        epoch: u64,
        layer: &str,
        state: &RecordBatch,
    ) -> Result<(String, u64)> {
        let name = format!("state/{epoch:020}-{}-{layer}.arrow", self.run);
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &state.schema())
                .map_err(EngineError::arrow("encoding operator state"))?;
            writer
                .write(state)
                .map_err(EngineError::arrow("encoding operator state"))?;
            writer
                .finish()
                .map_err(EngineError::arrow("encoding operator state"))?;
        }
        let path = self
            .prefix
            .clone()
            .join("state")
            .join(name.trim_start_matches("state/"));
        let size = bytes.len() as u64;
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&path, PutPayload::from(bytes), create)
            .await
            .map_err(self.err("writing operator state"))?;
        Ok((name, size))
    }

    /// Reads a state file a manifest names.
    pub async fn read_state(&self, name: &str) -> Result<RecordBatch> {
        let path = self
            .prefix
            .clone()
            .join("state")
            .join(name.trim_start_matches("state/"));
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(self.err("reading operator state"))?
            .bytes()
            .await
            .map_err(self.err("reading operator state"))?;
        let corrupt = |reason: String| EngineError::CorruptManifest {
            path: format!("{}{name}", self.location),
            reason,
        };
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| corrupt(e.to_string()))?;
        reader
            .next()
            .ok_or_else(|| corrupt("it holds no batch".into()))?
            .map_err(|e| corrupt(e.to_string()))
    }

    /// A layer's state as a checkpoint recorded it: its whole state file,
    /// or the rows of the state files its parts are in (each file read
    /// once); `None` when it kept none.
    pub async fn read_layer_state(&self, layer: &LayerCheckpoint) -> Result<Option<RecordBatch>> {
        if let Some(file) = &layer.state {
            return self.read_state(file).await.map(Some);
        }
        let mut names: Vec<&str> = layer.state_slices.iter().map(|s| s.file.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let read = futures::future::try_join_all(names.iter().map(|n| self.read_state(n))).await?;
        let files: HashMap<&str, RecordBatch> = names.into_iter().zip(read).collect();
        let mut parts = Vec::with_capacity(layer.state_slices.len());
        for slice in &layer.state_slices {
            let Some(file) = files.get(slice.file.as_str()) else {
                continue;
            };
            let (offset, rows) = (slice.offset as usize, slice.rows as usize);
            if offset.saturating_add(rows) > file.num_rows() {
                return Err(EngineError::CorruptManifest {
                    path: format!("{}{}", self.location, slice.file),
                    reason: format!(
                        "layer `{}`'s checkpoint names rows {offset}..{} of it, which holds {}",
                        layer.name,
                        offset + rows,
                        file.num_rows()
                    ),
                });
            }
            parts.push(file.slice(offset, rows));
        }
        match parts.first() {
            Some(first) => concat_batches(&first.schema(), &parts)
                .map(Some)
                .map_err(EngineError::arrow("gathering operator state")),
            None => Ok(None),
        }
    }

    /// Deletes all but the newest `keep` manifests, and state files of the
    /// epochs they leave that the oldest manifest kept does not name (a
    /// layer kept by parts names the files of earlier epochs its unchanged
    /// parts are in; once a manifest stops naming a file, no newer one
    /// names it, so what the oldest kept one names is all that is needed).
    pub async fn prune(&self, keep: usize) -> Result<()> {
        let epochs = self.epochs().await?;
        let excess = epochs.len().saturating_sub(keep);
        let Some(&oldest_kept) = epochs.get(excess) else {
            return Ok(());
        };
        let named: HashSet<String> = self
            .read(oldest_kept)
            .await?
            .layers
            .iter()
            .flat_map(|l| {
                l.state
                    .iter()
                    .cloned()
                    .chain(l.state_slices.iter().map(|s| s.file.clone()))
            })
            .collect();
        for epoch in &epochs[..excess] {
            let path = self.prefix.clone().join(Manifest::file_name(*epoch));
            self.store
                .delete(&path)
                .await
                .map_err(self.err("deleting an old manifest"))?;
        }
        let states: Vec<_> = self
            .store
            .list(Some(&self.prefix.clone().join("state")))
            .try_collect()
            .await
            .map_err(self.err("listing state files"))?;
        for state in states {
            let Some(file) = state.location.filename() else {
                continue;
            };
            let epoch = file.split('-').next().and_then(|e| e.parse::<u64>().ok());
            if epoch.is_some_and(|e| e < oldest_kept) && !named.contains(&format!("state/{file}")) {
                self.store
                    .delete(&state.location)
                    .await
                    .map_err(self.err("deleting old state"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::record_batch::RecordBatch;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::CheckpointStore;
    use crate::checkpoint::manifest::{LayerCheckpoint, Manifest};
    use crate::checkpoint::state_log::StateSlice;

    fn batch(v: i64) -> RecordBatch {
        many(&[v])
    }

    fn many(v: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from(v.to_vec())) as arrow::array::ArrayRef,
        )])
        .unwrap_or_else(|e| panic!("a batch: {e}"))
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        column.map(|c| c.values().to_vec()).unwrap_or_default()
    }

    fn manifest(epoch: u64, state: Option<String>, slices: &[(&str, u64, u64)]) -> Manifest {
        Manifest {
            format: 3,
            dataflow: "w".into(),
            epoch,
            created_at_ms: 0,
            sources: vec![],
            layers: vec![LayerCheckpoint {
                name: "dws".into(),
                watermark: None,
                state,
                state_slices: slices
                    .iter()
                    .map(|(file, offset, rows)| StateSlice {
                        file: file.to_string(),
                        offset: *offset,
                        rows: *rows,
                    })
                    .collect(),
                published: Default::default(),
                lookups: vec![],
                shape: None,
            }],
            sinks: vec![],
            version: None,
        }
    }

    /// A layer kept by parts reads its rows from the files its slices
    /// name; pruning keeps every file a kept manifest names, however old,
    /// and lets them go once none does.
    #[tokio::test]
    async fn state_kept_by_parts_is_read_from_its_slices_and_outlives_pruning_while_named() {
        let memory: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let store = CheckpointStore::new(memory.clone(), Path::from("c"), "memory://c/", "w");
        fn ok<T>(e: crate::error::EngineError) -> T {
            panic!("{e}")
        }
        let (first, _) = store
            .write_state(1, "dws", &many(&[1, 2, 3]))
            .await
            .unwrap_or_else(ok);
        let (second, _) = store
            .write_state(2, "dws", &many(&[20]))
            .await
            .unwrap_or_else(ok);
        let by_parts = [
            (first.as_str(), 0, 1),
            (first.as_str(), 2, 1),
            (second.as_str(), 0, 1),
        ];
        store
            .write(&manifest(1, None, &[(first.as_str(), 0, 3)]))
            .await
            .unwrap_or_else(ok);
        for epoch in 2..=4 {
            store
                .write(&manifest(epoch, None, &by_parts))
                .await
                .unwrap_or_else(ok);
        }
        let read = |m: Manifest| {
            let store = &store;
            async move { store.read_layer_state(&m.layers[0]).await }
        };
        let state = read(manifest(4, None, &by_parts)).await.unwrap_or_else(ok);
        assert_eq!(state.as_ref().map(values), Some(vec![1, 3, 20]));

        // Epochs 1 and 2 go; their files stay, epoch 3 still names them.
        store.prune(2).await.unwrap_or_else(ok);
        assert_eq!(store.epochs().await.unwrap_or_else(ok), vec![3, 4]);
        let state = read(store.read(4).await.unwrap_or_else(ok))
            .await
            .unwrap_or_else(ok);
        assert_eq!(state.as_ref().map(values), Some(vec![1, 3, 20]));

        // A checkpoint with every part whole: nothing names them any more.
        let (whole, _) = store
            .write_state(5, "dws", &many(&[1, 3, 20]))
            .await
            .unwrap_or_else(ok);
        store
            .write(&manifest(5, Some(whole.clone()), &[]))
            .await
            .unwrap_or_else(ok);
        store.prune(1).await.unwrap_or_else(ok);
        assert!(
            store.read_state(&first).await.is_err(),
            "{first} was pruned"
        );
        assert!(
            store.read_state(&second).await.is_err(),
            "{second} was pruned"
        );
        let state = read(manifest(5, Some(whole), &[])).await.unwrap_or_else(ok);
        assert_eq!(state.as_ref().map(values), Some(vec![1, 3, 20]));

        // Rows a file does not have: refused, naming the file.
        let (sixth, _) = store
            .write_state(6, "dws", &many(&[7]))
            .await
            .unwrap_or_else(ok);
        let e = read(manifest(6, None, &[(sixth.as_str(), 0, 2)]))
            .await
            .expect_err("refused");
        assert!(e.to_string().contains(&sixth), "{e}");
    }

    #[tokio::test]
    async fn two_runs_writing_the_same_epochs_state_never_overwrite_each_other() {
        let memory: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let open = || CheckpointStore::new(memory.clone(), Path::from("c"), "memory://c/", "w");
        let (stalled, next) = (open(), open());
        let theirs = next.write_state(7, "dws", &batch(1)).await;
        let mine = stalled.write_state(7, "dws", &batch(2)).await;
        let (theirs, mine) = (
            theirs
                .map(|(name, _)| name)
                .unwrap_or_else(|e| panic!("{e}")),
            mine.map(|(name, _)| name).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_ne!(theirs, mine);
        let read = next
            .read_state(&theirs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, batch(1));
        // One run never writes a state file twice: a second write fails.
        assert!(next.write_state(7, "dws", &batch(3)).await.is_err());
        assert_eq!(
            next.read_state(&theirs)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            batch(1)
        );
    }
}
