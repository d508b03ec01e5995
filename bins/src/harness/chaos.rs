//! `minipay chaos`: Jepsen's "bank" workload against real processes. Three
//! banks and a gateway run on this machine over mTLS; one client per user
//! makes same-bank and cross-bank payments (some more than the payer has),
//! retrying each with its txn id until it has an outcome; meanwhile a
//! random process is SIGKILLed at a random moment and restarted. Then the
//! faults stop, the system heals, and the six invariants
//! ([`minipay_simulation::invariants`]) are checked from the servers' own answers and
//! the clients' record of acknowledged outcomes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use minipay_proto::v1 as proto;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tonic::transport::{Channel, Endpoint};

use crate::harness::cluster::{LocalCluster, Servers};
use crate::rpc::session_key::authorized;
use crate::rpc::tls::TlsDir;
use minipay_simulation::invariants::{
    AccountRef, BankView, Checker, GatewayEntry, Movement, Observation, Outcome, TxnKey,
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
    /// Seed of the fault schedule and the payments (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the cluster's directory (logs, data) here instead of a temporary one.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
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
    pub seed: u64,
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
    /// Kills of the gateway and of each bank.
    pub kills: BTreeMap<String, u32>,
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    /// Requests sent, retries included.
    pub attempts: u64,
    /// Times a server stopped (killed, or at the end) with a reused segment
    /// live in its WAL, so that its next recovery reads one.
    pub stops_in_reused_segments: u32,
    pub seconds: f64,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kills: Vec<String> = self
            .kills
            .iter()
            .map(|(target, count)| format!("{target} x{count}"))
            .collect();
        write!(
            f,
            "seed {}: kills [{}]; {} payments ({} committed, {} aborted) in {} requests; {} stops with a reused WAL segment live; healed and checked in {:.1} s",
            self.seed,
            kills.join(", "),
            self.payments,
            self.committed,
            self.aborted,
            self.attempts,
            self.stops_in_reused_segments,
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
    attempts: u64,
}

fn gateway_channel(url: &str, tls: &TlsDir) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tls_config(tls.client("client")?)?
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy())
}

async fn login(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    user: &User,
) -> Option<String> {
    let request = proto::LoginRequest {
        username: user.name.clone(),
        password: user.password.clone(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.login(request)).await {
        Ok(Ok(response)) => Some(response.into_inner().session_key),
        _ => None,
    }
}

/// One user's client: payments one after another, each retried with its
/// txn id (re-logging in after a gateway restart) until it has an outcome.
/// Stops starting payments when `stop` is set; gives up at `deadline`.
async fn client_loop(
    index: usize,
    user: Arc<Vec<User>>,
    channel: Channel,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut client = ChaosClient {
        rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9)),
        index,
        users: user,
        gateway: proto::gateway_client::GatewayClient::new(channel),
        session_key: None,
        record,
        deadline,
    };
    while !stop.load(Ordering::SeqCst) {
        let (txn, movement) = client.choose_payment();
        client
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
    record: Arc<Mutex<Record>>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

/// What one attempt at a payment came to.
enum Attempt {
    /// The gateway answered with a final outcome.
    Final(Outcome),
    /// The gateway no longer knows the session (it restarted): log in again.
    SessionLost,
    /// No outcome yet (no answer, still in flight, or shed for load): try
    /// again after a backoff.
    NoOutcome,
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

    /// Sends the payment under the same txn id, logging in again whenever
    /// the session is gone, with jittered exponential backoff (50 ms up to
    /// 1 s) until the gateway gives an outcome; fails once the heal deadline
    /// has passed without one.
    async fn pay_until_outcome(&mut self, txn: TxnKey, movement: &Movement) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(at) = *self.deadline.lock().expect("deadline lock")
                && Instant::now() > at
            {
                bail!(
                    "payment {txn} of {} never got an outcome",
                    self.users[self.index].name
                );
            }
            if self.session_key.is_none() {
                self.session_key = login(&mut self.gateway, &self.users[self.index]).await;
            }
            if let Some(session) = &self.session_key {
                self.record.lock().expect("record lock").attempts += 1;
                match attempt_payment(&mut self.gateway, session, txn, movement).await? {
                    Attempt::Final(outcome) => {
                        acknowledge(&self.record, txn, outcome)?;
                        return Ok(());
                    }
                    Attempt::SessionLost => self.session_key = None,
                    Attempt::NoOutcome => {}
                }
            }
            let jitter = self.rng.random_range(0..=backoff.as_millis() as u64);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Sends a payment once, bounded by [`CALL_TIMEOUT`]. A refusal that no
/// resend can change (a bad request, an unknown account) fails the run: the
/// workload only makes valid payments.
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
            _ => Attempt::NoOutcome,
        }),
        Ok(Err(status)) => match status.code() {
            tonic::Code::Unauthenticated => Ok(Attempt::SessionLost),
            tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound => {
                bail!("payment {txn} refused: {status}");
            }
            _ => Ok(Attempt::NoOutcome),
        },
        Err(_) => Ok(Attempt::NoOutcome),
    }
}

/// Records the outcome a client was told. Being told two different outcomes
/// for one txn id fails the run at once, before the checker sees it.
fn acknowledge(record: &Mutex<Record>, txn: TxnKey, outcome: Outcome) -> anyhow::Result<()> {
    let mut record = record.lock().expect("record lock");
    if let Some(earlier) = record.acknowledged.insert(txn, outcome)
        && earlier != outcome
    {
        bail!("txn {txn} acknowledged {earlier:?}, then {outcome:?}");
    }
    Ok(())
}

