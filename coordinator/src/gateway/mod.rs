//! The gateway core: users, sessions, the idempotent payment table and the
//! 2PC coordinator, made durable in a WAL (the decision log). The decision
//! table and the recovery table are in `docs/gateway-coordinator.md`.
//!
//! - [`state`]: the pure state machine (decide, then apply), which every
//!   record goes through, live and on replay;
//! - [`snapshot`]: its codec;
//! - [`history`]: finished payments older than the last checkpoint, in
//!   the storage layer's tables;
//! - [`access`]: registration, login and sessions, before and after hashing;
//! - [`payments`]: `pay` exactly once per txn id;
//! - [`two_phase`]: phase 1, phase 2, the phase-2 retry policy, banks'
//!   in-doubt questions;
//! - [`reads`]: read your writes for balances;
//! - [`waiting`]: wakers and futures, without a runtime;
//! - [`options`], [`error`].
//!
//! This module makes the state machine durable: a record is enqueued in
//! the log and applied under one lock, and nothing it decided is shown
//! outside before the log says it is durable. It knows nothing of gRPC or
//! an async runtime: banks are a [`Participant`], time a [`Clock`],
//! randomness an [`Entropy`]; async methods only await the participant's
//! and the log's futures.

mod access;
mod error;
mod history;
mod options;
mod payments;
mod reads;
mod snapshot;
mod state;
mod two_phase;
mod waiting;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use wal::{AppendError, Lsn, Storage, Wal};

pub use access::{LoginAttempt, Registration};
pub use error::{Bound, CheckpointError, GatewayError, GatewayOpenError, Limited};
pub use options::{
    AMOUNT_MAX_DEFAULT, AdmissionPolicy, Backoff, GatewayOptions, PAYMENTS_IN_FLIGHT_MAX_DEFAULT,
    PHASE_TWO_RETRY_DEFAULT, REGISTRATIONS_IN_FLIGHT_MAX_DEFAULT, RETENTION_MS_DEFAULT,
    SETTLING_MAX_DEFAULT, SetupUser, UNSETTLED_MAX_DEFAULT, WAITERS_MAX_DEFAULT,
};
pub use payments::Paid;
pub use state::Decision;

use crate::decision_log::GatewayRecord;
use crate::environment::{Clock, Entropy};
use crate::participant::Participant;
use crate::repeated::RepeatedWarnings;
use crate::users::{self, PasswordHasher};
use access::Access;
use history::History;
use state::GatewayState;
use two_phase::PhaseTwo;
use waiting::Waiters;

/// Everything under the gateway's one lock: the state machine, and beside
/// it what is this node's own.
struct Inner {
    state: GatewayState,
    access: Access,
    waiters: Waiters,
    phase_two: PhaseTwo,
    last_snapshot_lsn: Lsn,
}

pub struct Gateway<P> {
    inner: Mutex<Inner>,
    wal: Wal,
    /// Finished payments older than the last checkpoint; looked up under
    /// `inner`'s lock, so an entry moving there is always found in one or
    /// the other.
    history: History,
    participant: P,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    options: GatewayOptions,
    /// Verified against for unknown usernames, so they cost a hash too.
    dummy_hash: String,
    /// Per-payment warnings about a failing bank, thinned out.
    warnings: RepeatedWarnings,
    /// A phase-2 retry pass is running ([`Gateway::resume`]).
    resuming: AtomicBool,
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
        let (wal, history, mut state, last_snapshot_lsn) = recover(storage, &options)?;
        if state.applied_lsn == Lsn(0) {
            seed(&wal, &mut state, setup_users(), &options, &*entropy)?;
        }
        for abort in state.decide_presumed_aborts(clock.now_ms()) {
            let lsn = wal.append(abort.kind(), &abort.encode())?;
            state.apply(lsn, &abort);
        }
        let dummy_hash = access::dummy_hash(&*entropy, options.password_cost);
        Ok(Gateway {
            inner: Mutex::new(Inner {
                state,
                access: Access::new(&options),
                waiters: Waiters::default(),
                phase_two: PhaseTwo::default(),
                last_snapshot_lsn,
            }),
            wal,
            history,
            participant,
            clock,
            entropy,
            options,
            dummy_hash,
            warnings: RepeatedWarnings::default(),
            resuming: AtomicBool::new(false),
        })
    }
}

/// Recovery: the latest snapshot, the history tables it relies on, then
/// every record after it, through the state machine's `apply`. Any record
/// that does not decode stops it. Returns the log, the history, the state
/// and the snapshot's LSN (0 without one).
fn recover(
    storage: Arc<dyn Storage>,
    options: &GatewayOptions,
) -> Result<(Wal, History, GatewayState, Lsn), GatewayOpenError> {
    let recovered = Wal::open_storage(storage, options.wal)?;
    let wal = recovered.wal;
    let mut state = GatewayState::new();
    let mut history_generation = 0;
    if let Some(image) = &recovered.snapshot {
        history_generation = snapshot::decode(&mut state, &image.payload).map_err(|source| {
            GatewayOpenError::Snapshot {
                lsn: image.lsn,
                source,
            }
        })?;
        state.applied_lsn = image.lsn;
    }
    let history = History::open(
        Arc::clone(wal.storage()),
        options.tables,
        history_generation,
    )?;
    let snapshot_lsn = state.applied_lsn;
    let from = state.applied_lsn.next().max(wal.first_lsn());
    let replayed = wal.replay(from, |record| {
        let decoded = GatewayRecord::decode(record.kind, record.payload).map_err(|source| {
            GatewayOpenError::Record {
                lsn: record.lsn,
                source,
            }
        })?;
        state.apply(record.lsn, &decoded);
        Ok::<_, GatewayOpenError>(())
    });
    replayed.map_err(|error| match error.into_visitor() {
        Ok(error) => error,
        Err(log) => GatewayOpenError::Replay(log),
    })?;
    Ok((wal, history, state, snapshot_lsn))
}

