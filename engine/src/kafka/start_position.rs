//! Where a layer starts reading when it has no checkpoint yet.

/// Where to start reading a source that has no checkpoint. Once a layer has
/// committed a checkpoint it always resumes from the checkpoint's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still in each partition.
    Earliest,
    /// Only records produced after the layer starts.
    Latest,
    /// The consumer group's committed offsets (earliest where it has none).
    Group,
    /// The first record at or after this time (Kafka offsets-for-times),
    /// milliseconds since the epoch.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        millis: i64,
    },
}
