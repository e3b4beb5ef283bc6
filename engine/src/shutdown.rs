//! A stop request shared by a pipeline's thread and tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once, read often: the source loop checks it between polls, so a
/// stop takes effect within one poll timeout and ends with a final barrier.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone to stop cleanly.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
