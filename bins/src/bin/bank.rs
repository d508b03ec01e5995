//! `bank`: one named bank's server. See `bank --help` and README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use minipay::bank_node::{self, BankConfig, BankSettings};
use minipay::process::{LogFormat, init_logging, read_settings, run_server, terminated};

#[derive(Parser)]
#[command(
    name = "bank",
    version,
    about = "A minipay bank server: accounts, balances and a vote in two-phase commit"
)]
struct Cli {
    #[command(flatten)]
    settings: BankSettings,
    /// A TOML file with the same keys as the flags (kebab-case); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    run_server("bank", || {
        let settings = match &cli.config {
            Some(path) => cli.settings.or(read_settings(path)?),
            None => cli.settings,
        };
        let config = BankConfig::from_settings(settings)?;
        Ok(Box::pin(bank_node::run(config, None, terminated())))
    })
}
