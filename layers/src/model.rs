//! The warehouse model: what a validated warehouse file says.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use strata_engine::dataflow::Delivery;
use strata_engine::lookup::{CacheSpec, DimensionSource, LookupFailurePolicy};
use strata_engine::{StartPosition, WatermarkSpec};
use strata_schemas::Schema;

use crate::diagnostic::Diagnostic;
use crate::node_reader::Located;

/// A validated warehouse: storage, broker, schemas and layers.
#[derive(Debug, Clone)]
pub struct Warehouse {
    /// The warehouse's name (`warehouse:`), used in consumer group ids.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Where tables and checkpoints live.
    pub storage: Storage,
    /// The Kafka cluster layers read from.
    pub kafka: Kafka,
    /// Checkpoint settings shared by the layers.
    pub checkpoint: Checkpoint,
    /// Record schemas, by name.
    pub schemas: Vec<Schema>,
    /// How tables are served over Flight SQL.
    pub serve: Serve,
    /// The layers, in file order.
    pub layers: Vec<Layer>,
    /// Dimensions layers look rows up in (`dimensions:`).
    pub dimensions: Vec<Dimension>,
    /// The dashboard page `strata run` serves (`dashboard:`), if any.
    pub dashboard: Option<Dashboard>,
    /// How tables are maintained (`maintenance:`), for every layer.
    pub maintenance: Maintenance,
    /// The metrics and health endpoint (`metrics:`), if any.
    pub metrics: Option<Metrics>,
}

impl Warehouse {
    /// A schema by name.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.schemas.iter().find(|s| s.name == name)
    }

    /// A layer by name.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// How layer `name`'s tables are maintained: its `maintenance:` over
    /// the warehouse's, over the defaults.
    pub fn maintenance_for(&self, name: &str) -> strata_engine::maintenance::MaintenanceSpec {
        let warehouse = self.maintenance.over(&Default::default());
        match self.layer(name) {
            Some(layer) => layer.maintenance.over(&warehouse),
            None => warehouse,
        }
    }

    /// A problem with layer `name`'s SQL (found when it is planned), as a
    /// diagnostic pointing at its `sql:` line; `None` for an unknown or
    /// ODS layer.
    pub fn sql_diagnostic(&self, name: &str, message: String) -> Option<Diagnostic> {
        let layer = self.layer(name)?;
        let LayerBody::Sql(sql) = &layer.body else {
            return None;
        };
        Some(Diagnostic {
            file: self.file.clone(),
            pos: sql.sql.pos,
            field: format!("layers.{name}.sql"),
            message,
            help: Some(format!(
                "fix the query, then check it with `strata validate {}`",
                self.file.display()
            )),
        })
    }
}

/// `storage:`: the root every table and checkpoint lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// A URL: `file:///abs/path` (a relative path in the file is taken
    /// relative to the file's directory) or `s3://bucket/prefix`.
    pub root: String,
    /// object_store options (credentials, region, endpoint).
    pub options: BTreeMap<String, String>,
}

impl Storage {
    /// The storage root as every command opens it: the URL with its
    /// options (an S3 root also reads the AWS_* environment).
    pub fn open(&self) -> strata_engine::Result<strata_engine::StorageRoot> {
        strata_engine::StorageRoot::new(&self.root, self.options.clone().into_iter().collect())
    }
}

/// `kafka:`: the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kafka {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties for every client.
    pub properties: BTreeMap<String, String>,
}

/// `checkpoint:`: how often epochs end, and how many manifests to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Time between checkpoint barriers (default 1 s).
    pub interval: Duration,
    /// Manifests kept per layer (default 10).
    pub retain: usize,
}

/// `serve:`: the Flight SQL endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    /// `ip:port` to listen on (default `127.0.0.1:50051`).
    pub listen: std::net::SocketAddr,
    /// Users allowed to query; with none, only loopback clients can connect.
    pub users: Vec<User>,
    /// TLS certificate and key (PEM files).
    pub tls: Option<Tls>,
    /// The key statement handles are signed with (`handle_key`); `None`: a
    /// random key per process (handles then work only on the process that
    /// issued them).
    pub handle_key: Option<String>,
    /// Serve strings as Arrow `Utf8View` (`string_view: true`) instead of
    /// plain `Utf8`, which every client reads.
    pub string_view: bool,
    /// What one query, and serving as a whole, may use (`limits:`).
    pub limits: ServeLimits,
}

