//! minipay's gRPC protocol, generated from `minipay/v1/*.proto`.
//!
//! Architecture invariant: only message and service definitions live here;
//! no behaviour, no validation, no TLS.

#![allow(clippy::all, clippy::pedantic)]

/// Package `minipay.v1`.
pub mod v1 {
    tonic::include_proto!("minipay.v1");

    /// The encoded `FileDescriptorSet` of every `minipay.v1` file, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/minipay_descriptor.bin"));
}
