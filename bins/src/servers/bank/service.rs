//! The `Bank` gRPC service: decode, call the ledger, encode. Thin on
//! purpose; every decision is the ledger's. Errors map to gRPC status codes
//! in one exhaustive function, [`status`].

use std::sync::Arc;

use ledger::{Bank, BankError, InvalidRequest, TxnState, Vote};
use minipay_proto::v1 as proto;
use money::{AccountNo, Amount, Direction, Leg, TxnId};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing::field::Empty;

use crate::rpc::request_log::note;
use crate::rpc::settings::now_ms;
pub use crate::servers::bank::refusal::BATCH_LEN_MAX;
use crate::servers::bank::refusal::{Refusal, check_batch_len};

/// What the service needs besides the ledger. Cheap to clone: a batch
/// hands each item its own handle.
#[derive(Clone)]
pub struct BankService {
    bank: Arc<Bank>,
    currency: Arc<str>,
    /// Called when the log fails: the process must stop (fail-stop).
    on_storage_failure: Arc<dyn Fn() + Send + Sync>,
}

impl BankService {
    pub fn new(bank: Arc<Bank>, on_storage_failure: Arc<dyn Fn() + Send + Sync>) -> BankService {
        let currency = bank.currency().into();
        BankService {
            bank,
            currency,
            on_storage_failure,
        }
    }

    fn fail(&self, error: BankError) -> Status {
        if error.stops_the_bank() {
            tracing::error!(%error, "storage failed; stopping the bank");
            (self.on_storage_failure)();
        }
        Refusal::Bank(error).into()
    }

    fn money(&self, amount: Amount) -> String {
        format!("{amount} {}", self.currency)
    }
}

fn invalid(error: InvalidRequest) -> Status {
    Refusal::Invalid(error).into()
}

pub fn parse_txn(text: &str) -> Result<TxnId, Status> {
    TxnId::parse(text).map_err(|malformed| invalid(malformed.into()))
}

pub fn parse_account(text: &str) -> Result<AccountNo, Status> {
    AccountNo::parse(text).map_err(|malformed| invalid(malformed.into()))
}

pub fn legs_from_proto(legs: &[proto::Leg]) -> Result<Vec<Leg>, Status> {
    legs.iter()
        .map(|leg| {
            let direction = match proto::Direction::try_from(leg.direction) {
                Ok(proto::Direction::Debit) => Direction::Debit,
                Ok(proto::Direction::Credit) => Direction::Credit,
                Ok(proto::Direction::Unspecified) | Err(_) => {
                    return Err(invalid(InvalidRequest::NoDirection));
                }
            };
            Ok(Leg {
                account: parse_account(&leg.account_no)?,
                direction,
                amount: Amount(leg.amount),
            })
        })
        .collect()
}

pub fn legs_to_proto(legs: &[Leg]) -> Vec<proto::Leg> {
    legs.iter()
        .map(|leg| proto::Leg {
            account_no: leg.account.to_string(),
            direction: match leg.direction {
                Direction::Debit => proto::Direction::Debit,
                Direction::Credit => proto::Direction::Credit,
            } as i32,
            amount: leg.amount.0,
        })
        .collect()
}

