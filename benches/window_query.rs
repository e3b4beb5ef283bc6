//! The windowed query of a DWS layer, over deal events read from a file of
//! JSON lines: 1-minute TUMBLE by city with COUNT, SUM(amount) and
//! COUNT(DISTINCT agent).
//!
//! It runs the dataflow's own parts on two threads, as `strata run` does: a
//! source thread decodes records into Arrow batches with the ODS decoder
//! (`RecordStage`), and the layer thread runs the planned query (window
//! aggregate with its state), closes windows as the watermark (max event
//! time - 5 s) passes them, writes them to a Delta table and, once a
//! second, checkpoints like a real epoch: operator state snapshot written
//! to the checkpoint store and the epoch's Delta commit. The broker is left
//! out on purpose (the ODS bench measures it, and its `[broker]` line the
//! broker's own fetch rate, which is below the engine's).
//!
//! Reports events/s, per-batch latency (decoded -> processed) percentiles,
//! checkpoint time percentiles, and peak RSS. At the end of the file an
//! end-of-input watermark closes every window, and the Delta table must
//! equal a reference computed here from the same file, apart from
//! Strata's code (serde_json, integer cents, a map of windows): the bench
//! fails otherwise.
//!
//! ```text
//! cargo bench --bench window_query -- --events 5000000
//! ```

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Schema as ArrowSchema;
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_engine::checkpoint::manifest::PendingCommit;
use strata_engine::checkpoint::store::CheckpointStore;
use strata_engine::delta::table::open_or_create;
use strata_engine::delta::table_committer::TableCommitter;
use strata_engine::delta::table_writer::TableWriter;
use strata_engine::ods::{RecordStage, SourceRecord, ods_schema};
use strata_engine::operators::layer_query::LayerQuery;
use strata_engine::sql::planner::{StreamingPlanner, TIME_COLUMN_KEY};
use strata_engine::storage::StorageRoot;
use strata_schemas::{Field, FieldType, Schema};

use support::flags::Flags;
use support::stats::{Percentile, Samples, peak_rss_mib};

const SQL: &str = "SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv, \
     COUNT(DISTINCT agent_id) AS agents \
     FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) \
     GROUP BY window_start, window_end, city";
const CITIES: [&str; 20] = [
    "beijing",
    "shanghai",
    "shenzhen",
    "guangzhou",
    "hangzhou",
    "chengdu",
    "wuhan",
    "nanjing",
    "tianjin",
    "suzhou",
    "xian",
    "chongqing",
    "qingdao",
    "dalian",
    "xiamen",
    "changsha",
    "zhengzhou",
    "jinan",
    "hefei",
    "fuzhou",
];
const BATCH: usize = 8192;
const DELAY_US: i64 = 5_000_000;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const WINDOW_US: i64 = 60_000_000;

