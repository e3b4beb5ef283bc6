//! SIGINT and SIGTERM: the first stops cleanly, a second exits at once.

use strata_engine::Shutdown;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

async fn next_signal(int: &mut Signal, term: &mut Signal) {
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Triggers `shutdown` on the first signal (each layer commits its last
/// epoch, the server stops); exits the process on the second, which is as
/// safe as a crash.
///
/// The handlers are installed before this returns: a signal that arrives
/// while the process is still starting is a clean stop, not the default
/// action (which would end the process as SIGTERM does).
pub fn stop_on_signals(shutdown: Shutdown) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        warn!("cannot listen for signals; stop with SIGKILL (no data is lost)");
        return;
    };
    tokio::spawn(async move {
        next_signal(&mut int, &mut term).await;
        info!("stopping: committing the last epoch of every layer (signal again to exit at once)");
        shutdown.trigger();
        next_signal(&mut int, &mut term).await;
        warn!("second signal: exiting now; the next start recovers from the last checkpoint");
        std::process::exit(130);
    });
}
