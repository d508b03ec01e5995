//! Fuzz entry points. The `cargo fuzz` targets in `fuzz/` call these with
//! coverage-guided inputs; `tests/fuzz_inputs.rs` runs them over seeded
//! random inputs on every CI run, so they stay built and honest.
//!
//! Each takes arbitrary bytes and must never panic: bad input is refused
//! with an error, and what the code accepts keeps its invariants.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use coordinator::{Gateway, GatewayOptions, SetupUser};
use ledger::{Bank, BankOptions, Seed};
use minipay_proto::v1 as proto;
use money::BankName;
use prost::Message;
use proto::bank_server::Bank as _;
use proto::decisions_server::Decisions as _;
use proto::gateway_server::Gateway as _;
use tonic::{Code, Request, Status};
use wal::sim::SimStorage;
use wal::{Lsn, RecordKind, Wal};

use crate::rpc::tls::TlsDir;
use crate::servers::bank::service::BankService;
use crate::servers::gateway::bank_clients::BankClients;
use crate::servers::gateway::node::{OsEntropy, SystemClock};
use crate::servers::gateway::service::{DecisionService, GatewayService, SessionUser};

const PAYLOAD_LEN_MAX: u32 = 1 << 12;

fn wal_options() -> wal::Options {
    wal::Options {
        segment_size: 1 << 14,
        payload_len_max: PAYLOAD_LEN_MAX,
        batch_delay_max: Duration::ZERO,
        prepare_segments_ahead: false,
        background_flush: false,
        ..wal::Options::default()
    }
}

/// The WAL record decoder and recovery on arbitrary bytes: the bytes are
/// decoded as a record, then used as the log's first segment (its header
/// included). Recovery either refuses with an error or opens a log that
/// replays exactly what it reported and takes a new durable record.
pub fn wal_recovery(data: &[u8]) {
    if let Ok((record, framed)) = wal::decode_record(data, PAYLOAD_LEN_MAX) {
        assert!(framed <= data.len());
        let mut again = Vec::new();
        wal::encode_record(&mut again, record.lsn, record.kind, record.payload);
        assert_eq!(
            again,
            &data[..framed],
            "a decoded record re-encodes to its bytes"
        );
    }
    let storage = SimStorage::new();
    let name = wal::segment_name(Lsn::FIRST);
    {
        use wal::Storage as _;
        let file = storage.open(&name, true).expect("sim create");
        file.write_at(0, data).expect("sim write");
        file.sync_data().expect("sim sync");
        storage.sync_dir().expect("sim dir sync");
    }
    let Ok(recovered) = Wal::open_storage(Arc::new(storage.clone()), wal_options()) else {
        return;
    };
    let wal = recovered.wal;
    let mut replayed = 0u64;
    wal.replay(wal.first_lsn(), |_| {
        replayed += 1;
        Ok::<_, ()>(())
    })
    .expect("an opened log replays");
    assert_eq!(replayed, recovered.report.records);
    let lsn = wal
        .append(RecordKind(7), b"after recovery")
        .expect("an opened log takes appends");
    drop(wal);
    let reopened = Wal::open_storage(Arc::new(storage.crash()), wal_options())
        .expect("a log this code wrote reopens");
    assert_eq!(reopened.wal.next_lsn(), lsn.next());
}

/// Reads `data` as a sequence of (selector, length, bytes) requests.
fn requests(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&selector, tail) = rest.split_first()?;
        let (&len, tail) = tail.split_first().unwrap_or((&0, tail));
        let len = usize::from(len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        Some((selector, payload))
    })
}

/// Field values drawn from bytes: mostly meaningful ones (known txn ids and
/// accounts), sometimes raw garbage.
struct Fields<'a>(&'a [u8]);

/// Trace contexts a fuzzed bank call may carry: a valid one, an invalid
/// version, and none.
const TRACEPARENTS: &[&str] = &[
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "",
];

