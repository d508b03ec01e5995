//! Registrations, the way `Register` runs them: newcomers (users with no
//! account yet) now and then ask the gateway to register them at a bank;
//! the gateway runs the core's protocol (`Gateway::register_begin` reserves
//! the name, the password is hashed, the bank opens an empty account, a
//! message on the network, and `Registration::finish` writes the user) and
//! answers. The network's duplicates and the newcomers' own resends send
//! the same name twice, concurrently or later.
//!
//! Checked here: a name is never registered twice (a second answer of
//! success for it); and after healing every registration answered with
//! success is a user of the gateway with the account its bank opened.
//! Opened accounts hold nothing, so the money the checker counts is
//! unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coordinator::GatewayError;
use coordinator::users::{HashCost, PasswordHasher};
use ledger::{Bank, BankError};
use money::{AccountNo, Amount, BankName};
use rand::Rng;

use crate::invariants::{Invariant, Violation};
use crate::network::{Dest, Msg, Reply, SimParticipant, lock};
use crate::nodes::{COMMIT_TIMEOUT_MS, SimGateway};
use crate::workload::bank_name;
use crate::{BANKS, Broken, World};

/// Every newcomer's password (the simulation does not log in).
const PASSWORD: &str = "newcomer-password";

/// The registrations answered with success: the bank and account of each.
pub(crate) type Registered = BTreeMap<String, (BankName, AccountNo)>;

impl World {
    /// Now and then, while faults are on, a newcomer registers, or one
    /// that did resends its registration.
    pub(crate) fn newcomers_act(&mut self, now: u64) {
        if !self.faults || !self.rng.random_ratio(1, 40) {
            return;
        }
        let (username, bank) = if self.newcomers > 0 && self.rng.random_ratio(1, 4) {
            let again = self.rng.random_range(0..self.newcomers);
            (format!("newcomer_{again}"), again as usize % BANKS.len())
        } else {
            self.newcomers += 1;
            let index = self.newcomers - 1;
            (format!("newcomer_{index}"), index as usize % BANKS.len())
        };
        self.event(format!("{username}: registers at {}", BANKS[bank]));
        lock(&self.net).send(now, Dest::Gateway, Msg::Register { username, bank });
    }

