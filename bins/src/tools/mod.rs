//! Operator tools that run and exit: [`wal`] (dump, verify, repair, bench,
//! the raw disk), [`tables`] (dumping and checking the history tables beside
//! a log) and [`certs`] (a development CA and node certificates).

pub mod certs;
pub mod tables;
pub mod wal;
