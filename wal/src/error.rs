//! Errors, one enum per family of operation, each naming the file involved.

use std::io;
use std::sync::Arc;

use crate::record::{Invalid, Lsn};
use crate::segment::BadHeader;

/// An I/O call that failed, with the file it was about.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoFailure {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl IoFailure {
    pub fn new(op: &'static str, path: String, source: io::Error) -> IoFailure {
        IoFailure { op, path, source }
    }
}

/// What makes a log corrupt rather than merely torn at its tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptReason {
    /// The segment's header is damaged or foreign.
    SegmentHeader(BadHeader),
    /// A segment does not start where the previous one ended (a segment is
    /// missing, or records at the end of the previous one were lost).
    LsnGap { expected: Lsn, found: Lsn },
    /// An invalid record is followed by a valid one: acknowledged data after
    /// the damage would be lost by truncating.
    ValidRecordAfterDamage {
        invalid: Invalid,
        next_valid_offset: u64,
    },
    /// An invalid record in a segment that is not the last one.
    DamageInSealedSegment { invalid: Invalid },
    /// The directory has snapshots but no segments: the log was removed.
    SnapshotsWithoutSegments,
}

impl std::fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorruptReason::SegmentHeader(bad) => write!(f, "{bad}"),
            CorruptReason::LsnGap { expected, found } => write!(
                f,
                "segment starts at lsn {found} but lsn {expected} was expected (missing segment or lost records)"
            ),
            CorruptReason::ValidRecordAfterDamage {
                invalid,
                next_valid_offset,
            } => write!(
                f,
                "{invalid}, and a valid record follows at offset {next_valid_offset}"
            ),
            CorruptReason::DamageInSealedSegment { invalid } => {
                write!(f, "{invalid} inside a sealed (not last) segment")
            }
            CorruptReason::SnapshotsWithoutSegments => {
                write!(f, "snapshots exist but every log segment is missing")
            }
        }
    }
}

/// Opening (recovering) a log failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("{dir} is not a WAL directory: it holds {found:?} but no segments")]
    NotAWal { dir: String, found: String },
    #[error("corrupt WAL: segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: CorruptReason,
    },
    #[error("snapshot {file} is corrupt: {reason}")]
    CorruptSnapshot { file: String, reason: &'static str },
    #[error("invalid WAL options: {0}")]
    BadOptions(&'static str),
}

/// An append was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("record payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: u32 },
    #[error("record kind 0 is reserved")]
    ReservedKind,
    #[error("the log is poisoned by a failed write or sync ({cause}); reopen it to recover")]
    Poisoned { cause: Arc<IoFailure> },
    #[error("the log is closed")]
    Closed,
}

/// Reading records back failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("records from lsn {requested} were asked for, but the log starts at lsn {first}")]
    Missing { requested: Lsn, first: Lsn },
    #[error("corrupt WAL: segment {segment} at offset {offset}: {invalid}")]
    Corrupt {
        segment: String,
        offset: u64,
        invalid: Invalid,
    },
    #[error("replay stopped by its visitor: {0}")]
    Visitor(E),
}

impl<E> ReplayError<E> {
    /// Separates the visitor's own error (`Ok`) from the log's (`Err`, with
    /// its structure kept), for callers whose visitor error is their own.
    pub fn into_visitor(self) -> Result<E, ReplayError<std::convert::Infallible>> {
        match self {
            ReplayError::Visitor(error) => Ok(error),
            ReplayError::Io(failure) => Err(ReplayError::Io(failure)),
            ReplayError::Missing { requested, first } => {
                Err(ReplayError::Missing { requested, first })
            }
            ReplayError::Corrupt {
                segment,
                offset,
                invalid,
            } => Err(ReplayError::Corrupt {
                segment,
                offset,
                invalid,
            }),
        }
    }
}

/// Deleting checkpointed segments failed. The log is poisoned afterwards
/// only if the failure was in syncing the directory.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("checkpoint at lsn {requested} is beyond the durable lsn {durable}")]
    BeyondDurable { requested: Lsn, durable: Lsn },
    #[error(transparent)]
    Poisoned(#[from] AppendError),
}

/// Writing or loading a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("snapshot {file} is corrupt: {reason}")]
    Corrupt { file: String, reason: &'static str },
}
