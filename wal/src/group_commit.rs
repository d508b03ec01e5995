//! Group commit: many writers append; a few syncs carry them all.
//!
//! Appending only encodes the record into the pending batch under a mutex and
//! gives it the next LSN. Whoever takes the *writing role* moves the whole
//! pending batch out, writes it (one positional write per segment touched),
//! releases the role, and then `fdatasync`s while the next leader may already
//! write the next batch. Up to `syncs_in_flight_max` syncs overlap (two
//! concurrent `fdatasync`s complete 1.5-1.9x as many as one on this
//! project's disk, but the default is one: with two, closed-loop writers
//! split into cohorts whose smaller batches each pay a sync, and sixteen
//! blocking writers commit 1.14x as much with one; BENCHMARKS.md, Session 11).
//! The writing role is taken by:
//!
//! - a blocking appender whose record is not yet durable, when nobody is
//!   writing and a sync slot is free (leader/follower, after raft-engine's
//!   write barrier): a lone writer pays one write and one sync and no thread
//!   hand-off;
//! - a flusher thread, for batches holding async appends (futures cannot
//!   block), or on close.
//!
//! Durability is published in write order: every written batch gets a
//! ticket, and `durable_lsn` advances over the oldest tickets whose syncs
//! succeeded. A sync covers every write made before it was called, so a
//! later batch's sync may complete first without harm; it simply waits to
//! be published. Each sync slot syncs through its own file descriptor so a
//! writeback error is reported to every overlapping sync (Linux reports an
//! error once per open file description), never swallowed by a neighbour.
//!
//! Invariants: `durable_lsn` only grows, and only over records whose batch
//! and every earlier batch synced successfully; after a failed write or sync
//! the log is poisoned: nothing after the failure is ever acknowledged, and
//! nothing is retried.
//!
//! This module knows nothing of recovery, snapshots or what records mean.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{AppendError, IoFailure};
use crate::record::{self, Lsn, RecordKind};
use crate::segment::{PAGE_LEN, SEGMENT_HEADER_LEN};
use crate::segment_writer::{SegmentWriter, SyncTarget};

/// The bounds group commit works within.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub payload_len_max: u32,
    pub segment_size: u64,
    pub batch_delay_max: Duration,
    pub batch_bytes_max: usize,
    pub pending_bytes_max: usize,
    pub syncs_in_flight_max: usize,
    /// No flusher threads: waiters write and sync themselves.
    pub inline_flush: bool,
}

/// The longest a blocking appender polls (yielding the CPU) for in-flight
/// work to complete before it parks. Polling avoids a cross-CPU wake-up,
/// which costs tens of microseconds on virtual machines.
const SPIN_WAIT_MAX: Duration = Duration::from_micros(500);

/// Counters of group commit's work, for benchmarks and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches written and synced.
    pub flushes: u64,
    /// Records made durable by those batches.
    pub records: u64,
    /// Bytes written by those batches.
    pub bytes: u64,
    /// Time spent in write + sync calls, summed over batches, in microseconds.
    pub io_micros: u64,
    /// Time with no write or sync in flight while records were pending or
    /// about to be, in microseconds: the disk idled while writers woke up.
    pub idle_micros: u64,
}

#[derive(Default)]
struct StatCounters {
    flushes: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    io_micros: AtomicU64,
    idle_micros: AtomicU64,
}

/// Records bound for one segment, contiguous from `offset`.
pub(crate) struct Chunk {
    pub segment_first: Lsn,
    pub offset: u64,
    pub starts_segment: bool,
    pub bytes: Vec<u8>,
}

