//! The plumbing servers, clients and the harness share: mTLS configuration
//! and roles ([`tls`]), the request log layer ([`request_log`]), settings
//! ([`settings`]: durations, the wall clock), how a session key travels
//! ([`session_key`]) and the cluster setup file ([`setup`]). It knows no
//! service and no core crate.

pub mod request_log;
pub mod session_key;
pub mod settings;
pub mod setup;
pub mod tls;
pub mod trace;
