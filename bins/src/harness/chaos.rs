//! `minipay chaos`: Jepsen's "bank" workload against real processes. Three
//! banks and a gateway run on this machine over mTLS; one client per user
//! makes same-bank and cross-bank payments (some more than the payer has),
//! retrying each with its txn id until it has an outcome; meanwhile a
//! random process is SIGKILLed at a random moment and restarted, or paused
//! (SIGSTOP) for a while and continued ([`nemesis`]). Then the faults stop,
//! the system heals, and the six invariants
//! ([`minipay_simulation::invariants`]) are checked from the servers' own answers and
//! the clients' record of acknowledged outcomes.
//!
//! Every operation goes into a Jepsen-style [`history`] as it happens, the
//! banks are [`samples`]d meanwhile, and the run leaves a report directory:
//! `history.jsonl`, `results.json` ([`results`]: per invariant, valid, how
//! many things checked, first and worst violation) and `report.html`
//! ([`page`]: latency, quantiles and rate over time with the fault periods
//! shaded, total money and in-doubt holds), and ends with one verdict line.

mod analysis;
mod history;
mod nemesis;
mod page;
mod results;
mod samples;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use minipay_proto::v1 as proto;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tonic::transport::{Channel, Endpoint};

use self::history::{History, Op, OpType, Process};
use self::nemesis::Faults;
use crate::harness::cluster::{LocalCluster, Servers};
use crate::rpc::session_key::authorized;
use crate::rpc::tls::TlsDir;
use minipay_simulation::invariants::{
    AccountRef, BankTxn, BankView, Checker, GatewayEntry, Invariant, Movement, Observation,
    Outcome, Tally, TxnKey,
};

const BANKS: [&str; 3] = ["bank_a", "bank_b", "bank_c"];
const USERS_PER_BANK: usize = 2;
/// Opening balance of every account, in minor units (1,000.00).
const OPENING: u64 = 100_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// How many processes to kill (each then restarts).
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// How many processes to pause (SIGSTOP, held up to 800 ms, SIGCONT).
    #[arg(long, default_value_t = 10)]
    pub pauses: u32,
    /// Seed of the fault schedule and the payments (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the cluster's directory (logs, data) here instead of a temporary one.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Write the report (history.jsonl, results.json, report.html) here
    /// (default: `report/` in the cluster's directory, kept after the run).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// The servers' WAL segment size in bytes (small segments make them
    /// rotate, checkpoint and reuse segments while they are killed).
    #[arg(long)]
    pub wal_segment_size: Option<u64>,
    /// The servers' snapshot interval, in records.
    #[arg(long)]
    pub snapshot_every: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub kills: u32,
    pub pauses: u32,
    pub seed: u64,
    /// Where the history, results and page are written (created if missing).
    pub report_dir: PathBuf,
    /// How long the system may take to settle after the faults stop.
    pub heal_timeout: Duration,
    /// Added to every bank's and the gateway's command line.
    pub server_flags: Vec<String>,
}

impl ChaosOptions {
    /// The server flags for a WAL segment size and a snapshot interval.
    pub fn wal_flags(segment_size: Option<u64>, snapshot_every: Option<u64>) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(size) = segment_size {
            flags.extend(["--wal-segment-size".to_owned(), size.to_string()]);
        }
        if let Some(every) = snapshot_every {
            flags.extend(["--snapshot-every".to_owned(), every.to_string()]);
        }
        flags
    }
}

#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    /// Kills and pauses of the gateway and of each bank; stops (kills, or
    /// the end) with a reused segment live in the server's WAL, so that its
    /// next recovery reads one.
    pub faults: Faults,
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    /// Requests sent, retries included.
    pub attempts: u64,
    /// Each of the six invariants, and what checking it came to.
    pub invariants: Vec<(Invariant, Tally)>,
    /// What every account opened with, summed (minor units).
    pub opening_total: u128,
    pub report_dir: PathBuf,
    pub seconds: f64,
}

impl ChaosReport {
    /// Every invariant holds.
    pub fn valid(&self) -> bool {
        self.invariants.len() == Invariant::SIX.len()
            && self.invariants.iter().all(|(_, tally)| tally.valid())
    }

