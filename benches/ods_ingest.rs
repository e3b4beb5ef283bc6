//! Ingest, end to end: deal events in a Kafka topic -> `strata run` of the
//! quickstart warehouse (ODS -> DWD -> per-minute DWS, one dataflow) -> Delta
//! tables, against a real broker. Throughput and latency are measured on the
//! ODS table (every event lands there); the other layers run alongside.
//! `--layers ods` runs the quickstart's ODS layer alone. `--metrics off`
//! runs it without the metrics endpoint (`metrics:` cut from the file);
//! with `--metrics on` (the default, as the quickstart ships) the bench
//! scrapes `/metrics` every second while it runs, as a Prometheus would:
//! the two catch-up figures side by side are the endpoint's overhead.
//!
//! Two measurements, each with its own `strata run` process:
//! - catch-up: N events already in the topic; first the broker alone (one
//!   consumer fetching all N, no Strata: what the broker can serve), then
//!   time from process start until all N are committed in Delta; events/s,
//!   the process's peak RSS, and the time between consecutive epochs'
//!   manifests (the checkpoint interval while epochs keep up with it, an
//!   epoch's duration when a backlog makes it longer).
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
//! STRATA_BENCH_KAFKA=127.0.0.1:9092 cargo bench --bench ods_ingest -- --layers ods --only steady
//! STRATA_BENCH_KAFKA=127.0.0.1:9092 cargo bench --bench ods_ingest -- --only catchup --metrics off
//! STRATA_BENCH_KAFKA=127.0.0.1:9092 cargo bench --bench ods_ingest -- --only catchup --strata OLD_BUILD/strata
//! ```
//!
//! Every `strata` process must exit 0 (a clean stop on SIGTERM), or the
//! bench fails.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use support::child::{Measured, run_to_end};
use support::delta_log::LogReader;
use support::endpoints::bench_kafka;
use support::flags::Flags;
use support::manifests::ManifestTimes;
use support::stats::{Percentile, Samples};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

struct Args {
    events: u64,
    partitions: u32,
    rate: u64,
    steady_secs: u64,
    interval: String,
    only: Option<String>,
    ods_only: bool,
    /// Serve (and scrape) the metrics endpoint.
    metrics: bool,
    /// The `strata` binary (this build's unless `--strata PATH`: another
    /// build under the same load, for before/after figures).
    strata: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let flags = Flags::parse(&[
        "events",
        "partitions",
        "rate",
        "steady-secs",
        "interval",
        "only",
        "layers",
        "metrics",
        "strata",
    ])?;
    let metrics = match flags.text("metrics").as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => return Err(format!("--metrics {other}: write on or off")),
    };
    let ods_only = match flags.text("layers").as_deref() {
        None | Some("all") => false,
        Some("ods") => true,
        Some(other) => return Err(format!("--layers {other}: write all or ods")),
    };
    Ok(Args {
        events: flags.get("events", 1_000_000)?,
        partitions: flags.get("partitions", 4)?,
        rate: flags.get("rate", 20_000)?,
        steady_secs: flags.get("steady-secs", 30)?,
        interval: flags.get("interval", "1s".to_string())?,
        only: flags.text("only"),
        ods_only,
        metrics,
        strata: flags.strata(),
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
    let strata = args.strata.clone();
    let work = tempfile::tempdir()?;
    println!(
        "ods_ingest: strata {} | broker {kafka} | {} partitions | checkpoint {} | metrics endpoint {} | layers: {}",
        strata.display(),
        args.partitions,
        args.interval,
        if args.metrics {
            "on, scraped every second"
        } else {
            "off"
        },
        if args.ods_only {
            "ods_deals only"
        } else {
            "ods_deals -> dwd_deals -> dws_city_minute"
        }
    );
    if args.only.as_deref() != Some("steady") {
        catch_up(args, kafka, &strata, work.path())?;
    }
    if args.only.as_deref() != Some("catchup") {
        steady(args, kafka, &strata, work.path())?;
    }
    Ok(())
}

/// The quickstart's metrics section, as it ships.
const METRICS_SECTION: &str = "metrics:\n  listen: ${STRATA_METRICS_LISTEN:-127.0.0.1:9464}\n";

/// The warehouse file for a run, and its metrics endpoint (if `--metrics on`).
fn write_warehouse(
    args: &Args,
    dir: &Path,
    kafka: &str,
    topic: &str,
) -> BenchResult<(PathBuf, Option<SocketAddr>)> {
    std::fs::create_dir_all(dir)?;
    let mut template = include_str!("../examples/quickstart/warehouse.yaml");
    if args.ods_only {
        // The ODS layer is the first; the SQL layers follow it.
        let cut = template
            .find("\n  - name: dwd_deals")
            .ok_or("the quickstart has no dwd_deals layer to cut at")?;
        template = &template[..cut];
    }
    if !template.contains(METRICS_SECTION) {
        return Err("the quickstart's `metrics:` section changed: update METRICS_SECTION".into());
    }
    let endpoint = if args.metrics {
        Some(free_local_addr()?)
    } else {
        None
    };
    let metrics = match endpoint {
        Some(addr) => format!("metrics:\n  listen: {addr}\n"),
        None => String::new(),
    };
    let interval = &args.interval;
    let text = template
        .replace(METRICS_SECTION, &metrics)
        .replace("${KAFKA_BOOTSTRAP:-127.0.0.1:9092}", kafka)
        .replace("${DEALS_TOPIC:-deals}", topic)
        .replace("${STRATA_STORAGE_ROOT:-./data}", "./data")
        .replace("interval: 1s", &format!("interval: {interval}"))
        + "\n";
    let path = dir.join("warehouse.yaml");
    std::fs::write(&path, text)?;
    Ok((path, endpoint))
}

/// A loopback address with a port free now.
fn free_local_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Scrapes `/metrics` every second until dropped, as a Prometheus would.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut scrapes, mut bytes) = (0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                if let Some(n) = scrape_once(addr) {
                    scrapes += 1;
                    bytes += n;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (scrapes, bytes)
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops scraping: how many scrapes answered, and their bytes.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0))
    }
}

