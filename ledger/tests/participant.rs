//! The bank's decision table, row by row, through the durable `Bank` on
//! simulated storage; then a model-based property test over random request
//! sequences with restarts; then recovery from a crash after every record.

use std::collections::HashMap;
use std::sync::Arc;

use ledger::{
    Bank, BankError, BankOptions, InvalidRequest, ParticipantError, Seed, VoidReason, Vote,
    block_on,
};
use money::{AccountNo, Amount, Direction, Leg, TxnId};
use proptest::prelude::*;
use wal::sim::SimStorage;

fn account(number: &str) -> AccountNo {
    AccountNo::parse(number).unwrap()
}

fn txn(n: u8) -> TxnId {
    TxnId([n; 16])
}

fn debit(number: &str, amount: u64) -> Leg {
    Leg {
        account: account(number),
        direction: Direction::Debit,
        amount: Amount(amount),
    }
}

fn credit(number: &str, amount: u64) -> Leg {
    Leg {
        account: account(number),
        direction: Direction::Credit,
        amount: Amount(amount),
    }
}

fn seeds() -> Vec<Seed> {
    vec![
        Seed {
            account: account("123"),
            owner: "alice".into(),
            balance: Amount(100_000),
        },
        Seed {
            account: account("456"),
            owner: "bob".into(),
            balance: Amount(5_000),
        },
    ]
}

fn options() -> BankOptions {
    BankOptions {
        wal: wal::Options {
            segment_size: 4096,
            payload_len_max: 1024,
            prepare_segments_ahead: false,
            ..wal::Options::default()
        },
        snapshot_every: 1_000_000,
        ..BankOptions::default()
    }
}

fn open(storage: &SimStorage) -> Bank {
    Bank::open(
        Arc::new(storage.clone()),
        "bank_a",
        "INR",
        || Ok(seeds()),
        options(),
    )
    .unwrap()
    .0
}

fn balance_and_available(bank: &Bank, number: &str) -> (u64, u64) {
    let account = block_on(bank.account(&account(number))).unwrap();
    (account.balance.0, account.available().0)
}

fn refused(result: Result<impl std::fmt::Debug, BankError>) -> ParticipantError {
    match result {
        Err(BankError::Refused(error)) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `in_doubt` sees memory; `in_doubt_durable` (what ListInDoubt answers)
/// only what a crash would keep: a prepare whose sync failed is in memory
/// but never listed by it.
#[test]
fn only_durable_prepares_are_listed_in_doubt() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let legs = [debit("123", 2_500), credit("456", 2_500)];
    block_on(bank.prepare(txn(1), &legs, 10)).unwrap();
    let listed = block_on(bank.in_doubt_durable()).unwrap();
    assert_eq!(
        listed.iter().map(|doubt| doubt.txn).collect::<Vec<_>>(),
        [txn(1)]
    );

    storage.fail_syncs_after(0);
    let failed = block_on(bank.prepare(txn(2), &legs, 11));
    assert!(matches!(failed, Err(BankError::Storage(_))), "{failed:?}");
    assert_eq!(bank.in_doubt().len(), 2, "memory holds the failed prepare");
    let listed = block_on(bank.in_doubt_durable());
    assert!(matches!(listed, Err(BankError::Storage(_))), "{listed:?}");
    let after_crash = open(&storage.crash());
    let kept: Vec<TxnId> = after_crash
        .in_doubt()
        .iter()
        .map(|doubt| doubt.txn)
        .collect();
    assert_eq!(kept, [txn(1)], "the crash keeps only the durable prepare");
}

#[test]
fn prepare_of_a_new_transfer_holds_funds_and_votes_yes_then_commit_posts_it() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let legs = [debit("123", 2_500), credit("456", 2_500)];
    assert_eq!(
        block_on(bank.prepare(txn(1), &legs, 10)).unwrap(),
        Vote::Yes
    );
    assert_eq!(balance_and_available(&bank, "123"), (100_000, 97_500));
    assert_eq!(bank.in_doubt().len(), 1);
    // The YES is durable: a crash right now keeps the hold.
    let after_crash = open(&storage.crash());
    assert_eq!(
        balance_and_available(&after_crash, "123"),
        (100_000, 97_500)
    );
    assert_eq!(after_crash.in_doubt()[0].txn, txn(1));

    block_on(bank.commit(txn(1), 11)).unwrap();
    assert_eq!(balance_and_available(&bank, "123"), (97_500, 97_500));
    assert_eq!(balance_and_available(&bank, "456"), (7_500, 7_500));
    assert!(bank.in_doubt().is_empty());
}

