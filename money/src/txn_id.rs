//! Transaction ids: a UUID chosen by the paying client, the key of
//! idempotency at the gateway and of a prepared transaction at a bank.

use std::fmt;

use crate::Malformed;

/// A transaction id: a UUID's 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub [u8; 16]);

impl TxnId {
    /// Parses the canonical hyphenated form (`8-4-4-4-12` hex digits, any case).
    pub fn parse(text: &str) -> Result<TxnId, Malformed> {
        let bytes = text.as_bytes();
        let hyphens = [8, 13, 18, 23];
        if bytes.len() != 36 || hyphens.iter().any(|&index| bytes[index] != b'-') {
            return Err(Malformed::TxnId);
        }
        let digits: Vec<u8> = bytes.iter().copied().filter(|&byte| byte != b'-').collect();
        if digits.len() != 32 {
            return Err(Malformed::TxnId);
        }
        let mut id = [0u8; 16];
        for (index, pair) in digits.chunks(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(Malformed::TxnId)?;
            let low = hex_value(pair[1]).ok_or(Malformed::TxnId)?;
            id[index] = high << 4 | low;
        }
        Ok(TxnId(id))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uuids_parse_in_canonical_form_only() {
        let text = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        let id = TxnId::parse(text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(TxnId::parse(&text.to_uppercase()).unwrap(), id);
        for bad in [
            "",
            "6f9619ff8b86d011b42d00c04fc964ff",
            "6f9619ff-8b86-d011-b42d-00c04fc964fg",
            "6f9619ff-8b86-d011-b42d00c04fc964ff-",
        ] {
            assert_eq!(TxnId::parse(bad), Err(Malformed::TxnId), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn txn_ids_round_trip_through_text(bytes in any::<[u8; 16]>()) {
            prop_assert_eq!(TxnId::parse(&TxnId(bytes).to_string()), Ok(TxnId(bytes)));
        }
    }
}
