//! Problems found in a warehouse file, each pointing at a line and column.

use std::fmt;
use std::path::PathBuf;

use crate::yaml_tree::Position;

/// One problem in a warehouse file: where, which field, what is wrong, and
/// what to write instead.
///
/// Displays as `file:line:column: field: message`, then `  help: ...`, the
/// shape compilers use, so editors and terminals link to the spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The warehouse file.
    pub file: PathBuf,
    /// Where in it.
    pub pos: Position,
    /// The field's path, e.g. `layers[1].source.topic`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.column,
            self.field,
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while a warehouse file is read, so that all of them
/// are reported at once.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    file: PathBuf,
    found: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn new(file: PathBuf) -> Self {
        Diagnostics {
            file,
            found: Vec::new(),
        }
    }

    /// Records a problem at `pos` in `field`.
    pub(crate) fn error(
        &mut self,
        pos: Position,
        field: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            pos,
            field: field.to_string(),
            message: message.into(),
            help,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems, in file order.
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|d| (d.pos.line, d.pos.column));
        self.found
    }
}