    /// The line the run ends with.
    pub fn verdict(&self) -> String {
        results::verdict(self)
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |faults: &BTreeMap<String, u32>| {
            faults
                .iter()
                .map(|(target, count)| format!("{target} x{count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "seed {}: kills [{}], pauses [{}]; {} payments ({} committed, {} aborted) in {} requests; {} stops with a reused WAL segment live; healed and checked in {:.1} s",
            self.seed,
            list(&self.faults.kills),
            list(&self.faults.pauses),
            self.payments,
            self.committed,
            self.aborted,
            self.attempts,
            self.faults.stops_in_reused_segments,
            self.seconds
        )
    }
}

struct User {
    name: String,
    password: String,
    account: AccountRef,
}

fn users() -> Vec<User> {
    let mut users = Vec::new();
    for (bank_index, bank) in BANKS.iter().enumerate() {
        for index in 1..=USERS_PER_BANK {
            let account = format!("{}{index}", (b'a' + bank_index as u8) as char);
            users.push(User {
                name: format!("chaos_{account}"),
                password: format!("chaos-password-{account}"),
                account: AccountRef {
                    bank: (*bank).to_owned(),
                    account,
                },
            });
        }
    }
    users
}

fn setup_json(users: &[User]) -> String {
    let entries: Vec<serde_json::Value> = users
        .iter()
        .map(|user| {
            serde_json::json!({
                "username": user.name,
                "password": user.password,
                "bank": user.account.bank,
                "account_no": user.account.account,
                "balance": OPENING / 100,
            })
        })
        .collect();
    serde_json::json!({ "users": entries }).to_string()
}

/// What the clients sent and were told.
#[derive(Default)]
struct Record {
    /// Every txn id sent, by whom and what it asked.
    sent: BTreeMap<TxnKey, (usize, Movement)>,
    acknowledged: BTreeMap<TxnKey, Outcome>,
    /// Outcomes told for a txn id after a different one was: each is an
    /// exactly-once violation for the checker. At most one per attempt.
    contradictions: Vec<(TxnKey, Outcome)>,
    attempts: u64,
}

fn gateway_channel(url: &str, tls: &TlsDir) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tls_config(tls.client("client")?)?
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy())
}

/// Logs in once, bounded by [`CALL_TIMEOUT`]; `None` if no session came of
/// it (the gateway down, paused or refusing).
async fn login(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    user: &User,
) -> Option<String> {
    login_answer(client, user).await.ok()
}

async fn login_answer(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    user: &User,
) -> Result<String, String> {
    let request = proto::LoginRequest {
        username: user.name.clone(),
        password: user.password.clone(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.login(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner().session_key),
        Ok(Err(status)) => Err(format!("{:?}", status.code())),
        Err(_) => Err("timeout".to_owned()),
    }
}

/// What one user's client shares with the run: the clients' record, the
/// stop flag, the heal deadline and the history.
#[derive(Clone)]
struct Shared {
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    history: History,
}

/// One user's client: payments one after another, each retried with its
/// txn id (re-logging in after a gateway restart) until it has an outcome.
/// Stops starting payments when `stop` is set; gives up at `deadline`.
async fn client_loop(
    index: usize,
    users: Arc<Vec<User>>,
    channel: Channel,
    shared: Shared,
    seed: u64,
) -> anyhow::Result<()> {
    let mut client = ChaosClient {
        rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9)),
        index,
        users,
        gateway: proto::gateway_client::GatewayClient::new(channel),
        session_key: None,
        shared,
    };
    while !client.shared.stop.load(Ordering::SeqCst) {
        let (txn, movement) = client.choose_payment();
        client
            .shared
            .record
            .lock()
            .expect("record lock")
            .sent
            .insert(txn, (index, movement.clone()));
        client.pay_until_outcome(txn, &movement).await?;
    }
    Ok(())
}

/// One user's client between payments: its connection, its session (none
/// until it logs in, or after the gateway forgot it) and its own seeded
/// random choices, so a seed replays the same payments.
struct ChaosClient {
    index: usize,
    users: Arc<Vec<User>>,
    gateway: proto::gateway_client::GatewayClient<Channel>,
    session_key: Option<String>,
    rng: StdRng,
    shared: Shared,
}

