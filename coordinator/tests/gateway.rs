//! The gateway core with in-memory banks: 2PC outcomes (all YES, a NO, a
//! timeout, a bank down), idempotency by txn id, phase-2 retry, login and
//! sessions, and a crash after each decision-log record followed by recovery,
//! checking every payment ends all-or-nothing at both banks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator::admission::RateLimit;
use coordinator::users::{HashCost, PasswordHasher};
use coordinator::{AdmissionPolicy, Limited};
use coordinator::{
    CallError, CallFuture, Clock, Decision, Endpoint, Entropy, Gateway, GatewayError,
    GatewayOptions, Participant, Payment, PaymentRequest, SetupUser, Status, Vote,
};
use money::{AccountNo, Amount, BankName, Direction, Leg, TxnId};
use std::net::IpAddr;
use wal::block_on;
use wal::sim::SimStorage;

fn bank(name: &str) -> BankName {
    BankName::parse(name).unwrap()
}

fn account(number: &str) -> AccountNo {
    AccountNo::parse(number).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BankTxn {
    Prepared,
    Committed,
    Aborted,
}

/// What a bank is told to do with calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Normal,
    VoteNo,
    Timeout,
    Down,
}

/// Each bank's transactions: state and legs.
type BankTxns = HashMap<(String, TxnId), (BankTxn, Vec<Leg>)>;
/// Runs at the start of every bank call.
type CallHook = Box<dyn Fn(&Banks) + Send>;

/// In-memory banks: a 2PC participant's bookkeeping, with failure injection
/// and a hook that runs at the start of every call (to take crash images).
#[derive(Clone, Default)]
struct Banks {
    txns: Arc<Mutex<BankTxns>>,
    behaviour: Arc<Mutex<HashMap<String, Behaviour>>>,
    calls: Arc<AtomicU64>,
    on_call: Arc<Mutex<Option<CallHook>>>,
}

impl Banks {
    fn behaviour(&self, bank: &str) -> Behaviour {
        *self
            .behaviour
            .lock()
            .unwrap()
            .get(bank)
            .unwrap_or(&Behaviour::Normal)
    }

    fn set(&self, bank: &str, behaviour: Behaviour) {
        self.behaviour
            .lock()
            .unwrap()
            .insert(bank.to_owned(), behaviour);
    }

    fn state(&self, bank: &str, txn: TxnId) -> Option<BankTxn> {
        self.txns
            .lock()
            .unwrap()
            .get(&(bank.to_owned(), txn))
            .map(|(state, _)| *state)
    }

    fn snapshot(&self) -> Banks {
        Banks {
            txns: Arc::new(Mutex::new(self.txns.lock().unwrap().clone())),
            behaviour: Arc::new(Mutex::new(HashMap::new())),
            calls: Arc::new(AtomicU64::new(0)),
            on_call: Arc::new(Mutex::new(None)),
        }
    }

    fn enter(&self, bank: &str, timeout: Duration) -> Result<(), CallError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &*self.on_call.lock().unwrap() {
            hook(self);
        }
        match self.behaviour(bank) {
            Behaviour::Down => Err(CallError::Unreachable {
                bank: BankName::parse(bank).unwrap(),
                detail: "connection refused".into(),
            }),
            Behaviour::Timeout => Err(CallError::Timeout {
                bank: BankName::parse(bank).unwrap(),
                timeout,
            }),
            Behaviour::Normal | Behaviour::VoteNo => Ok(()),
        }
    }
}

impl Participant for Banks {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, Vote> {
        Box::pin(async move {
            let bank = bank.as_str();
            self.enter(bank, timeout)?;
            let mut txns = self.txns.lock().unwrap();
            let key = (bank.to_owned(), txn);
            match txns.get(&key) {
                Some((BankTxn::Aborted, _)) => {
                    return Ok(Vote::No {
                        reason: "aborted".into(),
                    });
                }
                Some(_) => return Ok(Vote::Yes),
                None => {}
            }
            if self.behaviour(bank) == Behaviour::VoteNo {
                txns.insert(key, (BankTxn::Aborted, legs));
                return Ok(Vote::No {
                    reason: "insufficient funds".into(),
                });
            }
            txns.insert(key, (BankTxn::Prepared, legs));
            Ok(Vote::Yes)
        })
    }

    fn commit<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let bank = bank.as_str();
            self.enter(bank, timeout)?;
            let mut txns = self.txns.lock().unwrap();
            match txns.get_mut(&(bank.to_owned(), txn)) {
                Some((state @ (BankTxn::Prepared | BankTxn::Committed), _)) => {
                    *state = BankTxn::Committed;
                    Ok(())
                }
                other => panic!("protocol violation: commit of {txn} at {bank} in state {other:?}"),
            }
        })
    }

    fn abort<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let bank = bank.as_str();
            self.enter(bank, timeout)?;
            let mut txns = self.txns.lock().unwrap();
            match txns.get_mut(&(bank.to_owned(), txn)) {
                Some((BankTxn::Committed, _)) => {
                    panic!("protocol violation: abort of committed {txn} at {bank}")
                }
                Some((state, _)) => *state = BankTxn::Aborted,
                None => {
                    txns.insert((bank.to_owned(), txn), (BankTxn::Aborted, Vec::new()));
                }
            }
            Ok(())
        })
    }
}

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct TestEntropy(AtomicU64);

