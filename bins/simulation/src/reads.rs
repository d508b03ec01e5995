//! Balance reads, the way `GetBalance` does them: the gateway reads the
//! client's account at its bank through the core's read-your-writes rule
//! (`Gateway::read_your_writes`), with a read that is a message to the bank
//! and a bound that is the commit timeout on the simulated clock; the bank
//! answers with the balance and, for the checker, the payments touching
//! the account that it had posted when it read it.
//!
//! The check is the client's ([`crate::workload`]): a read that says it may
//! miss nothing (`unsettled` 0) shows every payment the client had been
//! answered COMMITTED before it asked.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledger::{Bank, BankError, TxnState};
use money::{AccountNo, TxnId};

use crate::network::{Dest, Msg, Reply, SimParticipant, deadline, lock};
use crate::nodes::{COMMIT_TIMEOUT_MS, SimGateway};
use crate::{Broken, World};

impl World {
    /// The gateway runs a client's balance read and answers the client.
    pub(crate) fn gateway_reads_balance(
        &mut self,
        gateway: Arc<SimGateway>,
        client: usize,
        committed: BTreeSet<TxnId>,
        now: u64,
    ) {
        let user = self.clients[client].user.clone();
        let Some((bank, account)) = gateway.user_account(&user) else {
            return;
        };
        let banks = SimParticipant {
            net: Arc::clone(&self.net),
            clock: self.clock.clone(),
        };
        let net = Arc::clone(&self.net);
        let clock = self.clock.clone();
        let broken = self.config.broken == Some(Broken::BalanceWithoutWaiting);
        self.spawn(Dest::Gateway, async move {
            let timeout = Duration::from_millis(COMMIT_TIMEOUT_MS);
            let bound = deadline(clock.clone(), now + COMMIT_TIMEOUT_MS);
            let read = || banks.read_account(&bank, account.clone(), timeout);
            let answer = if broken {
                // The rule broken on purpose: one read, no wait.
                read().await.map(|found| (found, 0))
            } else {
                gateway.read_your_writes(&bank, &account, bound, read).await
            };
            // A read that failed (the bank is down, or the answer was
            // lost) is not answered: the client asks again later.
            let Ok(((_, posted), unsettled)) = answer else {
                return;
            };
            let answer = Msg::BalanceAnswer {
                committed,
                posted,
                unsettled,
            };
            lock(&net).send(clock.now(), Dest::Client(client), answer);
        });
    }

    /// Bank `index` reads an account once everything it shows is durable,
    /// and replies with its balance and the payments it had posted.
    pub(crate) fn bank_reads_account(
        &mut self,
        index: usize,
        bank: Arc<Bank>,
        call: u64,
        account: AccountNo,
        now: u64,
    ) {
        let touching: Vec<TxnId> = self
            .requested
            .values()
            .filter(|request| {
                [&request.from, &request.to]
                    .iter()
                    .any(|end| end.bank == *crate::BANKS[index] && end.account == account)
            })
            .map(|request| request.txn)
            .collect();
        let net = Arc::clone(&self.net);
        let failed = Arc::clone(&self.banks[index].node.failed);
        self.spawn(Dest::Bank(index), async move {
            // What is posted, and the account read, in one poll: nothing
            // runs in between on the simulation's one thread.
            let posted = posted_of(&bank, &touching);
            let reply = match bank.account(&account).await {
                Ok(found) => Reply::Account {
                    balance: found.balance.0,
                    posted,
                },
                Err(BankError::Refused(error)) => Reply::Refused(error.to_string()),
                Err(BankError::Storage(_) | BankError::History { .. }) => {
                    failed.store(true, Ordering::SeqCst);
                    return;
                }
            };
            lock(&net).send(now, Dest::Gateway, Msg::Reply { call, reply });
        });
    }
}

/// Which of `txns` the bank has posted.
fn posted_of(bank: &Bank, txns: &[TxnId]) -> BTreeSet<TxnId> {
    txns.iter()
        .filter(|txn| matches!(bank.txn(**txn), Ok(Some(TxnState::Posted { .. }))))
        .copied()
        .collect()
}
