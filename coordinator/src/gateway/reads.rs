//! Read your writes: a balance read at a bank shows the payments the
//! gateway already decided (and so perhaps answered), because the read
//! waits, within a bound, until that bank acknowledged their phase 2.
//!
//! The read itself is the caller's (a gRPC call in the server, a message in
//! the simulation), and so is the bound (a timer): the core decides what to
//! wait for and when to read.

use std::future::Future;

use money::{AccountNo, BankName, TxnId};

use crate::gateway::Gateway;
use crate::gateway::state::touches;
use crate::gateway::waiting::{AcknowledgedFuture, either};
use crate::participant::Participant;

impl<P: Participant> Gateway<P> {
    /// Decided payments touching `account` at `bank` that this bank has not
    /// acknowledged yet: a balance read now may not show them.
    pub fn unacknowledged(&self, bank: &BankName, account: &AccountNo) -> Vec<TxnId> {
        let inner = self.lock();
        inner
            .state
            .settling
            .iter()
            .filter(|txn| {
                inner.state.payments.get(*txn).is_some_and(|entry| {
                    entry
                        .payment
                        .as_ref()
                        .is_some_and(|payment| touches(&payment.request, bank, account))
                }) && inner.phase_two.awaits(&inner.state, **txn, bank)
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

    /// Reads `account` at `bank` with `read` so that the answer shows every
    /// payment decided before the call: the bank is asked first (one that
    /// is down fails the call at once rather than after the wait); if some
    /// decided payments were not yet acknowledged by it, the read waits
    /// until they are or `bound` resolves, and reads again. Returns the
    /// answer and how many of the payments decided before the call it may
    /// still not show (counted before the last read: whatever the bank
    /// acknowledged by then, it applied before answering that read).
    pub async fn read_your_writes<T, E, Fut>(
        &self,
        bank: &BankName,
        account: &AccountNo,
        bound: impl Future<Output = ()>,
        mut read: impl FnMut() -> Fut,
    ) -> Result<(T, usize), E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let decided = self.unacknowledged(bank, account);
        let found = read().await?;
        if decided.is_empty() {
            return Ok((found, 0));
        }
        either(self.acknowledged_by(bank, decided.clone()), bound).await;
        let missed = {
            let inner = self.lock();
            decided
                .iter()
                .filter(|txn| inner.phase_two.awaits(&inner.state, **txn, bank))
                .count()
        };
        let found = read().await?;
        Ok((found, missed))
    }
}
