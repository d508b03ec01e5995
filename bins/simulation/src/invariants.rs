//! The six invariants every fault test checks — the deterministic
//! simulation after every step, the real-process chaos test after healing —
//! from what the servers and the clients report. See TESTING.md.
//!
//! 1. Conservation: no payment creates or destroys money; no available
//!    balance exceeds its balance (holds never overdraw).
//! 2. Atomicity: a payment is applied at every leg or at none.
//! 3. Exactly-once: an outcome acknowledged to a client is the gateway's
//!    outcome, and a COMMITTED payment moves its money once, an ABORTED one
//!    never.
//! 4. Durability: nothing acknowledged or decided is lost or changed by a
//!    crash.
//! 5. Liveness after healing: no payment stays INITIATED or unfinished, no
//!    bank holds anything in doubt.
//! 6. Agreement: the gateway's decision and every bank's outcome agree.
//!
//! Where a test can see inside the banks (the simulation), it also passes
//! each bank's per-transaction state, and the atomicity and agreement checks
//! run at every step instead of only through the final balances.

use std::collections::BTreeMap;
use std::fmt;

pub use uuid::Uuid as TxnKey;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountRef {
    pub bank: String,
    pub account: String,
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bank, self.account)
    }
}

/// What a payment asks to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub from: AccountRef,
    pub to: AccountRef,
    pub amount: u64,
}

/// A payment's state at the gateway, or as told to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Initiated,
    Committed,
    Aborted,
}

/// A transaction's state at one bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankTxn {
    /// Voted YES; holds in place.
    Pending,
    /// Committed; `net` is what it added to this bank's balances (credits
    /// minus debits, in minor units).
    Posted { net: i128 },
    /// Voted NO, or aborted (after a YES or before any prepare).
    Voided,
}

/// One bank, as it answered.
#[derive(Clone, Debug, Default)]
pub struct BankView {
    pub name: String,
    /// Account number → (balance, available).
    pub accounts: BTreeMap<String, (u64, u64)>,
    /// Transactions it lists as awaiting a decision.
    pub in_doubt: usize,
    /// Its transactions, where the test can see them (all of them, or those
    /// still in flight: see [`Observation::complete`]).
    pub txns: Option<BTreeMap<TxnKey, BankTxn>>,
    /// What the transactions left out of `txns` moved at this bank.
    pub unlisted_net: i128,
}

/// A payment as the gateway answered for it.
#[derive(Clone, Debug)]
pub struct GatewayEntry {
    pub movement: Movement,
    pub outcome: Outcome,
    /// Phase 2 acknowledged by every bank.
    pub ended: bool,
}

/// Everything observed at one moment.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// The banks that are up.
    pub banks: Vec<BankView>,
    /// The gateway's answer for every payment id clients sent (or those
    /// still in flight); `None` while it is down.
    pub gateway: Option<BTreeMap<TxnKey, GatewayEntry>>,
    /// Every transaction is listed. A partial observation lists only those
    /// still in flight, which keeps checking every step cheap; complete
    /// ones, checked regularly, also prove nothing settled has changed.
    pub complete: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    Conservation,
    Atomicity,
    ExactlyOnce,
    Durability,
    Liveness,
    Agreement,
    /// Beside the six: a balance read that says it misses nothing shows
    /// every payment its client was answered COMMITTED before asking.
    ReadYourWrites,
    /// Beside the six: what finished longer ago than the retention is
    /// forgotten (memory holds the working set), and forgetting it moves no
    /// money.
    Retention,
}

impl Invariant {
    /// The six every fault test checks, in the order of the module doc.
    pub const SIX: [Invariant; 6] = [
        Invariant::Conservation,
        Invariant::Atomicity,
        Invariant::ExactlyOnce,
        Invariant::Durability,
        Invariant::Liveness,
        Invariant::Agreement,
    ];

    const COUNT: usize = 8;

