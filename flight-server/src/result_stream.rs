//! A query's result on its way to the client (`DoGet`).
//!
//! The query runs in a task of its own on the query runtime, which plans
//! it, runs it with its own memory pool and encodes its batches; they reach
//! the client through a small channel, so a client that reads slowly slows
//! the query instead of piling results up in memory. The task holds the
//! query's slot and its memory: when the client goes away (the response
//! stream is dropped) or the query timeout passes, the task is aborted and
//! everything it held is released at once, rather than the query running on
//! for nobody.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::{Stream, StreamExt};
use prost::bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tracing::debug;

use crate::admission::Slot;
use crate::auth::Caller;
use crate::memory_budget::QueryPool;
use crate::plain_strings::{plain_schema, to_plain};
use crate::query_runner::{Inner, deadline_exceeded};
use crate::query_runtime::AbortOnDrop;

/// A query result on its way to the client.
pub(crate) type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Encoded messages buffered between the query and the client.
const BUFFERED: usize = 4;

type Ready = oneshot::Sender<Result<(), Status>>;
type LastStatus = Arc<Mutex<Option<Status>>>;

/// Starts the ticket's query; returns once it is planned and running (or
/// with the error that stopped it before).
pub(crate) async fn start_stream(
    inner: Arc<Inner>,
    caller: Caller,
    ticket: Bytes,
    slot: Slot,
) -> Result<DoGetStream, Status> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(BUFFERED);
    let last: LastStatus = Arc::new(Mutex::new(None));
    let task = AbortOnDrop(inner.runtime.spawn(drive(
        inner.clone(),
        caller,
        ticket,
        slot,
        ready_tx,
        tx,
        last.clone(),
    )));
    match ready_rx.await {
        Ok(Ok(())) => Ok(Box::pin(ResultStream {
            rx,
            last,
            _task: task,
            finished: false,
        })),
        Ok(Err(status)) => Err(status),
        // The task ended without a word: it panicked.
        Err(_) => Err(task
            .join()
            .await
            .err()
            .unwrap_or_else(|| Status::internal("the query stopped before it started"))),
    }
}

async fn drive(
    inner: Arc<Inner>,
    caller: Caller,
    ticket: Bytes,
    _slot: Slot,
    ready: Ready,
    tx: mpsc::Sender<Result<FlightData, Status>>,
    last: LastStatus,
) {
    let timeout = inner.limits.query_timeout;
    let mut ready = Some(ready);
    let outcome = tokio::time::timeout_at(
        Instant::now() + timeout,
        run(&inner, &caller, &ticket, &mut ready, &tx),
    )
    .await;
    let status = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(status)) => Some(status),
        Err(_) => Some(deadline_exceeded(timeout)),
    };
    if let Some(status) = status {
        debug!(code = ?status.code(), message = status.message(), "query failed");
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(Err(status));
            }
            None => *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(status),
        }
    }
}

async fn run(
    inner: &Arc<Inner>,
    caller: &Caller,
    ticket: &[u8],
    ready: &mut Option<Ready>,
    tx: &mpsc::Sender<Result<FlightData, Status>>,
) -> Result<(), Status> {
    let handle = inner.decode_handle(ticket)?;
    let sql = handle.sql.clone();
    let failed = |e| inner.status(e, &sql);
    let df = inner.plan(caller, &handle, true).await?;
    let (state, plan) = df.into_parts();
    let plan = state.optimize(&plan).map_err(failed)?;
    let physical = state
        .query_planner()
        .create_physical_plan(&plan, &state)
        .await
        .and_then(yielding)
        .map_err(failed)?;
    let pool = QueryPool::new(inner.limits.query_memory, inner.memory.clone());
    let env = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_memory_pool(Arc::new(pool))
        .build_arc()
        .map_err(failed)?;
    let task = Arc::new(TaskContext::from(&state).with_runtime(env));
    let batches = execute_stream(physical, task).map_err(failed)?;
    let schema = batches.schema();
    let plain = if inner.string_view {
        None
    } else {
        plain_schema(&schema)
    };
    let out_schema = plain.clone().unwrap_or(schema);
    if let Some(ready) = ready.take()
        && ready.send(Ok(())).is_err()
    {
        return Ok(());
    }
    let errors = inner.clone();
    let batches = batches.map(move |batch| {
        let batch = batch.map_err(|e| FlightError::Tonic(Box::new(errors.status(e, &sql))))?;
        match &plain {
            Some(plain) => to_plain(batch, plain).map_err(FlightError::from),
            None => Ok(batch),
        }
    });
    let mut flight = FlightDataEncoderBuilder::new()
        .with_schema(out_schema)
        .build(batches);
    while let Some(item) = flight.next().await {
        let item = item.map_err(Status::from);
        let failed = item.is_err();
        if tx.send(item).await.is_err() {
            debug!("the client went away; query stopped");
            return Ok(());
        }
        if failed {
            return Ok(());
        }
    }
    Ok(())
}

/// `plan` with every operator's output counted against tokio's cooperative
/// budget. DataFusion yields only at its scans, and an operator that makes
/// many batches out of few (a cross join) can run for minutes inside one
/// poll: an abort or a timeout takes effect only when the task yields, so
/// without this an abandoned cross join would run to its end.
fn yielding(plan: Arc<dyn ExecutionPlan>) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
        Ok(Transformed::yes(wrapped))
    })
    .map(|t| t.data)
}

/// The client's side: the channel's messages, then the status that ended
/// the query early, if one did. Dropping it aborts the query.
struct ResultStream {
    rx: mpsc::Receiver<Result<FlightData, Status>>,
    last: LastStatus,
    _task: AbortOnDrop<()>,
    finished: bool,
}

impl Stream for ResultStream {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                self.finished = true;
                let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
                Poll::Ready(last.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
