//! The async benches' `main`: a runtime, the bench, and an exit code.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Runs `bench` to completion on a tokio runtime; a failure is printed.
pub fn block_on<E: Display>(bench: impl Future<Output = Result<(), E>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
