//! The participant state machine: accounts, pending/posted/voided
//! transactions, and the decision table of `docs/bank-participant.md`.
//!
//! It is pure: requests are *decided* against the current state, producing
//! either a known answer or one record to write; records are *applied* to
//! change the state, live and on replay alike. It knows nothing of files,
//! threads, clocks (time comes in as `now_ms`) or the network.

use std::borrow::Cow;
use std::collections::HashMap;

use imbl::{HashMap as SharedHashMap, OrdMap, OrdSet};

use wal::Lsn;

use crate::history::History;
use crate::record::{self, LedgerRecord, VoidReason};
use money::Amount;
use money::{AccountNo, Direction, Leg, TxnId};

use crate::txn::{InvalidRequest, check_legs};
use wal::codec::{DecodeError, Reader, Writer};

/// Version 2 names the history tables' generation and holds only what is
/// not in them; version 1 (everything in memory) still opens.
const SNAPSHOT_VERSION: u8 = 2;

/// The longest owner name accepted, in bytes.
pub const OWNER_LEN_MAX: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub number: AccountNo,
    pub owner: String,
    pub balance: Amount,
    /// Sum of pending debits.
    pub held: Amount,
    /// Sum of pending credits.
    pub incoming: Amount,
}

impl Account {
    pub fn available(&self) -> Amount {
        self.balance
            .checked_sub(self.held)
            .expect("held never exceeds balance")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// Voted YES; holds in place.
    Pending { legs: Vec<Leg>, at_ms: u64 },
    /// Committed.
    Posted { legs: Vec<Leg>, at_ms: u64 },
    /// Voted NO or aborted; `legs` is known only if it was pending.
    Voided {
        reason: VoidReason,
        legs: Option<Vec<Leg>>,
        at_ms: u64,
    },
}

impl TxnState {
    /// When it was decided (posted or voided); `None` while pending.
    pub fn decided_at_ms(&self) -> Option<u64> {
        match self {
            TxnState::Pending { .. } => None,
            TxnState::Posted { at_ms, .. } | TxnState::Voided { at_ms, .. } => Some(*at_ms),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnEntry {
    pub state: TxnState,
    /// The record that put the transaction in this state.
    pub lsn: Lsn,
}

/// A participant's vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    Yes,
    No(VoidReason),
}

/// What answering a request takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// The answer is known; send it once `after` is durable.
    Known { answer: T, after: Lsn },
    /// Write (and apply) this record; send the answer once it is durable.
    Write { record: LedgerRecord, answer: T },
}

/// Requests the state machine refuses, changing nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParticipantError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("transaction {txn} was already prepared with other legs; the id cannot be reused")]
    TxnIdReused { txn: TxnId },
    #[error("protocol error: commit of unknown transaction {txn}")]
    CommitUnknown { txn: TxnId },
    #[error("protocol error: commit of aborted transaction {txn}")]
    CommitAfterAbort { txn: TxnId },
    #[error("protocol error: abort of committed transaction {txn}")]
    AbortAfterCommit { txn: TxnId },
    #[error("unknown account {account}")]
    UnknownAccount { account: AccountNo },
    #[error("account {account} already exists")]
    DuplicateAccount { account: AccountNo },
    /// The history tables could not be read: a storage failure.
    #[error("the history tables failed: {reason}")]
    History { reason: String },
}

/// A record that does not fit the state it is applied to: a broken log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record at lsn {lsn} does not apply: {reason}")]
pub struct ApplyError {
    pub lsn: Lsn,
    pub reason: &'static str,
}

/// One bank's state in memory: accounts, pending transactions, and those
/// decided since the last checkpoint; older decided ones are in the
/// [`History`], which the `decide_*` methods consult for an id not in
/// memory. Its maps are persistent (structurally shared), so a clone costs
/// O(1): a checkpoint clones the ledger under the bank's lock and works on
/// the clone after releasing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    bank: String,
    currency: String,
    accounts: OrdMap<AccountNo, Account>,
    txns: SharedHashMap<TxnId, TxnEntry>,
    /// Transactions decided since the last checkpoint: what the next one
    /// moves to the history.
    recent: OrdSet<TxnId>,
    applied_lsn: Lsn,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// The bank this ledger belongs to ("" before its genesis record).
    pub fn bank(&self) -> &str {
        &self.bank
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// LSN of the last record applied.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    pub fn account(&self, number: &AccountNo) -> Option<&Account> {
        self.accounts.get(number)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// A transaction held in memory (pending, or decided since the last
    /// checkpoint); [`crate::Bank::txn`] also looks in the history.
    pub fn txn(&self, txn: &TxnId) -> Option<&TxnState> {
        self.txns.get(txn).map(|entry| &entry.state)
    }

    /// Transactions held in memory.
    pub fn txns_in_memory(&self) -> usize {
        self.txns.len()
    }

    /// What is known of `txn`: memory first, then the history tables.
    fn known(
        &self,
        txn: TxnId,
        history: &History,
    ) -> Result<Option<Cow<'_, TxnEntry>>, ParticipantError> {
        if let Some(entry) = self.txns.get(&txn) {
            return Ok(Some(Cow::Borrowed(entry)));
        }
        let found = history
            .find(txn)
            .map_err(|error| ParticipantError::History {
                reason: error.to_string(),
            })?;
        Ok(found.map(Cow::Owned))
    }