impl Fields<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn u64(&mut self) -> u64 {
        match self.byte() % 4 {
            0 => u64::from(self.byte()),
            1 => u64::from(self.byte()) * 1_000,
            2 => u64::MAX - u64::from(self.byte()),
            _ => u64::from_le_bytes(std::array::from_fn(|_| self.byte())),
        }
    }

    fn text(&mut self, known: &[&str]) -> String {
        let choice = usize::from(self.byte());
        match known.get(choice % (known.len() + 1)) {
            Some(value) => (*value).to_owned(),
            None => {
                let len = usize::from(self.byte() % 80);
                let raw: Vec<u8> = (0..len).map(|_| self.byte()).collect();
                String::from_utf8_lossy(&raw).into_owned()
            }
        }
    }

    fn txn(&mut self) -> String {
        self.text(&[
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000002",
            "00000000-0000-4000-8000-000000000003",
            "not-a-uuid",
            "",
        ])
    }

    fn account(&mut self) -> String {
        self.text(&["123", "456", "789", "", "a/b"])
    }

    fn legs(&mut self) -> Vec<proto::Leg> {
        (0..self.byte() % 4)
            .map(|_| proto::Leg {
                account_no: self.account(),
                direction: i32::from(self.byte() % 4),
                amount: self.u64(),
            })
            .collect()
    }
}

/// Decodes the payload as `M` (the wire path: arbitrary protobuf bytes) or
/// builds one from field values (high selector bit), as the handler gets it.
fn message<M: Message + Default>(
    selector: u8,
    payload: &[u8],
    build: impl FnOnce(&mut Fields<'_>) -> M,
) -> Option<M> {
    if selector & 0x80 == 0 {
        M::decode(payload).ok()
    } else {
        Some(build(&mut Fields(payload)))
    }
}

/// A handler's refusal must name what was wrong: never INTERNAL or UNKNOWN.
fn check_refusal(status: &Status) {
    assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown),
        "bad input must get a precise status, not {status:?}"
    );
}

/// One batch item's status: OK or, like a refused call, precise.
fn check_item(status: proto::ItemStatus) {
    check_refusal(&Status::new(Code::from_i32(status.code), status.message));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A handler's answer to one fuzzed request, its response dropped; `None`
/// when the input did not decode as the request (no handler was called).
type Answer = Option<Result<(), Status>>;

/// Every Bank RPC through its handler (as the bank server runs it) with
/// arbitrary requests, against a bank with two accounts. No panic, precise
/// statuses, and the ledger's invariants hold after every request.
pub fn bank_requests(data: &[u8]) {
    let bank = Arc::new(open_bank());
    let failed = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&failed);
    let service = BankService::new(
        Arc::clone(&bank),
        Arc::new(move || stop.store(true, Ordering::SeqCst)),
    );
    runtime().block_on(async {
        for (selector, payload) in requests(data) {
            let answer = bank_request(&service, selector, payload).await;
            if let Some(Err(status)) = &answer {
                check_refusal(status);
            }
            assert!(
                !failed.load(Ordering::SeqCst),
                "a simulated disk never fails here"
            );
            bank.inspect(ledger::Ledger::check_invariants)
                .expect("the ledger's invariants hold after any request");
        }
    });
}

/// A new bank on a simulated disk with two accounts: alice's, rich, and
/// bob's, nearly empty, so that fuzzed payments both succeed and bounce.
fn open_bank() -> Bank {
    let seeds = vec![
        Seed {
            account: money::AccountNo::parse("123").expect("valid"),
            owner: "alice".into(),
            balance: money::Amount(100_000),
        },
        Seed {
            account: money::AccountNo::parse("456").expect("valid"),
            owner: "bob".into(),
            balance: money::Amount(50),
        },
    ];
    let options = BankOptions {
        wal: wal_options(),
        ..BankOptions::default()
    };
    let (bank, _) = Bank::open(
        Arc::new(SimStorage::new()),
        "bank_a",
        "INR",
        || Ok(seeds),
        options,
    )
    .expect("a new bank opens");
    bank
}

