//! The ledger's WAL records: what a bank writes for every state change.
//! Kinds `0x10..=0x14` are the ledger's; `docs/bank-participant.md` lists them.

use wal::RecordKind;

use money::Amount;
use money::{AccountNo, Direction, Leg, TxnId};
use wal::codec::{DecodeError, Reader, Writer};

pub const GENESIS: RecordKind = RecordKind(0x10);
pub const ACCOUNT_OPENED: RecordKind = RecordKind(0x11);
pub const PENDING: RecordKind = RecordKind(0x12);
pub const POSTED: RecordKind = RecordKind(0x13);
pub const VOIDED: RecordKind = RecordKind(0x14);

/// Why a transaction was voided (a NO vote or an abort).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VoidReason {
    InsufficientFunds(AccountNo),
    UnknownAccount(AccountNo),
    /// A credit would overflow the account's balance.
    WouldOverflow(AccountNo),
    /// The coordinator aborted a pending transaction.
    Aborted,
    /// An abort arrived before any prepare; a late prepare votes NO.
    AbortedBeforePrepare,
}

impl std::fmt::Display for VoidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VoidReason::InsufficientFunds(account) => {
                write!(f, "insufficient funds in account {account}")
            }
            VoidReason::UnknownAccount(account) => write!(f, "unknown account {account}"),
            VoidReason::WouldOverflow(account) => {
                write!(f, "credit would overflow account {account}")
            }
            VoidReason::Aborted => write!(f, "aborted by the coordinator"),
            VoidReason::AbortedBeforePrepare => write!(f, "aborted before it was prepared"),
        }
    }
}

/// One state change of a bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerRecord {
    Genesis {
        bank: String,
        currency: String,
    },
    AccountOpened {
        account: AccountNo,
        owner: String,
        balance: Amount,
    },
    Pending {
        txn: TxnId,
        legs: Vec<Leg>,
        at_ms: u64,
    },
    Posted {
        txn: TxnId,
        at_ms: u64,
    },
    Voided {
        txn: TxnId,
        reason: VoidReason,
        at_ms: u64,
    },
}

impl LedgerRecord {
    pub fn kind(&self) -> RecordKind {
        match self {
            LedgerRecord::Genesis { .. } => GENESIS,
            LedgerRecord::AccountOpened { .. } => ACCOUNT_OPENED,
            LedgerRecord::Pending { .. } => PENDING,
            LedgerRecord::Posted { .. } => POSTED,
            LedgerRecord::Voided { .. } => VOIDED,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        match self {
            LedgerRecord::Genesis { bank, currency } => {
                writer.str(bank).str(currency);
            }
            LedgerRecord::AccountOpened {
                account,
                owner,
                balance,
            } => {
                writer.str(account.as_str()).str(owner).u64(balance.0);
            }
            LedgerRecord::Pending { txn, legs, at_ms } => {
                writer.0.extend_from_slice(&txn.0);
                writer.u64(*at_ms);
                encode_legs(&mut writer, legs);
            }
            LedgerRecord::Posted { txn, at_ms } => {
                writer.0.extend_from_slice(&txn.0);
                writer.u64(*at_ms);
            }
            LedgerRecord::Voided { txn, reason, at_ms } => {
                writer.0.extend_from_slice(&txn.0);
                writer.u64(*at_ms);
                encode_reason(&mut writer, reason);
            }
        }
        writer.0
    }

    pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<LedgerRecord, DecodeError> {
        let mut reader = Reader::new(payload);
        let record = match kind {
            GENESIS => LedgerRecord::Genesis {
                bank: reader.str()?.to_owned(),
                currency: reader.str()?.to_owned(),
            },
            ACCOUNT_OPENED => LedgerRecord::AccountOpened {
                account: decode_account(&mut reader)?,
                owner: reader.str()?.to_owned(),
                balance: Amount(reader.u64()?),
            },
            PENDING => LedgerRecord::Pending {
                txn: TxnId(reader.array16()?),
                at_ms: reader.u64()?,
                legs: decode_legs(&mut reader)?,
            },
            POSTED => LedgerRecord::Posted {
                txn: TxnId(reader.array16()?),
                at_ms: reader.u64()?,
            },
            VOIDED => LedgerRecord::Voided {
                txn: TxnId(reader.array16()?),
                at_ms: reader.u64()?,
                reason: decode_reason(&mut reader)?,
            },
            _ => return Err(DecodeError("not a ledger record kind")),
        };
        reader.finish()?;
        Ok(record)
    }
}

pub(crate) fn decode_account(reader: &mut Reader<'_>) -> Result<AccountNo, DecodeError> {
    AccountNo::parse(reader.str()?).map_err(|_| DecodeError("bad account number"))
}

pub(crate) fn encode_legs(writer: &mut Writer, legs: &[Leg]) {
    writer.u32(legs.len() as u32);
    for leg in legs {
        let direction = match leg.direction {
            Direction::Debit => 1,
            Direction::Credit => 2,
        };
        writer
            .str(leg.account.as_str())
            .u8(direction)
            .u64(leg.amount.0);
    }
}

pub(crate) fn decode_legs(reader: &mut Reader<'_>) -> Result<Vec<Leg>, DecodeError> {
    let count = reader.u32()? as usize;
    if count > crate::txn::LEGS_MAX {
        return Err(DecodeError("too many legs"));
    }
    (0..count)
        .map(|_| {
            Ok(Leg {
                account: decode_account(reader)?,
                direction: match reader.u8()? {
                    1 => Direction::Debit,
                    2 => Direction::Credit,
                    _ => return Err(DecodeError("bad direction")),
                },
                amount: Amount(reader.u64()?),
            })
        })
        .collect()
}

pub(crate) fn encode_reason(writer: &mut Writer, reason: &VoidReason) {
    match reason {
        VoidReason::InsufficientFunds(account) => writer.u8(1).str(account.as_str()),
        VoidReason::UnknownAccount(account) => writer.u8(2).str(account.as_str()),
        VoidReason::WouldOverflow(account) => writer.u8(3).str(account.as_str()),
        VoidReason::Aborted => writer.u8(4),
        VoidReason::AbortedBeforePrepare => writer.u8(5),
    };
}

pub(crate) fn decode_reason(reader: &mut Reader<'_>) -> Result<VoidReason, DecodeError> {
    Ok(match reader.u8()? {
        1 => VoidReason::InsufficientFunds(decode_account(reader)?),
        2 => VoidReason::UnknownAccount(decode_account(reader)?),
        3 => VoidReason::WouldOverflow(decode_account(reader)?),
        4 => VoidReason::Aborted,
        5 => VoidReason::AbortedBeforePrepare,
        _ => return Err(DecodeError("bad void reason")),
    })
}
