//! `minipay bench`: a load generator for users. Concurrent clients make
//! payments of 0.01 to 1.00 between the bench users (each logged in as
//! itself) and, with `--local`, fresh payee accounts; it prints a line per
//! second while it runs, then payments/s, latency percentiles and outcomes,
//! and checks that the total of all balances did not change.
//!
//! Closed loop by default: each client sends its next payment as soon as
//! the last is answered, until `--payments` are made or `--duration` is
//! over (whichever comes first). With `--rate N`, open loop: payment slot
//! `k` is due `k / N` seconds after the start and its latency is measured
//! from then, not from when a client got round to sending it, so a system
//! that falls behind shows it in latency rather than by being sent fewer
//! payments (coordinated omission, corrected as wrk2 does). Either way at
//! most `--clients` payments are in flight. Each slot's payer, payee and
//! amount come from `--seed` ([`choices`], with the `--hot-percent` skew);
//! the HDR histograms and the per-second rows are [`timeline`]; `--report
//! DIR` writes them as JSON and an HTML page of plots ([`run_report`]).
//!
//! A payment the gateway sheds (RESOURCE_EXHAUSTED) is counted as refused,
//! not failed, and resent with the same txn id after the gateway's
//! `retry-after` hint. `--login-flood N` adds N connections sending wrong
//! passwords for unknown usernames while the payments run (each from its
//! own loopback address when the gateway is on loopback, as a flood from
//! many machines would be); with `--local` every server's peak anonymous
//! resident memory is sampled throughout, and its bytes on disk summed at
//! the end.

pub mod choices;
pub mod run_report;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use minipay_proto::v1 as proto;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::harness::cluster::LocalCluster;
use crate::rpc::session_key::authorized;
use crate::rpc::tls::TlsDir;
use choices::{Choices, HOT_SET_MAX};
use timeline::{Interval, SecondRow, Table, Timeline};

/// The most concurrent clients, and so the most payments in flight.
pub const CLIENTS_MAX: usize = 1024;
/// Clients share connections past this many (HTTP/2 multiplexes them).
const CONNECTIONS_MAX: usize = 256;
/// Users registered and logged in at once while setting up.
const SETUP_CONCURRENCY: usize = 8;
/// The most flood connections.
pub const FLOOD_CONNECTIONS_MAX: usize = 4096;
/// Logins in flight on each flood connection at once.
const FLOOD_CALLS_PER_CONNECTION: usize = 3;
/// How often each server's resident memory is sampled.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Opening balance of every bench user (minor units: 1,000,000.00).
const USER_BALANCE: u64 = 100_000_000;
/// Payments made when neither `--payments` nor `--duration` is given.
const PAYMENTS_DEFAULT: u64 = 10_000;
/// The longest `--duration` (a week).
pub const DURATION_MAX_S: u64 = 7 * 24 * 3600;
/// The highest `--rate`, payments/s.
pub const RATE_MAX: u64 = 1_000_000;
/// How many times one payment is resent while the gateway sheds it; past
/// that it counts as failed.
const RESENDS_MAX: u32 = 100;
/// How often a row is printed.
const ROW_EVERY: Duration = Duration::from_secs(1);
/// How often the status line under the rows is redrawn on a terminal.
const STATUS_REDRAW_EVERY: Duration = Duration::from_millis(250);
/// The most files and directories summed in one server's data directory.
const DATA_ENTRIES_MAX: usize = 1_000_000;

