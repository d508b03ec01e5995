//! The in-doubt asking policy: when a bank asks the coordinator what was
//! decided for a transaction it voted YES on and has heard nothing about
//! since. A transaction is asked about once it has been pending for
//! `timeout_ms` (at once if it was pending when the bank started: its
//! coordinator may have decided while the bank was down), then again after
//! a backoff that doubles from `backoff_ms_min` to `backoff_ms_max` until
//! the decision arrives and the transaction leaves the pending set.
//!
//! Asking is the caller's (a gRPC call in the server, a message in the
//! simulation); the schedule is a node's own, in memory, and holds at most
//! one entry per pending transaction.

use std::collections::{BTreeMap, BTreeSet};

use money::TxnId;

/// When to ask about a transaction in doubt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InDoubtPolicy {
    /// How long a prepared transaction waits for its decision before the
    /// bank asks.
    pub timeout_ms: u64,
    /// The wait after the first unanswered question.
    pub backoff_ms_min: u64,
    /// The longest wait between two questions about one transaction.
    pub backoff_ms_max: u64,
}

impl Default for InDoubtPolicy {
    /// Ask after 10 s in doubt, then after 0.2 s, 0.4 s, … at most 10 s apart.
    fn default() -> InDoubtPolicy {
        InDoubtPolicy {
            timeout_ms: 10_000,
            backoff_ms_min: 200,
            backoff_ms_max: 10_000,
        }
    }
}

/// When each transaction in doubt is next asked about.
#[derive(Debug)]
pub(crate) struct Asking {
    policy: InDoubtPolicy,
    /// Pending when the bank started: asked about at once.
    at_start: BTreeSet<TxnId>,
    /// The next question's time and the backoff that led to it.
    next: BTreeMap<TxnId, (u64, u64)>,
}

impl Asking {
    pub(crate) fn new(
        policy: InDoubtPolicy,
        pending_at_start: impl Iterator<Item = TxnId>,
    ) -> Asking {
        assert!(0 < policy.backoff_ms_min && policy.backoff_ms_min <= policy.backoff_ms_max);
        Asking {
            policy,
            at_start: pending_at_start.collect(),
            next: BTreeMap::new(),
        }
    }

    /// Of the transactions now pending (with when each was prepared), the
    /// ones to ask about at `now_ms`, in id order; each is scheduled for its
    /// next question as it is returned. Transactions no longer pending are
    /// forgotten.
    pub(crate) fn due(&mut self, pending: &[(TxnId, u64)], now_ms: u64) -> Vec<TxnId> {
        let still: BTreeSet<TxnId> = pending.iter().map(|(txn, _)| *txn).collect();
        self.next.retain(|txn, _| still.contains(txn));
        self.at_start.retain(|txn| still.contains(txn));
        let mut due = Vec::new();
        for &(txn, prepared_at_ms) in pending {
            let first_at = if self.at_start.contains(&txn) {
                0
            } else {
                prepared_at_ms.saturating_add(self.policy.timeout_ms)
            };
            let (next_at, backoff) = self.next.get(&txn).copied().unwrap_or((first_at, 0));
            if now_ms < next_at {
                continue;
            }
            let backoff = if backoff == 0 {
                self.policy.backoff_ms_min
            } else {
                backoff.saturating_mul(2).min(self.policy.backoff_ms_max)
            };
            self.next
                .insert(txn, (now_ms.saturating_add(backoff), backoff));
            due.push(txn);
        }
        due.sort();
        assert!(self.next.len() <= pending.len());
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: InDoubtPolicy = InDoubtPolicy {
        timeout_ms: 1_000,
        backoff_ms_min: 100,
        backoff_ms_max: 400,
    };

    fn txn(byte: u8) -> TxnId {
        TxnId([byte; 16])
    }

    #[test]
    fn a_transaction_is_asked_about_after_the_timeout_then_with_doubling_backoff() {
        let mut asking = Asking::new(POLICY, std::iter::empty());
        let pending = [(txn(1), 5_000)];
        assert!(asking.due(&pending, 5_999).is_empty(), "not yet in doubt");
        assert_eq!(asking.due(&pending, 6_000), vec![txn(1)]);
        assert!(asking.due(&pending, 6_099).is_empty());
        assert_eq!(asking.due(&pending, 6_100), vec![txn(1)]);
        assert!(asking.due(&pending, 6_299).is_empty(), "then 200 ms");
        assert_eq!(asking.due(&pending, 6_300), vec![txn(1)]);
        assert_eq!(asking.due(&pending, 6_700), vec![txn(1)]);
        assert!(asking.due(&pending, 7_099).is_empty(), "at most 400 ms");
        assert_eq!(asking.due(&pending, 7_100), vec![txn(1)]);
    }

    #[test]
    fn pending_at_start_is_asked_at_once_and_a_decided_one_is_forgotten() {
        let mut asking = Asking::new(POLICY, [txn(2)].into_iter());
        let pending = [(txn(1), 5_000), (txn(2), 5_000)];
        assert_eq!(asking.due(&pending, 5_001), vec![txn(2)]);
        assert!(asking.due(&pending, 5_100).is_empty());
        assert_eq!(asking.due(&pending, 6_000), vec![txn(1), txn(2)]);
        // txn 2 was decided: it leaves the schedule.
        assert_eq!(asking.due(&pending[..1], 6_100), vec![txn(1)]);
        assert_eq!(asking.next.len(), 1);
        assert!(asking.at_start.is_empty());
    }
}
