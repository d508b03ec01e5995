//! Session keys: 128-bit id + 128-bit secret from the injected entropy,
//! hex-encoded; the secret is compared in constant time. Idle and absolute
//! expiry. Kept in memory only, bounded.

use std::collections::HashMap;

use crate::environment::Entropy;

#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    pub idle_ms: u64,
    pub absolute_ms: u64,
    pub sessions_max: usize,
}

impl Default for SessionPolicy {
    fn default() -> SessionPolicy {
        SessionPolicy {
            idle_ms: 30 * 60_000,
            absolute_ms: 12 * 3_600_000,
            sessions_max: 100_000,
        }
    }
}

struct Session {
    user: String,
    secret: [u8; 16],
    created_ms: u64,
    last_used_ms: u64,
}

/// Why a session key was refused. One message for all, so a caller cannot
/// tell a forged key from an expired one by the text alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("invalid or expired session; log in again")]
    Malformed,
    #[error("invalid or expired session; log in again")]
    Unknown,
    #[error("invalid or expired session; log in again")]
    Expired,
    #[error("too many sessions; try again later")]
    Full,
}

pub struct Sessions {
    policy: SessionPolicy,
    by_id: HashMap<[u8; 16], Session>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// Equal-length comparison whose time does not depend on where bytes differ.
fn constant_time_eq(left: &[u8; 16], right: &[u8; 16]) -> bool {
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

impl Sessions {
    pub fn new(policy: SessionPolicy) -> Sessions {
        Sessions {
            policy,
            by_id: HashMap::new(),
        }
    }

    /// A new session for `user`: its key and when it expires at the latest.
    pub fn create(
        &mut self,
        user: &str,
        entropy: &dyn Entropy,
        now_ms: u64,
    ) -> Result<(String, u64), SessionError> {
        if self.by_id.len() >= self.policy.sessions_max {
            self.evict_expired(now_ms);
        }
        if self.by_id.len() >= self.policy.sessions_max {
            return Err(SessionError::Full);
        }
        let mut key = [0u8; 32];
        entropy.fill(&mut key);
        let id: [u8; 16] = key[..16].try_into().expect("16 bytes");
        let secret: [u8; 16] = key[16..].try_into().expect("16 bytes");
        self.by_id.insert(
            id,
            Session {
                user: user.to_owned(),
                secret,
                created_ms: now_ms,
                last_used_ms: now_ms,
            },
        );
        Ok((hex(&key), now_ms + self.policy.absolute_ms))
    }

    /// The user a key belongs to; refreshes its idle timer.
    pub fn authenticate(&mut self, key: &str, now_ms: u64) -> Result<String, SessionError> {
        let bytes = unhex(key).ok_or(SessionError::Malformed)?;
        let id: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
        let secret: [u8; 16] = bytes[16..].try_into().expect("16 bytes");
        let session = self.by_id.get_mut(&id).ok_or(SessionError::Unknown)?;
        if !constant_time_eq(&session.secret, &secret) {
            return Err(SessionError::Unknown);
        }
        let expired = now_ms >= session.created_ms + self.policy.absolute_ms
            || now_ms >= session.last_used_ms + self.policy.idle_ms;
        if expired {
            self.by_id.remove(&id);
            return Err(SessionError::Expired);
        }
        session.last_used_ms = now_ms;
        Ok(session.user.clone())
    }

    /// Ends the session `key` names (if valid).
    pub fn logout(&mut self, key: &str, now_ms: u64) -> Result<(), SessionError> {
        self.authenticate(key, now_ms)?;
        let bytes = unhex(key).ok_or(SessionError::Malformed)?;
        let id: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
        self.by_id.remove(&id);
        Ok(())
    }

    fn evict_expired(&mut self, now_ms: u64) {
        let policy = self.policy;
        self.by_id.retain(|_, session| {
            now_ms < session.created_ms + policy.absolute_ms
                && now_ms < session.last_used_ms + policy.idle_ms
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    struct Counter(AtomicU8);

    impl Entropy for Counter {
        fn fill(&self, bytes: &mut [u8]) {
            let start = self.0.fetch_add(1, Ordering::Relaxed);
            for (index, byte) in bytes.iter_mut().enumerate() {
                *byte = start.wrapping_add(index as u8).wrapping_mul(31);
            }
        }
    }

    fn sessions() -> Sessions {
        Sessions::new(SessionPolicy {
            idle_ms: 100,
            absolute_ms: 1_000,
            sessions_max: 2,
        })
    }

    #[test]
    fn keys_authenticate_until_idle_or_absolute_expiry_or_logout() {
        let entropy = Counter(AtomicU8::new(1));
        let mut sessions = sessions();
        let (key, expires) = sessions.create("alice", &entropy, 0).unwrap();
        assert_eq!((key.len(), expires), (64, 1_000));
        assert_eq!(sessions.authenticate(&key, 50).unwrap(), "alice");
        assert_eq!(sessions.authenticate(&key, 140).unwrap(), "alice");
        assert_eq!(sessions.authenticate(&key, 300), Err(SessionError::Expired));
        let (key, _) = sessions.create("alice", &entropy, 0).unwrap();
        for now in (90..1_000).step_by(90) {
            sessions.authenticate(&key, now).unwrap();
        }
        assert_eq!(
            sessions.authenticate(&key, 1_000),
            Err(SessionError::Expired)
        );
        let (key, _) = sessions.create("bob", &entropy, 0).unwrap();
        sessions.logout(&key, 1).unwrap();
        assert_eq!(sessions.authenticate(&key, 2), Err(SessionError::Unknown));
    }

    #[test]
    fn forged_and_malformed_keys_are_refused() {
        let entropy = Counter(AtomicU8::new(1));
        let mut sessions = sessions();
        let (key, _) = sessions.create("alice", &entropy, 0).unwrap();
        let mut forged = key.clone().into_bytes();
        forged[63] = if forged[63] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            sessions.authenticate(std::str::from_utf8(&forged).unwrap(), 1),
            Err(SessionError::Unknown)
        );
        assert_eq!(
            sessions.authenticate("xyz", 1),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            sessions.authenticate(&"g".repeat(64), 1),
            Err(SessionError::Malformed)
        );
        sessions.create("bob", &entropy, 0).unwrap();
        assert_eq!(
            sessions.create("carol", &entropy, 0).unwrap_err(),
            SessionError::Full
        );
        assert!(
            sessions.create("carol", &entropy, 5_000).is_ok(),
            "expired sessions make room"
        );
    }
}