/// Sends one request to the Bank RPC its selector picks.
async fn bank_request(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    match selector % 9 {
        0 => bank_open_account(service, selector, payload).await,
        1 => bank_get_account(service, selector, payload).await,
        2 => bank_prepare(service, selector, payload).await,
        3 => bank_commit(service, selector, payload).await,
        4 => bank_abort(service, selector, payload).await,
        6 => bank_prepare_batch(service, selector, payload).await,
        7 => bank_finish_batch(service, selector, payload).await,
        8 => bank_get_transactions(service, selector, payload).await,
        _ => bank_list_in_doubt(service).await,
    }
}

/// OpenAccount: owners, balances and account numbers, known and not.
async fn bank_open_account(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::OpenAccountRequest {
        owner: fields.text(&["carol", ""]),
        initial_balance: fields.u64(),
        account_no: fields.account(),
    })?;
    Some(service.open_account(Request::new(request)).await.map(drop))
}

/// GetAccount of existing, missing and malformed account numbers.
async fn bank_get_account(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::GetAccountRequest {
        account_no: fields.account(),
    })?;
    Some(service.get_account(Request::new(request)).await.map(drop))
}

/// Prepare: legs that balance or not, on accounts that exist or not.
async fn bank_prepare(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::PrepareRequest {
        txn_id: fields.txn(),
        legs: fields.legs(),
        traceparent: fields.text(TRACEPARENTS),
    })?;
    Some(service.prepare(Request::new(request)).await.map(drop))
}

/// Commit of txns prepared, unknown, finished, or not txn ids at all.
async fn bank_commit(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::CommitRequest {
        txn_id: fields.txn(),
    })?;
    Some(service.commit(Request::new(request)).await.map(drop))
}

/// Abort, the other phase-2 decision, on the same kinds of txn ids.
async fn bank_abort(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::AbortRequest {
        txn_id: fields.txn(),
    })?;
    Some(service.abort(Request::new(request)).await.map(drop))
}

/// PrepareBatch: the call succeeds as a whole, so each item's own status
/// must be as precise as a refused call's.
async fn bank_prepare_batch(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::PrepareBatchRequest {
        prepares: (0..fields.u64() % 4)
            .map(|_| proto::PrepareRequest {
                txn_id: fields.txn(),
                legs: fields.legs(),
                traceparent: fields.text(TRACEPARENTS),
            })
            .collect(),
    })?;
    Some(
        service
            .prepare_batch(Request::new(request))
            .await
            .map(|answer| {
                for outcome in answer.into_inner().outcomes {
                    check_item(outcome.status.unwrap_or_default());
                }
            }),
    )
}

/// FinishBatch, with decisions valid and not; each item checked as above.
async fn bank_finish_batch(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::FinishBatchRequest {
        finishes: (0..fields.u64() % 4)
            .map(|_| proto::Finish {
                txn_id: fields.txn(),
                decision: (fields.u64() % 4) as i32,
                traceparent: fields.text(TRACEPARENTS),
            })
            .collect(),
    })?;
    Some(
        service
            .finish_batch(Request::new(request))
            .await
            .map(|answer| {
                answer
                    .into_inner()
                    .outcomes
                    .into_iter()
                    .for_each(check_item)
            }),
    )
}

/// GetTransactions: ids valid and not; an answer names every id asked, in
/// order, each with a known status.
async fn bank_get_transactions(service: &BankService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::GetTransactionsRequest {
        txn_ids: (0..fields.u64() % 4).map(|_| fields.txn()).collect(),
    })?;
    let asked = request.txn_ids.clone();
    Some(
        service
            .get_transactions(Request::new(request))
            .await
            .map(|answer| {
                let txns = answer.into_inner().txns;
                assert_eq!(
                    txns.iter().map(|txn| &txn.txn_id).collect::<Vec<_>>(),
                    asked.iter().collect::<Vec<_>>()
                );
                for txn in txns {
                    let status = proto::TxnStatus::try_from(txn.status).expect("a known status");
                    assert_ne!(status, proto::TxnStatus::Unspecified);
                }
            }),
    )
}

