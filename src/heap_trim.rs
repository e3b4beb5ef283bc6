//! Giving freed heap back to the operating system, every few seconds.
//!
//! Why: a long `strata run` allocates in bursts. Every snapshot update of a
//! Delta table reads its `_delta_log` JSON through the kernel, which keeps
//! a decoder per commit file it reads ahead (thousands at once across the
//! tables, 89% of the peak heap in a profiled soak); the bursts are freed
//! within the second. glibc's malloc keeps what a thread freed in that
//! thread's arena (up to 8 per core), so the resident size climbed to the
//! sum of the arenas' peaks (~16 MiB/min in the 30-minute soak) while the
//! live heap stayed flat. `malloc_trim(0)` releases the free pages of every
//! arena. It runs on a thread of its own every few seconds, off the epoch
//! path (the soak's epoch and query percentiles did not rise with it; see
//! the README's soak section). `MALLOC_ARENA_MAX=2` also bounded the
//! growth, but cost 10-20% in epoch time from contention on fewer arenas.
//!
//! `STRATA_HEAP_TRIM_SECS` sets the period (default 10; `0` turns it off,
//! which the soak bench uses to compare). Only glibc has `malloc_trim`;
//! elsewhere this does nothing.

use std::time::Duration;

use tracing::{debug, warn};

const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
const VARIABLE: &str = "STRATA_HEAP_TRIM_SECS";

/// Starts the trimming thread, unless `STRATA_HEAP_TRIM_SECS=0`.
pub fn start() {
    let Some(period) = period(std::env::var(VARIABLE).ok().as_deref()) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("strata-heap-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                let started = std::time::Instant::now();
                let released = trim();
                debug!(
                    released,
                    micros = started.elapsed().as_micros() as u64,
                    "returned free heap to the OS"
                );
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the heap-trim thread; memory freed by bursts stays with the process");
    }
}

/// The period `value` of `STRATA_HEAP_TRIM_SECS` asks for: `None` when it
/// turns trimming off. A value that is not a whole number of seconds is
/// reported and the default used.
fn period(value: Option<&str>) -> Option<Duration> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Some(DEFAULT_PERIOD);
    };
    match value.parse::<u64>() {
        Ok(0) => None,
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => {
            warn!(
                value,
                "{VARIABLE} is not a whole number of seconds (0 turns trimming off); using {}s",
                DEFAULT_PERIOD.as_secs()
            );
            Some(DEFAULT_PERIOD)
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and only walks malloc's own
    // arenas under their locks; it may be called from any thread.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_defaults_to_ten_seconds_and_zero_turns_it_off() {
        assert_eq!(period(None), Some(DEFAULT_PERIOD));
        assert_eq!(period(Some(" ")), Some(DEFAULT_PERIOD));
        assert_eq!(period(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(period(Some("0")), None);
        assert_eq!(period(Some("ten")), Some(DEFAULT_PERIOD));
    }

    #[test]
    fn trimming_can_be_called_any_time() {
        let _ = trim();
        let _ = trim();
    }
}
