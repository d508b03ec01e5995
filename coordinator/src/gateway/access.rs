//! Who may come in: registration, login, sessions. Checked before any
//! password is hashed: the rate of the client's address and of the
//! username, the lockout after failed logins, and for a registration the
//! shape of the request, a known bank and a free username, which stays
//! reserved until the user is written or the registration is dropped.
//!
//! Hashing is the caller's (a pool of threads in the server, the caller's
//! own thread in tests): the core hands out the hash to verify against, or
//! the salt to hash with, and takes the result back.

use std::collections::BTreeSet;
use std::net::IpAddr;

use money::{AccountNo, BankName};

use crate::admission::{Refusal, TokenBuckets};
use crate::environment::Entropy;
use crate::gateway::{Bound, Gateway, GatewayError, GatewayOptions, Limited};
use crate::sessions::Sessions;
use crate::users::{self, Lockout, PasswordHasher, SALT_LEN};

/// A node's own admission state (not in the decision log).
pub(crate) struct Access {
    lockout: Lockout,
    sessions: Sessions,
    logins_per_address: TokenBuckets<IpAddr>,
    logins_per_username: TokenBuckets<String>,
    /// Usernames of registrations under way (at most
    /// `registrations_in_flight_max`).
    registering: BTreeSet<String>,
}

impl Access {
    pub(crate) fn new(options: &GatewayOptions) -> Access {
        let admission = options.admission;
        Access {
            lockout: Lockout::new(options.login),
            sessions: Sessions::new(options.sessions),
            logins_per_address: TokenBuckets::new(admission.per_address, admission.keys_max),
            logins_per_username: TokenBuckets::new(admission.per_username, admission.keys_max),
            registering: BTreeSet::new(),
        }
    }

    /// Takes one token of the client address's login rate (none for a
    /// caller without an address, such as a test or a tool).
    fn charge_address(&mut self, address: Option<IpAddr>, now_ms: u64) -> Result<(), GatewayError> {
        match address {
            None => Ok(()),
            Some(address) => self
                .logins_per_address
                .take(&address, now_ms)
                .map_err(|refusal| rate_limited(Limited::Address, refusal)),
        }
    }
}

/// The error for a refusal of a rate limit on `what`.
fn rate_limited(what: Limited, refusal: Refusal) -> GatewayError {
    let what = match refusal {
        Refusal::Empty { .. } => what,
        Refusal::Full { .. } => Limited::Clients,
    };
    GatewayError::RateLimited {
        what,
        retry_after_ms: refusal.retry_after_ms(),
    }
}

/// A fresh random salt for a password hash.
pub(crate) fn salt(entropy: &dyn Entropy) -> [u8; SALT_LEN] {
    let mut bytes = [0u8; SALT_LEN];
    entropy.fill(&mut bytes);
    bytes
}

/// A pre-computed argon2id hash of a random password nobody knows.
pub(crate) fn dummy_hash(entropy: &dyn Entropy, cost: users::HashCost) -> String {
    let password: String = salt(entropy)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    PasswordHasher::new(cost).hash(&password, salt(entropy))
}

/// A login admitted past the rate limits and the lockout: the hash to
/// verify the password against (the user's, or for an unknown username a
/// hash nobody's password matches, so both cost the same).
pub struct LoginAttempt {
    username: String,
    hash: String,
    known: bool,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl LoginAttempt {
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// A registration admitted: its username is reserved (a second
/// registration of the same name is refused, before it opens an account
/// anywhere) until [`Registration::finish`] writes the user or the
/// registration is dropped.
pub struct Registration<'a, P> {
    gateway: &'a Gateway<P>,
    username: String,
    bank: BankName,
    salt: [u8; SALT_LEN],
}

impl<P> std::fmt::Debug for Registration<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("username", &self.username)
            .field("bank", &self.bank)
            .finish_non_exhaustive()
    }
}

impl<P> Registration<'_, P> {
    /// The salt to hash the password with.
    pub fn salt(&self) -> [u8; SALT_LEN] {
        self.salt
    }
}

impl<P> Drop for Registration<'_, P> {
    fn drop(&mut self) {
        let removed = self
            .gateway
            .lock()
            .access
            .registering
            .remove(&self.username);
        assert!(removed, "a registration holds its reservation");
    }
}

