//! What a run tells: the counts of one seed or many ([`Counts`],
//! [`SimReport`], [`Summary`]), the failure of a seed ([`SimFailure`]), and
//! the event record behind both: every event goes into a digest (FNV-1a over
//! its text, so equal digests mean identical runs) and into a short trace of
//! the last events, printed when a seed fails.
//!
//! This module only records: it knows nothing of what the events mean, and
//! nothing it does draws on the world's random generator, so recording can
//! never change a run.

use crate::invariants::Violation;
use crate::network::lock;
use crate::{EPOCH_MS, World};

/// How many of the last events a failure prints.
const TRACE_TAIL: usize = 40;
/// Where the digest starts: the FNV-1a 64-bit offset basis.
pub(crate) const DIGEST_START: u64 = 0xcbf2_9ce4_8422_2325;

/// What happened in one seed, or summed over many.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub steps: u64,
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    pub failed_syncs: u64,
    /// Answered ids sent again for another amount, and refused.
    pub reuses_refused: u64,
    /// Balance reads answered to clients (each checked for read your writes).
    pub balance_reads: u64,
    /// Newcomers answered registered (each checked after healing).
    pub registrations: u64,
    /// History tables the nodes wrote at checkpoints, and merges of them.
    pub tables_written: u64,
    pub table_merges: u64,
}

impl Counts {
    /// Counts what a node's history tables did.
    pub(crate) fn add_tables(&mut self, stats: wal::table::StoreStats) {
        self.tables_written += stats.tables_added;
        self.table_merges += stats.merges;
    }

    pub(crate) fn add(&mut self, other: &Counts) {
        self.steps += other.steps;
        self.payments += other.payments;
        self.committed += other.committed;
        self.aborted += other.aborted;
        self.messages += other.messages;
        self.dropped += other.dropped;
        self.duplicated += other.duplicated;
        self.crashes += other.crashes;
        self.failed_syncs += other.failed_syncs;
        self.reuses_refused += other.reuses_refused;
        self.balance_reads += other.balance_reads;
        self.registrations += other.registrations;
        self.tables_written += other.tables_written;
        self.table_merges += other.table_merges;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps: {} payments ({} committed, {} aborted), {} messages ({} dropped, {} duplicated), {} crashes, {} failed syncs injected, {} reused ids refused, {} balance reads checked, {} registrations, {} history tables written, {} merged",
            self.steps,
            self.payments,
            self.committed,
            self.aborted,
            self.messages,
            self.dropped,
            self.duplicated,
            self.crashes,
            self.failed_syncs,
            self.reuses_refused,
            self.balance_reads,
            self.registrations,
            self.tables_written,
            self.table_merges
        )
    }
}

/// What one seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub counts: Counts,
    /// A hash of every event in order: equal digests, identical runs.
    pub digest: u64,
}

/// A seed that broke an invariant (or the simulation itself).
#[derive(Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub violation: Violation,
    /// The last events before the failure.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at step {}: {}",
            self.seed, self.step, self.violation
        )?;
        writeln!(
            f,
            "replay it with: cargo run --release --bin minipay -- sim --seed {}",
            self.seed
        )?;
        writeln!(f, "last events:")?;
        for event in &self.trace {
            writeln!(f, "  {event}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// What a run of many seeds did, summed.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub counts: Counts,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seeds, {}", self.seeds, self.counts)
    }
}

impl World {
    /// Records an event in the trace and the digest.
    pub(crate) fn event(&mut self, text: String) {
        for byte in text.bytes().chain(std::iter::once(b'\n')) {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.trace.len() == TRACE_TAIL {
            self.trace.pop_front();
        }
        self.trace.push_back(format!(
            "step {} t+{}ms {text}",
            self.step,
            self.now() - EPOCH_MS
        ));
    }

    /// The report of the run so far; the network's counts are read from it.
    pub(crate) fn report(&self) -> SimReport {
        let net = lock(&self.net);
        let mut counts = Counts {
            steps: self.step,
            messages: net.sent,
            dropped: net.dropped,
            duplicated: net.duplicated,
            ..self.report.counts.clone()
        };
        for target in 0..=self.banks.len() {
            counts.add_tables(self.table_stats(target));
        }
        SimReport {
            seed: self.report.seed,
            counts,
            digest: self.digest,
        }
    }

    /// What node `target`'s history tables did since it last started
    /// (nothing while it is down).
    pub(crate) fn table_stats(&self, target: usize) -> wal::table::StoreStats {
        match target {
            0 => self
                .gateway
                .up
                .as_ref()
                .map(|gateway| gateway.history_tables().stats()),
            bank => self.banks[bank - 1]
                .node
                .up
                .as_ref()
                .map(|bank| bank.history().store().stats()),
        }
        .unwrap_or_default()
    }
}
