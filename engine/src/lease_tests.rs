//! The lease on an in-memory object store with a paused clock.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;

use super::*;

const TTL: Duration = Duration::from_secs(9);

fn store(memory: &Arc<InMemory>) -> LeaseStore {
    LeaseStore::new(
        memory.clone(),
        Path::from("_strata/lease"),
        "memory://lease/",
        TTL,
    )
}

fn process(pid: u32) -> Holder {
    Holder {
        pid,
        ..this_process(TTL)
    }
}

/// Process 1's lease, renewed in the background until `stop`.
async fn kept_by_first(memory: &Arc<InMemory>, stop: &Shutdown) -> KeptLease {
    store(memory)
        .acquire(&process(1), WhenHeld::Fail, stop)
        .await
        .expect("a free lease")
        .keep(stop.clone(), Metrics::new())
}

/// Process 2 takes the lease without waiting: it was released.
async fn taken_at_once_by_second(memory: &Arc<InMemory>) {
    let next = store(memory)
        .acquire(&process(2), WhenHeld::Fail, &Shutdown::new())
        .await
        .expect("a released lease is free");
    assert_eq!(next.holder.pid, 2);
}

#[tokio::test(start_paused = true)]
async fn a_second_run_fails_at_once_with_no_wait_naming_the_holder() {
    let memory = Arc::new(InMemory::new());
    let shutdown = Shutdown::new();
    let _first = store(&memory)
        .acquire(&process(1), WhenHeld::Fail, &shutdown)
        .await
        .expect("a free lease");
    let second = store(&memory)
        .acquire(&process(2), WhenHeld::Fail, &shutdown)
        .await;
    let err = second.err().expect("the lease is held").to_string();
    assert!(err.contains("pid 1 on"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_run_takes_over_only_once_the_holder_stops_renewing() {
    let memory = Arc::new(InMemory::new());
    let first_stop = Shutdown::new();
    let kept = store(&memory)
        .acquire(&process(1), WhenHeld::Wait, &first_stop)
        .await
        .expect("a free lease")
        .keep(first_stop.clone(), Metrics::new());
    let waiter = {
        let store = store(&memory);
        tokio::spawn(async move {
            let got = store
                .acquire(&process(2), WhenHeld::Wait, &Shutdown::new())
                .await;
            (got, tokio::time::Instant::now())
        })
    };
    // Renewed, the lease is never taken.
    tokio::time::sleep(TTL * 4).await;
    assert!(!waiter.is_finished(), "taken from a live holder");
    // The holder dies (a SIGKILL: no release).
    let killed = tokio::time::Instant::now();
    kept.task.abort();
    let (got, at) = waiter.await.expect("the waiter");
    let lease = got.expect("taken over");
    // The last renewal came at most a third of the time to live before the
    // kill, and the waiter counts from when it saw it.
    assert!(
        at - killed >= TTL * 2 / 3,
        "taken {:?} after the kill",
        at - killed
    );
    assert!(
        at - killed <= TTL * 2,
        "taken {:?} after the kill",
        at - killed
    );
    assert_eq!(lease.holder.pid, 2);
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_once() {
    let memory = Arc::new(InMemory::new());
    let stop = Shutdown::new();
    let kept = kept_by_first(&memory, &stop).await;
    stop.trigger();
    kept.release().await.expect("released");
    taken_at_once_by_second(&memory).await;
}

/// A run that fails before its layers start (a refused state reset)
/// releases its lease without triggering its shutdown: the release must
/// not wait for a heartbeat that only the shutdown would stop.
#[tokio::test(start_paused = true)]
async fn a_kept_lease_is_released_without_the_runs_shutdown() {
    let memory = Arc::new(InMemory::new());
    let stop = Shutdown::new();
    let kept = kept_by_first(&memory, &stop).await;
    tokio::time::timeout(TTL * 10, kept.release())
        .await
        .expect("the release waited for the run's shutdown")
        .expect("released");
    assert!(!stop.is_triggered());
    taken_at_once_by_second(&memory).await;
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_lease_was_taken_stops() {
    let memory = Arc::new(InMemory::new());
    let stop = Shutdown::new();
    let lease = store(&memory)
        .acquire(&process(1), WhenHeld::Fail, &stop)
        .await
        .expect("a free lease");
    // Another run writes the next lease object (it judged this one expired).
    assert!(
        store(&memory)
            .create(lease.n + 1, &process(2))
            .await
            .expect("written")
    );
    let metrics = Metrics::new();
    let kept = lease.keep(stop.clone(), metrics.clone());
    assert!(metrics.encode().contains("strata_lease_held 1\n"));
    tokio::time::sleep(TTL).await;
    assert!(stop.is_triggered(), "the run was not stopped");
    let err = kept.release().await.expect_err("lost").to_string();
    assert!(err.contains("lost the warehouse's lease"), "{err}");
    // What the lease-lost alert reads.
    let text = metrics.encode();
    assert!(text.contains("strata_lease_held 0\n"), "{text}");
    assert!(text.contains("strata_lease_lost_total 1\n"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_lease_whose_process_died_on_this_host_is_taken_at_once() {
    let memory = Arc::new(InMemory::new());
    let stop = Shutdown::new();
    // No such process (pids stay below 2^22).
    let _dead = store(&memory)
        .acquire(&process(u32::MAX - 1), WhenHeld::Fail, &stop)
        .await
        .expect("a free lease");
    let next = store(&memory)
        .acquire(&process(2), WhenHeld::Fail, &Shutdown::new())
        .await
        .expect("the holder's process is gone");
    assert_eq!(next.holder.pid, 2);
    // Another host's holder is not judged by this host's processes.
    let elsewhere = Holder {
        host: "elsewhere".into(),
        ..process(u32::MAX - 1)
    };
    let memory = Arc::new(InMemory::new());
    let _held = store(&memory)
        .acquire(&elsewhere, WhenHeld::Fail, &stop)
        .await
        .expect("a free lease");
    assert!(
        store(&memory)
            .acquire(&process(2), WhenHeld::Fail, &Shutdown::new())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn trying_names_a_live_holder_and_takes_a_released_lease() {
    let memory = Arc::new(InMemory::new());
    let stop = Shutdown::new();
    let first = kept_by_first(&memory, &stop).await;
    // However long it waits: a renewed lease is never taken by trying.
    tokio::time::sleep(TTL * 3).await;
    let held = store(&memory).try_acquire(&process(2)).await.unwrap();
    let who = held.err().expect("held by a live run");
    assert!(who.contains("pid 1 on"), "{who}");
    first.release().await.unwrap();
    let taken = store(&memory).try_acquire(&process(2)).await.unwrap();
    assert_eq!(taken.expect("released").holder.pid, 2);
}