struct Args {
    events: u64,
    file: PathBuf,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn parse_args() -> Result<Args, String> {
    let flags = Flags::parse(&["events", "file"])?;
    let events: u64 = flags.get("events", 5_000_000)?;
    let file = match flags.text("file") {
        Some(f) => PathBuf::from(f),
        None => std::env::temp_dir().join(format!("strata-bench-deals-{events}.jsonl")),
    };
    Ok(Args { events, file })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    support::runner::block_on(run(&args))
}

fn deal_schema() -> Schema {
    Schema::new(
        "deal",
        vec![
            Field::new("deal_id", FieldType::String).required(),
            Field::new("event_type", FieldType::String).required(),
            Field::new(
                "amount",
                FieldType::Decimal {
                    precision: 18,
                    scale: 2,
                },
            ),
            Field::new("city", FieldType::String),
            Field::new("district", FieldType::String),
            Field::new("store_id", FieldType::String),
            Field::new("agent_id", FieldType::String),
            Field::new("property_type", FieldType::String),
            Field::new("event_time", FieldType::Timestamp).required(),
        ],
    )
    .with_event_time("event_time")
}

/// Writes `n` deal events, ~12 ms of event time apart (5M span ~17 hours,
/// ~1000 windows x 20 cities), each up to 3 s out of order.
fn generate(path: &Path, n: u64) -> BenchResult<()> {
    let started = Instant::now();
    let mut out = BufWriter::new(File::create(path)?);
    let base_ms: i64 = 1_790_812_800_000; // 2026-10-01T00:00:00Z
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let types = ["created", "signed", "paid", "cancelled"];
    let properties = ["apartment", "villa", "office", "shop"];
    for i in 0..n {
        let r = next();
        let ts_ms = base_ms + (i as i64) * 12 - (r % 3000) as i64;
        let time = chrono::DateTime::from_timestamp_millis(ts_ms)
            .ok_or("event time out of range")?
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        writeln!(
            out,
            r#"{{"deal_id":"d{i:09}","event_type":"{}","amount":"{}.{:02}","city":"{}","district":"district-{}","store_id":"s{:04}","agent_id":"a{:05}","property_type":"{}","event_time":"{time}"}}"#,
            types[(r >> 8) as usize % 4],
            100_000 + (r >> 12) % 9_000_000,
            (r >> 40) % 100,
            CITIES[(r >> 20) as usize % CITIES.len()],
            (r >> 28) % 16,
            (r >> 32) % 2000,
            (r >> 44) % 20_000,
            properties[(r >> 60) as usize % 4],
        )?;
        if i > 0 && i % 1_000_000 == 0 {
            eprintln!("generated {i} events");
        }
    }
    out.flush()?;
    eprintln!(
        "generated {n} events into {} in {:.1}s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A decoded batch, when it was ready, and its latest event time.
struct Decoded {
    rows: RecordBatch,
    ready: Instant,
    max_time: i64,
}

/// The source thread: reads lines, decodes them in batches.
fn decode(path: PathBuf, out: SyncSender<Decoded>) -> BenchResult<u64> {
    let schema = deal_schema();
    let mut stage = RecordStage::new("deals", &schema)?;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(&path)?);
    let mut line = Vec::with_capacity(512);
    let (mut offset, mut dead) = (0i64, 0u64);
    let mut send = |stage: &mut RecordStage| -> BenchResult<bool> {
        let staged = stage.take(None)?;
        dead += staged.dead_letters.map_or(0, |d| d.num_rows() as u64);
        let Some(rows) = staged.rows else {
            return Ok(true);
        };
        let max_time = staged
            .event_times
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(i64::MIN);
        Ok(out
            .send(Decoded {
                rows,
                ready: Instant::now(),
                max_time,
            })
            .is_ok())
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        stage.push(
            &SourceRecord {
                topic: "deals",
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                payload: Some(payload),
            },
            0,
        );
        offset += 1;
        if stage.pending_rows() + stage.pending_dead_letters() >= BATCH && !send(&mut stage)? {
            return Ok(offset as u64);
        }
    }
    send(&mut stage)?;
    if dead > 0 {
        eprintln!("{dead} records were rejected by the decoder");
    }
    Ok(offset as u64)
}

async fn run(args: &Args) -> BenchResult<()> {
    if !args.file.exists() {
        generate(&args.file, args.events)?;
    }
    let dir = tempfile::tempdir()?;
    let root = StorageRoot::new(&format!("file://{}", dir.path().display()), HashMap::new())?;
    let store = CheckpointStore::open(&root, "bench")?;

    let rows = ods_schema(&deal_schema().to_arrow());
    let rows = Arc::new(ArrowSchema::new_with_metadata(
        rows.fields().clone(),
        HashMap::from([(TIME_COLUMN_KEY.to_string(), "event_time".to_string())]),
    ));
    let planner = StreamingPlanner::new(vec![]);
    let planned = planner.plan(SQL, &[("deals".into(), rows)]).await?;
    let output = Arc::new(ArrowSchema::new(planned.output_schema.fields().clone()));
    let mut query = LayerQuery::new(planned, planner.task_ctx()?)?;
    let table = open_or_create(&root.table("dws", "dws_city_minute")?, &output, &[]).await?;
    let mut writer = TableWriter::new(&table, "bench")?;
    let mut committer = TableCommitter::open(table, "bench").await?;

    let (tx, rx): (SyncSender<Decoded>, Receiver<Decoded>) = sync_channel(4);
    let path = args.file.clone();
    let source = std::thread::spawn(move || decode(path, tx));

    let started = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut last_report = Instant::now();
    let (mut events, mut windows, mut late, mut epoch) = (0u64, 0u64, 0u64, 0u64);
    let mut watermark = i64::MIN;
    let mut newest = i64::MIN;
    let mut batch_latency_us: Vec<i64> = Vec::new();
    let mut checkpoint_ms: Vec<i64> = Vec::new();
    while let Ok(decoded) = rx.recv() {
        events += decoded.rows.num_rows() as u64;
        let emitted = query.on_batch("deals", decoded.rows).await?;
        late += emitted
            .late
            .iter()
            .map(|l| l.rows.num_rows() as u64)
            .sum::<u64>();
        let mut out = emitted.rows;
        newest = newest.max(decoded.max_time);
        let candidate = decoded.max_time.saturating_sub(DELAY_US);
        if candidate > watermark {
            watermark = candidate;
            out.extend(query.on_watermark(watermark).await?);
        }
        for batch in out {
            windows += batch.num_rows() as u64;
            writer.write(batch).await?;
        }
        batch_latency_us.push(decoded.ready.elapsed().as_micros() as i64);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            let t = Instant::now();
            epoch += 1;
            checkpoint(&mut query, &store, &mut writer, &mut committer, epoch).await?;
            checkpoint_ms.push(t.elapsed().as_millis() as i64);
            last_checkpoint = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{events} events ({:.0}%), {:.0} events/s, {windows} window rows, {} MiB RSS",
                100.0 * events as f64 / args.events as f64,
                events as f64 / secs,
                peak_rss_mib()
            );
            last_report = Instant::now();
        }
    }
    let read = source.join().map_err(|_| "the source thread panicked")??;
    // End of input: a watermark past the newest event's window closes
    // every window.
    for batch in query.on_watermark(newest.saturating_add(WINDOW_US)).await? {
        windows += batch.num_rows() as u64;
        writer.write(batch).await?;
    }
    epoch += 1;
    checkpoint(&mut query, &store, &mut writer, &mut committer, epoch).await?;
    let secs = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    let table_path = dir.path().join("dws/dws_city_minute");
    let table = read_windows(&table_path).await?;
    let batch_latency = Samples::new(batch_latency_us);
    let checkpoints = Samples::new(checkpoint_ms);
    println!("window_query: {SQL}");
    println!("  events read        {read} ({events} decoded rows, {late} late)");
    println!("  elapsed            {secs:.2} s");
    println!("  throughput         {:.0} events/s", events as f64 / secs);
    println!(
        "  window rows        {windows} emitted, {} in the Delta table",
        table.len()
    );
    println!(
        "  batch latency      {} ({BATCH} rows per batch, decoded -> windows written)",
        batch_latency.describe(&[Percentile::P50, Percentile::P99], 1000.0, "ms", 1)
    );
    println!(
        "  checkpoints        {epoch}: {} (state snapshot + Delta commit)",
        checkpoints.describe(&[Percentile::P50, Percentile::P99], 1.0, "ms", 0)
    );
    println!("  peak RSS           {peak} MiB");
    // After the figures: the reference's own memory is not the engine's.
    let want = reference(&args.file)?;
    compare(&table, &want)?;
    println!(
        "  checked            the table's {} windows equal a reference computed from {} (count, SUM(amount), COUNT(DISTINCT agent_id))",
        table.len(),
        args.file.display()
    );
    Ok(())
}

