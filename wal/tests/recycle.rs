//! Recycled segments (docs/wal-format.md, "Recycled segments"): a checkpoint
//! keeps removed segments for reuse, rotation installs one instead of a
//! zero-filled spare, and recovery must find the end of the log although
//! stale records of the file's earlier life follow it. Every crash point and
//! every flipped byte of a recycled segment, and crashes while appending
//! into recycled segments.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{assert_images_keep_acknowledged, crash_images_while_appending, read_all};
use wal::sim::{CrashMode, SimStorage};
use wal::{Lsn, OpenError, Options, RecordKind, Storage, Wal};

/// Four pages: stale bytes survive after a batch's page in a recycled file.
const SEGMENT_SIZE: u64 = 16 << 10;
const PAGE: usize = 4096;

fn options() -> Options {
    Options {
        segment_size: SEGMENT_SIZE,
        payload_len_max: 100,
        prepare_segments_ahead: true,
        ..Options::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    let len = 10 + (index as usize * 37) % 80;
    (0..len)
        .map(|byte| (index as usize * 7 + byte) as u8 | 1)
        .collect()
}

fn open(storage: &SimStorage) -> Result<wal::Recovered, OpenError> {
    Wal::open_storage(Arc::new(storage.clone()), options())
}

fn segments(storage: &SimStorage) -> Vec<String> {
    let mut names: Vec<String> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

fn is_recycled(storage: &SimStorage, segment: &str) -> bool {
    let bytes = storage.contents(segment).unwrap();
    u32::from_le_bytes(bytes[12..16].try_into().unwrap()) & 1 == 1
}

fn first_lsn_of(segment: &str) -> u64 {
    segment.trim_end_matches(".wal").parse().unwrap()
}

/// Where each record's checksummed bytes end in a segment, in order.
fn content_ends(bytes: &[u8], first: u64) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut offset = wal::SEGMENT_HEADER_LEN;
    let mut lsn = first;
    while offset + wal::RECORD_HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
        let stored = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
        if stored != lsn || offset + wal::RECORD_HEADER_LEN + len > bytes.len() {
            break;
        }
        ends.push(offset + wal::RECORD_HEADER_LEN + len);
        offset = (offset + wal::RECORD_HEADER_LEN + len).next_multiple_of(8);
        lsn += 1;
    }
    ends
}

/// A log whose last two segments are recycled (the older one sealed), with
/// its open segment part-filled; plus the bytes of that segment as it was
/// installed (first page written, stale bytes after it), so a test can put
/// back what a crash would have left of unsynced writes.
struct RecycledLog {
    storage: SimStorage,
    last: String,
    installed: Vec<u8>,
    /// Offset just past the last record of the open segment.
    used: usize,
    /// Every record the log holds: (lsn, payload).
    records: Vec<(u64, Vec<u8>)>,
}

fn recycled_log() -> RecycledLog {
    let storage = SimStorage::new();
    let log = open(&storage).unwrap().wal;
    let mut next = 1u64;
    let mut append = |log: &Wal| {
        assert_eq!(
            log.append(RecordKind(1), &payload(next)).unwrap(),
            Lsn(next)
        );
        next += 1;
    };
    while segments(&storage).len() < 4 {
        append(&log);
    }
    let removed = log.checkpoint(log.durable_lsn()).unwrap();
    assert_eq!(removed, 3, "everything but the open segment is covered");
    // Images of the files kept for reuse, to know what stale bytes a
    // recycled segment starts with.
    let kept: BTreeMap<String, Vec<u8>> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with("recycled-"))
        .map(|name| {
            let bytes = storage.contents(&name).unwrap();
            (name, bytes)
        })
        .collect();
    // Two wait in the pool; a third when the preparer took one meanwhile
    // (the last append rotated, and it was readying the next spare).
    assert!(kept.len() >= 2, "checkpointed segments wait for reuse");
    // Rotate until two recycled segments are in use, then half-fill the last.
    let recycled_in_use = |storage: &SimStorage| {
        segments(storage)
            .iter()
            .filter(|name| is_recycled(storage, name))
            .count()
    };
    let mut guard = 0;
    while recycled_in_use(&storage) < 2 {
        append(&log);
        guard += 1;
        assert!(
            guard < 2000,
            "rotation never installed two recycled segments"
        );
    }
    for _ in 0..70 {
        append(&log);
    }
    let last = segments(&storage).last().unwrap().clone();
    assert!(is_recycled(&storage, &last));
    let records = read_all(&log);
    drop(log);
    let bytes = storage.contents(&last).unwrap();
    let used = *content_ends(&bytes, first_lsn_of(&last)).last().unwrap();
    assert!(used > PAGE, "records span more than the first page");
    // The stale image this segment was made from: the one whose bytes after
    // this life's pages are still there.
    let live_end = used.next_multiple_of(PAGE);
    let stale = kept
        .values()
        .find(|image| image[live_end..] == bytes[live_end..])
        .expect("the open segment is one of the recycled files")
        .clone();
    assert!(
        stale[live_end..].iter().any(|&byte| byte != 0),
        "stale records follow the live pages"
    );
    let mut installed = stale;
    installed[..PAGE].copy_from_slice(&bytes[..PAGE]);
    installed[wal::SEGMENT_HEADER_LEN..PAGE].fill(0);
    RecycledLog {
        storage,
        last,
        installed,
        used,
        records,
    }
}

