//! Recovery: read every segment, find where the valid log ends, and decide
//! whether what follows is a torn tail (repairable) or corruption (refuse).
//!
//! The decision table (also in `docs/wal-format.md`):
//!
//! | first invalid bytes at offset `o` of segment `s`          | verdict                           |
//! |-----------------------------------------------------------|-----------------------------------|
//! | zeros to the end of `s`, `s` is the last segment           | clean end of log                  |
//! | zeros to the end of `s`, next segment starts at next lsn   | clean end of segment              |
//! | zeros to the end of `s`, next segment starts elsewhere     | corrupt: lsn gap                  |
//! | non-zero bytes, `s` is not the last segment                | corrupt: damage in sealed segment |
//! | non-zero bytes, a valid record later in `s`                | corrupt: valid record after damage|
//! | non-zero bytes, nothing valid after, `s` is the last       | torn tail: zero from `o`, continue|
//! | bad segment header, or first lsn not the expected one      | corrupt                           |
//!
//! In a *recycled* segment (header flag) "zeros" means zeros from `o` to the
//! end of its page, and no record with an LSN of at least the expected one
//! anywhere after `o`: what follows the page is stale, from the file's
//! earlier life, and cannot decode as a record of this one. A torn tail there
//! is zeroed to the end of its page.
//!
//! Scanning changes nothing; [`crate::Wal::open`] acts on the verdict. This
//! module reads only; it knows nothing of appending or group commit.

use crate::error::{CorruptReason, IoFailure, OpenError};
use crate::record::{self, Invalid, Lsn, RECORD_ALIGN};
use crate::segment::{self, PAGE_LEN, SEGMENT_HEADER_LEN};
use crate::snapshot;
use crate::storage::Storage;

/// What a scan found in one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub name: String,
    pub first_lsn: Lsn,
    /// Valid records in the segment.
    pub records: u64,
    /// Offset just past the last valid record.
    pub end_offset: u64,
    pub file_len: u64,
    /// A reused segment (header flag): stale bytes may follow its end.
    pub recycled: bool,
}

/// Damage found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The last write before a crash was torn: bytes `offset..garbage_end` of
    /// the last segment hold a partial record and nothing valid follows.
    TornTail {
        segment: String,
        offset: u64,
        garbage_end: u64,
        invalid: Invalid,
    },
    /// The log is damaged where truncation would lose acknowledged records.
    Corrupt {
        segment_index: usize,
        segment: String,
        offset: u64,
        reason: CorruptReason,
        /// Valid-looking records at and after the damage, which a repair
        /// (truncation at `offset`) would drop.
        records_after: u64,
    },
}

/// Everything a scan of a log directory found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub segments: Vec<SegmentInfo>,
    /// LSN of the first record the log holds (its first segment's first LSN).
    pub first_lsn: Lsn,
    /// LSN the next appended record will get.
    pub next_lsn: Lsn,
    pub damage: Option<Damage>,
    /// Files that are neither segments, snapshots, temp files nor the lock.
    pub foreign_files: Vec<String>,
    pub snapshot_files: Vec<String>,
    pub temp_files: Vec<String>,
}

impl Scan {
    /// Valid records in the log.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|segment| segment.records).sum()
    }

    /// The error `open` reports for this scan's damage, if it is corruption.
    pub fn corruption(&self) -> Option<OpenError> {
        match &self.damage {
            Some(Damage::Corrupt {
                segment,
                offset,
                reason,
                ..
            }) => Some(OpenError::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            }),
            Some(Damage::TornTail { .. }) | None => None,
        }
    }
}

/// Reads every segment in `storage` and classifies the end of the log.
pub fn scan(storage: &dyn Storage, payload_len_max: u32) -> Result<Scan, IoFailure> {
    let names = storage
        .list()
        .map_err(|source| IoFailure::new("list", storage.describe(""), source))?;
    let (segments, mut result) = sort_listing(names);
    find_start(storage, &segments, &mut result);
    let last_index = segments.len().saturating_sub(1);
    for (index, (first, name)) in segments.iter().enumerate() {
        let bytes = storage
            .read(name)
            .map_err(|source| IoFailure::new("read", storage.describe(name), source))?;
        let is_last = index == last_index;
        let outcome = scan_segment(&bytes, *first, result.next_lsn, is_last, payload_len_max);
        result.segments.push(SegmentInfo {
            name: name.clone(),
            first_lsn: *first,
            records: outcome.records,
            end_offset: outcome.end_offset,
            file_len: bytes.len() as u64,
            recycled: segment::check_header(&bytes, *first).is_ok_and(|header| header.recycled),
        });
        // A segment refused at its header (bad, or not where the log left
        // off) contributes nothing to the log.
        if outcome.end_offset != 0 {
            result.next_lsn = Lsn(first.0 + outcome.records);
        }
        if let Some(found) = outcome.damage {
            let later_records =
                || count_later_records(storage, &segments[index + 1..], payload_len_max);
            result.damage = Some(found.in_log(index, name, later_records));
            break;
        }
    }
    Ok(result)
}

