//! `minipay wal dump | verify | bench`: inspecting, checking, repairing and
//! measuring a write-ahead log from the command line (like `pg_waldump`).
//! The history tables beside the log are printed and checked by
//! [`super::tables`].
//!
//! This module knows the record kinds of every log owner only to decode
//! them for display; it never interprets them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use wal::{
    Damage, FsStorage, Lsn, Options, RecordKind, RecordRef, RepairOutcome, Scan, Storage,
    SyncPolicy, Wal,
};

/// Record kind of the self-verifying records `wal bench` writes.
pub const BENCH_KIND: RecordKind = RecordKind(0x7F);
/// Bytes of a bench payload before its filler: writer, sequence, checksum.
pub const BENCH_HEADER_LEN: usize = 16;

/// A bench payload of `size` bytes (at least [`BENCH_HEADER_LEN`]) that
/// carries its writer and sequence number and a checksum over all of it.
pub fn encode_bench_payload(writer: u32, seq: u64, size: usize) -> Vec<u8> {
    assert!(
        size >= BENCH_HEADER_LEN,
        "bench records hold at least 16 bytes"
    );
    let mut payload = Vec::with_capacity(size);
    payload.extend_from_slice(&writer.to_le_bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(&[0; 4]);
    payload.extend((0..size - BENCH_HEADER_LEN).map(|index| filler(writer, seq, index)));
    let checksum = bench_checksum(&payload);
    payload[12..16].copy_from_slice(&checksum.to_le_bytes());
    payload
}

fn filler(writer: u32, seq: u64, index: usize) -> u8 {
    (u64::from(writer).wrapping_mul(31) ^ seq.wrapping_add(index as u64)) as u8
}

fn bench_checksum(payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&payload[..12]);
    hasher.update(&payload[BENCH_HEADER_LEN..]);
    hasher.finalize()
}

/// A decoded bench payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchPayload {
    pub writer: u32,
    pub seq: u64,
    /// The payload's own checksum holds.
    pub valid: bool,
}

pub fn decode_bench_payload(payload: &[u8]) -> Option<BenchPayload> {
    if payload.len() < BENCH_HEADER_LEN {
        return None;
    }
    let writer = u32::from_le_bytes(payload[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(payload[4..12].try_into().ok()?);
    let stored = u32::from_le_bytes(payload[12..16].try_into().ok()?);
    Some(BenchPayload {
        writer,
        seq,
        valid: stored == bench_checksum(payload),
    })
}

fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        BENCH_KIND => "bench",
        ledger::record::GENESIS => "ledger.genesis",
        ledger::record::ACCOUNT_OPENED => "ledger.account_opened",
        ledger::record::PENDING => "ledger.pending",
        ledger::record::POSTED => "ledger.posted",
        ledger::record::VOIDED => "ledger.voided",
        _ => "unknown",
    }
}

/// A human-readable decoding of an owner's record, if the kind is known.
fn decoded(kind: RecordKind, payload: &[u8]) -> Option<String> {
    if ledger::bank::is_ledger_kind(kind) {
        return Some(match ledger::LedgerRecord::decode(kind, payload) {
            Ok(record) => format!("{record:?}"),
            Err(error) => format!("undecodable: {error}"),
        });
    }
    None
}

/// Live segments of the log in `dir` that are reused ones (header flag),
/// for tests and `minipay chaos`. The log's owner may still be running: a
/// live segment's header does not change while records are written.
pub fn reused_segments(dir: &Path) -> anyhow::Result<usize> {
    let storage =
        FsStorage::open_unlocked(dir).with_context(|| format!("open {}", dir.display()))?;
    let scan = wal::inspect(&storage)?;
    Ok(scan
        .segments
        .iter()
        .filter(|segment| segment.recycled)
        .count())
}

