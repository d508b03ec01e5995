//! `table_store`: minipay's history tables (`wal::table::Store`) against the
//! embedded store a user would pick instead for the same job, measured in
//! the same run on the same keys and values.
//!
//! The job (`docs/history-tables.md`): at each checkpoint, the payments
//! finished since the last one are written durably as one sorted batch;
//! later, a lookup that misses memory asks for one payment by its id, which
//! is often not there at all (an unknown or expired id). So the phases are:
//!
//! 1. checkpoint inserts/s: batches of `--batch` entries, each made durable
//!    before the next, until `--entries`. Our store writes one table per
//!    batch (`Store::add`: the table, its syncs, the manifest switch) and
//!    then runs `Store::maintain(0)` as a checkpoint would, which is what
//!    merges tables: its time is included, and the slowest checkpoint is
//!    reported too, since a merge lands on one checkpoint whole;
//! 2. point lookups/s of present keys, uniformly at random, one thread;
//! 3. point lookups/s of absent keys (ids never inserted);
//! 4. bytes on disk per entry: the lengths of the files in the store's
//!    directory, and the blocks allocated to them.
//!
//! The other store is redb (crates.io), with one write transaction per
//! batch committed with `Durability::Immediate`: the batch is durable when
//! `commit` returns, as a table is when `add` returns. redb rather than
//! fjall because it has no dependencies of its own (fjall brings an LSM
//! tree, lz4, a concurrent map and channels), and because a durable
//! transaction of N inserts is exactly "write a batch of N sorted entries
//! durably"; fjall's batch would be an LSM memtable write plus a journal
//! sync, with its own flushes and compactions running behind it, so the
//! time a batch costs would land partly outside the batch. redb's cache
//! (`--redb-cache-mib`, redb's own default unless given) is its own heap
//! memory, where ours reads through the memory map, so memory is reported
//! both ways below.
//!
//! Keys are 16-byte txn ids (splitmix64 of a counter, so random-looking and
//! spread over the key space), values 120 bytes of the same (incompressible,
//! which does not matter: neither store compresses), times a millisecond
//! counter. Nothing is expired. Both stores see the same batches in the same
//! sorted order and answer with an owned copy of the value.
//!
//! Each run of one store is a child process of this one, over a fresh
//! directory: memory is then the child's own (`RssAnon` at the end, and how
//! much it grew from the start), with no allocator leftovers or mapped pages
//! of the other store; and neither store's page cache is warmed by the
//! other's run. Runs alternate, the order reversed every other round (as in
//! `wal_settings`), so the host's slow minutes and the disk's writeback
//! from the run before fall on both alike; the table gives each figure's
//! median over the rounds and its range. The page cache is warm for
//! lookups in both: the data was just written and fits in memory.
//!
//! Run: `cargo bench --bench table_store -- [--entries N] [--batch N]
//! [--lookups N] [--rounds R] [--dir PATH] [--redb-cache-mib MIB]`.
//! Scratch directories go under `--dir` (default: the target directory's
//! tmp, on the same disk as the build) and are removed after each run.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use wal::FsStorage;
use wal::table::{Store, StoreOptions};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 120;
/// The largest history the design targets (#22: 10 M payments).
const ENTRIES_MAX: u64 = 10_000_000;
/// One checkpoint's batch is generated in memory (about 200 B an entry).
const BATCH_MAX: u64 = 1_000_000;
const LOOKUPS_MAX: u64 = 10_000_000;
const ROUNDS_MAX: usize = 25;
/// Absent keys come from counters at and above this, which no run inserts;
/// splitmix64 is a bijection, so their keys are surely not present.
const ABSENT_FIRST: u64 = 1 << 48;
/// Seeds the present lookups' random order; fixed, so runs repeat.
const LOOKUP_SEED: u64 = 0x7AB1_E5EE_D000_0001;
/// redb's own default cache size (`redb::Builder`).
const REDB_CACHE_MIB_DEFAULT: u64 = 1024;
const REDB_CACHE_MIB_MAX: u64 = 16 * 1024;
const REDB_TABLE: TableDefinition<&[u8], (u64, &[u8])> = TableDefinition::new("history");
/// The line a child prints its measurements on.
const RESULT_PREFIX: &str = "table_store-result";

/// One entry as `Store::add` takes it: key, time (ms), value.
type Entry = (Vec<u8>, u64, Vec<u8>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    Tables,
    Redb,
}

impl Subject {
    const ALL: [Subject; 2] = [Subject::Tables, Subject::Redb];

