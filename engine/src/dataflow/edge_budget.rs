//! How many bytes of rows may wait on one edge of a dataflow: as many as
//! its receiver drains in a target time.
//!
//! A barrier goes down the same edge as the rows before it, so it waits
//! behind whatever is queued there. Bounded by a count of batches, a queue
//! in front of a slow layer held 16 batches of 8,192 rows, and a barrier
//! waited seconds behind them: epochs of 10-20 s at a 1 s interval while a
//! backlog was caught up. As Flink's buffer debloating does, the budget
//! follows the receiver's measured throughput instead, so the queue ahead
//! of a barrier drains in about [`InFlightBudget::target`] whatever the
//! layer's speed; the edge (`dataflow::edge`) applies it. This module is the
//! arithmetic alone, with the clock passed in, so it is tested on its own.
//!
//! The throughput is the drain rate while the queue is backlogged: the
//! bytes of each message taken over the time since the previous one was
//! taken, counted only when the message was already waiting then (or its
//! sender was, blocked on the budget, and sent it at once). A message that
//! found the receiver idle says only that the receiver keeps up, and is
//! not counted; nor is the alignment and snapshot that follow a barrier,
//! which the next epoch's barrier never waits behind (it is sent after
//! every layer acked). Over the last [`WINDOW`] counted messages; until
//! there are any the budget stays at [`MIN_BYTES`], which is all a
//! receiver that keeps up needs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The smallest budget. Whatever the budget, one message may always be
/// queued when none is (so a batch larger than the budget still flows,
/// one at a time), so this only keeps tiny batches from going one by one.
pub(crate) const MIN_BYTES: usize = 64 * 1024;
/// The largest budget, whatever the receiver's throughput.
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;
/// Messages the throughput is measured over.
const WINDOW: usize = 16;
/// The shortest target: below it a queue holds barely a batch and a fast
/// pipeline loses throughput to the hand-offs.
const MIN_TARGET: Duration = Duration::from_millis(5);
/// The longest target (Flink's debloating default).
const MAX_TARGET: Duration = Duration::from_secs(1);

/// One taken message: its bytes and the time the queue took to yield it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    bytes: u64,
    busy: Duration,
}

/// The byte budget of one edge.
#[derive(Debug)]
pub(crate) struct InFlightBudget {
    target: Duration,
    samples: VecDeque<Sample>,
    bytes_sum: u64,
    busy_sum: Duration,
    /// When the previous message was taken.
    last_taken: Option<Instant>,
    /// Whether it was a barrier (the time until the next one is the
    /// layer's alignment and snapshot, not draining).
    after_barrier: bool,
    /// Whether the sender was blocked on the budget when the previous
    /// message was taken (it sends the next one at once: a hand-off, not
    /// an idle queue).
    handoff: bool,
    /// Whether the sender is blocked on the budget now.
    sender_waiting: bool,
    budget: usize,
}

impl InFlightBudget {
    /// A budget that lets the queue drain in about `target`; it starts at
    /// [`MIN_BYTES`] and grows as the throughput is measured.
    pub(crate) fn new(target: Duration) -> Self {
        InFlightBudget {
            target,
            samples: VecDeque::with_capacity(WINDOW),
            bytes_sum: 0,
            busy_sum: Duration::ZERO,
            last_taken: None,
            after_barrier: false,
            handoff: false,
            sender_waiting: false,
            budget: MIN_BYTES,
        }
    }

    /// The target drain time of a dataflow's edges: half its checkpoint
    /// `interval`, shared among the `depth` edges of its longest chain
    /// (a barrier crosses each), so a barrier reaches the last layer in
    /// about half an interval even when every edge is full.
    pub(crate) fn target_for(interval: Duration, depth: usize) -> Duration {
        let edges = depth.max(1) as u32;
        (interval / 2 / edges).clamp(MIN_TARGET, MAX_TARGET)
    }

    /// The target drain time.
    pub(crate) fn target(&self) -> Duration {
        self.target
    }

    /// The bytes that may be queued.
    pub(crate) fn bytes(&self) -> usize {
        self.budget
    }

