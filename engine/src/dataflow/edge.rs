//! An edge of a dataflow: the channel from a source or layer to a layer,
//! bounded by the bytes of rows queued on it rather than by a count of
//! messages.
//!
//! Rows (`Message::Rows`, `Message::Source`) cost their Arrow memory and
//! wait while the edge's budget (`dataflow::edge_budget`, the bytes its
//! receiver drains in a target time) is spent; watermarks and barriers cost
//! nothing and never wait for it. Everything still goes down one queue in
//! order, so the barrier of epoch n follows exactly the rows of epoch n and
//! barrier alignment and exactly-once are what they were; only the wait of
//! a barrier behind the rows ahead of it is bounded, by time instead of by
//! batches. A slow layer still slows its sender instead of growing memory.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::dataflow::edge_budget::InFlightBudget;
use crate::dataflow::message::Message;

/// The receiving layer has gone away; the message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeClosed;

/// A message on its way, with what it costs and when it was sent.
struct Envelope {
    message: Message,
    cost: usize,
    sent_at: Instant,
}

/// What both ends share.
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a message is taken (or the receiver goes).
    taken: Notify,
}

struct State {
    /// Bytes of rows sent and not yet taken.
    queued: usize,
    budget: InFlightBudget,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An edge whose queue drains in about `target` (see
/// [`InFlightBudget::target_for`]).
pub(crate) fn edge(target: Duration) -> (EdgeSender, EdgeReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queued: 0,
            budget: InFlightBudget::new(target),
        }),
        taken: Notify::new(),
    });
    (
        EdgeSender {
            shared: shared.clone(),
            tx,
        },
        EdgeReceiver { shared, rx },
    )
}

/// The bytes a message holds on an edge.
pub(crate) fn cost(message: &Message) -> usize {
    match message {
        Message::Rows(rows) => rows.get_array_memory_size(),
        Message::Source(staged) => [&staged.rows, &staged.dead_letters, &staged.future]
            .into_iter()
            .flatten()
            .map(|b| b.get_array_memory_size())
            .sum(),
        Message::Watermark(_) | Message::Barrier { .. } => 0,
    }
}

/// The sending end: a source's or an upstream layer's.
pub struct EdgeSender {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Envelope>,
}

impl EdgeSender {
    /// Sends `message`, first waiting, if it carries rows, until the edge's
    /// budget has room for them.
    pub async fn send(&self, message: Message) -> Result<(), EdgeClosed> {
        let cost = cost(&message);
        if cost > 0 {
            loop {
                let taken = self.shared.taken.notified();
                let mut taken = std::pin::pin!(taken);
                // Registered before the check: a take in between still wakes it.
                taken.as_mut().enable();
                {
                    let mut state = self.shared.state();
                    let admitted = state.budget.admits(state.queued, cost);
                    state.budget.sender_waits(!admitted);
                    if admitted {
                        state.queued += cost;
                        break;
                    }
                }
                if self.tx.is_closed() {
                    return Err(EdgeClosed);
                }
                taken.await;
            }
        }
        self.tx
            .send(Envelope {
                message,
                cost,
                sent_at: Instant::now(),
            })
            .map_err(|_| EdgeClosed)
    }

    /// [`send`](Self::send) from a thread outside the async runtime (a
    /// Kafka source's).
    pub fn blocking_send(&self, message: Message) -> Result<(), EdgeClosed> {
        futures::executor::block_on(self.send(message))
    }
}

/// The receiving end: a layer's input.
pub(crate) struct EdgeReceiver {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Envelope>,
}

impl EdgeReceiver {
    /// The next message; `None` once the sender has gone and the queue is
    /// empty. Cancel-safe (nothing is taken unless it returns).
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        let envelope = self.rx.recv().await?;
        let now = Instant::now();
        {
            let mut state = self.shared.state();
            state.queued = state.queued.saturating_sub(envelope.cost);
            let barrier = matches!(envelope.message, Message::Barrier { .. });
            state.budget.taken(
                envelope.cost,
                envelope.sent_at.into_std(),
                now.into_std(),
                barrier,
            );
        }
        self.shared.taken.notify_waiters();
        Some(envelope.message)
    }

    /// The bytes that may be queued now, and the target drain time.
    pub(crate) fn budget(&self) -> (usize, Duration) {
        let state = self.shared.state();
        (state.budget.bytes(), state.budget.target())
    }
}

impl Drop for EdgeReceiver {
    fn drop(&mut self) {
        self.rx.close();
        self.shared.taken.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(n: usize) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let column = Int64Array::from_iter_values(0..n as i64);
        Message::Rows(RecordBatch::try_new(schema, vec![Arc::new(column)]).expect("a batch"))
    }

    #[tokio::test(start_paused = true)]
    async fn rows_wait_for_the_budget_and_barriers_do_not() {
        let (tx, mut rx) = edge(Duration::from_millis(100));
        let (budget, _) = rx.budget();
        // The first batch fits an empty queue whatever its size.
        let big = rows(budget);
        assert!(cost(&big) > budget);
        tx.send(big).await.expect("sent");
        // The second waits...
        let second = tokio::spawn(async move {
            tx.send(rows(10)).await.expect("sent");
            tx
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished(), "a second batch did not wait");
        // ... until the first is taken.
        assert!(matches!(rx.recv().await, Some(Message::Rows(_))));
        let tx = second.await.expect("the sender");
        // Barriers and watermarks pass a full queue, in order behind it.
        tx.send(Message::Watermark(1)).await.expect("sent");
        tx.send(Message::Barrier {
            epoch: 1,
            source: None,
        })
        .await
        .expect("sent");
        assert!(matches!(rx.recv().await, Some(Message::Rows(_))));
        assert!(matches!(rx.recv().await, Some(Message::Watermark(1))));
        assert!(matches!(
            rx.recv().await,
            Some(Message::Barrier { epoch: 1, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_sender_learns_the_receiver_has_gone() {
        let (tx, rx) = edge(Duration::from_millis(100));
        tx.send(rows(100)).await.expect("sent");
        let waiting = tokio::spawn(async move { tx.send(rows(100_000)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(rx);
        assert_eq!(waiting.await.expect("the sender"), Err(EdgeClosed));
    }

    #[test]
    fn a_thread_sends_with_blocking_send() {
        let (tx, mut rx) = edge(Duration::from_millis(100));
        let thread = std::thread::spawn(move || {
            for _ in 0..3 {
                tx.blocking_send(rows(100_000)).expect("sent");
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let got = runtime.block_on(async {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        thread.join().expect("the thread");
        assert_eq!(got, 3);
    }
}
