//! Exhaustive and randomized crash tests of the log on simulated storage:
//! every truncation point, every flipped byte, dropped and torn unsynced
//! writes, failed writes and syncs.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};

use common::{assert_images_keep_acknowledged, crash_images_while_appending, read_all};
use wal::sim::{CrashMode, SimStorage};
use wal::{AppendError, Lsn, OpenError, Options, RecordKind, Storage, Wal};

/// Records in the test log: enough to span three segments.
const RECORDS: u64 = 30;

fn small_options() -> Options {
    Options {
        segment_size: 1024,
        payload_len_max: 100,
        prepare_segments_ahead: false,
        ..Options::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    let len = 10 + (index as usize * 37) % 80;
    (0..len)
        .map(|byte| (index as usize * 7 + byte) as u8)
        .collect()
}

fn open(storage: &SimStorage) -> Result<Wal, OpenError> {
    Wal::open_storage(Arc::new(storage.clone()), small_options()).map(|recovered| recovered.wal)
}

/// Writes `count` records and returns the storage and the segment names.
fn written_log(count: u64) -> (SimStorage, Vec<String>) {
    let storage = SimStorage::new();
    let log = open(&storage).unwrap();
    for index in 1..=count {
        assert_eq!(
            log.append(RecordKind(1), &payload(index)).unwrap(),
            Lsn(index)
        );
    }
    drop(log);
    let mut segments: Vec<String> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .collect();
    segments.sort();
    (storage, segments)
}

/// End offsets of the records in a segment's bytes, in order: where the
/// checksummed bytes end, and where the padding ends.
fn record_ends(bytes: &[u8], first: u64) -> Vec<(usize, usize)> {
    let mut ends = Vec::new();
    let mut offset = wal::SEGMENT_HEADER_LEN;
    let mut lsn = first;
    while offset + wal::RECORD_HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap());
        let stored_lsn = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
        if len == 0 && stored_lsn == 0 {
            break;
        }
        assert_eq!(stored_lsn, lsn);
        let content_end = offset + wal::RECORD_HEADER_LEN + len as usize;
        offset += wal::framed_len(len as usize);
        ends.push((content_end, offset));
        lsn += 1;
    }
    ends
}

#[test]
fn every_truncation_point_of_the_last_segment_recovers_exactly_the_whole_records_before_it() {
    let (pristine, segments) = written_log(RECORDS);
    assert!(segments.len() >= 2, "the test log spans segments");
    let last = segments.last().unwrap();
    let first_in_last: u64 = last.trim_end_matches(".wal").parse().unwrap();
    let bytes = pristine.contents(last).unwrap();
    let ends = record_ends(&bytes, first_in_last);
    let used = ends.last().unwrap().1;
    for cut in 0..=used + 8 {
        for zero_instead_of_cut in [false, true] {
            let storage = pristine.crash();
            if zero_instead_of_cut {
                storage.corrupt(last, cut, &vec![0; bytes.len() - cut]);
            } else {
                storage.truncate(last, cut);
            }
            // Zeroing only padding loses nothing; cutting the file must keep it.
            let whole_before_cut = ends
                .iter()
                .filter(|(content, framed)| {
                    if zero_instead_of_cut {
                        *content <= cut
                    } else {
                        *framed <= cut
                    }
                })
                .count() as u64;
            match open(&storage) {
                Ok(log) => {
                    let records = read_all(&log);
                    let expected = first_in_last - 1 + whole_before_cut;
                    assert_eq!(records.len() as u64, expected, "cut at {cut}");
                    for (lsn, payload_bytes) in &records {
                        assert_eq!(payload_bytes, &payload(*lsn), "cut at {cut}");
                    }
                    // The log goes on after the cut with the next lsn.
                    assert_eq!(
                        log.append(RecordKind(2), b"after").unwrap(),
                        Lsn(expected + 1)
                    );
                }
                Err(OpenError::Corrupt { offset, .. }) => {
                    assert!(
                        cut < wal::SEGMENT_HEADER_LEN,
                        "cut at {cut} refused at {offset}"
                    );
                }
                Err(other) => panic!("cut at {cut}: unexpected {other}"),
            }
        }
    }
}