impl Entropy for TestEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        let mut state = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
        for byte in bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
    }
}

fn options() -> GatewayOptions {
    let banks = vec![
        BankName::parse("bank_a").unwrap(),
        BankName::parse("bank_b").unwrap(),
    ];
    GatewayOptions {
        wal: wal::Options {
            segment_size: 64 * 1024,
            payload_len_max: 4096,
            prepare_segments_ahead: false,
            ..wal::Options::default()
        },
        snapshot_every: 1_000_000,
        ..GatewayOptions::new(banks, "INR")
    }
}

fn setup_users() -> Vec<SetupUser> {
    vec![
        SetupUser {
            username: "alice".into(),
            password: "pass123".into(),
            bank: BankName::parse("bank_a").unwrap(),
            account: AccountNo::parse("123").unwrap(),
        },
        SetupUser {
            username: "bob".into(),
            password: "hunter22".into(),
            bank: BankName::parse("bank_b").unwrap(),
            account: AccountNo::parse("456").unwrap(),
        },
        SetupUser {
            username: "dave".into(),
            password: "dave1234".into(),
            bank: BankName::parse("bank_a").unwrap(),
            account: AccountNo::parse("321").unwrap(),
        },
    ]
}

fn open(storage: &SimStorage, banks: Banks) -> Gateway<Banks> {
    open_with(storage, banks, options())
}

fn open_with(storage: &SimStorage, banks: Banks, options: GatewayOptions) -> Gateway<Banks> {
    open_timed(
        storage,
        banks,
        options,
        Arc::new(TestClock(AtomicU64::new(1_000))),
    )
}

fn open_timed(
    storage: &SimStorage,
    banks: Banks,
    options: GatewayOptions,
    clock: Arc<TestClock>,
) -> Gateway<Banks> {
    Gateway::open(
        Arc::new(storage.clone()),
        options,
        banks,
        clock,
        Arc::new(TestEntropy(AtomicU64::new(7))),
        setup_users,
    )
    .unwrap()
}

impl TestClock {
    /// Moves the clock past the longest phase-2 backoff.
    fn past_retry_backoff(&self) {
        let wait = coordinator::gateway::PHASE_TWO_RETRY_DEFAULT.wait_ms_max;
        self.0.fetch_add(wait, Ordering::SeqCst);
    }
}

/// Pays, then runs phase 2 if the answer left it pending (as the gateway
/// service does right after answering); the payment as stored after that.
fn pay_then_settle<P: Participant>(
    gateway: &Gateway<P>,
    user: &str,
    request: PaymentRequest,
) -> Result<Payment, GatewayError> {
    let txn = request.txn;
    let paid = block_on(gateway.pay(user, request))?;
    if !paid.phase_two_pending {
        return Ok(paid.payment);
    }
    assert!(!paid.payment.ended, "answered before phase 2");
    block_on(gateway.phase_two(txn))?;
    gateway.payment(user, txn)
}

fn txn(n: u8) -> TxnId {
    TxnId([n; 16])
}

fn payment(n: u8, to_bank: &str, to_account: &str, amount: u64) -> PaymentRequest {
    PaymentRequest {
        txn: txn(n),
        from: Endpoint {
            bank: BankName::parse("bank_a").unwrap(),
            account: AccountNo::parse("123").unwrap(),
        },
        to: Endpoint {
            bank: bank(to_bank),
            account: account(to_account),
        },
        amount: Amount(amount),
        currency: "INR".into(),
    }
}

#[test]
fn a_cross_bank_payment_commits_at_both_banks_when_both_vote_yes() {
    let banks = Banks::default();
    let gateway = open(&SimStorage::new(), banks.clone());
    let paid = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500)).unwrap();
    assert_eq!(
        (paid.status, paid.replayed, paid.ended),
        (Status::Committed, false, true)
    );
    assert_eq!(banks.state("bank_a", txn(1)), Some(BankTxn::Committed));
    assert_eq!(banks.state("bank_b", txn(1)), Some(BankTxn::Committed));
    assert!(gateway.unfinished().is_empty());
}

#[test]
fn a_same_bank_payment_is_one_prepare_with_two_legs() {
    let banks = Banks::default();
    let gateway = open(&SimStorage::new(), banks.clone());
    let paid = pay_then_settle(&gateway, "alice", payment(1, "bank_a", "321", 100)).unwrap();
    assert_eq!(paid.status, Status::Committed);
    let txns = banks.txns.lock().unwrap();
    let (_, legs) = &txns[&("bank_a".to_owned(), txn(1))];
    assert_eq!(
        legs.iter().map(|leg| leg.direction).collect::<Vec<_>>(),
        vec![Direction::Debit, Direction::Credit]
    );
    assert_eq!(
        banks.calls.load(Ordering::SeqCst),
        2,
        "one prepare, one commit"
    );
}

