//! The gateway core: users, sessions, the idempotent payment table and the
//! 2PC coordinator, made durable in a WAL (the decision log). The decision
//! table and the recovery table are in `docs/gateway-coordinator.md`.
//!
//! It knows nothing of gRPC or an async runtime: banks are a
//! [`Participant`], time a [`Clock`], randomness an [`Entropy`]; async
//! methods only await the participant's and the log's futures.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use imbl::{HashMap as SharedHashMap, OrdMap};
use money::{AccountNo, Amount, BankName, Direction, Leg, TxnId};
use wal::{AppendError, Lsn, OpenError, Options, ReplayError, Storage, Wal};

use crate::admission::{RateLimit, Refusal, TokenBuckets};
use crate::decision_log::{GatewayRecord, read_account, read_bank, read_endpoint};
use crate::environment::{Clock, Entropy};
use crate::participant::{CallError, CallFuture, Participant, Vote};
use crate::payment::{Payment, PaymentRequest, Status};
use crate::repeated::{Repeated, RepeatedWarnings};
use crate::sessions::{SessionError, SessionPolicy, Sessions};
use crate::users::{self, Lockout, LoginPolicy, PasswordHasher, SALT_LEN, User};

#[derive(Clone, Debug)]
pub struct GatewayOptions {
    pub wal: Options,
    pub prepare_timeout: Duration,
    pub commit_timeout: Duration,
    pub currency: String,
    /// Banks the gateway can reach; payments naming others are refused.
    pub banks: Vec<BankName>,
    pub login: LoginPolicy,
    pub sessions: SessionPolicy,
    /// Snapshot the state and trim the decision log after this many records.
    pub snapshot_every: u64,
    /// Finished payments are kept (and their ids answer repeats) at least
    /// this long; older ones are forgotten at the next snapshot.
    pub retention_ms: u64,
    /// The cost of hashing a password (setup users, registration).
    pub password_cost: users::HashCost,
    /// Payments answered before their phase 2 is over, at most; past this a
    /// payment is answered after its first phase-2 round. 0: always after.
    pub unsettled_max: usize,
    /// New payments in their first phase at once, at most; past this a new
    /// txn id is refused at once ([`GatewayError::Overloaded`]) while repeats
    /// of known ids are still answered.
    pub payments_in_flight_max: usize,
    /// Repeated requests waiting for an in-flight payment's outcome, at
    /// most; past this a repeat is answered with the payment as it stands.
    pub waiters_max: usize,
    /// Payments decided and waiting for a bank to acknowledge phase 2, at
    /// most (they pile up while a bank is down); past this a new txn id is
    /// refused at once ([`GatewayError::Overloaded`]).
    pub settling_max: usize,
    /// The largest amount one payment may move.
    pub amount_max: Amount,
    /// Logins and registrations admitted per client address and per
    /// username, before any password is hashed.
    pub admission: AdmissionPolicy,
}

/// Rate limits checked before any password is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Logins and registrations from one client address.
    pub per_address: RateLimit,
    /// Logins naming one username (known or not).
    pub per_username: RateLimit,
    /// Addresses, and usernames, tracked at once (each map).
    pub keys_max: usize,
}

impl Default for AdmissionPolicy {
    /// 100 at once from one address, then 20 a second (a NAT of many
    /// users); 10 at once per username, then 10 a minute (a person
    /// retyping a password, not a guesser); 65,536 keys.
    fn default() -> AdmissionPolicy {
        AdmissionPolicy {
            per_address: RateLimit {
                burst: 100,
                period_ms: 5_000,
            },
            per_username: RateLimit {
                burst: 10,
                period_ms: 60_000,
            },
            keys_max: 65_536,
        }
    }
}

/// The default bound on payments in their first phase at once.
pub const PAYMENTS_IN_FLIGHT_MAX_DEFAULT: usize = 256;

/// The default bound on repeats waiting for in-flight payments.
pub const WAITERS_MAX_DEFAULT: usize = 4096;

/// The most wakers parked on one txn (see `State::park`).
const WAKERS_PER_TXN_MAX: usize = 64;

/// The default bound on payments waiting for phase 2 to be acknowledged.
pub const SETTLING_MAX_DEFAULT: usize = 65_536;

/// The default largest payment: 99,999,999 minor units (999,999.99 INR),
/// the most a card network's eight-digit amount field carries and Stripe's
/// own maximum for one charge. Larger movements go by wire, not by card.
pub const AMOUNT_MAX_DEFAULT: Amount = Amount(99_999_999);

/// The default bound on payments answered but not yet settled.
pub const UNSETTLED_MAX_DEFAULT: usize = 4096;

/// Seven days, the default retention of finished payments.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3_600_000;

/// A user to create on the gateway's first start.
#[derive(Clone)]
pub struct SetupUser {
    pub username: String,
    pub password: String,
    pub bank: BankName,
    pub account: AccountNo,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayOpenError {
    #[error(transparent)]
    Wal(#[from] OpenError),
    #[error("gateway record at lsn {lsn} is unreadable: {detail}")]
    Record { lsn: Lsn, detail: String },
    #[error("replaying the decision log failed: {0}")]
    Replay(String),
    #[error("seeding users failed: {0}")]
    Seed(String),
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Why a request was refused. Each maps to one gRPC status in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many failed logins; try again in {seconds} s")]
    LockedOut { seconds: u64 },
    #[error("{what}; retry in {} s", retry_after_ms.div_ceil(1000))]
    RateLimited { what: Limited, retry_after_ms: u64 },
    #[error("{}; retry later", bound.describe(*limit))]
    Overloaded { bound: Bound, limit: usize },
    #[error("amount {} exceeds the maximum of {} minor units per payment", amount.0, max.0)]
    AmountAboveMax { amount: Amount, max: Amount },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{0}")]
    NotDecided(String),
    /// The decision log failed: the gateway must stop (fail-stop).
    #[error("the gateway's storage failed: {0}")]
    Storage(#[from] AppendError),
}

/// Which bound shed a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `payments_in_flight_max` payments are in their first phase.
    InFlight,
    /// `settling_max` decided payments wait for a bank's acknowledgement.
    Settling,
}

impl Bound {
    fn describe(self, limit: usize) -> String {
        match self {
            Bound::InFlight => {
                format!("the gateway has {limit} payments in flight (payments_in_flight_max)")
            }
            Bound::Settling => format!(
                "{limit} decided payments wait for a bank to acknowledge them (settling_max)"
            ),
        }
    }
}

/// What a rate limit counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// One client address.
    Address,
    /// One username.
    Username,
    /// So many addresses or usernames at once that no new one is tracked.
    Clients,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limited::Address => "too many logins or registrations from this address",
            Limited::Username => "too many logins for this username",
            Limited::Clients => "too many clients are logging in at once",
        })
    }
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

