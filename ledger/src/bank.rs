//! A bank: the participant state machine made durable in a WAL.
//!
//! Every request is decided and applied under one lock, and its record is
//! placed in the log in the same critical section, so the log's order is the
//! order the state changed in and replay reproduces it exactly. The answer is
//! sent only after the record that decided it is durable (waited for outside
//! the lock, so many requests share one fsync). Reads wait for everything
//! they can see to be durable.
//!
//! This module knows nothing of gRPC or of any async runtime: its async
//! methods only await the log's own futures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wal::table::{StoreOptions, TableError};
use wal::{AppendError, Lsn, OpenError, Options, RecordKind, ReplayError, Storage, Wal};

use crate::history::History;
use crate::in_doubt::{Asking, InDoubtPolicy};
use crate::participant::{Account, ApplyError, Ledger, ParticipantError, Step, TxnState, Vote};
use crate::record::{LedgerRecord, VoidReason};
use money::Amount;
use money::{AccountNo, Leg, TxnId};

use crate::txn::InvalidRequest;
use wal::codec::DecodeError;

/// Milliseconds in the default retention of decided transactions (7 days).
pub const DECIDED_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;

#[derive(Clone, Copy, Debug)]
pub struct BankOptions {
    pub wal: Options,
    /// Take a snapshot (and trim the log) after this many records.
    pub snapshot_every: u64,
    /// Decided transactions are forgotten this long after their decision.
    pub decided_retention_ms: u64,
    /// The largest amount one leg of a prepare may move; a larger one is
    /// refused as invalid, whatever the gateway allowed.
    pub amount_max: Amount,
    /// When to ask the coordinator about a transaction in doubt.
    pub in_doubt: InDoubtPolicy,
    /// The history tables: how many, and how they merge.
    pub tables: StoreOptions,
}

/// The default largest leg: the gateway's default largest payment
/// (999,999.99 in major units).
pub const AMOUNT_MAX_DEFAULT: Amount = Amount(99_999_999);

impl Default for BankOptions {
    fn default() -> BankOptions {
        BankOptions {
            wal: Options::default(),
            snapshot_every: 100_000,
            decided_retention_ms: DECIDED_RETENTION_MS_DEFAULT,
            amount_max: AMOUNT_MAX_DEFAULT,
            in_doubt: InDoubtPolicy::default(),
            tables: StoreOptions::default(),
        }
    }
}

/// An account to create on a bank's first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub account: AccountNo,
    pub owner: String,
    pub balance: Amount,
}

