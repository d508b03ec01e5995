//! End to end over real processes and real mTLS: two `bank` processes and a
//! `gateway` process on 127.0.0.1. Cross-bank and same-bank payments,
//! insufficient funds, a retried txn id that pays once, sessions and
//! authorization, and the gateway's refusals.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{
    Process, SETUP, Scratch, authorized, bank_args, channel, gateway_args, login, txn_id,
};
use minipay_proto::v1::{self as proto, PaymentStatus};
use tonic::Code;
use tonic::transport::Channel;

type Client = proto::gateway_client::GatewayClient<Channel>;

/// Balance and available. Read right after an answered payment, both
/// already show it: the gateway answers `Pay` at its durable decision, and
/// `GetBalance` waits for the account's bank to apply decided payments.
async fn balance(client: &mut Client, key: &str) -> (u64, u64) {
    let response = common::gateway_balance(client, key).await;
    assert_eq!(
        response.unsettled, 0,
        "every bank is up: nothing left unsettled"
    );
    (response.balance, response.available)
}

fn pay(txn: u32, to_bank: &str, to_account: &str, amount: u64) -> proto::PayRequest {
    proto::PayRequest {
        txn_id: txn_id(txn),
        to_bank: to_bank.into(),
        to_account: to_account.into(),
        amount,
        currency: "INR".into(),
    }
}

struct Cluster {
    _banks: Vec<Process>,
    gateway: Process,
}

fn start_cluster(scratch: &Scratch) -> Cluster {
    let bank_binary = env!("CARGO_BIN_EXE_bank");
    // Banks first (their gateway address is only for in-doubt questions and
    // is not needed here), then the gateway pointing at them.
    let bank_a = Process::start(
        bank_binary,
        &bank_args(scratch, "bank_a", None),
        &scratch.dir.path().join("bank_a.log"),
    );
    let bank_b = Process::start(
        bank_binary,
        &bank_args(scratch, "bank_b", None),
        &scratch.dir.path().join("bank_b.log"),
    );
    let gateway = Process::start(
        env!("CARGO_BIN_EXE_gateway"),
        &gateway_args(
            scratch,
            &[("bank_a", bank_a.address), ("bank_b", bank_b.address)],
            "2s",
            "2s",
        ),
        &scratch.dir.path().join("gateway.log"),
    );
    Cluster {
        _banks: vec![bank_a, bank_b],
        gateway,
    }
}

async fn client(tls: &Path, address: SocketAddr) -> Client {
    proto::gateway_client::GatewayClient::new(channel(tls, "client", address).await)
}

