//! A whole dataflow in one process, on in-memory sources, tables and
//! checkpoints: what the engine's tests run, with tokio's clock paused so
//! intervals and idle timeouts pass as fast as the work allows.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use object_store::memory::InMemory;
use object_store::path::Path;

use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::coordinator::DataflowReport;
use crate::dataflow::io::DataflowIo;
use crate::dataflow::spec::{DataflowSpec, InputFrom, LayerInput, LayerSpec, SourceSpec};
use crate::dataflow::watermark::WatermarkSpec;
use crate::error::Result;
use crate::failpoint::Point;
use crate::kafka::client_config::KafkaConfig;
use crate::kafka::start_position::StartPosition;
use crate::shutdown::Shutdown;
use crate::storage::StorageRoot;
use crate::testing::crash::CrashAt;
use crate::testing::memory_source::{MemoryLog, MemorySources};
use crate::testing::memory_tables::MemoryTables;

/// The deal records the harness's topics carry.
pub(crate) fn deal_schema() -> strata_schemas::Schema {
    use strata_schemas::{Field, FieldType, Schema};
    Schema::new(
        "deal",
        vec![
            Field::new("deal_id", FieldType::String).required(),
            Field::new("city", FieldType::String),
            Field::new("amount", FieldType::Int64),
            Field::new("event_time", FieldType::Timestamp).required(),
        ],
    )
    .with_event_time("event_time")
}

/// A deal record as a producer would send it.
pub(crate) fn deal_json(id: &str, city: &str, amount: i64, event_us: i64) -> Vec<u8> {
    serde_json::json!({"deal_id": id, "city": city, "amount": amount, "event_time": event_us / 1000})
        .to_string()
        .into_bytes()
}

/// A dataflow and the in-memory world it runs in (durable across runs:
/// the log, the tables, the checkpoints).
pub(crate) struct Harness {
    pub(crate) log: MemoryLog,
    pub(crate) tables: MemoryTables,
    pub(crate) checkpoints: Arc<CheckpointStore>,
    pub(crate) spec: DataflowSpec,
    /// The lease's fence the runs check (none by default).
    pub(crate) fence: crate::fence::Fence,
}

impl Harness {
    /// A dataflow with an ODS layer per topic (`partitions` each, the deal
    /// schema, watermark `delay`) and the SQL `layers` (name, inputs, sql).
    pub(crate) fn new(
        topics: &[(&str, i32)],
        delay: Duration,
        layers: &[(&str, &[&str], &str)],
    ) -> Self {
        let log = MemoryLog::default();
        let mut sources = Vec::new();
        let mut specs = Vec::new();
        for (topic, partitions) in topics {
            log.create(topic, *partitions);
            let name = format!("ods_{topic}");
            sources.push(SourceSpec {
                id: name.clone(),
                layer: name.clone(),
                input: name.clone(),
                kafka: KafkaConfig {
                    bootstrap_servers: "memory:0".into(),
                    properties: Default::default(),
                },
                group_id: "test".into(),
                topics: vec![topic.to_string()],
                start: StartPosition::Earliest,
                schema: deal_schema(),
                watermark: WatermarkSpec {
                    delay,
                    idle_timeout: Duration::from_secs(5),
                },
                future_skew: None,
                replay: None,
            });
            specs.push(layer_spec(
                &name,
                "ods",
                &[(&name, InputFrom::Source(name.clone()))],
                None,
            ));
        }
        for (name, inputs, sql) in layers {
            let inputs: Vec<(&str, InputFrom)> = inputs
                .iter()
                .map(|i| (*i, InputFrom::Layer(i.to_string())))
                .collect();
            specs.push(layer_spec(name, "dws", &inputs, Some(sql)));
        }
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        Harness {
            fence: crate::fence::Fence::unfenced(),
            log,
            tables: MemoryTables::default(),
            checkpoints: Arc::new(CheckpointStore::new(
                store,
                Path::from("checkpoints"),
                "memory://checkpoints/",
                "test",
            )),
            spec: DataflowSpec {
                id: "test".into(),
                storage: StorageRoot::new("file:///strata-harness/", Default::default())
                    .unwrap_or_else(|e| panic!("a storage root: {e}")),
                checkpoint_interval: Duration::from_millis(50),
                checkpoint_retain: 1000,
                bounded: true,
                sources,
                layers: specs,
                udfs: Vec::new(),
                dimensions: Vec::new(),
                version: None,
                reset_state: Vec::new(),
            },
        }
    }

    fn io(&self, crash: &Arc<CrashAt>) -> DataflowIo {
        DataflowIo {
            tables: Arc::new(self.tables.clone()),
            sources: Arc::new(MemorySources {
                log: self.log.clone(),
            }),
            checkpoints: self.checkpoints.clone(),
            failpoints: crash.clone(),
            metrics: crate::metrics::Metrics::default(),
            fence: self.fence.clone(),
        }
    }

    /// Runs the dataflow until every source has caught up (or until the
    /// crash at `crash`: then `Err`, and whether it happened).
    pub(crate) async fn run(&self, crash: Option<(Point, u64)>) -> (Result<DataflowReport>, bool) {
        let crash = Arc::new(CrashAt::new(crash));
        let result =
            crate::dataflow::run_dataflow_with(self.spec.clone(), self.io(&crash), Shutdown::new())
                .await;
        (result, crash.happened())
    }

    /// Runs the dataflow unbounded and drops it (a SIGKILL) after `after`
    /// of (virtual) time.
    pub(crate) async fn run_and_kill(&self, after: Duration) {
        let crash = Arc::new(CrashAt::new(None));
        let mut spec = self.spec.clone();
        spec.bounded = false;
        let run = crate::dataflow::run_dataflow_with(spec, self.io(&crash), Shutdown::new());
        let _ = tokio::time::timeout(after, run).await;
    }

    /// Every committed row of a table.
    pub(crate) fn rows(&self, table: &str) -> Vec<RecordBatch> {
        self.tables
            .with_table(table, |t| t.rows())
            .unwrap_or_default()
    }

    /// The epochs a table committed, in order.
    pub(crate) fn commits(&self, table: &str) -> Vec<u64> {
        self.tables
            .with_table(table, |t| t.commits.iter().map(|(e, _)| *e).collect())
            .unwrap_or_default()
    }

    /// When a table committed each of its epochs (tokio's clock), in order.
    pub(crate) fn commit_times(&self, table: &str) -> Vec<tokio::time::Instant> {
        self.tables
            .with_table(table, |t| t.commit_times.clone())
            .unwrap_or_default()
    }

    /// Every manifest, oldest first.
    pub(crate) async fn manifests(&self) -> Vec<Manifest> {
        let mut out = Vec::new();
        for epoch in self.checkpoints.epochs().await.unwrap_or_default() {
            if let Ok(m) = self.checkpoints.read(epoch).await {
                out.push(m);
            }
        }
        out
    }
}

fn layer_spec(
    name: &str,
    kind: &str,
    inputs: &[(&str, InputFrom)],
    sql: Option<&str>,
) -> LayerSpec {
    LayerSpec {
        name: name.into(),
        kind: kind.into(),
        inputs: inputs
            .iter()
            .map(|(n, from)| LayerInput {
                name: n.to_string(),
                from: from.clone(),
            })
            .collect(),
        sql: sql.map(String::from),
        filter: None,
        keep_rejected: false,
        delay: Duration::ZERO,
        publish: None,
        side_topics: Vec::new(),
        lookup_failure: Default::default(),
        state_ttl: None,
    }
}
