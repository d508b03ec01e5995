//! The `Bank` gRPC service: decode, call the ledger, encode. Thin on
//! purpose; every decision is the ledger's. Errors map to gRPC status codes
//! in one exhaustive function, [`status`].

use std::sync::Arc;

use ledger::{
    AccountNo, Amount, Bank, BankError, Direction, InvalidRequest, Leg, ParticipantError, TxnId,
    Vote,
};
use minipay_proto::v1 as proto;
use tonic::{Request, Response, Status};

use crate::request_log::note;

/// What the service needs besides the ledger.
pub struct BankService {
    bank: Arc<Bank>,
    currency: String,
    /// Called when the log fails: the process must stop (fail-stop).
    on_storage_failure: Arc<dyn Fn() + Send + Sync>,
}

impl BankService {
    pub fn new(bank: Arc<Bank>, on_storage_failure: Arc<dyn Fn() + Send + Sync>) -> BankService {
        let currency = bank.currency();
        BankService {
            bank,
            currency,
            on_storage_failure,
        }
    }

    fn fail(&self, error: BankError) -> Status {
        if let BankError::Storage(_) = &error {
            tracing::error!(%error, "storage failed; stopping the bank");
            (self.on_storage_failure)();
        }
        status(error)
    }

    fn money(&self, amount: Amount) -> String {
        format!("{amount} {}", self.currency)
    }
}

/// The one mapping from ledger errors to gRPC status codes.
pub fn status(error: BankError) -> Status {
    match error {
        BankError::Refused(refused) => {
            let message = refused.to_string();
            match refused {
                ParticipantError::Invalid(_) => Status::invalid_argument(message),
                ParticipantError::TxnIdReused { .. } => Status::already_exists(message),
                ParticipantError::CommitUnknown { .. }
                | ParticipantError::CommitAfterAbort { .. }
                | ParticipantError::AbortAfterCommit { .. } => Status::failed_precondition(message),
                ParticipantError::UnknownAccount { .. } => Status::not_found(message),
                ParticipantError::DuplicateAccount { .. } => Status::already_exists(message),
            }
        }
        BankError::Storage(_) => Status::unavailable("the bank's storage failed; it is restarting"),
    }
}

fn invalid(error: InvalidRequest) -> Status {
    Status::invalid_argument(error.to_string())
}

pub fn parse_txn(text: &str) -> Result<TxnId, Status> {
    TxnId::parse(text).map_err(invalid)
}

pub fn parse_account(text: &str) -> Result<AccountNo, Status> {
    AccountNo::parse(text).map_err(invalid)
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

/// Milliseconds since the Unix epoch: the bank's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
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
            currency: self.currency.clone(),
        }))
    }

    async fn prepare(
        &self,
        request: Request<proto::PrepareRequest>,
    ) -> Result<Response<proto::PrepareResponse>, Status> {
        let request = request.into_inner();
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
        Ok(Response::new(proto::PrepareResponse {
            vote: vote as i32,
            reason,
        }))
    }

    async fn commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        note("txn_id", &request.get_ref().txn_id);
        let txn = parse_txn(&request.get_ref().txn_id)?;
        let result = self.bank.commit(txn, now_ms()).await;
        if let Err(BankError::Refused(error)) = &result {
            tracing::error!(%error, "coordinator protocol violation");
        }
        result.map_err(|error| self.fail(error))?;
        Ok(Response::new(proto::CommitResponse {}))
    }

    async fn abort(
        &self,
        request: Request<proto::AbortRequest>,
    ) -> Result<Response<proto::AbortResponse>, Status> {
        note("txn_id", &request.get_ref().txn_id);
        let txn = parse_txn(&request.get_ref().txn_id)?;
        let result = self.bank.abort(txn, now_ms()).await;
        if let Err(BankError::Refused(error)) = &result {
            tracing::error!(%error, "coordinator protocol violation");
        }
        result.map_err(|error| self.fail(error))?;
        Ok(Response::new(proto::AbortResponse {}))
    }

    async fn list_in_doubt(
        &self,
        _request: Request<proto::ListInDoubtRequest>,
    ) -> Result<Response<proto::ListInDoubtResponse>, Status> {
        let txns = self
            .bank
            .in_doubt()
            .into_iter()
            .map(|doubt| proto::InDoubtTxn {
                txn_id: doubt.txn.to_string(),
                legs: legs_to_proto(&doubt.legs),
                prepared_at_ms: doubt.prepared_at_ms,
            })
            .collect();
        Ok(Response::new(proto::ListInDoubtResponse { txns }))
    }
}
