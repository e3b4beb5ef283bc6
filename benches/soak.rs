//! A long run of the reference warehouse (examples/beike): does anything
//! grow with time that should not? Epoch time, query latency, files, log
//! entries and memory must stay flat however long `strata run` runs (once
//! compaction has started); only the data itself may grow.
//!
//! `strata gen beike` produces at `--rate` events/s, `strata run` commits
//! every `--interval` (200 ms: ~9,000 epochs in 30 minutes), and every
//! `--report-secs` the bench prints, for the period just ended:
//! - epoch time p50/p99: the time between consecutive checkpoint manifests
//!   (the interval while epochs keep up, an epoch's duration when not);
//! - Flight SQL point query p50/p99: one city's row of
//!   `ads.ads_city_gmv_today`, asked every `--poll-ms` (failures counted);
//! - full-scan time of an ADS table (`ads_top_stores_today`) and a DWD
//!   table (`dwd_deals_wide`, which grows with the data: also per million
//!   rows);
//! - data files and `_delta_log` entries per table as they are on disk
//!   (replaced files count until vacuumed), the files the newest version
//!   reads ("live"), bytes under the storage root;
//! - the operator state the newest checkpoint names (what the open windows
//!   hold; a restore reads it) and what it wrote (window state is written
//!   by parts: only the groups the epoch's rows touched), and RSS, its
//!   anonymous part and peak RSS of `strata run` (/proc: about a third of
//!   the RSS is the executable's own code, read in as code paths first
//!   run, so the anonymous part is what a leak would grow), the share of a core it used in the period, the broker's
//!   (when `STRATA_BENCH_BROKER_PID` names it, as `scripts/bench` does),
//!   and how busy the machine was (the broker and the generator share its
//!   cores).
//!
//! At the end the periods are printed again as one table. The bench fails
//! when `strata run` or the generator stop early, `strata run` does not exit
//! 0 on SIGTERM, the broker received under 95% of `--rate`, or more than 1%
//! of point queries failed.
//!
//! `--strata PATH --warehouse FILE` run another build (and its own copy of
//! the warehouse file) under the same load: before/after figures.
//! `--maintenance-interval 10m` sets the reference warehouse's background
//! maintenance interval (its `maintenance.interval`, 1 minute by default).
//! `--retention 5m` (the default) sets its VACUUM and log retentions, so
//! that `strata run`'s background VACUUM and log cleanup (every quarter of
//! them) reach their steady state within the run: files and log entries
//! level off after the retention; `--retention 7d` keeps the defaults
//! (7 and 30 days), under which they grow for a week. `scripts/bench`
//! runs it with the broker on a core of its own: the test broker's memory
//! storage costs more CPU the more it holds, and would otherwise slow
//! strata down as it fills.
//!
//! ```text
//! STRATA_BENCH=soak scripts/bench --minutes 30 --interval 200ms --rate 2000
//! ```

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use strata_flight_server::run_query;

use support::beike::{BeikeOptions, BeikeRun, BenchResult, LoggedRecords};
use support::endpoints::{bench_broker_pid, bench_kafka};
use support::flags::Flags;
use support::manifests::ManifestTimes;
use support::procfs::{cpu_secs, machine_jiffies, rss};
use support::stats::{Percentile, Samples};
use support::table_dirs::{TableFiles, dir_bytes, live_files, state_bytes, tables_on_disk};

struct Args {
    rate: u64,
    minutes: u64,
    report_secs: u64,
    poll_ms: u64,
    interval: String,
    maintenance_interval: String,
    retention: String,
    strata: PathBuf,
    warehouse: PathBuf,
}

const POINT_QUERY: &str =
    "SELECT gmv, paid_deals FROM ads.ads_city_gmv_today WHERE city_name = 'Beijing'";
const ADS_SCAN: &str = "SELECT * FROM ads.ads_top_stores_today";
const DWD_SCAN: &str = "SELECT * FROM dwd.dwd_deals_wide";

fn main() -> ExitCode {
    let known = [
        "rate",
        "minutes",
        "report-secs",
        "poll-ms",
        "interval",
        "maintenance-interval",
        "retention",
        "strata",
        "warehouse",
    ];
    let Some(args) = Flags::args(&known, |flags| {
        Ok(Args {
            rate: flags.get("rate", 2_000)?,
            minutes: flags.get("minutes", 30)?,
            report_secs: flags.get("report-secs", 300)?,
            poll_ms: flags.get("poll-ms", 250)?,
            interval: flags.get("interval", "200ms".to_string())?,
            maintenance_interval: flags.get("maintenance-interval", "1m".to_string())?,
            retention: flags.get("retention", "5m".to_string())?,
            strata: flags.strata(),
            warehouse: flags
                .text("warehouse")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/beike/warehouse.yaml")
                }),
        })
    }) else {
        return ExitCode::FAILURE;
    };
    let Some(kafka) = bench_kafka() else {
        return ExitCode::FAILURE;
    };
    support::runner::block_on(soak(args, kafka))
}