#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct BenchArgs {
    /// Start a local cluster (two banks and a gateway) instead of using --gateway.
    #[arg(long)]
    pub local: bool,
    /// Concurrent clients: the most payments in flight at once.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Payments in all (10000 when --duration is not given either; with
    /// both, the run ends at whichever comes first).
    #[arg(long)]
    pub payments: Option<u64>,
    /// Run for this many seconds (with --payments, whichever ends first).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Open loop: N payments a second in all, each due at its own time and
    /// timed from then (the latency of a backlog is counted); without it,
    /// each client pays again as soon as it is answered.
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// Seed for the payers, payees and amounts (random when not given; it
    /// is printed first, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Percent of the payments that pay into the hot set (0: every payee
    /// drawn uniformly).
    #[arg(long, default_value_t = 0, value_name = "PERCENT")]
    pub hot_percent: u8,
    /// Accounts in the hot set: the last ones opened (with --local, payee
    /// accounts).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub hot_set: usize,
    /// Destination accounts (with --local; otherwise the clients pay each other).
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Print the figures as one JSON object (the per-second rows then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write DIR/bench.json and DIR/report.html (plots) at the end.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
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

impl BenchArgs {
    /// A closed loop of `payments` payments from `clients` clients, with
    /// every other setting at its default.
    pub fn closed_loop(clients: usize, payments: u64) -> BenchArgs {
        BenchArgs {
            local: false,
            clients,
            payments: Some(payments),
            duration: None,
            rate: None,
            seed: None,
            hot_percent: 0,
            hot_set: 4,
            accounts: 1000,
            json: false,
            report: None,
            login_flood: 0,
            flood_honours_retry_after: false,
            payments_in_flight_max: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub clients: usize,
    pub seed: u64,
    /// Open loop at this many payments/s (`None`: closed loop).
    pub rate: Option<u64>,
    pub duration_s: Option<u64>,
    pub hot_percent: u8,
    pub hot_set: usize,
    /// Payments answered, whatever the answer.
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    /// Answered with an error: the errors.
    pub failed: u64,
    /// Attempts the gateway shed with RESOURCE_EXHAUSTED (then resent).
    pub refused: u64,
    pub refused_p50_ms: f64,
    pub refused_p99_ms: f64,
    /// Open loop with --duration: payments due before the end that no
    /// client had sent when it came (the schedule's backlog at the end).
    pub unsent_behind_schedule: Option<u64>,
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
    /// With --local: every server's memory and bytes on disk.
    pub servers: Vec<ServerFootprint>,
    /// With --local: the servers' data directories, summed (lengths, and
    /// disk blocks taken).
    pub data_bytes_total: Option<u64>,
    pub data_allocated_bytes_total: Option<u64>,
    pub elapsed_s: f64,
    pub payments_per_sec: f64,
    /// Whole-run latency percentiles (open loop: from each payment's due time).
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub total_before: u64,
    pub total_after: u64,
    pub conserved: bool,
    /// One row per second, as printed. Written to `bench.json` by
    /// `--report`, left out of `--json` (which stays one flat object that
    /// scripts grep fields out of).
    #[serde(skip)]
    pub seconds: Vec<SecondRow>,
    /// Rows printed but not kept (past [`timeline::ROWS_MAX`]).
    pub seconds_left_out: u64,
}

/// One server of the bench's own cluster, as the bench saw it.
#[derive(Clone, Debug, Serialize)]
pub struct ServerFootprint {
    pub name: String,
    /// The largest `RssAnon` sampled while the payments ran.
    pub rss_anon_peak_bytes: u64,
    /// `VmHWM` (peak resident, file pages included) once they were done.
    pub vm_hwm_bytes: Option<u64>,
    /// Its data directory's files once stopped: their lengths summed
    /// (preallocated log segments count whole) ...
    pub data_bytes: Option<u64>,
    /// ... and the disk blocks they take (what `du` says).
    pub data_allocated_bytes: Option<u64>,
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

/// Runs the load; prints the seed and a row a second (on stdout, or on
/// stderr with `--json`), setup progress on stderr, and returns the figures.
pub async fn run(
    args: BenchArgs,
    gateway: Option<String>,
    tls_dir: Option<PathBuf>,
) -> anyhow::Result<BenchReport> {
    check_args(&args)?;
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create the report directory {}", dir.display()))?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut table = Table::new(args.json);
    table.note(&format!("seed {seed} (repeat with --seed {seed})"));
    crate::rpc::tls::install_crypto_provider();
    let scratch = std::env::temp_dir().join(format!("minipay-bench-{}", std::process::id()));
    let target = Target::open(&args, gateway, tls_dir, &scratch)?;
    eprintln!("registering {} users", args.clients);
    let users = users(&target.url, &target.tls_dir, args.clients, &target.banks).await?;
    let destinations = destinations(&users, &target, args.accounts).await?;
    let choices = Choices::new(
        seed,
        users.len(),
        destinations.len(),
        args.hot_set,
        args.hot_percent,
    )?;
    let cluster = target.cluster.as_ref();
    let total_before = total_balance(cluster, &destinations, sessions(&users)).await?;
    let background = Background::start(&args, &target).await?;
    let driven = drive(&args, &users, &destinations, choices, table).await?;
    let (flood, mut servers) = background.stop().await?;
    let total_after = settled_total(cluster, &destinations, &users, total_before).await?;
    if let Some(mut local) = target.cluster {
        local.stop()?;
        for server in &mut servers {
            let (length, allocated) = dir_bytes(&scratch.join(&server.name))?;
            server.data_bytes = Some(length);
            server.data_allocated_bytes = Some(allocated);
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let totals = (total_before, total_after);
    let report = report(&args, seed, driven, &flood, servers, totals);
    if let Some(dir) = &args.report {
        run_report::write(dir, &args, &report)?;
        eprintln!("report written to {}", dir.join(run_report::HTML).display());
    }
    Ok(report)
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
        tls_dir: Option<PathBuf>,
        scratch: &Path,
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
/// (`--login-flood`) and, on the bench's own cluster, the samplers of every
/// server's memory.
struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    /// Each server's name, process id and memory sampler.
    samplers: Vec<(String, u32, tokio::task::JoinHandle<u64>)>,
    flood: Arc<FloodTally>,
    flooders: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    async fn start(args: &BenchArgs, target: &Target) -> anyhow::Result<Background> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let samplers = target
            .cluster
            .as_ref()
            .map(server_pids)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, pid)| (name, pid, sample_rss(pid, stopped.clone())))
            .collect();
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
            samplers,
            flood,
            flooders,
        })
    }

    /// Stops the flood and the samplers and waits for them; returns what
    /// the flood was answered and each server's peak memory.
    async fn stop(self) -> anyhow::Result<(Arc<FloodTally>, Vec<ServerFootprint>)> {
        self.stop.send_replace(true);
        for flooder in self.flooders {
            let _ = flooder.await;
        }
        let mut servers = Vec::with_capacity(self.samplers.len());
        for (name, pid, sampler) in self.samplers {
            servers.push(ServerFootprint {
                name,
                rss_anon_peak_bytes: sampler.await.context("a memory sampler failed")?,
                vm_hwm_bytes: proc_status_bytes(pid, "VmHWM"),
                data_bytes: None,
                data_allocated_bytes: None,
            });
        }
        Ok((self.flood, servers))
    }
}

/// Every server of `cluster` by name (its data directory's name too) and
/// process id: the banks, then the gateway.
fn server_pids(cluster: &LocalCluster) -> Vec<(String, u32)> {
    let mut pids: Vec<(String, u32)> = cluster
        .banks
        .iter()
        .map(|(name, bank)| (name.clone(), bank.child.id()))
        .collect();
    pids.extend(
        cluster
            .gateway
            .as_ref()
            .map(|gateway| ("gateway".to_owned(), gateway.child.id())),
    );
    pids
}

/// The lengths of the files under `dir`, summed, and the disk blocks they
/// take (symbolic links not followed).
fn dir_bytes(dir: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    /// `st_blocks` counts 512-byte units whatever the file system's block size.
    const STAT_BLOCK_BYTES: u64 = 512;
    let mut pending = vec![dir.to_path_buf()];
    let (mut length, mut allocated, mut entries) = (0u64, 0u64, 0usize);
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).with_context(|| format!("list {}", next.display()))? {
            let entry = entry?;
            entries += 1;
            ensure!(
                entries <= DATA_ENTRIES_MAX,
                "more than {DATA_ENTRIES_MAX} entries under {}",
                dir.display()
            );
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                length += metadata.len();
                allocated += metadata.blocks() * STAT_BLOCK_BYTES;
            }
        }
    }
    Ok((length, allocated))
}

