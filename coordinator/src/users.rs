//! Users and their passwords (argon2id hashes only), and failed-login
//! lockout. Plaintext passwords are never stored, returned or logged.

use std::collections::HashMap;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

pub const USERNAME_LEN_MAX: usize = 64;
pub const PASSWORD_LEN_MIN: usize = 6;
pub const PASSWORD_LEN_MAX: usize = 128;

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    password_hash: String,
    pub bank: String,
    pub account: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("bank", &self.bank)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn new(username: String, password_hash: String, bank: String, account: String) -> User {
        User {
            username,
            password_hash,
            bank,
            account,
        }
    }

    pub fn password_hash(&self) -> &str {
        &self.password_hash
    }
}

/// Usernames: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
pub fn valid_username(username: &str) -> bool {
    !username.is_empty()
        && username.len() <= USERNAME_LEN_MAX
        && username
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

pub fn valid_password(password: &str) -> bool {
    (PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&password.len())
}

/// What hashing one password costs. Each hash records its own parameters,
/// so changing the cost never invalidates stored hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl HashCost {
    /// The smallest cost argon2 allows: for simulations that create
    /// thousands of gateways, never for real passwords.
    pub const SIMULATION_ONLY: HashCost = HashCost {
        memory_kib: Params::MIN_M_COST,
        iterations: Params::MIN_T_COST,
    };
}

impl Default for HashCost {
    /// argon2id's recommended defaults (19 MiB, 2 passes; OWASP's minimum).
    fn default() -> HashCost {
        HashCost {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
        }
    }
}

/// An argon2id hash (PHC string) of `password` with a fresh random salt.
pub fn hash_password(password: &str, cost: HashCost) -> String {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .expect("argon2 accepts the configured cost");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .expect("argon2id hashes any password")
        .to_string()
}

/// Whether `password` matches `hash` (constant time inside argon2).
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// When repeated failed logins lock a username.
#[derive(Clone, Copy, Debug)]
pub struct LoginPolicy {
    pub failures_max: u32,
    pub window_ms: u64,
    pub lockout_ms: u64,
}

impl Default for LoginPolicy {
    fn default() -> LoginPolicy {
        LoginPolicy {
            failures_max: 5,
            window_ms: 60_000,
            lockout_ms: 300_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    count: u32,
    window_start_ms: u64,
    locked_until_ms: u64,
}

/// The most usernames whose failed logins are tracked at once.
pub const FAILURE_TRACKING_MAX: usize = 100_000;

/// Failed-login counting per username (whether or not the user exists, so
/// lockout does not reveal which usernames exist).
#[derive(Debug, Default)]
pub struct Lockout {
    policy: LoginPolicy,
    failures: HashMap<String, Failures>,
}

impl Lockout {
    pub fn new(policy: LoginPolicy) -> Lockout {
        Lockout {
            policy,
            failures: HashMap::new(),
        }
    }

    /// Until when `username` is locked, if it is.
    pub fn locked_until(&self, username: &str, now_ms: u64) -> Option<u64> {
        self.failures
            .get(username)
            .map(|failures| failures.locked_until_ms)
            .filter(|until| *until > now_ms)
    }

    pub fn record_failure(&mut self, username: &str, now_ms: u64) {
        if self.failures.len() >= FAILURE_TRACKING_MAX {
            let policy = self.policy;
            self.failures.retain(|_, failures| {
                failures.locked_until_ms > now_ms
                    || failures.window_start_ms + policy.window_ms > now_ms
            });
        }
        if self.failures.len() >= FAILURE_TRACKING_MAX && !self.failures.contains_key(username) {
            return;
        }
        let failures = self.failures.entry(username.to_owned()).or_default();
        if now_ms >= failures.window_start_ms + self.policy.window_ms {
            *failures = Failures {
                count: 0,
                window_start_ms: now_ms,
                locked_until_ms: failures.locked_until_ms,
            };
        }
        failures.count += 1;
        if failures.count >= self.policy.failures_max {
            failures.locked_until_ms = now_ms + self.policy.lockout_ms;
            failures.count = 0;
        }
    }

    pub fn record_success(&mut self, username: &str) {
        self.failures.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify_only_the_right_password() {
        let first = hash_password("pass123", HashCost::default());
        let second = hash_password("pass123", HashCost::default());
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "salted");
        assert!(!first.contains("pass123"));
        assert!(verify_password("pass123", &first));
        assert!(!verify_password("pass124", &first));
    }

    #[test]
    fn repeated_failures_lock_a_username_for_a_while() {
        let mut lockout = Lockout::new(LoginPolicy {
            failures_max: 3,
            window_ms: 1_000,
            lockout_ms: 10_000,
        });
        lockout.record_failure("alice", 0);
        lockout.record_failure("alice", 10);
        assert_eq!(lockout.locked_until("alice", 20), None);
        lockout.record_failure("alice", 20);
        assert_eq!(lockout.locked_until("alice", 30), Some(10_020));
        assert_eq!(lockout.locked_until("alice", 10_021), None);
        assert_eq!(lockout.locked_until("bob", 30), None);
    }
}
