//! End-to-end freshness of the reference warehouse (examples/beike): events
//! produced at a steady rate by `strata gen beike`, all twelve layers of
//! `strata run` (ODS -> DWD dedup -> DWD lookups -> DWS / ADS), and a
//! Flight SQL client asking the ADS table what it holds.
//!
//! Freshness is measured as a dashboard sees it: every `--poll-ms` the bench
//! asks `SELECT max(last_paid_at) FROM ads.ads_city_gmv_today` over Flight
//! SQL; the generator dates events with the wall clock (no disorder), so
//! `now - max(last_paid_at)` when the answer arrives is how far behind the
//! producer the dashboard is: the time from an event being produced to it
//! being visible in ADS, for the newest visible event. Samples from the
//! first `--warmup` seconds (catching up, the first dimension load) are
//! dropped. Peak RSS and CPU of `strata run` come from wait4.
//!
//! ```text
//! STRATA_BENCH=beike_freshness scripts/bench        # 50,000 events/s for 60 s
//! STRATA_BENCH_KAFKA=127.0.0.1:9092 cargo bench --bench beike_freshness -- --rate 50000 --secs 60
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use strata_flight_server::{ClientConfig, run_query};

use support::child::Measured;
use support::endpoints::{bench_kafka, free_port};
use support::flags::Flags;
use support::stats::percentile;

struct Args {
    rate: u64,
    secs: u64,
    warmup: u64,
    poll_ms: u64,
    interval: String,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let flags = match Flags::parse(&["rate", "secs", "warmup", "poll-ms", "interval"]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let args = match (|| -> Result<Args, String> {
        Ok(Args {
            rate: flags.get("rate", 50_000)?,
            secs: flags.get("secs", 60)?,
            warmup: flags.get("warmup", 15)?,
            poll_ms: flags.get("poll-ms", 250)?,
            interval: flags.get("interval", "1s".to_string())?,
        })
    })() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(kafka) = bench_kafka() else {
        return ExitCode::FAILURE;
    };
    support::runner::block_on(run(args, kafka))
}

async fn run(args: Args, kafka: String) -> BenchResult<()> {
    let strata = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let work = tempfile::tempdir()?;
    let root = work.path().join("data");
    let prefix = format!(
        "bench{}_",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let flight_port = free_port()?;
    let warehouse = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/beike/warehouse.yaml");
    // SAFETY: no other thread reads the environment while it is set: the
    // children inherit it, the runtime's threads do not look at it.
    unsafe {
        std::env::set_var("KAFKA_BOOTSTRAP", &kafka);
        std::env::set_var("STRATA_STORAGE_ROOT", &root);
        std::env::set_var("BEIKE_TOPIC_PREFIX", &prefix);
        std::env::set_var("STRATA_CHECKPOINT_INTERVAL", &args.interval);
        std::env::set_var("STRATA_FLIGHT_LISTEN", format!("127.0.0.1:{flight_port}"));
        std::env::set_var("STRATA_DASHBOARD", "127.0.0.1:0");
    }
    println!(
        "beike_freshness: strata {} | broker {kafka} | {} events/s for {} s (first {} s dropped) | checkpoint {}",
        strata.display(),
        args.rate,
        args.secs,
        args.warmup,
        args.interval
    );
    let dims = root.join("dims");
    let rate = args.rate.to_string();
    let generator = Measured::spawn(
        &strata,
        &[
            "--log-format",
            "json",
            "gen",
            "beike",
            "--bootstrap-servers",
            &kafka,
            "--topic",
            &prefix,
            "--dims",
            dims.to_str().unwrap_or_default(),
            "--count",
            "0",
            "--rate",
            &rate,
            "--disorder-secs",
            "0",
        ],
        &work.path().join("gen.log"),
    )?;
    wait_for(&dims.join("agents/_delta_log"), Duration::from_secs(30))?;
    let pipeline = Measured::spawn(
        &strata,
        &[
            "--log-format",
            "json",
            "run",
            warehouse.to_str().unwrap_or_default(),
        ],
        &work.path().join("strata.log"),
    )?;
    let flight = ClientConfig {
        endpoint: format!("http://127.0.0.1:{flight_port}"),
        credentials: None,
        ca: None,
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut failures = 0u32;
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(args.secs) {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        match newest_paid(&flight).await {
            Ok(Some(newest)) => {
                let lag = now_us() - newest;
                if started.elapsed() >= Duration::from_secs(args.warmup) {
                    samples.push(lag);
                }
                if last_report.elapsed() > Duration::from_secs(5) {
                    println!(
                        "  {:>4.0} s: ADS {:.2} s behind the producer",
                        started.elapsed().as_secs_f64(),
                        lag as f64 / 1e6
                    );
                    last_report = Instant::now();
                }
            }
            Ok(None) => {}
            Err(_) => failures += 1,
        }
    }
    let ran = pipeline.stop()?;
    let produced = generator.stop()?;
    if samples.is_empty() {
        return Err(format!(
            "no ADS row became visible ({failures} failed polls); see {}",
            work.path().join("strata.log").display()
        )
        .into());
    }
    samples.sort_unstable();
    let ms = |p: f64| percentile(&samples, p) as f64 / 1000.0;
    println!(
        "freshness (produced -> visible in ads.ads_city_gmv_today over Flight SQL), {} samples: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        samples.len(),
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(100.0)
    );
    println!(
        "strata run: peak RSS {:.0} MiB, CPU {:.1} s over {} s ({:.0}% of one core); generator CPU {:.1} s",
        ran.peak_rss_mib,
        ran.cpu_secs,
        args.secs,
        ran.cpu_secs / args.secs as f64 * 100.0,
        produced.cpu_secs
    );
    let log = std::fs::read_to_string(work.path().join("gen.log")).unwrap_or_default();
    if let Some(line) = log.lines().rev().find(|l| l.contains("\"rate\"")) {
        println!("generator's last report: {line}");
    }
    Ok(())
}

/// The newest `last_paid_at` in the ADS table, in microseconds.
async fn newest_paid(flight: &ClientConfig) -> Result<Option<i64>, String> {
    let batches = run_query(
        flight,
        "SELECT max(last_paid_at) AS newest FROM ads.ads_city_gmv_today",
    )
    .await?;
    Ok(batches.iter().find_map(|b| {
        let column = b.column(0).as_primitive_opt::<TimestampMicrosecondType>()?;
        (!column.is_empty() && column.is_valid(0)).then(|| column.value(0))
    }))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn wait_for(path: &Path, timeout: Duration) -> BenchResult<()> {
    let started = Instant::now();
    while !path.exists() {
        if started.elapsed() > timeout {
            return Err(format!("{} did not appear in {timeout:?}", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
