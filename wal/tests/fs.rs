//! The log on the real file system: preallocation, locking, reopening,
//! torn tails in real files, and the errors an operator sees.

use std::fs;
use std::io::Write;
use std::path::Path;

use wal::{Lsn, OpenError, Options, RecordKind, Wal};

fn options() -> Options {
    Options {
        segment_size: 64 * 1024,
        payload_len_max: 4096,
        ..Options::default()
    }
}

fn segment_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".wal"))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, entry.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

/// Replays the log, asserting record `i` is 2000 bytes of `i as u8` (as
/// the tests here append them); returns how many there are.
fn indexed_records(log: &Wal) -> u32 {
    let mut seen = 0u32;
    log.replay(Lsn::FIRST, |record| {
        assert_eq!(record.payload, &[seen as u8; 2000][..]);
        seen += 1;
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    seen
}

/// The payload the checkpointing tests append as record `lsn`.
fn numbered_body(lsn: u64) -> Vec<u8> {
    vec![lsn as u8 | 1; 1500]
}

/// Replays from `first`, checking each record's LSN and payload
/// ([`numbered_body`]); returns the LSN after the last record.
fn replay_numbered(log: &Wal, first: Lsn) -> u64 {
    let mut seen = first.0;
    log.replay(first, |record| {
        assert_eq!(record.lsn.0, seen);
        assert_eq!(record.payload, numbered_body(seen));
        seen += 1;
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    seen
}

/// Spare, kept-for-reuse and other temporary files left in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[test]
fn segments_are_preallocated_rotated_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Wal::open(dir.path(), options()).unwrap().wal;
    for index in 0..100u32 {
        let lsn = log.append(RecordKind(1), &[index as u8; 2000]).unwrap();
        assert_eq!(lsn, Lsn(u64::from(index) + 1));
    }
    drop(log);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    assert!(
        segments.iter().all(|(_, len)| *len == 64 * 1024),
        "{segments:?}"
    );
    assert_eq!(segments[0].0, "00000000000000000001.wal");
    let leftovers = temp_files(dir.path());
    assert!(
        leftovers.is_empty(),
        "spare segments are cleaned up: {leftovers:?}"
    );

    let recovered = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(recovered.report.records, 100);
    assert_eq!(recovered.report.next_lsn, Lsn(101));
    assert_eq!(recovered.report.torn_tail, None);
    assert_eq!(indexed_records(&recovered.wal), 100);
}

#[test]
fn a_second_opener_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Wal::open(dir.path(), options()).unwrap();
    let error = Wal::open(dir.path(), options()).err().unwrap();
    assert!(
        error.to_string().contains("locked by another process"),
        "{error}"
    );
}

#[test]
fn a_directory_holding_other_files_is_not_taken_for_a_wal() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    match Wal::open(dir.path(), options()) {
        Err(OpenError::NotAWal { dir: named, found }) => {
            assert!(named.contains(&*dir.path().to_string_lossy()));
            assert_eq!(found, "notes.txt");
        }
        other => panic!("expected NotAWal, got {:?}", other.err()),
    }
    assert_eq!(
        fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn an_unusable_path_gives_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, "x").unwrap();
    let target = file.join("wal");
    let error = Wal::open(&target, options()).err().unwrap();
    assert!(
        error.to_string().contains(&*target.to_string_lossy()),
        "{error}"
    );
}

#[test]
fn a_torn_tail_in_a_real_file_is_zeroed_and_appending_continues() {
    let dir = tempfile::tempdir().unwrap();
    let log = Wal::open(dir.path(), options()).unwrap().wal;
    for index in 0..5u8 {
        log.append(RecordKind(1), &[index; 100]).unwrap();
    }
    drop(log);
    // Simulate a torn sixth record: a header and half a payload.
    let segment = dir.path().join("00000000000000000001.wal");
    let end = 32 + 5 * wal::framed_len(100) as u64;
    let mut file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(end)).unwrap();
    let mut torn = Vec::new();
    torn.extend_from_slice(&[0xAB; 4]);
    torn.extend_from_slice(&100u32.to_le_bytes());
    torn.extend_from_slice(&6u64.to_le_bytes());
    torn.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    torn.extend_from_slice(&[7; 40]);
    file.write_all(&torn).unwrap();
    drop(file);

    let recovered = Wal::open(dir.path(), options()).unwrap();
    let (name, offset, bytes) = recovered.report.torn_tail.clone().expect("torn tail found");
    assert_eq!(name, "00000000000000000001.wal");
    assert_eq!((offset, bytes), (end, torn.len() as u64));
    assert_eq!(recovered.wal.append(RecordKind(1), b"six").unwrap(), Lsn(6));
    drop(recovered);
    let again = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(again.report.records, 6);
    assert_eq!(again.report.torn_tail, None);
}

#[test]
fn corruption_is_refused_with_segment_and_offset_and_the_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Wal::open(dir.path(), options()).unwrap().wal;
    for index in 0..5u8 {
        log.append(RecordKind(1), &[index; 100]).unwrap();
    }
    drop(log);
    let segment = dir.path().join("00000000000000000001.wal");
    let mut bytes = fs::read(&segment).unwrap();
    let second_record = 32 + wal::framed_len(100) + 30;
    bytes[second_record] ^= 0x10;
    fs::write(&segment, &bytes).unwrap();
    let error = Wal::open(dir.path(), options()).err().unwrap();
    let text = error.to_string();
    assert!(text.contains("00000000000000000001.wal"), "{text}");
    assert!(
        text.contains(&format!("offset {}", 32 + wal::framed_len(100))),
        "{text}"
    );
    assert_eq!(fs::read(&segment).unwrap(), bytes, "open changed nothing");
}

