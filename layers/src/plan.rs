//! From a validated warehouse to the engine's pipeline specs.

use std::collections::HashMap;

use strata_engine::ods::OdsSpec;
use strata_engine::{KafkaConfig, StorageRoot};

use crate::model::{LayerBody, Warehouse};

/// What `strata run` will start.
#[derive(Debug)]
pub struct Plan {
    /// One pipeline per ODS layer.
    pub ods: Vec<OdsSpec>,
}

/// Why a warehouse cannot be run (yet).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The storage root cannot be used.
    #[error("storage: {0}")]
    Storage(#[from] strata_engine::EngineError),
    /// A layer uses something this build cannot run.
    #[error(
        "layer `{layer}` ({kind}) is a SQL layer; this version of strata runs ods layers only (streaming SQL layers are not built yet). Remove it from the file, or run only the ods layers with `--layer NAME`"
    )]
    Unsupported {
        /// The layer.
        layer: String,
        /// Its kind.
        kind: String,
    },
    /// `--layer` named a layer the file does not have.
    #[error("no layer named `{0}` in the warehouse file")]
    UnknownLayer(String),
}

/// Plans the layers of `warehouse` (all of them, or those in `only`).
/// `bounded` makes every pipeline stop once caught up with its input.
pub fn plan(warehouse: &Warehouse, only: &[String], bounded: bool) -> Result<Plan, PlanError> {
    for name in only {
        if warehouse.layer(name).is_none() {
            return Err(PlanError::UnknownLayer(name.clone()));
        }
    }
    let storage = StorageRoot::new(
        &warehouse.storage.root,
        warehouse
            .storage
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
    )?;
    let kafka = KafkaConfig {
        bootstrap_servers: warehouse.kafka.bootstrap_servers.clone(),
        properties: warehouse.kafka.properties.clone(),
    };
    let mut ods = Vec::new();
    for layer in &warehouse.layers {
        if !only.is_empty() && !only.contains(&layer.name) {
            continue;
        }
        match &layer.body {
            LayerBody::Source(source) => {
                // Validation guarantees the schema exists.
                let Some(schema) = warehouse.schema(&source.schema) else {
                    continue;
                };
                ods.push(OdsSpec {
                    layer: layer.name.clone(),
                    kafka: kafka.clone(),
                    group_id: source
                        .group_id
                        .clone()
                        .unwrap_or_else(|| format!("strata.{}.{}", warehouse.name, layer.name)),
                    topics: source.topics.clone(),
                    start: source.start,
                    schema: schema.clone(),
                    storage: storage.clone(),
                    checkpoint_interval: layer
                        .checkpoint_interval
                        .unwrap_or(warehouse.checkpoint.interval),
                    checkpoint_retain: warehouse.checkpoint.retain,
                    bounded,
                });
            }
            LayerBody::Sql(_) => {
                return Err(PlanError::Unsupported {
                    layer: layer.name.clone(),
                    kind: layer.kind.to_string(),
                });
            }
        }
    }
    Ok(Plan { ods })
}
