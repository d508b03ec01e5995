//! Why the bank's service refuses a call, and the one place a refusal
//! becomes a gRPC status: [`From<Refusal> for Status`], an exhaustive
//! `match` over the ledger's errors and the adapter's own (a batch of the
//! wrong size, a missing decision, a bank shutting down).

use ledger::{BankError, InvalidRequest, ParticipantError};
use tonic::Status;

/// What a caller hears when the bank's log or history tables failed (the
/// details are in the bank's own log, not the caller's).
const STORAGE_FAILED: &str = "the bank's storage failed; it is restarting";

/// The most items one batch call may carry.
pub const BATCH_LEN_MAX: usize = 1024;

/// A refused call (or batch item).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("the batch is empty")]
    EmptyBatch,
    #[error("the batch has {len} items; at most {BATCH_LEN_MAX} are allowed")]
    BatchTooLong { len: usize },
    #[error("the decision is missing")]
    NoDecision,
    #[error("the bank is shutting down")]
    ShuttingDown,
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        let message = refusal.to_string();
        match refusal {
            Refusal::Bank(BankError::Refused(refused)) => participant_status(refused, message),
            Refusal::Bank(BankError::Storage(_) | BankError::History { .. }) => {
                Status::unavailable(STORAGE_FAILED)
            }
            Refusal::Invalid(_)
            | Refusal::EmptyBatch
            | Refusal::BatchTooLong { .. }
            | Refusal::NoDecision => Status::invalid_argument(message),
            Refusal::ShuttingDown => Status::unavailable(message),
        }
    }
}

/// The participant's refusals, each to its code.
fn participant_status(refused: ParticipantError, message: String) -> Status {
    match refused {
        ParticipantError::Invalid(_) => Status::invalid_argument(message),
        ParticipantError::TxnIdReused { .. } | ParticipantError::DuplicateAccount { .. } => {
            Status::already_exists(message)
        }
        ParticipantError::CommitUnknown { .. }
        | ParticipantError::CommitAfterAbort { .. }
        | ParticipantError::AbortAfterCommit { .. } => Status::failed_precondition(message),
        ParticipantError::UnknownAccount { .. } => Status::not_found(message),
        ParticipantError::History { .. } => Status::unavailable(STORAGE_FAILED),
    }
}

/// Checks a batch's length.
pub fn check_batch_len(len: usize) -> Result<(), Refusal> {
    match len {
        0 => Err(Refusal::EmptyBatch),
        len if len > BATCH_LEN_MAX => Err(Refusal::BatchTooLong { len }),
        _ => Ok(()),
    }
}
