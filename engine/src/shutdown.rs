//! A stop request shared by a pipeline's thread and tasks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Set once, read often: the source loop polls it between Kafka polls (so a
/// stop takes effect within one poll timeout and ends with a final barrier),
/// and async parts such as the Flight SQL server await it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    notify: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone to stop cleanly.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once a stop is asked for.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.notify.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}
