//! Progress of a backfill's replay: a bar on a terminal, structured log
//! lines otherwise (CI logs and log collectors cannot use a redrawn line).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_engine::dataflow::replay::ReplayProgress;
use tokio::sync::watch;
use tracing::info;

/// How often the bar is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(250);
/// How often a progress line is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

/// Reports `progress` until `done` turns true.
pub async fn report(progress: Arc<ReplayProgress>, mut done: watch::Receiver<bool>) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { BAR_EVERY } else { LOG_EVERY };
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = done.wait_for(|d| *d) => break,
        }
        let snapshot = Snapshot::take(&progress, started.elapsed());
        if terminal {
            eprint!("\r\x1b[2K{}", snapshot.bar());
            let _ = std::io::stderr().flush();
        } else {
            info!(
                records = snapshot.read,
                total = snapshot.total,
                percent = snapshot.percent().map(|p| (p * 10.0).round() / 10.0),
                records_per_s = snapshot.rate().round() as u64,
                eta_s = snapshot.eta().map(|d| d.as_secs()),
                event_time = snapshot.event_time().as_deref(),
                "backfill progress"
            );
        }
    }
    if terminal {
        let snapshot = Snapshot::take(&progress, started.elapsed());
        eprintln!("\r\x1b[2K{}", snapshot.bar());
    }
}

/// The counters at one moment.
struct Snapshot {
    read: u64,
    total: u64,
    event_time_us: i64,
    elapsed: Duration,
}

impl Snapshot {
    fn take(progress: &ReplayProgress, elapsed: Duration) -> Self {
        Snapshot {
            read: progress.read.load(Ordering::Relaxed),
            total: progress.total.load(Ordering::Relaxed),
            event_time_us: progress.event_time_us.load(Ordering::Relaxed),
            elapsed,
        }
    }

    fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.read.min(self.total) as f64 * 100.0) / self.total as f64)
    }

    fn rate(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (self.total > 0 && rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total.saturating_sub(self.read) as f64 / rate))
    }

    fn event_time(&self) -> Option<String> {
        (self.event_time_us > i64::MIN && self.event_time_us < i64::MAX)
            .then(|| chrono::DateTime::from_timestamp_micros(self.event_time_us))
            .flatten()
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    }

    /// `[#########.....]  62.0%  1.2M/2.0M records  410k/s  ETA 2s  at 10:32`
    fn bar(&self) -> String {
        let fraction = self.percent().unwrap_or(0.0) / 100.0;
        let filled = ((fraction * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
        let eta = self
            .eta()
            .map_or_else(|| "-".to_string(), |d| format!("{}s", d.as_secs()));
        format!(
            "[{}{}] {:>5.1}%  {}/{} records  {}/s  ETA {}{}",
            "#".repeat(filled),
            ".".repeat(BAR_WIDTH - filled),
            fraction * 100.0,
            count(self.read),
            if self.total > 0 {
                count(self.total)
            } else {
                "?".into()
            },
            count(self.rate() as u64),
            eta,
            self.event_time()
                .map(|t| format!("  event time {t}"))
                .unwrap_or_default(),
        )
    }
}

/// 1234567 -> "1.2M".
fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_share_rate_and_eta() {
        let s = Snapshot {
            read: 500_000,
            total: 2_000_000,
            event_time_us: i64::MIN,
            elapsed: Duration::from_secs(1),
        };
        let bar = s.bar();
        assert!(bar.contains(" 25.0%"), "{bar}");
        assert!(bar.contains("500.0k/2.0M records"), "{bar}");
        assert!(bar.contains("ETA 3s"), "{bar}");
    }

    #[test]
    fn an_unknown_total_has_no_eta() {
        let s = Snapshot {
            read: 10,
            total: 0,
            event_time_us: 0,
            elapsed: Duration::from_secs(1),
        };
        assert!(s.eta().is_none());
        assert!(s.bar().contains("10/? records"), "{}", s.bar());
    }
}
