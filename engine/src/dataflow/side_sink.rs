//! Where a layer's side rows go: their Delta table, and optionally a Kafka
//! topic (`side_topics:`), both in the layer's epochs.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;

use crate::checkpoint::manifest::PendingCommit;
use crate::dataflow::io::TableSink;
use crate::error::Result;
use crate::kafka::publisher::TopicPublisher;

/// A side table, and the topic its rows are also published to.
pub(crate) struct SideSink {
    pub(crate) table: Box<dyn TableSink>,
    pub(crate) topic: Option<TopicPublisher>,
}

impl SideSink {
    /// A sink writing only the table.
    pub(crate) fn table(table: Box<dyn TableSink>) -> Self {
        SideSink { table, topic: None }
    }

    /// Writes side rows to the table and, if configured, the topic.
    pub(crate) async fn write(&mut self, rows: RecordBatch) -> Result<()> {
        if let Some(topic) = &mut self.topic {
            topic.write(&rows).await?;
        }
        self.table.write(rows).await
    }

    /// Pre-commits the epoch: the table's pending files; the topic's rows
    /// are sent (and counted in `published`, by table).
    pub(crate) async fn pre_commit(
        &mut self,
        published: &mut BTreeMap<String, u64>,
    ) -> Result<PendingCommit> {
        if let Some(topic) = &mut self.topic {
            let rows = topic.pre_commit().await?;
            published.insert(topic.table().to_string(), rows);
        }
        self.table.pre_commit().await
    }
}
