//! The gateway core: users, sessions, the idempotent payment table and the
//! two-phase-commit coordinator with its decision log (`docs/gateway-coordinator.md`).
//!
//! - [`gateway`]: `Gateway`, the coordinator made durable;
//! - [`decision_log`]: its WAL records; [`payment`]: a payment and its state
//!   (amounts, ids and legs are the shared `money` crate's);
//! - [`users`], [`sessions`]: authentication; [`admission`]: rate limits before hashing;
//! - [`participant`]: the trait a bank is reached through;
//! - [`environment`]: `Clock` and `Entropy`, injected;
//! - `repeated`: warnings about a failing bank, once per bank and window.
//!
//! Architecture invariant: no gRPC, no TLS, no async runtime here, and no
//! dependency on `ledger`: banks are only ever reached through `Participant`.

pub mod admission;
pub mod decision_log;
pub mod environment;
pub mod gateway;
pub mod participant;
pub mod payment;
mod repeated;
pub mod sessions;
pub mod users;

pub use environment::{Clock, Entropy};
pub use gateway::{
    AdmissionPolicy, Backoff, Bound, Decision, Gateway, GatewayError, GatewayOpenError,
    GatewayOptions, Limited, LoginAttempt, Paid, Registration, SetupUser,
};
pub use participant::{CallError, CallFuture, Participant, Vote};
pub use payment::{Endpoint, Payment, PaymentRequest, Status};
