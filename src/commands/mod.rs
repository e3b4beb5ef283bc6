//! One module per subcommand.

mod gen_events;
mod run;
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
        } => run::run(&file, &layers, bounded).await,
        Command::Gen(args) => gen_events::generate(args).await,
    }
}