/// One reporting period's figures.
struct Period {
    at_min: f64,
    epochs: usize,
    epoch_ms: Samples,
    query_us: Samples,
    query_failures: u32,
    ads_scan: Scan,
    dwd_scan: Scan,
    files: u64,
    live_files: u64,
    log_entries: u64,
    bytes: u64,
    /// Operator state the newest checkpoint names, as encoded (Arrow IPC).
    state_bytes: u64,
    /// Of which the newest checkpoint wrote (the groups its epoch touched).
    state_written: u64,
    rss_mib: f64,
    anon_rss_mib: f64,
    peak_rss_mib: f64,
    /// CPU seconds `strata run` had used by the period's end.
    cpu_secs: f64,
    /// Its share of one core over the period, in percent.
    cpu_percent: f64,
    /// Busy and total CPU time of the machine by the period's end (jiffies
    /// of `/proc/stat`).
    machine: (f64, f64),
    /// How busy the machine's cores were over the period, in percent: the
    /// broker and the generator share them with `strata run`.
    machine_percent: f64,
    /// CPU seconds the broker had used by the period's end, when its pid is
    /// known (`STRATA_BENCH_BROKER_PID`, set by `scripts/bench`).
    broker_cpu_secs: Option<f64>,
    /// Its share of one core over the period, in percent.
    broker_percent: Option<f64>,
    tables: BTreeMap<String, TableFiles>,
}

/// Where a period starts: the end of the one before, or the bench's start.
#[derive(Clone, Copy)]
struct Since {
    secs: f64,
    cpu_secs: f64,
    machine: (f64, f64),
    broker_cpu_secs: Option<f64>,
}

impl Period {
    fn end(&self) -> Since {
        Since {
            secs: self.at_min * 60.0,
            cpu_secs: self.cpu_secs,
            machine: self.machine,
            broker_cpu_secs: self.broker_cpu_secs,
        }
    }
}

/// A full scan over Flight SQL.
struct Scan {
    rows: usize,
    ms: f64,
}

