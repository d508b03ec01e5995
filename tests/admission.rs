//! Admission control over real processes and real mTLS: a login flood from
//! many connections (and many client addresses) leaves the gateway alive,
//! its memory bounded by its configuration, and payments flowing; a full
//! hashing queue, the per-address and per-username rates, and a saturated
//! gateway refuse with RESOURCE_EXHAUSTED and a retry hint; the largest
//! amount is refused at the gateway and at the bank. Nothing moves in any
//! refused case.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{
    Cli, Cluster, Process, SETUP, Scratch, authorized, start_cluster, txn_id, wait_until,
};
use minipay::harness::load_generator::{loopback_source, proc_status_bytes};
use minipay_proto::v1::{self as proto, PaymentStatus};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

type Client = proto::gateway_client::GatewayClient<Channel>;

/// The argon2id working memory of one hash at the default cost.
const HASH_MEMORY_BYTES: u64 = 19 << 20;

/// A client connection to the gateway from `source` (any loopback address
/// reaches a server on 127.0.0.1; each is its own client address to it).
async fn client_from(tls: &Path, gateway: SocketAddr, source: Option<IpAddr>) -> Client {
    let config = minipay::rpc::tls::TlsDir::new(tls)
        .client("client")
        .unwrap();
    let channel = Endpoint::from_shared(format!("https://{gateway}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .local_address(source)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    Client::new(channel)
}

async fn client(scratch: &Scratch, cluster: &Cluster) -> Client {
    client_from(&scratch.tls(), cluster.gateway.address, None).await
}

async fn login(
    client: &mut Client,
    username: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    client
        .login(proto::LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .map(|response| response.into_inner().session_key)
}

fn pay(txn: u32, amount: u64) -> proto::PayRequest {
    proto::PayRequest {
        txn_id: txn_id(txn),
        to_bank: "bank_b".into(),
        to_account: "789".into(),
        amount,
        currency: "INR".into(),
    }
}

async fn balance(client: &mut Client, key: &str) -> u64 {
    common::gateway_balance(client, key).await.balance
}

/// What a flood's logins were answered with.
#[derive(Default)]
struct Answers {
    wrong_password: AtomicU64,
    refused: AtomicU64,
    refused_with_hint: AtomicU64,
    other: AtomicU64,
}

/// `connections` connections, each from its own address, each running
/// `calls` logins at once for unknown usernames with wrong passwords until
/// `stop`.
async fn flood(
    tls: &Path,
    gateway: SocketAddr,
    connections: usize,
    calls: usize,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for index in 0..connections {
        let client = client_from(tls, gateway, Some(loopback_source(index))).await;
        for call in 0..calls {
            let (mut client, stop, answers) =
                (client.clone(), Arc::clone(&stop), Arc::clone(&answers));
            tasks.push(tokio::spawn(async move {
                let mut attempt = 0;
                while !stop.load(Ordering::Relaxed) {
                    attempt += 1;
                    let username = format!("nobody-{index}-{call}-{attempt}");
                    let counter = match login(&mut client, &username, "wrong-password").await {
                        Err(status) if status.code() == Code::Unauthenticated => {
                            &answers.wrong_password
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            if status.metadata().get("retry-after").is_some() {
                                answers.refused_with_hint.fetch_add(1, Ordering::Relaxed);
                            }
                            &answers.refused
                        }
                        _ => &answers.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    tasks
}

fn rss_anon(process: &Process) -> u64 {
    proc_status_bytes(process.child.id(), "RssAnon").expect("the gateway's /proc status")
}

#[tokio::test]
async fn a_login_flood_from_many_connections_keeps_memory_within_the_configured_bound_and_payments_commit()
 {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let workers = 2;
    let cluster = start_cluster(
        &scratch,
        &[],
        &["--hash-workers", "2", "--hash-queue-max", "16"],
    );
    let mut alice = client(&scratch, &cluster).await;
    let key = login(&mut alice, "alice", "pass123").await.unwrap();
    let before = balance(&mut alice, &key).await;
    // The hashing memory is set aside at start and already in use.
    let idle = rss_anon(&cluster.gateway);
    assert!(
        idle >= workers * HASH_MEMORY_BYTES,
        "RssAnon {idle} holds {workers} hashers"
    );
    let connections = 200;
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Answers::default());
    let flooders = flood(
        &scratch.tls(),
        cluster.gateway.address,
        connections,
        3,
        Arc::clone(&stop),
        Arc::clone(&answers),
    )
    .await;
    // Sample the gateway's memory until the flood ends.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pid, sampling) = (cluster.gateway.child.id(), Arc::clone(&sampling));
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(proc_status_bytes(pid, "RssAnon").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    wait_until("the hashing queue to overflow", || {
        let answers = Arc::clone(&answers);
        async move { answers.refused.load(Ordering::Relaxed) > 0 }
    })
    .await;
    // A payment made in the middle of the flood commits.
    let paid = alice
        .pay(authorized(pay(1, 2_500), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, PaymentStatus::Committed as i32, "{paid:?}");
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    // Without a pool every concurrent login held 19 MiB (600 × 19 MiB
    // here); with it, hashing memory is fixed and the flood adds only
    // per-connection buffers.
    let bound = idle + connections as u64 * (256 << 10) + (32 << 20);
    assert!(
        peak <= bound,
        "peak RssAnon {peak} over the bound {bound} (idle {idle})"
    );
    assert_eq!(answers.other.load(Ordering::Relaxed), 0);
    assert!(answers.wrong_password.load(Ordering::Relaxed) > 0);
    assert_eq!(
        answers.refused_with_hint.load(Ordering::Relaxed),
        answers.refused.load(Ordering::Relaxed),
        "every refusal carries a retry-after hint"
    );
    // Still serving: alice logs in again and sees exactly her one payment.
    let key = login(&mut alice, "alice", "pass123").await.unwrap();
    assert_eq!(balance(&mut alice, &key).await, before - 2_500);
    drop(cluster.banks);
}

#[tokio::test]
async fn a_full_hashing_queue_refuses_logins_and_registrations_at_once_with_a_retry_hint() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let cluster = start_cluster(
        &scratch,
        &[],
        &["--hash-workers", "1", "--hash-queue-max", "1"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Answers::default());
    let flooders = flood(
        &scratch.tls(),
        cluster.gateway.address,
        20,
        2,
        Arc::clone(&stop),
        Arc::clone(&answers),
    )
    .await;
    wait_until("a refusal", || {
        let answers = Arc::clone(&answers);
        async move { answers.refused.load(Ordering::Relaxed) > 0 }
    })
    .await;
    // While the queue overflows, a registration is refused at once (it is
    // hashed before the bank opens an account).
    let mut carol = client(&scratch, &cluster).await;
    let mut registered = 0;
    let mut refused = None;
    for attempt in 0..50 {
        match carol
            .register(proto::RegisterRequest {
                username: format!("erin{attempt}"),
                password: "erin-secret".into(),
                bank: "bank_a".into(),
                initial_balance: 100,
            })
            .await
        {
            Ok(_) => registered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused = Some(status);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let refused = refused.expect("a registration was refused while the queue overflowed");
    assert!(
        refused.message().contains("busy checking passwords"),
        "{}",
        refused.message()
    );
    assert_eq!(refused.metadata().get("retry-after").unwrap(), "1");
    assert_eq!(answers.other.load(Ordering::Relaxed), 0);
    // The refused registration left no user behind: its username is free,
    // and registering it again makes a whole user with its own balance.
    let refused_name = format!("erin{registered}");
    carol
        .register(proto::RegisterRequest {
            username: refused_name.clone(),
            password: "erin-secret".into(),
            bank: "bank_a".into(),
            initial_balance: 100,
        })
        .await
        .unwrap();
    let key = login(&mut carol, &refused_name, "erin-secret")
        .await
        .unwrap();
    assert_eq!(balance(&mut carol, &key).await, 100);
    drop(cluster.banks);
}

#[tokio::test]
async fn logins_past_the_rate_of_an_address_or_of_a_username_are_refused_before_any_hash() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let cluster = start_cluster(
        &scratch,
        &[],
        &[
            "--login-rate-per-address",
            "5/1h",
            "--login-rate-per-username",
            "3/1h",
        ],
    );
    let mut here = client(&scratch, &cluster).await;
    for _ in 0..3 {
        let wrong = login(&mut here, "alice", "not-her-password")
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    // alice's fourth login is refused before her (right) password is
    // checked, and the answer says when to come back.
    let refused = login(&mut here, "alice", "pass123").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("this username"),
        "{}",
        refused.message()
    );
    let hint: u64 = refused
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&hint), "retry-after {hint}");
    // This address has spent 4 of its 5: bob's login is its last.
    login(&mut here, "bob", "hunter22").await.unwrap();
    let refused = login(&mut here, "carol", "secret77").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("this address"),
        "{}",
        refused.message()
    );
    // Another address is not held back by this one; alice still is, from
    // anywhere.
    let mut there = client_from(
        &scratch.tls(),
        cluster.gateway.address,
        Some(loopback_source(7)),
    )
    .await;
    login(&mut there, "carol", "secret77").await.unwrap();
    let refused = login(&mut there, "alice", "pass123").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    drop(cluster.banks);
}

#[tokio::test]
async fn a_saturated_gateway_sheds_new_payments_at_once_and_still_answers_known_ids() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let cluster = start_cluster(&scratch, &[], &["--payments-in-flight-max", "1"]);
    let gateway = cluster.gateway.address;
    let mut alice = client(&scratch, &cluster).await;
    let key = login(&mut alice, "alice", "pass123").await.unwrap();
    let before = balance(&mut alice, &key).await;
    let known = alice
        .pay(authorized(pay(1, 100), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(known.status, PaymentStatus::Committed as i32);
    // bank_b stops answering: payment 2 holds the one place in flight.
    cluster.banks[1].signal("STOP");
    let held = {
        let (mut alice, key) = (alice.clone(), key.clone());
        tokio::spawn(async move { alice.pay(authorized(pay(2, 200), &key)).await })
    };
    wait_until("payment 2 to be in flight", || {
        let (mut alice, key) = (alice.clone(), key.clone());
        async move {
            alice
                .get_payment(authorized(
                    proto::GetPaymentRequest { txn_id: txn_id(2) },
                    &key,
                ))
                .await
                .is_ok()
        }
    })
    .await;
    let shed = alice.pay(authorized(pay(3, 400), &key)).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert!(
        shed.message().contains("payments_in_flight_max"),
        "{}",
        shed.message()
    );
    assert_eq!(shed.metadata().get("retry-after").unwrap(), "1");
    let not_written = alice
        .get_payment(authorized(
            proto::GetPaymentRequest { txn_id: txn_id(3) },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(not_written.code(), Code::NotFound);
    // A known id is still answered, from the table.
    let repeat = alice
        .pay(authorized(pay(1, 100), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (repeat.status, repeat.replayed),
        (PaymentStatus::Committed as i32, true)
    );
    // The client's queue keeps a shed payment under its id.
    let cli = Cli {
        scratch: &scratch,
        gateway: format!("https://{gateway}"),
    };
    cli.ok(
        &["login", "--username", "alice", "--password-stdin"],
        "pass123\n",
    );
    let queued = cli.ok(
        &[
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "8.00",
            "--txn-id",
            &txn_id(4),
        ],
        "",
    );
    assert!(queued.contains("overloaded"), "{queued}");
    assert!(queued.contains("stays queued"), "{queued}");
    cluster.banks[1].signal("CONT");
    let held = held.await.unwrap().unwrap().into_inner();
    assert_eq!(held.status, PaymentStatus::Committed as i32);
    // Shed payments go through once there is room, each exactly once.
    let third = alice
        .pay(authorized(pay(3, 400), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.status, PaymentStatus::Committed as i32);
    let synced = cli.ok(&["sync"], "");
    assert!(synced.contains("committed"), "{synced}");
    assert_eq!(
        balance(&mut alice, &key).await,
        before - 100 - 200 - 400 - 800
    );
}

#[tokio::test]
async fn amounts_above_the_maximum_are_refused_at_the_gateway_and_at_the_bank_and_nothing_moves() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let cluster = start_cluster(&scratch, &["--amount-max", "50"], &["--amount-max", "100"]);
    let mut alice = client(&scratch, &cluster).await;
    let key = login(&mut alice, "alice", "pass123").await.unwrap();
    let before = balance(&mut alice, &key).await;
    for (txn, amount) in [(1, 10_001), (2, u64::MAX)] {
        let refused = alice
            .pay(authorized(pay(txn, amount), &key))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("maximum of 10000 minor units"),
            "{}",
            refused.message()
        );
    }
    // Within the gateway's maximum but above the bank's: the bank refuses
    // its leg, so the payment aborts with nothing held or moved.
    let aborted = alice
        .pay(authorized(pay(3, 6_000), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.status, PaymentStatus::Aborted as i32, "{aborted:?}");
    let mut bank = common::bank_client(&scratch.tls(), "gateway", cluster.banks[0].address).await;
    let refused = bank
        .prepare(proto::PrepareRequest {
            txn_id: txn_id(9),
            legs: vec![common::leg("123", proto::Direction::Debit, 5_001)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("maximum of 50.00"),
        "{}",
        refused.message()
    );
    let account = bank
        .get_account(proto::GetAccountRequest {
            account_no: "123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((account.balance, account.available), (before, before));
    // The bank's maximum itself goes through.
    let paid = alice
        .pay(authorized(pay(4, 5_000), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, PaymentStatus::Committed as i32);
    assert_eq!(balance(&mut alice, &key).await, before - 5_000);
}
