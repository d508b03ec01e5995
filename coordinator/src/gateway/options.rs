//! What a gateway is configured with: deadlines, the banks it may reach,
//! login and session policies, retention, and every bound (`*_max`) with
//! its default.

use std::time::Duration;

use money::{AccountNo, Amount, BankName};
use wal::Options;
use wal::table::StoreOptions;

use crate::admission::RateLimit;
use crate::sessions::SessionPolicy;
use crate::users::{self, LoginPolicy};

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
    /// Finished payments are kept (and their ids answer repeats) this
    /// long; older ones are forgotten at the next checkpoint.
    pub retention_ms: u64,
    /// The history tables finished payments move to at each checkpoint:
    /// how many, and how they merge.
    pub tables: StoreOptions,
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
    /// Registrations between their check and their record (hashing the
    /// password, the bank opening the account), at most; past this a new
    /// one is refused at once ([`crate::GatewayError::Overloaded`]).
    pub registrations_in_flight_max: usize,
    /// How long a payment a bank has not acknowledged waits before phase 2
    /// is sent to it again.
    pub phase_two_retry: Backoff,
}

/// Exponential backoff between attempts at one thing: the first retry
/// after `wait_ms_min`, each next one twice as late, at most `wait_ms_max` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub wait_ms_min: u64,
    pub wait_ms_max: u64,
}

impl Backoff {
    /// The wait after an attempt, given the wait before it (if any).
    pub fn after(self, last_ms: Option<u64>) -> u64 {
        assert!(0 < self.wait_ms_min && self.wait_ms_min <= self.wait_ms_max);
        last_ms.map_or(self.wait_ms_min, |last| {
            last.saturating_mul(2)
                .clamp(self.wait_ms_min, self.wait_ms_max)
        })
    }
}

/// The default phase-2 retry: from half a second (the server's retry
/// timer) to four seconds.
pub const PHASE_TWO_RETRY_DEFAULT: Backoff = Backoff {
    wait_ms_min: 500,
    wait_ms_max: 4_000,
};

/// The default bound on registrations in flight.
pub const REGISTRATIONS_IN_FLIGHT_MAX_DEFAULT: usize = 1024;

impl GatewayOptions {
    /// A gateway of `banks` in `currency` with every other option at its
    /// default: 10 s phase deadlines, a snapshot every 100,000 records,
    /// seven days' retention, argon2id's recommended cost, and each bound's
    /// `*_DEFAULT`. Callers override what they need.
    pub fn new(banks: Vec<BankName>, currency: &str) -> GatewayOptions {
        GatewayOptions {
            wal: Options::default(),
            prepare_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(10),
            currency: currency.to_owned(),
            banks,
            login: LoginPolicy::default(),
            sessions: SessionPolicy::default(),
            snapshot_every: 100_000,
            retention_ms: RETENTION_MS_DEFAULT,
            tables: StoreOptions::default(),
            password_cost: users::HashCost::default(),
            unsettled_max: UNSETTLED_MAX_DEFAULT,
            payments_in_flight_max: PAYMENTS_IN_FLIGHT_MAX_DEFAULT,
            waiters_max: WAITERS_MAX_DEFAULT,
            settling_max: SETTLING_MAX_DEFAULT,
            amount_max: AMOUNT_MAX_DEFAULT,
            admission: AdmissionPolicy::default(),
            registrations_in_flight_max: REGISTRATIONS_IN_FLIGHT_MAX_DEFAULT,
            phase_two_retry: PHASE_TWO_RETRY_DEFAULT,
        }
    }
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
