//! After healing, every seed ages its history past the retention: the
//! clock jumps by the retention, every node checkpoints now (its history
//! tables expire, and so does what finished since its last checkpoint),
//! and then, and again after every node crashed and recovered, no payment
//! of the seed may still be known anywhere, nothing may be left in memory,
//! and every balance must be what it was. A crash in the middle of that
//! checkpoint is tried too: of the disk images a crash could leave after
//! each of its writes, syncs, renames and removals, a few evenly spaced
//! ones per node are opened, and each must answer every payment as before
//! the expiry or not at all, with the same balances.

use std::collections::BTreeMap;

use coordinator::Payment;
use ledger::TxnState;
use money::TxnId;
use wal::sim::{CrashMode, SimStorage};

use crate::invariants::{Invariant, Violation};
use crate::{BANKS, World};

/// The longer of the gateway's and the banks' retention (both default).
const RETENTION_MS: u64 = {
    let gateway = coordinator::gateway::RETENTION_MS_DEFAULT;
    let bank = ledger::bank::DECIDED_RETENTION_MS_DEFAULT;
    if gateway > bank { gateway } else { bank }
};

/// Every bank's balances, by account.
type Balances = Vec<Vec<(String, u64)>>;

/// Crash images opened per node, out of those its expiring checkpoint left.
const IMAGES_OPENED_PER_NODE: usize = 4;

/// What each node knew of each payment before the expiry: the gateway's
/// payment, then each bank's transaction.
struct Known {
    gateway: BTreeMap<TxnId, Option<Payment>>,
    banks: Vec<BTreeMap<TxnId, Option<TxnState>>>,
}

fn retention(detail: String) -> Violation {
    Violation {
        invariant: Invariant::Retention,
        detail,
    }
}

impl World {
    pub(crate) fn check_retention(&mut self) -> Result<(), Violation> {
        let balances = self.balances();
        let known = self.known();
        self.clock.advance(RETENTION_MS + 1);
        self.event("the clock jumps past the retention; every node checkpoints".into());
        let images = self.checkpoint_every_node()?;
        self.check_forgotten(&balances, "after a checkpoint past the retention")?;
        for (target, images) in images.into_iter().enumerate() {
            self.check_crash_images(target, images, &known, &balances)?;
        }
        for target in 0..=BANKS.len() {
            self.crash(target, CrashMode::DropUnsynced, "crashes after the expiry");
        }
        self.end_downtimes();
        self.restart_due(self.now())?;
        self.settle();
        self.check_forgotten(&balances, "after every node crashed and recovered")
    }

    /// Checkpoints every node, returning per node (0: the gateway) the
    /// crash images its checkpoint could leave.
    fn checkpoint_every_node(&mut self) -> Result<Vec<Vec<SimStorage>>, Violation> {
        let now = self.now();
        let mut images = Vec::new();
        let gateway = self.gateway.up.clone().expect("healed: the gateway is up");
        self.gateway.storage.record_crash_images();
        gateway
            .checkpoint()
            .map_err(|error| retention(format!("the gateway's checkpoint failed: {error}")))?;
        images.push(self.gateway.storage.take_crash_images());
        for (index, name) in BANKS.iter().enumerate() {
            let node = &self.banks[index].node;
            let bank = node.up.clone().expect("healed: every bank is up");
            node.storage.record_crash_images();
            bank.checkpoint(now)
                .map_err(|error| retention(format!("{name}'s checkpoint failed: {error}")))?;
            images.push(node.storage.take_crash_images());
        }
        Ok(images)
    }

    fn known(&self) -> Known {
        let gateway = self.gateway.up.as_ref().expect("healed: the gateway is up");
        let banks = self
            .banks
            .iter()
            .map(|bank| bank.node.up.clone().expect("healed"));
        Known {
            gateway: self
                .requested
                .keys()
                .map(|txn| {
                    (
                        *txn,
                        gateway.current(*txn).expect("history tables readable"),
                    )
                })
                .collect(),
            banks: banks
                .map(|bank| {
                    let txns = self.requested.keys();
                    txns.map(|txn| (*txn, bank.txn(*txn).expect("history tables readable")))
                        .collect()
                })
                .collect(),
        }
    }

