//! `gateway`: the payment gateway server. See `gateway --help` and README.md.

use clap::Parser;
use minipay::servers::gateway::node::{self as gateway_node, GatewayCommand};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "The minipay payment gateway: sessions, idempotent payments, 2PC across banks"
)]
struct Cli {
    #[command(flatten)]
    command: GatewayCommand,
}

fn main() -> std::process::ExitCode {
    gateway_node::main(Cli::parse().command)
}
