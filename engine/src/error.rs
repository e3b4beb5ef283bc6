//! The engine's errors: each names the pipeline resource it concerns and,
//! where there is one, what the operator can do about it.
//!
//! Every error also has a [`ErrorKind`]: whether the user's configuration is
//! wrong, a layer's SQL cannot be planned, the data (or what is stored of
//! it) disagrees, an outside system failed, or Strata itself did. The CLI
//! picks its exit code from the kind alone, so a script can tell "fix the
//! file" from "retry later" from "report a bug" without reading messages.
//! The errors of the libraries (DataFusion, delta-rs, Kafka, object_store,
//! arrow, std::io) are kept as sources, not flattened into text.

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
    /// A layer's SQL (or a filter) cannot be planned as a streaming query.
    #[error("layer `{layer}`: {reason}")]
    Plan {
        /// The layer.
        layer: String,
        /// What is wrong, and the fix where there is one.
        reason: String,
    },
    /// DataFusion failed while reading or computing rows; the message shows
    /// its root cause, the source keeps the whole chain.
    #[error("{subject}: {context}: {}", .source.find_root())]
    DataFusion {
        /// The layer or table.
        subject: String,
        /// What was being done.
        context: String,
        /// DataFusion's error.
        source: Box<datafusion::error::DataFusionError>,
    },
    /// A pipeline refused to go on: what is stored (tables, checkpoints)
    /// or what it read disagrees with what it must guarantee.
    #[error("pipeline `{pipeline}`: {reason}")]
    Pipeline {
        /// The pipeline.
        pipeline: String,
        /// What happened.
        reason: String,
    },
    /// A part this one works with stopped: the consequence of another
    /// failure, which is the one reported when it is known.
    #[error("pipeline `{pipeline}`: {what} stopped")]
    Stopped {
        /// The pipeline.
        pipeline: String,
        /// Which part stopped.
        what: String,
    },
    /// A local file or thread operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Strata itself failed: a task panicked, or one of its parts stopped
    /// while others still needed it.
    #[error(
        "internal error: {what}: {reason}; this is a bug in Strata, please report it with the log"
    )]
    Internal {
        /// Which part.
        what: String,
        /// What happened.
        reason: String,
    },
}

/// What kind of failure an [`EngineError`] is; the CLI's exit code follows
/// from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The warehouse file or a command's arguments must be fixed.
    Config,
    /// A layer's SQL must be changed.
    Plan,
    /// Data, tables or checkpoints disagree with what a pipeline needs.
    Data,
    /// An outside system (broker, object store, disk) failed; a retry may
    /// succeed.
    Io,
    /// Strata failed.
    Internal,
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Config(_) => ErrorKind::Config,
            EngineError::Plan { .. } => ErrorKind::Plan,
            EngineError::DataFusion { .. }
            | EngineError::Pipeline { .. }
            | EngineError::CorruptManifest { .. }
            | EngineError::ManifestFormat { .. }
            | EngineError::ConcurrentRun { .. } => ErrorKind::Data,
            EngineError::Kafka { .. }
            | EngineError::Delta { .. }
            | EngineError::ObjectStore { .. }
            | EngineError::Io { .. } => ErrorKind::Io,
            EngineError::Arrow { .. }
            | EngineError::Internal { .. }
            | EngineError::Stopped { .. } => ErrorKind::Internal,
        }
    }

    /// A panicked or stopped part of Strata.
    pub(crate) fn internal(what: impl Into<String>, reason: impl std::fmt::Display) -> EngineError {
        EngineError::Internal {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }

    /// An object store failure at `location` while doing `context`.
    pub(crate) fn object_store(
        location: impl Into<String>,
        context: impl Into<String>,
    ) -> impl FnOnce(object_store::Error) -> EngineError {
        let (location, context) = (location.into(), context.into());
        move |source| EngineError::ObjectStore {
            location,
            context,
            source,
        }
    }

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
        let subject = subject.to_string();
        let context = what.to_string();
        move |e| EngineError::DataFusion {
            subject,
            context,
            source: Box::new(e),
        }
    }

    pub(crate) fn arrow(
        context: impl Into<String>,
    ) -> impl FnOnce(arrow::error::ArrowError) -> EngineError {
        let context = context.into();
        move |source| EngineError::Arrow { context, source }
    }
}