/// Everything appended since the last flush took the pending batch.
#[derive(Default)]
pub(crate) struct Batch {
    pub chunks: Vec<Chunk>,
    bytes: usize,
    first_lsn: Option<Lsn>,
    last_lsn: Option<Lsn>,
    has_async: bool,
    /// A cleared buffer kept to avoid reallocating the next chunk.
    recycled: Vec<u8>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.last_lsn.is_none()
    }

    fn records(&self) -> u64 {
        match (self.first_lsn, self.last_lsn) {
            (Some(first), Some(last)) => last.0 - first.0 + 1,
            _ => 0,
        }
    }

    /// Extends every chunk with zeros to the end of its last page (within
    /// the segment). Whole-page writes never make the kernel read a page
    /// that is not cached (segments are zero-filled around the page cache)
    /// before overwriting part of it; and the zeros after the tail, to its
    /// page end, are how recovery sees the end of a recycled segment.
    fn pad_to_pages(&mut self, segment_size: u64) {
        for chunk in &mut self.chunks {
            let end = chunk.offset + chunk.bytes.len() as u64;
            let padded = end.next_multiple_of(PAGE_LEN).min(segment_size);
            chunk.bytes.resize((padded - chunk.offset) as usize, 0);
        }
    }

    fn clear(&mut self) {
        if let Some(mut first) = self.chunks.drain(..).next() {
            first.bytes.clear();
            if first.bytes.capacity() > self.recycled.capacity() {
                self.recycled = first.bytes;
            }
        }
        self.bytes = 0;
        self.first_lsn = None;
        self.last_lsn = None;
        self.has_async = false;
    }
}

/// Where the next record will be placed.
#[derive(Clone, Copy)]
struct Tail {
    segment_first: Lsn,
    offset: u64,
}

/// A written batch awaiting publication, oldest first.
struct Ticket {
    last_lsn: u64,
    outcome: Option<Result<(), Arc<IoFailure>>>,
}

/// A parked blocking appender and the LSN it waits for (0: waits for space).
struct Sleeper {
    lsn: u64,
    thread: Thread,
}

pub(crate) struct State {
    next_lsn: Lsn,
    tail: Tail,
    pending: Batch,
    spare_batches: Vec<Batch>,
    /// Someone holds the writing role.
    writing: bool,
    free_slots: Vec<usize>,
    tickets: VecDeque<Ticket>,
    /// Sequence number of `tickets[0]`.
    first_ticket: u64,
    durable_lsn: u64,
    poisoned: Option<Arc<IoFailure>>,
    closed: bool,
    async_waiters: Vec<(Lsn, Waker)>,
    space_waiters: Vec<Waker>,
    /// Parked blocking appenders. Each is woken only when its record is
    /// durable, when it is handed the writing role, or on poison or close.
    sleepers: Vec<Sleeper>,
    flushers_idle: usize,
    /// Idle flushers already notified and not yet running: appends that
    /// find one on its way do not notify again (each notify is a syscall).
    flushers_notified: usize,
    /// Someone holds the next write back to let a batch gather.
    gathering: bool,
    /// Records the next batch is expected to reach: those of the last batch
    /// (their writers were just woken and may append again) plus those that
    /// were already waiting when it completed.
    gather_target: u64,
    /// When the disk last went idle (no write or sync in flight).
    idle_since: Instant,
}

