//! The faults the world injects into the nodes while faults are on: a node
//! crashed outright (its disk keeps what was synced), a node's next sync
//! made to fail; and fail-stop, which follows a failed sync: a node whose
//! log failed is stopped, its unsynced writes lost or torn at a sector
//! boundary. Every choice is drawn from the world's random generator.
//!
//! Faults on messages (drops, duplicates, delays) are the network's own
//! ([`crate::network`]). This module only picks targets and when; how a
//! node crashes and comes back is [`crate::nodes`]'s business.

use std::sync::atomic::Ordering;

use rand::Rng;
use wal::sim::CrashMode;

use crate::nodes::node_name;
use crate::{BANKS, World};

impl World {
    /// Draws this step's faults: maybe a crash, maybe a sync that will fail.
    pub(crate) fn inject_faults(&mut self) {
        // Crash a node outright (its disk keeps what was synced).
        if self.rng.random_ratio(1, 400) {
            let target = self.rng.random_range(0..=BANKS.len());
            self.crash(target, CrashMode::DropUnsynced, "crashed");
        }
        // Make a node's next sync fail: it stops with that write unsynced.
        if self.rng.random_ratio(1, 150) {
            let target = self.rng.random_range(0..=BANKS.len());
            let node_up = match target {
                0 => self.gateway.up.is_some() && !self.gateway.sync_fault,
                bank => {
                    self.banks[bank - 1].node.up.is_some() && !self.banks[bank - 1].node.sync_fault
                }
            };
            if node_up {
                let storage = match target {
                    0 => {
                        self.gateway.sync_fault = true;
                        &self.gateway.storage
                    }
                    bank => {
                        self.banks[bank - 1].node.sync_fault = true;
                        &self.banks[bank - 1].node.storage
                    }
                };
                storage.fail_syncs_after(0);
                self.report.counts.failed_syncs += 1;
                let name = node_name(target);
                self.event(format!("{name}: its next sync will fail"));
            }
        }
    }

    /// Stops nodes whose log failed (fail-stop); what they wrote but never
    /// synced is lost, or torn at a sector boundary.
    pub(crate) fn stop_failed_nodes(&mut self) {
        for target in 0..=BANKS.len() {
            let failed = match target {
                0 => self.gateway.up.is_some() && self.gateway.failed.load(Ordering::SeqCst),
                bank => {
                    let node = &self.banks[bank - 1].node;
                    node.up.is_some() && node.failed.load(Ordering::SeqCst)
                }
            };
            if failed {
                let sectors = self.rng.random_range(0..4);
                self.crash(
                    target,
                    CrashMode::TearUnsynced { sectors },
                    "stopped after a failed sync",
                );
            }
        }
    }
}
