//! A real `bank` process killed with SIGKILL between its YES vote and the
//! decision: after a restart the hold is still there, the bank asks the
//! (here: stand-in) gateway for the decision, and applies it. A bank killed
//! while its log writes into reused segments keeps every commit. Also:
//! SIGTERM stops it cleanly, and its request log carries the fields
//! operators need.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use common::{
    Process, SETUP, Scratch, bank_args, bank_client, in_doubt_txns, leg, txn_id, wait_until,
};
use minipay::rpc::tls::{Role, TlsDir, require_role};
use minipay::tools::wal::reused_segments;
use minipay_proto::v1::{self as proto, Direction};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// A stand-in for the gateway's `Decisions` service: answers what the test
/// says, and counts the questions.
#[derive(Clone, Default)]
struct StandInGateway {
    decision: Arc<Mutex<Option<proto::Decision>>>,
    asked: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl proto::decisions_server::Decisions for StandInGateway {
    async fn get_decision(
        &self,
        _request: tonic::Request<proto::GetDecisionRequest>,
    ) -> Result<tonic::Response<proto::GetDecisionResponse>, tonic::Status> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        match *self.decision.lock().unwrap() {
            Some(decision) => Ok(tonic::Response::new(proto::GetDecisionResponse {
                decision: decision as i32,
            })),
            None => Err(tonic::Status::unavailable("not decided yet")),
        }
    }
}

async fn start_stand_in(scratch: &Scratch, gateway: StandInGateway) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = Server::builder()
        .tls_config(TlsDir::new(&scratch.tls()).server("gateway").unwrap())
        .unwrap()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            proto::decisions_server::DecisionsServer::new(gateway),
            require_role(Role::Bank),
        ));
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
    address
}

