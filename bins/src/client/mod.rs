//! The client: [`commands`] (register, login, balance, pay, status,
//! history, queue, sync, with the profile they share) and the persistent
//! offline [`queue`].

pub mod commands;
pub mod queue;
