//! Gathering what [`super::compare()`] compares, and the check `strata run`
//! makes with it before it opens anything: the newest checkpoint's layers
//! (their recorded shapes), the tables' schemas as the storage root holds
//! them, and the file's layers planned. Reads only: a refused deployment
//! leaves the storage root byte for byte as it was.

use arrow::datatypes::SchemaRef;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::{DeltaTableBuilder, DeltaTableError};

use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::plan::{DataflowPlan, LayerPlan};
use crate::dataflow::spec::DataflowSpec;
use crate::error::{EngineError, Result};
use crate::evolution::compare::{
    DeployedLayer, LayerPlanEntry, LayerShape, ProposedLayer, TableSchemas, Verdict, compare,
    compare_layer,
};
use crate::evolution::layout::StateLayout;
use crate::sql::planner::StreamingPlanner;
use crate::storage::TableLocation;

/// A warehouse file compared with its storage root.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The newest checkpoint's epoch, if any.
    pub epoch: Option<u64>,
    /// The version (sha256) that checkpoint names.
    pub version: Option<String>,
    /// Per layer: what deploying the file does.
    pub layers: Vec<LayerPlanEntry>,
}

impl Inspection {
    /// Whether any layer refuses the deployment.
    pub fn incompatible(&self) -> Vec<&LayerPlanEntry> {
        self.layers
            .iter()
            .filter(|l| l.verdict == Verdict::Incompatible)
            .collect()
    }
}

/// The shape of a planned layer: its definition and state layout.
pub fn shape_of(layer: &LayerPlan) -> LayerShape {
    let spec = &layer.planned.spec;
    let inputs = layer
        .planned
        .inputs
        .iter()
        .map(|(name, schema)| format!("{name}: {:?}", schema.fields()))
        .collect::<Vec<_>>()
        .join("\n");
    let state = layer
        .planned
        .query
        .as_ref()
        .and_then(|q| StateLayout::of(&q.program, spec.sql.as_deref().unwrap_or(""), &inputs));
    LayerShape::new(spec.sql.as_deref(), spec.filter.as_deref(), state)
}

/// The layers a manifest ran, as [`compare`] reads them; `reset` layers'
/// state is dropped (`--reset-state`), so none is compared.
pub fn deployed_layers(manifest: &Manifest, reset: &[String]) -> Vec<DeployedLayer> {
    manifest
        .layers
        .iter()
        .map(|l| {
            let reset = reset.contains(&l.name);
            DeployedLayer {
                name: l.name.clone(),
                shape: l.shape.clone().map(|s| LayerShape {
                    definition: s.definition,
                    state: if reset { None } else { s.state },
                }),
                has_state: l.state.is_some() && !reset,
            }
        })
        .collect()
}

/// Compares `spec`'s file (named `file` in the choices) with what its
/// storage root holds: the newest checkpoint and the tables. Reads only.
/// Layers in `reset` are compared as if their state had been dropped.
pub async fn inspect(spec: &DataflowSpec, file: &str, reset: &[String]) -> Result<Inspection> {
    let planner = StreamingPlanner::new(spec.udfs.clone());
    let plan = DataflowPlan::new(spec, &planner).await?;
    let store = CheckpointStore::open(&spec.storage, &spec.id)?;
    let manifest = store.latest().await?;
    let deployed = manifest
        .as_ref()
        .map(|m| deployed_layers(m, reset))
        .unwrap_or_default();
    let mut proposed = Vec::with_capacity(plan.layers.len());
    for layer in &plan.layers {
        let mut tables = Vec::new();
        for table in std::iter::once(&layer.main).chain(layer.sides.iter().map(|s| &s.table)) {
            tables.push(TableSchemas {
                table: table.name.clone(),
                existing: existing_schema(&table.location).await?,
                wanted: kernel_schema(&table.schema, &table.name)?,
            });
        }
        proposed.push(ProposedLayer {
            name: layer.name().to_string(),
            shape: shape_of(layer),
            tables,
        });
    }
    let mut layers = compare(&deployed, &proposed, file);
    for entry in layers.iter_mut().filter(|e| reset.contains(&e.layer)) {
        entry.changes.insert(
            0,
            "state reset (--reset-state): dropped, and rebuilt by replaying the layer's inputs from --from".into(),
        );
    }
    Ok(Inspection {
        epoch: manifest.as_ref().map(|m| m.epoch),
        version: manifest.and_then(|m| m.version),
        layers,
    })
}

/// Refuses a run whose layers cannot take their checkpointed state, before
/// anything is opened (the tables' schemas are checked as they open).
pub fn check_state(plan: &DataflowPlan, manifest: &Manifest, reset: &[String]) -> Result<()> {
    let deployed = deployed_layers(manifest, reset);
    let mut refused = Vec::new();
    for layer in &plan.layers {
        let old = deployed.iter().find(|d| d.name == layer.name());
        let proposed = ProposedLayer {
            name: layer.name().to_string(),
            shape: shape_of(layer),
            tables: Vec::new(),
        };
        let entry = compare_layer(old, &proposed, true, "FILE");
        if entry.verdict == Verdict::Incompatible {
            refused.push(refusal(&entry));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(EngineError::Pipeline {
        pipeline: plan.id.clone(),
        reason: format!(
            "the new warehouse file cannot take over the checkpointed state; nothing was changed.\n{}",
            refused.join("\n")
        ),
    })
}

/// An incompatible layer's problems and choices, as a refusal says them.
pub fn refusal(entry: &LayerPlanEntry) -> String {
    let mut text = format!("layer `{}`: {}", entry.layer, entry.problems.join("; "));
    if !entry.choices.is_empty() {
        text.push_str("\n  choices:");
        for choice in &entry.choices {
            text.push_str("\n  - ");
            text.push_str(choice);
        }
    }
    text
}

fn kernel_schema(schema: &SchemaRef, table: &str) -> Result<StructType> {
    schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| EngineError::delta(table, "converting the schema")(e.into()))
}

/// The schema of the table at `location`, if there is one (nothing is
/// created: a missing directory is no table).
async fn existing_schema(location: &TableLocation) -> Result<Option<StructType>> {
    let url = location.url.to_string();
    if location.url.scheme() == "file"
        && let Ok(dir) = location.url.to_file_path()
        && !dir.join("_delta_log").is_dir()
    {
        return Ok(None);
    }
    let mut table = DeltaTableBuilder::from_url(location.url.clone())
        .map_err(EngineError::delta(&url, "resolving the table location"))?
        .with_storage_options(location.options.clone())
        .build()
        .map_err(EngineError::delta(&url, "opening the table"))?;
    match table.load().await {
        Ok(()) => Ok(Some(
            table
                .snapshot()
                .map_err(EngineError::delta(&url, "reading the table state"))?
                .schema()
                .as_ref()
                .clone(),
        )),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(EngineError::delta(&url, "loading the table")(e)),
    }
}
