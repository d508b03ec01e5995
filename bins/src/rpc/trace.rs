//! Trace ids, so that `grep` on one id shows a payment's whole path: the
//! gateway's call, its phase 1 and phase 2, and each bank's part.
//!
//! The gateway takes a W3C `traceparent` (`00-<32 hex trace id>-<16 hex
//! parent id>-<2 hex flags>`) from a client's metadata, or makes one up, and
//! logs its trace id on every line of the call (the request span's
//! `trace_id` field). Work done for the call, in the call's task or in the
//! task it spawns, sees it through [`current`]. Each call to a bank carries
//! a child `traceparent`: in metadata for a single call, and per item for a
//! batch (a batch carries many payments; its metadata names its first
//! item's); the bank logs the trace ids on its lines.

use std::future::Future;

/// One W3C trace context: the trace id, this hop's span id, the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// The metadata key (lower case, as HTTP/2 carries it).
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Lower-case hex of exactly `N` bytes.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    {
        return None;
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(bytes)
}

impl TraceContext {
    /// Parses a `traceparent` of version 00; `None` for anything else
    /// (another version, upper case, all-zero ids), as the W3C rules say a
    /// receiver then starts a new trace.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id = unhex::<16>(trace)?;
        let span_id = unhex::<8>(span)?;
        let [flags] = unhex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace (random ids, sampled flag set).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: nonzero(rand::random()),
            span_id: nonzero(rand::random()),
            flags: 1,
        }
    }

    /// The context of a call made on this one's behalf: same trace, a new
    /// span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero(rand::random()),
            ..*self
        }
    }

    /// The 32 hex digits that name the trace (what the logs carry).
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// As a `traceparent` header value.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

/// Random ids must not be all zero (the W3C spec calls that invalid).
fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
    if bytes == [0; N] {
        bytes[N - 1] = 1;
    }
    bytes
}

/// The context of the call this task works for, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// The `traceparent` for a call made now on the current call's behalf
/// (empty outside any call, as proto fields default).
pub fn child_header() -> String {
    current().map_or_else(String::new, |context| context.child().header())
}

/// Runs `future` with `context` as [`current`].
pub fn scope<F: Future>(context: TraceContext, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(context, future)
}

/// The trace context a request carries in its `traceparent` header, or a
/// new one.
pub fn of_request<B>(request: &http::Request<B>) -> TraceContext {
    request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::new_root)
}

/// Trace ids of the `traceparent`s in `headers` (a batch's items), joined
/// with commas; unparsable or empty ones are left out.
pub fn trace_ids<'a>(headers: impl Iterator<Item = &'a str>) -> String {
    headers
        .filter_map(TraceContext::parse)
        .map(|context| context.trace_id())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_w3c_example_parses_and_prints_back() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).expect("valid");
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.header(), header);
        let child = context.child();
        assert_eq!(child.trace_id(), context.trace_id());
        assert_ne!(child.header(), header);
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        let made = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&made.header()), Some(made));
    }

    #[tokio::test]
    async fn the_current_context_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        assert_eq!(child_header(), "");
        let context = TraceContext::new_root();
        let seen = scope(context, async { current() }).await;
        assert_eq!(seen, Some(context));
        assert_eq!(current(), None);
    }
}
