//! The nodes: the production gateway ([`coordinator::Gateway`]) and banks
//! ([`ledger::Bank`]), each on its own simulated disk. Here they are started
//! (recovering from what their disk kept), crashed (their tasks dropped,
//! their disk cut back to what a crash keeps) and restarted when their
//! downtime is over; messages are handed to them and their answers sent
//! back; and their timers run as the servers' do (a bank asking about
//! transactions in doubt, the gateway's phase-2 retry pass, checkpoints).
//!
//! A node knows only its core and its disk. It does not decide when to
//! crash ([`crate::faults`] does), what the clients pay
//! ([`crate::workload`]), or how messages travel ([`crate::network`]).
//! A node is addressed as a target: 0 is the gateway, 1.. are the banks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator::{
    Decision, Entropy, Gateway, GatewayError, GatewayOptions, PaymentRequest, SetupUser,
};
use ledger::{Bank, BankError, BankOptions, InDoubtPolicy, Seed};
use money::{Amount, Leg, TxnId};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use wal::sim::{CrashMode, SimStorage};

use crate::invariants::Violation;
use crate::network::{Dest, Msg, Reply, SimParticipant, lock};
use crate::workload::{account_no, bank_name};
use crate::{BANKS, Broken, CURRENCY, World};

const PREPARE_TIMEOUT_MS: u64 = 400;
pub(crate) const COMMIT_TIMEOUT_MS: u64 = 400;

/// When banks ask about a transaction in doubt: short, so that healing fits
/// in the steps.
const IN_DOUBT: InDoubtPolicy = InDoubtPolicy {
    timeout_ms: 600,
    backoff_ms_min: 300,
    backoff_ms_max: 2_400,
};

/// How often the gateway's timer runs its phase-2 retry pass.
const GATEWAY_RETRY_EVERY_MS: u64 = 250;
/// The phase-2 retry backoff: short, so that healing fits in the steps.
const PHASE_TWO_RETRY: coordinator::Backoff = coordinator::Backoff {
    wait_ms_min: 250,
    wait_ms_max: 2_000,
};

/// The gateway's random bytes, from a generator seeded from the world's.
struct SimEntropy(Mutex<StdRng>);

impl Entropy for SimEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        self.0.lock().expect("entropy lock").fill_bytes(bytes);
    }
}

pub(crate) type SimGateway = Gateway<SimParticipant>;

/// One node's disk and, while it is up, its running core.
pub(crate) struct Node<T> {
    pub(crate) storage: SimStorage,
    pub(crate) up: Option<Arc<T>>,
    /// Set by a task that saw the log fail: the node must stop.
    pub(crate) failed: Arc<AtomicBool>,
    /// When a crashed node comes back.
    pub(crate) restart_at: u64,
    /// The next sync fails (a fault was injected).
    pub(crate) sync_fault: bool,
}

impl<T> Node<T> {
    pub(crate) fn new() -> Node<T> {
        Node {
            storage: SimStorage::new(),
            up: None,
            failed: Arc::new(AtomicBool::new(false)),
            restart_at: 0,
            sync_fault: false,
        }
    }
}

pub(crate) struct BankNode {
    pub(crate) node: Node<Bank>,
}

fn bank_options() -> BankOptions {
    BankOptions {
        wal: sim_wal_options(),
        snapshot_every: 64,
        in_doubt: IN_DOUBT,
        tables: SIM_TABLES,
        ..BankOptions::default()
    }
}

/// Few tables, merged two at a time: with a checkpoint every 64 records,
/// every seed writes and merges history tables, and crashes and failed
/// syncs land between and during their writes.
const SIM_TABLES: wal::table::StoreOptions = wal::table::StoreOptions {
    tables_max: 3,
    merge_fanin_min: 2,
};

