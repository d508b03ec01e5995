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

pub mod invariants;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use coordinator::{
    CallError, CallFuture, Clock, Decision, Entropy, Gateway, GatewayError, GatewayOptions,
    Participant, PaymentRequest, SetupUser, Status,
};
use ledger::{Bank, BankError, BankOptions, InDoubtPolicy, Seed, TxnState};
use money::{AccountNo, Amount, BankName, Leg, TxnId};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use wal::sim::{CrashMode, SimStorage};

use crate::invariants::{
    AccountRef, BankTxn, BankView, Checker, GatewayEntry, Movement, Observation, Outcome, TxnKey,
    Violation,
};

const BANKS: [&str; 3] = ["bank_a", "bank_b", "bank_c"];
const ACCOUNTS_PER_BANK: usize = 2;
const CURRENCY: &str = "INR";
/// The simulated clock starts here (an arbitrary Unix time in ms).
const EPOCH_MS: u64 = 1_800_000_000_000;
const PREPARE_TIMEOUT_MS: u64 = 400;
const COMMIT_TIMEOUT_MS: u64 = 400;
/// When banks ask about a transaction in doubt: short, so that healing fits
/// in the steps.
const IN_DOUBT: InDoubtPolicy = InDoubtPolicy {
    timeout_ms: 600,
    backoff_min_ms: 300,
    backoff_max_ms: 2_400,
};
const CLIENT_RETRY_MIN_MS: u64 = 200;
const CLIENT_RETRY_MAX_MS: u64 = 3_200;
/// How often the gateway's timer runs its phase-2 retry pass.
const GATEWAY_RETRY_EVERY_MS: u64 = 250;
/// The phase-2 retry backoff: short, so that healing fits in the steps.
const PHASE_TWO_RETRY: coordinator::Backoff = coordinator::Backoff {
    min_ms: 250,
    max_ms: 2_000,
};
const TRACE_TAIL: usize = 40;
/// Every this many steps, the invariants are checked over every payment
/// (in between, over those in flight).
const FULL_CHECK_EVERY: u64 = 50;

/// A rule broken on purpose, to show the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Banks answer YES as soon as the vote is decided in memory, before the
    /// prepare record (and its holds) is durable.
    VoteYesBeforeDurable,
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
}

impl Counts {
    fn add(&mut self, other: &Counts) {
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
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps: {} payments ({} committed, {} aborted), {} messages ({} dropped, {} duplicated), {} crashes, {} failed syncs injected, {} reused ids refused",
            self.steps,
            self.payments,
            self.committed,
            self.aborted,
            self.messages,
            self.dropped,
            self.duplicated,
            self.crashes,
            self.failed_syncs,
            self.reuses_refused
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

// ---------------------------------------------------------------- network

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Gateway,
    Bank(usize),
    Client(usize),
}

#[derive(Clone, Debug)]
enum Reply {
    Vote(coordinator::Vote),
    Ack,
    Refused(String),
}

#[derive(Clone, Debug)]
enum Msg {
    Prepare {
        call: u64,
        txn: TxnId,
        legs: Vec<Leg>,
    },
    /// Phase 2 (a call awaiting its ack), or the answer to `AskDecision`.
    Decide {
        call: Option<u64>,
        txn: TxnId,
        decision: Decision,
    },
    Reply {
        call: u64,
        reply: Reply,
    },
    AskDecision {
        bank: usize,
        txn: TxnId,
    },
    /// `reused`: the client misuses an id it already had answered, with
    /// another amount; the gateway must refuse it and move nothing.
    Pay {
        client: usize,
        request: PaymentRequest,
        reused: bool,
    },
    PayAnswer {
        txn: TxnId,
        answer: Result<Status, String>,
        reused: bool,
    },
}

struct Envelope {
    at: u64,
    seq: u64,
    to: Dest,
    msg: Msg,
}

/// The network and what crosses it. Shared with the gateway's participant.
struct Net {
    rng: StdRng,
    lossy: bool,
    in_flight: Vec<Envelope>,
    seq: u64,
    next_call: u64,
    replies: BTreeMap<u64, Reply>,
    sent: u64,
    dropped: u64,
    duplicated: u64,
}

impl Net {
    fn send(&mut self, now: u64, to: Dest, msg: Msg) {
        self.sent += 1;
        if self.lossy && self.rng.random_ratio(1, 25) {
            self.dropped += 1;
            return;
        }
        let copies = if self.lossy && self.rng.random_ratio(1, 30) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.lossy {
                self.rng.random_range(1..=60)
            } else {
                self.rng.random_range(1..=5)
            };
            self.seq += 1;
            self.in_flight.push(Envelope {
                at: now + delay,
                seq: self.seq,
                to,
                msg: msg.clone(),
            });
        }
    }

