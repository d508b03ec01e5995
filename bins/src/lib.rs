//! The `minipay`, `bank` and `gateway` binaries' shared code: command-line
//! tools over the core crates. gRPC servers, TLS and configuration land here
//! with the bank and gateway issues.
//!
//! Architecture invariant: nothing here decides anything about money or
//! durability; it adapts the core crates to processes, files and the network.

pub mod wal_tools;
