//! minipay's gRPC protocol, generated from `minipay/v1/*.proto`.
//!
//! Architecture invariant: only message and service definitions live here;
//! no behaviour, no validation, no TLS.

#![allow(clippy::all, clippy::pedantic)]

/// Package `minipay.v1`.
pub mod v1 {
    tonic::include_proto!("minipay.v1");
}
