//! The table store: the live tables a manifest names, point lookups over
//! them (newest first), and every change to the set (a checkpoint's new
//! table, a merge, an expiry) as one manifest switch.
//!
//! A change writes its new table (if any) completely, then the manifest of
//! the next generation, then makes it live, then removes the manifests
//! before it and the tables it no longer lists. A crash at any point leaves
//! the old manifest or the new one, each naming complete tables. What
//! `open` does with each leftover is the decision table in
//! `docs/history-tables.md`.
//!
//! [`read_listed`] and [`check`] read the same set for tools and change
//! nothing: they report leftovers instead of removing them.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::file::{Table, TableWriter, parse_table_name, table_name};
use super::filter::KeyHashes;
use super::manifest::{Manifest, manifest_name, parse_manifest_name};
use super::{Entry, TableError, TableMeta};
use crate::error::IoFailure;
use crate::storage::Storage;

/// Default for [`StoreOptions::tables_max`].
pub const TABLES_MAX_DEFAULT: usize = 32;
/// Default for [`StoreOptions::merge_fanin_min`].
pub const MERGE_FANIN_MIN_DEFAULT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most live tables: past it, the adjacent pair with the fewest
    /// entries is merged.
    pub tables_max: usize,
    /// The fewest tables of similar size merged at once (size tiers).
    pub merge_fanin_min: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            tables_max: TABLES_MAX_DEFAULT,
            merge_fanin_min: MERGE_FANIN_MIN_DEFAULT,
        }
    }
}

/// An entry found by a lookup, copied out of its table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub time: u64,
    pub value: Vec<u8>,
}

/// What one [`Store::maintain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Tables dropped whole, all their entries past the retention.
    pub expired: usize,
    /// Tables merged into one (0 if no merge was due).
    pub merged: usize,
    /// Entries a merge dropped as past the retention or superseded.
    pub dropped: u64,
}

/// What a store did since it opened (for tests and the simulation's
/// report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Tables written by `add`.
    pub tables_added: u64,
    /// Merges, and the tables they merged.
    pub merges: u64,
    pub tables_merged: u64,
    /// Tables dropped whole, past the horizon.
    pub tables_expired: u64,
}

/// The live set: a manifest generation, its horizon and its open tables,
/// oldest first.
struct Live {
    generation: u64,
    horizon: u64,
    tables: Vec<Arc<Table>>,
}

/// The table store over one directory; see the module docs.
pub struct Store {
    storage: Arc<dyn Storage>,
    options: StoreOptions,
    live: RwLock<Arc<Live>>,
    /// One change at a time; holds the next table sequence number.
    changing: Mutex<u64>,
    stats: Mutex<StoreStats>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live();
        f.debug_struct("Store")
            .field("generation", &live.generation)
            .field("horizon", &live.horizon)
            .field("tables", &live.tables.len())
            .finish()
    }
}

impl Store {
    /// Opens the store, removing what a crash left unfinished. The newest
    /// manifest must be at least `relied_on`, the generation the owner's
    /// snapshot names (0 without tables): an older one means a manifest
    /// was lost, and opening would forget entries, so it is refused, as is
    /// a damaged manifest or a listed table that is missing or damaged.
    pub fn open(
        storage: Arc<dyn Storage>,
        options: StoreOptions,
        relied_on: u64,
    ) -> Result<Store, TableError> {
        assert!(options.tables_max >= 2 && options.merge_fanin_min >= 2);
        let names = list(&*storage)?;
        let manifest = newest_manifest(&*storage, &names)?;
        if manifest.generation < relied_on {
            return Err(TableError::ManifestBehind {
                found: manifest.generation,
                expected: relied_on,
            });
        }
        let tables = open_listed(&*storage, &manifest)?;
        let next_seq = names
            .iter()
            .filter_map(|name| parse_table_name(name))
            .chain(manifest.tables.iter().map(|table| table.seq))
            .max()
            .map_or(1, |seq| seq + 1);
        let store = Store {
            storage,
            options,
            live: RwLock::new(Arc::new(Live {
                generation: manifest.generation,
                horizon: manifest.horizon,
                tables,
            })),
            changing: Mutex::new(next_seq),
            stats: Mutex::new(StoreStats::default()),
        };
        store.collect_garbage()?;
        Ok(store)
    }

    fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().expect("table store lock poisoned"))
    }

    fn changing(&self) -> MutexGuard<'_, u64> {
        self.changing.lock().expect("table store lock poisoned")
    }

    /// The live manifest's generation: what a snapshot names.
    pub fn generation(&self) -> u64 {
        self.live().generation
    }

    /// The live tables, oldest first.
    pub fn tables(&self) -> Vec<TableMeta> {
        self.live()
            .tables
            .iter()
            .map(|table| *table.meta())
            .collect()
    }

    /// The newest entry for `key`: tables newest first, each skipped when
    /// its filter says no, at most one block read per table. An entry
    /// older than the horizon is expired: `None`, even if its table (or an
    /// older one holding an older entry for the key) is still there. Owners
    /// give a key's newer entry a later time, so expiry never uncovers an
    /// older entry.
    pub fn get(&self, key: &[u8]) -> Result<Option<Found>, TableError> {
        let found = self.get_decoded(key, |value| Ok(value.to_vec()))?;
        Ok(found.map(|(time, value)| Found { time, value }))
    }

    /// [`Store::get`], decoding the value in place with the owner's
    /// `decode`; a value it refuses is damage, reported with the table's
    /// name and the block's offset.
    pub fn get_decoded<T>(
        &self,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<(u64, T)>, TableError> {
        let live = self.live();
        let hashes = KeyHashes::of(key);
        for table in live.tables.iter().rev() {
            if let Some((entry, offset)) = table.get_located(key, hashes)? {
                if entry.time < live.horizon {
                    return Ok(None);
                }
                let value = decode(entry.value).map_err(|reason| TableError::Corrupt {
                    file: table.path().to_owned(),
                    offset,
                    reason: format!("a value does not decode: {reason}"),
                })?;
                return Ok(Some((entry.time, value)));
            }
        }
        Ok(None)
    }

    /// Writes `entries` (unique keys, any order) as a new table and makes
    /// it live; returns the new generation. Nothing to add changes nothing.
    pub fn add(&self, mut entries: Vec<(Vec<u8>, u64, Vec<u8>)>) -> Result<u64, TableError> {
        let mut next_seq = self.changing();
        let live = self.live();
        if entries.is_empty() {
            return Ok(live.generation);
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let seq = *next_seq;
        *next_seq += 1;
        let mut writer = TableWriter::create(Arc::clone(&self.storage), seq, entries.len() as u64)?;
        for (key, time, value) in &entries {
            writer.push(key, *time, value)?;
        }
        writer.finish()?;
        let table = Arc::new(Table::open(&*self.storage, seq)?);
        let mut tables = live.tables.clone();
        tables.push(table);
        let generation = self.switch(&live, live.horizon, tables)?;
        self.tally(|stats| stats.tables_added += 1);
        Ok(generation)
    }

    fn tally(&self, count: impl FnOnce(&mut StoreStats)) {
        count(&mut self.stats.lock().expect("table store stats lock poisoned"));
    }

    /// What this store did since it opened.
    pub fn stats(&self) -> StoreStats {
        *self.stats.lock().expect("table store stats lock poisoned")
    }

    /// Moves the horizon to `cutoff_ms` (entries older than it expire),
    /// drops every table whose entries are all older, and runs at most one
    /// merge if one is due (leaving out expired entries as it goes); one
    /// manifest switch for all of it, none if nothing changes. Off the
    /// request path: lookups go on meanwhile.
    pub fn maintain(&self, cutoff_ms: u64) -> Result<Maintained, TableError> {
        let mut next_seq = self.changing();
        let live = self.live();
        let horizon = live.horizon.max(cutoff_ms);
        let mut tables: Vec<Arc<Table>> = live
            .tables
            .iter()
            .filter(|table| table.meta().time_max >= horizon)
            .cloned()
            .collect();
        let mut done = Maintained {
            expired: live.tables.len() - tables.len(),
            ..Maintained::default()
        };
        let sizes: Vec<u64> = tables.iter().map(|table| table.meta().entries).collect();
        if let Some(run) = merge_candidate(&sizes, &self.options) {
            let seq = *next_seq;
            *next_seq += 1;
            let (merged, written) = self.merge(&tables[run.clone()], horizon, seq)?;
            done.merged = run.len();
            done.dropped = sizes[run.clone()].iter().sum::<u64>() - written;
            tables.splice(run, merged);
        }
        if horizon > live.horizon || done != Maintained::default() {
            self.switch(&live, horizon, tables)?;
        }
        self.tally(|stats| {
            stats.merges += u64::from(done.merged > 0);
            stats.tables_merged += done.merged as u64;
            stats.tables_expired += done.expired as u64;
        });
        Ok(done)
    }

    /// Merges `run` (adjacent tables, oldest first) into table `seq`: for a
    /// key in several, the newest wins; entries older than `cutoff_ms` are
    /// dropped. `None` if nothing is left. Also returns the entries written.
    fn merge(
        &self,
        run: &[Arc<Table>],
        cutoff_ms: u64,
        seq: u64,
    ) -> Result<(Option<Arc<Table>>, u64), TableError> {
        let expected = run.iter().map(|table| table.meta().entries).sum();
        let mut writer = TableWriter::create(Arc::clone(&self.storage), seq, expected)?;
        let mut scans: Vec<_> = run.iter().map(|table| table.scan()).collect();
        let mut heads: Vec<Option<Entry<'_>>> = Vec::with_capacity(run.len());
        for scan in &mut scans {
            heads.push(scan.next().transpose()?);
        }
        while let Some(key) = heads.iter().flatten().map(|entry| entry.key).min() {
            // The newest table holding the key wins; every head on it moves on.
            let mut winner = None;
            for (index, head) in heads.iter_mut().enumerate() {
                if let Some(entry) = head.filter(|entry| entry.key == key) {
                    winner = Some(entry);
                    *head = scans[index].next().transpose()?;
                }
            }
            let winner = winner.expect("the smallest key is some table's head");
            if winner.time >= cutoff_ms {
                writer.push(winner.key, winner.time, winner.value)?;
            }
        }
        let written = writer.entries();
        if written == 0 {
            return Ok((None, 0));
        }
        writer.finish()?;
        Ok((Some(Arc::new(Table::open(&*self.storage, seq)?)), written))
    }

    /// Makes `tables` (and `horizon`) live as the next generation: its manifest first, then
    /// the live set, then the garbage. Returns the new generation.
    fn switch(
        &self,
        live: &Live,
        horizon: u64,
        tables: Vec<Arc<Table>>,
    ) -> Result<u64, TableError> {
        let generation = live.generation + 1;
        Manifest {
            generation,
            horizon,
            tables: tables.iter().map(|table| *table.meta()).collect(),
        }
        .write(&*self.storage)?;
        *self.live.write().expect("table store lock poisoned") = Arc::new(Live {
            generation,
            horizon,
            tables,
        });
        self.collect_garbage()?;
        Ok(generation)
    }

    /// Removes manifests older than the live one and tables it does not
    /// list, then syncs the directory if anything went.
    fn collect_garbage(&self) -> Result<(), TableError> {
        let live = self.live();
        let storage = &*self.storage;
        let names = list(storage)?;
        let listed: Vec<u64> = live.tables.iter().map(|table| table.meta().seq).collect();
        let mut removed = false;
        for leftover in leftovers(&names, live.generation, &listed) {
            // Unfinished writes are left to the log's open, which removes
            // every `.tmp` before an owner opens its tables.
            if let Leftover::Unfinished(_) = leftover {
                continue;
            }
            let name = leftover.name();
            storage
                .remove(name)
                .map_err(|source| IoFailure::new("remove", storage.describe(name), source))?;
            removed = true;
        }
        if removed {
            storage
                .sync_dir()
                .map_err(|source| IoFailure::new("fsync dir", storage.describe(""), source))?;
        }
        Ok(())
    }

    /// Reads every entry of every live table, checking every block; returns
    /// the entries counted. (`wal verify` uses [`check`] instead: opening a
    /// store removes leftovers, and verify changes nothing.)
    pub fn verify(&self) -> Result<u64, TableError> {
        scan_all(&self.live().tables)
    }
}

/// Reads every entry of `tables`, checking every block; the entries read.
fn scan_all(tables: &[Arc<Table>]) -> Result<u64, TableError> {
    let mut entries = 0;
    for table in tables {
        for entry in table.scan() {
            entry?;
            entries += 1;
        }
    }
    Ok(entries)
}

/// The newest manifest and the tables it lists, read without changing
/// anything.
#[derive(Debug)]
pub struct Listed {
    /// Generation 0 and no tables if the directory holds no manifest.
    pub manifest: Manifest,
    /// Oldest first, each opened and checked against its row.
    pub tables: Vec<Arc<Table>>,
}

/// Reads the newest manifest and opens every table it lists, checked as
/// [`Store::open`] checks them (all but the data blocks, which a scan or a
/// lookup checks), and removes nothing: for tools, which may look at a
/// directory a running owner changes. A switch between reading the manifest
/// and opening a table can then make a listed table go missing; reading
/// again sees the new set.
pub fn read_listed(storage: &dyn Storage) -> Result<Listed, TableError> {
    let names = list(storage)?;
    let manifest = newest_manifest(storage, &names)?;
    let tables = open_listed(storage, &manifest)?;
    Ok(Listed { manifest, tables })
}

/// A file the next open removes, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// A table the newest manifest does not list (a change that crashed
    /// before its switch, or before removing what it replaced).
    Unlisted(String),
    /// A manifest older than the newest.
    Superseded(String),
    /// A table or manifest write that never finished (`.tmp`); the log's
    /// open removes it.
    Unfinished(String),
}