/// Each of `txns`, as the bank knows it (memory, then history).
fn states<const N: usize>(bank: &Bank, txns: [u8; N]) -> [&'static str; N] {
    txns.map(|n| match bank.txn(txn(n)).unwrap() {
        None => "forgotten",
        Some(ledger::TxnState::Pending { .. }) => "pending",
        Some(ledger::TxnState::Posted { .. }) => "posted",
        Some(ledger::TxnState::Voided { .. }) => "voided",
    })
}

#[test]
fn a_checkpoint_moves_decided_transfers_to_the_history_and_forgets_them_after_the_retention() {
    let storage = SimStorage::new();
    let bank = Bank::open(
        Arc::new(storage.clone()),
        "bank_a",
        "INR",
        || Ok(seeds()),
        BankOptions {
            decided_retention_ms: 3_000,
            ..options()
        },
    )
    .unwrap()
    .0;
    let legs = [debit("123", 100), credit("456", 100)];
    block_on(bank.prepare(txn(1), &legs, 10)).unwrap();
    block_on(bank.commit(txn(1), 10)).unwrap();
    block_on(bank.abort(txn(2), 20)).unwrap();
    block_on(bank.prepare(txn(3), &legs, 30)).unwrap();
    block_on(bank.prepare(txn(4), &legs, 2_500)).unwrap();
    block_on(bank.commit(txn(4), 2_500)).unwrap();
    assert_eq!(
        states(&bank, [1, 2, 3, 4]),
        ["posted", "voided", "pending", "posted"]
    );
    assert_eq!(bank.ledger().txns_in_memory(), 4);

    bank.checkpoint(2_600).unwrap();
    assert_eq!(
        states(&bank, [1, 2, 3, 4]),
        ["posted", "voided", "pending", "posted"],
        "decided transactions are found in the history"
    );
    assert_eq!(
        bank.ledger().txns_in_memory(),
        1,
        "memory keeps the pending one"
    );
    assert_eq!(bank.history().store().tables().len(), 1);

    bank.checkpoint(3_100).unwrap();
    assert_eq!(
        states(&bank, [1, 2, 3, 4]),
        ["forgotten", "forgotten", "pending", "posted"],
        "decided at 10 and 20, before 3,100 - 3,000: forgotten; a pending one stays however old"
    );
    let reopened = open(&storage.crash());
    assert_eq!(reopened.ledger(), bank.ledger(), "snapshot + replay");
    assert_eq!(
        states(&reopened, [1, 2, 3, 4]),
        ["forgotten", "forgotten", "pending", "posted"]
    );
}

#[test]
fn a_repeated_or_late_request_for_a_transaction_in_the_history_answers_as_before() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let legs = [debit("123", 100), credit("456", 100)];
    block_on(bank.prepare(txn(1), &legs, 10)).unwrap();
    block_on(bank.commit(txn(1), 11)).unwrap();
    block_on(bank.abort(txn(2), 12)).unwrap();
    assert_eq!(
        block_on(bank.prepare(txn(3), &[debit("123", 1_000_000)], 13)).unwrap(),
        Vote::No(VoidReason::InsufficientFunds(account("123")))
    );
    bank.checkpoint(20).unwrap();
    for bank in [bank, open(&storage.crash())] {
        assert_eq!(bank.ledger().txns_in_memory(), 0);
        let before = balance_and_available(&bank, "123");
        assert_eq!(
            block_on(bank.prepare(txn(1), &legs, 30)).unwrap(),
            Vote::Yes
        );
        block_on(bank.commit(txn(1), 30)).unwrap();
        assert!(matches!(
            block_on(bank.abort(txn(1), 30)),
            Err(BankError::Refused(
                ParticipantError::AbortAfterCommit { .. }
            ))
        ));
        assert!(matches!(
            block_on(bank.prepare(txn(1), &[debit("123", 7)], 30)),
            Err(BankError::Refused(ParticipantError::TxnIdReused { .. }))
        ));
        assert_eq!(
            block_on(bank.prepare(txn(2), &legs, 30)).unwrap(),
            Vote::No(VoidReason::AbortedBeforePrepare),
            "a late prepare after the abort votes NO"
        );
        assert!(matches!(
            block_on(bank.commit(txn(2), 30)),
            Err(BankError::Refused(
                ParticipantError::CommitAfterAbort { .. }
            ))
        ));
        assert_eq!(
            block_on(bank.prepare(txn(3), &[debit("123", 1_000_000)], 30)).unwrap(),
            Vote::No(VoidReason::InsufficientFunds(account("123")))
        );
        assert_eq!(
            balance_and_available(&bank, "123"),
            before,
            "nothing moved twice"
        );
        assert_eq!(bank.ledger().txns_in_memory(), 0, "nothing written");
    }
}

