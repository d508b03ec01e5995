//! `minipay bench`: a load generator for users. Concurrent clients, each
//! logged in as its own user, make random payments of 0.01 to other
//! accounts; it reports payments/s, latency percentiles and outcomes, and
//! checks that the total of all balances did not change.
//!
//! A payment the gateway sheds (RESOURCE_EXHAUSTED) is counted as refused,
//! not failed, and resent with the same txn id after the gateway's
//! `retry-after` hint. `--login-flood N` adds N connections sending wrong
//! passwords for unknown usernames while the payments run (each from its
//! own loopback address when the gateway is on loopback, as a flood from
//! many machines would be); with `--local` the gateway's peak anonymous
//! resident memory is sampled throughout.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use minipay_proto::v1 as proto;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::harness::cluster::LocalCluster;
use crate::rpc::session_key::authorized;
use crate::rpc::tls::TlsDir;

/// The most concurrent clients.
pub const CLIENTS_MAX: usize = 1024;
/// Clients share connections past this many (HTTP/2 multiplexes them).
const CONNECTIONS_MAX: usize = 256;
/// Users registered and logged in at once while setting up.
const SETUP_CONCURRENCY: usize = 8;
/// The most flood connections.
pub const FLOOD_CONNECTIONS_MAX: usize = 4096;
/// Logins in flight on each flood connection at once.
const FLOOD_CALLS_PER_CONNECTION: usize = 3;
/// How often the gateway's resident memory is sampled.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Opening balance of every bench user (minor units: 1,000,000.00).
const USER_BALANCE: u64 = 100_000_000;

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Start a local cluster (two banks and a gateway) instead of using --gateway.
    #[arg(long)]
    pub local: bool,
    /// Concurrent clients, each its own user.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Payments in all.
    #[arg(long, default_value_t = 10_000)]
    pub payments: u64,
    /// Destination accounts (with --local; otherwise the clients pay each other).
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Connections flooding the gateway with failing logins while the
    /// payments run (0: none). Each call is resent as soon as it is
    /// answered, refusals included: a hostile flood.
    #[arg(long, default_value_t = 0)]
    pub login_flood: usize,
    /// The flood's calls wait as each refusal's retry-after hint asks, as
    /// a herd of real clients would (say, all logging in again at once).
    #[arg(long)]
    pub flood_honours_retry_after: bool,
    /// With --local: the gateway's --payments-in-flight-max.
    #[arg(long)]
    pub payments_in_flight_max: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub clients: usize,
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    pub failed: u64,
    /// Attempts the gateway shed with RESOURCE_EXHAUSTED (then resent).
    pub refused: u64,
    pub refused_p50_ms: f64,
    pub refused_p99_ms: f64,
    pub login_flood: usize,
    pub flood_honours_retry_after: bool,
    /// Flood logins answered, by kind.
    pub flood_refused: u64,
    pub flood_unauthenticated: u64,
    pub flood_other: u64,
    /// With --local: the gateway's largest sampled `RssAnon`, and its
    /// `VmHWM` (peak resident, file pages included) at the end.
    pub gateway_rss_anon_peak_bytes: Option<u64>,
    pub gateway_vm_hwm_bytes: Option<u64>,
    pub elapsed_s: f64,
    pub payments_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub total_before: u64,
    pub total_after: u64,
    pub conserved: bool,
}

struct User {
    client: proto::gateway_client::GatewayClient<Channel>,
    key: String,
    bank: String,
    account: String,
}

pub(crate) async fn gateway_client(
    url: &str,
    tls_dir: &std::path::Path,
) -> anyhow::Result<proto::gateway_client::GatewayClient<Channel>> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .tls_config(TlsDir::new(tls_dir).client("client")?)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("connect to the gateway at {url}"))?;
    Ok(proto::gateway_client::GatewayClient::new(channel))
}

/// How long a RESOURCE_EXHAUSTED answer asks the caller to wait.
fn retry_after(status: &tonic::Status) -> Duration {
    let seconds = status
        .metadata()
        .get(crate::servers::gateway::refusal::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds)
}

