//! `strata gen`: produce generated events to a Kafka topic.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tracing::{error, info};

use crate::cli::{Dataset, GenArgs};
use crate::datagen::deals::DealGenerator;

pub async fn generate(args: GenArgs) -> ExitCode {
    if let Err(e) = create_topic(&args).await {
        error!(topic = %args.topic, error = %e, "cannot create the topic");
        return ExitCode::FAILURE;
    }
    match tokio::task::spawn_blocking(move || produce(&args)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            error!(error = %e, "producing failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            error!(error = %e, "the producer thread failed");
            ExitCode::FAILURE
        }
    }
}

async fn create_topic(args: &GenArgs) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .create()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            &[topic],
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

fn produce(args: &GenArgs) -> Result<(), KafkaError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("linger.ms", "10")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .create()?;
    let Dataset::Deals = args.dataset;
    let mut generator = DealGenerator::new(args.seed, args.malformed, args.spread_secs);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut produced, mut malformed) = (0u64, 0u64);
    while args.count == 0 || produced < args.count {
        if args.rate > 0 {
            // Pace against the schedule, not the previous send, so the
            // average rate holds even when a send is slow.
            let due = Duration::from_secs_f64(produced as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let record = generator.next(chrono::Utc::now().timestamp_micros());
        let mut pending = BaseRecord::to(&args.topic)
            .key(record.key.as_str())
            .payload(record.value.as_str());
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
        produced += 1;
        malformed += u64::from(record.malformed);
        if last_report.elapsed() > Duration::from_secs(5) {
            info!(
                produced,
                malformed,
                rate = (produced as f64 / started.elapsed().as_secs_f64()) as u64,
                "producing"
            );
            last_report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "topic": args.topic,
            "produced": produced,
            "malformed": malformed,
            "valid": produced - malformed,
            "elapsed_s": elapsed,
            "events_per_s": produced as f64 / elapsed.max(1e-9),
        })
    );
    Ok(())
}