    /// The messages due by `now`, in delivery order.
    fn due(&mut self, now: u64) -> Vec<Envelope> {
        let (mut due, later): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|envelope| envelope.at <= now);
        self.in_flight = later;
        due.sort_by_key(|envelope| (envelope.at, envelope.seq));
        due
    }
}

type SharedNet = Arc<Mutex<Net>>;

fn lock(net: &SharedNet) -> MutexGuard<'_, Net> {
    net.lock().expect("sim network lock poisoned")
}

#[derive(Clone)]
struct SimClock(Arc<AtomicU64>);

impl SimClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.now()
    }
}

struct SimEntropy(Mutex<StdRng>);

impl Entropy for SimEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        self.0.lock().expect("entropy lock").fill_bytes(bytes);
    }
}

/// The gateway's view of the banks: calls become messages; an answer is
/// the reply to the call, or a timeout on the simulated clock.
struct SimParticipant {
    net: SharedNet,
    clock: SimClock,
}

impl SimParticipant {
    fn call<'a, T: Send + 'a>(
        &'a self,
        bank: &'a BankName,
        timeout: Duration,
        message: impl FnOnce(u64) -> Msg,
        answer: impl Fn(Reply) -> Result<T, CallError> + Send + 'a,
    ) -> CallFuture<'a, T> {
        let Some(index) = BANKS.iter().position(|name| bank == name) else {
            return Box::pin(std::future::ready(Err(CallError::Refused {
                bank: bank.clone(),
                detail: "unknown bank".into(),
            })));
        };
        let now = self.clock.now();
        let deadline = now + timeout.as_millis() as u64;
        let call = {
            let mut net = lock(&self.net);
            net.next_call += 1;
            let call = net.next_call;
            net.send(now, Dest::Bank(index), message(call));
            call
        };
        Box::pin(std::future::poll_fn(move |_| {
            if let Some(reply) = lock(&self.net).replies.remove(&call) {
                return Poll::Ready(answer(reply));
            }
            if self.clock.now() >= deadline {
                return Poll::Ready(Err(CallError::Timeout {
                    bank: bank.clone(),
                    timeout,
                }));
            }
            Poll::Pending
        }))
    }
}

fn refused(bank: &BankName, detail: String) -> CallError {
    CallError::Refused {
        bank: bank.clone(),
        detail,
    }
}

impl Participant for SimParticipant {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, coordinator::Vote> {
        self.call(
            bank,
            timeout,
            |call| Msg::Prepare { call, txn, legs },
            move |reply| match reply {
                Reply::Vote(vote) => Ok(vote),
                Reply::Refused(detail) => Err(refused(bank, detail)),
                Reply::Ack => Err(refused(bank, "an ack answered a prepare".into())),
            },
        )
    }

    fn commit<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.decide(bank, txn, Decision::Commit, timeout)
    }

    fn abort<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.decide(bank, txn, Decision::Abort, timeout)
    }
}

impl SimParticipant {
    fn decide<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        decision: Decision,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        let message = move |call| Msg::Decide {
            call: Some(call),
            txn,
            decision,
        };
        self.call(bank, timeout, message, move |reply| match reply {
            Reply::Ack => Ok(()),
            Reply::Refused(detail) => Err(refused(bank, detail)),
            Reply::Vote(_) => Err(refused(bank, "a vote answered a decision".into())),
        })
    }
}

// ------------------------------------------------------------------ nodes

type SimGateway = Gateway<SimParticipant>;

/// One node's disk and, while it is up, its running core.
struct Node<T> {
    storage: SimStorage,
    up: Option<Arc<T>>,
    /// Set by a task that saw the log fail: the node must stop.
    failed: Arc<AtomicBool>,
    /// When a crashed node comes back.
    restart_at: u64,
    /// The next sync fails (a fault was injected).
    sync_fault: bool,
}

impl<T> Node<T> {
    fn new() -> Node<T> {
        Node {
            storage: SimStorage::new(),
            up: None,
            failed: Arc::new(AtomicBool::new(false)),
            restart_at: 0,
            sync_fault: false,
        }
    }
}

