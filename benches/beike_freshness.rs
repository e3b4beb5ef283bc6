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
//! What makes the figures trustworthy, or fails the bench:
//! - the rate is the one achieved, counted in the broker (records in both
//!   topics at the end of the warm-up and at the end, from the topics'
//!   offsets), not the one asked; under 95% of `--rate` fails the bench;
//! - every poll counts: failed ones are reported with the first error
//!   (more than 1% fails the bench), never dropped silently;
//! - a percentile the sample cannot tell from its maximum (p99 needs more
//!   than 100 polls) is printed as not measured;
//! - `strata run` must exit 0 on SIGTERM, and the generator must still be
//!   producing when stopped.
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

use support::beike::{BeikeOptions, BeikeRun, BenchResult, LoggedRecords};
use support::endpoints::bench_kafka;
use support::flags::Flags;
use support::stats::{Percentile, Samples};

struct Args {
    rate: u64,
    secs: u64,
    warmup: u64,
    poll_ms: u64,
    interval: String,
}

fn main() -> ExitCode {
    let known = ["rate", "secs", "warmup", "poll-ms", "interval"];
    let Some(args) = Flags::args(&known, |flags| {
        Ok(Args {
            rate: flags.get("rate", 50_000)?,
            secs: flags.get("secs", 60)?,
            warmup: flags.get("warmup", 15)?,
            poll_ms: flags.get("poll-ms", 250)?,
            interval: flags.get("interval", "1s".to_string())?,
        })
    }) else {
        return ExitCode::FAILURE;
    };
    let Some(kafka) = bench_kafka() else {
        return ExitCode::FAILURE;
    };
    support::runner::block_on(run(args, kafka))
}

async fn run(args: Args, kafka: String) -> BenchResult<()> {
    let strata = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let warehouse = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/beike/warehouse.yaml");
    println!(
        "beike_freshness: strata {} | broker {kafka} | {} events/s for {} s (first {} s dropped) | checkpoint {}",
        strata.display(),
        args.rate,
        args.secs,
        args.warmup,
        args.interval
    );
    let run = BeikeRun::start(&BeikeOptions {
        strata: &strata,
        warehouse: &warehouse,
        kafka: &kafka,
        rate: args.rate,
        interval: &args.interval,
        maintenance_interval: None,
        retention: None,
    })?;
    let BeikeRun {
        work,
        topics,
        flight,
        generator,
        pipeline,
        ..
    } = run;
    let logged = LoggedRecords::new(&kafka)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut polls, mut failures) = (0u32, 0u32);
    let mut first_failure: Option<String> = None;
    let mut warm: Option<(Instant, i64)> = None;
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(args.secs) {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        if !pipeline.alive() || !generator.alive() {
            break;
        }
        let measured = started.elapsed() >= Duration::from_secs(args.warmup);
        if measured && warm.is_none() {
            warm = Some((Instant::now(), logged.count(&topics)?));
        }
        let answer = newest_paid(&flight).await;
        if measured {
            polls += 1;
        }
        match answer {
            Ok(Some(newest)) => {
                let lag = now_us() - newest;
                if measured {
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
            // Nothing paid is visible yet: a failure once measuring.
            Ok(None) if measured => {
                failures += 1;
                first_failure.get_or_insert_with(|| "the ADS table had no paid deal".into());
            }
            Ok(None) => {}
            Err(e) if measured => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    let end = (Instant::now(), logged.count(&topics)?);
    let generator_running = generator.alive();
    let ran = pipeline
        .stop()?
        .success("strata run", &work.path().join("strata.log"))?;
    let produced = generator.stop()?;
    if !generator_running {
        return Err(format!(
            "the generator stopped before the end (exit {}); see {}",
            produced.code,
            work.path().join("gen.log").display()
        )
        .into());
    }
    let Some((warm_at, warm_count)) = warm else {
        return Err("the run ended before the warm-up did".into());
    };
    let achieved = (end.1 - warm_count) as f64 / (end.0 - warm_at).as_secs_f64();
    let samples = Samples::new(samples);
    println!(
        "freshness (produced -> visible in ads.ads_city_gmv_today over Flight SQL): {}",
        samples.describe(
            &[Percentile::P50, Percentile::P90, Percentile::P99],
            1000.0,
            "ms",
            0
        )
    );
    println!(
        "polls after the warm-up: {polls}, failed {failures}{}",
        first_failure
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "produced: {achieved:.0} events/s reached the broker after the warm-up (asked {}; counted from the topics' offsets)",
        args.rate
    );
    println!(
        "strata run: peak RSS {:.0} MiB, CPU {:.1} s over {} s ({:.0}% of one core); generator CPU {:.1} s",
        ran.peak_rss_mib,
        ran.cpu_secs,
        args.secs,
        ran.cpu_secs / args.secs as f64 * 100.0,
        produced.cpu_secs
    );
    if samples.is_empty() {
        return Err(format!(
            "no ADS row became visible ({failures} failed polls); see {}",
            work.path().join("strata.log").display()
        )
        .into());
    }
    if achieved < 0.95 * args.rate as f64 {
        return Err(format!(
            "the generator reached {achieved:.0} events/s, under 95% of --rate {}: these are not figures at that rate; lower --rate",
            args.rate
        )
        .into());
    }
    if failures as f64 > 0.01 * polls as f64 {
        return Err(format!("{failures} of {polls} polls failed").into());
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