/// The decision for a transaction, as told to a bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort,
}

#[derive(Clone, Debug)]
struct Entry {
    /// `None` for an id first heard of in a bank's GetDecision.
    payment: Option<Payment>,
    decision: Option<(Decision, String)>,
    /// The LSN of the decision record: nobody outside learns the decision
    /// (not the client, not a bank, not a status query) before it is durable.
    decided_lsn: Lsn,
    decided_at_ms: u64,
    ended: bool,
    /// The banks (by their place in [`legs_per_bank`]) that acknowledged
    /// phase 2 so far; in memory only (after a restart phase 2 is resent).
    acked: u8,
}

impl Entry {
    /// An entry without a decision yet (`payment` is `None` for an id first
    /// heard of in a bank's GetDecision).
    fn undecided(payment: Option<Payment>) -> Entry {
        Entry {
            payment,
            decision: None,
            decided_lsn: Lsn(0),
            decided_at_ms: 0,
            ended: false,
            acked: 0,
        }
    }

    /// Whether the entry may be forgotten once its decision is old: the
    /// payment ended, or the id was only heard of in a GetDecision.
    fn forgettable(&self) -> bool {
        self.ended || self.payment.is_none()
    }

    /// The entry's item in [`State::forgettable`], if it belongs there.
    fn forget_key(&self, txn: TxnId) -> Option<(u64, TxnId)> {
        self.forgettable().then_some((self.decided_at_ms, txn))
    }
}

struct State {
    /// LSN of the last record applied.
    applied_lsn: Lsn,
    last_snapshot_lsn: Lsn,
    /// Users and payments are persistent maps: a snapshot clones them in
    /// O(1) under the lock and encodes the clone after releasing it.
    users: OrdMap<String, User>,
    lockout: Lockout,
    sessions: Sessions,
    /// Entries sit behind an `Arc` so the map's nodes stay small (an
    /// insert moves a node's elements); one is copied only when changed
    /// while a snapshot still holds it.
    payments: SharedHashMap<TxnId, Arc<Entry>>,
    /// Payments that may be forgotten once old enough (ended, or ids only
    /// heard of in a bank's GetDecision), by decision time: forgetting takes
    /// what it forgets, not a pass over every payment. An item whose entry
    /// changed since is checked again and dropped.
    forgettable: BTreeSet<(u64, TxnId)>,
    /// Payments decided but not ended: phase 2 is running or to be retried.
    settling: BTreeSet<TxnId>,
    /// Woken when a txn is decided, acknowledged by a bank, or ended.
    waiters: HashMap<TxnId, Vec<Waker>>,
    /// Repeated requests admitted to wait for an in-flight payment (at most
    /// `waiters_max`).
    waiting: usize,
    /// Payments initiated and not yet decided (at most
    /// `payments_in_flight_max` are admitted).
    in_flight: usize,
    logins_per_address: TokenBuckets<IpAddr>,
    logins_per_username: TokenBuckets<String>,
}