    /// Pending (in-doubt) transactions: id, legs, when prepared.
    pub fn pending(&self) -> Vec<(TxnId, Vec<Leg>, u64)> {
        let mut pending: Vec<_> = self
            .txns
            .iter()
            .filter_map(|(txn, entry)| match &entry.state {
                TxnState::Pending { legs, at_ms } => Some((*txn, legs.clone(), *at_ms)),
                _ => None,
            })
            .collect();
        pending.sort_by_key(|(txn, _, at_ms)| (*at_ms, *txn));
        pending
    }

    pub fn decide_open_account(
        &self,
        account: AccountNo,
        owner: &str,
        balance: Amount,
    ) -> Result<Step<()>, ParticipantError> {
        if owner.is_empty() || owner.len() > OWNER_LEN_MAX {
            return Err(InvalidRequest::MalformedOwner.into());
        }
        if self.accounts.contains_key(&account) {
            return Err(ParticipantError::DuplicateAccount { account });
        }
        Ok(Step::Write {
            record: LedgerRecord::AccountOpened {
                account,
                owner: owner.to_owned(),
                balance,
            },
            answer: (),
        })
    }

    /// The smallest positive integer account number not in use.
    pub fn next_account_no(&self) -> AccountNo {
        let mut candidate = self.accounts.len() as u64 + 1;
        loop {
            let number = AccountNo::parse(&candidate.to_string()).expect("digits are valid");
            if !self.accounts.contains_key(&number) {
                return number;
            }
            candidate += 1;
        }
    }

    pub fn decide_prepare(
        &self,
        txn: TxnId,
        legs: &[Leg],
        now_ms: u64,
        history: &History,
    ) -> Result<Step<Vote>, ParticipantError> {
        check_legs(legs)?;
        if let Some(entry) = self.known(txn, history)? {
            let answer = match &entry.state {
                TxnState::Pending { legs: first, .. } | TxnState::Posted { legs: first, .. } => {
                    if first != legs {
                        return Err(ParticipantError::TxnIdReused { txn });
                    }
                    Vote::Yes
                }
                TxnState::Voided { reason, .. } => Vote::No(reason.clone()),
            };
            return Ok(Step::Known {
                answer,
                after: entry.lsn,
            });
        }
        let (record, answer) = match self.refusal(legs) {
            Some(reason) => (
                LedgerRecord::Voided {
                    txn,
                    reason: reason.clone(),
                    at_ms: now_ms,
                },
                Vote::No(reason),
            ),
            None => (
                LedgerRecord::Pending {
                    txn,
                    legs: legs.to_vec(),
                    at_ms: now_ms,
                },
                Vote::Yes,
            ),
        };
        Ok(Step::Write { record, answer })
    }

    /// Why this bank must vote NO on `legs`, if it must.
    fn refusal(&self, legs: &[Leg]) -> Option<VoidReason> {
        for leg in legs {
            let Some(account) = self.accounts.get(&leg.account) else {
                return Some(VoidReason::UnknownAccount(leg.account.clone()));
            };
            match leg.direction {
                Direction::Debit if account.available() < leg.amount => {
                    return Some(VoidReason::InsufficientFunds(leg.account.clone()));
                }
                Direction::Credit
                    if account
                        .balance
                        .checked_add(account.incoming)
                        .and_then(|total| total.checked_add(leg.amount))
                        .is_none() =>
                {
                    return Some(VoidReason::WouldOverflow(leg.account.clone()));
                }
                Direction::Debit | Direction::Credit => {}
            }
        }
        None
    }

