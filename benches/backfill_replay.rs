//! Backfill under a live pipeline, as the README describes it: N deal
//! events in a Kafka topic (produced as fast as the broker takes them,
//! dated within 5 s of their sending), a live `strata run` of
//! the quickstart (ODS -> DWD -> per-minute DWS) that has landed them and
//! keeps committing while a generator sends more (`--live-rate`), then
//! `strata backfill` of the DWS layer over every minute the history
//! touched: it replays ODS -> DWD -> DWS into staging and swaps the range
//! into the live table in one commit, while the live pipeline commits on.
//! The bench waits until the live pipeline has closed the history's last
//! minute (its checkpointed watermark, read from the manifests) before it
//! starts: a range the live pipeline has not closed is refused, and one
//! that ends before the history's first window closes holds no row.
//!
//! Reported per replay source: records replayed per second of the whole
//! command (process start to exit: planning, locating the range, the replay
//! with its staging writes, the swap), its peak RSS and CPU; and how many
//! epochs the live pipeline committed while it ran. From Kafka first (the
//! range placed by the ODS table's positions), then, with `--ods 1`, from
//! the ODS table.
//!
//! The bench fails unless: every backfill exits 0 and its swap is a commit
//! of the live DWS table (with its `strata.backfill` commit info), the live
//! pipeline committed epochs during each backfill, it exits 0 on SIGTERM,
//! and the generator exits 0.
//!
//! ```text
//! STRATA_BENCH=backfill_replay scripts/bench --events 5000000 --ods 1
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use chrono::DurationRound;

use support::child::{Measured, run_to_end};
use support::delta_log::LogReader;
use support::endpoints::bench_kafka;
use support::flags::Flags;
use support::manifests::layer_watermark;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    events: u64,
    partitions: u32,
    ods: bool,
    live_rate: u64,
}

