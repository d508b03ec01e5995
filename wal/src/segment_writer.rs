//! The write side of the log: the open segment, rotation into a new one, and
//! a background thread that zero-fills the next segment ahead of need.
//!
//! Checkpointed segments are not always deleted: up to [`RECYCLE_MAX`] wait,
//! renamed `recycled-<n>.tmp`, for the preparer to hand one out as the next
//! spare instead of zero-filling a new file (the zeros would double what the
//! disk writes). They outlive the log: a reopened log reuses them too. A recycled spare is installed with the *recycled* header
//! flag and its first page written whole; recovery knows that stale bytes
//! follow its end.
//!
//! Only the holder of the group-commit "flushing" role touches a
//! [`SegmentWriter`], so it needs no locking of its own beyond the mutex that
//! hands it over. Fsync order, which recovery depends on:
//!
//! 1. records are written into the open segment and it is `fdatasync`ed;
//! 2. before a record goes into a new segment, the old one is synced, the
//!    spare's header is written and synced, the spare is renamed to its
//!    segment name and the directory is synced.
//!
//! So a segment that exists by name always has a valid header, and every
//! segment before the last is complete. This module knows nothing of group
//! commit or of who waits for what.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::IoFailure;
use crate::record::Lsn;
use crate::segment::{self, RECYCLED_PREFIX, SPARE_PREFIX, TEMP_SUFFIX};
use crate::storage::{Storage, StorageFile};

/// When the log calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every acknowledged append is durable (group commit). The default.
    Always,
    /// Never sync: acknowledged appends are NOT durable. Benchmarks only.
    NeverNotDurable,
}

/// How many checkpointed segments wait for reuse at most; the others are
/// deleted. One is enough when checkpoints keep pace with rotation.
pub(crate) const RECYCLE_MAX: usize = 2;

/// A file ready to become the next segment.
struct Spare {
    name: String,
    file: Box<dyn StorageFile>,
    /// An earlier segment of this log: stale bytes, not zeros, after the header.
    recycled: bool,
}

struct SpareSlot {
    ready: Option<Result<Spare, IoFailure>>,
    wanted: bool,
    closed: bool,
    counter: u64,
    /// Checkpointed segments renamed for reuse, oldest first.
    recycled: Vec<String>,
}

/// A one-slot pipeline of spare segments (after etcd's `file_pipeline`):
/// rotation takes the spare, and the preparer thread starts on the next one
/// at once, reusing a recycled segment if there is one, else zero-filling a
/// new file.
struct SparePipeline {
    slot: Mutex<SpareSlot>,
    changed: Condvar,
}

impl SparePipeline {
    fn lock(&self) -> MutexGuard<'_, SpareSlot> {
        self.slot.lock().expect("spare pipeline lock poisoned")
    }
}

pub(crate) struct SegmentWriter {
    storage: Arc<dyn Storage>,
    segment_size: u64,
    sync: SyncPolicy,
    current: Box<dyn StorageFile>,
    current_name: String,
    /// First LSNs of the live segments, oldest first.
    segments: Vec<Lsn>,
    pipeline: Option<Arc<SparePipeline>>,
    preparer: Option<JoinHandle<()>>,
    /// Per sync slot: a descriptor of the open segment (and its first LSN).
    slot_files: Vec<Option<(Lsn, Arc<dyn StorageFile>)>>,
}

/// What one sync slot syncs: its own descriptor of the open segment, so a
/// writeback error is reported to every overlapping sync.
pub(crate) struct SyncTarget {
    file: Arc<dyn StorageFile>,
    path: String,
}

impl SyncTarget {
    pub(crate) fn sync(&self) -> Result<(), IoFailure> {
        self.file
            .sync_data()
            .map_err(|source| IoFailure::new("fdatasync", self.path.clone(), source))
    }
}