    /// The gateway runs a registration and answers the newcomer.
    pub(crate) fn gateway_registers(
        &mut self,
        gateway: Arc<SimGateway>,
        username: String,
        bank: usize,
    ) {
        let banks = SimParticipant {
            net: Arc::clone(&self.net),
            clock: self.clock.clone(),
        };
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.gateway.failed);
        let clock = self.clock.clone();
        let broken = self.config.broken == Some(Broken::RegistrationBeforeDurable);
        self.spawn(Dest::Gateway, async move {
            let bank = bank_name(BANKS[bank]);
            let answer_early = broken.then(|| {
                let (net, clock, username, bank) = (
                    Arc::clone(&net),
                    clock.clone(),
                    username.clone(),
                    bank.clone(),
                );
                Box::new(move |account: &AccountNo| {
                    let answer = Ok((bank, account.clone()));
                    let registered = Msg::Registered { username, answer };
                    lock(&net).send(clock.now(), Dest::Registrar, registered);
                }) as AnswerEarly
            });
            let answer = match register(&gateway, &banks, &username, &bank, answer_early).await {
                Registering::Registered(_) if broken => return,
                Registering::Registered(account) => Ok((bank, account)),
                Registering::Refused(why) => Err(why),
                Registering::StorageFailed => {
                    failed.store(true, Ordering::SeqCst);
                    return;
                }
            };
            lock(&net).send(
                clock.now(),
                Dest::Registrar,
                Msg::Registered { username, answer },
            );
        });
    }

    /// Bank `index` opens an empty account for a newcomer.
    pub(crate) fn bank_opens_account(
        &mut self,
        index: usize,
        bank: Arc<Bank>,
        call: u64,
        owner: String,
        now: u64,
    ) {
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.banks[index].node.failed);
        self.spawn(Dest::Bank(index), async move {
            let reply = match bank.open_account(None, &owner, Amount::ZERO).await {
                Ok(account) => Reply::Opened(account),
                Err(BankError::Refused(error)) => Reply::Refused(error.to_string()),
                Err(BankError::Storage(_) | BankError::History { .. }) => {
                    failed.store(true, Ordering::SeqCst);
                    return;
                }
            };
            lock(&net).send(now, Dest::Gateway, Msg::Reply { call, reply });
        });
    }

    /// A newcomer gets its answer: success for one name with two accounts
    /// is a violation (the same answer twice is the network duplicating it).
    pub(crate) fn newcomer_answer(&mut self, msg: Msg) -> Result<(), Violation> {
        let Msg::Registered { username, answer } = msg else {
            panic!("a newcomer cannot receive {msg:?}");
        };
        let Ok(opened) = answer else {
            self.event(format!("{username}: not registered"));
            return Ok(());
        };
        self.event(format!("{username}: registered"));
        match self.registered.insert(username.clone(), opened.clone()) {
            None => {
                self.report.counts.registrations += 1;
                Ok(())
            }
            // The network delivered the same answer twice.
            Some(earlier) if earlier == opened => Ok(()),
            Some(earlier) => Err(Violation {
                invariant: Invariant::ExactlyOnce,
                detail: format!("{username} was registered twice: {earlier:?}, then {opened:?}"),
            }),
        }
    }

    /// After healing: every registration answered with success is a user
    /// with the account its bank opened, and the bank has that account.
    pub(crate) fn check_registrations(&self) -> Result<(), Violation> {
        let Some(gateway) = &self.gateway.up else {
            return Ok(());
        };
        for (username, (bank, account)) in &self.registered {
            let lost = || Violation {
                invariant: Invariant::Durability,
                detail: format!(
                    "{username} was answered registered at {bank}/{account}, then lost"
                ),
            };
            if gateway.user_account(username) != Some((bank.clone(), account.clone())) {
                return Err(lost());
            }
            let index = BANKS
                .iter()
                .position(|name| bank == name)
                .expect("a simulated bank");
            let opened = self.banks[index]
                .node
                .up
                .as_ref()
                .is_some_and(|node| node.inspect(|ledger| ledger.account(account).is_some()));
            if !opened {
                return Err(lost());
            }
        }
        Ok(())
    }
}

/// Sends the newcomer its answer ahead of the rule (see [`register`]).
type AnswerEarly = Box<dyn FnOnce(&AccountNo)>;

/// How a registration ended at the gateway.
enum Registering {
    Registered(AccountNo),
    Refused(String),
    /// The decision log failed: the gateway must stop.
    StorageFailed,
}

/// The core's registration protocol, with the bank reached by message.
/// `answer_early` breaks the rule on purpose: it is given the account as
/// soon as the bank opened it, before the user is durable.
async fn register(
    gateway: &SimGateway,
    banks: &SimParticipant,
    username: &str,
    bank: &BankName,
    answer_early: Option<AnswerEarly>,
) -> Registering {
    let refused = |error: GatewayError| match error {
        GatewayError::Storage(_) => Registering::StorageFailed,
        other => Registering::Refused(other.to_string()),
    };
    let registration = match gateway.register_begin(username, PASSWORD, bank, None) {
        Ok(registration) => registration,
        Err(error) => return refused(error),
    };
    let hash = PasswordHasher::new(HashCost::SIMULATION_ONLY).hash(PASSWORD, registration.salt());
    let timeout = Duration::from_millis(COMMIT_TIMEOUT_MS);
    // A bank that does not answer leaves the name free again (the
    // registration is dropped); an account it opened stays, empty.
    let account = match banks.open_account(bank, username, timeout).await {
        Ok(account) => account,
        Err(error) => return Registering::Refused(error.to_string()),
    };
    if let Some(answer) = answer_early {
        answer(&account);
    }
    match registration.finish(hash, &account).await {
        Ok(()) => Registering::Registered(account),
        Err(error) => refused(error),
    }
}
