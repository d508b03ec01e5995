//! The gateway's history: finished payments (and ids only a bank asked
//! about) that left memory at a checkpoint, kept in the storage layer's
//! tables (`wal::table`) beside the decision log, and found again by id for
//! a repeated `Pay`, a `GetPayment` or a bank's `GetDecision`. Retention is
//! the tables' horizon: an entry decided longer ago than `retention_ms` is
//! forgotten, as before.
//!
//! A table entry is one txn id: the key is the id (16 bytes), the time its
//! decision's, the value a version byte and then the snapshot's encoding of
//! an entry.

use std::sync::Arc;

use money::TxnId;
use wal::Storage;
use wal::codec::{DecodeError, Reader, Writer};
use wal::table::{Store, StoreOptions, TableError};

use crate::gateway::snapshot::{read_entry, write_entry};
use crate::gateway::state::Entry;

const VALUE_VERSION: u8 = 1;

/// The gateway's table store, speaking payment-table entries.
pub(crate) struct History {
    store: Store,
}

impl History {
    /// Opens the tables beside the log; `relied_on` is the generation the
    /// snapshot names (0 without one).
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        options: StoreOptions,
        relied_on: u64,
    ) -> Result<History, TableError> {
        Ok(History {
            store: Store::open(storage, options, relied_on)?,
        })
    }

    /// The finished entry for `txn`, if the tables hold it and it is not
    /// past the retention.
    pub(crate) fn find(&self, txn: TxnId) -> Result<Option<Entry>, TableError> {
        let found = self.store.get_decoded(&txn.0, |value| {
            decode(txn, value).map_err(|error| error.to_string())
        })?;
        Ok(found.map(|(_, entry)| entry))
    }

    /// Writes finished entries as one new table (a checkpoint's), then
    /// expires what is older than `cutoff_ms` and merges if due. Returns
    /// the generation a snapshot must name.
    pub(crate) fn add(
        &self,
        entries: &[(TxnId, Arc<Entry>)],
        cutoff_ms: u64,
    ) -> Result<u64, TableError> {
        let entries = entries
            .iter()
            .map(|(txn, entry)| (txn.0.to_vec(), entry.decided_at_ms, encode(entry)))
            .collect();
        self.store.add(entries)?;
        self.store.maintain(cutoff_ms)?;
        Ok(self.store.generation())
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u8(VALUE_VERSION);
    write_entry(&mut writer, entry);
    writer.0
}

fn decode(txn: TxnId, value: &[u8]) -> Result<Entry, DecodeError> {
    let mut reader = Reader::new(value);
    if reader.u8()? != VALUE_VERSION {
        return Err(DecodeError("unsupported payment value version"));
    }
    let entry = read_entry(&mut reader, txn)?;
    reader.finish()?;
    Ok(entry)
}
