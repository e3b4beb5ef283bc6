//! librdkafka client settings shared by every consumer and producer.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// The cluster and the extra librdkafka properties from the warehouse file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Extra properties, applied last so they override Strata's defaults.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A consumer configuration for exactly-once reading: Strata tracks
    /// offsets in its checkpoints, so nothing is auto-committed, and only
    /// committed transactional records are read.
    pub fn consumer(&self, group_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            // A checkpointed offset that retention has deleted resumes at the
            // oldest record left; the gap is logged by the source.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("queued.max.messages.kbytes", "65536")
            .set("reconnect.backoff.max.ms", "2000");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A producer configuration (idempotent, all replicas acknowledge).
    pub fn producer(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
