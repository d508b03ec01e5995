//! The simulated network: the messages between clients, the gateway and
//! the banks ([`Msg`]), the lossy wire that drops, duplicates and delays
//! them (and so reorders them) on the simulated clock ([`Net`]), and the
//! participant through which the production gateway calls the banks
//! ([`SimParticipant`]): a call becomes a message, and its answer is the
//! reply to it or a timeout.
//!
//! The network draws only on its own random generator (seeded from the
//! world's), so how it treats messages never shifts the world's draws.
//! It knows nothing of the nodes behind an address: whether one is up, what
//! it does with a message; delivering is the world's business
//! ([`crate::nodes`], [`crate::workload`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use coordinator::{CallError, CallFuture, Decision, Participant, PaymentRequest, Status};
use money::{AccountNo, BankName, Leg, TxnId};
use rand::Rng;
use rand::rngs::StdRng;

use crate::BANKS;
use crate::executor::SimClock;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Dest {
    Gateway,
    Bank(usize),
    Client(usize),
    /// The newcomers, who register.
    Registrar,
}

/// A bank's answer to a call from the gateway.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    Vote(coordinator::Vote),
    Ack,
    Refused(String),
    /// An account read: its balance, and (for the checker) the payments
    /// touching it that the bank had posted when it read it.
    Account {
        balance: u64,
        posted: BTreeSet<TxnId>,
    },
    /// The account a bank opened.
    Opened(AccountNo),
}

#[derive(Clone, Debug)]
pub(crate) enum Msg {
    Prepare {
        call: u64,
        txn: TxnId,
        legs: Vec<Leg>,
    },
    /// Phase 2 (a call awaiting its ack), or the answer to `AskDecision`.
    Decide {
        call: Option<u64>,
        txn: TxnId,
        decision: Decision,
    },
    Reply {
        call: u64,
        reply: Reply,
    },
    AskDecision {
        bank: usize,
        txn: TxnId,
    },
    /// `reused`: the client misuses an id it already had answered, with
    /// another amount; the gateway must refuse it and move nothing.
    Pay {
        client: usize,
        request: PaymentRequest,
        reused: bool,
    },
    PayAnswer {
        txn: TxnId,
        answer: Result<Status, String>,
        reused: bool,
    },
    /// A client asks its balance; `committed`: the payments it had been
    /// answered COMMITTED when it asked (for the checker, not the gateway).
    Balance {
        client: usize,
        committed: BTreeSet<TxnId>,
    },
    /// A newcomer asks to be registered at bank `bank`.
    Register {
        username: String,
        bank: usize,
    },
    /// The gateway's answer to `Register`: the bank and the account, or why not.
    Registered {
        username: String,
        answer: Result<(BankName, AccountNo), String>,
    },
    /// The gateway asks a bank to open an empty account for a newcomer.
    OpenAccount {
        call: u64,
        owner: String,
    },
    /// The gateway reads an account at its bank.
    ReadAccount {
        call: u64,
        account: AccountNo,
    },
    /// The gateway's answer to `Balance`: what the bank had posted when it
    /// was read, and how many decided payments it may not show yet.
    BalanceAnswer {
        committed: BTreeSet<TxnId>,
        posted: BTreeSet<TxnId>,
        unsettled: usize,
    },
}

/// A message on the wire: due at `at`, ordered among those due at once by
/// `seq`, the order it was sent in.
pub(crate) struct Envelope {
    at: u64,
    seq: u64,
    pub(crate) to: Dest,
    pub(crate) msg: Msg,
}

/// The network and what crosses it. Shared with the gateway's participant.
pub(crate) struct Net {
    rng: StdRng,
    /// Drops, duplicates and long delays are on; off once the faults stop.
    pub(crate) lossy: bool,
    in_flight: Vec<Envelope>,
    /// The last message's sequence number: it changes with every message.
    pub(crate) seq: u64,
    next_call: u64,
    /// Replies to the gateway's calls, waiting for the call to take them.
    pub(crate) replies: BTreeMap<u64, Reply>,
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
    pub(crate) duplicated: u64,
}

impl Net {
    /// A lossy network, empty, drawing on `rng`.
    pub(crate) fn new(rng: StdRng) -> Net {
        Net {
            rng,
            lossy: true,
            in_flight: Vec::new(),
            seq: 0,
            next_call: 0,
            replies: BTreeMap::new(),
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    pub(crate) fn send(&mut self, now: u64, to: Dest, msg: Msg) {
        self.sent += 1;
        if self.lossy && self.rng.random_ratio(1, 25) {
            self.dropped += 1;
            return;
        }
        let copies = if self.lossy && self.rng.random_ratio(1, 30) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.lossy {
                self.rng.random_range(1..=60)
            } else {
                self.rng.random_range(1..=5)
            };
            self.seq += 1;
            self.in_flight.push(Envelope {
                at: now + delay,
                seq: self.seq,
                to,
                msg: msg.clone(),
            });
        }
    }

    /// The messages due by `now`, in delivery order.
    pub(crate) fn due(&mut self, now: u64) -> Vec<Envelope> {
        let (mut due, later): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|envelope| envelope.at <= now);
        self.in_flight = later;
        due.sort_by_key(|envelope| (envelope.at, envelope.seq));
        due
    }
}

