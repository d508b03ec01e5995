//! The table store on simulated storage: a crash at every step of adding a
//! table, merging and expiring; a full disk at every write; damaged and
//! missing files refused with their name and offset; and a model-based
//! property test against a `BTreeMap`.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use proptest::prelude::*;
use wal::Storage;
use wal::sim::SimStorage;
use wal::table::{Found, Store, StoreOptions, TableError, manifest_name, table_name};

/// Keys of the tests' universe.
const KEYS: u64 = 120;

fn key(index: u64) -> Vec<u8> {
    let mut key = index.to_be_bytes().to_vec();
    key.extend_from_slice(&index.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    key
}

fn value(index: u64, version: u64) -> Vec<u8> {
    let len = ((index * 13 + version * 7) % 300) as usize;
    (0..len)
        .map(|at| (at as u64 + index + version) as u8)
        .collect()
}

fn options() -> StoreOptions {
    StoreOptions {
        tables_max: 4,
        merge_fanin_min: 3,
    }
}

fn open(storage: &SimStorage, relied_on: u64) -> Result<Store, TableError> {
    Store::open(Arc::new(storage.clone()), options(), relied_on)
}

/// What lookups must answer: the newest entry per key, unless older than
/// the horizon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    entries: BTreeMap<Vec<u8>, Found>,
    horizon: u64,
}

impl Model {
    fn add(&mut self, batch: &[(Vec<u8>, u64, Vec<u8>)]) {
        for (key, time, value) in batch {
            let found = Found {
                time: *time,
                value: value.clone(),
            };
            self.entries.insert(key.clone(), found);
        }
    }

    fn expire(&mut self, cutoff: u64) {
        self.horizon = self.horizon.max(cutoff);
    }

    fn expected(&self, key: &[u8]) -> Option<Found> {
        self.entries
            .get(key)
            .filter(|found| found.time >= self.horizon)
            .cloned()
    }

    /// Every key of the universe answers as the model says.
    fn matches(&self, store: &Store) -> bool {
        (0..KEYS).all(|index| store.get(&key(index)).unwrap() == self.expected(&key(index)))
    }
}

fn batch(keys: impl Iterator<Item = u64>, time: u64) -> Vec<(Vec<u8>, u64, Vec<u8>)> {
    keys.map(|index| (key(index), time, value(index, time)))
        .collect()
}

/// A store with four tables (times 100..=400, 40, 40, 20 and 10 entries)
/// and a model of it.
fn four_tables() -> (SimStorage, Store, Model) {
    let storage = SimStorage::new();
    let store = open(&storage, 0).unwrap();
    let mut model = Model::default();
    for (step, keys) in [(0..40), (30..70), (60..80), (0..10)]
        .into_iter()
        .enumerate()
    {
        let batch = batch(keys, 100 * (step as u64 + 1));
        store.add(batch.clone()).unwrap();
        model.add(&batch);
    }
    assert_eq!(store.tables().len(), 4);
    (storage, store, model)
}

/// Every crash image of `change` opens, relying on the generation before
/// it, and answers exactly as before the change or exactly as after it.
fn assert_every_crash_keeps_before_or_after(
    storage: &SimStorage,
    store: &Store,
    before: &Model,
    after: &Model,
    change: impl FnOnce(&Store),
) {
    let relied_on = store.generation();
    storage.record_crash_images();
    change(store);
    let images = storage.take_crash_images();
    assert!(images.len() > 10, "{} images", images.len());
    assert!(after.matches(store));
    let (mut old, mut new) = (0, 0);
    for image in images {
        let reopened = open(&image, relied_on).unwrap();
        if before.matches(&reopened) {
            old += 1;
        } else {
            assert!(after.matches(&reopened), "a crash image is neither");
            new += 1;
        }
        // Leftovers are gone: exactly the live manifest and tables remain.
        let mut names = image.list().unwrap();
        names.sort();
        let mut live: Vec<String> = reopened
            .tables()
            .iter()
            .map(|table| table_name(table.seq))
            .collect();
        if reopened.generation() > 0 {
            live.push(manifest_name(reopened.generation()));
        }
        live.sort();
        assert_eq!(names, live);
    }
    assert!(old > 0 && new > 0, "{old} old and {new} new images");
}

#[test]
fn a_crash_at_every_step_of_adding_a_table_keeps_the_old_or_the_new_set() {
    let (storage, store, before) = four_tables();
    let added = batch(90..110, 500);
    let mut after = before.clone();
    after.add(&added);
    assert_every_crash_keeps_before_or_after(&storage, &store, &before, &after, |store| {
        store.add(added).unwrap();
    });
}

#[test]
fn a_crash_at_every_step_of_a_merge_and_expiry_keeps_the_old_or_the_new_set() {
    let (storage, store, before) = four_tables();
    let mut after = before.clone();
    after.expire(150);
    assert_every_crash_keeps_before_or_after(&storage, &store, &before, &after, |store| {
        let done = store.maintain(150).unwrap();
        assert_eq!((done.expired, done.merged), (1, 3), "{done:?}");
    });
    assert_eq!(store.tables().len(), 1);
}

