//! What drives a whole system: child-process clusters ([`cluster`]),
//! `minipay chaos`, `minipay bench` ([`load_generator`]), `minipay
//! history-bench` ([`history`]), `minipay demo`,
//! fuzz entry points ([`fuzzing`]), `minipay sim` ([`sim`], the command
//! line over the `minipay-simulation` crate), the SVG plots and HTML page
//! of the run reports ([`report`]), and the one poll-until-it-holds
//! loop the demo and the integration tests wait with ([`wait`]).

pub mod chaos;
pub mod cluster;
pub mod demo;
pub mod fuzzing;
pub mod history;
pub mod load_generator;
pub mod report;
pub mod sim;
pub mod wait;
