//! How the world runs on one thread: the simulated clock, and the nodes'
//! tasks (futures of the production cores) polled in a fixed order, with a
//! waker that does nothing, until none makes progress.
//!
//! Nothing here is random and nothing waits on real time: a task runs only
//! when [`World::settle`] polls it, the clock moves only when the step loop
//! advances it, and the logs run without flusher threads. The executor
//! knows nothing of what a task does; it sees progress only as tasks
//! finishing, log records written and messages sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Waker};

use coordinator::Clock;

use crate::World;
use crate::network::{Dest, lock};

/// The simulated clock, in Unix milliseconds, shared by every node.
#[derive(Clone)]
pub(crate) struct SimClock(Arc<AtomicU64>);

impl SimClock {
    pub(crate) fn starting_at(ms: u64) -> SimClock {
        SimClock(Arc::new(AtomicU64::new(ms)))
    }

    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.now()
    }
}

/// A node's piece of work in flight; dropped when its node crashes.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()>>>;

impl World {
    pub(crate) fn spawn(&mut self, owner: Dest, task: impl Future<Output = ()> + 'static) {
        self.tasks.push((owner, Box::pin(task)));
    }

    /// Runs every task until none can make progress: poll each in order and
    /// repeat while anything changed. The logs run without flusher threads
    /// (a task waiting for durability syncs on this thread), so nothing
    /// happens behind the simulation's back.
    pub(crate) fn settle(&mut self) {
        loop {
            let before = self.progress();
            let mut context = Context::from_waker(Waker::noop());
            self.tasks
                .retain_mut(|(_, task)| task.as_mut().poll(&mut context).is_pending());
            if self.progress() == before {
                return;
            }
        }
    }

    /// Changes whenever a task finishes, a record is written or a message
    /// is sent.
    fn progress(&self) -> (usize, u64, u64) {
        let mut records = self
            .gateway
            .up
            .as_ref()
            .map_or(0, |gateway| gateway.wal().next_lsn().0);
        for bank in &self.banks {
            records += bank
                .node
                .up
                .as_ref()
                .map_or(0, |bank| bank.wal().next_lsn().0);
        }
        (self.tasks.len(), records, lock(&self.net).seq)
    }
}
