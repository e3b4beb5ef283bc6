//! What a running dataflow exports for operators: Prometheus metrics, and
//! the liveness its readiness probe is judged by.
//!
//! Operators need to see lag, watermark delay, epoch time and side-table
//! rates without reading logs. The engine keeps one [`Metrics`] per process
//! (a `prometheus-client` registry) and hands it to the dataflow; the
//! binary serves it over HTTP. Counters are updated where data already
//! passes in bulk: sources once per flush (every 200 ms), layers and tables
//! once per committed epoch, from the acks the coordinator already
//! collects. Nothing is locked per row.
//!
//! Gauges that age by themselves (watermark delay, epoch age) are computed
//! when scraped, so a stalled pipeline shows growing numbers rather than
//! the last ones it set. The names follow Prometheus conventions: `strata_`
//! prefix, base units, `_total` on counters, `_seconds` on durations; the
//! README has the table.
//!
//! This module knows nothing of the dataflow: it is told what happened.

pub mod families;
mod process;
pub mod rates;

pub use process::{HeapStats, heap, report_heap_with};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::lookup::metrics::LookupStats;
use families::{Families, dataflow, layer, side, source, table};
use rates::Rate;

/// The process's metrics: clone it freely (clones share the counters).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    f: Families,
    live: Mutex<Live>,
    /// When counting began: the baseline of every rate.
    started_at: f64,
}

/// What scrape-time gauges are computed from.
#[derive(Default)]
struct Live {
    /// Layer -> watermark (microseconds).
    watermarks: BTreeMap<String, i64>,
    /// Dataflow -> its liveness.
    dataflows: BTreeMap<String, DataflowLive>,
    /// (layer, dimension) -> lookup totals already counted.
    lookups: BTreeMap<(String, String), LookupStats>,
    /// Wall-clock seconds of the last lease renewal, while it is held.
    lease_renewed_at: Option<f64>,
    /// Layer -> rows in, recently.
    rows_in: BTreeMap<String, Rate>,
    /// (layer, side, table) -> rows routed there, recently.
    side_rows: BTreeMap<(String, String, String), Rate>,
    /// (source, topic, partition) -> records read, recently.
    fetched: BTreeMap<(String, String, i32), Rate>,
}

#[derive(Clone, Copy, Default)]
struct DataflowLive {
    running: bool,
    interval: Duration,
    /// Wall-clock seconds of the newest committed epoch.
    last_epoch_at: Option<f64>,
    /// Wall-clock seconds the dataflow was last known healthy: an epoch
    /// committed, or nothing to do with every source reaching its broker.
    heartbeat_at: Option<f64>,
}

/// What a readiness probe is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Every dataflow is running and recently healthy.
    Ready,
    /// Why not.
    NotReady(String),
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

