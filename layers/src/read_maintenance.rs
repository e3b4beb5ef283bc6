//! Reading `maintenance:`, per warehouse and per layer: how tables are
//! compacted and vacuumed (see `strata_engine::maintenance`).
//!
//! Every key is optional; a layer's section overrides the warehouse's,
//! which overrides the defaults ([`MaintenanceSpec::default`]).

use std::time::Duration;

use strata_engine::maintenance::{MaintenanceSpec, VacuumEvery};

use crate::diagnostic::Diagnostics;
use crate::model::Maintenance;
use crate::node_reader::MapReader;

const MAINTENANCE_KEYS: &[&str] = &[
    "interval",
    "target_file_size_mb",
    "min_small_files",
    "vacuum_retention",
    "log_retention",
    "vacuum_interval",
];

/// The shortest VACUUM retention a file accepts: below it, files of an
/// epoch still being committed could go.
const MIN_RETENTION: Duration = Duration::from_secs(30);

/// Reads `maintenance:` under `section` (the file's top level, or a layer).
pub(crate) fn read_maintenance(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
) -> Maintenance {
    let mut m = Maintenance::default();
    let path = if path.is_empty() {
        "maintenance".to_string()
    } else {
        format!("{path}.maintenance")
    };
    let Some(s) = section
        .node("maintenance")
        .and_then(|n| MapReader::new(d, n, &path, MAINTENANCE_KEYS))
    else {
        return m;
    };
    if let Some(text) = s.string(d, "interval") {
        // YAML 1.1 reads an unquoted `off` as the boolean false.
        if matches!(text.value.trim(), "off" | "false") {
            m.interval = Some(None);
        } else if let Some(i) = s.duration(d, "interval") {
            m.interval = Some(Some(i.value));
        }
    }
    if let Some(mb) = s.count(d, "target_file_size_mb") {
        if mb == 0 {
            d.error(
                s.pos(),
                &format!("{path}.target_file_size_mb"),
                "files of 0 MB cannot hold rows",
                Some("write e.g. `target_file_size_mb: 128` (the default)".into()),
            );
        }
        m.target_file_size = Some(mb.max(1) * 1024 * 1024);
    }
    if let Some(n) = s.count(d, "min_small_files") {
        m.min_small_files = Some(n as usize);
    }
    if let Some(r) = s.duration(d, "vacuum_retention") {
        if r.value < MIN_RETENTION {
            d.error(
                r.pos,
                &format!("{path}.vacuum_retention"),
                format!(
                    "a retention under {}s could remove files of an epoch still being committed",
                    MIN_RETENTION.as_secs()
                ),
                Some("write e.g. `vacuum_retention: 7d` (the default)".into()),
            );
        }
        m.vacuum_retention = Some(r.value.max(MIN_RETENTION));
    }
    if let Some(r) = s.duration(d, "log_retention") {
        m.log_retention = Some(r.value);
    }
    if let Some(text) = s.string(d, "vacuum_interval") {
        m.vacuum_interval = match text.value.trim() {
            "off" | "false" => Some(VacuumEvery::Off),
            "auto" => Some(VacuumEvery::Auto),
            other => match crate::duration::parse_duration(other) {
                Some(every) if !every.is_zero() => Some(VacuumEvery::Every(every)),
                _ => {
                    d.error(
                        text.pos,
                        &format!("{path}.vacuum_interval"),
                        format!("`{other}` is not a duration, `auto` or `off`"),
                        Some("write e.g. `vacuum_interval: 1d`, `auto` (every quarter of vacuum_retention, at most daily: the default) or `off` (only `strata maintain --vacuum` vacuums)".into()),
                    );
                    None
                }
            },
        };
    }
    m
}

impl Maintenance {
    /// `self` over `base`: what is set here wins.
    pub fn over(&self, base: &MaintenanceSpec) -> MaintenanceSpec {
        MaintenanceSpec {
            target_file_size: self.target_file_size.unwrap_or(base.target_file_size),
            min_small_files: self.min_small_files.unwrap_or(base.min_small_files),
            vacuum_retention: self.vacuum_retention.unwrap_or(base.vacuum_retention),
            log_retention: self.log_retention.unwrap_or(base.log_retention),
            interval: self.interval.unwrap_or(base.interval),
            vacuum_every: self.vacuum_interval.unwrap_or(base.vacuum_every),
        }
    }
}

/// The shortest VACUUM retention accepted, for a warehouse whose longest
/// checkpoint interval is `interval`: ten intervals, and at least 30 s.
pub fn min_vacuum_retention(interval: Duration) -> Duration {
    (interval * 10).max(MIN_RETENTION)
}