    fn name(self) -> &'static str {
        match self {
            Subject::Tables => "minipay",
            Subject::Redb => "redb",
        }
    }

    fn parse(name: &str) -> Result<Subject, String> {
        Subject::ALL
            .into_iter()
            .find(|subject| subject.name() == name)
            .ok_or(format!("unknown store {name}"))
    }
}

#[derive(Clone, Debug)]
struct Config {
    entries: u64,
    batch: u64,
    lookups: u64,
    rounds: usize,
    scratch_parent: PathBuf,
    redb_cache_mib: u64,
    /// Set in a child: the store it measures and the directory it uses.
    child: Option<(Subject, PathBuf)>,
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        entries: 2_000_000,
        batch: 30_000,
        lookups: 200_000,
        rounds: 3,
        scratch_parent: PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        redb_cache_mib: REDB_CACHE_MIB_DEFAULT,
        child: None,
    };
    let mut child_store = None;
    let mut child_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, value: String| -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{name}: not a number: {value}"))
        };
        match arg.as_str() {
            // Passed by `cargo bench` to every benchmark binary.
            "--bench" => {}
            "--entries" => config.entries = number(&arg, value(&arg)?)?,
            "--batch" => config.batch = number(&arg, value(&arg)?)?,
            "--lookups" => config.lookups = number(&arg, value(&arg)?)?,
            "--rounds" => config.rounds = number(&arg, value(&arg)?)? as usize,
            "--dir" => config.scratch_parent = PathBuf::from(value(&arg)?),
            "--redb-cache-mib" => config.redb_cache_mib = number(&arg, value(&arg)?)?,
            // Internal: how the parent starts a child.
            "--child" => child_store = Some(Subject::parse(&value(&arg)?)?),
            "--child-dir" => child_dir = Some(PathBuf::from(value(&arg)?)),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    config.child = match (child_store, child_dir) {
        (Some(store), Some(dir)) => Some((store, dir)),
        (None, None) => None,
        _ => return Err("--child and --child-dir go together".into()),
    };
    check(&config)?;
    Ok(config)
}

/// Refuses a configuration out of bounds rather than clamping it.
fn check(config: &Config) -> Result<(), String> {
    if !(1..=ENTRIES_MAX).contains(&config.entries) {
        return Err(format!("--entries must be 1..={ENTRIES_MAX}"));
    }
    if !(1..=BATCH_MAX.min(config.entries)).contains(&config.batch) {
        return Err(format!(
            "--batch must be 1..={BATCH_MAX} and at most --entries"
        ));
    }
    if !(1..=LOOKUPS_MAX).contains(&config.lookups) {
        return Err(format!("--lookups must be 1..={LOOKUPS_MAX}"));
    }
    if !(1..=ROUNDS_MAX).contains(&config.rounds) {
        return Err(format!("--rounds must be 1..={ROUNDS_MAX}"));
    }
    if !(1..=REDB_CACHE_MIB_MAX).contains(&config.redb_cache_mib) {
        return Err(format!("--redb-cache-mib must be 1..={REDB_CACHE_MIB_MAX}"));
    }
    if !config.scratch_parent.is_dir() {
        return Err(format!(
            "--dir {}: not a directory",
            config.scratch_parent.display()
        ));
    }
    Ok(())
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Entry `n`'s txn id.
fn key(n: u64) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&splitmix64(2 * n).to_le_bytes());
    key[8..].copy_from_slice(&splitmix64(2 * n + 1).to_le_bytes());
    key
}

/// Entry `n`'s value: as long as a finished payment, and as random.
fn value(n: u64) -> Vec<u8> {
    (0..VALUE_LEN.div_ceil(8) as u64)
        .flat_map(|word| splitmix64(!n ^ (word << 56)).to_le_bytes())
        .take(VALUE_LEN)
        .collect()
}

