//! Reading `dimensions:`: the tables lookup joins enrich rows from.
//!
//! ```yaml
//! dimensions:
//!   - name: agents
//!     schema: agent
//!     key: agent_id
//!     postgres: {url: "postgres://strata@127.0.0.1/dims", table: agents}
//!     cache: {max_rows: 100000, expire_after_write: 10m, cache_missing_keys: true}
//!     timeout: 2s
//!   - name: stores
//!     schema: store
//!     key: store_id
//!     redis: {url: "redis://127.0.0.1:6379", key_prefix: "store:", format: hash}
//!   - name: cities
//!     schema: city
//!     key: city_id
//!     delta: {path: dims/cities, reload_interval: 30s}
//! ```

use std::time::Duration;

use strata_engine::lookup::{CacheSpec, DimensionSource, RedisFormat};

use crate::diagnostic::Diagnostics;
use crate::model::{DeltaDimension, Dimension, DimensionSourceModel};
use crate::names::check_name;
use crate::node_reader::MapReader;
use crate::yaml_tree::Node;

const DIMENSION_KEYS: &[&str] = &[
    "name", "schema", "key", "postgres", "redis", "delta", "cache", "timeout",
];
const POSTGRES_KEYS: &[&str] = &["url", "table"];
const REDIS_KEYS: &[&str] = &["url", "key_prefix", "format"];
const DELTA_KEYS: &[&str] = &["layer", "path", "reload_interval"];
const CACHE_KEYS: &[&str] = &["max_rows", "expire_after_write", "cache_missing_keys"];

/// Flink's default lookup timeout is unbounded; a stream that waits forever
/// on one query is worse than a retry.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RELOAD: Duration = Duration::from_secs(10);

pub(crate) fn read_dimensions(d: &mut Diagnostics, top: &MapReader<'_>) -> Vec<Dimension> {
    let Some(items) = top.seq(d, "dimensions") else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| read_dimension(d, item, &format!("dimensions[{i}]")))
        .collect()
}

fn read_dimension(d: &mut Diagnostics, node: &Node, index_path: &str) -> Option<Dimension> {
    let section = MapReader::new(d, node, index_path, DIMENSION_KEYS)?;
    let name = section.required_string(d, "name", "name the dimension: `name: agents`")?;
    let path = format!("dimensions.{}", name.value);
    check_name(d, &name, &format!("{path}.name"));
    let schema = section.required_string(
        d,
        "schema",
        "name the schema of its rows: `schema: agent` (under `schemas:`)",
    );
    let key = section.required_string(d, "key", "name the column lookups match: `key: agent_id`");
    let timeout = section
        .duration(d, "timeout")
        .map_or(DEFAULT_TIMEOUT, |t| t.value);
    let given: Vec<&str> = ["postgres", "redis", "delta"]
        .into_iter()
        .filter(|k| section.node(k).is_some())
        .collect();
    let source = match given.as_slice() {
        [] => {
            section.missing(
                d,
                "postgres",
                "say where the rows are: `postgres: {url, table}`, `redis: {url, key_prefix}` or `delta: {path}` / `delta: {layer}`",
            );
            None
        }
        [one] => read_source(d, &section, &path, one),
        _ => {
            d.error(
                section.pos(),
                &path,
                format!(
                    "a dimension has one source; this one names {}",
                    given.join(" and ")
                ),
                Some("keep one of postgres:, redis:, delta:".into()),
            );
            None
        }
    };
    let cache = read_cache(d, &section, &path);
    if let (Some(DimensionSourceModel::Delta { .. }), Some(_)) = (&source, &cache)
        && let Some(n) = section.node("cache")
    {
        d.error(
            n.pos,
            &format!("{path}.cache"),
            "a Delta dimension is held in memory whole, so it takes no cache",
            Some("remove `cache:`; set `delta: {reload_interval: 30s}` to say how often it looks for a new version".into()),
        );
    }
    Some(Dimension {
        name,
        schema: schema?,
        key: key?,
        source: source?,
        cache,
        timeout,
    })
}

fn read_source(
    d: &mut Diagnostics,
    section: &MapReader<'_>,
    path: &str,
    kind: &str,
) -> Option<DimensionSourceModel> {
    let node = section.node(kind)?;
    let spath = format!("{path}.{kind}");
    match kind {
        "postgres" => {
            let m = MapReader::new(d, node, &spath, POSTGRES_KEYS)?;
            let url = m.required_string(
                d,
                "url",
                "write the connection URL: `url: postgres://user:${PGPASSWORD}@host:5432/db`",
            );
            let table = m.required_string(d, "table", "name the table: `table: agents`");
            Some(DimensionSourceModel::Remote(DimensionSource::Postgres {
                url: url?.value,
                table: table?.value,
            }))
        }
        "redis" => {
            let m = MapReader::new(d, node, &spath, REDIS_KEYS)?;
            let url = m.required_string(d, "url", "write the URL: `url: redis://host:6379`");
            let key_prefix = m
                .string(d, "key_prefix")
                .map(|p| p.value)
                .unwrap_or_default();
            let format = match m.string(d, "format") {
                None => RedisFormat::Hash,
                Some(f) => match f.value.as_str() {
                    "hash" => RedisFormat::Hash,
                    "json" => RedisFormat::Json,
                    other => {
                        d.error(
                            f.pos,
                            &format!("{spath}.format"),
                            format!("unknown Redis format `{other}`"),
                            Some("write `format: hash` (HSET key field value ...) or `format: json` (SET key '{...}')".into()),
                        );
                        return None;
                    }
                },
            };
            Some(DimensionSourceModel::Remote(DimensionSource::Redis {
                url: url?.value,
                key_prefix,
                format,
            }))
        }
        _ => {
            let m = MapReader::new(d, node, &spath, DELTA_KEYS)?;
            let reload_interval = m
                .duration(d, "reload_interval")
                .map_or(DEFAULT_RELOAD, |r| r.value);
            let table = match (m.string(d, "layer"), m.string(d, "path")) {
                (Some(layer), None) => DeltaDimension::Layer(layer),
                (None, Some(p)) => DeltaDimension::Path(p.value),
                _ => {
                    d.error(
                        m.pos(),
                        &spath,
                        "a Delta dimension names one table",
                        Some("write `layer: dim_agents` (a layer of this warehouse) or `path: dims/agents` (under the storage root, or a URL)".into()),
                    );
                    return None;
                }
            };
            Some(DimensionSourceModel::Delta {
                table,
                reload_interval,
            })
        }
    }
}

fn read_cache(d: &mut Diagnostics, section: &MapReader<'_>, path: &str) -> Option<CacheSpec> {
    let node = section.node("cache")?;
    let m = MapReader::new(d, node, &format!("{path}.cache"), CACHE_KEYS)?;
    Some(CacheSpec {
        max_rows: m.count(d, "max_rows").map_or(10_000, |n| n as usize),
        expire_after_write: m
            .duration(d, "expire_after_write")
            .map_or(Duration::from_secs(600), |t| t.value),
        cache_missing_keys: m.bool(d, "cache_missing_keys").unwrap_or(true),
    })
}
