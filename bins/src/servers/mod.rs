//! The server processes: a [`bank`] and the [`gateway`], each a node (its
//! configuration, recovery, serving, background loops, fail-stop) and gRPC
//! services thin over a core crate; plus what both put around themselves:
//! the [`process`] (logging, signals, WAL settings), the
//! [`transport_limits`], and a [`crash_point`] tests can set to kill a
//! server at an exact step of its storage work.

pub mod bank;
pub mod crash_point;
pub mod gateway;
pub mod metrics;
pub mod process;
pub mod serving;
pub mod transport_limits;
