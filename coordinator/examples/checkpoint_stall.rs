//! How long a gateway checkpoint holds the state lock as the payment table
//! grows. For each size N given: N payments through a gateway core on
//! in-memory storage with banks that always vote YES, then one checkpoint,
//! while another thread takes the state lock in a loop (`in_memory()`) and
//! records its longest wait.
//!
//! Run: `cargo run --release -p coordinator --example checkpoint_stall -- 100000 300000`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coordinator::{
    CallFuture, Clock, Endpoint, Entropy, Gateway, GatewayOptions, Participant, PaymentRequest,
    SetupUser, Vote,
};
use money::{AccountNo, Amount, BankName, Leg, TxnId};
use wal::block_on;
use wal::sim::SimStorage;

/// Banks that vote YES and acknowledge every decision at once.
struct AgreeableBanks;

impl Participant for AgreeableBanks {
    fn prepare<'a>(
        &'a self,
        _bank: &'a BankName,
        _txn: TxnId,
        _legs: Vec<Leg>,
        _timeout: Duration,
    ) -> CallFuture<'a, Vote> {
        Box::pin(std::future::ready(Ok(Vote::Yes)))
    }

    fn commit<'a>(
        &'a self,
        _bank: &'a BankName,
        _txn: TxnId,
        _timeout: Duration,
    ) -> CallFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn abort<'a>(
        &'a self,
        _bank: &'a BankName,
        _txn: TxnId,
        _timeout: Duration,
    ) -> CallFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_000
    }
}

/// Not random at all: this program makes no secrets.
struct CountingEntropy(AtomicU64);

impl Entropy for CountingEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        let mut state = self.0.fetch_add(1, Ordering::Relaxed);
        for byte in bytes {
            *byte = state as u8;
            state = state.rotate_right(8);
        }
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse().expect("sizes are payment counts"))
        .collect();
    for n in sizes {
        let (checkpoint, longest_wait) = measure(n);
        println!(
            "{n} payments: checkpoint {:.1} ms, longest wait for the state lock meanwhile {:.1} ms",
            checkpoint.as_secs_f64() * 1e3,
            longest_wait.as_secs_f64() * 1e3
        );
    }
}

/// Makes `n` payments, then times one checkpoint and the longest wait for
/// the state lock another thread saw meanwhile.
fn measure(n: u64) -> (Duration, Duration) {
    let gateway = Arc::new(open_gateway(n));
    pay_all(&gateway, n);
    assert_eq!(gateway.in_memory(), n as usize);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = spawn_prober(Arc::clone(&gateway), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    assert!(gateway.checkpoint_if_due().expect("checkpoint"));
    let checkpoint = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    (checkpoint, prober.join().expect("prober"))
}

/// A gateway core on in-memory storage with one user, alice, whose
/// snapshot falls due exactly after the `n`th payment, so that the
/// checkpoint measured covers all of them.
fn open_gateway(n: u64) -> Gateway<AgreeableBanks> {
    let banks = vec![
        BankName::parse("bank_a").unwrap(),
        BankName::parse("bank_b").unwrap(),
    ];
    let options = GatewayOptions {
        wal: wal::Options {
            segment_size: 64 << 10,
            payload_len_max: 4096,
            prepare_segments_ahead: false,
            ..wal::Options::default()
        },
        // Three records per payment: the checkpoint is due after the last.
        snapshot_every: 3 * n,
        ..GatewayOptions::new(banks, "INR")
    };
    let users = || {
        vec![SetupUser {
            username: "alice".into(),
            password: "password-1".into(),
            bank: BankName::parse("bank_a").unwrap(),
            account: AccountNo::parse("123").unwrap(),
        }]
    };
    Gateway::open(
        Arc::new(SimStorage::new()),
        options,
        AgreeableBanks,
        Arc::new(FixedClock),
        Arc::new(CountingEntropy(AtomicU64::new(1))),
        users,
    )
    .expect("open a gateway")
}

/// `n` payments of one minor unit from alice to bank_b, each through its
/// phase 2, so the payment table holds `n` finished payments.
fn pay_all(gateway: &Gateway<AgreeableBanks>, n: u64) {
    for index in 0..n {
        let txn = TxnId(u128::from(index + 1).to_le_bytes());
        let request = PaymentRequest {
            txn,
            from: Endpoint {
                bank: BankName::parse("bank_a").unwrap(),
                account: AccountNo::parse("123").unwrap(),
            },
            to: Endpoint {
                bank: BankName::parse("bank_b").unwrap(),
                account: AccountNo::parse("456").unwrap(),
            },
            amount: Amount(1),
            currency: "INR".into(),
        };
        let paid = block_on(gateway.pay("alice", request)).expect("pay");
        if paid.phase_two_pending {
            block_on(gateway.phase_two(txn)).expect("phase 2");
        }
    }
}

/// A thread that takes the state lock in a loop until `stop`, and returns
/// the longest it waited for it: how long a checkpoint stalls the gateway.
fn spawn_prober(
    gateway: Arc<Gateway<AgreeableBanks>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut longest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let asked = Instant::now();
            std::hint::black_box(gateway.in_memory());
            longest = longest.max(asked.elapsed());
        }
        longest
    })
}
