//! One module per subcommand.

mod gen_events;
mod query;
mod run;
mod serve;
mod signals;
mod validate;

use std::process::ExitCode;

use crate::cli::Command;

pub async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Validate { file } => validate::validate(&file),
        Command::Run {
            file,
            layers,
            bounded,
            no_serve,
        } => run::run(&file, &layers, bounded, !no_serve).await,
        Command::Serve { file } => serve::serve(&file).await,
        Command::Query(args) => query::query(args).await,
        Command::Gen(args) => gen_events::generate(args).await,
    }
}
