//! Segment files: naming and the fixed header at the start of each.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "MPAYWAL\0"
//!      8     4  format version (u32 LE): 2 (1 is still read)
//!     12     4  flags (u32 LE): bit 0 = recycled; zero in version 1
//!     16     8  first lsn of the segment (u64 LE), equal to the file name's
//!     24     4  reserved, zero
//!     28     4  crc32 of bytes 0..28
//!     32        first record
//! ```
//!
//! A segment is named `<first lsn, 20 digits>.wal` so names sort in log order.
//! Spare segments being zero-filled ahead of use are named `spare-<n>.tmp`,
//! checkpointed segments kept for reuse `recycled-<n>.tmp`; recovery never
//! reads either.
//!
//! A *recycled* segment held an earlier part of the log: after its last
//! record (and the zeros to the end of that record's page) come stale bytes
//! of its earlier life, not zeros. See docs/wal-format.md.

use crate::record::Lsn;

pub const SEGMENT_MAGIC: [u8; 8] = *b"MPAYWAL\0";
pub const SEGMENT_VERSION: u32 = 2;
/// The version written before segments were recycled: no flags.
const SEGMENT_VERSION_1: u32 = 1;
/// Header flag: the file is a reused segment with stale bytes after its end.
const FLAG_RECYCLED: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const SEGMENT_SUFFIX: &str = ".wal";
pub const SPARE_PREFIX: &str = "spare-";
pub const RECYCLED_PREFIX: &str = "recycled-";
/// Writes are padded to whole pages of this many bytes, so the bytes from
/// the end of the last record to the end of its page are zeros.
pub const PAGE_LEN: u64 = 4096;
pub const TEMP_SUFFIX: &str = ".tmp";

/// The file name of the segment whose first record is `first`.
pub fn segment_name(first: Lsn) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.0)
}

/// The first LSN encoded in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// The counter in the name of a segment kept for reuse, if it is one.
pub fn parse_recycled_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(RECYCLED_PREFIX)?
        .strip_suffix(TEMP_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header bytes of a segment starting at `first`.
pub fn encode_header(first: Lsn, recycled: bool) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    let flags = if recycled { FLAG_RECYCLED } else { 0 };
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header[16..24].copy_from_slice(&first.0.to_le_bytes());
    let crc = crc32fast::hash(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a segment header is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadHeader {
    TooShort,
    BadMagic,
    UnsupportedVersion(u32),
    UnsupportedFlags(u32),
    BadChecksum,
    NameMismatch { header: Lsn },
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadHeader::TooShort => write!(f, "file shorter than a segment header"),
            BadHeader::BadMagic => write!(f, "not a minipay WAL segment (bad magic)"),
            BadHeader::UnsupportedVersion(version) => {
                write!(f, "unsupported segment format version {version}")
            }
            BadHeader::UnsupportedFlags(flags) => {
                write!(f, "unsupported segment flags {flags:#x}")
            }
            BadHeader::BadChecksum => write!(f, "segment header checksum mismatch"),
            BadHeader::NameMismatch { header } => {
                write!(f, "header says first lsn {header}, file name disagrees")
            }
        }
    }
}

/// What a valid segment header says beyond its first LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Stale bytes of an earlier life may follow the segment's last page.
    pub recycled: bool,
}

/// Checks the header of a segment whose name says it starts at `first`.
pub fn check_header(bytes: &[u8], first: Lsn) -> Result<HeaderInfo, BadHeader> {
    let Some(header) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Err(BadHeader::TooShort);
    };
    if header[0..8] != SEGMENT_MAGIC {
        return Err(BadHeader::BadMagic);
    }
    let stored = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[0..28]) != stored {
        return Err(BadHeader::BadChecksum);
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_VERSION && version != SEGMENT_VERSION_1 {
        return Err(BadHeader::UnsupportedVersion(version));
    }
    let flags = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    let known = if version == SEGMENT_VERSION_1 {
        0
    } else {
        FLAG_RECYCLED
    };
    if flags & !known != 0 {
        return Err(BadHeader::UnsupportedFlags(flags));
    }
    let header_first = Lsn(u64::from_le_bytes(
        header[16..24].try_into().expect("8 bytes"),
    ));
    if header_first != first {
        return Err(BadHeader::NameMismatch {
            header: header_first,
        });
    }
    Ok(HeaderInfo {
        recycled: flags & FLAG_RECYCLED != 0,
    })
}

/// The first page of a segment: its header, then zeros to the page end
/// (or to the end of a segment shorter than a page).
pub fn first_page(first: Lsn, recycled: bool, segment_size: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_LEN.min(segment_size) as usize];
    page[..SEGMENT_HEADER_LEN].copy_from_slice(&encode_header(first, recycled));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_parse_back() {
        let names: Vec<String> = [Lsn(1), Lsn(9), Lsn(10), Lsn(12345678901)]
            .into_iter()
            .map(segment_name)
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(parse_segment_name(&names[3]), Some(Lsn(12345678901)));
        assert_eq!(parse_segment_name("123.wal"), None);
        assert_eq!(parse_segment_name("spare-1.tmp"), None);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_header(Lsn(42), false);
        let fresh = HeaderInfo { recycled: false };
        assert_eq!(check_header(&header, Lsn(42)), Ok(fresh));
        assert_eq!(
            check_header(&encode_header(Lsn(42), true), Lsn(42)),
            Ok(HeaderInfo { recycled: true })
        );
        assert_eq!(
            check_header(&header, Lsn(41)),
            Err(BadHeader::NameMismatch { header: Lsn(42) })
        );
        let mut damaged = header;
        damaged[17] ^= 1;
        assert_eq!(check_header(&damaged, Lsn(42)), Err(BadHeader::BadChecksum));
        assert_eq!(
            check_header(&header[..10], Lsn(42)),
            Err(BadHeader::TooShort)
        );
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    fn with(version: u32, flags: u32) -> [u8; SEGMENT_HEADER_LEN] {
        let mut header = encode_header(Lsn(7), false);
        header[8..12].copy_from_slice(&version.to_le_bytes());
        header[12..16].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&header[0..28]);
        header[28..32].copy_from_slice(&crc.to_le_bytes());
        header
    }

    #[test]
    fn version_one_headers_are_read_and_unknown_flags_refused() {
        assert_eq!(
            check_header(&with(1, 0), Lsn(7)),
            Ok(HeaderInfo { recycled: false })
        );
        assert_eq!(
            check_header(&with(1, FLAG_RECYCLED), Lsn(7)),
            Err(BadHeader::UnsupportedFlags(FLAG_RECYCLED))
        );
        assert_eq!(
            check_header(&with(2, 2), Lsn(7)),
            Err(BadHeader::UnsupportedFlags(2))
        );
        assert_eq!(
            check_header(&with(3, 0), Lsn(7)),
            Err(BadHeader::UnsupportedVersion(3))
        );
    }
}
