//! Time and randomness come in from outside, so tests and the simulator
//! drive the production code deterministically.

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// Cryptographically secure random bytes in production; seeded in tests.
pub trait Entropy: Send + Sync {
    fn fill(&self, bytes: &mut [u8]);
}
