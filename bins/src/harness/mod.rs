//! What drives a whole system: child-process clusters ([`cluster`]),
//! `minipay chaos`, `minipay bench` ([`load_generator`]), `minipay demo`,
//! fuzz entry points ([`fuzzing`]) and `minipay sim` ([`sim`], the command
//! line over the `minipay-simulation` crate).

pub mod chaos;
pub mod cluster;
pub mod demo;
pub mod fuzzing;
pub mod load_generator;
pub mod sim;
