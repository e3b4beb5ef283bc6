//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Strata: Kafka -> streaming SQL -> Delta Lake, served over Flight SQL.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    /// Log format: text for terminals, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a warehouse file and report every problem with file:line:column.
    Validate {
        /// The warehouse YAML file.
        file: PathBuf,
        /// Also print the dataflow plan: each layer's operator, late rules,
        /// watermark, tables and side tables, and who reads it.
        #[arg(long)]
        plan: bool,
    },
    /// Run the warehouse's layers until SIGINT/SIGTERM (the last epoch is
    /// committed on the way out).
    Run {
        /// The warehouse YAML file.
        file: PathBuf,
        /// Run only these layers (repeatable); default: all.
        #[arg(long = "layer", value_name = "NAME")]
        layers: Vec<String>,
        /// Stop once every layer has caught up with the end of its input as
        /// of the start (like Flink's bounded latest-offset mode).
        #[arg(long)]
        bounded: bool,
        /// Do not start the Flight SQL server.
        #[arg(long)]
        no_serve: bool,
        /// If another run holds the warehouse's lease, exit at once
        /// (naming it) instead of waiting for it to stop or expire.
        #[arg(long)]
        no_wait: bool,
        /// Drop this layer's checkpointed state and rebuild it by replaying
        /// its inputs from --from (for a change `strata plan` calls
        /// incompatible); its table's rows from then on are recomputed.
        #[arg(long, value_name = "LAYER", requires = "from")]
        reset_state: Option<String>,
        /// With --reset-state: where the replay starts (RFC 3339, or
        /// 2026-11-20 10:00 UTC, or 2026-11-20).
        #[arg(long, value_name = "TIME", requires = "reset_state")]
        from: Option<String>,
    },
    /// Serve the warehouse's tables over Flight SQL (no pipelines).
    Serve {
        /// The warehouse YAML file.
        file: PathBuf,
    },
    /// One row per layer: running or stopped, lag, watermark and its
    /// delay, last epoch and its age (from the checkpoints, and from the
    /// live metrics endpoint when the warehouse runs).
    Status {
        /// The warehouse YAML file.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a SQL query through the Flight SQL server and print the result.
    Query(QueryArgs),
    /// Produce generated events to Kafka (sample data, tests, benchmarks).
    Gen(GenArgs),
    /// Recompute a time range of a layer from the log with the file's SQL,
    /// and replace that range of its table in one commit (the live
    /// pipeline keeps running).
    Backfill(BackfillArgs),
    /// Compact the tables' small files and clean up their logs; with
    /// --vacuum, also remove files no version within the retention needs
    /// (safe while `strata run` runs: compaction is then left to the run).
    Maintain(MaintainArgs),
    /// Compare the file with what the storage root holds (tables' schemas,
    /// the newest checkpoint's layers, their SQL and state layout) and say
    /// per layer: unchanged, a compatible change and how it is applied, or
    /// incompatible and the choices. Reads only.
    Plan {
        /// The warehouse YAML file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the versions of the warehouse file that ran (each `strata run`
    /// records its file), when each was deployed and the epochs it committed.
    History {
        /// The warehouse YAML file (names the warehouse and its storage root).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `strata maintain`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintainArgs {
    /// The warehouse YAML file.
    pub file: PathBuf,
    /// Only these layers' tables (repeatable); default: all.
    #[arg(long = "layer", value_name = "NAME")]
    pub layers: Vec<String>,
    /// Also VACUUM: remove replaced files and files of crashed epochs older
    /// than the retention (`maintenance.vacuum_retention`, default 7 days).
    #[arg(long)]
    pub vacuum: bool,
    /// Only say what would be done.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `strata backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// The warehouse YAML file (with the layer's new SQL).
    pub file: PathBuf,
    /// The layer whose range is replaced.
    pub layer: String,
    /// Start of the range (inclusive): 2026-11-20T10:00:00Z, 2026-11-20
    /// 10:00 (UTC) or 2026-11-20. Windows are in the range when they end
    /// after it.
    #[arg(long)]
    pub from: String,
    /// End of the range (exclusive; windows ending at it are in). Default:
    /// as far as the live pipeline has closed the layer (its watermark),
    /// or now if it has never run.
    #[arg(long)]
    pub to: Option<String>,
    /// Also replace the range in every layer downstream of it.
    #[arg(long)]
    pub cascade: bool,
    /// Event time to replay before --from so its first windows are
    /// complete (default: the sizes of the windows on the way; needed for
    /// SESSION, OVER and interval joins), e.g. 10m.
    #[arg(long)]
    pub lookback: Option<String>,
    /// Where to replay from: Kafka while retention holds the range, else
    /// the ODS table (auto); or only one of them.
    #[arg(long, value_enum, default_value_t = ReplayFromArg::Auto)]
    pub replay_from: ReplayFromArg,
    /// Read Kafka from these offsets instead of where the ODS table places
    /// the range, e.g. deals:0:1200,deals:1:1180 (other partitions: as
    /// found). The replay must still cover the range.
    #[arg(long, value_name = "TOPIC:PARTITION:OFFSET,...")]
    pub from_offsets: Option<String>,
    /// Swap in a result with no rows for the range (refused otherwise: it
    /// would delete every row the table has there).
    #[arg(long)]
    pub allow_empty: bool,
}

/// `--replay-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFromArg {
    /// Kafka while it holds the range, else the ODS table.
    Auto,
    /// Kafka only.
    Kafka,
    /// The ODS tables only.
    Ods,
}

/// Arguments of `strata query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The SQL, e.g. "SELECT city, count(*) FROM ods.ods_deals GROUP BY city".
    pub sql: String,
    /// The server: http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "STRATA_ENDPOINT"
    )]
    pub endpoint: String,
    /// User name, if the server requires one.
    #[arg(long, env = "STRATA_USER")]
    pub user: Option<String>,
    /// Password (better: the STRATA_PASSWORD environment variable).
    #[arg(long, env = "STRATA_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) to trust for https endpoints.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// Arguments of `strata gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// What to generate.
    #[arg(value_enum)]
    pub dataset: Dataset,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092", env = "KAFKA_BOOTSTRAP")]
    pub bootstrap_servers: String,
    /// The topic (deals; default `deals`), or the topics' prefix (beike:
    /// `<prefix>deals` and `<prefix>itineraries`; default `beike_`). Topics
    /// are created if missing.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topics when they are created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Events to produce (0: until stopped).
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Fraction of records that are deliberately malformed.
    #[arg(long, default_value_t = 0.0)]
    pub malformed: f64,
    /// Random seed, for reproducible data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// deals: event times are spread over this many seconds before now.
    #[arg(long, default_value_t = 3600)]
    pub spread_secs: u64,
    /// beike: fraction of events dated --late-minutes in the past.
    #[arg(long, default_value_t = 0.0)]
    pub late: f64,
    /// beike: how old late events are, in minutes: MIN-MAX.
    #[arg(long, default_value = "2-15")]
    pub late_minutes: String,
    /// beike: which streams get late events: deals, itineraries, or both
    /// (comma-separated).
    #[arg(long, default_value = "deals,itineraries")]
    pub late_streams: String,
    /// beike: fraction of events dated 2-6 hours in the future.
    #[arg(long, default_value_t = 0.0)]
    pub future: f64,
    /// beike: fraction of records sent twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// beike: on-time events are up to this many seconds out of order.
    #[arg(long, default_value_t = 2.0)]
    pub disorder_secs: f64,
    /// beike: the event-time clock starts here (RFC 3339) and advances by
    /// --step-ms per event, instead of reading the wall clock.
    #[arg(long)]
    pub start: Option<String>,
    /// beike: milliseconds of event time per event, with --start.
    #[arg(long, default_value_t = 10)]
    pub step_ms: u64,
    /// beike: write the dimension tables (cities, stores, agents) as Delta
    /// tables under this directory first.
    #[arg(long)]
    pub dims: Option<PathBuf>,
    /// beike: write what each event is (stream, kind: on_time, late,
    /// future or malformed, copies sent, the generator's clock, the value)
    /// to this file, one JSON object per line: the ground truth tests
    /// compute their references from.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// Datasets `strata gen` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    /// Real-estate deal events (created, signed, paid, cancelled).
    Deals,
    /// The reference warehouse (examples/beike): deal and agent itinerary
    /// events, and the agents/stores/cities dimension tables.
    Beike,
}
