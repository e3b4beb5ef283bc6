//! What a dataflow runs: its sources and layers, as planned from the
//! warehouse file.

use std::time::Duration;

use datafusion::logical_expr::ScalarUDF;
use strata_schemas::Schema;

use crate::dataflow::replay::Replay;
use crate::dataflow::watermark::WatermarkSpec;
use crate::kafka::client_config::KafkaConfig;
use crate::kafka::start_position::StartPosition;
use crate::lookup::{DimensionSpec, LookupFailurePolicy};
use crate::storage::StorageRoot;
use crate::versions::WarehouseVersion;

/// A set of layers run in one process, with one checkpoint epoch.
#[derive(Debug, Clone)]
pub struct DataflowSpec {
    /// Checkpoint namespace (the warehouse's name).
    pub id: String,
    /// Where tables and checkpoints live.
    pub storage: StorageRoot,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Manifests kept.
    pub checkpoint_retain: usize,
    /// Stop once every source has caught up with its end offsets as of the
    /// start.
    pub bounded: bool,
    /// Kafka sources.
    pub sources: Vec<SourceSpec>,
    /// Layers, upstream before downstream.
    pub layers: Vec<LayerSpec>,
    /// Scalar functions layers may call by name.
    pub udfs: Vec<ScalarUDF>,
    /// Dimensions layers may join `FOR SYSTEM_TIME AS OF`.
    pub dimensions: Vec<DimensionSpec>,
    /// The warehouse file this run deploys: recorded beside the
    /// checkpoints and named by each manifest (none: not recorded).
    pub version: Option<WarehouseVersion>,
    /// Layers whose checkpointed state is not restored (`--reset-state`:
    /// rebuilt from the log before the run).
    pub reset_state: Vec<String>,
}

/// A Kafka topic set decoded with a schema, feeding one layer.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Unique id: the layer's name for an ODS layer, `layer.input` for a SQL
    /// layer's topic input.
    pub id: String,
    /// The layer it feeds.
    pub layer: String,
    /// The name the layer's SQL reads it by.
    pub input: String,
    /// The cluster.
    pub kafka: KafkaConfig,
    /// Consumer group for offset commits (monitoring, `start: group`).
    pub group_id: String,
    /// Topics (all partitions).
    pub topics: Vec<String>,
    /// Where to start without a checkpoint.
    pub start: StartPosition,
    /// The record schema, with its event-time field.
    pub schema: Schema,
    /// How the watermark is computed.
    pub watermark: WatermarkSpec,
    /// Rows more than this ahead of the wall clock go to the future table.
    pub future_skew: Option<Duration>,
    /// Replay a bounded range instead of following the topics (backfills).
    pub replay: Option<Replay>,
}

/// One layer of the dataflow.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Unique name: table name and Delta `txn` appId.
    pub name: String,
    /// ods, dwd, dws or ads: the table's schema in the catalog.
    pub kind: String,
    /// What the layer reads, by the names its SQL uses.
    pub inputs: Vec<LayerInput>,
    /// The transform (`None`: an ODS layer, landing its source as it is).
    pub sql: Option<String>,
    /// Rows must satisfy this SQL predicate to enter the layer.
    pub filter: Option<String>,
    /// Keep rows the filter rejects in `<layer>_rejected`.
    pub keep_rejected: bool,
    /// Extra watermark delay of this layer (added to its inputs').
    pub delay: Duration,
    /// Also publish the layer's rows to a Kafka topic.
    pub publish: Option<PublishSpec>,
    /// Also publish side rows to Kafka topics, by side table suffix
    /// (`_late`, `_future`, `_rejected`, `_dead_letter`).
    pub side_topics: Vec<(String, PublishSpec)>,
    /// What a failed dimension lookup does.
    pub lookup_failure: LookupFailurePolicy,
    /// A `GROUP BY` without windows forgets groups not updated for this
    /// long (`state_ttl:`; `None`: kept forever).
    pub state_ttl: Option<Duration>,
}

/// A layer's rows published to a Kafka topic, one JSON object per row.
#[derive(Debug, Clone)]
pub struct PublishSpec {
    /// The cluster.
    pub kafka: KafkaConfig,
    /// The topic.
    pub topic: String,
    /// The guarantee.
    pub delivery: Delivery,
}

/// What a published topic guarantees its readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Each epoch's rows in one Kafka transaction, committed once the
    /// epoch's checkpoint is durable: `read_committed` readers see every
    /// row once. Rows appear when their epoch commits.
    ExactlyOnce,
    /// Rows are sent as they are produced and flushed at every checkpoint:
    /// none is lost; after a crash, rows since the last checkpoint are sent
    /// again.
    #[default]
    AtLeastOnce,
}

/// An input of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInput {
    /// The name the SQL reads it by.
    pub name: String,
    /// Where its rows come from.
    pub from: InputFrom,
}

/// The origin of a layer input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFrom {
    /// An upstream layer's output.
    Layer(String),
    /// A source, by id.
    Source(String),
}
