//! The explicit, operator-invoked repair of a corrupt log.
//!
//! Opening a log never drops a record that might have been acknowledged; it
//! refuses instead. Repair is the deliberate alternative: it keeps a
//! `.broken` copy of every file it changes or takes out of the log, truncates
//! the log at the first bad record and reports how much it dropped. A torn
//! tail is zeroed just as open would.

use crate::error::{CorruptReason, IoFailure};
use crate::recovery::{self, Damage, Scan};
use crate::segment::{self, SEGMENT_HEADER_LEN};
use crate::storage::Storage;

/// What a repair did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Nothing was wrong.
    Clean,
    /// A torn tail was zeroed: (segment, offset, bytes zeroed).
    TornTailZeroed {
        segment: String,
        offset: u64,
        bytes: u64,
    },
    /// The log was cut at the first bad record.
    Truncated {
        segment: String,
        offset: u64,
        reason: CorruptReason,
        /// Records after the damage that were dropped.
        dropped_records: u64,
        /// Copies of the original bytes, and files moved out of the log.
        kept: Vec<String>,
    },
    /// Nothing can be cut to make the log usable (its snapshots outlived
    /// every segment).
    Unrepairable { reason: CorruptReason },
}

const BROKEN_SUFFIX: &str = ".broken";

/// Repairs the log on `storage`; see the module docs.
pub fn repair(storage: &dyn Storage) -> Result<RepairOutcome, IoFailure> {
    let scan = crate::log::inspect(storage)?;
    let failed = |op: &'static str, name: &str| {
        let path = storage.describe(name);
        move |source| IoFailure::new(op, path, source)
    };
    match scan.damage.clone() {
        None => Ok(RepairOutcome::Clean),
        Some(Damage::TornTail {
            segment,
            offset,
            garbage_end,
            ..
        }) => {
            let file = storage
                .open(&segment, false)
                .map_err(failed("open", &segment))?;
            let zeros = vec![0u8; (garbage_end - offset) as usize];
            file.write_at(offset, &zeros)
                .map_err(failed("zero torn tail of", &segment))?;
            file.sync_data().map_err(failed("fdatasync", &segment))?;
            Ok(RepairOutcome::TornTailZeroed {
                segment,
                offset,
                bytes: zeros.len() as u64,
            })
        }
        Some(Damage::Corrupt {
            reason: reason @ CorruptReason::SnapshotsWithoutSegments,
            ..
        }) => Ok(RepairOutcome::Unrepairable { reason }),
        Some(Damage::Corrupt {
            segment_index,
            segment,
            offset,
            reason,
            records_after,
        }) => {
            let kept = cut(storage, &scan, segment_index, offset)?;
            storage.sync_dir().map_err(failed("fsync dir", ""))?;
            let after = recovery::scan(storage, crate::log::PAYLOAD_LEN_LIMIT)?;
            debug_assert!(after.corruption().is_none(), "repair leaves a valid log");
            Ok(RepairOutcome::Truncated {
                segment,
                offset,
                reason,
                dropped_records: records_after,
                kept,
            })
        }
    }
}

/// Keeps copies, zeroes the damaged segment from `offset` (or moves it out
/// whole when its header is bad) and moves every later segment out.
fn cut(
    storage: &dyn Storage,
    scan: &Scan,
    segment_index: usize,
    offset: u64,
) -> Result<Vec<String>, IoFailure> {
    let failed = |op: &'static str, name: &str| {
        let path = storage.describe(name);
        move |source| IoFailure::new(op, path, source)
    };
    let mut kept = Vec::new();
    let damaged = &scan.segments[segment_index];
    // The scan stops at the damage, so list every segment file there is.
    let mut all: Vec<(crate::record::Lsn, String)> = storage
        .list()
        .map_err(failed("list", ""))?
        .into_iter()
        .filter_map(|name| segment::parse_segment_name(&name).map(|first| (first, name)))
        .collect();
    all.sort();
    let keep_damaged = offset >= SEGMENT_HEADER_LEN as u64;
    if keep_damaged {
        let copy = format!("{}{BROKEN_SUFFIX}", damaged.name);
        let bytes = storage
            .read(&damaged.name)
            .map_err(failed("read", &damaged.name))?;
        let target = storage.open(&copy, true).map_err(failed("create", &copy))?;
        target.set_len(0).map_err(failed("truncate", &copy))?;
        target.write_at(0, &bytes).map_err(failed("write", &copy))?;
        target.sync_data().map_err(failed("fdatasync", &copy))?;
        let file = storage
            .open(&damaged.name, false)
            .map_err(failed("open", &damaged.name))?;
        let zeros = vec![0u8; bytes.len() - offset as usize];
        file.write_at(offset, &zeros)
            .map_err(failed("truncate", &damaged.name))?;
        file.sync_data()
            .map_err(failed("fdatasync", &damaged.name))?;
        kept.push(storage.describe(&copy));
    }
    let moved_out: Vec<&String> = all
        .iter()
        .filter(|(first, _)| {
            *first > damaged.first_lsn || (!keep_damaged && *first == damaged.first_lsn)
        })
        .map(|(_, name)| name)
        .collect();
    for name in &moved_out {
        let target = format!("{name}{BROKEN_SUFFIX}");
        storage
            .rename(name, &target)
            .map_err(failed("rename", name))?;
        kept.push(storage.describe(&target));
    }
    if all.len() == moved_out.len() {
        // Every segment went: start an empty log where the valid one ended.
        let first = scan.segments[0].first_lsn;
        let name = segment::segment_name(first);
        let file = storage.open(&name, true).map_err(failed("create", &name))?;
        file.write_at(0, &segment::encode_header(first, false))
            .map_err(failed("write header", &name))?;
        file.sync_data().map_err(failed("fdatasync", &name))?;
    }
    Ok(kept)
}