    fn index(self) -> usize {
        match self {
            Invariant::Conservation => 0,
            Invariant::Atomicity => 1,
            Invariant::ExactlyOnce => 2,
            Invariant::Durability => 3,
            Invariant::Liveness => 4,
            Invariant::Agreement => 5,
            Invariant::ReadYourWrites => 6,
            Invariant::Retention => 7,
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::Conservation => "conservation",
            Invariant::Atomicity => "atomicity",
            Invariant::ExactlyOnce => "exactly-once",
            Invariant::Durability => "durability",
            Invariant::Liveness => "liveness",
            Invariant::Agreement => "agreement",
            Invariant::ReadYourWrites => "read your writes",
            Invariant::Retention => "retention",
        })
    }
}

/// An invariant that does not hold, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.invariant, self.detail)
    }
}

impl std::error::Error for Violation {}

/// What one invariant came to over every check so far: how many things
/// (accounts, banks, payments, totals) were checked against it, and its
/// first and worst violation. `magnitude` ranks violations: the money out of
/// place in minor units, or how many things were left in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub checked: u64,
    pub violations: u64,
    pub first: Option<Violation>,
    pub worst: Option<(u128, Violation)>,
}

impl Tally {
    pub fn valid(&self) -> bool {
        self.violations == 0
    }
}

/// Every invariant's [`Tally`], and the first violation found since the
/// public check that is running began (what that check returns).
#[derive(Clone, Debug, Default)]
struct Findings {
    tallies: [Tally; Invariant::COUNT],
    first_in_check: Option<Violation>,
}

impl Findings {
    fn checked(&mut self, invariant: Invariant) {
        self.tallies[invariant.index()].checked += 1;
    }

    /// Counts one check of `invariant` that failed.
    fn violated(&mut self, invariant: Invariant, magnitude: u128, detail: String) {
        let found = Violation { invariant, detail };
        let tally = &mut self.tallies[invariant.index()];
        tally.checked += 1;
        tally.violations += 1;
        assert!(tally.violations <= tally.checked);
        if tally.first.is_none() {
            tally.first = Some(found.clone());
        }
        if tally
            .worst
            .as_ref()
            .is_none_or(|(worst, _)| magnitude > *worst)
        {
            tally.worst = Some((magnitude, found.clone()));
        }
        self.first_in_check.get_or_insert(found);
    }

    /// The end of a public check: its first violation, if any.
    fn verdict(&mut self) -> Result<(), Violation> {
        match self.first_in_check.take() {
            Some(found) => Err(found),
            None => Ok(()),
        }
    }
}

fn money_apart(left: i128, right: i128) -> u128 {
    left.abs_diff(right)
}

/// Checks observations against the invariants, remembering what must never
/// change: the opening balances, what clients were told, and every decision
/// the gateway has shown.
#[derive(Clone, Debug)]
pub struct Checker {
    initial: BTreeMap<AccountRef, u64>,
    banks: usize,
    acknowledged: BTreeMap<TxnKey, Outcome>,
    decided: BTreeMap<TxnKey, Outcome>,
    findings: Findings,
}

impl Checker {
    /// `initial`: every account's opening balance.
    pub fn new(initial: BTreeMap<AccountRef, u64>) -> Checker {
        let mut banks: Vec<&str> = initial.keys().map(|key| key.bank.as_str()).collect();
        banks.dedup();
        Checker {
            banks: banks.len(),
            initial,
            acknowledged: BTreeMap::new(),
            decided: BTreeMap::new(),
            findings: Findings::default(),
        }
    }

    /// What every check so far came to, for `invariant`. A check does not
    /// stop at a violation: it checks everything and returns the first, so
    /// the tallies count every violation and know the worst.
    pub fn tally(&self, invariant: Invariant) -> &Tally {
        &self.findings.tallies[invariant.index()]
    }

    /// The opening balance of `account` (zero if it did not exist).
    pub fn initial_balance(&self, account: &AccountRef) -> u64 {
        self.initial.get(account).copied().unwrap_or_default()
    }

    pub fn total(&self) -> u128 {
        self.initial
            .values()
            .map(|&balance| u128::from(balance))
            .sum()
    }

