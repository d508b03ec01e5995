//! The gateway server: [`node`] runs the process over a
//! `coordinator::Gateway`; [`service`] holds the `Gateway` (clients) and
//! `Decisions` (banks) gRPC services; [`bank_clients`] reaches the banks;
//! [`password_pool`] hashes passwords off the request path.

pub mod bank_clients;
pub mod node;
pub mod password_pool;
pub mod refusal;
pub mod service;
