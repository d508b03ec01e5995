//! History tables: immutable, sorted, checksummed files of key → (time,
//! value) beside the log, through the same `Storage` seam, so the
//! simulation can tear and drop their writes. The design (byte maps, the
//! checkpoint's write order, crash states, merging and expiry) is
//! `docs/history-tables.md`.
//!
//! - [`filter`]: a table's bloom filter;
//! - `block`: a 4 KiB data block of sorted entries;
//! - [`file`]: one table file, written once ([`TableWriter`]) and read
//!   through the storage's read view ([`Table`]);
//! - [`manifest`]: which tables are live, switched atomically;
//! - [`store`]: lookups over the live tables, and every change to them
//!   (a checkpoint's table, a merge, an expiry).
//!
//! Like the log, it knows nothing of money: keys and values are the
//! owner's bytes.

mod block;
pub mod file;
pub mod filter;
pub mod manifest;
pub mod store;

pub use file::{Table, TableScan, TableWriter, parse_table_name, table_name};
pub use manifest::{Manifest, manifest_name, parse_manifest_name};
pub use store::{Checked, Found, Leftover, Listed, Maintained, Store, StoreOptions, StoreStats};

use crate::error::IoFailure;

/// Data blocks are this long and page-aligned.
pub const BLOCK_LEN: usize = 4096;
/// The longest key, in bytes.
pub const KEY_LEN_MAX: usize = 64;
/// The longest value, in bytes: with the largest key it fits one block.
pub const VALUE_LEN_MAX: usize = 3072;

/// One entry, borrowed from a table's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    /// Milliseconds: when the entry finished; retention goes by it.
    pub time: u64,
    pub value: &'a [u8],
}

/// What a table's header says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableMeta {
    pub seq: u64,
    pub entries: u64,
    pub time_min: u64,
    pub time_max: u64,
    /// The file's length in bytes.
    pub len: u64,
}

/// Why a table or manifest could not be written or read. Damage names the
/// file and the offset.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{file}: damaged at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("{file} is listed by {manifest} but missing")]
    Missing { file: String, manifest: String },
    #[error(
        "the newest manifest is generation {found} but the snapshot relies on generation {expected}: a manifest is missing"
    )]
    ManifestBehind { found: u64, expected: u64 },
    #[error(transparent)]
    Io(#[from] IoFailure),
}

/// Why a checkpoint of a core that keeps its history here did not complete
/// (it writes the finished entries as a table, then snapshots what stays in
/// memory and trims the log): the old snapshot and tables stand, and the
/// log keeps everything. The bank's and the gateway's checkpoints share it.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("writing the history tables failed: {0}")]
    History(#[from] TableError),
    #[error(transparent)]
    Log(#[from] crate::error::CheckpointError),
}