/// `serve.limits`: what queries may use, so that no request can stop the
/// server or starve the pipelines running in the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Worker threads running queries, apart from the pipelines' threads
    /// (default: half the cores, at least 1).
    pub query_threads: usize,
    /// Queries running at once, and no more than `memory / query_memory`;
    /// more wait in the queue (default 8).
    pub concurrent_queries: usize,
    /// Queries waiting for a slot; more are refused with UNAVAILABLE
    /// (default 64).
    pub queued_queries: usize,
    /// How long a query waits for a slot before UNAVAILABLE (default 10 s).
    pub queue_timeout: Duration,
    /// How long a query may run, streaming included, before
    /// DEADLINE_EXCEEDED (default 5 min).
    pub query_timeout: Duration,
    /// Memory one query may hold (sorts, joins and aggregations spill to
    /// disk, then fail with RESOURCE_EXHAUSTED); default 256 MiB.
    pub query_memory: u64,
    /// Memory all queries together may hold (default 1 GiB): each running
    /// query may fill its `query_memory`, so at most `memory / query_memory`
    /// run at once.
    pub memory: u64,
    /// Disk all queries together may fill with spill files (default 10 GiB).
    pub spill: u64,
    /// Rows `generate_series` / `range` may produce in one query (default
    /// 100,000,000).
    pub generated_rows: u64,
    /// How deeply one SQL expression may nest, counted as its operators
    /// (default 1,000).
    pub expression_depth: usize,
    /// Longest SQL text accepted, in bytes (default 1 MiB).
    pub sql_bytes: u64,
    /// Largest set of bound parameters, in bytes of Arrow IPC (default 1 MiB).
    pub parameter_bytes: u64,
    /// Parameter sets the server keeps per user for clients that reuse a
    /// prepared statement's first handle (default 64).
    pub prepared_per_user: usize,
    /// How long such a parameter set is kept after its last use (default 10 min).
    pub prepared_ttl: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        ServeLimits {
            query_threads: cores.div_ceil(2),
            concurrent_queries: 8,
            queued_queries: 64,
            queue_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(300),
            query_memory: 256 << 20,
            memory: 1 << 30,
            spill: 10 << 30,
            generated_rows: 100_000_000,
            expression_depth: 1_000,
            sql_bytes: 1 << 20,
            parameter_bytes: 1 << 20,
            prepared_per_user: 64,
            prepared_ttl: Duration::from_secs(600),
        }
    }
}

/// `metrics:`: the Prometheus metrics and health endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// `ip:port` of the HTTP server (default `127.0.0.1:9464`).
    pub listen: std::net::SocketAddr,
    /// `/readyz` fails when the pipeline made no progress for this long
    /// (default: three checkpoint intervals, at least 10 s).
    pub stale_after: Option<Duration>,
}

/// The dashboard page (`dashboard:`): charts of SQL queries, refreshed.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// `ip:port` of the HTTP server (default `127.0.0.1:8080`).
    pub listen: std::net::SocketAddr,
    /// The page's heading.
    pub title: String,
    /// How often the page re-runs its queries.
    pub refresh: Duration,
    /// The charts, in page order.
    pub panels: Vec<Panel>,
}

/// One chart of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    /// Heading of the chart.
    pub title: String,
    /// How the rows are drawn.
    pub chart: Chart,
    /// The column labelling each bar or point.
    pub label: String,
    /// The numeric column drawn.
    pub value: String,
    /// The query (Flight SQL dialect: `ads.table`).
    pub sql: String,
}

/// How a panel draws its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// Horizontal bars, one per row.
    Bar,
    /// A line through the rows, in order.
    Line,
    /// The rows as a table.
    Table,
}

/// One user of the Flight SQL endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub username: String,
    /// Password (write `${ENV_VAR}` to keep it out of the file).
    pub password: String,
}

/// TLS files, resolved against the warehouse file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// The default Flight SQL address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The four warehouse layers of the Flink-era design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKind {
    /// Operational data store: raw events landed from Kafka.
    Ods,
    /// Detail: cleaned, deduplicated, enriched.
    Dwd,
    /// Summary: windowed aggregates.
    Dws,
    /// Application: dashboard-ready.
    Ads,
}

impl LayerKind {
    /// All kinds, in layer order.
    pub const ALL: [LayerKind; 4] = [
        LayerKind::Ods,
        LayerKind::Dwd,
        LayerKind::Dws,
        LayerKind::Ads,
    ];

