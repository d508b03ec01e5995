//! What a server process shows an orchestrator and a gRPC user besides its
//! own services: `grpc.health.v1` (NOT_SERVING while it recovers, SERVING
//! once recovered, NOT_SERVING again while it drains on SIGTERM), gRPC
//! server reflection (v1 and v1alpha, from the descriptors `minipay-proto`
//! builds), and the gate that keeps a service answering UNAVAILABLE until
//! recovery has built it.
//!
//! A server binds its port and serves health and reflection first, then
//! recovers its log in the background; only then does it open its gates,
//! report SERVING and print its `listening ADDRESS` line.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;

/// The health of one server: overall (the empty service name) and per
/// service, all moved together.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Arc<[&'static str]>,
}

impl Health {
    /// A reporter for `services` (their gRPC names), all NOT_SERVING, and
    /// the `grpc.health.v1.Health` service that answers from it.
    pub async fn starting(
        services: &[&'static str],
    ) -> (
        Health,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let health = Health {
            reporter,
            services: services.into(),
        };
        health.set(ServingStatus::NotServing).await;
        (health, server)
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in self.services.iter() {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    /// Recovered: every service takes calls.
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// Draining or stopping: a load balancer should send calls elsewhere.
    pub async fn not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }
}

/// The gRPC reflection services (v1 and v1alpha) listing the services this
/// server serves (`services`), the health service and themselves, and
/// describing them from the descriptors `minipay-proto` builds, so
/// `grpcurl … list` and `describe` work without the `.proto` files.
pub fn reflection(
    services: &[&str],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = |reflection: &str| {
        services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(minipay_proto::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH_SERVICE)
                .with_service_name(reflection),
            |builder, service| builder.with_service_name(*service),
        )
    };
    Ok((
        builder("grpc.reflection.v1.ServerReflection").build_v1()?,
        builder("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?,
    ))
}

/// The standard health service's name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// A service that exists from the moment the server binds but is built
/// only when recovery is done: until [`Gate::open`], every call is
/// answered UNAVAILABLE ("recovering"), which clients retry.
pub struct Gate<S>(Arc<OnceLock<S>>);

impl<S> Clone for Gate<S> {
    fn clone(&self) -> Gate<S> {
        Gate(Arc::clone(&self.0))
    }
}

impl<S> Default for Gate<S> {
    fn default() -> Gate<S> {
        Gate(Arc::new(OnceLock::new()))
    }
}

impl<S> Gate<S> {
    /// Lets calls through to `service` from now on (once; a second call is
    /// ignored).
    pub fn open(&self, service: S) {
        let _ = self.0.set(service);
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, Body> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    Body: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    Body::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The inner services (tonic's generated servers, maybe wrapped by
        // an interceptor) are always ready; each call readies its own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.0.get() {
            None => Box::pin(std::future::ready(Ok(tonic::Status::unavailable(
                "recovering its log; try again shortly",
            )
            .into_http()))),
            Some(service) => {
                let mut service = service.clone();
                Box::pin(async move {
                    std::future::poll_fn(|context| service.poll_ready(context)).await?;
                    let response = service.call(request).await?;
                    Ok(response.map(tonic::body::Body::new))
                })
            }
        }
    }
}

/// A hook for tests that look at a server while it recovers: with
/// `MINIPAY_HOLD_RECOVERY=<path>` set, recovery starts only once that file
/// exists (or after [`RECOVERY_HOLD_MAX`]). Unset (always, outside such
/// tests), recovery starts at once.
pub const HOLD_RECOVERY_VAR: &str = "MINIPAY_HOLD_RECOVERY";
/// The longest a held recovery waits for its file.
pub const RECOVERY_HOLD_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits as [`HOLD_RECOVERY_VAR`] says, if it is set.
pub async fn recovery_hold() {
    let Some(path) = std::env::var_os(HOLD_RECOVERY_VAR) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    tracing::warn!(path = %path.display(), "{HOLD_RECOVERY_VAR} is set: recovery waits for that file");
    let started = tokio::time::Instant::now();
    while !path.exists() && started.elapsed() < RECOVERY_HOLD_MAX {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service answering every call with an empty 200 (a stand-in for a
    /// recovered gRPC service).
    #[derive(Clone)]
    struct Answers;

    impl Service<http::Request<()>> for Answers {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut response = http::Response::new(tonic::body::Body::empty());
            response
                .headers_mut()
                .insert("answered-by", http::HeaderValue::from_static("inner"));
            std::future::ready(Ok(response))
        }
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response.headers().get("grpc-status")?.to_str().ok()
    }

    #[tokio::test]
    async fn a_gate_answers_unavailable_until_opened_then_passes_calls_on() {
        let mut gate: Gate<Answers> = Gate::default();
        let mut clone = gate.clone();
        let closed = gate.call(http::Request::new(())).await.unwrap();
        assert_eq!(
            grpc_status(&closed),
            Some("14"),
            "UNAVAILABLE while recovering"
        );
        assert!(closed.headers().get("answered-by").is_none());
        gate.open(Answers);
        // Every clone (the router holds one) sees it open.
        let open = clone.call(http::Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&open), None);
        assert_eq!(open.headers()["answered-by"], "inner");
    }
}
