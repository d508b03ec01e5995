//! A bank's accounts and its two-phase-commit participant state machine,
//! persisted in a `wal`. Filled in by the bank issue.
//!
//! Architecture invariant: no gRPC, no TLS, no async runtime here.