/// Entries `first..first + len`, sorted by key as a checkpoint hands them
/// over; entry `n` finished at `n` ms.
fn batch(first: u64, len: u64) -> Vec<Entry> {
    let mut entries: Vec<Entry> = (first..first + len)
        .map(|n| (key(n).to_vec(), n, value(n)))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// What each store does, in its own most direct way.
trait HistoryStore {
    /// Makes `entries` durable: returned means on disk.
    fn checkpoint(&self, entries: Vec<Entry>);
    /// The time and an owned copy of the value stored under `key`.
    fn get(&self, key: &[u8]) -> Option<(u64, Vec<u8>)>;
}

struct Tables(Store);

impl HistoryStore for Tables {
    fn checkpoint(&self, entries: Vec<Entry>) {
        self.0.add(entries).expect("add a table");
        // Nothing expires (cutoff 0); what is left to do is a merge if due.
        self.0.maintain(0).expect("maintain the tables");
    }

    fn get(&self, key: &[u8]) -> Option<(u64, Vec<u8>)> {
        let found = self.0.get(key).expect("table lookup")?;
        Some((found.time, found.value))
    }
}

struct Redb(Database);

impl HistoryStore for Redb {
    fn checkpoint(&self, entries: Vec<Entry>) {
        let mut transaction = self.0.begin_write().expect("begin write");
        // The default already; said here because it is what is compared.
        transaction
            .set_durability(Durability::Immediate)
            .expect("durability");
        {
            let mut table = transaction.open_table(REDB_TABLE).expect("open table");
            for (key, time, value) in &entries {
                table
                    .insert(key.as_slice(), (*time, value.as_slice()))
                    .expect("insert");
            }
        }
        transaction.commit().expect("durable commit");
    }

    /// One read transaction per lookup, as each lookup is its own request;
    /// our store likewise takes its live set afresh on every `get`.
    fn get(&self, key: &[u8]) -> Option<(u64, Vec<u8>)> {
        let transaction = self.0.begin_read().expect("begin read");
        let table = transaction.open_table(REDB_TABLE).expect("open table");
        let found = table.get(key).expect("redb lookup")?;
        let (time, value) = found.value();
        Some((time, value.to_vec()))
    }
}

fn open(subject: Subject, dir: &Path, config: &Config) -> Box<dyn HistoryStore> {
    match subject {
        Subject::Tables => {
            let storage = Arc::new(FsStorage::open_locked(dir).expect("lock the directory"));
            let store = Store::open(storage, StoreOptions::default(), 0).expect("open tables");
            Box::new(Tables(store))
        }
        Subject::Redb => {
            let database = Database::builder()
                .set_cache_size((config.redb_cache_mib << 20) as usize)
                .create(dir.join("history.redb"))
                .expect("create redb");
            Box::new(Redb(database))
        }
    }
}

/// Phase 1: every batch made durable in turn; the rate over all of them
/// and the slowest one.
fn insert_phase(store: &dyn HistoryStore, config: &Config) -> (f64, Duration) {
    let mut total = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    let mut first = 0;
    while first < config.entries {
        let len = config.batch.min(config.entries - first);
        let entries = batch(first, len);
        let started = Instant::now();
        store.checkpoint(entries);
        let elapsed = started.elapsed();
        total += elapsed;
        slowest = slowest.max(elapsed);
        first += len;
    }
    assert_eq!(first, config.entries);
    (config.entries as f64 / total.as_secs_f64(), slowest)
}

/// Phases 2 and 3: `--lookups` gets, of present keys in random order or of
/// keys never inserted; returns gets/s. Every answer is checked.
fn lookup_phase(store: &dyn HistoryStore, config: &Config, present: bool) -> f64 {
    let started = Instant::now();
    for i in 0..config.lookups {
        let n = if present {
            splitmix64(LOOKUP_SEED ^ i) % config.entries
        } else {
            ABSENT_FIRST + i
        };
        let found = store.get(&key(n));
        if present {
            let (time, value) = found.expect("a present key is found");
            assert!(time == n && value.len() == VALUE_LEN);
        } else {
            assert!(found.is_none(), "an absent key is found");
        }
    }
    config.lookups as f64 / started.elapsed().as_secs_f64()
}

/// The files in `dir`: the sum of their lengths, and of the blocks the
/// file system allocated to them (less where a file is sparse).
fn bytes_on_disk(dir: &Path) -> (u64, u64) {
    std::fs::read_dir(dir)
        .expect("read the store's directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .metadata()
                .expect("metadata")
        })
        .filter(|metadata| metadata.is_file())
        .fold((0, 0), |(len, allocated), metadata| {
            (len + metadata.len(), allocated + metadata.blocks() * 512)
        })
}