    /// Outcomes acknowledged to clients so far.
    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    /// A client was told `outcome` (COMMITTED or ABORTED) for `txn`. Telling
    /// two clients (or one client twice) different outcomes is a violation.
    pub fn acknowledged(&mut self, txn: TxnKey, outcome: Outcome) -> Result<(), Violation> {
        if outcome == Outcome::Initiated {
            return Ok(());
        }
        match self.acknowledged.insert(txn, outcome) {
            Some(earlier) if earlier != outcome => self.findings.violated(
                Invariant::ExactlyOnce,
                1,
                format!("txn {txn} was acknowledged {earlier:?} and later {outcome:?}"),
            ),
            _ => self.findings.checked(Invariant::ExactlyOnce),
        }
        self.findings.verdict()
    }

    /// The invariants that hold at every moment, faults or not. Returns the
    /// first violation; every one is counted in the tallies.
    pub fn check(&mut self, observation: &Observation) -> Result<(), Violation> {
        self.check_always(observation);
        self.findings.verdict()
    }

    fn check_always(&mut self, observation: &Observation) {
        for bank in &observation.banks {
            for (account, &(balance, available)) in &bank.accounts {
                if available > balance {
                    self.findings.violated(
                        Invariant::Conservation,
                        u128::from(available - balance),
                        format!(
                            "{}/{account}: available {available} exceeds balance {balance}",
                            bank.name
                        ),
                    );
                } else {
                    self.findings.checked(Invariant::Conservation);
                }
            }
            self.check_bank_bookkeeping(bank);
        }
        if let Some(gateway) = &observation.gateway {
            self.check_gateway_memory(gateway, observation.complete);
        }
        self.check_transactions(observation);
        if observation.banks.len() == self.banks
            && observation.banks.iter().all(|bank| bank.txns.is_some())
        {
            self.check_total_with_money_in_flight(observation);
        }
    }

    /// Money in flight: posted at one bank of a cross-bank payment, not yet
    /// at the other. Every bank's balances must equal its opening balances
    /// plus what its posted transactions moved.
    fn check_total_with_money_in_flight(&mut self, observation: &Observation) {
        let posted: i128 = observation
            .banks
            .iter()
            .flat_map(|bank| bank.txns.iter().flatten())
            .map(|(_, state)| match state {
                BankTxn::Posted { net } => *net,
                _ => 0,
            })
            .sum();
        let unlisted: i128 = observation.banks.iter().map(|bank| bank.unlisted_net).sum();
        let total: i128 = sum_balances(observation) as i128;
        let opened = self.total() as i128;
        if total - posted - unlisted != opened {
            self.findings.violated(
                Invariant::Conservation,
                money_apart(total - posted - unlisted, opened),
                format!(
                    "balances sum to {total}, posted transactions moved {posted}, but the banks opened with {opened}"
                ),
            );
        } else {
            self.findings.checked(Invariant::Conservation);
        }
    }

    /// Everything [`Checker::check`] checks, plus what must hold once every
    /// node is up and connected and the system has settled: nothing in
    /// flight, and balances that are exactly the committed payments applied
    /// once to the opening balances. Returns the first violation; every one
    /// is counted in the tallies.
    pub fn check_healed(&mut self, observation: &Observation) -> Result<(), Violation> {
        assert!(
            observation.complete,
            "healing is checked on a complete observation"
        );
        self.check_always(observation);
        self.check_every_bank_answered(observation);
        match &observation.gateway {
            Some(gateway) => {
                check_no_payment_in_flight(&mut self.findings, gateway);
                check_no_bank_holds_anything(&mut self.findings, observation);
                self.check_total_after_healing(observation);
                self.check_committed_applied_once(gateway, observation);
            }
            None => self.findings.violated(
                Invariant::Liveness,
                1,
                "the gateway did not answer after healing".into(),
            ),
        }
        self.findings.verdict()
    }

    /// Liveness: after healing every bank is up and answers.
    fn check_every_bank_answered(&mut self, observation: &Observation) {
        if observation.banks.len() != self.banks {
            self.findings.violated(
                Invariant::Liveness,
                self.banks.abs_diff(observation.banks.len()) as u128,
                format!(
                    "only {} of {} banks answered after healing",
                    observation.banks.len(),
                    self.banks
                ),
            );
        } else {
            self.findings.checked(Invariant::Liveness);
        }
    }