#[test]
fn a_no_vote_a_timeout_and_a_bank_down_each_abort_everywhere_with_the_reason() {
    for (behaviour, reason) in [
        (Behaviour::VoteNo, "insufficient funds"),
        (Behaviour::Timeout, "bank bank_b did not answer within 10s"),
        (
            Behaviour::Down,
            "bank bank_b is unreachable: connection refused",
        ),
    ] {
        let banks = Banks::default();
        banks.set("bank_b", behaviour);
        let gateway = open(&SimStorage::new(), banks.clone());
        let paid = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500)).unwrap();
        assert_eq!(
            (paid.status, paid.reason.as_str()),
            (Status::Aborted, reason),
            "{behaviour:?}"
        );
        assert_eq!(
            banks.state("bank_a", txn(1)),
            Some(BankTxn::Aborted),
            "{behaviour:?}"
        );
        assert_ne!(banks.state("bank_b", txn(1)), Some(BankTxn::Committed));
    }
}

#[test]
fn a_txn_id_pays_once_and_cannot_be_reused_for_anything_else() {
    let banks = Banks::default();
    let gateway = open(&SimStorage::new(), banks.clone());
    let first = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500)).unwrap();
    let calls = banks.calls.load(Ordering::SeqCst);
    let again = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500)).unwrap();
    assert_eq!((again.status, again.replayed), (first.status, true));
    assert_eq!(banks.calls.load(Ordering::SeqCst), calls, "no second 2PC");
    let other_amount =
        pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_600)).unwrap_err();
    assert!(
        matches!(other_amount, GatewayError::TxnIdReused { txn } if txn == self::txn(1)),
        "{other_amount}"
    );
    let mut from_dave = payment(1, "bank_b", "456", 2_500);
    from_dave.from.account = account("321");
    let other_user = pay_then_settle(&gateway, "dave", from_dave).unwrap_err();
    assert!(
        matches!(other_user, GatewayError::TxnIdOfAnotherUser { txn } if txn == self::txn(1)),
        "{other_user}"
    );
    // An abort is pinned to its id too.
    banks.set("bank_b", Behaviour::VoteNo);
    let aborted = pay_then_settle(&gateway, "alice", payment(2, "bank_b", "456", 1)).unwrap();
    banks.set("bank_b", Behaviour::Normal);
    let repeat = pay_then_settle(&gateway, "alice", payment(2, "bank_b", "456", 1)).unwrap();
    assert_eq!(
        (aborted.status, repeat.status, repeat.replayed),
        (Status::Aborted, Status::Aborted, true)
    );
}

#[test]
fn bad_payments_are_refused_before_anything_is_written() {
    let banks = Banks::default();
    let gateway = open(&SimStorage::new(), banks.clone());
    let mut wrong_currency = payment(1, "bank_b", "456", 5);
    wrong_currency.currency = "USD".into();
    let mut not_mine = payment(2, "bank_b", "456", 5);
    not_mine.from.account = account("321");
    let cases = [
        payment(3, "bank_b", "456", 0),
        wrong_currency,
        payment(4, "bank_z", "456", 5),
        payment(5, "bank_a", "123", 5),
        not_mine,
    ];
    for request in cases {
        assert!(
            pay_then_settle(&gateway, "alice", request.clone()).is_err(),
            "{request:?}"
        );
        assert!(gateway.payment("alice", request.txn).is_err());
    }
    assert_eq!(banks.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_repeat_of_a_payment_made_under_a_higher_maximum_still_gets_its_outcome() {
    let storage = SimStorage::new();
    let gateway = open(&storage, Banks::default());
    let paid = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 5_000)).unwrap();
    assert_eq!(paid.status, Status::Committed);
    drop(gateway);
    let lowered = Gateway::open(
        Arc::new(storage.crash()),
        GatewayOptions {
            amount_max: Amount(100),
            ..options()
        },
        Banks::default(),
        Arc::new(TestClock(AtomicU64::new(2_000))),
        Arc::new(TestEntropy(AtomicU64::new(8))),
        setup_users,
    )
    .unwrap();
    let repeat = block_on(lowered.pay("alice", payment(1, "bank_b", "456", 5_000))).unwrap();
    assert_eq!(
        (repeat.payment.status, repeat.payment.replayed),
        (Status::Committed, true)
    );
    let refused = block_on(lowered.pay("alice", payment(2, "bank_b", "456", 5_000)));
    assert!(
        matches!(refused, Err(GatewayError::AmountAboveMax { .. })),
        "{refused:?}"
    );
}