struct BankNode {
    node: Node<Bank>,
}

struct Client {
    user: String,
    account: AccountRef,
    /// The payment being sent until it has an outcome, and when to resend.
    outstanding: Option<(PaymentRequest, u64, u64)>,
    /// The last payment that got its outcome (its id is sometimes misused).
    last_answered: Option<PaymentRequest>,
    next_payment_at: u64,
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

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
    /// Answers the gateway sent to clients, delivered by the network.
    checker: Checker,
    requested: BTreeMap<TxnId, PaymentRequest>,
    /// Payments not yet over everywhere: observed every step.
    active: BTreeSet<TxnId>,
    /// What retired payments moved at each bank.
    settled_net: [i128; BANKS.len()],
    recovered_this_step: bool,
    faults: bool,
    report: SimReport,
    trace: VecDeque<String>,
    digest: u64,
}

fn bank_options() -> BankOptions {
    BankOptions {
        wal: sim_wal_options(),
        snapshot_every: 64,
        in_doubt: IN_DOUBT,
        ..BankOptions::default()
    }
}

/// Small segments (so rotation and checkpoints happen often), one flusher,
/// no background segment preparation, no batching delay.
fn sim_wal_options() -> wal::Options {
    wal::Options {
        segment_size: 16 << 10,
        payload_len_max: 4 << 10,
        batch_delay_max: Duration::ZERO,
        prepare_segments_ahead: false,
        syncs_in_flight_max: 1,
        background_flush: false,
        ..wal::Options::default()
    }
}

fn account_name(bank: usize, index: usize) -> String {
    format!("{}{}", (b'a' + bank as u8) as char, index + 1)
}

fn bank_name(name: &str) -> BankName {
    BankName::parse(name).expect("the simulation's bank names are valid")
}

fn account_no(number: &str) -> AccountNo {
    AccountNo::parse(number).expect("the simulation's account numbers are valid")
}

/// The checker's account as the gateway names it.
fn endpoint(account: &AccountRef) -> coordinator::Endpoint {
    coordinator::Endpoint {
        bank: bank_name(&account.bank),
        account: account_no(&account.account),
    }
}

