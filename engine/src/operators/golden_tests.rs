//! Golden streaming-SQL tests: each file under `engine/golden/` holds its
//! inputs, one or more layers' SQL, the streaming plan each must get (or the
//! refusal it must get), then rows and watermarks in and the rows each
//! layer must emit, late rows included.
//!
//! `STRATA_GOLDEN=update cargo test -p strata-engine golden` rewrites the
//! expected plans and outputs from what the code does now: after a
//! deliberate change, regenerate, read the diff, commit.
//!
//! # File format
//!
//! Directives start a line; a block's body runs to the next blank line.
//! ```text
//! # a comment
//! input deals (id string, amount bigint, ts timestamp) time ts
//! layer per_minute from deals <- its SQL follows; it reads inputs and earlier layers
//! SELECT ...
//!
//! plan per_minute             <- expected plan (or: error per_minute + expected message)
//! ...
//!
//! rows deals                  <- cells separated by |; times as HH:MM:SS[.f] on 2026-01-01
//! a | 10 | 00:00:10           <- (or a full 2026-01-02T00:00:00), NULL for null
//!
//! watermark 00:01:00          <- every input's (or `watermark deals 00:01:00`)
//! checkpoint                  <- as at a barrier: updated results out (plain GROUP BY),
//!                                then every layer snapshots and restores into a fresh query
//! snapshot                    <- as at a barrier, without the restore: window state is
//!                                taken by parts, only the groups new since the last barrier,
//!                                every third barrier every part (each window's merged); the
//!                                next `checkpoint` restores from all the parts kept
//! expect per_minute           <- rows the layer emitted since its last expect (sorted)
//! window_start | window_end | n
//! 00:00:00 | 00:01:00 | 1
//!
//! expect late per_minute deals   <- late rows, with the reason as the last cell
//! ```
//! Every layer's output must be expected: a run ending with rows nobody
//! expected fails. Layers downstream of a layer get its rows and its
//! (held back) watermark as the dataflow does: rows first, then watermark.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::delta::storable::{conform, storable_schema};

#[path = "golden_state.rs"]
mod kept;
use crate::operators::layer_query::LayerQuery;
use crate::sql::planner::{PlannedQuery, StreamingPlanner, TIME_COLUMN_KEY};
use kept::KeptState;

const BASE_DATE: &str = "2026-01-01";

/// One directive of a file, with the lines of its body.
#[derive(Debug)]
struct Block {
    head: Vec<String>,
    /// Index of the first body line in the file, and the body.
    body_at: usize,
    body: Vec<String>,
}

fn parse(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let head: Vec<String> = line.split_whitespace().map(String::from).collect();
        let has_body = matches!(
            head[0].as_str(),
            "layer" | "plan" | "error" | "rows" | "expect"
        );
        i += 1;
        let body_at = i;
        let mut body = Vec::new();
        if has_body {
            while i < lines.len() && !lines[i].trim().is_empty() {
                body.push(lines[i].to_string());
                i += 1;
            }
        }
        blocks.push(Block {
            head,
            body_at,
            body,
        });
    }
    blocks
}

/// Microseconds of a time as the files write it.
fn micros(text: &str) -> i64 {
    let array = timestamps(&[text.trim()]);
    let ts = array
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .expect("a timestamp");
    assert!(!ts.is_null(0), "not a time: {text}");
    ts.value(0)
}