impl State {
    /// Forgets the payments that may be forgotten and were decided before
    /// `cutoff_ms`.
    fn forget_decided_before(&mut self, cutoff_ms: u64) {
        while let Some(&(at_ms, txn)) = self.forgettable.first()
            && at_ms < cutoff_ms
        {
            self.forgettable.pop_first();
            if self
                .payments
                .get(&txn)
                .is_some_and(|entry| entry.forget_key(txn) == Some((at_ms, txn)))
            {
                self.payments.remove(&txn);
            }
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

    /// Parks `waker` until `txn` changes. A task parks once however often
    /// it is polled, and at most [`WAKERS_PER_TXN_MAX`] wakers wait on one
    /// txn: a full list is woken and emptied first (a future still waiting
    /// parks again when polled; one that gave up is not polled), so wakers
    /// left behind by callers that gave up cannot pile up.
    fn park(&mut self, txn: TxnId, waker: &Waker) {
        let parked = self.waiters.entry(txn).or_default();
        if parked.iter().any(|known| known.will_wake(waker)) {
            return;
        }
        if parked.len() >= WAKERS_PER_TXN_MAX {
            for stale in parked.drain(..) {
                stale.wake();
            }
        }
        parked.push(waker.clone());
        assert!(parked.len() <= WAKERS_PER_TXN_MAX);
    }

    fn wake(&mut self, txn: TxnId) {
        for waker in self.waiters.remove(&txn).unwrap_or_default() {
            waker.wake();
        }
    }
}

/// What `pay` answers with.
#[derive(Debug)]
pub struct Paid {
    pub payment: Payment,
    /// This call decided the payment and answers before its phase 2: the
    /// caller runs [`Gateway::phase_two`] next (if it does not, the retry
    /// loop, [`Gateway::resume`], will).
    pub phase_two_pending: bool,
}

pub struct Gateway<P> {
    state: Mutex<State>,
    wal: Wal,
    participant: P,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    options: GatewayOptions,
    /// Verified against for unknown usernames, so they cost a hash too.
    dummy_hash: String,
    /// Per-payment warnings about a failing bank, thinned out.
    warnings: RepeatedWarnings,
}

/// A pre-computed argon2id hash of a random password nobody knows.
fn dummy_hash(entropy: &dyn Entropy, cost: users::HashCost) -> String {
    let password: String = salt(entropy)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    PasswordHasher::new(cost).hash(&password, salt(entropy))
}

/// Writes the setup file's users on a first start (hashing each password
/// once, with one hasher).
fn seed(
    wal: &Wal,
    state: &mut State,
    setup_users: Vec<SetupUser>,
    cost: users::HashCost,
    entropy: &dyn Entropy,
) -> Result<(), GatewayOpenError> {
    let mut hasher = PasswordHasher::new(cost);
    for user in setup_users {
        if !users::valid_username(&user.username) || state.users.contains_key(&user.username) {
            return Err(GatewayOpenError::Seed(format!(
                "bad or duplicate username {:?}",
                user.username
            )));
        }
        let record = GatewayRecord::UserRegistered {
            username: user.username,
            password_hash: hasher.hash(&user.password, salt(entropy)),
            bank: user.bank,
            account: user.account,
        };
        let lsn = wal.append(record.kind(), &record.encode())?;
        apply(state, lsn, &record);
    }
    Ok(())
}

/// A fresh random salt for a password hash.
fn salt(entropy: &dyn Entropy) -> [u8; SALT_LEN] {
    let mut bytes = [0u8; SALT_LEN];
    entropy.fill(&mut bytes);
    bytes
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

impl<P: Participant> Gateway<P> {
    /// Opens the decision log; on first start writes the setup users
    /// (hashing their passwords once). Transactions found without a decision
    /// are decided ABORT here (presumed abort); [`Gateway::resume`] then
    /// finishes their phase 2.
    pub fn open(
        storage: Arc<dyn Storage>,
        options: GatewayOptions,
        participant: P,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        setup_users: impl FnOnce() -> Vec<SetupUser>,
    ) -> Result<Gateway<P>, GatewayOpenError> {
        let recovered = Wal::open_storage(storage, options.wal)?;
        let wal = recovered.wal;
        let mut state = State {
            applied_lsn: Lsn(0),
            last_snapshot_lsn: Lsn(0),
            users: OrdMap::new(),
            lockout: Lockout::new(options.login),
            sessions: Sessions::new(options.sessions),
            payments: SharedHashMap::new(),
            forgettable: BTreeSet::new(),
            settling: BTreeSet::new(),
            waiters: HashMap::new(),
            waiting: 0,
            in_flight: 0,
            logins_per_address: TokenBuckets::new(
                options.admission.per_address,
                options.admission.keys_max,
            ),
            logins_per_username: TokenBuckets::new(
                options.admission.per_username,
                options.admission.keys_max,
            ),
        };
        if let Some(snapshot) = &recovered.snapshot {
            restore(&mut state, &snapshot.payload)
                .map_err(|error| GatewayOpenError::Replay(format!("snapshot: {error}")))?;
            state.applied_lsn = snapshot.lsn;
            state.last_snapshot_lsn = snapshot.lsn;
        }
        let from = state.applied_lsn.next().max(wal.first_lsn());
        let replayed = wal.replay(from, |record| {
            let decoded = GatewayRecord::decode(record.kind, record.payload).map_err(|error| {
                GatewayOpenError::Record {
                    lsn: record.lsn,
                    detail: error.to_string(),
                }
            })?;
            apply(&mut state, record.lsn, &decoded);
            Ok::<_, GatewayOpenError>(())
        });
        match replayed {
            Ok(_) => {}
            Err(ReplayError::Visitor(error)) => return Err(error),
            Err(other) => return Err(GatewayOpenError::Replay(other.to_string())),
        }
        if state.applied_lsn == Lsn(0) {
            seed(
                &wal,
                &mut state,
                setup_users(),
                options.password_cost,
                &*entropy,
            )?;
        }
        let now = clock.now_ms();
        let mut undecided: Vec<TxnId> = state
            .payments
            .iter()
            .filter(|(_, entry)| entry.decision.is_none())
            .map(|(txn, _)| *txn)
            .collect();
        undecided.sort();
        for txn in undecided {
            let record = GatewayRecord::Decided {
                txn,
                commit: false,
                reason: "gateway restarted before deciding".into(),
                at_ms: now,
            };
            let lsn = wal.append(record.kind(), &record.encode())?;
            apply(&mut state, lsn, &record);
        }
        let dummy_hash = dummy_hash(&*entropy, options.password_cost);
        Ok(Gateway {
            state: Mutex::new(state),
            wal,
            participant,
            clock,
            entropy,
            options,
            dummy_hash,
            warnings: RepeatedWarnings::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("gateway state lock poisoned")
    }

    /// One line per vote as it arrives, so an operator (or a test) can see
    /// which banks had answered when a payment was decided; a bank that
    /// gives no vote is warned about once per window (`left_out`: how many
    /// more since the last line).
    fn log_vote(&self, txn: TxnId, bank: &BankName, vote: &Result<Vote, CallError>) {
        match vote {
            // The common case: a debug line (the payment's own line says how it ended).
            Ok(Vote::Yes) => tracing::debug!(txn_id = %txn, bank = bank.as_str(), "vote YES"),
            Ok(Vote::No { reason }) => {
                tracing::info!(txn_id = %txn, bank = bank.as_str(), reason, "vote NO")
            }
            Err(error) => {
                let now = self.clock.now_ms();
                if let Some(left_out) = self.warnings.admit(Repeated::NoVote, bank, now) {
                    tracing::warn!(txn_id = %txn, bank = bank.as_str(), %error, left_out, "no vote");
                }
            }
        }
    }

    pub fn options(&self) -> &GatewayOptions {
        &self.options
    }

    /// Writes a record and applies it under the caller's lock; returns the
    /// LSN to wait on (outside the lock) before answering.
    fn record(&self, state: &mut State, record: GatewayRecord) -> Result<Lsn, GatewayError> {
        let lsn = self.wal.enqueue(record.kind(), &record.encode())?;
        apply(state, lsn, &record);
        Ok(lsn)
    }

    /// Admits a registration: the shape of the username and password, a
    /// known bank, a free username, and the rate limit of the client's
    /// address. Returns the salt to hash the password with; nothing is
    /// written yet.
    pub fn register_check(
        &self,
        username: &str,
        password: &str,
        bank: &BankName,
        address: Option<IpAddr>,
    ) -> Result<[u8; SALT_LEN], GatewayError> {
        if !users::valid_username(username) {
            return Err(GatewayError::InvalidArgument(
                "username must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        if !users::valid_password(password) {
            return Err(GatewayError::InvalidArgument(
                "password must be 6 to 128 bytes".into(),
            ));
        }
        if !self.options.banks.contains(bank) {
            return Err(GatewayError::NotFound(format!("unknown bank {bank:?}")));
        }
        let now = self.clock.now_ms();
        let mut state = self.lock();
        // Charged before the username is looked at, so probing which
        // usernames are taken costs the same rate as registering.
        state.charge_address(address, now)?;
        if state.users.contains_key(username) {
            return Err(GatewayError::AlreadyExists(format!(
                "username {username:?} is taken"
            )));
        }
        Ok(salt(&*self.entropy))
    }

    /// Creates a user whose password was hashed (with the salt from
    /// [`Gateway::register_check`]); answers once the user is durable.
    pub async fn register(
        &self,
        username: &str,
        password_hash: String,
        bank: &BankName,
        account: &AccountNo,
    ) -> Result<(), GatewayError> {
        assert!(users::valid_username(username));
        assert!(password_hash.starts_with("$argon2id$"));
        let lsn = {
            let mut state = self.lock();
            if state.users.contains_key(username) {
                return Err(GatewayError::AlreadyExists(format!(
                    "username {username:?} is taken"
                )));
            }
            self.record(
                &mut state,
                GatewayRecord::UserRegistered {
                    username: username.to_owned(),
                    password_hash,
                    bank: bank.clone(),
                    account: account.clone(),
                },
            )?
        };
        self.wal.wait_durable(lsn).await?;
        Ok(())
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
        let mut state = self.lock();
        state.charge_address(address, now)?;
        // Usernames are charged only in their valid shape, so the map holds
        // at most 64-byte keys. A full map admits the login untracked (the
        // address rate and the lockout still apply): refusing every new
        // username would let a flood of made-up names lock everyone out.
        if users::valid_username(username) {
            match state.logins_per_username.take(&username.to_owned(), now) {
                Ok(()) | Err(Refusal::Full { .. }) => {}
                Err(refusal) => return Err(rate_limited(Limited::Username, refusal)),
            }
        }
        if let Some(until) = state.lockout.locked_until(username, now) {
            return Err(GatewayError::LockedOut {
                seconds: (until - now).div_ceil(1000),
            });
        }
        let hash = state
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
        let mut state = self.lock();
        if !(matched && attempt.known) {
            // Only names of a valid shape are counted (no user has another),
            // so the lockout's keys stay small.
            if users::valid_username(&attempt.username) {
                state.lockout.record_failure(&attempt.username, now);
            }
            return Err(GatewayError::BadCredentials);
        }
        state.lockout.record_success(&attempt.username);
        Ok(state
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
        Ok(self.lock().sessions.authenticate(key, now)?)
    }

    pub fn logout(&self, key: &str) -> Result<(), GatewayError> {
        let now = self.clock.now_ms();
        Ok(self.lock().sessions.logout(key, now)?)
    }

    /// The bank and account of a user.
    pub fn user_account(&self, username: &str) -> Option<(BankName, AccountNo)> {
        self.lock()
            .users
            .get(username)
            .map(|user| (user.bank.clone(), user.account.clone()))
    }

    /// A payment, to the user who made it.
    pub fn payment(&self, user: &str, txn: TxnId) -> Result<Payment, GatewayError> {
        let state = self.lock();
        match state
            .payments
            .get(&txn)
            .and_then(|entry| self.visible(entry))
        {
            Some(payment) if payment.user == user => Ok(payment),
            Some(_) | None => Err(GatewayError::NotFound(format!("no payment {txn} of yours"))),
        }
    }

    fn check_request(&self, user: &str, request: &PaymentRequest) -> Result<(), GatewayError> {
        let invalid = |message: &str| Err(GatewayError::InvalidArgument(message.to_owned()));
        if request.amount.is_zero() {
            return invalid("amount must be positive");
        }
        if request.currency != self.options.currency {
            return invalid(&format!("currency must be {}", self.options.currency));
        }
        if request.from == request.to {
            return invalid("cannot pay yourself: source and destination are the same account");
        }
        if !self.options.banks.contains(&request.to.bank) {
            return Err(GatewayError::NotFound(format!(
                "unknown bank {:?}",
                request.to.bank
            )));
        }
        match self.user_account(user) {
            Some((bank, account))
                if bank == request.from.bank && account == request.from.account =>
            {
                Ok(())
            }
            Some(_) => Err(GatewayError::PermissionDenied(
                "you may pay only from your own account".into(),
            )),
            None => Err(GatewayError::PermissionDenied(format!(
                "unknown user {user:?}"
            ))),
        }
    }

    /// Makes a payment exactly once per txn id (see the idempotency table);
    /// answers once the decision is durable (see "When the client is
    /// answered" in docs/gateway-coordinator.md).
    pub async fn pay(&self, user: &str, request: PaymentRequest) -> Result<Paid, GatewayError> {
        self.check_request(user, &request)?;
        let txn = request.txn;
        let seen = {
            let mut state = self.lock();
            if let Some(entry) = state.payments.get(&txn) {
                let stored = replay_of(entry, user, &request)?;
                if stored.status != Status::Initiated {
                    Seen::Finished(Box::new(stored), entry.decided_lsn)
                } else if state.waiting >= self.options.waiters_max {
                    Seen::Busy(Box::new(self.visible(entry).map_or(
                        stored,
                        |mut payment| {
                            payment.replayed = true;
                            payment
                        },
                    )))
                } else {
                    state.waiting += 1;
                    Seen::InFlight
                }
            } else if request.amount > self.options.amount_max {
                // New ids only: a repeat of a payment made under a higher
                // maximum still gets its stored outcome.
                return Err(GatewayError::AmountAboveMax {
                    amount: request.amount,
                    max: self.options.amount_max,
                });
            } else if state.in_flight >= self.options.payments_in_flight_max {
                return Err(GatewayError::Overloaded {
                    bound: Bound::InFlight,
                    limit: self.options.payments_in_flight_max,
                });
            } else if state.settling.len() >= self.options.settling_max {
                return Err(GatewayError::Overloaded {
                    bound: Bound::Settling,
                    limit: self.options.settling_max,
                });
            } else {
                let now = self.clock.now_ms();
                let record = GatewayRecord::Initiated {
                    request: request.clone(),
                    user: user.to_owned(),
                    at_ms: now,
                };
                Seen::New(self.record(&mut state, record)?)
            }
        };
        let answered = |payment| Paid {
            payment,
            phase_two_pending: false,
        };
        let lsn = match seen {
            Seen::New(lsn) => lsn,
            // Same id still in flight: wait for its outcome, never a second 2PC.
            Seen::InFlight => {
                let _waiting = Waiting { gateway: self };
                return self.outcome(txn).await.map(answered);
            }
            // Too many waiting already: the payment as it stands.
            Seen::Busy(stored) => return Ok(answered(*stored)),
            Seen::Finished(stored, decided_lsn) => {
                self.wal.wait_durable(decided_lsn).await?;
                return Ok(answered(*stored));
            }
        };
        self.wal.wait_durable(lsn).await?;
        let (decision, reason) = self.phase_one(&request).await;
        let (lsn, answer_early) = {
            let mut state = self.lock();
            let now = self.clock.now_ms();
            let record = GatewayRecord::Decided {
                txn,
                commit: decision == Decision::Commit,
                reason,
                at_ms: now,
            };
            let lsn = self.record(&mut state, record)?;
            state.wake(txn);
            (lsn, state.settling.len() <= self.options.unsettled_max)
        };
        self.wal.wait_durable(lsn).await?;
        if !answer_early {
            self.phase_two(txn).await?;
        }
        let state = self.lock();
        let payment = state.payments[&txn]
            .payment
            .clone()
            .expect("a paid txn has its request");
        Ok(Paid {
            phase_two_pending: answer_early && !payment.ended,
            payment,
        })
    }

    /// Prepares every involved bank in parallel; the decision and its reason.
    async fn phase_one(&self, request: &PaymentRequest) -> (Decision, String) {
        let per_bank = legs_per_bank(request);
        let timeout = self.options.prepare_timeout;
        let votes = join_all(
            per_bank
                .iter()
                .map(|(bank, legs)| {
                    let call = self
                        .participant
                        .prepare(bank, request.txn, legs.clone(), timeout);
                    Box::pin(async move {
                        let vote = call.await;
                        self.log_vote(request.txn, bank, &vote);
                        vote
                    }) as CallFuture<'_, Vote>
                })
                .collect(),
        )
        .await;
        for vote in votes {
            match vote {
                Ok(Vote::Yes) => {}
                Ok(Vote::No { reason }) => return (Decision::Abort, reason),
                Err(error) => return (Decision::Abort, error.to_string()),
            }
        }
        (Decision::Commit, String::new())
    }

    /// Sends the decision to every bank of `txn` once; writes `Ended` if all
    /// acknowledged. Returns whether they did.
    pub async fn phase_two(&self, txn: TxnId) -> Result<bool, GatewayError> {
        let (decision, decided_lsn, banks) = {
            let state = self.lock();
            let Some(entry) = state.payments.get(&txn) else {
                return Ok(true);
            };
            let (Some((decision, _)), Some(payment), false) =
                (&entry.decision, &entry.payment, entry.ended)
            else {
                return Ok(true);
            };
            (
                *decision,
                entry.decided_lsn,
                legs_per_bank(&payment.request)
                    .into_iter()
                    .map(|(bank, _)| bank)
                    .collect::<Vec<_>>(),
            )
        };
        // Never send a decision the log could still lose (say, after the
        // log failed and memory is ahead of the disk).
        self.wal.wait_durable(decided_lsn).await?;
        let timeout = self.options.commit_timeout;
        let acks = join_all(
            banks
                .iter()
                .enumerate()
                .map(|(place, bank)| {
                    let call = match decision {
                        Decision::Commit => self.participant.commit(bank, txn, timeout),
                        Decision::Abort => self.participant.abort(bank, txn, timeout),
                    };
                    Box::pin(async move {
                        let ack = call.await;
                        if ack.is_ok() {
                            self.acknowledged(txn, place);
                        }
                        ack
                    }) as CallFuture<'_, ()>
                })
                .collect(),
        )
        .await;
        let mut acknowledged = true;
        for (bank, error) in banks
            .iter()
            .zip(&acks)
            .filter_map(|(bank, ack)| Some((bank, ack.as_ref().err()?)))
        {
            acknowledged = false;
            let now = self.clock.now_ms();
            if let Some(left_out) = self
                .warnings
                .admit(Repeated::PhaseTwoUnacknowledged, bank, now)
            {
                tracing::warn!(txn_id = %txn, bank = bank.as_str(), ?decision, %error, left_out, "phase 2 not acknowledged; will retry");
            }
        }
        if !acknowledged {
            return Ok(false);
        }
        let mut state = self.lock();
        if !state.payments.get(&txn).is_some_and(|entry| entry.ended) {
            self.record(&mut state, GatewayRecord::Ended { txn })?;
        }
        Ok(true)
    }

    /// Notes that the bank at `place` in the txn's [`legs_per_bank`]
    /// acknowledged phase 2.
    fn acknowledged(&self, txn: TxnId, place: usize) {
        let mut state = self.lock();
        if let Some(entry) = state.payments.get_mut(&txn) {
            Arc::make_mut(entry).acked |= 1 << place;
            state.wake(txn);
        }
    }

    /// Transactions decided but not yet acknowledged by every bank: phase 2
    /// is retried for each (after a restart, or after a bank was down).
    /// In id order, so a simulation replays identically.
    pub fn unfinished(&self) -> Vec<TxnId> {
        self.lock().settling.iter().copied().collect()
    }

    /// Decided payments touching `account` at `bank` that this bank has not
    /// acknowledged yet: a balance read now may not show them.
    pub fn unacknowledged(&self, bank: &BankName, account: &AccountNo) -> Vec<TxnId> {
        let state = self.lock();
        state
            .settling
            .iter()
            .filter(|txn| {
                state.payments.get(*txn).is_some_and(|entry| {
                    entry
                        .payment
                        .as_ref()
                        .is_some_and(|payment| touches(&payment.request, bank, account))
                        && awaits(entry, bank)
                })
            })
            .copied()
            .collect()
    }

    /// Resolves once `bank` has acknowledged phase 2 of every one of
    /// `txns` (or they ended), so a balance read after it shows them all.
    pub fn acknowledged_by<'a>(
        &'a self,
        bank: &'a BankName,
        txns: Vec<TxnId>,
    ) -> impl Future<Output = ()> + 'a {
        AcknowledgedFuture {
            gateway: self,
            bank,
            txns,
        }
    }

    /// Retries phase 2 once for every unfinished transaction; returns how
    /// many are still unfinished.
    pub async fn resume(&self) -> Result<usize, GatewayError> {
        let mut still = 0;
        for txn in self.unfinished() {
            if !self.phase_two(txn).await? {
                still += 1;
            }
        }
        Ok(still)
    }

    /// A bank's in-doubt question. Unknown ids are decided ABORT (durably,
    /// so they stay ABORT).
    pub async fn decision(&self, txn: TxnId) -> Result<Decision, GatewayError> {
        let (decision, lsn) = {
            let mut state = self.lock();
            match state.payments.get(&txn).map(|entry| &**entry) {
                Some(Entry {
                    decision: Some((decision, _)),
                    decided_lsn,
                    ..
                }) => (*decision, *decided_lsn),
                Some(_) => {
                    return Err(GatewayError::NotDecided(format!(
                        "transaction {txn} is not decided yet"
                    )));
                }
                None => {
                    let now = self.clock.now_ms();
                    let record = GatewayRecord::Decided {
                        txn,
                        commit: false,
                        reason: "unknown to the gateway when a bank asked".into(),
                        at_ms: now,
                    };
                    (Decision::Abort, self.record(&mut state, record)?)
                }
            }
        };
        self.wal.wait_durable(lsn).await?;
        Ok(decision)
    }

    /// Resolves with the payment once its decision is durable (the caller
    /// bounds the wait with its own timeout, then answers INITIATED).
    pub async fn outcome(&self, txn: TxnId) -> Result<Payment, GatewayError> {
        let (payment, decided_lsn) = DecidedFuture { gateway: self, txn }.await;
        self.wal.wait_durable(decided_lsn).await?;
        Ok(payment)
    }

    /// The current stored payment (for answering after a bounded wait).
    pub fn current(&self, txn: TxnId) -> Option<Payment> {
        self.lock()
            .payments
            .get(&txn)
            .and_then(|entry| self.visible(entry))
            .map(|mut payment| {
                payment.replayed = true;
                payment
            })
    }

    /// The payment as it may be shown outside: INITIATED until its decision
    /// is durable (a decision only in memory could still be lost).
    fn visible(&self, entry: &Entry) -> Option<Payment> {
        let mut payment = entry.payment.clone()?;
        if entry.decision.is_some() && entry.decided_lsn > self.wal.durable_lsn() {
            payment.status = Status::Initiated;
            payment.reason.clear();
            payment.ended = false;
        }
        Some(payment)
    }

    /// The error every request gets once the decision log failed.
    pub fn poisoned(&self) -> Option<AppendError> {
        self.wal.poisoned()
    }

    /// Snapshots the state and trims the decision log if `snapshot_every`
    /// records were written since the last snapshot, forgetting finished
    /// payments older than the retention. Blocking; returns whether it ran.
    pub fn checkpoint_if_due(&self) -> Result<bool, wal::CheckpointError> {
        let (lsn, users, payments) = {
            let mut state = self.lock();
            if state.applied_lsn.0 < state.last_snapshot_lsn.0 + self.options.snapshot_every {
                return Ok(false);
            }
            let cutoff = self
                .clock
                .now_ms()
                .saturating_sub(self.options.retention_ms);
            state.forget_decided_before(cutoff);
            (
                state.applied_lsn,
                state.users.clone(),
                state.payments.clone(),
            )
        };
        let image = snapshot(&users, &payments);
        // Gone before the write: while the clones live, the live maps share
        // nodes with them and copy each node they change.
        drop((users, payments));
        wal::block_on(self.wal.wait_durable(lsn))?;
        self.wal.checkpoint_with_snapshot(lsn, &image)?;
        self.lock().last_snapshot_lsn = lsn;
        Ok(true)
    }

    /// How many repeated requests are waiting on the in-flight `txn`.
    pub fn waiting_on(&self, txn: TxnId) -> usize {
        self.lock().waiters.get(&txn).map_or(0, Vec::len)
    }

    /// The decision log (for simulations that wait for it to settle).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// How many payments (and ids) the gateway remembers.
    pub fn remembered(&self) -> usize {
        self.lock().payments.len()
    }
}

const SNAPSHOT_VERSION: u8 = 1;

/// Users (by name) and payments (by txn id); sessions and login failures
/// are not kept.
fn snapshot(users: &OrdMap<String, User>, payments: &SharedHashMap<TxnId, Arc<Entry>>) -> Vec<u8> {
    let mut writer = wal::codec::Writer::default();
    writer.u8(SNAPSHOT_VERSION).u64(users.len() as u64);
    for user in users.values() {
        writer
            .str(&user.username)
            .str(user.password_hash())
            .str(user.bank.as_str())
            .str(user.account.as_str());
    }
    let mut payments: Vec<(&TxnId, &Arc<Entry>)> = payments.iter().collect();
    payments.sort_by_key(|(txn, _)| **txn);
    writer.u64(payments.len() as u64);
    for (txn, entry) in payments {
        writer.0.extend_from_slice(&txn.0);
        match &entry.payment {
            None => {
                writer.u8(0);
            }
            Some(payment) => {
                let request = &payment.request;
                writer
                    .u8(1)
                    .str(&payment.user)
                    .str(request.from.bank.as_str())
                    .str(request.from.account.as_str())
                    .str(request.to.bank.as_str())
                    .str(request.to.account.as_str())
                    .u64(request.amount.0)
                    .str(&request.currency)
                    .u64(payment.created_at_ms);
            }
        }
        match &entry.decision {
            None => writer.u8(0),
            Some((Decision::Commit, reason)) => writer.u8(1).str(reason),
            Some((Decision::Abort, reason)) => writer.u8(2).str(reason),
        };
        writer.u64(entry.decided_at_ms).u8(u8::from(entry.ended));
    }
    writer.0
}

fn restore(state: &mut State, bytes: &[u8]) -> Result<(), wal::codec::DecodeError> {
    use wal::codec::{DecodeError, Reader};
    let mut reader = Reader::new(bytes);
    if reader.u8()? != SNAPSHOT_VERSION {
        return Err(DecodeError("unsupported gateway snapshot version"));
    }
    let text = |reader: &mut Reader<'_>| reader.str().map(str::to_owned);
    for _ in 0..reader.u64()? {
        let user = User::new(
            text(&mut reader)?,
            text(&mut reader)?,
            read_bank(&mut reader)?,
            read_account(&mut reader)?,
        );
        state.users.insert(user.username.clone(), user);
    }
    for _ in 0..reader.u64()? {
        let txn = TxnId(reader.array16()?);
        let payment = match reader.u8()? {
            0 => None,
            1 => {
                let user = text(&mut reader)?;
                let from = read_endpoint(&mut reader)?;
                let to = read_endpoint(&mut reader)?;
                let amount = Amount(reader.u64()?);
                let currency = text(&mut reader)?;
                let created_at_ms = reader.u64()?;
                Some(Payment {
                    request: PaymentRequest {
                        txn,
                        from,
                        to,
                        amount,
                        currency,
                    },
                    user,
                    status: Status::Initiated,
                    reason: String::new(),
                    created_at_ms,
                    ended: false,
                    replayed: false,
                })
            }
            _ => return Err(DecodeError("bad payment flag")),
        };
        let decision = match reader.u8()? {
            0 => None,
            1 => Some((Decision::Commit, text(&mut reader)?)),
            2 => Some((Decision::Abort, text(&mut reader)?)),
            _ => return Err(DecodeError("bad decision")),
        };
        let decided_at_ms = reader.u64()?;
        let ended = match reader.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError("bad ended flag")),
        };
        let settling = payment.is_some() && decision.is_some() && !ended;
        if payment.is_some() && decision.is_none() {
            state.in_flight += 1;
        }
        let payment = payment.map(|mut payment| {
            if let Some((decision, reason)) = &decision {
                payment.status = match decision {
                    Decision::Commit => Status::Committed,
                    Decision::Abort => Status::Aborted,
                };
                payment.reason = reason.clone();
            }
            payment.ended = ended;
            payment
        });
        let entry = Entry {
            payment,
            decision,
            decided_lsn: Lsn(0),
            decided_at_ms,
            ended,
            acked: 0,
        };
        state.forgettable.extend(entry.forget_key(txn));
        state.payments.insert(txn, Arc::new(entry));
        if settling {
            state.settling.insert(txn);
        }
    }
    reader.finish()
}

/// What `pay` found for a txn id.
enum Seen {
    /// A new id: the LSN of its INITIATED record.
    New(Lsn),
    InFlight,
    /// In flight, and `waiters_max` repeats wait already.
    Busy(Box<Payment>),
    /// Decided: the stored outcome and the LSN of its decision.
    Finished(Box<Payment>, Lsn),
}

/// A repeat admitted to wait for an in-flight payment; leaves when dropped.
struct Waiting<'a, P> {
    gateway: &'a Gateway<P>,
}

impl<P> Drop for Waiting<'_, P> {
    fn drop(&mut self) {
        let mut state = self
            .gateway
            .state
            .lock()
            .expect("gateway state lock poisoned");
        assert!(state.waiting > 0);
        state.waiting -= 1;
    }
}

/// Resolves once a txn is decided (in memory: with the decision's LSN).
struct DecidedFuture<'a, P> {
    gateway: &'a Gateway<P>,
    txn: TxnId,
}

impl<P: Participant> Future for DecidedFuture<'_, P> {
    type Output = (Payment, Lsn);

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<(Payment, Lsn)> {
        let mut state = self.gateway.lock();
        let entry = state
            .payments
            .get(&self.txn)
            .map(|entry| Entry::clone(entry));
        match entry {
            Some(Entry {
                payment: Some(mut payment),
                decision: Some(_),
                decided_lsn,
                ..
            }) => {
                payment.replayed = true;
                Poll::Ready((payment, decided_lsn))
            }
            _ => {
                state.park(self.txn, context.waker());
                Poll::Pending
            }
        }
    }
}

