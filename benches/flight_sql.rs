//! Flight SQL serving, measured over loopback against `strata serve`:
//! - point queries on a small ADS table (one row by key): latency p50/p99,
//!   from one client, then from `--clients` clients at once (each its own
//!   connection, as many BI users would be);
//! - a full scan of a 10M-row table: MB/s and rows/s received by the client,
//!   and the server's peak RSS (results stream, so it stays far below the
//!   size of the result).
//!
//! `--strata PATH` measures another build of the server (e.g. an older
//! commit's), so before and after can be compared with the same client.
//!
//! ```text
//! cargo bench --bench flight_sql -- --rows 10000000 --point-queries 2000 --clients 32
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::sql::client::FlightSqlServiceClient;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use support::child::Measured;
use support::endpoints::free_port;
use support::flags::Flags;
use support::stats::{Percentile, Samples};

struct Args {
    rows: u64,
    point_queries: usize,
    clients: usize,
    strata: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let flags = Flags::parse(&["rows", "point-queries", "clients", "strata"])?;
    Ok(Args {
        rows: flags.get("rows", 10_000_000)?,
        point_queries: flags.get("point-queries", 2_000)?,
        clients: flags.get("clients", 32)?,
        strata: flags.strata(),
    })
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

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

const CITIES: [&str; 6] = [
    "beijing", "shanghai", "shenzhen", "hangzhou", "chengdu", "wuhan",
];

async fn run(args: &Args) -> BenchResult<()> {
    let work = tempfile::tempdir()?;
    let root = work.path().join("data");
    println!(
        "flight_sql: writing a small ADS table and a {}-row table ...",
        args.rows
    );
    let started = Instant::now();
    write_table(&root.join("ads/gmv_by_city_minute"), small_batches()).await?;
    write_table(&root.join("ods/deals_wide"), big_batches(args.rows)).await?;
    println!("  written in {:.1} s", started.elapsed().as_secs_f64());

    let port = free_port()?;
    let warehouse = work.path().join("warehouse.yaml");
    std::fs::write(
        &warehouse,
        format!(
            "warehouse: bench\nstorage: {{root: ./data}}\nkafka: {{bootstrap_servers: \"127.0.0.1:1\"}}\nserve: {{listen: \"127.0.0.1:{port}\"}}\nlayers: []\n"
        ),
    )?;
    println!("  server: {}", args.strata.display());
    let server = Measured::spawn(
        &args.strata,
        &[
            "--log-format",
            "json",
            "serve",
            warehouse.to_str().unwrap_or_default(),
        ],
        &work.path().join("serve.log"),
    )?;
    let mut client = connect(port).await?;

    // Point queries: warm up, then measure each round trip (plan + fetch).
    let point = move |i: usize| {
        format!(
            "SELECT gmv, deals FROM ads.gmv_by_city_minute WHERE city = '{}' AND minute = {}",
            CITIES[i % CITIES.len()],
            (i * 7) % 1440
        )
    };
    for i in 0..50 {
        query_rows(&mut client, &point(i)).await?;
    }
    let mut latencies_us = Vec::with_capacity(args.point_queries);
    for i in 0..args.point_queries {
        let t = Instant::now();
        let rows = query_rows(&mut client, &point(i)).await?;
        latencies_us.push(t.elapsed().as_micros() as i64);
        if rows != 1 {
            return Err(format!("point query {i} returned {rows} rows, not 1").into());
        }
    }
    let latencies = Samples::new(latencies_us);
    println!(
        "[point] {} queries, one row each by key from 8,640 rows: {}",
        args.point_queries,
        latencies.describe(&[Percentile::P50, Percentile::P99], 1000.0, "ms", 2)
    );

    // The same point queries from many clients at once.
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let per_client = args.point_queries.div_ceil(args.clients);
        tasks.push(tokio::spawn(async move {
            let mut client = connect(port).await?;
            let mut latencies = Vec::with_capacity(per_client);
            for q in 0..per_client {
                let i = c * per_client + q;
                let t = Instant::now();
                let rows = query_rows(&mut client, &point(i)).await?;
                latencies.push(t.elapsed().as_micros() as i64);
                if rows != 1 {
                    return Err(format!("point query {i} returned {rows} rows, not 1").into());
                }
            }
            BenchResult::Ok(latencies)
        }));
    }
    let mut latencies_us = Vec::with_capacity(args.point_queries);
    for task in tasks {
        latencies_us.extend(task.await??);
    }
    let secs = t.elapsed().as_secs_f64();
    let queries = latencies_us.len();
    let latencies = Samples::new(latencies_us);
    println!(
        "[point x{}] {} queries from {} clients at once: {}; {:.0} queries/s",
        args.clients,
        queries,
        args.clients,
        latencies.describe(&[Percentile::P50, Percentile::P99], 1000.0, "ms", 2),
        queries as f64 / secs
    );