/// Calls `call` until it is not refused for load, waiting as each refusal
/// asks (setup calls: registration and login).
async fn admitted<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    const ATTEMPTS_MAX: u32 = 100;
    let mut attempt = 0;
    loop {
        match call().await {
            Err(status)
                if status.code() == tonic::Code::ResourceExhausted && attempt < ATTEMPTS_MAX =>
            {
                attempt += 1;
                tokio::time::sleep(retry_after(&status)).await;
            }
            answer => return answer,
        }
    }
}

/// Registers and logs in one user.
async fn user(
    client: proto::gateway_client::GatewayClient<Channel>,
    username: String,
    password: String,
    bank: String,
) -> anyhow::Result<User> {
    let registered = admitted(|| {
        let mut client = client.clone();
        let request = proto::RegisterRequest {
            username: username.clone(),
            password: password.clone(),
            bank: bank.clone(),
            initial_balance: USER_BALANCE,
        };
        async move { client.register(request).await }
    })
    .await
    .with_context(|| format!("register {username}"))?
    .into_inner();
    let key = admitted(|| {
        let mut client = client.clone();
        let request = proto::LoginRequest {
            username: username.clone(),
            password: password.clone(),
        };
        async move { client.login(request).await }
    })
    .await
    .with_context(|| format!("log in {username}"))?
    .into_inner()
    .session_key;
    Ok(User {
        client,
        key,
        bank: registered.bank,
        account: registered.account_no,
    })
}

/// Registers and logs in one user per client, alternating banks; clients
/// past [`CONNECTIONS_MAX`] share connections.
async fn users(
    url: &str,
    tls_dir: &std::path::Path,
    clients: usize,
    banks: &[String],
) -> anyhow::Result<Vec<User>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut connections = Vec::new();
    for _ in 0..clients.min(CONNECTIONS_MAX) {
        connections.push(gateway_client(url, tls_dir).await?);
    }
    let admit = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(clients);
    for index in 0..clients {
        let client = connections[index % connections.len()].clone();
        let username = format!("bench-{}-{index}", &run[..8]);
        let password = format!("pw-{run}-{index}");
        let bank = banks[index % banks.len()].clone();
        let admit = Arc::clone(&admit);
        tasks.push(tokio::spawn(async move {
            let _turn = admit
                .acquire()
                .await
                .expect("the setup semaphore stays open");
            user(client, username, password, bank).await
        }));
    }
    let mut users = Vec::with_capacity(clients);
    for task in tasks {
        users.push(task.await.context("a setup task failed")??);
    }
    Ok(users)
}

