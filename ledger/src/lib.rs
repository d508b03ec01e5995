//! A bank's accounts and its two-phase-commit participant state machine,
//! persisted in a [`wal::Wal`].
//!
//! - [`participant`]: the pure state machine (decide, then apply) and its
//!   decision table, `docs/bank-participant.md`;
//! - [`bank`]: the state machine made durable: records go through the WAL,
//!   answers wait for durability, recovery is snapshot + replay;
//! - [`history`]: decided transactions older than the last checkpoint, in
//!   the storage layer's tables, found again by id;
//! - [`in_doubt`]: when to ask the coordinator about a transaction in doubt;
//! - [`record`]: the WAL records; [`txn`]: the shape of a prepare (the
//!   vocabulary itself, `Amount`, `TxnId`, `Leg`, …, is the `money` crate's).
//!
//! Architecture invariant: no gRPC, no TLS, no async runtime here. Time comes
//! in as `now_ms`; async methods only await the WAL's own futures.

pub mod bank;
pub mod history;
pub mod in_doubt;
pub mod participant;
pub mod record;
pub mod txn;

pub use bank::{
    Bank, BankError, BankOpenError, BankOptions, CheckpointError, InDoubt, OpenReport, Seed,
};
pub use history::History;
pub use in_doubt::InDoubtPolicy;
pub use participant::{Account, Ledger, ParticipantError, Step, TxnState, Vote};
pub use record::{LedgerRecord, VoidReason};
pub use txn::InvalidRequest;
pub use wal::block_on;
pub use wal::codec::DecodeError;
