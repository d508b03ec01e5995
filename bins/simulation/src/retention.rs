//! After healing, every seed ages its history past the retention: the
//! clock jumps by the retention, every node checkpoints now (its history
//! tables expire, and so does what finished since its last checkpoint),
//! and then, and again after every node crashed and recovered, no payment
//! of the seed may still be known anywhere, nothing may be left in memory,
//! and every balance must be what it was.

use wal::sim::CrashMode;

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

fn retention(detail: String) -> Violation {
    Violation {
        invariant: Invariant::Retention,
        detail,
    }
}

impl World {
    pub(crate) fn check_retention(&mut self) -> Result<(), Violation> {
        let balances = self.balances();
        self.clock.advance(RETENTION_MS + 1);
        self.event("the clock jumps past the retention; every node checkpoints".into());
        self.checkpoint_every_node()?;
        self.check_forgotten(&balances, "after a checkpoint past the retention")?;
        for target in 0..=BANKS.len() {
            self.crash(target, CrashMode::DropUnsynced, "crashes after the expiry");
        }
        self.end_downtimes();
        self.restart_due(self.now())?;
        self.settle();
        self.check_forgotten(&balances, "after every node crashed and recovered")
    }

    fn checkpoint_every_node(&mut self) -> Result<(), Violation> {
        let now = self.now();
        if let Some(gateway) = &self.gateway.up {
            gateway
                .checkpoint()
                .map_err(|error| retention(format!("the gateway's checkpoint failed: {error}")))?;
        }
        for (index, name) in BANKS.iter().enumerate() {
            if let Some(bank) = &self.banks[index].node.up {
                bank.checkpoint(now)
                    .map_err(|error| retention(format!("{name}'s checkpoint failed: {error}")))?;
            }
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
