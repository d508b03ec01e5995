//! The bank's gRPC service in-process over real mutual TLS on 127.0.0.1:
//! every RPC, every bad input (each with its precise status, nothing
//! changed, the server still serving), and who may connect.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{SETUP, Scratch, bank_client, in_doubt_txns, leg, txn_id};
use minipay::servers::bank::node::{self as bank_node, BankConfig, Stopped};
use minipay_proto::v1::{self as proto, Direction};
use tokio::sync::oneshot;
use tonic::Code;

struct Running {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<Stopped>>,
}

impl Running {
    async fn stop(mut self) -> Stopped {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap()
    }
}

async fn start(scratch: &Scratch) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = BankConfig {
        name: "bank_a".into(),
        listen: address,
        data_dir: scratch.data("bank_a"),
        setup: Some(scratch.setup()),
        tls_dir: scratch.tls(),
        gateway: None,
        in_doubt_timeout: Duration::from_secs(10),
        currency: "INR".into(),
        snapshot_every: 1000,
        wal_segment_size: wal::Options::default().segment_size,
        amount_max: ledger::bank::AMOUNT_MAX_DEFAULT.0,
        transport: minipay::servers::transport_limits::TransportLimits::from_settings(
            None, None, None,
        )
        .unwrap(),
        operations: Default::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bank_node::run(config, Some(listener), async move {
        let _ = stopped.await;
    }));
    // The port is open from the start; the ledger serves once recovered.
    let health = tonic_health::pb::health_client::HealthClient::new(
        common::channel(&scratch.tls(), "gateway", address).await,
    );
    common::wait_until("the bank reports SERVING", || {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok_and(|answer| {
                    answer.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                })
        }
    })
    .await;
    Running {
        address,
        stop: Some(stop),
        task,
    }
}

