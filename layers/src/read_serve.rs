//! Reading `serve:`: where Flight SQL listens, who may connect, TLS, the
//! key statement handles are signed with, and the limits that keep one
//! client's queries from stopping the server or starving the pipelines.

use std::net::SocketAddr;
use std::path::Path;

use crate::diagnostic::Diagnostics;
use crate::model::{DEFAULT_LISTEN, Serve, ServeLimits, Tls, User};
use crate::node_reader::MapReader;
use crate::read_model::base_dir;

const SERVE_KEYS: &[&str] = &[
    "listen",
    "users",
    "tls",
    "handle_key",
    "string_view",
    "limits",
];
const USER_KEYS: &[&str] = &["username", "password"];
const TLS_KEYS: &[&str] = &["cert", "key"];
const LIMIT_KEYS: &[&str] = &[
    "query_threads",
    "concurrent_queries",
    "queued_queries",
    "queue_timeout",
    "query_timeout",
    "query_memory",
    "memory",
    "spill",
    "generated_rows",
    "expression_depth",
    "sql_bytes",
    "parameter_bytes",
    "prepared_per_user",
    "prepared_ttl",
];

/// The deepest expression the query threads' stacks are sized for.
pub const MAX_EXPRESSION_DEPTH: usize = 10_000;
/// A statement handle carries the SQL and its bound parameters, and gRPC
/// clients accept messages up to 4 MiB: both must fit with room to spare.
const HANDLE_BUDGET: u64 = 3 << 20;
/// Shortest accepted `handle_key` (256 bits of hex).
const MIN_HANDLE_KEY: usize = 32;

pub(crate) fn read_serve(d: &mut Diagnostics, top: &MapReader<'_>, file: &Path) -> Serve {
    let mut serve = Serve {
        listen: DEFAULT_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
        users: Vec::new(),
        tls: None,
        handle_key: None,
        string_view: false,
        limits: ServeLimits::default(),
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
    serve.users = read_users(d, &section);
    serve.tls = read_tls(d, &section, file);
    if let Some(key) = section.string(d, "handle_key") {
        if key.value.len() < MIN_HANDLE_KEY {
            d.error(
                key.pos,
                "serve.handle_key",
                format!(
                    "the handle key has {} characters; at least {MIN_HANDLE_KEY} are needed",
                    key.value.len()
                ),
                Some("generate one with `openssl rand -hex 32` and write `handle_key: ${STRATA_HANDLE_KEY}`".into()),
            );
        }
        serve.handle_key = Some(key.value);
    }
    if let Some(view) = section.bool(d, "string_view") {
        serve.string_view = view;
    }
    if let Some(node) = section.node("limits")
        && let Some(limits) = MapReader::new(d, node, "serve.limits", LIMIT_KEYS)
    {
        serve.limits = read_limits(d, &limits);
    }
    serve
}

fn read_users(d: &mut Diagnostics, section: &MapReader<'_>) -> Vec<User> {
    let mut users = Vec::new();
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
            users.push(User {
                username: name.value,
                password: password.value,
            });
        }
    }
    users
}

fn read_tls(d: &mut Diagnostics, section: &MapReader<'_>, file: &Path) -> Option<Tls> {
    let tls = section
        .node("tls")
        .and_then(|n| MapReader::new(d, n, "serve.tls", TLS_KEYS))?;
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
    match (file_of("cert"), file_of("key")) {
        (Some(cert), Some(key)) => Some(Tls { cert, key }),
        _ => None,
    }
}

fn read_limits(d: &mut Diagnostics, section: &MapReader<'_>) -> ServeLimits {
    let mut limits = ServeLimits::default();
    let at_least = |d: &mut Diagnostics, key: &str, min: u64, max: u64| -> Option<u64> {
        let n = section.count(d, key)?;
        if n < min || n > max {
            let pos = section.node(key).map_or(section.pos(), |n| n.pos);
            d.error(
                pos,
                &section.path_of(key),
                format!("{key} is {n}; it must be between {min} and {max}"),
                Some(format!("write e.g. `{key}: {}`", min.max(1))),
            );
            return None;
        }
        Some(n)
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    if let Some(n) = at_least(d, "query_threads", 1, 64 * cores) {
        limits.query_threads = n as usize;
    }
    if let Some(n) = at_least(d, "concurrent_queries", 1, 10_000) {
        limits.concurrent_queries = n as usize;
    }
    if let Some(n) = at_least(d, "queued_queries", 0, 1_000_000) {
        limits.queued_queries = n as usize;
    }
    if let Some(n) = at_least(d, "generated_rows", 1, u64::MAX) {
        limits.generated_rows = n;
    }
    if let Some(n) = at_least(d, "expression_depth", 8, MAX_EXPRESSION_DEPTH as u64) {
        limits.expression_depth = n as usize;
    }
    if let Some(n) = at_least(d, "prepared_per_user", 1, 1_000_000) {
        limits.prepared_per_user = n as usize;
    }
    for (key, slot) in [
        ("queue_timeout", &mut limits.queue_timeout),
        ("query_timeout", &mut limits.query_timeout),
        ("prepared_ttl", &mut limits.prepared_ttl),
    ] {
        if let Some(v) = section.duration(d, key) {
            *slot = v.value;
        }
    }
    let query_memory = section.byte_size(d, "query_memory");
    let memory = section.byte_size(d, "memory");
    let sql_bytes = section.byte_size(d, "sql_bytes");
    let parameter_bytes = section.byte_size(d, "parameter_bytes");
    for (key, value, slot) in [
        ("query_memory", &query_memory, &mut limits.query_memory),
        ("memory", &memory, &mut limits.memory),
        ("sql_bytes", &sql_bytes, &mut limits.sql_bytes),
        (
            "parameter_bytes",
            &parameter_bytes,
            &mut limits.parameter_bytes,
        ),
    ] {
        if let Some(v) = value {
            if v.value == 0 {
                d.error(
                    v.pos,
                    &section.path_of(key),
                    format!("{key} is 0"),
                    Some(format!("write a size, e.g. `{key}: 256MiB`")),
                );
            } else {
                *slot = v.value;
            }
        }
    }
    if let Some(v) = section.byte_size(d, "spill") {
        limits.spill = v.value;
    }
    if limits.query_memory > limits.memory {
        let pos = query_memory
            .as_ref()
            .or(memory.as_ref())
            .map_or(section.pos(), |v| v.pos);
        d.error(
            pos,
            "serve.limits.query_memory",
            format!(
                "one query may use {} but all queries together only {}",
                mib(limits.query_memory),
                mib(limits.memory)
            ),
            Some("make `query_memory` at most `memory`".into()),
        );
    }
    if limits.sql_bytes + limits.parameter_bytes > HANDLE_BUDGET {
        let pos = sql_bytes
            .as_ref()
            .or(parameter_bytes.as_ref())
            .map_or(section.pos(), |v| v.pos);
        d.error(
            pos,
            "serve.limits.sql_bytes",
            format!(
                "sql_bytes + parameter_bytes is {}; a statement handle carries both and must fit a gRPC message",
                mib(limits.sql_bytes + limits.parameter_bytes)
            ),
            Some(format!(
                "keep the two together at most {}",
                mib(HANDLE_BUDGET)
            )),
        );
    }
    limits
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
