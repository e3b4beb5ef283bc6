//! Reading the warehouse model out of the YAML tree, one section at a time.
//!
//! Each reader records what is wrong and goes on with what it could read, so
//! that one run of `strata validate` lists every problem. Cross-references
//! (a layer naming a schema, a cycle between layers) are checked afterwards,
//! in `checks`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_engine::StartPosition;
use strata_schemas::parse_timestamp_micros;

use crate::diagnostic::Diagnostics;
use crate::model::{
    Checkpoint, DEFAULT_LISTEN, Input, Kafka, Layer, LayerBody, LayerKind, Serve, Source, SqlLayer,
    Storage, Tls, User, Warehouse,
};
use crate::names::check_name;
use crate::node_reader::{Located, MapReader, scalar_text};
use crate::read_schema::read_schemas;
use crate::yaml_tree::{Node, NodeValue};

const TOP_KEYS: &[&str] = &[
    "serve",
    "warehouse",
    "storage",
    "kafka",
    "checkpoint",
    "schemas",
    "layers",
];
const STORAGE_KEYS: &[&str] = &["root", "options"];
const SERVE_KEYS: &[&str] = &["listen", "users", "tls"];
const USER_KEYS: &[&str] = &["username", "password"];
const TLS_KEYS: &[&str] = &["cert", "key"];
const KAFKA_KEYS: &[&str] = &["bootstrap_servers", "properties"];
const CHECKPOINT_KEYS: &[&str] = &["interval", "retain"];
const LAYER_KEYS: &[&str] = &[
    "name",
    "kind",
    "source",
    "inputs",
    "sql",
    "checkpoint_interval",
];
const SOURCE_KEYS: &[&str] = &["topic", "topics", "format", "schema", "start", "group_id"];
const INPUT_KEYS: &[&str] = &["topic", "schema"];

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

fn base_dir(file: &Path) -> PathBuf {
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

fn read_serve(d: &mut Diagnostics, top: &MapReader<'_>, file: &Path) -> Serve {
    let mut serve = Serve {
        listen: DEFAULT_LISTEN
            .parse()
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 50051))),
        users: Vec::new(),
        tls: None,
    };
    let Some(section) = top
        .node("serve")
        .and_then(|n| MapReader::new(d, n, "serve", SERVE_KEYS))
    else {
        return serve;
    };
    if let Some(listen) = section.string(d, "listen") {
        match listen.value.parse() {
            Ok(addr) => serve.listen = addr,
            Err(_) => d.error(
                listen.pos,
                "serve.listen",
                format!("`{}` is not an ip:port address", listen.value),
                Some("write e.g. `127.0.0.1:50051`, or `0.0.0.0:50051` to accept other hosts (needs `users`)".into()),
            ),
        }
    }
    for (i, item) in section
        .seq(d, "users")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("serve.users[{i}]");
        let Some(user) = MapReader::new(d, item, &path, USER_KEYS) else {
            continue;
        };
        let name = user.required_string(d, "username", "write `username: bi`");
        let password = user.required_string(
            d,
            "password",
            "write `password: ${STRATA_BI_PASSWORD}` to take it from the environment",
        );
        if let (Some(name), Some(password)) = (name, password) {
            if password.value.is_empty() {
                d.error(
                    password.pos,
                    &format!("{path}.password"),
                    "the password is empty",
                    Some("set a password, or remove the user".into()),
                );
            }
            serve.users.push(User {
                username: name.value,
                password: password.value,
            });
        }
    }
    if let Some(tls) = section
        .node("tls")
        .and_then(|n| MapReader::new(d, n, "serve.tls", TLS_KEYS))
    {
        let mut file_of = |key: &str| {
            let value = tls.required_string(
                d,
                key,
                &format!(
                    "write `{key}: path/to/server.{}`",
                    if key == "cert" { "crt" } else { "key" }
                ),
            )?;
            let path = base_dir(file).join(&value.value);
            if !path.is_file() {
                d.error(
                    value.pos,
                    &format!("serve.tls.{key}"),
                    format!("{} does not exist", path.display()),
                    Some("paths are relative to the warehouse file; point at a PEM file".into()),
                );
            }
            Some(path)
        };
        if let (Some(cert), Some(key)) = (file_of("cert"), file_of("key")) {
            serve.tls = Some(Tls { cert, key });
        }
    }
    serve
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