async fn balance(
    client: &mut proto::bank_client::BankClient<tonic::transport::Channel>,
    account: &str,
) -> (u64, u64) {
    let response = client
        .get_account(proto::GetAccountRequest {
            account_no: account.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (response.balance, response.available)
}

#[tokio::test]
async fn every_rpc_works_for_the_gateway_over_mtls() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let bank = start(&scratch).await;
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;

    let account = client
        .get_account(proto::GetAccountRequest {
            account_no: "123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            account.owner.as_str(),
            account.balance,
            account.currency.as_str()
        ),
        ("alice", 100_000, "INR")
    );
    assert_eq!(balance(&mut client, "456").await, (1_250, 1_250));

    let opened = client
        .open_account(proto::OpenAccountRequest {
            owner: "dave".into(),
            initial_balance: 700,
            account_no: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance(&mut client, &opened.account_no).await, (700, 700));

    let legs = vec![
        leg("123", Direction::Debit, 2_500),
        leg("456", Direction::Credit, 2_500),
    ];
    let vote = client
        .prepare(proto::PrepareRequest {
            txn_id: txn_id(1),
            legs: legs.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vote.vote, proto::Vote::Yes as i32);
    assert_eq!(balance(&mut client, "123").await, (100_000, 97_500));
    let in_doubt = in_doubt_txns(&mut client).await;
    assert_eq!(in_doubt.len(), 1);
    assert_eq!(in_doubt[0].txn_id, txn_id(1));
    assert_eq!(in_doubt[0].legs, legs);

    client
        .commit(proto::CommitRequest { txn_id: txn_id(1) })
        .await
        .unwrap();
    assert_eq!(balance(&mut client, "123").await, (97_500, 97_500));
    assert_eq!(balance(&mut client, "456").await, (3_750, 3_750));

    let vote = client
        .prepare(proto::PrepareRequest {
            txn_id: txn_id(2),
            legs: vec![leg("456", Direction::Debit, 1_000_000)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vote.vote, proto::Vote::No as i32);
    assert_eq!(vote.reason, "insufficient funds in account 456");

    client
        .prepare(proto::PrepareRequest {
            txn_id: txn_id(3),
            legs: vec![leg("123", Direction::Debit, 100)],
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .abort(proto::AbortRequest { txn_id: txn_id(3) })
        .await
        .unwrap();
    assert_eq!(balance(&mut client, "123").await, (97_500, 97_500));
    assert!(in_doubt_txns(&mut client).await.is_empty());

    // What the bank holds per txn id, in the order asked: committed with its
    // legs, voted NO, aborted after a YES (legs kept), never seen.
    client
        .prepare(proto::PrepareRequest {
            txn_id: txn_id(4),
            legs: vec![leg("456", Direction::Credit, 5)],
            ..Default::default()
        })
        .await
        .unwrap();
    let asked = [txn_id(1), txn_id(2), txn_id(3), txn_id(9), txn_id(4)];
    let txns = client
        .get_transactions(proto::GetTransactionsRequest {
            txn_ids: asked.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .txns;
    let seen: Vec<(&str, i32, usize)> = txns
        .iter()
        .map(|txn| (txn.txn_id.as_str(), txn.status, txn.legs.len()))
        .collect();
    use proto::TxnStatus::{TxnPending, TxnPosted, TxnUnknown, TxnVoided};
    assert_eq!(
        seen,
        vec![
            (asked[0].as_str(), TxnPosted as i32, 2),
            (asked[1].as_str(), TxnVoided as i32, 0),
            (asked[2].as_str(), TxnVoided as i32, 1),
            (asked[3].as_str(), TxnUnknown as i32, 0),
            (asked[4].as_str(), TxnPending as i32, 1),
        ]
    );
    assert_eq!(txns[0].legs, legs);
    assert_eq!(txns[1].reason, "insufficient funds in account 456");
    let malformed = client
        .get_transactions(proto::GetTransactionsRequest {
            txn_ids: vec![txn_id(1), "not-a-uuid".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    let too_many = client
        .get_transactions(proto::GetTransactionsRequest {
            txn_ids: vec![txn_id(1); 1025],
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert_eq!(bank.stop().await, Stopped::Shutdown);
}

fn item(code: Code, message: &str) -> proto::ItemStatus {
    proto::ItemStatus {
        code: code as i32,
        message: message.into(),
    }
}

fn ok() -> proto::ItemStatus {
    item(Code::Ok, "")
}

#[tokio::test]
async fn a_batch_answers_each_item_as_its_single_call_would() {
    let scratch = Scratch::new(&["bank_a"], SETUP);
    let bank = start(&scratch).await;
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    let transfer = |txn: u32, amount: u64| proto::PrepareRequest {
        txn_id: txn_id(txn),
        legs: vec![
            leg("123", Direction::Debit, amount),
            leg("456", Direction::Credit, amount),
        ],
        ..Default::default()
    };
    let prepares = vec![
        transfer(11, 1_000),
        transfer(12, 10_000_000),
        proto::PrepareRequest {
            txn_id: "not-a-txn-id".into(),
            legs: vec![leg("123", Direction::Debit, 5)],
            ..Default::default()
        },
        transfer(14, 2_000),
    ];
    let outcomes = client
        .prepare_batch(proto::PrepareBatchRequest { prepares })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    let statuses: Vec<_> = outcomes
        .iter()
        .map(|outcome| outcome.status.clone())
        .collect();
    assert_eq!(statuses[0], Some(ok()));
    assert_eq!(statuses[1], Some(ok()));
    assert_eq!(statuses[3], Some(ok()));
    let bad = statuses[2].clone().unwrap();
    assert_eq!(bad.code, Code::InvalidArgument as i32, "{bad:?}");
    let votes: Vec<_> = outcomes
        .iter()
        .map(|outcome| outcome.vote.clone().map(|vote| (vote.vote, vote.reason)))
        .collect();
    assert_eq!(votes[0], Some((proto::Vote::Yes as i32, String::new())));
    assert_eq!(
        votes[1],
        Some((
            proto::Vote::No as i32,
            "insufficient funds in account 123".into()
        ))
    );
    assert_eq!(votes[2], None);
    assert_eq!(votes[3], Some((proto::Vote::Yes as i32, String::new())));
    assert_eq!(balance(&mut client, "123").await, (100_000, 97_000));

    let finish = |txn: u32, decision: proto::Decision| proto::Finish {
        txn_id: txn_id(txn),
        decision: decision as i32,
        ..Default::default()
    };
    let finishes = vec![
        finish(11, proto::Decision::Commit),
        finish(14, proto::Decision::Abort),
        finish(15, proto::Decision::Commit),
        finish(12, proto::Decision::Unspecified),
    ];
    let outcomes = client
        .finish_batch(proto::FinishBatchRequest { finishes })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    assert_eq!(outcomes[0], ok());
    assert_eq!(outcomes[1], ok());
    assert_eq!(
        outcomes[2].code,
        Code::FailedPrecondition as i32,
        "commit of a txn never prepared: {:?}",
        outcomes[2]
    );
    assert_eq!(
        outcomes[3],
        item(Code::InvalidArgument, "the decision is missing")
    );
    assert_eq!(outcomes.len(), 4);
    assert_eq!(balance(&mut client, "123").await, (99_000, 99_000));
    assert_eq!(balance(&mut client, "456").await, (2_250, 2_250));
    assert!(in_doubt_txns(&mut client).await.is_empty());

    // A repeated finish is acknowledged again and moves nothing.
    let outcomes = client
        .finish_batch(proto::FinishBatchRequest {
            finishes: vec![finish(11, proto::Decision::Commit)],
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    assert_eq!(outcomes, vec![ok()]);
    assert_eq!(balance(&mut client, "123").await, (99_000, 99_000));

    // Whole-batch bad input: empty, or more items than allowed.
    let empty = client
        .prepare_batch(proto::PrepareBatchRequest { prepares: vec![] })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let too_many = client
        .finish_batch(proto::FinishBatchRequest {
            finishes: (0..=minipay::servers::bank::service::BATCH_LEN_MAX as u32)
                .map(|txn| finish(1_000 + txn, proto::Decision::Abort))
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many.message().contains("at most"),
        "{}",
        too_many.message()
    );
    assert_eq!(balance(&mut client, "123").await, (99_000, 99_000));
    assert_eq!(bank.stop().await, Stopped::Shutdown);
}

/// The gateway's bank client under a burst: more queued prepares than fit
/// in one message the bank accepts. Each still gets its own vote.
#[tokio::test]
async fn a_burst_of_prepares_larger_than_one_message_gets_every_vote() {
    use coordinator::{Participant, Vote};
    use money::{AccountNo, Amount, BankName, Direction as Way, Leg, TxnId};
    let bank_a = BankName::parse("bank_a").unwrap();
    let scratch = Scratch::new(&["bank_a"], SETUP);
    let bank = start(&scratch).await;
    let clients = minipay::servers::gateway::bank_clients::BankClients::new(
        &[(bank_a.clone(), format!("https://{}", bank.address))],
        &minipay::rpc::tls::TlsDir::new(&scratch.tls()),
        minipay::servers::gateway::node::BANK_QUEUE_MAX_DEFAULT,
    )
    .unwrap();
    // Unknown 64-character accounts: every vote is NO, and every prepare is
    // as large as a prepare can be with one leg.
    let payments = 2_000u32;
    let votes: Vec<_> = (0..payments)
        .map(|index| {
            let clients = clients.clone();
            let bank_a = bank_a.clone();
            tokio::spawn(async move {
                let txn = TxnId(
                    *uuid::Uuid::parse_str(&txn_id(10_000 + index))
                        .unwrap()
                        .as_bytes(),
                );
                let leg = Leg {
                    account: AccountNo::parse(&format!("{index:0>64}")).unwrap(),
                    direction: Way::Credit,
                    amount: Amount(1),
                };
                clients
                    .prepare(&bank_a, txn, vec![leg], Duration::from_secs(30))
                    .await
            })
        })
        .collect();
    for vote in votes {
        match vote.await.unwrap() {
            Ok(Vote::No { reason }) => assert!(reason.contains("unknown account"), "{reason}"),
            other => panic!("every prepare gets its own NO vote, not {other:?}"),
        }
    }
    drop(clients);
    assert_eq!(bank.stop().await, Stopped::Shutdown);
}

#[tokio::test]
async fn bad_input_gets_a_precise_status_and_changes_nothing() {
    let scratch = Scratch::new(&["bank_a"], SETUP);
    let bank = start(&scratch).await;
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    let prepare = |txn: String, legs: Vec<proto::Leg>| proto::PrepareRequest {
        txn_id: txn,
        legs,
        ..Default::default()
    };
    client
        .prepare(prepare(txn_id(1), vec![leg("123", Direction::Debit, 10)]))
        .await
        .unwrap();
    let before = (
        balance(&mut client, "123").await,
        balance(&mut client, "456").await,
    );

    let cases: Vec<(&str, Code, tonic::Status)> = vec![
        (
            "unknown account",
            Code::NotFound,
            client
                .get_account(proto::GetAccountRequest {
                    account_no: "999".into(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "missing account",
            Code::InvalidArgument,
            client
                .get_account(proto::GetAccountRequest {
                    account_no: String::new(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "zero amount",
            Code::InvalidArgument,
            client
                .prepare(prepare(txn_id(2), vec![leg("123", Direction::Debit, 0)]))
                .await
                .unwrap_err(),
        ),
        (
            "no legs",
            Code::InvalidArgument,
            client
                .prepare(prepare(txn_id(2), vec![]))
                .await
                .unwrap_err(),
        ),
        (
            "no direction",
            Code::InvalidArgument,
            client
                .prepare(prepare(
                    txn_id(2),
                    vec![leg("123", Direction::Unspecified, 5)],
                ))
                .await
                .unwrap_err(),
        ),
        (
            "malformed txn id",
            Code::InvalidArgument,
            client
                .prepare(prepare(
                    "not-a-uuid".into(),
                    vec![leg("123", Direction::Debit, 5)],
                ))
                .await
                .unwrap_err(),
        ),
        (
            "empty txn id",
            Code::InvalidArgument,
            client
                .commit(proto::CommitRequest {
                    txn_id: String::new(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "unknown txn commit",
            Code::FailedPrecondition,
            client
                .commit(proto::CommitRequest { txn_id: txn_id(99) })
                .await
                .unwrap_err(),
        ),
        (
            "txn id reused with other legs",
            Code::AlreadyExists,
            client
                .prepare(prepare(txn_id(1), vec![leg("123", Direction::Debit, 11)]))
                .await
                .unwrap_err(),
        ),
        (
            "duplicate account number",
            Code::AlreadyExists,
            client
                .open_account(proto::OpenAccountRequest {
                    owner: "x".into(),
                    initial_balance: 1,
                    account_no: "123".into(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "missing owner",
            Code::InvalidArgument,
            client
                .open_account(proto::OpenAccountRequest {
                    owner: String::new(),
                    initial_balance: 1,
                    account_no: String::new(),
                })
                .await
                .unwrap_err(),
        ),
    ];
    for (what, expected, status) in cases {
        assert_eq!(status.code(), expected, "{what}: {status:?}");
    }
    // An overflowing credit votes NO rather than wrapping.
    let rich = client
        .open_account(proto::OpenAccountRequest {
            owner: "rich".into(),
            initial_balance: u64::MAX - 5,
            account_no: "rich".into(),
        })
        .await
        .unwrap();
    drop(rich);
    let vote = client
        .prepare(prepare(txn_id(5), vec![leg("rich", Direction::Credit, 6)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (vote.vote, vote.reason.as_str()),
        (proto::Vote::No as i32, "credit would overflow account rich")
    );
    // A 100 MB message is refused before it is buffered.
    let huge = client
        .prepare(prepare(
            txn_id(6),
            vec![leg(&"9".repeat(100 << 20), Direction::Debit, 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    // Nothing changed, and the server still serves.
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    assert_eq!(
        (
            balance(&mut client, "123").await,
            balance(&mut client, "456").await
        ),
        before
    );
    assert_eq!(bank.stop().await, Stopped::Shutdown);
}

#[tokio::test]
async fn only_the_gateway_certificate_may_call_a_bank() {
    let scratch = Scratch::new(&["bank_a"], SETUP);
    let bank = start(&scratch).await;
    for identity in ["client", "bank_a"] {
        let mut client = bank_client(&scratch.tls(), identity, bank.address).await;
        let status = client
            .get_account(proto::GetAccountRequest {
                account_no: "123".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{identity}: {status:?}"
        );
    }
    // Plaintext: no TLS handshake, no answer.
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", bank.address))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let mut client = proto::bank_client::BankClient::new(channel);
        assert!(
            client
                .get_account(proto::GetAccountRequest {
                    account_no: "123".into()
                })
                .await
                .is_err()
        );
    }
    // TLS without a client certificate is rejected at the first call.
    let ca = tonic::transport::Certificate::from_pem(
        std::fs::read(scratch.tls().join("ca.pem")).unwrap(),
    );
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", bank.address))
        .unwrap()
        .tls_config(anonymous)
        .unwrap()
        .connect_lazy();
    let mut client = proto::bank_client::BankClient::new(channel);
    assert!(
        client
            .get_account(proto::GetAccountRequest {
                account_no: "123".into()
            })
            .await
            .is_err()
    );
    // The gateway still gets through.
    let mut client = bank_client(&scratch.tls(), "gateway", bank.address).await;
    assert_eq!(balance(&mut client, "123").await, (100_000, 100_000));
    assert_eq!(bank.stop().await, Stopped::Shutdown);
}
