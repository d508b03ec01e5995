//! The gateway's side of each bank: mTLS gRPC clients (gateway certificate),
//! and [`coordinator::Participant`] over them with per-call deadlines.
//!
//! Prepares and phase-2 decisions are batched per bank: a call joins its
//! bank's queue, and a sender task sends everything queued as one
//! `PrepareBatch` or `FinishBatch` call, one call of each kind in flight per
//! bank (measured: two in flight carried half as many payments per call and
//! made fewer payments per second). Under load the queue fills while the
//! previous call is in flight, so one call carries many payments (one
//! TLS record, one HTTP/2 stream, one bank task); a lone payment goes out at
//! once, alone. Each item keeps its own deadline and its own answer.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use coordinator::{CallError, CallFuture, Participant, Vote};
use minipay_proto::v1 as proto;
use money::{BankName, Leg, TxnId};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use crate::rpc::tls::TlsDir;
use crate::servers::bank::service::BATCH_LEN_MAX;

/// How long connecting to a bank may take before a call counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One call waiting in a bank's queue.
struct Queued<T, R> {
    item: T,
    timeout: Duration,
    reply: oneshot::Sender<Result<R, CallError>>,
}

/// A bank's queue of one kind of call, at most `bank_queue_max` long.
#[derive(Clone)]
struct Queue<T, R> {
    sender: mpsc::Sender<Queued<T, R>>,
    queue_max: usize,
}

/// One bank: its channel and its two batch queues.
#[derive(Clone)]
struct BankLink {
    channel: Channel,
    prepares: Queue<proto::PrepareRequest, Vote>,
    finishes: Queue<proto::Finish, ()>,
}

/// One lazily connected channel per bank; a bank that is down does not
/// stop the gateway from starting or serving the others. Must be created
/// inside a tokio runtime (it starts the batch senders).
#[derive(Clone)]
pub struct BankClients {
    banks: HashMap<BankName, BankLink>,
}

impl BankClients {
    /// `banks`: (name, URL) pairs; each bank's queue of prepares and its
    /// queue of phase-2 decisions hold at most `queue_max` calls.
    pub fn new(
        banks: &[(BankName, String)],
        tls: &TlsDir,
        queue_max: usize,
    ) -> anyhow::Result<BankClients> {
        let mut links = HashMap::new();
        for (name, url) in banks {
            let endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("bank {name}: bad URL {url:?}"))?
                .tls_config(tls.client("gateway")?)
                .with_context(|| format!("bank {name}: TLS"))?
                .connect_timeout(CONNECT_TIMEOUT);
            let channel = endpoint.connect_lazy();
            let link = BankLink {
                prepares: start_sender(name, channel.clone(), queue_max, send_prepares),
                finishes: start_sender(name, channel.clone(), queue_max, send_finishes),
                channel,
            };
            links.insert(name.clone(), link);
        }
        Ok(BankClients { banks: links })
    }

    pub fn names(&self) -> Vec<BankName> {
        let mut names: Vec<BankName> = self.banks.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn client(&self, bank: &BankName) -> Option<proto::bank_client::BankClient<Channel>> {
        self.banks
            .get(bank)
            .map(|link| proto::bank_client::BankClient::new(link.channel.clone()))
    }

    fn link(&self, bank: &BankName) -> Result<&BankLink, CallError> {
        self.banks.get(bank).ok_or_else(|| CallError::Refused {
            bank: bank.clone(),
            detail: "unknown bank".into(),
        })
    }
}

/// Puts one call in a bank's queue and waits for its answer, at most `timeout`.
async fn queue_call<T, R>(
    bank: &BankName,
    queue: &Queue<T, R>,
    item: T,
    timeout: Duration,
) -> Result<R, CallError> {
    let (reply, answer) = oneshot::channel();
    let unreachable = || CallError::Unreachable {
        bank: bank.clone(),
        detail: "the gateway is shutting down".into(),
    };
    match queue.sender.try_send(Queued {
        item,
        timeout,
        reply,
    }) {
        Ok(()) => {}
        // A full queue fails the call at once (a prepare votes no, a phase
        // 2 is retried later) instead of growing.
        Err(mpsc::error::TrySendError::Full(_)) => {
            return Err(CallError::Refused {
                bank: bank.clone(),
                detail: format!(
                    "the gateway's queue to this bank is full (bank_queue_max {})",
                    queue.queue_max
                ),
            });
        }
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(unreachable()),
    }
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(CallError::Timeout {
            bank: bank.clone(),
            timeout,
        }),
        Ok(Err(_)) => Err(unreachable()),
        Ok(Ok(result)) => result,
    }
}