pub(crate) type SharedNet = Arc<Mutex<Net>>;

pub(crate) fn lock(net: &SharedNet) -> MutexGuard<'_, Net> {
    net.lock().expect("sim network lock poisoned")
}

/// The gateway's view of the banks: calls become messages; an answer is
/// the reply to the call, or a timeout on the simulated clock.
pub(crate) struct SimParticipant {
    pub(crate) net: SharedNet,
    pub(crate) clock: SimClock,
}

impl SimParticipant {
    fn call<'a, T: Send + 'a>(
        &'a self,
        bank: &'a BankName,
        timeout: Duration,
        message: impl FnOnce(u64) -> Msg,
        answer: impl Fn(Reply) -> Result<T, CallError> + Send + 'a,
    ) -> CallFuture<'a, T> {
        let Some(index) = BANKS.iter().position(|name| bank == name) else {
            return Box::pin(std::future::ready(Err(CallError::Refused {
                bank: bank.clone(),
                detail: "unknown bank".into(),
            })));
        };
        let now = self.clock.now();
        let deadline = now + timeout.as_millis() as u64;
        let call = {
            let mut net = lock(&self.net);
            net.next_call += 1;
            let call = net.next_call;
            net.send(now, Dest::Bank(index), message(call));
            call
        };
        Box::pin(std::future::poll_fn(move |_| {
            if let Some(reply) = lock(&self.net).replies.remove(&call) {
                return Poll::Ready(answer(reply));
            }
            if self.clock.now() >= deadline {
                return Poll::Ready(Err(CallError::Timeout {
                    bank: bank.clone(),
                    timeout,
                }));
            }
            Poll::Pending
        }))
    }
}

fn refused(bank: &BankName, detail: String) -> CallError {
    CallError::Refused {
        bank: bank.clone(),
        detail,
    }
}

impl Participant for SimParticipant {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, coordinator::Vote> {
        self.call(
            bank,
            timeout,
            |call| Msg::Prepare { call, txn, legs },
            move |reply| match reply {
                Reply::Vote(vote) => Ok(vote),
                Reply::Refused(detail) => Err(refused(bank, detail)),
                other => Err(refused(bank, format!("{other:?} answered a prepare"))),
            },
        )
    }

    fn commit<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.decide(bank, txn, Decision::Commit, timeout)
    }

    fn abort<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.decide(bank, txn, Decision::Abort, timeout)
    }
}

impl SimParticipant {
    fn decide<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        decision: Decision,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        let message = move |call| Msg::Decide {
            call: Some(call),
            txn,
            decision,
        };
        self.call(bank, timeout, message, move |reply| match reply {
            Reply::Ack => Ok(()),
            Reply::Refused(detail) => Err(refused(bank, detail)),
            other => Err(refused(bank, format!("{other:?} answered a decision"))),
        })
    }

    /// Asks `bank` to open an empty account for `owner`.
    pub(crate) fn open_account<'a>(
        &'a self,
        bank: &'a BankName,
        owner: &str,
        timeout: Duration,
    ) -> CallFuture<'a, AccountNo> {
        let owner = owner.to_owned();
        let message = move |call| Msg::OpenAccount { call, owner };
        self.call(bank, timeout, message, move |reply| match reply {
            Reply::Opened(account) => Ok(account),
            Reply::Refused(detail) => Err(refused(bank, detail)),
            other => Err(refused(bank, format!("{other:?} answered an opening"))),
        })
    }

    /// Reads `account` at `bank` (what the gateway's `GetBalance` asks).
    pub(crate) fn read_account<'a>(
        &'a self,
        bank: &'a BankName,
        account: AccountNo,
        timeout: Duration,
    ) -> CallFuture<'a, (u64, BTreeSet<TxnId>)> {
        let message = move |call| Msg::ReadAccount { call, account };
        self.call(bank, timeout, message, move |reply| match reply {
            Reply::Account { balance, posted } => Ok((balance, posted)),
            Reply::Refused(detail) => Err(refused(bank, detail)),
            other => Err(refused(bank, format!("{other:?} answered a read"))),
        })
    }
}

/// Resolves once the simulated clock reaches `deadline_ms`: the bound a
/// server puts on a wait with a timer. The world polls every task each
/// step, so it needs no waker.
pub(crate) fn deadline(clock: SimClock, deadline_ms: u64) -> impl std::future::Future<Output = ()> {
    std::future::poll_fn(move |_| {
        if clock.now() >= deadline_ms {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}