/// ListInDoubt takes no input: it is fuzzed by the state earlier requests
/// left behind.
async fn bank_list_in_doubt(service: &BankService) -> Answer {
    Some(
        service
            .list_in_doubt(Request::new(proto::ListInDoubtRequest {}))
            .await
            .map(drop),
    )
}

/// `request` as the session layer passes it on for alice.
fn as_alice<T>(mut request: Request<T>) -> Request<T> {
    request.extensions_mut().insert(SessionUser("alice".into()));
    request
}

/// A development CA and certificates (the gateway's bank clients need them
/// even though no bank answers here), shared by every run on this machine:
/// made in a private directory, then renamed into place whole, so a reader
/// never sees a half-written set and no run leaves its own copy behind.
fn certificates() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shared = std::env::temp_dir().join("minipay-fuzz-tls");
        if !shared.join("ca.pem").exists() {
            let mine =
                std::env::temp_dir().join(format!("minipay-fuzz-tls.{}", std::process::id()));
            crate::tools::certs::generate(&mine, &["bank_a".to_owned()])
                .expect("generate certificates");
            if std::fs::rename(&mine, &shared).is_err() {
                // Another run put its set in place first.
                let _ = std::fs::remove_dir_all(&mine);
            }
        }
        shared
    })
}

fn bank_a() -> BankName {
    BankName::parse("bank_a").expect("valid")
}

/// Every Gateway RPC through its handler with arbitrary requests, as user
/// alice (the session layer's job is done by attaching her identity; Logout
/// gets whatever key the input carries), and a bank's GetDecision. Its one bank is unreachable, so
/// payments abort and registrations fail: with precise statuses, no panic.
pub fn gateway_requests(data: &[u8]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = runtime();
    runtime.block_on(async {
        let banks = BankClients::new(
            &[(bank_a(), "https://127.0.0.1:1".to_owned())],
            &TlsDir::new(certificates()),
            crate::servers::gateway::node::BANK_QUEUE_MAX_DEFAULT,
        )
        .expect("bank clients");
        let gateway = open_gateway(banks.clone());
        let failed = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&failed);
        let gateway = Arc::new(gateway);
        let decisions = DecisionService::new(Arc::clone(&gateway));
        let service = GatewayService::new(
            gateway,
            banks,
            crate::servers::gateway::password_pool::PasswordPool::start(
                1,
                crate::servers::gateway::node::HASH_QUEUE_MAX_DEFAULT,
                coordinator::users::HashCost::SIMULATION_ONLY,
            ),
            Arc::new(move || stop.store(true, Ordering::SeqCst)),
        );
        for (selector, payload) in requests(data) {
            let answer = gateway_request(&service, &decisions, selector, payload).await;
            if let Some(Err(status)) = &answer {
                check_refusal(status);
            }
            assert!(
                !failed.load(Ordering::SeqCst),
                "a simulated disk never fails here"
            );
        }
    });
}

/// A new gateway core on a simulated disk with one user, alice, at
/// `bank_a`; its password hashing is cheap, so a fuzz run can log in often.
fn open_gateway(banks: BankClients) -> Gateway<BankClients> {
    let options = GatewayOptions {
        wal: wal_options(),
        prepare_timeout: Duration::from_millis(500),
        commit_timeout: Duration::from_millis(500),
        snapshot_every: 1_000,
        password_cost: coordinator::users::HashCost::SIMULATION_ONLY,
        ..GatewayOptions::new(vec![bank_a()], "INR")
    };
    Gateway::open(
        Arc::new(SimStorage::new()),
        options,
        banks,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        || {
            vec![SetupUser {
                username: "alice".into(),
                password: "pass123".into(),
                bank: bank_a(),
                account: money::AccountNo::parse("123").expect("valid"),
            }]
        },
    )
    .expect("a new gateway opens")
}

