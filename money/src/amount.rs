//! Money: integer minor units, checked arithmetic only, never floats.
//! There is no `Add` or `Sub`: every sum says what happens on overflow.

use std::fmt;

/// An amount of money in minor units (paise for INR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Minor units per major unit for every currency minipay deploys with.
pub const MINOR_PER_MAJOR: u64 = 100;

/// Why a decimal string is not an amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountParseError {
    #[error("amount is empty")]
    Empty,
    #[error(
        "amount {0:?} is not a plain decimal number (digits, optionally '.' and up to 2 decimals)"
    )]
    NotDecimal(String),
    #[error("amount {0:?} has more than 2 decimal places")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Amount {
    /// Parses a decimal string in major units ("12.50" → 1250 minor units),
    /// exactly: no floats, no rounding, no sign, at most 2 decimals.
    pub fn parse_major(text: &str) -> Result<Amount, AmountParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AmountParseError::Empty);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.ends_with('.')) {
            return Err(AmountParseError::NotDecimal(text.to_owned()));
        }
        if fraction.len() > 2 {
            return Err(AmountParseError::TooPrecise(text.to_owned()));
        }
        let overflow = || AmountParseError::Overflow(text.to_owned());
        let whole: u64 = whole.parse().map_err(|_| overflow())?;
        let cents: u64 = format!("{fraction:0<2}").parse().map_err(|_| overflow())?;
        whole
            .checked_mul(MINOR_PER_MAJOR)
            .and_then(|minor| minor.checked_add(cents))
            .map(Amount)
            .ok_or_else(overflow)
    }
}

/// Shows major units with thousands separators: `1,000.50`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = (self.0 / MINOR_PER_MAJOR).to_string();
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (index, digit) in whole.chars().enumerate() {
            if index > 0 && (whole.len() - index).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        write!(f, "{grouped}.{:02}", self.0 % MINOR_PER_MAJOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_strings_parse_exactly() {
        assert_eq!(Amount::parse_major("12.50"), Ok(Amount(1250)));
        assert_eq!(Amount::parse_major("12.5"), Ok(Amount(1250)));
        assert_eq!(Amount::parse_major("1000"), Ok(Amount(100_000)));
        assert_eq!(Amount::parse_major("0.01"), Ok(Amount(1)));
        for bad in [
            "", "-1", "12.345", "1e3", "1.", ".5", "12,50", "NaN", "1 000",
        ] {
            assert!(Amount::parse_major(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(matches!(
            Amount::parse_major("184467440737095516.16"),
            Err(AmountParseError::Overflow(_))
        ));
    }

    #[test]
    fn amounts_display_in_major_units_with_separators() {
        assert_eq!(Amount(100_000).to_string(), "1,000.00");
        assert_eq!(Amount(95_000).to_string(), "950.00");
        assert_eq!(Amount(5).to_string(), "0.05");
        assert_eq!(Amount(12_345_678_901).to_string(), "123,456,789.01");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(minor in 0u64..u64::MAX / 2) {
            let shown = Amount(minor).to_string().replace(',', "");
            prop_assert_eq!(Amount::parse_major(&shown), Ok(Amount(minor)));
        }
    }
}