/// A line of `/proc/self/status` in KiB, e.g. `RssAnon`.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// In the child: every phase on one store, then one result line.
fn run_child(config: &Config, subject: Subject, dir: &Path) {
    let rss_anon_start = status_kib("RssAnon");
    let store = open(subject, dir, config);
    let (insert_rate, slowest) = insert_phase(&*store, config);
    let present_rate = lookup_phase(&*store, config, true);
    let absent_rate = lookup_phase(&*store, config, false);
    let (bytes, allocated) = bytes_on_disk(dir);
    println!(
        "{RESULT_PREFIX} insert_per_s={insert_rate} slowest_checkpoint_ms={} \
         present_per_s={present_rate} absent_per_s={absent_rate} bytes_per_entry={} \
         allocated_per_entry={} rss_anon_mib={} rss_anon_growth_mib={} rss_file_mib={}",
        slowest.as_secs_f64() * 1e3,
        bytes as f64 / config.entries as f64,
        allocated as f64 / config.entries as f64,
        status_kib("RssAnon") as f64 / 1024.0,
        (status_kib("RssAnon") as f64 - rss_anon_start as f64) / 1024.0,
        status_kib("RssFile") as f64 / 1024.0,
    );
}

/// One child's figures, by the names in its result line.
type Measured = HashMap<String, f64>;

/// In the parent: one run of `subject` in a child over a fresh directory.
fn run_in_child(config: &Config, subject: Subject) -> Measured {
    let scratch = tempfile::tempdir_in(&config.scratch_parent).expect("scratch directory");
    let output = Command::new(std::env::current_exe().expect("this benchmark's path"))
        .args(["--entries", &config.entries.to_string()])
        .args(["--batch", &config.batch.to_string()])
        .args(["--lookups", &config.lookups.to_string()])
        .args(["--redb-cache-mib", &config.redb_cache_mib.to_string()])
        .args(["--child", subject.name()])
        .arg("--child-dir")
        .arg(scratch.path())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("start a child");
    assert!(
        output.status.success(),
        "{} child: {}",
        subject.name(),
        output.status
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8 result");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(RESULT_PREFIX))
        .expect("the child's result line");
    line.split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The median and range of one figure over the rounds.
fn spread(runs: &[Measured], name: &str) -> (f64, f64, f64) {
    let mut values: Vec<f64> = runs.iter().map(|run| run[name]).collect();
    values.sort_by(f64::total_cmp);
    (
        values[(values.len() - 1) / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn print_table(config: &Config, runs: &[Vec<Measured>; 2]) {
    println!(
        "table_store: {} entries ({KEY_LEN} B keys, {VALUE_LEN} B values) in checkpoints of {}, \
         {} lookups each, {} rounds; median (min-max)",
        config.entries, config.batch, config.lookups, config.rounds
    );
    println!(
        "{:<28} {:>30} {:>30} {:>14}",
        "", "minipay tables", "redb", "minipay/redb"
    );
    // Label, name in the result line, decimals shown.
    let rows = [
        ("checkpoint inserts/s", "insert_per_s", 0),
        ("slowest checkpoint, ms", "slowest_checkpoint_ms", 1),
        ("present lookups/s", "present_per_s", 0),
        ("absent lookups/s", "absent_per_s", 0),
        ("file bytes per entry", "bytes_per_entry", 1),
        ("allocated bytes per entry", "allocated_per_entry", 1),
        ("RssAnon at end, MiB", "rss_anon_mib", 1),
        ("RssAnon growth, MiB", "rss_anon_growth_mib", 1),
        ("RssFile at end, MiB", "rss_file_mib", 1),
    ];
    for (label, name, decimals) in rows {
        let cell = |runs: &[Measured]| {
            let (median, low, high) = spread(runs, name);
            format!("{median:.decimals$} ({low:.decimals$}-{high:.decimals$})")
        };
        let ratio = spread(&runs[0], name).0 / spread(&runs[1], name).0;
        println!(
            "{label:<28} {:>30} {:>30} {ratio:>14.2}",
            cell(&runs[0]),
            cell(&runs[1])
        );
    }
}

fn main() {
    let config = parse_args().unwrap_or_else(|error| {
        eprintln!("table_store: {error}");
        std::process::exit(2);
    });
    if let Some((subject, dir)) = &config.child {
        run_child(&config, *subject, dir);
        return;
    }
    let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    for round in 0..config.rounds {
        let mut order = Subject::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        for subject in order {
            let measured = run_in_child(&config, subject);
            eprintln!(
                "table_store: round {} {}: {:.0} inserts/s, {:.0} present gets/s, {:.0} absent gets/s",
                round + 1,
                subject.name(),
                measured["insert_per_s"],
                measured["present_per_s"],
                measured["absent_per_s"]
            );
            runs[subject as usize].push(measured);
        }
    }
    print_table(&config, &runs);
}