fn peek_name(node: &Node) -> Option<&str> {
    let NodeValue::Map(pairs) = &node.value else {
        return None;
    };
    pairs.iter().find_map(|(k, v)| match (&k.value, &v.value) {
        (NodeValue::Str(k), NodeValue::Str(v)) if k == "name" => Some(v.as_str()),
        _ => None,
    })
}

/// A layer as far as it could be read: its name may be known even when the
/// rest is broken, and still counts for the duplicate-name check.
#[derive(Default)]
struct ReadLayer {
    name: Option<Located<String>>,
    layer: Option<Layer>,
    schema_ref: Option<Located<String>>,
}

fn read_layer(d: &mut Diagnostics, node: &Node, index_path: &str) -> ReadLayer {
    // Name the layer by its name in every diagnostic, once it has one.
    let path = match peek_name(node) {
        Some(name) => format!("layers.{name}"),
        None => index_path.to_string(),
    };
    let Some(section) = MapReader::new(d, node, &path, LAYER_KEYS) else {
        return ReadLayer::default();
    };
    let Some(name) = section.required_string(d, "name", "name the layer: `name: ods_deals`") else {
        return ReadLayer::default();
    };
    check_name(d, &name, &format!("{path}.name"));
    let (layer, schema_ref) = match read_layer_body(d, &section, &path, &name) {
        Some((layer, schema_ref)) => (Some(layer), schema_ref),
        None => (None, None),
    };
    ReadLayer {
        name: Some(name),
        layer,
        schema_ref,
    }
}

fn read_layer_body(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
    name: &Located<String>,
) -> Option<(Layer, Option<Located<String>>)> {
    let kind_text = section.required_string(d, "kind", "write `kind: ods` (or dwd, dws, ads)")?;
    let kind = match kind_text.value.to_ascii_lowercase().as_str() {
        "ods" => LayerKind::Ods,
        "dwd" => LayerKind::Dwd,
        "dws" => LayerKind::Dws,
        "ads" => LayerKind::Ads,
        other => {
            d.error(
                kind_text.pos,
                &format!("{path}.kind"),
                format!("unknown layer kind `{other}`"),
                Some("write one of: ods (raw from Kafka), dwd, dws, ads (SQL over inputs)".into()),
            );
            return None;
        }
    };
    let checkpoint_interval = section.duration(d, "checkpoint_interval").map(|l| l.value);
    let mut schema_ref = None;
    let body = if kind == LayerKind::Ods {
        for key in ["sql", "inputs"] {
            if let Some(n) = section.node(key) {
                d.error(
                    n.pos,
                    &format!("{path}.{key}"),
                    format!("an ods layer lands its source as it is and takes no `{key}`"),
                    Some("put the transform in a dwd layer with `inputs: [this layer]`".into()),
                );
            }
        }
        let Some(node) = section.node("source") else {
            section.missing(
                d,
                "source",
                "an ods layer needs `source:` with `topic:` and `schema:`",
            );
            return None;
        };
        let (source, schema) = read_source(d, node, &format!("{path}.source"))?;
        schema_ref = Some(schema);
        LayerBody::Source(source)
    } else {
        if let Some(n) = section.node("source") {
            d.error(
                n.pos,
                &format!("{path}.source"),
                format!("a {kind} layer reads `inputs:`, not `source:`"),
                Some("land the topic in an ods layer and name it under `inputs:`, or write `inputs: [{topic: t, schema: s}]`".into()),
            );
        }
        let sql = section.required_string(
            d,
            "sql",
            "write the layer's transform: `sql: SELECT ... FROM input`",
        );
        let inputs = read_inputs(d, section, path);
        LayerBody::Sql(SqlLayer {
            inputs,
            sql: sql.map(|s| s.value).unwrap_or_default(),
        })
    };
    Some((
        Layer {
            name: name.value.clone(),
            kind,
            body,
            checkpoint_interval,
        },
        schema_ref,
    ))
}

