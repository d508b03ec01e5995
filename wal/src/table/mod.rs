//! History tables: immutable, sorted, checksummed files of key → (time,
//! value) beside the log, through the same `Storage` seam. The design (byte
//! maps, the checkpoint's write order, crash states, merging and expiry) is
//! `docs/history-tables.md` (issue #22).
//!
//! So far only the [`filter`] exists; the table file, the manifest and the
//! store follow, each with its crash tests, before either core uses them.

pub mod filter;
