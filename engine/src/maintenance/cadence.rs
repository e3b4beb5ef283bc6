//! How often `strata run`'s background maintenance cleans a table's log and
//! vacuums it: often enough that what they remove cannot pile up far past
//! its retention, rarely enough that their listings (the whole
//! `_delta_log`, the whole table) stay off the hot path.
//!
//! Each runs every quarter of its retention, so a table holds at most a
//! retention and a quarter of old log entries and replaced files: log
//! cleanup at most hourly (the 30-day default: hourly), VACUUM at most
//! daily (the 7-day default: daily), neither more often than the table is
//! looked at (`interval`). A pure function of the spec: no clock, no I/O.

use std::time::Duration;

use crate::maintenance::MaintenanceSpec;

/// The longest time between two log cleanups of a table.
pub const LOG_CLEANUP_AT_MOST_EVERY: Duration = Duration::from_secs(3600);

/// The longest time between two background VACUUMs of a table.
pub const VACUUM_AT_MOST_EVERY: Duration = Duration::from_secs(24 * 3600);

/// When `strata run` vacuums a table in the background
/// (`maintenance.vacuum_interval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VacuumEvery {
    /// Every quarter of the retention, at most daily (the default).
    #[default]
    Auto,
    /// Never: only `strata maintain --vacuum` vacuums.
    Off,
    /// At this interval.
    Every(Duration),
}

impl MaintenanceSpec {
    /// How often the background cleans the log (`None`: no background
    /// maintenance).
    pub fn log_cleanup_interval(&self) -> Option<Duration> {
        let looked_at = self.interval?;
        Some(
            (self.log_retention / 4)
                .min(LOG_CLEANUP_AT_MOST_EVERY)
                .max(looked_at),
        )
    }

    /// How often the background vacuums (`None`: never).
    pub fn vacuum_interval(&self) -> Option<Duration> {
        let looked_at = self.interval?;
        let every = match self.vacuum_every {
            VacuumEvery::Off => return None,
            VacuumEvery::Every(every) => every,
            VacuumEvery::Auto => (self.vacuum_retention / 4).min(VACUUM_AT_MOST_EVERY),
        };
        Some(every.max(looked_at))
    }

    /// How long the log keeps its entries: the log retention, and at least
    /// the VACUUM retention (VACUUM reads the version a reader at the
    /// retention's edge sees, from the log).
    pub fn log_kept_for(&self) -> Duration {
        self.log_retention.max(self.vacuum_retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn spec(vacuum_retention: Duration, log_retention: Duration) -> MaintenanceSpec {
        MaintenanceSpec {
            vacuum_retention,
            log_retention,
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_clean_the_log_hourly_and_vacuum_daily() {
        let d = MaintenanceSpec::default();
        assert_eq!(d.log_cleanup_interval(), Some(Duration::from_secs(3600)));
        assert_eq!(d.vacuum_interval(), Some(Duration::from_secs(86_400)));
        assert_eq!(d.log_kept_for(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn short_retentions_are_kept_at_a_quarter_but_never_more_often_than_the_table_is_looked_at() {
        let s = spec(20 * MIN, 8 * MIN);
        assert_eq!(s.vacuum_interval(), Some(5 * MIN));
        assert_eq!(s.log_cleanup_interval(), Some(2 * MIN));
        let s = spec(2 * MIN, 2 * MIN);
        assert_eq!(s.vacuum_interval(), Some(MIN), "the interval");
        assert_eq!(s.log_cleanup_interval(), Some(MIN));
    }

    #[test]
    fn the_log_outlives_the_vacuum_retention() {
        assert_eq!(spec(20 * MIN, 8 * MIN).log_kept_for(), 20 * MIN);
    }

    #[test]
    fn off_and_explicit_intervals() {
        let mut s = spec(20 * MIN, 8 * MIN);
        s.vacuum_every = VacuumEvery::Off;
        assert_eq!(s.vacuum_interval(), None);
        s.vacuum_every = VacuumEvery::Every(Duration::from_secs(10));
        assert_eq!(s.vacuum_interval(), Some(MIN), "not below the interval");
        s.vacuum_every = VacuumEvery::Every(7 * MIN);
        assert_eq!(s.vacuum_interval(), Some(7 * MIN));
        s.interval = None;
        assert_eq!(s.vacuum_interval(), None, "no background maintenance");
        assert_eq!(s.log_cleanup_interval(), None);
    }
}