/// One GET of `/metrics`: the response's size, if it answered.
fn scrape_once(addr: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    // `HTTP/1.0 200` or `HTTP/1.1 200`: the server may answer in the
    // request's version.
    (response.starts_with(b"HTTP/1.") && response.get(8..12) == Some(b" 200"))
        .then_some(response.len() as u64)
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

/// Committed records in both of the layer's tables, and the epochs'
/// manifests.
struct Committed {
    rows: LogReader,
    dead: LogReader,
    manifests: ManifestTimes,
}

impl Committed {
    fn new(dir: &Path) -> Self {
        Committed {
            rows: LogReader::new(&dir.join("data/ods/ods_deals")),
            dead: LogReader::new(&dir.join("data/ods/ods_deals_dead_letter")),
            manifests: ManifestTimes::new(&dir.join("data"), "quickstart"),
        }
    }

    fn total(&mut self) -> BenchResult<u64> {
        Ok(self.rows.refresh()? + self.dead.refresh()?)
    }

    /// Waits until `target` records are committed, printing progress.
    fn wait_for(&mut self, target: u64, started: Instant, timeout: Duration) -> BenchResult<()> {
        let mut last_print = Instant::now();
        loop {
            self.manifests.refresh();
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
    broker_fetch_rate(kafka, &topic, args.partitions, args.events)?;

    let dir = work.join("catchup");
    let (warehouse, endpoint) = write_warehouse(args, &dir, kafka, &topic)?;
    let started = Instant::now();
    let child = spawn_run(strata, &warehouse, &dir)?;
    let scraper = endpoint.map(Scraper::start);
    let mut committed = Committed::new(&dir);
    let waited = committed.wait_for(args.events, started, Duration::from_secs(1800));
    let elapsed = started.elapsed().as_secs_f64();
    let scraped = scraper.map(Scraper::finish);
    let ended = child
        .stop()?
        .success("strata run", &dir.join("strata.log"))?;
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
    committed.manifests.refresh();
    println!(
        "  epochs: {} manifests; between consecutive ones (checkpoint interval {}): {}",
        committed.manifests.epochs(),
        args.interval,
        committed
            .manifests
            .gaps_ms()
            .describe(&[Percentile::P50, Percentile::P99], 1000.0, "s", 2)
    );
    match scraped {
        // A run of over 2 s that was never scraped measured no overhead.
        Some((0, _)) if elapsed > 2.0 => {
            return Err(
                "--metrics on, but no scrape of /metrics answered 200: the figure is not with metrics"
                    .into(),
            );
        }
        Some((scrapes, bytes)) => println!(
            "  metrics endpoint on: scraped {scrapes} times ({:.0} KB each on average)",
            bytes as f64 / scrapes.max(1) as f64 / 1e3
        ),
        None => println!("  metrics endpoint off (`--metrics off`)"),
    }
    Ok(())
}

/// The broker alone: one consumer fetching every record of `topic` from
/// the start, as fast as the broker serves it (no decoding, no Strata).
fn broker_fetch_rate(kafka: &str, topic: &str, partitions: u32, events: u64) -> BenchResult<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", format!("{topic}-fetch"))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut last_record = Instant::now();
    while read < events {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                read += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
                last_record = Instant::now();
            }
            Some(Err(e)) => return Err(format!("fetching {topic}: {e}").into()),
            None if last_record.elapsed() > Duration::from_secs(30) => {
                return Err(format!(
                    "the broker served only {read} of {events} records of {topic} (nothing for 30 s)"
                )
                .into());
            }
            None => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "[broker] one consumer fetched {read} records ({:.0} MB) in {secs:.2} s = {:.0} records/s (the broker alone, no Strata)",
        bytes as f64 / 1e6,
        read as f64 / secs
    );
    Ok(())
}

fn steady(args: &Args, kafka: &str, strata: &Path, work: &Path) -> BenchResult<()> {
    let topic = unique_topic("bench_steady");
    let total = args.rate * args.steady_secs;
    let dir = work.join("steady");
    let (warehouse, _endpoint) = write_warehouse(args, &dir, kafka, &topic)?;
    // Create the topic first, so the pipeline can assign it right away.
    run_to_end(
        strata,
        &gen_args(kafka, &topic, &args.partitions.to_string(), "1", "0"),
    )?;
    let child = spawn_run(strata, &warehouse, &dir)?;
    std::thread::sleep(Duration::from_secs(2));
    if !child.alive() {
        child
            .wait()?
            .success("strata run", &dir.join("strata.log"))?;
        return Err("strata run stopped by itself".into());
    }
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
    let ended = child
        .stop()?
        .success("strata run", &dir.join("strata.log"))?;
    let run_secs = started.elapsed().as_secs_f64() + 2.0;
    waited?;

    // The one event that created the topic is older than the run: left out.
    let produced = produced_since(&committed.rows, started_ms)?;
    // The rate the records reached the log at, from their Kafka create
    // times: a loaded machine can fall short of --rate.
    let span_ms = produced.last_ms - produced.first_ms;
    let achieved = produced.latencies.len() as f64 / (span_ms.max(1) as f64 / 1000.0);
    let latencies = Samples::new(produced.latencies);
    println!(
        "[steady] {} events, produced at {achieved:.0} events/s (asked {}): produce -> visible in Delta latency {} | peak RSS {:.0} MiB | strata CPU {:.1}% of one core | exit {}",
        latencies.len(),
        args.rate,
        latencies.describe(
            &[Percentile::P50, Percentile::P95, Percentile::P99],
            1.0,
            "ms",
            0
        ),
        ended.peak_rss_mib,
        100.0 * ended.cpu_secs / run_secs,
        ended.code
    );
    println!(
        "  (checkpoint interval {}: a record waits up to one interval for its epoch to end)",
        args.interval
    );
    if achieved < 0.95 * args.rate as f64 {
        return Err(format!(
            "the producer reached {achieved:.0} events/s, under 95% of --rate {}: this is not a measurement at that rate; lower --rate",
            args.rate
        )
        .into());
    }
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The rows produced after `since_ms`: for each, the commit's visibility
/// time minus its Kafka timestamp (the producer's create time); and the
/// first and last of those timestamps.
struct Produced {
    latencies: Vec<i64>,
    first_ms: i64,
    last_ms: i64,
}

fn produced_since(log: &LogReader, since_ms: i64) -> BenchResult<Produced> {
    let mut out = Produced {
        latencies: Vec::new(),
        first_ms: i64::MAX,
        last_ms: i64::MIN,
    };
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
                        out.latencies.push(commit.visible_at_ms - produced_ms);
                        out.first_ms = out.first_ms.min(produced_ms);
                        out.last_ms = out.last_ms.max(produced_ms);
                    }
                }
            }
        }
    }
    if out.latencies.is_empty() {
        return Err("no row produced during the run was committed".into());
    }
    Ok(out)
}