    /// The lower-case name, as written in files and used as the table's
    /// schema name (`strata.ods.deals`).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Ods => "ods",
            LayerKind::Dwd => "dwd",
            LayerKind::Dws => "dws",
            LayerKind::Ads => "ads",
        }
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of the warehouse.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Unique name; also the table name and the pipeline id.
    pub name: String,
    /// Its kind.
    pub kind: LayerKind,
    /// Where its records come from and how they are transformed.
    pub body: LayerBody,
    /// Overrides the warehouse's checkpoint interval.
    pub checkpoint_interval: Option<Duration>,
    /// How event time is tracked: for a layer reading topics, the sources'
    /// delay and idle timeout; for a layer reading layers, its extra delay.
    pub watermark: WatermarkSpec,
    /// Rows dated further ahead of the clock go to `<layer>_future`
    /// (`None`: never).
    pub future_skew: Option<Duration>,
    /// A SQL condition rows must meet to enter the layer.
    pub filter: Option<Located<String>>,
    /// Keep rows the filter rejects, in `<layer>_rejected`.
    pub keep_rejected: bool,
    /// Also publish the rows to a Kafka topic.
    pub publish: Option<Publish>,
    /// Also publish side rows, by side table suffix (`_late`, ...).
    pub side_topics: Vec<(String, Publish)>,
    /// What a failed dimension lookup does (`lookup_failure:`).
    pub lookup_failure: LookupFailurePolicy,
    /// How its tables are maintained (overrides the warehouse's).
    pub maintenance: Maintenance,
    /// A GROUP BY without windows forgets groups not updated for this long
    /// (`state_ttl:`, as Flink's `table.exec.state.ttl`).
    pub state_ttl: Option<Duration>,
}

/// `maintenance:` as written (unset keys inherit; see
/// `strata_engine::maintenance::MaintenanceSpec` for the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Background maintenance interval (`Some(None)`: `off`).
    pub interval: Option<Option<Duration>>,
    /// Compaction's target file size, bytes.
    pub target_file_size: Option<u64>,
    /// Small files that make a table worth compacting.
    pub min_small_files: Option<usize>,
    /// How long replaced files are kept before VACUUM removes them.
    pub vacuum_retention: Option<Duration>,
    /// How long `_delta_log` entries are kept.
    pub log_retention: Option<Duration>,
    /// When `strata run` vacuums in the background.
    pub vacuum_interval: Option<strata_engine::maintenance::VacuumEvery>,
}

/// One entry of `dimensions:`.
#[derive(Debug, Clone)]
pub struct Dimension {
    /// The name SQL joins it by.
    pub name: Located<String>,
    /// The schema of its rows.
    pub schema: Located<String>,
    /// The key column lookups use.
    pub key: Located<String>,
    /// Where its rows are.
    pub source: DimensionSourceModel,
    /// The partial cache (PostgreSQL and Redis).
    pub cache: Option<CacheSpec>,
    /// Time allowed for one lookup.
    pub timeout: Duration,
}

/// Where a dimension's rows are, as the file says.
#[derive(Debug, Clone)]
pub enum DimensionSourceModel {
    /// A Delta table: a layer of this warehouse or a path under the
    /// storage root (or a URL).
    Delta {
        /// `layer:` or `path:`.
        table: DeltaDimension,
        /// How often to look for a new version.
        reload_interval: Duration,
    },
    /// PostgreSQL or Redis, as the engine takes them.
    Remote(DimensionSource),
}

/// Which Delta table a dimension reads.
#[derive(Debug, Clone)]
pub enum DeltaDimension {
    /// A layer of this warehouse, by name.
    Layer(Located<String>),
    /// A path under the storage root, or a URL.
    Path(String),
}

/// `publish:` of a SQL layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The topic.
    pub topic: String,
    /// `exactly_once` or `at_least_once`.
    pub delivery: Delivery,
}

/// The default allowance for rows dated ahead of the clock.
pub const DEFAULT_FUTURE_SKEW: Duration = Duration::from_secs(3600);

/// What a layer does.
#[derive(Debug, Clone)]
pub enum LayerBody {
    /// An ODS layer: lands a Kafka source as it is.
    Source(Source),
    /// A DWD/DWS/ADS layer: SQL over inputs.
    Sql(SqlLayer),
}

/// `source:` of an ODS layer.
#[derive(Debug, Clone)]
pub struct Source {
    /// Topics read (all partitions).
    pub topics: Vec<String>,
    /// The schema records are decoded with.
    pub schema: String,
    /// Where to start when the layer has no checkpoint yet.
    pub start: StartPosition,
    /// Consumer group used for offset commits (monitoring, `start: group`).
    pub group_id: Option<String>,
}

/// `inputs:` and `sql:` of a DWD/DWS/ADS layer.
#[derive(Debug, Clone)]
pub struct SqlLayer {
    /// Upstream layers or topics.
    pub inputs: Vec<Input>,
    /// The transform, in Flink SQL style.
    pub sql: Located<String>,
}

/// One input of a SQL layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An upstream layer, by name.
    Layer(Located<String>),
    /// A Kafka topic decoded with a schema.
    Topic {
        /// The topic.
        topic: String,
        /// The schema name.
        schema: Located<String>,
        /// The name the SQL reads it by.
        name: Located<String>,
    },
}
