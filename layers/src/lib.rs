//! The Strata warehouse model: a YAML file -> validated layers -> pipelines.
//!
//! A warehouse file names its storage root, its Kafka cluster, its record
//! schemas and its layers (ODS, DWD, DWS, ADS). [`load`] reads and validates
//! one, reporting every problem with file, line, column, the field, and what
//! to write instead; [`plan`] turns the validated model into the engine's
//! pipeline specs.
//!
//! ```
//! let yaml = r#"
//! warehouse: demo
//! kafka:
//!   bootstrap_servers: 127.0.0.1:9092
//! schemas:
//!   deal:
//!     event_time: ts
//!     fields:
//!       - {name: id, type: string, nullable: false}
//!       - {name: ts, type: timestamp}
//! layers:
//!   - name: ods_deals
//!     kind: ods
//!     source: {topic: deals, schema: deal}
//! "#;
//! let w = strata_layers::parse_str(yaml, "demo.yaml".as_ref()).unwrap();
//! assert_eq!(w.layers[0].name, "ods_deals");
//!
//! let err = strata_layers::parse_str(&yaml.replace("schema: deal}", "schema: deals}"), "demo.yaml".as_ref())
//!     .unwrap_err();
//! let text = err.to_string();
//! assert!(text.contains("demo.yaml:14:36: layers.ods_deals.source.schema"), "{text}");
//! assert!(text.contains("did you mean `deal`?"), "{text}");
//! ```

#![warn(missing_docs)]

mod byte_size;
mod checks;
mod diagnostic;
mod duration;
mod interpolate;
mod model;
mod names;
mod node_reader;
mod plan;
mod read_dashboard;
mod read_dimensions;
mod read_layer;
mod read_maintenance;
mod read_metrics;
mod read_model;
mod read_publish;
mod read_schema;
mod read_serve;
mod yaml_tree;

use std::fmt;
use std::path::{Path, PathBuf};

pub use byte_size::parse_byte_size;
pub use diagnostic::Diagnostic;
pub use duration::parse_duration;
pub use interpolate::interpolate;
pub use model::{
    Chart, Checkpoint, DEFAULT_LISTEN, Dashboard, Input, Kafka, Layer, LayerBody, LayerKind,
    Maintenance, Metrics, Panel, Publish, Serve, ServeLimits, Source, SqlLayer, Storage, Tls, User,
    Warehouse,
};
pub use node_reader::Located;
pub use plan::{Plan, PlanError, plan};
pub use read_maintenance::min_vacuum_retention;
pub use yaml_tree::Position;

use diagnostic::Diagnostics;

/// Why a warehouse file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read warehouse file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems; all of them are listed.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Diagnostic>),
}

struct Problems<'a>(&'a [Diagnostic]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

/// Reads and validates the warehouse file at `path`.
pub fn load(path: &Path) -> Result<Warehouse, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path)
}

/// Validates warehouse YAML `text`; `path` names the file in diagnostics and
/// anchors relative storage paths.
pub fn parse_str(text: &str, path: &Path) -> Result<Warehouse, LoadError> {
    let mut d = Diagnostics::new(path.to_path_buf());
    let tree = match yaml_tree::parse(text) {
        Ok(tree) => tree,
        Err(e) => {
            d.error(
                e.pos.unwrap_or(Position { line: 1, column: 1 }),
                "(yaml)",
                format!("not valid YAML: {}", e.message),
                Some("fix the YAML syntax first; indentation is significant".into()),
            );
            return Err(LoadError::Invalid(d.into_sorted()));
        }
    };
    let read = read_model::read_warehouse(&mut d, &tree, path);
    if let Some(read) = &read {
        checks::check_references(&mut d, read);
    }
    match read {
        Some(read) if d.is_empty() => Ok(read.warehouse),
        _ => Err(LoadError::Invalid(d.into_sorted())),
    }
}

#[cfg(test)]
mod validate_tests;