#[test]
fn repeats_return_the_same_answer_without_a_second_hold() {
    let bank = open(&SimStorage::new());
    let legs = [debit("123", 1_000)];
    assert_eq!(block_on(bank.prepare(txn(1), &legs, 1)).unwrap(), Vote::Yes);
    assert_eq!(block_on(bank.prepare(txn(1), &legs, 2)).unwrap(), Vote::Yes);
    assert_eq!(balance_and_available(&bank, "123"), (100_000, 99_000));
    block_on(bank.commit(txn(1), 3)).unwrap();
    block_on(bank.commit(txn(1), 4)).unwrap();
    assert_eq!(block_on(bank.prepare(txn(1), &legs, 5)).unwrap(), Vote::Yes);
    assert_eq!(balance_and_available(&bank, "123"), (99_000, 99_000));
}

#[test]
fn insufficient_funds_and_unknown_accounts_vote_no_durably_and_repeat_the_no() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let vote = block_on(bank.prepare(txn(1), &[debit("456", 5_001)], 1)).unwrap();
    assert_eq!(
        vote,
        Vote::No(VoidReason::InsufficientFunds(account("456")))
    );
    let vote = block_on(bank.prepare(txn(2), &[credit("999", 1)], 1)).unwrap();
    assert_eq!(vote, Vote::No(VoidReason::UnknownAccount(account("999"))));
    // Even if the funds arrive later, the vote for that id stays NO.
    let reopened = open(&storage.crash());
    let vote = block_on(reopened.prepare(txn(1), &[debit("456", 1)], 2)).unwrap();
    assert_eq!(
        vote,
        Vote::No(VoidReason::InsufficientFunds(account("456")))
    );
    assert_eq!(balance_and_available(&reopened, "456"), (5_000, 5_000));
}

#[test]
fn an_abort_that_overtakes_its_prepare_makes_the_late_prepare_vote_no() {
    let bank = open(&SimStorage::new());
    block_on(bank.abort(txn(7), 1)).unwrap();
    let vote = block_on(bank.prepare(txn(7), &[debit("123", 10)], 2)).unwrap();
    assert_eq!(vote, Vote::No(VoidReason::AbortedBeforePrepare));
    assert_eq!(balance_and_available(&bank, "123"), (100_000, 100_000));
    block_on(bank.abort(txn(7), 3)).unwrap();
}

#[test]
fn abort_of_a_pending_transfer_releases_its_hold() {
    let bank = open(&SimStorage::new());
    block_on(bank.prepare(txn(1), &[debit("123", 40_000)], 1)).unwrap();
    block_on(bank.abort(txn(1), 2)).unwrap();
    assert_eq!(balance_and_available(&bank, "123"), (100_000, 100_000));
    let vote = block_on(bank.prepare(txn(1), &[debit("123", 40_000)], 3)).unwrap();
    assert_eq!(vote, Vote::No(VoidReason::Aborted));
}

