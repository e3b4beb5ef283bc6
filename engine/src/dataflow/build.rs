//! Building a planned dataflow: the channels between sources and layers,
//! then each layer's tables, topics, query and task, each made whole in one
//! pass (see [`DataflowPlan`] for what is decided before anything opens).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::dataflow::edge::{EdgeSender, edge};
use crate::dataflow::edge_budget::InFlightBudget;
use crate::dataflow::io::{DataflowIo, TableCommit};
use crate::dataflow::layer_plan::config;
use crate::dataflow::layer_state::LayerState;
use crate::dataflow::layer_task::{InputChannel, LateSink, LayerSinks, LayerTask};
use crate::dataflow::message::Ack;
use crate::dataflow::plan::{DataflowPlan, LayerPlan, SideRole};
use crate::dataflow::side_sink::SideSink;
use crate::dataflow::spec::InputFrom;
use crate::error::Result;
use crate::evolution::redeploy::shape_of;
use crate::kafka::publisher::{PublishCommitter, open_publisher};
use crate::operators::layer_query::LayerQuery;
use crate::sql::planner::StreamingPlanner;

/// A layer, built: its task and what the coordinator commits for it.
pub(crate) struct BuiltLayer {
    pub(crate) task: LayerTask,
    pub(crate) committers: Vec<Box<dyn TableCommit>>,
    /// The Kafka topics it publishes, each with its table's URL (where a
    /// lost epoch is published again from).
    pub(crate) publishers: Vec<(PublishCommitter, String)>,
}

/// The channels of a dataflow: the sender each source writes to, and each
/// layer's receivers and downstream senders.
pub(crate) struct Channels {
    pub(crate) sources: HashMap<String, EdgeSender>,
    inputs: HashMap<String, Vec<InputChannel>>,
    downstream: HashMap<String, Vec<EdgeSender>>,
}

impl Channels {
    /// One edge per layer input, from its source or upstream layer, each
    /// bounded so that a barrier crosses the longest chain in about half
    /// the checkpoint `interval` (see `dataflow::edge_budget`).
    pub(crate) fn new(plan: &DataflowPlan, interval: Duration) -> Self {
        let mut channels = Channels {
            sources: HashMap::new(),
            inputs: HashMap::new(),
            downstream: HashMap::new(),
        };
        let target = InFlightBudget::target_for(interval, longest_chain(plan));
        for layer in &plan.layers {
            let mut inputs = Vec::new();
            for input in &layer.inputs {
                let (tx, rx) = edge(target);
                inputs.push(InputChannel::new(&input.name, rx));
                match &input.from {
                    InputFrom::Source(id) => {
                        channels.sources.insert(id.clone(), tx);
                    }
                    InputFrom::Layer(up) => {
                        channels.downstream.entry(up.clone()).or_default().push(tx)
                    }
                }
            }
            channels.inputs.insert(layer.name().to_string(), inputs);
        }
        channels
    }
}

/// The edges on the longest path from a source to a layer.
fn longest_chain(plan: &DataflowPlan) -> usize {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    // Layers come upstream first.
    for layer in &plan.layers {
        let d = layer
            .inputs
            .iter()
            .map(|i| match &i.from {
                InputFrom::Source(_) => 1,
                InputFrom::Layer(up) => depth.get(up.as_str()).copied().unwrap_or(1) + 1,
            })
            .max()
            .unwrap_or(1);
        depth.insert(layer.name(), d);
    }
    depth.into_values().max().unwrap_or(1)
}

/// What building a layer needs besides its plan.
pub(crate) struct BuildContext<'a> {
    pub(crate) dataflow: &'a str,
    pub(crate) planner: &'a StreamingPlanner,
    pub(crate) io: &'a DataflowIo,
    pub(crate) acks: &'a mpsc::Sender<Ack>,
    /// The first epoch this run will write (publishers open their
    /// transactions for it).
    pub(crate) first_epoch: u64,
}

/// Opens `layer`'s tables and topics and makes its task, connected to its
/// channels.
pub(crate) async fn build_layer(
    layer: LayerPlan,
    channels: &mut Channels,
    cx: &BuildContext<'_>,
) -> Result<BuiltLayer> {
    let name = layer.name().to_string();
    let mut committers = Vec::new();
    let mut publishers = Vec::new();

    let main_table = cx.io.tables.open(&layer.main, &name).await?;
    let main = main_table.sink;
    let main_url = main_table.commit.url().to_string();
    committers.push(main_table.commit);
    let mut publish = None;
    if let Some(p) = &layer.main.topic {
        let (w, c) = open_publisher(p, cx.dataflow, &name, cx.first_epoch).await?;
        publish = Some(w);
        publishers.push((c, main_url));
    }

    let (mut dead_letters, mut future, mut rejected) = (None, None, None);
    let mut late = Vec::new();
    let mut late_sinks = Vec::new();
    for side in &layer.sides {
        let table = cx.io.tables.open(&side.table, &name).await?;
        let mut sink = SideSink::table(table.sink);
        if let Some(p) = &side.table.topic {
            let (w, c) = open_publisher(p, cx.dataflow, &side.table.name, cx.first_epoch).await?;
            sink.topic = Some(w);
            publishers.push((c, table.commit.url().to_string()));
        }
        committers.push(table.commit);
        match &side.role {
            SideRole::DeadLetter => dead_letters = Some(sink),
            SideRole::Future => future = Some(sink),
            SideRole::Rejected => rejected = Some(sink),
            SideRole::Late(input) => {
                late.push(sink);
                late_sinks.push(LateSink {
                    input: input.clone(),
                    sink: late.len() - 1,
                });
            }
        }
    }

    let shape = shape_of(&layer);
    let spec = &layer.planned.spec;
    let query = match layer.planned.query {
        Some(p) => {
            let ctx = cx
                .planner
                .task_ctx()
                .map_err(|e| config(spec, e.to_string()))?;
            Some(LayerQuery::new(p, ctx).map_err(|e| config(spec, e.to_string()))?)
        }
        None => None,
    };
    let task = LayerTask {
        inputs: channels.inputs.remove(&name).unwrap_or_default(),
        downstream: channels.downstream.remove(&name).unwrap_or_default(),
        query,
        output_schema: layer.main.schema.clone(),
        filter: layer.planned.filter,
        late: late_sinks,
        delay_us: spec.delay.as_micros() as i64,
        watermark: None,
        sinks: LayerSinks {
            main,
            dead_letters,
            future,
            late,
            rejected,
            publish,
        },
        store: cx.io.checkpoints.clone(),
        acks: cx.acks.clone(),
        sources: Vec::new(),
        rows_in_epoch: 0,
        received_in_epoch: 0,
        shape,
        name,
        state: LayerState::default(),
    };
    Ok(BuiltLayer {
        task,
        committers,
        publishers,
    })
}
