//! A tower layer that logs every gRPC request and response: method, peer
//! address, the domain fields handlers note (txn id, amount with currency,
//! vote, user), status code and latency: one `response` line (info) when a
//! call is answered, carrying the request's fields too, like an access log;
//! with `RUST_LOG=debug` also a `request` line when it arrives.
//!
//! Handlers add fields with [`note`]; they never log by themselves. Nothing
//! secret is ever noted: session keys, passwords and keys stay out.
//!
//! Refusals for load (RESOURCE_EXHAUSTED) are the exception to one line per
//! call: under a flood they come by the ten thousand a second, so at most
//! one is logged per [`REFUSALS_LOGGED_EVERY`], carrying `left_out`, how
//! many were not logged since the previous one. The log stays bounded and
//! costs the flood nothing extra.
//!
//! Health checks answered OK are logged at debug: an orchestrator probes
//! every few seconds, and a line per probe would bury the payments.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

/// Records `value` as span field `field` (one of the fields the layer
/// declares: `txn_id`, `amount`, `legs`, `items`, `vote`, `user`, `retry`,
/// `reason`, `traces`).
pub fn note(field: &'static str, value: impl std::fmt::Display) {
    tracing::Span::current().record(field, tracing::field::display(value));
}

/// The methods of the standard health service (probes, logged at debug).
const HEALTH_METHODS: &str = "/grpc.health.v1.Health/";

/// At most one refusal for load is logged per this window.
pub const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(1);

/// Lets one event through per window and counts the rest.
struct Thinning {
    window: Duration,
    /// When the last event was let through (None: never).
    last: Mutex<Option<Instant>>,
    left_out: AtomicU64,
}

impl Thinning {
    /// `Some(left_out)` if this event is to be logged.
    fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock().expect("thinning lock");
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.window) {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.left_out.swap(0, Ordering::Relaxed))
    }
}

static REFUSALS: LazyLock<Thinning> = LazyLock::new(|| Thinning {
    window: REFUSALS_LOGGED_EVERY,
    last: Mutex::new(None),
    left_out: AtomicU64::new(0),
});

#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
}

fn peer_address<B>(request: &http::Request<B>) -> String {
    let extensions = request.extensions();
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        })
        .map_or_else(|| "unknown".to_owned(), |address| address.to_string())
}

/// Counts an answered call for the metrics: by method and code, and load
/// shed (RESOURCE_EXHAUSTED) by method. Paths of methods the server does
/// not have are counted as `unknown`, so clients cannot make up series.
fn count(method: &str, code: tonic::Code) {
    let method = if code == tonic::Code::Unimplemented {
        "unknown".to_owned()
    } else {
        method.to_owned()
    };
    if code == tonic::Code::ResourceExhausted {
        metrics::counter!("minipay_requests_shed_total", "method" => method.clone()).increment(1);
    }
    metrics::counter!("minipay_requests_total", "method" => method, "code" => code_name(code))
        .increment(1);
}

/// The canonical name of a gRPC status code, as in the gRPC spec.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S, B, R> Service<http::Request<B>> for RequestLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let trace = crate::rpc::trace::of_request(&request);
        let method = request.uri().path().to_owned();
        let probe = method.starts_with(HEALTH_METHODS);
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            trace_id = %trace.trace_id(),
            peer = %peer_address(&request),
            user = Empty,
            txn_id = Empty,
            amount = Empty,
            legs = Empty,
            items = Empty,
            vote = Empty,
            retry = Empty,
            reason = Empty,
            traces = Empty,
        );
        let started = Instant::now();
        span.in_scope(|| tracing::debug!("request"));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let future = crate::rpc::trace::scope(trace, future);
        Box::pin(
            async move {
                let result = future.await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(response) => {
                        let status = tonic::Status::from_header_map(response.headers());
                        let code = status.as_ref().map_or(tonic::Code::Ok, tonic::Status::code);
                        count(&method, code);
                        match status.filter(|status| status.code() != tonic::Code::Ok) {
                            None if probe => {
                                tracing::debug!(code = code_name(code), latency_ms, "response")
                            }
                            None => tracing::info!(code = code_name(code), latency_ms, "response"),
                            Some(status) if status.code() == tonic::Code::ResourceExhausted => {
                                if let Some(left_out) = REFUSALS.admit() {
                                    tracing::warn!(
                                        code = code_name(code),
                                        error = status.message(),
                                        latency_ms,
                                        left_out,
                                        "response"
                                    );
                                }
                            }
                            Some(status) => tracing::warn!(
                                code = code_name(code),
                                error = status.message(),
                                latency_ms,
                                "response"
                            ),
                        }
                    }
                    Err(error) => tracing::warn!(%error, latency_ms, "response failed"),
                }
                result
            }
            .instrument(span),
        )
    }
}