#[test]
fn protocol_errors_change_nothing() {
    let bank = open(&SimStorage::new());
    let before = bank.ledger();
    assert_eq!(
        refused(block_on(bank.commit(txn(9), 1))),
        ParticipantError::CommitUnknown { txn: txn(9) }
    );
    block_on(bank.prepare(txn(1), &[debit("123", 5)], 1)).unwrap();
    block_on(bank.commit(txn(1), 2)).unwrap();
    assert_eq!(
        refused(block_on(bank.abort(txn(1), 3))),
        ParticipantError::AbortAfterCommit { txn: txn(1) }
    );
    block_on(bank.abort(txn(2), 3)).unwrap();
    assert_eq!(
        refused(block_on(bank.commit(txn(2), 4))),
        ParticipantError::CommitAfterAbort { txn: txn(2) }
    );
    let reused = block_on(bank.prepare(txn(1), &[debit("123", 6)], 5));
    assert_eq!(
        refused(reused),
        ParticipantError::TxnIdReused { txn: txn(1) }
    );
    assert_eq!(
        bank.ledger().account(&account("123")).unwrap().balance,
        Amount(99_995)
    );
    assert_ne!(before, bank.ledger());
}

#[test]
fn malformed_prepares_are_refused_before_anything_is_written() {
    let bank = open(&SimStorage::new());
    let before = bank.ledger();
    let cases: Vec<(Vec<Leg>, InvalidRequest)> = vec![
        (vec![], InvalidRequest::NoLegs),
        (vec![debit("123", 0)], InvalidRequest::ZeroAmount),
        (
            vec![debit("123", 1), credit("123", 1)],
            InvalidRequest::DuplicateAccount,
        ),
        (vec![debit("123", 1); 17], InvalidRequest::TooManyLegs),
    ];
    for (legs, expected) in cases {
        assert_eq!(
            refused(block_on(bank.prepare(txn(3), &legs, 1))),
            ParticipantError::Invalid(expected)
        );
    }
    assert_eq!(bank.ledger(), before);
    let duplicate = block_on(bank.open_account(Some(account("123")), "eve", Amount(1)));
    assert_eq!(
        refused(duplicate),
        ParticipantError::DuplicateAccount {
            account: account("123")
        }
    );
    let unknown = block_on(bank.account(&account("999")));
    assert_eq!(
        refused(unknown),
        ParticipantError::UnknownAccount {
            account: account("999")
        }
    );
    assert_eq!(bank.ledger(), before);
}

#[test]
fn a_restart_under_another_bank_name_is_refused() {
    let storage = SimStorage::new();
    drop(open(&storage));
    let error = Bank::open(
        Arc::new(storage.crash()),
        "bank_b",
        "INR",
        || Ok(vec![]),
        options(),
    )
    .err()
    .unwrap();
    assert!(
        error.to_string().contains("belongs to bank \"bank_a\""),
        "{error}"
    );
}

#[test]
fn seeds_are_used_on_first_start_only() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let number = block_on(bank.open_account(None, "carol", Amount(700))).unwrap();
    drop(bank);
    let other_seeds = vec![Seed {
        account: account("777"),
        owner: "x".into(),
        balance: Amount(1),
    }];
    let (bank, report) = Bank::open(
        Arc::new(storage.crash()),
        "bank_a",
        "INR",
        || Ok(other_seeds),
        options(),
    )
    .unwrap();
    assert!(!report.created);
    assert!(bank.ledger().account(&account("777")).is_none());
    assert_eq!(bank.ledger().account(&number).unwrap().balance, Amount(700));
}

/// A request in a random sequence.
#[derive(Clone, Debug)]
enum Request {
    Prepare {
        txn: u8,
        from: usize,
        to: usize,
        amount: u64,
    },
    Commit {
        txn: u8,
    },
    Abort {
        txn: u8,
    },
    Restart {
        crash: bool,
    },
    Checkpoint,
}

const ACCOUNTS: [&str; 3] = ["123", "456", "789"];

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        4 => (0u8..12, 0usize..3, 0usize..3, 1u64..60_000)
            .prop_map(|(txn, from, to, amount)| Request::Prepare { txn, from, to, amount }),
        3 => (0u8..12).prop_map(|txn| Request::Commit { txn }),
        2 => (0u8..12).prop_map(|txn| Request::Abort { txn }),
        1 => any::<bool>().prop_map(|crash| Request::Restart { crash }),
        1 => Just(Request::Checkpoint),
    ]
}

/// What the model expects of one transaction.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    Pending(usize, usize, u64),
    Posted,
    Voided,
}

