//! Admission before expensive work: token buckets per key (a client
//! address, a username) in a map of bounded size, so a flood from one
//! address or against one account is refused before any password is
//! hashed, and the map itself cannot grow with the flood.
//!
//! It knows nothing of what a key is or of time beyond the milliseconds it
//! is handed; the gateway decides which keys to charge.

use std::collections::HashMap;
use std::hash::Hash;

/// How fast one key may go: a burst of `burst` at once, refilled evenly
/// over `period_ms` (so `burst / period_ms` a millisecond after the burst).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub period_ms: u64,
}

impl RateLimit {
    /// Milliseconds until `millitokens` more tokens have refilled.
    fn refill_time_ms(self, millitokens: u64) -> u64 {
        let per_period = u64::from(self.burst) * 1000;
        (u128::from(millitokens) * u128::from(self.period_ms))
            .div_ceil(u128::from(per_period))
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Millitokens refilled in `elapsed_ms`.
    fn refilled_in(self, elapsed_ms: u64) -> u64 {
        let per_period = u128::from(self.burst) * 1000;
        (u128::from(elapsed_ms) * per_period / u128::from(self.period_ms))
            .try_into()
            .unwrap_or(u64::MAX)
    }
}

/// A key's bucket: its tokens as of `at_ms`, in thousandths of a token so
/// that refill is exact in integers.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    millitokens: u64,
    at_ms: u64,
}

/// Refused by a [`TokenBuckets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This key spent its burst: the next token comes in `retry_after_ms`.
    Empty { retry_after_ms: u64 },
    /// `keys_max` keys are mid-burst and none has refilled: a new key
    /// cannot be tracked, so it is refused (failing closed).
    Full { retry_after_ms: u64 },
}

impl Refusal {
    pub fn retry_after_ms(self) -> u64 {
        match self {
            Refusal::Empty { retry_after_ms } | Refusal::Full { retry_after_ms } => retry_after_ms,
        }
    }
}