impl State {
    fn in_flight(&self) -> bool {
        self.writing || !self.tickets.is_empty() || self.gathering
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Flusher threads wait here for work.
    work: Condvar,
    durable_lsn: AtomicU64,
    /// Bumped whenever a write or a sync completes, for polling waiters.
    epoch: AtomicU64,
    /// Records in the pending batch, for a gathering leader to poll.
    pending_records: AtomicU64,
    stats: StatCounters,
    writer: Mutex<SegmentWriter>,
    limits: Limits,
}

pub(crate) enum EnqueueError {
    Full,
    Refused(AppendError),
}

impl Shared {
    pub(crate) fn new(
        writer: SegmentWriter,
        next_lsn: Lsn,
        tail_segment_first: Lsn,
        tail_offset: u64,
        limits: Limits,
    ) -> Shared {
        assert!(tail_offset >= SEGMENT_HEADER_LEN as u64);
        assert!(limits.syncs_in_flight_max >= 1);
        // A log reopened with a smaller segment size may already hold more
        // than that in its live segment: the next record then starts a new
        // segment (of the new size).
        let tail_offset = tail_offset.min(limits.segment_size);
        let durable = next_lsn.0 - 1;
        Shared {
            state: Mutex::new(State {
                next_lsn,
                tail: Tail {
                    segment_first: tail_segment_first,
                    offset: tail_offset,
                },
                pending: Batch::default(),
                spare_batches: Vec::new(),
                writing: false,
                free_slots: (0..limits.syncs_in_flight_max).collect(),
                tickets: VecDeque::new(),
                first_ticket: 0,
                durable_lsn: durable,
                poisoned: None,
                closed: false,
                async_waiters: Vec::new(),
                space_waiters: Vec::new(),
                sleepers: Vec::new(),
                flushers_idle: 0,
                flushers_notified: 0,
                gathering: false,
                gather_target: 0,
                idle_since: Instant::now(),
            }),
            work: Condvar::new(),
            durable_lsn: AtomicU64::new(durable),
            epoch: AtomicU64::new(0),
            pending_records: AtomicU64::new(0),
            stats: StatCounters::default(),
            writer: Mutex::new(writer),
            limits,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("wal state lock poisoned")
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, SegmentWriter> {
        self.writer.lock().expect("wal writer lock poisoned")
    }

    /// The highest LSN known durable.
    pub(crate) fn durable_lsn(&self) -> Lsn {
        Lsn(self.durable_lsn.load(Ordering::Acquire))
    }

    pub(crate) fn next_lsn(&self) -> Lsn {
        self.lock().next_lsn
    }

    pub(crate) fn poisoned(&self) -> Option<AppendError> {
        self.lock().poisoned.as_ref().map(poisoned_error)
    }

    pub(crate) fn stats(&self) -> CommitStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CommitStats {
            flushes: load(&self.stats.flushes),
            records: load(&self.stats.records),
            bytes: load(&self.stats.bytes),
            io_micros: load(&self.stats.io_micros),
            idle_micros: load(&self.stats.idle_micros),
        }
    }

    pub(crate) fn check_payload(
        &self,
        kind: RecordKind,
        payload: &[u8],
    ) -> Result<(), AppendError> {
        if kind.0 == 0 {
            return Err(AppendError::ReservedKind);
        }
        if payload.len() > self.limits.payload_len_max as usize {
            return Err(AppendError::TooLarge {
                len: payload.len(),
                max: self.limits.payload_len_max,
            });
        }
        Ok(())
    }

    /// Encodes a record into the pending batch and gives it the next LSN.
    pub(crate) fn enqueue(
        &self,
        state: &mut State,
        kind: RecordKind,
        payload: &[u8],
        is_async: bool,
    ) -> Result<Lsn, EnqueueError> {
        if let Some(cause) = &state.poisoned {
            return Err(EnqueueError::Refused(poisoned_error(cause)));
        }
        if state.closed {
            return Err(EnqueueError::Refused(AppendError::Closed));
        }
        let framed = record::framed_len(payload.len());
        if !state.pending.is_empty() && state.pending.bytes + framed > self.limits.pending_bytes_max
        {
            return Err(EnqueueError::Full);
        }
        let lsn = state.next_lsn;
        let batch = &mut state.pending;
        if state.tail.offset + framed as u64 > self.limits.segment_size {
            state.tail = Tail {
                segment_first: lsn,
                offset: SEGMENT_HEADER_LEN as u64,
            };
            batch
                .chunks
                .push(new_chunk(&mut batch.recycled, state.tail, true));
        } else if batch.chunks.is_empty() {
            batch
                .chunks
                .push(new_chunk(&mut batch.recycled, state.tail, false));
        }
        let chunk = batch.chunks.last_mut().expect("a chunk was just ensured");
        record::encode(&mut chunk.bytes, lsn, kind, payload);
        state.tail.offset += framed as u64;
        batch.bytes += framed;
        batch.first_lsn.get_or_insert(lsn);
        batch.last_lsn = Some(lsn);
        batch.has_async |= is_async;
        state.next_lsn = lsn.next();
        self.pending_records
            .store(batch.records(), Ordering::Release);
        Ok(lsn)
    }

    /// Whether the caller may take the writing role now.
    fn can_write(&self, state: &State) -> bool {
        !state.writing
            && !state.gathering
            && !state.pending.is_empty()
            && !state.free_slots.is_empty()
            && state.poisoned.is_none()
    }

    /// `None` if the pending batch should be written now; otherwise the
    /// latest moment to wait for it to gather (adaptive group commit: hold
    /// the write until the writers we expect have appended, but never longer
    /// than `batch_delay_max` after the disk went idle).
    fn flush_readiness(&self, state: &State) -> Option<Instant> {
        if self.limits.batch_delay_max.is_zero()
            || state.closed
            || state.pending.bytes >= self.limits.batch_bytes_max
            || state.pending.records() >= state.gather_target
        {
            return None;
        }
        let deadline = state.idle_since + self.limits.batch_delay_max;
        (Instant::now() < deadline).then_some(deadline)
    }

    /// Holds the write back until the batch gathers or the delay ends,
    /// polling rather than parking: the writers it waits for are running.
    fn gather<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> MutexGuard<'a, State> {
        let target = state.gather_target;
        state.gathering = true;
        drop(state);
        while self.pending_records.load(Ordering::Acquire) < target && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let mut state = self.lock();
        state.gathering = false;
        state
    }

