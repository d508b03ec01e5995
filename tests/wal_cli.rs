//! The `minipay wal` commands through the real binary: dump, verify, repair
//! and bench, their output and their exit codes on good and bad logs, and
//! on the history tables beside a log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use wal::table::{Store, StoreOptions, table_name};

fn minipay(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(args)
        .arg(dir)
        .output()
        .expect("run minipay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A log of `records` bench records from 3 writers, in a fresh directory.
fn bench_log(records: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    let output = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(["wal", "bench"])
        .arg(&dir)
        .args([
            "--writers",
            "3",
            "--records",
            &records.to_string(),
            "--size",
            "100",
        ])
        .args(["--segment-size", "65536", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for field in [
        "appends_per_sec",
        "mb_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
        "raw_fdatasync_per_sec",
    ] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field} in {report}");
    }
    (scratch, dir)
}

#[test]
fn dump_json_shows_every_bench_record_with_writer_seq_and_a_valid_checksum() {
    let (_scratch, dir) = bench_log(1000);
    let output = minipay(&["wal", "dump", "--json"], &dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000);
    let mut per_writer = [0u64; 3];
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["lsn"], index as u64 + 1);
        assert_eq!(line["kind"], "bench");
        assert_eq!(line["len"], 100);
        assert_eq!(line["valid"], true);
        let writer = line["writer"].as_u64().unwrap() as usize;
        assert_eq!(
            line["seq"], per_writer[writer],
            "each writer's records in order"
        );
        per_writer[writer] += 1;
    }
    let plain = text(&minipay(&["wal", "dump"], &dir).stdout);
    assert!(
        plain.starts_with("lsn=1 kind=bench(0x7f) len=100 writer="),
        "{plain}"
    );
}