fn read_source(d: &mut Diagnostics, node: &Node, path: &str) -> Option<(Source, Located<String>)> {
    let section = MapReader::new(d, node, path, SOURCE_KEYS)?;
    let mut topics: Vec<String> = Vec::new();
    if let Some(t) = section.string(d, "topic") {
        topics.push(t.value);
    }
    if let Some(items) = section.seq(d, "topics") {
        for item in items {
            if let Some(t) = scalar_text(d, item, &format!("{path}.topics")) {
                topics.push(t.value);
            }
        }
    }
    if topics.is_empty() && section.node("topic").is_none() && section.node("topics").is_none() {
        section.missing(
            d,
            "topic",
            "name the Kafka topic: `topic: deals` (or `topics: [a, b]`)",
        );
    }
    if let Some(format) = section.string(d, "format")
        && format.value != "json"
    {
        d.error(
            format.pos,
            &format!("{path}.format"),
            format!("format `{}` is not supported yet", format.value),
            Some("write `format: json` (the default); Avro is planned".into()),
        );
    }
    let schema = section.required_string(
        d,
        "schema",
        "name the schema records are decoded with: `schema: deal_event`",
    )?;
    let start = match section.string(d, "start") {
        Some(s) => parse_start(d, &s, &format!("{path}.start")).unwrap_or(StartPosition::Earliest),
        None => StartPosition::Earliest,
    };
    let group_id = section.string(d, "group_id").map(|g| g.value);
    Some((
        Source {
            topics,
            schema: schema.value.clone(),
            start,
            group_id,
        },
        schema,
    ))
}

fn parse_start(d: &mut Diagnostics, text: &Located<String>, path: &str) -> Option<StartPosition> {
    match text.value.trim() {
        "earliest" => Some(StartPosition::Earliest),
        "latest" => Some(StartPosition::Latest),
        "group" => Some(StartPosition::Group),
        other => match parse_timestamp_micros(other) {
            Some(micros) => Some(StartPosition::Timestamp {
                millis: micros.div_euclid(1_000),
            }),
            None => {
                d.error(
                    text.pos,
                    path,
                    format!("`{other}` is not a start position"),
                    Some("write earliest, latest, group (the consumer group's committed offsets), or a time such as 2026-11-21T00:00:00Z".into()),
                );
                None
            }
        },
    }
}

fn read_inputs(d: &mut Diagnostics, section: &MapReader<'_>, path: &str) -> Vec<Input> {
    let mut inputs = Vec::new();
    let Some(items) = section.seq(d, "inputs") else {
        if section.node("inputs").is_none() {
            section.missing(
                d,
                "inputs",
                "name what the SQL reads: `inputs: [ods_deals]`",
            );
        }
        return inputs;
    };
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}.inputs[{i}]");
        if let NodeValue::Map(_) = item.value {
            let Some(m) = MapReader::new(d, item, &ipath, INPUT_KEYS) else {
                continue;
            };
            let topic = m.required_string(d, "topic", "name the topic: `topic: deals`");
            let schema =
                m.required_string(d, "schema", "name the topic's schema: `schema: deal_event`");
            if let (Some(topic), Some(schema)) = (topic, schema) {
                inputs.push(Input::Topic {
                    topic: topic.value,
                    schema,
                });
            }
        } else if let Some(name) = scalar_text(d, item, &ipath) {
            inputs.push(Input::Layer(name));
        }
    }
    if items.is_empty() {
        section.missing(
            d,
            "inputs",
            "name at least one input: `inputs: [ods_deals]`",
        );
    }
    inputs
}