#[test]
fn truncating_a_sealed_segment_is_refused_as_corruption_unless_no_record_is_lost() {
    let (pristine, segments) = written_log(RECORDS);
    let sealed = &segments[0];
    let bytes = pristine.contents(sealed).unwrap();
    let ends = record_ends(&bytes, 1);
    let (content_end, used) = *ends.last().unwrap();
    for cut in 0..=used {
        let storage = pristine.crash();
        storage.corrupt(sealed, cut, &vec![0; bytes.len() - cut]);
        let result = open(&storage);
        if cut >= content_end {
            assert_eq!(read_all(&result.unwrap()).len() as u64, RECORDS);
        } else {
            let error = result.err().expect("losing sealed records must be refused");
            assert!(
                matches!(error, OpenError::Corrupt { .. }),
                "cut at {cut}: {error}"
            );
        }
    }
}

#[test]
fn every_single_byte_corruption_recovers_a_true_prefix_or_is_refused() {
    let (pristine, segments) = written_log(RECORDS);
    let mut refused = 0;
    let mut truncated = 0;
    for (segment_index, name) in segments.iter().enumerate() {
        let first: u64 = name.trim_end_matches(".wal").parse().unwrap();
        let bytes = pristine.contents(name).unwrap();
        let ends = record_ends(&bytes, first);
        let used = ends.last().unwrap().1;
        let is_last_segment = segment_index + 1 == segments.len();
        for (position, original) in bytes.iter().enumerate().take(used) {
            for pattern in [0x01u8, 0xFF] {
                let storage = pristine.crash();
                storage.corrupt(name, position, &[original ^ pattern]);
                // Which record the damaged byte belongs to (None: the header).
                let damaged = ends
                    .iter()
                    .position(|&(_, end)| position < end)
                    .map(|index| first + index as u64);
                match open(&storage) {
                    Ok(log) => {
                        let records = read_all(&log);
                        for (lsn, payload_bytes) in &records {
                            assert_eq!(payload_bytes, &payload(*lsn), "flip at {name}:{position}");
                        }
                        let count = records.len() as u64;
                        if count < RECORDS {
                            truncated += 1;
                            // Only the very last record may be taken for a torn write.
                            assert!(
                                is_last_segment,
                                "flip at {name}:{position} lost sealed data"
                            );
                            assert_eq!(damaged, Some(RECORDS), "flip at {name}:{position}");
                            assert_eq!(count, RECORDS - 1);
                        }
                    }
                    Err(OpenError::Corrupt { .. }) => refused += 1,
                    Err(other) => panic!("flip at {name}:{position}: unexpected {other}"),
                }
            }
        }
    }
    assert!(
        refused > 0 && truncated > 0,
        "both verdicts occur ({refused}, {truncated})"
    );
}

#[test]
fn a_crash_loses_no_acknowledged_append_whatever_it_keeps_of_unsynced_writes() {
    for mode in [
        CrashMode::DropUnsynced,
        CrashMode::TearUnsynced { sectors: 1 },
        CrashMode::TearUnsynced { sectors: 3 },
    ] {
        let storage = SimStorage::new();
        let log = Arc::new(open(&storage).unwrap());
        let images =
            crash_images_while_appending(&storage, &log, mode, (4, 60, 40), payload, &|_, _, _| {});
        assert_images_keep_acknowledged(
            images,
            |image| open(image).expect("a crash image opens"),
            mode,
        );
    }
}

#[test]
fn a_failed_sync_poisons_the_log_and_nothing_after_it_is_acknowledged() {
    let storage = SimStorage::new();
    let log = open(&storage).unwrap();
    log.append(RecordKind(1), b"one").unwrap();
    storage.fail_syncs_after(0);
    let error = log.append(RecordKind(1), b"two").unwrap_err();
    assert!(matches!(error, AppendError::Poisoned { .. }), "{error}");
    assert!(
        error.to_string().contains("fdatasync sim:/"),
        "names the file: {error}"
    );
    // Storage is healthy again, but the log stays poisoned: no retried fsync.
    storage.fail_syncs_after(u64::MAX);
    assert!(matches!(
        log.append(RecordKind(1), b"three").unwrap_err(),
        AppendError::Poisoned { .. }
    ));
    assert!(log.poisoned().is_some());
    drop(log);
    let reopened = open(&storage.crash()).unwrap();
    let records = read_all(&reopened);
    assert_eq!(records[0], (1, b"one".to_vec()));
    assert!(
        records.len() <= 2,
        "the failed append may or may not have landed"
    );
}

#[test]
fn a_full_disk_fails_the_append_with_the_file_named_and_poisons_the_log() {
    let storage = SimStorage::new();
    let log = open(&storage).unwrap();
    log.append(RecordKind(1), b"fits").unwrap();
    storage.fail_writes_after(0, io::ErrorKind::StorageFull);
    let error = log.append(RecordKind(1), b"does not fit").unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("write sim:/00000000000000000001.wal"),
        "{text}"
    );
    assert!(log.append(RecordKind(1), b"later").is_err());
}

