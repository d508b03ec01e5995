//! A table's data block: 4 KiB of whole entries, sorted by key, behind a
//! checksum.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32 of bytes 4..4096
//!      4     2  entry count (u16 LE)
//!      6     2  bytes of entries (u16 LE)
//!      8     …  entries: key length u8, value length u16, time u64, key, value
//!      …        zero to the end of the block
//! ```

use super::{BLOCK_LEN, Entry, KEY_LEN_MAX, VALUE_LEN_MAX};

/// Bytes before a block's first entry.
pub(super) const BLOCK_HEADER_LEN: usize = 8;
/// Bytes of an entry before its key.
const ENTRY_HEADER_LEN: usize = 11;

/// The bytes an entry takes in a block.
pub(super) fn entry_len(key: &[u8], value: &[u8]) -> usize {
    ENTRY_HEADER_LEN + key.len() + value.len()
}

/// The largest entry fits an otherwise empty block.
const _: () =
    assert!(BLOCK_HEADER_LEN + ENTRY_HEADER_LEN + KEY_LEN_MAX + VALUE_LEN_MAX <= BLOCK_LEN);

/// A block being filled.
pub(super) struct BlockBuilder {
    bytes: Vec<u8>,
    count: u16,
}

impl BlockBuilder {
    pub(super) fn new() -> BlockBuilder {
        BlockBuilder {
            bytes: Vec::with_capacity(BLOCK_LEN),
            count: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether an entry of this size still fits.
    pub(super) fn fits(&self, key: &[u8], value: &[u8]) -> bool {
        BLOCK_HEADER_LEN + self.bytes.len() + entry_len(key, value) <= BLOCK_LEN
    }

    pub(super) fn push(&mut self, key: &[u8], time: u64, value: &[u8]) {
        debug_assert!(self.fits(key, value));
        self.bytes.push(key.len() as u8);
        self.bytes
            .extend_from_slice(&(value.len() as u16).to_le_bytes());
        self.bytes.extend_from_slice(&time.to_le_bytes());
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.count += 1;
    }

    /// Appends the finished block (exactly [`BLOCK_LEN`] bytes) to `out`
    /// and empties the builder.
    pub(super) fn finish_into(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&(self.bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.bytes);
        out.resize(start + BLOCK_LEN, 0);
        let crc = crc32fast::hash(&out[start + 4..]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        self.bytes.clear();
        self.count = 0;
    }
}

/// Why a block's bytes are not a block; with the offset inside the block.
pub(super) type BlockDamage = (usize, &'static str);

/// A block's entries, checked: the checksum, the counts and every entry's
/// bounds and order. Borrowed from the block's bytes.
pub(super) fn entries(block: &[u8]) -> Result<Vec<Entry<'_>>, BlockDamage> {
    let (count, body) = checked(block)?;
    let used = body.len();
    let mut found = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let entry = parse_entry(body, at).map_err(|reason| (BLOCK_HEADER_LEN + at, reason))?;
        if found
            .last()
            .is_some_and(|last: &Entry<'_>| last.key >= entry.key)
        {
            return Err((BLOCK_HEADER_LEN + at, "keys out of order in a block"));
        }
        at += entry_len(entry.key, entry.value);
        found.push(entry);
    }
    if at != used {
        return Err((
            BLOCK_HEADER_LEN + at,
            "block length does not match its entries",
        ));
    }
    Ok(found)
}

/// The entry for `key` in a block, read in place: the checksum and the
/// counts are checked, and each entry's bounds up to the one sought (keys
/// ascend, so the scan stops at the first key not below it). A lookup's
/// path; a scan ([`entries`]) checks the order too.
pub(super) fn find<'a>(block: &'a [u8], key: &[u8]) -> Result<Option<Entry<'a>>, BlockDamage> {
    let (count, body) = checked(block)?;
    let mut at = 0;
    for _ in 0..count {
        let entry = parse_entry(body, at).map_err(|reason| (BLOCK_HEADER_LEN + at, reason))?;
        match entry.key.cmp(key) {
            std::cmp::Ordering::Less => at += entry_len(entry.key, entry.value),
            std::cmp::Ordering::Equal => return Ok(Some(entry)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// A block's checksum and counts checked: its entry count and the bytes
/// of its entries.
fn checked(block: &[u8]) -> Result<(usize, &[u8]), BlockDamage> {
    debug_assert_eq!(block.len(), BLOCK_LEN);
    let stored = u32::from_le_bytes(block[0..4].try_into().expect("4 bytes"));
    if crc32fast::hash(&block[4..]) != stored {
        return Err((0, "block checksum mismatch"));
    }
    let count = u16::from_le_bytes([block[4], block[5]]) as usize;
    let used = u16::from_le_bytes([block[6], block[7]]) as usize;
    if count == 0 || BLOCK_HEADER_LEN + used > BLOCK_LEN {
        return Err((4, "block entry count or length out of range"));
    }
    Ok((count, &block[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + used]))
}

fn parse_entry(body: &[u8], at: usize) -> Result<Entry<'_>, &'static str> {
    let header = body
        .get(at..at + ENTRY_HEADER_LEN)
        .ok_or("entry header past the block's entries")?;
    let key_len = header[0] as usize;
    let value_len = u16::from_le_bytes([header[1], header[2]]) as usize;
    if key_len == 0 || key_len > KEY_LEN_MAX || value_len > VALUE_LEN_MAX {
        return Err("entry key or value length out of range");
    }
    let time = u64::from_le_bytes(header[3..11].try_into().expect("8 bytes"));
    let key_at = at + ENTRY_HEADER_LEN;
    let rest = body
        .get(key_at..key_at + key_len + value_len)
        .ok_or("entry past the block's entries")?;
    let (key, value) = rest.split_at(key_len);
    Ok(Entry { key, time, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(entries: &[(&[u8], u64, &[u8])]) -> Vec<u8> {
        let mut builder = BlockBuilder::new();
        for (key, time, value) in entries {
            assert!(builder.fits(key, value));
            builder.push(key, *time, value);
        }
        let mut out = Vec::new();
        builder.finish_into(&mut out);
        out
    }

    #[test]
    fn a_block_reads_back_its_entries() {
        let block = block_of(&[(b"a", 1, b"one"), (b"b", 2, b""), (b"c", 3, b"three")]);
        assert_eq!(block.len(), BLOCK_LEN);
        let read = entries(&block).unwrap();
        let keys: Vec<_> = read.iter().map(|entry| (entry.key, entry.time)).collect();
        assert_eq!(keys, vec![(&b"a"[..], 1), (&b"b"[..], 2), (&b"c"[..], 3)]);
        assert_eq!(read[2].value, b"three");
    }

    #[test]
    fn every_flipped_byte_of_a_block_is_refused() {
        let block = block_of(&[(b"key", 7, b"value"), (b"later", 8, b"v")]);
        for at in 0..BLOCK_LEN {
            let mut damaged = block.clone();
            damaged[at] ^= 0x01;
            assert!(entries(&damaged).is_err(), "flip at {at} went unseen");
        }
    }

    #[test]
    fn the_largest_entry_fills_one_block() {
        let key = [9u8; KEY_LEN_MAX];
        let value = vec![3u8; VALUE_LEN_MAX];
        let block = block_of(&[(&key, u64::MAX, &value)]);
        let read = entries(&block).unwrap();
        assert_eq!(
            (read[0].key, read[0].value.len()),
            (&key[..], VALUE_LEN_MAX)
        );
    }
}