fn full_time(cell: &str) -> String {
    if cell.contains('T') || cell.contains(' ') {
        cell.to_string()
    } else {
        format!("{BASE_DATE}T{cell}Z")
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn timestamps(cells: &[&str]) -> ArrayRef {
    let text = StringArray::from_iter(cells.iter().map(|c| (*c != "NULL").then(|| full_time(c))));
    cast(&text, &timestamp_type()).expect("times as HH:MM:SS[.f] or RFC 3339")
}

/// `input NAME (col type, ...) [time COL]`
fn input_schema(line: &str) -> (String, SchemaRef) {
    let rest = line.trim_start_matches("input").trim();
    let (name, rest) = rest.split_once('(').expect("input NAME (col type, ...)");
    let (columns, tail) = rest.rsplit_once(')').expect("a closing parenthesis");
    let fields: Vec<Field> = columns
        .split(',')
        .map(|c| {
            let (col, ty) = c.trim().split_once(' ').expect("col type");
            let ty: strata_schemas::FieldType = ty.trim().parse().expect("a known type");
            Field::new(col.trim(), ty.to_arrow(), true)
        })
        .collect();
    let mut metadata = HashMap::new();
    if let Some(time) = tail.trim().strip_prefix("time") {
        metadata.insert(TIME_COLUMN_KEY.to_string(), time.trim().to_string());
    }
    (
        name.trim().to_string(),
        Arc::new(Schema::new_with_metadata(fields, metadata)),
    )
}

fn batch(schema: &SchemaRef, lines: &[String]) -> RecordBatch {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let cells: Vec<&str> = rows.iter().map(|r| r[i]).collect();
            if matches!(f.data_type(), DataType::Timestamp(_, _)) {
                return timestamps(&cells);
            }
            let text = StringArray::from_iter(cells.iter().map(|c| (*c != "NULL").then_some(*c)));
            cast(&text, f.data_type()).expect("a cell of the column's type")
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).expect("rows of the input's schema")
}

/// Rows as `a | b | c` lines, header first, rows sorted.
fn render(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    extra: Option<(&str, &[&str])>,
) -> Vec<String> {
    let mut header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if let Some((name, _)) = extra {
        header.push(name.to_string());
    }
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("displayable"))
            .collect();
        for row in 0..batch.num_rows() {
            let mut cells: Vec<String> = formatters
                .iter()
                .map(|f| short_time(&f.value(row).to_string()))
                .collect();
            if let Some((_, values)) = extra {
                cells.push(values[b].to_string());
            }
            rows.push(cells.join(" | "));
        }
    }
    if rows.is_empty() {
        return Vec::new();
    }
    rows.sort();
    let mut out = vec![header.join(" | ")];
    out.extend(rows);
    out
}

fn short_time(cell: &str) -> String {
    match cell.strip_prefix(&format!("{BASE_DATE}T")) {
        Some(rest) => rest.trim_end_matches('Z').to_string(),
        None => cell.to_string(),
    }
}

struct Layer {
    name: String,
    inputs: Vec<String>,
    planned: Option<(String, Vec<(String, SchemaRef)>)>,
    query: Option<LayerQuery>,
    output: Option<SchemaRef>,
    /// Watermark forwarded to layers downstream.
    forwarded: Option<i64>,
    watermark: Option<i64>,
    emitted: Vec<RecordBatch>,
    late: BTreeMap<String, (Vec<RecordBatch>, Vec<&'static str>)>,
    state: KeptState,
}

struct Run {
    planner: StreamingPlanner,
    inputs: Vec<(String, SchemaRef)>,
    input_watermarks: HashMap<String, i64>,
    layers: Vec<Layer>,
}

impl Run {
    async fn plan(
        &self,
        sql: &str,
        inputs: &[(String, SchemaRef)],
    ) -> Result<PlannedQuery, String> {
        self.planner
            .plan(sql, inputs)
            .await
            .map_err(|e| e.to_string())
    }

    fn schema_of(&self, name: &str) -> Option<SchemaRef> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .or_else(|| {
                self.layers
                    .iter()
                    .find(|l| l.name == name)
                    .and_then(|l| l.output.clone())
            })
    }

    /// Delivers `rows` of `from` to every layer reading it, and what they
    /// emit on downstream, depth first.
    async fn deliver(&mut self, from: &str, rows: RecordBatch) {
        for i in 0..self.layers.len() {
            if !self.layers[i].inputs.iter().any(|n| n == from) {
                continue;
            }
            let layer = &mut self.layers[i];
            let Some(query) = &mut layer.query else {
                continue;
            };
            let emitted = query
                .on_batch(from, rows.clone())
                .await
                .unwrap_or_else(|e| panic!("layer {}: {e}", layer.name));
            for late in emitted.late {
                let slot = layer.late.entry(late.input).or_default();
                slot.0.push(late.rows);
                slot.1.push(late.reason);
            }
            let name = layer.name.clone();
            self.emit(i, &name, emitted.rows).await;
        }
    }

    async fn emit(&mut self, i: usize, name: &str, rows: Vec<RecordBatch>) {
        for rows in rows {
            if rows.num_rows() == 0 {
                continue;
            }
            let schema = self.layers[i].output.clone().expect("a planned layer");
            let rows = conform(rows, &schema).expect("storable rows");
            self.layers[i].emitted.push(rows.clone());
            Box::pin(self.deliver(name, rows)).await;
        }
    }