/// Sorts a directory listing: segments in LSN order (their names sort that
/// way once parsed), and every other file by what it is, so that `open` can
/// remove temp files and refuse a directory that is not a log. The scan it
/// returns holds no segment yet.
fn sort_listing(names: Vec<String>) -> (Vec<(Lsn, String)>, Scan) {
    let mut segments: Vec<(Lsn, String)> = Vec::new();
    let mut result = Scan {
        segments: Vec::new(),
        first_lsn: Lsn::FIRST,
        next_lsn: Lsn::FIRST,
        damage: None,
        foreign_files: Vec::new(),
        snapshot_files: Vec::new(),
        temp_files: Vec::new(),
    };
    for name in names {
        if let Some(first) = segment::parse_segment_name(&name) {
            segments.push((first, name));
        } else if snapshot::is_snapshot_name(&name) {
            result.snapshot_files.push(name);
        } else if name.ends_with(segment::TEMP_SUFFIX) {
            result.temp_files.push(name);
        } else if name != crate::storage::LOCK_FILE {
            result.foreign_files.push(name);
        }
    }
    segments.sort();
    (segments, result)
}

/// Where the log starts: at its first segment's first LSN. With no segment
/// there is no log, which is a new one unless snapshots remain: then the log
/// was removed (the table's "snapshots but no segments" row), and replaying
/// nothing after the snapshot would silently lose what the log held.
fn find_start(storage: &dyn Storage, segments: &[(Lsn, String)], result: &mut Scan) {
    if let Some((first, _)) = segments.first() {
        result.first_lsn = *first;
        result.next_lsn = *first;
    } else if !result.snapshot_files.is_empty() {
        result.damage = Some(Damage::Corrupt {
            segment_index: 0,
            segment: storage.describe(&result.snapshot_files[0]),
            offset: 0,
            reason: CorruptReason::SnapshotsWithoutSegments,
            records_after: 0,
        });
    }
}

enum SegmentDamage {
    Torn {
        offset: u64,
        garbage_end: u64,
        invalid: Invalid,
    },
    Corrupt {
        offset: u64,
        reason: CorruptReason,
        records_after: u64,
    },
}

impl SegmentDamage {
    /// This damage as the log's, in segment `segment_index` named `segment`.
    /// A corruption also counts the records of every later segment
    /// (`later_records`, read only then), since a repair that truncates here
    /// drops those too.
    fn in_log(
        self,
        segment_index: usize,
        segment: &str,
        later_records: impl FnOnce() -> u64,
    ) -> Damage {
        match self {
            SegmentDamage::Torn {
                offset,
                garbage_end,
                invalid,
            } => Damage::TornTail {
                segment: segment.to_owned(),
                offset,
                garbage_end,
                invalid,
            },
            SegmentDamage::Corrupt {
                offset,
                reason,
                records_after,
            } => Damage::Corrupt {
                segment_index,
                segment: segment.to_owned(),
                offset,
                reason,
                records_after: records_after + later_records(),
            },
        }
    }
}

struct SegmentOutcome {
    records: u64,
    end_offset: u64,
    damage: Option<SegmentDamage>,
}

/// Where the valid records at the start of a segment's body end.
struct ValidEnd {
    /// Offset of the first bytes that are not the expected next record.
    offset: usize,
    /// The LSN those bytes would have had to carry.
    next_lsn: Lsn,
    /// Why they are not that record.
    invalid: Invalid,
}

/// Scans one segment: its header and where it starts (the table's last
/// rows), its valid records, then what follows them (the other rows).
fn scan_segment(
    bytes: &[u8],
    first: Lsn,
    expected: Lsn,
    is_last: bool,
    payload_len_max: u32,
) -> SegmentOutcome {
    let header = match segment::check_header(bytes, first) {
        Ok(header) if first == expected => header,
        Ok(_) => {
            let gap = CorruptReason::LsnGap {
                expected,
                found: first,
            };
            return refused_at_header(bytes, first, gap, payload_len_max);
        }
        Err(bad) => {
            let reason = CorruptReason::SegmentHeader(bad);
            return refused_at_header(bytes, first, reason, payload_len_max);
        }
    };
    let end = valid_prefix(bytes, first, payload_len_max);
    let records = end.next_lsn.0 - first.0;
    let end_offset = end.offset as u64;
    let damage = classify_end(bytes, end, header.recycled, is_last, payload_len_max);
    SegmentOutcome {
        records,
        end_offset,
        damage,
    }
}

