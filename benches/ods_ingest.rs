//! Ingest, end to end: deal events in a Kafka topic -> `strata run` of the
//! quickstart warehouse (ODS -> DWD -> per-minute DWS, one dataflow) -> Delta
//! tables, against a real broker. Throughput and latency are measured on the
//! ODS table (every event lands there); the other layers run alongside.
//!
//! Two measurements, each with its own `strata run` process:
//! - catch-up: N events already in the topic; time from process start until
//!   all N are committed in Delta; events/s and the process's peak RSS.
//! - steady: events produced at a fixed rate while the pipeline runs; the
//!   latency of each event from its Kafka create time to the moment the Delta
//!   commit holding it became visible (the commit file's mtime), as
//!   percentiles; and peak RSS.
//!
//! Run it with `scripts/bench` (builds release, starts a broker), or against a
//! broker of your own:
//!
//! ```text
//! STRATA_BENCH_KAFKA=127.0.0.1:9092 cargo bench --bench ods_ingest -- --events 1000000
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use support::child::{Measured, run_to_end};
use support::delta_log::LogReader;
use support::endpoints::bench_kafka;
use support::flags::Flags;
use support::stats::percentile;

struct Args {
    events: u64,
    partitions: u32,
    rate: u64,
    steady_secs: u64,
    interval: String,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let flags = Flags::parse(&[
        "events",
        "partitions",
        "rate",
        "steady-secs",
        "interval",
        "only",
    ])?;
    Ok(Args {
        events: flags.get("events", 1_000_000)?,
        partitions: flags.get("partitions", 4)?,
        rate: flags.get("rate", 20_000)?,
        steady_secs: flags.get("steady-secs", 30)?,
        interval: flags.get("interval", "1s".to_string())?,
        only: flags.text("only"),
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(kafka) = bench_kafka() else {
        return ExitCode::FAILURE;
    };
    match run(&args, &kafka) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run(args: &Args, kafka: &str) -> BenchResult<()> {
    let strata = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let work = tempfile::tempdir()?;
    println!(
        "ods_ingest: strata {} | broker {kafka} | {} partitions | checkpoint {}",
        strata.display(),
        args.partitions,
        args.interval
    );
    if args.only.as_deref() != Some("steady") {
        catch_up(args, kafka, &strata, work.path())?;
    }
    if args.only.as_deref() != Some("catchup") {
        steady(args, kafka, &strata, work.path())?;
    }
    Ok(())
}

fn write_warehouse(dir: &Path, kafka: &str, topic: &str, interval: &str) -> BenchResult<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let template = include_str!("../examples/quickstart/warehouse.yaml");
    let text = template
        .replace("${KAFKA_BOOTSTRAP:-127.0.0.1:9092}", kafka)
        .replace("${DEALS_TOPIC:-deals}", topic)
        .replace("${STRATA_STORAGE_ROOT:-./data}", "./data")
        .replace("interval: 1s", &format!("interval: {interval}"));
    let path = dir.join("warehouse.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{nanos}")
}

fn gen_args<'a>(
    kafka: &'a str,
    topic: &'a str,
    partitions: &'a str,
    count: &'a str,
    rate: &'a str,
) -> Vec<&'a str> {
    vec![
        "--log-format",
        "text",
        "gen",
        "deals",
        "--bootstrap-servers",
        kafka,
        "--topic",
        topic,
        "--partitions",
        partitions,
        "--count",
        count,
        "--rate",
        rate,
        "--spread-secs",
        // Within the quickstart's watermark delay: the DWS windows close
        // as the stream advances instead of sending rows to the late table.
        "5",
    ]
}

/// `strata run` on `warehouse` (no Flight SQL server: not measured here).
fn spawn_run(strata: &Path, warehouse: &Path, dir: &Path) -> std::io::Result<Measured> {
    Measured::spawn(
        strata,
        &[
            "--log-format",
            "json",
            "run",
            "--no-serve",
            warehouse.to_str().unwrap_or_default(),
        ],
        &dir.join("strata.log"),
    )
}

/// Committed records in both of the layer's tables.
struct Committed {
    rows: LogReader,
    dead: LogReader,
}

impl Committed {
    fn new(dir: &Path) -> Self {
        Committed {
            rows: LogReader::new(&dir.join("data/ods/ods_deals")),
            dead: LogReader::new(&dir.join("data/ods/ods_deals_dead_letter")),
        }
    }

    fn total(&mut self) -> BenchResult<u64> {
        Ok(self.rows.refresh()? + self.dead.refresh()?)
    }

