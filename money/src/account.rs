//! Where money sits: a bank, by name, and an account number within it.
//! Both are checked once, when they enter the system, and carried as
//! these types after, so a core never meets a malformed one.

use std::fmt;

use crate::Malformed;

/// The longest account number accepted, in bytes.
pub const ACCOUNT_NO_LEN_MAX: usize = 64;

/// The longest bank name accepted, in bytes.
pub const BANK_NAME_LEN_MAX: usize = 32;

/// An account number, unique within one bank.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountNo(String);

impl AccountNo {
    /// Non-empty, at most 64 bytes of ASCII letters, digits, `-` and `_`.
    pub fn parse(text: &str) -> Result<AccountNo, Malformed> {
        let valid = !text.is_empty()
            && text.len() <= ACCOUNT_NO_LEN_MAX
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if valid {
            Ok(AccountNo(text.to_owned()))
        } else {
            Err(Malformed::AccountNo)
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

/// A bank's name: how the gateway routes to it, its certificate's role,
/// its directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BankName(String);

impl BankName {
    /// Non-empty, at most 32 bytes of lowercase ASCII letters, digits, `_`
    /// and `-` (it names files and certificates too).
    pub fn parse(text: &str) -> Result<BankName, Malformed> {
        let valid = !text.is_empty()
            && text.len() <= BANK_NAME_LEN_MAX
            && text.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
            });
        if valid {
            Ok(BankName(text.to_owned()))
        } else {
            Err(Malformed::BankName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BankName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for BankName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for BankName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_and_bank_names_are_checked() {
        assert!(AccountNo::parse("123").is_ok());
        assert!(AccountNo::parse("A-1_b").is_ok());
        assert_eq!(AccountNo::parse(""), Err(Malformed::AccountNo));
        assert_eq!(AccountNo::parse(&"x".repeat(65)), Err(Malformed::AccountNo));
        assert_eq!(AccountNo::parse("12 3"), Err(Malformed::AccountNo));
        assert!(BankName::parse("bank_a").is_ok());
        assert!(BankName::parse(&"b".repeat(32)).is_ok());
        assert_eq!(BankName::parse("Bank_A"), Err(Malformed::BankName));
        assert_eq!(BankName::parse(""), Err(Malformed::BankName));
        assert_eq!(BankName::parse(&"b".repeat(33)), Err(Malformed::BankName));
        assert_eq!(BankName::parse("bank/a"), Err(Malformed::BankName));
    }
}