    /// Appends and returns once the record is durable.
    pub(crate) fn append_blocking(
        &self,
        kind: RecordKind,
        payload: &[u8],
    ) -> Result<Lsn, AppendError> {
        let (mut state, lsn) = self.enqueue_when_space(kind, payload, false)?;
        let mut spin_until = None;
        loop {
            if state.durable_lsn >= lsn.0 {
                return Ok(lsn);
            }
            if let Some(cause) = &state.poisoned {
                return Err(poisoned_error(cause));
            }
            if self.can_write(&state) {
                state = match self.flush_readiness(&state) {
                    Some(deadline) => self.gather(state, deadline),
                    None => self.flush(state),
                };
                continue;
            }
            let spin_deadline = *spin_until.get_or_insert_with(|| Instant::now() + SPIN_WAIT_MAX);
            if state.in_flight() && Instant::now() < spin_deadline {
                let epoch = self.epoch.load(Ordering::Acquire);
                drop(state);
                self.poll_until_progress(epoch, spin_deadline);
                if self.durable_lsn.load(Ordering::Acquire) >= lsn.0 {
                    return Ok(lsn);
                }
                state = self.lock();
                continue;
            }
            state = self.sleep(state, lsn.0);
        }
    }

    /// Places a record in the log (fixing its LSN) without waiting for it to
    /// be durable; a flusher thread writes it. Waits only for space.
    pub(crate) fn enqueue_only(
        &self,
        kind: RecordKind,
        payload: &[u8],
    ) -> Result<Lsn, AppendError> {
        let (mut state, lsn) = self.enqueue_when_space(kind, payload, true)?;
        self.wake_flusher(&mut state);
        Ok(lsn)
    }

    /// Enqueues, parking while the pending batch is full (backpressure).
    fn enqueue_when_space(
        &self,
        kind: RecordKind,
        payload: &[u8],
        is_async: bool,
    ) -> Result<(MutexGuard<'_, State>, Lsn), AppendError> {
        self.check_payload(kind, payload)?;
        let mut state = self.lock();
        loop {
            match self.enqueue(&mut state, kind, payload, is_async) {
                Ok(lsn) => return Ok((state, lsn)),
                Err(EnqueueError::Refused(error)) => return Err(error),
                Err(EnqueueError::Full) => state = self.sleep(state, 0),
            }
        }
    }

