//! `bank`: one named bank's server. See `bank --help` and README.md.

use clap::Parser;
use minipay::servers::bank::node::{self as bank_node, BankCommand};

#[derive(Parser)]
#[command(
    name = "bank",
    version,
    about = "A minipay bank server: accounts, balances and a vote in two-phase commit"
)]
struct Cli {
    #[command(flatten)]
    command: BankCommand,
}

fn main() -> std::process::ExitCode {
    bank_node::main(Cli::parse().command)
}
