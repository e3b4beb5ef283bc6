//! The process's own numbers, read from `/proc` on each scrape under the
//! standard names (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`), so the usual
//! dashboards and alerts work unchanged. Elsewhere than Linux they are
//! left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux's USER_HZ: the unit of CPU times in `/proc/self/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// Resident memory in bytes (`VmRSS` of `/proc/self/status`).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU seconds (`/proc/self/stat` fields 14 and 15).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count after its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(rss) = resident_bytes() {
            let g = ConstGauge::new(rss);
            g.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the process",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(cpu) = cpu_seconds() {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                None,
                c.metric_type(),
            )?)?;
        }
        if let Some(fds) = open_fds() {
            let g = ConstGauge::new(fds);
            g.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors of the process",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