#[test]
fn a_disk_that_fills_while_a_spare_segment_is_zero_filled_frees_it_and_keeps_every_record() {
    // Where the first rotation falls, found on a healthy disk.
    let probe = SimStorage::new();
    let log = open(&probe).unwrap();
    let rotating = (1..)
        .find(|&index| {
            log.append(RecordKind(1), &payload(index)).unwrap();
            log.segment_count() == 2
        })
        .unwrap();

    let storage = SimStorage::new();
    let log = open(&storage).unwrap();
    for index in 1..rotating {
        log.append(RecordKind(1), &payload(index)).unwrap();
    }
    // The disk fills: the next write is the new segment's zero-fill.
    storage.fail_writes_after(0, io::ErrorKind::StorageFull);
    let text = log
        .append(RecordKind(1), &payload(rotating))
        .unwrap_err()
        .to_string();
    assert!(text.contains("zero-fill sim:/spare-"), "{text}");
    let names = storage.list().unwrap();
    assert!(
        names.iter().all(|name| !name.ends_with(".tmp")),
        "the partial spare gives its space back: {names:?}"
    );
    assert!(log.append(RecordKind(1), b"later").is_err(), "poisoned");
    drop(log);

    // Restarted with room on the disk: every acknowledged record, and the
    // log goes on where it stopped.
    let log = open(&storage.crash()).unwrap();
    let expected: Vec<_> = (1..rotating).map(|index| (index, payload(index))).collect();
    assert_eq!(read_all(&log), expected);
    assert_eq!(
        log.append(RecordKind(1), &payload(rotating)).unwrap(),
        Lsn(rotating)
    );
}

#[test]
fn a_write_failing_at_any_point_poisons_the_log_and_recovery_keeps_every_acknowledged_record() {
    // Writes include rotation's zero-fill and header, so some of these
    // failure points fall inside a segment rotation.
    for successes in 0..40 {
        let storage = SimStorage::new();
        let log = open(&storage).unwrap();
        storage.fail_writes_after(successes, io::ErrorKind::Other);
        let mut acknowledged = 0;
        for index in 1..=40 {
            match log.append(RecordKind(1), &payload(index)) {
                Ok(lsn) => {
                    acknowledged += 1;
                    assert_eq!(lsn, Lsn(index));
                }
                Err(error) => {
                    assert!(matches!(error, AppendError::Poisoned { .. }), "{error}");
                    break;
                }
            }
        }
        assert!(
            log.append(RecordKind(1), b"after").is_err(),
            "stays poisoned"
        );
        drop(log);
        let reopened = open(&storage.crash()).unwrap();
        let records = read_all(&reopened);
        assert!(records.len() >= acknowledged, "after {successes} writes");
        for (lsn, payload_bytes) in &records {
            assert_eq!(payload_bytes, &payload(*lsn));
        }
    }
}

#[test]
fn with_overlapping_syncs_a_failure_stops_acknowledgement_at_a_prefix_and_loses_nothing_acknowledged()
 {
    for successes in [0, 1, 3, 10, 25] {
        let storage = SimStorage::new();
        let options = Options {
            syncs_in_flight_max: 4,
            ..small_options()
        };
        let log = Arc::new(
            Wal::open_storage(Arc::new(storage.clone()), options)
                .unwrap()
                .wal,
        );
        storage.fail_syncs_after(successes);
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        std::thread::scope(|scope| {
            for writer in 0..6u64 {
                let log = Arc::clone(&log);
                let acknowledged = Arc::clone(&acknowledged);
                scope.spawn(move || {
                    for index in 0..30u64 {
                        match log.append(RecordKind(1), &payload(writer * 100 + index)) {
                            Ok(lsn) => {
                                acknowledged.lock().unwrap().insert(lsn.0);
                            }
                            Err(error) => {
                                assert!(matches!(error, AppendError::Poisoned { .. }));
                                return;
                            }
                        }
                    }
                });
            }
        });
        let acknowledged = acknowledged.lock().unwrap().clone();
        let count = acknowledged.len() as u64;
        // Durability is published in order: the acknowledged LSNs are 1..=n.
        assert_eq!(
            acknowledged,
            (1..=count).collect(),
            "after {successes} syncs"
        );
        assert!(
            log.poisoned().is_some(),
            "some sync failed after {successes}"
        );
        drop(log);
        let recovered = open(&storage.crash()).unwrap();
        assert!(
            read_all(&recovered).len() as u64 >= count,
            "after {successes} syncs"
        );
    }
}
