//! Backfill replay rate: N deal events in a Kafka topic, then `strata
//! backfill` of the quickstart's per-minute DWS layer over their whole
//! hour, which replays ODS -> DWD -> DWS from the log into staging tables
//! and swaps the range into the live table in one commit.
//!
//! Reported: records replayed per second of the whole command (process
//! start to exit: planning, Kafka look-ups, the replay with its staging
//! writes, the swap), the process's peak RSS and CPU. With `--ods 1` the same
//! range is then replayed from the ODS table (landed first by a bounded
//! `strata run`).
//!
//! ```text
//! STRATA_BENCH=backfill_replay scripts/bench --events 5000000 --ods 1
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use support::child::{Measured, run_to_end};
use support::endpoints::bench_kafka;
use support::flags::Flags;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let flags = match Flags::parse(&["events", "partitions", "ods"]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(kafka) = bench_kafka() else {
        return ExitCode::FAILURE;
    };
    let result = (|| -> BenchResult<()> {
        let events: u64 = flags.get("events", 5_000_000)?;
        let partitions: u32 = flags.get("partitions", 4)?;
        run(&kafka, events, partitions, flags.text("ods").is_some())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(kafka: &str, events: u64, partitions: u32, ods: bool) -> BenchResult<()> {
    let strata = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let work = tempfile::tempdir()?;
    let topic = format!(
        "bench_backfill_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    println!("backfill_replay: {events} events | {partitions} partitions | broker {kafka}");
    println!("producing ...");
    let summary = run_to_end(
        &strata,
        &[
            "--log-format",
            "text",
            "gen",
            "deals",
            "--bootstrap-servers",
            kafka,
            "--topic",
            &topic,
            "--partitions",
            &partitions.to_string(),
            "--count",
            &events.to_string(),
            "--rate",
            "0",
            "--spread-secs",
            "3600",
        ],
    )?;
    println!("  producer: {}", summary.trim());
    // What a replay from offset 0 can read: the memory broker has been seen
    // to hold a few thousand fewer than were acknowledged at this volume.
    println!(
        "  the topic holds {} records",
        held_records(kafka, &topic, partitions)?
    );
    let warehouse = write_warehouse(work.path(), kafka, &topic)?;
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(2)).to_rfc3339();
    let to = now.to_rfc3339();
    // From offset 0, not offsets-for-times: the memory broker answers
    // those wrongly (BROKER.md), and every event of the topic is wanted.
    let start: Vec<String> = (0..partitions).map(|p| format!("{topic}:{p}:0")).collect();
    let kafka_args = ["--to", &to, "--from-offsets", &start.join(",")];
    backfill(
        &strata,
        &warehouse,
        work.path(),
        &from,
        &kafka_args,
        "kafka",
    )?;
    if ods {
        println!("landing the ODS table (bounded run) ...");
        let landed = Measured::spawn(
            &strata,
            &[
                "--log-format",
                "json",
                "run",
                "--bounded",
                "--no-serve",
                path_text(&warehouse),
            ],
            &work.path().join("land.log"),
        )?
        .wait()?;
        if landed.code != 0 {
            return Err(format!("the landing run exited {}", landed.code).into());
        }
        // Up to the landing run's watermark (the default `--to`): later
        // windows are still open in the live table.
        backfill(&strata, &warehouse, work.path(), &from, &[], "ods")?;
    }
    Ok(())
}

fn backfill(
    strata: &Path,
    warehouse: &Path,
    dir: &Path,
    from: &str,
    extra: &[&str],
    source: &str,
) -> BenchResult<()> {
    let log = dir.join(format!("backfill-{source}.log"));
    let started = Instant::now();
    let mut args = vec![
        "--log-format",
        "json",
        "backfill",
        path_text(warehouse),
        "dws_city_minute",
        "--from",
        from,
        "--replay-from",
        source,
    ];
    args.extend_from_slice(extra);
    let ended = Measured::spawn(strata, &args, &log)?.wait()?;
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log)?;
    if ended.code != 0 {
        return Err(format!("backfill exited {}:\n{}", ended.code, tail(&text)).into());
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
    println!(
        "[{source}] {replayed} records replayed in {secs:.1} s = {:.0} records/s | peak RSS {:.0} MiB | CPU {:.1} s | {}",
        replayed as f64 / secs,
        ended.peak_rss_mib,
        ended.cpu_secs,
        summary["tables"]
    );
    Ok(())
}

fn held_records(kafka: &str, topic: &str, partitions: u32) -> BenchResult<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .create()?;
    let mut total = 0;
    for p in 0..partitions as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        total += high - low;
    }
    Ok(total)
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
