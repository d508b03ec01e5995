//! `minipay bench`: a load generator for users. Concurrent clients, each
//! logged in as its own user, make random payments of 0.01 to other
//! accounts; it reports payments/s, latency percentiles and outcomes, and
//! checks that the total of all balances did not change.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use minipay_proto::v1 as proto;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::client::authorized;
use crate::cluster::LocalCluster;
use crate::tls::TlsDir;

/// The most concurrent clients.
pub const CLIENTS_MAX: usize = 1024;
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
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub clients: usize,
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    pub failed: u64,
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

async fn gateway_client(
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

/// Registers and logs in one user per client, alternating banks.
async fn users(
    url: &str,
    tls_dir: &std::path::Path,
    clients: usize,
    banks: &[String],
) -> anyhow::Result<Vec<User>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut users = Vec::with_capacity(clients);
    for index in 0..clients {
        let mut client = gateway_client(url, tls_dir).await?;
        let username = format!("bench-{}-{index}", &run[..8]);
        let password = format!("pw-{run}-{index}");
        let bank = banks[index % banks.len()].clone();
        let registered = client
            .register(proto::RegisterRequest {
                username: username.clone(),
                password: password.clone(),
                bank,
                initial_balance: USER_BALANCE,
            })
            .await
            .with_context(|| format!("register {username}"))?
            .into_inner();
        let key = client
            .login(proto::LoginRequest {
                username: username.clone(),
                password,
            })
            .await
            .with_context(|| format!("log in {username}"))?
            .into_inner()
            .session_key;
        users.push(User {
            client,
            key,
            bank: registered.bank,
            account: registered.account_no,
        });
    }
    Ok(users)
}

fn percentile_ms(sorted: &[Duration], percent: f64) -> f64 {
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
    ensure!(
        (1..=CLIENTS_MAX).contains(&args.clients),
        "--clients must be between 1 and {CLIENTS_MAX}"
    );
    ensure!(args.payments >= 1, "--payments must be at least 1");
    ensure!(args.accounts >= 2, "--accounts must be at least 2");
    crate::tls::install_crypto_provider();
    let scratch = std::env::temp_dir().join(format!("minipay-bench-{}", std::process::id()));
    let mut cluster = None;
    let (url, tls_dir, banks) = if args.local {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        eprintln!("starting a local cluster in {}", scratch.display());
        let local = LocalCluster::start(&scratch, r#"{"users": []}"#, &["bank_a", "bank_b"])?;
        let found = (
            local.gateway_url(),
            local.tls_dir(),
            vec!["bank_a".to_owned(), "bank_b".to_owned()],
        );
        cluster = Some(local);
        found
    } else {
        let url = gateway.context("--gateway URL is required without --local")?;
        let tls_dir = tls_dir.context("--tls-dir is required without --local")?;
        (url, tls_dir, vec!["bank_a".to_owned(), "bank_b".to_owned()])
    };
    eprintln!("registering {} users", args.clients);
    let users = users(&url, &tls_dir, args.clients, &banks).await?;
    // Destinations: fresh accounts at the banks (local), or the users' own.
    let mut destinations: Vec<(String, String)> = users
        .iter()
        .map(|user| (user.bank.clone(), user.account.clone()))
        .collect();
    if let Some(local) = &cluster {
        for index in 0..args.accounts {
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
            destinations.push((bank.clone(), opened.account_no));
        }
    }
    let total_before = total_balance(cluster.as_ref(), &destinations, sessions(&users)).await?;
    let report = drive(&args, users, &destinations).await?;
    let (committed, aborted, failed, elapsed, mut latencies, users) = report;
    latencies.sort_unstable();
    // Phase 2 may still be landing for the last payments: give it a moment.
    let mut total_after = total_balance(cluster.as_ref(), &destinations, sessions(&users)).await?;
    let settle_started = Instant::now();
    while total_after != total_before && settle_started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        total_after = total_balance(cluster.as_ref(), &destinations, sessions(&users)).await?;
    }
    if let Some(mut local) = cluster {
        local.stop()?;
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(BenchReport {
        clients: args.clients,
        payments: args.payments,
        committed,
        aborted,
        failed,
        elapsed_s: elapsed.as_secs_f64(),
        payments_per_sec: args.payments as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 50.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        p999_ms: percentile_ms(&latencies, 99.9),
        total_before,
        total_after,
        conserved: total_before == total_after,
    })
}

fn sessions(users: &[User]) -> Vec<(proto::gateway_client::GatewayClient<Channel>, String)> {
    users
        .iter()
        .map(|user| (user.client.clone(), user.key.clone()))
        .collect()
}

type Outcome = (u64, u64, u64, Duration, Vec<Duration>, Vec<User>);

async fn drive(
    args: &BenchArgs,
    users: Vec<User>,
    destinations: &[(String, String)],
) -> anyhow::Result<Outcome> {
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
        .map(|(index, mut user)| {
            let share =
                args.payments / clients + u64::from((index as u64) < args.payments % clients);
            let done = Arc::clone(&done);
            let destinations = Arc::clone(&destinations);
            tokio::spawn(async move {
                let (mut committed, mut aborted, mut failed) = (0u64, 0u64, 0u64);
                let mut latencies = Vec::with_capacity(share as usize);
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
                    let one = Instant::now();
                    match user.client.pay(authorized(request, &user.key)?).await {
                        Ok(payment)
                            if payment.get_ref().status
                                == proto::PaymentStatus::Committed as i32 =>
                        {
                            committed += 1
                        }
                        Ok(_) => aborted += 1,
                        Err(_) => failed += 1,
                    }
                    latencies.push(one.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok((committed, aborted, failed, latencies, user))
            })
        })
        .collect();
    let (mut committed, mut aborted, mut failed, mut latencies, mut users) =
        (0, 0, 0, Vec::new(), Vec::new());
    for task in tasks {
        let (c, a, f, l, user) = task.await.context("a bench client failed")??;
        committed += c;
        aborted += a;
        failed += f;
        latencies.extend(l);
        users.push(user);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!(
        "\r{}/{} payments done                 ",
        args.payments, args.payments
    );
    Ok((committed, aborted, failed, elapsed, latencies, users))
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
        format!(
            "minipay bench: {} clients, {} payments in {:.2} s\n  {:.0} payments/s\n  latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n  committed {}, aborted {}, failed {}\n  total of all balances: before {} INR, after {} INR: {}",
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
            ledger::Amount(self.total_before),
            ledger::Amount(self.total_after),
            if self.conserved {
                "conserved"
            } else {
                "NOT CONSERVED"
            }
        )
    }
}
