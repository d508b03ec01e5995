//! Snapshot files: an owner's state machine image, tagged with the LSN it
//! covers, written atomically beside the log.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "MPAYSNAP"
//!      8     4  format version (u32 LE)
//!     12     4  reserved, zero
//!     16     8  lsn covered: every record up to and including it is in the image
//!     24     8  payload length (u64 LE)
//!     32     4  crc32 of bytes 0..32 (with this field zero) and the payload
//!     36     4  reserved, zero
//!     40     n  payload (the owner's encoding)
//! ```
//!
//! Write sequence: `snapshot-<lsn>.tmp` is written and fsynced, renamed to
//! `snapshot-<lsn>.snap`, the directory is fsynced, and only then are older
//! snapshots removed. A crash at any point leaves either the old or the new
//! snapshot complete. This module knows nothing of what the payload means.

use crate::error::{IoFailure, SnapshotError};
use crate::record::Lsn;
use crate::storage::Storage;

const SNAPSHOT_MAGIC: [u8; 8] = *b"MPAYSNAP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_LEN: usize = 40;
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";

/// A loaded snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every record up to and including this LSN is reflected in `payload`.
    pub lsn: Lsn,
    pub payload: Vec<u8>,
}

fn snapshot_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{:020}{SNAPSHOT_SUFFIX}", lsn.0)
}

fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    let digits = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// Whether `name` is a snapshot file.
pub fn is_snapshot_name(name: &str) -> bool {
    parse_snapshot_name(name).is_some()
}

fn encode(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&lsn.0.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(payload);
    let crc = crc32fast::hash(&bytes);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<Snapshot, &'static str> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err("shorter than a snapshot header");
    }
    if bytes[0..8] != SNAPSHOT_MAGIC {
        return Err("bad magic");
    }
    if u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) != SNAPSHOT_VERSION {
        return Err("unsupported snapshot version");
    }
    let lsn = Lsn(u64::from_le_bytes(
        bytes[16..24].try_into().expect("8 bytes"),
    ));
    let len = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    if len != (bytes.len() - SNAPSHOT_HEADER_LEN) as u64 {
        return Err("payload length does not match the file size");
    }
    if bytes[36..40] != [0; 4] || bytes[12..16] != [0; 4] {
        return Err("reserved bytes are not zero");
    }
    let stored = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..32]);
    hasher.update(&[0; 8]);
    hasher.update(&bytes[SNAPSHOT_HEADER_LEN..]);
    if hasher.finalize() != stored {
        return Err("checksum mismatch");
    }
    Ok(Snapshot {
        lsn,
        payload: bytes[SNAPSHOT_HEADER_LEN..].to_vec(),
    })
}

/// Atomically writes a snapshot covering records up to `lsn`, then removes
/// older snapshots. Returns once the new snapshot is durable.
pub fn write_snapshot(
    storage: &dyn Storage,
    lsn: Lsn,
    payload: &[u8],
) -> Result<(), SnapshotError> {
    let name = snapshot_name(lsn);
    let temp = format!("{name}.tmp");
    let failed = |op, file: &str| {
        let path = storage.describe(file);
        move |source| SnapshotError::Io(IoFailure::new(op, path, source))
    };
    let file = storage.open(&temp, true).map_err(failed("create", &temp))?;
    let written = (|| {
        file.set_len(0).map_err(failed("truncate", &temp))?;
        file.write_at(0, &encode(lsn, payload))
            .map_err(failed("write", &temp))?;
        file.sync_data().map_err(failed("fsync", &temp))
    })();
    drop(file);
    if let Err(error) = written {
        // Give the space back (the disk may be full); the old snapshot
        // stands, and the failure is what is reported.
        let _ = storage.remove(&temp);
        return Err(error);
    }
    storage
        .rename(&temp, &name)
        .map_err(failed("rename", &temp))?;
    storage.sync_dir().map_err(failed("fsync dir", ""))?;
    let names = storage.list().map_err(failed("list", ""))?;
    let mut removed = false;
    for old in names {
        if parse_snapshot_name(&old).is_some_and(|old_lsn| old_lsn < lsn) {
            storage.remove(&old).map_err(failed("remove", &old))?;
            removed = true;
        }
    }
    if removed {
        storage.sync_dir().map_err(failed("fsync dir", ""))?;
    }
    Ok(())
}

/// Loads the newest snapshot, if any. A damaged newest snapshot is an error,
/// never silently replaced by an older one.
pub fn load_latest_snapshot(storage: &dyn Storage) -> Result<Option<Snapshot>, SnapshotError> {
    let names = storage
        .list()
        .map_err(|source| IoFailure::new("list", storage.describe(""), source))?;
    let Some((lsn, name)) = names
        .into_iter()
        .filter_map(|name| parse_snapshot_name(&name).map(|lsn| (lsn, name)))
        .max()
    else {
        return Ok(None);
    };
    let bytes = storage
        .read(&name)
        .map_err(|source| IoFailure::new("read", storage.describe(&name), source))?;
    let snapshot = decode(&bytes).map_err(|reason| SnapshotError::Corrupt {
        file: storage.describe(&name),
        reason,
    })?;
    if snapshot.lsn != lsn {
        return Err(SnapshotError::Corrupt {
            file: storage.describe(&name),
            reason: "lsn in the header differs from the file name",
        });
    }
    Ok(Some(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn newest_snapshot_wins_and_older_ones_are_removed() {
        let storage = SimStorage::new();
        write_snapshot(&storage, Lsn(5), b"five").unwrap();
        write_snapshot(&storage, Lsn(9), b"nine").unwrap();
        let loaded = load_latest_snapshot(&storage).unwrap().unwrap();
        assert_eq!(loaded.lsn, Lsn(9));
        assert_eq!(loaded.payload, b"nine");
        assert_eq!(storage.list().unwrap(), vec![snapshot_name(Lsn(9))]);
    }

    #[test]
    fn a_crash_before_the_directory_sync_keeps_the_old_snapshot() {
        let storage = SimStorage::new();
        write_snapshot(&storage, Lsn(5), b"five").unwrap();
        storage.fail_syncs_after(1);
        assert!(write_snapshot(&storage, Lsn(9), b"nine").is_err());
        let recovered = storage.crash();
        let loaded = load_latest_snapshot(&recovered).unwrap().unwrap();
        assert_eq!(loaded.lsn, Lsn(5));
        assert_eq!(loaded.payload, b"five");
    }

    #[test]
    fn a_snapshot_that_cannot_be_written_leaves_no_file_and_the_old_one_stands() {
        let storage = SimStorage::new();
        write_snapshot(&storage, Lsn(5), b"five").unwrap();
        storage.fail_writes_after(0, std::io::ErrorKind::StorageFull);
        let error = write_snapshot(&storage, Lsn(9), b"nine").unwrap_err();
        assert!(error.to_string().contains("write sim:/"), "{error}");
        assert_eq!(storage.list().unwrap(), vec![snapshot_name(Lsn(5))]);
        let loaded = load_latest_snapshot(&storage).unwrap().unwrap();
        assert_eq!(
            (loaded.lsn, loaded.payload.as_slice()),
            (Lsn(5), &b"five"[..])
        );
    }

    #[test]
    fn every_flipped_byte_of_a_snapshot_is_detected() {
        let bytes = encode(Lsn(3), b"state image");
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            assert!(
                decode(&damaged).is_err(),
                "flip at byte {index} went unseen"
            );
        }
        assert_eq!(decode(&bytes).unwrap().payload, b"state image");
    }
}