/// The stored answer for a repeated id, or why the repeat is refused.
fn replay_of(entry: &Entry, user: &str, request: &PaymentRequest) -> Result<Payment, GatewayError> {
    let txn = request.txn;
    let Some(payment) = &entry.payment else {
        return Err(GatewayError::AlreadyExists(format!(
            "transaction id {txn} was already used and aborted"
        )));
    };
    if payment.user != user {
        return Err(GatewayError::AlreadyExists(format!(
            "transaction id {txn} was already used by another user"
        )));
    }
    if !payment.request.same_movement(request) {
        return Err(GatewayError::InvalidArgument(format!(
            "transaction id {txn} was already used for a different payment; use a new id"
        )));
    }
    let mut stored = payment.clone();
    stored.replayed = true;
    Ok(stored)
}

/// Whether a payment moves money in or out of `account` at `bank`.
fn touches(request: &PaymentRequest, bank: &BankName, account: &AccountNo) -> bool {
    (request.from.bank == *bank && request.from.account == *account)
        || (request.to.bank == *bank && request.to.account == *account)
}

/// Whether the payment still waits for `bank` to acknowledge its phase 2
/// (the bank's place in [`legs_per_bank`]: the payer's bank first).
fn awaits(entry: &Entry, bank: &BankName) -> bool {
    let Some(payment) = &entry.payment else {
        return false;
    };
    let place = if payment.request.from.bank == *bank {
        0
    } else {
        1
    };
    !entry.ended && entry.acked & (1 << place) == 0
}