#[test]
fn verify_reports_a_clean_log_and_changes_nothing() {
    let (_scratch, dir) = bench_log(2000);
    let before = std::fs::read_dir(&dir).unwrap().count();
    let output = minipay(&["wal", "verify"], &dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = text(&output.stdout);
    assert!(summary.starts_with("ok: "), "{summary}");
    assert!(
        summary.contains("2000 records, lsn 1..=2000, no torn tail"),
        "{summary}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), before);
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

#[test]
fn verify_names_segment_and_offset_of_corruption_and_repair_keeps_a_broken_copy() {
    let (_scratch, dir) = bench_log(2000);
    let segments = segment_names(&dir);
    assert!(segments.len() >= 3, "{segments:?}");
    // Flip a byte in the second record of the first segment.
    let first = dir.join(&segments[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    let second_record = 32 + wal::framed_len(100);
    bytes[second_record + 40] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();

    let output = minipay(&["wal", "verify"], &dir);
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(error.contains(&segments[0]), "{error}");
    assert!(
        error.contains(&format!("offset {second_record}")),
        "{error}"
    );
    assert!(error.contains("nothing was changed"), "{error}");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        bytes,
        "verify must not modify"
    );
    // The gateway/bank would refuse to open it too.
    assert!(wal::Wal::open(&dir, wal::Options::default()).is_err());

    let output = minipay(&["wal", "verify", "--repair"], &dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    assert!(report.starts_with("repaired: "), "{report}");
    assert!(
        report.contains("dropped the damaged record and 1998 valid records after it"),
        "{report}"
    );
    assert!(dir.join(format!("{}.broken", segments[0])).exists());
    assert_eq!(
        std::fs::read(dir.join(format!("{}.broken", segments[0]))).unwrap(),
        bytes
    );

    let output = minipay(&["wal", "verify"], &dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("1 records, lsn 1..=1"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn a_directory_that_is_not_a_wal_gets_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("notes.txt"), "x").unwrap();
    for command in [&["wal", "verify"][..], &["wal", "dump"][..]] {
        let output = minipay(command, scratch.path());
        assert!(!output.status.success());
        assert!(
            text(&output.stderr).starts_with("error: "),
            "{}",
            text(&output.stderr)
        );
    }
    let missing = scratch.path().join("missing");
    let output = minipay(&["wal", "verify"], &missing);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("missing"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn bench_rejects_bad_arguments_with_a_message() {
    let scratch = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(["wal", "bench"])
        .arg(scratch.path().join("wal"))
        .args(["--size", "8"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--size must be at least 16"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn disk_measures_the_raw_sync_rate_and_rejects_bad_arguments() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_minipay"))
            .args(["wal", "disk"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&["--size", "8192", "--threads", "2"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).is_empty());
    let line = text(&output.stdout);
    assert!(
        line.starts_with("raw disk: 2 threads x (pwrite 8192 B + fdatasync): "),
        "{line}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "the scratch file is removed");
    let output = run(&["--threads", "0"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--threads must be between 1 and 16"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn dump_into_a_reader_that_stops_early_ends_quietly_like_other_unix_tools() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    // Far more than a pipe's 64 KiB buffer holds, so the dump is still
    // writing when the reader goes away.
    let (_scratch, dir) = bench_log(5000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(["wal", "dump"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, as `minipay wal dump DIR | head -1` would, then close
    // the pipe while the dump still has lines to write.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("lsn=1 kind=bench"), "{first}");
    drop(reader);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "a closed pipe ends the dump by SIGPIPE, not by an error: {:?}",
        output.status
    );
    assert_eq!(text(&output.stderr), "", "nothing printed about the pipe");
}

/// Entries per table in [`add_tables`].
const TABLE_ENTRIES: u64 = 100;

/// The key of entry `index` of [`add_tables`]: its index, big-endian, twice.
fn table_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().repeat(2)
}

/// Adds three history tables of [`TABLE_ENTRIES`] entries each to `dir`
/// through the real store (as a checkpoint does), and closes it. Entry `n`
/// has key [`table_key`]`(n)`, time 1000 + its table and value "value n".
fn add_tables(dir: &Path) {
    let storage = Arc::new(wal::FsStorage::open_locked(dir).unwrap());
    let store = Store::open(storage, StoreOptions::default(), 0).unwrap();
    for table in 0..3 {
        let batch = (table * TABLE_ENTRIES..(table + 1) * TABLE_ENTRIES)
            .map(|index| {
                let value = format!("value {index}").into_bytes();
                (table_key(index), 1000 + table, value)
            })
            .collect();
        store.add(batch).unwrap();
    }
    assert_eq!((store.generation(), store.tables().len()), (3, 3));
}

/// Every file in `dir` with its bytes, to show a command changed nothing.
fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn verify_checks_the_history_tables_beside_a_log_and_removes_no_leftover() {
    let (_scratch, dir) = bench_log(100);
    add_tables(&dir);
    // A table no manifest lists: what a crash before a switch leaves.
    std::fs::copy(dir.join(table_name(1)), dir.join(table_name(99))).unwrap();
    let before = snapshot_of(&dir);
    let output = minipay(&["wal", "verify"], &dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = text(&output.stdout);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 3, "{summary}");
    assert!(
        lines[0].starts_with("ok: 1 segments, 100 records"),
        "{summary}"
    );
    assert!(
        lines[1].starts_with(
            "ok: history tables: manifest generation 3, horizon 0 ms, 3 tables, 300 entries checked, "
        ),
        "{summary}"
    );
    assert!(
        lines[2].starts_with("note: would be removed at the next open")
            && lines[2].contains(&format!("{} (not listed", table_name(99))),
        "{summary}"
    );
    assert_eq!(snapshot_of(&dir), before, "verify changes nothing");
}

#[test]
fn verify_fails_naming_the_table_and_offset_of_a_flipped_byte_in_a_block() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    add_tables(&dir);
    let damaged = dir.join(table_name(2));
    let mut bytes = std::fs::read(&damaged).unwrap();
    assert!(bytes.len() > 2 * 4096, "the table has a data block");
    bytes[4096 + 100] ^= 0x01;
    std::fs::write(&damaged, &bytes).unwrap();

    let output = minipay(&["wal", "verify"], &dir);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let error = text(&output.stderr);
    assert!(error.contains(&table_name(2)), "{error}");
    let offset: u64 = error
        .split("offset ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {error}"));
    assert!((4096..8192).contains(&offset), "{error}");
    assert!(error.contains("nothing was changed"), "{error}");
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        bytes,
        "verify must not modify"
    );

    let output = minipay(&["wal", "dump", "--tables"], &dir);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(&table_name(2)),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn dump_tables_json_prints_the_manifest_each_table_and_every_entry_in_key_order() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    add_tables(&dir);
    let output = minipay(&["wal", "dump", "--tables", "--json"], &dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1 + 3 + 300, "manifest, tables, entries");
    assert_eq!(lines[0]["type"], "manifest");
    assert_eq!(
        (&lines[0]["generation"], &lines[0]["tables"]),
        (&3.into(), &3.into())
    );
    let entries: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["type"] == "entry")
        .collect();
    assert_eq!(entries.len(), 300);
    for (index, entry) in entries.iter().enumerate() {
        let index = index as u64;
        let table = index / TABLE_ENTRIES;
        let value = format!("value {index}");
        assert_eq!(entry["key"], hex_of(&table_key(index)).as_str(), "{entry}");
        assert_eq!(entry["table"], table + 1);
        assert_eq!(entry["time"], 1000 + table);
        assert_eq!(entry["len"], value.len());
        assert_eq!(entry["value_hex"], hex_of(value.as_bytes()).as_str());
    }
    let tables: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["type"] == "table")
        .collect();
    assert!(tables.iter().all(|table| table["entries"] == TABLE_ENTRIES));

    let plain = text(&minipay(&["wal", "dump", "--tables"], &dir).stdout);
    let mut plain_lines = plain.lines();
    assert!(
        plain_lines
            .next()
            .unwrap()
            .starts_with("manifest generation=3 horizon=0 tables=3 "),
        "{plain}"
    );
    assert!(
        plain_lines
            .next()
            .unwrap()
            .starts_with("table seq=1 entries=100 "),
        "{plain}"
    );
    assert_eq!(
        plain_lines.next().unwrap(),
        format!(
            "key={} time=1000 len=7 value=76616c75652030",
            hex_of(&table_key(0))
        )
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
