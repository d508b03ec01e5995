//! Two-phase commit from the coordinator's side: phase 1 (prepare every
//! involved bank in parallel, decide), phase 2 (send the decision until
//! every bank acknowledged it, then write END), the phase-2 retry policy,
//! and banks' in-doubt questions (presumed abort).
//!
//! Phase-2 progress is a node's own, in memory: which banks acknowledged a
//! decided payment, and when it is next retried. After a restart every
//! unfinished payment is sent its decision again, which banks answer
//! idempotently.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use money::{BankName, Direction, Leg, TxnId};
use wal::Lsn;

use crate::decision_log::GatewayRecord;
use crate::gateway::state::{Decision, GatewayState};
use crate::gateway::waiting::{Boxed, join_all};
use crate::gateway::{Backoff, Gateway, GatewayError};
use crate::participant::{CallError, Participant, Vote};
use crate::payment::PaymentRequest;
use crate::repeated::Repeated;

/// One decided payment's phase 2 on this node.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// The banks (by their place in [`legs_per_bank`]) that acknowledged.
    acked: u8,
    /// When phase 2 may be retried, and the wait before that.
    retry_at_ms: u64,
    backoff_ms: Option<u64>,
}

/// Phase-2 progress of the payments decided and not ended (so at most one
/// entry per payment in `GatewayState::settling`).
#[derive(Default)]
pub(crate) struct PhaseTwo {
    progress: BTreeMap<TxnId, Progress>,
}

impl PhaseTwo {
    /// Notes that the bank at `place` in the txn's [`legs_per_bank`]
    /// acknowledged phase 2.
    fn acknowledged(&mut self, state: &GatewayState, txn: TxnId, place: usize) {
        assert!(place < 2, "a payment involves at most two banks");
        if state.settling.contains(&txn) {
            self.progress.entry(txn).or_default().acked |= 1 << place;
        }
    }

    /// A retry of `txn` failed at `now_ms`: the next waits longer.
    fn failed(&mut self, policy: Backoff, txn: TxnId, now_ms: u64) {
        let progress = self.progress.entry(txn).or_default();
        let backoff = policy.after(progress.backoff_ms);
        progress.backoff_ms = Some(backoff);
        progress.retry_at_ms = now_ms.saturating_add(backoff);
    }

    /// The payments whose phase 2 is due for a retry at `now_ms`, in id
    /// order (so a simulation replays identically).
    fn due(&self, state: &GatewayState, now_ms: u64) -> Vec<TxnId> {
        state
            .settling
            .iter()
            .filter(|txn| {
                self.progress
                    .get(txn)
                    .is_none_or(|progress| progress.retry_at_ms <= now_ms)
            })
            .copied()
            .collect()
    }

    /// The payment ended: nothing more to track.
    pub(crate) fn ended(&mut self, txn: TxnId) {
        self.progress.remove(&txn);
    }

    /// Whether the payment still waits for `bank` to acknowledge its phase 2
    /// (the bank's place in [`legs_per_bank`]: the payer's bank first).
    pub(crate) fn awaits(&self, state: &GatewayState, txn: TxnId, bank: &BankName) -> bool {
        let Some(entry) = state.payments.get(&txn) else {
            return false;
        };
        let Some(payment) = &entry.payment else {
            return false;
        };
        let place = if payment.request.from.bank == *bank {
            0
        } else {
            1
        };
        let acked = self.progress.get(&txn).map_or(0, |progress| progress.acked);
        !entry.ended && acked & (1 << place) == 0
    }
}