pub(crate) fn percentile_ms(sorted: &[Duration], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * percent / 100.0) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs the load; prints progress on stderr and returns the figures.
pub async fn run(
    args: BenchArgs,
    gateway: Option<String>,
    tls_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<BenchReport> {
    check_args(&args)?;
    crate::rpc::tls::install_crypto_provider();
    let scratch = std::env::temp_dir().join(format!("minipay-bench-{}", std::process::id()));
    let target = Target::open(&args, gateway, tls_dir, &scratch)?;
    eprintln!("registering {} users", args.clients);
    let users = users(&target.url, &target.tls_dir, args.clients, &target.banks).await?;
    let destinations = destinations(&users, &target, args.accounts).await?;
    let cluster = target.cluster.as_ref();
    let total_before = total_balance(cluster, &destinations, sessions(&users)).await?;
    let background = Background::start(&args, &target).await?;
    let (tally, elapsed, users) = drive(&args, users, &destinations).await?;
    let (flood, memory) = background.stop().await?;
    let total_after = settled_total(cluster, &destinations, &users, total_before).await?;
    if let Some(mut local) = target.cluster {
        local.stop()?;
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let totals = (total_before, total_after);
    Ok(report(&args, tally, elapsed, &flood, memory, totals))
}

/// Where the load goes: the bench's own cluster in a scratch directory
/// (`--local`), or the gateway and TLS directory given by flags.
struct Target {
    cluster: Option<LocalCluster>,
    url: String,
    tls_dir: std::path::PathBuf,
    banks: Vec<String>,
}

impl Target {
    fn open(
        args: &BenchArgs,
        gateway: Option<String>,
        tls_dir: Option<std::path::PathBuf>,
        scratch: &std::path::Path,
    ) -> anyhow::Result<Target> {
        let banks = vec!["bank_a".to_owned(), "bank_b".to_owned()];
        if args.local {
            let _ = std::fs::remove_dir_all(scratch);
            std::fs::create_dir_all(scratch)?;
            eprintln!("starting a local cluster in {}", scratch.display());
            let local = start_local(args, scratch)?;
            return Ok(Target {
                url: local.gateway_url(),
                tls_dir: local.tls_dir(),
                cluster: Some(local),
                banks,
            });
        }
        let url = gateway.context("--gateway URL is required without --local")?;
        let tls_dir = tls_dir.context("--tls-dir is required without --local")?;
        Ok(Target {
            cluster: None,
            url,
            tls_dir,
            banks,
        })
    }
}

/// Where the payments go: the users' own accounts and, on the bench's own
/// cluster, `accounts` fresh payee accounts at the banks.
async fn destinations(
    users: &[User],
    target: &Target,
    accounts: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut destinations: Vec<(String, String)> = users
        .iter()
        .map(|user| (user.bank.clone(), user.account.clone()))
        .collect();
    if let Some(local) = &target.cluster {
        destinations.extend(payees(local, &target.banks, accounts).await?);
    }
    Ok(destinations)
}

/// What runs beside the payments until they are done: the login flood
/// (`--login-flood`) and, on the bench's own cluster, the sampler of the
/// gateway's memory.
struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    gateway_pid: Option<u32>,
    rss: Option<tokio::task::JoinHandle<u64>>,
    flood: Arc<FloodTally>,
    flooders: Vec<tokio::task::JoinHandle<()>>,
}

/// The gateway's memory as the bench saw it (only on its own cluster).
struct GatewayMemory {
    rss_anon_peak_bytes: Option<u64>,
    vm_hwm_bytes: Option<u64>,
}

impl Background {
    async fn start(args: &BenchArgs, target: &Target) -> anyhow::Result<Background> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let gateway_pid = target
            .cluster
            .as_ref()
            .and_then(|local| local.gateway.as_ref())
            .map(|gateway| gateway.child.id());
        let rss = gateway_pid.map(|pid| sample_rss(pid, stopped.clone()));
        let flood = Arc::new(FloodTally::default());
        if args.login_flood > 0 {
            eprintln!("flooding the gateway from {} connections", args.login_flood);
        }
        let flooders = start_flood(
            &target.url,
            &target.tls_dir,
            args.login_flood,
            args.flood_honours_retry_after,
            &stopped,
            Arc::clone(&flood),
        )
        .await?;
        Ok(Background {
            stop,
            gateway_pid,
            rss,
            flood,
            flooders,
        })
    }

    /// Stops the flood and the sampler and waits for them; returns what the
    /// flood was answered and the gateway's peak memory.
    async fn stop(self) -> anyhow::Result<(Arc<FloodTally>, GatewayMemory)> {
        self.stop.send_replace(true);
        for flooder in self.flooders {
            let _ = flooder.await;
        }
        let rss_anon_peak_bytes = match self.rss {
            Some(sampler) => Some(sampler.await.context("the memory sampler failed")?),
            None => None,
        };
        let vm_hwm_bytes = self
            .gateway_pid
            .and_then(|pid| proc_status_bytes(pid, "VmHWM"));
        let memory = GatewayMemory {
            rss_anon_peak_bytes,
            vm_hwm_bytes,
        };
        Ok((self.flood, memory))
    }
}

