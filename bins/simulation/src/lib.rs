//! Deterministic simulation of the whole payment system: the production
//! gateway ([`coordinator::Gateway`]) and banks ([`ledger::Bank`]) on
//! simulated disks ([`wal::sim::SimStorage`]), joined by a simulated network,
//! driven by one seeded random generator and a simulated clock.
//!
//! Each step advances the clock, delivers the messages that are due, runs
//! the nodes' timers (clients retrying, banks asking about in-doubt
//! transactions, the gateway retrying phase 2 and checkpointing), injects
//! faults, runs every node until it is idle, and checks the invariants
//! ([`crate::invariants`]). Faults: messages dropped, duplicated, delayed and
//! so reordered; any node crashed and restarted later (its disk keeps only
//! what was synced); a sync that fails mid-request, which makes the node
//! stop (fail-stop) and come back with the unsynced write lost or torn at a
//! sector boundary. Then the faults stop, every node comes back, and the
//! system must settle with every invariant, liveness included.
//!
//! Determinism: everything random comes from the seed; tasks are polled in
//! a fixed order on one thread, and the logs run without flusher threads
//! ([`wal::Options::background_flush`] off: whoever waits for durability
//! writes and syncs). A seed therefore replays identically: [`run`] returns
//! a digest of every event to prove it.
//!
//! The crate is laid out as the world is (after TigerBeetle's
//! `src/testing/cluster/`): this file holds the `World` and its step loop;
//! `network` the messages and the lossy wire, and the participant the
//! gateway calls banks through; `nodes` the gateway and banks, started,
//! crashed, restarted, handed messages and running their timers; `workload`
//! the clients and their payments; `faults` what is injected and when;
//! `executor` the clock and the tasks polled on one thread; `observation`
//! what the checker is shown; `report` the counts, the digest and the trace;
//! [`invariants`] the checker. The modules are `impl World` blocks by
//! concern over one struct, so that the order of every draw from the random
//! generator stays where the step loop puts it.

pub mod invariants;

mod executor;
mod faults;
mod network;
mod nodes;
mod observation;
mod reads;
mod registration;
mod report;
mod retention;
mod workload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use coordinator::PaymentRequest;
use money::TxnId;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::executor::{SimClock, Task};
use crate::invariants::{Checker, Violation};
use crate::network::{Dest, Envelope, Net, SharedNet, lock};
use crate::nodes::{BankNode, Node, SimGateway};
use crate::workload::Client;

pub use crate::report::{Counts, SimFailure, SimReport, Summary};

const BANKS: [&str; 3] = ["bank_a", "bank_b", "bank_c"];
const CURRENCY: &str = "INR";
/// The simulated clock starts here (an arbitrary Unix time in ms).
const EPOCH_MS: u64 = 1_800_000_000_000;

/// Every this many steps, the invariants are checked over every payment
/// (in between, over those in flight).
const FULL_CHECK_EVERY: u64 = 50;

/// A rule broken on purpose, to show the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Banks answer YES as soon as the vote is decided in memory, before the
    /// prepare record (and its holds) is durable.
    VoteYesBeforeDurable,
    /// The gateway answers a balance read without the read-your-writes
    /// wait, and says it misses nothing.
    BalanceWithoutWaiting,
    /// The gateway answers a registration once the bank opened the
    /// account, before the user is durable.
    RegistrationBeforeDurable,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Steps with faults and new payments.
    pub steps: u64,
    /// Steps allowed for the system to settle after the faults stop.
    pub heal_steps_max: u64,
    pub broken: Option<Broken>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            steps: 2_000,
            heal_steps_max: 3_000,
            broken: None,
        }
    }
}

/// Runs one seed to the end. Deterministic: the same seed and config give
/// the same report (digest included) or the same failure.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = World::new(seed, config.clone());
    match world.run() {
        Ok(()) => Ok(world.report()),
        Err(violation) => Err(SimFailure {
            seed,
            step: world.step,
            violation,
            trace: world.trace.iter().cloned().collect(),
        }),
    }
}