/// `minipay wal dump DIR [--json]`: prints every valid record; with
/// `--tables`, the history tables instead ([`super::tables::dump`]).
pub fn dump(dir: &Path, json: bool, tables: bool) -> anyhow::Result<()> {
    if tables {
        return super::tables::dump(dir, json);
    }
    let storage =
        FsStorage::open_unlocked(dir).with_context(|| format!("open {}", dir.display()))?;
    let scan = inspect_log(&storage, dir)?;
    let firsts: Vec<Lsn> = scan
        .segments
        .iter()
        .map(|segment| segment.first_lsn)
        .collect();
    let last = Lsn(scan.next_lsn.0 - 1);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    wal::read_records(
        &storage,
        &firsts,
        scan.first_lsn,
        last,
        wal::PAYLOAD_LEN_LIMIT,
        |record| {
            if json {
                writeln!(out, "{}", json_line(&record))
            } else {
                writeln!(out, "{}", text_line(&record))
            }
        },
    )
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    out.flush()?;
    drop(out);
    report_damage(&scan)
}

/// Scans the log on `storage` without changing it; a directory with no
/// segments (and no damage to show) is refused, since it is most likely
/// the wrong directory.
fn inspect_log(storage: &FsStorage, dir: &Path) -> anyhow::Result<Scan> {
    let scan = wal::inspect(storage)?;
    if scan.segments.is_empty() && scan.damage.is_none() {
        bail!("{} holds no WAL segments", dir.display());
    }
    Ok(scan)
}

/// A bench record's writer, sequence and self-check, if it is one.
fn bench_payload(record: &RecordRef<'_>) -> Option<BenchPayload> {
    (record.kind == BENCH_KIND)
        .then(|| decode_bench_payload(record.payload))
        .flatten()
}

/// One record as a JSON object: always its LSN, kind and length, then the
/// bench fields, an owner's decoding, or else the whole payload in hex.
fn json_line(record: &RecordRef<'_>) -> serde_json::Value {
    let mut line = serde_json::json!({
        "lsn": record.lsn.0,
        "kind": kind_name(record.kind),
        "kind_code": record.kind.0,
        "len": record.payload.len(),
    });
    match (bench_payload(record), decoded(record.kind, record.payload)) {
        (Some(bench), _) => {
            line["writer"] = bench.writer.into();
            line["seq"] = bench.seq.into();
            line["valid"] = bench.valid.into();
        }
        (None, Some(text)) => line["decoded"] = text.into(),
        (None, None) => line["payload_hex"] = hex(record.payload, usize::MAX).into(),
    }
    line
}

/// One record as a line of text; an unknown payload is shown as its first
/// 64 bytes in hex, so a line stays readable.
fn text_line(record: &RecordRef<'_>) -> String {
    let detail = match (bench_payload(record), decoded(record.kind, record.payload)) {
        (Some(bench), _) => format!(
            "writer={} seq={} valid={}",
            bench.writer, bench.seq, bench.valid
        ),
        (None, Some(text)) => text,
        (None, None) => format!("payload={}", hex(record.payload, 64)),
    };
    format!(
        "lsn={} kind={}(0x{:02x}) len={} {detail}",
        record.lsn,
        kind_name(record.kind),
        record.kind.0,
        record.payload.len()
    )
}

/// After a dump: a torn tail is a note (what a crash leaves, and what
/// opening the log repairs); corruption fails the command.
fn report_damage(scan: &Scan) -> anyhow::Result<()> {
    match &scan.damage {
        None => Ok(()),
        Some(Damage::TornTail {
            segment, offset, ..
        }) => {
            eprintln!(
                "note: torn tail in {segment} at offset {offset} (opening the log zeroes it)"
            );
            Ok(())
        }
        Some(Damage::Corrupt { .. }) => Err(scan.corruption().expect("corrupt scan").into()),
    }
}

/// `bytes` in hex, at most `limit` of them, then `…` if there were more.
pub(super) fn hex(bytes: &[u8], limit: usize) -> String {
    let mut text: String = bytes
        .iter()
        .take(limit)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    if bytes.len() > limit {
        text.push('…');
    }
    text
}

