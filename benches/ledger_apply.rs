//! `ledger_apply`: transfers per second through a bank's ledger on the real
//! WAL (durable: every prepare and every commit is fsynced before it is
//! answered), one caller and 64 concurrent callers. One element is one
//! transfer: a prepare (debit + credit, holds made durable) and its commit.
//!
//! Run: `cargo bench --bench ledger_apply`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ledger::{Bank, BankOptions, Seed, Vote};
use money::{AccountNo, Amount, Direction, Leg, TxnId};

const ACCOUNTS: u64 = 1000;

fn open_bank(name: &str) -> Arc<Bank> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let storage = wal::FsStorage::open_locked(&dir).expect("scratch dir");
    let seeds = || {
        Ok((0..ACCOUNTS)
            .map(|index| Seed {
                account: AccountNo::parse(&index.to_string()).expect("digits"),
                owner: format!("owner{index}"),
                balance: Amount(1_000_000_000),
            })
            .collect())
    };
    let (bank, _) = Bank::open(
        Arc::new(storage),
        "bank_a",
        "INR",
        seeds,
        BankOptions::default(),
    )
    .expect("open bank");
    Arc::new(bank)
}

async fn transfer(bank: &Bank, sequence: u64) {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&sequence.to_le_bytes());
    let txn = TxnId(id);
    let from = sequence % ACCOUNTS;
    let to = (sequence * 7 + 1) % ACCOUNTS;
    let to = if to == from { (to + 1) % ACCOUNTS } else { to };
    let legs = [
        Leg {
            account: AccountNo::parse(&from.to_string()).expect("digits"),
            direction: Direction::Debit,
            amount: Amount(100),
        },
        Leg {
            account: AccountNo::parse(&to.to_string()).expect("digits"),
            direction: Direction::Credit,
            amount: Amount(100),
        },
    ];
    let vote = bank.prepare(txn, &legs, sequence).await.expect("prepare");
    assert_eq!(vote, Vote::Yes);
    bank.commit(txn, sequence).await.expect("commit");
}

fn ledger_apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("ledger_apply");
    for callers in [1u64, 64] {
        let bank = open_bank(&format!("ledger-{callers}"));
        let sequence = Arc::new(AtomicU64::new(0));
        group.throughput(Throughput::Elements(callers));
        group.bench_function(
            BenchmarkId::new("transfers", format!("{callers}_callers")),
            |b| {
                b.iter_custom(|rounds| {
                    runtime.block_on(async {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..callers)
                            .map(|_| {
                                let bank = Arc::clone(&bank);
                                let sequence = Arc::clone(&sequence);
                                tokio::spawn(async move {
                                    for _ in 0..rounds {
                                        transfer(&bank, sequence.fetch_add(1, Ordering::Relaxed))
                                            .await;
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("caller");
                        }
                        started.elapsed()
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = ledger_apply
}
criterion_main!(benches);
