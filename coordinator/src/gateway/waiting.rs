//! Waiting without a runtime: wakers parked per txn (at most
//! [`WAKERS_PER_TXN_MAX`] each), the count of repeats admitted to wait, the
//! futures that resolve when a txn is decided or a bank acknowledged it, and
//! two small combinators (all of a list; the first of two).
//!
//! The gateway wakes a txn's wakers whenever it applies a record about that
//! txn or a bank acknowledges its phase 2; every future here re-checks the
//! state when polled, so a spurious wake is harmless.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use money::{BankName, TxnId};
use wal::Lsn;

use crate::gateway::{Gateway, GatewayError};
use crate::participant::Participant;
use crate::payment::Payment;

/// The most wakers parked on one txn (see [`Waiters::park`]).
const WAKERS_PER_TXN_MAX: usize = 64;

/// Tasks waiting for a txn to change, and repeats admitted to wait.
#[derive(Default)]
pub(crate) struct Waiters {
    parked: HashMap<TxnId, Vec<Waker>>,
    /// Repeated requests admitted to wait for an in-flight payment (at most
    /// `waiters_max`).
    pub(crate) waiting: usize,
}

impl Waiters {
    /// Parks `waker` until `txn` changes. A task parks once however often
    /// it is polled, and at most [`WAKERS_PER_TXN_MAX`] wakers wait on one
    /// txn: a full list is woken and emptied first (a future still waiting
    /// parks again when polled; one that gave up is not polled), so wakers
    /// left behind by callers that gave up cannot pile up.
    pub(crate) fn park(&mut self, txn: TxnId, waker: &Waker) {
        let parked = self.parked.entry(txn).or_default();
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

    pub(crate) fn wake(&mut self, txn: TxnId) {
        for waker in self.parked.remove(&txn).unwrap_or_default() {
            waker.wake();
        }
    }

    /// How many tasks are parked on `txn`.
    pub(crate) fn parked_on(&self, txn: TxnId) -> usize {
        self.parked.get(&txn).map_or(0, Vec::len)
    }
}

/// A repeat admitted to wait for an in-flight payment; leaves when dropped.
pub(crate) struct Waiting<'a, P> {
    pub(crate) gateway: &'a Gateway<P>,
}

impl<P> Drop for Waiting<'_, P> {
    fn drop(&mut self) {
        let mut inner = self.gateway.lock();
        assert!(inner.waiters.waiting > 0);
        inner.waiters.waiting -= 1;
    }
}

/// Resolves once a txn is decided (in memory: with the decision's LSN).
pub(crate) struct DecidedFuture<'a, P> {
    pub(crate) gateway: &'a Gateway<P>,
    pub(crate) txn: TxnId,
}

impl<P: Participant> Future for DecidedFuture<'_, P> {
    type Output = Result<(Payment, Lsn), GatewayError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.gateway.lock();
        // Decided and ended, it may have moved to the history meanwhile.
        let entry = match inner.state.entry(self.txn, &self.gateway.history) {
            Ok(entry) => entry,
            Err(error) => return Poll::Ready(Err(error)),
        };
        let decided = entry.and_then(|entry| {
            let payment = entry.payment.clone()?;
            entry.decision.as_ref()?;
            Some((payment, entry.decided_lsn))
        });
        match decided {
            Some((mut payment, decided_lsn)) => {
                payment.replayed = true;
                Poll::Ready(Ok((payment, decided_lsn)))
            }
            None => {
                inner.waiters.park(self.txn, context.waker());
                Poll::Pending
            }
        }
    }
}

/// Resolves once a bank acknowledged phase 2 of every txn in a list (or
/// they ended).
pub(crate) struct AcknowledgedFuture<'a, P> {
    pub(crate) gateway: &'a Gateway<P>,
    pub(crate) bank: &'a BankName,
    pub(crate) txns: Vec<TxnId>,
}

impl<P: Participant> Future for AcknowledgedFuture<'_, P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut inner = this.gateway.lock();
        let inner = &mut *inner;
        this.txns
            .retain(|txn| inner.phase_two.awaits(&inner.state, *txn, this.bank));
        match this.txns.first() {
            None => Poll::Ready(()),
            Some(txn) => {
                inner.waiters.park(*txn, context.waker());
                Poll::Pending
            }
        }
    }
}

/// A boxed future, as the participant's calls are.
pub(crate) type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls every future to completion, concurrently; results in order.
pub(crate) fn join_all<T>(futures: Vec<Boxed<'_, T>>) -> JoinAll<'_, T> {
    JoinAll {
        results: futures.iter().map(|_| None).collect(),
        futures: futures.into_iter().map(Some).collect(),
    }
}

pub(crate) struct JoinAll<'a, T> {
    futures: Vec<Option<Boxed<'a, T>>>,
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

/// Resolves when either future does (`first` is polled first).
pub(crate) async fn either(first: impl Future<Output = ()>, second: impl Future<Output = ()>) {
    let mut first = std::pin::pin!(first);
    let mut second = std::pin::pin!(second);
    std::future::poll_fn(|context| {
        if first.as_mut().poll(context).is_ready() || second.as_mut().poll(context).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