/// `minipay wal verify DIR [--repair]`: checks the log, and the history
/// tables if the directory holds any, changing nothing unless asked to
/// repair (which repairs only the log). Returns the summary: a line for the
/// log, then the tables' lines. Damage to a table or manifest fails it,
/// naming the file and the offset.
pub fn verify(dir: &Path, repair: bool) -> anyhow::Result<String> {
    let storage = if repair {
        FsStorage::open_locked(dir)
    } else {
        FsStorage::open_unlocked(dir)
    }
    .with_context(|| format!("open {}", dir.display()))?;
    let scan = wal::inspect(&storage)?;
    let tables = wal::table::store::check(&storage);
    let no_log = scan.segments.is_empty() && scan.damage.is_none();
    let no_tables = matches!(&tables, Ok(checked) if checked.is_empty());
    if no_log && no_tables {
        bail!("{} holds no WAL segments or history tables", dir.display());
    }
    let log = if no_log {
        "ok: no WAL segments".to_owned()
    } else {
        verify_log(&storage, &scan, dir, repair)?
    };
    let checked = tables.with_context(|| {
        if repair {
            format!("history tables (not changed: --repair repairs only the log; {log})")
        } else {
            "history tables (nothing was changed)".to_owned()
        }
    })?;
    Ok(match super::tables::verdict(&checked) {
        Some(tables) => format!("{log}\n{tables}"),
        None => log,
    })
}

/// The log's line of `wal verify`, after repairing it if asked to.
fn verify_log(
    storage: &FsStorage,
    scan: &Scan,
    dir: &Path,
    repair: bool,
) -> anyhow::Result<String> {
    let repaired = if repair {
        Some(wal::repair(storage)?)
    } else {
        None
    };
    let range = if scan.next_lsn > scan.first_lsn {
        format!("lsn {}..={}", scan.first_lsn, scan.next_lsn.0 - 1)
    } else {
        "no records".to_owned()
    };
    let summary = format!(
        "{} segments, {} records, {range}",
        scan.segments.len(),
        scan.records()
    );
    match (&scan.damage, repaired) {
        (None, _) => Ok(format!("ok: {summary}, no torn tail")),
        (Some(damage), None) => checked_verdict(&summary, damage, storage, dir),
        (Some(damage), Some(outcome)) => repaired_verdict(&summary, damage, outcome, storage),
    }
}

/// The verdict on a damaged log that was only checked. A torn tail is what
/// a crash leaves and opening the log zeroes it, so the log is ok; corruption
/// is an error that says how to repair it.
fn checked_verdict(
    summary: &str,
    damage: &Damage,
    storage: &FsStorage,
    dir: &Path,
) -> anyhow::Result<String> {
    match damage {
        Damage::TornTail {
            segment,
            offset,
            garbage_end,
            ..
        } => Ok(format!(
            "ok: {summary}, torn tail in {segment} at offset {offset} ({} bytes; not truncated yet, opening the log zeroes it)",
            garbage_end - offset
        )),
        Damage::Corrupt {
            segment,
            offset,
            reason,
            records_after,
            ..
        } => bail!(
            "corrupt: segment {} at offset {offset}: {reason} ({records_after} records at or after it); \
             nothing was changed; `minipay wal verify --repair {}` truncates there and keeps a .broken copy",
            storage.describe(segment),
            dir.display()
        ),
    }
}

/// The verdict on a damaged log after `--repair`: what the repair did, if
/// it is what the scan called for; an error if it could not repair, or if it
/// found other damage than the scan did (the log changed in between).
fn repaired_verdict(
    summary: &str,
    damage: &Damage,
    outcome: RepairOutcome,
    storage: &FsStorage,
) -> anyhow::Result<String> {
    match (damage, outcome) {
        (
            Damage::TornTail { .. },
            RepairOutcome::TornTailZeroed {
                segment,
                offset,
                bytes,
            },
        ) => Ok(format!(
            "ok: {summary}, torn tail in {segment} at offset {offset} truncated ({bytes} bytes zeroed)"
        )),
        (
            Damage::Corrupt { .. },
            RepairOutcome::Truncated {
                segment,
                offset,
                reason,
                dropped_records,
                kept,
            },
        ) => Ok(format!(
            "repaired: {summary} kept; truncated {} at offset {offset} ({reason}); dropped the damaged record and {dropped_records} valid records after it; original bytes kept in {}",
            storage.describe(&segment),
            kept.join(", ")
        )),
        (_, RepairOutcome::Unrepairable { reason }) => bail!("cannot repair: {reason}"),
        (_, other) => bail!("repair disagreed with the scan: {other:?}"),
    }
}