impl SegmentWriter {
    /// Takes over the open last segment of a recovered log.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        segment_size: u64,
        sync: SyncPolicy,
        segments: Vec<Lsn>,
        prepare_ahead: bool,
        kept_for_reuse: Vec<String>,
    ) -> Result<SegmentWriter, IoFailure> {
        let last = *segments.last().expect("a recovered log has a segment");
        let current_name = segment::segment_name(last);
        let current = storage
            .open(&current_name, false)
            .map_err(|source| IoFailure::new("open", storage.describe(&current_name), source))?;
        let mut writer = SegmentWriter {
            storage,
            segment_size,
            sync,
            current,
            current_name,
            segments,
            pipeline: None,
            preparer: None,
            slot_files: Vec::new(),
        };
        if prepare_ahead {
            writer.start_preparer(kept_for_reuse);
        } else {
            assert!(kept_for_reuse.is_empty(), "only a preparer reuses segments");
        }
        Ok(writer)
    }

    /// Starts the preparer, holding `recycled` (files a previous life of the
    /// log kept for reuse) for its first spares.
    fn start_preparer(&mut self, recycled: Vec<String>) {
        let counter = recycled
            .iter()
            .filter_map(|name| segment::parse_recycled_name(name))
            .max()
            .unwrap_or(0);
        let pipeline = Arc::new(SparePipeline {
            slot: Mutex::new(SpareSlot {
                ready: None,
                wanted: true,
                closed: false,
                counter,
                recycled,
            }),
            changed: Condvar::new(),
        });
        let storage = Arc::clone(&self.storage);
        let thread_pipeline = Arc::clone(&pipeline);
        let (size, sync) = (self.segment_size, self.sync);
        let handle = std::thread::Builder::new()
            .name("wal-segment-preparer".into())
            .spawn(move || run_preparer(&*storage, &thread_pipeline, size, sync))
            .expect("spawn segment preparer thread");
        self.pipeline = Some(pipeline);
        self.preparer = Some(handle);
    }

    /// Creates the first segment of a new log.
    pub(crate) fn create_first(
        storage: &dyn Storage,
        first: Lsn,
        segment_size: u64,
        sync: SyncPolicy,
    ) -> Result<(), IoFailure> {
        let spare =
            prepare_spare(storage, 0, segment_size, sync, &|| false)?.expect("never abandoned");
        install(storage, &spare, first, segment_size, sync)
    }

    /// Writes `bytes` at `offset` of the open segment.
    pub(crate) fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), IoFailure> {
        debug_assert!(offset + bytes.len() as u64 <= self.segment_size);
        self.current
            .write_at(offset, bytes)
            .map_err(|source| IoFailure::new("write", self.describe_current(), source))
    }

    /// Makes everything written to the open segment durable.
    pub(crate) fn sync(&self) -> Result<(), IoFailure> {
        if self.sync == SyncPolicy::NeverNotDurable {
            return Ok(());
        }
        self.current
            .sync_data()
            .map_err(|source| IoFailure::new("fdatasync", self.describe_current(), source))
    }

    /// What sync slot `slot` must sync to make everything written so far
    /// durable; `None` when syncing is off.
    pub(crate) fn sync_target(&mut self, slot: usize) -> Result<Option<SyncTarget>, IoFailure> {
        if self.sync == SyncPolicy::NeverNotDurable {
            return Ok(None);
        }
        let current = *self.segments.last().expect("live segment");
        if self.slot_files.len() <= slot {
            self.slot_files.resize_with(slot + 1, || None);
        }
        let file =
            match &self.slot_files[slot] {
                Some((first, file)) if *first == current => Arc::clone(file),
                _ => {
                    let file: Arc<dyn StorageFile> =
                        Arc::from(self.storage.open(&self.current_name, false).map_err(
                            |source| IoFailure::new("open", self.describe_current(), source),
                        )?);
                    self.slot_files[slot] = Some((current, Arc::clone(&file)));
                    file
                }
            };
        Ok(Some(SyncTarget {
            file,
            path: self.describe_current(),
        }))
    }

    fn describe_current(&self) -> String {
        self.storage.describe(&self.current_name)
    }

    /// Seals the open segment and opens a new one starting at `first`.
    pub(crate) fn rotate(&mut self, first: Lsn) -> Result<(), IoFailure> {
        assert!(first > *self.segments.last().expect("live segment"));
        self.sync()?;
        let spare = self.take_spare()?;
        install(&*self.storage, &spare, first, self.segment_size, self.sync)?;
        self.current = spare.file;
        self.current_name = segment::segment_name(first);
        self.segments.push(first);
        Ok(())
    }

    fn take_spare(&mut self) -> Result<Spare, IoFailure> {
        let Some(pipeline) = &self.pipeline else {
            return prepare_spare(&*self.storage, 0, self.segment_size, self.sync, &|| false)
                .map(|spare| spare.expect("never abandoned"));
        };
        let mut slot = pipeline.lock();
        slot.wanted = true;
        pipeline.changed.notify_all();
        loop {
            if let Some(ready) = slot.ready.take() {
                // After a failure the log is poisoned: no spare is wanted.
                slot.wanted = ready.is_ok();
                pipeline.changed.notify_all();
                return ready;
            }
            slot = pipeline.changed.wait(slot).expect("spare pipeline lock");
        }
    }

    /// Removes every segment whose records all have LSNs up to `covered`,
    /// keeping the open one, oldest first (a crash part-way leaves a
    /// contiguous run). Each is deleted, or renamed for reuse while fewer
    /// than [`RECYCLE_MAX`] wait and a preparer will hand them out. Returns
    /// the names removed.
    pub(crate) fn remove_covered(&mut self, covered: Lsn) -> Result<Vec<String>, IoFailure> {
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.segments[1].0 <= covered.0 + 1 {
            let name = segment::segment_name(self.segments.remove(0));
            let failed = |op| {
                let path = self.storage.describe(&name);
                move |source| IoFailure::new(op, path, source)
            };
            match self.recycle_name() {
                Some(target) => {
                    self.storage
                        .rename(&name, &target)
                        .map_err(failed("rename for reuse"))?;
                    let pipeline = self.pipeline.as_ref().expect("recycling needs a preparer");
                    pipeline.lock().recycled.push(target);
                }
                None => self.storage.remove(&name).map_err(failed("remove"))?,
            }
            removed.push(name);
        }
        if !removed.is_empty() && self.sync == SyncPolicy::Always {
            self.storage
                .sync_dir()
                .map_err(|source| IoFailure::new("fsync dir", self.storage.describe(""), source))?;
        }
        Ok(removed)
    }

    /// A name to keep a removed segment under for reuse, if one may wait.
    fn recycle_name(&self) -> Option<String> {
        let pipeline = self.pipeline.as_ref()?;
        let mut slot = pipeline.lock();
        if slot.closed || slot.recycled.len() >= RECYCLE_MAX {
            return None;
        }
        slot.counter += 1;
        Some(format!("{RECYCLED_PREFIX}{}{TEMP_SUFFIX}", slot.counter))
    }

    /// First LSN of the oldest live segment.
    pub(crate) fn first_lsn(&self) -> Lsn {
        self.segments[0]
    }

    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// First LSNs of the live segments, oldest first.
    pub(crate) fn segment_firsts(&self) -> Vec<Lsn> {
        self.segments.clone()
    }

    /// Stops the preparer thread and removes an unused zero-filled spare;
    /// segments kept for reuse stay for the next open. Idempotent.
    pub(crate) fn stop_preparer(&mut self) {
        if let Some(pipeline) = &self.pipeline {
            pipeline.lock().closed = true;
            pipeline.changed.notify_all();
        }
        if let Some(handle) = self.preparer.take() {
            let _ = handle.join();
        }
        if let Some(pipeline) = &self.pipeline {
            let mut slot = pipeline.lock();
            // A zero-filled spare is cheaper to remove than to keep track
            // of (a half-filled one would be removed on open anyway); a
            // recycled one ready to install is still a file kept for reuse.
            if let Some(Ok(spare)) = slot.ready.take()
                && !spare.recycled
            {
                let _ = self.storage.remove(&spare.name);
            }
        }
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        self.stop_preparer();
    }
}

