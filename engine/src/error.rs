//! The engine's errors: each names the pipeline resource it concerns and,
//! where there is one, what the operator can do about it.

use deltalake::DeltaTableError;
use rdkafka::error::KafkaError;

/// What can stop a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A Kafka client call failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        source: KafkaError,
    },
    /// A Delta table operation failed.
    #[error("delta table {table}: {context}: {source}")]
    Delta {
        /// The table's URL.
        table: String,
        /// What was being done.
        context: String,
        /// deltalake's error.
        source: Box<DeltaTableError>,
    },
    /// Reading or writing checkpoint files failed.
    #[error("checkpoint store {location}: {context}: {source}")]
    ObjectStore {
        /// Where.
        location: String,
        /// What was being done.
        context: String,
        /// object_store's error.
        source: object_store::Error,
    },
    /// A checkpoint manifest could not be understood.
    #[error(
        "checkpoint manifest {path} is unreadable: {reason}; move it aside to fall back to the one before"
    )]
    CorruptManifest {
        /// The manifest.
        path: String,
        /// Why.
        reason: String,
    },
    /// A checkpoint manifest of a format this engine does not read.
    #[error("checkpoint manifest {path} cannot be read: {reason}")]
    ManifestFormat {
        /// The manifest.
        path: String,
        /// Which format, and what to do.
        reason: String,
    },
    /// Another process committed the same epoch of this pipeline.
    #[error(
        "pipeline `{pipeline}`: checkpoint {epoch} already exists; another strata process is running this layer. Stop it, or give each process different layers"
    )]
    ConcurrentRun {
        /// The pipeline.
        pipeline: String,
        /// The epoch both wrote.
        epoch: u64,
    },
    /// An Arrow operation failed on data the engine built itself.
    #[error("arrow: {context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// arrow's error.
        source: arrow::error::ArrowError,
    },
    /// The configuration cannot be run as given.
    #[error("{0}")]
    Config(String),
    /// A pipeline task ended abnormally.
    #[error("pipeline `{pipeline}`: {reason}")]
    Pipeline {
        /// The pipeline.
        pipeline: String,
        /// What happened.
        reason: String,
    },
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> EngineError {
        let context = context.into();
        move |source| EngineError::Kafka { context, source }
    }

    pub(crate) fn delta(
        table: &str,
        context: impl Into<String>,
    ) -> impl FnOnce(DeltaTableError) -> EngineError {
        let table = table.to_string();
        let context = context.into();
        move |source| EngineError::Delta {
            table,
            context,
            source: Box::new(source),
        }
    }

    /// A DataFusion error about `subject` (a layer, a table), with what was
    /// being done; the root cause only, as DataFusion wraps it in contexts.
    pub(crate) fn datafusion(
        subject: &str,
        what: &str,
    ) -> impl FnOnce(datafusion::error::DataFusionError) -> EngineError {
        let pipeline = subject.to_string();
        let what = what.to_string();
        move |e| EngineError::Pipeline {
            pipeline,
            reason: format!("{what}: {}", e.find_root()),
        }
    }

    pub(crate) fn arrow(
        context: impl Into<String>,
    ) -> impl FnOnce(arrow::error::ArrowError) -> EngineError {
        let context = context.into();
        move |source| EngineError::Arrow { context, source }
    }
}
