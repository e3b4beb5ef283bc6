//! `strata validate FILE`.

use std::path::Path;
use std::process::ExitCode;

pub fn validate(file: &Path) -> ExitCode {
    match strata_layers::load(file) {
        Ok(w) => {
            println!(
                "{}: ok: warehouse `{}`, {} schema(s), {} layer(s)",
                file.display(),
                w.name,
                w.schemas.len(),
                w.layers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
