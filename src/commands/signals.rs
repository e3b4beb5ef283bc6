//! SIGINT and SIGTERM: the first stops cleanly, a second exits at once.

use strata_engine::Shutdown;
use tracing::{info, warn};

async fn next_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return false;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    true
}

/// Triggers `shutdown` on the first signal (each layer commits its last
/// epoch, the server stops); exits the process on the second, which is as
/// safe as a crash.
pub fn stop_on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        if !next_signal().await {
            warn!("cannot listen for signals; stop with SIGKILL (no data is lost)");
            return;
        }
        info!("stopping: committing the last epoch of every layer (signal again to exit at once)");
        shutdown.trigger();
        next_signal().await;
        warn!("second signal: exiting now; the next start recovers from the last checkpoint");
        std::process::exit(130);
    });
}
