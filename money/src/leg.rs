//! One account's part in a transaction at one bank: what the gateway asks a
//! bank to prepare, and what the bank holds and posts.

use crate::{AccountNo, Amount};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Debit,
    Credit,
}

/// One account's part in a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Leg {
    pub account: AccountNo,
    pub direction: Direction,
    pub amount: Amount,
}

impl Leg {
    /// What the leg does to its account's balance, signed.
    pub fn signed_amount(&self) -> i128 {
        match self.direction {
            Direction::Credit => i128::from(self.amount.0),
            Direction::Debit => -i128::from(self.amount.0),
        }
    }
}
