//! Every metric family Strata exports, with its name, help and labels.
//! The README's metrics table lists the same names.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label pairs (`name`, value).
pub type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

pub(crate) fn dataflow(name: &str) -> Labels {
    vec![("dataflow", name.to_string())]
}

pub(crate) fn layer(name: &str) -> Labels {
    vec![("layer", name.to_string())]
}

pub(crate) fn table(name: &str) -> Labels {
    vec![("table", name.to_string())]
}

pub(crate) fn side(layer: &str, kind: &str, table: &str) -> Labels {
    vec![
        ("layer", layer.to_string()),
        ("side", kind.to_string()),
        ("table", table.to_string()),
    ]
}

pub(crate) fn source(source: &str, topic: &str, partition: i32) -> Labels {
    vec![
        ("source", source.to_string()),
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

/// Epoch times: 5 ms to ~80 s.
fn epoch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Query times: 1 ms to ~30 s.
fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The families (each a handle on what the registry encodes).
pub struct Families {
    pub(crate) source_records: Family<Labels, Counter>,
    pub(crate) source_lag: Family<Labels, Gauge>,
    pub(crate) source_lag_seconds: Family<Labels, FloatGauge>,
    pub(crate) broker_up: Family<Labels, Gauge>,
    pub(crate) broker_contact: Family<Labels, FloatGauge>,
    pub(crate) layer_rows_in: Family<Labels, Counter>,
    pub(crate) layer_rows_out: Family<Labels, Counter>,
    pub(crate) side_rows: Family<Labels, Counter>,
    pub(crate) layer_watermark: Family<Labels, FloatGauge>,
    pub(crate) layer_watermark_delay: Family<Labels, FloatGauge>,
    pub(crate) lookup_hits: Family<Labels, Counter>,
    pub(crate) lookup_misses: Family<Labels, Counter>,
    pub(crate) lookup_failures: Family<Labels, Counter>,
    pub(crate) lookup_timeouts: Family<Labels, Counter>,
    pub(crate) running: Family<Labels, Gauge>,
    pub(crate) epoch_duration: Histograms,
    pub(crate) commit_duration: Histograms,
    pub(crate) last_epoch: Family<Labels, Gauge>,
    pub(crate) last_epoch_time: Family<Labels, FloatGauge>,
    pub(crate) last_epoch_age: Family<Labels, FloatGauge>,
    pub(crate) heartbeat: Family<Labels, FloatGauge>,
    pub(crate) heartbeat_age: Family<Labels, FloatGauge>,
    pub(crate) table_version: Family<Labels, Gauge>,
    pub(crate) table_last_commit: Family<Labels, FloatGauge>,
    pub(crate) table_rows: Family<Labels, Counter>,
    pub(crate) table_files: Family<Labels, Counter>,
    pub(crate) table_bytes: Family<Labels, Counter>,
    pub(crate) layer_rows_in_rate: Family<Labels, FloatGauge>,
    pub(crate) side_rows_rate: Family<Labels, FloatGauge>,
    pub(crate) source_records_rate: Family<Labels, FloatGauge>,
    pub(crate) layer_state_bytes: Family<Labels, Gauge>,
    pub(crate) layer_state_rows: Family<Labels, Gauge>,
    pub(crate) lease_held: Gauge,
    pub(crate) lease_renewed: FloatGauge,
    pub(crate) lease_renewal_age: FloatGauge,
    pub(crate) lease_lost: Counter,
    /// Flight SQL queries by `outcome` (ok, error) and gRPC `code`.
    pub queries: Family<Labels, Counter>,
    /// Flight SQL query latency.
    pub query_duration: Histograms,
    /// Flight SQL calls running now.
    pub queries_active: Gauge,
}

impl Families {
    pub(crate) fn register(r: &mut Registry) -> Self {
        let f = Families {
            source_records: Family::default(),
            source_lag: Family::default(),
            source_lag_seconds: Family::default(),
            broker_up: Family::default(),
            broker_contact: Family::default(),
            layer_rows_in: Family::default(),
            layer_rows_out: Family::default(),
            side_rows: Family::default(),
            layer_watermark: Family::default(),
            layer_watermark_delay: Family::default(),
            lookup_hits: Family::default(),
            lookup_misses: Family::default(),
            lookup_failures: Family::default(),
            lookup_timeouts: Family::default(),
            running: Family::default(),
            epoch_duration: Family::new_with_constructor(epoch_histogram),
            commit_duration: Family::new_with_constructor(epoch_histogram),
            last_epoch: Family::default(),
            last_epoch_time: Family::default(),
            last_epoch_age: Family::default(),
            heartbeat: Family::default(),
            heartbeat_age: Family::default(),
            table_version: Family::default(),
            table_last_commit: Family::default(),
            table_rows: Family::default(),
            table_files: Family::default(),
            table_bytes: Family::default(),
            layer_rows_in_rate: Family::default(),
            side_rows_rate: Family::default(),
            source_records_rate: Family::default(),
            layer_state_bytes: Family::default(),
            layer_state_rows: Family::default(),
            lease_held: Gauge::default(),
            lease_renewed: FloatGauge::default(),
            lease_renewal_age: FloatGauge::default(),
            lease_lost: Counter::default(),
            queries: Family::default(),
            query_duration: Family::new_with_constructor(query_histogram),
            queries_active: Gauge::default(),
        };
        // Counters get their `_total` from the encoder.
        let s = r.sub_registry_with_prefix("strata");
        s.register(
            "source_records",
            "Records read from a source partition",
            f.source_records.clone(),
        );
        s.register(
            "source_lag_records",
            "Records of a source partition not read yet (its high watermark minus the next offset)",
            f.source_lag.clone(),
        );
        s.register("source_lag_seconds", "Now minus the newest event time read from a partition, while records wait; 0 when caught up", f.source_lag_seconds.clone());
        s.register(
            "source_broker_up",
            "1 when the source's last request to its broker was answered",
            f.broker_up.clone(),
        );
        s.register(
            "source_broker_contact_timestamp_seconds",
            "When the source's broker last answered",
            f.broker_contact.clone(),
        );
        s.register(
            "layer_rows_in",
            "Rows a layer received, in committed epochs",
            f.layer_rows_in.clone(),
        );
        s.register(
            "layer_rows_out",
            "Rows a layer wrote to its table, in committed epochs",
            f.layer_rows_out.clone(),
        );
        s.register("layer_side_rows", "Rows a layer routed to a side table (late, future, rejected, dead_letter), in committed epochs", f.side_rows.clone());
        s.register(
            "layer_watermark_timestamp_seconds",
            "A layer's event-time watermark as of its last committed epoch",
            f.layer_watermark.clone(),
        );
        s.register(
            "layer_watermark_delay_seconds",
            "Now minus a layer's watermark (the end-to-end latency of its results)",
            f.layer_watermark_delay.clone(),
        );
        s.register(
            "lookup_hits",
            "Lookup keys answered by the cache (or the in-memory Delta dimension)",
            f.lookup_hits.clone(),
        );
        s.register(
            "lookup_misses",
            "Lookup keys asked of the dimension's source",
            f.lookup_misses.clone(),
        );
        s.register(
            "lookup_failures",
            "Lookups that failed (errors and timeouts)",
            f.lookup_failures.clone(),
        );
        s.register(
            "lookup_timeouts",
            "Lookups that timed out",
            f.lookup_timeouts.clone(),
        );
        s.register(
            "dataflow_running",
            "1 while the dataflow runs",
            f.running.clone(),
        );
        s.register(
            "epoch_duration_seconds",
            "From an epoch's barrier request to its tables committed",
            f.epoch_duration.clone(),
        );
        s.register(
            "epoch_commit_duration_seconds",
            "Writing an epoch's manifest and committing its tables",
            f.commit_duration.clone(),
        );
        s.register(
            "dataflow_last_epoch",
            "The newest epoch committed",
            f.last_epoch.clone(),
        );
        s.register(
            "dataflow_last_epoch_timestamp_seconds",
            "When the newest epoch was committed",
            f.last_epoch_time.clone(),
        );
        s.register(
            "dataflow_last_epoch_age_seconds",
            "Seconds since the newest epoch was committed",
            f.last_epoch_age.clone(),
        );
        s.register("dataflow_heartbeat_timestamp_seconds", "When the dataflow was last known healthy: an epoch committed, or idle with every source reaching its broker", f.heartbeat.clone());
        s.register(
            "dataflow_heartbeat_age_seconds",
            "Seconds since the dataflow's last heartbeat",
            f.heartbeat_age.clone(),
        );
        s.register(
            "table_version",
            "A Delta table's newest version written by this process",
            f.table_version.clone(),
        );
        s.register(
            "table_last_commit_timestamp_seconds",
            "When this process last committed to a table",
            f.table_last_commit.clone(),
        );
        s.register(
            "table_rows_added",
            "Rows committed to a table",
            f.table_rows.clone(),
        );
        s.register(
            "table_files_added",
            "Parquet files committed to a table",
            f.table_files.clone(),
        );
        s.register(
            "table_bytes_added",
            "Parquet bytes committed to a table",
            f.table_bytes.clone(),
        );
        s.register(
            "layer_rows_in_per_second",
            "Rows a layer received per second over the last minute (for `strata status` and the console; in PromQL prefer rate(strata_layer_rows_in_total))",
            f.layer_rows_in_rate.clone(),
        );
        s.register(
            "layer_side_rows_per_second",
            "Rows a layer routed to a side table per second over the last minute",
            f.side_rows_rate.clone(),
        );
        s.register(
            "source_records_per_second",
            "Records read from a source partition per second over the last minute (its fetch rate)",
            f.source_records_rate.clone(),
        );
        s.register(
            "layer_state_bytes",
            "Size of a layer's operator state snapshot as of its last committed epoch (0: it keeps none)",
            f.layer_state_bytes.clone(),
        );
        s.register(
            "layer_state_rows",
            "Rows of a layer's operator state snapshot as of its last committed epoch",
            f.layer_state_rows.clone(),
        );
        s.register(
            "lease_held",
            "1 while this run holds the warehouse's writer lease and renews it; 0 once it lost it",
            f.lease_held.clone(),
        );
        s.register(
            "lease_renewed_timestamp_seconds",
            "When this run last renewed the warehouse's lease",
            f.lease_renewed.clone(),
        );
        s.register(
            "lease_renewal_age_seconds",
            "Seconds since this run last renewed the warehouse's lease (renewed every third of its 15 s time to live)",
            f.lease_renewal_age.clone(),
        );
        s.register(
            "lease_lost",
            "Times this run lost the warehouse's lease (another run took it, or it could not be renewed for a whole time to live); the run stops",
            f.lease_lost.clone(),
        );
        s.register(
            "flight_sql_requests",
            "Flight SQL calls by method, outcome (ok, error) and gRPC code",
            f.queries.clone(),
        );
        s.register(
            "flight_sql_request_duration_seconds",
            "Flight SQL call latency",
            f.query_duration.clone(),
        );
        s.register(
            "flight_sql_requests_active",
            "Flight SQL calls running now",
            f.queries_active.clone(),
        );
        f
    }
}
