//! The coordinator's view of a bank. The gateway implements it over gRPC
//! with mTLS; tests and the simulator implement it in memory and can drop,
//! delay and fail calls. Each call carries its own deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use money::{BankName, Leg, TxnId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    Yes,
    No { reason: String },
}

/// A call that did not produce an answer (or produced an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("bank {bank} did not answer within {timeout:?}")]
    Timeout { bank: BankName, timeout: Duration },
    #[error("bank {bank} is unreachable: {detail}")]
    Unreachable { bank: BankName, detail: String },
    #[error("bank {bank} refused: {detail}")]
    Refused { bank: BankName, detail: String },
}

pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CallError>> + Send + 'a>>;

pub trait Participant: Send + Sync {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, Vote>;
    fn commit<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()>;
    fn abort<'a>(&'a self, bank: &'a BankName, txn: TxnId, timeout: Duration)
    -> CallFuture<'a, ()>;
}
