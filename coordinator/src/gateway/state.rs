//! The gateway's state machine: users and the payment table, as the
//! decision log's records make them. Like the ledger's `Ledger`, it is pure:
//! `decide_*` look at the state and a request and return a known answer or
//! the record to write; [`GatewayState::apply`] is the one place the state
//! changes, on the live path and on replay alike, and asserts each
//! transition it makes (a payment is initiated once, decided once, ended
//! once, after its decision).
//!
//! It knows nothing of the log, locks, waiting or banks: the same records in
//! the same order give the same state on every node (what replicating the
//! gateway needs). Sessions, login failures, rate limits and phase-2
//! progress are a node's own and live beside it (`access`, `two_phase`).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::{HashMap as SharedHashMap, OrdMap};
use money::{AccountNo, BankName, TxnId};
use wal::Lsn;

use crate::decision_log::GatewayRecord;
use crate::gateway::history::History;
use crate::gateway::{Bound, GatewayError, GatewayOptions};
use crate::payment::{Payment, PaymentRequest, Status};
use crate::users::{self, User};

/// The decision for a transaction, as told to a bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort,
}

/// One txn id in the payment table.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// `None` for an id first heard of in a bank's GetDecision.
    pub(crate) payment: Option<Payment>,
    pub(crate) decision: Option<(Decision, String)>,
    /// The LSN of the decision record: nobody outside learns the decision
    /// (not the client, not a bank, not a status query) before it is durable.
    pub(crate) decided_lsn: Lsn,
    pub(crate) decided_at_ms: u64,
    pub(crate) ended: bool,
}

impl Entry {
    /// An entry without a decision yet.
    pub(crate) fn undecided(payment: Option<Payment>) -> Entry {
        Entry {
            payment,
            decision: None,
            decided_lsn: Lsn(0),
            decided_at_ms: 0,
            ended: false,
        }
    }

    /// Whether the entry is finished, never to change again: the payment
    /// ended, or the id was only heard of in a GetDecision (and decided).
    /// A finished entry moves to the history at the next checkpoint and is
    /// forgotten once its decision is older than the retention.
    pub(crate) fn forgettable(&self) -> bool {
        self.ended || (self.payment.is_none() && self.decision.is_some())
    }

    /// Whether a payment is initiated and not decided: in its first phase.
    fn in_first_phase(&self) -> bool {
        self.payment.is_some() && self.decision.is_none()
    }
}

/// What a payment request finds in the table.
pub(crate) enum Seen {
    /// A new id: the record that initiates it.
    New(GatewayRecord),
    /// A known id of this user for this same movement: the stored payment
    /// (`replayed` set) and, if decided, the LSN of its decision.
    Known {
        stored: Box<Payment>,
        decided_lsn: Option<Lsn>,
    },
}

/// Users and the payment table in memory: unfinished payments, and
/// finished ones since the last checkpoint (older ones are in the
/// [`History`], which `decide_pay` and `decide_decision` consult for an id
/// not in memory). Both maps are persistent: a checkpoint clones them in
/// O(1) and encodes the clone without holding up the live path.
pub(crate) struct GatewayState {
    /// LSN of the last record applied.
    pub(crate) applied_lsn: Lsn,
    pub(crate) users: OrdMap<String, User>,
    /// Entries sit behind an `Arc` so the map's nodes stay small (an
    /// insert moves a node's elements); one is copied only when changed
    /// while a snapshot still holds it.
    pub(crate) payments: SharedHashMap<TxnId, Arc<Entry>>,
    /// Entries finished since the last checkpoint: what the next one
    /// moves to the history.
    pub(crate) recent: BTreeSet<TxnId>,
    /// Payments decided but not ended: phase 2 is running or to be retried.
    pub(crate) settling: BTreeSet<TxnId>,
    /// Payments initiated and not yet decided.
    pub(crate) in_flight: usize,
}

impl GatewayState {
    pub(crate) fn new() -> GatewayState {
        GatewayState {
            applied_lsn: Lsn(0),
            users: OrdMap::new(),
            payments: SharedHashMap::new(),
            recent: BTreeSet::new(),
            settling: BTreeSet::new(),
            in_flight: 0,
        }
    }

    /// A new user, or why not (the shape was checked at admission).
    pub(crate) fn decide_register(
        &self,
        username: &str,
        password_hash: String,
        bank: &BankName,
        account: &AccountNo,
    ) -> Result<GatewayRecord, GatewayError> {
        assert!(users::valid_username(username));
        assert!(password_hash.starts_with("$argon2id$"));
        if self.users.contains_key(username) {
            return Err(GatewayError::UsernameTaken {
                username: username.to_owned(),
            });
        }
        Ok(GatewayRecord::UserRegistered {
            username: username.to_owned(),
            password_hash,
            bank: bank.clone(),
            account: account.clone(),
        })
    }

