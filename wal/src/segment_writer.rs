//! The write side of the log: the open segment, rotation into a new one, and
//! a background thread that zero-fills the next segment ahead of need.
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
use crate::segment::{self, SPARE_PREFIX, TEMP_SUFFIX};
use crate::storage::{Storage, StorageFile};

/// When the log calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every acknowledged append is durable (group commit). The default.
    Always,
    /// Never sync: acknowledged appends are NOT durable. Benchmarks only.
    NeverNotDurable,
}

type Spare = (String, Box<dyn StorageFile>);

struct SpareSlot {
    ready: Option<Result<Spare, IoFailure>>,
    wanted: bool,
    closed: bool,
    counter: u64,
}

/// A one-slot pipeline of zero-filled spare segments (after etcd's
/// `file_pipeline`): rotation takes the spare, and the preparer thread starts
/// on the next one at once.
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
            writer.start_preparer();
        }
        Ok(writer)
    }

    fn start_preparer(&mut self) {
        let pipeline = Arc::new(SparePipeline {
            slot: Mutex::new(SpareSlot {
                ready: None,
                wanted: true,
                closed: false,
                counter: 0,
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
        let (name, file) =
            prepare_spare(storage, 0, segment_size, sync, &|| false)?.expect("never abandoned");
        install(storage, name, &*file, first, sync)
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
        let (name, file) = self.take_spare()?;
        install(&*self.storage, name, &*file, first, self.sync)?;
        self.current = file;
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
                slot.wanted = true;
                pipeline.changed.notify_all();
                return ready;
            }
            slot = pipeline.changed.wait(slot).expect("spare pipeline lock");
        }
    }

    /// Deletes every segment whose records all have LSNs up to `covered`,
    /// keeping the open one. Returns the names removed.
    pub(crate) fn remove_covered(&mut self, covered: Lsn) -> Result<Vec<String>, IoFailure> {
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.segments[1].0 <= covered.0 + 1 {
            let name = segment::segment_name(self.segments.remove(0));
            self.storage
                .remove(&name)
                .map_err(|source| IoFailure::new("remove", self.storage.describe(&name), source))?;
            removed.push(name);
        }
        if !removed.is_empty() && self.sync == SyncPolicy::Always {
            self.storage
                .sync_dir()
                .map_err(|source| IoFailure::new("fsync dir", self.storage.describe(""), source))?;
        }
        Ok(removed)
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

    /// Stops the preparer thread and removes an unused spare. Idempotent.
    pub(crate) fn stop_preparer(&mut self) {
        if let Some(pipeline) = &self.pipeline {
            pipeline.lock().closed = true;
            pipeline.changed.notify_all();
        }
        if let Some(handle) = self.preparer.take() {
            let _ = handle.join();
        }
        if let Some(pipeline) = &self.pipeline
            && let Some(Ok((name, _))) = pipeline.lock().ready.take()
        {
            // An unused spare is only zeros; a leftover is also removed on open.
            let _ = self.storage.remove(&name);
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
        let counter = {
            let mut slot = pipeline.lock();
            while !slot.closed && (slot.ready.is_some() || !slot.wanted) {
                slot = pipeline.changed.wait(slot).expect("spare pipeline lock");
            }
            if slot.closed {
                return;
            }
            slot.counter += 1;
            slot.counter
        };
        let closed = || pipeline.lock().closed;
        let Some(prepared) = prepare_spare(storage, counter, size, sync, &closed).transpose()
        else {
            return;
        };
        let mut slot = pipeline.lock();
        slot.ready = Some(prepared);
        slot.wanted = false;
        pipeline.changed.notify_all();
    }
}

/// Creates a zero-filled file of `size` bytes under a temporary name;
/// `None` (and no file) if `abandon` says so between chunks, so closing a log
/// never waits for a whole segment to be zeroed.
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
    file.set_len(0).map_err(failed("truncate"))?;
    if !file
        .zero_fill(0, size, abandon)
        .map_err(failed("zero-fill"))?
    {
        drop(file);
        storage.remove(&name).map_err(failed("remove"))?;
        return Ok(None);
    }
    if sync == SyncPolicy::Always {
        file.sync_data().map_err(failed("fdatasync"))?;
    }
    Ok(Some((name, file)))
}

/// Turns a prepared spare into the segment starting at `first`.
fn install(
    storage: &dyn Storage,
    spare_name: String,
    file: &dyn StorageFile,
    first: Lsn,
    sync: SyncPolicy,
) -> Result<(), IoFailure> {
    let name = segment::segment_name(first);
    let failed = |op, file: &str| {
        let path = storage.describe(file);
        move |source| IoFailure::new(op, path, source)
    };
    file.write_at(0, &segment::encode_header(first))
        .map_err(failed("write header", &spare_name))?;
    if sync == SyncPolicy::Always {
        file.sync_data().map_err(failed("fdatasync", &spare_name))?;
    }
    storage
        .rename(&spare_name, &name)
        .map_err(failed("rename", &spare_name))?;
    if sync == SyncPolicy::Always {
        storage.sync_dir().map_err(failed("fsync dir", ""))?;
    }
    Ok(())
}
