//! The server processes: a [`bank`] and the [`gateway`], each a node (its
//! configuration, recovery, serving, background loops, fail-stop) and gRPC
//! services thin over a core crate; plus what both put around themselves:
//! the [`process`] (logging, signals, WAL settings) and the
//! [`transport_limits`].

pub mod bank;
pub mod gateway;
pub mod process;
pub mod transport_limits;
