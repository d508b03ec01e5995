//! The gateway core: users, sessions, the idempotent payment table and the
//! two-phase-commit coordinator with its decision log. Filled in by the
//! gateway issue.
//!
//! Architecture invariant: no gRPC, no TLS, no async runtime here.