/// A window's aggregates: deals, GMV in cents, distinct agents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WindowRow {
    deals: i64,
    gmv_cents: i128,
    agents: i64,
}

/// (window start in microseconds, city) -> the window's row.
type Windows = BTreeMap<(i64, String), WindowRow>;

/// The reference: every line of `path` parsed with serde_json, assigned to
/// its 1-minute window, summed in integer cents.
fn reference(path: &Path) -> BenchResult<Windows> {
    let mut acc: HashMap<(i64, String), (i64, i128, HashSet<String>)> = HashMap::new();
    let reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        let bad = |what: &str| format!("{}:{}: {what}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
        let text = |k: &str| v[k].as_str().ok_or_else(|| bad(&format!("no {k}")));
        let at = chrono::DateTime::parse_from_rfc3339(text("event_time")?)
            .map_err(|e| bad(&e.to_string()))?
            .timestamp_micros();
        let (units, cents) = text("amount")?
            .split_once('.')
            .ok_or_else(|| bad("amount without cents"))?;
        let cents: i128 = format!("{units}{cents}")
            .parse()
            .map_err(|_| bad("amount is not a number"))?;
        let start = at - at.rem_euclid(WINDOW_US);
        let entry = acc
            .entry((start, text("city")?.to_string()))
            .or_insert_with(|| (0, 0, HashSet::new()));
        entry.0 += 1;
        entry.1 += cents;
        entry.2.insert(text("agent_id")?.to_string());
    }
    Ok(acc
        .into_iter()
        .map(|(k, (deals, gmv_cents, agents))| {
            (
                k,
                WindowRow {
                    deals,
                    gmv_cents,
                    agents: agents.len() as i64,
                },
            )
        })
        .collect())
}

