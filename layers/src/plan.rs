//! From a validated warehouse to the engine's dataflow.

use std::collections::HashSet;

use strata_engine::dataflow::{
    DataflowSpec, InputFrom, LayerInput, LayerSpec, PublishSpec, SourceSpec,
};
use strata_engine::{KafkaConfig, StorageRoot};

use strata_engine::lookup::{DimensionSource, DimensionSpec};

use crate::model::{DeltaDimension, DimensionSourceModel, Input, Layer, LayerBody, Warehouse};

/// What `strata run` will start.
#[derive(Debug)]
pub struct Plan {
    /// The layers as one dataflow.
    pub dataflow: DataflowSpec,
}

/// Why a warehouse cannot be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The storage root cannot be used.
    #[error("storage: {0}")]
    Storage(#[from] strata_engine::EngineError),
    /// `--layer` named a layer the file does not have.
    #[error("no layer named `{0}` in the warehouse file")]
    UnknownLayer(String),
    /// `--layer` left out a layer a chosen one reads.
    #[error(
        "layer `{layer}` reads `{upstream}`: run `{upstream}` too (add --layer {upstream}), since layers in one process share their checkpoints"
    )]
    MissingUpstream {
        /// The chosen layer.
        layer: String,
        /// What it reads.
        upstream: String,
    },
}

/// Plans the layers of `warehouse` (all of them, or those in `only`) as one
/// dataflow. `bounded` stops it once its sources have caught up.
pub fn plan(warehouse: &Warehouse, only: &[String], bounded: bool) -> Result<Plan, PlanError> {
    for name in only {
        if warehouse.layer(name).is_none() {
            return Err(PlanError::UnknownLayer(name.clone()));
        }
    }
    let chosen: HashSet<&str> = warehouse
        .layers
        .iter()
        .filter(|l| only.is_empty() || only.contains(&l.name))
        .map(|l| l.name.as_str())
        .collect();
    let storage = warehouse.storage.open()?;
    let kafka = KafkaConfig {
        bootstrap_servers: warehouse.kafka.bootstrap_servers.clone(),
        properties: warehouse.kafka.properties.clone(),
    };
    let mut sources = Vec::new();
    let mut layers = Vec::new();
    let group = |layer: &Layer, explicit: Option<&String>| {
        explicit
            .cloned()
            .unwrap_or_else(|| format!("strata.{}.{}", warehouse.name, layer.name))
    };
    for layer in topological(warehouse) {
        if !chosen.contains(layer.name.as_str()) {
            continue;
        }
        let (inputs, sql) = match &layer.body {
            LayerBody::Source(source) => {
                // Validation guarantees the schema exists.
                let Some(schema) = warehouse.schema(&source.schema) else {
                    continue;
                };
                sources.push(SourceSpec {
                    id: layer.name.clone(),
                    layer: layer.name.clone(),
                    input: layer.name.clone(),
                    kafka: kafka.clone(),
                    group_id: group(layer, source.group_id.as_ref()),
                    topics: source.topics.clone(),
                    start: source.start,
                    schema: schema.clone(),
                    watermark: layer.watermark,
                    future_skew: layer.future_skew,
                    replay: None,
                });
                let input = LayerInput {
                    name: layer.name.clone(),
                    from: InputFrom::Source(layer.name.clone()),
                };
                (vec![input], None)
            }
            LayerBody::Sql(sql) => {
                let mut inputs = Vec::new();
                for input in &sql.inputs {
                    match input {
                        Input::Layer(name) => {
                            if !chosen.contains(name.value.as_str()) {
                                return Err(PlanError::MissingUpstream {
                                    layer: layer.name.clone(),
                                    upstream: name.value.clone(),
                                });
                            }
                            inputs.push(LayerInput {
                                name: name.value.clone(),
                                from: InputFrom::Layer(name.value.clone()),
                            });
                        }
                        Input::Topic {
                            topic,
                            schema,
                            name,
                        } => {
                            let Some(schema) = warehouse.schema(&schema.value) else {
                                continue;
                            };
                            let id = format!("{}.{}", layer.name, name.value);
                            sources.push(SourceSpec {
                                id: id.clone(),
                                layer: layer.name.clone(),
                                input: name.value.clone(),
                                kafka: kafka.clone(),
                                group_id: group(layer, None),
                                topics: vec![topic.clone()],
                                start: strata_engine::StartPosition::Earliest,
                                schema: schema.clone(),
                                watermark: layer.watermark,
                                future_skew: layer.future_skew,
                                replay: None,
                            });
                            inputs.push(LayerInput {
                                name: name.value.clone(),
                                from: InputFrom::Source(id),
                            });
                        }
                    }
                }
                (inputs, Some(sql.sql.value.clone()))
            }
        };
        let reads_layers = inputs.iter().any(|i| matches!(i.from, InputFrom::Layer(_)));
        layers.push(LayerSpec {
            name: layer.name.clone(),
            kind: layer.kind.to_string(),
            inputs,
            sql,
            filter: layer.filter.as_ref().map(|f| f.value.clone()),
            keep_rejected: layer.keep_rejected,
            publish: layer.publish.as_ref().map(|p| PublishSpec {
                kafka: kafka.clone(),
                topic: p.topic.clone(),
                delivery: p.delivery,
            }),
            side_topics: layer
                .side_topics
                .iter()
                .map(|(suffix, p)| {
                    let spec = PublishSpec {
                        kafka: kafka.clone(),
                        topic: p.topic.clone(),
                        delivery: p.delivery,
                    };
                    (suffix.clone(), spec)
                })
                .collect(),
            lookup_failure: layer.lookup_failure,
            state_ttl: layer.state_ttl,
            // On a layer reading layers, the delay adds to theirs; on a layer
            // reading topics it is applied by its sources.
            delay: if reads_layers {
                layer.watermark.delay
            } else {
                std::time::Duration::ZERO
            },
        });
    }
    let interval = warehouse
        .layers
        .iter()
        .filter(|l| chosen.contains(l.name.as_str()))
        .filter_map(|l| l.checkpoint_interval)
        .min()
        .unwrap_or(warehouse.checkpoint.interval);
    let dimensions = dimensions(warehouse, &storage)?;
    Ok(Plan {
        dataflow: DataflowSpec {
            id: warehouse.name.clone(),
            storage,
            checkpoint_interval: interval,
            checkpoint_retain: warehouse.checkpoint.retain,
            bounded,
            sources,
            layers,
            udfs: Vec::new(),
            dimensions,
            version: None,
            reset_state: Vec::new(),
        },
    })
}