impl Leftover {
    pub fn name(&self) -> &str {
        match self {
            Leftover::Unlisted(name) | Leftover::Superseded(name) | Leftover::Unfinished(name) => {
                name
            }
        }
    }
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Unlisted(name) => write!(f, "{name} (not listed by the newest manifest)"),
            Leftover::Superseded(name) => write!(f, "{name} (an older manifest)"),
            Leftover::Unfinished(name) => write!(f, "{name} (an unfinished write)"),
        }
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The newest manifest's generation; 0 if there is none.
    pub generation: u64,
    /// The newest manifest's horizon (ms).
    pub horizon: u64,
    /// The tables it lists, oldest first.
    pub tables: Vec<TableMeta>,
    /// Entries read from them, every data block checked.
    pub entries: u64,
    /// Bytes of those tables.
    pub bytes: u64,
    /// Files the next open would remove, sorted by name; still there.
    pub leftovers: Vec<Leftover>,
}

impl Checked {
    /// No manifest, no table and no leftover of either: the directory holds
    /// no history tables.
    pub fn is_empty(&self) -> bool {
        self.generation == 0 && self.tables.is_empty() && self.leftovers.is_empty()
    }
}

/// Checks the history tables in a directory and changes nothing (for
/// `minipay wal verify`): reads the newest manifest, opens every table it
/// lists, reads every entry of each (every data block checked), and lists
/// what the next open would remove instead of removing it. Damage is the
/// first [`TableError`], naming the file and the offset.
///
/// It does not check the generation the owner's snapshot relies on (the
/// `relied_on` of [`Store::open`]): only the owner decodes its snapshot. So
/// it checks that the newest manifest is consistent with its tables, not
/// that it is the one the snapshot names; a lost newest manifest with an
/// older one left checks here, and the owner's open refuses it.
pub fn check(storage: &dyn Storage) -> Result<Checked, TableError> {
    let names = list(storage)?;
    let Listed { manifest, tables } = read_listed(storage)?;
    let entries = scan_all(&tables)?;
    let metas: Vec<TableMeta> = tables.iter().map(|table| *table.meta()).collect();
    // A scan that ends checks its count against the header's.
    assert_eq!(entries, metas.iter().map(|meta| meta.entries).sum::<u64>());
    let listed: Vec<u64> = metas.iter().map(|meta| meta.seq).collect();
    Ok(Checked {
        generation: manifest.generation,
        horizon: manifest.horizon,
        entries,
        bytes: metas.iter().map(|meta| meta.len).sum(),
        tables: metas,
        leftovers: leftovers(&names, manifest.generation, &listed),
    })
}