#[tokio::test]
async fn payments_across_and_within_banks_are_exactly_once_and_refusals_are_precise() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let cluster = start_cluster(&scratch);
    let mut client = client(&scratch.tls(), cluster.gateway.address).await;
    let alice = login(&mut client, "alice", "pass123").await;
    let carol = login(&mut client, "carol", "secret77").await;
    let bob = login(&mut client, "bob", "hunter22").await;
    assert_eq!(balance(&mut client, &alice).await, (100_000, 100_000));

    // Cross-bank: alice@bank_a -> carol@bank_b.
    let paid = client
        .pay(authorized(pay(1, "bank_b", "789", 2_500), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (paid.status, paid.replayed),
        (PaymentStatus::Committed as i32, false)
    );
    assert_eq!(balance(&mut client, &alice).await, (97_500, 97_500));
    assert_eq!(balance(&mut client, &carol).await, (52_500, 52_500));
    // The same txn id again: the stored outcome, paid once.
    let again = client
        .pay(authorized(pay(1, "bank_b", "789", 2_500), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.status, again.replayed),
        (PaymentStatus::Committed as i32, true)
    );
    assert_eq!(balance(&mut client, &alice).await, (97_500, 97_500));
    // Same bank: alice -> bob, both at bank_a.
    let paid = client
        .pay(authorized(pay(2, "bank_a", "456", 1_000), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, PaymentStatus::Committed as i32);
    assert_eq!(balance(&mut client, &bob).await, (2_250, 2_250));
    // Insufficient funds: bob has 22.50.
    let refused = client
        .pay(authorized(pay(3, "bank_b", "789", 5_000), &bob))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (
            PaymentStatus::Aborted as i32,
            "insufficient funds in account 456"
        )
    );
    assert_eq!(balance(&mut client, &bob).await, (2_250, 2_250));
    // An unknown destination account: the bank votes NO.
    let unknown = client
        .pay(authorized(pay(4, "bank_b", "000", 100), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (unknown.status, unknown.reason.as_str()),
        (PaymentStatus::Aborted as i32, "unknown account 000")
    );
    // GetPayment: own payments only.
    let fetched = client
        .get_payment(authorized(
            proto::GetPaymentRequest { txn_id: txn_id(1) },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (fetched.status, fetched.amount),
        (PaymentStatus::Committed as i32, 2_500)
    );
    let foreign = client
        .get_payment(authorized(
            proto::GetPaymentRequest { txn_id: txn_id(1) },
            &carol,
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    let before = balance(&mut client, &alice).await;
    let refusals: Vec<(&str, Code, tonic::Status)> = vec![
        (
            "zero amount",
            Code::InvalidArgument,
            client
                .pay(authorized(pay(10, "bank_b", "789", 0), &alice))
                .await
                .unwrap_err(),
        ),
        (
            "wrong currency",
            Code::InvalidArgument,
            client
                .pay(authorized(
                    proto::PayRequest {
                        currency: "USD".into(),
                        ..pay(11, "bank_b", "789", 5)
                    },
                    &alice,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "unknown bank",
            Code::NotFound,
            client
                .pay(authorized(pay(12, "bank_z", "789", 5), &alice))
                .await
                .unwrap_err(),
        ),
        (
            "paying yourself",
            Code::InvalidArgument,
            client
                .pay(authorized(pay(13, "bank_a", "123", 5), &alice))
                .await
                .unwrap_err(),
        ),
        (
            "malformed txn id",
            Code::InvalidArgument,
            client
                .pay(authorized(
                    proto::PayRequest {
                        txn_id: "123".into(),
                        ..pay(14, "bank_b", "789", 5)
                    },
                    &alice,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "empty txn id",
            Code::InvalidArgument,
            client
                .pay(authorized(
                    proto::PayRequest {
                        txn_id: String::new(),
                        ..pay(14, "bank_b", "789", 5)
                    },
                    &alice,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "over-long account",
            Code::InvalidArgument,
            client
                .pay(authorized(pay(15, "bank_b", &"7".repeat(200), 5), &alice))
                .await
                .unwrap_err(),
        ),
        (
            "txn id reused with other parameters",
            Code::InvalidArgument,
            client
                .pay(authorized(pay(1, "bank_b", "789", 9_999), &alice))
                .await
                .unwrap_err(),
        ),
        (
            "txn id reused by another user",
            Code::AlreadyExists,
            client
                .pay(authorized(pay(1, "bank_b", "789", 2_500), &bob))
                .await
                .unwrap_err(),
        ),
        (
            "no session",
            Code::Unauthenticated,
            client
                .get_balance(proto::GetBalanceRequest {})
                .await
                .unwrap_err(),
        ),
        (
            "forged session",
            Code::Unauthenticated,
            client
                .get_balance(authorized(proto::GetBalanceRequest {}, &"ab".repeat(32)))
                .await
                .unwrap_err(),
        ),
        (
            "wrong password",
            Code::Unauthenticated,
            client
                .login(proto::LoginRequest {
                    username: "alice".into(),
                    password: "nope-nope".into(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "unknown user",
            Code::Unauthenticated,
            client
                .login(proto::LoginRequest {
                    username: "mallory".into(),
                    password: "nope-nope".into(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "duplicate username",
            Code::AlreadyExists,
            client
                .register(proto::RegisterRequest {
                    username: "alice".into(),
                    password: "another-1".into(),
                    bank: "bank_a".into(),
                    initial_balance: 1,
                })
                .await
                .unwrap_err(),
        ),
    ];
    for (what, expected, status) in refusals {
        assert_eq!(status.code(), expected, "{what}: {status:?}");
    }
    assert_eq!(balance(&mut client, &alice).await, before, "nothing moved");
    assert_eq!(
        status_of_wrong_password_message(&mut client).await,
        status_of_unknown_user_message(&mut client).await
    );

    // Register, log in, pay; log out ends the session.
    let registered = client
        .register(proto::RegisterRequest {
            username: "erin".into(),
            password: "erin-secret".into(),
            bank: "bank_b".into(),
            initial_balance: 3_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.bank, "bank_b");
    let erin = login(&mut client, "erin", "erin-secret").await;
    assert_eq!(balance(&mut client, &erin).await, (3_000, 3_000));
    client
        .logout(authorized(proto::LogoutRequest {}, &erin))
        .await
        .unwrap();
    assert_eq!(
        client
            .get_balance(authorized(proto::GetBalanceRequest {}, &erin))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // A bank certificate may not use the client service; a client may not ask for decisions.
    let mut as_bank = proto::gateway_client::GatewayClient::new(
        channel(&scratch.tls(), "bank_a", cluster.gateway.address).await,
    );
    assert_eq!(
        as_bank
            .login(proto::LoginRequest {
                username: "alice".into(),
                password: "pass123".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut decisions = proto::decisions_client::DecisionsClient::new(
        channel(&scratch.tls(), "client", cluster.gateway.address).await,
    );
    assert_eq!(
        decisions
            .get_decision(proto::GetDecisionRequest { txn_id: txn_id(1) })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut decisions = proto::decisions_client::DecisionsClient::new(
        channel(&scratch.tls(), "bank_a", cluster.gateway.address).await,
    );
    let decided = decisions
        .get_decision(proto::GetDecisionRequest { txn_id: txn_id(1) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.decision, proto::Decision::Commit as i32);

    // No client certificate: refused at the first call. Plaintext: no answer.
    let ca = tonic::transport::Certificate::from_pem(
        std::fs::read(scratch.tls().join("ca.pem")).unwrap(),
    );
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let channel_without_cert =
        tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.gateway.address))
            .unwrap()
            .tls_config(anonymous)
            .unwrap()
            .connect_lazy();
    let mut anonymous = proto::gateway_client::GatewayClient::new(channel_without_cert);
    assert!(
        anonymous
            .login(proto::LoginRequest {
                username: "alice".into(),
                password: "pass123".into()
            })
            .await
            .is_err()
    );
    let plaintext =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.gateway.address))
            .unwrap()
            .timeout(std::time::Duration::from_secs(2))
            .connect_lazy();
    let mut plaintext = proto::gateway_client::GatewayClient::new(plaintext);
    assert!(
        plaintext
            .login(proto::LoginRequest {
                username: "alice".into(),
                password: "pass123".into()
            })
            .await
            .is_err()
    );
    // The gateway still serves.
    assert_eq!(balance(&mut client, &alice).await, before);

    let log = std::fs::read_to_string(scratch.dir.path().join("gateway.log")).unwrap();
    assert!(
        log.lines()
            .any(|line| line.contains("/minipay.v1.Gateway/Pay")
                && line.contains("retry=true")
                && line.contains("user=alice"))
    );
    for secret in [
        "pass123",
        "hunter22",
        "secret77",
        "erin-secret",
        &alice,
        &carol,
    ] {
        assert!(!log.contains(secret), "a secret reached the gateway log");
    }
}

async fn status_of_wrong_password_message(client: &mut Client) -> String {
    client
        .login(proto::LoginRequest {
            username: "carol".into(),
            password: "wrong-1".into(),
        })
        .await
        .unwrap_err()
        .message()
        .to_owned()
}

async fn status_of_unknown_user_message(client: &mut Client) -> String {
    client
        .login(proto::LoginRequest {
            username: "nobody".into(),
            password: "wrong-1".into(),
        })
        .await
        .unwrap_err()
        .message()
        .to_owned()
}

#[test]
fn the_gateway_reads_a_toml_config_and_refuses_bad_configuration_at_start() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let config = scratch.dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\nsetup = \"{}\"\ntls-dir = \"{}\"\nbanks = [\"bank_a=https://127.0.0.1:1\", \"bank_b=https://127.0.0.1:2\"]\nprepare-timeout = \"3s\"\nsession-idle = \"10m\"\n",
            scratch.data("gateway").display(),
            scratch.setup().display(),
            scratch.tls().display()
        ),
    )
    .unwrap();
    // Both banks are down: the gateway still starts and serves.
    let log = scratch.dir.path().join("gateway.log");
    let mut gateway = Process::start(
        env!("CARGO_BIN_EXE_gateway"),
        &["--config".into(), config.display().to_string()],
        &log,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = client(&scratch.tls(), gateway.address).await;
        let key = login(&mut client, "alice", "pass123").await;
        let status = client
            .get_balance(authorized(proto::GetBalanceRequest {}, &key))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    });
    assert!(gateway.terminate().success());

    for (flags, message) in [
        (vec!["--retention", "1h"], "--retention must be at least 1d"),
        (
            vec!["--bank", "bank_a=http://127.0.0.1:1"],
            "the URL must be https://",
        ),
        (vec!["--bank", "bank_a"], "must be NAME=URL"),
        (
            vec!["--login-failures-max", "0"],
            "--login-failures-max must be at least 1",
        ),
        (vec!["--prepare-timeout", "soon"], "is not a duration"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--config", &config.display().to_string()])
            .args(&flags)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(message),
            "{flags:?}: {message} not in {stderr}"
        );
    }
}

#[tokio::test]
async fn minipay_bank_and_minipay_gateway_run_the_same_servers_as_the_binaries() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let minipay = env!("CARGO_BIN_EXE_minipay");
    let with = |command: &str, args: Vec<String>| -> Vec<String> {
        std::iter::once(command.to_owned()).chain(args).collect()
    };
    let bank_a = Process::start(
        minipay,
        &with("bank", bank_args(&scratch, "bank_a", None)),
        &scratch.dir.path().join("a.log"),
    );
    let bank_b = Process::start(
        minipay,
        &with("bank", bank_args(&scratch, "bank_b", None)),
        &scratch.dir.path().join("b.log"),
    );
    let banks = [("bank_a", bank_a.address), ("bank_b", bank_b.address)];
    let gateway = Process::start(
        minipay,
        &with("gateway", gateway_args(&scratch, &banks, "2s", "2s")),
        &scratch.dir.path().join("g.log"),
    );
    let mut client = client(&scratch.tls(), gateway.address).await;
    let alice = login(&mut client, "alice", "pass123").await;
    let paid = client
        .pay(authorized(pay(1, "bank_b", "789", 100), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, PaymentStatus::Committed as i32);
    assert_eq!(balance(&mut client, &alice).await, (99_900, 99_900));
}
