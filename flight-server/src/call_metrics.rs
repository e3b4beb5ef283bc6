//! Every Flight SQL call, reported to whoever watches: its method, gRPC
//! code and latency, and how many run at once.
//!
//! The server depends on nothing in the engine, so it only defines the
//! [`CallObserver`] hook; the `strata` binary plugs its metrics registry
//! into it once per process ([`observe_calls`]). The layer wraps the whole
//! gRPC service, so every method is counted the same way. A call ends when
//! its response body does: its code is the `grpc-status` of the trailers
//! (an error in the middle of a result stream, after its first batches, is
//! only there), or of the headers for calls that fail before streaming
//! (bad SQL, unknown table, bad credentials); a body dropped before its end
//! (the client went away) counts as `CANCELLED`. Latency and the active
//! count therefore cover the whole stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
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
    R: Body,
{
    type Response = http::Response<ObservedBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(observer) = OBSERVER.get().cloned() else {
            let call = self.inner.call(request);
            return Box::pin(async move {
                call.await
                    .map(|response| response.map(|body| ObservedBody::new(body, None)))
            });
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
            let mut call_end = CallEnd {
                observer,
                method,
                started,
                code: tonic::Code::Ok,
            };
            match call.await {
                Ok(response) => {
                    if let Some(code) = grpc_status(response.headers()) {
                        call_end.code = code;
                    }
                    Ok(response.map(|body| ObservedBody::new(body, Some(call_end))))
                }
                Err(e) => {
                    call_end.finish(tonic::Code::Unknown);
                    Err(e)
                }
            }
        })
    }
}

/// The `grpc-status` of response headers or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from)
}

/// What is reported when a call's response ends.
struct CallEnd {
    observer: Arc<dyn CallObserver>,
    method: String,
    started: Instant,
    /// The code so far (from the headers; `OK` until told otherwise).
    code: tonic::Code,
}

impl CallEnd {
    fn finish(self, code: tonic::Code) {
        self.observer
            .finished(&self.method, code, self.started.elapsed());
    }
}

/// A response body that reports its call when it ends.
pub(crate) struct ObservedBody<B: Body> {
    inner: Pin<Box<B>>,
    end: Option<CallEnd>,
}

impl<B: Body> ObservedBody<B> {
    fn new(inner: B, end: Option<CallEnd>) -> Self {
        ObservedBody {
            inner: Box::pin(inner),
            end,
        }
    }

    fn finish(&mut self, code: Option<tonic::Code>) {
        if let Some(end) = self.end.take() {
            let code = code.unwrap_or(end.code);
            end.finish(code);
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Some(tonic::Code::Unknown)),
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // An empty body (a call that failed before streaming: its code is
        // in the headers) is dropped unpolled; any other body dropped
        // before its end was left by the client mid-stream.
        let code = (!self.inner.is_end_stream()).then_some(tonic::Code::Cancelled);
        self.finish(code);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tonic::codegen::Bytes;

    use super::*;

    /// Records every finished call.
    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, tonic::Code)>>);

    impl CallObserver for Seen {
        fn started(&self, _method: &str) {}
        fn finished(&self, method: &str, code: tonic::Code, _elapsed: Duration) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((method.to_string(), code));
            }
        }
    }

    /// A streamed response: its frames, in order.
    struct Frames(Vec<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(if self.0.is_empty() {
                None
            } else {
                Some(Ok(self.0.remove(0)))
            })
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn trailers(code: i32) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", http::HeaderValue::from(code));
        Frame::trailers(map)
    }

    async fn drain(mut body: ObservedBody<Frames>) {
        while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .is_some()
        {}
    }

    #[tokio::test]
    async fn a_call_counts_with_the_code_its_stream_ends_with() {
        let seen = Arc::new(Seen::default());
        let end = |method: &str| CallEnd {
            observer: seen.clone(),
            method: method.to_string(),
            started: Instant::now(),
            code: tonic::Code::Ok,
        };
        let batch = || Frame::data(Bytes::from_static(b"batch"));
        // Batches, then an error in the trailers (RESOURCE_EXHAUSTED = 8).
        drain(ObservedBody::new(
            Frames(vec![batch(), batch(), trailers(8)]),
            Some(end("DoGet")),
        ))
        .await;
        drain(ObservedBody::new(
            Frames(vec![batch(), trailers(0)]),
            Some(end("DoGet")),
        ))
        .await;
        // Failed before streaming: the code came with the headers, and
        // the empty body is dropped unpolled.
        let mut refused = end("GetFlightInfo");
        refused.code = tonic::Code::InvalidArgument;
        drop(ObservedBody::new(Frames(vec![]), Some(refused)));
        // The client left after the first batch.
        let mut left = ObservedBody::new(Frames(vec![batch(), trailers(0)]), Some(end("DoGet")));
        let _ = std::future::poll_fn(|cx| Pin::new(&mut left).poll_frame(cx)).await;
        drop(left);
        let seen = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            vec![
                ("DoGet".to_string(), tonic::Code::ResourceExhausted),
                ("DoGet".to_string(), tonic::Code::Ok),
                ("GetFlightInfo".to_string(), tonic::Code::InvalidArgument),
                ("DoGet".to_string(), tonic::Code::Cancelled),
            ]
        );
    }
}