/// Writes the setup file's users on a first start (hashing each password
/// once, with one hasher).
fn seed(
    wal: &Wal,
    state: &mut GatewayState,
    setup_users: Vec<SetupUser>,
    options: &GatewayOptions,
    entropy: &dyn Entropy,
) -> Result<(), GatewayOpenError> {
    let mut hasher = PasswordHasher::new(options.password_cost);
    for user in setup_users {
        if !users::valid_username(&user.username) {
            return Err(GatewayOpenError::SeedUser {
                username: user.username,
            });
        }
        let password_hash = hasher.hash(&user.password, access::salt(entropy));
        let record = state
            .decide_register(&user.username, password_hash, &user.bank, &user.account)
            .map_err(|_| GatewayOpenError::SeedUser {
                username: user.username.clone(),
            })?;
        let lsn = wal.append(record.kind(), &record.encode())?;
        state.apply(lsn, &record);
    }
    Ok(())
}

impl<P> Gateway<P> {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("gateway state lock poisoned")
    }

    /// Writes a record and applies it under the caller's lock, then wakes
    /// whoever waits on its txn; returns the LSN to wait on (outside the
    /// lock) before answering.
    fn record(&self, inner: &mut Inner, record: GatewayRecord) -> Result<Lsn, GatewayError> {
        let lsn = self.wal.enqueue(record.kind(), &record.encode())?;
        inner.state.apply(lsn, &record);
        if let Some(txn) = two_phase::ends(&record) {
            inner.phase_two.ended(txn);
        }
        if let Some(txn) = record.txn() {
            inner.waiters.wake(txn);
        }
        Ok(lsn)
    }

    pub fn options(&self) -> &GatewayOptions {
        &self.options
    }

    /// The error every request gets once the decision log failed.
    pub fn poisoned(&self) -> Option<AppendError> {
        self.wal.poisoned()
    }

    /// Checkpoints if `snapshot_every` records were written since the last
    /// one: the payments finished since then become a history table (and
    /// tables past the retention expire), then the snapshot of what stays
    /// in memory (users, unfinished payments) names the tables' generation,
    /// and the log is trimmed. The work is proportional to what changed
    /// since the last checkpoint. On failure the old snapshot and tables
    /// stand and the log keeps everything. Blocking; returns whether it ran.
    pub fn checkpoint_if_due(&self) -> Result<bool, CheckpointError> {
        {
            let inner = self.lock();
            let written = inner.state.applied_lsn.0 - inner.last_snapshot_lsn.0;
            if written < self.options.snapshot_every {
                return Ok(false);
            }
        }
        self.checkpoint()?;
        Ok(true)
    }

    /// A checkpoint now, however few records were written since the last
    /// (see [`Gateway::checkpoint_if_due`]). Blocking.
    pub fn checkpoint(&self) -> Result<(), CheckpointError> {
        let (lsn, users, mut payments, moving) = {
            let mut inner = self.lock();
            let moving = inner.state.take_recent();
            (
                inner.state.applied_lsn,
                inner.state.users.clone(),
                inner.state.payments.clone(),
                moving,
            )
        };
        let cutoff = self
            .clock
            .now_ms()
            .saturating_sub(self.options.retention_ms);
        let added = wal::block_on(self.wal.wait_durable(lsn))
            .map_err(|error| CheckpointError::Log(error.into()))
            .and_then(|_| Ok(self.history.add(&moving, cutoff)?));
        let generation = match added {
            Ok(generation) => generation,
            Err(error) => {
                self.lock().state.keep_unmoved(&moving);
                return Err(error);
            }
        };
        self.lock().state.forget_moved(&moving);
        for (txn, _) in &moving {
            payments.remove(txn);
        }
        let image = snapshot::encode(generation, &users, &payments);
        // Gone before the write: while the clones live, the live maps share
        // nodes with them and copy each node they change.
        drop((users, payments, moving));
        self.wal.checkpoint_with_snapshot(lsn, &image)?;
        self.lock().last_snapshot_lsn = lsn;
        Ok(())
    }

    /// The decision log (for simulations that wait for it to settle).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// How many payments (and ids) the gateway holds in memory: unfinished
    /// ones, and those finished since the last checkpoint.
    pub fn in_memory(&self) -> usize {
        self.lock().state.payments.len()
    }

    /// The history tables (for tools and tests).
    pub fn history_tables(&self) -> &wal::table::Store {
        self.history.store()
    }
}
