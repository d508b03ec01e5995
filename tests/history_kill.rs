//! SIGKILL in the middle of writing history tables, with real processes on
//! the real disk. A server is started with a crash point
//! (`servers::crash_point`): it kills itself at an exact step of a
//! checkpoint (a history table written but not in place, a manifest written
//! but not switched) or of a merge (switched, its inputs not yet removed).
//! Payments run until it dies; it is restarted, and every payment is sent
//! again under its txn id. Each acknowledged outcome must be answered
//! again, and no id may pay twice: the balances show each committed payment
//! exactly once.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    Process, Scratch, authorized, bank_args, channel, gateway_args, gateway_balance, txn_id,
    wait_until,
};
use minipay::servers::crash_point::CRASH_POINT_VAR;
use minipay_proto::v1::{self as proto, PaymentStatus};
use tonic::transport::Channel;

type Client = proto::gateway_client::GatewayClient<Channel>;

const SETUP: &str = r#"{"users": [
    {"username": "alice", "password": "pass123", "bank": "bank_a", "account_no": "123", "balance": 1000},
    {"username": "bob", "password": "hunter22", "bank": "bank_b", "account_no": "456", "balance": 1000}
]}"#;
/// Both opening balances, in minor units.
const OPENING: u64 = 100_000;
/// A checkpoint every few records: tables are written, and merged, within
/// seconds of payments.
const SNAPSHOT_EVERY: &str = "8";
/// How long the payments may run before the crash point must have fired.
const CRASH_WITHIN: Duration = Duration::from_secs(90);

/// Which server dies, and where.
#[derive(Clone, Copy)]
struct Crash {
    server: &'static str,
    point: &'static str,
}

