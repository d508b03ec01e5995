//! The bench's random choices: for each payment slot, its payer, payee and
//! amount, drawn from a generator seeded by the run's seed and the slot's
//! number alone. The same `--seed` therefore makes the same payments slot
//! for slot, whichever client happens to send a slot and whenever.
//!
//! It knows nothing of connections or time. Accounts are indices into the
//! bench's destination list, whose first `payers` entries are the bench
//! users' own accounts (the only ones that can pay). Invariants: a payer
//! never pays itself; an amount is between 1 and [`AMOUNT_MAX_MINOR`].

use anyhow::ensure;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest payment, in minor units (1.00): far below a bench user's
/// opening balance, so no payment aborts for want of funds.
pub const AMOUNT_MAX_MINOR: u64 = 100;
/// The largest hot set.
pub const HOT_SET_MAX: usize = 1024;

/// One payment's choices, as indices into the destination list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub payer: usize,
    pub payee: usize,
    pub amount_minor: u64,
}

/// How payees are drawn: `hot_percent` of the payments pay into the last
/// `hot_set` destinations (with `--local`, the payee accounts the bench
/// opened), the rest into any destination, uniformly.
#[derive(Clone, Copy, Debug)]
pub struct Choices {
    seed: u64,
    payers: usize,
    destinations: usize,
    hot_set: usize,
    hot_percent: u8,
}

impl Choices {
    pub fn new(
        seed: u64,
        payers: usize,
        destinations: usize,
        hot_set: usize,
        hot_percent: u8,
    ) -> anyhow::Result<Choices> {
        ensure!(payers >= 1, "no bench user to pay from");
        ensure!(
            destinations >= 2 && payers <= destinations,
            "payments need at least two accounts ({destinations} found): without --local, \
             use --clients 2 or more"
        );
        ensure!(hot_percent <= 100, "--hot-percent must be at most 100");
        ensure!(
            (1..=HOT_SET_MAX.min(destinations)).contains(&hot_set),
            "--hot-set must be between 1 and {} (the accounts paid into)",
            HOT_SET_MAX.min(destinations)
        );
        Ok(Choices {
            seed,
            payers,
            destinations,
            hot_set,
            hot_percent,
        })
    }

    /// The choices of payment slot `slot` (0, 1, 2, … in schedule order).
    pub fn for_slot(&self, slot: u64) -> Choice {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, slot));
        let payer = rng.random_range(0..self.payers);
        let hot = rng.random_range(0..100u8) < self.hot_percent;
        let hot_start = self.destinations - self.hot_set;
        // A hot set of one that is the payer's own account cannot be paid
        // from it: that payment goes to any other account instead.
        let range = if hot && !(self.hot_set == 1 && hot_start == payer) {
            hot_start..self.destinations
        } else {
            0..self.destinations
        };
        let payee = draw_except(&mut rng, range, payer);
        let amount_minor = rng.random_range(1..=AMOUNT_MAX_MINOR);
        assert_ne!(payer, payee);
        assert!(payee < self.destinations);
        Choice {
            payer,
            payee,
            amount_minor,
        }
    }
}

/// A uniform draw from `range` leaving out `excluded` (when it lies in it).
fn draw_except(rng: &mut StdRng, range: std::ops::Range<usize>, excluded: usize) -> usize {
    if !range.contains(&excluded) {
        return rng.random_range(range);
    }
    assert!(
        range.len() >= 2,
        "nothing to draw from {range:?} but {excluded}"
    );
    let drawn = rng.random_range(range.start..range.end - 1);
    if drawn >= excluded { drawn + 1 } else { drawn }
}

/// A well-spread generator seed for one slot of one run (SplitMix64's
/// finalizer), so neighbouring slots and seeds share no pattern.
fn mix(seed: u64, slot: u64) -> u64 {
    let mut z = seed ^ slot.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_payments_and_another_does_not() {
        let one = Choices::new(7, 4, 20, 2, 50).unwrap();
        let again = Choices::new(7, 4, 20, 2, 50).unwrap();
        let other = Choices::new(8, 4, 20, 2, 50).unwrap();
        let slots = |choices: &Choices| {
            (0..200)
                .map(|slot| choices.for_slot(slot))
                .collect::<Vec<_>>()
        };
        assert_eq!(slots(&one), slots(&again));
        assert_ne!(slots(&one), slots(&other));
    }

    #[test]
    fn payers_are_users_never_paying_themselves_and_amounts_are_bounded() {
        let choices = Choices::new(1, 3, 3, 1, 100).unwrap();
        for slot in 0..2_000 {
            let choice = choices.for_slot(slot);
            assert!(choice.payer < 3 && choice.payee < 3);
            assert_ne!(choice.payer, choice.payee);
            assert!((1..=AMOUNT_MAX_MINOR).contains(&choice.amount_minor));
        }
    }

    #[test]
    fn hot_percent_sends_that_share_of_payments_to_the_hot_set() {
        let choices = Choices::new(3, 10, 110, 4, 80).unwrap();
        let hot = (0..10_000)
            .filter(|&slot| choices.for_slot(slot).payee >= 106)
            .count();
        // 80 % by choice, plus the cold draws that land there by chance.
        assert!((7_800..8_400).contains(&hot), "{hot} of 10000 hot");
        let uniform = Choices::new(3, 10, 110, 4, 0).unwrap();
        let hot = (0..10_000)
            .filter(|&slot| uniform.for_slot(slot).payee >= 106)
            .count();
        assert!(hot < 800, "{hot} of 10000 hot without skew");
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let reason = |result: anyhow::Result<Choices>| result.unwrap_err().to_string();
        assert!(reason(Choices::new(1, 1, 1, 1, 0)).contains("--clients 2 or more"));
        assert!(reason(Choices::new(1, 2, 10, 0, 10)).contains("--hot-set"));
        assert!(reason(Choices::new(1, 2, 10, 11, 10)).contains("--hot-set"));
        assert!(reason(Choices::new(1, 2, 10, 1, 101)).contains("--hot-percent"));
    }
}