/// Sends one request to the Gateway RPC (or the Decisions one) its selector
/// picks.
async fn gateway_request(
    service: &GatewayService,
    decisions: &DecisionService,
    selector: u8,
    payload: &[u8],
) -> Answer {
    match selector % 7 {
        0 => gateway_register(service, selector, payload).await,
        1 => gateway_login(service, selector, payload).await,
        2 => gateway_logout(service, payload).await,
        3 => gateway_get_balance(service).await,
        4 => gateway_pay(service, selector, payload).await,
        5 => gateway_get_payment(service, selector, payload).await,
        _ => decisions_get_decision(decisions, selector, payload).await,
    }
}

/// Register: taken, new and empty usernames, weak passwords, unknown banks.
async fn gateway_register(service: &GatewayService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::RegisterRequest {
        username: fields.text(&["alice", "dave", ""]),
        password: fields.text(&["pass123", "short"]),
        bank: fields.text(&["bank_a", "bank_z"]),
        initial_balance: fields.u64(),
    })?;
    Some(service.register(Request::new(request)).await.map(drop))
}

/// Login with right and wrong passwords, for known and unknown users.
async fn gateway_login(service: &GatewayService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::LoginRequest {
        username: fields.text(&["alice", "dave"]),
        password: fields.text(&["pass123", "wrong-one"]),
    })?;
    Some(service.login(Request::new(request)).await.map(drop))
}

/// Logout reads its session key from the metadata, not the request, so
/// the fuzzed bytes go there (when they make a valid header value).
async fn gateway_logout(service: &GatewayService, payload: &[u8]) -> Answer {
    let mut request = Request::new(proto::LogoutRequest {});
    let key = format!("Bearer {}", Fields(payload).text(&[""]));
    if let Ok(value) = key.parse() {
        request.metadata_mut().insert("authorization", value);
    }
    Some(service.logout(request).await.map(drop))
}

/// GetBalance takes no input: alice's balance as earlier requests left it.
async fn gateway_get_balance(service: &GatewayService) -> Answer {
    Some(
        service
            .get_balance(as_alice(Request::new(proto::GetBalanceRequest {})))
            .await
            .map(drop),
    )
}

/// Pay as alice: to known and unknown banks and accounts, any amount, in
/// the gateway's currency and not.
async fn gateway_pay(service: &GatewayService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::PayRequest {
        txn_id: fields.txn(),
        to_bank: fields.text(&["bank_a", "bank_z", ""]),
        to_account: fields.account(),
        amount: fields.u64(),
        currency: fields.text(&["INR", "USD"]),
    })?;
    Some(service.pay(as_alice(Request::new(request))).await.map(drop))
}

/// GetPayment as alice, of txn ids she may or may not have paid with.
async fn gateway_get_payment(service: &GatewayService, selector: u8, payload: &[u8]) -> Answer {
    let request = message(selector, payload, |fields| proto::GetPaymentRequest {
        txn_id: fields.txn(),
    })?;
    Some(
        service
            .get_payment(as_alice(Request::new(request)))
            .await
            .map(drop),
    )
}

/// A bank's in-doubt question (the Decisions service), about any txn id.
async fn decisions_get_decision(
    decisions: &DecisionService,
    selector: u8,
    payload: &[u8],
) -> Answer {
    let request = message(selector, payload, |fields| proto::GetDecisionRequest {
        txn_id: fields.txn(),
    })?;
    Some(
        decisions
            .get_decision(Request::new(request))
            .await
            .map(drop),
    )
}