/// The figures: outcomes and latency percentiles of the payments, the
/// flood's answers, the gateway's memory, and whether the total of all
/// balances (before, after) stayed the same.
fn report(
    args: &BenchArgs,
    mut tally: Tally,
    elapsed: Duration,
    flood: &FloodTally,
    memory: GatewayMemory,
    (total_before, total_after): (u64, u64),
) -> BenchReport {
    tally.latencies.sort_unstable();
    tally.refusal_latencies.sort_unstable();
    let latencies = &tally.latencies;
    BenchReport {
        clients: args.clients,
        payments: args.payments,
        committed: tally.committed,
        aborted: tally.aborted,
        failed: tally.failed,
        refused: tally.refused,
        refused_p50_ms: percentile_ms(&tally.refusal_latencies, 50.0),
        refused_p99_ms: percentile_ms(&tally.refusal_latencies, 99.0),
        login_flood: args.login_flood,
        flood_honours_retry_after: args.flood_honours_retry_after,
        flood_refused: flood.refused.load(Ordering::Relaxed),
        flood_unauthenticated: flood.unauthenticated.load(Ordering::Relaxed),
        flood_other: flood.other.load(Ordering::Relaxed),
        gateway_rss_anon_peak_bytes: memory.rss_anon_peak_bytes,
        gateway_vm_hwm_bytes: memory.vm_hwm_bytes,
        elapsed_s: elapsed.as_secs_f64(),
        payments_per_sec: args.payments as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(latencies, 50.0),
        p99_ms: percentile_ms(latencies, 99.0),
        p999_ms: percentile_ms(latencies, 99.9),
        total_before,
        total_after,
        conserved: total_before == total_after,
    }
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=CLIENTS_MAX).contains(&args.clients),
        "--clients must be between 1 and {CLIENTS_MAX}"
    );
    ensure!(args.payments >= 1, "--payments must be at least 1");
    ensure!(args.accounts >= 2, "--accounts must be at least 2");
    ensure!(
        args.login_flood <= FLOOD_CONNECTIONS_MAX,
        "--login-flood must be at most {FLOOD_CONNECTIONS_MAX}"
    );
    Ok(())
}

/// Starts the bench's own cluster in `scratch`.
fn start_local(args: &BenchArgs, scratch: &std::path::Path) -> anyhow::Result<LocalCluster> {
    // Every bench user logs in from 127.0.0.1: that one address may make
    // all their logins (a flood comes from addresses of its own).
    let mut gateway_flags = vec![
        "--login-rate-per-address".to_owned(),
        "100000/1s".to_owned(),
    ];
    if let Some(max) = args.payments_in_flight_max {
        gateway_flags.extend(["--payments-in-flight-max".to_owned(), max.to_string()]);
    }
    let exe = std::env::current_exe().context("find the minipay executable")?;
    LocalCluster::start_with(
        crate::harness::cluster::Servers::ReExec(exe),
        scratch,
        r#"{"users": []}"#,
        &["bank_a", "bank_b"],
        &[],
        &gateway_flags,
    )
}

/// Opens `accounts` empty payee accounts, alternating banks.
async fn payees(
    local: &LocalCluster,
    banks: &[String],
    accounts: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut opened_accounts = Vec::with_capacity(accounts);
    for index in 0..accounts {
        let bank = &banks[index % banks.len()];
        let mut client = local.bank_client(bank).await?;
        let opened = client
            .open_account(proto::OpenAccountRequest {
                owner: format!("payee{index}"),
                initial_balance: 0,
                account_no: String::new(),
            })
            .await?
            .into_inner();
        opened_accounts.push((bank.clone(), opened.account_no));
    }
    Ok(opened_accounts)
}

/// The total of all balances once phase 2 of the last payments landed
/// (waiting at most 10 s for it to equal `before`).
async fn settled_total(
    cluster: Option<&LocalCluster>,
    destinations: &[(String, String)],
    users: &[User],
    before: u64,
) -> anyhow::Result<u64> {
    let mut total = total_balance(cluster, destinations, sessions(users)).await?;
    let settle_started = Instant::now();
    while total != before && settle_started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        total = total_balance(cluster, destinations, sessions(users)).await?;
    }
    Ok(total)
}

fn sessions(users: &[User]) -> Vec<(proto::gateway_client::GatewayClient<Channel>, String)> {
    users
        .iter()
        .map(|user| (user.client.clone(), user.key.clone()))
        .collect()
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    committed: u64,
    aborted: u64,
    failed: u64,
    refused: u64,
    /// Of the attempts the gateway took on (committed or aborted).
    latencies: Vec<Duration>,
    /// Of the attempts it shed.
    refusal_latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.committed += other.committed;
        self.aborted += other.aborted;
        self.failed += other.failed;
        self.refused += other.refused;
        self.latencies.extend(other.latencies);
        self.refusal_latencies.extend(other.refusal_latencies);
    }
}

