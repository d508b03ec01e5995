//! `minipay history-bench`: what a long history costs a running system.
//!
//! `build` makes a cluster directory (the layout [`LocalCluster`] uses:
//! `tls/`, `setup.json`, `bank_a/`, `bank_b/`, `gateway/`) holding N
//! payments of history, quickly and in process, through the cores' own API:
//! a [`Gateway`] over two [`Bank`]s on the real disk, every record through
//! the logs, checkpoints writing history tables as the servers do. Files
//! are never written another way. It keeps the first payments it made in
//! `old-payments.json`, to be asked about later.
//!
//! `measure` starts the real `bank` and `gateway` processes on such a
//! directory and measures: each one's time from start to `listening`, its
//! `RssAnon` after the start and its largest while a load runs, the load's
//! payments per second (`minipay bench` against it), and the latency of a
//! repeated `Pay` and of a `GetPayment` for the old payments; then it kills
//! every process with SIGKILL and times the restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use coordinator::gateway::{Gateway, GatewayOptions, SetupUser};
use coordinator::participant::{CallError, CallFuture, Participant, Vote};
use coordinator::payment::{Endpoint, PaymentRequest};
use ledger::{Bank, BankOptions};
use money::{AccountNo, Amount, BankName, Leg, TxnId};
use serde::{Deserialize, Serialize};

use crate::harness::cluster::{LocalCluster, Servers};
use crate::harness::load_generator::{BenchArgs, gateway_client, proc_status_bytes, sample_rss};
use crate::rpc::session_key::authorized;
use crate::servers::gateway::node::{OsEntropy, SystemClock};
use minipay_proto::v1 as proto;

/// The banks of a history directory.
const BANKS: [&str; 2] = ["bank_a", "bank_b"];
const CURRENCY: &str = "INR";
/// Opening balance of every history user, in major units.
const USER_BALANCE_MAJOR: &str = "1000000";
/// How many of the first payments `build` keeps to be asked about.
const OLD_PAYMENTS_KEPT: usize = 2_000;
/// How often `build` checkpoints (as the servers' background loops do).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// Make a cluster directory with N payments of history, in process
    /// through the cores (records through the logs, checkpoints writing
    /// history tables).
    Build(BuildArgs),
    /// Start the real servers on a directory `build` made and measure
    /// restart times, resident memory, the payment rate and the latency of
    /// asking about its oldest payments; then SIGKILL and restart them.
    Measure(MeasureArgs),
}

/// Runs a `minipay history-bench` command.
pub fn main(command: HistoryCommand) -> anyhow::Result<()> {
    match command {
        HistoryCommand::Build(args) => build(&args),
        HistoryCommand::Measure(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let measured = runtime.block_on(measure(&args))?;
            if args.json {
                println!("{}", serde_json::to_string(&measured)?);
            } else {
                println!("{}", measured.human());
            }
            Ok(())
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct BuildArgs {
    /// The cluster directory to create (must not exist).
    #[arg(long)]
    pub dir: PathBuf,
    /// Payments to make.
    #[arg(long, default_value_t = 1_000_000)]
    pub payments: u64,
    /// Setup users (each with an account), who pay each other.
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// Payments in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// A payment `build` made, to be repeated by `measure`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OldPayment {
    pub username: String,
    pub password: String,
    pub txn_id: String,
    pub to_bank: String,
    pub to_account: String,
    pub amount: u64,
}

fn username(index: usize) -> String {
    format!("h{index}")
}

fn password(index: usize) -> String {
    format!("history-pw-{index}")
}

fn bank_of(index: usize) -> &'static str {
    BANKS[index % BANKS.len()]
}

fn account_of(index: usize) -> String {
    (index + 1).to_string()
}

/// The setup file: `users` users alternating banks.
fn setup_json(users: usize) -> String {
    let users: Vec<serde_json::Value> = (0..users)
        .map(|index| {
            serde_json::json!({
                "username": username(index),
                "password": password(index),
                "bank": bank_of(index),
                "account_no": account_of(index),
                "balance": USER_BALANCE_MAJOR,
            })
        })
        .collect();
    serde_json::json!({ "users": users }).to_string()
}

/// The banks, called in process: what the gateway's gRPC clients do,
/// without the network.
struct InProcessBanks {
    banks: Vec<(BankName, Arc<Bank>)>,
}

impl InProcessBanks {
    fn bank(&self, name: &BankName) -> &Bank {
        &self
            .banks
            .iter()
            .find(|(bank, _)| bank == name)
            .expect("a known bank")
            .1
    }
}

fn refused(bank: &BankName, error: ledger::BankError) -> CallError {
    CallError::Refused {
        bank: bank.clone(),
        detail: error.to_string(),
    }
}

impl Participant for InProcessBanks {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        _timeout: Duration,
    ) -> CallFuture<'a, Vote> {
        Box::pin(async move {
            let now = crate::rpc::settings::now_ms();
            match self.bank(bank).prepare(txn, &legs, now).await {
                Ok(ledger::Vote::Yes) => Ok(Vote::Yes),
                Ok(ledger::Vote::No(reason)) => Ok(Vote::No {
                    reason: reason.to_string(),
                }),
                Err(error) => Err(refused(bank, error)),
            }
        })
    }

    fn commit<'a>(&'a self, bank: &'a BankName, txn: TxnId, _: Duration) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let now = crate::rpc::settings::now_ms();
            self.bank(bank)
                .commit(txn, now)
                .await
                .map_err(|error| refused(bank, error))
        })
    }

    fn abort<'a>(&'a self, bank: &'a BankName, txn: TxnId, _: Duration) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let now = crate::rpc::settings::now_ms();
            self.bank(bank)
                .abort(txn, now)
                .await
                .map_err(|error| refused(bank, error))
        })
    }
}