async fn soak(args: Args, kafka: String) -> BenchResult<()> {
    println!(
        "soak: strata {} | {} | broker {kafka} | {} events/s for {} min, checkpoint {}, maintenance every {}, VACUUM and log retention {}, report every {} s",
        args.strata.display(),
        args.warehouse.display(),
        args.rate,
        args.minutes,
        args.interval,
        args.maintenance_interval,
        args.retention,
        args.report_secs
    );
    let run = BeikeRun::start(&BeikeOptions {
        strata: &args.strata,
        warehouse: &args.warehouse,
        kafka: &kafka,
        rate: args.rate,
        interval: &args.interval,
        maintenance_interval: Some(&args.maintenance_interval),
        retention: Some(&args.retention),
    })?;
    let logged = LoggedRecords::new(&kafka)?;
    let mut manifests = ManifestTimes::new(&run.root, "beike");
    let started = Instant::now();
    // The machine's CPU times when the measuring starts: the first
    // period's share counts from here, not from the machine's boot.
    let machine_at_start = machine_jiffies();
    let broker_at_start = bench_broker_pid().map(cpu_secs);
    let total = Duration::from_secs(args.minutes * 60);
    let mut periods = Vec::new();
    let mut next_report = Duration::from_secs(args.report_secs);
    let mut period_from_epoch: Option<u64> = None;
    let mut queries = Vec::new();
    let (mut polls, mut failures) = (0u32, 0u32);
    let mut first_failure: Option<String> = None;
    let mut start_count: Option<(Instant, i64)> = None;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        if !run.pipeline.alive() || !run.generator.alive() {
            return Err(format!(
                "a process stopped after {:.0} s; see {} and {}",
                started.elapsed().as_secs_f64(),
                run.log("strata.log").display(),
                run.log("gen.log").display()
            )
            .into());
        }
        manifests.refresh();
        if start_count.is_none() && manifests.epochs() > 0 {
            // Rates count from the first committed epoch on.
            start_count = Some((Instant::now(), logged.count(&run.topics)?));
        }
        let asked = Instant::now();
        match run_query(&run.flight, POINT_QUERY).await {
            Ok(batches) if batches.iter().any(|b| b.num_rows() > 0) => {
                queries.push(asked.elapsed().as_micros() as i64);
            }
            // Before the first paid deal in Beijing (or before the ADS
            // layer's first commit created its table): not a query result yet.
            Ok(_) if manifests.epochs() < 50 => continue,
            Err(e) if manifests.epochs() < 50 && e.contains("not found") => continue,
            Ok(_) => {
                failures += 1;
                first_failure.get_or_insert_with(|| "no row for Beijing".into());
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
        }
        polls += 1;
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(args.report_secs);
            let period = measure(
                &run,
                started,
                &manifests,
                period_from_epoch,
                std::mem::take(&mut queries),
                std::mem::take(&mut failures),
                periods.last().map_or(
                    Since {
                        secs: 0.0,
                        cpu_secs: 0.0,
                        machine: machine_at_start,
                        broker_cpu_secs: broker_at_start,
                    },
                    Period::end,
                ),
            )
            .await?;
            print_period(&period);
            period_from_epoch = manifests.newest();
            periods.push(period);
        }
    }
    let end_count = logged.count(&run.topics)?;
    let generator_running = run.generator.alive();
    let strata_log = run.log("strata.log");
    let gen_log = run.log("gen.log");
    let BeikeRun {
        work: _work,
        generator,
        pipeline,
        ..
    } = run;
    let ran = pipeline.stop()?.success("strata run", &strata_log)?;
    let produced = generator.stop()?;
    if !generator_running {
        return Err(format!(
            "the generator stopped before the end (exit {}); see {}",
            produced.code,
            gen_log.display()
        )
        .into());
    }
    println!();
    println!(
        "| minute | epochs/s | epoch time p50 / p99 | point query p50 / p99 | ADS scan | DWD scan (rows, per M rows) | files (live) | log entries | MiB on disk | state MiB (KiB the newest epoch wrote) | RSS (anonymous) / peak MiB | CPU: strata run, broker (machine busy) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &periods {
        println!(
            "| {:.0} | {:.1} | {} / {} ms | {} / {} ms | {:.0} ms | {:.0} ms ({}, {:.0} ms) | {} ({}) | {} | {:.0} | {:.1} ({:.0}) | {:.0} ({:.0}) / {:.0} | {:.0}%, {} ({:.0}%) |",
            p.at_min,
            p.epochs as f64 / args.report_secs as f64,
            ms(p.epoch_ms.at(Percentile::P50), 1.0),
            ms(p.epoch_ms.at(Percentile::P99), 1.0),
            ms(p.query_us.at(Percentile::P50), 1000.0),
            ms(p.query_us.at(Percentile::P99), 1000.0),
            p.ads_scan.ms,
            p.dwd_scan.ms,
            p.dwd_scan.rows,
            per_million(&p.dwd_scan),
            p.files,
            p.live_files,
            p.log_entries,
            p.bytes as f64 / 1048576.0,
            p.state_bytes as f64 / 1048576.0,
            p.state_written as f64 / 1024.0,
            p.rss_mib,
            p.anon_rss_mib,
            p.peak_rss_mib,
            p.cpu_percent,
            percent_of_a_core(p.broker_percent),
            p.machine_percent
        );
    }
    let achieved = match start_count {
        Some((at, count)) => (end_count - count) as f64 / at.elapsed().as_secs_f64(),
        None => 0.0,
    };
    println!(
        "produced: {achieved:.0} events/s reached the broker (asked {}; counted from the topics' offsets)",
        args.rate
    );
    let failed: u32 = periods.iter().map(|p| p.query_failures).sum::<u32>() + failures;
    println!(
        "point queries: {polls}, failed {failed}{}",
        first_failure
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "strata run: peak RSS {:.0} MiB, CPU {:.0} s over {} min ({:.0}% of one core)",
        ran.peak_rss_mib,
        ran.cpu_secs,
        args.minutes,
        ran.cpu_secs / (args.minutes * 60) as f64 * 100.0
    );
    if achieved < 0.95 * args.rate as f64 {
        return Err(format!(
            "the broker received {achieved:.0} events/s, under 95% of --rate {}",
            args.rate
        )
        .into());
    }
    if failed as f64 > 0.01 * polls as f64 {
        return Err(format!("{failed} of {polls} point queries failed").into());
    }
    Ok(())
}

