//! An in-memory [`Storage`] that models what a crash keeps.
//!
//! Every file has the bytes a reader sees now and the bytes that are durable;
//! `sync_data` makes the first the second. The directory likewise has a
//! current and a durable set of names; `sync_dir` makes creations, renames
//! and removals durable. [`SimStorage::crash`] returns the storage a machine
//! would find after power loss; [`SimStorage::crash_with`] can also keep a
//! torn prefix (whole 512-byte sectors) of the unsynced writes. Writes and
//! syncs can be made to fail, to test fail-stop behaviour.
//!
//! Used by this crate's tests and by the owners' (ledger, coordinator) crash
//! tests; it knows nothing of the log format.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{ReadView, Storage, StorageFile};

/// The unit a torn write is cut at.
pub const SECTOR_LEN: u64 = 512;

/// What a simulated crash keeps of writes that were not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing unsynced survives.
    DropUnsynced,
    /// Per file, the unsynced writes survive in order up to this many whole
    /// sectors; the write that crosses the limit is torn at a sector boundary.
    TearUnsynced { sectors: u64 },
}

#[derive(Clone, Default)]
struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, oldest first.
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct Faults {
    /// Successful writes left before every write fails.
    writes_left: Option<u64>,
    write_error: Option<io::ErrorKind>,
    /// Successful syncs (file or directory) left before every sync fails.
    syncs_left: Option<u64>,
}

#[derive(Default)]
struct SimState {
    files: HashMap<u64, SimFile>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_id: u64,
    faults: Faults,
    writes: u64,
    syncs: u64,
    /// Crash images taken after every change, while recording.
    images: Option<Vec<SimStorage>>,
}

/// A simulated directory. Clones share the same state.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

fn io_error(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("simulated {what} failure"))
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("sim storage lock poisoned")
    }

    /// After `successes` more successful writes, every write fails with `kind`
    /// (for example `StorageFull` for a full disk).
    pub fn fail_writes_after(&self, successes: u64, kind: io::ErrorKind) {
        let mut state = self.lock();
        state.faults.writes_left = Some(successes);
        state.faults.write_error = Some(kind);
    }

    /// After `successes` more successful syncs, every sync fails.
    pub fn fail_syncs_after(&self, successes: u64) {
        self.lock().faults.syncs_left = Some(successes);
    }

    /// Writes and syncs performed so far.
    pub fn io_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.writes, state.syncs)
    }

    /// The storage as a restarted machine would find it: only synced data and
    /// synced directory entries.
    pub fn crash(&self) -> SimStorage {
        self.crash_with(CrashMode::DropUnsynced)
    }

    /// The storage after a crash that keeps what `mode` says of unsynced writes.
    pub fn crash_with(&self, mode: CrashMode) -> SimStorage {
        image_of(&self.lock(), mode)
    }

    /// From now on, after every write, sync, creation, rename and removal,
    /// takes the images a crash right then could leave: without the unsynced
    /// writes, and with all of them (names as last synced either way).
    pub fn record_crash_images(&self) {
        self.lock().images = Some(Vec::new());
    }

    /// The images taken since [`SimStorage::record_crash_images`], oldest
    /// first; stops recording.
    pub fn take_crash_images(&self) -> Vec<SimStorage> {
        self.lock().images.take().unwrap_or_default()
    }

    /// Overwrites bytes of a file directly (current and durable): bit rot.
    pub fn corrupt(&self, name: &str, offset: usize, bytes: &[u8]) {
        let mut state = self.lock();
        let id = state.names[name];
        let file = state.files.get_mut(&id).expect("named file exists");
        for target in [&mut file.current, &mut file.durable] {
            if target.len() < offset + bytes.len() {
                target.resize(offset + bytes.len(), 0);
            }
            target[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Cuts a file (current and durable) to `len` bytes.
    pub fn truncate(&self, name: &str, len: usize) {
        let mut state = self.lock();
        let id = state.names[name];
        let file = state.files.get_mut(&id).expect("named file exists");
        file.current.truncate(len);
        file.durable.truncate(len);
    }

    /// Removes a file durably, as an operator's mistake would.
    pub fn delete(&self, name: &str) {
        let mut state = self.lock();
        state.names.remove(name);
        state.durable_names.remove(name);
    }

    /// A file's current contents.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.names.get(name)?;
        Some(state.files[id].current.clone())
    }
}

/// The storage a crash would leave now, keeping what `mode` says of unsynced
/// writes.
fn image_of(state: &SimState, mode: CrashMode) -> SimStorage {
    let mut files = HashMap::new();
    for id in state.durable_names.values() {
        let file = &state.files[id];
        let mut bytes = file.durable.clone();
        if let CrashMode::TearUnsynced { sectors } = mode {
            apply_torn(&mut bytes, &file.unsynced, sectors);
        }
        files.insert(
            *id,
            SimFile {
                current: bytes.clone(),
                durable: bytes,
                unsynced: Vec::new(),
            },
        );
    }
    let recovered = SimState {
        files,
        names: state.durable_names.clone(),
        durable_names: state.durable_names.clone(),
        next_id: state.next_id,
        ..SimState::default()
    };
    SimStorage {
        state: Arc::new(Mutex::new(recovered)),
    }
}

/// While recording, takes the two crash images of this moment.
fn record(state: &mut SimState) {
    if state.images.is_none() {
        return;
    }
    let images = [
        image_of(state, CrashMode::DropUnsynced),
        image_of(state, CrashMode::TearUnsynced { sectors: 1 << 40 }),
    ];
    state.images.as_mut().expect("recording").extend(images);
}

fn apply_torn(bytes: &mut Vec<u8>, unsynced: &[(u64, Vec<u8>)], sectors: u64) {
    let mut budget = sectors * SECTOR_LEN;
    for (offset, data) in unsynced {
        if budget == 0 {
            break;
        }
        let mut keep = data.len() as u64;
        if keep > budget {
            // Cut at the last sector boundary (in file offsets) within budget.
            let end = (offset + budget) / SECTOR_LEN * SECTOR_LEN;
            keep = end.saturating_sub(*offset);
        }
        let end = (*offset + keep) as usize;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[*offset as usize..end].copy_from_slice(&data[..keep as usize]);
        budget = budget.saturating_sub(data.len() as u64);
    }
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().names.keys().cloned().collect())
    }

    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.lock();
        let id = match state.names.get(name) {
            Some(id) => *id,
            None if create => {
                let id = state.next_id;
                state.next_id += 1;
                state.files.insert(id, SimFile::default());
                state.names.insert(name.to_owned(), id);
                record(&mut state);
                id
            }
            None => return Err(io_error(io::ErrorKind::NotFound, "open")),
        };
        Ok(Box::new(SimHandle {
            storage: self.clone(),
            id,
        }))
    }

    fn read(&self, name: &str) -> io::Result<ReadView> {
        let state = self.lock();
        let id = state
            .names
            .get(name)
            .ok_or_else(|| io_error(io::ErrorKind::NotFound, "read"))?;
        Ok(Box::new(state.files[id].current.clone()))
    }

    fn rename(&self, source: &str, target: &str) -> io::Result<()> {
        let mut state = self.lock();
        let id = state
            .names
            .remove(source)
            .ok_or_else(|| io_error(io::ErrorKind::NotFound, "rename"))?;
        state.names.insert(target.to_owned(), id);
        record(&mut state);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        state
            .names
            .remove(name)
            .ok_or_else(|| io_error(io::ErrorKind::NotFound, "remove"))?;
        record(&mut state);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        take_sync(&mut state)?;
        state.durable_names = state.names.clone();
        record(&mut state);
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:/{name}")
    }
}

