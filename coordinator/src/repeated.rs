//! Warnings that would repeat for every payment while a bank is down (a
//! prepare that got no vote, a phase 2 not acknowledged) are logged once per
//! bank and kind in each window; the next one logged says how many like it
//! were left out. Without this, one bank down for a minute under load wrote
//! two lines per payment: 451 k lines, and a 232 MB gateway log in under two
//! minutes.

use std::sync::Mutex;

use money::BankName;

/// A warning that repeats for every payment a failing bank is part of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeated {
    NoVote,
    PhaseTwoUnacknowledged,
}

/// How long after a warning is logged the same warning about the same bank
/// is only counted.
pub(crate) const WINDOW_MS: u64 = 10_000;

/// When each (warning, bank) was last logged, and how many were left out
/// since. Banks are few and fixed by configuration, so a list is enough.
#[derive(Default)]
pub(crate) struct RepeatedWarnings {
    seen: Mutex<Vec<Seen>>,
}

struct Seen {
    warning: Repeated,
    bank: BankName,
    logged_at_ms: u64,
    left_out: u64,
}

impl RepeatedWarnings {
    /// `Some(left_out)`: log this one now, saying how many like it were
    /// left out since the last one logged. `None`: leave it out (counted).
    /// A clock that stepped back counts as a new window.
    pub(crate) fn admit(&self, warning: Repeated, bank: &BankName, now_ms: u64) -> Option<u64> {
        let mut seen = self.seen.lock().expect("repeated warnings lock poisoned");
        let Some(entry) = seen
            .iter_mut()
            .find(|entry| entry.warning == warning && entry.bank == *bank)
        else {
            seen.push(Seen {
                warning,
                bank: bank.clone(),
                logged_at_ms: now_ms,
                left_out: 0,
            });
            return Some(0);
        };
        let in_window = now_ms >= entry.logged_at_ms && now_ms - entry.logged_at_ms < WINDOW_MS;
        if in_window {
            entry.left_out += 1;
            return None;
        }
        entry.logged_at_ms = now_ms;
        Some(std::mem::take(&mut entry.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(name: &str) -> BankName {
        BankName::parse(name).unwrap()
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_window_with_the_count_left_out() {
        let warnings = RepeatedWarnings::default();
        let start = 1_000_000;
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), start),
            Some(0)
        );
        for step in 1..=5 {
            assert_eq!(
                warnings.admit(Repeated::NoVote, &bank("bank_a"), start + step * 1_000),
                None
            );
        }
        // The last millisecond of the window still counts.
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), start + WINDOW_MS - 1),
            None
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), start + WINDOW_MS),
            Some(6)
        );
        // The count starts again from the line just logged.
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), start + WINDOW_MS + 1),
            None
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), start + 3 * WINDOW_MS),
            Some(1)
        );
    }

    #[test]
    fn each_bank_and_each_kind_of_warning_has_its_own_window() {
        let warnings = RepeatedWarnings::default();
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), 500),
            Some(0)
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_b"), 600),
            Some(0)
        );
        assert_eq!(
            warnings.admit(Repeated::PhaseTwoUnacknowledged, &bank("bank_a"), 700),
            Some(0)
        );
        assert_eq!(warnings.admit(Repeated::NoVote, &bank("bank_a"), 800), None);
        assert_eq!(warnings.admit(Repeated::NoVote, &bank("bank_b"), 900), None);
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_b"), 600 + WINDOW_MS),
            Some(1)
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), 600 + WINDOW_MS),
            Some(1)
        );
    }

    #[test]
    fn a_clock_that_steps_back_starts_a_new_window() {
        let warnings = RepeatedWarnings::default();
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), 50_000),
            Some(0)
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), 50_001),
            None
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), 40_000),
            Some(1)
        );
        assert_eq!(
            warnings.admit(Repeated::NoVote, &bank("bank_a"), 40_001),
            None
        );
    }
}
