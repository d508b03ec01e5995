//! The gateway's snapshot: the history tables' generation it relies on,
//! users (by name) and the payment table in memory (by txn id: unfinished
//! payments, and finished ones not yet in the tables), little-endian
//! through `wal::codec`, with a version byte first. Version 1 (no
//! generation; every payment in memory) still opens.
//! Sessions, login failures, rate limits and phase-2 progress are a node's
//! own and are not kept; the LSNs of decisions are not kept either (a
//! snapshot is taken only of durable state, so every decision in it is).

use std::sync::Arc;

use imbl::{HashMap as SharedHashMap, OrdMap};
use money::TxnId;
use wal::Lsn;
use wal::codec::{DecodeError, Reader, Writer};

use crate::decision_log::{read_account, read_bank, read_request, write_request};
use crate::gateway::state::{Decision, Entry, GatewayState};
use crate::payment::{Payment, Status};
use crate::users::User;

const SNAPSHOT_VERSION: u8 = 2;

/// Encodes users and payments (clones taken under the gateway's lock, so
/// this runs without it).
pub(crate) fn encode(
    history_generation: u64,
    users: &OrdMap<String, User>,
    payments: &SharedHashMap<TxnId, Arc<Entry>>,
) -> Vec<u8> {
    let mut writer = Writer::default();
    writer
        .u8(SNAPSHOT_VERSION)
        .u64(history_generation)
        .u64(users.len() as u64);
    for user in users.values() {
        writer
            .str(&user.username)
            .str(user.password_hash())
            .str(user.bank.as_str())
            .str(user.account.as_str());
    }
    let mut payments: Vec<(&TxnId, &Arc<Entry>)> = payments.iter().collect();
    payments.sort_by_key(|(txn, _)| **txn);
    writer.u64(payments.len() as u64);
    for (txn, entry) in payments {
        writer.0.extend_from_slice(&txn.0);
        write_entry(&mut writer, entry);
    }
    writer.0
}

/// One entry, without its id (in a snapshot, and as a history value).
pub(crate) fn write_entry(writer: &mut Writer, entry: &Entry) {
    match &entry.payment {
        None => {
            writer.u8(0);
        }
        Some(payment) => {
            writer.u8(1);
            write_request(writer, &payment.user, &payment.request);
            writer.u64(payment.created_at_ms);
        }
    }
    match &entry.decision {
        None => writer.u8(0),
        Some((Decision::Commit, reason)) => writer.u8(1).str(reason),
        Some((Decision::Abort, reason)) => writer.u8(2).str(reason),
    };
    writer.u64(entry.decided_at_ms).u8(u8::from(entry.ended));
}

/// Restores a snapshot into an empty state (its LSN is the caller's);
/// returns the history generation it relies on.
pub(crate) fn decode(state: &mut GatewayState, bytes: &[u8]) -> Result<u64, DecodeError> {
    assert!(state.users.is_empty() && state.payments.is_empty());
    let mut reader = Reader::new(bytes);
    let history_generation = match reader.u8()? {
        1 => 0,
        SNAPSHOT_VERSION => reader.u64()?,
        _ => return Err(DecodeError("unsupported gateway snapshot version")),
    };
    for _ in 0..reader.u64()? {
        let user = User::new(
            text(&mut reader)?,
            text(&mut reader)?,
            read_bank(&mut reader)?,
            read_account(&mut reader)?,
        );
        state.users.insert(user.username.clone(), user);
    }
    for _ in 0..reader.u64()? {
        let txn = TxnId(reader.array16()?);
        let entry = read_entry(&mut reader, txn)?;
        if entry.payment.is_some() && entry.decision.is_none() {
            state.in_flight += 1;
        }
        if entry.payment.is_some() && entry.decision.is_some() && !entry.ended {
            state.settling.insert(txn);
        }
        if entry.forgettable() {
            state.recent.insert(txn);
        }
        state.payments.insert(txn, Arc::new(entry));
    }
    reader.finish()?;
    Ok(history_generation)
}

fn text(reader: &mut Reader<'_>) -> Result<String, DecodeError> {
    reader.str().map(str::to_owned)
}

pub(crate) fn read_entry(reader: &mut Reader<'_>, txn: TxnId) -> Result<Entry, DecodeError> {
    let payment = match reader.u8()? {
        0 => None,
        1 => Some(read_payment(reader, txn)?),
        _ => return Err(DecodeError("bad payment flag")),
    };
    let decision = match reader.u8()? {
        0 => None,
        1 => Some((Decision::Commit, text(reader)?)),
        2 => Some((Decision::Abort, text(reader)?)),
        _ => return Err(DecodeError("bad decision")),
    };
    let decided_at_ms = reader.u64()?;
    let ended = match reader.u8()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError("bad ended flag")),
    };
    let payment = payment.map(|mut payment| {
        if let Some((decision, reason)) = &decision {
            payment.status = match decision {
                Decision::Commit => Status::Committed,
                Decision::Abort => Status::Aborted,
            };
            payment.reason = reason.clone();
        }
        payment.ended = ended;
        payment
    });
    Ok(Entry {
        payment,
        decision,
        decided_lsn: Lsn(0),
        decided_at_ms,
        ended,
    })
}

fn read_payment(reader: &mut Reader<'_>, txn: TxnId) -> Result<Payment, DecodeError> {
    let (user, request) = read_request(reader, txn)?;
    let created_at_ms = reader.u64()?;
    Ok(Payment {
        request,
        user,
        status: Status::Initiated,
        reason: String::new(),
        created_at_ms,
        ended: false,
        replayed: false,
    })
}