/// Everything one seed runs: the nodes, the network between them, the
/// clients, the tasks in flight, the checker, and the one random generator
/// every choice is drawn from. Its parts are implemented by concern in the
/// crate's modules; here are its life (`run`, `heal`) and its step.
struct World {
    config: SimConfig,
    rng: StdRng,
    clock: SimClock,
    net: SharedNet,
    step: u64,
    gateway: Node<SimGateway>,
    gateway_retry_at: u64,
    banks: Vec<BankNode>,
    clients: Vec<Client>,
    /// Tasks of each node, polled in order; dropped when the node crashes.
    tasks: Vec<(Dest, Task)>,
    checker: Checker,
    /// Every payment a client made, by id.
    requested: BTreeMap<TxnId, PaymentRequest>,
    /// Payments not yet over everywhere: observed every step.
    active: BTreeSet<TxnId>,
    /// What retired payments moved at each bank.
    settled_net: [i128; BANKS.len()],
    /// A node came back this step: the step's check is complete.
    recovered_this_step: bool,
    /// Faults are injected and clients make new payments; off when healing.
    faults: bool,
    /// The seed and the counts the world keeps (the network keeps its own).
    report: SimReport,
    /// The last events, printed when a seed fails.
    trace: VecDeque<String>,
    /// A hash of every event so far.
    digest: u64,
    /// Newcomers so far (`newcomer_0`, …), and those answered registered.
    newcomers: u64,
    registered: registration::Registered,
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let net = Arc::new(Mutex::new(Net::new(StdRng::seed_from_u64(rng.next_u64()))));
        let (initial, clients) = workload::clients(&mut rng);
        World {
            config,
            clock: SimClock::starting_at(EPOCH_MS),
            net,
            step: 0,
            gateway: Node::new(),
            gateway_retry_at: EPOCH_MS,
            banks: BANKS
                .iter()
                .map(|_| BankNode { node: Node::new() })
                .collect(),
            clients,
            tasks: Vec::new(),
            checker: Checker::new(initial),
            requested: BTreeMap::new(),
            active: BTreeSet::new(),
            settled_net: [0; BANKS.len()],
            recovered_this_step: false,
            faults: true,
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            trace: VecDeque::new(),
            digest: report::DIGEST_START,
            newcomers: 0,
            registered: registration::Registered::new(),
            rng,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn run(&mut self) -> Result<(), Violation> {
        for index in 0..BANKS.len() {
            self.start_bank(index)?;
        }
        self.start_gateway()?;
        self.settle();
        while self.step < self.config.steps {
            self.step()?;
        }
        self.heal()
    }

    /// Stops the faults, brings every node back, and waits for the system to
    /// settle; then every invariant must hold, liveness included.
    fn heal(&mut self) -> Result<(), Violation> {
        self.faults = false;
        lock(&self.net).lossy = false;
        self.event("faults stop; healing".into());
        let deadline = self.step + self.config.heal_steps_max;
        loop {
            self.end_downtimes();
            self.step()?;
            if self.settled() {
                break;
            }
            if self.step >= deadline {
                let observation = self.observe(true);
                self.checker.check_healed(&observation)?;
                return Err(Violation {
                    invariant: crate::invariants::Invariant::Liveness,
                    detail: format!(
                        "not settled {} steps after the faults stopped: {} clients still waiting",
                        self.config.heal_steps_max,
                        self.clients
                            .iter()
                            .filter(|client| client.outstanding.is_some())
                            .count()
                    ),
                });
            }
        }
        let observation = self.observe(true);
        self.checker.check_healed(&observation)?;
        self.check_registrations()?;
        self.check_retention()
    }

    fn settled(&self) -> bool {
        let Some(gateway) = &self.gateway.up else {
            return false;
        };
        self.clients
            .iter()
            .all(|client| client.outstanding.is_none())
            && gateway.unfinished().is_empty()
            && self.banks.iter().all(|bank| {
                bank.node
                    .up
                    .as_ref()
                    .is_some_and(|bank| bank.in_doubt().is_empty())
            })
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.step += 1;
        let advance = self.rng.random_range(1..=20);
        self.clock.advance(advance);
        let due = lock(&self.net).due(self.now());
        for envelope in due {
            self.deliver(envelope)?;
        }
        self.timers()?;
        if self.faults {
            self.inject_faults();
        }
        self.settle();
        self.stop_failed_nodes();
        // A complete check regularly and whenever a node has just recovered;
        // in between, only what is still in flight.
        let complete = self.step.is_multiple_of(FULL_CHECK_EVERY) || self.recovered_this_step;
        self.recovered_this_step = false;
        let observation = self.observe(complete);
        self.checker.check(&observation)?;
        self.retire_settled(&observation);
        Ok(())
    }

    /// Hands a message to its addressee; a message to a node that is down
    /// is lost.
    fn deliver(&mut self, envelope: Envelope) -> Result<(), Violation> {
        let now = self.now();
        match envelope.to {
            Dest::Client(client) => self.client_answer(client, envelope.msg),
            Dest::Registrar => self.newcomer_answer(envelope.msg),
            Dest::Gateway => {
                let Some(gateway) = self.gateway.up.clone() else {
                    return Ok(());
                };
                self.deliver_to_gateway(gateway, envelope.msg, now);
                Ok(())
            }
            Dest::Bank(index) => {
                let Some(bank) = self.banks[index].node.up.clone() else {
                    return Ok(());
                };
                self.deliver_to_bank(index, bank, envelope.msg, now);
                Ok(())
            }
        }
    }

    /// What is due at this time: nodes coming back, clients acting, the
    /// nodes' own timers.
    fn timers(&mut self) -> Result<(), Violation> {
        let now = self.now();
        self.restart_due(now)?;
        self.clients_act(now);
        self.newcomers_act(now);
        self.bank_timers(now);
        self.gateway_timer(now);
        Ok(())
    }
}

/// Runs seeds `from..from + count` on `threads` threads. Returns the summary,
/// or the failure of the lowest failing seed (all seeds below it passed).
pub fn run_seeds(
    from: u64,
    count: u64,
    config: &SimConfig,
    threads: usize,
) -> Result<Summary, Box<SimFailure>> {
    let next = AtomicU64::new(from);
    let end = from + count;
    let results: Mutex<Vec<Result<SimReport, SimFailure>>> = Mutex::new(Vec::new());
    let first_failure = AtomicU64::new(u64::MAX);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end || seed > first_failure.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = run(seed, config);
                    if result.is_err() {
                        first_failure.fetch_min(seed, Ordering::SeqCst);
                    }
                    results.lock().expect("results lock").push(result);
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|result| match result {
        Ok(report) => report.seed,
        Err(failure) => failure.seed,
    });
    let mut summary = Summary::default();
    for result in results {
        match result {
            Ok(report) => {
                summary.seeds += 1;
                summary.counts.add(&report.counts);
            }
            Err(failure) => return Err(Box::new(failure)),
        }
    }
    Ok(summary)
}