#[test]
fn past_settling_max_unacknowledged_payments_a_new_id_is_shed_until_phase_two_catches_up() {
    let banks = Banks::default();
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let gateway = open_timed(
        &SimStorage::new(),
        banks.clone(),
        GatewayOptions {
            settling_max: 1,
            ..options()
        },
        Arc::clone(&clock),
    );
    // bank_b is down: the payment aborts and its phase 2 stays unacknowledged.
    banks.set("bank_b", Behaviour::Down);
    let aborted = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 5)).unwrap();
    assert_eq!(aborted.status, Status::Aborted);
    assert_eq!(gateway.unfinished(), vec![txn(1)]);
    // A payment that does not even touch bank_b is shed, nothing written.
    let shed = block_on(gateway.pay("alice", payment(2, "bank_a", "321", 5)));
    assert!(
        matches!(
            shed,
            Err(GatewayError::Overloaded {
                bound: coordinator::Bound::Settling,
                limit: 1
            })
        ),
        "{shed:?}"
    );
    assert!(gateway.current(txn(2)).unwrap().is_none());
    // The repeat of the known id is still answered.
    let repeat = block_on(gateway.pay("alice", payment(1, "bank_b", "456", 5))).unwrap();
    assert_eq!(
        (repeat.payment.status, repeat.payment.replayed),
        (Status::Aborted, true)
    );
    banks.set("bank_b", Behaviour::Normal);
    clock.past_retry_backoff();
    assert_eq!(block_on(gateway.resume()).unwrap(), 0);
    let paid = pay_then_settle(&gateway, "alice", payment(2, "bank_a", "321", 5)).unwrap();
    assert_eq!(paid.status, Status::Committed);
}

#[test]
fn phase_two_is_retried_until_every_bank_acknowledges_and_a_commit_never_becomes_an_abort() {
    let banks = Banks::default();
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let gateway = open_timed(
        &SimStorage::new(),
        banks.clone(),
        options(),
        Arc::clone(&clock),
    );
    // bank_b votes YES, then goes down before the commit.
    *banks.on_call.lock().unwrap() = Some(Box::new(|banks: &Banks| {
        if banks.state("bank_b", TxnId([1; 16])) == Some(BankTxn::Prepared) {
            banks.set("bank_b", Behaviour::Down);
        }
    }));
    let paid = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500)).unwrap();
    assert_eq!((paid.status, paid.ended), (Status::Committed, false));
    assert_eq!(gateway.unfinished(), vec![txn(1)]);
    // Phase 2 failed once already: a retry waits for its backoff.
    let calls = banks.calls.load(Ordering::SeqCst);
    assert_eq!(block_on(gateway.resume()).unwrap(), 1);
    assert_eq!(banks.calls.load(Ordering::SeqCst), calls, "backing off");
    clock.past_retry_backoff();
    assert_eq!(block_on(gateway.resume()).unwrap(), 1, "still down");
    assert_eq!(
        banks.calls.load(Ordering::SeqCst),
        calls + 2,
        "retried once due, to both banks"
    );
    *banks.on_call.lock().unwrap() = None;
    banks.set("bank_b", Behaviour::Normal);
    assert_eq!(block_on(gateway.resume()).unwrap(), 1, "backing off again");
    clock.past_retry_backoff();
    assert_eq!(block_on(gateway.resume()).unwrap(), 0);
    assert_eq!(banks.state("bank_b", txn(1)), Some(BankTxn::Committed));
    assert!(gateway.payment("alice", txn(1)).unwrap().ended);
}

/// Whether a future is still pending after one poll.
fn pending<F: std::future::Future>(future: F) -> bool {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::pin!(future).poll(&mut context).is_pending()
}

#[test]
fn pay_answers_at_the_durable_decision_and_phase_two_follows() {
    let storage = SimStorage::new();
    let banks = Banks::default();
    let gateway = open(&storage, banks.clone());
    let paid = block_on(gateway.pay("alice", payment(1, "bank_b", "456", 2_500))).unwrap();
    assert!(paid.phase_two_pending);
    assert_eq!(
        (paid.payment.status, paid.payment.ended),
        (Status::Committed, false),
        "final, not yet settled"
    );
    // Both banks only hold the money so far.
    assert_eq!(banks.state("bank_a", txn(1)), Some(BankTxn::Prepared));
    assert_eq!(banks.state("bank_b", txn(1)), Some(BankTxn::Prepared));
    assert_eq!(
        gateway.unacknowledged(&bank("bank_a"), &account("123")),
        vec![txn(1)]
    );
    assert_eq!(
        gateway.unacknowledged(&bank("bank_b"), &account("456")),
        vec![txn(1)]
    );
    assert_eq!(
        gateway.unacknowledged(&bank("bank_a"), &account("321")),
        vec![],
        "not touched"
    );
    assert!(pending(
        gateway.acknowledged_by(&bank("bank_a"), vec![txn(1)])
    ));
    // The answer is durable: a crash now resumes phase 2 from the decision.
    let recovered = open(&storage.crash(), banks.snapshot());
    assert_eq!(recovered.unfinished(), vec![txn(1)]);
    drop(recovered);
    assert!(block_on(gateway.phase_two(txn(1))).unwrap());
    assert_eq!(banks.state("bank_a", txn(1)), Some(BankTxn::Committed));
    assert_eq!(banks.state("bank_b", txn(1)), Some(BankTxn::Committed));
    assert!(!pending(
        gateway.acknowledged_by(&bank("bank_a"), vec![txn(1)])
    ));
    assert_eq!(
        gateway.unacknowledged(&bank("bank_b"), &account("456")),
        vec![]
    );
    assert!(gateway.payment("alice", txn(1)).unwrap().ended);
    let again = block_on(gateway.pay("alice", payment(1, "bank_b", "456", 2_500))).unwrap();
    assert!(!again.phase_two_pending, "a repeat never runs phase 2");
    assert!(again.payment.replayed && again.payment.ended);
}