/// Resolves once a bank acknowledged phase 2 of every txn in a list.
struct AcknowledgedFuture<'a, P> {
    gateway: &'a Gateway<P>,
    bank: &'a BankName,
    txns: Vec<TxnId>,
}

impl<P: Participant> Future for AcknowledgedFuture<'_, P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.gateway.lock();
        this.txns.retain(|txn| {
            state
                .payments
                .get(txn)
                .is_some_and(|entry| awaits(entry, this.bank))
        });
        match this.txns.first() {
            None => Poll::Ready(()),
            Some(txn) => {
                let txn = *txn;
                state.park(txn, context.waker());
                Poll::Pending
            }
        }
    }
}

/// The legs each bank must prepare: one prepare per bank.
fn legs_per_bank(request: &PaymentRequest) -> Vec<(BankName, Vec<Leg>)> {
    let debit = Leg {
        account: request.from.account.clone(),
        direction: Direction::Debit,
        amount: request.amount,
    };
    let credit = Leg {
        account: request.to.account.clone(),
        direction: Direction::Credit,
        amount: request.amount,
    };
    if request.from.bank == request.to.bank {
        vec![(request.from.bank.clone(), vec![debit, credit])]
    } else {
        vec![
            (request.from.bank.clone(), vec![debit]),
            (request.to.bank.clone(), vec![credit]),
        ]
    }
}

