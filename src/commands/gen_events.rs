//! `strata gen`: produce generated events to a Kafka topic.

use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tracing::{error, info};

use crate::cli::{Dataset, GenArgs};
use crate::datagen::beike_events::{BeikeGenerator, Kind, Stream, Trouble};
use crate::datagen::beike_world::World;
use crate::datagen::deals::DealGenerator;
use crate::datagen::dimension_tables::write_dimensions;
use crate::failure::{Failure, print};

pub async fn generate(args: GenArgs) -> Result<(), Failure> {
    let mut source = Source::new(&args).map_err(Failure::config)?;
    if let (Dataset::Beike, Some(dir)) = (args.dataset, &args.dims) {
        write_dimensions(dir, &World::new())
            .await
            .map_err(|e| Failure::io(format!("cannot write the dimension tables: {e}")))?;
    }
    create_topics(&args, &source.topics())
        .await
        .map_err(|e| Failure::io(format!("cannot create the topics: {e}")))?;
    match tokio::task::spawn_blocking(move || produce(&args, &mut source)).await {
        Ok(Ok(summary)) => print(summary),
        Ok(Err(e)) => Err(Failure::io(format!("producing failed: {e}"))),
        Err(e) => Err(Failure::internal(format!(
            "the producer thread failed: {e}"
        ))),
    }
}

async fn create_topics(args: &GenArgs, names: &[String]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .create()?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, args.partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    error!(topic = %name, "topic creation refused");
                });
            }
        }
    }
    Ok(())
}

/// One record to send.
struct Outgoing<'a> {
    topic: &'a str,
    key: String,
    value: String,
    kind: Kind,
    copies: u8,
    /// The Kafka timestamp, when the clock is simulated: the record is
    /// logged at the simulated "now", as it would have been then (so
    /// offsets-for-times finds it, as backfills need).
    logged_ms: Option<i64>,
    /// The generator's event-time clock when it made the record.
    clock_us: i64,
}

/// Where records come from, and the event-time clock of the beike dataset.
enum Source {
    Deals {
        generator: Box<DealGenerator>,
        topic: String,
    },
    Beike {
        generator: Box<BeikeGenerator>,
        deals: String,
        itineraries: String,
        /// `(start, step)` in microseconds, or `None` for the wall clock.
        simulated: Option<(i64, i64)>,
    },
}

impl Source {
    fn new(args: &GenArgs) -> Result<Source, String> {
        for (flag, share) in [
            ("--malformed", args.malformed),
            ("--late", args.late),
            ("--future", args.future),
            ("--duplicates", args.duplicates),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{flag} {share}: give a fraction between 0 and 1"));
            }
        }
        Ok(match args.dataset {
            Dataset::Deals => Source::Deals {
                generator: Box::new(DealGenerator::new(
                    args.seed,
                    args.malformed,
                    args.spread_secs,
                )),
                topic: args.topic.clone().unwrap_or_else(|| "deals".into()),
            },
            Dataset::Beike => {
                let simulated = match &args.start {
                    None => None,
                    Some(start) => {
                        let t = chrono::DateTime::parse_from_rfc3339(start).map_err(|e| {
                            format!("--start {start}: {e}; write e.g. 2026-11-21T08:00:00Z")
                        })?;
                        Some((t.timestamp_micros(), args.step_ms as i64 * 1000))
                    }
                };
                let prefix = args.topic.clone().unwrap_or_else(|| "beike_".into());
                let late_age_us = late_minutes(&args.late_minutes)?;
                let mut late_deals = false;
                let mut late_itineraries = false;
                for stream in args.late_streams.split(',').map(str::trim) {
                    match stream {
                        "deals" => late_deals = true,
                        "itineraries" => late_itineraries = true,
                        other => {
                            return Err(format!(
                                "--late-streams: `{other}` is not a stream; write deals, itineraries or deals,itineraries"
                            ));
                        }
                    }
                }
                let trouble = Trouble {
                    malformed: args.malformed,
                    late: args.late,
                    late_age_us,
                    late_deals,
                    late_itineraries,
                    future: args.future,
                    duplicates: args.duplicates,
                    disorder_us: (args.disorder_secs.max(0.0) * 1e6) as i64,
                };
                Source::Beike {
                    generator: Box::new(BeikeGenerator::new(args.seed, trouble)),
                    deals: format!("{prefix}deals"),
                    itineraries: format!("{prefix}itineraries"),
                    simulated,
                }
            }
        })
    }

    fn topics(&self) -> Vec<String> {
        match self {
            Source::Deals { topic, .. } => vec![topic.clone()],
            Source::Beike {
                deals, itineraries, ..
            } => vec![deals.clone(), itineraries.clone()],
        }
    }

    /// Record number `i`.
    fn next(&mut self, i: u64) -> Outgoing<'_> {
        let now = chrono::Utc::now().timestamp_micros();
        match self {
            Source::Deals { generator, topic } => {
                let r = generator.next(now);
                Outgoing {
                    topic,
                    key: r.key,
                    value: r.value,
                    kind: if r.malformed {
                        Kind::Malformed
                    } else {
                        Kind::OnTime
                    },
                    copies: 1,
                    logged_ms: None,
                    clock_us: now,
                }
            }
            Source::Beike {
                generator,
                deals,
                itineraries,
                simulated,
            } => {
                let clock = simulated.map_or(now, |(start, step)| start + i as i64 * step);
                let r = generator.next(clock, now);
                Outgoing {
                    topic: match r.stream {
                        Stream::Deals => deals,
                        Stream::Itineraries => itineraries,
                    },
                    key: r.key,
                    value: r.value,
                    kind: r.kind,
                    copies: r.copies,
                    logged_ms: simulated.map(|_| clock.div_euclid(1000)),
                    clock_us: clock,
                }
            }
        }
    }
}