fn take_sync(state: &mut SimState) -> io::Result<()> {
    if let Some(left) = state.faults.syncs_left.as_mut() {
        if *left == 0 {
            return Err(io_error(io::ErrorKind::Other, "sync"));
        }
        *left -= 1;
    }
    state.syncs += 1;
    Ok(())
}

struct SimHandle {
    storage: SimStorage,
    id: u64,
}

impl StorageFile for SimHandle {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.storage.lock();
        if let Some(left) = state.faults.writes_left.as_mut() {
            if *left == 0 {
                let kind = state.faults.write_error.unwrap_or(io::ErrorKind::Other);
                return Err(io_error(kind, "write"));
            }
            *left -= 1;
        }
        state.writes += 1;
        let file = state.files.get_mut(&self.id).expect("open file exists");
        let end = offset as usize + data.len();
        if file.current.len() < end {
            file.current.resize(end, 0);
        }
        file.current[offset as usize..end].copy_from_slice(data);
        file.unsynced.push((offset, data.to_vec()));
        record(&mut state);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.storage.lock();
        take_sync(&mut state)?;
        let file = state.files.get_mut(&self.id).expect("open file exists");
        file.durable = file.current.clone();
        file.unsynced.clear();
        record(&mut state);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.storage.lock().files[&self.id].current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.storage.lock();
        let file = state.files.get_mut(&self.id).expect("open file exists");
        file.current.resize(len as usize, 0);
        // Size changes are metadata made durable by the next sync; until then
        // a crash keeps the old length, which the model gets by replaying the
        // unsynced writes over the durable bytes.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_only_synced_data_and_names() {
        let storage = SimStorage::new();
        let file = storage.open("a", true).unwrap();
        file.write_at(0, b"durable").unwrap();
        file.sync_data().unwrap();
        storage.sync_dir().unwrap();
        file.write_at(7, b" lost").unwrap();
        let other = storage.open("b", true).unwrap();
        other.write_at(0, b"x").unwrap();
        other.sync_data().unwrap();
        let after = storage.crash();
        assert_eq!(after.list().unwrap(), vec!["a".to_owned()]);
        assert_eq!(&**after.read("a").unwrap(), b"durable");
    }

    #[test]
    fn a_torn_crash_keeps_whole_sectors_of_unsynced_writes() {
        let storage = SimStorage::new();
        let file = storage.open("a", true).unwrap();
        storage.sync_dir().unwrap();
        file.write_at(0, &[7; 1500]).unwrap();
        let after = storage.crash_with(CrashMode::TearUnsynced { sectors: 2 });
        let bytes = after.read("a").unwrap();
        assert_eq!(bytes.len(), 1024);
        assert!(bytes.iter().all(|&byte| byte == 7));
    }

    #[test]
    fn injected_faults_fail_writes_and_syncs() {
        let storage = SimStorage::new();
        let file = storage.open("a", true).unwrap();
        storage.fail_writes_after(1, io::ErrorKind::StorageFull);
        file.write_at(0, b"ok").unwrap();
        let error = file.write_at(2, b"no").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        storage.fail_syncs_after(0);
        assert!(file.sync_data().is_err());
        assert!(storage.sync_dir().is_err());
    }
}
