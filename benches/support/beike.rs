//! The reference warehouse (examples/beike) as the benches run it: `strata
//! gen beike` producing at a steady rate into topics of its own, and
//! `strata run` on a fresh storage root with its own Flight SQL port, both
//! measured children. Any `strata` binary and warehouse file can be given,
//! so an older build runs the same load (before/after figures).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use strata_flight_server::ClientConfig;

use super::child::Measured;
use super::endpoints::free_port;

/// What a bench returns.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// How to run the reference warehouse.
pub struct BeikeOptions<'a> {
    pub strata: &'a Path,
    pub warehouse: &'a Path,
    pub kafka: &'a str,
    /// Events per second the generator produces.
    pub rate: u64,
    /// The checkpoint interval (`1s`, `200ms`).
    pub interval: &'a str,
    /// The background maintenance interval (`10m`, `1m`, `off`); `None`:
    /// the warehouse file's.
    pub maintenance_interval: Option<&'a str>,
    /// The VACUUM and log retentions (`5m`); `None`: the warehouse
    /// file's.
    pub retention: Option<&'a str>,
}

/// The generator and the pipeline, running.
pub struct BeikeRun {
    /// Holds the storage root and the logs; removed when dropped.
    pub work: tempfile::TempDir,
    pub root: PathBuf,
    /// The deals and itineraries topics.
    pub topics: [String; 2],
    pub flight: ClientConfig,
    pub generator: Measured,
    pub pipeline: Measured,
}

impl BeikeRun {
    /// Starts the generator, waits for its dimension tables, then starts
    /// `strata run`.
    pub fn start(options: &BeikeOptions) -> BenchResult<Self> {
        let work = tempfile::tempdir()?;
        let root = work.path().join("data");
        let prefix = format!(
            "bench{}_",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
        );
        let flight_port = free_port()?;
        // SAFETY: no other thread reads the environment while it is set: the
        // children inherit it, the runtime's threads do not look at it.
        unsafe {
            std::env::set_var("KAFKA_BOOTSTRAP", options.kafka);
            std::env::set_var("STRATA_STORAGE_ROOT", &root);
            std::env::set_var("BEIKE_TOPIC_PREFIX", &prefix);
            std::env::set_var("STRATA_CHECKPOINT_INTERVAL", options.interval);
            match options.maintenance_interval {
                Some(every) => std::env::set_var("STRATA_MAINTENANCE_INTERVAL", every),
                None => std::env::remove_var("STRATA_MAINTENANCE_INTERVAL"),
            }
            for var in ["STRATA_VACUUM_RETENTION", "STRATA_LOG_RETENTION"] {
                match options.retention {
                    Some(kept) => std::env::set_var(var, kept),
                    None => std::env::remove_var(var),
                }
            }
            std::env::set_var("STRATA_FLIGHT_LISTEN", format!("127.0.0.1:{flight_port}"));
            std::env::set_var("STRATA_DASHBOARD", "127.0.0.1:0");
        }
        let dims = root.join("dims");
        let rate = options.rate.to_string();
        let generator = Measured::spawn(
            options.strata,
            &[
                "--log-format",
                "json",
                "gen",
                "beike",
                "--bootstrap-servers",
                options.kafka,
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
            options.strata,
            &[
                "--log-format",
                "json",
                "run",
                options.warehouse.to_str().unwrap_or_default(),
            ],
            &work.path().join("strata.log"),
        )?;
        Ok(BeikeRun {
            topics: [format!("{prefix}deals"), format!("{prefix}itineraries")],
            flight: ClientConfig {
                endpoint: format!("http://127.0.0.1:{flight_port}"),
                credentials: None,
                ca: None,
            },
            work,
            root,
            generator,
            pipeline,
        })
    }

    /// The log of `strata run` (`strata.log`) or of the generator (`gen.log`).
    pub fn log(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// Records the broker holds in topics: the sum of their partitions' high
/// watermarks (the topics start empty, so that is how many were logged).
pub struct LoggedRecords {
    consumer: BaseConsumer,
}

impl LoggedRecords {
    pub fn new(kafka: &str) -> BenchResult<Self> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka)
            .create()?;
        Ok(LoggedRecords { consumer })
    }

    pub fn count(&self, topics: &[String]) -> BenchResult<i64> {
        let mut total = 0;
        for topic in topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (low, high) =
                        self.consumer
                            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                    total += high - low;
                }
            }
        }
        Ok(total)
    }
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