impl<P> Gateway<P> {
    /// Admits a registration: the shape of the username and password, a
    /// known bank, the rate limit of the client's address, a free username
    /// not being registered right now. Nothing is written yet.
    pub fn register_begin(
        &self,
        username: &str,
        password: &str,
        bank: &BankName,
        address: Option<IpAddr>,
    ) -> Result<Registration<'_, P>, GatewayError> {
        if !users::valid_username(username) {
            return Err(GatewayError::MalformedUsername);
        }
        if !users::valid_password(password) {
            return Err(GatewayError::MalformedPassword);
        }
        if !self.options.banks.contains(bank) {
            return Err(GatewayError::UnknownBank { bank: bank.clone() });
        }
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        // Charged before the username is looked at, so probing which
        // usernames are taken costs the same rate as registering.
        inner.access.charge_address(address, now)?;
        let taken = || GatewayError::UsernameTaken {
            username: username.to_owned(),
        };
        if inner.state.users.contains_key(username) || inner.access.registering.contains(username) {
            return Err(taken());
        }
        let limit = self.options.registrations_in_flight_max;
        if inner.access.registering.len() >= limit {
            return Err(GatewayError::Overloaded {
                bound: Bound::Registrations,
                limit,
            });
        }
        inner.access.registering.insert(username.to_owned());
        Ok(Registration {
            gateway: self,
            username: username.to_owned(),
            bank: bank.clone(),
            salt: salt(&*self.entropy),
        })
    }

    /// Admits a login before any hash: the rate limits of the client's
    /// address and of the username, then the lockout. Unknown usernames
    /// are admitted alike and verified against a hash nobody matches, so
    /// the answer and its cost do not tell which usernames exist.
    pub fn login_begin(
        &self,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<LoginAttempt, GatewayError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.access.charge_address(address, now)?;
        // Usernames are charged only in their valid shape, so the map holds
        // at most 64-byte keys. A full map admits the login untracked (the
        // address rate and the lockout still apply): refusing every new
        // username would let a flood of made-up names lock everyone out.
        if users::valid_username(username) {
            match inner
                .access
                .logins_per_username
                .take(&username.to_owned(), now)
            {
                Ok(()) | Err(Refusal::Full { .. }) => {}
                Err(refusal) => return Err(rate_limited(Limited::Username, refusal)),
            }
        }
        if let Some(until) = inner.access.lockout.locked_until(username, now) {
            return Err(GatewayError::LockedOut {
                seconds: (until - now).div_ceil(1000),
            });
        }
        let hash = inner
            .state
            .users
            .get(username)
            .map(|user| user.password_hash().to_owned());
        Ok(LoginAttempt {
            username: username.to_owned(),
            known: hash.is_some(),
            hash: hash.unwrap_or_else(|| self.dummy_hash.clone()),
        })
    }

    /// Ends a login whose password was verified against `attempt.hash()`:
    /// a session if it matched a known user, else a counted failure.
    pub fn login_end(
        &self,
        attempt: LoginAttempt,
        matched: bool,
    ) -> Result<(String, u64), GatewayError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if !(matched && attempt.known) {
            // Only names of a valid shape are counted (no user has another),
            // so the lockout's keys stay small.
            if users::valid_username(&attempt.username) {
                inner.access.lockout.record_failure(&attempt.username, now);
            }
            return Err(GatewayError::BadCredentials);
        }
        inner.access.lockout.record_success(&attempt.username);
        Ok(inner
            .access
            .sessions
            .create(&attempt.username, &*self.entropy, now)?)
    }

    /// A whole login on the caller's thread and hasher (blocking), for
    /// callers without a hashing pool.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        hasher: &mut PasswordHasher,
    ) -> Result<(String, u64), GatewayError> {
        let attempt = self.login_begin(username, None)?;
        let matched = hasher.verify(password, attempt.hash());
        self.login_end(attempt, matched)
    }

    /// The user a session key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<String, GatewayError> {
        let now = self.clock.now_ms();
        Ok(self.lock().access.sessions.authenticate(key, now)?)
    }

    pub fn logout(&self, key: &str) -> Result<(), GatewayError> {
        let now = self.clock.now_ms();
        Ok(self.lock().access.sessions.logout(key, now)?)
    }

    /// The bank and account of a user.
    pub fn user_account(&self, username: &str) -> Option<(BankName, AccountNo)> {
        self.lock()
            .state
            .users
            .get(username)
            .map(|user| (user.bank.clone(), user.account.clone()))
    }
}

impl<P> Registration<'_, P> {
    /// Writes the user whose password was hashed with [`Registration::salt`]
    /// and whose bank opened `account`; answers once the user is durable.
    pub async fn finish(
        self,
        password_hash: String,
        account: &AccountNo,
    ) -> Result<(), GatewayError> {
        let lsn = {
            let mut inner = self.gateway.lock();
            let record =
                inner
                    .state
                    .decide_register(&self.username, password_hash, &self.bank, account)?;
            self.gateway.record(&mut inner, record)?
        };
        self.gateway.wal.wait_durable(lsn).await?;
        Ok(())
    }
}