/// Token buckets for at most `keys_max` keys. A key absent from the map has
/// a full bucket, so a bucket that refilled carries no information and is
/// dropped when room is needed; the map never holds more than `keys_max`.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    limit: RateLimit,
    keys_max: usize,
    buckets: HashMap<K, Bucket>,
    /// Sweeping for refilled buckets is a pass over the map: at most one
    /// per token's refill time, so a full map under a flood costs O(1) per
    /// call.
    next_sweep_ms: u64,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    pub fn new(limit: RateLimit, keys_max: usize) -> TokenBuckets<K> {
        assert!(limit.burst >= 1, "a rate limit admits at least one call");
        assert!(limit.period_ms >= 1);
        assert!(keys_max >= 1);
        TokenBuckets {
            limit,
            keys_max,
            buckets: HashMap::with_capacity(keys_max.min(4096)),
            next_sweep_ms: 0,
        }
    }

    fn burst_millitokens(&self) -> u64 {
        u64::from(self.limit.burst) * 1000
    }

    /// The bucket's tokens at `now_ms`, refilled since it was last charged.
    fn refilled(&self, bucket: Bucket, now_ms: u64) -> u64 {
        let refill = self.limit.refilled_in(now_ms.saturating_sub(bucket.at_ms));
        bucket
            .millitokens
            .saturating_add(refill)
            .min(self.burst_millitokens())
    }

    /// Takes one token of `key`'s bucket, or says when to come back.
    pub fn take(&mut self, key: &K, now_ms: u64) -> Result<(), Refusal> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.keys_max {
            self.sweep(now_ms);
            if self.buckets.len() >= self.keys_max {
                return Err(Refusal::Full {
                    retry_after_ms: self.limit.refill_time_ms(1000),
                });
            }
        }
        let full = Bucket {
            millitokens: self.burst_millitokens(),
            at_ms: now_ms,
        };
        let current = self.buckets.get(key).copied().unwrap_or(full);
        let millitokens = self.refilled(current, now_ms);
        if millitokens < 1000 {
            return Err(Refusal::Empty {
                retry_after_ms: self.limit.refill_time_ms(1000 - millitokens),
            });
        }
        self.buckets.insert(
            key.clone(),
            Bucket {
                millitokens: millitokens - 1000,
                at_ms: now_ms,
            },
        );
        assert!(self.buckets.len() <= self.keys_max);
        Ok(())
    }

    /// Drops the buckets that refilled completely (at most once per token's
    /// refill time).
    fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms + self.limit.refill_time_ms(1000).max(1);
        let burst = self.burst_millitokens();
        let buckets = std::mem::take(&mut self.buckets);
        self.buckets = buckets
            .into_iter()
            .filter(|(_, bucket)| self.refilled(*bucket, now_ms) < burst)
            .collect();
    }

    /// How many keys are tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: RateLimit = RateLimit {
        burst: 3,
        period_ms: 3_000,
    };

    #[test]
    fn a_key_gets_its_burst_then_one_token_per_refill_period() {
        let mut buckets = TokenBuckets::new(LIMIT, 10);
        for _ in 0..3 {
            assert_eq!(buckets.take(&"alice", 0), Ok(()));
        }
        assert_eq!(
            buckets.take(&"alice", 0),
            Err(Refusal::Empty {
                retry_after_ms: 1_000
            })
        );
        assert_eq!(
            buckets.take(&"alice", 400),
            Err(Refusal::Empty {
                retry_after_ms: 600
            })
        );
        assert_eq!(buckets.take(&"bob", 400), Ok(()), "keys are independent");
        assert_eq!(buckets.take(&"alice", 1_000), Ok(()));
        assert!(buckets.take(&"alice", 1_000).is_err());
        assert_eq!(buckets.take(&"alice", 3_500), Ok(()));
        assert_eq!(buckets.take(&"alice", 3_500), Ok(()));
        assert!(
            buckets.take(&"alice", 3_500).is_err(),
            "refill stops at the burst"
        );
    }

    #[test]
    fn rates_finer_than_a_token_a_millisecond_refill_exactly() {
        let fast = RateLimit {
            burst: 100_000,
            period_ms: 1_000,
        };
        let mut buckets = TokenBuckets::new(fast, 1);
        for _ in 0..100_000 {
            buckets.take(&(), 0).unwrap();
        }
        assert_eq!(
            buckets.take(&(), 0),
            Err(Refusal::Empty { retry_after_ms: 1 })
        );
        for _ in 0..100 {
            buckets.take(&(), 1).unwrap();
        }
        assert!(buckets.take(&(), 1).is_err());
    }

    #[test]
    fn a_full_map_drops_refilled_buckets_and_refuses_new_keys_while_all_are_mid_burst() {
        let mut buckets = TokenBuckets::new(LIMIT, 2);
        buckets.take(&1, 0).unwrap();
        buckets.take(&2, 0).unwrap();
        assert_eq!(
            buckets.take(&3, 10),
            Err(Refusal::Full {
                retry_after_ms: 1_000
            })
        );
        assert_eq!(buckets.take(&1, 10), Ok(()), "known keys still go on");
        assert_eq!(buckets.len(), 2);
        // Key 2 refilled by t=1,000 (one token spent); key 1 is still short.
        assert_eq!(buckets.take(&3, 1_500), Ok(()));
        assert_eq!(buckets.len(), 2);
    }

    proptest! {
        #[test]
        fn never_more_keys_than_the_bound_nor_more_calls_than_the_rate_allows(
            calls in proptest::collection::vec((0u8..8, 0u64..50), 1..300),
        ) {
            let mut buckets = TokenBuckets::new(LIMIT, 4);
            let mut now = 0;
            let mut admitted = [0u64; 8];
            for (key, advance) in calls {
                now += advance;
                if buckets.take(&key, now).is_ok() {
                    admitted[usize::from(key)] += 1;
                }
                prop_assert!(buckets.len() <= 4);
            }
            for count in admitted {
                // A key evicted after refilling comes back full, so the
                // most a key gets is its burst plus a token per period.
                prop_assert!(count <= 3 + now / 1_000);
            }
        }
    }
}