/// The figures: outcomes and latency percentiles of the payments, the
/// per-second rows, the flood's answers, the servers' memory and disk, and
/// whether the total of all balances (before, after) stayed the same.
fn report(
    args: &BenchArgs,
    seed: u64,
    driven: Driven,
    flood: &FloodTally,
    servers: Vec<ServerFootprint>,
    (total_before, total_after): (u64, u64),
) -> BenchReport {
    let Driven {
        timeline,
        elapsed,
        unsent_behind_schedule,
    } = driven;
    let whole = &timeline.whole;
    if timeline.rows_left_out == 0 {
        let rows: u64 = timeline.rows.iter().map(|row| row.payments).sum();
        assert_eq!(rows, whole.payments(), "every answer lands in one row");
    }
    let ms = |value: Option<f64>| value.unwrap_or(0.0);
    let gateway = servers.iter().find(|server| server.name == "gateway");
    let local = !servers.is_empty();
    let data_bytes_total =
        local.then(|| servers.iter().filter_map(|server| server.data_bytes).sum());
    let data_allocated_bytes_total = local.then(|| {
        servers
            .iter()
            .filter_map(|server| server.data_allocated_bytes)
            .sum()
    });
    BenchReport {
        clients: args.clients,
        seed,
        rate: args.rate,
        duration_s: args.duration,
        hot_percent: args.hot_percent,
        hot_set: args.hot_set,
        payments: whole.payments(),
        committed: whole.committed,
        aborted: whole.aborted,
        failed: whole.failed,
        refused: whole.refused,
        refused_p50_ms: ms(whole.refusal_latencies.percentile_ms(50.0)),
        refused_p99_ms: ms(whole.refusal_latencies.percentile_ms(99.0)),
        unsent_behind_schedule,
        login_flood: args.login_flood,
        flood_honours_retry_after: args.flood_honours_retry_after,
        flood_refused: flood.refused.load(Ordering::Relaxed),
        flood_unauthenticated: flood.unauthenticated.load(Ordering::Relaxed),
        flood_other: flood.other.load(Ordering::Relaxed),
        gateway_rss_anon_peak_bytes: gateway.map(|gateway| gateway.rss_anon_peak_bytes),
        gateway_vm_hwm_bytes: gateway.and_then(|gateway| gateway.vm_hwm_bytes),
        data_bytes_total,
        data_allocated_bytes_total,
        elapsed_s: elapsed.as_secs_f64(),
        payments_per_sec: whole.payments() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(whole.latencies.percentile_ms(50.0)),
        p95_ms: ms(whole.latencies.percentile_ms(95.0)),
        p99_ms: ms(whole.latencies.percentile_ms(99.0)),
        p999_ms: ms(whole.latencies.percentile_ms(99.9)),
        max_ms: ms(whole.latencies.max_ms()),
        total_before,
        total_after,
        conserved: total_before == total_after,
        seconds_left_out: timeline.rows_left_out,
        seconds: timeline.rows,
        servers,
    }
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=CLIENTS_MAX).contains(&args.clients),
        "--clients must be between 1 and {CLIENTS_MAX}"
    );
    if let Some(payments) = args.payments {
        ensure!(payments >= 1, "--payments must be at least 1");
    }
    if let Some(duration) = args.duration {
        ensure!(
            (1..=DURATION_MAX_S).contains(&duration),
            "--duration must be between 1 and {DURATION_MAX_S} seconds"
        );
    }
    if let Some(rate) = args.rate {
        ensure!(
            (1..=RATE_MAX).contains(&rate),
            "--rate must be between 1 and {RATE_MAX} payments/s"
        );
    }
    ensure!(args.hot_percent <= 100, "--hot-percent must be at most 100");
    ensure!(
        (1..=HOT_SET_MAX).contains(&args.hot_set),
        "--hot-set must be between 1 and {HOT_SET_MAX}"
    );
    ensure!(args.accounts >= 2, "--accounts must be at least 2");
    ensure!(
        !args.local || args.hot_set <= args.accounts,
        "--hot-set must be at most --accounts ({})",
        args.accounts
    );
    ensure!(
        args.login_flood <= FLOOD_CONNECTIONS_MAX,
        "--login-flood must be at most {FLOOD_CONNECTIONS_MAX}"
    );
    Ok(())
}