    fn poll_until_progress(&self, epoch: u64, deadline: Instant) {
        while self.epoch.load(Ordering::Acquire) == epoch && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// Parks the calling appender until a flush concerns it. Spurious wakes
    /// are harmless: callers re-check the state in a loop.
    fn sleep<'a>(&'a self, mut state: MutexGuard<'a, State>, lsn: u64) -> MutexGuard<'a, State> {
        let me = std::thread::current();
        match state
            .sleepers
            .iter_mut()
            .find(|sleeper| sleeper.thread.id() == me.id())
        {
            Some(sleeper) => sleeper.lsn = lsn,
            None => state.sleepers.push(Sleeper { lsn, thread: me }),
        }
        drop(state);
        std::thread::park();
        self.lock()
    }

    pub(crate) fn wake_flusher(&self, state: &mut State) {
        if state.flushers_idle > state.flushers_notified && self.can_write(state) {
            state.flushers_notified += 1;
            self.work.notify_one();
        }
    }

    /// Hands the writing role on if records are pending and a slot is free:
    /// to a parked writer of one of them, or to a flusher thread.
    fn next_writer(&self, state: &mut State) -> Option<Thread> {
        if !self.can_write(state) {
            return None;
        }
        match state
            .sleepers
            .iter()
            .position(|sleeper| sleeper.lsn > state.durable_lsn)
        {
            Some(index) => Some(state.sleepers.swap_remove(index).thread),
            None => {
                if state.pending.has_async || state.closed {
                    self.wake_flusher(state);
                }
                None
            }
        }
    }

    /// Takes the writing role, writes the pending batch, hands the role on,
    /// syncs, publishes in write order and wakes those it concerns. Returns
    /// with the state locked again.
    fn flush<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        assert!(self.can_write(&state), "flush needs the writing role");
        let slot = state.free_slots.pop().expect("a free sync slot");
        state.writing = true;
        if state.tickets.is_empty() {
            let idle = state.idle_since.elapsed().as_micros() as u64;
            self.stats.idle_micros.fetch_add(idle, Ordering::Relaxed);
        }
        let spare = state.spare_batches.pop().unwrap_or_default();
        let mut batch = mem::replace(&mut state.pending, spare);
        self.pending_records.store(0, Ordering::Release);
        let last = batch.last_lsn.expect("non-empty batch").0;
        let ticket = state.first_ticket + state.tickets.len() as u64;
        state.tickets.push_back(Ticket {
            last_lsn: last,
            outcome: None,
        });
        drop(state);

        batch.pad_to_pages(self.limits.segment_size);
        let started = Instant::now();
        let written = self.write_batch(&batch, slot);

        let mut state = self.lock();
        state.writing = false;
        let next = self.next_writer(&mut state);
        drop(state);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(thread) = next {
            thread.unpark();
        }

        let outcome = written.and_then(|target| {
            target.map_or(Ok(()), |target| {
                let syncing = Instant::now();
                let synced = target.sync();
                record_sync(&batch, syncing.elapsed());
                synced
            })
        });
        self.count(&batch, started.elapsed());

        let mut state = self.lock();
        state.free_slots.push(slot);
        let index = (ticket - state.first_ticket) as usize;
        state.tickets[index].outcome = Some(outcome.map_err(Arc::new));
        self.publish(&mut state);
        state.gather_target = batch.records() + state.pending.records();
        if state.tickets.is_empty() {
            state.idle_since = Instant::now();
        }
        batch.clear();
        if state.spare_batches.len() < self.limits.syncs_in_flight_max {
            state.spare_batches.push(batch);
        }
        let (threads, wakers) = self.collect_woken(&mut state);
        drop(state);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for thread in threads {
            thread.unpark();
        }
        for waker in wakers {
            waker.wake();
        }
        self.lock()
    }

    /// Advances `durable_lsn` over the oldest tickets whose syncs succeeded;
    /// a failed one poisons the log and stops publication for good.
    fn publish(&self, state: &mut State) {
        while let Some(front) = state.tickets.front() {
            match &front.outcome {
                None => break,
                Some(Ok(())) => {
                    assert!(front.last_lsn > state.durable_lsn, "durable lsn only grows");
                    state.durable_lsn = front.last_lsn;
                    self.durable_lsn.store(front.last_lsn, Ordering::Release);
                    state.tickets.pop_front();
                    state.first_ticket += 1;
                }
                Some(Err(failure)) => {
                    if state.poisoned.is_none() {
                        tracing::error!(error = %failure, "wal write failed; the log is poisoned");
                        state.poisoned = Some(Arc::clone(failure));
                        self.work.notify_all();
                    }
                    break;
                }
            }
        }
    }

    /// Everyone a publication concerns: writers now durable (all of them if
    /// poisoned), space waiters, and the next writer.
    fn collect_woken(&self, state: &mut State) -> (Vec<Thread>, Vec<Waker>) {
        let durable = state.durable_lsn;
        let everyone = state.poisoned.is_some();
        let mut wakers: Vec<Waker> = state
            .async_waiters
            .extract_if(.., |(lsn, _)| everyone || lsn.0 <= durable)
            .map(|(_, waker)| waker)
            .collect();
        wakers.append(&mut state.space_waiters);
        let mut threads: Vec<Thread> = state
            .sleepers
            .extract_if(.., |sleeper| everyone || sleeper.lsn <= durable)
            .map(|sleeper| sleeper.thread)
            .collect();
        threads.extend(self.next_writer(state));
        (threads, wakers)
    }

