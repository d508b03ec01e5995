//! The gateway's side of each bank: mTLS gRPC clients (gateway certificate),
//! and [`coordinator::Participant`] over them with per-call deadlines.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use coordinator::{CallError, CallFuture, Leg, Participant, TxnId, Vote};
use minipay_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};

use crate::tls::TlsDir;

/// How long connecting to a bank may take before a call counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One lazily connected channel per bank; a bank that is down does not
/// stop the gateway from starting or serving the others.
#[derive(Clone)]
pub struct BankClients {
    banks: HashMap<String, Channel>,
}

impl BankClients {
    /// `banks`: (name, URL) pairs.
    pub fn new(banks: &[(String, String)], tls: &TlsDir) -> anyhow::Result<BankClients> {
        let mut channels = HashMap::new();
        for (name, url) in banks {
            let endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("bank {name}: bad URL {url:?}"))?
                .tls_config(tls.client("gateway")?)
                .with_context(|| format!("bank {name}: TLS"))?
                .connect_timeout(CONNECT_TIMEOUT);
            channels.insert(name.clone(), endpoint.connect_lazy());
        }
        Ok(BankClients { banks: channels })
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.banks.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn client(&self, bank: &str) -> Option<proto::bank_client::BankClient<Channel>> {
        self.banks
            .get(bank)
            .cloned()
            .map(proto::bank_client::BankClient::new)
    }

    fn call_client(
        &self,
        bank: &str,
    ) -> Result<proto::bank_client::BankClient<Channel>, CallError> {
        self.client(bank).ok_or_else(|| CallError::Refused {
            bank: bank.to_owned(),
            detail: "unknown bank".into(),
        })
    }
}

fn txn_text(txn: TxnId) -> String {
    ledger::TxnId(txn.0).to_string()
}

fn legs_to_proto(legs: &[Leg]) -> Vec<proto::Leg> {
    legs.iter()
        .map(|leg| proto::Leg {
            account_no: leg.account.clone(),
            direction: match leg.direction {
                coordinator::Direction::Debit => proto::Direction::Debit,
                coordinator::Direction::Credit => proto::Direction::Credit,
            } as i32,
            amount: leg.amount.0,
        })
        .collect()
}

/// Runs one call with a deadline and classifies what went wrong.
async fn with_deadline<T>(
    bank: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CallError::Timeout {
            bank: bank.to_owned(),
            timeout,
        }),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                Err(CallError::Unreachable {
                    bank: bank.to_owned(),
                    detail: status.message().to_owned(),
                })
            }
            tonic::Code::DeadlineExceeded => Err(CallError::Timeout {
                bank: bank.to_owned(),
                timeout,
            }),
            _ => Err(CallError::Refused {
                bank: bank.to_owned(),
                detail: format!(
                    "{} ({})",
                    status.message(),
                    crate::request_log::code_name(status.code())
                ),
            }),
        },
    }
}

impl Participant for BankClients {
    fn prepare<'a>(
        &'a self,
        bank: &'a str,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, Vote> {
        Box::pin(async move {
            let mut client = self.call_client(bank)?;
            let message = proto::PrepareRequest {
                txn_id: txn_text(txn),
                legs: legs_to_proto(&legs),
            };
            let response =
                with_deadline(bank, timeout, client.prepare(tonic::Request::new(message))).await?;
            match proto::Vote::try_from(response.vote) {
                Ok(proto::Vote::Yes) => Ok(Vote::Yes),
                Ok(proto::Vote::No) => Ok(Vote::No {
                    reason: response.reason,
                }),
                Ok(proto::Vote::Unspecified) | Err(_) => Err(CallError::Refused {
                    bank: bank.to_owned(),
                    detail: "vote missing".into(),
                }),
            }
        })
    }

    fn commit<'a>(&'a self, bank: &'a str, txn: TxnId, timeout: Duration) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let mut client = self.call_client(bank)?;
            let message = proto::CommitRequest {
                txn_id: txn_text(txn),
            };
            with_deadline(bank, timeout, client.commit(tonic::Request::new(message)))
                .await
                .map(|_| ())
        })
    }

    fn abort<'a>(&'a self, bank: &'a str, txn: TxnId, timeout: Duration) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let mut client = self.call_client(bank)?;
            let message = proto::AbortRequest {
                txn_id: txn_text(txn),
            };
            with_deadline(bank, timeout, client.abort(tonic::Request::new(message)))
                .await
                .map(|_| ())
        })
    }
}
