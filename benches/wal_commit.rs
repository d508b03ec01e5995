//! `wal_commit`: durable appends per second through minipay's WAL, against
//! what a user would pick instead, measured in the same run:
//!
//! - the raw disk: `pwrite` 4 KiB + `fdatasync` on a preallocated file, and
//!   the same for one 256-record batch through `O_DIRECT` (what 256
//!   closed-loop writers could reach with no time at all between syncs);
//! - okaywal (crates.io), a WAL with group commit, through the same writers;
//! - the ideal log (`ideal_log.rs`) for the 256 async writers: each copies
//!   its record (with a CRC) into one buffer under one mutex and waits; a
//!   thread writes the buffer's 72 KiB through `O_DIRECT`, syncs and wakes
//!   them all. No format, segments or recovery: what any log could reach
//!   through the same runtime on this disk, so the ratio to it is the log's
//!   own cost.
//!
//! One iteration is one round: every writer appends (and waits for) one
//! record, so throughput is in records. Replay speed (`wal_replay`) is opening
//! a log and reading every record, in bytes per second.
//!
//! Run: `cargo bench --bench wal_commit` (scratch files go under the target
//! directory, on the same filesystem as the build).

mod ideal_log;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ideal_log::IdealLog;
use minipay::tools::wal::preallocated_scratch;
use wal::{Lsn, Options, RecordKind, SyncPolicy, Wal};

const KIND: RecordKind = RecordKind(0x7F);

fn scratch(name: &str) -> PathBuf {
    let dir = scratch_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("has a parent")).expect("create scratch dir");
    dir
}

fn raw_fdatasync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_commit");
    // What one durable write costs with no log at all.
    group.throughput(Throughput::Elements(1));
    raw_pwrite_fdatasync(&mut group, "raw_pwrite_fdatasync_4KiB", 4096, false);
    // What the disk allows 256 closed-loop writers: one batch of 256
    // records of 256 B (280 B framed, 70 KiB, written as 18 whole pages
    // through O_DIRECT as the log writes) per sync, with no time between
    // syncs. Counted in records, so its throughput is that ceiling.
    group.throughput(Throughput::Elements(256));
    raw_pwrite_fdatasync(
        &mut group,
        "raw_direct_72KiB_per_256_records",
        18 * 4096,
        true,
    );
    group.finish();
}

/// `pwrite` of `len` bytes + `fdatasync`, cycling over a preallocated
/// (zero-filled, synced) 4 MiB scratch file; `direct` writes through an
/// `O_DIRECT` descriptor.
fn raw_pwrite_fdatasync(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    len: usize,
    direct: bool,
) {
    const FILE_LEN: usize = 4 << 20;
    let path = scratch(name).with_extension("tmp");
    let (file, direct_file) =
        preallocated_scratch(&path, FILE_LEN as u64, direct).expect("create raw scratch file");
    let writes_to = direct_file.as_ref().unwrap_or(&file);
    // Page-aligned, as direct I/O needs.
    let buffer = vec![0x5Au8; len + 4096];
    let start = buffer.as_ptr().align_offset(4096);
    let block = &buffer[start..start + len];
    let slots = (FILE_LEN / len) as u64;
    let mut slot = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            writes_to
                .write_all_at(block, (slot % slots) * len as u64)
                .expect("pwrite");
            file.sync_data().expect("fdatasync");
            slot += 1;
        })
    });
    let _ = std::fs::remove_file(&path);
}

/// 256 async writers on the ideal log (`ideal_log.rs`), through the same
/// 2-thread runtime as minipay's `256_async`. It runs right after
/// minipay's `256_async_checkpointed`: this machine's speed swings within
/// minutes, so the two are compared only when measured back to back.
fn ideal_log_256_async(c: &mut Criterion) {
    const WRITERS: usize = 256;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let mut log = IdealLog::create(&scratch("ideal_log").with_extension("tmp"));
    let payload = vec![0xA5u8; 256];
    let mut group = c.benchmark_group("wal_commit");
    group.throughput(Throughput::Elements(WRITERS as u64));
    group.bench_function("ideal_log/256_async/256B", |b| {
        b.iter_custom(|rounds| {
            let (_, elapsed) = log.run(&runtime, WRITERS, &payload, |done, _| done >= rounds);
            elapsed
        })
    });
    group.finish();
}

fn scratch_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-scratch")
        .join(name)
}

/// Removes a benchmark's log once it is measured: the runs without
/// checkpoints leave gigabytes of segments.
fn remove_scratch(name: &str) {
    let _ = std::fs::remove_dir_all(scratch_path(name));
}

fn open_minipay(name: &str) -> Arc<Wal> {
    let options = Options {
        payload_len_max: 4096,
        ..Options::default()
    };
    Arc::new(Wal::open(&scratch(name), options).expect("open wal").wal)
}

/// Every writer thread appends `rounds` records; returns the elapsed time.
fn thread_rounds(log: &Arc<Wal>, writers: usize, rounds: u64, payload: &[u8]) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..writers {
            scope.spawn(|| {
                for _ in 0..rounds {
                    log.append(KIND, payload).expect("durable append");
                }
            });
        }
    });
    started.elapsed()
}

