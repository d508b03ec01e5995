//! What the checker sees: each step, an [`Observation`] of the nodes that
//! are up (each bank's accounts and transactions, the gateway's answer for
//! each payment), of every payment or only of those still in flight; and
//! the retiring of payments that are over everywhere from the set observed
//! every step, their net movement at each bank carried as a total.
//!
//! Observing only reads the nodes: it draws nothing random, sends nothing
//! and records no event, so a run is the same however much is observed.
//! It knows nothing of the invariants themselves; [`crate::invariants`]
//! judges what it reports.

use std::collections::BTreeMap;

use coordinator::{PaymentRequest, Status};
use ledger::{Bank, TxnState};
use money::{Leg, TxnId};

use crate::invariants::{
    AccountRef, BankTxn, BankView, GatewayEntry, Movement, Observation, Outcome, TxnKey,
};
use crate::nodes::SimGateway;
use crate::{BANKS, World};

/// The checker's name for a payment id.
pub(crate) fn txn_key(txn: TxnId) -> TxnKey {
    TxnKey::from_bytes(txn.0)
}

impl World {
    /// Payments that are over everywhere (told to the client, decided and
    /// ended at the gateway, final at every bank involved) leave the set
    /// observed every step; what they moved is carried as each bank's
    /// unlisted total, and complete observations keep checking them.
    pub(crate) fn retire_settled(&mut self, observation: &Observation) {
        let Some(gateway) = &observation.gateway else {
            return;
        };
        let settled: Vec<TxnId> = self
            .active
            .iter()
            .copied()
            .filter(|txn| {
                let key = txn_key(*txn);
                let over_at_gateway = gateway
                    .get(&key)
                    .is_some_and(|entry| entry.ended && entry.outcome != Outcome::Initiated);
                let request = &self.requested[txn];
                let over_at_banks = [&request.from.bank, &request.to.bank].iter().all(|bank| {
                    observation.banks.iter().any(|view| {
                        **bank == view.name.as_str()
                            && matches!(
                                view.txns.as_ref().and_then(|txns| txns.get(&key)),
                                Some(BankTxn::Posted { .. } | BankTxn::Voided)
                            )
                    })
                });
                let client_told = !self.clients.iter().any(|client| {
                    client
                        .outstanding
                        .as_ref()
                        .is_some_and(|(request, _, _)| request.txn == *txn)
                });
                over_at_gateway && over_at_banks && client_told
            })
            .collect();
        for txn in settled {
            self.active.remove(&txn);
            let key = txn_key(txn);
            for view in &observation.banks {
                if let Some(BankTxn::Posted { net }) =
                    view.txns.as_ref().and_then(|txns| txns.get(&key))
                    && let Some(bank) = BANKS.iter().position(|name| *name == view.name)
                {
                    self.settled_net[bank] += net;
                }
            }
        }
    }

    /// What the nodes that are up report: about every payment if
    /// `complete`, otherwise about those still in flight.
    pub(crate) fn observe(&self, complete: bool) -> Observation {
        let txns: Vec<TxnId> = if complete {
            self.requested.keys().copied().collect()
        } else {
            self.active.iter().copied().collect()
        };
        let banks = self
            .banks
            .iter()
            .enumerate()
            .filter_map(|(index, node)| {
                let bank = node.node.up.as_ref()?;
                Some(self.bank_view(index, bank, &txns, complete))
            })
            .collect();
        let gateway = self
            .gateway
            .up
            .as_ref()
            .map(|gateway| self.gateway_entries(gateway, &txns));
        Observation {
            banks,
            gateway,
            complete,
        }
    }

    /// What bank `index` reports: its accounts, what it holds in doubt, and
    /// its state of each of `txns`.
    fn bank_view(&self, index: usize, bank: &Bank, txns: &[TxnId], complete: bool) -> BankView {
        let ledger = bank.ledger();
        BankView {
            name: BANKS[index].to_owned(),
            accounts: ledger
                .accounts()
                .map(|account| {
                    (
                        account.number.to_string(),
                        (account.balance.0, account.available().0),
                    )
                })
                .collect(),
            in_doubt: ledger.pending().len(),
            txns: Some(
                txns.iter()
                    .filter_map(|txn| {
                        let state = bank.txn(*txn).expect("history tables readable")?;
                        Some((txn_key(*txn), bank_txn(&state)))
                    })
                    .collect(),
            ),
            unlisted_net: if complete { 0 } else { self.settled_net[index] },
        }
    }

    /// The gateway's answer for each of `txns` it knows.
    fn gateway_entries(
        &self,
        gateway: &SimGateway,
        txns: &[TxnId],
    ) -> BTreeMap<TxnKey, GatewayEntry> {
        txns.iter()
            .filter_map(|txn| {
                let payment = gateway.current(*txn).expect("history tables readable")?;
                Some((
                    txn_key(*txn),
                    GatewayEntry {
                        movement: movement(&self.requested[txn]),
                        outcome: match payment.status {
                            Status::Initiated => Outcome::Initiated,
                            Status::Committed => Outcome::Committed,
                            Status::Aborted => Outcome::Aborted,
                        },
                        ended: payment.ended,
                    },
                ))
            })
            .collect()
    }
}

fn movement(request: &PaymentRequest) -> Movement {
    Movement {
        from: AccountRef {
            bank: request.from.bank.to_string(),
            account: request.from.account.to_string(),
        },
        to: AccountRef {
            bank: request.to.bank.to_string(),
            account: request.to.account.to_string(),
        },
        amount: request.amount.0,
    }
}

fn bank_txn(state: &TxnState) -> BankTxn {
    match state {
        TxnState::Pending { .. } => BankTxn::Pending,
        TxnState::Posted { legs, .. } => BankTxn::Posted {
            net: legs.iter().map(Leg::signed_amount).sum(),
        },
        TxnState::Voided { .. } => BankTxn::Voided,
    }
}
