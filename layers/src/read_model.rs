//! Reading the warehouse model out of the YAML tree, one section at a time.
//!
//! Each reader records what is wrong and goes on with what it could read, so
//! that one run of `strata validate` lists every problem. Cross-references
//! (a layer naming a schema, a cycle between layers) are checked afterwards,
//! in `checks`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diagnostic::Diagnostics;
use crate::model::{Checkpoint, Kafka, Storage, Warehouse};
use crate::names::check_name;
use crate::node_reader::{Located, MapReader};
use crate::read_layer::read_layer;
use crate::read_schema::read_schemas;
use crate::read_serve::read_serve;
use crate::yaml_tree::Node;

const TOP_KEYS: &[&str] = &[
    "serve",
    "warehouse",
    "storage",
    "kafka",
    "checkpoint",
    "schemas",
    "dimensions",
    "dashboard",
    "maintenance",
    "metrics",
    "layers",
];
const STORAGE_KEYS: &[&str] = &["root", "options"];
const KAFKA_KEYS: &[&str] = &["bootstrap_servers", "properties"];
const CHECKPOINT_KEYS: &[&str] = &["interval", "retain"];
/// What the reader could make of the file, with the positions that the
/// cross-reference checks need.
pub(crate) struct ReadWarehouse {
    pub(crate) warehouse: Warehouse,
    /// Where each layer's name, and each ODS layer's `schema:`, was written
    /// (parallel to `warehouse.layers`).
    pub(crate) layer_names: Vec<Located<String>>,
    /// The names of all layers, including those that failed to read (for
    /// the duplicate check).
    pub(crate) all_layer_names: Vec<Located<String>>,
    pub(crate) source_schemas: Vec<(usize, Located<String>)>,
    pub(crate) schema_names: Vec<Located<String>>,
}

pub(crate) fn read_warehouse(
    d: &mut Diagnostics,
    root: &Node,
    file: &Path,
) -> Option<ReadWarehouse> {
    let top = MapReader::new(d, root, "", TOP_KEYS)?;
    let name = top
        .required_string(d, "warehouse", "name the warehouse: `warehouse: beike`")
        .map(|n| {
            check_name(d, &n, "warehouse");
            n.value
        })
        .unwrap_or_default();
    let storage = read_storage(d, &top, file);
    let kafka = read_kafka(d, &top);
    let checkpoint = read_checkpoint(d, &top);
    let (schemas, schema_names) = read_schemas(d, &top);
    let serve = read_serve(d, &top, file);
    let dimensions = crate::read_dimensions::read_dimensions(d, &top);
    let dashboard = crate::read_dashboard::read_dashboard(d, &top);
    let maintenance = crate::read_maintenance::read_maintenance(d, &top, "");
    let metrics = crate::read_metrics::read_metrics(d, &top);
    let mut layer_names = Vec::new();
    let mut all_layer_names = Vec::new();
    let mut source_schemas = Vec::new();
    let mut layers = Vec::new();
    match top.seq(d, "layers") {
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("layers[{i}]");
                let read = read_layer(d, item, &path);
                if let Some(name) = read.name {
                    all_layer_names.push(name.clone());
                    if let Some(layer) = read.layer {
                        if let Some(schema_ref) = read.schema_ref {
                            source_schemas.push((layers.len(), schema_ref));
                        }
                        layer_names.push(name);
                        layers.push(layer);
                    }
                }
            }
        }
        None if top.node("layers").is_none() => top.missing(
            d,
            "layers",
            "add `layers:` with at least one layer, e.g. an ODS layer with `kind: ods` and `source:`",
        ),
        None => {}
    }
    Some(ReadWarehouse {
        warehouse: Warehouse {
            name,
            file: file.to_path_buf(),
            storage,
            kafka,
            checkpoint,
            schemas,
            serve,
            layers,
            dimensions,
            dashboard,
            maintenance,
            metrics,
        },
        layer_names,
        all_layer_names,
        source_schemas,
        schema_names,
    })
}