struct Cluster {
    scratch: Scratch,
    banks: Vec<(&'static str, Process)>,
    gateway: Process,
}

fn env_for(crash: Crash, server: &str) -> Vec<(&'static str, &'static str)> {
    if crash.server == server {
        vec![(CRASH_POINT_VAR, crash.point)]
    } else {
        Vec::new()
    }
}

fn start_bank(
    scratch: &Scratch,
    name: &str,
    listen: Option<SocketAddr>,
    env: &[(&str, &str)],
) -> Process {
    let mut args = bank_args(scratch, name, None);
    if let Some(address) = listen {
        let at = args.iter().position(|arg| arg == "--listen").unwrap() + 1;
        args[at] = address.to_string();
    }
    args.extend(["--snapshot-every".into(), SNAPSHOT_EVERY.into()]);
    let log = scratch.dir.path().join(format!("{name}.log"));
    Process::start_with_env(env!("CARGO_BIN_EXE_bank"), &args, &log, env)
}

fn start_gateway(
    scratch: &Scratch,
    banks: &[(&'static str, Process)],
    env: &[(&str, &str)],
) -> Process {
    let addresses: Vec<(&str, SocketAddr)> = banks
        .iter()
        .map(|(name, bank)| (*name, bank.address))
        .collect();
    let mut args = gateway_args(scratch, &addresses, "2s", "2s");
    args.extend(["--snapshot-every".into(), SNAPSHOT_EVERY.into()]);
    let log = scratch.dir.path().join("gateway.log");
    Process::start_with_env(env!("CARGO_BIN_EXE_gateway"), &args, &log, env)
}

fn start(crash: Crash) -> Cluster {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let banks: Vec<(&'static str, Process)> = ["bank_a", "bank_b"]
        .into_iter()
        .map(|name| {
            (
                name,
                start_bank(&scratch, name, None, &env_for(crash, name)),
            )
        })
        .collect();
    let gateway = start_gateway(&scratch, &banks, &env_for(crash, "gateway"));
    Cluster {
        scratch,
        banks,
        gateway,
    }
}

impl Cluster {
    fn server(&mut self, name: &str) -> &mut Process {
        if name == "gateway" {
            return &mut self.gateway;
        }
        &mut self
            .banks
            .iter_mut()
            .find(|(bank, _)| *bank == name)
            .unwrap()
            .1
    }

    async fn client(&self) -> (Client, String) {
        let mut client =
            Client::new(channel(&self.scratch.tls(), "client", self.gateway.address).await);
        let login = proto::LoginRequest {
            username: "alice".into(),
            password: "pass123".into(),
        };
        let key = client.login(login).await.unwrap().into_inner().session_key;
        (client, key)
    }

    /// Starts the crashed server again, without its crash point.
    fn restart(&mut self, name: &str) {
        if name == "gateway" {
            self.gateway = start_gateway(&self.scratch, &self.banks, &[]);
        } else {
            let address = self.server(name).address;
            let bank = start_bank(&self.scratch, name, Some(address), &[]);
            *self.server(name) = bank;
        }
    }
}

fn pay_bob(n: u32) -> proto::PayRequest {
    proto::PayRequest {
        txn_id: txn_id(n),
        to_bank: "bank_b".into(),
        to_account: "456".into(),
        amount: 1,
        currency: "INR".into(),
    }
}

/// Pays until `crash.server` dies at its crash point; returns how many
/// payments were sent and the outcomes acknowledged.
async fn pay_until_the_crash(cluster: &mut Cluster, crash: Crash) -> (u32, BTreeMap<u32, i32>) {
    let (mut client, key) = cluster.client().await;
    let mut acknowledged = BTreeMap::new();
    let started = Instant::now();
    for n in 0.. {
        if let Some(status) = cluster.server(crash.server).child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{} died by SIGKILL", crash.server);
            return (n, acknowledged);
        }
        assert!(
            started.elapsed() < CRASH_WITHIN,
            "crash point {} never reached",
            crash.point
        );
        if let Ok(paid) = client.pay(authorized(pay_bob(n), &key)).await {
            acknowledged.insert(n, paid.into_inner().status);
        }
    }
    unreachable!()
}

/// Sends every payment again; each acknowledged one must answer as it did.
/// Returns how many committed.
async fn resend_all(cluster: &Cluster, sent: u32, acknowledged: &BTreeMap<u32, i32>) -> u64 {
    let (mut client, key) = cluster.client().await;
    let mut committed = 0;
    for n in 0..sent {
        let answer = loop {
            match client.pay(authorized(pay_bob(n), &key)).await {
                Ok(paid) if paid.get_ref().status != PaymentStatus::Initiated as i32 => {
                    break paid.into_inner();
                }
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        if let Some(told) = acknowledged.get(&n) {
            assert_eq!(
                answer.status,
                *told,
                "txn {} was acknowledged {told} and is now {}",
                txn_id(n),
                answer.status
            );
        }
        if answer.status == PaymentStatus::Committed as i32 {
            committed += 1;
        }
    }
    committed
}

async fn crash_restart_and_check(crash: Crash) {
    let mut cluster = start(crash);
    let (sent, acknowledged) = pay_until_the_crash(&mut cluster, crash).await;
    let log = std::fs::read_to_string(
        cluster
            .scratch
            .dir
            .path()
            .join(format!("{}.log", crash.server)),
    )
    .unwrap();
    assert!(log.contains("crash point"), "{}", crash.point);
    assert!(
        acknowledged.len() > 4,
        "{} acknowledged before the crash",
        acknowledged.len()
    );
    cluster.restart(crash.server);
    let committed = resend_all(&cluster, sent, &acknowledged).await;
    let (client, key) = cluster.client().await;
    wait_until("phase 2 settles at alice's bank", || {
        let (mut client, key) = (client.clone(), key.clone());
        async move { gateway_balance(&mut client, &key).await.unsettled == 0 }
    })
    .await;
    let alice = gateway_balance(&mut client.clone(), &key).await;
    assert_eq!(
        alice.balance,
        OPENING - committed,
        "each committed payment debited once"
    );
    let bob_account = common::bank_client(
        &cluster.scratch.tls(),
        "gateway",
        cluster.server("bank_b").address,
    )
    .await;
    wait_until("phase 2 settles at bob's bank", || {
        let mut bank = bob_account.clone();
        async move {
            let request = proto::GetAccountRequest {
                account_no: "456".into(),
            };
            let found = bank.get_account(request).await.unwrap().into_inner();
            found.balance == OPENING + committed
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_before_a_checkpoints_table_is_in_place_answers_every_payment_once() {
    crash_restart_and_check(Crash {
        server: "gateway",
        point: "rename:table-:2",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_during_a_merge_answers_every_payment_once() {
    // Tables are removed only once a merge switched the manifest.
    crash_restart_and_check(Crash {
        server: "gateway",
        point: "remove:table-:1",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_killed_before_its_manifest_switches_applies_every_payment_once() {
    crash_restart_and_check(Crash {
        server: "bank_a",
        // Each checkpoint switches twice (its table, then the horizon): the
        // third manifest lists the second checkpoint's table.
        point: "rename:manifest-:3",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_killed_during_a_merge_applies_every_payment_once() {
    crash_restart_and_check(Crash {
        server: "bank_a",
        point: "remove:table-:1",
    })
    .await;
}