/// Runs the workload with `options.kills` kills, heals, and checks.
pub async fn run(
    servers: Servers,
    dir: &Path,
    options: &ChaosOptions,
) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
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
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Arc::new(Mutex::new(None));
    let clients = spawn_clients(&cluster, &users, &record, &stop, &deadline, options.seed)?;
    let (kills, mut stops_in_reused_segments) =
        kill_and_restart(&mut cluster, dir, options).await?;

    // Heal: no more faults or new payments; every outstanding one must end.
    stop.store(true, Ordering::SeqCst);
    *deadline.lock().expect("deadline lock") = Some(Instant::now() + options.heal_timeout);
    for client in clients {
        client.await.context("a client task panicked")??;
    }
    let observation = settled_observation(&cluster, &users, &record, options.heal_timeout).await?;
    let (payments, committed, aborted, attempts) = {
        let record = record.lock().expect("record lock");
        check_invariants(&users, &record, &observation)?;
        let count = |wanted| {
            record
                .acknowledged
                .values()
                .filter(|outcome| **outcome == wanted)
                .count() as u64
        };
        (
            record.sent.len() as u64,
            count(Outcome::Committed),
            count(Outcome::Aborted),
            record.attempts,
        )
    };
    tokio::task::block_in_place(|| cluster.stop())?;
    for server in BANKS.iter().chain(&["gateway"]) {
        stops_in_reused_segments += reused_live(dir, server)?;
    }
    Ok(ChaosReport {
        seed: options.seed,
        kills,
        payments,
        committed,
        aborted,
        attempts,
        stops_in_reused_segments,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Starts one client task per user, each with its own lazy mTLS channel to
/// the gateway, sharing the record, the stop flag and the heal deadline.
fn spawn_clients(
    cluster: &LocalCluster,
    users: &Arc<Vec<User>>,
    record: &Arc<Mutex<Record>>,
    stop: &Arc<AtomicBool>,
    deadline: &Arc<Mutex<Option<Instant>>>,
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
                Arc::clone(record),
                Arc::clone(stop),
                Arc::clone(deadline),
                seed,
            )))
        })
        .collect()
}

/// The fault schedule, drawn from `options.seed`: `options.kills` times,
/// after 50–400 ms, a random bank or the gateway is killed with SIGKILL,
/// stays down for up to 300 ms, and is restarted on its old address.
/// Returns the kills per server and how many of them left a reused WAL
/// segment live for the next recovery to read.
async fn kill_and_restart(
    cluster: &mut LocalCluster,
    dir: &Path,
    options: &ChaosOptions,
) -> anyhow::Result<(BTreeMap<String, u32>, u32)> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let mut stops_in_reused_segments = 0;
    for _ in 0..options.kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..=400))).await;
        let target = rng.random_range(0..=BANKS.len());
        let downtime = Duration::from_millis(rng.random_range(0..=300));
        let name = if target == BANKS.len() {
            "gateway"
        } else {
            BANKS[target]
        };
        *kills.entry(name.to_owned()).or_default() += 1;
        let is_gateway = target == BANKS.len();
        if is_gateway {
            if let Some(gateway) = cluster.gateway.as_mut() {
                gateway.kill_9();
            }
        } else {
            cluster.bank(name).kill_9();
        }
        stops_in_reused_segments += reused_live(dir, name)?;
        tokio::time::sleep(downtime).await;
        if is_gateway {
            tokio::task::block_in_place(|| cluster.restart_gateway())
                .context("restart the gateway")?;
        } else {
            tokio::task::block_in_place(|| cluster.restart_bank(name))
                .with_context(|| format!("restart {name}"))?;
        }
    }
    Ok((kills, stops_in_reused_segments))
}

/// 1 if the stopped server `server`'s log has a reused segment live, so that
/// its next recovery reads one; 0 otherwise.
fn reused_live(dir: &Path, server: &str) -> anyhow::Result<u32> {
    let count = crate::tools::wal::reused_segments(&dir.join(server).join("wal"))?;
    Ok(u32::from(count > 0))
}

/// The six invariants over the healed cluster: every outcome the clients
/// were told, then what the servers report, against the opening balances.
fn check_invariants(
    users: &[User],
    record: &Record,
    observation: &Observation,
) -> anyhow::Result<()> {
    let initial = users
        .iter()
        .map(|user| (user.account.clone(), OPENING))
        .collect();
    let mut checker = Checker::new(initial);
    for (txn, outcome) in &record.acknowledged {
        checker.acknowledged(*txn, *outcome)?;
    }
    checker.check_healed(observation)?;
    Ok(())
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
        banks.push(observe_bank(cluster, name).await?);
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
async fn observe_bank(cluster: &LocalCluster, name: &str) -> anyhow::Result<BankView> {
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
    Ok(view)
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

/// `minipay chaos`.
pub async fn main(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("minipay-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    eprintln!(
        "chaos: seed {seed}, {} kills, cluster in {}",
        args.kills,
        dir.display()
    );
    let exe = std::env::current_exe().context("find the minipay executable")?;
    let options = ChaosOptions {
        kills: args.kills,
        seed,
        heal_timeout: Duration::from_secs(120),
        server_flags: ChaosOptions::wal_flags(args.wal_segment_size, args.snapshot_every),
    };
    match run(Servers::ReExec(exe), &dir, &options).await {
        Ok(report) => {
            println!("ok: {report}");
            if args.dir.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Ok(())
        }
        Err(error) => Err(error.context(format!(
            "chaos seed {seed} failed; logs and data are in {}",
            dir.display()
        ))),
    }
}