/// The most encoded bytes of items one batch call carries: half of what a
/// bank accepts in one message, leaving room for framing.
const BATCH_BYTES_MAX: usize = crate::servers::bank::node::BANK_MESSAGE_LEN_MAX / 2;

/// An item's share of its batch message: its encoding, tag and length.
fn item_len(item: &impl prost::Message) -> usize {
    let len = item.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// What a batch call produced: an answer per item, in order, or one error
/// for all of them.
type BatchAnswer<R> = Result<Vec<Result<R, CallError>>, CallError>;

/// Starts the task that drains one bank's queue into batch calls.
fn start_sender<T, R, F, Fut>(
    bank: &BankName,
    channel: Channel,
    queue_max: usize,
    call: F,
) -> Queue<T, R>
where
    T: prost::Message + Send + 'static,
    R: Send + 'static,
    F: Fn(BankName, proto::bank_client::BankClient<Channel>, Vec<T>, Duration) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = BatchAnswer<R>> + Send + 'static,
{
    assert!(queue_max >= 1);
    let (sender, mut queued) = mpsc::channel::<Queued<T, R>>(queue_max);
    let bank = bank.clone();
    tokio::spawn(async move {
        // One call in flight: what queues meanwhile is the next batch, up to
        // the item and byte bounds; an item that would overflow it opens the
        // batch after.
        let mut carried: Option<Queued<T, R>> = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match queued.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let (mut batch, overflow) = collect_batch(first, &mut queued);
            carried = overflow;
            // Callers that gave up (deadline passed) are not sent.
            batch.retain(|queued| !queued.reply.is_closed());
            let Some(timeout) = batch.iter().map(|queued| queued.timeout).max() else {
                continue;
            };
            let (items, replies): (Vec<T>, Vec<_>) = batch
                .into_iter()
                .map(|queued| (queued.item, queued.reply))
                .unzip();
            let client = proto::bank_client::BankClient::new(channel.clone());
            let expected = replies.len();
            let answers = match call(bank.clone(), client, items, timeout).await {
                Ok(answers) if answers.len() == expected => answers,
                Ok(answers) => {
                    let error = CallError::Refused {
                        bank: bank.clone(),
                        detail: format!("answered {} of {expected} items", answers.len()),
                    };
                    (0..expected).map(|_| Err(error.clone())).collect()
                }
                Err(error) => (0..expected).map(|_| Err(error.clone())).collect(),
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    });
    Queue { sender, queue_max }
}

/// Calls that go out together in one batch call, in queue order.
type Batch<T, R> = Vec<Queued<T, R>>;

/// The batch `first` opens: it and what queued behind it, up to
/// [`BATCH_LEN_MAX`] items and [`BATCH_BYTES_MAX`] bytes, without waiting for
/// more (a lone call goes out at once). Also returns the item that would
/// have overflowed the bytes, if one did: it opens the next batch.
fn collect_batch<T: prost::Message, R>(
    first: Queued<T, R>,
    queued: &mut mpsc::Receiver<Queued<T, R>>,
) -> (Batch<T, R>, Option<Queued<T, R>>) {
    let mut bytes = item_len(&first.item);
    let mut batch = vec![first];
    while batch.len() < BATCH_LEN_MAX {
        let Ok(next) = queued.try_recv() else { break };
        let len = item_len(&next.item);
        if bytes + len > BATCH_BYTES_MAX {
            return (batch, Some(next));
        }
        bytes += len;
        batch.push(next);
    }
    (batch, None)
}

/// The first item's `traceparent`, for the batch call's metadata.
fn first_trace<'a>(
    mut items: impl Iterator<Item = &'a str>,
) -> Option<tonic::metadata::AsciiMetadataValue> {
    items.find(|header| !header.is_empty())?.parse().ok()
}

/// A batch call carrying its first item's trace context in metadata (each
/// item carries its own in the message).
fn traced<T>(message: T, first: Option<tonic::metadata::AsciiMetadataValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(header) = first {
        request
            .metadata_mut()
            .insert(crate::rpc::trace::TRACEPARENT, header);
    }
    request
}

async fn send_prepares(
    bank: BankName,
    mut client: proto::bank_client::BankClient<Channel>,
    prepares: Vec<proto::PrepareRequest>,
    timeout: Duration,
) -> BatchAnswer<Vote> {
    let first = first_trace(prepares.iter().map(|item| item.traceparent.as_str()));
    let request = traced(proto::PrepareBatchRequest { prepares }, first);
    let response = with_deadline(&bank, timeout, client.prepare_batch(request)).await?;
    Ok(response
        .outcomes
        .into_iter()
        .map(|outcome| {
            item_result(&bank, outcome.status, timeout)?;
            let vote = outcome.vote.unwrap_or_default();
            match proto::Vote::try_from(vote.vote) {
                Ok(proto::Vote::Yes) => Ok(Vote::Yes),
                Ok(proto::Vote::No) => Ok(Vote::No {
                    reason: vote.reason,
                }),
                Ok(proto::Vote::Unspecified) | Err(_) => Err(CallError::Refused {
                    bank: bank.clone(),
                    detail: "vote missing".into(),
                }),
            }
        })
        .collect())
}

async fn send_finishes(
    bank: BankName,
    mut client: proto::bank_client::BankClient<Channel>,
    finishes: Vec<proto::Finish>,
    timeout: Duration,
) -> BatchAnswer<()> {
    let first = first_trace(finishes.iter().map(|item| item.traceparent.as_str()));
    let request = traced(proto::FinishBatchRequest { finishes }, first);
    let response = with_deadline(&bank, timeout, client.finish_batch(request)).await?;
    Ok(response
        .outcomes
        .into_iter()
        .map(|status| item_result(&bank, Some(status), timeout))
        .collect())
}

/// One item's status, classified as a whole call's would be.
fn item_result(
    bank: &BankName,
    status: Option<proto::ItemStatus>,
    timeout: Duration,
) -> Result<(), CallError> {
    let status = status.unwrap_or(proto::ItemStatus {
        code: tonic::Code::Unknown as i32,
        message: "item status missing".into(),
    });
    match tonic::Code::from_i32(status.code) {
        tonic::Code::Ok => Ok(()),
        code => Err(call_error(
            bank,
            tonic::Status::new(code, status.message),
            timeout,
        )),
    }
}

fn legs_to_proto(legs: &[Leg]) -> Vec<proto::Leg> {
    legs.iter()
        .map(|leg| proto::Leg {
            account_no: leg.account.to_string(),
            direction: match leg.direction {
                money::Direction::Debit => proto::Direction::Debit,
                money::Direction::Credit => proto::Direction::Credit,
            } as i32,
            amount: leg.amount.0,
        })
        .collect()
}

/// Runs one call with a deadline and classifies what went wrong.
async fn with_deadline<T>(
    bank: &BankName,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CallError::Timeout {
            bank: bank.clone(),
            timeout,
        }),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(call_error(bank, status, timeout)),
    }
}