/// `MIN-MAX` minutes, as microseconds.
fn late_minutes(text: &str) -> Result<(i64, i64), String> {
    let bad = || format!("--late-minutes {text}: write MIN-MAX in minutes, e.g. 2-15");
    let (least, most) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |m: &str| {
        m.trim()
            .parse::<f64>()
            .ok()
            .filter(|m| *m > 0.0)
            .ok_or_else(bad)
    };
    let (least, most) = (minutes(least)?, minutes(most)?);
    if least > most {
        return Err(bad());
    }
    Ok(((least * 6e7) as i64, (most * 6e7) as i64))
}

/// What was produced, by kind.
#[derive(Default)]
struct Counts {
    events: u64,
    sent: u64,
    malformed: u64,
    late: u64,
    future: u64,
    duplicated: u64,
}

/// Why producing stopped.
#[derive(Debug, thiserror::Error)]
enum ProduceError {
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Truth(String),
}

fn truth_error(path: &std::path::Path, e: &std::io::Error) -> ProduceError {
    ProduceError::Truth(format!(
        "cannot write the truth file {}: {e}",
        path.display()
    ))
}

/// Produces the events; returns the summary line to print.
fn produce(args: &GenArgs, source: &mut Source) -> Result<serde_json::Value, ProduceError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("linger.ms", "10")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .create()?;
    let mut truth = match &args.truth {
        None => None,
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| truth_error(path, &e))?,
        )),
    };
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut n = Counts::default();
    while args.count == 0 || n.events < args.count {
        if args.rate > 0 {
            // Pace against the schedule, not the previous send, so the
            // average rate holds even when a send is slow.
            let due = Duration::from_secs_f64(n.events as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let record = source.next(n.events);
        for _ in 0..record.copies {
            let mut pending = BaseRecord::to(record.topic)
                .key(record.key.as_str())
                .payload(record.value.as_str());
            if let Some(ms) = record.logged_ms {
                pending = pending.timestamp(ms);
            }
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        pending = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            n.sent += 1;
        }
        if let (Some(out), Some(path)) = (&mut truth, &args.truth) {
            let line = serde_json::json!({
                "topic": record.topic,
                "kind": match record.kind {
                    Kind::OnTime => "on_time",
                    Kind::Late => "late",
                    Kind::Future => "future",
                    Kind::Malformed => "malformed",
                },
                "copies": record.copies,
                "clock_us": record.clock_us,
                "value": record.value,
            });
            writeln!(out, "{line}").map_err(|e| truth_error(path, &e))?;
        }
        n.events += 1;
        n.duplicated += u64::from(record.copies > 1);
        match record.kind {
            Kind::OnTime => {}
            Kind::Late => n.late += 1,
            Kind::Future => n.future += 1,
            Kind::Malformed => n.malformed += 1,
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            info!(
                events = n.events,
                malformed = n.malformed,
                rate = (n.events as f64 / started.elapsed().as_secs_f64()) as u64,
                "producing"
            );
            last_report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(60))?;
    if let (Some(out), Some(path)) = (&mut truth, &args.truth) {
        out.flush().map_err(|e| truth_error(path, &e))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
            "topics": source.topics(),
            "produced": n.events,
            "records_sent": n.sent,
            "malformed": n.malformed,
            "late": n.late,
            "future": n.future,
            "duplicated": n.duplicated,
            "valid": n.events - n.malformed,
            "elapsed_s": elapsed,
        "events_per_s": n.events as f64 / elapsed.max(1e-9),
    }))
}
