//! The bank's history: decided transactions that left memory at a
//! checkpoint, kept in the storage layer's tables (`wal::table`) beside the
//! log, and found again by id when a late or repeated prepare, commit or
//! abort asks. Retention is the tables' horizon: a transaction decided
//! longer ago than `decided_retention_ms` is forgotten, as before.
//!
//! A table entry is one transaction: the key is its id (16 bytes), the time
//! its decision's, the value [`encode_txn`] (a version byte, then the
//! snapshot's encoding of a transaction).

use std::sync::Arc;

use money::TxnId;
use wal::Storage;
use wal::codec::{DecodeError, Reader, Writer};
use wal::table::{Store, StoreOptions, TableError};

use crate::participant::{TxnEntry, read_txn, write_txn};

const VALUE_VERSION: u8 = 1;

/// The bank's table store, speaking transactions.
pub struct History {
    store: Store,
}

impl History {
    /// Opens the tables beside the log; `relied_on` is the generation the
    /// snapshot names (0 without one).
    pub fn open(
        storage: Arc<dyn Storage>,
        options: StoreOptions,
        relied_on: u64,
    ) -> Result<History, TableError> {
        Ok(History {
            store: Store::open(storage, options, relied_on)?,
        })
    }

    /// A history with no tables, on simulated storage (for tests).
    pub fn empty() -> History {
        let storage = Arc::new(wal::sim::SimStorage::new());
        History::open(storage, StoreOptions::default(), 0).expect("empty storage opens")
    }

    /// The decided transaction `txn`, if the tables hold it and it is not
    /// past the retention.
    pub fn find(&self, txn: TxnId) -> Result<Option<TxnEntry>, TableError> {
        let found = self.store.get_decoded(&txn.0, |value| {
            decode_txn(value).map_err(|error| error.to_string())
        })?;
        Ok(found.map(|(_, entry)| entry))
    }

    /// Writes decided transactions as one new table (a checkpoint's), then
    /// expires what is older than `cutoff_ms` and merges if due. Returns
    /// the generation a snapshot must name.
    pub fn add(&self, txns: Vec<(TxnId, TxnEntry)>, cutoff_ms: u64) -> Result<u64, TableError> {
        let entries = txns
            .into_iter()
            .map(|(txn, entry)| {
                let time = entry
                    .state
                    .decided_at_ms()
                    .expect("only decided transactions leave memory");
                (txn.0.to_vec(), time, encode_txn(&entry))
            })
            .collect();
        self.store.add(entries)?;
        self.store.maintain(cutoff_ms)?;
        Ok(self.store.generation())
    }

    /// The live manifest's generation.
    pub fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// The table store itself (for tools and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

pub(crate) fn encode_txn(entry: &TxnEntry) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u8(VALUE_VERSION);
    write_txn(&mut writer, entry);
    writer.0
}

pub(crate) fn decode_txn(value: &[u8]) -> Result<TxnEntry, DecodeError> {
    let mut reader = Reader::new(value);
    if reader.u8()? != VALUE_VERSION {
        return Err(DecodeError("unsupported transaction value version"));
    }
    let entry = read_txn(&mut reader)?;
    reader.finish()?;
    Ok(entry)
}
