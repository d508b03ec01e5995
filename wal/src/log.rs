//! The log as its owners see it: open (with recovery), append, replay,
//! checkpoint.
//!
//! Opening scans every segment ([`crate::recovery`]), refuses corruption,
//! zeroes a torn tail, removes leftover temp files and then hands the open
//! segment to group commit. Owners recover their state as "newest snapshot +
//! replay of the records after it", and bound that work by calling
//! [`Wal::checkpoint_with_snapshot`] now and then.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::async_append::{AppendFuture, DurableFuture};
use crate::error::{
    AppendError, CheckpointError, IoFailure, OpenError, ReplayError, SnapshotError,
};
use crate::group_commit::{CommitStats, Limits, Shared};
use crate::record::{self, Lsn, RecordKind, RecordRef};
use crate::recovery::{self, Damage, Scan};
use crate::segment::{self, SEGMENT_HEADER_LEN};
use crate::segment_writer::{RECYCLE_MAX, SegmentWriter, SyncPolicy};
use crate::snapshot::{self, Snapshot};
use crate::storage::{FsStorage, Storage};

/// The largest payload any log accepts, whatever its options.
pub const PAYLOAD_LEN_LIMIT: u32 = 64 << 20;

/// How a log is configured. Every bound is explicit; bad combinations are
/// rejected by [`Wal::open`], never clamped.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Size of every segment file, preallocated.
    pub segment_size: u64,
    /// The largest record payload accepted.
    pub payload_len_max: u32,
    pub sync: SyncPolicy,
    /// Adaptive group commit: the longest a write is held back for the
    /// writers the previous batch woke to append again. The hold ends as soon
    /// as they have; a lone writer is never held. It delays acknowledgements,
    /// it never acknowledges early. Zero writes at once.
    pub batch_delay_max: Duration,
    /// A batch this large is synced without waiting out the delay.
    pub batch_bytes_max: usize,
    /// Appends wait once this many bytes are pending (backpressure).
    pub pending_bytes_max: usize,
    /// Zero-fill the next segment on a background thread.
    pub prepare_segments_ahead: bool,
    /// How many `fdatasync` calls may overlap (each covering a later batch).
    /// One by default: a second lets the writers split into two cohorts
    /// with smaller batches, which on this project's disk gained nothing for
    /// async writers and cost blocking ones 12% (BENCHMARKS.md, Session 11).
    pub syncs_in_flight_max: usize,
    /// Write and sync async appends on flusher threads (the default). When
    /// false there are none: whoever waits for a record to be durable (a
    /// polled future, a blocking append) writes and syncs the pending batch
    /// on its own thread. Nothing then happens behind the owner's back,
    /// which a deterministic simulation needs; batches are smaller.
    pub background_flush: bool,
}

/// The most syncs [`Options::syncs_in_flight_max`] may allow.
pub const SYNCS_IN_FLIGHT_LIMIT: usize = 16;

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size: 64 << 20,
            payload_len_max: 1 << 20,
            sync: SyncPolicy::Always,
            batch_delay_max: Duration::from_micros(200),
            batch_bytes_max: 4 << 20,
            pending_bytes_max: 64 << 20,
            prepare_segments_ahead: true,
            syncs_in_flight_max: 1,
            background_flush: true,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), OpenError> {
        let largest = record::framed_len(self.payload_len_max as usize);
        if self.payload_len_max == 0 || self.payload_len_max > PAYLOAD_LEN_LIMIT {
            return Err(OpenError::BadOptions(
                "payload_len_max must be between 1 byte and 64 MiB",
            ));
        }
        if self.segment_size < (SEGMENT_HEADER_LEN + largest) as u64 {
            return Err(OpenError::BadOptions(
                "segment_size must hold a segment header and the largest record",
            ));
        }
        if self.pending_bytes_max < largest {
            return Err(OpenError::BadOptions(
                "pending_bytes_max must hold the largest record",
            ));
        }
        if self.syncs_in_flight_max == 0 || self.syncs_in_flight_max > SYNCS_IN_FLIGHT_LIMIT {
            return Err(OpenError::BadOptions(
                "syncs_in_flight_max must be between 1 and 16",
            ));
        }
        if self.batch_bytes_max == 0 {
            return Err(OpenError::BadOptions("batch_bytes_max must be positive"));
        }
        Ok(())
    }
}

/// What recovery did on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub first_lsn: Lsn,
    pub next_lsn: Lsn,
    /// Set when a torn tail was zeroed: (segment file, offset, bytes zeroed).
    pub torn_tail: Option<(String, u64, u64)>,
    /// True when the directory held no log and a new one was created.
    pub created: bool,
}