async fn measure(
    run: &BeikeRun,
    started: Instant,
    manifests: &ManifestTimes,
    from_epoch: Option<u64>,
    queries: Vec<i64>,
    query_failures: u32,
    since: Since,
) -> BenchResult<Period> {
    let epoch_ms = manifests.gaps_ms_after(from_epoch);
    let epochs = match (manifests.newest(), from_epoch) {
        (Some(newest), Some(from)) => (newest - from) as usize,
        (Some(_), None) => manifests.epochs(),
        _ => 0,
    };
    let ads_scan = scan(run, ADS_SCAN).await?;
    let dwd_scan = scan(run, DWD_SCAN).await?;
    let mut tables = tables_on_disk(&run.root);
    for (name, t) in tables.iter_mut() {
        t.live_files = live_files(&run.root.join(name)).await;
    }
    let (rss_mib, anon_rss_mib, peak_rss_mib) = rss(run.pipeline.pid());
    let cpu = cpu_secs(run.pipeline.pid());
    let Since {
        secs: since_secs,
        cpu_secs: since_cpu,
        machine: since_machine,
        broker_cpu_secs: since_broker,
    } = since;
    let broker = bench_broker_pid().map(cpu_secs);
    let machine = machine_jiffies();
    let state = state_bytes(&run.root, "beike");
    let at_secs = started.elapsed().as_secs_f64();
    Ok(Period {
        at_min: at_secs / 60.0,
        epochs,
        epoch_ms,
        query_us: Samples::new(queries),
        query_failures,
        ads_scan,
        dwd_scan,
        files: tables.values().map(|t| t.files).sum(),
        live_files: tables.values().map(|t| t.live_files).sum(),
        log_entries: tables.values().map(|t| t.log_entries).sum(),
        bytes: dir_bytes(&run.root),
        state_bytes: state.0,
        state_written: state.1,
        rss_mib,
        anon_rss_mib,
        peak_rss_mib,
        cpu_secs: cpu,
        cpu_percent: (cpu - since_cpu) / (at_secs - since_secs).max(1.0) * 100.0,
        machine,
        machine_percent: (machine.0 - since_machine.0) / (machine.1 - since_machine.1).max(1.0)
            * 100.0,
        broker_cpu_secs: broker,
        broker_percent: broker
            .zip(since_broker)
            .map(|(now, then)| (now - then) / (at_secs - since_secs).max(1.0) * 100.0),
        tables,
    })
}

fn print_period(p: &Period) {
    println!(
        "[{:>4.1} min] {} epochs: epoch time {}",
        p.at_min,
        p.epochs,
        p.epoch_ms
            .describe(&[Percentile::P50, Percentile::P99], 1.0, "ms", 0)
    );
    println!(
        "  point query: {}; failed {}",
        p.query_us
            .describe(&[Percentile::P50, Percentile::P99], 1000.0, "ms", 1),
        p.query_failures
    );
    println!(
        "  full scans: ads_top_stores_today {} rows in {:.0} ms; dwd_deals_wide {} rows in {:.0} ms ({:.0} ms per million rows)",
        p.ads_scan.rows,
        p.ads_scan.ms,
        p.dwd_scan.rows,
        p.dwd_scan.ms,
        per_million(&p.dwd_scan)
    );
    println!(
        "  on disk: {} data files ({} live), {} log entries, {:.1} MiB; operator state {:.1} MiB ({:.0} KiB written by the newest epoch); strata run RSS {:.0} MiB ({:.0} anonymous), peak {:.0} MiB, {:.0}% of a core (the broker {}, the machine's cores {:.0}% busy)",
        p.files,
        p.live_files,
        p.log_entries,
        p.bytes as f64 / 1048576.0,
        p.state_bytes as f64 / 1048576.0,
        p.state_written as f64 / 1024.0,
        p.rss_mib,
        p.anon_rss_mib,
        p.peak_rss_mib,
        p.cpu_percent,
        percent_of_a_core(p.broker_percent),
        p.machine_percent
    );
    for (name, t) in &p.tables {
        println!(
            "    {name:<40} files {:>6} (live {:>4})  log entries {:>6}  checkpoint {:>6.1} KiB",
            t.files,
            t.live_files,
            t.log_entries,
            t.checkpoint_bytes as f64 / 1024.0
        );
    }
}

async fn scan(run: &BeikeRun, sql: &str) -> BenchResult<Scan> {
    let started = Instant::now();
    let batches = run_query(&run.flight, sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    Ok(Scan {
        rows: batches.iter().map(|b| b.num_rows()).sum(),
        ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

fn per_million(scan: &Scan) -> f64 {
    if scan.rows == 0 {
        0.0
    } else {
        scan.ms * 1e6 / scan.rows as f64
    }
}

/// A share of one core, or `-` when not measured.
fn percent_of_a_core(share: Option<f64>) -> String {
    share.map_or_else(|| "-".into(), |p| format!("{p:.0}%"))
}

fn ms(value: Option<i64>, per_ms: f64) -> String {
    value
        .map(|v| format!("{:.1}", v as f64 / per_ms))
        .unwrap_or_else(|| "-".into())
}
