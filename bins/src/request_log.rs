//! A tower layer that logs every gRPC request and response: method, peer
//! address, the domain fields handlers note (txn id, amount with currency,
//! vote, user), status code and latency: one `response` line (info) when a
//! call is answered, carrying the request's fields too, like an access log;
//! with `RUST_LOG=debug` also a `request` line when it arrives.
//!
//! Handlers add fields with [`note`]; they never log by themselves. Nothing
//! secret is ever noted: session keys, passwords and keys stay out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

/// Records `value` as span field `field` (one of the fields the layer
/// declares: `txn_id`, `amount`, `legs`, `items`, `vote`, `user`, `retry`,
/// `reason`).
pub fn note(field: &'static str, value: impl std::fmt::Display) {
    tracing::Span::current().record(field, tracing::field::display(value));
}

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
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            peer = %peer_address(&request),
            user = Empty,
            txn_id = Empty,
            amount = Empty,
            legs = Empty,
            items = Empty,
            vote = Empty,
            retry = Empty,
            reason = Empty,
        );
        let started = Instant::now();
        span.in_scope(|| tracing::debug!("request"));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = future.await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(response) => {
                        let status = tonic::Status::from_header_map(response.headers());
                        let code = status.as_ref().map_or(tonic::Code::Ok, tonic::Status::code);
                        match status.filter(|status| status.code() != tonic::Code::Ok) {
                            None => tracing::info!(code = code_name(code), latency_ms, "response"),
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