    /// Conservation, exactly: with nothing in flight, the balances sum to
    /// what the banks opened with (no money on its way between two banks).
    fn check_total_after_healing(&mut self, observation: &Observation) {
        let total = sum_balances(observation);
        if total != self.total() {
            self.findings.violated(
                Invariant::Conservation,
                total.abs_diff(self.total()),
                format!(
                    "balances sum to {total} after healing; the banks opened with {}",
                    self.total()
                ),
            );
        } else {
            self.findings.checked(Invariant::Conservation);
        }
    }

    /// Atomicity, through the balances: every account holds its opening
    /// balance with every committed payment applied once, every other never.
    /// This catches what a sum cannot: a debit without its credit at another
    /// account, or a payment applied twice and another never.
    fn check_committed_applied_once(
        &mut self,
        gateway: &BTreeMap<TxnKey, GatewayEntry>,
        observation: &Observation,
    ) {
        let mut expected: BTreeMap<AccountRef, i128> = self
            .initial
            .iter()
            .map(|(account, &balance)| (account.clone(), i128::from(balance)))
            .collect();
        for entry in gateway.values() {
            if entry.outcome == Outcome::Committed {
                let amount = i128::from(entry.movement.amount);
                *expected.entry(entry.movement.from.clone()).or_default() -= amount;
                *expected.entry(entry.movement.to.clone()).or_default() += amount;
            }
        }
        for bank in &observation.banks {
            for (account, &(balance, _)) in &bank.accounts {
                let key = AccountRef {
                    bank: bank.name.clone(),
                    account: account.clone(),
                };
                let want = expected.get(&key).copied().unwrap_or_default();
                if i128::from(balance) != want {
                    self.findings.violated(
                        Invariant::Atomicity,
                        money_apart(i128::from(balance), want),
                        format!(
                            "{key} holds {balance}, but its opening balance and the committed payments make {want}"
                        ),
                    );
                } else {
                    self.findings.checked(Invariant::Atomicity);
                }
            }
        }
    }

    /// A bank's balances are its opening balances plus what its posted
    /// transactions moved (a commit applied twice would break this).
    fn check_bank_bookkeeping(&mut self, bank: &BankView) {
        let Some(txns) = &bank.txns else {
            return;
        };
        let opened: i128 = self
            .initial
            .iter()
            .filter(|(account, _)| account.bank == bank.name)
            .map(|(_, &balance)| i128::from(balance))
            .sum();
        let posted: i128 = bank.unlisted_net
            + txns
                .values()
                .map(|state| match state {
                    BankTxn::Posted { net } => *net,
                    _ => 0,
                })
                .sum::<i128>();
        let now: i128 = bank
            .accounts
            .values()
            .map(|&(balance, _)| i128::from(balance))
            .sum();
        if now != opened + posted {
            self.findings.violated(
                Invariant::Conservation,
                money_apart(now, opened + posted),
                format!(
                    "{} holds {now}: not its opening {opened} plus the {posted} its posted transactions moved",
                    bank.name
                ),
            );
        } else {
            self.findings.checked(Invariant::Conservation);
        }
    }

    /// Decisions shown once never change or vanish, and acknowledged
    /// outcomes are the gateway's.
    fn check_gateway_memory(&mut self, gateway: &BTreeMap<TxnKey, GatewayEntry>, complete: bool) {
        for (txn, entry) in gateway {
            if entry.outcome == Outcome::Initiated {
                continue;
            }
            match self.decided.insert(*txn, entry.outcome) {
                Some(earlier) if earlier != entry.outcome => self.findings.violated(
                    Invariant::Durability,
                    u128::from(entry.movement.amount),
                    format!(
                        "the gateway decided txn {txn} {earlier:?} and now says {:?}",
                        entry.outcome
                    ),
                ),
                _ => self.findings.checked(Invariant::Durability),
            }
        }
        if complete {
            for txn in self.decided.keys() {
                if gateway.contains_key(txn) {
                    self.findings.checked(Invariant::Durability);
                } else {
                    self.findings.violated(
                        Invariant::Durability,
                        1,
                        format!("the gateway decided txn {txn} and has forgotten it"),
                    );
                }
            }
        }
        for (txn, told) in &self.acknowledged {
            match gateway.get(txn) {
                None if !complete => {}
                None => self.findings.violated(
                    Invariant::Durability,
                    1,
                    format!("txn {txn} was acknowledged {told:?} and the gateway lost it"),
                ),
                Some(entry) if entry.outcome != *told => self.findings.violated(
                    Invariant::ExactlyOnce,
                    u128::from(entry.movement.amount),
                    format!(
                        "txn {txn} was acknowledged {told:?} but the gateway says {:?}",
                        entry.outcome
                    ),
                ),
                Some(_) => self.findings.checked(Invariant::ExactlyOnce),
            }
        }
    }