#[test]
fn a_full_disk_during_a_change_leaves_the_old_set_serving_and_on_disk() {
    let (storage, store, before) = four_tables();
    let added = batch(100..120, 500);
    for writes_left in 0.. {
        storage.fail_writes_after(writes_left, io::ErrorKind::StorageFull);
        let result = store.add(added.clone()).and_then(|_| store.maintain(150));
        storage.fail_writes_after(u64::MAX, io::ErrorKind::StorageFull);
        if result.is_ok() {
            break;
        }
        let error = result.unwrap_err();
        assert!(error.to_string().contains("sim:/"), "{error}");
        // Anything half-done either stands whole or is invisible.
        let reopened = open(&storage.crash(), 0).unwrap();
        let mut added_model = before.clone();
        added_model.add(&added);
        assert!(before.matches(&store) || added_model.matches(&store));
        assert!(before.matches(&reopened) || added_model.matches(&reopened));
        assert!(
            !storage
                .list()
                .unwrap()
                .iter()
                .any(|name| name.ends_with(".tmp")),
            "a failed write leaves no temporary file"
        );
    }
}

#[test]
fn a_missing_table_or_lost_manifest_is_refused_by_name() {
    let (storage, store, _) = four_tables();
    let generation = store.generation();
    let listed = table_name(store.tables()[1].seq);
    drop(store);
    let error = open(&storage, generation + 1).unwrap_err();
    assert!(
        matches!(error, TableError::ManifestBehind { found, expected } if found == generation && expected == generation + 1),
        "{error}"
    );
    storage.delete(&listed);
    let error = open(&storage, generation).unwrap_err();
    assert!(error.to_string().contains(&listed), "{error}");
}

#[test]
fn every_cut_and_flipped_byte_of_the_manifest_is_refused_by_name_and_offset() {
    let (storage, store, _) = four_tables();
    let name = manifest_name(store.generation());
    drop(store);
    let bytes = storage.contents(&name).unwrap();
    for len in 0..bytes.len() {
        let damaged = storage.crash();
        damaged.truncate(&name, len);
        let error = open(&damaged, 0).unwrap_err();
        assert!(error.to_string().contains(&name), "cut at {len}: {error}");
    }
    for at in 0..bytes.len() {
        let damaged = storage.crash();
        damaged.corrupt(&name, at, &[bytes[at] ^ 0x20]);
        match open(&damaged, 0).unwrap_err() {
            TableError::Corrupt { file, offset, .. } => {
                assert!(file.contains(&name) && offset <= bytes.len() as u64)
            }
            other => panic!("flip at {at}: {other}"),
        }
    }
}

#[test]
fn a_damaged_table_is_refused_at_open_or_at_the_lookup_that_reads_it() {
    let (storage, store, _) = four_tables();
    let first = store.tables()[0];
    drop(store);
    let name = table_name(first.seq);
    // The header: refused at open, naming the file and the offset.
    let damaged = storage.crash();
    damaged.corrupt(&name, 30, &[0xff]);
    let error = open(&damaged, 0).unwrap_err();
    assert!(error.to_string().contains(&name), "{error}");
    // A data block: found when read.
    let damaged = storage.crash();
    damaged.corrupt(&name, 4096 + 20, &[0xff]);
    let reopened = open(&damaged, 0).unwrap();
    // Key 10 is only in the first table, in its first block.
    let error = reopened.get(&key(10)).unwrap_err();
    assert!(
        matches!(&error, TableError::Corrupt { file, offset: 4096, .. } if file.contains(&name)),
        "{error}"
    );
    assert!(reopened.verify().is_err());
}

#[derive(Clone, Debug)]
enum Op {
    Add(Vec<u64>),
    Get(u64),
    Maintain { retention: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::btree_set(0..KEYS, 1..30)
            .prop_map(|keys| Op::Add(keys.into_iter().collect())),
        3 => (0..KEYS).prop_map(Op::Get),
        2 => (0..60u64).prop_map(|retention| Op::Maintain { retention }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_store_answers_like_a_map_through_adds_merges_expiries_and_reopens(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut storage = SimStorage::new();
        let mut store = open(&storage, 0).unwrap();
        let mut model = Model::default();
        let mut now = 1_000;
        for op in ops {
            now += 7;
            match op {
                Op::Add(keys) => {
                    let batch = batch(keys.into_iter(), now);
                    store.add(batch.clone()).unwrap();
                    model.add(&batch);
                }
                Op::Get(index) => {
                    prop_assert_eq!(store.get(&key(index)).unwrap(), model.expected(&key(index)));
                }
                Op::Maintain { retention } => {
                    let before = store.tables().len();
                    store.maintain(now - retention).unwrap();
                    model.expire(now - retention);
                    // One maintain makes at most one merge: over the bound
                    // it shrinks the set, so a checkpoint (one add, then one
                    // maintain) keeps it within `tables_max`.
                    let after = store.tables().len();
                    prop_assert!(after <= before);
                    prop_assert!(after <= options().tables_max || after < before);
                }
                Op::Reopen => {
                    let generation = store.generation();
                    drop(store);
                    storage = storage.crash();
                    store = open(&storage, generation).unwrap();
                }
            }
        }
        prop_assert!(model.matches(&store));
        store.verify().unwrap();
    }
}