    /// Checks a payment request against the options and the payer's
    /// account: the answers that need no look at the payment table.
    pub(crate) fn check_request(
        &self,
        options: &GatewayOptions,
        user: &str,
        request: &PaymentRequest,
    ) -> Result<(), GatewayError> {
        if request.amount.is_zero() {
            return Err(GatewayError::ZeroAmount);
        }
        if request.currency != options.currency {
            return Err(GatewayError::WrongCurrency {
                expected: options.currency.clone(),
            });
        }
        if request.from == request.to {
            return Err(GatewayError::PayingYourself);
        }
        if !options.banks.contains(&request.to.bank) {
            return Err(GatewayError::UnknownBank {
                bank: request.to.bank.clone(),
            });
        }
        match self.users.get(user) {
            Some(found)
                if found.bank == request.from.bank && found.account == request.from.account =>
            {
                Ok(())
            }
            Some(_) => Err(GatewayError::NotYourAccount),
            None => Err(GatewayError::UnknownUser {
                username: user.to_owned(),
            }),
        }
    }

    /// The idempotency table's answer to a payment request (see the table
    /// in docs/gateway-coordinator.md): a known id is answered from what is
    /// stored (or refused as a misuse); a new one is admitted past the
    /// amount maximum and the in-flight and settling bounds, and gets its
    /// INITIATED record.
    pub(crate) fn decide_pay(
        &self,
        options: &GatewayOptions,
        user: &str,
        request: &PaymentRequest,
        now_ms: u64,
        history: &History,
    ) -> Result<Seen, GatewayError> {
        if let Some(entry) = self.entry(request.txn, history)? {
            let stored = replay_of(&entry, user, request)?;
            let decided_lsn = entry.decision.as_ref().map(|_| entry.decided_lsn);
            return Ok(Seen::Known {
                stored: Box::new(stored),
                decided_lsn,
            });
        }
        // New ids only: a repeat of a payment made under a higher maximum
        // still gets its stored outcome.
        if request.amount > options.amount_max {
            return Err(GatewayError::AmountAboveMax {
                amount: request.amount,
                max: options.amount_max,
            });
        }
        if self.in_flight >= options.payments_in_flight_max {
            return Err(GatewayError::Overloaded {
                bound: Bound::InFlight,
                limit: options.payments_in_flight_max,
            });
        }
        if self.settling.len() >= options.settling_max {
            return Err(GatewayError::Overloaded {
                bound: Bound::Settling,
                limit: options.settling_max,
            });
        }
        Ok(Seen::New(GatewayRecord::Initiated {
            request: request.clone(),
            user: user.to_owned(),
            at_ms: now_ms,
        }))
    }

    /// The decision record for a payment whose votes are in.
    pub(crate) fn decide_decided(
        &self,
        txn: TxnId,
        decision: Decision,
        reason: String,
        now_ms: u64,
    ) -> GatewayRecord {
        let entry = self
            .payments
            .get(&txn)
            .expect("a payment being decided is known");
        assert!(entry.in_first_phase(), "a payment is decided once");
        GatewayRecord::Decided {
            txn,
            commit: decision == Decision::Commit,
            reason,
            at_ms: now_ms,
        }
    }

    /// A bank's in-doubt question: the durable decision (and its LSN), or
    /// for an id never seen the ABORT record to write (presumed abort), or
    /// `NotDecided` while the payment is in its first phase.
    pub(crate) fn decide_decision(
        &self,
        txn: TxnId,
        now_ms: u64,
        history: &History,
    ) -> Result<Result<(Decision, Lsn), GatewayRecord>, GatewayError> {
        match self.entry(txn, history)?.as_deref() {
            Some(Entry {
                decision: Some((decision, _)),
                decided_lsn,
                ..
            }) => Ok(Ok((*decision, *decided_lsn))),
            Some(_) => Err(GatewayError::NotDecided { txn }),
            None => Ok(Err(GatewayRecord::Decided {
                txn,
                commit: false,
                reason: "unknown to the gateway when a bank asked".into(),
                at_ms: now_ms,
            })),
        }
    }

    /// The records that decide ABORT every payment found in its first
    /// phase at recovery (presumed abort), in id order.
    pub(crate) fn decide_presumed_aborts(&self, now_ms: u64) -> Vec<GatewayRecord> {
        let mut undecided: Vec<TxnId> = self
            .payments
            .iter()
            .filter(|(_, entry)| entry.decision.is_none())
            .map(|(txn, _)| *txn)
            .collect();
        undecided.sort();
        undecided
            .into_iter()
            .map(|txn| GatewayRecord::Decided {
                txn,
                commit: false,
                reason: "gateway restarted before deciding".into(),
                at_ms: now_ms,
            })
            .collect()
    }