/// What `wal bench` runs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub dir: PathBuf,
    pub writers: u32,
    pub records: u64,
    pub size: usize,
    pub ack_log: Option<PathBuf>,
    /// Use async appends on a tokio runtime instead of a thread per writer.
    pub use_async: bool,
    pub segment_size: u64,
    pub sync: SyncPolicy,
    pub batch_delay_max: Duration,
    pub syncs_in_flight_max: usize,
    /// Checkpoint the log each time this many more records are durable, as
    /// an owner that saves its state would (segments are then reused).
    pub checkpoint_every: Option<u64>,
    pub prepare_segments_ahead: bool,
}

/// What `wal bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub writers: u32,
    pub records: u64,
    pub size: usize,
    pub mode: &'static str,
    /// False when run with fsync off: then nothing measured was durable.
    pub durable: bool,
    pub elapsed_s: f64,
    pub appends_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub raw_fdatasync_per_sec: f64,
    pub raw_p50_us: f64,
    /// Group commit's batching: syncs, and records per sync.
    pub fsyncs: u64,
    pub records_per_fsync: f64,
    /// Mean time of one batch's write + fdatasync.
    pub batch_io_us: f64,
    /// Mean time the disk idled between batches.
    pub batch_idle_us: f64,
}

impl BenchReport {
    pub fn human(&self) -> String {
        format!(
            "wal bench: {} {} writers, {} {} appends of {} B in {:.2} s\n\
             \x20 {:.0} appends/s, {:.1} MB/s\n\
             \x20 append latency p50 {:.0} us, p99 {:.0} us, p999 {:.0} us\n\
             \x20 {} fsyncs, {:.1} records per fsync, {:.0} us per batch write + fdatasync, {:.0} us idle between batches\n\
             \x20 raw disk, same filesystem (pwrite 4 KiB + fdatasync, preallocated): {:.0}/s, p50 {:.0} us\n\
             \x20 appends/s per raw fdatasync/s: {:.1}x; p50 append latency / raw p50: {:.2}x",
            self.writers,
            self.mode,
            self.records,
            if self.durable {
                "durable"
            } else {
                "NOT DURABLE (fsync off)"
            },
            self.size,
            self.elapsed_s,
            self.appends_per_sec,
            self.mb_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.fsyncs,
            self.records_per_fsync,
            self.batch_io_us,
            self.batch_idle_us,
            self.raw_fdatasync_per_sec,
            self.raw_p50_us,
            self.appends_per_sec / self.raw_fdatasync_per_sec,
            self.p50_us / self.raw_p50_us,
        )
    }
}

/// Records writer `writer` of `writers` appends when `total` are spread evenly.
fn share(total: u64, writers: u32, writer: u32) -> u64 {
    total / u64::from(writers) + u64::from(u64::from(writer) < total % u64::from(writers))
}

/// `minipay wal bench`: durable appends from concurrent writers, then the raw
/// disk's `pwrite + fdatasync` rate on the same filesystem.
pub fn bench(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let options = bench_options(config)?;
    let log = Arc::new(
        Wal::open(&config.dir, options)
            .with_context(|| format!("open WAL in {}", config.dir.display()))?
            .wal,
    );
    let ack_log = open_ack_log(config)?;
    let started = Instant::now();
    let mut latencies = write_and_checkpoint(config, &log, ack_log.as_ref())?;
    let elapsed = started.elapsed();
    let stats = log.commit_stats();
    drop(log);
    latencies.sort_unstable();
    let raw = raw_fdatasync(&config.dir)?;
    Ok(bench_report(config, elapsed, &latencies, &stats, raw))
}