/// What one attempt at a payment came to.
enum Attempt {
    /// The gateway answered with a final outcome.
    Final(Outcome),
    /// The gateway no longer knows the session (it restarted): log in again.
    /// The request was refused before anything was done.
    SessionLost,
    /// Refused for load before anything was done: try again after a backoff.
    Shed(String),
    /// No outcome, and no telling whether this attempt did anything (no
    /// answer, a server down, or still in flight): try again after a backoff.
    Indeterminate(String),
    /// Refused in a way no resend can change: the workload is wrong.
    Refused(tonic::Status),
}

impl Attempt {
    /// The history's completion for this attempt: its type, value and error.
    fn completion(&self) -> (OpType, Option<serde_json::Value>, Option<String>) {
        match self {
            Attempt::Final(outcome) => {
                let outcome = match outcome {
                    Outcome::Committed => "committed",
                    Outcome::Aborted => "aborted",
                    Outcome::Initiated => unreachable!("a final outcome"),
                };
                (OpType::Ok, Some(serde_json::json!(outcome)), None)
            }
            Attempt::SessionLost => (OpType::Fail, None, Some("unauthenticated".to_owned())),
            Attempt::Shed(error) => (OpType::Fail, None, Some(error.clone())),
            Attempt::Indeterminate(error) => (OpType::Info, None, Some(error.clone())),
            Attempt::Refused(status) => (OpType::Fail, None, Some(status.to_string())),
        }
    }
}

impl ChaosClient {
    /// The next payment: to another user's account, usually a small amount
    /// and one time in ten more than any account holds (so it must abort),
    /// under a new transaction id drawn from the seeded generator.
    fn choose_payment(&mut self) -> (TxnKey, Movement) {
        let me = &self.users[self.index];
        let to = loop {
            let other = &self.users[self.rng.random_range(0..self.users.len())];
            if other.account != me.account {
                break other.account.clone();
            }
        };
        let amount = if self.rng.random_ratio(1, 10) {
            OPENING * 5
        } else {
            self.rng.random_range(1..=5_000)
        };
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        let txn = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let movement = Movement {
            from: me.account.clone(),
            to,
            amount,
        };
        (txn, movement)
    }

    fn op<'a>(
        &self,
        op_type: OpType,
        f: &'static str,
        txn: Option<TxnKey>,
        value: Option<serde_json::Value>,
        error: Option<&'a str>,
    ) -> Op<'a> {
        Op {
            process: Process::Client(self.index),
            op_type,
            f,
            txn,
            value,
            error,
        }
    }

    /// Logs in, recorded in the history (a session not given is `info`: the
    /// gateway may have made one the client never heard of).
    async fn log_in(&mut self) {
        let user = serde_json::json!(self.users[self.index].name);
        let history = self.shared.history.clone();
        history
            .record(self.op(OpType::Invoke, "login", None, Some(user.clone()), None))
            .await;
        match login_answer(&mut self.gateway, &self.users[self.index]).await {
            Ok(key) => {
                self.session_key = Some(key);
                history
                    .record(self.op(OpType::Ok, "login", None, Some(user), None))
                    .await;
            }
            Err(error) => {
                history
                    .record(self.op(OpType::Info, "login", None, Some(user), Some(&error)))
                    .await;
            }
        }
    }

    /// Sends the payment under the same txn id, logging in again whenever
    /// the session is gone, with jittered exponential backoff (50 ms up to
    /// 1 s) until the gateway gives an outcome; fails once the heal deadline
    /// has passed without one.
    async fn pay_until_outcome(&mut self, txn: TxnKey, movement: &Movement) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(at) = *self.shared.deadline.lock().expect("deadline lock")
                && Instant::now() > at
            {
                bail!(
                    "payment {txn} of {} never got an outcome",
                    self.users[self.index].name
                );
            }
            if self.session_key.is_none() {
                self.log_in().await;
            }
            if let Some(session) = self.session_key.clone() {
                self.shared.record.lock().expect("record lock").attempts += 1;
                match self.attempt_recorded(&session, txn, movement).await? {
                    Attempt::Final(outcome) => {
                        acknowledge(&self.shared.record, txn, outcome);
                        return Ok(());
                    }
                    Attempt::SessionLost => self.session_key = None,
                    Attempt::Shed(_) | Attempt::Indeterminate(_) => {}
                    Attempt::Refused(status) => bail!("payment {txn} refused: {status}"),
                }
            }
            let jitter = self.rng.random_range(0..=backoff.as_millis() as u64);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One attempt, with its invoke and its completion in the history.
    async fn attempt_recorded(
        &mut self,
        session: &str,
        txn: TxnKey,
        movement: &Movement,
    ) -> anyhow::Result<Attempt> {
        let asked = serde_json::json!({
            "from": movement.from.to_string(),
            "to": movement.to.to_string(),
            "amount": movement.amount,
        });
        let history = self.shared.history.clone();
        history
            .record(self.op(OpType::Invoke, "pay", Some(txn), Some(asked), None))
            .await;
        let attempt = attempt_payment(&mut self.gateway, session, txn, movement).await?;
        let (op_type, value, error) = attempt.completion();
        history
            .record(self.op(op_type, "pay", Some(txn), value, error.as_deref()))
            .await;
        Ok(attempt)
    }
}