    /// Opens a few of node `target`'s crash images in its place: each must
    /// recover, answer every payment as before the expiry or not at all,
    /// and (a bank) hold the same balances. The live node is put back.
    fn check_crash_images(
        &mut self,
        target: usize,
        images: Vec<SimStorage>,
        known: &Known,
        balances: &Balances,
    ) -> Result<(), Violation> {
        let step = images.len().div_ceil(IMAGES_OPENED_PER_NODE).max(1);
        let mut checked = Ok(());
        if target == 0 {
            let live = (self.gateway.storage.clone(), self.gateway.up.take());
            for image in images.into_iter().step_by(step) {
                checked = checked.and_then(|()| self.check_image(0, image, known, balances));
            }
            (self.gateway.storage, self.gateway.up) = live;
        } else {
            let node = &mut self.banks[target - 1].node;
            let live = (node.storage.clone(), node.up.take());
            for image in images.into_iter().step_by(step) {
                checked = checked.and_then(|()| self.check_image(target, image, known, balances));
            }
            let node = &mut self.banks[target - 1].node;
            (node.storage, node.up) = live;
        }
        checked
    }

    fn check_image(
        &mut self,
        target: usize,
        image: SimStorage,
        known: &Known,
        balances: &Balances,
    ) -> Result<(), Violation> {
        let when = "in a crash image of the expiring checkpoint";
        if target == 0 {
            self.gateway.storage = image;
            self.start_gateway()?;
            let gateway = self.gateway.up.take().expect("just started");
            // The decision, not phase 2's progress: an END record nobody
            // waited for may be lost, and phase 2 then runs again.
            let outcome = |payment: &Option<Payment>| {
                payment
                    .as_ref()
                    .map(|payment| (payment.status, payment.reason.clone()))
            };
            for (txn, before) in &known.gateway {
                let now = gateway.current(*txn).expect("history tables readable");
                if now.is_some() && outcome(&now) != outcome(before) {
                    return Err(retention(format!(
                        "the gateway answers txn {txn} {now:?}, not {before:?}, {when}"
                    )));
                }
            }
            return Ok(());
        }
        let index = target - 1;
        self.banks[index].node.storage = image;
        self.start_bank(index)?;
        let bank = self.banks[index].node.up.take().expect("just started");
        for (txn, before) in &known.banks[index] {
            let now = bank.txn(*txn).expect("history tables readable");
            if now.is_some() && now != *before {
                return Err(retention(format!(
                    "{} answers txn {txn} otherwise {when}",
                    BANKS[index]
                )));
            }
        }
        let ledger = bank.ledger();
        ledger
            .check_invariants()
            .map_err(|error| retention(format!("{error} {when}")))?;
        let now: Vec<(String, u64)> = ledger
            .accounts()
            .map(|account| (account.number.to_string(), account.balance.0))
            .collect();
        if now != balances[index] {
            return Err(retention(format!(
                "{}'s balances changed {when}",
                BANKS[index]
            )));
        }
        Ok(())
    }

    fn balances(&self) -> Balances {
        self.banks
            .iter()
            .map(|bank| {
                let ledger = bank
                    .node
                    .up
                    .as_ref()
                    .expect("healed: every bank is up")
                    .ledger();
                ledger
                    .accounts()
                    .map(|account| (account.number.to_string(), account.balance.0))
                    .collect()
            })
            .collect()
    }

    /// No payment of the seed is known to any node, none holds anything in
    /// memory, and the balances are `balances`.
    fn check_forgotten(&self, balances: &Balances, when: &str) -> Result<(), Violation> {
        let gateway = self.gateway.up.as_ref().expect("healed: the gateway is up");
        for txn in self.requested.keys() {
            if gateway
                .current(*txn)
                .expect("history tables readable")
                .is_some()
            {
                return Err(retention(format!(
                    "the gateway still knows txn {txn} {when}"
                )));
            }
            for (index, name) in BANKS.iter().enumerate() {
                let bank = self.banks[index]
                    .node
                    .up
                    .as_ref()
                    .expect("healed: every bank is up");
                if bank.txn(*txn).expect("history tables readable").is_some() {
                    return Err(retention(format!("{name} still knows txn {txn} {when}")));
                }
            }
        }
        if gateway.in_memory() != 0 {
            let left = gateway.in_memory();
            return Err(retention(format!(
                "the gateway holds {left} payments in memory {when}"
            )));
        }
        if self.balances() != *balances {
            return Err(retention(format!("balances changed {when}")));
        }
        Ok(())
    }
}