/// Opening a bank's data directory failed.
#[derive(Debug, thiserror::Error)]
pub enum BankOpenError {
    #[error(transparent)]
    Wal(#[from] OpenError),
    #[error("ledger snapshot is unreadable: {0}")]
    Snapshot(DecodeError),
    #[error("the history tables cannot be opened: {0}")]
    History(#[from] TableError),
    #[error("ledger record at lsn {lsn} is unreadable: {source}")]
    Record { lsn: Lsn, source: DecodeError },
    #[error("replaying the ledger failed: {0}")]
    Replay(#[source] ReplayError<std::convert::Infallible>),
    #[error("the recovered ledger breaks an invariant: {0}")]
    Invariant(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(
        "this data directory belongs to bank {found:?} ({found_currency}), not {expected:?} ({expected_currency})"
    )]
    WrongBank {
        found: String,
        found_currency: String,
        expected: String,
        expected_currency: String,
    },
    #[error("reading the accounts to seed failed: {0}")]
    Seeds(String),
    #[error("seeding account {account} failed: {source}")]
    Seed {
        account: AccountNo,
        source: ParticipantError,
    },
    #[error("writing the first records failed: {0}")]
    Append(#[from] AppendError),
}

/// A request that failed.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error(transparent)]
    Refused(ParticipantError),
    /// The log failed; the bank must stop (its memory may be ahead of disk).
    #[error("storage failed; the bank must restart: {0}")]
    Storage(#[from] AppendError),
    /// The history tables could not be read; the bank must stop.
    #[error("the history tables failed; the bank must restart: {reason}")]
    History { reason: String },
}

impl BankError {
    /// Whether the bank must stop (fail-stop): its storage failed.
    pub fn stops_the_bank(&self) -> bool {
        matches!(self, BankError::Storage(_) | BankError::History { .. })
    }
}

impl From<ParticipantError> for BankError {
    fn from(error: ParticipantError) -> BankError {
        match error {
            ParticipantError::History { reason } => BankError::History { reason },
            refused => BankError::Refused(refused),
        }
    }
}

/// Why a checkpoint did not complete; the old snapshot and tables stand.
pub use wal::table::CheckpointError;

/// What opening found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    pub created: bool,
    pub snapshot_lsn: Option<Lsn>,
    pub replayed: u64,
    pub accounts: usize,
    pub in_doubt: usize,
    pub torn_tail: Option<(String, u64, u64)>,
}

/// A transaction the bank voted YES on and has no decision for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubt {
    pub txn: TxnId,
    pub legs: Vec<Leg>,
    pub prepared_at_ms: u64,
}

pub struct Bank {
    /// When each transaction in doubt is next asked about (its own lock:
    /// never held with the ledger's).
    asking: Mutex<Asking>,
    ledger: Mutex<Ledger>,
    /// Decided transactions older than the last checkpoint.
    history: History,
    wal: Wal,
    options: BankOptions,
    last_snapshot_lsn: AtomicU64,
}

impl Bank {
    /// Opens the bank in `storage`: recovers it, or on first start writes
    /// its genesis record and the accounts `seeds` returns (called only then).
    pub fn open(
        storage: Arc<dyn Storage>,
        bank: &str,
        currency: &str,
        seeds: impl FnOnce() -> Result<Vec<Seed>, String>,
        options: BankOptions,
    ) -> Result<(Bank, OpenReport), BankOpenError> {
        let recovered = Wal::open_storage(storage, options.wal)?;
        let wal = recovered.wal;
        let (mut ledger, history_generation, snapshot_lsn) = match &recovered.snapshot {
            Some(snapshot) => {
                let (ledger, generation) =
                    Ledger::decode_snapshot(&snapshot.payload).map_err(BankOpenError::Snapshot)?;
                (ledger, generation, Some(snapshot.lsn))
            }
            None => (Ledger::new(), 0, None),
        };
        let history = History::open(
            Arc::clone(wal.storage()),
            options.tables,
            history_generation,
        )?;
        let from = ledger.applied_lsn().next().max(wal.first_lsn());
        let replayed = replay(&wal, &mut ledger, from)?;
        let created = ledger.applied_lsn() == Lsn(0);
        if created {
            let seeds = seeds().map_err(BankOpenError::Seeds)?;
            seed(&wal, &mut ledger, bank, currency, &seeds)?;
        } else if ledger.bank() != bank || ledger.currency() != currency {
            return Err(BankOpenError::WrongBank {
                found: ledger.bank().to_owned(),
                found_currency: ledger.currency().to_owned(),
                expected: bank.to_owned(),
                expected_currency: currency.to_owned(),
            });
        }
        ledger
            .check_invariants()
            .map_err(BankOpenError::Invariant)?;
        let report = OpenReport {
            created,
            snapshot_lsn,
            replayed,
            accounts: ledger.accounts().count(),
            in_doubt: ledger.pending().len(),
            torn_tail: recovered.report.torn_tail,
        };
        let pending_at_start = ledger.pending().into_iter().map(|(txn, _, _)| txn);
        let asking = Mutex::new(Asking::new(options.in_doubt, pending_at_start));
        let bank = Bank {
            asking,
            ledger: Mutex::new(ledger),
            history,
            wal,
            options,
            last_snapshot_lsn: AtomicU64::new(snapshot_lsn.map_or(0, |lsn| lsn.0)),
        };
        Ok((bank, report))
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger lock poisoned")
    }

    pub fn name(&self) -> String {
        self.lock().bank().to_owned()
    }

    pub fn currency(&self) -> String {
        self.lock().currency().to_owned()
    }

    /// Decides under the lock, writes and applies the record if one is
    /// needed, then waits (outside the lock) until the answer is durable.
    async fn execute<T>(
        &self,
        decide: impl FnOnce(&Ledger, &History) -> Result<Step<T>, ParticipantError>,
    ) -> Result<T, BankError> {
        let (answer, durable_after, written) = {
            let mut ledger = self.lock();
            match decide(&ledger, &self.history)? {
                Step::Known { answer, after } => (answer, after, None),
                Step::Write { record, answer } => {
                    let lsn = self.wal.enqueue(record.kind(), &record.encode())?;
                    ledger
                        .apply(lsn, &record)
                        .expect("a decided record always applies");
                    (answer, lsn, Some(record))
                }
            }
        };
        self.wal.wait_durable(durable_after).await?;
        if let Some(record) = written {
            count(&record);
        }
        Ok(answer)
    }

    /// 2PC phase 1. A YES is durable (holds included) before it is returned.
    pub async fn prepare(&self, txn: TxnId, legs: &[Leg], now_ms: u64) -> Result<Vote, BankError> {
        let max = self.options.amount_max;
        if legs.iter().any(|leg| leg.amount > max) {
            return Err(ParticipantError::Invalid(InvalidRequest::AmountAboveMax { max }).into());
        }
        self.execute(|ledger, history| ledger.decide_prepare(txn, legs, now_ms, history))
            .await
    }

    /// 2PC phase 2, commit: posts the pending transfer.
    pub async fn commit(&self, txn: TxnId, now_ms: u64) -> Result<(), BankError> {
        self.execute(|ledger, history| ledger.decide_commit(txn, now_ms, history))
            .await
    }

    /// 2PC phase 2, abort: voids the pending transfer (or remembers the
    /// abort of an unknown one, so a late prepare votes NO).
    pub async fn abort(&self, txn: TxnId, now_ms: u64) -> Result<(), BankError> {
        self.execute(|ledger, history| ledger.decide_abort(txn, now_ms, history))
            .await
    }

    /// Opens an account, numbering it if `account` is `None`.
    pub async fn open_account(
        &self,
        account: Option<AccountNo>,
        owner: &str,
        balance: Amount,
    ) -> Result<AccountNo, BankError> {
        self.execute(|ledger, _| {
            let number = account.unwrap_or_else(|| ledger.next_account_no());
            let step = ledger.decide_open_account(number.clone(), owner, balance)?;
            Ok(match step {
                Step::Write { record, .. } => Step::Write {
                    record,
                    answer: number,
                },
                Step::Known { after, .. } => Step::Known {
                    answer: number,
                    after,
                },
            })
        })
        .await
    }

    /// An account as of everything durable.
    pub async fn account(&self, number: &AccountNo) -> Result<Account, BankError> {
        let (account, seen) = {
            let ledger = self.lock();
            let account = ledger.account(number).cloned().ok_or_else(|| {
                ParticipantError::UnknownAccount {
                    account: number.clone(),
                }
            })?;
            (account, ledger.applied_lsn())
        };
        self.wal.wait_durable(seen).await?;
        Ok(account)
    }

    /// The transactions in doubt to ask the coordinator about now, by the
    /// in-doubt policy (`BankOptions::in_doubt`, see `in_doubt`); each is
    /// scheduled for its next question as it is returned, so the caller
    /// asks each once and goes on; the answer, when it comes, is a commit
    /// or an abort like any other.
    pub fn in_doubt_due(&self, now_ms: u64) -> Vec<TxnId> {
        let pending: Vec<(TxnId, u64)> = self
            .lock()
            .pending()
            .into_iter()
            .map(|(txn, _, prepared_at_ms)| (txn, prepared_at_ms))
            .collect();
        self.asking
            .lock()
            .expect("in-doubt schedule lock poisoned")
            .due(&pending, now_ms)
    }

    /// Every pending transaction in memory, oldest first, including one
    /// whose prepare is still on its way to the disk.
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        in_doubt_of(&self.lock())
    }

    /// Every pending transaction as of everything durable, oldest first:
    /// what a crash now would still hold. A prepare not yet durable has not
    /// voted and is not listed before it is.
    pub async fn in_doubt_durable(&self) -> Result<Vec<InDoubt>, BankError> {
        let (doubts, seen) = {
            let ledger = self.lock();
            (in_doubt_of(&ledger), ledger.applied_lsn())
        };
        self.wal.wait_durable(seen).await?;
        Ok(doubts)
    }

    /// What this bank holds for each of `txns`, in order, as of everything
    /// durable (from memory, else the history tables; `None`: never
    /// prepared here, or forgotten after the retention). Looked up under
    /// the lock, so a transaction moving to the history is found in one
    /// place or the other.
    pub async fn txns_durable(&self, txns: &[TxnId]) -> Result<Vec<Option<TxnState>>, BankError> {
        let (states, seen) = {
            let ledger = self.lock();
            let states = txns
                .iter()
                .map(|txn| self.find_txn(&ledger, *txn))
                .collect::<Result<Vec<_>, _>>()?;
            (states, ledger.applied_lsn())
        };
        self.wal.wait_durable(seen).await?;
        Ok(states)
    }

    /// The error every request gets once the log failed.
    pub fn poisoned(&self) -> Option<AppendError> {
        self.wal.poisoned()
    }

    /// The ledger's log (for simulations that wait for it to settle).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Looks at the state under the lock (for audits and simulations).
    pub fn inspect<T>(&self, look: impl FnOnce(&Ledger) -> T) -> T {
        look(&self.lock())
    }

    /// A copy of the state in memory (for tests and audits).
    pub fn ledger(&self) -> Ledger {
        self.lock().clone()
    }

    /// What the bank knows of `txn`: in memory, else in the history (not
    /// waiting for durability: for audits and simulations).
    pub fn txn(&self, txn: TxnId) -> Result<Option<TxnState>, BankError> {
        self.find_txn(&self.lock(), txn)
    }

    /// `txn` in memory, else in the history tables (the caller holds the
    /// lock, so a transaction being moved is found in one or the other).
    fn find_txn(&self, ledger: &Ledger, txn: TxnId) -> Result<Option<TxnState>, BankError> {
        if let Some(state) = ledger.txn(&txn) {
            return Ok(Some(state.clone()));
        }
        let found = self.history.find(txn).map_err(|error| BankError::History {
            reason: error.to_string(),
        })?;
        Ok(found.map(|entry| entry.state))
    }

    /// The history tables (for tools and tests).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Checkpoints if `snapshot_every` records were written since the last
    /// one. Blocking; returns whether it ran.
    pub fn checkpoint_if_due(&self, now_ms: u64) -> Result<bool, CheckpointError> {
        let applied = self.lock().applied_lsn();
        if applied.0 < self.last_snapshot_lsn.load(Ordering::Acquire) + self.options.snapshot_every
        {
            return Ok(false);
        }
        self.checkpoint(now_ms)?;
        Ok(true)
    }

    /// A checkpoint: the transactions decided since the last one become a
    /// history table (and tables past the retention expire), then the
    /// snapshot of what stays in memory (accounts, pending transactions)
    /// names the tables' generation, and the log is trimmed. The work is
    /// proportional to what changed since the last checkpoint. On failure
    /// the old snapshot and tables stand and the log keeps everything.
    /// Blocking.
    pub fn checkpoint(&self, now_ms: u64) -> Result<(), CheckpointError> {
        let (lsn, moving, mut image) = {
            let mut ledger = self.lock();
            let moving = ledger.take_recent();
            (ledger.applied_lsn(), moving, ledger.clone())
        };
        let cutoff = now_ms.saturating_sub(self.options.decided_retention_ms);
        let added = wal::block_on(self.wal.wait_durable(lsn))
            .map_err(|error| CheckpointError::Log(error.into()))
            .and_then(|_| Ok(self.history.add(moving.clone(), cutoff)?));
        let generation = match added {
            Ok(generation) => generation,
            Err(error) => {
                self.lock().keep_unmoved(&moving);
                return Err(error);
            }
        };
        self.lock().forget_moved(&moving);
        image.forget_moved(&moving);
        let bytes = image.encode_snapshot(generation);
        // Gone before the write: while the clone lives, the live ledger
        // shares nodes with it and copies each node it changes.
        drop(image);
        self.wal.checkpoint_with_snapshot(lsn, &bytes)?;
        self.last_snapshot_lsn.store(lsn.0, Ordering::Release);
        Ok(())
    }

    /// Flushes and closes the log.
    pub fn close(self) -> Result<(), AppendError> {
        self.wal.close()
    }
}

fn replay(wal: &Wal, ledger: &mut Ledger, from: Lsn) -> Result<u64, BankOpenError> {
    let result = wal.replay(from, |record| {
        let decoded = LedgerRecord::decode(record.kind, record.payload).map_err(|source| {
            BankOpenError::Record {
                lsn: record.lsn,
                source,
            }
        })?;
        ledger.apply(record.lsn, &decoded)?;
        Ok::<_, BankOpenError>(())
    });
    result.map_err(|error| match error.into_visitor() {
        Ok(error) => error,
        Err(log) => BankOpenError::Replay(log),
    })
}

fn seed(
    wal: &Wal,
    ledger: &mut Ledger,
    bank: &str,
    currency: &str,
    seeds: &[Seed],
) -> Result<(), BankOpenError> {
    let mut records = vec![LedgerRecord::Genesis {
        bank: bank.to_owned(),
        currency: currency.to_owned(),
    }];
    let mut seeded = Ledger::new();
    seeded.apply(Lsn(1), &records[0])?;
    for (index, seed) in seeds.iter().enumerate() {
        match seeded.decide_open_account(seed.account.clone(), &seed.owner, seed.balance) {
            Ok(Step::Write { record, .. }) => {
                seeded.apply(Lsn(index as u64 + 2), &record)?;
                records.push(record);
            }
            Ok(Step::Known { .. }) => unreachable!("opening an account always writes"),
            Err(source) => {
                return Err(BankOpenError::Seed {
                    account: seed.account.clone(),
                    source,
                });
            }
        }
    }
    for record in &records {
        let lsn = wal.append(record.kind(), &record.encode())?;
        ledger.apply(lsn, record)?;
    }
    Ok(())
}

fn in_doubt_of(ledger: &Ledger) -> Vec<InDoubt> {
    ledger
        .pending()
        .into_iter()
        .map(|(txn, legs, prepared_at_ms)| InDoubt {
            txn,
            legs,
            prepared_at_ms,
        })
        .collect()
}

/// Counts a durable 2PC step for the metrics (a no-op unless the process
/// installed a recorder): each vote, commit and abort once, when its record
/// is durable; replays and repeated calls are not counted again.
fn count(record: &LedgerRecord) {
    match record {
        LedgerRecord::Pending { .. } => {
            metrics::counter!("minipay_bank_prepares_total", "vote" => "yes").increment(1);
        }
        LedgerRecord::Posted { .. } => metrics::counter!("minipay_bank_commits_total").increment(1),
        LedgerRecord::Voided {
            reason: VoidReason::Aborted | VoidReason::AbortedBeforePrepare,
            ..
        } => metrics::counter!("minipay_bank_aborts_total").increment(1),
        LedgerRecord::Voided { .. } => {
            metrics::counter!("minipay_bank_prepares_total", "vote" => "no").increment(1);
            metrics::counter!("minipay_bank_aborts_total").increment(1);
        }
        LedgerRecord::Genesis { .. } | LedgerRecord::AccountOpened { .. } => {}
    }
}

/// Whether a WAL record kind is one of the ledger's (for `wal dump`).
pub fn is_ledger_kind(kind: RecordKind) -> bool {
    (0x10..=0x14).contains(&kind.0)
}
