//! `minipay wal dump --tables` and the history-table part of `wal verify`:
//! printing and checking the tables and manifest (`wal::table`) that sit in
//! a log's directory.
//!
//! It reads through `wal::table::store::{read_listed, check}`, which never
//! remove anything, so it can look at a directory a running server owns. It
//! knows nothing of what the keys and values mean: they are the owner's
//! bytes, printed in hex.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use wal::table::store::{Checked, Listed};
use wal::table::{Entry, KEY_LEN_MAX, Table, manifest_name};
use wal::{FsStorage, Storage};

use super::wal::hex;

/// Bytes of a value shown on a line of text; JSON shows all of it.
const VALUE_SHOWN_LEN_MAX: usize = 64;

/// `minipay wal dump DIR --tables [--json]`: prints the newest manifest,
/// then each table it lists (its header, which opening checked against the
/// manifest's row for it) followed by its entries in key order. A block
/// that does not check ends the dump with an error naming the table and
/// the offset, after the entries before it.
pub fn dump(dir: &Path, json: bool) -> anyhow::Result<()> {
    let storage =
        FsStorage::open_unlocked(dir).with_context(|| format!("open {}", dir.display()))?;
    let Listed { manifest, tables } =
        wal::table::store::read_listed(&storage).context("history tables")?;
    if manifest.generation == 0 {
        bail!("{} holds no history-table manifest", dir.display());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let file = storage.describe(&manifest_name(manifest.generation));
    if json {
        let line = serde_json::json!({
            "type": "manifest",
            "generation": manifest.generation,
            "horizon": manifest.horizon,
            "tables": manifest.tables.len(),
            "file": file,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "manifest generation={} horizon={} tables={} file={file}",
            manifest.generation,
            manifest.horizon,
            manifest.tables.len()
        )?;
    }
    for table in &tables {
        dump_table(&mut out, table, json)?;
    }
    out.flush()?;
    Ok(())
}

/// One table: its header line, then one line per entry. What was written
/// before a damaged block is flushed before the error is returned.
fn dump_table(out: &mut impl Write, table: &Table, json: bool) -> anyhow::Result<()> {
    let meta = table.meta();
    if json {
        let line = serde_json::json!({
            "type": "table",
            "seq": meta.seq,
            "entries": meta.entries,
            "time_min": meta.time_min,
            "time_max": meta.time_max,
            "len": meta.len,
            "file": table.path(),
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "table seq={} entries={} time_min={} time_max={} len={} file={}",
            meta.seq,
            meta.entries,
            meta.time_min,
            meta.time_max,
            meta.len,
            table.path()
        )?;
    }
    for entry in table.scan() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                out.flush()?;
                return Err(error).context("history tables");
            }
        };
        if json {
            writeln!(out, "{}", entry_json(meta.seq, &entry))?;
        } else {
            writeln!(out, "{}", entry_text(&entry))?;
        }
    }
    Ok(())
}

/// One entry as a JSON object: its table, key, time and the whole value.
fn entry_json(seq: u64, entry: &Entry<'_>) -> serde_json::Value {
    serde_json::json!({
        "type": "entry",
        "table": seq,
        "key": hex(entry.key, KEY_LEN_MAX),
        "time": entry.time,
        "len": entry.value.len(),
        "value_hex": hex(entry.value, usize::MAX),
    })
}

/// One entry as a line of text: the value is shown as its first 64 bytes
/// in hex, so a line stays readable.
fn entry_text(entry: &Entry<'_>) -> String {
    format!(
        "key={} time={} len={} value={}",
        hex(entry.key, KEY_LEN_MAX),
        entry.time,
        entry.value.len(),
        hex(entry.value, VALUE_SHOWN_LEN_MAX)
    )
}

/// The history tables' lines of `wal verify`'s summary: the newest
/// manifest, what was read, and the files the next open would remove.
/// `None` if the directory holds no history tables.
pub fn verdict(checked: &Checked) -> Option<String> {
    if checked.is_empty() {
        return None;
    }
    let manifest = if checked.generation == 0 {
        "no manifest".to_owned()
    } else {
        format!(
            "manifest generation {}, horizon {} ms",
            checked.generation, checked.horizon
        )
    };
    let mut lines = format!(
        "ok: history tables: {manifest}, {} tables, {} entries checked, {} bytes",
        checked.tables.len(),
        checked.entries,
        checked.bytes
    );
    if !checked.leftovers.is_empty() {
        let names: Vec<String> = checked
            .leftovers
            .iter()
            .map(|leftover| leftover.to_string())
            .collect();
        lines.push_str(&format!(
            "\nnote: would be removed at the next open (left here): {}",
            names.join(", ")
        ));
    }
    Some(lines)
}