/// The files among `names` that are not part of the live set of manifest
/// `generation` listing tables `listed`, sorted by name. Names that are
/// neither tables nor manifests (the log's) are none of its business.
fn leftovers(names: &[String], generation: u64, listed: &[u64]) -> Vec<Leftover> {
    let mut found: Vec<Leftover> = names
        .iter()
        .filter_map(|name| {
            if let Some(stem) = name.strip_suffix(".tmp") {
                let ours = parse_table_name(stem).is_some() || parse_manifest_name(stem).is_some();
                ours.then(|| Leftover::Unfinished(name.clone()))
            } else if parse_table_name(name).is_some_and(|seq| !listed.contains(&seq)) {
                Some(Leftover::Unlisted(name.clone()))
            } else if parse_manifest_name(name).is_some_and(|found| found < generation) {
                Some(Leftover::Superseded(name.clone()))
            } else {
                None
            }
        })
        .collect();
    found.sort_by(|a, b| a.name().cmp(b.name()));
    found
}

fn list(storage: &dyn Storage) -> Result<Vec<String>, TableError> {
    let names = storage
        .list()
        .map_err(|source| IoFailure::new("list", storage.describe(""), source))?;
    Ok(names)
}

/// The newest manifest among `names`, read and checked; generation 0 with
/// no tables if there is none.
fn newest_manifest(storage: &dyn Storage, names: &[String]) -> Result<Manifest, TableError> {
    let newest = names
        .iter()
        .filter_map(|name| parse_manifest_name(name))
        .max();
    match newest {
        Some(generation) => read_manifest(storage, generation),
        None => Ok(Manifest {
            generation: 0,
            horizon: 0,
            tables: Vec::new(),
        }),
    }
}