    pub fn decide_commit(
        &self,
        txn: TxnId,
        now_ms: u64,
        history: &History,
    ) -> Result<Step<()>, ParticipantError> {
        match self.known(txn, history)? {
            None => Err(ParticipantError::CommitUnknown { txn }),
            Some(entry) => match &entry.state {
                TxnState::Pending { .. } => Ok(Step::Write {
                    record: LedgerRecord::Posted { txn, at_ms: now_ms },
                    answer: (),
                }),
                TxnState::Posted { .. } => Ok(Step::Known {
                    answer: (),
                    after: entry.lsn,
                }),
                TxnState::Voided { .. } => Err(ParticipantError::CommitAfterAbort { txn }),
            },
        }
    }

    pub fn decide_abort(
        &self,
        txn: TxnId,
        now_ms: u64,
        history: &History,
    ) -> Result<Step<()>, ParticipantError> {
        let reason = match self.known(txn, history)? {
            None => VoidReason::AbortedBeforePrepare,
            Some(entry) => match &entry.state {
                TxnState::Pending { .. } => VoidReason::Aborted,
                TxnState::Posted { .. } => return Err(ParticipantError::AbortAfterCommit { txn }),
                TxnState::Voided { .. } => {
                    return Ok(Step::Known {
                        answer: (),
                        after: entry.lsn,
                    });
                }
            },
        };
        Ok(Step::Write {
            record: LedgerRecord::Voided {
                txn,
                reason,
                at_ms: now_ms,
            },
            answer: (),
        })
    }

    /// Applies a record written at `lsn`. Live, `decide_*` guarantees it
    /// applies; on replay a record that does not is a broken log.
    pub fn apply(&mut self, lsn: Lsn, record: &LedgerRecord) -> Result<(), ApplyError> {
        let fail = |reason| ApplyError { lsn, reason };
        if lsn <= self.applied_lsn {
            return Err(fail("lsn not after the last applied one"));
        }
        match record {
            LedgerRecord::Genesis { bank, currency } => {
                if !self.bank.is_empty() {
                    return Err(fail("second genesis record"));
                }
                self.bank = bank.clone();
                self.currency = currency.clone();
            }
            LedgerRecord::AccountOpened {
                account,
                owner,
                balance,
            } => {
                if self.accounts.contains_key(account) {
                    return Err(fail("account opened twice"));
                }
                self.accounts.insert(
                    account.clone(),
                    Account {
                        number: account.clone(),
                        owner: owner.clone(),
                        balance: *balance,
                        held: Amount::ZERO,
                        incoming: Amount::ZERO,
                    },
                );
            }
            LedgerRecord::Pending { txn, legs, at_ms } => {
                self.apply_pending(lsn, *txn, legs, *at_ms)?
            }
            LedgerRecord::Posted { txn, at_ms } => self.apply_posted(lsn, *txn, *at_ms)?,
            LedgerRecord::Voided { txn, reason, at_ms } => {
                self.apply_voided(lsn, *txn, reason, *at_ms)?
            }
        }
        self.applied_lsn = lsn;
        Ok(())
    }

    fn apply_pending(
        &mut self,
        lsn: Lsn,
        txn: TxnId,
        legs: &[Leg],
        at_ms: u64,
    ) -> Result<(), ApplyError> {
        let fail = |reason| ApplyError { lsn, reason };
        if self.txns.contains_key(&txn) || check_legs(legs).is_err() || self.refusal(legs).is_some()
        {
            return Err(fail("pending transfer that could not have been voted YES"));
        }
        for leg in legs {
            let account = self
                .accounts
                .get_mut(&leg.account)
                .expect("refusal checked it exists");
            let total = match leg.direction {
                Direction::Debit => &mut account.held,
                Direction::Credit => &mut account.incoming,
            };
            *total = total
                .checked_add(leg.amount)
                .expect("refusal checked the bounds");
        }
        let state = TxnState::Pending {
            legs: legs.to_vec(),
            at_ms,
        };
        self.insert_txn(txn, TxnEntry { state, lsn });
        Ok(())
    }