    fn count(&self, batch: &Batch, io_time: Duration) {
        metrics::counter!("minipay_wal_appended_bytes_total").increment(batch.bytes as u64);
        metrics::counter!("minipay_wal_records_total").increment(batch.records());
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(batch.records(), Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(batch.bytes as u64, Ordering::Relaxed);
        self.stats
            .io_micros
            .fetch_add(io_time.as_micros() as u64, Ordering::Relaxed);
    }

    /// Writes a batch; returns what to sync (nothing when syncing is off).
    fn write_batch(&self, batch: &Batch, slot: usize) -> Result<Option<SyncTarget>, IoFailure> {
        let mut writer = self.writer();
        for chunk in &batch.chunks {
            if chunk.starts_segment {
                writer.rotate(chunk.segment_first)?;
            }
            writer.write(chunk.offset, &chunk.bytes)?;
        }
        writer.sync_target(slot)
    }

    /// For an async append: ready if `lsn` is durable or the log poisoned,
    /// otherwise registers `waker` to be woken by the covering publication.
    pub(crate) fn poll_durable(&self, lsn: Lsn, waker: &Waker) -> Option<Result<Lsn, AppendError>> {
        if self.durable_lsn.load(Ordering::Acquire) >= lsn.0 {
            return Some(Ok(lsn));
        }
        let mut state = self.flush_inline(lsn);
        if state.durable_lsn >= lsn.0 {
            return Some(Ok(lsn));
        }
        if let Some(cause) = &state.poisoned {
            return Some(Err(poisoned_error(cause)));
        }
        state.async_waiters.push((lsn, waker.clone()));
        None
    }

    /// Without flusher threads, writes and syncs pending batches on the
    /// calling thread until `lsn` is durable (or nothing more can be
    /// written). With them, only locks the state.
    pub(crate) fn flush_inline(&self, lsn: Lsn) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        if self.limits.inline_flush {
            while state.durable_lsn < lsn.0 && self.can_write(&state) {
                state = self.flush(state);
            }
        }
        state
    }

    /// For an async append: enqueues the record, or registers `waker` for
    /// space when the pending batch is full.
    pub(crate) fn enqueue_async(
        &self,
        kind: RecordKind,
        payload: &[u8],
        waker: Option<&Waker>,
    ) -> Result<Lsn, EnqueueError> {
        let mut state = self.lock();
        let result = self.enqueue(&mut state, kind, payload, true);
        match (&result, waker) {
            (Ok(_), _) => self.wake_flusher(&mut state),
            (Err(EnqueueError::Full), Some(waker)) => state.space_waiters.push(waker.clone()),
            (Err(_), _) => {}
        }
        result
    }

    /// A flusher thread's loop: write batches nobody else will.
    pub(crate) fn run_flusher(&self) {
        let mut state = self.lock();
        loop {
            if state.poisoned.is_some() || (state.closed && state.pending.is_empty()) {
                return;
            }
            let ours = self.can_write(&state) && (state.pending.has_async || state.closed);
            if !ours {
                state.flushers_idle += 1;
                state = self.work.wait(state).expect("wal state lock");
                state.flushers_idle -= 1;
                state.flushers_notified = state.flushers_notified.saturating_sub(1);
                continue;
            }
            state = match self.flush_readiness(&state) {
                Some(deadline) => self.gather(state, deadline),
                None => self.flush(state),
            };
        }
    }

    /// Stops accepting appends; flusher threads drain what is pending and exit.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let sleepers = mem::take(&mut state.sleepers);
        drop(state);
        self.work.notify_all();
        for sleeper in sleepers {
            sleeper.thread.unpark();
        }
    }
}

pub(crate) fn poisoned_error(cause: &Arc<IoFailure>) -> AppendError {
    AppendError::Poisoned {
        cause: Arc::clone(cause),
    }
}

fn new_chunk(recycled: &mut Vec<u8>, tail: Tail, starts_segment: bool) -> Chunk {
    Chunk {
        segment_first: tail.segment_first,
        offset: tail.offset,
        starts_segment,
        bytes: mem::take(recycled),
    }
}
/// What an operator alerts on: how long each sync took and how many
/// records it made durable (through the `metrics` facade; nothing is
/// recorded unless the process installed a recorder).
fn record_sync(batch: &Batch, took: Duration) {
    metrics::histogram!("minipay_wal_sync_duration_seconds").record(took.as_secs_f64());
    metrics::histogram!("minipay_wal_records_per_sync").record(batch.records() as f64);
}
