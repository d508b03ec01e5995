//! Failures during 2PC with real processes: a bank that stops answering
//! during the prepare phase (the payment aborts after the timeout), a bank
//! killed after voting YES (the payment commits once it is back), and the
//! gateway killed after its decision (phase 2 completes after its restart).
//! Processes are frozen with SIGSTOP to open the exact window each case
//! needs, and killed with SIGKILL.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Process, SETUP, Scratch, authorized, bank_args, bank_client, channel, gateway_args,
    gateway_balance, txn_id, wait_until,
};
use minipay::harness::cluster::{VOTES_LOGGED, gateway_logged_yes};
use minipay_proto::v1::{self as proto, PaymentStatus};
use tonic::transport::Channel;

type Client = proto::gateway_client::GatewayClient<Channel>;

/// A bank restarted on the port it had, so the gateway's URL stays valid.
fn restart_bank(scratch: &Scratch, name: &str, address: SocketAddr) -> Process {
    let mut args = bank_args(scratch, name, None);
    let listen = args.iter().position(|arg| arg == "--listen").unwrap() + 1;
    args[listen] = address.to_string();
    Process::start(
        env!("CARGO_BIN_EXE_bank"),
        &args,
        &scratch.dir.path().join(format!("{name}.log")),
    )
}

/// A user's balance, available and unsettled count, through the gateway.
async fn balance(client: &mut Client, key: &str) -> (u64, u64, u32) {
    let found = gateway_balance(client, key).await;
    (found.balance, found.available, found.unsettled)
}

