//! One table file: written once by [`TableWriter`] (under a `.tmp` name,
//! synced, renamed, the directory synced), then only read, through the
//! storage's read view (a memory map in production), by [`Table`].
//!
//! ```text
//! offset              size      field
//! 0                   8         magic "MPAYTABL"
//! 8                   4         format version = 1
//! 12                  4         reserved, zero
//! 16                  8         table sequence number
//! 24                  8         entry count
//! 32                  8         smallest time
//! 40                  8         largest time
//! 48                  4         data block count n (≥ 1)
//! 52                  4         crc32 of bytes 0..52
//! 56 .. 4096                    zero
//! 4096                4096 × n  data blocks (`block.rs`)
//! 4096 × (n + 1)      i         index: n × u32 item offsets (from the index's
//!                               start), n items (key length u8, the block's
//!                               first key), crc32 of everything before
//! align_up(…, 4096)   f         filter (`filter.rs`)
//! filter end          64        footer
//! ```
//!
//! The footer: magic "MPAYTEND" (8), format version (4), reserved zero (4),
//! index offset (8), index length (8), filter offset (8), filter length
//! (8), the table's sequence number again (8), reserved zero (4), crc32 of
//! the footer's first 60 bytes (4). The file ends with the footer, so a
//! cut file has no footer where the header's block count puts it.

use std::ops::Range;
use std::sync::Arc;

use super::block::{self, BlockBuilder};
use super::filter::{self, Filter, KeyHashes};
use super::{BLOCK_LEN, Entry, KEY_LEN_MAX, TableError, TableMeta, VALUE_LEN_MAX};
use crate::error::IoFailure;
use crate::storage::{ReadView, Storage, StorageFile};

const HEADER_MAGIC: [u8; 8] = *b"MPAYTABL";
const FOOTER_MAGIC: [u8; 8] = *b"MPAYTEND";
const FORMAT_VERSION: u32 = 1;
const FOOTER_LEN: usize = 64;
/// Full blocks gathered before one write (1 MiB).
const BLOCKS_PER_WRITE: usize = 256;

const TABLE_PREFIX: &str = "table-";
const TABLE_SUFFIX: &str = ".tbl";

/// The file name of table `seq`.
pub fn table_name(seq: u64) -> String {
    format!("{TABLE_PREFIX}{seq:020}{TABLE_SUFFIX}")
}