    /// Per transaction, where the banks' states are visible: all legs agree
    /// (atomicity), and with the gateway's decision (agreement) and with
    /// what clients were told (exactly-once).
    fn check_transactions(&mut self, observation: &Observation) {
        let mut states: BTreeMap<TxnKey, Vec<(&str, BankTxn)>> = BTreeMap::new();
        for bank in &observation.banks {
            for (txn, state) in bank.txns.iter().flatten() {
                states
                    .entry(*txn)
                    .or_default()
                    .push((bank.name.as_str(), *state));
            }
        }
        for (txn, at_banks) in states {
            let posted = at_banks
                .iter()
                .find(|(_, state)| matches!(state, BankTxn::Posted { .. }));
            let voided = at_banks.iter().find(|(_, state)| *state == BankTxn::Voided);
            if let (Some((posted_at, _)), Some((voided_at, _))) = (posted, voided) {
                self.findings.violated(
                    Invariant::Atomicity,
                    1,
                    format!("txn {txn} is committed at {posted_at} and aborted at {voided_at}"),
                );
            } else {
                self.findings.checked(Invariant::Atomicity);
            }
            self.check_transaction_decision(txn, posted, voided, observation);
        }
    }

    /// One transaction's bank states against the gateway's decision
    /// (agreement) and what its client was told (exactly-once).
    fn check_transaction_decision(
        &mut self,
        txn: TxnKey,
        posted: Option<&(&str, BankTxn)>,
        voided: Option<&(&str, BankTxn)>,
        observation: &Observation,
    ) {
        // While the gateway is down, only decisions already seen count.
        let decision = match &observation.gateway {
            Some(gateway) => gateway.get(&txn).map(|entry| entry.outcome),
            None => self.decided.get(&txn).copied(),
        };
        let decision_known = observation.gateway.is_some() || decision.is_some();
        if let Some((bank, _)) = posted
            && decision_known
            && decision != Some(Outcome::Committed)
        {
            self.findings.violated(
                Invariant::Agreement,
                1,
                format!("{bank} committed txn {txn}, but the gateway's decision is {decision:?}"),
            );
        } else if let Some((bank, _)) = voided
            && decision == Some(Outcome::Committed)
        {
            self.findings.violated(
                Invariant::Agreement,
                1,
                format!("{bank} aborted txn {txn}, but the gateway decided COMMIT"),
            );
        } else if decision_known {
            self.findings.checked(Invariant::Agreement);
        }
        match self.acknowledged.get(&txn) {
            Some(Outcome::Aborted) if posted.is_some() => self.findings.violated(
                Invariant::ExactlyOnce,
                1,
                format!("txn {txn} was acknowledged ABORTED but is committed at a bank"),
            ),
            Some(Outcome::Committed) if voided.is_some() => self.findings.violated(
                Invariant::ExactlyOnce,
                1,
                format!("txn {txn} was acknowledged COMMITTED but is aborted at a bank"),
            ),
            Some(_) => self.findings.checked(Invariant::ExactlyOnce),
            None => {}
        }
    }
}

/// Liveness at the gateway: after healing every payment is decided and its
/// phase 2 acknowledged by every bank.
fn check_no_payment_in_flight(findings: &mut Findings, gateway: &BTreeMap<TxnKey, GatewayEntry>) {
    for (txn, entry) in gateway {
        if entry.outcome == Outcome::Initiated {
            findings.violated(
                Invariant::Liveness,
                1,
                format!("txn {txn} is still INITIATED after healing"),
            );
        } else if !entry.ended {
            findings.violated(
                Invariant::Liveness,
                1,
                format!(
                    "txn {txn} ({:?}) still awaits phase 2 after healing",
                    entry.outcome
                ),
            );
        } else {
            findings.checked(Invariant::Liveness);
        }
    }
}

