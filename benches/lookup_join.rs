//! A DWD lookup join against a 1M-row PostgreSQL dimension, cache off and on.
//!
//! Starts its own PostgreSQL (Debian's server binaries, as `scripts/test`
//! installs them; `runuser postgres` when run as root), loads `agents` with
//! 1,000,000 rows, and runs the layer's planned query, as `strata run` does,
//! over generated deal batches of 8192 rows: each batch looks up its
//! distinct agents in one `= ANY($1)` query (minus the cache's hits). Agent
//! ids are skewed as on a real platform: 90% of deals come from 10,000
//! active agents, the rest from all 1M.
//!
//! Reports events/s, per-batch latency percentiles, queries, hit rate and
//! peak RSS per mode. Kafka and Delta are left out on purpose: the ODS and
//! window benches measure them.
//!
//! ```text
//! cargo bench --bench lookup_join -- --events 2000000
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Decimal128Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_engine::lookup::Dimension;
use strata_engine::lookup::{CacheSpec, DimensionSource, DimensionSpec, LookupFailurePolicy};
use strata_engine::operators::layer_query::LayerQuery;
use strata_engine::sql::lookup_join::LookupHandling;
use strata_engine::sql::lookup_plan::LayerLookups;
use strata_engine::sql::planner::StreamingPlanner;

use support::flags::Flags;
use support::stats::{Percentile, Samples, peak_rss_mib, reset_peak_rss};

const SQL: &str = "SELECT d.deal_id, d.amount, a.agent_name, a.store_id, a.city \
     FROM deals d JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent_id = a.agent_id";
const DIMENSION_ROWS: i64 = 1_000_000;
const HOT_AGENTS: i64 = 10_000;
const BATCH: usize = 8192;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    support::runner::block_on(bench())
}

/// A PostgreSQL server of the bench's own, removed when dropped.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl Postgres {
    fn start() -> BenchResult<Self> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| {
                format!("PostgreSQL server binaries not found ({e}): apt-get install postgresql")
            })?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        let bin = versions
            .pop()
            .ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
        let dir = tempfile::Builder::new()
            .prefix("strata-bench-pg")
            .tempdir_in("/tmp")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // PostgreSQL refuses to run as root.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n");
        if as_root {
            checked(Command::new("chown").arg("postgres").arg(dir.path()))?;
        }
        let pg = Postgres {
            bin,
            dir,
            port,
            as_root,
        };
        let data = pg.dir.path().join("data");
        pg.tool(
            "initdb",
            &["-D", path(&data)?, "-A", "trust", "-U", "postgres"],
        )?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            pg.port,
            path(pg.dir.path())?
        );
        let log = pg.dir.path().join("log");
        pg.tool(
            "pg_ctl",
            &[
                "-D",
                path(&data)?,
                "-w",
                "-l",
                path(&log)?,
                "-o",
                &options,
                "start",
            ],
        )?;
        Ok(pg)
    }

    fn tool(&self, tool: &str, args: &[&str]) -> BenchResult<()> {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args).current_dir(self.dir.path());
        checked(&mut cmd)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn sql(&self, text: &str) -> BenchResult<()> {
        let port = self.port.to_string();
        checked(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            text,
        ]))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(data) = path(&self.dir.path().join("data")).map(str::to_string) {
            let _ = self.tool("pg_ctl", &["-D", &data, "-w", "-m", "immediate", "stop"]);
        }
    }
}

fn path(p: &Path) -> BenchResult<&str> {
    Ok(p.to_str().ok_or("a temporary path is not UTF-8")?)
}

fn checked(cmd: &mut Command) -> BenchResult<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

async fn bench() -> BenchResult<()> {
    let flags = Flags::parse(&["events", "cache"])?;
    let events: usize = flags.get("events", 2_000_000)?;
    let modes: Vec<bool> = match flags.text("cache").as_deref() {
        None | Some("both") => vec![false, true],
        Some("on") => vec![true],
        Some("off") => vec![false],
        Some(other) => return Err(format!("--cache {other}: write on, off or both").into()),
    };
    eprintln!("starting PostgreSQL and loading {DIMENSION_ROWS} agents ...");
    let pg = Postgres::start()?;
    let t = Instant::now();
    pg.sql(&format!(
        "CREATE TABLE agents (agent_id bigint PRIMARY KEY, agent_name text, store_id bigint, city text); \
         INSERT INTO agents SELECT g, 'Agent ' || g, g % 5000, 'city' || (g % 20) FROM generate_series(0, {}) g; \
         ANALYZE agents;",
        DIMENSION_ROWS - 1
    ))?;
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    println!("lookup_join: {SQL}");
    println!(
        "  dimension          PostgreSQL table, {DIMENSION_ROWS} rows; 90% of deals from {HOT_AGENTS} agents"
    );
    for cache in modes {
        measure(&pg, events, cache).await?;
    }
    Ok(())
}