/// The legs each bank must prepare: one prepare per bank, the payer's
/// bank first.
pub(crate) fn legs_per_bank(request: &PaymentRequest) -> Vec<(BankName, Vec<Leg>)> {
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

impl<P: Participant> Gateway<P> {
    /// Prepares every involved bank in parallel; the decision and its reason.
    pub(crate) async fn phase_one(&self, request: &PaymentRequest) -> (Decision, String) {
        let per_bank = legs_per_bank(request);
        let timeout = self.options.prepare_timeout;
        let started = std::time::Instant::now();
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
                    }) as Boxed<'_, Result<Vote, CallError>>
                })
                .collect(),
        )
        .await;
        metrics::histogram!("minipay_phase_duration_seconds", "phase" => "prepare")
            .record(started.elapsed().as_secs_f64());
        for vote in votes {
            match vote {
                Ok(Vote::Yes) => {}
                Ok(Vote::No { reason }) => return (Decision::Abort, reason),
                Err(error) => return (Decision::Abort, error.to_string()),
            }
        }
        (Decision::Commit, String::new())
    }

    /// One line per vote as it arrives, so an operator (or a test) can see
    /// which banks had answered when a payment was decided; a bank that
    /// gives no vote is warned about once per window (`left_out`: how many
    /// more since the last line).
    fn log_vote(&self, txn: TxnId, bank: &BankName, vote: &Result<Vote, CallError>) {
        let bank_name = bank.as_str();
        match vote {
            // The common case: a debug line (the payment's own line says how it ended).
            Ok(Vote::Yes) => tracing::debug!(txn_id = %txn, bank = bank_name, "vote YES"),
            Ok(Vote::No { reason }) => {
                tracing::info!(txn_id = %txn, bank = bank_name, reason, "vote NO")
            }
            Err(error) => {
                let now = self.clock.now_ms();
                if let Some(left_out) = self.warnings.admit(Repeated::NoVote, bank, now) {
                    tracing::warn!(txn_id = %txn, bank = bank_name, %error, left_out, "no vote");
                }
            }
        }
    }

    /// Sends the decision to every bank of `txn` once; writes `Ended` if all
    /// acknowledged. Returns whether they did.
    pub async fn phase_two(&self, txn: TxnId) -> Result<bool, GatewayError> {
        let Some((decision, decided_lsn, banks)) = self.phase_two_of(txn) else {
            return Ok(true);
        };
        // Never send a decision the log could still lose (say, after the
        // log failed and memory is ahead of the disk).
        self.wal.wait_durable(decided_lsn).await?;
        let timeout = self.options.commit_timeout;
        let started = std::time::Instant::now();
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
                    }) as Boxed<'_, Result<(), CallError>>
                })
                .collect(),
        )
        .await;
        let phase = match decision {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        };
        metrics::histogram!("minipay_phase_duration_seconds", "phase" => phase)
            .record(started.elapsed().as_secs_f64());
        let mut acknowledged = true;
        for (bank, error) in banks
            .iter()
            .zip(&acks)
            .filter_map(|(bank, ack)| Some((bank, ack.as_ref().err()?)))
        {
            acknowledged = false;
            self.warn_unacknowledged(txn, bank, decision, error);
        }
        if !acknowledged {
            let now = self.clock.now_ms();
            self.lock()
                .phase_two
                .failed(self.options.phase_two_retry, txn, now);
            return Ok(false);
        }
        let mut inner = self.lock();
        if let Some(ended) = inner.state.decide_ended(txn) {
            self.record(&mut inner, ended)?;
        }
        Ok(true)
    }

    /// What phase 2 of `txn` sends, and to whom; `None` if it has nothing
    /// to do (unknown, undecided, ended, or only an id a bank asked about).
    fn phase_two_of(&self, txn: TxnId) -> Option<(Decision, Lsn, Vec<BankName>)> {
        let inner = self.lock();
        let entry = inner.state.payments.get(&txn)?;
        let (Some((decision, _)), Some(payment), false) =
            (&entry.decision, &entry.payment, entry.ended)
        else {
            return None;
        };
        let banks = legs_per_bank(&payment.request)
            .into_iter()
            .map(|(bank, _)| bank)
            .collect();
        Some((*decision, entry.decided_lsn, banks))
    }

    fn warn_unacknowledged(
        &self,
        txn: TxnId,
        bank: &BankName,
        decision: Decision,
        error: &CallError,
    ) {
        let now = self.clock.now_ms();
        if let Some(left_out) = self
            .warnings
            .admit(Repeated::PhaseTwoUnacknowledged, bank, now)
        {
            tracing::warn!(txn_id = %txn, bank = bank.as_str(), ?decision, %error, left_out, "phase 2 not acknowledged; will retry");
        }
    }

    fn acknowledged(&self, txn: TxnId, place: usize) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.phase_two.acknowledged(&inner.state, txn, place);
        inner.waiters.wake(txn);
    }

    /// Transactions decided but not yet acknowledged by every bank: phase 2
    /// is retried for each (after a restart, or after a bank was down).
    /// In id order, so a simulation replays identically.
    pub fn unfinished(&self) -> Vec<TxnId> {
        self.lock().state.settling.iter().copied().collect()
    }

    /// The phase-2 retry policy: sends phase 2 again for every unfinished
    /// transaction that is due (a retry that failed waits
    /// `options.phase_two_retry` longer each time), one after the other;
    /// returns how many are still unfinished. One pass runs at a time: a
    /// call while another runs returns at once. Callers run it on a timer.
    pub async fn resume(&self) -> Result<usize, GatewayError> {
        if self.resuming.swap(true, Ordering::SeqCst) {
            return Ok(self.lock().state.settling.len());
        }
        let _pass = ResumePass(self);
        let due = {
            let inner = self.lock();
            inner.phase_two.due(&inner.state, self.clock.now_ms())
        };
        for txn in due {
            self.phase_two(txn).await?;
        }
        Ok(self.lock().state.settling.len())
    }

    /// A bank's in-doubt question. Unknown ids are decided ABORT (durably,
    /// so they stay ABORT).
    pub async fn decision(&self, txn: TxnId) -> Result<Decision, GatewayError> {
        let (decision, lsn) = {
            let mut inner = self.lock();
            let now = self.clock.now_ms();
            match inner.state.decide_decision(txn, now, &self.history)? {
                Ok(known) => known,
                Err(abort) => (Decision::Abort, self.record(&mut inner, abort)?),
            }
        };
        self.wal.wait_durable(lsn).await?;
        Ok(decision)
    }
}

/// Marks the end of a phase-2 retry pass, however it ends.
struct ResumePass<'a, P>(&'a Gateway<P>);

impl<P> Drop for ResumePass<'_, P> {
    fn drop(&mut self) {
        let was = self.0.resuming.swap(false, Ordering::SeqCst);
        assert!(was, "one retry pass at a time");
    }
}

/// Whether a record ends a payment's phase 2 (its progress is dropped).
pub(crate) fn ends(record: &GatewayRecord) -> Option<TxnId> {
    match record {
        GatewayRecord::Ended { txn } => Some(*txn),
        GatewayRecord::UserRegistered { .. }
        | GatewayRecord::Initiated { .. }
        | GatewayRecord::Decided { .. } => None,
    }
}
