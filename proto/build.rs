//! Compiles `minipay/v1/*.proto` with the pure-Rust `protox` compiler, so no
//! system `protoc` is needed, and generates tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=minipay");
    let files = [
        "minipay/v1/bank.proto",
        "minipay/v1/decisions.proto",
        "minipay/v1/gateway.proto",
    ];
    let descriptors = protox::compile(files, ["."])?;
    // The encoded descriptors, for gRPC server reflection.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("minipay_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