fn model_seeds() -> Vec<Seed> {
    ACCOUNTS
        .iter()
        .map(|number| Seed {
            account: account(number),
            owner: "o".into(),
            balance: Amount(50_000),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_and_restarts_conserve_money_and_match_a_model(
        requests in proptest::collection::vec(request(), 1..80)
    ) {
        let mut storage = SimStorage::new();
        let snapshots = BankOptions { snapshot_every: 7, ..options() };
        let open_bank = |storage: &SimStorage| {
            Bank::open(Arc::new(storage.clone()), "bank_a", "INR", || Ok(model_seeds()), snapshots).unwrap().0
        };
        let mut bank = open_bank(&storage);
        let mut balances = [50_000u64; 3];
        let mut txns: HashMap<u8, Expected> = HashMap::new();
        for (step, request) in requests.into_iter().enumerate() {
            let now = step as u64;
            match request {
                Request::Prepare { txn: id, from, to, amount } => {
                    let legs = if from == to {
                        vec![debit(ACCOUNTS[from], amount)]
                    } else {
                        vec![debit(ACCOUNTS[from], amount), credit(ACCOUNTS[to], amount)]
                    };
                    let result = block_on(bank.prepare(txn(id), &legs, now));
                    match txns.get(&id) {
                        None => {
                            let held: u64 = txns.values().map(|t| match t { Expected::Pending(f, _, a) if *f == from => *a, _ => 0 }).sum();
                            let vote = result.unwrap();
                            if balances[from] - held >= amount {
                                prop_assert_eq!(vote, Vote::Yes);
                                txns.insert(id, Expected::Pending(from, if from == to { usize::MAX } else { to }, amount));
                            } else {
                                prop_assert!(matches!(vote, Vote::No(_)));
                                txns.insert(id, Expected::Voided);
                            }
                        }
                        Some(Expected::Voided) => prop_assert!(matches!(result.unwrap(), Vote::No(_))),
                        Some(_) => {
                            let repeat_or_reuse = result.is_ok()
                                || matches!(result, Err(BankError::Refused(ParticipantError::TxnIdReused { .. })));
                            prop_assert!(repeat_or_reuse);
                        }
                    }
                }
                Request::Commit { txn: id } => {
                    let result = block_on(bank.commit(txn(id), now));
                    match txns.get(&id).cloned() {
                        Some(Expected::Pending(from, to, amount)) => {
                            result.unwrap();
                            balances[from] -= amount;
                            if to != usize::MAX { balances[to] += amount; }
                            txns.insert(id, Expected::Posted);
                        }
                        Some(Expected::Posted) => result.unwrap(),
                        Some(Expected::Voided) | None => prop_assert!(result.is_err()),
                    }
                }
                Request::Abort { txn: id } => {
                    let result = block_on(bank.abort(txn(id), now));
                    match txns.get(&id) {
                        Some(Expected::Posted) => prop_assert!(result.is_err()),
                        _ => { result.unwrap(); txns.insert(id, Expected::Voided); }
                    }
                }
                Request::Restart { crash } => {
                    drop(bank);
                    if crash { storage = storage.crash(); }
                    bank = open_bank(&storage);
                }
                Request::Checkpoint => { bank.checkpoint_if_due(now).unwrap(); }
            }
            let ledger = bank.ledger();
            prop_assert_eq!(ledger.check_invariants(), Ok(()));
            for (index, number) in ACCOUNTS.iter().enumerate() {
                let held: u64 = txns.values().map(|t| match t { Expected::Pending(f, _, a) if *f == index => *a, _ => 0 }).sum();
                let state = ledger.account(&account(number)).unwrap();
                prop_assert_eq!(state.balance.0, balances[index]);
                prop_assert_eq!(state.available().0, balances[index] - held);
            }
            let pending = txns.values().filter(|t| matches!(t, Expected::Pending(..))).count();
            prop_assert_eq!(bank.in_doubt().len(), pending);
            // Single-leg debits remove money; the rest move it: the total
            // only changes by posted single-leg debits, which the model tracks.
            prop_assert_eq!(ledger.total_balance(), balances.iter().map(|b| u128::from(*b)).sum::<u128>());
        }
    }
}

#[test]
fn a_crash_after_any_record_recovers_exactly_the_acknowledged_state() {
    let storage = SimStorage::new();
    let snapshots = BankOptions {
        snapshot_every: 5,
        ..options()
    };
    let bank = Bank::open(
        Arc::new(storage.clone()),
        "bank_a",
        "INR",
        || Ok(model_seeds()),
        snapshots,
    )
    .unwrap()
    .0;
    let mut images = vec![(bank.ledger(), storage.crash())];
    for step in 0..40u8 {
        let now = u64::from(step);
        let from = ACCOUNTS[step as usize % 3];
        let to = ACCOUNTS[(step as usize + 1) % 3];
        let id = txn(step / 2);
        let _ = match step % 4 {
            0 | 1 => block_on(bank.prepare(
                id,
                &[debit(from, 1_000 + now), credit(to, 1_000 + now)],
                now,
            ))
            .map(|_| ()),
            2 => block_on(bank.commit(txn(step / 2 - 1), now)),
            _ => block_on(bank.abort(id, now)),
        };
        bank.checkpoint_if_due(now).unwrap();
        images.push((bank.ledger(), storage.crash()));
    }
    for (index, (expected, image)) in images.into_iter().enumerate() {
        let recovered = Bank::open(
            Arc::new(image),
            "bank_a",
            "INR",
            || Ok(model_seeds()),
            snapshots,
        )
        .unwrap()
        .0;
        let state = recovered.ledger();
        assert_eq!(state.check_invariants(), Ok(()));
        // Snapshots forget nothing here (retention is 7 days): equal in full.
        assert_eq!(state, expected, "state after crash image {index}");
    }
}

#[test]
fn a_crash_at_every_step_of_a_checkpoint_keeps_every_answer() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let legs = [debit("123", 100), credit("456", 100)];
    for n in 1..=6 {
        block_on(bank.prepare(txn(n), &legs, u64::from(n))).unwrap();
        if n % 2 == 0 {
            block_on(bank.commit(txn(n), 10)).unwrap();
        } else if n != 5 {
            block_on(bank.abort(txn(n), 10)).unwrap();
        }
    }
    bank.checkpoint(20).unwrap();
    block_on(bank.prepare(txn(7), &legs, 30)).unwrap();
    block_on(bank.commit(txn(7), 30)).unwrap();
    block_on(bank.abort(txn(8), 30)).unwrap();
    let all = [1, 2, 3, 4, 5, 6, 7, 8];
    let expected = states(&bank, all);
    let balances = balance_and_available(&bank, "123");
    storage.record_crash_images();
    bank.checkpoint(40).unwrap();
    let images = storage.take_crash_images();
    assert!(images.len() > 20, "{} crash images", images.len());
    for (index, image) in images.into_iter().enumerate() {
        let recovered = open(&image);
        assert_eq!(states(&recovered, all), expected, "crash image {index}");
        assert_eq!(balance_and_available(&recovered, "123"), balances);
        assert_eq!(recovered.ledger().check_invariants(), Ok(()));
    }
}

#[test]
fn a_full_disk_during_a_checkpoint_leaves_the_bank_serving_and_the_next_one_moves_everything() {
    let storage = SimStorage::new();
    let bank = open(&storage);
    let legs = [debit("123", 100), credit("456", 100)];
    for n in 1..=4 {
        block_on(bank.prepare(txn(n), &legs, 10)).unwrap();
        block_on(bank.commit(txn(n), 10)).unwrap();
    }
    let all = [1, 2, 3, 4];
    let mut failures = 0;
    for writes_left in 0..6 {
        storage.fail_writes_after(writes_left, std::io::ErrorKind::StorageFull);
        let failed = bank.checkpoint(20);
        storage.fail_writes_after(u64::MAX, std::io::ErrorKind::StorageFull);
        if failed.is_ok() {
            break;
        }
        failures += 1;
        assert!(
            bank.poisoned().is_none(),
            "a failed checkpoint does not poison the log"
        );
        assert_eq!(states(&bank, all), ["posted"; 4], "nothing forgotten");
        // And it goes on serving.
        let more = txn(10 + writes_left as u8);
        block_on(bank.prepare(more, &legs, 20)).unwrap();
        block_on(bank.commit(more, 20)).unwrap();
    }
    assert!(failures >= 2, "{failures} checkpoints failed");
    bank.checkpoint(30).unwrap();
    assert_eq!(
        bank.ledger().txns_in_memory(),
        0,
        "the next checkpoint moved everything"
    );
    let reopened = open(&storage.crash());
    assert_eq!(states(&reopened, all), ["posted"; 4]);
}
