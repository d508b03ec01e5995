//! The client's persistent payment queue, on the project's WAL: a payment is
//! written here (with its txn id) *before* it is first sent, and its outcome
//! when it arrives. A crash of the client loses neither; a resend reuses the
//! txn id, so no retry can pay twice.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use wal::codec::{DecodeError, Reader, Writer};
use wal::{Lsn, RecordKind, Wal};

pub const QUEUED: RecordKind = RecordKind(0x30);
pub const OUTCOME: RecordKind = RecordKind(0x31);

/// A payment the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedPayment {
    pub txn_id: String,
    pub to_bank: String,
    pub to_account: String,
    pub amount: u64,
    pub currency: String,
    pub queued_at_ms: u64,
    /// `None` while no final answer arrived.
    pub outcome: Option<Outcome>,
}

/// A final answer from the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub committed: bool,
    pub reason: String,
}

enum QueueRecord {
    Queued(QueuedPayment),
    Outcome { txn_id: String, outcome: Outcome },
}

fn encode(record: &QueueRecord) -> (RecordKind, Vec<u8>) {
    let mut writer = Writer::default();
    match record {
        QueueRecord::Queued(payment) => {
            writer
                .str(&payment.txn_id)
                .str(&payment.to_bank)
                .str(&payment.to_account)
                .u64(payment.amount)
                .str(&payment.currency)
                .u64(payment.queued_at_ms);
            (QUEUED, writer.0)
        }
        QueueRecord::Outcome { txn_id, outcome } => {
            writer
                .str(txn_id)
                .u8(u8::from(outcome.committed))
                .str(&outcome.reason);
            (OUTCOME, writer.0)
        }
    }
}

fn decode(kind: RecordKind, payload: &[u8]) -> Result<QueueRecord, DecodeError> {
    let mut reader = Reader::new(payload);
    let text = |reader: &mut Reader<'_>| reader.str().map(str::to_owned);
    let record = match kind {
        QUEUED => QueueRecord::Queued(QueuedPayment {
            txn_id: text(&mut reader)?,
            to_bank: text(&mut reader)?,
            to_account: text(&mut reader)?,
            amount: reader.u64()?,
            currency: text(&mut reader)?,
            queued_at_ms: reader.u64()?,
            outcome: None,
        }),
        OUTCOME => QueueRecord::Outcome {
            txn_id: text(&mut reader)?,
            outcome: Outcome {
                committed: match reader.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("bad outcome")),
                },
                reason: text(&mut reader)?,
            },
        },
        _ => return Err(DecodeError("not a client queue record kind")),
    };
    reader.finish()?;
    Ok(record)
}

/// The queue and every payment this profile made, in the order asked.
pub struct PaymentQueue {
    wal: Wal,
    payments: BTreeMap<u64, QueuedPayment>,
    by_txn: BTreeMap<String, u64>,
}

fn small_log() -> wal::Options {
    wal::Options {
        segment_size: 1 << 20,
        payload_len_max: 4096,
        syncs_in_flight_max: 1,
        prepare_segments_ahead: false,
        ..wal::Options::default()
    }
}

impl PaymentQueue {
    /// Opens (or creates) the queue in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<PaymentQueue> {
        let recovered = Wal::open(dir, small_log())
            .with_context(|| format!("open the payment queue in {}", dir.display()))?;
        let mut queue = PaymentQueue {
            wal: recovered.wal,
            payments: BTreeMap::new(),
            by_txn: BTreeMap::new(),
        };
        let mut records = Vec::new();
        queue
            .wal
            .replay(Lsn::FIRST, |record| {
                records.push((record.lsn, decode(record.kind, record.payload)?));
                Ok::<_, DecodeError>(())
            })
            .map_err(|error| {
                anyhow::anyhow!("read the payment queue in {}: {error}", dir.display())
            })?;
        for (lsn, record) in records {
            queue.apply(lsn, record);
        }
        Ok(queue)
    }

    fn apply(&mut self, lsn: Lsn, record: QueueRecord) {
        match record {
            QueueRecord::Queued(payment) => {
                self.by_txn.insert(payment.txn_id.clone(), lsn.0);
                self.payments.insert(lsn.0, payment);
            }
            QueueRecord::Outcome { txn_id, outcome } => {
                if let Some(position) = self.by_txn.get(&txn_id)
                    && let Some(payment) = self.payments.get_mut(position)
                {
                    payment.outcome = Some(outcome);
                }
            }
        }
    }

    fn write(&mut self, record: QueueRecord) -> anyhow::Result<()> {
        let (kind, payload) = encode(&record);
        let lsn = self
            .wal
            .append(kind, &payload)
            .context("write to the payment queue")?;
        self.apply(lsn, record);
        Ok(())
    }

    /// Durably queues a new payment (before it is sent).
    pub fn queue(&mut self, payment: QueuedPayment) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.by_txn.contains_key(&payment.txn_id),
            "transaction id {} is already in this profile's history",
            payment.txn_id
        );
        self.write(QueueRecord::Queued(payment))
    }

    /// Durably records a payment's final outcome.
    pub fn settle(&mut self, txn_id: &str, outcome: Outcome) -> anyhow::Result<()> {
        self.write(QueueRecord::Outcome {
            txn_id: txn_id.to_owned(),
            outcome,
        })
    }

    /// Payments without a final outcome, oldest first.
    pub fn pending(&self) -> Vec<QueuedPayment> {
        self.payments
            .values()
            .filter(|payment| payment.outcome.is_none())
            .cloned()
            .collect()
    }

    /// Every payment, oldest first.
    pub fn history(&self) -> Vec<QueuedPayment> {
        self.payments.values().cloned().collect()
    }

    pub fn get(&self, txn_id: &str) -> Option<&QueuedPayment> {
        self.by_txn
            .get(txn_id)
            .and_then(|position| self.payments.get(position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(txn: &str) -> QueuedPayment {
        QueuedPayment {
            txn_id: txn.into(),
            to_bank: "bank_b".into(),
            to_account: "456".into(),
            amount: 1250,
            currency: "INR".into(),
            queued_at_ms: 7,
            outcome: None,
        }
    }

    #[test]
    fn queued_payments_and_outcomes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut queue = PaymentQueue::open(dir.path()).unwrap();
            queue.queue(payment("a")).unwrap();
            queue.queue(payment("b")).unwrap();
            queue
                .settle(
                    "a",
                    Outcome {
                        committed: true,
                        reason: String::new(),
                    },
                )
                .unwrap();
            assert!(queue.queue(payment("a")).is_err(), "an id is used once");
        }
        let queue = PaymentQueue::open(dir.path()).unwrap();
        assert_eq!(
            queue
                .pending()
                .iter()
                .map(|p| p.txn_id.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        assert_eq!(queue.history().len(), 2);
        assert!(queue.get("a").unwrap().outcome.as_ref().unwrap().committed);
    }
}