async fn measure(pg: &Postgres, events: usize, cache: bool) -> BenchResult<()> {
    reset_peak_rss();
    let deals = Arc::new(Schema::new(vec![
        Field::new("deal_id", DataType::Int64, false),
        Field::new("agent_id", DataType::Int64, false),
        Field::new("amount", DataType::Decimal128(18, 2), true),
    ]));
    let agents = Arc::new(Schema::new(vec![
        Field::new("agent_id", DataType::Int64, false),
        Field::new("agent_name", DataType::Utf8, true),
        Field::new("store_id", DataType::Int64, true),
        Field::new("city", DataType::Utf8, true),
    ]));
    let dimension = Arc::new(Dimension::new(DimensionSpec {
        name: "agents".into(),
        schema: agents,
        key: "agent_id".into(),
        source: DimensionSource::Postgres {
            url: pg.url(),
            table: "agents".into(),
        },
        cache: cache.then_some(CacheSpec {
            max_rows: 100_000,
            expire_after_write: Duration::from_secs(600),
            cache_missing_keys: true,
        }),
        timeout: Duration::from_secs(30),
    }));
    let planner = StreamingPlanner::new(Vec::new());
    let lookups = LayerLookups {
        dimensions: vec![dimension.clone()],
        handling: Arc::new(LookupHandling::new("dwd_deals", LookupFailurePolicy::Retry)),
    };
    let planned = planner
        .plan_with_lookups(SQL, &[("deals".to_string(), deals.clone())], Some(&lookups))
        .await?;
    let mut query = LayerQuery::new(planned, planner.task_ctx()?)?;
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut done, mut out_rows) = (0usize, 0usize);
    let mut latency_us = Vec::new();
    while done < events {
        let n = BATCH.min(events - done);
        let ids: Int64Array = (done..done + n).map(|i| i as i64).collect();
        let agent_ids: Int64Array = (0..n)
            .map(|_| {
                if rng.random_bool(0.9) {
                    rng.random_range(0..HOT_AGENTS)
                } else {
                    rng.random_range(0..DIMENSION_ROWS)
                }
            })
            .collect();
        let amounts =
            Decimal128Array::from_iter_values((0..n).map(|_| rng.random_range(10_000..90_000_000)))
                .with_precision_and_scale(18, 2)?;
        let batch = RecordBatch::try_new(
            deals.clone(),
            vec![Arc::new(ids), Arc::new(agent_ids), Arc::new(amounts)],
        )?;
        let t = Instant::now();
        for out in query.on_batch("deals", batch).await?.rows {
            out_rows += out.num_rows();
        }
        latency_us.push(t.elapsed().as_micros() as i64);
        done += n;
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "cache {}: {done} events ({:.0}%), {:.0} events/s",
                if cache { "on" } else { "off" },
                100.0 * done as f64 / events as f64,
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if out_rows != events {
        return Err(format!(
            "{out_rows} rows out of {events} events: every agent exists, so every deal must join"
        )
        .into());
    }
    let latency = Samples::new(latency_us);
    let stats = dimension.stats();
    println!(
        "  cache {}",
        if cache {
            "on (max_rows 100000, expire_after_write 10m)"
        } else {
            "off"
        }
    );
    println!(
        "    throughput       {:.0} events/s ({events} events, {secs:.2} s)",
        events as f64 / secs
    );
    println!(
        "    batch latency    {} ({BATCH} rows per batch)",
        latency.describe(&[Percentile::P50, Percentile::P99], 1000.0, "ms", 1)
    );
    println!(
        "    lookups          {} keys, hit rate {:.1}%, {} queries, {} rows fetched",
        stats.keys,
        100.0 * stats.hit_rate,
        stats.queries,
        stats.rows_fetched
    );
    println!("    peak RSS         {} MiB", peak_rss_mib());
    Ok(())
}