/// The log's options for a bench run, after checking the run's size and
/// counts: every record must hold a bench header, and the log must accept
/// the largest payload.
fn bench_options(config: &BenchConfig) -> anyhow::Result<Options> {
    if config.writers == 0 || config.records == 0 {
        bail!("--writers and --records must be at least 1");
    }
    if config.size < BENCH_HEADER_LEN {
        bail!("--size must be at least {BENCH_HEADER_LEN} bytes (writer, sequence, checksum)");
    }
    Ok(Options {
        segment_size: config.segment_size,
        payload_len_max: u32::try_from(config.size.max(4096)).context("--size too large")?,
        sync: config.sync,
        batch_delay_max: config.batch_delay_max,
        syncs_in_flight_max: config.syncs_in_flight_max,
        prepare_segments_ahead: config.prepare_segments_ahead,
        ..Options::default()
    })
}

/// The file acknowledged appends are written to, if asked for (a kill test
/// then checks that every acknowledged record survived).
fn open_ack_log(config: &BenchConfig) -> anyhow::Result<Option<Arc<File>>> {
    let Some(path) = &config.ack_log else {
        return Ok(None);
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open ack log {}", path.display()))?;
    Ok(Some(Arc::new(file)))
}

/// Runs the writers (threads or async tasks) to the end, with a
/// checkpointer beside them when asked for; returns every append's latency
/// in nanoseconds, unsorted.
fn write_and_checkpoint(
    config: &BenchConfig,
    log: &Arc<Wal>,
    ack_log: Option<&Arc<File>>,
) -> anyhow::Result<Vec<u64>> {
    let writing = AtomicBool::new(true);
    std::thread::scope(|scope| -> anyhow::Result<Vec<u64>> {
        let checkpointer = config.checkpoint_every.map(|every| {
            let writing = &writing;
            scope.spawn(move || checkpoint_while(log, every, writing))
        });
        let written = if config.use_async {
            run_async_writers(config, log, ack_log)
        } else {
            run_thread_writers(config, log, ack_log)
        };
        writing.store(false, Ordering::Release);
        if let Some(checkpointer) = checkpointer {
            checkpointer.join().expect("checkpointer panicked")?;
        }
        written
    })
}

/// The figures of a bench run, from its sorted append latencies, the log's
/// group-commit statistics and the raw disk's rate.
fn bench_report(
    config: &BenchConfig,
    elapsed: Duration,
    latencies: &[u64],
    stats: &wal::CommitStats,
    raw: RawDisk,
) -> BenchReport {
    let appends_per_sec = config.records as f64 / elapsed.as_secs_f64();
    BenchReport {
        writers: config.writers,
        records: config.records,
        size: config.size,
        mode: if config.use_async { "async" } else { "thread" },
        durable: config.sync == SyncPolicy::Always,
        elapsed_s: elapsed.as_secs_f64(),
        appends_per_sec,
        mb_per_sec: appends_per_sec * config.size as f64 / 1e6,
        p50_us: percentile_us(latencies, 50.0),
        p99_us: percentile_us(latencies, 99.0),
        p999_us: percentile_us(latencies, 99.9),
        raw_fdatasync_per_sec: raw.per_sec,
        raw_p50_us: raw.p50_us,
        fsyncs: stats.flushes,
        records_per_fsync: stats.records as f64 / stats.flushes.max(1) as f64,
        batch_io_us: stats.io_micros as f64 / stats.flushes.max(1) as f64,
        batch_idle_us: stats.idle_micros as f64 / stats.flushes.max(1) as f64,
    }
}

fn acknowledge(ack_log: Option<&Arc<File>>, writer: u32, seq: u64) -> std::io::Result<()> {
    match ack_log {
        // One write call per line, on an O_APPEND file: lines never interleave
        // and each is in the kernel the moment the append is acknowledged.
        Some(file) => (&**file).write_all(format!("{writer} {seq}\n").as_bytes()),
        None => Ok(()),
    }
}

/// Checkpoints `log` up to its durable LSN each time `every` more records
/// are durable, until `writing` goes false.
fn checkpoint_while(log: &Wal, every: u64, writing: &AtomicBool) -> anyhow::Result<()> {
    let mut last = log.durable_lsn();
    while writing.load(Ordering::Acquire) {
        let durable = log.durable_lsn();
        if durable.0 >= last.0 + every {
            log.checkpoint(durable).context("checkpoint")?;
            last = durable;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn run_thread_writers(
    config: &BenchConfig,
    log: &Arc<Wal>,
    ack_log: Option<&Arc<File>>,
) -> anyhow::Result<Vec<u64>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.writers)
            .map(|writer| {
                scope.spawn(move || -> anyhow::Result<Vec<u64>> {
                    let count = share(config.records, config.writers, writer);
                    let mut latencies = Vec::with_capacity(count as usize);
                    for seq in 0..count {
                        let payload = encode_bench_payload(writer, seq, config.size);
                        let started = Instant::now();
                        log.append(BENCH_KIND, &payload)?;
                        latencies.push(started.elapsed().as_nanos() as u64);
                        acknowledge(ack_log, writer, seq)?;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(config.records as usize);
        for handle in handles {
            all.extend(handle.join().expect("bench writer panicked")?);
        }
        Ok(all)
    })
}

fn run_async_writers(
    config: &BenchConfig,
    log: &Arc<Wal>,
    ack_log: Option<&Arc<File>>,
) -> anyhow::Result<Vec<u64>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .context("start tokio runtime")?;
    runtime.block_on(async {
        let tasks: Vec<_> = (0..config.writers)
            .map(|writer| {
                let log = Arc::clone(log);
                let ack_log = ack_log.cloned();
                let (records, writers, size) = (config.records, config.writers, config.size);
                tokio::spawn(async move {
                    let count = share(records, writers, writer);
                    let mut latencies = Vec::with_capacity(count as usize);
                    for seq in 0..count {
                        let payload = encode_bench_payload(writer, seq, size);
                        let started = Instant::now();
                        log.append_async(BENCH_KIND, &payload).await?;
                        latencies.push(started.elapsed().as_nanos() as u64);
                        acknowledge(ack_log.as_ref(), writer, seq)?;
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(config.records as usize);
        for task in tasks {
            all.extend(task.await.context("bench writer panicked")??);
        }
        Ok(all)
    })
}

fn percentile_us(sorted_ns: &[u64], percentile: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let index = ((sorted_ns.len() as f64 * percentile / 100.0) as usize).min(sorted_ns.len() - 1);
    sorted_ns[index] as f64 / 1000.0
}

/// The raw disk's durable write rate, as a user would measure it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RawDisk {
    pub syncs: usize,
    pub per_sec: f64,
    pub p50_us: f64,
}

/// Bytes of the preallocated scratch file the raw measurement cycles over.
const RAW_FILE_LEN: u64 = 32 << 20;
/// The raw measurement stops after this many syncs or this long.
const RAW_SYNCS_MAX: u32 = 3000;
const RAW_DURATION_MAX: Duration = Duration::from_secs(2);
/// Alignment of direct-I/O buffers, offsets and lengths.
const PAGE: usize = 4096;
/// The most concurrent syncers `minipay wal disk` runs.
pub const RAW_THREADS_MAX: usize = 16;

/// Creates `path` as `len` zeros, written and synced, so that later writes
/// overwrite allocated blocks as a log's do; with `direct`, also opens an
/// `O_DIRECT` descriptor of it to write through. The caller removes it.
pub fn preallocated_scratch(
    path: &Path,
    len: u64,
    direct: bool,
) -> std::io::Result<(File, Option<File>)> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all_at(&vec![0u8; len as usize], 0)?;
    file.sync_all()?;
    let direct = direct
        .then(|| {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
        })
        .transpose()?;
    Ok((file, direct))
}

/// `pwrite` 4 KiB + `fdatasync` on a preallocated scratch file beside `near`
/// (see [`raw_disk`]).
pub fn raw_fdatasync(near: &Path) -> anyhow::Result<RawDisk> {
    raw_disk(near, 4096, 1, false)
}

/// What the disk does without any log: `threads` threads each `pwrite`
/// `write_len` bytes and `fdatasync`, over a preallocated (zero-filled,
/// synced) scratch file in `near`'s parent directory (so on the same
/// filesystem but outside a log directory), removed afterwards. Each thread
/// writes its own consecutive region, as a log would. With `direct` the
/// writes go through an `O_DIRECT` descriptor (as the log's page-aligned
/// writes do), so `write_len` must be whole 4 KiB pages.
pub fn raw_disk(
    near: &Path,
    write_len: usize,
    threads: usize,
    direct: bool,
) -> anyhow::Result<RawDisk> {
    if write_len == 0 || write_len as u64 > RAW_FILE_LEN / 16 {
        bail!("--size must be between 1 byte and 2 MiB");
    }
    if direct && !write_len.is_multiple_of(PAGE) {
        bail!("--size must be a multiple of {PAGE} bytes with --direct");
    }
    if threads == 0 || threads > RAW_THREADS_MAX {
        bail!("--threads must be between 1 and {RAW_THREADS_MAX}");
    }
    let path = raw_scratch_path(near);
    let result = measure_raw_syncs(&path, write_len, threads, direct);
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("raw fdatasync measurement on {}", path.display()))
}

/// Where the raw measurement's scratch file goes: in the parent directory of
/// `near` (made absolute), so on the log's filesystem but not inside the log
/// directory; in the temporary directory if that parent does not exist.
fn raw_scratch_path(near: &Path) -> PathBuf {
    let absolute = near.canonicalize().unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|current| current.join(near))
            .unwrap_or_else(|_| near.to_path_buf())
    });
    let parent = absolute
        .parent()
        .filter(|parent| parent.is_dir())
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    parent.join(format!(".minipay-raw-fsync-{}.tmp", std::process::id()))
}

/// Creates the scratch file at `path` and measures on it (see
/// [`raw_disk`]); the caller removes the file, whatever happens here.
fn measure_raw_syncs(
    path: &Path,
    write_len: usize,
    threads: usize,
    direct: bool,
) -> anyhow::Result<RawDisk> {
    use std::os::unix::fs::FileExt;
    let (file, direct_file) = preallocated_scratch(path, RAW_FILE_LEN, direct)
        .with_context(|| format!("create {}", path.display()))?;
    let writes_to = direct_file.as_ref().unwrap_or(&file);
    let region = RAW_FILE_LEN / threads as u64 / PAGE as u64 * PAGE as u64;
    let slots = (region / write_len as u64).max(1);
    let started = Instant::now();
    let mut latencies = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|thread| {
                let (file, writes_to) = (&file, writes_to);
                scope.spawn(move || -> std::io::Result<Vec<u64>> {
                    // Page-aligned, as direct I/O needs.
                    let buffer = vec![0x5Au8; write_len + PAGE];
                    let start = buffer.as_ptr().align_offset(PAGE);
                    let block = &buffer[start..start + write_len];
                    let mut latencies = Vec::new();
                    for index in 0..u64::from(RAW_SYNCS_MAX) / threads as u64 {
                        let one = Instant::now();
                        let offset = thread * region + (index % slots) * write_len as u64;
                        writes_to.write_all_at(block, offset)?;
                        file.sync_data()?;
                        latencies.push(one.elapsed().as_nanos() as u64);
                        if started.elapsed() > RAW_DURATION_MAX {
                            break;
                        }
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.join().expect("raw disk worker panicked")?);
        }
        Ok::<_, std::io::Error>(all)
    })?;
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(RawDisk {
        syncs: latencies.len(),
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile_us(&latencies, 50.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_payloads_verify_themselves_and_detect_damage() {
        let payload = encode_bench_payload(7, 123_456, 256);
        assert_eq!(payload.len(), 256);
        assert_eq!(
            decode_bench_payload(&payload),
            Some(BenchPayload {
                writer: 7,
                seq: 123_456,
                valid: true
            })
        );
        for index in 0..payload.len() {
            let mut damaged = payload.clone();
            damaged[index] ^= 0x04;
            let decoded = decode_bench_payload(&damaged).unwrap();
            assert!(!decoded.valid, "flip at byte {index} went unseen");
        }
    }

    #[test]
    fn writers_share_the_records_exactly() {
        for (total, writers) in [(10, 3), (1, 4), (100_000, 16), (7, 7)] {
            let sum: u64 = (0..writers)
                .map(|writer| share(total, writers, writer))
                .sum();
            assert_eq!(sum, total);
        }
    }
}