/// Opens a bank's data directory as the `bank` server does.
fn open_bank(dir: &Path, name: &str, users: usize) -> anyhow::Result<Arc<Bank>> {
    let storage = wal::FsStorage::open_locked(&dir.join(name).join("wal"))?;
    let seeds =
        crate::rpc::setup::seeds_for(&crate::rpc::setup::load(&dir.join("setup.json"))?, name)?;
    ensure!(seeds.len() == users.div_ceil(2) || seeds.len() == users / 2);
    let options = BankOptions {
        wal: crate::servers::process::server_wal_options(
            crate::servers::process::wal_segment_size(None)?,
        ),
        ..BankOptions::default()
    };
    let (bank, _) = Bank::open(Arc::new(storage), name, CURRENCY, || Ok(seeds), options)
        .with_context(|| format!("open {name}"))?;
    Ok(Arc::new(bank))
}

/// Opens the gateway's data directory as the `gateway` server does.
fn open_gateway(
    dir: &Path,
    banks: InProcessBanks,
    users: usize,
) -> anyhow::Result<Gateway<InProcessBanks>> {
    let storage = wal::FsStorage::open_locked(&dir.join("gateway").join("wal"))?;
    let names = BANKS
        .iter()
        .map(|bank| BankName::parse(bank).expect("valid"))
        .collect();
    let options = GatewayOptions {
        wal: crate::servers::process::server_wal_options(
            crate::servers::process::wal_segment_size(None)?,
        ),
        ..GatewayOptions::new(names, CURRENCY)
    };
    let setup_users = || {
        (0..users)
            .map(|index| SetupUser {
                username: username(index),
                password: password(index),
                bank: BankName::parse(bank_of(index)).expect("valid"),
                account: AccountNo::parse(&account_of(index)).expect("valid"),
            })
            .collect()
    };
    Gateway::open(
        Arc::new(storage),
        options,
        banks,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        setup_users,
    )
    .context("open the gateway")
}