fn txn_key(txn: TxnId) -> TxnKey {
    TxnKey::from_bytes(txn.0)
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let net = Arc::new(Mutex::new(Net {
            rng: StdRng::seed_from_u64(rng.next_u64()),
            lossy: true,
            in_flight: Vec::new(),
            seq: 0,
            next_call: 0,
            replies: BTreeMap::new(),
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }));
        let mut initial = BTreeMap::new();
        let mut clients = Vec::new();
        for (bank_index, bank) in BANKS.iter().enumerate() {
            for index in 0..ACCOUNTS_PER_BANK {
                let account = AccountRef {
                    bank: (*bank).to_owned(),
                    account: account_name(bank_index, index),
                };
                initial.insert(account.clone(), rng.random_range(1_000..=100_000));
                clients.push(Client {
                    user: format!("user_{}", account.account),
                    account,
                    outstanding: None,
                    last_answered: None,
                    next_payment_at: EPOCH_MS + rng.random_range(0..500),
                });
            }
        }
        World {
            config,
            clock: SimClock(Arc::new(AtomicU64::new(EPOCH_MS))),
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
            digest: 0xcbf2_9ce4_8422_2325,
            rng,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Records an event in the trace and the digest.
    fn event(&mut self, text: String) {
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

    fn report(&self) -> SimReport {
        let net = lock(&self.net);
        SimReport {
            seed: self.report.seed,
            counts: Counts {
                steps: self.step,
                messages: net.sent,
                dropped: net.dropped,
                duplicated: net.duplicated,
                ..self.report.counts.clone()
            },
            digest: self.digest,
        }
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
            for index in 0..BANKS.len() {
                if self.banks[index].node.up.is_none() {
                    self.banks[index].node.restart_at = self.now();
                }
            }
            if self.gateway.up.is_none() {
                self.gateway.restart_at = self.now();
            }
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
        self.checker.check_healed(&observation)
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
        self.clock.0.fetch_add(advance, Ordering::SeqCst);
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

    /// Payments that are over everywhere (told to the client, decided and
    /// ended at the gateway, final at every bank involved) leave the set
    /// observed every step; what they moved is carried as each bank's
    /// unlisted total, and complete observations keep checking them.
    fn retire_settled(&mut self, observation: &Observation) {
        let Some(gateway) = &observation.gateway else {
            return;
        };
        let settled: Vec<TxnId> = self
            .active
            .iter()
            .copied()
            .filter(|txn| {
                let key = txn_key(*txn);
                let over_at_gateway = gateway
                    .get(&key)
                    .is_some_and(|entry| entry.ended && entry.outcome != Outcome::Initiated);
                let request = &self.requested[txn];
                let over_at_banks = [&request.from.bank, &request.to.bank].iter().all(|bank| {
                    observation.banks.iter().any(|view| {
                        **bank == view.name.as_str()
                            && matches!(
                                view.txns.as_ref().and_then(|txns| txns.get(&key)),
                                Some(BankTxn::Posted { .. } | BankTxn::Voided)
                            )
                    })
                });
                let client_told = !self.clients.iter().any(|client| {
                    client
                        .outstanding
                        .as_ref()
                        .is_some_and(|(request, _, _)| request.txn == *txn)
                });
                over_at_gateway && over_at_banks && client_told
            })
            .collect();
        for txn in settled {
            self.active.remove(&txn);
            let key = txn_key(txn);
            for view in &observation.banks {
                if let Some(BankTxn::Posted { net }) =
                    view.txns.as_ref().and_then(|txns| txns.get(&key))
                    && let Some(bank) = BANKS.iter().position(|name| *name == view.name)
                {
                    self.settled_net[bank] += net;
                }
            }
        }
    }

    // ------------------------------------------------------------ starting

    fn start_bank(&mut self, index: usize) -> Result<(), Violation> {
        let name = BANKS[index];
        let seeds: Vec<Seed> = self
            .clients
            .iter()
            .filter(|client| client.account.bank == name)
            .map(|client| Seed {
                account: account_no(&client.account.account),
                owner: client.user.clone(),
                balance: Amount(self.checker.initial_balance(&client.account)),
            })
            .collect();
        let node = &mut self.banks[index].node;
        match Bank::open(
            Arc::new(node.storage.clone()),
            name,
            CURRENCY,
            || Ok(seeds),
            bank_options(),
        ) {
            Ok((bank, report)) => {
                node.up = Some(Arc::new(bank));
                node.failed = Arc::new(AtomicBool::new(false));
                self.recovered_this_step = true;
                self.event(format!(
                    "{name} up: replayed {} records, {} in doubt, torn tail {:?}",
                    report.replayed, report.in_doubt, report.torn_tail
                ));
                Ok(())
            }
            Err(error) => Err(Violation {
                invariant: crate::invariants::Invariant::Durability,
                detail: format!("{name} could not recover its log: {error}"),
            }),
        }
    }

    fn start_gateway(&mut self) -> Result<(), Violation> {
        let users: Vec<SetupUser> = self
            .clients
            .iter()
            .map(|client| SetupUser {
                username: client.user.clone(),
                password: "simulated-password".into(),
                bank: bank_name(&client.account.bank),
                account: account_no(&client.account.account),
            })
            .collect();
        let options = GatewayOptions {
            wal: sim_wal_options(),
            prepare_timeout: Duration::from_millis(PREPARE_TIMEOUT_MS),
            commit_timeout: Duration::from_millis(COMMIT_TIMEOUT_MS),
            currency: CURRENCY.into(),
            banks: BANKS.iter().map(|bank| bank_name(bank)).collect(),
            login: Default::default(),
            sessions: Default::default(),
            snapshot_every: 64,
            retention_ms: coordinator::gateway::RETENTION_MS_DEFAULT,
            password_cost: coordinator::users::HashCost::SIMULATION_ONLY,
            // Small, so both ways of answering (before and after phase 2) run.
            unsettled_max: 4,
            payments_in_flight_max: coordinator::gateway::PAYMENTS_IN_FLIGHT_MAX_DEFAULT,
            waiters_max: coordinator::gateway::WAITERS_MAX_DEFAULT,
            settling_max: coordinator::gateway::SETTLING_MAX_DEFAULT,
            amount_max: coordinator::gateway::AMOUNT_MAX_DEFAULT,
            admission: Default::default(),
            registrations_in_flight_max: coordinator::gateway::REGISTRATIONS_IN_FLIGHT_MAX_DEFAULT,
            phase_two_retry: PHASE_TWO_RETRY,
        };
        let participant = SimParticipant {
            net: Arc::clone(&self.net),
            clock: self.clock.clone(),
        };
        let entropy = Arc::new(SimEntropy(Mutex::new(StdRng::seed_from_u64(
            self.rng.next_u64(),
        ))));
        match Gateway::open(
            Arc::new(self.gateway.storage.clone()),
            options,
            participant,
            Arc::new(self.clock.clone()),
            entropy,
            || users,
        ) {
            Ok(gateway) => {
                let unfinished = gateway.unfinished().len();
                self.gateway.up = Some(Arc::new(gateway));
                self.gateway.failed = Arc::new(AtomicBool::new(false));
                self.recovered_this_step = true;
                self.gateway_retry_at = self.now();
                self.event(format!("gateway up: {unfinished} unfinished"));
                Ok(())
            }
            Err(error) => Err(Violation {
                invariant: crate::invariants::Invariant::Durability,
                detail: format!("the gateway could not recover its log: {error}"),
            }),
        }
    }

    // ---------------------------------------------------------- delivering

    fn deliver(&mut self, envelope: Envelope) -> Result<(), Violation> {
        let now = self.now();
        match envelope.to {
            Dest::Client(client) => self.client_answer(client, envelope.msg),
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

    fn deliver_to_gateway(&mut self, gateway: Arc<SimGateway>, msg: Msg, now: u64) {
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.gateway.failed);
        match msg {
            Msg::Reply { call, reply } => {
                lock(&net).replies.insert(call, reply);
            }
            Msg::Pay {
                client,
                request,
                reused,
            } => {
                self.event(format!("gateway: pay {}", request.txn));
                let user = self.clients[client].user.clone();
                let clock = self.clock.clone();
                self.spawn(Dest::Gateway, async move {
                    let txn = request.txn;
                    let (answer, phase_two) = match gateway.pay(&user, request).await {
                        Ok(paid) => (Ok(paid.payment.status), paid.phase_two_pending),
                        Err(GatewayError::Storage(_)) => {
                            failed.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(other) => (Err(other.to_string()), false),
                    };
                    lock(&net).send(
                        clock.now(),
                        Dest::Client(client),
                        Msg::PayAnswer {
                            txn,
                            answer,
                            reused,
                        },
                    );
                    // Answered at the durable decision; phase 2 follows.
                    if phase_two && let Err(GatewayError::Storage(_)) = gateway.phase_two(txn).await
                    {
                        failed.store(true, Ordering::SeqCst);
                    }
                });
            }
            Msg::AskDecision { bank, txn } => {
                self.spawn(Dest::Gateway, async move {
                    match gateway.decision(txn).await {
                        Ok(decision) => {
                            let answer = Msg::Decide {
                                call: None,
                                txn,
                                decision,
                            };
                            lock(&net).send(now, Dest::Bank(bank), answer)
                        }
                        Err(GatewayError::Storage(_)) => failed.store(true, Ordering::SeqCst),
                        Err(_) => {}
                    }
                });
            }
            other => panic!("the gateway cannot receive {other:?}"),
        }
    }

    fn deliver_to_bank(&mut self, index: usize, bank: Arc<Bank>, msg: Msg, now: u64) {
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.banks[index].node.failed);
        let reply = move |call: u64, reply: Reply| {
            lock(&net).send(now, Dest::Gateway, Msg::Reply { call, reply });
        };
        let finish = move |result: Result<(), BankError>, call: Option<u64>| match result {
            Ok(()) => {
                if let Some(call) = call {
                    reply(call, Reply::Ack)
                }
            }
            Err(BankError::Refused(error)) => {
                if let Some(call) = call {
                    reply(call, Reply::Refused(error.to_string()))
                }
            }
            Err(BankError::Storage(_)) => failed.store(true, Ordering::SeqCst),
        };
        match msg {
            Msg::Prepare { call, txn, legs } => {
                let broken = self.config.broken == Some(Broken::VoteYesBeforeDurable);
                if broken {
                    // The rule broken on purpose: the vote the ledger decides
                    // in memory goes out before its record is durable.
                    let decided = bank.inspect(|ledger| ledger.decide_prepare(txn, &legs, now));
                    if let Ok(
                        ledger::Step::Write {
                            answer: ledger::Vote::Yes,
                            ..
                        }
                        | ledger::Step::Known {
                            answer: ledger::Vote::Yes,
                            ..
                        },
                    ) = decided
                    {
                        lock(&self.net).send(
                            now,
                            Dest::Gateway,
                            Msg::Reply {
                                call,
                                reply: Reply::Vote(coordinator::Vote::Yes),
                            },
                        );
                    }
                }
                let net = Arc::clone(&self.net);
                let failed = Arc::clone(&self.banks[index].node.failed);
                self.spawn(Dest::Bank(index), async move {
                    let vote = bank.prepare(txn, &legs, now).await;
                    let reply = match vote {
                        Ok(ledger::Vote::Yes) if broken => return,
                        Ok(ledger::Vote::Yes) => Reply::Vote(coordinator::Vote::Yes),
                        Ok(ledger::Vote::No(reason)) => Reply::Vote(coordinator::Vote::No {
                            reason: reason.to_string(),
                        }),
                        Err(BankError::Refused(error)) => Reply::Refused(error.to_string()),
                        Err(BankError::Storage(_)) => {
                            failed.store(true, Ordering::SeqCst);
                            return;
                        }
                    };
                    lock(&net).send(now, Dest::Gateway, Msg::Reply { call, reply });
                });
            }
            Msg::Decide {
                call,
                txn,
                decision,
            } => {
                if call.is_none() {
                    self.event(format!("{}: decision {decision:?} for {txn}", BANKS[index]));
                }
                self.spawn(Dest::Bank(index), async move {
                    let result = match decision {
                        Decision::Commit => bank.commit(txn, now).await,
                        Decision::Abort => bank.abort(txn, now).await,
                    };
                    finish(result, call);
                });
            }
            other => panic!("a bank cannot receive {other:?}"),
        }
    }

    fn client_answer(&mut self, client: usize, msg: Msg) -> Result<(), Violation> {
        let Msg::PayAnswer {
            txn,
            answer,
            reused,
        } = msg
        else {
            panic!("a client cannot receive {msg:?}");
        };
        if reused {
            return match answer {
                Err(message) if message.contains("already used for a different payment") => {
                    self.event(format!("client {client}: reuse of {txn} refused"));
                    self.report.counts.reuses_refused += 1;
                    Ok(())
                }
                other => Err(Violation {
                    invariant: crate::invariants::Invariant::ExactlyOnce,
                    detail: format!(
                        "txn id {txn} reused for another amount was answered {other:?}"
                    ),
                }),
            };
        }
        let outcome = match answer {
            Ok(Status::Committed) => Outcome::Committed,
            Ok(Status::Aborted) => Outcome::Aborted,
            Ok(Status::Initiated) => return Ok(()),
            Err(message) => {
                return Err(Violation {
                    invariant: crate::invariants::Invariant::ExactlyOnce,
                    detail: format!("the gateway refused valid payment {txn}: {message}"),
                });
            }
        };
        self.event(format!("client {client}: {txn} {outcome:?}"));
        self.checker.acknowledged(txn_key(txn), outcome)?;
        let state = &mut self.clients[client];
        if state
            .outstanding
            .as_ref()
            .is_some_and(|(request, _, _)| request.txn == txn)
        {
            state.last_answered = state.outstanding.take().map(|(request, _, _)| request);
            match outcome {
                Outcome::Committed => self.report.counts.committed += 1,
                _ => self.report.counts.aborted += 1,
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- timers

    fn timers(&mut self) -> Result<(), Violation> {
        let now = self.now();
        for index in 0..BANKS.len() {
            if self.banks[index].node.up.is_none() && now >= self.banks[index].node.restart_at {
                self.start_bank(index)?;
            }
        }
        if self.gateway.up.is_none() && now >= self.gateway.restart_at {
            self.start_gateway()?;
        }
        self.clients_act(now);
        self.bank_timers(now);
        self.gateway_timer(now);
        Ok(())
    }

    fn clients_act(&mut self, now: u64) {
        for index in 0..self.clients.len() {
            let resend = match &mut self.clients[index].outstanding {
                Some((request, resend_at, backoff)) if now >= *resend_at => {
                    *resend_at = now + *backoff + self.rng.random_range(0..*backoff);
                    *backoff = (*backoff * 2).min(CLIENT_RETRY_MAX_MS);
                    Some(request.clone())
                }
                _ => None,
            };
            if let Some(request) = resend {
                self.event(format!("client {index}: resend {}", request.txn));
                self.send_pay(now, index, request, false);
                continue;
            }
            let client = &self.clients[index];
            if !self.faults || client.outstanding.is_some() || now < client.next_payment_at {
                continue;
            }
            if let Some(answered) = &client.last_answered
                && self.rng.random_ratio(1, 20)
            {
                let mut misuse = answered.clone();
                misuse.amount.0 += 1;
                self.event(format!(
                    "client {index}: reuses {} for another amount",
                    misuse.txn
                ));
                self.send_pay(now, index, misuse, true);
            }
            let request = self.new_payment(index);
            self.event(format!(
                "client {index}: pay {} {} -> {} {}",
                request.txn, request.from.account, request.to.account, request.amount.0
            ));
            self.report.counts.payments += 1;
            self.requested.insert(request.txn, request.clone());
            self.active.insert(request.txn);
            let pause = self.rng.random_range(0..400);
            let client = &mut self.clients[index];
            client.outstanding = Some((
                request.clone(),
                now + CLIENT_RETRY_MIN_MS,
                CLIENT_RETRY_MIN_MS,
            ));
            client.next_payment_at = now + pause;
            self.send_pay(now, index, request, false);
        }
    }

    fn send_pay(&self, now: u64, client: usize, request: PaymentRequest, reused: bool) {
        let pay = Msg::Pay {
            client,
            request,
            reused,
        };
        lock(&self.net).send(now, Dest::Gateway, pay);
    }

    fn new_payment(&mut self, index: usize) -> PaymentRequest {
        let others: Vec<AccountRef> = self
            .clients
            .iter()
            .map(|client| client.account.clone())
            .filter(|account| *account != self.clients[index].account)
            .collect();
        let to = others[self.rng.random_range(0..others.len())].clone();
        let from = self.clients[index].account.clone();
        let opening = self.checker.initial_balance(&from);
        // Mostly affordable; sometimes more than the account could hold.
        let amount = if self.rng.random_ratio(1, 10) {
            opening * 3
        } else {
            self.rng.random_range(1..=opening / 4 + 1)
        };
        let mut txn = [0u8; 16];
        self.rng.fill_bytes(&mut txn);
        PaymentRequest {
            txn: TxnId(txn),
            from: endpoint(&from),
            to: endpoint(&to),
            amount: Amount(amount),
            currency: CURRENCY.into(),
        }
    }

    /// Each bank's timer, as the server's: it asks the gateway about the
    /// transactions its in-doubt policy says are due (the ledger's own
    /// schedule), then checkpoints if due.
    fn bank_timers(&mut self, now: u64) {
        for (index, name) in BANKS.iter().enumerate() {
            let Some(bank) = self.banks[index].node.up.clone() else {
                continue;
            };
            for txn in bank.in_doubt_due(now) {
                self.event(format!("{name}: asks about {txn}"));
                lock(&self.net).send(now, Dest::Gateway, Msg::AskDecision { bank: index, txn });
            }
            if let Err(error) = bank.checkpoint_if_due(now) {
                self.event(format!("{name}: checkpoint failed: {error}"));
                self.banks[index].node.failed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The gateway's timer, as the server's: every tick it runs the core's
    /// phase-2 retry pass (the core keeps to one pass at a time and decides
    /// which payments are due), then checkpoints if due.
    fn gateway_timer(&mut self, now: u64) {
        let Some(gateway) = self.gateway.up.clone() else {
            return;
        };
        if now >= self.gateway_retry_at {
            self.gateway_retry_at = now + GATEWAY_RETRY_EVERY_MS;
            let failed = Arc::clone(&self.gateway.failed);
            self.spawn(Dest::Gateway, async move {
                if let Err(GatewayError::Storage(_)) = gateway.resume().await {
                    failed.store(true, Ordering::SeqCst);
                }
            });
        }
        if let Some(gateway) = &self.gateway.up
            && let Err(error) = gateway.checkpoint_if_due()
        {
            self.event(format!("gateway: checkpoint failed: {error}"));
            self.gateway.failed.store(true, Ordering::SeqCst);
        }
    }

    // -------------------------------------------------------------- faults

    fn inject_faults(&mut self) {
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
    fn stop_failed_nodes(&mut self) {
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

    /// Crashes node `target` (0: the gateway, 1..: banks): its tasks vanish,
    /// its disk keeps what `mode` says, and it restarts later.
    fn crash(&mut self, target: usize, mode: CrashMode, why: &str) {
        let downtime = self.rng.random_range(50..=1_500);
        let restart_at = self.now() + downtime;
        let dest = match target {
            0 => Dest::Gateway,
            bank => Dest::Bank(bank - 1),
        };
        let was_up = match target {
            0 => self.gateway.up.is_some(),
            bank => self.banks[bank - 1].node.up.is_some(),
        };
        if !was_up {
            return;
        }
        self.report.counts.crashes += 1;
        self.tasks.retain(|(owner, _)| *owner != dest);
        match target {
            0 => {
                let image = self.gateway.storage.crash_with(mode);
                self.gateway.up = None;
                self.gateway.storage = image;
                self.gateway.restart_at = restart_at;
                self.gateway.sync_fault = false;
            }
            bank => {
                let node = &mut self.banks[bank - 1].node;
                let image = node.storage.crash_with(mode);
                node.up = None;
                node.storage = image;
                node.restart_at = restart_at;
                node.sync_fault = false;
            }
        }
        let name = node_name(target);
        self.event(format!("{name} {why}; back in {downtime} ms"));
    }

    // ------------------------------------------------------------ running

    fn spawn(&mut self, owner: Dest, task: impl Future<Output = ()> + 'static) {
        self.tasks.push((owner, Box::pin(task)));
    }

    /// Runs every task until none can make progress: poll each in order and
    /// repeat while anything changed. The logs run without flusher threads
    /// (a task waiting for durability syncs on this thread), so nothing
    /// happens behind the simulation's back.
    fn settle(&mut self) {
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

    // ---------------------------------------------------------- observing

    /// What the nodes that are up report: about every payment if
    /// `complete`, otherwise about those still in flight.
    fn observe(&self, complete: bool) -> Observation {
        let txns: Vec<TxnId> = if complete {
            self.requested.keys().copied().collect()
        } else {
            self.active.iter().copied().collect()
        };
        let banks = self
            .banks
            .iter()
            .enumerate()
            .filter_map(|(index, node)| {
                let bank = node.node.up.as_ref()?;
                Some(bank.inspect(|ledger| {
                    BankView {
                        name: BANKS[index].to_owned(),
                        accounts: ledger
                            .accounts()
                            .map(|account| {
                                (
                                    account.number.to_string(),
                                    (account.balance.0, account.available().0),
                                )
                            })
                            .collect(),
                        in_doubt: ledger.pending().len(),
                        txns: Some(
                            txns.iter()
                                .filter_map(|txn| {
                                    let state = ledger.txn(txn)?;
                                    Some((txn_key(*txn), bank_txn(state)))
                                })
                                .collect(),
                        ),
                        unlisted_net: if complete { 0 } else { self.settled_net[index] },
                    }
                }))
            })
            .collect();
        let gateway = self.gateway.up.as_ref().map(|gateway| {
            txns.iter()
                .filter_map(|txn| {
                    let payment = gateway.current(*txn)?;
                    Some((
                        txn_key(*txn),
                        GatewayEntry {
                            movement: movement(&self.requested[txn]),
                            outcome: match payment.status {
                                Status::Initiated => Outcome::Initiated,
                                Status::Committed => Outcome::Committed,
                                Status::Aborted => Outcome::Aborted,
                            },
                            ended: payment.ended,
                        },
                    ))
                })
                .collect()
        });
        Observation {
            banks,
            gateway,
            complete,
        }
    }
}

fn node_name(target: usize) -> &'static str {
    match target {
        0 => "gateway",
        bank => BANKS[bank - 1],
    }
}

fn movement(request: &PaymentRequest) -> Movement {
    Movement {
        from: AccountRef {
            bank: request.from.bank.to_string(),
            account: request.from.account.to_string(),
        },
        to: AccountRef {
            bank: request.to.bank.to_string(),
            account: request.to.account.to_string(),
        },
        amount: request.amount.0,
    }
}

fn bank_txn(state: &TxnState) -> BankTxn {
    match state {
        TxnState::Pending { .. } => BankTxn::Pending,
        TxnState::Posted { legs, .. } => BankTxn::Posted {
            net: legs.iter().map(Leg::signed_amount).sum(),
        },
        TxnState::Voided { .. } => BankTxn::Voided,
    }
}

// ------------------------------------------------------------ many seeds

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