/// Applies the record written at `lsn` to the in-memory state (live and on
/// replay alike).
fn apply(state: &mut State, lsn: Lsn, record: &GatewayRecord) {
    assert!(lsn > state.applied_lsn, "records apply in log order");
    state.applied_lsn = lsn;
    match record {
        GatewayRecord::UserRegistered {
            username,
            password_hash,
            bank,
            account,
        } => {
            state.users.insert(
                username.clone(),
                User::new(
                    username.clone(),
                    password_hash.clone(),
                    bank.clone(),
                    account.clone(),
                ),
            );
        }
        GatewayRecord::Initiated {
            request,
            user,
            at_ms,
        } => apply_initiated(state, request, user, *at_ms),
        GatewayRecord::Decided {
            txn,
            commit,
            reason,
            at_ms,
        } => apply_decided(state, lsn, *txn, *commit, reason, *at_ms),
        GatewayRecord::Ended { txn } => {
            if let Some(entry) = state.payments.get_mut(txn) {
                let entry = Arc::make_mut(entry);
                entry.ended = true;
                if let Some(payment) = &mut entry.payment {
                    payment.ended = true;
                }
                state.forgettable.extend(entry.forget_key(*txn));
            }
            state.settling.remove(txn);
            state.wake(*txn);
        }
    }
}