#[test]
fn bad_options_are_rejected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let too_small = Options {
        segment_size: 1000,
        payload_len_max: 4096,
        ..Options::default()
    };
    let error = Wal::open(dir.path(), too_small).err().unwrap();
    assert!(matches!(error, OpenError::BadOptions(_)), "{error}");
}

#[test]
fn checkpointed_segments_are_reused_on_disk_and_the_log_reopens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Wal::open(dir.path(), options()).unwrap().wal;
    let recycled = |dir: &Path| {
        segment_files(dir)
            .iter()
            .filter(|(name, _)| {
                let bytes = fs::read(dir.join(name)).unwrap();
                u32::from_le_bytes(bytes[12..16].try_into().unwrap()) & 1 == 1
            })
            .count()
    };
    let mut next = 1u64;
    while recycled(dir.path()) == 0 {
        assert_eq!(
            log.append(RecordKind(1), &numbered_body(next)).unwrap(),
            Lsn(next)
        );
        next += 1;
        if next.is_multiple_of(50) {
            log.checkpoint(log.durable_lsn()).unwrap();
        }
        assert!(next < 10_000, "no segment was ever reused");
    }
    let first = log.first_lsn();
    drop(log);
    let leftovers = temp_files(dir.path());
    assert!(
        leftovers.len() <= 2 && leftovers.iter().all(|name| name.starts_with("recycled-")),
        "only segments kept for reuse are left: {leftovers:?}"
    );
    let recovered = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(recovered.report.torn_tail, None);
    assert_eq!(recovered.report.next_lsn, Lsn(next));
    assert_eq!(replay_numbered(&recovered.wal, first), next);
}

fn is_recycled(dir: &Path, segment: &str) -> bool {
    let bytes = fs::read(dir.join(segment)).unwrap();
    u32::from_le_bytes(bytes[12..16].try_into().unwrap()) & 1 == 1
}

#[test]
fn segments_kept_for_reuse_are_reused_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 1u64;
    let mut append_until = |log: &Wal, done: &dyn Fn() -> bool| {
        while !done() {
            assert_eq!(
                log.append(RecordKind(1), &numbered_body(next)).unwrap(),
                Lsn(next)
            );
            next += 1;
            assert!(next < 10_000, "the log never rotated");
        }
    };
    let log = Wal::open(dir.path(), options()).unwrap().wal;
    append_until(&log, &|| segment_files(dir.path()).len() >= 4);
    assert_eq!(log.checkpoint(log.durable_lsn()).unwrap(), 3);
    let first = log.first_lsn();
    drop(log);
    let kept = temp_files(dir.path());
    assert!(
        (1..=2).contains(&kept.len()) && kept.iter().all(|name| name.starts_with("recycled-")),
        "a closed log keeps checkpointed segments for reuse: {kept:?}"
    );

    // Reopened, the log installs a kept segment at its next rotation
    // instead of zero-filling a new file.
    let log = Wal::open(dir.path(), options()).unwrap().wal;
    append_until(&log, &|| segment_files(dir.path()).len() >= 2);
    let live = segment_files(dir.path());
    assert!(is_recycled(dir.path(), &live[1].0), "{live:?}");
    drop(log);

    let recovered = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(recovered.report.next_lsn, Lsn(next));
    assert_eq!(replay_numbered(&recovered.wal, first), next);
    drop(recovered);

    // A log that prepares no segments ahead has nobody to hand them to.
    let unprepared = Options {
        prepare_segments_ahead: false,
        ..options()
    };
    drop(Wal::open(dir.path(), unprepared).unwrap());
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn a_log_reopened_with_another_segment_size_keeps_every_record_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let large = Options {
        segment_size: 1 << 20,
        ..options()
    };
    let log = Wal::open(dir.path(), large).unwrap().wal;
    for index in 0..100u32 {
        log.append(RecordKind(1), &[index as u8; 2000]).unwrap();
    }
    drop(log);
    // The live segment already holds ~200 KiB, more than a new segment may.
    let smaller = Wal::open(dir.path(), options()).unwrap().wal;
    for index in 100..150u32 {
        let lsn = smaller.append(RecordKind(1), &[index as u8; 2000]).unwrap();
        assert_eq!(lsn, Lsn(u64::from(index) + 1));
    }
    drop(smaller);
    let segments = segment_files(dir.path());
    assert_eq!(segments[0], ("00000000000000000001.wal".into(), 1 << 20));
    assert!(
        segments[1..].iter().all(|(_, len)| *len == 64 * 1024),
        "later segments have the new size: {segments:?}"
    );
    // And back to the larger size: the 64 KiB segments are read whole.
    let reopened = Wal::open(dir.path(), large).unwrap();
    assert_eq!(reopened.report.torn_tail, None);
    assert_eq!(indexed_records(&reopened.wal), 150);
    reopened.wal.append(RecordKind(1), b"after").unwrap();
}
