//! Every Flight SQL call, reported to whoever watches: its method, gRPC
//! code and latency, and how many run at once.
//!
//! The server depends on nothing in the engine, so it only defines the
//! [`CallObserver`] hook; the `strata` binary plugs its metrics registry
//! into it once per process ([`observe_calls`]). The layer wraps the whole
//! gRPC service, so every method is counted the same way. The code is read
//! from the response headers, where tonic puts it for calls that fail
//! before streaming (bad SQL, unknown table, bad credentials); an error in
//! the middle of a result stream is in its trailers and counts as `OK`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::Service;
use tonic::codegen::http;

/// Told about every call.
pub trait CallObserver: Send + Sync {
    /// A call of `method` (e.g. `GetFlightInfo`) started.
    fn started(&self, method: &str);
    /// It ended with gRPC `code` after `elapsed`.
    fn finished(&self, method: &str, code: tonic::Code, elapsed: Duration);
}

static OBSERVER: OnceLock<Arc<dyn CallObserver>> = OnceLock::new();

/// Reports every later Flight SQL call of the process to `observer` (the
/// first call wins; returns false if one was already set).
pub fn observe_calls(observer: Arc<dyn CallObserver>) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// The layer `start` puts around the service.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallsLayer;

impl<S> tower_layer::Layer<S> for CallsLayer {
    type Service = Calls<S>;
    fn layer(&self, inner: S) -> Calls<S> {
        Calls { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Calls<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Calls<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(observer) = OBSERVER.get().cloned() else {
            return Box::pin(self.inner.call(request));
        };
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("unknown")
            .to_string();
        observer.started(&method);
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                Err(_) => tonic::Code::Unknown,
            };
            observer.finished(&method, code, started.elapsed());
            result
        })
    }
}