/// Starts the bench's own cluster in `scratch`.
fn start_local(args: &BenchArgs, scratch: &Path) -> anyhow::Result<LocalCluster> {
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

/// When each payment slot is due, and when the run ends: after
/// `payments_max` slots or `duration` after the start, whichever comes first.
struct Schedule {
    started: Instant,
    payments_max: Option<u64>,
    duration: Option<Duration>,
    /// Open loop: payments/s in all (`None`: closed loop).
    rate: Option<u64>,
}

impl Schedule {
    fn new(args: &BenchArgs, started: Instant) -> Schedule {
        let duration = args.duration.map(Duration::from_secs);
        let payments_max = match (args.payments, duration) {
            (None, None) => Some(PAYMENTS_DEFAULT),
            (payments, _) => payments,
        };
        assert!(payments_max.is_some() || duration.is_some(), "a run ends");
        Schedule {
            started,
            payments_max,
            duration,
            rate: args.rate,
        }
    }

    /// When slot `slot` is due (at once in a closed loop), or `None` when
    /// the run is over for it.
    fn due(&self, slot: u64, now: Instant) -> Option<Instant> {
        if self.payments_max.is_some_and(|max| slot >= max) {
            return None;
        }
        let due = match self.rate {
            Some(rate) => self.started + slot_offset(slot, rate),
            None => now,
        };
        let deadline = self.duration.map(|duration| self.started + duration);
        if deadline.is_some_and(|deadline| due >= deadline || now >= deadline) {
            return None;
        }
        Some(due)
    }

    /// Open loop with a duration: the slots due before the end that were
    /// never sent, given how many payments were answered.
    fn unsent(&self, answered: u64) -> Option<u64> {
        let (rate, duration) = (self.rate?, self.duration?);
        let due = duration.as_secs() * rate;
        let due = self.payments_max.map_or(due, |max| due.min(max));
        Some(due.saturating_sub(answered))
    }
}

/// How long after the start slot `slot` is due at `rate` payments/s.
fn slot_offset(slot: u64, rate: u64) -> Duration {
    assert!(rate >= 1);
    let nanos = u128::from(slot) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A user's session, shared by every client that pays as that user.
#[derive(Clone)]
struct Session {
    client: proto::gateway_client::GatewayClient<Channel>,
    key: String,
}

/// What the clients share: the current second's figures (the per-second
/// task swaps it out each second) and counts for the status line.
#[derive(Default)]
struct Shared {
    interval: Mutex<Interval>,
    sent: AtomicU64,
    answered: AtomicU64,
}

/// How a payment was finally answered.
enum Outcome {
    Committed,
    Aborted,
    Failed,
}

impl Shared {
    fn interval(&self) -> MutexGuard<'_, Interval> {
        self.interval
            .lock()
            .expect("no one panics holding the current interval")
    }

    fn record(&self, outcome: Outcome, latency: Duration) {
        let mut interval = self.interval();
        match outcome {
            Outcome::Committed => interval.committed += 1,
            Outcome::Aborted => interval.aborted += 1,
            Outcome::Failed => interval.failed += 1,
        }
        interval.latencies.record(latency);
        drop(interval);
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    fn record_refusal(&self, latency: Duration) {
        let mut interval = self.interval();
        interval.refused += 1;
        interval.refusal_latencies.record(latency);
    }
}

/// Sends one payment, resent under its txn id (at most [`RESENDS_MAX`]
/// times) for as long as the gateway sheds it.
async fn pay(
    session: &Session,
    request: proto::PayRequest,
    shared: &Shared,
) -> anyhow::Result<Outcome> {
    let mut client = session.client.clone();
    for _ in 0..=RESENDS_MAX {
        let sent = Instant::now();
        let answer = client.pay(authorized(request.clone(), &session.key)?).await;
        match answer {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                shared.record_refusal(sent.elapsed());
                tokio::time::sleep(retry_after(&status)).await;
            }
            Ok(payment) if payment.get_ref().status == proto::PaymentStatus::Committed as i32 => {
                return Ok(Outcome::Committed);
            }
            Ok(_) => return Ok(Outcome::Aborted),
            Err(_) => return Ok(Outcome::Failed),
        }
    }
    Ok(Outcome::Failed)
}

/// One client: takes the next slot, waits until it is due (open loop),
/// pays as the slot's payer and records the latency from the due time,
/// until the schedule ends. One payment in flight at a time.
async fn client(
    sessions: Arc<Vec<Session>>,
    destinations: Arc<Vec<(String, String)>>,
    choices: Choices,
    schedule: Arc<Schedule>,
    next_slot: Arc<AtomicU64>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    loop {
        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
        let Some(due) = schedule.due(slot, Instant::now()) else {
            return Ok(());
        };
        if schedule.rate.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let choice = choices.for_slot(slot);
        let (to_bank, to_account) = destinations[choice.payee].clone();
        let request = proto::PayRequest {
            txn_id: uuid::Uuid::new_v4().to_string(),
            to_bank,
            to_account,
            amount: choice.amount_minor,
            currency: "INR".into(),
        };
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let outcome = pay(&sessions[choice.payer], request, &shared).await?;
        shared.record(outcome, Instant::now().saturating_duration_since(due));
    }
}

/// What a run of the load made.
struct Driven {
    timeline: Timeline,
    elapsed: Duration,
    unsent_behind_schedule: Option<u64>,
}

/// Runs `args.clients` clients (the in-flight bound) over the schedule
/// while a task prints a row a second.
async fn drive(
    args: &BenchArgs,
    users: &[User],
    destinations: &[(String, String)],
    choices: Choices,
    table: Table,
) -> anyhow::Result<Driven> {
    let sessions: Arc<Vec<Session>> = Arc::new(
        users
            .iter()
            .map(|user| Session {
                client: user.client.clone(),
                key: user.key.clone(),
            })
            .collect(),
    );
    let destinations = Arc::new(destinations.to_vec());
    let shared = Arc::new(Shared::default());
    let next_slot = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let schedule = Arc::new(Schedule::new(args, started));
    let (finished, finished_receiver) = tokio::sync::oneshot::channel();
    let rows = tokio::spawn(per_second(
        Arc::clone(&shared),
        started,
        schedule.duration,
        table,
        finished_receiver,
    ));
    let in_flight_max = args.clients;
    let clients: Vec<_> = (0..in_flight_max)
        .map(|_| {
            tokio::spawn(client(
                Arc::clone(&sessions),
                Arc::clone(&destinations),
                choices,
                Arc::clone(&schedule),
                Arc::clone(&next_slot),
                Arc::clone(&shared),
            ))
        })
        .collect();
    let mut failure = None;
    for client in clients {
        if let Err(error) = client
            .await
            .context("a bench client panicked")
            .and_then(|done| done)
        {
            failure.get_or_insert(error);
        }
    }
    let _ = finished.send(());
    let (timeline, elapsed) = rows.await.context("the per-second rows failed")?;
    if let Some(error) = failure {
        return Err(error);
    }
    let unsent_behind_schedule = schedule.unsent(timeline.whole.payments());
    Ok(Driven {
        timeline,
        elapsed,
        unsent_behind_schedule,
    })
}

/// Prints the header, then a row each second (and, on a terminal, a status
/// line redrawn between rows) until `finished`; then the last row if
/// anything was answered in it. Returns the rows and the run's length.
///
/// A tick within half a row of the end of `duration` is skipped: the last
/// row then covers the end and the answers to payments still in flight,
/// rather than a sliver of a second whose rate would mean little.
async fn per_second(
    shared: Arc<Shared>,
    started: Instant,
    duration: Option<Duration>,
    mut table: Table,
    mut finished: tokio::sync::oneshot::Receiver<()>,
) -> (Timeline, Duration) {
    table.header();
    let mut timeline = Timeline::default();
    let mut closing = Interval::default();
    let mut rows = tokio::time::interval_at((started + ROW_EVERY).into(), ROW_EVERY);
    rows.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status = tokio::time::interval(STATUS_REDRAW_EVERY);
    loop {
        tokio::select! {
            _ = rows.tick() => {
                let elapsed = started.elapsed();
                let at_the_end = duration.is_some_and(|end| elapsed.abs_diff(end) < ROW_EVERY / 2);
                if !at_the_end {
                    std::mem::swap(&mut *shared.interval(), &mut closing);
                    table.row(&timeline.close(&mut closing, elapsed));
                }
            }
            _ = status.tick(), if table.is_terminal() => {
                let answered = shared.answered.load(Ordering::Relaxed);
                let in_flight = shared.sent.load(Ordering::Relaxed).saturating_sub(answered);
                table.status(&format!(
                    "{:>8.1}s  {answered} answered, {in_flight} in flight",
                    started.elapsed().as_secs_f64()
                ));
            }
            _ = &mut finished => break,
        }
    }
    let elapsed = started.elapsed();
    std::mem::swap(&mut *shared.interval(), &mut closing);
    if closing.payments() > 0 || closing.refused > 0 {
        table.row(&timeline.close(&mut closing, elapsed));
    } else {
        table.status("");
    }
    (timeline, elapsed)
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

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

impl BenchReport {
    /// How the payments were sent, in words.
    pub fn load_shape(&self) -> String {
        let mut shape = match self.rate {
            Some(rate) => format!("open loop at {rate} payments/s"),
            None => "closed loop".to_owned(),
        };
        shape += &format!(", {} clients", self.clients);
        if self.hot_percent > 0 {
            shape += &format!(
                ", {}% of payments into {} hot accounts",
                self.hot_percent, self.hot_set
            );
        }
        shape
    }

    /// With --local: a line per server (memory, disk), then the disk total.
    fn footprint_lines(&self) -> String {
        let mut text = String::new();
        for server in &self.servers {
            text += &format!(
                "\n  {}: RssAnon peak {}, VmHWM {}, data on disk {} ({} allocated)",
                server.name,
                mib(server.rss_anon_peak_bytes),
                server.vm_hwm_bytes.map_or("-".to_owned(), mib),
                server.data_bytes.map_or("-".to_owned(), mib),
                server.data_allocated_bytes.map_or("-".to_owned(), mib),
            );
        }
        if let (Some(length), Some(allocated)) =
            (self.data_bytes_total, self.data_allocated_bytes_total)
        {
            text +=
                &format!("\n  data on disk in all: {length} bytes, {allocated} bytes allocated");
        }
        text
    }

    pub fn human(&self) -> String {
        let mut text = format!(
            "minipay bench: {}, seed {}\n  {} payments in {:.2} s\n  {:.0} payments/s\n  latency{} p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms\n  committed {}, aborted {}, failed {}\n  refused for load {} (answered in p50 {:.2} ms, p99 {:.2} ms; each resent)",
            self.load_shape(),
            self.seed,
            self.payments,
            self.elapsed_s,
            self.payments_per_sec,
            if self.rate.is_some() {
                " (from each payment's due time)"
            } else {
                ""
            },
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.committed,
            self.aborted,
            self.failed,
            self.refused,
            self.refused_p50_ms,
            self.refused_p99_ms,
        );
        if let Some(unsent) = self.unsent_behind_schedule {
            text += &format!(
                "\n  behind schedule at the end: {unsent} payments due were never sent (not in the percentiles)"
            );
        }
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
        text += &self.footprint_lines();
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
