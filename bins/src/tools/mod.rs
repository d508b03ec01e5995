//! Operator tools that run and exit: [`wal`] (dump, verify, repair, bench,
//! the raw disk) and [`certs`] (a development CA and node certificates).

pub mod certs;
pub mod wal;
