//! `gateway`: the payment gateway server. See `gateway --help` and README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use minipay::gateway_node::{self, GatewayConfig, GatewaySettings};
use minipay::process::{LogFormat, init_logging, read_settings, run_server, terminated};

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
    run_server("gateway", || {
        let settings = match &cli.config {
            Some(path) => cli.settings.or(read_settings(path)?),
            None => cli.settings,
        };
        let config = GatewayConfig::from_settings(settings)?;
        Ok(Box::pin(gateway_node::run(config, None, terminated())))
    })
}