/// One client's share of the payments, each resent under its txn id for as
/// long as the gateway sheds it.
async fn pay_share(
    mut user: User,
    share: u64,
    destinations: Arc<Vec<(String, String)>>,
    done: Arc<AtomicU64>,
) -> anyhow::Result<(Tally, User)> {
    let mut tally = Tally {
        latencies: Vec::with_capacity(share as usize),
        ..Tally::default()
    };
    for _ in 0..share {
        let (to_bank, to_account) = loop {
            let candidate = &destinations[rand::random_range(0..destinations.len())];
            if (&candidate.0, &candidate.1) != (&user.bank, &user.account) {
                break candidate.clone();
            }
        };
        let request = proto::PayRequest {
            txn_id: uuid::Uuid::new_v4().to_string(),
            to_bank,
            to_account,
            amount: 1,
            currency: "INR".into(),
        };
        loop {
            let one = Instant::now();
            let answer = user
                .client
                .pay(authorized(request.clone(), &user.key)?)
                .await;
            let latency = one.elapsed();
            match answer {
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    tally.refused += 1;
                    tally.refusal_latencies.push(latency);
                    tokio::time::sleep(retry_after(&status)).await;
                    continue;
                }
                Ok(payment)
                    if payment.get_ref().status == proto::PaymentStatus::Committed as i32 =>
                {
                    tally.committed += 1;
                }
                Ok(_) => tally.aborted += 1,
                Err(_) => tally.failed += 1,
            }
            tally.latencies.push(latency);
            break;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok((tally, user))
}

async fn drive(
    args: &BenchArgs,
    users: Vec<User>,
    destinations: &[(String, String)],
) -> anyhow::Result<(Tally, Duration, Vec<User>)> {
    let done = Arc::new(AtomicU64::new(0));
    let destinations = Arc::new(destinations.to_vec());
    let started = Instant::now();
    let progress = {
        let done = Arc::clone(&done);
        let total = args.payments;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let count = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{count}/{total} payments, {:.0}/s   ",
                    count as f64 / started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        })
    };
    let clients = users.len() as u64;
    let tasks: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(index, user)| {
            let share =
                args.payments / clients + u64::from((index as u64) < args.payments % clients);
            tokio::spawn(pay_share(
                user,
                share,
                Arc::clone(&destinations),
                Arc::clone(&done),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    let mut users = Vec::new();
    for task in tasks {
        let (one, user) = task.await.context("a bench client failed")??;
        tally.add(one);
        users.push(user);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!(
        "\r{}/{} payments done                 ",
        args.payments, args.payments
    );
    Ok((tally, elapsed, users))
}

/// Flood logins answered, by kind.
#[derive(Default)]
struct FloodTally {
    refused: AtomicU64,
    unauthenticated: AtomicU64,
    other: AtomicU64,
}

/// A loopback source address of its own for client `index`: 127.0.1.1,
/// 127.0.1.2, … (each its own client address to a server on 127.0.0.1).
pub fn loopback_source(index: usize) -> std::net::IpAddr {
    let third = u8::try_from(1 + index / 250).expect("at most 63,500 loopback sources");
    std::net::IpAddr::from([127, 0, third, 1 + (index % 250) as u8])
}

/// The source address of flood connection `index`: its own loopback
/// address when the gateway is on loopback.
fn flood_address(url: &str, index: usize) -> Option<std::net::IpAddr> {
    let loopback = url.starts_with("https://127.") || url.starts_with("https://localhost");
    loopback.then(|| loopback_source(index))
}

/// Starts `connections` connections sending failing logins until `stop`.
async fn start_flood(
    url: &str,
    tls_dir: &std::path::Path,
    connections: usize,
    honour_retry_after: bool,
    stop: &tokio::sync::watch::Receiver<bool>,
    tally: Arc<FloodTally>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let tls = TlsDir::new(tls_dir).client("client")?;
    let mut tasks = Vec::with_capacity(connections * FLOOD_CALLS_PER_CONNECTION);
    for index in 0..connections {
        let channel = Endpoint::from_shared(url.to_owned())?
            .tls_config(tls.clone())?
            .local_address(flood_address(url, index))
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .connect()
            .await
            .with_context(|| format!("flood connection {index}"))?;
        for call in 0..FLOOD_CALLS_PER_CONNECTION {
            let mut client = proto::gateway_client::GatewayClient::new(channel.clone());
            let (mut stop, tally) = (stop.clone(), Arc::clone(&tally));
            tasks.push(tokio::spawn(async move {
                let mut attempt = 0u64;
                while !*stop.borrow_and_update() {
                    attempt += 1;
                    let login = client.login(proto::LoginRequest {
                        username: format!("flood-{index}-{call}-{attempt}"),
                        password: "not-the-password".into(),
                    });
                    let answer = tokio::select! {
                        answer = login => answer,
                        _ = stop.changed() => return,
                    };
                    let counter = match answer {
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                            if honour_retry_after {
                                tokio::select! {
                                    () = tokio::time::sleep(retry_after(&status)) => {}
                                    _ = stop.changed() => return,
                                }
                            }
                            continue;
                        }
                        Err(status) if status.code() == tonic::Code::Unauthenticated => {
                            &tally.unauthenticated
                        }
                        _ => &tally.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    Ok(tasks)
}

/// A field of `/proc/PID/status` in bytes (`RssAnon`, `VmHWM`, …).
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| {
        line.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples `pid`'s `RssAnon` until `stop`; the largest seen.
pub(crate) fn sample_rss(
    pid: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !*stop.borrow_and_update() {
            peak = peak.max(proc_status_bytes(pid, "RssAnon").unwrap_or(0));
            tokio::select! {
                () = tokio::time::sleep(RSS_SAMPLE_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
        peak.max(proc_status_bytes(pid, "RssAnon").unwrap_or(0))
    })
}

/// The sum of every balance involved: via the banks (local), or each
/// user's own balance via the gateway.
async fn total_balance(
    cluster: Option<&LocalCluster>,
    destinations: &[(String, String)],
    users: Vec<(proto::gateway_client::GatewayClient<Channel>, String)>,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    match cluster {
        Some(local) => {
            for (bank, account) in destinations {
                let mut client = local.bank_client(bank).await?;
                total += client
                    .get_account(proto::GetAccountRequest {
                        account_no: account.clone(),
                    })
                    .await?
                    .into_inner()
                    .balance;
            }
        }
        None => {
            for (mut client, key) in users {
                total += client
                    .get_balance(authorized(proto::GetBalanceRequest {}, &key)?)
                    .await?
                    .into_inner()
                    .balance;
            }
        }
    }
    if total == 0 {
        bail!("no balances found");
    }
    Ok(total)
}

impl BenchReport {
    pub fn human(&self) -> String {
        let mib = |bytes: Option<u64>| {
            bytes.map_or("-".to_owned(), |bytes| {
                format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
            })
        };
        let mut text = format!(
            "minipay bench: {} clients, {} payments in {:.2} s\n  {:.0} payments/s\n  latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n  committed {}, aborted {}, failed {}\n  refused for load {} (answered in p50 {:.2} ms, p99 {:.2} ms; each resent)",
            self.clients,
            self.payments,
            self.elapsed_s,
            self.payments_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.committed,
            self.aborted,
            self.failed,
            self.refused,
            self.refused_p50_ms,
            self.refused_p99_ms,
        );
        if self.login_flood > 0 {
            text += &format!(
                "\n  login flood from {} connections{}: {} refused for load, {} wrong password, {} other",
                self.login_flood,
                if self.flood_honours_retry_after {
                    " (honouring retry-after)"
                } else {
                    ""
                },
                self.flood_refused,
                self.flood_unauthenticated,
                self.flood_other
            );
        }
        if self.gateway_rss_anon_peak_bytes.is_some() {
            text += &format!(
                "\n  gateway memory: RssAnon peak {}, VmHWM {}",
                mib(self.gateway_rss_anon_peak_bytes),
                mib(self.gateway_vm_hwm_bytes)
            );
        }
        text += &format!(
            "\n  total of all balances: before {} INR, after {} INR: {}",
            money::Amount(self.total_before),
            money::Amount(self.total_after),
            if self.conserved {
                "conserved"
            } else {
                "NOT CONSERVED"
            }
        );
        text
    }
}
