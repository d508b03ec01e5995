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
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
