//! One module per subcommand.

mod backfill;
mod dashboard;
mod gen_events;
mod query;
mod replay_progress;
mod run;
mod serve;
mod signals;
mod time_arg;
mod validate;

use std::path::Path;
use std::process::ExitCode;

use strata_layers::Warehouse;

use crate::cli::Command;

/// Loads a warehouse file, printing every problem it has if it is invalid.
fn load_warehouse(file: &Path) -> Option<Warehouse> {
    strata_layers::load(file).map_err(|e| eprintln!("{e}")).ok()
}

pub async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Validate { file, plan } => validate::validate(&file, plan).await,
        Command::Run {
            file,
            layers,
            bounded,
            no_serve,
        } => run::run(&file, &layers, bounded, !no_serve).await,
        Command::Serve { file } => serve::serve(&file).await,
        Command::Query(args) => query::query(args).await,
        Command::Gen(args) => gen_events::generate(args).await,
        Command::Backfill(args) => backfill::backfill(args).await,
    }
}