    /// The END record once every bank acknowledged phase 2, if not ended.
    pub(crate) fn decide_ended(&self, txn: TxnId) -> Option<GatewayRecord> {
        let entry = self.payments.get(&txn)?;
        (entry.decision.is_some() && !entry.ended).then_some(GatewayRecord::Ended { txn })
    }

    /// What the table knows of `txn`: memory first, then the history.
    pub(crate) fn entry(
        &self,
        txn: TxnId,
        history: &History,
    ) -> Result<Option<Cow<'_, Entry>>, GatewayError> {
        if let Some(entry) = self.payments.get(&txn) {
            return Ok(Some(Cow::Borrowed(&**entry)));
        }
        Ok(history.find(txn)?.map(Cow::Owned))
    }

    /// Takes the entries finished since the last checkpoint, for the
    /// history; they stay in memory until [`GatewayState::forget_moved`]
    /// (or go back with [`GatewayState::keep_unmoved`] if writing them
    /// failed).
    pub(crate) fn take_recent(&mut self) -> Vec<(TxnId, Arc<Entry>)> {
        std::mem::take(&mut self.recent)
            .into_iter()
            .map(|txn| (txn, Arc::clone(&self.payments[&txn])))
            .collect()
    }

    /// Forgets from memory entries now found in the history.
    pub(crate) fn forget_moved(&mut self, moved: &[(TxnId, Arc<Entry>)]) {
        for (txn, _) in moved {
            let removed = self.payments.remove(txn);
            debug_assert!(removed.is_some_and(|entry| entry.forgettable()));
        }
    }

    /// Puts back entries a failed checkpoint did not move.
    pub(crate) fn keep_unmoved(&mut self, unmoved: &[(TxnId, Arc<Entry>)]) {
        self.recent.extend(unmoved.iter().map(|(txn, _)| *txn));
    }

    /// Applies the record written at `lsn` (live and on replay alike).
    pub(crate) fn apply(&mut self, lsn: Lsn, record: &GatewayRecord) {
        assert!(lsn > self.applied_lsn, "records apply in log order");
        self.applied_lsn = lsn;
        match record {
            GatewayRecord::UserRegistered {
                username,
                password_hash,
                bank,
                account,
            } => {
                let user = User::new(
                    username.clone(),
                    password_hash.clone(),
                    bank.clone(),
                    account.clone(),
                );
                self.users.insert(username.clone(), user);
            }
            GatewayRecord::Initiated {
                request,
                user,
                at_ms,
            } => self.apply_initiated(request, user, *at_ms),
            GatewayRecord::Decided {
                txn,
                commit,
                reason,
                at_ms,
            } => self.apply_decided(lsn, *txn, *commit, reason, *at_ms),
            GatewayRecord::Ended { txn } => self.apply_ended(*txn),
        }
    }

    /// A new payment: in flight until its decision.
    fn apply_initiated(&mut self, request: &PaymentRequest, user: &str, at_ms: u64) {
        let payment = Payment {
            request: request.clone(),
            user: user.to_owned(),
            status: Status::Initiated,
            reason: String::new(),
            created_at_ms: at_ms,
            ended: false,
            replayed: false,
        };
        self.in_flight += 1;
        let earlier = self
            .payments
            .insert(request.txn, Arc::new(Entry::undecided(Some(payment))));
        // An id forgotten after its retention may be used again; if a crash
        // lost the snapshot that forgot it, replay meets both.
        if let Some(earlier) = earlier
            && earlier.in_first_phase()
        {
            self.in_flight -= 1;
        }
    }

    /// A decision (for a payment, or for an id first heard of from a bank):
    /// the payment leaves the in-flight count and waits for phase 2.
    fn apply_decided(&mut self, lsn: Lsn, txn: TxnId, commit: bool, reason: &str, at_ms: u64) {
        let slot = self
            .payments
            .entry(txn)
            .or_insert_with(|| Arc::new(Entry::undecided(None)));
        if slot.decision.is_some() {
            // An id forgotten after its retention and then asked about by a
            // bank: if a crash lost the snapshot that forgot it, replay meets
            // both decisions. Only a forgettable entry can have been
            // forgotten; a payment is otherwise decided once.
            assert!(
                slot.forgettable(),
                "txn {txn} is decided once while it is remembered"
            );
            *slot = Arc::new(Entry::undecided(None));
        }
        let entry = Arc::make_mut(slot);
        if entry.in_first_phase() {
            assert!(self.in_flight > 0);
            self.in_flight -= 1;
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
                self.settling.insert(txn);
            }
        }
        if entry.forgettable() {
            self.recent.insert(txn);
        }
    }

    /// Phase 2 acknowledged by every bank: the payment is over.
    fn apply_ended(&mut self, txn: TxnId) {
        if let Some(entry) = self.payments.get_mut(&txn) {
            let entry = Arc::make_mut(entry);
            assert!(
                entry.decision.is_some(),
                "txn {txn} ends after its decision"
            );
            entry.ended = true;
            if let Some(payment) = &mut entry.payment {
                payment.ended = true;
            }
            if entry.forgettable() {
                self.recent.insert(txn);
            }
        }
        self.settling.remove(&txn);
    }
}