/// Sends a payment once, bounded by [`CALL_TIMEOUT`].
async fn attempt_payment(
    gateway: &mut proto::gateway_client::GatewayClient<Channel>,
    session: &str,
    txn: TxnKey,
    movement: &Movement,
) -> anyhow::Result<Attempt> {
    let request = proto::PayRequest {
        txn_id: txn.to_string(),
        to_bank: movement.to.bank.clone(),
        to_account: movement.to.account.clone(),
        amount: movement.amount,
        currency: "INR".into(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, gateway.pay(authorized(request, session)?)).await {
        Ok(Ok(response)) => Ok(match response.into_inner().status() {
            proto::PaymentStatus::Committed => Attempt::Final(Outcome::Committed),
            proto::PaymentStatus::Aborted => Attempt::Final(Outcome::Aborted),
            other => Attempt::Indeterminate(format!("{other:?}")),
        }),
        Ok(Err(status)) => Ok(match status.code() {
            tonic::Code::Unauthenticated => Attempt::SessionLost,
            tonic::Code::ResourceExhausted => Attempt::Shed(format!("{:?}", status.code())),
            tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound => Attempt::Refused(status),
            code => Attempt::Indeterminate(format!("{code:?}")),
        }),
        Err(_) => Ok(Attempt::Indeterminate("timeout".to_owned())),
    }
}

/// Records the outcome a client was told. Being told a different outcome
/// for a txn id than before is kept for the checker (exactly-once).
fn acknowledge(record: &Mutex<Record>, txn: TxnKey, outcome: Outcome) {
    let mut record = record.lock().expect("record lock");
    match record.acknowledged.get(&txn) {
        Some(earlier) if *earlier != outcome => record.contradictions.push((txn, outcome)),
        Some(_) => {}
        None => {
            record.acknowledged.insert(txn, outcome);
        }
    }
}

/// Runs the workload under `options.kills` kills and `options.pauses`
/// pauses, heals, checks, and writes the report. An invariant that does not
/// hold makes the report invalid (not an error); an error is a run that
/// could not be carried out (a server that would not restart, a payment
/// that never got an outcome).
pub async fn run(
    servers: Servers,
    dir: &Path,
    options: &ChaosOptions,
) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let report_dir = &options.report_dir;
    std::fs::create_dir_all(report_dir)
        .with_context(|| format!("create {}", report_dir.display()))?;
    let history_path = report_dir.join("history.jsonl");
    let (history, history_writer) = History::create(&history_path, started)?;
    let users = Arc::new(users());
    let mut cluster = tokio::task::block_in_place(|| {
        LocalCluster::start_with(
            servers,
            dir,
            &setup_json(&users),
            &BANKS,
            &options.server_flags,
            &[],
        )
    })?;
    let shared = Shared {
        record: Arc::new(Mutex::new(Record::default())),
        stop: Arc::new(AtomicBool::new(false)),
        deadline: Arc::new(Mutex::new(None)),
        history,
    };
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(samples::run(
        sampled_banks(&cluster, &users),
        cluster.tls_dir(),
        started,
        Arc::clone(&sampler_stop),
    ));
    let clients = spawn_clients(&cluster, &users, &shared, options.seed)?;
    let mut faults = nemesis::run(
        &mut cluster,
        dir,
        &BANKS,
        (options.kills, options.pauses),
        options.seed,
        &shared.history,
    )
    .await?;

    // Heal: no more faults or new payments; every outstanding one must end.
    shared.stop.store(true, Ordering::SeqCst);
    *shared.deadline.lock().expect("deadline lock") = Some(Instant::now() + options.heal_timeout);
    for client in clients {
        client.await.context("a client task panicked")??;
    }
    let observation =
        settled_observation(&cluster, &users, &shared.record, options.heal_timeout).await?;
    sampler_stop.store(true, Ordering::SeqCst);
    let samples = sampler.await.context("the sampler panicked")??;
    let record = std::mem::take(&mut *shared.record.lock().expect("record lock"));
    drop(shared);
    let invariants = check_invariants(&users, &record, &observation);
    tokio::task::block_in_place(|| cluster.stop())?;
    for server in BANKS.iter().chain(&["gateway"]) {
        faults.stops_in_reused_segments += reused_live(dir, server)?;
    }
    history_writer.finish().await?;
    let count = |wanted| {
        record
            .acknowledged
            .values()
            .filter(|outcome| **outcome == wanted)
            .count() as u64
    };
    let report = ChaosReport {
        seed: options.seed,
        faults,
        payments: record.sent.len() as u64,
        committed: count(Outcome::Committed),
        aborted: count(Outcome::Aborted),
        attempts: record.attempts,
        invariants,
        opening_total: u128::from(OPENING) * users.len() as u128,
        report_dir: report_dir.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    write_report(&report, &history_path, &samples)?;
    Ok(report)
}

/// `results.json` and `report.html`, from the history written and the
/// samples taken.
fn write_report(
    report: &ChaosReport,
    history_path: &Path,
    samples: &[samples::Sample],
) -> anyhow::Result<()> {
    let analysis = analysis::read(history_path)?;
    let results_path = report.report_dir.join("results.json");
    let results = serde_json::to_string_pretty(&results::json(report, &analysis))?;
    std::fs::write(&results_path, results + "\n")
        .with_context(|| format!("write {}", results_path.display()))?;
    let page_path = report.report_dir.join("report.html");
    std::fs::write(&page_path, page::html(report, &analysis, samples))
        .with_context(|| format!("write {}", page_path.display()))?;
    Ok(())
}

/// Every bank with its address and its users' accounts, for the sampler.
fn sampled_banks(cluster: &LocalCluster, users: &[User]) -> Vec<samples::SampledBank> {
    cluster
        .banks
        .iter()
        .map(|(name, process)| samples::SampledBank {
            name: name.clone(),
            address: process.address,
            accounts: users
                .iter()
                .filter(|user| user.account.bank == *name)
                .map(|user| user.account.account.clone())
                .collect(),
        })
        .collect()
}

/// Starts one client task per user, each with its own lazy mTLS channel to
/// the gateway, sharing the record, the stop flag, the heal deadline and
/// the history.
fn spawn_clients(
    cluster: &LocalCluster,
    users: &Arc<Vec<User>>,
    shared: &Shared,
    seed: u64,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let tls = TlsDir::new(&cluster.tls_dir());
    let url = cluster.gateway_url();
    (0..users.len())
        .map(|index| {
            let channel = gateway_channel(&url, &tls)?;
            Ok(tokio::spawn(client_loop(
                index,
                Arc::clone(users),
                channel,
                shared.clone(),
                seed,
            )))
        })
        .collect()
}

/// 1 if the stopped server `server`'s log has a reused segment live, so that
/// its next recovery reads one; 0 otherwise.
fn reused_live(dir: &Path, server: &str) -> anyhow::Result<u32> {
    let count = crate::tools::wal::reused_segments(&dir.join(server).join("wal"))?;
    Ok(u32::from(count > 0))
}

/// The six invariants over the healed cluster: every outcome the clients
/// were told, then what the servers report, against the opening balances.
/// Each with its tally: the checker counts every violation, not just the
/// first.
fn check_invariants(
    users: &[User],
    record: &Record,
    observation: &Observation,
) -> Vec<(Invariant, Tally)> {
    let initial = users
        .iter()
        .map(|user| (user.account.clone(), OPENING))
        .collect();
    let mut checker = Checker::new(initial);
    // A violation found here is counted in its tally; the tallies are the
    // verdict, so the first one returned needs no handling of its own.
    for (txn, outcome) in record.acknowledged.iter().chain(
        record
            .contradictions
            .iter()
            .map(|(txn, outcome)| (txn, outcome)),
    ) {
        let _ = checker.acknowledged(*txn, *outcome);
    }
    let _ = checker.check_healed(observation);
    Invariant::SIX
        .iter()
        .map(|invariant| (*invariant, checker.tally(*invariant).clone()))
        .collect()
}

/// Polls the servers until nothing is in flight (every payment settled at
/// the gateway, nothing in doubt at any bank) or the timeout passes, and
/// returns what they then report.
async fn settled_observation(
    cluster: &LocalCluster,
    users: &[User],
    record: &Mutex<Record>,
    timeout: Duration,
) -> anyhow::Result<Observation> {
    let tls = TlsDir::new(&cluster.tls_dir());
    let mut gateway =
        proto::gateway_client::GatewayClient::new(gateway_channel(&cluster.gateway_url(), &tls)?);
    let mut keys = Vec::new();
    for user in users {
        keys.push(
            login(&mut gateway, user)
                .await
                .with_context(|| format!("log in {} after healing", user.name))?,
        );
    }
    let sent: Vec<(TxnKey, usize)> = record
        .lock()
        .expect("record lock")
        .sent
        .iter()
        .map(|(txn, (user, _))| (*txn, *user))
        .collect();
    let give_up = Instant::now() + timeout;
    loop {
        let observation = observe(cluster, &mut gateway, &keys, &sent).await?;
        let settled = observation.gateway.as_ref().is_some_and(|payments| {
            payments
                .values()
                .all(|entry| entry.ended && entry.outcome != Outcome::Initiated)
        }) && observation.banks.iter().all(|bank| bank.in_doubt == 0);
        if settled || Instant::now() > give_up {
            return Ok(observation);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the servers report now: every bank's balances and in-doubt count,
/// and the gateway's answer for every payment the clients sent.
async fn observe(
    cluster: &LocalCluster,
    gateway: &mut proto::gateway_client::GatewayClient<Channel>,
    keys: &[String],
    sent: &[(TxnKey, usize)],
) -> anyhow::Result<Observation> {
    let mut banks = Vec::new();
    for name in BANKS {
        banks.push(observe_bank(cluster, name, sent).await?);
    }
    let mut payments = BTreeMap::new();
    for (txn, user) in sent {
        let request = proto::GetPaymentRequest {
            txn_id: txn.to_string(),
        };
        match gateway
            .get_payment(authorized(request, &keys[*user])?)
            .await
        {
            Ok(response) => {
                payments.insert(*txn, gateway_entry(response.into_inner()));
            }
            // Never reached the gateway durably (its first request was lost
            // with a crash before an answer): nothing may have moved for it.
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => bail!("GetPayment {txn}: {status}"),
        }
    }
    Ok(Observation {
        banks,
        gateway: Some(payments),
        complete: true,
    })
}

/// One bank as it answers: each of its users' balance and available
/// balance, and how many transactions it holds in doubt.
async fn observe_bank(
    cluster: &LocalCluster,
    name: &str,
    sent: &[(TxnKey, usize)],
) -> anyhow::Result<BankView> {
    let mut client = cluster.bank_client(name).await?;
    let mut view = BankView {
        name: name.to_owned(),
        ..BankView::default()
    };
    for user in users().iter().filter(|user| user.account.bank == name) {
        let account = client
            .get_account(proto::GetAccountRequest {
                account_no: user.account.account.clone(),
            })
            .await
            .with_context(|| format!("{name}: GetAccount"))?
            .into_inner();
        view.accounts.insert(
            user.account.account.clone(),
            (account.balance, account.available),
        );
    }
    view.in_doubt = client
        .list_in_doubt(proto::ListInDoubtRequest {})
        .await
        .with_context(|| format!("{name}: ListInDoubt"))?
        .into_inner()
        .txns
        .len();
    view.txns = Some(bank_txns(&mut client, name, sent).await?);
    Ok(view)
}

/// What the bank holds for every txn id the clients sent (those it never
/// saw left out), for the per-transaction checks: atomicity across banks,
/// agreement with the gateway's decision, and the bank's bookkeeping (its
/// balances are its opening ones plus what its posted transactions moved:
/// every transaction that could move money here is one the clients sent).
async fn bank_txns(
    client: &mut proto::bank_client::BankClient<Channel>,
    name: &str,
    sent: &[(TxnKey, usize)],
) -> anyhow::Result<BTreeMap<TxnKey, BankTxn>> {
    let mut txns = BTreeMap::new();
    for chunk in sent.chunks(crate::servers::bank::service::BATCH_LEN_MAX) {
        let request = proto::GetTransactionsRequest {
            txn_ids: chunk.iter().map(|(txn, _)| txn.to_string()).collect(),
        };
        let answered = client
            .get_transactions(request)
            .await
            .with_context(|| format!("{name}: GetTransactions"))?
            .into_inner()
            .txns;
        if answered.len() != chunk.len() {
            bail!(
                "{name}: GetTransactions answered {} of {} ids",
                answered.len(),
                chunk.len()
            );
        }
        for ((txn, _), state) in chunk.iter().zip(answered) {
            let state = match proto::TxnStatus::try_from(state.status) {
                Ok(proto::TxnStatus::TxnUnknown) => continue,
                Ok(proto::TxnStatus::TxnPending) => BankTxn::Pending,
                Ok(proto::TxnStatus::TxnVoided) => BankTxn::Voided,
                Ok(proto::TxnStatus::TxnPosted) => BankTxn::Posted {
                    net: state.legs.iter().map(leg_net).sum(),
                },
                _ => bail!("{name}: txn {txn} has no status"),
            };
            txns.insert(*txn, state);
        }
    }
    Ok(txns)
}

/// What one leg adds to its bank's balances: credits up, debits down.
fn leg_net(leg: &proto::Leg) -> i128 {
    match proto::Direction::try_from(leg.direction) {
        Ok(proto::Direction::Credit) => i128::from(leg.amount),
        Ok(proto::Direction::Debit) => -i128::from(leg.amount),
        _ => 0,
    }
}

/// The gateway's answer for one payment, in the checker's terms.
fn gateway_entry(payment: proto::Payment) -> GatewayEntry {
    let outcome = match payment.status() {
        proto::PaymentStatus::Committed => Outcome::Committed,
        proto::PaymentStatus::Aborted => Outcome::Aborted,
        _ => Outcome::Initiated,
    };
    GatewayEntry {
        movement: Movement {
            from: AccountRef {
                bank: payment.from_bank,
                account: payment.from_account,
            },
            to: AccountRef {
                bank: payment.to_bank,
                account: payment.to_account,
            },
            amount: payment.amount,
        },
        outcome,
        ended: payment.settled,
    }
}

/// `minipay chaos`: runs, writes the report, prints the verdict line, and
/// fails when the run is invalid. A valid run in a temporary directory
/// keeps only its report (there by default) and removes the rest.
pub async fn main(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("minipay-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let report_dir = args.report.clone().unwrap_or_else(|| dir.join("report"));
    eprintln!(
        "chaos: seed {seed}, {} kills, {} pauses, cluster in {}",
        args.kills,
        args.pauses,
        dir.display()
    );
    let exe = std::env::current_exe().context("find the minipay executable")?;
    let options = ChaosOptions {
        kills: args.kills,
        pauses: args.pauses,
        seed,
        report_dir,
        heal_timeout: Duration::from_secs(120),
        server_flags: ChaosOptions::wal_flags(args.wal_segment_size, args.snapshot_every),
    };
    match run(Servers::ReExec(exe), &dir, &options).await {
        Ok(report) if report.valid() => {
            eprintln!("chaos: {report}");
            println!("{}", report.verdict());
            if args.dir.is_none() {
                if options.report_dir.parent() == Some(dir.as_path()) {
                    remove_all_but(&dir, &options.report_dir)?;
                } else {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("remove {}", dir.display()))?;
                }
            }
            Ok(())
        }
        Ok(report) => {
            eprintln!("chaos: {report}");
            println!("{}", report.verdict());
            bail!(
                "chaos seed {seed} is invalid; logs and data are in {}",
                dir.display()
            )
        }
        Err(error) => Err(error.context(format!(
            "chaos seed {seed} failed; logs and data are in {}",
            dir.display()
        ))),
    }
}

/// Removes everything in `dir` except `keep` (if it is directly in it).
fn remove_all_but(dir: &Path, keep: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path == keep {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}