/// Every async writer task appends `rounds` records on a 2-thread runtime.
fn async_rounds(
    runtime: &tokio::runtime::Runtime,
    log: &Arc<Wal>,
    writers: usize,
    rounds: u64,
    payload: &[u8],
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let log = Arc::clone(log);
                let payload = payload.to_vec();
                tokio::spawn(async move {
                    for _ in 0..rounds {
                        log.append_async(KIND, &payload)
                            .await
                            .expect("durable append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
        started.elapsed()
    })
}

fn minipay_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("wal_commit");
    for size in [256usize, 4096] {
        let payload = vec![0xA5u8; size];
        for (writers, use_async) in [(1usize, false), (16, false), (16, true), (256, true)] {
            let mode = if use_async { "async" } else { "threads" };
            let name = format!("minipay-{writers}-{mode}-{size}");
            let log = open_minipay(&name);
            group.throughput(Throughput::Elements(writers as u64));
            let id = BenchmarkId::new(format!("minipay/{writers}_{mode}"), format!("{size}B"));
            group.bench_function(id, |b| {
                b.iter_custom(|rounds| {
                    if use_async {
                        async_rounds(&runtime, &log, writers, rounds, &payload)
                    } else {
                        thread_rounds(&log, writers, rounds, &payload)
                    }
                })
            });
            drop(log);
            remove_scratch(&name);
        }
    }
    // The same 256 writers on a log whose owner checkpoints after every
    // timed round (untimed), as the banks and the gateway do: segments are
    // then reused instead of zero-filled while the writers append.
    let payload = vec![0xA5u8; 256];
    let log = open_minipay("minipay-256-async-checkpointed");
    // Start in the steady state of such a log: it has cycled through a few
    // segments, so the spare and the segments waiting for reuse are old ones.
    for _ in 0..8 {
        async_rounds(&runtime, &log, 256, 500, &payload);
        log.checkpoint(log.durable_lsn()).expect("checkpoint");
    }
    group.throughput(Throughput::Elements(256));
    group.bench_function(
        BenchmarkId::new("minipay/256_async_checkpointed", "256B"),
        |b| {
            b.iter_custom(|rounds| {
                let elapsed = async_rounds(&runtime, &log, 256, rounds, &payload);
                log.checkpoint(log.durable_lsn()).expect("checkpoint");
                elapsed
            })
        },
    );
    group.finish();
    drop(log);
    remove_scratch("minipay-256-async-checkpointed");
}

#[derive(Debug)]
struct NoCheckpoints;

impl okaywal::LogManager for NoCheckpoints {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: okaywal::EntryId,
        _checkpointed_entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn okaywal_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_commit");
    for size in [256usize, 4096] {
        let payload = vec![0xA5u8; size];
        for writers in [1usize, 16] {
            let name = format!("okaywal-{writers}-{size}");
            let log = okaywal::WriteAheadLog::recover(scratch(&name), NoCheckpoints)
                .expect("open okaywal");
            group.throughput(Throughput::Elements(writers as u64));
            let id = BenchmarkId::new(format!("okaywal/{writers}_threads"), format!("{size}B"));
            group.bench_function(id, |b| {
                b.iter_custom(|rounds| {
                    let started = Instant::now();
                    std::thread::scope(|scope| {
                        for _ in 0..writers {
                            scope.spawn(|| {
                                for _ in 0..rounds {
                                    let mut entry = log.begin_entry().expect("begin entry");
                                    entry.write_chunk(&payload).expect("write chunk");
                                    entry.commit().expect("durable commit");
                                }
                            });
                        }
                    });
                    started.elapsed()
                })
            });
            drop(log);
            remove_scratch(&name);
        }
    }
    group.finish();
}

fn replay(c: &mut Criterion) {
    let dir = scratch("replay");
    let options = Options {
        sync: SyncPolicy::NeverNotDurable,
        payload_len_max: 4096,
        ..Options::default()
    };
    let payload = vec![0x3Cu8; 4000];
    {
        let log = Wal::open(&dir, options).expect("open").wal;
        for _ in 0..64_000 {
            log.append(KIND, &payload).expect("append");
        }
        log.close().expect("close");
    }
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("scratch dir")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".wal"))
        .map(|entry| entry.metadata().expect("metadata").len())
        .sum();
    let mut group = c.benchmark_group("wal_replay");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("open_and_replay_256MiB", |b| {
        b.iter(|| {
            let recovered = Wal::open(&dir, options).expect("open");
            let mut records = 0u64;
            recovered
                .wal
                .replay(Lsn::FIRST, |record| {
                    records += record.payload.len() as u64 / 4000;
                    Ok::<_, std::convert::Infallible>(())
                })
                .expect("replay");
            assert_eq!(records, 64_000);
        })
    });
    group.finish();
    remove_scratch("replay");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = raw_fdatasync, minipay_commit, ideal_log_256_async, okaywal_commit, replay
}
criterion_main!(benches);
