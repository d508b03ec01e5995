//! The `minipay`, `bank` and `gateway` binaries' shared code: thin adapters
//! from the core crates to processes, files, TLS and gRPC.
//!
//! Architecture invariant: nothing here decides anything about money or
//! durability; it decodes, calls a core crate, and encodes.

pub mod bank_clients;
pub mod bank_node;
pub mod bank_service;
pub mod certs;
pub mod chaos;
pub mod client;
pub mod client_queue;
pub mod cluster;
pub mod demo;
pub mod fuzzing;
pub mod gateway_node;
pub mod gateway_service;
pub mod invariants;
pub mod load_generator;
pub mod password_pool;
pub mod process;
pub mod request_log;
pub mod setup;
pub mod simulation;
pub mod tls;
pub mod transport_limits;
pub mod wal_tools;