    /// Recomputes every layer's watermark, upstream first.
    async fn advance(&mut self) {
        for i in 0..self.layers.len() {
            let mut candidate = Some(i64::MAX);
            for input in self.layers[i].inputs.clone() {
                let w = match self.input_watermarks.get(&input) {
                    Some(w) => Some(*w),
                    None => self
                        .layers
                        .iter()
                        .find(|l| l.name == input)
                        .and_then(|l| l.forwarded),
                };
                candidate = match (candidate, w) {
                    (Some(c), Some(w)) => Some(c.min(w)),
                    _ => None,
                };
            }
            let Some(w) = candidate else { continue };
            let layer = &mut self.layers[i];
            if layer.watermark.is_some_and(|old| old >= w) {
                continue;
            }
            layer.watermark = Some(w);
            let Some(query) = &mut layer.query else {
                continue;
            };
            let out = query.on_watermark(w).await.expect("closing windows");
            layer.forwarded = Some(query.output_watermark(w));
            let name = layer.name.clone();
            self.emit(i, &name, out).await;
        }
    }

    /// As at a barrier: updated results out, then every layer's state
    /// snapshotted; with `restart`, restored into a fresh query from what
    /// the checkpoints kept, as a new run would.
    async fn checkpoint(&mut self, restart: bool) {
        for i in 0..self.layers.len() {
            let Some(query) = &mut self.layers[i].query else {
                continue;
            };
            let updates = query.on_checkpoint().await.expect("updated results");
            let name = self.layers[i].name.clone();
            self.emit(i, &name, updates).await;
        }
        let ctx = self.planner.task_ctx().expect("a task context");
        for i in 0..self.layers.len() {
            let Some((sql, inputs)) = self.layers[i].planned.clone() else {
                continue;
            };
            let planned = self.plan(&sql, &inputs).await.expect("planned before");
            let layer = &mut self.layers[i];
            let Some(query) = &mut layer.query else {
                continue;
            };
            let state = layer.state.checkpoint(query);
            if !restart {
                continue;
            }
            layer.state = KeptState::default();
            let mut fresh = LayerQuery::new(planned, ctx.clone()).expect("a query");
            fresh.restore(state, layer.watermark).expect("restored");
            layer.query = Some(fresh);
        }
    }
}