#[test]
fn a_balance_waits_only_for_its_own_bank_acknowledging_phase_two() {
    let banks = Banks::default();
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let gateway = open_timed(
        &SimStorage::new(),
        banks.clone(),
        options(),
        Arc::clone(&clock),
    );
    let paid = block_on(gateway.pay("alice", payment(1, "bank_b", "456", 2_500))).unwrap();
    assert!(paid.phase_two_pending);
    banks.set("bank_b", Behaviour::Down);
    assert!(
        !block_on(gateway.phase_two(txn(1))).unwrap(),
        "bank_b missed it"
    );
    // bank_a applied the commit: the payer's balance need not wait.
    assert_eq!(
        gateway.unacknowledged(&bank("bank_a"), &account("123")),
        vec![]
    );
    assert!(!pending(
        gateway.acknowledged_by(&bank("bank_a"), vec![txn(1)])
    ));
    // The payee's bank did not: its balance would not show the payment yet.
    assert_eq!(
        gateway.unacknowledged(&bank("bank_b"), &account("456")),
        vec![txn(1)]
    );
    let bank_b = bank("bank_b");
    let waiting = gateway.acknowledged_by(&bank_b, vec![txn(1)]);
    banks.set("bank_b", Behaviour::Normal);
    clock.past_retry_backoff();
    assert_eq!(block_on(gateway.resume()).unwrap(), 0);
    block_on(waiting);
    assert_eq!(
        gateway.unacknowledged(&bank("bank_b"), &account("456")),
        vec![]
    );
}

#[test]
fn past_the_unsettled_bound_a_payment_is_answered_after_its_phase_two() {
    let banks = Banks::default();
    let gateway = open_with(
        &SimStorage::new(),
        banks.clone(),
        GatewayOptions {
            unsettled_max: 1,
            ..options()
        },
    );
    let first = block_on(gateway.pay("alice", payment(1, "bank_b", "456", 5))).unwrap();
    assert!(first.phase_two_pending, "within the bound: answered early");
    // The first is still unsettled (its phase 2 not run), so the second
    // is over the bound: settled before it is answered.
    let second = block_on(gateway.pay("alice", payment(2, "bank_b", "456", 5))).unwrap();
    assert!(!second.phase_two_pending);
    assert_eq!(
        (second.payment.status, second.payment.ended),
        (Status::Committed, true)
    );
    assert_eq!(banks.state("bank_b", txn(2)), Some(BankTxn::Committed));
    assert_eq!(banks.state("bank_b", txn(1)), Some(BankTxn::Prepared));
    assert_eq!(gateway.unfinished(), vec![txn(1)]);
}

#[test]
fn get_decision_answers_the_decision_and_unknown_ids_stay_aborted() {
    let storage = SimStorage::new();
    let gateway = open(&storage, Banks::default());
    pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 5)).unwrap();
    assert_eq!(
        block_on(gateway.decision(txn(1))).unwrap(),
        Decision::Commit
    );
    assert_eq!(block_on(gateway.decision(txn(9))).unwrap(), Decision::Abort);
    drop(gateway);
    let gateway = open(&storage.crash(), Banks::default());
    assert_eq!(block_on(gateway.decision(txn(9))).unwrap(), Decision::Abort);
    let late = pay_then_settle(&gateway, "alice", payment(9, "bank_b", "456", 5));
    assert!(
        matches!(late, Err(GatewayError::TxnIdAborted { txn }) if txn == self::txn(9)),
        "{late:?}"
    );
}

fn hasher() -> PasswordHasher {
    PasswordHasher::new(HashCost::default())
}

/// Registers as the gateway service does: admit, hash, record.
fn register<P: Participant>(
    gateway: &Gateway<P>,
    username: &str,
    password: &str,
    bank_name: &str,
    account_no: &str,
) -> Result<(), GatewayError> {
    let (bank, account) = (bank(bank_name), account(account_no));
    let registration = gateway.register_begin(username, password, &bank, None)?;
    let hash = hasher().hash(password, registration.salt());
    block_on(registration.finish(hash, &account))
}