fn main() -> ExitCode {
    let known = ["events", "partitions", "ods", "live-rate"];
    let Some(args) = Flags::args(&known, |flags| {
        Ok(Args {
            events: flags.get("events", 5_000_000)?,
            partitions: flags.get("partitions", 4)?,
            ods: flags.get("ods", 0u8)? != 0,
            live_rate: flags.get("live-rate", 2_000)?,
        })
    }) else {
        return ExitCode::FAILURE;
    };
    let Some(kafka) = bench_kafka() else {
        return ExitCode::FAILURE;
    };
    match run(&kafka, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(kafka: &str, args: &Args) -> BenchResult<()> {
    let strata = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let work = tempfile::tempdir()?;
    let dir = work.path();
    let topic = format!(
        "bench_backfill_{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos()
    );
    println!(
        "backfill_replay: {} events | {} partitions | broker {kafka} | live producer {} events/s",
        args.events, args.partitions, args.live_rate
    );
    println!("producing the history (as fast as the broker takes it) ...");
    let history_from = chrono::Utc::now();
    let summary = run_to_end(
        &strata,
        &refs(&gen_args(
            kafka,
            &topic,
            args.partitions,
            args.events,
            0,
            5,
            1,
        )),
    )?;
    println!("  producer: {}", summary.trim());
    // Event times lie within `--spread-secs` (5 s) of sending: the range is
    // every minute from the one before the first send to the end of the one
    // holding the last send plus the spread.
    let minute = chrono::Duration::minutes(1);
    let spread = chrono::Duration::seconds(5);
    let from = (history_from - spread).duration_trunc(minute)?;
    let to = (chrono::Utc::now() + spread).duration_trunc(minute)? + minute;
    let warehouse = write_warehouse(dir, kafka, &topic)?;

    println!("starting the live pipeline and waiting until it has landed the history ...");
    let live_log = dir.join("live.log");
    let live = Measured::spawn(
        &strata,
        &[
            "--log-format",
            "json",
            "run",
            "--no-serve",
            path_text(&warehouse),
        ],
        &live_log,
    )?;
    let mut ods = LogReader::new(&dir.join("data/ods/ods_deals"));
    let landed = Instant::now();
    while ods.refresh()? < args.events {
        if !live.alive() {
            live.wait()?.success("the live strata run", &live_log)?;
            return Err("the live strata run stopped by itself".into());
        }
        if landed.elapsed() > Duration::from_secs(1800) {
            return Err(format!(
                "the live pipeline landed only {} rows in 30 min",
                ods.refresh()?
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "  landed {} rows in {:.1} s",
        ods.refresh()?,
        landed.elapsed().as_secs_f64()
    );

    // Events dated now keep the live pipeline committing through the
    // backfills (long enough for both; the bench stops it when done).
    let live_gen_log = dir.join("live-gen.log");
    let generator = Measured::spawn(
        &strata,
        &refs(&gen_args(
            kafka,
            &topic,
            args.partitions,
            args.live_rate * 3600,
            args.live_rate,
            5,
            2,
        )),
        &live_gen_log,
    )?;
    let result = (|| -> BenchResult<()> {
        println!(
            "waiting until the live pipeline has closed dws_city_minute up to {to} (its events dated now move the watermark) ..."
        );
        let to_us = to.timestamp_micros();
        let waited = Instant::now();
        while layer_watermark(&dir.join("data"), "quickstart", "dws_city_minute")
            .is_none_or(|w| w < to_us)
        {
            if !live.alive() || !generator.alive() {
                return Err(
                    "the live pipeline or its generator stopped before the range closed".into(),
                );
            }
            if waited.elapsed() > Duration::from_secs(600) {
                return Err(format!("the live pipeline did not close {to} in 10 min").into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let range = (from.to_rfc3339(), to.to_rfc3339());
        backfill(&strata, &warehouse, dir, &range, "kafka", &live)?;
        if args.ods {
            backfill(&strata, &warehouse, dir, &range, "ods", &live)?;
        }
        Ok(())
    })();
    let generator_running = generator.alive();
    let live_ended = live.stop()?;
    let gen_ended = generator.stop()?;
    result?;
    live_ended.success("the live strata run", &live_log)?;
    if !generator_running {
        gen_ended.success("the live generator", &live_gen_log)?;
        return Err("the live generator stopped before the backfills ended".into());
    }
    Ok(())
}

/// One backfill of `dws_city_minute` from `source`, under the live pipeline.
fn backfill(
    strata: &Path,
    warehouse: &Path,
    dir: &Path,
    (from, to): &(String, String),
    source: &str,
    live: &Measured,
) -> BenchResult<()> {
    let log = dir.join(format!("backfill-{source}.log"));
    let mut live_commits = LogReader::new(&dir.join("data/ods/ods_deals"));
    let mut dws = LogReader::new(&dir.join("data/dws/dws_city_minute"));
    live_commits.refresh()?;
    dws.refresh()?;
    let (ods_before, dws_before) = (
        live_commits.commits().len(),
        dws.commits().keys().last().copied(),
    );
    let started = Instant::now();
    let args = [
        "--log-format",
        "json",
        "backfill",
        path_text(warehouse),
        "dws_city_minute",
        "--from",
        from,
        "--to",
        to,
        "--replay-from",
        source,
    ];
    let ended = Measured::spawn(strata, &args, &log)?.wait()?;
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log)?;
    if ended.code != 0 {
        return Err(format!("backfill exited {}:\n{}", ended.code, tail(&text)).into());
    }
    if !live.alive() {
        return Err("the live pipeline stopped during the backfill".into());
    }
    let summary = text
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.get("replayed").is_some())
        })
        .ok_or("no summary line in the backfill's output")?;
    let replayed = summary["replayed"].as_u64().unwrap_or(0);
    live_commits.refresh()?;
    dws.refresh()?;
    let live_epochs = live_commits.commits().len() - ods_before;
    let swaps = swap_commits(&dir.join("data/dws/dws_city_minute"), dws_before)?;
    if swaps != 1 {
        return Err(format!(
            "[{source}] {swaps} commits of the live DWS table carry strata.backfill since the backfill started, not 1"
        )
        .into());
    }
    if live_epochs == 0 {
        return Err(format!(
            "[{source}] the live pipeline committed nothing during the backfill: not a swap under a live pipeline"
        )
        .into());
    }
    println!(
        "[{source}] {replayed} records replayed in {secs:.1} s = {:.0} records/s | peak RSS {:.0} MiB | CPU {:.1} s | live pipeline: {live_epochs} ODS commits meanwhile | {}",
        replayed as f64 / secs,
        ended.peak_rss_mib,
        ended.cpu_secs,
        summary["tables"]
    );
    Ok(())
}

/// Commits of the table after version `after` whose commit info names a
/// backfill.
fn swap_commits(table: &Path, after: Option<u64>) -> BenchResult<usize> {
    let mut swaps = 0;
    for entry in std::fs::read_dir(table.join("_delta_log"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name
            .strip_suffix(".json")
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        if after.is_some_and(|a| version <= a) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        swaps += usize::from(text.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("commitInfo").cloned())
                .is_some_and(|info| info.to_string().contains("strata.backfill"))
        }));
    }
    Ok(swaps)
}

fn gen_args(
    kafka: &str,
    topic: &str,
    partitions: u32,
    count: u64,
    rate: u64,
    spread_secs: u64,
    seed: u64,
) -> Vec<String> {
    [
        "--log-format",
        "json",
        "gen",
        "deals",
        "--bootstrap-servers",
        kafka,
        "--topic",
        topic,
        "--partitions",
        &partitions.to_string(),
        "--count",
        &count.to_string(),
        "--rate",
        &rate.to_string(),
        "--spread-secs",
        &spread_secs.to_string(),
        "--seed",
        &seed.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn write_warehouse(dir: &Path, kafka: &str, topic: &str) -> BenchResult<PathBuf> {
    let text = include_str!("../examples/quickstart/warehouse.yaml")
        .replace("${KAFKA_BOOTSTRAP:-127.0.0.1:9092}", kafka)
        .replace("${DEALS_TOPIC:-deals}", topic)
        .replace("${STRATA_STORAGE_ROOT:-./data}", "./data");
    let path = dir.join("warehouse.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn path_text(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn tail(text: &str) -> &str {
    &text[text.len().saturating_sub(3000)..]
}