fn read_storage(d: &mut Diagnostics, top: &MapReader<'_>, file: &Path) -> Storage {
    let default_root = || file_url(&base_dir(file).join("data"));
    let Some(node) = top.node("storage") else {
        return Storage {
            root: default_root(),
            options: Default::default(),
        };
    };
    let Some(section) = MapReader::new(d, node, "storage", STORAGE_KEYS) else {
        return Storage {
            root: default_root(),
            options: Default::default(),
        };
    };
    let root = match section.string(d, "root") {
        Some(root) => resolve_root(d, &root, file).unwrap_or_else(default_root),
        None => default_root(),
    };
    Storage {
        root,
        options: section.string_map(d, "options"),
    }
}

pub(crate) fn base_dir(file: &Path) -> PathBuf {
    // `warehouse.yaml` has the parent "", which is the current directory.
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn file_url(path: &Path) -> String {
    format!("file://{}", clean_path(path).display())
}

/// Removes `.` and `..` components without touching the disk (the directory
/// may not exist yet).
fn clean_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn resolve_root(d: &mut Diagnostics, root: &Located<String>, file: &Path) -> Option<String> {
    let text = root.value.trim();
    if let Some((scheme, _)) = text.split_once("://") {
        return match scheme {
            "s3" | "s3a" => Some(text.trim_end_matches('/').to_string()),
            "file" => Some(file_url(Path::new(&text["file://".len()..]))),
            other => {
                d.error(
                    root.pos,
                    "storage.root",
                    format!("storage scheme `{other}://` is not supported"),
                    Some("use a local path (relative to this file) or `s3://bucket/prefix`".into()),
                );
                None
            }
        };
    }
    if text.is_empty() {
        d.error(
            root.pos,
            "storage.root",
            "the storage root is empty",
            Some("write a directory, e.g. `root: ./data`".into()),
        );
        return None;
    }
    Some(file_url(&base_dir(file).join(text)))
}

fn read_kafka(d: &mut Diagnostics, top: &MapReader<'_>) -> Kafka {
    let mut kafka = Kafka {
        bootstrap_servers: String::new(),
        properties: Default::default(),
    };
    let Some(node) = top.node("kafka") else {
        top.missing(
            d,
            "kafka",
            "add `kafka:` with `bootstrap_servers: host:9092` (or `${KAFKA_BOOTSTRAP:-127.0.0.1:9092}`)",
        );
        return kafka;
    };
    let Some(section) = MapReader::new(d, node, "kafka", KAFKA_KEYS) else {
        return kafka;
    };
    if let Some(servers) = section.required_string(
        d,
        "bootstrap_servers",
        "write `bootstrap_servers: host:9092[,host2:9092]`",
    ) {
        let bad = servers.value.split(',').find(|s| {
            s.trim()
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        });
        if let Some(bad) = bad {
            d.error(
                servers.pos,
                "kafka.bootstrap_servers",
                format!("`{}` is not host:port", bad.trim()),
                Some("write e.g. `127.0.0.1:9092`; separate several with commas".into()),
            );
        }
        kafka.bootstrap_servers = servers.value;
    }
    kafka.properties = section.string_map(d, "properties");
    kafka
}

fn read_checkpoint(d: &mut Diagnostics, top: &MapReader<'_>) -> Checkpoint {
    let mut checkpoint = Checkpoint {
        interval: Duration::from_secs(1),
        retain: 10,
    };
    let Some(section) = top
        .node("checkpoint")
        .and_then(|n| MapReader::new(d, n, "checkpoint", CHECKPOINT_KEYS))
    else {
        return checkpoint;
    };
    if let Some(interval) = section.duration(d, "interval") {
        checkpoint.interval = interval.value;
    }
    if let Some(retain) = section.count(d, "retain") {
        if retain == 0 {
            d.error(
                section.pos(),
                "checkpoint.retain",
                "at least one checkpoint must be kept",
                Some("write `retain: 10` (the default) or any number >= 1".into()),
            );
        }
        checkpoint.retain = retain.max(1) as usize;
    }
    checkpoint
}
