//! The process's own numbers, read from `/proc` on each scrape under the
//! standard names (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`), so the usual
//! dashboards and alerts work unchanged. Elsewhere than Linux they are
//! left out.
//!
//! Resident memory alone does not say whether a process grows: about a
//! third of `strata run`'s is its own code, pages of the executable read in
//! as code paths first run (bounded by the file's size, shared with other
//! processes running it, dropped by the kernel under pressure). So the
//! anonymous part is reported beside it (`strata_resident_anonymous_bytes`),
//! and, when the binary registers its allocator's figures
//! ([`report_heap_with`]), what the program holds from the allocator
//! (`strata_heap_allocated_bytes`) and what the allocator holds from the
//! system (`strata_heap_resident_bytes`): a growing gap between the two is
//! the allocator's, not the program's.

use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux's USER_HZ: the unit of CPU times in `/proc/self/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// What the process's allocator reports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Held by the program: allocated and not yet freed.
    pub allocated: u64,
    /// Held by the allocator in physical memory: the allocated bytes, its
    /// own metadata, and freed pages it has not returned yet.
    pub resident: u64,
}

/// The allocator's reader, registered once by the binary that chose it.
static HEAP: OnceLock<fn() -> Option<HeapStats>> = OnceLock::new();

/// Registers how to read the allocator's figures; the engine does not
/// choose the allocator, the binary does. A second call is ignored.
pub fn report_heap_with(reader: fn() -> Option<HeapStats>) {
    let _ = HEAP.set(reader);
}

/// The allocator's figures, when a reader is registered and answers.
pub fn heap() -> Option<HeapStats> {
    HEAP.get().and_then(|read| read())
}

/// A field of `/proc/self/status` given in kB, in bytes.
fn status_field_bytes(status: &str, field: &str) -> Option<i64> {
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
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
        // One read of /proc/self/status for both of its fields.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let heap = heap();
        let bytes = |b: u64| i64::try_from(b).ok();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process",
                status_field_bytes(&status, "VmRSS"),
            ),
            (
                "strata_resident_anonymous_bytes",
                "Resident memory not backed by a file (heap, stacks): without the executable's code pages",
                status_field_bytes(&status, "RssAnon"),
            ),
            (
                "strata_heap_allocated_bytes",
                "Bytes the program holds from its allocator",
                heap.and_then(|h| bytes(h.allocated)),
            ),
            (
                "strata_heap_resident_bytes",
                "Bytes of physical memory the allocator holds: allocated, its metadata, freed pages not yet returned",
                heap.and_then(|h| bytes(h.resident)),
            ),
            (
                "process_open_fds",
                "Open file descriptors of the process",
                open_fds(),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let g = ConstGauge::new(value);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::status_field_bytes;

    #[test]
    fn status_fields_are_read_whole_in_bytes() {
        let status = "VmRSS:\t  254884 kB\nRssAnon:\t  145712 kB\nRssFile:\t  109172 kB\n";
        assert_eq!(status_field_bytes(status, "VmRSS"), Some(254_884 * 1024));
        assert_eq!(status_field_bytes(status, "RssAnon"), Some(145_712 * 1024));
        // A prefix of a field's name is not that field.
        assert_eq!(status_field_bytes(status, "Rss"), None);
    }
}