fn run_preparer(storage: &dyn Storage, pipeline: &SparePipeline, size: u64, sync: SyncPolicy) {
    loop {
        let (counter, recycled) = {
            let mut slot = pipeline.lock();
            while !slot.closed && (slot.ready.is_some() || !slot.wanted) {
                slot = pipeline.changed.wait(slot).expect("spare pipeline lock");
            }
            if slot.closed {
                return;
            }
            slot.counter += 1;
            let recycled = (!slot.recycled.is_empty()).then(|| slot.recycled.remove(0));
            (slot.counter, recycled)
        };
        let reused = recycled.and_then(|name| reuse_spare(storage, name, size).transpose());
        let prepared = match reused {
            Some(reused) => reused,
            None => {
                let closed = || pipeline.lock().closed;
                match prepare_spare(storage, counter, size, sync, &closed).transpose() {
                    Some(prepared) => prepared,
                    None => return,
                }
            }
        };
        let mut slot = pipeline.lock();
        slot.ready = Some(prepared);
        slot.wanted = false;
        pipeline.changed.notify_all();
    }
}

/// Creates a zero-filled file of `size` bytes under a temporary name;
/// `None` (and no file) if `abandon` says so between chunks, so closing a log
/// never waits for a whole segment to be zeroed. A failure removes the
/// partial file too.
fn prepare_spare(
    storage: &dyn Storage,
    counter: u64,
    size: u64,
    sync: SyncPolicy,
    abandon: &dyn Fn() -> bool,
) -> Result<Option<Spare>, IoFailure> {
    let name = format!("{SPARE_PREFIX}{counter}{TEMP_SUFFIX}");
    let failed = |op| {
        let path = storage.describe(&name);
        move |source| IoFailure::new(op, path, source)
    };
    let file = storage.open(&name, true).map_err(failed("create"))?;
    let filled = (|| {
        file.set_len(0).map_err(failed("truncate"))?;
        let filled = file
            .zero_fill(0, size, abandon)
            .map_err(failed("zero-fill"))?;
        if filled && sync == SyncPolicy::Always {
            file.sync_data().map_err(failed("fdatasync"))?;
        }
        Ok(filled)
    })();
    match filled {
        Ok(true) => Ok(Some(Spare {
            name,
            file,
            recycled: false,
        })),
        Ok(false) => {
            drop(file);
            storage.remove(&name).map_err(failed("remove"))?;
            Ok(None)
        }
        Err(failure) => {
            // Give the space back at once (on a full disk the partial file
            // may hold most of a segment); the failure is what is reported.
            drop(file);
            let _ = storage.remove(&name);
            Err(failure)
        }
    }
}

