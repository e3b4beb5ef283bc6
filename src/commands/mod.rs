//! One module per subcommand.

mod backfill;
mod console_view;
mod dashboard;
mod flight_metrics;
mod gen_events;
mod history;
mod maintain;
mod metrics_endpoint;
mod panel_waits;
mod plan;
mod query;
mod replay_progress;
mod run;
mod serve;
mod signals;
mod status;
mod status_scrape;
mod time_arg;
mod validate;

use std::path::Path;

use strata_engine::ErrorKind;
use strata_layers::Warehouse;

use crate::cli::Command;
use crate::failure::Failure;

/// Loads a warehouse file, printing every problem it has if it is invalid.
fn load_warehouse(file: &Path) -> Result<Warehouse, Failure> {
    strata_layers::load(file).map_err(|e| {
        eprintln!("{e}");
        Failure::Reported(ErrorKind::Config)
    })
}

/// Plans a warehouse's layers (`layers` empty: all of them).
fn plan_layers(
    warehouse: &Warehouse,
    layers: &[String],
    bounded: bool,
) -> Result<strata_layers::Plan, Failure> {
    strata_layers::plan(warehouse, layers, bounded).map_err(|e| Failure::config(e.to_string()))
}

pub async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Validate { file, plan } => validate::validate(&file, plan).await,
        Command::Run {
            file,
            layers,
            bounded,
            no_serve,
            no_wait,
            reset_state,
            from,
        } => {
            let when_held = if no_wait {
                strata_engine::lease::WhenHeld::Fail
            } else {
                strata_engine::lease::WhenHeld::Wait
            };
            let reset = match (reset_state, from) {
                (Some(layer), Some(from)) => Some(run::StateReset { layer, from }),
                (None, None) => None,
                _ => {
                    return Err(Failure::config(
                        "--reset-state LAYER and --from TIME go together",
                    ));
                }
            };
            run::run(&file, &layers, bounded, !no_serve, when_held, reset).await
        }
        Command::Serve { file } => serve::serve(&file).await,
        Command::Status { file, json } => status::status(&file, json).await,
        Command::Query(args) => query::query(args).await,
        Command::Gen(args) => gen_events::generate(args).await,
        Command::Backfill(args) => backfill::backfill(args).await,
        Command::Maintain(args) => maintain::run(args).await,
        Command::History { file, json } => history::history(&file, json).await,
        Command::Plan { file, json } => plan::plan(&file, json).await,
    }
}
