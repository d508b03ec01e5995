//! A bank server: [`node`] runs the process over a `ledger::Bank`, and
//! [`service`] is the `Bank` gRPC service.

pub mod node;
pub mod refusal;
pub mod service;
