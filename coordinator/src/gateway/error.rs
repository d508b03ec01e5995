//! Why opening a gateway failed, and why a request was refused: facts with
//! the fields that say which, never a message standing for a status code.

use money::{Amount, BankName, TxnId};
use wal::codec::DecodeError;
use wal::table::TableError;
use wal::{AppendError, Lsn, OpenError, ReplayError};

use crate::sessions::SessionError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayOpenError {
    #[error(transparent)]
    Wal(#[from] OpenError),
    #[error("gateway record at lsn {lsn} is unreadable: {source}")]
    Record { lsn: Lsn, source: DecodeError },
    #[error("the gateway snapshot at lsn {lsn} is unreadable: {source}")]
    Snapshot { lsn: Lsn, source: DecodeError },
    #[error("replaying the decision log failed: {0}")]
    Replay(#[source] ReplayError<std::convert::Infallible>),
    #[error("the history tables cannot be opened: {0}")]
    History(#[from] TableError),
    #[error("the setup file's user {username:?} has a bad or duplicate username")]
    SeedUser { username: String },
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Why a request was refused: a fact about the request or the gateway's
/// state, with the fields that say which. Each maps to one gRPC status in
/// the gateway's service (one exhaustive `match`).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("username must be 1 to 64 letters, digits, '.', '_' or '-'")]
    MalformedUsername,
    #[error("password must be 6 to 128 bytes")]
    MalformedPassword,
    #[error("username {username:?} is taken")]
    UsernameTaken { username: String },
    #[error("unknown bank \"{bank}\"")]
    UnknownBank { bank: BankName },
    #[error("unknown user {username:?}")]
    UnknownUser { username: String },
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many failed logins; try again in {seconds} s")]
    LockedOut { seconds: u64 },
    #[error("{what}; retry in {} s", retry_after_ms.div_ceil(1000))]
    RateLimited { what: Limited, retry_after_ms: u64 },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("amount {} exceeds the maximum of {} minor units per payment", amount.0, max.0)]
    AmountAboveMax { amount: Amount, max: Amount },
    #[error("currency must be {expected}")]
    WrongCurrency { expected: String },
    #[error("cannot pay yourself: source and destination are the same account")]
    PayingYourself,
    #[error("you may pay only from your own account")]
    NotYourAccount,
    /// The id was first heard of in a bank's in-doubt question, and so
    /// decided ABORT: it can never be a payment.
    #[error("transaction id {txn} was already used and aborted")]
    TxnIdAborted { txn: TxnId },
    #[error("transaction id {txn} was already used by another user")]
    TxnIdOfAnotherUser { txn: TxnId },
    #[error("transaction id {txn} was already used for a different payment; use a new id")]
    TxnIdReused { txn: TxnId },
    #[error("no payment {txn} of yours")]
    NoSuchPayment { txn: TxnId },
    #[error("{}; retry later", bound.describe(*limit))]
    Overloaded { bound: Bound, limit: usize },
    #[error("transaction {txn} is not decided yet")]
    NotDecided { txn: TxnId },
    /// The decision log failed: the gateway must stop (fail-stop).
    #[error("the gateway's storage failed: {0}")]
    Storage(#[from] AppendError),
    /// The history tables could not be read: the gateway must stop.
    #[error("the gateway's history tables failed: {reason}")]
    History { reason: String },
}

impl GatewayError {
    /// Whether the gateway must stop (fail-stop): its storage failed.
    pub fn stops_the_gateway(&self) -> bool {
        matches!(
            self,
            GatewayError::Storage(_) | GatewayError::History { .. }
        )
    }
}

impl From<TableError> for GatewayError {
    fn from(error: TableError) -> GatewayError {
        GatewayError::History {
            reason: error.to_string(),
        }
    }
}

/// Why a checkpoint did not complete; the old snapshot and tables stand,
/// and the log keeps everything.
pub use wal::table::CheckpointError;

/// Which bound shed a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `payments_in_flight_max` payments are in their first phase.
    InFlight,
    /// `settling_max` decided payments wait for a bank's acknowledgement.
    Settling,
    /// `registrations_in_flight_max` registrations are under way.
    Registrations,
}

impl Bound {
    fn describe(self, limit: usize) -> String {
        match self {
            Bound::InFlight => {
                format!("the gateway has {limit} payments in flight (payments_in_flight_max)")
            }
            Bound::Settling => format!(
                "{limit} decided payments wait for a bank to acknowledge them (settling_max)"
            ),
            Bound::Registrations => {
                format!("{limit} registrations are under way (registrations_in_flight_max)")
            }
        }
    }
}

/// What a rate limit counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// One client address.
    Address,
    /// One username.
    Username,
    /// So many addresses or usernames at once that no new one is tracked.
    Clients,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limited::Address => "too many logins or registrations from this address",
            Limited::Username => "too many logins for this username",
            Limited::Clients => "too many clients are logging in at once",
        })
    }
}