/// The committed rows of the bench's table, by window and city.
async fn read_windows(path: &Path) -> BenchResult<Windows> {
    let url = url::Url::from_directory_path(path).map_err(|_| "bad table path")?;
    let table = deltalake::open_table(url).await?;
    let mut out = Windows::new();
    for uri in table.get_file_uris()? {
        let file = url::Url::parse(&uri)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .unwrap_or_else(|| PathBuf::from(&uri));
        for batch in ParquetRecordBatchReaderBuilder::try_new(File::open(&file)?)?.build()? {
            let batch = batch?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| format!("the table has no column {name}"))
            };
            let starts = column("window_start")?.as_primitive::<TimestampMicrosecondType>();
            let ends = column("window_end")?.as_primitive::<TimestampMicrosecondType>();
            let cities = column("city")?.as_string::<i32>();
            let deals = column("deals")?.as_primitive::<Int64Type>();
            let gmv = column("gmv")?.as_primitive::<Decimal128Type>();
            let agents = column("agents")?.as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                if ends.value(i) - starts.value(i) != WINDOW_US {
                    return Err(format!("window {} is not a minute long", starts.value(i)).into());
                }
                let key = (starts.value(i), cities.value(i).to_string());
                let row = WindowRow {
                    deals: deals.value(i),
                    gmv_cents: gmv.value(i),
                    agents: agents.value(i),
                };
                if out.insert(key.clone(), row).is_some() {
                    return Err(format!("window {key:?} is in the table twice").into());
                }
            }
        }
    }
    Ok(out)
}

fn compare(got: &Windows, want: &Windows) -> BenchResult<()> {
    let mut wrong = Vec::new();
    for (key, row) in want {
        match got.get(key) {
            Some(g) if g == row => {}
            other => wrong.push(format!("{key:?}: table {other:?}, reference {row:?}")),
        }
    }
    wrong.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("{k:?}: in the table, not in the reference")),
    );
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of {} windows differ from the reference, e.g.\n  {}",
        wrong.len(),
        want.len(),
        wrong[..wrong.len().min(5)].join("\n  ")
    )
    .into())
}

/// One epoch, as the dataflow does it: state to the checkpoint store, the
/// epoch's files committed to the table.
async fn checkpoint(
    query: &mut LayerQuery,
    store: &CheckpointStore,
    writer: &mut TableWriter,
    committer: &mut TableCommitter,
    epoch: u64,
) -> BenchResult<()> {
    if let Some(state) = query.snapshot()? {
        store.write_state(epoch, "dws_city_minute", &state).await?;
    }
    let pending: PendingCommit = writer.pre_commit().await?;
    committer.commit(epoch, &pending).await?;
    Ok(())
}
