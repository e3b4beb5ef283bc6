//! Flight SQL calls counted in the process's metrics: the server's
//! [`CallObserver`] hook, fed into the engine's registry.

use std::sync::Arc;
use std::time::Duration;

use strata_engine::Metrics;
use strata_flight_server::{CallObserver, observe_calls};

struct FlightMetrics(Metrics);

/// `InvalidArgument` -> `INVALID_ARGUMENT`, as gRPC spells its codes.
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl CallObserver for FlightMetrics {
    fn started(&self, _method: &str) {
        self.0.families().queries_active.inc();
    }

    fn finished(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let f = self.0.families();
        f.queries_active.dec();
        let outcome = if code == tonic::Code::Ok {
            "ok"
        } else {
            "error"
        };
        f.queries
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("outcome", outcome.to_string()),
                ("code", code_name(code)),
            ])
            .inc();
        f.query_duration
            .get_or_create(&vec![("method", method.to_string())])
            .observe(elapsed.as_secs_f64());
    }
}

/// Counts this process's Flight SQL calls in `metrics`.
pub fn observe(metrics: &Metrics) {
    observe_calls(Arc::new(FlightMetrics(metrics.clone())));
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_spelled_as_grpc_does() {
        assert_eq!(
            super::code_name(tonic::Code::InvalidArgument),
            "INVALID_ARGUMENT"
        );
        assert_eq!(super::code_name(tonic::Code::Ok), "OK");
    }
}
