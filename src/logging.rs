//! Structured logs on stderr.
//!
//! The defaults keep the dependencies' chatter out (the Delta kernel logs
//! every snapshot at INFO, and an ERROR for the expected "no table here
//! yet"; delta-rs's MERGE warns "Missing target skipped-file metric" on
//! every upsert, about a metric of its own it then derives, so a warning
//! per epoch of every upserting layer; its transactions warn "table updated
//! during transaction" whenever a commit finds the table moved on and
//! checks for conflicts, as compaction does beside the live epochs, and
//! log an ERROR "exceeded maximum commit attempts" when a commit out of
//! attempts (a type widening's, made once; compaction's, after many races
//! with live epochs) loses the race at the write: normal operation, whose
//! outcome Strata logs itself); `RUST_LOG` directives are
//! applied on top, so `RUST_LOG=debug` or `RUST_LOG=buoyant_kernel=info`
//! still work.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

const DEFAULT_DIRECTIVES: &str = "info,deltalake=warn,deltalake_core=warn,deltalake_core::operations::merge=error,deltalake_core::kernel::transaction=off,buoyant_kernel=off,datafusion=warn,rdkafka=warn";

pub fn init(format: LogFormat) {
    let directives = match std::env::var("RUST_LOG") {
        Ok(extra) if !extra.trim().is_empty() => format!("{DEFAULT_DIRECTIVES},{extra}"),
        _ => DEFAULT_DIRECTIVES.to_string(),
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG is not a valid filter ({e}); using the defaults");
        EnvFilter::new(DEFAULT_DIRECTIVES)
    });
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