fn read_manifest(storage: &dyn Storage, generation: u64) -> Result<Manifest, TableError> {
    let name = manifest_name(generation);
    let bytes = storage
        .read(&name)
        .map_err(|source| IoFailure::new("read", storage.describe(&name), source))?;
    let corrupt = |offset: usize, reason: &str| TableError::Corrupt {
        file: storage.describe(&name),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let manifest = Manifest::decode(&bytes).map_err(|(offset, why)| corrupt(offset, why))?;
    if manifest.generation != generation {
        return Err(corrupt(16, "generation differs from the file name"));
    }
    Ok(manifest)
}

/// Opens every table the manifest lists, each checked against its row.
fn open_listed(storage: &dyn Storage, manifest: &Manifest) -> Result<Vec<Arc<Table>>, TableError> {
    let present = list(storage)?;
    let manifest_file = storage.describe(&manifest_name(manifest.generation));
    let mut tables = Vec::with_capacity(manifest.tables.len());
    for (row, listed) in manifest.tables.iter().enumerate() {
        let name = table_name(listed.seq);
        if !present.contains(&name) {
            return Err(TableError::Missing {
                file: storage.describe(&name),
                manifest: manifest_file,
            });
        }
        let table = Table::open(storage, listed.seq)?;
        if table.meta() != listed {
            return Err(TableError::Corrupt {
                file: manifest_file,
                offset: (32 + 40 * row) as u64,
                reason: format!("row for {name} differs from the table's header"),
            });
        }
        tables.push(Arc::new(table));
    }
    Ok(tables)
}

/// The run of tables to merge next, oldest first, if one is due.
///
/// Size tiers: from the newest table back, a table joins the run while it
/// holds at most twice what the newer tables of the run hold together; a
/// run of `merge_fanin_min` or more is merged. Tables left out hold more
/// than twice everything newer, so their count grows with the logarithm of
/// the history. Past `tables_max` anyway, the adjacent pair with the
/// fewest entries is merged.
pub fn merge_candidate(sizes: &[u64], options: &StoreOptions) -> Option<Range<usize>> {
    let count = sizes.len();
    let mut start = count;
    let mut newer: u64 = 0;
    while start > 0 && (start == count || sizes[start - 1] <= newer.saturating_mul(2)) {
        newer = newer.saturating_add(sizes[start - 1]);
        start -= 1;
    }
    if count - start >= options.merge_fanin_min {
        return Some(start..count);
    }
    if count > options.tables_max {
        let pair = (1..count).min_by_key(|&at| sizes[at - 1] + sizes[at])?;
        return Some(pair - 1..pair + 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    /// A store of three tables of `per_table` entries each (16-byte keys,
    /// 100-byte values, so a table spans several blocks), closed again.
    fn three_tables(per_table: u64) -> SimStorage {
        let storage = SimStorage::new();
        let store = Store::open(Arc::new(storage.clone()), StoreOptions::default(), 0).unwrap();
        for table in 0..3 {
            let batch = (0..per_table)
                .map(|index| {
                    let key = (table * per_table + index).to_be_bytes().repeat(2);
                    (key, 1000 + table, vec![table as u8; 100])
                })
                .collect();
            store.add(batch).unwrap();
        }
        storage
    }

    fn sorted_names(storage: &SimStorage) -> Vec<String> {
        let mut names = storage.list().unwrap();
        names.sort();
        names
    }

    #[test]
    fn check_reads_every_entry_of_a_clean_store_and_changes_nothing() {
        let storage = three_tables(100);
        let before = sorted_names(&storage);
        let checked = check(&storage).unwrap();
        assert_eq!((checked.generation, checked.horizon), (3, 0));
        assert_eq!(checked.tables.len(), 3);
        assert_eq!(checked.entries, 300);
        let bytes: u64 = before
            .iter()
            .filter(|name| parse_table_name(name).is_some())
            .map(|name| storage.contents(name).unwrap().len() as u64)
            .sum();
        assert_eq!(checked.bytes, bytes);
        assert!(checked.tables.iter().all(|table| table.len > 2 * 4096));
        assert_eq!(checked.leftovers, Vec::new());
        assert!(!checked.is_empty());
        assert_eq!(sorted_names(&storage), before);
        assert!(check(&SimStorage::new()).unwrap().is_empty());
    }

    #[test]
    fn check_names_the_table_and_offset_of_a_flipped_byte_in_a_block() {
        let storage = three_tables(100);
        let name = table_name(2);
        let at = 4096 + 100;
        let byte = storage.contents(&name).unwrap()[at];
        storage.corrupt(&name, at, &[byte ^ 0x01]);
        // Opening checks all but the blocks; only the scan finds this.
        assert!(read_listed(&storage).is_ok());
        let error = check(&storage).unwrap_err();
        match &error {
            TableError::Corrupt { file, offset, .. } => {
                assert_eq!(file, &storage.describe(&name));
                assert!((4096..8192).contains(offset), "{error}");
            }
            other => panic!("expected damage, got {other}"),
        }
        assert!(error.to_string().contains(&name), "{error}");
    }

    #[test]
    fn check_lists_leftovers_without_removing_them_and_open_removes_them() {
        let storage = three_tables(10);
        let unlisted = table_name(9);
        let table = storage.contents(&table_name(1)).unwrap();
        storage
            .open(&unlisted, true)
            .unwrap()
            .write_at(0, &table)
            .unwrap();
        let older = read_manifest(&storage, 3).unwrap();
        Manifest {
            generation: 2,
            ..older
        }
        .write(&storage)
        .unwrap();
        let unfinished = format!("{}.tmp", table_name(10));
        storage.open(&unfinished, true).unwrap();
        let before = sorted_names(&storage);

        let checked = check(&storage).unwrap();
        assert_eq!(checked.entries, 30);
        assert_eq!(
            checked.leftovers,
            vec![
                Leftover::Superseded(manifest_name(2)),
                Leftover::Unlisted(unlisted.clone()),
                Leftover::Unfinished(unfinished.clone()),
            ]
        );
        assert_eq!(sorted_names(&storage), before, "check removes nothing");

        // What check called leftovers (but `.tmp`, the log's) goes at open.
        drop(Store::open(Arc::new(storage.clone()), StoreOptions::default(), 3).unwrap());
        let after = sorted_names(&storage);
        assert!(!after.contains(&unlisted) && !after.contains(&manifest_name(2)));
        assert!(after.contains(&unfinished));
        assert_eq!(check(&storage).unwrap().leftovers.len(), 1);
    }

    #[test]
    fn size_tiers_merge_similar_tables_and_keep_the_count_logarithmic() {
        let options = StoreOptions::default();
        assert_eq!(merge_candidate(&[10, 10, 10], &options), None);
        assert_eq!(merge_candidate(&[10, 10, 10, 10], &options), Some(0..4));
        assert_eq!(
            merge_candidate(&[1000, 10, 10, 10, 10], &options),
            Some(1..5)
        );
        // Simulate a long history: one table of 10 per checkpoint.
        let mut sizes: Vec<u64> = Vec::new();
        let mut tables_most = 0;
        for _ in 0..100_000 {
            sizes.push(10);
            while let Some(run) = merge_candidate(&sizes, &options) {
                let merged = sizes[run.clone()].iter().sum();
                sizes.splice(run, [merged]);
            }
            tables_most = tables_most.max(sizes.len());
        }
        assert_eq!(sizes.iter().sum::<u64>(), 1_000_000);
        assert!(tables_most <= 16, "{tables_most} tables at once");
    }

    #[test]
    fn past_tables_max_the_smallest_adjacent_pair_is_merged() {
        let options = StoreOptions {
            tables_max: 3,
            merge_fanin_min: 10,
        };
        assert_eq!(merge_candidate(&[100, 50, 20, 5], &options), Some(2..4));
        assert_eq!(merge_candidate(&[100, 50, 20], &options), None);
    }
}
