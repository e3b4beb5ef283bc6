//! Injected crashes for in-process recovery tests: a failpoint that fails
//! the dataflow at one step of one epoch, once, as a SIGKILL would stop a
//! process there.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::dataflow::io::Failpoints;
use crate::error::{EngineError, Result};
use crate::failpoint::Point;

/// Crashes at `point` of `epoch` (the first time it is reached).
pub(crate) struct CrashAt {
    at: Mutex<Option<(Point, u64)>>,
    happened: AtomicBool,
}

impl CrashAt {
    /// Crashes there; `None`: never.
    pub(crate) fn new(at: Option<(Point, u64)>) -> Self {
        CrashAt {
            at: Mutex::new(at),
            happened: AtomicBool::new(false),
        }
    }

    /// Whether the crash happened.
    pub(crate) fn happened(&self) -> bool {
        self.happened.load(Ordering::SeqCst)
    }
}

impl Failpoints for CrashAt {
    fn hit(&self, point: Point, epoch: u64) -> Result<()> {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if *at == Some((point, epoch)) {
            *at = None;
            self.happened.store(true, Ordering::SeqCst);
            return Err(EngineError::Pipeline {
                pipeline: "test".into(),
                reason: format!("injected crash at {}:{epoch}", point.name()),
            });
        }
        Ok(())
    }
}