#[test]
fn checkpointed_segments_are_reused_and_a_recycled_log_reopens_cleanly() {
    let log = recycled_log();
    let recovered = open(&log.storage).unwrap();
    assert_eq!(
        recovered.report.torn_tail, None,
        "stale bytes are not a torn tail"
    );
    assert_eq!(read_all(&recovered.wal), log.records);
    let next = log.records.last().unwrap().0 + 1;
    assert_eq!(
        recovered.wal.append(RecordKind(2), b"after").unwrap(),
        Lsn(next)
    );
    drop(recovered);
    let again = open(&log.storage).unwrap();
    assert_eq!(again.report.torn_tail, None);
    assert_eq!(again.report.next_lsn, Lsn(next + 1));
    assert_eq!(
        wal::inspect(&log.storage).unwrap().damage,
        None,
        "verify agrees"
    );
}

#[test]
fn every_crash_point_in_a_recycled_segment_recovers_exactly_the_whole_records_before_it() {
    let log = recycled_log();
    let first = first_lsn_of(&log.last);
    let pristine = log.storage.contents(&log.last).unwrap();
    let ends = content_ends(&pristine, first);
    let live_end = log.used.next_multiple_of(PAGE);
    for cut in wal::SEGMENT_HEADER_LEN..=live_end {
        // Unsynced writes from `cut` on are lost: those bytes are what the
        // file held when it was installed (zeros in its first page, stale
        // records after).
        let storage = log.storage.crash();
        storage.corrupt(&log.last, cut, &log.installed[cut..live_end]);
        // Records wholly before the cut, and one it crosses if the stale
        // bytes put back happen to equal what it wrote there.
        let image = storage.contents(&log.last).unwrap();
        let whole = ends
            .iter()
            .take_while(|&&end| end <= cut || image[cut..end] == pristine[cut..end])
            .count() as u64;
        let recovered = open(&storage).unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
        let records = read_all(&recovered.wal);
        let expected = &log.records[..(first - log.records[0].0 + whole) as usize];
        assert_eq!(
            records.len(),
            expected.len(),
            "cut at {cut}: records recovered"
        );
        assert!(records == expected, "cut at {cut}: a record changed");
        assert_eq!(
            recovered.wal.append(RecordKind(2), b"after").unwrap(),
            Lsn(first + whole),
            "cut at {cut}"
        );
    }
}

#[test]
fn every_flipped_byte_of_recycled_segments_recovers_a_true_prefix_or_is_refused() {
    let log = recycled_log();
    let all = segments(&log.storage);
    let sealed = &all[all.len() - 2];
    assert!(is_recycled(&log.storage, sealed));
    let sealed_bytes = log.storage.contents(sealed).unwrap();
    let sealed_live_end = content_ends(&sealed_bytes, first_lsn_of(sealed))
        .last()
        .unwrap()
        .next_multiple_of(PAGE);
    let last_live_end = log.used.next_multiple_of(PAGE);
    for (segment, live_end) in [(sealed, sealed_live_end), (&log.last, last_live_end)] {
        let bytes = log.storage.contents(segment).unwrap();
        for (at, byte) in bytes.iter().enumerate() {
            let storage = log.storage.crash();
            storage.corrupt(segment, at, &[byte ^ 0x5A]);
            match open(&storage) {
                Ok(recovered) => {
                    let records = read_all(&recovered.wal);
                    assert_eq!(
                        records[..],
                        log.records[..records.len()],
                        "{segment} byte {at}: not a prefix"
                    );
                    if at >= live_end {
                        // Stale bytes carry nothing of the log.
                        assert_eq!(records, log.records, "{segment} stale byte {at}");
                    } else if records.len() < log.records.len() {
                        // Only the last record can look torn (known limit).
                        assert_eq!(segment, &log.last, "sealed byte {at} lost records");
                        assert_eq!(records.len(), log.records.len() - 1, "byte {at}");
                    }
                }
                Err(OpenError::Corrupt { .. }) => {
                    assert!(at < live_end, "{segment} stale byte {at} refused")
                }
                Err(other) => panic!("{segment} byte {at}: unexpected {other}"),
            }
        }
    }
}

#[test]
fn a_crash_while_appending_into_recycled_segments_loses_no_acknowledged_append() {
    for mode in [
        CrashMode::DropUnsynced,
        CrashMode::TearUnsynced { sectors: 1 },
        CrashMode::TearUnsynced { sectors: 5 },
    ] {
        // Start in a recycled segment, stale records after the tail.
        let storage = recycled_log().storage;
        let last = segments(&storage).last().unwrap().clone();
        assert!(is_recycled(&storage, &last));
        let log = Arc::new(open(&storage).unwrap().wal);
        let checkpoint_now_and_then = |log: &Wal, writer: u64, index: u64| {
            if writer == 0 && index % 40 == 39 {
                log.checkpoint(log.durable_lsn()).unwrap();
            }
        };
        let images = crash_images_while_appending(
            &storage,
            &log,
            mode,
            (3, 400, 60),
            payload,
            &checkpoint_now_and_then,
        );
        assert_images_keep_acknowledged(
            images,
            |image| open(image).expect("a crash image opens").wal,
            mode,
        );
    }
}