impl Metrics {
    /// A fresh registry with every Strata metric and the process's.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let f = Families::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                f,
                live: Mutex::new(Live::default()),
                started_at: now_seconds(),
            }),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        // A panic while holding the lock leaves plain numbers behind.
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The families, for parts outside the engine (the query server) to update.
    pub fn families(&self) -> &families::Families {
        &self.inner.f
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Sets the gauges that age with the clock.
    fn refresh(&self) {
        let now = now_seconds();
        let live = self.live();
        for (name, w) in &live.watermarks {
            let delay = (now - *w as f64 / 1e6).max(0.0);
            self.inner
                .f
                .layer_watermark_delay
                .get_or_create(&layer(name))
                .set(delay);
        }
        let f = &self.inner.f;
        for (name, r) in &live.rows_in {
            f.layer_rows_in_rate
                .get_or_create(&layer(name))
                .set(r.per_second(now));
        }
        for ((l, kind, t), r) in &live.side_rows {
            f.side_rows_rate
                .get_or_create(&side(l, kind, t))
                .set(r.per_second(now));
        }
        for ((src, topic, p), r) in &live.fetched {
            f.source_records_rate
                .get_or_create(&source(src, topic, *p))
                .set(r.per_second(now));
        }
        if let Some(at) = live.lease_renewed_at {
            self.inner.f.lease_renewal_age.set(now - at);
        }
        for (name, d) in &live.dataflows {
            if let Some(at) = d.last_epoch_at {
                self.inner
                    .f
                    .last_epoch_age
                    .get_or_create(&dataflow(name))
                    .set(now - at);
            }
            if let Some(at) = d.heartbeat_at {
                self.inner
                    .f
                    .heartbeat_age
                    .get_or_create(&dataflow(name))
                    .set(now - at);
            }
        }
    }

    /// A dataflow started (or stopped), committing every `interval`.
    pub fn dataflow_running(&self, name: &str, running: bool, interval: Duration) {
        self.inner
            .f
            .running
            .get_or_create(&dataflow(name))
            .set(i64::from(running));
        let mut live = self.live();
        let d = live.dataflows.entry(name.to_string()).or_default();
        d.running = running;
        d.interval = interval;
        if running && d.heartbeat_at.is_none() {
            d.heartbeat_at = Some(now_seconds());
        }
    }

    /// The dataflow is alive: nothing waits, and its sources reach the
    /// broker.
    pub fn heartbeat(&self, name: &str) {
        let now = now_seconds();
        self.inner
            .f
            .heartbeat
            .get_or_create(&dataflow(name))
            .set(now);
        self.live()
            .dataflows
            .entry(name.to_string())
            .or_default()
            .heartbeat_at = Some(now);
    }

    /// An epoch was committed: `duration` from its barrier request,
    /// `commit` for the manifest and table commits.
    pub fn epoch_committed(&self, name: &str, epoch: u64, duration: Duration, commit: Duration) {
        let f = &self.inner.f;
        let labels = dataflow(name);
        f.epoch_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        f.commit_duration
            .get_or_create(&labels)
            .observe(commit.as_secs_f64());
        f.last_epoch.get_or_create(&labels).set(epoch as i64);
        let now = now_seconds();
        f.last_epoch_time.get_or_create(&labels).set(now);
        {
            let mut live = self.live();
            let d = live.dataflows.entry(name.to_string()).or_default();
            d.last_epoch_at = Some(now);
        }
        self.heartbeat(name);
    }

    /// A layer's part of a committed epoch.
    pub fn layer_epoch(&self, name: &str, rows_in: u64, rows_out: u64, watermark: Option<i64>) {
        let f = &self.inner.f;
        f.layer_rows_in.get_or_create(&layer(name)).inc_by(rows_in);
        let started = self.inner.started_at;
        self.live()
            .rows_in
            .entry(name.to_string())
            .or_insert_with(|| Rate::since(started))
            .add(now_seconds(), rows_in);
        f.layer_rows_out
            .get_or_create(&layer(name))
            .inc_by(rows_out);
        if let Some(w) = watermark {
            f.layer_watermark
                .get_or_create(&layer(name))
                .set(w as f64 / 1e6);
            self.live().watermarks.insert(name.to_string(), w);
        }
    }

    /// Rows a layer routed to a side table (`late`, `future`, `rejected`,
    /// `dead_letter`) in a committed epoch.
    pub fn side_rows(&self, layer_name: &str, kind: &str, table_name: &str, rows: u64) {
        self.inner
            .f
            .side_rows
            .get_or_create(&side(layer_name, kind, table_name))
            .inc_by(rows);
        let started = self.inner.started_at;
        self.live()
            .side_rows
            .entry((
                layer_name.to_string(),
                kind.to_string(),
                table_name.to_string(),
            ))
            .or_insert_with(|| Rate::since(started))
            .add(now_seconds(), rows);
    }

    /// The size of a layer's operator state as of its last committed epoch
    /// (0 for a layer that keeps none).
    pub fn layer_state(&self, name: &str, bytes: u64, rows: u64) {
        let f = &self.inner.f;
        f.layer_state_bytes
            .get_or_create(&layer(name))
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        f.layer_state_rows
            .get_or_create(&layer(name))
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// A layer's lookup totals since the process started.
    pub fn lookups(&self, layer_name: &str, stats: &[LookupStats]) {
        let f = &self.inner.f;
        let mut live = self.live();
        for s in stats {
            let key = (layer_name.to_string(), s.dimension.clone());
            let before = live.lookups.get(&key).cloned().unwrap_or_default();
            let labels = vec![
                ("layer", layer_name.to_string()),
                ("dimension", s.dimension.clone()),
            ];
            f.lookup_hits
                .get_or_create(&labels)
                .inc_by(s.hits.saturating_sub(before.hits));
            f.lookup_misses
                .get_or_create(&labels)
                .inc_by(s.misses.saturating_sub(before.misses));
            f.lookup_failures
                .get_or_create(&labels)
                .inc_by(s.failures.saturating_sub(before.failures));
            f.lookup_timeouts
                .get_or_create(&labels)
                .inc_by(s.timeouts.saturating_sub(before.timeouts));
            live.lookups.insert(key, s.clone());
        }
    }

    /// A table commit: its new version, and what it added.
    pub fn table_committed(&self, name: &str, version: u64, rows: u64, files: u64, bytes: u64) {
        let f = &self.inner.f;
        let labels = table(name);
        f.table_version.get_or_create(&labels).set(version as i64);
        f.table_last_commit
            .get_or_create(&labels)
            .set(now_seconds());
        f.table_rows.get_or_create(&labels).inc_by(rows);
        f.table_files.get_or_create(&labels).inc_by(files);
        f.table_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// A source partition's position: records read since the last report,
    /// records behind the end, and how far behind the newest event time
    /// read is (0 when caught up).
    pub fn partition(
        &self,
        src: &str,
        topic: &str,
        partition: i32,
        read: u64,
        lag: i64,
        lag_seconds: f64,
    ) {
        let f = &self.inner.f;
        let labels = source(src, topic, partition);
        f.source_records.get_or_create(&labels).inc_by(read);
        let started = self.inner.started_at;
        self.live()
            .fetched
            .entry((src.to_string(), topic.to_string(), partition))
            .or_insert_with(|| Rate::since(started))
            .add(now_seconds(), read);
        f.source_lag.get_or_create(&labels).set(lag);
        f.source_lag_seconds.get_or_create(&labels).set(lag_seconds);
    }

    /// Whether a source's last request to its broker was answered.
    pub fn broker_contact(&self, src: &str, reached: bool) {
        let labels = vec![("source", src.to_string())];
        self.inner
            .f
            .broker_up
            .get_or_create(&labels)
            .set(i64::from(reached));
        if reached {
            self.inner
                .f
                .broker_contact
                .get_or_create(&labels)
                .set(now_seconds());
        }
    }

    /// The warehouse's writer lease was taken or renewed.
    pub fn lease_renewed(&self) {
        let now = now_seconds();
        self.inner.f.lease_held.set(1);
        self.inner.f.lease_renewed.set(now);
        self.live().lease_renewed_at = Some(now);
    }

    /// The lease was lost: this run stops writing.
    pub fn lease_lost(&self) {
        self.inner.f.lease_held.set(0);
        self.inner.f.lease_lost.inc();
    }

    /// Whether every dataflow runs and was healthy within `stale_after`
    /// (default: three checkpoint intervals, at least 10 s).
    pub fn readiness(&self, stale_after: Option<Duration>) -> Readiness {
        let now = now_seconds();
        let live = self.live();
        for (name, d) in &live.dataflows {
            if !d.running {
                return Readiness::NotReady(format!("dataflow `{name}` is not running"));
            }
            let limit = stale_after
                .unwrap_or_else(|| (d.interval * 3).max(Duration::from_secs(10)))
                .as_secs_f64();
            let age = d.heartbeat_at.map_or(f64::INFINITY, |at| now - at);
            if age > limit {
                return Readiness::NotReady(format!(
                    "dataflow `{name}` has made no progress for {age:.0} s (limit {limit:.0} s): check the broker and the logs"
                ));
            }
        }
        Readiness::Ready
    }
}

#[cfg(test)]
mod tests;