/// Makes the directory and its history; prints progress on stderr.
pub fn build(args: &BuildArgs) -> anyhow::Result<()> {
    ensure!(args.users >= 2, "--users must be at least 2");
    ensure!(
        (1..=4096).contains(&args.concurrency),
        "--concurrency must be between 1 and 4096"
    );
    ensure!(!args.dir.exists(), "{} already exists", args.dir.display());
    std::fs::create_dir_all(&args.dir)?;
    let banks: Vec<String> = BANKS.iter().map(|bank| (*bank).to_owned()).collect();
    crate::tools::certs::generate(&args.dir.join("tls"), &banks)?;
    std::fs::write(args.dir.join("setup.json"), setup_json(args.users))?;
    let banks: Vec<(BankName, Arc<Bank>)> = BANKS
        .iter()
        .map(|name| {
            Ok((
                BankName::parse(name).expect("valid"),
                open_bank(&args.dir, name, args.users)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let bank_handles: Vec<Arc<Bank>> = banks.iter().map(|(_, bank)| Arc::clone(bank)).collect();
    eprintln!("hashing {} setup passwords", args.users);
    let gateway = Arc::new(open_gateway(
        &args.dir,
        InProcessBanks { banks },
        args.users,
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let old = runtime.block_on(drive(args, &gateway, &bank_handles))?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "\n{} payments in {elapsed:.0} s ({:.0}/s); history tables: gateway {}, banks {}",
        args.payments,
        args.payments as f64 / elapsed,
        gateway.history_tables().tables().len(),
        bank_handles
            .iter()
            .map(|bank| bank.history().store().tables().len().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
    );
    std::fs::write(
        args.dir.join("old-payments.json"),
        serde_json::to_string_pretty(&old)?,
    )?;
    std::fs::write(
        args.dir.join("history.json"),
        serde_json::json!({ "payments": args.payments, "users": args.users }).to_string(),
    )?;
    Ok(())
}

/// Runs the payments with `concurrency` tasks, checkpointing beside them
/// as the servers do; returns the first ones made.
async fn drive(
    args: &BuildArgs,
    gateway: &Arc<Gateway<InProcessBanks>>,
    banks: &[Arc<Bank>],
) -> anyhow::Result<Vec<OldPayment>> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let checkpoints = spawn_checkpoints(Arc::clone(gateway), banks.to_vec(), Arc::clone(&done));
    let old = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (gateway, next, old) = (Arc::clone(gateway), Arc::clone(&next), Arc::clone(&old));
        let (total, users) = (args.payments, args.users);
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let made = pay_one(&gateway, users).await?;
                if index < OLD_PAYMENTS_KEPT as u64 {
                    old.lock().expect("old payments lock").push(made);
                }
                if index % 100_000 == 0 && index > 0 {
                    let heap = heap_bytes();
                    eprintln!(
                        "{index} payments, {:.0}/s, RssAnon {} MiB, heap in use {} MiB, free in the heap {} MiB",
                        index as f64 / started.elapsed().as_secs_f64(),
                        proc_status_bytes(std::process::id(), "RssAnon").unwrap_or(0) >> 20,
                        heap.0 >> 20,
                        heap.1 >> 20,
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("a payment task failed")??;
    }
    done.store(true, Ordering::SeqCst);
    checkpoints.join().expect("the checkpoint thread ends")?;
    let old = std::mem::take(&mut *old.lock().expect("old payments lock"));
    Ok(old)
}

/// One payment between two random setup users, settled (phase 2 run).
async fn pay_one(gateway: &Gateway<InProcessBanks>, users: usize) -> anyhow::Result<OldPayment> {
    let payer = rand::random_range(0..users);
    let payee = (payer + rand::random_range(1..users)) % users;
    let endpoint = |index: usize| Endpoint {
        bank: BankName::parse(bank_of(index)).expect("valid"),
        account: AccountNo::parse(&account_of(index)).expect("valid"),
    };
    let request = PaymentRequest {
        txn: TxnId(*uuid::Uuid::new_v4().as_bytes()),
        from: endpoint(payer),
        to: endpoint(payee),
        amount: Amount(1),
        currency: CURRENCY.into(),
    };
    let paid = gateway.pay(&username(payer), request.clone()).await?;
    if paid.phase_two_pending {
        gateway.phase_two(request.txn).await?;
    }
    Ok(OldPayment {
        username: username(payer),
        password: password(payer),
        txn_id: request.txn.to_string(),
        to_bank: bank_of(payee).to_owned(),
        to_account: account_of(payee),
        amount: 1,
    })
}

/// Checkpoints the gateway and the banks every [`CHECKPOINT_EVERY`] until
/// `done`, on a thread of its own (they block).
fn spawn_checkpoints(
    gateway: Arc<Gateway<InProcessBanks>>,
    banks: Vec<Arc<Bank>>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(CHECKPOINT_EVERY);
            let mut ran = gateway.checkpoint_if_due()?;
            for bank in &banks {
                ran |= bank.checkpoint_if_due(crate::rpc::settings::now_ms())?;
            }
            if ran {
                crate::servers::process::return_free_memory();
            }
        }
        Ok(())
    })
}

#[derive(Clone, Debug, clap::Args)]
pub struct MeasureArgs {
    /// A directory `minipay history-bench build` made.
    #[arg(long)]
    pub dir: PathBuf,
    /// Payments of the load (`minipay bench` against the servers).
    #[arg(long, default_value_t = 50_000)]
    pub payments: u64,
    /// Concurrent clients of the load.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Old payments asked about (a repeated `Pay` and a `GetPayment` each).
    #[arg(long, default_value_t = 1_000)]
    pub probes: usize,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `measure` saw, per server in the order bank_a, bank_b, gateway.
#[derive(Debug, Default, Serialize)]
pub struct Measured {
    pub history_payments: u64,
    pub start_s: Vec<f64>,
    pub rss_anon_after_start_mib: Vec<f64>,
    pub rss_anon_peak_serving_mib: Vec<f64>,
    pub payments_per_sec: f64,
    pub load_p99_ms: f64,
    pub probes: usize,
    pub repeat_pay_p50_ms: f64,
    pub repeat_pay_p99_ms: f64,
    pub get_payment_p50_ms: f64,
    pub get_payment_p99_ms: f64,
    pub restart_after_kill_s: Vec<f64>,
    pub rss_anon_after_restart_mib: Vec<f64>,
}

impl Measured {
    pub fn human(&self) -> String {
        let list = |values: &[f64], precision: usize| {
            values
                .iter()
                .map(|value| format!("{value:.precision$}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        format!(
            "history: {} payments (bank_a / bank_b / gateway)\n\
             start to listening, s: {}\n\
             RssAnon after start, MiB: {}\n\
             RssAnon peak while serving, MiB: {}\n\
             load: {:.0} payments/s, p99 {:.1} ms\n\
             {} old payments: repeated Pay p50 {:.2} ms p99 {:.2} ms; GetPayment p50 {:.2} ms p99 {:.2} ms\n\
             restart after SIGKILL, s: {}\n\
             RssAnon after the restart, MiB: {}",
            self.history_payments,
            list(&self.start_s, 2),
            list(&self.rss_anon_after_start_mib, 1),
            list(&self.rss_anon_peak_serving_mib, 1),
            self.payments_per_sec,
            self.load_p99_ms,
            self.probes,
            self.repeat_pay_p50_ms,
            self.repeat_pay_p99_ms,
            self.get_payment_p50_ms,
            self.get_payment_p99_ms,
            list(&self.restart_after_kill_s, 2),
            list(&self.rss_anon_after_restart_mib, 1),
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Every server's `RssAnon`, in the order bank_a, bank_b, gateway.
fn rss_anon_mib(cluster: &LocalCluster) -> Vec<f64> {
    server_pids(cluster)
        .into_iter()
        .map(|pid| mib(proc_status_bytes(pid, "RssAnon").unwrap_or(0)))
        .collect()
}

fn server_pids(cluster: &LocalCluster) -> Vec<u32> {
    let mut pids: Vec<u32> = cluster
        .banks
        .iter()
        .map(|(_, bank)| bank.child.id())
        .collect();
    pids.extend(cluster.gateway.as_ref().map(|gateway| gateway.child.id()));
    pids
}

/// Starts every server, timing each from its start to `listening`.
fn start_timed(cluster: &mut LocalCluster) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for name in BANKS {
        let started = Instant::now();
        let bank = cluster.start_bank(name, "127.0.0.1:0")?;
        times.push(started.elapsed().as_secs_f64());
        cluster.banks.push((name.to_owned(), bank));
    }
    let started = Instant::now();
    cluster.gateway = Some(cluster.start_gateway()?);
    times.push(started.elapsed().as_secs_f64());
    Ok(times)
}

/// SIGKILLs every server, then starts each again on its address, timed.
fn restart_after_kill(cluster: &mut LocalCluster) -> anyhow::Result<Vec<f64>> {
    if let Some(gateway) = cluster.gateway.as_mut() {
        gateway.kill_9();
    }
    for (_, bank) in &mut cluster.banks {
        bank.kill_9();
    }
    let mut times = Vec::new();
    for name in BANKS {
        let started = Instant::now();
        cluster.restart_bank(name)?;
        times.push(started.elapsed().as_secs_f64());
    }
    let started = Instant::now();
    cluster.gateway = Some(cluster.start_gateway()?);
    times.push(started.elapsed().as_secs_f64());
    Ok(times)
}

/// Starts the servers on `args.dir`, measures, and stops them.
pub async fn measure(args: &MeasureArgs) -> anyhow::Result<Measured> {
    crate::rpc::tls::install_crypto_provider();
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(args.dir.join("history.json"))?)?;
    let old: Vec<OldPayment> = serde_json::from_str(&std::fs::read_to_string(
        args.dir.join("old-payments.json"),
    )?)?;
    let exe = std::env::current_exe().context("find the minipay executable")?;
    // The probes log in as many setup users, all from 127.0.0.1.
    let flags = [
        "--login-rate-per-address".to_owned(),
        "100000/1s".to_owned(),
    ];
    let mut cluster = LocalCluster::existing(Servers::ReExec(exe), &args.dir, &flags)?;
    let mut measured = Measured {
        history_payments: info["payments"].as_u64().unwrap_or(0),
        start_s: start_timed(&mut cluster)?,
        rss_anon_after_start_mib: rss_anon_mib(&cluster),
        ..Measured::default()
    };
    let probes = &old[..args.probes.min(old.len())];
    probe_old_payments(&cluster, probes, &mut measured).await?;
    serve_load(&cluster, args, &mut measured).await?;
    measured.restart_after_kill_s = restart_after_kill(&mut cluster)?;
    measured.rss_anon_after_restart_mib = rss_anon_mib(&cluster);
    cluster.stop()?;
    Ok(measured)
}

/// Logs in as each user of `probes` (untimed), then repeats each old
/// payment's `Pay` and asks `GetPayment`, timing each; every answer must
/// be the payment's outcome (they all committed).
async fn probe_old_payments(
    cluster: &LocalCluster,
    probes: &[OldPayment],
    measured: &mut Measured,
) -> anyhow::Result<()> {
    let mut client = gateway_client(&cluster.gateway_url(), &cluster.tls_dir()).await?;
    let mut keys = std::collections::HashMap::new();
    for probe in probes {
        if !keys.contains_key(&probe.username) {
            let login = proto::LoginRequest {
                username: probe.username.clone(),
                password: probe.password.clone(),
            };
            let key = client.login(login).await?.into_inner().session_key;
            keys.insert(probe.username.clone(), key);
        }
    }
    let committed = proto::PaymentStatus::Committed as i32;
    let (mut pays, mut gets) = (Vec::new(), Vec::new());
    for probe in probes {
        let key = &keys[&probe.username];
        let request = proto::PayRequest {
            txn_id: probe.txn_id.clone(),
            to_bank: probe.to_bank.clone(),
            to_account: probe.to_account.clone(),
            amount: probe.amount,
            currency: CURRENCY.into(),
        };
        let started = Instant::now();
        let paid = client.pay(authorized(request, key)?).await?.into_inner();
        pays.push(started.elapsed());
        ensure!(
            paid.status == committed,
            "old payment {} answered {paid:?}",
            probe.txn_id
        );
        let request = proto::GetPaymentRequest {
            txn_id: probe.txn_id.clone(),
        };
        let started = Instant::now();
        let got = client
            .get_payment(authorized(request, key)?)
            .await?
            .into_inner();
        gets.push(started.elapsed());
        ensure!(
            got.status == committed,
            "old payment {} is now {got:?}",
            probe.txn_id
        );
    }
    pays.sort();
    gets.sort();
    measured.probes = probes.len();
    measured.repeat_pay_p50_ms = percentile_ms(&pays, 50.0);
    measured.repeat_pay_p99_ms = percentile_ms(&pays, 99.0);
    measured.get_payment_p50_ms = percentile_ms(&gets, 50.0);
    measured.get_payment_p99_ms = percentile_ms(&gets, 99.0);
    Ok(())
}

/// The latency `percent` of `sorted` are at or under, in ms (0 when empty).
fn percentile_ms(sorted: &[Duration], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * percent / 100.0) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs `minipay bench` against the servers while sampling every one's
/// `RssAnon`; money must be conserved.
async fn serve_load(
    cluster: &LocalCluster,
    args: &MeasureArgs,
    measured: &mut Measured,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let samplers: Vec<_> = server_pids(cluster)
        .into_iter()
        .map(|pid| sample_rss(pid, stopped.clone()))
        .collect();
    let bench = BenchArgs::closed_loop(args.clients, args.payments);
    let report = crate::harness::load_generator::run(
        bench,
        Some(cluster.gateway_url()),
        Some(cluster.tls_dir()),
    )
    .await?;
    let _ = stop.send(true);
    for sampler in samplers {
        measured.rss_anon_peak_serving_mib.push(mib(sampler.await?));
    }
    ensure!(report.conserved, "the load did not conserve money");
    measured.payments_per_sec = report.payments_per_sec;
    measured.load_p99_ms = report.p99_ms;
    Ok(())
}

/// The allocator's bytes in use and free (held, not returned to the
/// system), from glibc's `mallinfo2`: whether resident memory that grows
/// is data or fragmentation.
fn heap_bytes() -> (u64, u64) {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    ((info.uordblks + info.hblkhd) as u64, info.fordblks as u64)
}