#[test]
fn login_sessions_and_lockout() {
    let gateway = open(&SimStorage::new(), Banks::default());
    let mut hasher = hasher();
    let (key, _) = gateway.login("alice", "pass123", &mut hasher).unwrap();
    assert_eq!(gateway.authenticate(&key).unwrap(), "alice");
    assert!(matches!(
        gateway.login("alice", "wrong-password", &mut hasher),
        Err(GatewayError::BadCredentials)
    ));
    assert!(matches!(
        gateway.login("nobody", "pass123", &mut hasher),
        Err(GatewayError::BadCredentials)
    ));
    gateway.logout(&key).unwrap();
    assert!(gateway.authenticate(&key).is_err());
    for _ in 0..5 {
        let _ = gateway.login("bob", "guess-guess", &mut hasher);
    }
    assert!(matches!(
        gateway.login("bob", "hunter22", &mut hasher),
        Err(GatewayError::LockedOut { .. })
    ));
    register(&gateway, "erin", "erin-secret", "bank_b", "999").unwrap();
    assert!(matches!(
        register(&gateway, "erin", "another1", "bank_b", "998"),
        Err(GatewayError::UsernameTaken { username }) if username == "erin"
    ));
    assert!(matches!(
        register(&gateway, "frank", "frank-pw", "bank_z", "1"),
        Err(GatewayError::UnknownBank { bank }) if bank == "bank_z"
    ));
    assert!(matches!(
        register(&gateway, "frank", "short", "bank_a", "1"),
        Err(GatewayError::MalformedPassword)
    ));
    let (key, _) = gateway.login("erin", "erin-secret", &mut hasher).unwrap();
    assert_eq!(gateway.authenticate(&key).unwrap(), "erin");
}

#[test]
fn unknown_usernames_are_verified_against_a_hash_like_a_known_users() {
    let gateway = open(&SimStorage::new(), Banks::default());
    let known = gateway.login_begin("alice", None).unwrap();
    let unknown = gateway.login_begin("nobody", None).unwrap();
    let params = |hash: &str| hash.split('$').nth(3).unwrap().to_owned();
    assert_eq!(params(known.hash()), params(unknown.hash()), "same cost");
    assert!(unknown.hash().starts_with("$argon2id$"));
    assert!(matches!(
        gateway.login_end(unknown, true),
        Err(GatewayError::BadCredentials)
    ));
}

#[test]
fn logins_past_the_rate_of_an_address_or_a_username_are_refused_before_any_hash() {
    let policy = AdmissionPolicy {
        per_address: RateLimit {
            burst: 3,
            period_ms: 180_000,
        },
        per_username: RateLimit {
            burst: 2,
            period_ms: 120_000,
        },
        keys_max: 16,
    };
    let gateway = open_with(
        &SimStorage::new(),
        Banks::default(),
        GatewayOptions {
            admission: policy,
            ..options()
        },
    );
    let here: IpAddr = "10.0.0.1".parse().unwrap();
    let there: IpAddr = "10.0.0.2".parse().unwrap();
    // Two tries at bob from here, then bob is refused from anywhere.
    for _ in 0..2 {
        gateway.login_begin("bob", Some(here)).unwrap();
    }
    let refused = gateway.login_begin("bob", Some(there)).unwrap_err();
    assert!(
        matches!(
            refused,
            GatewayError::RateLimited {
                what: Limited::Username,
                retry_after_ms: 60_000
            }
        ),
        "{refused:?}"
    );
    // Here's third login (any username) is its last; the fourth is refused.
    gateway.login_begin("alice", Some(here)).unwrap();
    let refused = gateway.login_begin("dave", Some(here)).unwrap_err();
    assert!(
        matches!(
            refused,
            GatewayError::RateLimited {
                what: Limited::Address,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        matches!(
            gateway.register_begin("erin", "erin-secret", &bank("bank_a"), Some(here)),
            Err(GatewayError::RateLimited {
                what: Limited::Address,
                ..
            })
        ),
        "registrations count against the address too"
    );
    // Another address is not held back by this one.
    gateway.login_begin("alice", Some(there)).unwrap();
}

#[test]
fn payments_above_the_maximum_amount_are_refused_and_nothing_is_written() {
    let banks = Banks::default();
    let gateway = open(&SimStorage::new(), banks.clone());
    let max = coordinator::gateway::AMOUNT_MAX_DEFAULT.0;
    for amount in [max + 1, u64::MAX] {
        let refused = block_on(gateway.pay("alice", payment(1, "bank_b", "456", amount)));
        assert!(
            matches!(refused, Err(GatewayError::AmountAboveMax { max: Amount(m), .. }) if m == max),
            "{refused:?}"
        );
    }
    assert_eq!(banks.calls.load(Ordering::SeqCst), 0);
    assert!(gateway.current(txn(1)).unwrap().is_none());
    // The maximum itself is a payment like any other.
    let paid = pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", max)).unwrap();
    assert_eq!(paid.status, Status::Committed);
}

#[test]
fn a_crash_after_each_decision_log_record_recovers_to_all_or_nothing_at_both_banks() {
    for outcome in [Behaviour::Normal, Behaviour::VoteNo] {
        let storage = SimStorage::new();
        let banks = Banks::default();
        banks.set("bank_b", outcome);
        let gateway = open(&storage, banks.clone());
        // At the start of every bank call (so after Initiated, and after
        // Decided), and at the end, take the gateway's crash image together
        // with the banks' state at that moment.
        let images: Arc<Mutex<Vec<(SimStorage, Banks)>>> = Arc::default();
        {
            let images = Arc::clone(&images);
            let storage = storage.clone();
            *banks.on_call.lock().unwrap() = Some(Box::new(move |banks: &Banks| {
                images
                    .lock()
                    .unwrap()
                    .push((storage.crash(), banks.snapshot()));
            }));
        }
        pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500)).unwrap();
        *banks.on_call.lock().unwrap() = None;
        images
            .lock()
            .unwrap()
            .push((storage.crash(), banks.snapshot()));
        let images = std::mem::take(&mut *images.lock().unwrap());
        assert!(images.len() >= 4, "{outcome:?}: images after each record");
        for (index, (image, bank_state)) in images.into_iter().enumerate() {
            let recovered = open(&image, bank_state.clone());
            block_on(recovered.resume()).unwrap();
            let a = bank_state.state("bank_a", txn(1));
            let b = bank_state.state("bank_b", txn(1));
            let committed = [a, b]
                .iter()
                .filter(|state| **state == Some(BankTxn::Committed))
                .count();
            assert!(
                committed == 0 || committed == 2,
                "{outcome:?} image {index}: {a:?} / {b:?}"
            );
            assert!(
                a != Some(BankTxn::Prepared) && b != Some(BankTxn::Prepared),
                "{outcome:?} image {index}: left in doubt"
            );
            if outcome == Behaviour::VoteNo {
                assert_eq!(committed, 0);
            }
        }
    }
}