/// A segment refused at its header (bad, or not starting at the LSN the log
/// expects) contributes no records; a repair would drop every record it
/// holds, which are counted for the report.
fn refused_at_header(
    bytes: &[u8],
    first: Lsn,
    reason: CorruptReason,
    payload_len_max: u32,
) -> SegmentOutcome {
    let records_after = count_records_in(bytes, first, payload_len_max);
    SegmentOutcome {
        records: 0,
        end_offset: 0,
        damage: Some(SegmentDamage::Corrupt {
            offset: 0,
            reason,
            records_after,
        }),
    }
}

/// Decodes records from the end of the header while each is the next LSN;
/// the first bytes that are not are where the table's verdict is decided.
fn valid_prefix(bytes: &[u8], first: Lsn, payload_len_max: u32) -> ValidEnd {
    let mut offset = SEGMENT_HEADER_LEN;
    let mut lsn = first;
    loop {
        match record::decode(&bytes[offset..], lsn, payload_len_max) {
            Ok((_, framed)) => {
                offset += framed;
                lsn = lsn.next();
            }
            Err(invalid) => {
                return ValidEnd {
                    offset,
                    next_lsn: lsn,
                    invalid,
                };
            }
        }
    }
}

/// Where this life's bytes after `end_offset` must be zeros: to the end of
/// the file, or of the page holding the end in a recycled segment (stale
/// bytes of an earlier life follow).
fn zeros_end(len: usize, end_offset: u64, recycled: bool) -> usize {
    if recycled {
        (end_offset.next_multiple_of(PAGE_LEN) as usize).min(len)
    } else {
        len
    }
}

/// The decision table's rows for what follows the valid records: zeros (a
/// clean end), damage in a sealed segment, a valid record after damage, or
/// a torn tail of the last segment.
fn classify_end(
    bytes: &[u8],
    end: ValidEnd,
    recycled: bool,
    is_last: bool,
    payload_len_max: u32,
) -> Option<SegmentDamage> {
    let ValidEnd {
        offset,
        next_lsn: lsn,
        invalid,
    } = end;
    let end_offset = offset as u64;
    let rest = &bytes[offset..zeros_end(bytes.len(), end_offset, recycled)];
    match rest.iter().rposition(|&byte| byte != 0) {
        None if !recycled => None,
        Some(_) if !is_last => {
            let (records_after, _) = valid_records_after(bytes, offset, lsn, payload_len_max);
            Some(SegmentDamage::Corrupt {
                offset: end_offset,
                reason: CorruptReason::DamageInSealedSegment { invalid },
                records_after,
            })
        }
        // The end of this life's bytes (a recycled segment's, or torn
        // garbage in the last segment): refused if a record of this life
        // follows, else clean or a torn tail.
        last_non_zero => match valid_records_after(bytes, offset, lsn, payload_len_max) {
            (0, _) => last_non_zero.map(|last_non_zero| SegmentDamage::Torn {
                offset: end_offset,
                garbage_end: (offset + last_non_zero + 1) as u64,
                invalid,
            }),
            (records_after, next_valid_offset) => Some(SegmentDamage::Corrupt {
                offset: end_offset,
                reason: CorruptReason::ValidRecordAfterDamage {
                    invalid,
                    next_valid_offset,
                },
                records_after,
            }),
        },
    }
}

/// Counts well-formed records with an LSN of at least `expected` at aligned
/// offsets after the damage at `damaged`; returns the count and the offset of
/// the first one. Well-formed older records (stale, in a recycled segment)
/// are stepped over whole: bytes of this life inside one would have broken
/// its checksum.
fn valid_records_after(
    bytes: &[u8],
    damaged: usize,
    expected: Lsn,
    payload_len_max: u32,
) -> (u64, u64) {
    let mut count = 0;
    let mut first_offset = 0;
    let mut offset = damaged + RECORD_ALIGN;
    while offset + record::RECORD_HEADER_LEN <= bytes.len() {
        match record::decode_any(&bytes[offset..], payload_len_max) {
            Ok((found, framed)) if found.lsn >= expected => {
                if count == 0 {
                    first_offset = offset as u64;
                }
                count += 1;
                offset += framed;
            }
            Ok((_, framed)) => offset += framed,
            Err(_) => offset += RECORD_ALIGN,
        }
    }
    (count, first_offset)
}

fn count_records_in(bytes: &[u8], first: Lsn, payload_len_max: u32) -> u64 {
    if bytes.len() <= SEGMENT_HEADER_LEN {
        return 0;
    }
    let mut offset = SEGMENT_HEADER_LEN;
    let mut lsn = first;
    while let Ok((_, framed)) = record::decode(&bytes[offset..], lsn, payload_len_max) {
        offset += framed;
        lsn = lsn.next();
    }
    lsn.0 - first.0
}

fn count_later_records(
    storage: &dyn Storage,
    later: &[(Lsn, String)],
    payload_len_max: u32,
) -> u64 {
    later
        .iter()
        .filter_map(|(first, name)| {
            let bytes = storage.read(name).ok()?;
            Some(count_records_in(&bytes, *first, payload_len_max))
        })
        .sum()
}
