//! The `minipay`, `bank` and `gateway` binaries' code, a room per role:
//!
//! - [`servers`]: the bank and gateway processes, their gRPC services and
//!   what both put on their transport;
//! - [`client`]: the client commands, the profile and the offline queue;
//! - [`harness`]: real-process clusters, chaos, the load generator, the
//!   demo, fuzz entry points, and the simulation's command line (the
//!   simulation itself is the `minipay-simulation` crate: no tonic, no tokio);
//! - [`tools`]: WAL inspection, repair and benchmarks; certificates;
//! - [`rpc`]: the plumbing the rooms share: mTLS, the request log, settings
//!   (durations, the wall clock) and the cluster setup file.
//!
//! Architecture invariant: nothing here decides anything about money or
//! durability; it decodes, calls a core crate, and encodes. A room uses
//! another only through what that room exports.

pub mod client;
pub mod harness;
pub mod rpc;
pub mod servers;
pub mod tools;