fn describe_legs(legs: &[Leg], currency: &str) -> String {
    legs.iter()
        .map(|leg| {
            let direction = match leg.direction {
                Direction::Debit => "debit",
                Direction::Credit => "credit",
            };
            format!("{direction} {} {} {currency}", leg.account, leg.amount)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn item_failed(status: &proto::ItemStatus) -> bool {
    status.code != tonic::Code::Ok as i32
}

fn item_status(result: Result<(), Status>) -> proto::ItemStatus {
    match result {
        Ok(()) => proto::ItemStatus {
            code: tonic::Code::Ok as i32,
            message: String::new(),
        },
        Err(status) => proto::ItemStatus {
            code: status.code() as i32,
            message: status.message().to_owned(),
        },
    }
}

/// Notes the trace ids of a batch's items on the call's line, so `grep` on
/// a payment's trace id finds the batches that carried it.
fn note_traces<'a>(items: impl Iterator<Item = &'a str>) {
    let traces = crate::rpc::trace::trace_ids(items);
    if !traces.is_empty() {
        note("traces", traces);
    }
}

impl BankService {
    /// One prepare, for the single call and for each item of a batch; notes
    /// its txn, legs, amount and vote on the current span.
    async fn prepare_one(
        &self,
        request: proto::PrepareRequest,
    ) -> Result<proto::PrepareResponse, Status> {
        note("txn_id", &request.txn_id);
        let txn = parse_txn(&request.txn_id)?;
        let legs = legs_from_proto(&request.legs)?;
        note("legs", describe_legs(&legs, &self.currency));
        if let Some(largest) = legs.iter().map(|leg| leg.amount).max() {
            note("amount", self.money(largest));
        }
        let vote = self
            .bank
            .prepare(txn, &legs, now_ms())
            .await
            .map_err(|error| self.fail(error))?;
        let (vote, reason) = match vote {
            Vote::Yes => (proto::Vote::Yes, String::new()),
            Vote::No(reason) => (proto::Vote::No, reason.to_string()),
        };
        note(
            "vote",
            if reason.is_empty() {
                "YES".to_owned()
            } else {
                format!("NO ({reason})")
            },
        );
        Ok(proto::PrepareResponse {
            vote: vote as i32,
            reason,
        })
    }

    /// One phase-2 decision, for the single calls and for each item of a batch.
    async fn finish_one(&self, txn: &str, decision: proto::Decision) -> Result<(), Status> {
        note("txn_id", txn);
        let txn = parse_txn(txn)?;
        let result = match decision {
            proto::Decision::Commit => self.bank.commit(txn, now_ms()).await,
            proto::Decision::Abort => self.bank.abort(txn, now_ms()).await,
            proto::Decision::Unspecified => {
                return Err(Refusal::NoDecision.into());
            }
        };
        if let Err(BankError::Refused(error)) = &result {
            tracing::error!(%error, "coordinator protocol violation");
        }
        result.map_err(|error| self.fail(error))
    }

    /// Runs `handle` on every item concurrently (their log appends share
    /// syncs), each in its own `item` span; returns the answers in request
    /// order. An item that `notable` picks out (refused, failed, voted NO)
    /// logs a line at info, the others at debug: the call's own `response`
    /// line counts them, and at thousands of items a second one line each
    /// would cost more than the work.
    async fn each_item<T, R, F, Fut>(
        &self,
        items: Vec<T>,
        handle: F,
        notable: fn(&R) -> bool,
    ) -> Result<Vec<R>, Status>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(BankService, T) -> Fut,
        Fut: std::future::Future<Output = R> + Send + 'static,
    {
        note("items", items.len());
        let tasks: Vec<_> = items
            .into_iter()
            .map(|item| {
                let span = tracing::info_span!(
                    "item",
                    txn_id = Empty,
                    amount = Empty,
                    legs = Empty,
                    vote = Empty
                );
                let answer = handle(self.clone(), item);
                tokio::spawn(
                    async move {
                        let answer = answer.await;
                        if notable(&answer) {
                            tracing::info!("item answered");
                        } else {
                            tracing::debug!("item answered");
                        }
                        answer
                    }
                    .instrument(span),
                )
            })
            .collect();
        let mut answers = Vec::with_capacity(tasks.len());
        for task in tasks {
            match task.await {
                Ok(answer) => answers.push(answer),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => return Err(Refusal::ShuttingDown.into()),
            }
        }
        Ok(answers)
    }
}

#[tonic::async_trait]
impl proto::bank_server::Bank for BankService {
    async fn open_account(
        &self,
        request: Request<proto::OpenAccountRequest>,
    ) -> Result<Response<proto::OpenAccountResponse>, Status> {
        let request = request.into_inner();
        let account = match request.account_no.as_str() {
            "" => None,
            number => Some(parse_account(number)?),
        };
        note("amount", self.money(Amount(request.initial_balance)));
        let number = self
            .bank
            .open_account(account, &request.owner, Amount(request.initial_balance))
            .await
            .map_err(|error| self.fail(error))?;
        Ok(Response::new(proto::OpenAccountResponse {
            account_no: number.to_string(),
        }))
    }

    async fn get_account(
        &self,
        request: Request<proto::GetAccountRequest>,
    ) -> Result<Response<proto::GetAccountResponse>, Status> {
        let number = parse_account(&request.get_ref().account_no)?;
        let account = self
            .bank
            .account(&number)
            .await
            .map_err(|error| self.fail(error))?;
        Ok(Response::new(proto::GetAccountResponse {
            account_no: account.number.to_string(),
            owner: account.owner.clone(),
            balance: account.balance.0,
            available: account.available().0,
            currency: self.currency.to_string(),
        }))
    }

    async fn prepare(
        &self,
        request: Request<proto::PrepareRequest>,
    ) -> Result<Response<proto::PrepareResponse>, Status> {
        self.prepare_one(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        let txn = &request.get_ref().txn_id;
        self.finish_one(txn, proto::Decision::Commit).await?;
        Ok(Response::new(proto::CommitResponse {}))
    }

    async fn abort(
        &self,
        request: Request<proto::AbortRequest>,
    ) -> Result<Response<proto::AbortResponse>, Status> {
        let txn = &request.get_ref().txn_id;
        self.finish_one(txn, proto::Decision::Abort).await?;
        Ok(Response::new(proto::AbortResponse {}))
    }

    async fn prepare_batch(
        &self,
        request: Request<proto::PrepareBatchRequest>,
    ) -> Result<Response<proto::PrepareBatchResponse>, Status> {
        let prepares = request.into_inner().prepares;
        check_batch_len(prepares.len())?;
        note_traces(prepares.iter().map(|item| item.traceparent.as_str()));
        let outcomes = self
            .each_item(
                prepares,
                |service, prepare| async move {
                    let (status, vote) = match service.prepare_one(prepare).await {
                        Ok(vote) => (Ok(()), Some(vote)),
                        Err(error) => (Err(error), None),
                    };
                    proto::PrepareOutcome {
                        status: Some(item_status(status)),
                        vote,
                    }
                },
                |outcome| {
                    outcome.status.as_ref().is_some_and(item_failed)
                        || outcome
                            .vote
                            .as_ref()
                            .is_some_and(|vote| vote.vote != proto::Vote::Yes as i32)
                },
            )
            .await?;
        Ok(Response::new(proto::PrepareBatchResponse { outcomes }))
    }

    async fn finish_batch(
        &self,
        request: Request<proto::FinishBatchRequest>,
    ) -> Result<Response<proto::FinishBatchResponse>, Status> {
        let finishes = request.into_inner().finishes;
        check_batch_len(finishes.len())?;
        note_traces(finishes.iter().map(|item| item.traceparent.as_str()));
        let outcomes = self
            .each_item(
                finishes,
                |service, finish| async move {
                    let decision = proto::Decision::try_from(finish.decision)
                        .unwrap_or(proto::Decision::Unspecified);
                    item_status(service.finish_one(&finish.txn_id, decision).await)
                },
                item_failed,
            )
            .await?;
        Ok(Response::new(proto::FinishBatchResponse { outcomes }))
    }

    async fn list_in_doubt(
        &self,
        _request: Request<proto::ListInDoubtRequest>,
    ) -> Result<Response<proto::ListInDoubtResponse>, Status> {
        let txns = self
            .bank
            .in_doubt_durable()
            .await
            .map_err(|error| self.fail(error))?
            .into_iter()
            .map(|doubt| proto::InDoubtTxn {
                txn_id: doubt.txn.to_string(),
                legs: legs_to_proto(&doubt.legs),
                prepared_at_ms: doubt.prepared_at_ms,
            })
            .collect();
        Ok(Response::new(proto::ListInDoubtResponse { txns }))
    }

    async fn get_transactions(
        &self,
        request: Request<proto::GetTransactionsRequest>,
    ) -> Result<Response<proto::GetTransactionsResponse>, Status> {
        let ids = request.into_inner().txn_ids;
        check_batch_len(ids.len())?;
        note("items", ids.len());
        let txns = ids
            .iter()
            .map(|id| parse_txn(id))
            .collect::<Result<Vec<TxnId>, Status>>()?;
        let states = self
            .bank
            .txns_durable(&txns)
            .await
            .map_err(|error| self.fail(error))?;
        let txns = ids
            .into_iter()
            .zip(states)
            .map(|(txn_id, state)| transaction_state(txn_id, state))
            .collect();
        Ok(Response::new(proto::GetTransactionsResponse { txns }))
    }
}

/// One transaction as `GetTransactions` answers it.
fn transaction_state(txn_id: String, state: Option<TxnState>) -> proto::TransactionState {
    let (status, legs, reason) = match state {
        None => (proto::TxnStatus::TxnUnknown, Vec::new(), String::new()),
        Some(TxnState::Pending { legs, .. }) => (proto::TxnStatus::TxnPending, legs, String::new()),
        Some(TxnState::Posted { legs, .. }) => (proto::TxnStatus::TxnPosted, legs, String::new()),
        Some(TxnState::Voided { reason, legs, .. }) => (
            proto::TxnStatus::TxnVoided,
            legs.unwrap_or_default(),
            reason.to_string(),
        ),
    };
    proto::TransactionState {
        txn_id,
        status: status as i32,
        legs: legs_to_proto(&legs),
        reason,
    }
}
