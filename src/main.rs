//! `strata`: a real-time data warehouse in one process.
//!
//! Subcommands: `validate` a warehouse file, `run` its layers, `gen`erate
//! sample events. See `strata --help`.

mod cli;
mod commands;
mod datagen;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(commands::dispatch(cli.command))
}
