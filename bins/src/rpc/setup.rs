//! The cluster setup file shared by banks and the gateway:
//! `{"users": [{"username": "alice", "password": "pass123", "bank": "bank_a",
//! "account_no": "123", "balance": 1000}, ...]}` with `balance` in major
//! units, as a number or a decimal string ("12.50").

use std::path::Path;

use anyhow::{Context, bail};
use ledger::Seed;
use money::{AccountNo, Amount, BankName};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupFile {
    users: Vec<SetupUser>,
}

/// One user of the setup file (the password is only read by the gateway).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupUser {
    pub username: String,
    pub password: String,
    pub bank: String,
    pub account_no: String,
    balance: serde_json::Value,
}

impl std::fmt::Debug for SetupUser {
    // Passwords never reach a log, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupUser")
            .field("username", &self.username)
            .field("bank", &self.bank)
            .field("account_no", &self.account_no)
            .finish_non_exhaustive()
    }
}

impl SetupUser {
    /// The opening balance in minor units, parsed exactly.
    pub fn balance(&self) -> anyhow::Result<Amount> {
        let text = match &self.balance {
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::String(text) => text.clone(),
            other => bail!(
                "balance of {} must be a number or a decimal string, not {other}",
                self.username
            ),
        };
        Amount::parse_major(&text).with_context(|| format!("balance of user {}", self.username))
    }
}

/// A bank name from a flag or a file: 1 to 32 lowercase letters, digits,
/// `_` or `-`.
pub fn bank_name(name: &str) -> anyhow::Result<BankName> {
    BankName::parse(name).map_err(|malformed| anyhow::anyhow!("bank name {name:?}: {malformed}"))
}

/// An account number from a flag or a file.
pub fn account_no(number: &str) -> anyhow::Result<AccountNo> {
    AccountNo::parse(number).map_err(|malformed| anyhow::anyhow!("account {number:?}: {malformed}"))
}

/// Reads and checks a setup file.
pub fn load(path: &Path) -> anyhow::Result<Vec<SetupUser>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read setup file {}", path.display()))?;
    let file: SetupFile = serde_json::from_str(&text)
        .with_context(|| format!("parse setup file {}", path.display()))?;
    for user in &file.users {
        bank_name(&user.bank).with_context(|| format!("user {}", user.username))?;
        account_no(&user.account_no).with_context(|| format!("user {}", user.username))?;
        user.balance()?;
    }
    Ok(file.users)
}

/// The accounts a bank seeds on its first start: the users at that bank.
pub fn seeds_for(users: &[SetupUser], bank: &str) -> anyhow::Result<Vec<Seed>> {
    users
        .iter()
        .filter(|user| user.bank == bank)
        .map(|user| {
            Ok(Seed {
                account: account_no(&user.account_no)?,
                owner: user.username.clone(),
                balance: user.balance()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_parse_from_numbers_and_decimal_strings_exactly() {
        let text = r#"{"users": [
            {"username": "alice", "password": "p", "bank": "bank_a", "account_no": "123", "balance": 1000},
            {"username": "bob", "password": "p", "bank": "bank_b", "account_no": "456", "balance": "12.50"},
            {"username": "carol", "password": "p", "bank": "bank_a", "account_no": "789", "balance": 0.1}
        ]}"#;
        let file: SetupFile = serde_json::from_str(text).unwrap();
        let seeds = seeds_for(&file.users, "bank_a").unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[0].balance, Amount(100_000));
        assert_eq!(seeds[1].balance, Amount(10));
        assert_eq!(file.users[1].balance().unwrap(), Amount(1250));
        assert!(!format!("{:?}", file.users[0]).contains("password"));
    }

    #[test]
    fn bad_balances_and_names_are_refused() {
        let user = |balance: serde_json::Value| SetupUser {
            username: "u".into(),
            password: "p".into(),
            bank: "bank_a".into(),
            account_no: "1".into(),
            balance,
        };
        assert!(user(serde_json::json!(-1)).balance().is_err());
        assert!(user(serde_json::json!("1.005")).balance().is_err());
        assert!(user(serde_json::json!(true)).balance().is_err());
        assert!(bank_name("Bank A").is_err());
        assert!(bank_name("bank_a").is_ok());
        assert!(account_no("12 3").is_err());
    }
}
