//! Record framing: the bytes of one log record, and nothing else.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32 (crc32fast) of bytes 4..24 and the payload
//!      4     4  payload length in bytes (u32 LE)
//!      8     8  lsn (u64 LE), exactly one more than the previous record's
//!     16     1  kind (non-zero, chosen by the log's owner)
//!     17     7  reserved, zero
//!     24     n  payload
//!   24+n     p  zero padding so the next record starts 8-byte aligned
//! ```
//!
//! A record is valid only if its length is within the configured bound, the
//! reserved bytes are zero, the kind is non-zero, the CRC matches and the LSN
//! is the one expected next. The LSN check is what keeps stale bytes (from an
//! earlier life of a file, or a torn write) from ever decoding as a record.
//! This module knows nothing of files or segments.

use std::fmt;

/// Bytes of the fixed record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// Records start at multiples of this many bytes.
pub const RECORD_ALIGN: usize = 8;

/// Log sequence number: the position of a record in the log, starting at 1.
/// `Lsn(0)` (the default) means "no record".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The first LSN of a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0.checked_add(1).expect("lsn overflow"))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The owner-chosen kind of a record. Zero is reserved so that zeroed bytes
/// can never be a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordKind(pub u8);

/// A record as read back from the log, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: Lsn,
    pub kind: RecordKind,
    pub payload: &'a [u8],
}

/// Bytes a record with `payload_len` bytes of payload occupies, padding included.
pub fn framed_len(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len).next_multiple_of(RECORD_ALIGN)
}

/// Appends the framed record to `target`.
pub fn encode(target: &mut Vec<u8>, lsn: Lsn, kind: RecordKind, payload: &[u8]) {
    assert!(kind.0 != 0, "record kind 0 is reserved");
    let length = u32::try_from(payload.len()).expect("payload length checked by caller");
    let start = target.len();
    target.extend_from_slice(&[0; 4]);
    target.extend_from_slice(&length.to_le_bytes());
    target.extend_from_slice(&lsn.0.to_le_bytes());
    target.push(kind.0);
    target.extend_from_slice(&[0; 7]);
    target.extend_from_slice(payload);
    let crc = checksum(&target[start + 4..]);
    target[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    target.resize(start + framed_len(payload.len()), 0);
    debug_assert_eq!((target.len() - start) % RECORD_ALIGN, 0);
}

fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// Why the bytes at an offset are not the expected next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes remain than a header needs.
    ShortHeader,
    /// The header is all zeros: never-written space.
    Zeroed,
    /// The length field exceeds the bound or the space left.
    BadLength { len: u32 },
    /// Reserved bytes are non-zero or the kind is zero.
    BadHeader,
    /// The checksum does not match.
    BadChecksum,
    /// A well-formed record with another LSN than expected.
    WrongLsn { found: Lsn },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::ShortHeader => write!(f, "too few bytes left for a record header"),
            Invalid::Zeroed => write!(f, "zeroed header"),
            Invalid::BadLength { len } => write!(f, "record length {len} out of bounds"),
            Invalid::BadHeader => write!(f, "malformed record header"),
            Invalid::BadChecksum => write!(f, "checksum mismatch"),
            Invalid::WrongLsn { found } => write!(f, "unexpected lsn {found}"),
        }
    }
}

/// Decodes the record at the start of `bytes`, which must carry `expected`.
/// Returns the record and the number of bytes it occupies.
pub fn decode(
    bytes: &[u8],
    expected: Lsn,
    payload_len_max: u32,
) -> Result<(RecordRef<'_>, usize), Invalid> {
    let (record, framed) = decode_any(bytes, payload_len_max)?;
    if record.lsn != expected {
        return Err(Invalid::WrongLsn { found: record.lsn });
    }
    Ok((record, framed))
}

/// Decodes a well-formed record at the start of `bytes`, whatever its LSN.
pub fn decode_any(bytes: &[u8], payload_len_max: u32) -> Result<(RecordRef<'_>, usize), Invalid> {
    let Some(header) = bytes.get(..RECORD_HEADER_LEN) else {
        return Err(Invalid::ShortHeader);
    };
    if header.iter().all(|&byte| byte == 0) {
        return Err(Invalid::Zeroed);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let framed = framed_len(len as usize);
    if len > payload_len_max || framed > bytes.len() {
        return Err(Invalid::BadLength { len });
    }
    let kind = header[16];
    if kind == 0 || header[17..24].iter().any(|&byte| byte != 0) {
        return Err(Invalid::BadHeader);
    }
    let stored = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let end = RECORD_HEADER_LEN + len as usize;
    if checksum(&bytes[4..end]) != stored {
        return Err(Invalid::BadChecksum);
    }
    let lsn = Lsn(u64::from_le_bytes(
        header[8..16].try_into().expect("8 bytes"),
    ));
    let record = RecordRef {
        lsn,
        kind: RecordKind(kind),
        payload: &bytes[RECORD_HEADER_LEN..end],
    };
    Ok((record, framed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            lsn in 1u64..u64::MAX,
            kind in 1u8..=255,
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = Vec::new();
            encode(&mut bytes, Lsn(lsn), RecordKind(kind), &payload);
            prop_assert_eq!(bytes.len(), framed_len(payload.len()));
            prop_assert_eq!(bytes.len() % RECORD_ALIGN, 0);
            let (record, framed) = decode(&bytes, Lsn(lsn), 1024).unwrap();
            prop_assert_eq!(framed, bytes.len());
            prop_assert_eq!(record.kind, RecordKind(kind));
            prop_assert_eq!(record.payload, &payload[..]);
        }

        #[test]
        fn any_single_flipped_bit_in_the_checked_bytes_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..100),
            bit in 0usize..(8 * 124),
        ) {
            let mut bytes = Vec::new();
            encode(&mut bytes, Lsn(7), RecordKind(3), &payload);
            let checked = RECORD_HEADER_LEN + payload.len();
            let bit = bit % (8 * checked);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bytes, Lsn(7), 1024).is_err());
        }
    }

    #[test]
    fn a_record_with_another_lsn_is_rejected() {
        let mut bytes = Vec::new();
        encode(&mut bytes, Lsn(5), RecordKind(1), b"stale");
        assert_eq!(
            decode(&bytes, Lsn(6), 1024).unwrap_err(),
            Invalid::WrongLsn { found: Lsn(5) }
        );
    }

    #[test]
    fn zeroes_and_oversized_lengths_are_rejected() {
        assert_eq!(decode(&[0; 64], Lsn(1), 1024).unwrap_err(), Invalid::Zeroed);
        let mut bytes = Vec::new();
        encode(&mut bytes, Lsn(1), RecordKind(1), &[9; 100]);
        assert_eq!(
            decode(&bytes, Lsn(1), 99).unwrap_err(),
            Invalid::BadLength { len: 100 }
        );
        assert_eq!(
            decode(&bytes[..60], Lsn(1), 1024).unwrap_err(),
            Invalid::BadLength { len: 100 }
        );
    }
}