/// A new payment: in flight until its decision.
fn apply_initiated(state: &mut State, request: &PaymentRequest, user: &str, at_ms: u64) {
    let payment = Payment {
        request: request.clone(),
        user: user.to_owned(),
        status: Status::Initiated,
        reason: String::new(),
        created_at_ms: at_ms,
        ended: false,
        replayed: false,
    };
    state.in_flight += 1;
    let earlier = state
        .payments
        .insert(request.txn, Arc::new(Entry::undecided(Some(payment))));
    // An id forgotten after its retention may be used again; if a crash
    // lost the snapshot that forgot it, replay meets both.
    if let Some(earlier) = earlier
        && earlier.payment.is_some()
        && earlier.decision.is_none()
    {
        state.in_flight -= 1;
    }
}

/// A decision (for a payment, or for an id first heard of from a bank):
/// the payment leaves the in-flight count and waits for phase 2.
fn apply_decided(state: &mut State, lsn: Lsn, txn: TxnId, commit: bool, reason: &str, at_ms: u64) {
    let entry = Arc::make_mut(
        state
            .payments
            .entry(txn)
            .or_insert_with(|| Arc::new(Entry::undecided(None))),
    );
    if entry.payment.is_some() && entry.decision.is_none() {
        assert!(state.in_flight > 0);
        state.in_flight -= 1;
    }
    entry.decided_at_ms = at_ms;
    entry.decided_lsn = lsn;
    let decision = if commit {
        Decision::Commit
    } else {
        Decision::Abort
    };
    entry.decision = Some((decision, reason.to_owned()));
    if let Some(payment) = &mut entry.payment {
        payment.status = if commit {
            Status::Committed
        } else {
            Status::Aborted
        };
        payment.reason = reason.to_owned();
        if !entry.ended {
            state.settling.insert(txn);
        }
    }
    state.forgettable.extend(entry.forget_key(txn));
}

/// Polls every future to completion, concurrently; results in order.
fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> JoinAll<'a, T> {
    JoinAll {
        results: futures.iter().map(|_| None).collect(),
        futures: futures.into_iter().map(Some).collect(),
    }
}

struct JoinAll<'a, T> {
    futures: Vec<Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>>,
    results: Vec<Option<T>>,
}

impl<T> Future for JoinAll<'_, T> {
    type Output = Vec<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Vec<T>> {
        let this = self.get_mut();
        for (slot, result) in this.futures.iter_mut().zip(this.results.iter_mut()) {
            if let Some(future) = slot
                && let Poll::Ready(output) = future.as_mut().poll(context)
            {
                *result = Some(output);
                *slot = None;
            }
        }
        if this.futures.iter().all(Option::is_none) {
            Poll::Ready(
                this.results
                    .iter_mut()
                    .map(|result| result.take().expect("every future finished"))
                    .collect(),
            )
        } else {
            Poll::Pending
        }
    }
}

impl<T> Unpin for JoinAll<'_, T> {}