#[test]
fn checkpoints_keep_users_and_recent_payments_and_forget_old_finished_ones() {
    let storage = SimStorage::new();
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let options = GatewayOptions {
        snapshot_every: 3,
        retention_ms: 10_000,
        password_cost: Default::default(),
        ..options()
    };
    let open_at = |storage: &SimStorage| {
        Gateway::open(
            Arc::new(storage.clone()),
            options.clone(),
            Banks::default(),
            clock.clone(),
            Arc::new(TestEntropy(AtomicU64::new(7))),
            setup_users,
        )
        .unwrap()
    };
    let gateway = open_at(&storage);
    pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 5)).unwrap();
    assert!(
        gateway.checkpoint_if_due().unwrap(),
        "6 records since the start"
    );
    // Decided at the same time as payment 1: an id only heard of in a
    // bank's question, and a payment whose phase 2 has not run.
    assert_eq!(block_on(gateway.decision(txn(9))).unwrap(), Decision::Abort);
    let unsettled = block_on(gateway.pay("alice", payment(4, "bank_b", "456", 5))).unwrap();
    assert!(unsettled.phase_two_pending);
    clock.0.store(20_000, Ordering::SeqCst);
    pay_then_settle(&gateway, "alice", payment(2, "bank_b", "456", 5)).unwrap();
    assert!(gateway.checkpoint_if_due().unwrap());
    assert_eq!(
        gateway.in_memory(),
        1,
        "payment 4 has not ended; payment 2 ended and moved to the history"
    );
    assert!(gateway.payment("alice", txn(4)).is_ok());
    assert!(
        gateway.payment("alice", txn(2)).unwrap().ended,
        "found in the history"
    );
    assert!(
        matches!(
            gateway.payment("alice", txn(1)),
            Err(GatewayError::NoSuchPayment { .. })
        ),
        "payment 1 and id 9, decided 19 s ago, are forgotten"
    );
    pay_then_settle(&gateway, "alice", payment(3, "bank_b", "456", 5)).unwrap();
    drop(gateway);
    let recovered = open_at(&storage.crash());
    assert_eq!(recovered.in_memory(), 2, "snapshot (4) + replayed (3)");
    let stored = pay_then_settle(&recovered, "alice", payment(2, "bank_b", "456", 5)).unwrap();
    assert_eq!((stored.status, stored.replayed), (Status::Committed, true));
    assert!(
        recovered.login("bob", "hunter22", &mut hasher()).is_ok(),
        "users survive in the snapshot"
    );
    assert!(recovered.payment("alice", txn(3)).unwrap().ended);
}

/// Banks whose prepares wait until the test releases them.
#[derive(Clone)]
struct GatedBanks {
    inner: Banks,
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    entered: Arc<(Mutex<u32>, std::sync::Condvar)>,
}

impl Participant for GatedBanks {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, Vote> {
        {
            let (count, changed) = &*self.entered;
            *count.lock().unwrap() += 1;
            changed.notify_all();
        }
        let (open, changed) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = changed.wait(open).unwrap();
        }
        self.inner.prepare(bank, txn, legs, timeout)
    }

    fn commit<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.inner.commit(bank, txn, timeout)
    }

    fn abort<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.inner.abort(bank, txn, timeout)
    }
}

type PayThread = std::thread::JoinHandle<Result<Payment, GatewayError>>;

impl GatedBanks {
    fn new() -> GatedBanks {
        GatedBanks {
            inner: Banks::default(),
            gate: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            entered: Arc::new((Mutex::new(0), std::sync::Condvar::new())),
        }
    }