/// What a failed call (or batch item) means to the coordinator.
fn call_error(bank: &BankName, status: tonic::Status, timeout: Duration) -> CallError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            CallError::Unreachable {
                bank: bank.clone(),
                detail: status.message().to_owned(),
            }
        }
        tonic::Code::DeadlineExceeded => CallError::Timeout {
            bank: bank.clone(),
            timeout,
        },
        _ => CallError::Refused {
            bank: bank.clone(),
            detail: format!(
                "{} ({})",
                status.message(),
                crate::rpc::request_log::code_name(status.code())
            ),
        },
    }
}

impl Participant for BankClients {
    fn prepare<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        legs: Vec<Leg>,
        timeout: Duration,
    ) -> CallFuture<'a, Vote> {
        Box::pin(async move {
            let link = self.link(bank)?;
            let prepare = proto::PrepareRequest {
                txn_id: txn.to_string(),
                legs: legs_to_proto(&legs),
                traceparent: crate::rpc::trace::child_header(),
            };
            queue_call(bank, &link.prepares, prepare, timeout).await
        })
    }

    fn commit<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.finish(bank, txn, proto::Decision::Commit, timeout)
    }

    fn abort<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        self.finish(bank, txn, proto::Decision::Abort, timeout)
    }
}

impl BankClients {
    fn finish<'a>(
        &'a self,
        bank: &'a BankName,
        txn: TxnId,
        decision: proto::Decision,
        timeout: Duration,
    ) -> CallFuture<'a, ()> {
        Box::pin(async move {
            let link = self.link(bank)?;
            let finish = proto::Finish {
                txn_id: txn.to_string(),
                decision: decision as i32,
                traceparent: crate::rpc::trace::child_header(),
            };
            queue_call(bank, &link.finishes, finish, timeout).await
        })
    }
}
