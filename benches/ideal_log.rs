//! The ideal log, shared by `wal_commit` and `wal_settings`: what any log
//! could reach for closed-loop async writers through tokio on this disk.
//!
//! Every writer copies its record (a CRC and zeros in place of minipay's
//! header, then the payload, framed to minipay's length) into one buffer under one mutex and
//! waits. A driver thread waits until every writer has appended, writes the
//! buffer as whole pages through `O_DIRECT` into a preallocated file,
//! `fdatasync`s and wakes them all: one round. No format, segments,
//! recovery or checkpoints, so minipay's log against it is the log's own
//! cost.

use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use minipay::tools::wal::preallocated_scratch;
use wal::{RECORD_HEADER_LEN, framed_len};

/// Bytes of the preallocated file the rounds are written to, in turn.
const FILE_LEN: u64 = 4 << 20;

/// The ideal log's file, and the aligned buffer a round is written from.
pub struct IdealLog {
    path: PathBuf,
    file: std::fs::File,
    direct: std::fs::File,
    buffer: Vec<u8>,
}

impl IdealLog {
    pub fn create(path: &Path) -> IdealLog {
        let (file, direct) =
            preallocated_scratch(path, FILE_LEN, true).expect("create ideal log file");
        IdealLog {
            path: path.to_owned(),
            file,
            direct: direct.expect("an O_DIRECT descriptor"),
            buffer: Vec::new(),
        }
    }

    /// `writers` async tasks on `runtime` append `payload` in closed loop,
    /// round after round, until `done(rounds completed, time taken)`;
    /// returns the records made durable and the time taken.
    pub fn run(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        writers: usize,
        payload: &[u8],
        done: impl Fn(u64, Duration) -> bool + Send,
    ) -> (u64, Duration) {
        let round_len = (writers * framed_len(payload.len())).next_multiple_of(4096);
        if self.buffer.len() < round_len + 4096 {
            self.buffer = vec![0u8; round_len + 4096];
        }
        let start = self.buffer.as_ptr().align_offset(4096);
        let block = &mut self.buffer[start..start + round_len];
        let (file, direct) = (&self.file, &self.direct);
        let state = Arc::new(Rounds::default());
        let started = Instant::now();
        std::thread::scope(|scope| {
            let driver = Arc::clone(&state);
            scope.spawn(move || {
                let mut round = 0u64;
                loop {
                    while driver.appended.load(Ordering::Acquire) < writers {
                        std::thread::yield_now();
                    }
                    driver.appended.store(0, Ordering::Release);
                    let records = {
                        let mut pending = driver.pending.lock().expect("ideal log lock");
                        std::mem::take(&mut pending.0)
                    };
                    block[..records.len()].copy_from_slice(&records);
                    let at = (round * round_len as u64) % (FILE_LEN - round_len as u64);
                    direct.write_all_at(block, at).expect("pwrite");
                    file.sync_data().expect("fdatasync");
                    round += 1;
                    let last = done(round, started.elapsed());
                    let wakers = {
                        let mut pending = driver.pending.lock().expect("ideal log lock");
                        if last {
                            driver.last.store(round, Ordering::Release);
                        }
                        driver.durable.store(round, Ordering::Release);
                        std::mem::take(&mut pending.1)
                    };
                    wakers.into_iter().for_each(Waker::wake);
                    if last {
                        return;
                    }
                }
            });
            runtime.block_on(async {
                let tasks: Vec<_> = (0..writers)
                    .map(|_| {
                        let (state, payload) = (Arc::clone(&state), payload.to_vec());
                        tokio::spawn(async move {
                            let mut round = 0;
                            while state.last.load(Ordering::Acquire) == 0 {
                                Append {
                                    rounds: &state,
                                    payload: &payload,
                                    round,
                                    appended: false,
                                }
                                .await;
                                round += 1;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("writer task");
                }
            });
        });
        let rounds = state.durable.load(Ordering::Acquire);
        (rounds * writers as u64, started.elapsed())
    }
}

impl Drop for IdealLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The state of a run: the round's records and who waits for them.
#[derive(Default)]
struct Rounds {
    pending: Mutex<(Vec<u8>, Vec<Waker>)>,
    /// Completed rounds.
    durable: AtomicU64,
    /// Records appended in the current round.
    appended: AtomicUsize,
    /// The round the run ended with (0 while it goes on).
    last: AtomicU64,
}

/// One append: copied in on first poll, ready once its round is durable.
struct Append<'a> {
    rounds: &'a Rounds,
    payload: &'a [u8],
    round: u64,
    appended: bool,
}

impl Future for Append<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.rounds.durable.load(Ordering::Acquire) > self.round {
            return Poll::Ready(());
        }
        let mut pending = self.rounds.pending.lock().expect("ideal log lock");
        if self.rounds.durable.load(Ordering::Acquire) > self.round {
            return Poll::Ready(());
        }
        if !self.appended {
            let (buffer, _) = &mut *pending;
            buffer.extend_from_slice(&crc32fast::hash(self.payload).to_le_bytes());
            buffer.extend_from_slice(&[0u8; RECORD_HEADER_LEN - 4]);
            buffer.extend_from_slice(self.payload);
            buffer.resize(buffer.len().next_multiple_of(8), 0);
        }
        pending.1.push(context.waker().clone());
        drop(pending);
        if !std::mem::replace(&mut self.appended, true) {
            self.rounds.appended.fetch_add(1, Ordering::AcqRel);
        }
        Poll::Pending
    }
}