/// The stored answer for a repeated id, or why the repeat is refused.
fn replay_of(entry: &Entry, user: &str, request: &PaymentRequest) -> Result<Payment, GatewayError> {
    let txn = request.txn;
    let Some(payment) = &entry.payment else {
        return Err(GatewayError::TxnIdAborted { txn });
    };
    if payment.user != user {
        return Err(GatewayError::TxnIdOfAnotherUser { txn });
    }
    if !payment.request.same_movement(request) {
        return Err(GatewayError::TxnIdReused { txn });
    }
    let mut stored = payment.clone();
    stored.replayed = true;
    Ok(stored)
}

/// Whether a payment moves money in or out of `account` at `bank`.
pub(crate) fn touches(request: &PaymentRequest, bank: &BankName, account: &AccountNo) -> bool {
    (request.from.bank == *bank && request.from.account == *account)
        || (request.to.bank == *bank && request.to.account == *account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::Endpoint;
    use money::Amount;

    fn decided(txn: TxnId, at_ms: u64) -> GatewayRecord {
        GatewayRecord::Decided {
            txn,
            commit: false,
            reason: "test".into(),
            at_ms,
        }
    }

    fn initiated(txn: TxnId) -> GatewayRecord {
        let endpoint = |bank: &str, account: &str| Endpoint {
            bank: BankName::parse(bank).unwrap(),
            account: AccountNo::parse(account).unwrap(),
        };
        GatewayRecord::Initiated {
            request: PaymentRequest {
                txn,
                from: endpoint("bank_a", "1"),
                to: endpoint("bank_b", "2"),
                amount: Amount(5),
                currency: "INR".into(),
            },
            user: "alice".into(),
            at_ms: 10,
        }
    }

    #[test]
    fn an_id_forgotten_then_asked_about_again_replays_both_decisions() {
        let mut state = GatewayState::new();
        let txn = TxnId([7; 16]);
        state.apply(Lsn(1), &decided(txn, 10));
        // The snapshot that forgot it was lost: replay meets the second one.
        state.apply(Lsn(2), &decided(txn, 20));
        assert_eq!(state.payments[&txn].decided_lsn, Lsn(2));
        assert_eq!(state.payments[&txn].decided_at_ms, 20);
        assert!(state.settling.is_empty() && state.in_flight == 0);
    }

    #[test]
    fn a_payment_moves_from_in_flight_to_settling_to_ended() {
        let mut state = GatewayState::new();
        let txn = TxnId([8; 16]);
        state.apply(Lsn(1), &initiated(txn));
        assert_eq!((state.in_flight, state.settling.len()), (1, 0));
        state.apply(Lsn(2), &decided(txn, 20));
        assert_eq!((state.in_flight, state.settling.len()), (0, 1));
        assert_eq!(state.decide_ended(txn), Some(GatewayRecord::Ended { txn }));
        state.apply(Lsn(3), &GatewayRecord::Ended { txn });
        assert!(state.settling.is_empty() && state.payments[&txn].ended);
        assert_eq!(state.decide_ended(txn), None, "ended once");
    }

    #[test]
    #[should_panic(expected = "decided once")]
    fn a_payment_in_phase_two_is_never_decided_again() {
        let mut state = GatewayState::new();
        let txn = TxnId([9; 16]);
        state.apply(Lsn(1), &initiated(txn));
        state.apply(Lsn(2), &decided(txn, 20));
        state.apply(Lsn(3), &decided(txn, 30));
    }

    #[test]
    #[should_panic(expected = "log order")]
    fn records_apply_in_log_order() {
        let mut state = GatewayState::new();
        state.apply(Lsn(2), &decided(TxnId([1; 16]), 10));
        state.apply(Lsn(2), &decided(TxnId([2; 16]), 10));
    }
}