/// The sequence number in a table's file name.
pub fn parse_table_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(TABLE_PREFIX)?
        .strip_suffix(TABLE_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn align_up(offset: usize) -> usize {
    offset.div_ceil(BLOCK_LEN) * BLOCK_LEN
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes one table, entries in strictly ascending key order. Dropped
/// without [`TableWriter::finish`], it removes its temporary file.
pub struct TableWriter {
    storage: Arc<dyn Storage>,
    seq: u64,
    temp: String,
    file: Option<Box<dyn StorageFile>>,
    block: BlockBuilder,
    /// Full blocks not yet written, and the file offset they go to.
    full: Vec<u8>,
    full_at: u64,
    index_offsets: Vec<u32>,
    index_items: Vec<u8>,
    filter: Filter,
    entries: u64,
    time_min: u64,
    time_max: u64,
    last_key: Vec<u8>,
}

impl TableWriter {
    /// Starts table `seq`, its filter sized for `keys_expected` keys.
    pub fn create(
        storage: Arc<dyn Storage>,
        seq: u64,
        keys_expected: u64,
    ) -> Result<TableWriter, TableError> {
        let temp = format!("{}.tmp", table_name(seq));
        let file = storage
            .open(&temp, true)
            .and_then(|file| file.set_len(0).map(|()| file))
            .map_err(|source| IoFailure::new("create", storage.describe(&temp), source))?;
        Ok(TableWriter {
            storage,
            seq,
            temp,
            file: Some(file),
            block: BlockBuilder::new(),
            full: Vec::with_capacity(BLOCKS_PER_WRITE * BLOCK_LEN),
            full_at: BLOCK_LEN as u64,
            index_offsets: Vec::new(),
            index_items: Vec::new(),
            filter: Filter::with_capacity(keys_expected),
            entries: 0,
            time_min: u64::MAX,
            time_max: 0,
            last_key: Vec::new(),
        })
    }

    /// Adds an entry. Keys must ascend strictly; sizes are within
    /// [`KEY_LEN_MAX`] and [`VALUE_LEN_MAX`] (the owner's encodings are).
    pub fn push(&mut self, key: &[u8], time: u64, value: &[u8]) -> Result<(), TableError> {
        assert!(
            (1..=KEY_LEN_MAX).contains(&key.len()) && value.len() <= VALUE_LEN_MAX,
            "table entry of {} key bytes and {} value bytes is out of bounds",
            key.len(),
            value.len()
        );
        assert!(
            self.entries == 0 || key > self.last_key.as_slice(),
            "table keys ascend strictly"
        );
        if !self.block.fits(key, value) {
            self.seal_block()?;
        }
        if self.block.is_empty() {
            self.index_offsets.push(self.index_items.len() as u32);
            self.index_items.push(key.len() as u8);
            self.index_items.extend_from_slice(key);
        }
        self.block.push(key, time, value);
        self.filter.insert(key);
        self.entries += 1;
        self.time_min = self.time_min.min(time);
        self.time_max = self.time_max.max(time);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn seal_block(&mut self) -> Result<(), TableError> {
        self.block.finish_into(&mut self.full);
        if self.full.len() >= BLOCKS_PER_WRITE * BLOCK_LEN {
            self.write_full()?;
        }
        Ok(())
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), TableError> {
        let file = self.file.as_ref().expect("open until finished");
        file.write_at(offset, bytes)
            .map_err(|source| self.failed("write", source))
    }

    fn failed(&self, op: &'static str, source: std::io::Error) -> TableError {
        IoFailure::new(op, self.storage.describe(&self.temp), source).into()
    }

    fn write_full(&mut self) -> Result<(), TableError> {
        self.write(self.full_at, &self.full)?;
        self.full_at += self.full.len() as u64;
        self.full.clear();
        Ok(())
    }

    /// Writes the index, filter, footer and header, syncs the file,
    /// renames it to its final name and syncs the directory. At least one
    /// entry must have been pushed.
    pub fn finish(mut self) -> Result<TableMeta, TableError> {
        assert!(self.entries > 0, "a table holds at least one entry");
        self.block.finish_into(&mut self.full);
        self.write_full()?;
        let blocks = ((self.full_at as usize - BLOCK_LEN) / BLOCK_LEN) as u32;
        let index_at = self.full_at as usize;
        let tail = self.tail(index_at, blocks);
        self.write(index_at as u64, &tail)?;
        let header = self.header(blocks);
        self.write(0, &header)?;
        let file = self.file.take().expect("open until finished");
        let synced = file.sync_data();
        drop(file);
        synced.map_err(|source| self.failed("fsync", source))?;
        let name = table_name(self.seq);
        self.storage
            .rename(&self.temp, &name)
            .map_err(|source| self.failed("rename", source))?;
        self.storage.sync_dir().map_err(|source| {
            TableError::from(IoFailure::new(
                "fsync dir",
                self.storage.describe(""),
                source,
            ))
        })?;
        Ok(TableMeta {
            seq: self.seq,
            entries: self.entries,
            time_min: self.time_min,
            time_max: self.time_max,
            len: (index_at + tail.len()) as u64,
        })
    }

    /// Index, padding, filter and footer: everything after the blocks.
    fn tail(&self, index_at: usize, blocks: u32) -> Vec<u8> {
        let offsets_len = 4 * blocks as usize;
        let mut tail = Vec::new();
        for offset in &self.index_offsets {
            tail.extend_from_slice(&(offset + offsets_len as u32).to_le_bytes());
        }
        tail.extend_from_slice(&self.index_items);
        let crc = crc32fast::hash(&tail);
        tail.extend_from_slice(&crc.to_le_bytes());
        let index_len = tail.len();
        let filter_at = align_up(index_at + index_len);
        tail.resize(filter_at - index_at, 0);
        let filter = self.filter.encode();
        tail.extend_from_slice(&filter);
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&FOOTER_MAGIC);
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        footer.extend_from_slice(&[0; 4]);
        for field in [index_at, index_len, filter_at, filter.len()] {
            footer.extend_from_slice(&(field as u64).to_le_bytes());
        }
        footer.extend_from_slice(&self.seq.to_le_bytes());
        footer.extend_from_slice(&[0; 4]);
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        tail.extend_from_slice(&footer);
        tail
    }

    fn header(&self, blocks: u32) -> Vec<u8> {
        let mut header = Vec::with_capacity(BLOCK_LEN);
        header.extend_from_slice(&HEADER_MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        for field in [self.seq, self.entries, self.time_min, self.time_max] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        header.extend_from_slice(&blocks.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        header.resize(BLOCK_LEN, 0);
        header
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Unfinished: give the space back (the disk may be full). A
            // leftover is removed at the next open anyway.
            let _ = self.storage.remove(&self.temp);
        }
    }
}

/// An open, checked table: header, footer, index and filter were checked
/// when it opened; each data block is checked when it is read.
pub struct Table {
    path: String,
    view: ReadView,
    meta: TableMeta,
    blocks: usize,
    index_at: usize,
    filter: Range<usize>,
    filter_bits: u64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Table {
    /// Opens table `seq` and checks everything but its data blocks.
    pub fn open(storage: &dyn Storage, seq: u64) -> Result<Table, TableError> {
        let name = table_name(seq);
        let path = storage.describe(&name);
        let view = storage
            .read(&name)
            .map_err(|source| IoFailure::new("read", path.clone(), source))?;
        let corrupt = |offset: usize, reason: &str| TableError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason: reason.to_owned(),
        };
        let (meta, blocks) = check_header(&view, seq).map_err(|(at, why)| corrupt(at, why))?;
        let layout = check_footer(&view, seq, blocks).map_err(|(at, why)| corrupt(at, why))?;
        check_index(&view, layout.index.clone(), blocks).map_err(|(at, why)| corrupt(at, why))?;
        let filter_bits = filter::check(&view[layout.filter.clone()])
            .map_err(|error| corrupt(layout.filter.start, &error.to_string()))?;
        Ok(Table {
            meta: TableMeta {
                len: view.len() as u64,
                ..meta
            },
            path,
            view,
            blocks,
            index_at: layout.index.start,
            filter: layout.filter,
            filter_bits,
        })
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// The first key of block `block`.
    fn index_key(&self, block: usize) -> &[u8] {
        let item = self.index_at + u32_at(&self.view, self.index_at + 4 * block) as usize;
        let len = self.view[item] as usize;
        &self.view[item + 1..item + 1 + len]
    }

    /// Block `block`'s entries, checked (its first key must be the index's).
    fn block(&self, block: usize) -> Result<Vec<Entry<'_>>, TableError> {
        let at = BLOCK_LEN * (block + 1);
        let entries = block::entries(&self.view[at..at + BLOCK_LEN]).map_err(|(inner, why)| {
            TableError::Corrupt {
                file: self.path.clone(),
                offset: (at + inner) as u64,
                reason: why.to_owned(),
            }
        })?;
        if entries[0].key != self.index_key(block) {
            return Err(TableError::Corrupt {
                file: self.path.clone(),
                offset: at as u64,
                reason: "the block's first key differs from the index".into(),
            });
        }
        Ok(entries)
    }

    /// The entry for `key`, reading at most one block (none if the filter
    /// says the key is absent).
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry<'_>>, TableError> {
        Ok(self
            .get_located(key, KeyHashes::of(key))?
            .map(|(entry, _)| entry))
    }

    /// [`Table::get`] with the key's filter hashes computed already, and
    /// the file offset of the block it was found in.
    pub(super) fn get_located(
        &self,
        key: &[u8],
        hashes: KeyHashes,
    ) -> Result<Option<(Entry<'_>, u64)>, TableError> {
        if !filter::encoded_may_contain(&self.view[self.filter.clone()], self.filter_bits, hashes) {
            return Ok(None);
        }
        let after = partition(self.blocks, |block| self.index_key(block) <= key);
        if after == 0 {
            return Ok(None);
        }
        let at = BLOCK_LEN * after;
        let found = block::find(&self.view[at..at + BLOCK_LEN], key).map_err(|(inner, why)| {
            TableError::Corrupt {
                file: self.path.clone(),
                offset: (at + inner) as u64,
                reason: why.to_owned(),
            }
        })?;
        Ok(found.map(|entry| (entry, at as u64)))
    }

    /// A human-readable path of the file, for errors.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every entry in key order, each block checked as it is read, and the
    /// order across blocks and the header's count and times checked at the
    /// end: what a merge and `verify` read.
    pub fn scan(&self) -> TableScan<'_> {
        TableScan {
            table: self,
            block: 0,
            entries: Vec::new().into_iter(),
            seen: 0,
            last: None,
        }
    }
}

/// The number of leading items in `0..len` for which `is_before` holds
/// (it must hold for a prefix): a binary search.
fn partition(len: usize, is_before: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if is_before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// Where a table's index and filter lie.
struct Layout {
    index: Range<usize>,
    filter: Range<usize>,
}

type Damage = (usize, &'static str);

fn check_header(view: &[u8], seq: u64) -> Result<(TableMeta, usize), Damage> {
    if view.len() < BLOCK_LEN + FOOTER_LEN {
        return Err((view.len(), "shorter than a table's header page and footer"));
    }
    if view[0..8] != HEADER_MAGIC {
        return Err((0, "bad table magic"));
    }
    if u32_at(view, 52) != crc32fast::hash(&view[0..52]) {
        return Err((52, "table header checksum mismatch"));
    }
    if u32_at(view, 8) != FORMAT_VERSION {
        return Err((8, "unsupported table format version"));
    }
    if view[12..16] != [0; 4] || view[56..BLOCK_LEN].iter().any(|&byte| byte != 0) {
        return Err((12, "reserved header bytes are not zero"));
    }
    if u64_at(view, 16) != seq {
        return Err((16, "sequence number differs from the file name"));
    }
    let meta = TableMeta {
        seq,
        entries: u64_at(view, 24),
        time_min: u64_at(view, 32),
        time_max: u64_at(view, 40),
        len: view.len() as u64,
    };
    let blocks = u32_at(view, 48) as usize;
    if blocks == 0 || meta.entries < blocks as u64 || meta.time_min > meta.time_max {
        return Err((24, "header counts or times out of range"));
    }
    Ok((meta, blocks))
}

fn check_footer(view: &[u8], seq: u64, blocks: usize) -> Result<Layout, Damage> {
    let at = view.len() - FOOTER_LEN;
    let footer = &view[at..];
    if footer[0..8] != FOOTER_MAGIC {
        return Err((at, "bad table footer magic (cut or damaged file)"));
    }
    if u32_at(footer, 60) != crc32fast::hash(&footer[..60]) {
        return Err((at + 60, "table footer checksum mismatch"));
    }
    if u32_at(footer, 8) != FORMAT_VERSION || footer[12..16] != [0; 4] || footer[56..60] != [0; 4] {
        return Err((at + 8, "footer version or reserved bytes wrong"));
    }
    if u64_at(footer, 48) != seq {
        return Err((at + 48, "footer sequence number differs from the header"));
    }
    let field = |offset: usize| usize::try_from(u64_at(footer, offset)).unwrap_or(usize::MAX);
    let (index_at, index_len) = (field(16), field(24));
    let (filter_at, filter_len) = (field(32), field(40));
    let index_end = index_at.checked_add(index_len);
    // Each index item takes an offset and at least two bytes.
    if index_at != BLOCK_LEN * (blocks + 1)
        || index_len < 6 * blocks + 4
        || index_end.map(align_up) != Some(filter_at)
        || filter_at.checked_add(filter_len) != Some(at)
    {
        return Err((at + 16, "footer offsets do not fit the file"));
    }
    let index_end = index_at + index_len;
    if view[index_end..filter_at].iter().any(|&byte| byte != 0) {
        return Err((index_end, "padding after the index is not zero"));
    }
    Ok(Layout {
        index: index_at..index_at + index_len,
        filter: filter_at..filter_at + filter_len,
    })
}

/// The index's checksum, and that its items are contiguous, in bounds and
/// in strictly ascending key order.
fn check_index(view: &[u8], index: Range<usize>, blocks: usize) -> Result<(), Damage> {
    let bytes = &view[index.clone()];
    let body_len = bytes.len() - 4;
    if u32_at(bytes, body_len) != crc32fast::hash(&bytes[..body_len]) {
        return Err((index.start + body_len, "index checksum mismatch"));
    }
    let mut expected = 4 * blocks;
    let mut previous: Option<&[u8]> = None;
    for block in 0..blocks {
        let offset = u32_at(bytes, 4 * block) as usize;
        let len = bytes.get(offset).copied().unwrap_or(0) as usize;
        if offset != expected || len == 0 || len > KEY_LEN_MAX || offset + 1 + len > body_len {
            return Err((index.start + 4 * block, "index item out of place"));
        }
        let key = &bytes[offset + 1..offset + 1 + len];
        if previous.is_some_and(|previous| previous >= key) {
            return Err((index.start + offset, "index keys out of order"));
        }
        previous = Some(key);
        expected = offset + 1 + len;
    }
    if expected != body_len {
        return Err((
            index.start + expected,
            "index length does not match its items",
        ));
    }
    Ok(())
}

/// Entries of a table in key order; see [`Table::scan`].
pub struct TableScan<'a> {
    table: &'a Table,
    block: usize,
    entries: std::vec::IntoIter<Entry<'a>>,
    seen: u64,
    last: Option<Entry<'a>>,
}

impl<'a> TableScan<'a> {
    fn corrupt(&self, offset: usize, reason: &str) -> TableError {
        TableError::Corrupt {
            file: self.table.path.clone(),
            offset: offset as u64,
            reason: reason.to_owned(),
        }
    }

    /// The whole table's count and time range against its header.
    fn check_totals(&self) -> Result<(), TableError> {
        let meta = &self.table.meta;
        if self.seen != meta.entries {
            return Err(self.corrupt(24, "entry count differs from the header"));
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<Entry<'a>>, TableError> {
        loop {
            if let Some(entry) = self.entries.next() {
                let meta = &self.table.meta;
                if self.last.is_some_and(|last| last.key >= entry.key) {
                    return Err(
                        self.corrupt(BLOCK_LEN * self.block, "keys out of order across blocks")
                    );
                }
                if entry.time < meta.time_min || entry.time > meta.time_max {
                    return Err(self.corrupt(
                        BLOCK_LEN * self.block,
                        "entry time outside the header's range",
                    ));
                }
                self.seen += 1;
                self.last = Some(entry);
                return Ok(Some(entry));
            }
            if self.block == self.table.blocks {
                self.check_totals()?;
                return Ok(None);
            }
            self.entries = self.table.block(self.block)?.into_iter();
            self.block += 1;
        }
    }
}

impl<'a> Iterator for TableScan<'a> {
    type Item = Result<Entry<'a>, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    fn key(index: u64) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&index.to_be_bytes());
        key
    }

    fn value(index: u64) -> Vec<u8> {
        vec![index as u8; (index % 200) as usize]
    }

    /// A table of keys `0..count` (times = index), on fresh storage.
    fn written(count: u64) -> (SimStorage, TableMeta) {
        let storage = SimStorage::new();
        let mut writer = TableWriter::create(Arc::new(storage.clone()), 3, count).unwrap();
        for index in 0..count {
            writer
                .push(&key(index * 2), 1000 + index, &value(index))
                .unwrap();
        }
        let meta = writer.finish().unwrap();
        (storage, meta)
    }

    #[test]
    fn every_key_is_found_and_absent_keys_are_not() {
        let (storage, meta) = written(500);
        assert_eq!(
            (meta.entries, meta.time_min, meta.time_max),
            (500, 1000, 1499)
        );
        let table = Table::open(&storage, 3).unwrap();
        assert_eq!(table.meta(), &meta);
        assert!(table.blocks > 1, "the test spans several blocks");
        for index in 0..500 {
            let found = table.get(&key(index * 2)).unwrap().expect("present");
            assert_eq!((found.time, found.value), (1000 + index, &value(index)[..]));
            assert_eq!(table.get(&key(index * 2 + 1)).unwrap(), None);
        }
        let scanned: Vec<_> = table.scan().map(|entry| entry.unwrap().time).collect();
        assert_eq!(scanned, (1000..1500).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_of_a_table_is_refused() {
        let (storage, _) = written(100);
        let bytes = storage.contents(&table_name(3)).unwrap();
        for len in 0..bytes.len() {
            let cut = SimStorage::new();
            cut.open(&table_name(3), true)
                .unwrap()
                .write_at(0, &bytes[..len])
                .unwrap();
            let error = Table::open(&cut, 3).unwrap_err();
            assert!(error.to_string().contains("table-"), "{error}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused_at_open_or_when_its_block_is_read() {
        let (storage, _) = written(100);
        let name = table_name(3);
        let bytes = storage.contents(&name).unwrap();
        for at in 0..bytes.len() {
            let damaged = SimStorage::new();
            let mut copy = bytes.clone();
            copy[at] ^= 0x10;
            damaged
                .open(&name, true)
                .unwrap()
                .write_at(0, &copy)
                .unwrap();
            let refused = match Table::open(&damaged, 3) {
                Err(error) => {
                    matches!(error, TableError::Corrupt { offset, .. } if offset <= bytes.len() as u64)
                }
                Ok(table) => table.scan().any(|entry| entry.is_err()),
            };
            assert!(refused, "flip at {at} went unseen");
        }
    }

    #[test]
    fn an_unfinished_writer_leaves_no_file() {
        let storage = SimStorage::new();
        let mut writer = TableWriter::create(Arc::new(storage.clone()), 1, 1).unwrap();
        writer.push(b"k", 1, b"v").unwrap();
        drop(writer);
        assert!(storage.list().unwrap().is_empty());
    }
}