#[tokio::test]
async fn a_hold_survives_kill_9_and_resolves_through_get_decision() {
    let scratch = Scratch::new(&["bank_a"], SETUP);
    let gateway = StandInGateway::default();
    let gateway_address = start_stand_in(&scratch, gateway.clone()).await;
    let bank_binary = env!("CARGO_BIN_EXE_bank");
    let log = scratch.dir.path().join("bank_a.log");
    let args = bank_args(&scratch, "bank_a", Some(gateway_address));

    let mut bank = Process::start(bank_binary, &args, &log);
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    let legs = vec![
        leg("123", Direction::Debit, 25_000),
        leg("456", Direction::Credit, 25_000),
    ];
    let vote = client
        .prepare(proto::PrepareRequest {
            txn_id: txn_id(7),
            legs,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vote.vote, proto::Vote::Yes as i32);

    bank.kill_9();
    let mut bank = Process::start(bank_binary, &args, &log);
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    let alice = client
        .get_account(proto::GetAccountRequest {
            account_no: "123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (alice.balance, alice.available),
        (100_000, 75_000),
        "the hold survived"
    );
    let in_doubt = in_doubt_txns(&mut client).await;
    assert_eq!(in_doubt.len(), 1);

    // The bank keeps asking while the gateway has no answer; it never
    // decides alone.
    wait_until("the bank to ask twice", || {
        let asked = gateway.asked.load(Ordering::SeqCst);
        async move { asked >= 2 }
    })
    .await;
    assert_eq!(in_doubt_txns(&mut client).await.len(), 1);

    *gateway.decision.lock().unwrap() = Some(proto::Decision::Commit);
    wait_until("the decision to be applied", || {
        let mut client = client.clone();
        async move { in_doubt_txns(&mut client).await.is_empty() }
    })
    .await;
    let alice = client
        .get_account(proto::GetAccountRequest {
            account_no: "123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let bob = client
        .get_account(proto::GetAccountRequest {
            account_no: "456".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((alice.balance, alice.available), (75_000, 75_000));
    assert_eq!(bob.balance, 1_250 + 25_000);

    drop(client);
    let status = bank.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let log_text = std::fs::read_to_string(&log).unwrap();
    let prepare_line = log_text
        .lines()
        .find(|line| line.contains("/minipay.v1.Bank/Prepare") && line.contains("response"))
        .expect("a response line for Prepare");
    for field in [
        "peer=127.0.0.1:",
        &format!("txn_id={}", txn_id(7)),
        "amount=250.00 INR",
        "vote=YES",
        "code=\"OK\"",
        "latency_ms=",
    ] {
        assert!(
            prepare_line.contains(field),
            "{field} missing from: {prepare_line}"
        );
    }
    assert!(
        !log_text.contains("pass123") && !log_text.contains("PRIVATE KEY"),
        "no secrets in logs"
    );
}

#[tokio::test]
async fn a_bank_configured_by_toml_logs_json_and_bad_configuration_is_refused_at_start() {
    let scratch = Scratch::new(&["bank_b"], SETUP);
    let config = scratch.dir.path().join("bank.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"bank_b\"\nlisten = \"127.0.0.1:0\"\ndata-dir = \"{}\"\nsetup = \"{}\"\ntls-dir = \"{}\"\nin-doubt-timeout = \"3s\"\n",
            scratch.data("bank_b").display(),
            scratch.setup().display(),
            scratch.tls().display()
        ),
    )
    .unwrap();
    let log = scratch.dir.path().join("bank_b.log");
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    let mut bank = Process::start(env!("CARGO_BIN_EXE_bank"), &args, &log);
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    let carol = client
        .get_account(proto::GetAccountRequest {
            account_no: "789".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(carol.balance, 50_000);
    drop(client);
    assert!(bank.terminate().success());
    let responses: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
        .filter(|line: &serde_json::Value| line["fields"]["message"] == "response")
        .collect();
    let response = responses.first().expect("a response line");
    assert_eq!(response["fields"]["code"], "OK");
    assert_eq!(response["span"]["method"], "/minipay.v1.Bank/GetAccount");

    for (bad, message) in [
        (
            "in-doubt-timeout = \"0s\"\n",
            "--in-doubt-timeout must be positive",
        ),
        ("colour = \"blue\"\n", "unknown field"),
        (
            "wal-segment-size = 100000\n",
            "--wal-segment-size must be a multiple of 4096",
        ),
    ] {
        std::fs::write(
            &config,
            format!("name = \"bank_b\"\nlisten = \"127.0.0.1:0\"\n{bad}"),
        )
        .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_bank"))
            .args([
                "--config",
                &config.display().to_string(),
                "--data-dir",
                "/nonexistent",
                "--tls-dir",
                "/nonexistent",
            ])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{message} not in: {stderr}");
    }
}

/// With small segments and frequent snapshots the bank's log rotates,
/// checkpoints and reuses old segment files (stale records after the tail).
/// Killed while a reused segment is live, it recovers exactly the commits
/// it acknowledged.
#[tokio::test]
async fn a_bank_killed_while_writing_into_reused_segments_keeps_every_commit() {
    let scratch = Scratch::new(&["bank_a"], SETUP);
    let bank_binary = env!("CARGO_BIN_EXE_bank");
    let log = scratch.dir.path().join("bank_a.log");
    let mut args = bank_args(&scratch, "bank_a", None);
    args.extend(["--wal-segment-size", "65536", "--snapshot-every", "50"].map(str::to_owned));
    let wal_dir = scratch.data("bank_a").join("wal");

    let mut bank = Process::start(bank_binary, &args, &log);
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    // A payment of 0.01 INR from 123 to 456, prepared and committed: about
    // 180 bytes of log, so a 64 KiB segment holds a few hundred.
    let mut committed = 0u32;
    let mut reused_since = None;
    while reused_since.is_none_or(|at| committed < at + 100) {
        assert!(
            committed < 20_000,
            "no reused segment went live after {committed} commits"
        );
        let txn = txn_id(committed + 1);
        let vote = client
            .prepare(proto::PrepareRequest {
                txn_id: txn.clone(),
                legs: vec![
                    leg("123", Direction::Debit, 1),
                    leg("456", Direction::Credit, 1),
                ],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(vote.vote, proto::Vote::Yes as i32);
        client
            .commit(proto::CommitRequest { txn_id: txn })
            .await
            .unwrap();
        committed += 1;
        if reused_since.is_none()
            && committed.is_multiple_of(20)
            && reused_segments(&wal_dir).unwrap() > 0
        {
            reused_since = Some(committed);
        }
    }
    assert!(
        reused_segments(&wal_dir).unwrap() > 0,
        "still writing into a reused segment"
    );
    bank.kill_9();
    println!("killed after {committed} commits, a reused segment live since {reused_since:?}");

    let bank = Process::start(bank_binary, &args, &log);
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    let balance = |account: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .get_account(proto::GetAccountRequest {
                    account_no: account.into(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let alice = balance("123").await;
    let bob = balance("456").await;
    let moved = u64::from(committed);
    assert_eq!(
        (alice.balance, alice.available),
        (100_000 - moved, 100_000 - moved)
    );
    assert_eq!(bob.balance, 1_250 + moved);
    assert!(in_doubt_txns(&mut client).await.is_empty());
}