/// Liveness at the banks: after healing no bank has a transaction in doubt
/// and no account has a hold left (its available balance is its balance).
fn check_no_bank_holds_anything(findings: &mut Findings, observation: &Observation) {
    for bank in &observation.banks {
        if bank.in_doubt != 0 {
            findings.violated(
                Invariant::Liveness,
                bank.in_doubt as u128,
                format!(
                    "{} still holds {} transactions in doubt after healing",
                    bank.name, bank.in_doubt
                ),
            );
        } else {
            findings.checked(Invariant::Liveness);
        }
        for (account, &(balance, available)) in &bank.accounts {
            if available != balance {
                findings.violated(
                    Invariant::Liveness,
                    1,
                    format!(
                        "{}/{account} still holds {} after healing",
                        bank.name,
                        balance.abs_diff(available)
                    ),
                );
            } else {
                findings.checked(Invariant::Liveness);
            }
        }
    }
}

fn sum_balances(observation: &Observation) -> u128 {
    observation
        .banks
        .iter()
        .flat_map(|bank| bank.accounts.values())
        .map(|&(balance, _)| u128::from(balance))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(bank: &str, account: &str) -> AccountRef {
        AccountRef {
            bank: bank.into(),
            account: account.into(),
        }
    }

    fn checker() -> Checker {
        Checker::new(BTreeMap::from([
            (account("a", "1"), 100),
            (account("b", "2"), 50),
        ]))
    }

    const T: TxnKey = TxnKey::from_u128(7);

    fn bank(name: &str, number: &str, balance: u64, txns: &[(TxnKey, BankTxn)]) -> BankView {
        BankView {
            name: name.into(),
            accounts: BTreeMap::from([(number.into(), (balance, balance))]),
            in_doubt: 0,
            txns: Some(txns.iter().copied().collect()),
            unlisted_net: 0,
        }
    }

    fn gateway(outcome: Outcome) -> Option<BTreeMap<TxnKey, GatewayEntry>> {
        Some(BTreeMap::from([(
            T,
            GatewayEntry {
                movement: Movement {
                    from: account("a", "1"),
                    to: account("b", "2"),
                    amount: 10,
                },
                outcome,
                ended: true,
            },
        )]))
    }

    fn committed(net: i128) -> BankTxn {
        BankTxn::Posted { net }
    }

    #[test]
    fn a_committed_cross_bank_payment_settled_passes() {
        let observation = Observation {
            banks: vec![
                bank("a", "1", 90, &[(T, committed(-10))]),
                bank("b", "2", 60, &[(T, committed(10))]),
            ],
            gateway: gateway(Outcome::Committed),
            complete: true,
        };
        let mut checker = checker();
        checker.acknowledged(T, Outcome::Committed).unwrap();
        checker.check_healed(&observation).unwrap();
    }

    #[test]
    fn each_broken_state_names_its_invariant() {
        let cases = [
            (
                "money created: the credit landed, the debit never did",
                vec![
                    bank("a", "1", 100, &[(T, BankTxn::Voided)]),
                    bank("b", "2", 60, &[(T, committed(10))]),
                ],
                Outcome::Committed,
                Invariant::Atomicity,
            ),
            (
                "a commit applied twice",
                vec![
                    bank("a", "1", 80, &[(T, committed(-10))]),
                    bank("b", "2", 60, &[(T, committed(10))]),
                ],
                Outcome::Committed,
                Invariant::Conservation,
            ),
            (
                "a bank committed what the gateway aborted",
                vec![
                    bank("a", "1", 90, &[(T, committed(-10))]),
                    bank("b", "2", 60, &[(T, committed(10))]),
                ],
                Outcome::Aborted,
                Invariant::Agreement,
            ),
            (
                "a hold left in place",
                vec![
                    bank("a", "1", 100, &[(T, BankTxn::Pending)]),
                    bank("b", "2", 50, &[]),
                ],
                Outcome::Aborted,
                Invariant::Liveness,
            ),
        ];
        for (what, banks, outcome, invariant) in cases {
            let mut banks = banks;
            if invariant == Invariant::Liveness {
                banks[0].in_doubt = 1;
            }
            let observation = Observation {
                banks,
                gateway: gateway(outcome),
                complete: true,
            };
            let found = checker().check_healed(&observation).unwrap_err();
            assert_eq!(found.invariant, invariant, "{what}: {found}");
        }
    }

    #[test]
    fn acknowledged_outcomes_must_survive_and_never_change() {
        let mut checker = checker();
        checker.acknowledged(T, Outcome::Committed).unwrap();
        let lost = Observation {
            banks: Vec::new(),
            gateway: Some(BTreeMap::new()),
            complete: true,
        };
        assert_eq!(
            checker.check(&lost).unwrap_err().invariant,
            Invariant::Durability
        );
        let flipped = Observation {
            banks: Vec::new(),
            gateway: gateway(Outcome::Aborted),
            complete: true,
        };
        assert_eq!(
            checker.check(&flipped).unwrap_err().invariant,
            Invariant::ExactlyOnce
        );
        assert_eq!(
            checker
                .acknowledged(T, Outcome::Aborted)
                .unwrap_err()
                .invariant,
            Invariant::ExactlyOnce
        );
    }

    #[test]
    fn only_a_complete_observation_may_prove_a_decision_forgotten() {
        let mut checker = checker();
        checker.acknowledged(T, Outcome::Committed).unwrap();
        let mut in_flight_only = Observation {
            banks: Vec::new(),
            gateway: Some(BTreeMap::new()),
            complete: false,
        };
        checker.check(&in_flight_only).unwrap();
        in_flight_only.complete = true;
        assert_eq!(
            checker.check(&in_flight_only).unwrap_err().invariant,
            Invariant::Durability
        );
    }

    #[test]
    fn money_moved_by_unlisted_transactions_is_counted() {
        // bank a's settled payments took 10 away; they are no longer listed.
        let mut settled = bank("a", "1", 90, &[]);
        settled.unlisted_net = -10;
        let observation = Observation {
            banks: vec![settled, bank("b", "2", 50, &[])],
            gateway: Some(BTreeMap::new()),
            complete: false,
        };
        checker().check(&observation).unwrap();
        let mut forgot = observation.clone();
        forgot.banks[0].unlisted_net = 0;
        assert_eq!(
            checker().check(&forgot).unwrap_err().invariant,
            Invariant::Conservation
        );
    }

    #[test]
    fn a_decision_may_not_change_between_observations() {
        let mut checker = checker();
        let first = Observation {
            banks: Vec::new(),
            gateway: gateway(Outcome::Aborted),
            complete: true,
        };
        checker.check(&first).unwrap();
        let later = Observation {
            banks: Vec::new(),
            gateway: gateway(Outcome::Committed),
            complete: true,
        };
        assert_eq!(
            checker.check(&later).unwrap_err().invariant,
            Invariant::Durability
        );
    }

    #[test]
    fn a_check_counts_every_violation_and_keeps_the_first_and_the_worst() {
        // Both accounts are off after healing: a by 3, b by 20.
        let observation = Observation {
            banks: vec![bank("a", "1", 97, &[]), bank("b", "2", 70, &[])],
            gateway: Some(BTreeMap::new()),
            complete: true,
        };
        let mut checker = checker();
        let found = checker.check_healed(&observation).unwrap_err();
        let atomicity = checker.tally(Invariant::Atomicity);
        assert_eq!((atomicity.checked, atomicity.violations), (2, 2));
        let first = atomicity.first.as_ref().unwrap();
        assert!(first.detail.starts_with("a/1 holds 97"), "{first}");
        let (magnitude, worst) = atomicity.worst.as_ref().unwrap();
        assert_eq!(*magnitude, 20);
        assert!(worst.detail.starts_with("b/2 holds 70"), "{worst}");
        // The first violation of the check is the one it returns, and the
        // invariants that held are counted as checked and valid.
        assert_eq!(found.invariant, Invariant::Conservation);
        assert!(checker.tally(Invariant::Liveness).valid());
        assert!(checker.tally(Invariant::Liveness).checked > 0);
        assert!(!checker.tally(Invariant::Conservation).valid());
    }
}
