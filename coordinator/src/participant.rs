//! The coordinator's view of a bank. The gateway implements it over gRPC
//! with mTLS; tests and the simulator implement it in memory and can drop,
//! delay and fail calls. Each call carries its own deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::payment::{Amount, TxnId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Debit,
    Credit,
}

/// One account's part in a transaction, at one bank.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Leg {
    pub account: String,
    pub direction: Direction,
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    Yes,
    No { reason: String },
}

/// A call that did not produce an answer (or produced an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("bank {bank} did not answer within {timeout:?}")]
    Timeout { bank: String, timeout: Duration },
    #[error("bank {bank} is unreachable: {detail}")]
    Unreachable { bank: String, detail: String },
    #[error("bank {bank} refused: {detail}")]
    Refused { bank: String, detail: String },
}

pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CallError>> + Send + 'a>>;

pub trait Participant: Send + Sync {
    fn prepare<'a>(
        &'a self,
        bank: &'a str,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, Vote>;
    fn commit<'a>(&'a self, bank: &'a str, txn: TxnId, timeout: Duration) -> CallFuture<'a, ()>;
    fn abort<'a>(&'a self, bank: &'a str, txn: TxnId, timeout: Duration) -> CallFuture<'a, ()>;
}
