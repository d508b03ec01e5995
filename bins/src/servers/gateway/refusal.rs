//! Why the gateway's services refuse a call, and the one place a refusal
//! becomes a gRPC status: [`From<Refusal> for Status`], an exhaustive
//! `match` over the coordinator's errors and the adapter's own (a request
//! that does not decode, a missing session, a busy hashing pool, a bank
//! that cannot be reached). Refusals for load carry `retry-after`.

use coordinator::GatewayError;
use coordinator::sessions::SessionError;
use money::{BankName, Malformed};
use tonic::Status;

use crate::rpc::tls::Role;
use crate::servers::gateway::password_pool::PoolBusy;

/// The metadata key of the retry hint on RESOURCE_EXHAUSTED answers.
pub const RETRY_AFTER: &str = "retry-after";

/// How long a client refused for load should wait before retrying.
const RETRY_AFTER_LOAD_MS: u64 = 1_000;

/// A refused call.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A field of the request is not a valid id, name or number.
    #[error("{field}: {malformed}")]
    Malformed {
        field: &'static str,
        malformed: Malformed,
    },
    #[error("the Gateway service accepts only client certificates; the peer presented {role:?}")]
    NotAClient { role: Option<Role> },
    #[error("missing `authorization: Bearer <session key>` metadata")]
    NoSessionKey,
    #[error("the gateway is busy checking passwords ({0}); retry later")]
    PasswordsBusy(PoolBusy),
    #[error("bank {bank} could not open the account: {detail}")]
    AccountNotOpened { bank: BankName, detail: String },
    #[error("bank {bank}: {detail}")]
    BankUnavailable { bank: BankName, detail: String },
    /// The task coordinating a payment ended without an answer (it
    /// panicked): a bug, reported as such.
    #[error("payment task failed")]
    PaymentTaskLost,
}

impl From<PoolBusy> for Refusal {
    fn from(busy: PoolBusy) -> Refusal {
        Refusal::PasswordsBusy(busy)
    }
}

/// Adds a `retry-after` hint (whole seconds, as HTTP's header) to a refusal.
fn with_retry_after(mut status: Status, retry_after_ms: u64) -> Status {
    let seconds = retry_after_ms.div_ceil(1000).max(1);
    status.metadata_mut().insert(
        RETRY_AFTER,
        seconds
            .to_string()
            .parse()
            .expect("digits are valid metadata"),
    );
    status
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        let message = refusal.to_string();
        match refusal {
            Refusal::Gateway(error) => gateway_status(error, message),
            Refusal::Malformed { .. } => Status::invalid_argument(message),
            Refusal::NotAClient { .. } => Status::permission_denied(message),
            Refusal::NoSessionKey => Status::unauthenticated(message),
            Refusal::PasswordsBusy(_) => {
                with_retry_after(Status::resource_exhausted(message), RETRY_AFTER_LOAD_MS)
            }
            Refusal::AccountNotOpened { .. } | Refusal::BankUnavailable { .. } => {
                Status::unavailable(message)
            }
            Refusal::PaymentTaskLost => Status::internal(message),
        }
    }
}

/// The coordinator's errors, each to its code.
fn gateway_status(error: GatewayError, message: String) -> Status {
    match error {
        GatewayError::MalformedUsername
        | GatewayError::MalformedPassword
        | GatewayError::ZeroAmount
        | GatewayError::AmountAboveMax { .. }
        | GatewayError::WrongCurrency { .. }
        | GatewayError::PayingYourself
        | GatewayError::TxnIdReused { .. } => Status::invalid_argument(message),
        GatewayError::UsernameTaken { .. }
        | GatewayError::TxnIdAborted { .. }
        | GatewayError::TxnIdOfAnotherUser { .. } => Status::already_exists(message),
        GatewayError::UnknownBank { .. } | GatewayError::NoSuchPayment { .. } => {
            Status::not_found(message)
        }
        GatewayError::UnknownUser { .. } | GatewayError::NotYourAccount => {
            Status::permission_denied(message)
        }
        GatewayError::BadCredentials => Status::unauthenticated(message),
        GatewayError::Session(SessionError::Full) => Status::resource_exhausted(message),
        GatewayError::Session(
            SessionError::Malformed | SessionError::Unknown | SessionError::Expired,
        ) => Status::unauthenticated(message),
        GatewayError::LockedOut { seconds } => {
            with_retry_after(Status::resource_exhausted(message), seconds * 1000)
        }
        GatewayError::RateLimited { retry_after_ms, .. } => {
            with_retry_after(Status::resource_exhausted(message), retry_after_ms)
        }
        GatewayError::Overloaded { .. } => {
            with_retry_after(Status::resource_exhausted(message), RETRY_AFTER_LOAD_MS)
        }
        GatewayError::NotDecided { .. } => Status::unavailable(message),
        GatewayError::Storage(_) | GatewayError::History { .. } => {
            Status::unavailable("the gateway's storage failed; it is restarting")
        }
    }
}
