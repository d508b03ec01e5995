//! The workload: one client per account, each paying other accounts (at
//! the same bank or another) now and then, mostly amounts it can afford and
//! sometimes more; resending a payment with its txn id, with doubling
//! backoff, until it has an outcome; and now and then misusing an id that
//! was already answered for another amount, which the gateway must refuse.
//! A client's answer is checked here: an acknowledged outcome goes to the
//! checker, and a refused valid payment or an accepted reuse is a violation.
//!
//! Clients know the gateway only as an address on the network: not whether
//! it is up, nor the banks behind it. New payments stop with the faults;
//! resends go on until every payment has its outcome.

use std::collections::{BTreeMap, BTreeSet};

use coordinator::{PaymentRequest, Status};
use money::{AccountNo, Amount, BankName, TxnId};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

use crate::invariants::{AccountRef, Outcome, Violation};
use crate::network::{Dest, Msg, lock};
use crate::observation::txn_key;
use crate::{BANKS, CURRENCY, EPOCH_MS, World};

const ACCOUNTS_PER_BANK: usize = 2;

const CLIENT_RETRY_MS_MIN: u64 = 200;
const CLIENT_RETRY_MS_MAX: u64 = 3_200;

pub(crate) struct Client {
    pub(crate) user: String,
    pub(crate) account: AccountRef,
    /// The payment being sent until it has an outcome, and when to resend.
    pub(crate) outstanding: Option<(PaymentRequest, u64, u64)>,
    /// The last payment that got its outcome (its id is sometimes misused).
    last_answered: Option<PaymentRequest>,
    /// Its payments answered COMMITTED: a balance read must show them.
    committed: BTreeSet<TxnId>,
    next_payment_at: u64,
}

/// One client per account, and each account's opening balance; drawn from
/// `rng` account by account.
pub(crate) fn clients(rng: &mut StdRng) -> (BTreeMap<AccountRef, u64>, Vec<Client>) {
    let mut initial = BTreeMap::new();
    let mut clients = Vec::new();
    for (bank_index, bank) in BANKS.iter().enumerate() {
        for index in 0..ACCOUNTS_PER_BANK {
            let account = AccountRef {
                bank: (*bank).to_owned(),
                account: account_name(bank_index, index),
            };
            initial.insert(account.clone(), rng.random_range(1_000..=100_000));
            clients.push(Client {
                user: format!("user_{}", account.account),
                account,
                outstanding: None,
                last_answered: None,
                committed: BTreeSet::new(),
                next_payment_at: EPOCH_MS + rng.random_range(0..500),
            });
        }
    }
    (initial, clients)
}

fn account_name(bank: usize, index: usize) -> String {
    format!("{}{}", (b'a' + bank as u8) as char, index + 1)
}

pub(crate) fn bank_name(name: &str) -> BankName {
    BankName::parse(name).expect("the simulation's bank names are valid")
}

pub(crate) fn account_no(number: &str) -> AccountNo {
    AccountNo::parse(number).expect("the simulation's account numbers are valid")
}

/// The checker's account as the gateway names it.
fn endpoint(account: &AccountRef) -> coordinator::Endpoint {
    coordinator::Endpoint {
        bank: bank_name(&account.bank),
        account: account_no(&account.account),
    }
}

impl World {
    /// Client `client` receives an answer from the gateway.
    pub(crate) fn client_answer(&mut self, client: usize, msg: Msg) -> Result<(), Violation> {
        match msg {
            Msg::PayAnswer {
                txn,
                answer,
                reused,
            } => self.client_paid(client, txn, answer, reused),
            Msg::BalanceAnswer {
                committed,
                posted,
                unsettled,
            } => self.client_read_balance(client, &committed, &posted, unsettled),
            other => panic!("a client cannot receive {other:?}"),
        }
    }

    /// A balance read that says it may miss nothing (`unsettled` 0) shows
    /// every payment the client was answered COMMITTED before it asked.
    fn client_read_balance(
        &mut self,
        client: usize,
        committed: &BTreeSet<TxnId>,
        posted: &BTreeSet<TxnId>,
        unsettled: usize,
    ) -> Result<(), Violation> {
        self.event(format!(
            "client {client}: balance read, {unsettled} unsettled"
        ));
        self.report.counts.balance_reads += 1;
        if unsettled > 0 {
            return Ok(());
        }
        match committed.difference(posted).next() {
            None => Ok(()),
            Some(missing) => Err(Violation {
                invariant: crate::invariants::Invariant::ReadYourWrites,
                detail: format!(
                    "client {client}'s balance read claimed to miss nothing but did not show its committed payment {missing}"
                ),
            }),
        }
    }

