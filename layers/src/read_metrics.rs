//! Reading `metrics:`: where `strata run` and `strata serve` expose their
//! Prometheus metrics and health probes.
//!
//! ```yaml
//! metrics:
//!   listen: 127.0.0.1:9464     # GET /metrics, /healthz, /readyz
//!   stale_after: 30s           # /readyz fails when nothing moved for this long
//! ```
//!
//! Without the section nothing is served: a port is opened only when asked
//! for.

use std::net::SocketAddr;

use crate::diagnostic::Diagnostics;
use crate::model::Metrics;
use crate::node_reader::MapReader;

const METRICS_KEYS: &[&str] = &["listen", "stale_after"];
/// The port OpenTelemetry and Prometheus exporters conventionally use.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

pub(crate) fn read_metrics(d: &mut Diagnostics, top: &MapReader<'_>) -> Option<Metrics> {
    let section = MapReader::new(d, top.node("metrics")?, "metrics", METRICS_KEYS)?;
    let mut metrics = Metrics {
        listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        stale_after: None,
    };
    if let Some(listen) = section.string(d, "listen") {
        match listen.value.parse() {
            Ok(addr) => metrics.listen = addr,
            Err(_) => d.error(
                listen.pos,
                "metrics.listen",
                format!("`{}` is not an ip:port address", listen.value),
                Some(format!("write e.g. `{DEFAULT_METRICS_LISTEN}`")),
            ),
        }
    }
    if let Some(stale) = section.duration(d, "stale_after") {
        metrics.stale_after = Some(stale.value);
    }
    Some(metrics)
}
