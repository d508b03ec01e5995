//! A payment at the gateway: where it goes, its state, and the fingerprint
//! that pins a txn id to one request (ids and money are the `money` crate's).

use money::{AccountNo, Amount, BankName, TxnId};

/// An account at a bank.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub bank: BankName,
    pub account: AccountNo,
}

/// What a client asks: move `amount` from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PaymentRequest {
    pub txn: TxnId,
    pub from: Endpoint,
    pub to: Endpoint,
    pub amount: Amount,
    pub currency: String,
}

impl PaymentRequest {
    /// Whether `other` asks for exactly the same movement of money.
    pub fn same_movement(&self, other: &PaymentRequest) -> bool {
        self.from == other.from
            && self.to == other.to
            && self.amount == other.amount
            && self.currency == other.currency
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Initiated,
    Committed,
    Aborted,
}

/// A payment as the gateway knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub request: PaymentRequest,
    pub user: String,
    pub status: Status,
    /// Why it aborted (empty otherwise).
    pub reason: String,
    pub created_at_ms: u64,
    /// Phase 2 acknowledged by every bank.
    pub ended: bool,
    /// This answer is a stored outcome for a repeated txn id.
    pub replayed: bool,
}