/// An opened log, the newest snapshot beside it, and what recovery did.
pub struct Recovered {
    pub wal: Wal,
    pub snapshot: Option<Snapshot>,
    pub report: RecoveryReport,
}

/// A write-ahead log. Share it between threads by reference or `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    payload_len_max: u32,
    flushers: Vec<JoinHandle<()>>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, taking its exclusive lock.
    pub fn open(dir: &Path, options: Options) -> Result<Recovered, OpenError> {
        let mut storage = FsStorage::open_locked(dir)
            .map_err(|source| IoFailure::new("open", dir.display().to_string(), source))?;
        if options.sync == SyncPolicy::NeverNotDurable {
            storage = storage.buffered_only();
        }
        Wal::open_storage(Arc::new(storage), options)
    }

    /// Opens (or creates) the log on any storage.
    pub fn open_storage(
        storage: Arc<dyn Storage>,
        options: Options,
    ) -> Result<Recovered, OpenError> {
        options.validate()?;
        let (scan, created) = scan_or_create(&*storage, &options)?;
        let kept_for_reuse = remove_temp_files(&*storage, &scan, options.prepare_segments_ahead)?;
        let torn_tail = zero_torn_tail(&*storage, &scan)?;
        let snapshot = load_snapshot(&*storage)?;
        let last = scan.segments.last().expect("a log has a segment");
        let report = RecoveryReport {
            segments: scan.segments.len(),
            records: scan.records(),
            first_lsn: scan.first_lsn,
            next_lsn: scan.next_lsn,
            torn_tail,
            created,
        };
        let writer = SegmentWriter::new(
            Arc::clone(&storage),
            options.segment_size,
            options.sync,
            scan.segments
                .iter()
                .map(|segment| segment.first_lsn)
                .collect(),
            options.prepare_segments_ahead,
            kept_for_reuse,
        )?;
        let shared = Arc::new(Shared::new(
            writer,
            scan.next_lsn,
            last.first_lsn,
            last.end_offset,
            group_commit_limits(&options),
        ));
        let flushers = spawn_flushers(&shared, &*storage, &options)?;
        let wal = Wal {
            shared,
            storage,
            payload_len_max: options.payload_len_max,
            flushers,
        };
        Ok(Recovered {
            wal,
            snapshot,
            report,
        })
    }

    /// Appends a record and returns its LSN once it is durable. Blocks the
    /// calling thread; see [`Wal::append_async`] for async callers.
    pub fn append(&self, kind: RecordKind, payload: &[u8]) -> Result<Lsn, AppendError> {
        self.shared.append_blocking(kind, payload)
    }

    /// Appends a record; the future resolves to its LSN once it is durable.
    /// The record's place in the log is fixed when this is called, not when
    /// the future is first polled (unless the pending batch is full).
    pub fn append_async(&self, kind: RecordKind, payload: &[u8]) -> AppendFuture {
        AppendFuture::start(Arc::clone(&self.shared), kind, payload)
    }

    /// Places a record in the log and returns its LSN at once, before it is
    /// durable; pair it with [`Wal::wait_durable`]. For owners that must
    /// order log records exactly as they change memory (under their own
    /// lock) and wait for durability outside it. Blocks only while the
    /// pending batch is full.
    pub fn enqueue(&self, kind: RecordKind, payload: &[u8]) -> Result<Lsn, AppendError> {
        self.shared.enqueue_only(kind, payload)
    }

    /// Resolves once every record up to `lsn` is durable.
    pub fn wait_durable(&self, lsn: Lsn) -> DurableFuture {
        DurableFuture::new(Arc::clone(&self.shared), lsn)
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn()
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.next_lsn()
    }

    /// The oldest LSN still in the log.
    pub fn first_lsn(&self) -> Lsn {
        self.shared.writer().first_lsn()
    }

    /// Counters of group commit's work so far.
    pub fn commit_stats(&self) -> CommitStats {
        self.shared.stats()
    }

    /// Live segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.writer().segment_count()
    }

    /// The error every append gets, if a failed write or sync poisoned the log.
    pub fn poisoned(&self) -> Option<AppendError> {
        self.shared.poisoned()
    }

    /// The storage the log lives on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Calls `visit` with every durable record from `from` on, in LSN order.
    /// Returns the number of records visited.
    pub fn replay<E>(
        &self,
        from: Lsn,
        visit: impl FnMut(RecordRef<'_>) -> Result<(), E>,
    ) -> Result<u64, ReplayError<E>> {
        let segments = {
            let writer = self.shared.writer();
            writer.segment_firsts()
        };
        read_records(
            &*self.storage,
            &segments,
            from,
            self.durable_lsn(),
            self.payload_len_max,
            visit,
        )
    }

    /// Declares that the owner's state up to `covered` is saved elsewhere:
    /// removes every segment holding only records up to `covered` (never
    /// the open one). Up to two of them are kept, renamed, to be reused as
    /// the next segments instead of zero-filling new files; the rest are
    /// deleted. A reused segment is overwritten, so no replay may still be
    /// reading records up to `covered`. Returns how many segments were
    /// removed.
    pub fn checkpoint(&self, covered: Lsn) -> Result<usize, CheckpointError> {
        let durable = self.durable_lsn();
        if covered > durable {
            return Err(CheckpointError::BeyondDurable {
                requested: covered,
                durable,
            });
        }
        if let Some(poisoned) = self.poisoned() {
            return Err(CheckpointError::Poisoned(poisoned));
        }
        let removed = self.shared.writer().remove_covered(covered)?;
        Ok(removed.len())
    }

    /// Atomically writes a snapshot of the owner's state covering records up
    /// to `covered`, then deletes the segments it makes unnecessary.
    pub fn checkpoint_with_snapshot(
        &self,
        covered: Lsn,
        state: &[u8],
    ) -> Result<usize, CheckpointError> {
        let durable = self.durable_lsn();
        if covered > durable {
            return Err(CheckpointError::BeyondDurable {
                requested: covered,
                durable,
            });
        }
        snapshot::write_snapshot(&*self.storage, covered, state).map_err(|error| match error {
            SnapshotError::Io(failure) => CheckpointError::Io(failure),
            SnapshotError::Corrupt { .. } => unreachable!("writing never reports corruption"),
        })?;
        self.checkpoint(covered)
    }

    /// Flushes what is pending, stops the background threads and closes.
    pub fn close(mut self) -> Result<(), AppendError> {
        self.shutdown();
        match self.poisoned() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) {
        drop(self.shared.flush_inline(Lsn(u64::MAX)));
        self.shared.close();
        for flusher in self.flushers.drain(..) {
            let _ = flusher.join();
        }
        self.shared.writer().stop_preparer();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads the valid records of a log from `from` up to `until`, for replay and
/// for inspection tools. `segments` are the first LSNs of its segments.
pub fn read_records<E>(
    storage: &dyn Storage,
    segments: &[Lsn],
    from: Lsn,
    until: Lsn,
    payload_len_max: u32,
    mut visit: impl FnMut(RecordRef<'_>) -> Result<(), E>,
) -> Result<u64, ReplayError<E>> {
    let Some(&first) = segments.first() else {
        return Ok(0);
    };
    if from < first {
        return Err(ReplayError::Missing {
            requested: from,
            first,
        });
    }
    let mut visited = 0;
    for (index, &segment_first) in segments.iter().enumerate() {
        if segments.get(index + 1).is_some_and(|next| next.0 <= from.0) {
            continue;
        }
        if segment_first > until {
            break;
        }
        let name = segment::segment_name(segment_first);
        let bytes = storage
            .read(&name)
            .map_err(|source| IoFailure::new("read", storage.describe(&name), source))?;
        let mut lsn = segment_first;
        let mut offset = SEGMENT_HEADER_LEN;
        while lsn <= until {
            let end_of_segment = segments.get(index + 1).is_some_and(|next| *next == lsn);
            if end_of_segment {
                break;
            }
            let (record, framed) =
                record::decode(&bytes[offset..], lsn, payload_len_max).map_err(|invalid| {
                    ReplayError::Corrupt {
                        segment: storage.describe(&name),
                        offset: offset as u64,
                        invalid,
                    }
                })?;
            if lsn >= from {
                visit(record).map_err(ReplayError::Visitor)?;
                visited += 1;
            }
            offset += framed;
            lsn = lsn.next();
        }
    }
    Ok(visited)
}

/// Scans a log directory without changing it (for `wal verify` and `dump`).
pub fn inspect(storage: &dyn Storage) -> Result<Scan, IoFailure> {
    recovery::scan(storage, PAYLOAD_LEN_LIMIT)
}

/// Scans the log, refusing corruption before anything is changed; an empty
/// directory gets a new log's first segment (and is scanned again, so the
/// new log is opened by the same path as an old one). Returns the scan and
/// whether the log was created. A directory holding other files and no
/// segment is refused rather than made into a log.
fn scan_or_create(storage: &dyn Storage, options: &Options) -> Result<(Scan, bool), OpenError> {
    let mut scan = recovery::scan(storage, options.payload_len_max)?;
    if let Some(corruption) = scan.corruption() {
        return Err(corruption);
    }
    let created = scan.segments.is_empty();
    if created {
        if let Some(found) = scan.foreign_files.first() {
            return Err(OpenError::NotAWal {
                dir: storage.describe(""),
                found: found.clone(),
            });
        }
        SegmentWriter::create_first(storage, Lsn::FIRST, options.segment_size, options.sync)?;
        scan = recovery::scan(storage, options.payload_len_max)?;
        assert_eq!(scan.segments.len(), 1, "a new log has one segment");
    }
    Ok((scan, created))
}

/// The newest snapshot, for the owner to recover from. A damaged one fails
/// the open: falling back to an older snapshot could need records a
/// checkpoint has already removed.
fn load_snapshot(storage: &dyn Storage) -> Result<Option<Snapshot>, OpenError> {
    snapshot::load_latest_snapshot(storage).map_err(|error| match error {
        SnapshotError::Io(failure) => OpenError::Io(failure),
        SnapshotError::Corrupt { file, reason } => OpenError::CorruptSnapshot { file, reason },
    })
}

/// Group commit's bounds, as the (already validated) options set them.
fn group_commit_limits(options: &Options) -> Limits {
    Limits {
        payload_len_max: options.payload_len_max,
        segment_size: options.segment_size,
        batch_delay_max: options.batch_delay_max,
        batch_bytes_max: options.batch_bytes_max,
        pending_bytes_max: options.pending_bytes_max,
        syncs_in_flight_max: options.syncs_in_flight_max,
        inline_flush: !options.background_flush,
    }
}

/// Starts the threads that write and sync async appends in the background,
/// one per sync allowed in flight so that each can carry one; none when the
/// owner flushes inline (a deterministic simulation wants nothing behind its
/// back).
fn spawn_flushers(
    shared: &Arc<Shared>,
    storage: &dyn Storage,
    options: &Options,
) -> Result<Vec<JoinHandle<()>>, IoFailure> {
    let flusher_count = if options.background_flush {
        options.syncs_in_flight_max
    } else {
        0
    };
    let mut flushers = Vec::with_capacity(flusher_count);
    for _ in 0..flusher_count {
        let flusher_shared = Arc::clone(shared);
        let flusher = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || flusher_shared.run_flusher())
            .map_err(|source| IoFailure::new("spawn flusher for", storage.describe(""), source))?;
        flushers.push(flusher);
    }
    Ok(flushers)
}

/// Removes leftover temporary files, except (when `reuse`) up to
/// [`RECYCLE_MAX`] segments kept for reuse, whose names it returns, oldest
/// first: they are whole segments of an earlier life of the log, as safe to
/// reuse after a restart as before it.
fn remove_temp_files(
    storage: &dyn Storage,
    scan: &Scan,
    reuse: bool,
) -> Result<Vec<String>, IoFailure> {
    let mut recycled: Vec<(u64, &String)> = scan
        .temp_files
        .iter()
        .filter_map(|name| Some((segment::parse_recycled_name(name)?, name)))
        .collect();
    recycled.sort();
    recycled.truncate(if reuse { RECYCLE_MAX } else { 0 });
    let kept: Vec<String> = recycled.into_iter().map(|(_, name)| name.clone()).collect();
    let mut removed = 0;
    for name in scan.temp_files.iter().filter(|name| !kept.contains(name)) {
        storage
            .remove(name)
            .map_err(|source| IoFailure::new("remove", storage.describe(name), source))?;
        removed += 1;
    }
    if removed > 0 {
        storage
            .sync_dir()
            .map_err(|source| IoFailure::new("fsync dir", storage.describe(""), source))?;
    }
    Ok(kept)
}

fn zero_torn_tail(
    storage: &dyn Storage,
    scan: &Scan,
) -> Result<Option<(String, u64, u64)>, IoFailure> {
    let Some(Damage::TornTail {
        segment,
        offset,
        garbage_end,
        invalid,
    }) = &scan.damage
    else {
        return Ok(None);
    };
    let failed = |op| {
        let path = storage.describe(segment);
        move |source| IoFailure::new(op, path, source)
    };
    let file = storage.open(segment, false).map_err(failed("open"))?;
    let zeros = vec![0u8; (garbage_end - offset) as usize];
    file.write_at(*offset, &zeros)
        .map_err(failed("zero torn tail of"))?;
    file.sync_data().map_err(failed("fdatasync"))?;
    tracing::warn!(
        segment = %storage.describe(segment),
        offset,
        bytes = zeros.len(),
        reason = %invalid,
        "wal: torn tail after a crash; zeroed it and continuing after the last valid record"
    );
    Ok(Some((segment.clone(), *offset, zeros.len() as u64)))
}