/// The gateway's options: the simulation's log, short call timeouts, and a
/// short phase-2 retry backoff.
fn gateway_options() -> GatewayOptions {
    let banks = BANKS.iter().map(|bank| bank_name(bank)).collect();
    GatewayOptions {
        wal: sim_wal_options(),
        prepare_timeout: Duration::from_millis(PREPARE_TIMEOUT_MS),
        commit_timeout: Duration::from_millis(COMMIT_TIMEOUT_MS),
        snapshot_every: 64,
        tables: SIM_TABLES,
        password_cost: coordinator::users::HashCost::SIMULATION_ONLY,
        // Small, so both ways of answering (before and after phase 2) run.
        unsettled_max: 4,
        phase_two_retry: PHASE_TWO_RETRY,
        ..GatewayOptions::new(banks, CURRENCY)
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

impl World {
    pub(crate) fn start_bank(&mut self, index: usize) -> Result<(), Violation> {
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

    pub(crate) fn start_gateway(&mut self) -> Result<(), Violation> {
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
        let options = gateway_options();
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

    /// Hands a message to the gateway, which is up: a bank's reply goes to
    /// the call awaiting it; a payment or a bank's question becomes a task.
    pub(crate) fn deliver_to_gateway(&mut self, gateway: Arc<SimGateway>, msg: Msg, now: u64) {
        match msg {
            Msg::Reply { call, reply } => {
                lock(&self.net).replies.insert(call, reply);
            }
            Msg::Pay {
                client,
                request,
                reused,
            } => self.gateway_pays(gateway, client, request, reused),
            Msg::AskDecision { bank, txn } => self.gateway_tells_decision(gateway, bank, txn, now),
            Msg::Balance { client, committed } => {
                self.gateway_reads_balance(gateway, client, committed, now)
            }
            Msg::Register { username, bank } => self.gateway_registers(gateway, username, bank),
            other => panic!("the gateway cannot receive {other:?}"),
        }
    }

    /// The gateway runs a client's payment: it answers the client at the
    /// durable decision, then runs phase 2 if that is still to do.
    fn gateway_pays(
        &mut self,
        gateway: Arc<SimGateway>,
        client: usize,
        request: PaymentRequest,
        reused: bool,
    ) {
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.gateway.failed);
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
            if phase_two && let Err(GatewayError::Storage(_)) = gateway.phase_two(txn).await {
                failed.store(true, Ordering::SeqCst);
            }
        });
    }

    /// The gateway answers a bank that asks about a transaction in doubt.
    fn gateway_tells_decision(
        &mut self,
        gateway: Arc<SimGateway>,
        bank: usize,
        txn: TxnId,
        now: u64,
    ) {
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.gateway.failed);
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

    /// Hands a message to bank `index`, which is up: a prepare or a
    /// decision becomes a task that replies to the gateway when durable.
    pub(crate) fn deliver_to_bank(&mut self, index: usize, bank: Arc<Bank>, msg: Msg, now: u64) {
        match msg {
            Msg::Prepare { call, txn, legs } => {
                self.bank_prepares(index, bank, call, txn, legs, now)
            }
            Msg::Decide {
                call,
                txn,
                decision,
            } => self.bank_decides(index, bank, call, txn, decision, now),
            Msg::ReadAccount { call, account } => {
                self.bank_reads_account(index, bank, call, account, now)
            }
            Msg::OpenAccount { call, owner } => {
                self.bank_opens_account(index, bank, call, owner, now)
            }
            other => panic!("a bank cannot receive {other:?}"),
        }
    }

    /// Bank `index` votes on a prepare and replies with its vote once the
    /// vote is durable (or at once, if the rule is broken on purpose).
    fn bank_prepares(
        &mut self,
        index: usize,
        bank: Arc<Bank>,
        call: u64,
        txn: TxnId,
        legs: Vec<Leg>,
        now: u64,
    ) {
        let broken = self.config.broken == Some(Broken::VoteYesBeforeDurable);
        if broken {
            self.vote_yes_before_durable(&bank, call, txn, &legs, now);
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
                Err(BankError::Storage(_) | BankError::History { .. }) => {
                    failed.store(true, Ordering::SeqCst);
                    return;
                }
            };
            lock(&net).send(now, Dest::Gateway, Msg::Reply { call, reply });
        });
    }

    /// The rule broken on purpose: the vote the ledger decides in memory
    /// goes out before its record is durable.
    fn vote_yes_before_durable(&self, bank: &Bank, call: u64, txn: TxnId, legs: &[Leg], now: u64) {
        let decided = bank.inspect(|ledger| ledger.decide_prepare(txn, legs, now, bank.history()));
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

    /// Bank `index` applies the gateway's decision: phase 2 (a call, acked
    /// when durable) or the answer to its own question (no reply).
    fn bank_decides(
        &mut self,
        index: usize,
        bank: Arc<Bank>,
        call: Option<u64>,
        txn: TxnId,
        decision: Decision,
        now: u64,
    ) {
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
            Err(BankError::Storage(_) | BankError::History { .. }) => {
                failed.store(true, Ordering::SeqCst)
            }
        };
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

    /// Starts again every node whose downtime is over.
    pub(crate) fn restart_due(&mut self, now: u64) -> Result<(), Violation> {
        for index in 0..BANKS.len() {
            if self.banks[index].node.up.is_none() && now >= self.banks[index].node.restart_at {
                self.start_bank(index)?;
            }
        }
        if self.gateway.up.is_none() && now >= self.gateway.restart_at {
            self.start_gateway()?;
        }
        Ok(())
    }

    /// Ends the downtime of every node that is down: each restarts at the
    /// next step.
    pub(crate) fn end_downtimes(&mut self) {
        for index in 0..BANKS.len() {
            if self.banks[index].node.up.is_none() {
                self.banks[index].node.restart_at = self.now();
            }
        }
        if self.gateway.up.is_none() {
            self.gateway.restart_at = self.now();
        }
    }

    /// Each bank's timer, as the server's: it asks the gateway about the
    /// transactions its in-doubt policy says are due (the ledger's own
    /// schedule), then checkpoints if due.
    pub(crate) fn bank_timers(&mut self, now: u64) {
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
    pub(crate) fn gateway_timer(&mut self, now: u64) {
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

    /// Crashes node `target` (0: the gateway, 1..: banks): its tasks vanish,
    /// its disk keeps what `mode` says, and it restarts later.
    pub(crate) fn crash(&mut self, target: usize, mode: CrashMode, why: &str) {
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
        let tables = self.table_stats(target);
        self.report.counts.add_tables(tables);
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
}

/// The name of node `target` in events.
pub(crate) fn node_name(target: usize) -> &'static str {
    match target {
        0 => "gateway",
        bank => BANKS[bank - 1],
    }
}