/// Runs one file; returns the file as it should be (expected blocks
/// replaced by what happened) and the differences found.
async fn run_file(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("readable golden file");
    let blocks = parse(&text);
    let mut run = Run {
        planner: StreamingPlanner::new(vec![]),
        inputs: Vec::new(),
        input_watermarks: HashMap::new(),
        layers: Vec::new(),
    };
    let mut problems = Vec::new();
    // Replacement bodies for expected blocks, by their first line.
    let mut actual: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut plans: HashMap<String, Result<String, String>> = HashMap::new();
    for block in &blocks {
        let directive = block.head[0].as_str();
        let arg = |i: usize| block.head.get(i).cloned().unwrap_or_default();
        match directive {
            "input" => {
                let line = block.head.join(" ");
                run.inputs.push(input_schema(&line));
            }
            "layer" => {
                let name = arg(1);
                let sql = block.body.join("\n");
                let reads = block.head[2..].join(" ");
                let reads = reads
                    .strip_prefix("from")
                    .unwrap_or_else(|| panic!("layer {name} from INPUT, ..."));
                let inputs: Vec<(String, SchemaRef)> = reads
                    .split(',')
                    .map(|n| {
                        let n = n.trim();
                        let schema = run
                            .schema_of(n)
                            .unwrap_or_else(|| panic!("layer {name} reads unknown `{n}`"));
                        (n.to_string(), schema)
                    })
                    .collect();
                let planned = run.plan(&sql, &inputs).await;
                plans.insert(
                    name.clone(),
                    planned.as_ref().map(|p| p.explain()).map_err(Clone::clone),
                );
                let ctx = run.planner.task_ctx().expect("a task context");
                let (query, output) = match planned {
                    Ok(p) => {
                        let mut metadata = HashMap::new();
                        if let Some(c) = &p.output_time_column {
                            metadata.insert(TIME_COLUMN_KEY.to_string(), c.clone());
                        }
                        let output = storable_schema(&Arc::new(Schema::new_with_metadata(
                            p.output_schema.fields().clone(),
                            metadata,
                        )));
                        (
                            Some(LayerQuery::new(p, ctx).expect("a query")),
                            Some(output),
                        )
                    }
                    Err(_) => (None, None),
                };
                run.layers.push(Layer {
                    name,
                    inputs: inputs.iter().map(|(n, _)| n.clone()).collect(),
                    planned: Some((sql, inputs)),
                    query,
                    output,
                    forwarded: None,
                    watermark: None,
                    emitted: Vec::new(),
                    late: BTreeMap::new(),
                    state: KeptState::default(),
                });
            }
            "plan" | "error" => {
                let name = arg(1);
                let got = match plans.get(&name) {
                    Some(Ok(plan)) if directive == "plan" => plan.clone(),
                    Some(Err(e)) if directive == "error" => e.clone(),
                    Some(Ok(plan)) => format!("(planned, no error)\n{plan}"),
                    Some(Err(e)) => format!("(refused)\n{e}"),
                    None => format!("(no layer `{name}` above)"),
                };
                let got: Vec<String> = got.lines().map(String::from).collect();
                if got != block.body {
                    problems.push(format!(
                        "{directive} {name}: expected\n{}\ngot\n{}",
                        block.body.join("\n"),
                        got.join("\n")
                    ));
                }
                actual.push((block.body_at, block.body.len(), got));
            }
            "rows" => {
                let name = arg(1);
                let schema = run
                    .schema_of(&name)
                    .unwrap_or_else(|| panic!("rows of unknown input `{name}`"));
                run.deliver(&name, batch(&schema, &block.body)).await;
            }
            "watermark" => {
                let (inputs, at): (Vec<String>, String) = match block.head.len() {
                    2 => (run.inputs.iter().map(|(n, _)| n.clone()).collect(), arg(1)),
                    _ => (vec![arg(1)], arg(2)),
                };
                for input in inputs {
                    run.input_watermarks.insert(input, micros(&at));
                }
                run.advance().await;
            }
            "checkpoint" => run.checkpoint(true).await,
            "snapshot" => run.checkpoint(false).await,
            "expect" => {
                let got = if arg(1) == "late" {
                    let (layer, input) = (arg(2), arg(3));
                    let layer = run
                        .layers
                        .iter_mut()
                        .find(|l| l.name == layer)
                        .expect("expect late of a known layer");
                    let schema = run
                        .inputs
                        .iter()
                        .find(|(n, _)| *n == input)
                        .map(|(_, s)| s.clone())
                        .or_else(|| {
                            layer.planned.as_ref().and_then(|(_, ins)| {
                                ins.iter()
                                    .find(|(n, _)| *n == input)
                                    .map(|(_, s)| s.clone())
                            })
                        })
                        .expect("a known input");
                    let (rows, reasons) = layer.late.remove(&input).unwrap_or_default();
                    render(&schema, &rows, Some(("reason", &reasons)))
                } else {
                    let layer = run
                        .layers
                        .iter_mut()
                        .find(|l| l.name == arg(1))
                        .expect("expect of a known layer");
                    let rows = std::mem::take(&mut layer.emitted);
                    match layer.output.clone() {
                        Some(schema) => render(&schema, &rows, None),
                        None => vec!["(the layer did not plan)".to_string()],
                    }
                };
                if got != block.body {
                    problems.push(format!(
                        "{}: expected\n{}\ngot\n{}",
                        block.head.join(" "),
                        block.body.join("\n"),
                        got.join("\n")
                    ));
                }
                actual.push((block.body_at, block.body.len(), got));
            }
            other => panic!("{}: unknown directive `{other}`", path.display()),
        }
    }
    for layer in &run.layers {
        if layer.emitted.iter().any(|b| b.num_rows() > 0) {
            problems.push(format!(
                "layer {} emitted rows no `expect` covers",
                layer.name
            ));
        }
        for input in layer.late.keys() {
            problems.push(format!(
                "layer {} set late rows of {input} aside that no `expect late` covers",
                layer.name
            ));
        }
    }
    // The file with each expected block's body replaced by what happened.
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    for (at, len, body) in actual {
        out.extend(lines[i..at].iter().map(|l| l.to_string()));
        out.extend(body);
        i = at + len;
    }
    out.extend(lines[i..].iter().map(|l| l.to_string()));
    (out.join("\n") + "\n", problems)
}

fn golden_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("engine/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "golden"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn golden_streaming_sql() {
    let update = std::env::var("STRATA_GOLDEN").is_ok_and(|v| v == "update");
    let files = golden_files();
    assert!(!files.is_empty(), "no golden files under engine/golden");
    let mut failures = Vec::new();
    for path in files {
        eprintln!("golden: {}", path.display());
        let (rewritten, problems) = run_file(&path).await;
        if update {
            std::fs::write(&path, rewritten).expect("writable golden file");
        } else if !problems.is_empty() {
            failures.push(format!("{}:\n{}", path.display(), problems.join("\n\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n(after a deliberate change: STRATA_GOLDEN=update cargo test -p strata-engine golden)",
        failures.join("\n\n")
    );
}
