//! `gateway`: the payment gateway server. See `gateway --help` and README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use minipay::gateway_node::{self, GatewayConfig, GatewaySettings};
use minipay::process::{LogFormat, Stopped, init_logging, terminated};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "The minipay payment gateway: sessions, idempotent payments, 2PC across banks"
)]
struct Cli {
    #[command(flatten)]
    settings: GatewaySettings,
    /// A TOML file with the same keys as the flags (kebab-case; `banks` is a list); flags win.
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
            tracing::error!("gateway failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Stopped> {
    let settings = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let file: GatewaySettings =
                toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
            cli.settings.or(file)
        }
        None => cli.settings,
    };
    let config = GatewayConfig::from_settings(settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(gateway_node::run(config, None, terminated()))
}