async fn account(scratch: &Scratch, bank: SocketAddr, number: &str) -> (u64, u64) {
    let mut client = bank_client(&scratch.tls(), "gateway", bank).await;
    let found = client
        .get_account(proto::GetAccountRequest {
            account_no: number.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (found.balance, found.available)
}

async fn in_doubt(scratch: &Scratch, bank: SocketAddr) -> usize {
    let Ok(Ok(channel)) = tokio::time::timeout(
        Duration::from_millis(500),
        tonic::transport::Endpoint::from_shared(format!("https://{bank}"))
            .unwrap()
            .tls_config(
                minipay::rpc::tls::TlsDir::new(&scratch.tls())
                    .client("gateway")
                    .unwrap(),
            )
            .unwrap()
            .connect(),
    )
    .await
    else {
        return usize::MAX;
    };
    let mut client = proto::bank_client::BankClient::new(channel);
    match tokio::time::timeout(
        Duration::from_millis(500),
        client.list_in_doubt(proto::ListInDoubtRequest {}),
    )
    .await
    {
        Ok(Ok(response)) => response.into_inner().txns.len(),
        _ => usize::MAX,
    }
}

struct Cluster {
    bank_a: Process,
    bank_b: Process,
    gateway: Process,
    client: Client,
    alice: String,
}

async fn start(scratch: &Scratch, prepare_timeout: &str) -> Cluster {
    let bank = env!("CARGO_BIN_EXE_bank");
    let bank_a = Process::start(
        bank,
        &bank_args(scratch, "bank_a", None),
        &scratch.dir.path().join("bank_a.log"),
    );
    let bank_b = Process::start(
        bank,
        &bank_args(scratch, "bank_b", None),
        &scratch.dir.path().join("bank_b.log"),
    );
    let args = gateway_args(
        scratch,
        &[("bank_a", bank_a.address), ("bank_b", bank_b.address)],
        prepare_timeout,
        "1s",
    );
    let gateway = Process::start_with_env(
        env!("CARGO_BIN_EXE_gateway"),
        &args,
        &scratch.dir.path().join("gateway.log"),
        &[("RUST_LOG", VOTES_LOGGED)],
    );
    let mut client = proto::gateway_client::GatewayClient::new(
        channel(&scratch.tls(), "client", gateway.address).await,
    );
    let alice = client
        .login(proto::LoginRequest {
            username: "alice".into(),
            password: "pass123".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_key;
    // Warm up the gateway's connections to both banks with a payment alice
    // cannot afford (both banks are asked; nothing moves), so that freezing
    // a bank later stalls a request in flight on an open connection rather
    // than a new connection's handshake (which has its own, shorter limit).
    let warm_up = client
        .pay(authorized(pay_to_carol(99, 99_999_999), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(warm_up.status, PaymentStatus::Aborted as i32);
    Cluster {
        bank_a,
        bank_b,
        gateway,
        client,
        alice,
    }
}

fn pay_to_carol(txn: u32, amount: u64) -> proto::PayRequest {
    proto::PayRequest {
        txn_id: txn_id(txn),
        to_bank: "bank_b".into(),
        to_account: "789".into(),
        amount,
        currency: "INR".into(),
    }
}

#[tokio::test]
async fn a_bank_that_stops_answering_during_prepare_aborts_the_payment_after_the_timeout() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let mut cluster = start(&scratch, "1s").await;
    cluster.bank_b.signal("STOP");
    let paid = cluster
        .client
        .pay(authorized(pay_to_carol(1, 2_500), &cluster.alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, PaymentStatus::Aborted as i32);
    assert_eq!(paid.reason, "bank bank_b did not answer within 1s");
    // bank_a's hold is released (the gateway's balance waits for bank_a to
    // apply the abort, not for the frozen bank_b); bank_b, once back, ends
    // with nothing in doubt.
    assert_eq!(
        balance(&mut cluster.client, &cluster.alice).await,
        (100_000, 100_000, 0)
    );
    cluster.bank_b.signal("CONT");
    wait_until("bank_b to settle with nothing in doubt", || {
        in_doubt_is(&scratch, cluster.bank_b.address, 0)
    })
    .await;
    assert_eq!(
        account(&scratch, cluster.bank_b.address, "789").await,
        (50_000, 50_000)
    );
}

/// Whether the gateway has logged `bank`'s YES for payment `txn`.
fn gateway_received_yes(scratch: &Scratch, bank: &str, txn: u32) -> bool {
    gateway_logged_yes(&scratch.dir.path().join("gateway.log"), bank, &txn_id(txn))
}

async fn in_doubt_is(scratch: &Scratch, bank: SocketAddr, expected: usize) -> bool {
    in_doubt(scratch, bank).await == expected
}

#[tokio::test]
async fn a_bank_killed_after_voting_yes_commits_the_payment_once_it_is_back() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let mut cluster = start(&scratch, "10s").await;
    let b_address = cluster.bank_b.address;
    // Hold the decision back by freezing bank_a; bank_b votes YES meanwhile.
    cluster.bank_a.signal("STOP");
    let mut client = cluster.client.clone();
    let alice = cluster.alice.clone();
    let payment =
        tokio::spawn(async move { client.pay(authorized(pay_to_carol(2, 2_500), &alice)).await });
    wait_until("the gateway to receive bank_b's YES", || {
        std::future::ready(gateway_received_yes(&scratch, "bank_b", 2))
    })
    .await;
    cluster.bank_b.kill_9();
    cluster.bank_a.signal("CONT");
    let paid = payment.await.unwrap().unwrap().into_inner();
    assert_eq!(
        paid.status,
        PaymentStatus::Committed as i32,
        "all voted YES: the decision is COMMIT"
    );
    let _bank_b = restart_bank(&scratch, "bank_b", b_address);
    wait_until("bank_b to apply the commit", || async {
        account(&scratch, b_address, "789").await == (52_500, 52_500)
    })
    .await;
    assert_eq!(
        balance(&mut cluster.client, &cluster.alice).await,
        (97_500, 97_500, 0)
    );
    assert_eq!(in_doubt(&scratch, b_address).await, 0);
}

#[tokio::test]
async fn the_gateway_killed_after_its_decision_completes_phase_2_after_restart() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let mut cluster = start(&scratch, "10s").await;
    let (a_address, b_address) = (cluster.bank_a.address, cluster.bank_b.address);
    // bank_b votes YES and is then frozen, so its commit cannot land.
    cluster.bank_a.signal("STOP");
    let mut client = cluster.client.clone();
    let alice = cluster.alice.clone();
    let payment =
        tokio::spawn(async move { client.pay(authorized(pay_to_carol(3, 2_500), &alice)).await });
    wait_until("the gateway to receive bank_b's YES", || {
        std::future::ready(gateway_received_yes(&scratch, "bank_b", 3))
    })
    .await;
    cluster.bank_b.signal("STOP");
    cluster.bank_a.signal("CONT");
    // Answered at the durable decision, before the frozen bank_b applied it.
    let paid = payment.await.unwrap().unwrap().into_inner();
    assert_eq!(
        (paid.status, paid.settled),
        (PaymentStatus::Committed as i32, false)
    );
    wait_until("bank_a to commit", || async {
        account(&scratch, a_address, "123").await == (97_500, 97_500)
    })
    .await;
    cluster.gateway.kill_9();
    cluster.bank_b.signal("CONT");
    assert_eq!(
        in_doubt(&scratch, b_address).await,
        1,
        "bank_b still holds the YES"
    );
    let args = gateway_args(
        &scratch,
        &[("bank_a", a_address), ("bank_b", b_address)],
        "10s",
        "1s",
    );
    let gateway = Process::start(
        env!("CARGO_BIN_EXE_gateway"),
        &args,
        &scratch.dir.path().join("gateway.log"),
    );
    wait_until("phase 2 to reach bank_b", || async {
        account(&scratch, b_address, "789").await == (52_500, 52_500)
    })
    .await;
    let mut client = proto::gateway_client::GatewayClient::new(
        channel(&scratch.tls(), "client", gateway.address).await,
    );
    let alice = client
        .login(proto::LoginRequest {
            username: "alice".into(),
            password: "pass123".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_key;
    let stored = client
        .get_payment(authorized(
            proto::GetPaymentRequest { txn_id: txn_id(3) },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.status, PaymentStatus::Committed as i32);
}