    /// Waits until `target` records are committed, printing progress.
    fn wait_for(&mut self, target: u64, started: Instant, timeout: Duration) -> BenchResult<()> {
        let mut last_print = Instant::now();
        loop {
            let done = self.total()?;
            if done >= target {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(
                    format!("only {done} of {target} records committed after {timeout:?}").into(),
                );
            }
            if last_print.elapsed() > Duration::from_secs(2) {
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "  .. {done}/{target} committed ({:.0}%), {:.0} events/s so far",
                    100.0 * done as f64 / target as f64,
                    done as f64 / secs
                );
                last_print = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn catch_up(args: &Args, kafka: &str, strata: &Path, work: &Path) -> BenchResult<()> {
    let topic = unique_topic("bench_catchup");
    let (partitions, count) = (args.partitions.to_string(), args.events.to_string());
    println!(
        "\n[catch-up] producing {} deal events to {topic} ...",
        args.events
    );
    let summary = run_to_end(strata, &gen_args(kafka, &topic, &partitions, &count, "0"))?;
    println!("  producer: {}", summary.trim());

    let dir = work.join("catchup");
    let warehouse = write_warehouse(&dir, kafka, &topic, &args.interval)?;
    let started = Instant::now();
    let child = spawn_run(strata, &warehouse, &dir)?;
    let mut committed = Committed::new(&dir);
    let waited = committed.wait_for(args.events, started, Duration::from_secs(1800));
    let elapsed = started.elapsed().as_secs_f64();
    let ended = child.stop()?;
    waited?;
    let total = committed.total()?;
    println!(
        "[catch-up] {total} events committed in {elapsed:.2} s = {:.0} events/s | peak RSS {:.0} MiB | strata CPU {:.2} s = {:.0} events per CPU-second | exit {}",
        total as f64 / elapsed,
        ended.peak_rss_mib,
        ended.cpu_secs,
        total as f64 / ended.cpu_secs.max(1e-9),
        ended.code
    );
    println!(
        "  (includes process start, table creation and the last checkpoint interval; {} Delta commits)",
        committed.rows.commits().len()
    );
    Ok(())
}

fn steady(args: &Args, kafka: &str, strata: &Path, work: &Path) -> BenchResult<()> {
    let topic = unique_topic("bench_steady");
    let total = args.rate * args.steady_secs;
    let dir = work.join("steady");
    let warehouse = write_warehouse(&dir, kafka, &topic, &args.interval)?;
    // Create the topic first, so the pipeline can assign it right away.
    run_to_end(
        strata,
        &gen_args(kafka, &topic, &args.partitions.to_string(), "1", "0"),
    )?;
    let child = spawn_run(strata, &warehouse, &dir)?;
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "\n[steady] producing {total} events at {} events/s for {} s ...",
        args.rate, args.steady_secs
    );
    let started = Instant::now();
    let started_ms = chrono_now_ms();
    let summary = run_to_end(
        strata,
        &gen_args(
            kafka,
            &topic,
            &args.partitions.to_string(),
            &total.to_string(),
            &args.rate.to_string(),
        ),
    )?;
    println!("  producer: {}", summary.trim());
    let mut committed = Committed::new(&dir);
    let waited = committed.wait_for(total + 1, started, Duration::from_secs(600));
    let ended = child.stop()?;
    let run_secs = started.elapsed().as_secs_f64() + 2.0;
    waited?;

    // The one event that created the topic is older than the run: left out.
    let mut latencies = latencies_ms(&committed.rows, started_ms)?;
    latencies.sort_unstable();
    println!(
        "[steady] {} events at {} events/s: produce -> visible in Delta latency p50 {} ms, p95 {} ms, p99 {} ms, max {} ms | peak RSS {:.0} MiB | strata CPU {:.1}% of one core | exit {}",
        latencies.len(),
        args.rate,
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0),
        ended.peak_rss_mib,
        100.0 * ended.cpu_secs / run_secs,
        ended.code
    );
    println!(
        "  (checkpoint interval {}: a record waits up to one interval for its epoch to end)",
        args.interval
    );
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// For every row produced after `since_ms`: the commit's visibility time
/// minus the row's Kafka timestamp (the producer's create time).
fn latencies_ms(log: &LogReader, since_ms: i64) -> BenchResult<Vec<i64>> {
    let mut out = Vec::new();
    for commit in log.commits().values() {
        for path in &commit.added {
            let file = std::fs::File::open(log.table().join(path))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
            let index = builder
                .schema()
                .index_of("_kafka_timestamp")
                .map_err(|e| format!("{path}: {e}"))?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
                for i in 0..ts.len() {
                    let produced_ms = ts.value(i) / 1_000;
                    if ts.is_valid(i) && produced_ms >= since_ms {
                        out.push(commit.visible_at_ms - produced_ms);
                    }
                }
            }
        }
    }
    Ok(out)
}