    // Full scan.
    let t = Instant::now();
    let (rows, bytes) = scan(&mut client, "SELECT * FROM ods.deals_wide").await?;
    let secs = t.elapsed().as_secs_f64();
    let ended = server
        .stop()?
        .success("strata serve", &work.path().join("serve.log"))?;
    if rows != args.rows {
        return Err(format!("the scan returned {rows} rows, not {}", args.rows).into());
    }
    println!(
        "[scan] {rows} rows, {:.0} MB of Arrow data in {secs:.2} s = {:.0} MB/s, {:.2} M rows/s | server peak RSS {:.0} MiB",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        rows as f64 / 1e6 / secs,
        ended.peak_rss_mib
    );
    Ok(())
}

async fn connect(port: u16) -> BenchResult<FlightSqlServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(FlightSqlServiceClient::new(channel)),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn query_rows(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> BenchResult<u64> {
    Ok(scan(client, sql).await?.0)
}

/// Runs `sql` and drains the result; (rows, bytes of Arrow data).
async fn scan(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> BenchResult<(u64, u64)> {
    let info = client.execute(sql.to_string(), None).await?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let mut stream = client.do_get(ticket).await?;
        while let Some(batch) = stream.try_next().await? {
            rows += batch.num_rows() as u64;
            // IPC-decoded arrays share their message's buffer: count each
            // array's own slice.
            bytes += batch
                .columns()
                .iter()
                .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
                .sum::<u64>();
        }
    }
    Ok((rows, bytes))
}

async fn write_table(dir: &Path, batches: impl Iterator<Item = RecordBatch>) -> BenchResult<()> {
    std::fs::create_dir_all(dir)?;
    let url = url::Url::from_directory_path(dir)
        .map_err(|()| format!("{}: not a path", dir.display()))?;
    let mut table = DeltaTable::try_from_url(url).await?;
    // Commit in chunks, as pipelines do, rather than one giant write.
    let mut chunk = Vec::new();
    for batch in batches {
        chunk.push(batch);
        if chunk.len() == 20 {
            table = table.write(std::mem::take(&mut chunk)).await?;
        }
    }
    if !chunk.is_empty() {
        table.write(chunk).await?;
    }
    Ok(())
}

/// 6 cities x 1440 minutes of one day.
fn small_batches() -> impl Iterator<Item = RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("minute", DataType::Int64, false),
        Field::new("gmv", DataType::Float64, false),
        Field::new("deals", DataType::Int64, false),
    ]));
    let n = CITIES.len() * 1440;
    let city: StringArray = (0..n).map(|i| Some(CITIES[i / 1440])).collect();
    let minute: Int64Array = (0..n).map(|i| (i % 1440) as i64).collect();
    let gmv: Float64Array = (0..n).map(|i| (i * 37 % 10_000) as f64 * 1.5).collect();
    let deals: Int64Array = (0..n).map(|i| (i * 13 % 50) as i64).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(city),
            Arc::new(minute),
            Arc::new(gmv),
            Arc::new(deals),
        ],
    )
    .into_iter()
}

/// `rows` deal-like rows in batches of 100k.
fn big_batches(rows: u64) -> impl Iterator<Item = RecordBatch> {
    const BATCH: u64 = 100_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("deal_id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("agent_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    (0..rows.div_ceil(BATCH)).filter_map(move |b| {
        let start = b * BATCH;
        let n = BATCH.min(rows - start);
        let ids: Int64Array = (start..start + n).map(|i| i as i64).collect();
        let city: StringArray = (start..start + n)
            .map(|i| Some(CITIES[(i % 6) as usize]))
            .collect();
        let agent: StringArray = (start..start + n)
            .map(|i| Some(format!("agent-{:05}", i % 20_000)))
            .collect();
        let amount: Float64Array = (start..start + n)
            .map(|i| (i % 9_973) as f64 * 1000.0)
            .collect();
        let ts = TimestampMicrosecondArray::from_iter_values(
            (start..start + n).map(|i| 1_795_000_000_000_000 + i as i64 * 1_000),
        )
        .with_timezone("UTC");
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(ids),
                Arc::new(city),
                Arc::new(agent),
                Arc::new(amount),
                Arc::new(ts),
            ],
        )
        .ok()
    })
}
