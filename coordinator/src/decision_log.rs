//! The gateway's WAL records: users, and each payment's initiation,
//! decision and end. Kinds `0x20..=0x23` (see `docs/gateway-coordinator.md`).

use wal::RecordKind;
use wal::codec::{DecodeError, Reader, Writer};

use money::{AccountNo, Amount, BankName, TxnId};

use crate::payment::{Endpoint, PaymentRequest};

pub const USER_REGISTERED: RecordKind = RecordKind(0x20);
pub const INITIATED: RecordKind = RecordKind(0x21);
pub const DECIDED: RecordKind = RecordKind(0x22);
pub const ENDED: RecordKind = RecordKind(0x23);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayRecord {
    UserRegistered {
        username: String,
        password_hash: String,
        bank: BankName,
        account: AccountNo,
    },
    Initiated {
        request: PaymentRequest,
        user: String,
        at_ms: u64,
    },
    Decided {
        txn: TxnId,
        commit: bool,
        reason: String,
        at_ms: u64,
    },
    Ended {
        txn: TxnId,
    },
}

impl GatewayRecord {
    pub fn kind(&self) -> RecordKind {
        match self {
            GatewayRecord::UserRegistered { .. } => USER_REGISTERED,
            GatewayRecord::Initiated { .. } => INITIATED,
            GatewayRecord::Decided { .. } => DECIDED,
            GatewayRecord::Ended { .. } => ENDED,
        }
    }

    /// The payment (or id) a record is about; `None` for a user.
    pub fn txn(&self) -> Option<TxnId> {
        match self {
            GatewayRecord::UserRegistered { .. } => None,
            GatewayRecord::Initiated { request, .. } => Some(request.txn),
            GatewayRecord::Decided { txn, .. } | GatewayRecord::Ended { txn } => Some(*txn),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        match self {
            GatewayRecord::UserRegistered {
                username,
                password_hash,
                bank,
                account,
            } => {
                writer
                    .str(username)
                    .str(password_hash)
                    .str(bank.as_str())
                    .str(account.as_str());
            }
            GatewayRecord::Initiated {
                request,
                user,
                at_ms,
            } => {
                writer.0.extend_from_slice(&request.txn.0);
                write_request(&mut writer, user, request);
                writer.u64(*at_ms);
            }
            GatewayRecord::Decided {
                txn,
                commit,
                reason,
                at_ms,
            } => {
                writer.0.extend_from_slice(&txn.0);
                writer.u8(u8::from(*commit)).str(reason).u64(*at_ms);
            }
            GatewayRecord::Ended { txn } => writer.0.extend_from_slice(&txn.0),
        }
        writer.0
    }

    pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<GatewayRecord, DecodeError> {
        let mut reader = Reader::new(payload);
        let text = |reader: &mut Reader<'_>| reader.str().map(str::to_owned);
        let record = match kind {
            USER_REGISTERED => GatewayRecord::UserRegistered {
                username: text(&mut reader)?,
                password_hash: text(&mut reader)?,
                bank: read_bank(&mut reader)?,
                account: read_account(&mut reader)?,
            },
            INITIATED => {
                let txn = TxnId(reader.array16()?);
                let (user, request) = read_request(&mut reader, txn)?;
                let at_ms = reader.u64()?;
                GatewayRecord::Initiated {
                    request,
                    user,
                    at_ms,
                }
            }
            DECIDED => GatewayRecord::Decided {
                txn: TxnId(reader.array16()?),
                commit: match reader.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("bad decision")),
                },
                reason: text(&mut reader)?,
                at_ms: reader.u64()?,
            },
            ENDED => GatewayRecord::Ended {
                txn: TxnId(reader.array16()?),
            },
            _ => return Err(DecodeError("not a gateway record kind")),
        };
        reader.finish()?;
        Ok(record)
    }
}

/// Whether a WAL record kind is one of the gateway's (for `wal dump`).
pub fn is_gateway_kind(kind: RecordKind) -> bool {
    (0x20..=0x23).contains(&kind.0)
}

/// A bank name as the records and the snapshot store it (checked again on
/// the way in: a record is validated after reading as before writing).
pub(crate) fn read_bank(reader: &mut Reader<'_>) -> Result<BankName, DecodeError> {
    BankName::parse(reader.str()?).map_err(|_| DecodeError("malformed bank name"))
}

/// An account number as the records and the snapshot store it.
pub(crate) fn read_account(reader: &mut Reader<'_>) -> Result<AccountNo, DecodeError> {
    AccountNo::parse(reader.str()?).map_err(|_| DecodeError("malformed account number"))
}

/// A bank and an account.
fn read_endpoint(reader: &mut Reader<'_>) -> Result<Endpoint, DecodeError> {
    Ok(Endpoint {
        bank: read_bank(reader)?,
        account: read_account(reader)?,
    })
}

/// Who asked for a payment and what it moves, as the INITIATED record and
/// the snapshot both store it (the txn id is stored before, by each).
pub(crate) fn write_request(writer: &mut Writer, user: &str, request: &PaymentRequest) {
    writer
        .str(user)
        .str(request.from.bank.as_str())
        .str(request.from.account.as_str())
        .str(request.to.bank.as_str())
        .str(request.to.account.as_str())
        .u64(request.amount.0)
        .str(&request.currency);
}

/// What [`write_request`] wrote: the user and the request of `txn`.
pub(crate) fn read_request(
    reader: &mut Reader<'_>,
    txn: TxnId,
) -> Result<(String, PaymentRequest), DecodeError> {
    let user = reader.str()?.to_owned();
    let from = read_endpoint(reader)?;
    let to = read_endpoint(reader)?;
    let amount = Amount(reader.u64()?);
    let currency = reader.str()?.to_owned();
    let request = PaymentRequest {
        txn,
        from,
        to,
        amount,
        currency,
    };
    Ok((user, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips_and_truncation_is_detected() {
        let request = PaymentRequest {
            txn: TxnId([7; 16]),
            from: Endpoint {
                bank: BankName::parse("bank_a").unwrap(),
                account: AccountNo::parse("123").unwrap(),
            },
            to: Endpoint {
                bank: BankName::parse("bank_b").unwrap(),
                account: AccountNo::parse("456").unwrap(),
            },
            amount: Amount(1250),
            currency: "INR".into(),
        };
        let records = [
            GatewayRecord::UserRegistered {
                username: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                bank: BankName::parse("bank_a").unwrap(),
                account: AccountNo::parse("123").unwrap(),
            },
            GatewayRecord::Initiated {
                request,
                user: "alice".into(),
                at_ms: 5,
            },
            GatewayRecord::Decided {
                txn: TxnId([7; 16]),
                commit: false,
                reason: "insufficient funds".into(),
                at_ms: 6,
            },
            GatewayRecord::Ended {
                txn: TxnId([7; 16]),
            },
        ];
        for record in records {
            let bytes = record.encode();
            assert_eq!(
                GatewayRecord::decode(record.kind(), &bytes),
                Ok(record.clone())
            );
            assert!(GatewayRecord::decode(record.kind(), &bytes[..bytes.len() - 1]).is_err());
        }
    }
}