    fn apply_posted(&mut self, lsn: Lsn, txn: TxnId, at_ms: u64) -> Result<(), ApplyError> {
        let Some(TxnEntry {
            state: TxnState::Pending { legs, .. },
            ..
        }) = self.txns.remove(&txn)
        else {
            return Err(ApplyError {
                lsn,
                reason: "post of a transfer that is not pending",
            });
        };
        for leg in &legs {
            let account = self
                .accounts
                .get_mut(&leg.account)
                .expect("pending legs exist");
            match leg.direction {
                Direction::Debit => {
                    account.held = account
                        .held
                        .checked_sub(leg.amount)
                        .expect("held covers it");
                    account.balance = account
                        .balance
                        .checked_sub(leg.amount)
                        .expect("held ≤ balance");
                }
                Direction::Credit => {
                    account.incoming = account.incoming.checked_sub(leg.amount).expect("reserved");
                    account.balance = account
                        .balance
                        .checked_add(leg.amount)
                        .expect("reserved room");
                }
            }
        }
        let state = TxnState::Posted { legs, at_ms };
        self.insert_txn(txn, TxnEntry { state, lsn });
        Ok(())
    }

    fn apply_voided(
        &mut self,
        lsn: Lsn,
        txn: TxnId,
        reason: &VoidReason,
        at_ms: u64,
    ) -> Result<(), ApplyError> {
        let legs = match self.txns.remove(&txn) {
            None => None,
            Some(TxnEntry {
                state: TxnState::Pending { legs, .. },
                ..
            }) => {
                self.release(&legs);
                Some(legs)
            }
            Some(_) => {
                return Err(ApplyError {
                    lsn,
                    reason: "void of a transfer that is already decided",
                });
            }
        };
        let state = TxnState::Voided {
            reason: reason.clone(),
            legs,
            at_ms,
        };
        self.insert_txn(txn, TxnEntry { state, lsn });
        Ok(())
    }

    /// Stores a transaction's state, noting it in `recent` if decided.
    fn insert_txn(&mut self, txn: TxnId, entry: TxnEntry) {
        if entry.state.decided_at_ms().is_some() {
            self.recent.insert(txn);
        }
        self.txns.insert(txn, entry);
    }

    fn release(&mut self, legs: &[Leg]) {
        for leg in legs {
            let account = self
                .accounts
                .get_mut(&leg.account)
                .expect("pending legs exist");
            let total = match leg.direction {
                Direction::Debit => &mut account.held,
                Direction::Credit => &mut account.incoming,
            };
            *total = total
                .checked_sub(leg.amount)
                .expect("pending amounts are held");
        }
    }

    /// Takes the transactions decided since the last checkpoint, with
    /// their entries, for the history; they stay in memory until
    /// [`Ledger::forget_moved`] (or go back with [`Ledger::keep_unmoved`]
    /// if writing them failed).
    pub fn take_recent(&mut self) -> Vec<(TxnId, TxnEntry)> {
        let recent = std::mem::take(&mut self.recent);
        recent
            .into_iter()
            .map(|txn| (txn, self.txns[&txn].clone()))
            .collect()
    }

    /// Forgets from memory transactions now found in the history.
    pub fn forget_moved(&mut self, moved: &[(TxnId, TxnEntry)]) {
        for (txn, entry) in moved {
            // A decided transaction never changes again while remembered.
            debug_assert_eq!(self.txns.get(txn), Some(entry));
            self.txns.remove(txn);
        }
    }

    /// Puts back transactions a failed checkpoint did not move.
    pub fn keep_unmoved(&mut self, unmoved: &[(TxnId, TxnEntry)]) {
        self.recent.extend(unmoved.iter().map(|(txn, _)| *txn));
    }

