//! The shape of a prepare: its legs checked before anything is looked at,
//! and the errors of a request refused on its shape. The vocabulary itself
//! (`TxnId`, `AccountNo`, `Leg`, …) is the `money` crate's.

use money::{Amount, Leg, Malformed};

/// The most legs one prepare may carry.
pub const LEGS_MAX: usize = 16;

/// A request refused before anything was looked at (gRPC INVALID_ARGUMENT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("transaction id is not a UUID (8-4-4-4-12 hex digits)")]
    MalformedTxnId,
    #[error("account number must be 1 to 64 letters, digits, '-' or '_'")]
    MalformedAccountNo,
    #[error("a prepare needs at least one leg")]
    NoLegs,
    #[error("a prepare may carry at most 16 legs")]
    TooManyLegs,
    #[error("amounts must be positive")]
    ZeroAmount,
    #[error("an amount exceeds this bank's maximum of {max} per leg")]
    AmountAboveMax { max: Amount },
    #[error("leg direction must be DEBIT or CREDIT")]
    NoDirection,
    #[error("an account appears in more than one leg")]
    DuplicateAccount,
    #[error("bank name must be 1 to 32 lowercase letters, digits, '_' or '-'")]
    MalformedBankName,
    #[error("owner must be 1 to 128 bytes")]
    MalformedOwner,
}

impl From<Malformed> for InvalidRequest {
    fn from(malformed: Malformed) -> InvalidRequest {
        match malformed {
            Malformed::TxnId => InvalidRequest::MalformedTxnId,
            Malformed::AccountNo => InvalidRequest::MalformedAccountNo,
            Malformed::BankName => InvalidRequest::MalformedBankName,
        }
    }
}

/// Checks the shape of a prepare's legs (not whether accounts exist).
pub fn check_legs(legs: &[Leg]) -> Result<(), InvalidRequest> {
    if legs.is_empty() {
        return Err(InvalidRequest::NoLegs);
    }
    if legs.len() > LEGS_MAX {
        return Err(InvalidRequest::TooManyLegs);
    }
    for (index, leg) in legs.iter().enumerate() {
        if leg.amount.is_zero() {
            return Err(InvalidRequest::ZeroAmount);
        }
        if legs[..index]
            .iter()
            .any(|earlier| earlier.account == leg.account)
        {
            return Err(InvalidRequest::DuplicateAccount);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use money::{AccountNo, Direction};

    #[test]
    fn leg_shapes_are_checked() {
        let leg = |account: &str, amount| Leg {
            account: AccountNo::parse(account).unwrap(),
            direction: Direction::Debit,
            amount: Amount(amount),
        };
        assert_eq!(check_legs(&[]), Err(InvalidRequest::NoLegs));
        assert_eq!(check_legs(&[leg("a", 0)]), Err(InvalidRequest::ZeroAmount));
        assert_eq!(
            check_legs(&[leg("a", 1), leg("a", 2)]),
            Err(InvalidRequest::DuplicateAccount)
        );
        assert_eq!(
            check_legs(&vec![leg("a", 1); 17]),
            Err(InvalidRequest::TooManyLegs)
        );
        assert_eq!(check_legs(&[leg("a", 1), leg("b", 2)]), Ok(()));
    }
}
