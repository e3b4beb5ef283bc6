//! How a command ends badly, printed and turned into an exit code in one
//! place (`main`), as ripgrep does: commands return a [`Failure`] and never
//! pick exit codes or print "error:" themselves.
//!
//! The exit code says what to do, so scripts and supervisors need not read
//! messages (documented in the README):
//!
//! | code | kind | what to do |
//! |------|------|------------|
//! | 0 | | done (also when the reader of stdout went away: `strata ... \| head`) |
//! | 2 | config or SQL | fix the warehouse file, the layer's SQL or the arguments |
//! | 3 | data | what is stored (tables, checkpoints) or read disagrees with what Strata must guarantee: read the message |
//! | 4 | I/O | the broker, the object store or the disk failed: retry when it is back |
//! | 70 | internal | a bug in Strata: report it with the log |
//! | 130 | interrupted | stopped by a signal before it finished; nothing was changed |

use std::io::Write;
use std::process::ExitCode;

use strata_engine::EngineError;
use strata_engine::ErrorKind;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Problems already printed in full (diagnostics with file and line).
    Reported(ErrorKind),
    /// A message for `error: ...`, of a kind.
    Message(ErrorKind, String),
    /// An engine error; its kind is its own.
    Engine(EngineError),
    /// Stopped by a signal; the message says what was (not) changed.
    Interrupted(String),
    /// Whoever read stdout stopped reading (`| head`): not a failure.
    BrokenPipe,
}

impl Failure {
    /// A configuration or argument mistake.
    pub fn config(message: impl Into<String>) -> Failure {
        Failure::Message(ErrorKind::Config, message.into())
    }

    /// An outside system failed.
    pub fn io(message: impl Into<String>) -> Failure {
        Failure::Message(ErrorKind::Io, message.into())
    }

    /// Strata failed.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::Message(ErrorKind::Internal, message.into())
    }

    /// Prints what the user must know and returns the exit code.
    pub fn report(self) -> ExitCode {
        let kind = match self {
            Failure::BrokenPipe => return ExitCode::SUCCESS,
            Failure::Interrupted(message) => {
                eprintln!("{message}");
                return ExitCode::from(130);
            }
            Failure::Reported(kind) => kind,
            Failure::Message(kind, message) => {
                eprintln!("error: {message}");
                kind
            }
            Failure::Engine(e) => {
                eprintln!("error: {e}");
                e.kind()
            }
        };
        ExitCode::from(exit_code(kind))
    }
}

/// The exit code of a kind of failure.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Config | ErrorKind::Plan => 2,
        ErrorKind::Data => 3,
        ErrorKind::Io => 4,
        ErrorKind::Internal => 70,
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        Failure::Engine(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::io(format!("cannot write the output: {e}"))
        }
    }
}

/// Writes `text` and a newline to stdout; a closed pipe ends the command
/// quietly instead of panicking as `println!` does.
pub fn print(text: impl std::fmt::Display) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let codes: Vec<u8> = [
            ErrorKind::Config,
            ErrorKind::Data,
            ErrorKind::Io,
            ErrorKind::Internal,
        ]
        .into_iter()
        .map(exit_code)
        .collect();
        assert_eq!(codes, vec![2, 3, 4, 70]);
        assert_eq!(exit_code(ErrorKind::Plan), exit_code(ErrorKind::Config));
    }

    #[test]
    fn a_closed_pipe_is_not_a_failure() {
        let f = Failure::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(f, Failure::BrokenPipe));
        let f = Failure::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(f, Failure::Message(ErrorKind::Io, _)));
    }
}
