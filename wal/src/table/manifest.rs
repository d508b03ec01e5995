//! The manifest: which tables are live, oldest first. It is small and
//! rewritten whole on every change, under a `.tmp` name, synced, renamed
//! and the directory synced, so a crash leaves the old or the new one.
//!
//! ```text
//! offset  size    field
//!      0     8    magic "MPAYMANI"
//!      8     4    format version = 1
//!     12     4    table count t
//!     16     8    generation (one more on every change)
//!     24     8    horizon (ms): entries with an older time are expired,
//!                 whether or not their table is gone yet
//!     32  40·t    rows, oldest table first: sequence number, entry count,
//!                 smallest time, largest time, file length (u64 each)
//!  32+40t    4    crc32 of everything before
//! ```
//!
//! The order of the rows is the order of precedence: for a key in two
//! tables, the later row wins. A merged table takes the place of the rows
//! it replaced, whatever its sequence number.

use super::{TableError, TableMeta};
use crate::error::IoFailure;
use crate::storage::Storage;

const MAGIC: [u8; 8] = *b"MPAYMANI";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
const ROW_LEN: usize = 40;
/// The most rows a manifest may hold when read (a bound on damage, far
/// above any `tables_max`).
pub const ROWS_MAX: usize = 4096;

const PREFIX: &str = "manifest-";
const SUFFIX: &str = ".mft";

/// The file name of manifest `generation`.
pub fn manifest_name(generation: u64) -> String {
    format!("{PREFIX}{generation:020}{SUFFIX}")
}

/// The generation in a manifest's file name.
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A manifest's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub generation: u64,
    /// Entries older than this (ms) are expired: lookups do not see them.
    pub horizon: u64,
    /// Oldest first.
    pub tables: Vec<TableMeta>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + ROW_LEN * self.tables.len() + 4);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&self.generation.to_le_bytes());
        bytes.extend_from_slice(&self.horizon.to_le_bytes());
        for table in &self.tables {
            for field in [
                table.seq,
                table.entries,
                table.time_min,
                table.time_max,
                table.len,
            ] {
                bytes.extend_from_slice(&field.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads a manifest back; damage is the offset and what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, (usize, &'static str)> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err((bytes.len(), "shorter than a manifest header"));
        }
        if bytes[0..8] != MAGIC {
            return Err((0, "bad manifest magic"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4")) as usize;
        if count > ROWS_MAX || bytes.len() != HEADER_LEN + ROW_LEN * count + 4 {
            return Err((12, "table count does not match the manifest's length"));
        }
        let body_len = bytes.len() - 4;
        if crc32fast::hash(&bytes[..body_len]).to_le_bytes() != bytes[body_len..] {
            return Err((body_len, "manifest checksum mismatch"));
        }
        if u32::from_le_bytes(bytes[8..12].try_into().expect("4")) != FORMAT_VERSION {
            return Err((8, "unsupported manifest format version"));
        }
        let tables = (0..count)
            .map(|row| {
                let at = HEADER_LEN + ROW_LEN * row;
                TableMeta {
                    seq: u64_at(at),
                    entries: u64_at(at + 8),
                    time_min: u64_at(at + 16),
                    time_max: u64_at(at + 24),
                    len: u64_at(at + 32),
                }
            })
            .collect();
        Ok(Manifest {
            generation: u64_at(16),
            horizon: u64_at(24),
            tables,
        })
    }

    /// Writes this manifest durably: `.tmp`, `fdatasync`, rename, directory
    /// sync. Older manifests are the caller's to remove.
    pub fn write(&self, storage: &dyn Storage) -> Result<(), TableError> {
        let name = manifest_name(self.generation);
        let temp = format!("{name}.tmp");
        let failed = |op, file: &str| {
            let path = storage.describe(file);
            move |source| TableError::from(IoFailure::new(op, path, source))
        };
        let file = storage.open(&temp, true).map_err(failed("create", &temp))?;
        let written = file
            .set_len(0)
            .and_then(|()| file.write_at(0, &self.encode()))
            .and_then(|()| file.sync_data());
        drop(file);
        if let Err(source) = written {
            let _ = storage.remove(&temp);
            return Err(failed("write", &temp)(source));
        }
        storage
            .rename(&temp, &name)
            .map_err(failed("rename", &temp))?;
        storage.sync_dir().map_err(failed("fsync dir", ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let table = |seq| TableMeta {
            seq,
            entries: seq * 10,
            time_min: seq,
            time_max: seq + 5,
            len: 8192 + seq,
        };
        Manifest {
            generation: 7,
            horizon: 3,
            tables: vec![table(4), table(2), table(9)],
        }
    }

    #[test]
    fn a_manifest_round_trips_and_every_cut_or_flip_is_refused() {
        let bytes = manifest().encode();
        assert_eq!(Manifest::decode(&bytes), Ok(manifest()));
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x08;
            assert!(Manifest::decode(&damaged).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_manifest_name(&manifest_name(42)), Some(42));
        assert_eq!(parse_manifest_name("manifest-42.mft"), None);
        assert_eq!(
            parse_manifest_name("manifest-00000000000000000042.mft.tmp"),
            None
        );
    }
}
