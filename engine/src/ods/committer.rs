//! The sink side of an ODS pipeline: its two Delta tables and its
//! checkpoint store, driven through the commit protocol one epoch at a time.

use tracing::{debug, info, warn};

use crate::checkpoint::manifest::{MANIFEST_FORMAT, Manifest};
use crate::checkpoint::store::CheckpointStore;
use crate::delta::two_phase_sink::DeltaSink;
use crate::error::{EngineError, Result};
use crate::failpoint::{self, Point};
use crate::kafka::offsets::SourceOffsets;
use crate::ods::columns::{DEAD_LETTER_SUFFIX, EVENT_DATE, dead_letter_schema};
use crate::ods::record_stage::StagedBatches;
use crate::storage::StorageRoot;

/// Where a pipeline resumes after recovery.
pub(crate) struct Resume {
    /// Next offset per partition (empty: no checkpoint yet).
    pub(crate) offsets: SourceOffsets,
    /// The last committed epoch (0: none).
    pub(crate) epoch: u64,
}

pub(crate) struct EpochCommitter {
    pipeline: String,
    store: CheckpointStore,
    rows: DeltaSink,
    dead_letters: DeltaSink,
    retain: usize,
}

impl EpochCommitter {
    /// Opens (or creates) the layer's table and dead-letter table.
    pub(crate) async fn open(
        pipeline: &str,
        storage: &StorageRoot,
        rows_schema: arrow::datatypes::SchemaRef,
        retain: usize,
    ) -> Result<Self> {
        let store = CheckpointStore::open(storage, pipeline)?;
        let table = storage.table("ods", pipeline)?;
        let dead_table = storage.table("ods", &format!("{pipeline}{DEAD_LETTER_SUFFIX}"))?;
        let rows = DeltaSink::open(&table, rows_schema, &[EVENT_DATE], pipeline).await?;
        let dead_letters =
            DeltaSink::open(&dead_table, dead_letter_schema(), &[], pipeline).await?;
        Ok(EpochCommitter {
            pipeline: pipeline.to_string(),
            store,
            rows,
            dead_letters,
            retain,
        })
    }

    /// Finishes the newest checkpoint's table commits (a crash may have come
    /// between its manifest and them) and says where to resume.
    pub(crate) async fn recover(&mut self) -> Result<Resume> {
        let latest = self.store.latest().await?;
        let epoch = latest.as_ref().map_or(0, |m| m.epoch);
        for sink in [&self.rows, &self.dead_letters] {
            if let Some(held) = sink.committed_epoch()
                && held > epoch
            {
                return Err(EngineError::Pipeline {
                    pipeline: self.pipeline.clone(),
                    reason: format!(
                        "table {} holds epoch {held}, but the newest checkpoint is {epoch}: the checkpoints under _strata/checkpoints/ were removed or replaced. Restore them, or move the layer's tables aside to rebuild it from the topic",
                        sink.url()
                    ),
                });
            }
        }
        let Some(manifest) = latest else {
            info!(pipeline = %self.pipeline, "no checkpoint yet; starting from the configured position");
            return Ok(Resume {
                offsets: SourceOffsets::default(),
                epoch: 0,
            });
        };
        for pending in &manifest.sinks {
            let sink = if pending.table == self.rows.url() {
                &mut self.rows
            } else if pending.table == self.dead_letters.url() {
                &mut self.dead_letters
            } else {
                warn!(pipeline = %self.pipeline, table = %pending.table, "checkpoint names a table this layer no longer writes; skipping it");
                continue;
            };
            let outcome = sink.commit(manifest.epoch, pending).await?;
            debug!(pipeline = %self.pipeline, table = %pending.table, epoch, ?outcome, "recovery commit");
        }
        info!(pipeline = %self.pipeline, epoch, partitions = manifest.offsets.len(), "resuming from checkpoint");
        Ok(Resume {
            offsets: manifest.offsets,
            epoch,
        })
    }

    /// Streams an epoch's rows and dead letters into the tables' files.
    pub(crate) async fn write(&mut self, staged: StagedBatches) -> Result<()> {
        if let Some(rows) = staged.rows {
            self.rows.write(rows).await?;
        }
        if let Some(dead) = staged.dead_letters {
            self.dead_letters.write(dead).await?;
        }
        Ok(())
    }

    /// Commits `epoch`, which read up to `offsets`: files, then the manifest
    /// (the commit point), then the tables. Returns the manifest.
    pub(crate) async fn commit_epoch(
        &mut self,
        epoch: u64,
        offsets: SourceOffsets,
    ) -> Result<Manifest> {
        let sinks = vec![
            self.rows.pre_commit().await?,
            self.dead_letters.pre_commit().await?,
        ];
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            pipeline: self.pipeline.clone(),
            epoch,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            offsets,
            sinks,
        };
        failpoint::hit(Point::BeforeManifest, epoch);
        self.store.write(&manifest).await?;
        failpoint::hit(Point::AfterManifest, epoch);
        self.rows.commit(epoch, &manifest.sinks[0]).await?;
        failpoint::hit(Point::BetweenTableCommits, epoch);
        self.dead_letters.commit(epoch, &manifest.sinks[1]).await?;
        if let Err(e) = self.store.prune(self.retain).await {
            warn!(pipeline = %self.pipeline, error = %e, "could not prune old checkpoints");
        }
        Ok(manifest)
    }
}