    /// Client `client` receives the gateway's answer to a payment.
    fn client_paid(
        &mut self,
        client: usize,
        txn: TxnId,
        answer: Result<Status, String>,
        reused: bool,
    ) -> Result<(), Violation> {
        if reused {
            return match answer {
                Err(message) if message.contains("already used for a different payment") => {
                    self.event(format!("client {client}: reuse of {txn} refused"));
                    self.report.counts.reuses_refused += 1;
                    Ok(())
                }
                other => Err(Violation {
                    invariant: crate::invariants::Invariant::ExactlyOnce,
                    detail: format!(
                        "txn id {txn} reused for another amount was answered {other:?}"
                    ),
                }),
            };
        }
        let outcome = match answer {
            Ok(Status::Committed) => Outcome::Committed,
            Ok(Status::Aborted) => Outcome::Aborted,
            Ok(Status::Initiated) => return Ok(()),
            Err(message) => {
                return Err(Violation {
                    invariant: crate::invariants::Invariant::ExactlyOnce,
                    detail: format!("the gateway refused valid payment {txn}: {message}"),
                });
            }
        };
        self.event(format!("client {client}: {txn} {outcome:?}"));
        self.checker.acknowledged(txn_key(txn), outcome)?;
        let state = &mut self.clients[client];
        if state
            .outstanding
            .as_ref()
            .is_some_and(|(request, _, _)| request.txn == txn)
        {
            state.last_answered = state.outstanding.take().map(|(request, _, _)| request);
            match outcome {
                Outcome::Committed => {
                    state.committed.insert(txn);
                    self.report.counts.committed += 1;
                }
                _ => self.report.counts.aborted += 1,
            }
        }
        Ok(())
    }

    /// Each client resends its payment if due, or else makes a new one.
    pub(crate) fn clients_act(&mut self, now: u64) {
        for index in 0..self.clients.len() {
            let resend = match &mut self.clients[index].outstanding {
                Some((request, resend_at, backoff)) if now >= *resend_at => {
                    *resend_at = now + *backoff + self.rng.random_range(0..*backoff);
                    *backoff = (*backoff * 2).min(CLIENT_RETRY_MS_MAX);
                    Some(request.clone())
                }
                _ => None,
            };
            if let Some(request) = resend {
                self.event(format!("client {index}: resend {}", request.txn));
                self.send_pay(now, index, request, false);
                continue;
            }
            if self.faults && self.rng.random_ratio(1, 100) {
                self.ask_balance(now, index);
            }
            let client = &self.clients[index];
            if !self.faults || client.outstanding.is_some() || now < client.next_payment_at {
                continue;
            }
            if let Some(answered) = &client.last_answered
                && self.rng.random_ratio(1, 20)
            {
                let mut misuse = answered.clone();
                misuse.amount.0 += 1;
                self.event(format!(
                    "client {index}: reuses {} for another amount",
                    misuse.txn
                ));
                self.send_pay(now, index, misuse, true);
            }
            let request = self.new_payment(index);
            self.event(format!(
                "client {index}: pay {} {} -> {} {}",
                request.txn, request.from.account, request.to.account, request.amount.0
            ));
            self.report.counts.payments += 1;
            self.requested.insert(request.txn, request.clone());
            self.active.insert(request.txn);
            let pause = self.rng.random_range(0..400);
            let client = &mut self.clients[index];
            client.outstanding = Some((
                request.clone(),
                now + CLIENT_RETRY_MS_MIN,
                CLIENT_RETRY_MS_MIN,
            ));
            client.next_payment_at = now + pause;
            self.send_pay(now, index, request, false);
        }
    }

    /// The client asks its balance, remembering what it must show.
    fn ask_balance(&mut self, now: u64, client: usize) {
        self.event(format!("client {client}: asks its balance"));
        let ask = Msg::Balance {
            client,
            committed: self.clients[client].committed.clone(),
        };
        lock(&self.net).send(now, Dest::Gateway, ask);
    }

    fn send_pay(&self, now: u64, client: usize, request: PaymentRequest, reused: bool) {
        let pay = Msg::Pay {
            client,
            request,
            reused,
        };
        lock(&self.net).send(now, Dest::Gateway, pay);
    }

    fn new_payment(&mut self, index: usize) -> PaymentRequest {
        let others: Vec<AccountRef> = self
            .clients
            .iter()
            .map(|client| client.account.clone())
            .filter(|account| *account != self.clients[index].account)
            .collect();
        let to = others[self.rng.random_range(0..others.len())].clone();
        let from = self.clients[index].account.clone();
        let opening = self.checker.initial_balance(&from);
        // Mostly affordable; sometimes more than the account could hold.
        let amount = if self.rng.random_ratio(1, 10) {
            opening * 3
        } else {
            self.rng.random_range(1..=opening / 4 + 1)
        };
        let mut txn = [0u8; 16];
        self.rng.fill_bytes(&mut txn);
        PaymentRequest {
            txn: TxnId(txn),
            from: endpoint(&from),
            to: endpoint(&to),
            amount: Amount(amount),
            currency: CURRENCY.into(),
        }
    }
}
