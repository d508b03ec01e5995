//! Transaction ids, account numbers and legs: the vocabulary of a prepare.

use std::fmt;

use crate::money::Amount;

/// A transaction id: a UUID chosen by the paying client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub [u8; 16]);

impl TxnId {
    /// Parses the canonical hyphenated form (`8-4-4-4-12` hex digits, any case).
    pub fn parse(text: &str) -> Result<TxnId, InvalidRequest> {
        let bytes = text.as_bytes();
        let hyphens = [8, 13, 18, 23];
        if bytes.len() != 36 || hyphens.iter().any(|&index| bytes[index] != b'-') {
            return Err(InvalidRequest::MalformedTxnId);
        }
        let digits: Vec<u8> = bytes.iter().copied().filter(|&byte| byte != b'-').collect();
        if digits.len() != 32 {
            return Err(InvalidRequest::MalformedTxnId);
        }
        let mut id = [0u8; 16];
        for (index, pair) in digits.chunks(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(InvalidRequest::MalformedTxnId)?;
            let low = hex_value(pair[1]).ok_or(InvalidRequest::MalformedTxnId)?;
            id[index] = high << 4 | low;
        }
        Ok(TxnId(id))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({self})")
    }
}

/// The longest account number accepted, in bytes.
pub const ACCOUNT_NO_LEN_MAX: usize = 64;

/// An account number, unique within one bank.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountNo(String);

impl AccountNo {
    /// Non-empty, at most 64 bytes of ASCII letters, digits, `-` and `_`.
    pub fn parse(text: &str) -> Result<AccountNo, InvalidRequest> {
        let valid = !text.is_empty()
            && text.len() <= ACCOUNT_NO_LEN_MAX
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if valid {
            Ok(AccountNo(text.to_owned()))
        } else {
            Err(InvalidRequest::MalformedAccountNo)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
    #[error("owner must be 1 to 128 bytes")]
    MalformedOwner,
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
    use proptest::prelude::*;

    #[test]
    fn uuids_parse_in_canonical_form_only() {
        let text = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        let id = TxnId::parse(text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(TxnId::parse(&text.to_uppercase()).unwrap(), id);
        for bad in [
            "",
            "6f9619ff8b86d011b42d00c04fc964ff",
            "6f9619ff-8b86-d011-b42d-00c04fc964fg",
            "6f9619ff-8b86-d011-b42d00c04fc964ff-",
        ] {
            assert_eq!(
                TxnId::parse(bad),
                Err(InvalidRequest::MalformedTxnId),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn txn_ids_round_trip_through_text(bytes in any::<[u8; 16]>()) {
            prop_assert_eq!(TxnId::parse(&TxnId(bytes).to_string()), Ok(TxnId(bytes)));
        }
    }

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
        assert!(AccountNo::parse(&"x".repeat(65)).is_err());
        assert!(AccountNo::parse("12 3").is_err());
    }
}
