//! A table's bloom filter: says "absent" for most keys a table does not
//! hold, so a lookup reads no block of that table; never says "absent" for
//! a key it holds. Ten bits and seven hashes per key: about 1% false
//! positives.
//!
//! Byte map (little-endian): bit count u64, hash count u8, the bits (bit i
//! is bit `i % 8` of byte `i / 8`), crc32 of everything before. The bit
//! positions come from double hashing, `h1 + i·h2` mod the bit count, where
//! h1 and h2 are crc32 of the key from two initial values; the format
//! version of the table fixes all of it.

/// Bits per key the filter is sized for.
pub const BITS_PER_KEY: u64 = 10;
/// Hashes per key (about `BITS_PER_KEY · ln 2`).
pub const HASHES: u8 = 7;
/// The largest filter accepted when reading (bits): 2^32, enough for 400 M keys.
pub const BITS_MAX: u64 = 1 << 32;

/// Why bytes are not a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the filter is shorter than its header and checksum")]
    Truncated,
    #[error(
        "the filter's bit count {bits} is zero, above {BITS_MAX}, or does not match its length"
    )]
    BadSize { bits: u64 },
    #[error("the filter's hash count {hashes} is not {HASHES}")]
    BadHashCount { hashes: u8 },
    #[error("the filter's checksum does not match")]
    Checksum,
}

/// A filter being built, or one read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    bits: u64,
    bytes: Vec<u8>,
}

/// A key's two hashes, computed once per lookup and used for every
/// table's filter.
#[derive(Clone, Copy, Debug)]
pub struct KeyHashes {
    first: u64,
    step: u64,
}

impl KeyHashes {
    pub fn of(key: &[u8]) -> KeyHashes {
        let first = crc32fast::hash(key);
        let mut second = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
        second.update(key);
        // An odd step visits distinct positions for every hash of one key.
        KeyHashes {
            first: u64::from(first),
            step: u64::from(second.finalize()) | 1,
        }
    }

    /// The `HASHES` bit positions in a filter of `bits` bits.
    fn positions(self, bits: u64) -> impl Iterator<Item = u64> {
        assert!(bits > 0);
        (0..u64::from(HASHES))
            .map(move |index| self.first.wrapping_add(index.wrapping_mul(self.step)) % bits)
    }
}

impl Filter {
    /// An empty filter sized for `keys` keys (at least 64 bits).
    pub fn with_capacity(keys: u64) -> Filter {
        let bits = keys.saturating_mul(BITS_PER_KEY).clamp(64, BITS_MAX);
        Filter {
            bits,
            bytes: vec![0; bits.div_ceil(8) as usize],
        }
    }

    pub fn insert(&mut self, key: &[u8]) {
        for position in KeyHashes::of(key).positions(self.bits) {
            self.bytes[(position / 8) as usize] |= 1 << (position % 8);
        }
    }

    /// `false`: the key was never inserted. `true`: it may have been.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        bits_may_contain(self.bits, &self.bytes, KeyHashes::of(key))
    }

    /// The filter's bytes, checksum last.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.bytes.len());
        out.extend_from_slice(&self.bits.to_le_bytes());
        out.push(HASHES);
        out.extend_from_slice(&self.bytes);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a filter back, checking its shape and checksum.
    pub fn decode(encoded: &[u8]) -> Result<Filter, FilterError> {
        let bits = check(encoded)?;
        Ok(Filter {
            bits,
            bytes: bits_of(encoded).to_vec(),
        })
    }
}

/// Checks an encoded filter's shape and checksum without copying it;
/// returns its bit count, for [`encoded_may_contain`].
pub fn check(encoded: &[u8]) -> Result<u64, FilterError> {
    if encoded.len() < 13 {
        return Err(FilterError::Truncated);
    }
    let (body, crc) = encoded.split_at(encoded.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(FilterError::Checksum);
    }
    let bits = u64::from_le_bytes(body[..8].try_into().expect("eight bytes"));
    let hashes = body[8];
    if bits == 0 || bits > BITS_MAX || bits.div_ceil(8) != bits_of(encoded).len() as u64 {
        return Err(FilterError::BadSize { bits });
    }
    if hashes != HASHES {
        return Err(FilterError::BadHashCount { hashes });
    }
    Ok(bits)
}

/// The bit bytes of an encoded filter (between its header and checksum).
fn bits_of(encoded: &[u8]) -> &[u8] {
    &encoded[9..encoded.len() - 4]
}

/// [`Filter::may_contain`] over an encoded filter that passed [`check`]
/// with `bits` bits, read in place (a table's memory map).
pub fn encoded_may_contain(encoded: &[u8], bits: u64, key: KeyHashes) -> bool {
    bits_may_contain(bits, bits_of(encoded), key)
}

fn bits_may_contain(bits: u64, bytes: &[u8], key: KeyHashes) -> bool {
    key.positions(bits)
        .all(|position| bytes[(position / 8) as usize] & (1 << (position % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(index: u64) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&index.to_le_bytes());
        key[8..].copy_from_slice(&index.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        key
    }

    #[test]
    fn about_one_percent_of_absent_keys_pass_and_no_present_key_fails() {
        let mut filter = Filter::with_capacity(10_000);
        for index in 0..10_000 {
            filter.insert(&key(index));
        }
        assert!((0..10_000).all(|index| filter.may_contain(&key(index))));
        let passed = (10_000..110_000)
            .filter(|index| filter.may_contain(&key(*index)))
            .count();
        // 1% expected; 2% bounds a filter that is not doing its job.
        assert!(passed < 2_000, "{passed} of 100,000 absent keys passed");
    }

    #[test]
    fn every_truncation_and_flipped_byte_of_a_filter_is_refused() {
        let mut filter = Filter::with_capacity(20);
        for index in 0..20 {
            filter.insert(&key(index));
        }
        let encoded = filter.encode();
        assert_eq!(Filter::decode(&encoded), Ok(filter));
        for len in 0..encoded.len() {
            assert!(Filter::decode(&encoded[..len]).is_err(), "cut at {len}");
        }
        for at in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[at] ^= 0x40;
            assert!(Filter::decode(&damaged).is_err(), "byte {at} flipped");
        }
    }

    proptest! {
        #[test]
        fn an_inserted_key_is_always_found_after_a_round_trip(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 1..200)
        ) {
            let mut filter = Filter::with_capacity(keys.len() as u64);
            for key in &keys {
                filter.insert(key);
            }
            let filter = Filter::decode(&filter.encode()).unwrap();
            for key in &keys {
                prop_assert!(filter.may_contain(key));
            }
        }
    }
}
