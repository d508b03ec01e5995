//! `bank`: one named bank's server. See `bank --help` and README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use minipay::bank_node::{self, BankConfig, BankSettings, Stopped};
use minipay::process::{LogFormat, init_logging, terminated};

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
    match run(cli) {
        Ok(Stopped::Shutdown) => ExitCode::SUCCESS,
        Ok(Stopped::StorageFailed) => ExitCode::from(3),
        Err(error) => {
            eprintln!("error: {error:#}");
            tracing::error!("bank failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Stopped> {
    let settings = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let file: BankSettings =
                toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
            cli.settings.or(file)
        }
        None => cli.settings,
    };
    let config = BankConfig::from_settings(settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(bank_node::run(config, None, terminated()))
}