/// The layers, each after the layers it reads (validation rules out cycles).
fn topological(warehouse: &Warehouse) -> Vec<&Layer> {
    let mut done: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    while order.len() < warehouse.layers.len() {
        let before = order.len();
        for layer in &warehouse.layers {
            if done.contains(layer.name.as_str()) {
                continue;
            }
            let ready = match &layer.body {
                LayerBody::Source(_) => true,
                LayerBody::Sql(sql) => sql.inputs.iter().all(|i| match i {
                    Input::Layer(n) => done.contains(n.value.as_str()),
                    Input::Topic { .. } => true,
                }),
            };
            if ready {
                done.insert(&layer.name);
                order.push(layer);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order
}

/// The engine's view of `dimensions:` (validation guarantees the schemas).
fn dimensions(
    warehouse: &Warehouse,
    storage: &StorageRoot,
) -> Result<Vec<DimensionSpec>, PlanError> {
    let mut out = Vec::new();
    for dim in &warehouse.dimensions {
        let Some(schema) = warehouse.schema(&dim.schema.value) else {
            continue;
        };
        let source = match &dim.source {
            DimensionSourceModel::Remote(source) => source.clone(),
            DimensionSourceModel::Delta {
                table,
                reload_interval,
            } => {
                let location = match table {
                    DeltaDimension::Layer(name) => {
                        let kind = warehouse
                            .layer(&name.value)
                            .map(|l| l.kind.to_string())
                            .unwrap_or_default();
                        storage.table(&kind, &name.value)?
                    }
                    DeltaDimension::Path(path) => match url::Url::parse(path) {
                        Ok(url) if url.scheme().len() > 1 => strata_engine::TableLocation {
                            url,
                            options: warehouse
                                .storage
                                .options
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        },
                        _ => {
                            let (kind, name) = match path.trim_matches('/').rsplit_once('/') {
                                Some((dir, name)) => (dir.to_string(), name.to_string()),
                                None => (".".to_string(), path.trim_matches('/').to_string()),
                            };
                            storage.table(&kind, &name)?
                        }
                    },
                };
                DimensionSource::Delta {
                    location,
                    reload_interval: *reload_interval,
                }
            }
        };
        out.push(DimensionSpec {
            name: dim.name.value.clone(),
            schema: schema.to_arrow(),
            key: dim.key.value.clone(),
            source,
            cache: dim.cache,
            timeout: dim.timeout,
        });
    }
    Ok(out)
}
