//! Why a piece of text is not one of the vocabulary's ids.

/// A transaction id, account number or bank name of the wrong shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("transaction id is not a UUID (8-4-4-4-12 hex digits)")]
    TxnId,
    #[error("account number must be 1 to 64 letters, digits, '-' or '_'")]
    AccountNo,
    #[error("bank name must be 1 to 32 lowercase letters, digits, '_' or '-'")]
    BankName,
}
