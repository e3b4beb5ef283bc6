//! `strata`: a real-time data warehouse in one process.
//!
//! Subcommands: `validate` a warehouse file, `run` its layers, `gen`erate
//! sample events. See `strata --help`.

mod allocator;
mod cli;
mod commands;
mod datagen;
mod failure;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format);
    strata_engine::metrics::report_heap_with(allocator::heap);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return failure::Failure::internal(format!("cannot start the async runtime: {e}"))
                .report();
        }
    };
    match runtime.block_on(commands::dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
