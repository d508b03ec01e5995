//! The deterministic simulation of the whole system (see
//! `bins/src/simulation.rs` and TESTING.md): the production gateway and
//! bank cores under a seeded storm of dropped, duplicated and reordered
//! messages, crashes, failed syncs and torn writes, checked against the six
//! invariants after every step and after healing.
//!
//! `MINIPAY_SIM_SEEDS` (default 1000) and `MINIPAY_SIM_FROM` (default 0)
//! choose the seeds; `minipay sim --seeds N --from S` runs more, faster, in a
//! release build, and `minipay sim --seed S` replays one.

use minipay_simulation::invariants::Invariant;
use minipay_simulation::{Broken, SimConfig, run, run_seeds};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
        Err(_) => default,
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[test]
fn every_seed_holds_all_six_invariants_through_faults_and_healing() {
    let count = env_u64("MINIPAY_SIM_SEEDS", 1_000);
    let from = env_u64("MINIPAY_SIM_FROM", 0);
    match run_seeds(from, count, &SimConfig::default(), threads()) {
        Ok(summary) => {
            println!("seeds {from}..{}: {summary}", from + count);
            assert_eq!(summary.seeds, count);
            // The faults really happened: a run without them proves little.
            let counts = &summary.counts;
            assert!(counts.crashes > count, "{summary}");
            assert!(counts.failed_syncs > count / 2, "{summary}");
            assert!(counts.dropped > 0 && counts.duplicated > 0, "{summary}");
            assert!(counts.committed > 0 && counts.aborted > 0, "{summary}");
            assert!(counts.reuses_refused > 0, "{summary}");
            assert!(counts.balance_reads > count, "{summary}");
            assert!(counts.registrations > count, "{summary}");
            // History tables are written and merged in every seed's worth.
            assert!(
                counts.tables_written > count && counts.table_merges > count / 2,
                "{summary}"
            );
        }
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn a_seed_replays_identically_and_seeds_differ() {
    let config = SimConfig::default();
    let first = run(7, &config).unwrap();
    let again = run(7, &config).unwrap();
    assert_eq!(first, again, "same seed, same events");
    let other = run(8, &config).unwrap();
    assert_ne!(first.digest, other.digest, "another seed, another history");
}

#[test]
fn the_checker_catches_a_bank_that_votes_yes_before_its_prepare_is_durable() {
    let config = SimConfig {
        broken: Some(Broken::VoteYesBeforeDurable),
        ..SimConfig::default()
    };
    let failure = run_seeds(0, 200, &config, threads())
        .expect_err("a bank that answers YES before its holds are durable must be caught");
    println!("caught at seed {}: {}", failure.seed, failure.violation);
    // Once its lost YES is committed, the money is either made up at the
    // other bank or the commit can never be applied.
    assert!(
        matches!(
            failure.violation.invariant,
            Invariant::Liveness
                | Invariant::Conservation
                | Invariant::Atomicity
                | Invariant::Agreement
        ),
        "{}",
        failure.violation
    );
    // The failing seed replays to the same failure.
    let replayed = run(failure.seed, &config).expect_err("the failure replays");
    assert_eq!(replayed.violation, failure.violation);
    assert_eq!(replayed.step, failure.step);
}

#[test]
fn the_checker_catches_a_balance_read_that_does_not_wait_for_phase_two() {
    let config = SimConfig {
        broken: Some(Broken::BalanceWithoutWaiting),
        ..SimConfig::default()
    };
    let failure = run_seeds(0, 200, &config, threads())
        .expect_err("a balance read that skips the read-your-writes wait must be caught");
    println!("caught at seed {}: {}", failure.seed, failure.violation);
    assert_eq!(
        failure.violation.invariant,
        Invariant::ReadYourWrites,
        "{}",
        failure.violation
    );
    let replayed = run(failure.seed, &config).expect_err("the failure replays");
    assert_eq!(replayed.violation, failure.violation);
}

#[test]
fn the_checker_catches_a_registration_answered_before_the_user_is_durable() {
    let config = SimConfig {
        broken: Some(Broken::RegistrationBeforeDurable),
        ..SimConfig::default()
    };
    let failure = run_seeds(0, 400, &config, threads())
        .expect_err("a registration answered before its user is durable must be caught");
    println!("caught at seed {}: {}", failure.seed, failure.violation);
    assert_eq!(
        failure.violation.invariant,
        Invariant::Durability,
        "{}",
        failure.violation
    );
    let replayed = run(failure.seed, &config).expect_err("the failure replays");
    assert_eq!(replayed.violation, failure.violation);
}
