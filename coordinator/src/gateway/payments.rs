//! Payments, exactly once per txn id: a new id is initiated durably, its
//! 2PC runs once, and the client is answered once the decision is durable;
//! a repeat is answered from the table (waiting for an in-flight one, at
//! most `waiters_max` at once). The table itself is `state`'s; the rules are
//! in docs/gateway-coordinator.md ("Idempotency").

use money::TxnId;
use wal::Lsn;

use crate::gateway::state::{Decision, Entry, Seen};
use crate::gateway::waiting::{DecidedFuture, Waiting};
use crate::gateway::{Gateway, GatewayError};
use crate::participant::Participant;
use crate::payment::{Payment, PaymentRequest, Status};

/// What `pay` answers with.
#[derive(Debug)]
pub struct Paid {
    pub payment: Payment,
    /// This call decided the payment and answers before its phase 2: the
    /// caller runs [`Gateway::phase_two`] next (if it does not, the retry
    /// loop, [`Gateway::resume`], will).
    pub phase_two_pending: bool,
}

impl Paid {
    fn answered(payment: Payment) -> Paid {
        Paid {
            payment,
            phase_two_pending: false,
        }
    }
}

/// How `pay` goes on after looking at the table.
enum Next {
    /// A new id: its INITIATED record was written at this LSN.
    Coordinate(Lsn),
    /// The same id is in flight: wait for its outcome (never a second 2PC).
    Wait,
    /// Answered from the table once this LSN (its decision's) is durable.
    Answer(Box<Payment>, Lsn),
    /// In flight while `waiters_max` repeats wait already: answered as it
    /// stands (INITIATED).
    Busy(Box<Payment>),
}

impl<P: Participant> Gateway<P> {
    /// Makes a payment exactly once per txn id (see the idempotency table);
    /// answers once the decision is durable (see "When the client is
    /// answered" in docs/gateway-coordinator.md).
    pub async fn pay(&self, user: &str, request: PaymentRequest) -> Result<Paid, GatewayError> {
        let txn = request.txn;
        let lsn = match self.admit(user, &request)? {
            Next::Coordinate(lsn) => lsn,
            Next::Wait => {
                let _waiting = Waiting { gateway: self };
                return self.outcome(txn).await.map(Paid::answered);
            }
            Next::Answer(stored, lsn) => {
                self.wal.wait_durable(lsn).await?;
                return Ok(Paid::answered(*stored));
            }
            Next::Busy(stored) => return Ok(Paid::answered(*stored)),
        };
        let started = std::time::Instant::now();
        self.wal.wait_durable(lsn).await?;
        let (decision, reason) = self.phase_one(&request).await;
        let (lsn, answer_early) = {
            let mut inner = self.lock();
            let now = self.clock.now_ms();
            let decided = inner.state.decide_decided(txn, decision, reason, now);
            let lsn = self.record(&mut inner, decided)?;
            (
                lsn,
                inner.state.settling.len() <= self.options.unsettled_max,
            )
        };
        self.wal.wait_durable(lsn).await?;
        let outcome = match decision {
            Decision::Commit => "committed",
            Decision::Abort => "aborted",
        };
        metrics::counter!("minipay_payments_total", "outcome" => outcome).increment(1);
        metrics::histogram!("minipay_payment_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if !answer_early {
            self.phase_two(txn).await?;
        }
        // It may have ended and moved to the history meanwhile.
        let inner = self.lock();
        let payment = inner
            .state
            .entry(txn, &self.history)?
            .and_then(|entry| entry.payment.clone())
            .expect("a paid txn is remembered with its request");
        Ok(Paid {
            phase_two_pending: answer_early && !payment.ended,
            payment,
        })
    }

    /// Looks the request up in the table under the lock: a new id is
    /// initiated (its record written), a decided one answered, an in-flight
    /// one waited for while fewer than `waiters_max` repeats wait already
    /// (past that, answered as it stands).
    fn admit(&self, user: &str, request: &PaymentRequest) -> Result<Next, GatewayError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.state.check_request(&self.options, user, request)?;
        match inner
            .state
            .decide_pay(&self.options, user, request, now, &self.history)?
        {
            Seen::New(initiated) => Ok(Next::Coordinate(self.record(&mut inner, initiated)?)),
            Seen::Known {
                stored,
                decided_lsn: Some(lsn),
            } => Ok(Next::Answer(stored, lsn)),
            Seen::Known {
                stored,
                decided_lsn: None,
            } => {
                if inner.waiters.waiting >= self.options.waiters_max {
                    return Ok(Next::Busy(stored));
                }
                inner.waiters.waiting += 1;
                Ok(Next::Wait)
            }
        }
    }

    /// A payment, to the user who made it (from memory or the history).
    pub fn payment(&self, user: &str, txn: TxnId) -> Result<Payment, GatewayError> {
        match self.current_of(txn)? {
            Some(payment) if payment.user == user => Ok(payment),
            Some(_) | None => Err(GatewayError::NoSuchPayment { txn }),
        }
    }

    /// The payment as it may be shown outside, from memory or the history.
    fn current_of(&self, txn: TxnId) -> Result<Option<Payment>, GatewayError> {
        let inner = self.lock();
        let entry = inner.state.entry(txn, &self.history)?;
        Ok(entry.and_then(|entry| self.visible(&entry)))
    }

    /// Resolves with the payment once its decision is durable (the caller
    /// bounds the wait with its own timeout, then answers INITIATED).
    pub async fn outcome(&self, txn: TxnId) -> Result<Payment, GatewayError> {
        let (payment, decided_lsn) = DecidedFuture { gateway: self, txn }.await?;
        self.wal.wait_durable(decided_lsn).await?;
        Ok(payment)
    }

    /// The current stored payment (for answering after a bounded wait).
    pub fn current(&self, txn: TxnId) -> Result<Option<Payment>, GatewayError> {
        Ok(self.current_of(txn)?.map(|mut payment| {
            payment.replayed = true;
            payment
        }))
    }

    /// The payment as it may be shown outside: INITIATED until its decision
    /// is durable (a decision only in memory could still be lost).
    fn visible(&self, entry: &Entry) -> Option<Payment> {
        let mut payment = entry.payment.clone()?;
        if entry.decision.is_some() && entry.decided_lsn > self.wal.durable_lsn() {
            payment.status = Status::Initiated;
            payment.reason.clear();
            payment.ended = false;
        }
        Some(payment)
    }

    /// How many repeated requests are waiting on the in-flight `txn`.
    pub fn waiting_on(&self, txn: TxnId) -> usize {
        self.lock().waiters.parked_on(txn)
    }
}
