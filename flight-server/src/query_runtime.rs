//! The threads queries run on, apart from the pipelines' threads.
//!
//! `strata run` serves Flight SQL in the process that runs the pipelines.
//! Queries get their own tokio runtime so that a heavy query competes with
//! the pipelines only for CPU time, which the kernel shares: its threads run
//! at a lower priority (nice 10), so an epoch's work goes first. Its threads
//! have stacks sized for the deepest expression the server accepts
//! ([`stack_bytes`]): parsing, planning, optimizing, evaluating and dropping
//! an expression tree recurse once per level, and some of those passes use
//! kilobytes per level in a debug build.
//!
//! Everything that touches a client's SQL or parameters runs here, and so
//! does dropping what it built: a plan for a deep expression dropped on one
//! of the pipelines' 2 MiB stacks would overflow it.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{debug, error};

/// Stack reserved per expression level. Measured in a debug build (whose
/// frames are the largest): a 1,000-operator chain over a table's columns
/// overflows 8 MiB and runs in 12 MiB, so about 10 KiB per level; this is
/// three times that, on top of the base.
const STACK_PER_LEVEL: usize = 32 << 10;
/// Stack for everything but the expression's levels.
const STACK_BASE: usize = 16 << 20;
/// Threads for blocking file reads (object_store's local files).
const BLOCKING_THREADS: usize = 16;
/// Name of the runtime's threads (what `top -H` and /proc show).
pub const THREAD_NAME: &str = "strata-query";

/// The stack a query thread gets when expressions may be `depth` deep.
pub(crate) fn stack_bytes(depth: usize) -> usize {
    STACK_BASE + depth.saturating_mul(STACK_PER_LEVEL)
}

/// The query runtime; shut down (without waiting) when dropped.
pub(crate) struct QueryRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl QueryRuntime {
    /// `threads` workers whose stacks hold expressions `depth` deep.
    pub(crate) fn new(threads: usize, depth: usize) -> std::io::Result<Arc<Self>> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name(THREAD_NAME)
            .thread_stack_size(stack_bytes(depth))
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Arc::new(QueryRuntime {
            runtime: Some(runtime),
            handle,
        }))
    }

    /// Starts `task` on the query threads.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// Runs `task` on the query threads and waits for it. A panic in it is
    /// reported as INTERNAL (the process goes on); if the caller stops
    /// waiting (its client went away), the task is aborted.
    pub(crate) async fn run<F, T>(&self, task: F) -> Result<T, Status>
    where
        F: Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let running = AbortOnDrop(self.spawn(task));
        running.join().await?
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task that is aborted when its handle is dropped: a query nobody waits
/// for any more stops at its next yield, and frees what it held.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Waits for the task; a panic becomes INTERNAL.
    pub(crate) async fn join(mut self) -> Result<T, Status>
    where
        T: Send + 'static,
    {
        match (&mut self.0).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => {
                error!(error = %e, "a query task panicked");
                Err(Status::internal(
                    "the server failed on this request (a bug: please report it with the statement); other requests are not affected",
                ))
            }
            Err(e) => Err(Status::cancelled(format!("the query was stopped: {e}"))),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::ops::Deref for AbortOnDrop<T> {
    type Target = JoinHandle<T>;
    fn deref(&self) -> &JoinHandle<T> {
        &self.0
    }
}

/// Runs the calling thread at nice 10 (Linux sets priorities per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their arguments.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if result != 0 {
            debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower a query thread's priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_an_internal_error_and_the_runtime_goes_on() {
        let rt = QueryRuntime::new(1, 100).unwrap();
        let e = rt
            .run(async { if true { panic!("boom") } else { Ok(()) } })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        assert_eq!(rt.run(async { Ok(7) }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_dropped_handle_aborts_the_task() {
        let rt = QueryRuntime::new(1, 100).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = AbortOnDrop(rt.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        }));
        drop(task);
        // The sender is dropped with the aborted task.
        assert!(rx.await.is_err());
    }
}