    fn open_gate(&self) {
        let (open, changed) = &*self.gate;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }
}

/// Starts alice's payment 1 and, once it is held in its prepare phase, a
/// repeat of it that waits on the outcome. Returns both threads.
fn pay_and_repeat_while_prepare_is_held(
    gateway: &Arc<Gateway<GatedBanks>>,
    banks: &GatedBanks,
) -> (PayThread, PayThread) {
    let spawn = || {
        let gateway = Arc::clone(gateway);
        std::thread::spawn(move || {
            pay_then_settle(&gateway, "alice", payment(1, "bank_b", "456", 2_500))
        })
    };
    let first = spawn();
    {
        let (count, changed) = &*banks.entered;
        let mut count = count.lock().unwrap();
        while *count == 0 {
            count = changed.wait(count).unwrap();
        }
    }
    let repeat = spawn();
    assert_eq!(
        gateway.current(txn(1)).unwrap().unwrap().status,
        Status::Initiated
    );
    // The repeat parks on the outcome (a waker is registered).
    while gateway.waiting_on(txn(1)) == 0 {
        std::thread::yield_now();
    }
    (first, repeat)
}

fn open_gated(storage: &SimStorage, banks: &GatedBanks) -> Arc<Gateway<GatedBanks>> {
    Arc::new(
        Gateway::open(
            Arc::new(storage.clone()),
            GatewayOptions {
                payments_in_flight_max: 1,
                waiters_max: 1,
                ..options()
            },
            banks.clone(),
            Arc::new(TestClock(AtomicU64::new(1_000))),
            Arc::new(TestEntropy(AtomicU64::new(7))),
            setup_users,
        )
        .unwrap(),
    )
}

#[test]
fn a_repeat_of_an_in_flight_txn_id_waits_for_its_outcome_and_never_starts_a_second_2pc() {
    let banks = GatedBanks::new();
    let gateway = open_gated(&SimStorage::new(), &banks);
    let (first, repeat) = pay_and_repeat_while_prepare_is_held(&gateway, &banks);
    // The one payment in flight is the most the options allow: a new id is
    // shed at once, nothing written for it.
    let shed = block_on(gateway.pay("alice", payment(2, "bank_b", "456", 5)));
    assert!(
        matches!(
            shed,
            Err(GatewayError::Overloaded {
                bound: coordinator::Bound::InFlight,
                limit: 1
            })
        ),
        "{shed:?}"
    );
    assert!(gateway.current(txn(2)).unwrap().is_none());
    // The one waiting repeat is the most allowed: another repeat is
    // answered with the payment as it stands, not parked.
    let busy = block_on(gateway.pay("alice", payment(1, "bank_b", "456", 2_500))).unwrap();
    assert_eq!(
        (busy.payment.status, busy.payment.replayed),
        (Status::Initiated, true)
    );
    assert_eq!(gateway.waiting_on(txn(1)), 1);
    banks.open_gate();
    let first = first.join().unwrap().unwrap();
    let repeat = repeat.join().unwrap().unwrap();
    assert_eq!((first.status, first.replayed), (Status::Committed, false));
    assert_eq!((repeat.status, repeat.replayed), (Status::Committed, true));
    // Two prepares (one per bank) for the first request only.
    assert_eq!(*banks.entered.0.lock().unwrap(), 2);
    assert_eq!(
        banks.inner.state("bank_b", txn(1)),
        Some(BankTxn::Committed)
    );
}

/// Found by the simulation (seed 501): a repeated request was answered with
/// a decision that was only in memory; its sync then failed, and after the
/// restart the payment was ABORTED. Nobody may hear a decision before it is
/// durable.
#[test]
fn no_one_hears_a_decision_whose_sync_failed() {
    let banks = GatedBanks::new();
    let storage = SimStorage::new();
    let gateway = open_gated(&storage, &banks);
    let (first, repeat) = pay_and_repeat_while_prepare_is_held(&gateway, &banks);
    // INITIATED is durable; the decision's sync will fail.
    storage.fail_syncs_after(0);
    banks.open_gate();
    assert!(matches!(
        first.join().unwrap(),
        Err(GatewayError::Storage(_))
    ));
    assert!(matches!(
        repeat.join().unwrap(),
        Err(GatewayError::Storage(_))
    ));
    assert!(matches!(
        block_on(gateway.decision(txn(1))),
        Err(GatewayError::Storage(_))
    ));
    assert_eq!(
        gateway.current(txn(1)).unwrap().unwrap().status,
        Status::Initiated
    );
    assert!(matches!(
        block_on(gateway.phase_two(txn(1))),
        Err(GatewayError::Storage(_))
    ));
    assert_eq!(
        banks.inner.state("bank_b", txn(1)),
        Some(BankTxn::Prepared),
        "no bank was told COMMIT"
    );
    drop(gateway);
    let restarted = open(&storage.crash(), banks.inner.clone());
    assert_eq!(
        restarted.current(txn(1)).unwrap().unwrap().status,
        Status::Aborted
    );
}