/// Opens a recycled segment as the next spare. Its blocks are written
/// already (it held records), so nothing needs writing until it is
/// installed. One of another size (written under another segment size, or
/// the header-only segment a repair starts) is deleted instead: `None`.
fn reuse_spare(storage: &dyn Storage, name: String, size: u64) -> Result<Option<Spare>, IoFailure> {
    let failed = |op| {
        let path = storage.describe(&name);
        move |source| IoFailure::new(op, path, source)
    };
    let file = storage.open(&name, false).map_err(failed("open"))?;
    if file.size().map_err(failed("stat"))? != size {
        drop(file);
        storage.remove(&name).map_err(failed("remove"))?;
        return Ok(None);
    }
    Ok(Some(Spare {
        name,
        file,
        recycled: true,
    }))
}

/// Turns a prepared spare into the segment starting at `first`: writes its
/// first page whole (header, zeros), syncs, renames, syncs the directory.
fn install(
    storage: &dyn Storage,
    spare: &Spare,
    first: Lsn,
    segment_size: u64,
    sync: SyncPolicy,
) -> Result<(), IoFailure> {
    let name = segment::segment_name(first);
    let spare_name = &spare.name;
    let failed = |op, file: &str| {
        let path = storage.describe(file);
        move |source| IoFailure::new(op, path, source)
    };
    let page = segment::first_page(first, spare.recycled, segment_size);
    spare
        .file
        .write_at(0, &page)
        .map_err(failed("write header", spare_name))?;
    if sync == SyncPolicy::Always {
        spare
            .file
            .sync_data()
            .map_err(failed("fdatasync", spare_name))?;
    }
    storage
        .rename(spare_name, &name)
        .map_err(failed("rename", spare_name))?;
    if sync == SyncPolicy::Always {
        storage.sync_dir().map_err(failed("fsync dir", ""))?;
    }
    Ok(())
}