    /// Checks that holds and reservations equal the pending legs, and
    /// nothing is overdrawn. Returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held: HashMap<&AccountNo, u128> = HashMap::new();
        let mut incoming: HashMap<&AccountNo, u128> = HashMap::new();
        for entry in self.txns.values() {
            if let TxnState::Pending { legs, .. } = &entry.state {
                for leg in legs {
                    let total = match leg.direction {
                        Direction::Debit => held.entry(&leg.account).or_default(),
                        Direction::Credit => incoming.entry(&leg.account).or_default(),
                    };
                    *total += u128::from(leg.amount.0);
                }
            }
        }
        for account in self.accounts.values() {
            let number = &account.number;
            if u128::from(account.held.0) != held.get(number).copied().unwrap_or(0) {
                return Err(format!(
                    "account {number}: held does not match pending debits"
                ));
            }
            if u128::from(account.incoming.0) != incoming.get(number).copied().unwrap_or(0) {
                return Err(format!(
                    "account {number}: incoming does not match pending credits"
                ));
            }
            if account.held > account.balance {
                return Err(format!("account {number}: held exceeds balance"));
            }
            if account.balance.checked_add(account.incoming).is_none() {
                return Err(format!("account {number}: balance + incoming overflows"));
            }
        }
        Ok(())
    }

    /// The state in memory, for a snapshot covering `applied_lsn` that
    /// relies on the history tables of `history_generation`.
    pub fn encode_snapshot(&self, history_generation: u64) -> Vec<u8> {
        let mut writer = Writer::default();
        writer
            .u8(SNAPSHOT_VERSION)
            .str(&self.bank)
            .str(&self.currency)
            .u64(self.applied_lsn.0)
            .u64(history_generation);
        writer.u64(self.accounts.len() as u64);
        for account in self.accounts.values() {
            writer
                .str(account.number.as_str())
                .str(&account.owner)
                .u64(account.balance.0)
                .u64(account.held.0)
                .u64(account.incoming.0);
        }
        let mut txns: Vec<_> = self.txns.iter().collect();
        txns.sort_by_key(|(txn, _)| **txn);
        writer.u64(txns.len() as u64);
        for (txn, entry) in txns {
            writer.0.extend_from_slice(&txn.0);
            write_txn(&mut writer, entry);
        }
        writer.0
    }

    /// Rebuilds a ledger from [`Ledger::encode_snapshot`] bytes, checking
    /// it; also returns the history generation it relies on (0 for a
    /// version 1 snapshot, which held every transaction).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(Ledger, u64), DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != 1 && version != SNAPSHOT_VERSION {
            return Err(DecodeError("unsupported ledger snapshot version"));
        }
        let mut ledger = Ledger {
            bank: reader.str()?.to_owned(),
            currency: reader.str()?.to_owned(),
            applied_lsn: Lsn(reader.u64()?),
            ..Ledger::default()
        };
        let history_generation = if version == 1 { 0 } else { reader.u64()? };
        for _ in 0..reader.u64()? {
            let account = Account {
                number: record::decode_account(&mut reader)?,
                owner: reader.str()?.to_owned(),
                balance: Amount(reader.u64()?),
                held: Amount(reader.u64()?),
                incoming: Amount(reader.u64()?),
            };
            ledger.accounts.insert(account.number.clone(), account);
        }
        for _ in 0..reader.u64()? {
            let txn = TxnId(reader.array16()?);
            let entry = read_txn(&mut reader)?;
            ledger.insert_txn(txn, entry);
        }
        reader.finish()?;
        ledger
            .check_invariants()
            .map_err(|_| DecodeError("snapshot violates the ledger invariants"))?;
        Ok((ledger, history_generation))
    }

    /// Sum of all balances (for conservation checks).
    pub fn total_balance(&self) -> u128 {
        self.accounts
            .values()
            .map(|account| u128::from(account.balance.0))
            .sum()
    }
}

/// One transaction's entry (without its id): in a snapshot, and as a
/// history table's value.
pub(crate) fn write_txn(writer: &mut Writer, entry: &TxnEntry) {
    writer.u64(entry.lsn.0);
    match &entry.state {
        TxnState::Pending { legs, at_ms } => {
            writer.u8(1).u64(*at_ms);
            record::encode_legs(writer, legs);
        }
        TxnState::Posted { legs, at_ms } => {
            writer.u8(2).u64(*at_ms);
            record::encode_legs(writer, legs);
        }
        TxnState::Voided {
            reason,
            legs,
            at_ms,
        } => {
            writer.u8(3).u64(*at_ms);
            record::encode_reason(writer, reason);
            match legs {
                Some(legs) => {
                    writer.u8(1);
                    record::encode_legs(writer, legs);
                }
                None => {
                    writer.u8(0);
                }
            }
        }
    }
}

pub(crate) fn read_txn(reader: &mut Reader<'_>) -> Result<TxnEntry, DecodeError> {
    let lsn = Lsn(reader.u64()?);
    let tag = reader.u8()?;
    let at_ms = reader.u64()?;
    let state = match tag {
        1 => TxnState::Pending {
            legs: record::decode_legs(reader)?,
            at_ms,
        },
        2 => TxnState::Posted {
            legs: record::decode_legs(reader)?,
            at_ms,
        },
        3 => {
            let reason = record::decode_reason(reader)?;
            let legs = match reader.u8()? {
                0 => None,
                1 => Some(record::decode_legs(reader)?),
                _ => return Err(DecodeError("bad legs flag")),
            };
            TxnState::Voided {
                reason,
                legs,
                at_ms,
            }
        }
        _ => return Err(DecodeError("bad transaction state")),
    };
    Ok(TxnEntry { state, lsn })
}
