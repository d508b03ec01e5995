//! minipay's write-ahead log.
//!
//! Every durable byte in minipay (a bank's ledger, the gateway's decision
//! log, a client's offline queue) goes through this crate. It is an
//! append-only sequence of checksummed records in preallocated segment files,
//! made durable by group commit (one write and one `fdatasync` for everything
//! pending), fail-stop on any I/O error, recovered on open (a torn tail is
//! zeroed, anything else damaged is refused), and trimmed by checkpoints.
//!
//! Architecture invariant: this crate knows nothing about money, banks,
//! payments, gRPC or async runtimes. Record kinds and payloads are opaque
//! bytes chosen by the owner; async callers get a plain [`std::future::Future`].
//!
//! The byte layout, fsync sequence and recovery decision table are written
//! down in `docs/wal-format.md`.
//!
//! ```no_run
//! use wal::{Options, RecordKind, Wal};
//! let recovered = Wal::open("data/wal".as_ref(), Options::default())?;
//! let log = recovered.wal;
//! let lsn = log.append(RecordKind(1), b"hello")?; // durable when this returns
//! log.replay(wal::Lsn::FIRST, |record| {
//!     println!("{} {:?}", record.lsn, record.payload);
//!     Ok::<_, std::convert::Infallible>(())
//! })?;
//! # let _ = lsn;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod async_append;
pub mod codec;
mod error;
mod group_commit;
mod log;
mod record;
mod recovery;
mod repair;
mod segment;
mod segment_writer;
pub mod sim;
mod snapshot;
mod storage;
pub mod table;

pub use async_append::{AppendFuture, DurableFuture, block_on};
pub use error::{
    AppendError, CheckpointError, CorruptReason, IoFailure, OpenError, ReplayError, SnapshotError,
};
pub use group_commit::CommitStats;
pub use log::{
    Options, PAYLOAD_LEN_LIMIT, Recovered, RecoveryReport, SYNCS_IN_FLIGHT_LIMIT, Wal, inspect,
    read_records,
};
pub use record::{
    Invalid, Lsn, RECORD_HEADER_LEN, RecordKind, RecordRef, decode_any as decode_record,
    encode as encode_record, framed_len,
};
pub use recovery::{Damage, Scan, SegmentInfo};
pub use repair::{RepairOutcome, repair};
pub use segment::{SEGMENT_HEADER_LEN, segment_name};
pub use segment_writer::SyncPolicy;
pub use snapshot::{Snapshot, load_latest_snapshot, write_snapshot};
pub use storage::{FsStorage, ReadView, Storage, StorageFile};
