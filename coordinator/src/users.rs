//! Users and their passwords (argon2id hashes only), and failed-login
//! lockout. Plaintext passwords are never stored, returned or logged.

use std::collections::HashMap;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use money::{AccountNo, BankName};

pub const USERNAME_LEN_MAX: usize = 64;
pub const PASSWORD_LEN_MIN: usize = 6;
pub const PASSWORD_LEN_MAX: usize = 128;

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    password_hash: String,
    pub bank: BankName,
    pub account: AccountNo,
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
    pub fn new(
        username: String,
        password_hash: String,
        bank: BankName,
        account: AccountNo,
    ) -> User {
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

/// The bytes of salt in every new hash (argon2's recommended length).
pub const SALT_LEN: usize = 16;

/// Hashes and verifies passwords in argon2 working memory it owns: the
/// memory is allocated once, when the hasher is made, and reused by every
/// hash, so a pool of hashers costs `hashers × cost` and no more however
/// many logins arrive. Not `Sync`: one hasher serves one thread at a time.
pub struct PasswordHasher {
    cost: HashCost,
    blocks: Vec<Block>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.cost)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl PasswordHasher {
    /// A hasher for `cost`, its working memory allocated now.
    pub fn new(cost: HashCost) -> PasswordHasher {
        let blocks = cost.params().block_count();
        PasswordHasher {
            cost,
            blocks: vec![Block::new(); blocks],
        }
    }

    /// The working memory this hasher holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.len() * Block::SIZE
    }

    /// An argon2id hash (PHC string) of `password` with `salt`.
    pub fn hash(&mut self, password: &str, salt: [u8; SALT_LEN]) -> String {
        let params = self.cost.params();
        let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut output,
                &mut self.blocks[..],
            )
            .expect("argon2id hashes any password of a valid length");
        PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).expect("argon2 parameters encode"),
            salt: Some(Salt::new(&salt).expect("16 bytes make a valid salt")),
            hash: Some(Output::new(&output).expect("32 bytes make a valid output")),
        }
        .to_string()
    }

    /// Whether `password` matches the PHC string `hash` (compared in
    /// constant time). A hash whose cost exceeds this hasher's memory grows
    /// the memory once, to that cost: stored hashes keep the cost they were
    /// made with, so an operator who lowers the cost still lets old users in.
    pub fn verify(&mut self, password: &str, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
            Algorithm::try_from(parsed.algorithm.as_str()),
            Params::try_from(&parsed),
            parsed.salt,
            parsed.hash,
        ) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(version) => version.unwrap_or_default(),
            Err(_) => return false,
        };
        if self.blocks.len() < params.block_count() {
            self.blocks.resize(params.block_count(), Block::new());
        }
        let mut output = vec![0u8; expected.len()];
        let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut output,
            &mut self.blocks[..],
        );
        computed.is_ok() && Output::new(&output).is_ok_and(|output| output == expected)
    }
}

impl HashCost {
    fn params(self) -> Params {
        Params::new(self.memory_kib, self.iterations, 1, None)
            .expect("argon2 accepts the configured cost")
    }
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
        let mut hasher = PasswordHasher::new(HashCost::default());
        assert_eq!(hasher.memory_bytes(), 19 * 1024 * 1024);
        let first = hasher.hash("pass123", [1; SALT_LEN]);
        let second = hasher.hash("pass123", [2; SALT_LEN]);
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "salted");
        assert!(!first.contains("pass123"));
        assert!(hasher.verify("pass123", &first));
        assert!(!hasher.verify("pass124", &first));
        assert!(!hasher.verify("pass123", "$argon2id$not-a-hash"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_verifier() {
        use argon2::PasswordVerifier;
        let mut hasher = PasswordHasher::new(HashCost::SIMULATION_ONLY);
        let ours = hasher.hash("pass123", [7; SALT_LEN]);
        assert!(
            Argon2::default()
                .verify_password(b"pass123", &PasswordHash::new(&ours).unwrap())
                .is_ok()
        );
        let theirs = argon2::PasswordHasher::hash_password(&Argon2::default(), b"pass123")
            .unwrap()
            .to_string();
        assert!(hasher.verify("pass123", &theirs));
        assert!(!hasher.verify("pass1234", &theirs));
    }

    #[test]
    fn a_hash_of_a_higher_cost_than_the_hasher_grows_its_memory_once() {
        let mut cheap = PasswordHasher::new(HashCost::SIMULATION_ONLY);
        let mut dear = PasswordHasher::new(HashCost {
            memory_kib: 64,
            iterations: 1,
        });
        let hash = dear.hash("pass123", [3; SALT_LEN]);
        let before = cheap.memory_bytes();
        assert!(cheap.verify("pass123", &hash));
        assert_eq!(cheap.memory_bytes(), 64 * 1024);
        assert!(before < cheap.memory_bytes());
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
