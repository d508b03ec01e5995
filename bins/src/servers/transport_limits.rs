//! The limits every server puts on its transport: connections at once,
//! concurrent streams (calls) per connection, and how long one call may
//! run. Shared by the bank and the gateway.
//!
//! - A connection past `connections_max` is accepted and closed at once
//!   (the client sees UNAVAILABLE), and counted in a warning at most once
//!   per window; the ones already open are not disturbed.
//! - A connection may carry `streams_per_connection_max` calls at once:
//!   HTTP/2 tells the client so (`SETTINGS_MAX_CONCURRENT_STREAMS`), and a
//!   call past it anyway is answered RESOURCE_EXHAUSTED at once.
//! - A call running longer than `request_timeout` is ended CANCELLED.
//! - A TLS handshake must finish within 5 s and an open connection answer
//!   HTTP/2 pings, so idle or dead sockets give their place back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// The default bound on open connections.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// The default bound on concurrent calls per connection.
pub const STREAMS_PER_CONNECTION_MAX_DEFAULT: u32 = 256;
/// The default bound on one call's duration.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// How often an open connection is pinged, and how long the peer has to
/// answer before the connection is closed (a dead peer frees its place).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Refused connections are warned about at most once per this window.
const REFUSED_WARNING_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportLimits {
    pub connections_max: usize,
    pub streams_per_connection_max: u32,
    pub request_timeout: Duration,
}

impl TransportLimits {
    /// The limits from a server's settings (defaults where unset); zero is
    /// refused, never taken to mean "no limit".
    pub fn from_settings(
        connections_max: Option<usize>,
        streams_per_connection_max: Option<u32>,
        request_timeout: Option<Duration>,
    ) -> anyhow::Result<TransportLimits> {
        let limits = TransportLimits {
            connections_max: connections_max.unwrap_or(CONNECTIONS_MAX_DEFAULT),
            streams_per_connection_max: streams_per_connection_max
                .unwrap_or(STREAMS_PER_CONNECTION_MAX_DEFAULT),
            request_timeout: request_timeout.unwrap_or(REQUEST_TIMEOUT_DEFAULT),
        };
        if limits.connections_max == 0 {
            bail!("--connections-max must be at least 1");
        }
        if limits.streams_per_connection_max == 0 {
            bail!("--streams-per-connection-max must be at least 1");
        }
        if limits.request_timeout.is_zero() {
            bail!("--request-timeout must be positive");
        }
        Ok(limits)
    }

    /// A server builder with the per-connection and per-call limits set.
    pub fn server(&self) -> Server {
        Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_EVERY))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(self.streams_per_connection_max)
            .concurrency_limit_per_connection(self.streams_per_connection_max as usize)
            .load_shed(true)
            .timeout(self.request_timeout)
    }

    /// The listener's connections, at most `connections_max` open at once.
    pub fn incoming(&self, listener: TcpListener) -> LimitedIncoming {
        LimitedIncoming {
            // Without TCP_NODELAY small gRPC frames wait on delayed ACKs
            // (40 ms stalls).
            inner: TcpIncoming::from(listener).with_nodelay(Some(true)),
            open: Arc::new(Semaphore::new(self.connections_max)),
            connections_max: self.connections_max,
            refused: 0,
            warned_at: None,
        }
    }
}

/// Accepted connections, each holding one of `connections_max` permits
/// until it closes.
pub struct LimitedIncoming {
    inner: TcpIncoming,
    open: Arc<Semaphore>,
    connections_max: usize,
    /// Connections refused since the last warning.
    refused: u64,
    warned_at: Option<Instant>,
}

impl LimitedIncoming {
    fn note_refused(&mut self) {
        self.refused += 1;
        let due = self
            .warned_at
            .is_none_or(|at| at.elapsed() >= REFUSED_WARNING_EVERY);
        if due {
            tracing::warn!(
                connections_max = self.connections_max,
                refused = self.refused,
                "connection refused: connections_max are open"
            );
            self.refused = 0;
            self.warned_at = Some(Instant::now());
        }
    }
}

impl Stream for LimitedIncoming {
    type Item = std::io::Result<LimitedConnection>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let stream = match Pin::new(&mut self.inner).poll_next(context) {
                Poll::Ready(Some(Ok(stream))) => stream,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match Arc::clone(&self.open).try_acquire_owned() {
                Ok(permit) => {
                    return Poll::Ready(Some(Ok(LimitedConnection {
                        stream,
                        _permit: permit,
                    })));
                }
                // Dropping the stream closes it.
                Err(_) => self.note_refused(),
            }
        }
    }
}

/// One accepted connection; its permit returns when it closes.
pub struct LimitedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