    /// Whether a message of `cost` bytes may join `queued` bytes: when it
    /// fits the budget, or when nothing is queued (so nothing deadlocks).
    pub(crate) fn admits(&self, queued: usize, cost: usize) -> bool {
        queued == 0 || queued.saturating_add(cost) <= self.budget
    }

    /// The sender is blocked on the budget (`true`), or no longer.
    pub(crate) fn sender_waits(&mut self, waiting: bool) {
        self.sender_waiting = waiting;
    }

    /// The drain rate measured, bytes per second (`None` before any
    /// backlogged message was taken).
    pub(crate) fn drain_rate(&self) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        if self.busy_sum.is_zero() {
            return Some(f64::INFINITY);
        }
        Some(self.bytes_sum as f64 / self.busy_sum.as_secs_f64())
    }

    /// The receiver took, at `now`, a message of `cost` bytes sent at
    /// `sent_at`; `barrier` says whether it was a barrier.
    pub(crate) fn taken(&mut self, cost: usize, sent_at: Instant, now: Instant, barrier: bool) {
        let since = match self.last_taken {
            Some(last) if !self.after_barrier && (sent_at <= last || self.handoff) => {
                Some(last.max(sent_at))
            }
            _ => None,
        };
        self.last_taken = Some(now);
        self.after_barrier = barrier;
        self.handoff = self.sender_waiting;
        let Some(since) = since else {
            return;
        };
        let sample = Sample {
            bytes: cost as u64,
            busy: now.saturating_duration_since(since),
        };
        if self.samples.len() == WINDOW
            && let Some(old) = self.samples.pop_front()
        {
            self.bytes_sum -= old.bytes;
            self.busy_sum -= old.busy;
        }
        self.samples.push_back(sample);
        self.bytes_sum += sample.bytes;
        self.busy_sum += sample.busy;
        self.adapt();
    }

    /// The budget follows the drain rate at once when it falls, and at most
    /// doubles per message when it rises (a window of few messages can
    /// overstate it).
    fn adapt(&mut self) {
        let Some(rate) = self.drain_rate() else {
            return;
        };
        let wanted = rate * self.target.as_secs_f64();
        let wanted = if wanted.is_finite() {
            wanted.min(MAX_BYTES as f64).round() as usize
        } else {
            MAX_BYTES
        };
        self.budget = wanted
            .min(self.budget.saturating_mul(2))
            .clamp(MIN_BYTES, MAX_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A receiver always behind: each message was queued before the
    /// previous was taken, and took `each` to drain; `n` messages of
    /// `bytes` from `start`. Returns the end time.
    fn drain(
        b: &mut InFlightBudget,
        start: Instant,
        n: usize,
        bytes: usize,
        each: Duration,
    ) -> Instant {
        let mut now = start;
        for _ in 0..n {
            let sent = now;
            now += each;
            b.taken(bytes, sent, now, false);
        }
        now
    }

    #[test]
    fn the_budget_is_what_the_receiver_drains_in_the_target_time() {
        let mut b = InFlightBudget::new(ms(500));
        // 1 MiB per 100 ms: 10 MiB/s, so 5 MiB drain in 500 ms.
        drain(&mut b, Instant::now(), 32, MB, ms(100));
        assert_eq!(b.drain_rate().map(|r| r.round() as usize), Some(10 * MB));
        assert_eq!(b.bytes(), 5 * MB);
    }

    #[test]
    fn it_starts_small_and_at_most_doubles_per_message() {
        let mut b = InFlightBudget::new(ms(500));
        assert_eq!(b.bytes(), MIN_BYTES);
        assert_eq!(b.drain_rate(), None);
        // A backlogged receiver draining 1 GiB/s.
        let t = drain(&mut b, Instant::now(), 2, MB, ms(1));
        assert_eq!(b.bytes(), 2 * MIN_BYTES);
        drain(&mut b, t, 10, MB, ms(1));
        assert_eq!(b.bytes(), MAX_BYTES);
    }

    #[test]
    fn a_receiver_that_keeps_up_is_not_measured() {
        let mut b = InFlightBudget::new(ms(500));
        let mut now = Instant::now();
        for _ in 0..32 {
            // Sent 90 ms after the previous was taken, taken 10 ms later:
            // the queue was empty, the receiver idle or busy elsewhere.
            let sent = now + ms(90);
            now += ms(100);
            b.taken(MB, sent, now, false);
        }
        assert_eq!(b.drain_rate(), None);
        assert_eq!(b.bytes(), MIN_BYTES);
    }

    #[test]
    fn a_hand_off_to_a_blocked_sender_is_backlog() {
        let mut b = InFlightBudget::new(ms(500));
        let mut now = Instant::now();
        b.sender_waits(true);
        for _ in 0..17 {
            // The sender, woken by the previous take, sent 1 ms after it.
            let sent = now + ms(1);
            now += ms(101);
            b.taken(MB, sent, now, false);
        }
        assert_eq!(b.drain_rate().map(|r| r.round() as usize), Some(10 * MB));
    }

    #[test]
    fn it_shrinks_at_once_when_the_receiver_slows_down() {
        let mut b = InFlightBudget::new(ms(500));
        let t = drain(&mut b, Instant::now(), 16, MB, ms(10));
        assert_eq!(b.bytes(), 50 * MB);
        // Ten times slower: it shrinks from the first slow message on, and
        // after a window it is a tenth.
        let t2 = drain(&mut b, t, 1, MB, ms(100));
        assert_eq!(b.bytes(), 32 * MB);
        drain(&mut b, t2, 16, MB, ms(100));
        assert_eq!(b.bytes(), 5 * MB);
    }

    #[test]
    fn it_stays_within_its_bounds() {
        let mut slow = InFlightBudget::new(ms(500));
        // 1 KiB per second.
        drain(&mut slow, Instant::now(), 16, 1024, Duration::from_secs(1));
        assert_eq!(slow.bytes(), MIN_BYTES);
        let mut fast = InFlightBudget::new(Duration::from_secs(1));
        // 1 GiB/s.
        drain(
            &mut fast,
            Instant::now(),
            64,
            1024 * MB,
            Duration::from_secs(1),
        );
        assert_eq!(fast.bytes(), MAX_BYTES);
    }

    #[test]
    fn one_message_is_admitted_into_an_empty_queue_whatever_its_size() {
        let b = InFlightBudget::new(ms(500));
        assert!(b.admits(0, 100 * MB));
        assert!(b.admits(MIN_BYTES / 2, MIN_BYTES / 2));
        assert!(!b.admits(MIN_BYTES / 2, MIN_BYTES / 2 + 1));
        assert!(!b.admits(1, 100 * MB));
    }

    #[test]
    fn the_pause_after_a_barrier_is_not_draining() {
        let mut b = InFlightBudget::new(ms(500));
        let start = Instant::now();
        let t = drain(&mut b, start, 8, MB, ms(100));
        // A barrier, then 5 s of alignment and snapshot with a message queued.
        b.taken(0, t, t + ms(100), true);
        let t = t + ms(100);
        b.taken(MB, t, t + Duration::from_secs(5), false);
        let t = t + Duration::from_secs(5);
        drain(&mut b, t, 6, MB, ms(100));
        // Counted: 7 of the first 8, the barrier, the last 6: 13 MiB in 1.4 s.
        assert_eq!(
            b.drain_rate().map(|r| r.round() as usize),
            Some((13.0 * MB as f64 / 1.4).round() as usize)
        );
    }

    #[test]
    fn the_target_is_half_an_interval_shared_by_the_longest_chain() {
        let s = Duration::from_secs(1);
        assert_eq!(InFlightBudget::target_for(s, 1), ms(500));
        assert_eq!(InFlightBudget::target_for(s, 4), ms(125));
        assert_eq!(InFlightBudget::target_for(s, 0), ms(500));
        assert_eq!(InFlightBudget::target_for(ms(10), 3), MIN_TARGET);
        assert_eq!(
            InFlightBudget::target_for(Duration::from_secs(60), 1),
            MAX_TARGET
        );
    }
}
