//! The vocabulary the two cores share: the ledger (a bank) and the
//! coordinator (the gateway) speak of the same [`Amount`], [`TxnId`],
//! [`AccountNo`], [`BankName`], [`Direction`] and [`Leg`], defined once here.
//!
//! - [`amount`]: money in integer minor units, checked arithmetic only,
//!   exact decimal parsing;
//! - [`txn_id`]: the client-chosen transaction id;
//! - [`account`]: bank names and account numbers, validated on entry;
//! - [`leg`]: one account's part in a transaction.
//!
//! Architecture invariant: values only. No I/O, no storage format (each
//! core encodes these in its own records), no async; `wal` does not depend
//! on this crate and knows nothing of money.

pub mod account;
pub mod amount;
pub mod leg;
mod malformed;
pub mod txn_id;

pub use account::{ACCOUNT_NO_LEN_MAX, AccountNo, BANK_NAME_LEN_MAX, BankName};
pub use amount::{Amount, AmountParseError, MINOR_PER_MAJOR};
pub use leg::{Direction, Leg};
pub use malformed::Malformed;
pub use txn_id::TxnId;
