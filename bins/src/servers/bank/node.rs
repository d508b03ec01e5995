//! A bank server process: configuration, recovery, the mTLS gRPC server, and
//! the background work (resolving in-doubt transactions with the gateway,
//! checkpoints, stopping on storage failure).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ledger::{Bank, BankOptions, InDoubtPolicy};
use minipay_proto::v1 as proto;
use money::TxnId;
use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::rpc::request_log::RequestLogLayer;
use crate::rpc::settings::{deserialize_duration, now_ms, parse_duration};
use crate::rpc::tls::{Role, TlsDir, require_role};
use crate::servers::bank::service::BankService;
pub use crate::servers::process::Stopped;
use crate::servers::process::{
    CheckpointFailures, Lifecycle, Operations, StopSwitch, serve_until_stopped,
};
use crate::servers::serving::{Gate, Health};
use crate::servers::transport_limits::TransportLimits;

/// Largest request a bank decodes; its requests are a few hundred bytes.
pub const BANK_MESSAGE_LEN_MAX: usize = 64 * 1024;
/// How often background work runs.
const BACKGROUND_TICK: Duration = Duration::from_millis(200);

/// Every setting of a bank; from flags, a TOML file, or both (flags win).
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BankSettings {
    /// This bank's name, e.g. bank_a.
    #[arg(long, env = "MINIPAY_NAME")]
    pub name: Option<String>,
    /// Address to listen on, e.g. 127.0.0.1:7001 (port 0 picks one).
    #[arg(long, env = "MINIPAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the ledger's WAL and snapshots.
    #[arg(long, env = "MINIPAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster setup file (JSON); read on the first start only.
    #[arg(long, env = "MINIPAY_SETUP")]
    pub setup: Option<PathBuf>,
    /// Directory with ca.pem and <name>.pem/.key.
    #[arg(long, env = "MINIPAY_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The gateway's URL, asked for decisions on in-doubt transactions.
    #[arg(long, env = "MINIPAY_GATEWAY")]
    pub gateway: Option<String>,
    /// How long a YES vote waits for a decision before the bank asks.
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_IN_DOUBT_TIMEOUT")]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub in_doubt_timeout: Option<Duration>,
    /// Currency of every account (default INR).
    #[arg(long, env = "MINIPAY_CURRENCY")]
    pub currency: Option<String>,
    /// Snapshot and trim the log after this many records.
    #[arg(long, env = "MINIPAY_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Size of each write-ahead log segment file, in bytes (default 64 MiB;
    /// 64 KiB to 1 GiB, whole 4 KiB pages).
    #[arg(long, env = "MINIPAY_WAL_SEGMENT_SIZE")]
    pub wal_segment_size: Option<u64>,
    /// The largest amount one leg may move, in major units (default
    /// 999999.99); a larger prepare is refused INVALID_ARGUMENT.
    #[arg(long, env = "MINIPAY_AMOUNT_MAX")]
    pub amount_max: Option<String>,
    /// Connections open at once (default 1024).
    #[arg(long, env = "MINIPAY_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Concurrent calls on one connection (default 256).
    #[arg(long, env = "MINIPAY_STREAMS_PER_CONNECTION_MAX")]
    pub streams_per_connection_max: Option<u32>,
    /// The longest one call may run before it is cancelled (default 60s).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_REQUEST_TIMEOUT")]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub request_timeout: Option<Duration>,
    /// Serve Prometheus metrics over plain HTTP at ADDR/metrics (off
    /// unless given).
    #[arg(long, env = "MINIPAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// After SIGTERM, report NOT_SERVING and serve on this long before
    /// closing (default 0s).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_DRAIN_DELAY")]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub drain_delay: Option<Duration>,
}

impl crate::servers::process::ServerSettings for BankSettings {
    fn or(self, file: BankSettings) -> BankSettings {
        BankSettings {
            name: self.name.or(file.name),
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            setup: self.setup.or(file.setup),
            tls_dir: self.tls_dir.or(file.tls_dir),
            gateway: self.gateway.or(file.gateway),
            in_doubt_timeout: self.in_doubt_timeout.or(file.in_doubt_timeout),
            currency: self.currency.or(file.currency),
            snapshot_every: self.snapshot_every.or(file.snapshot_every),
            wal_segment_size: self.wal_segment_size.or(file.wal_segment_size),
            amount_max: self.amount_max.or(file.amount_max),
            connections_max: self.connections_max.or(file.connections_max),
            streams_per_connection_max: self
                .streams_per_connection_max
                .or(file.streams_per_connection_max),
            request_timeout: self.request_timeout.or(file.request_timeout),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            drain_delay: self.drain_delay.or(file.drain_delay),
        }
    }
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct BankConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub setup: Option<PathBuf>,
    pub tls_dir: PathBuf,
    pub gateway: Option<String>,
    pub in_doubt_timeout: Duration,
    pub currency: String,
    pub snapshot_every: u64,
    pub wal_segment_size: u64,
    /// In minor units.
    pub amount_max: u64,
    pub transport: TransportLimits,
    pub operations: Operations,
}

impl BankConfig {
    pub fn from_settings(settings: BankSettings) -> anyhow::Result<BankConfig> {
        let name = settings.name.context("--name is required")?;
        crate::rpc::setup::bank_name(&name)?;
        let currency = settings.currency.unwrap_or_else(|| "INR".to_owned());
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
            bail!("--currency must be a three-letter code like INR, not {currency:?}");
        }
        let snapshot_every = settings
            .snapshot_every
            .unwrap_or(BankOptions::default().snapshot_every);
        if snapshot_every == 0 {
            bail!("--snapshot-every must be at least 1");
        }
        let in_doubt_timeout = settings.in_doubt_timeout.unwrap_or(Duration::from_secs(10));
        if in_doubt_timeout.is_zero() {
            bail!("--in-doubt-timeout must be positive");
        }
        Ok(BankConfig {
            name,
            listen: settings.listen.context("--listen is required")?,
            data_dir: settings.data_dir.context("--data-dir is required")?,
            setup: settings.setup,
            tls_dir: settings.tls_dir.context("--tls-dir is required")?,
            gateway: settings.gateway,
            in_doubt_timeout,
            currency,
            snapshot_every,
            wal_segment_size: crate::servers::process::wal_segment_size(settings.wal_segment_size)?,
            amount_max: crate::servers::process::amount_max(settings.amount_max.as_deref())?,
            transport: TransportLimits::from_settings(
                settings.connections_max,
                settings.streams_per_connection_max,
                settings.request_timeout,
            )?,
            operations: Operations {
                metrics_listen: settings.metrics_listen,
                drain: settings.drain_delay.unwrap_or_default(),
            },
        })
    }
}

/// Serves until `shutdown` resolves or storage fails: binds first (health
/// NOT_SERVING, every other call UNAVAILABLE), recovers the ledger, then
/// serves. `listener`, if given, is used instead of binding `config.listen`.
pub async fn run(
    config: BankConfig,
    listener: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Stopped> {
    crate::rpc::tls::install_crypto_provider();
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?,
    };
    let address = listener.local_addr()?;
    // Bound, not yet recovered: health answers NOT_SERVING until `listening`.
    println!("bound {address}");
    let stop = StopSwitch::default();
    let (health, health_service) = Health::starting(&[BANK_SERVICE]).await;
    let (reflection, reflection_alpha) = crate::servers::serving::reflection(&[BANK_SERVICE])?;
    let gate = Gate::default();
    let tls = TlsDir::new(&config.tls_dir);
    let router = config
        .transport
        .server()
        .tls_config(tls.server(&config.name)?)
        .context("configure TLS")?
        .layer(RequestLogLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(gate.clone());
    let metrics = crate::servers::metrics::start(config.operations.metrics_listen).await?;
    tracing::info!(bank = %config.name, %address, "bank recovering (mTLS; health NOT_SERVING until recovered)");
    let recover = {
        let (config, health, stop) = (config.clone(), health.clone(), stop.clone());
        async move {
            crate::servers::serving::recovery_hold().await;
            let opened = config.clone();
            let bank = Arc::new(
                tokio::task::spawn_blocking(move || open_bank(&opened))
                    .await
                    .context("recovery task")??,
            );
            let service = BankService::new(Arc::clone(&bank), stop.on_storage_failure());
            gate.open(tonic::service::interceptor::InterceptedService::new(
                proto::bank_server::BankServer::new(service)
                    .max_decoding_message_size(BANK_MESSAGE_LEN_MAX),
                require_role(Role::Gateway),
            ));
            if let Some(metrics) = &metrics {
                let (observed, dir) = (Arc::clone(&bank), config.data_dir.join("wal"));
                metrics.observe(move || {
                    metrics::gauge!("minipay_in_doubt_holds").set(observed.in_doubt().len() as f64);
                    crate::servers::metrics::observe_disk(&dir);
                });
            }
            health.serving().await;
            tracing::info!(bank = %config.name, %address, "bank serving (mTLS; only the gateway's certificate is accepted)");
            // A machine-readable line for scripts and tests that bind port 0.
            println!("listening {address}");
            background(config, bank, stop.on_storage_failure()).await;
            Ok(())
        }
    };
    let incoming = config.transport.incoming(listener);
    let reason = serve_until_stopped(
        |ending| router.serve_with_incoming_shutdown(incoming, ending),
        &stop,
        shutdown,
        Lifecycle {
            health,
            drain: config.operations.drain,
        },
        recover,
    )
    .await?;
    // Every acknowledged change is durable already; dropping the last
    // reference to the ledger flushes nothing new and closes its log.
    tracing::info!(bank = %config.name, ?reason, "bank stopped");
    Ok(reason)
}

/// The bank's gRPC service name, as health checks name it.
pub const BANK_SERVICE: &str =
    <proto::bank_server::BankServer<BankService> as tonic::server::NamedService>::NAME;

fn open_bank(config: &BankConfig) -> anyhow::Result<Bank> {
    let storage = crate::servers::crash_point::storage(&config.data_dir.join("wal"))?;
    let options = BankOptions {
        wal: crate::servers::process::server_wal_options(config.wal_segment_size),
        snapshot_every: config.snapshot_every,
        amount_max: money::Amount(config.amount_max),
        in_doubt: InDoubtPolicy {
            timeout_ms: config.in_doubt_timeout.as_millis() as u64,
            ..InDoubtPolicy::default()
        },
        ..BankOptions::default()
    };
    let seeds = || {
        let path = config
            .setup
            .as_ref()
            .ok_or("a new data directory needs --setup to seed its accounts")?;
        let users = crate::rpc::setup::load(path).map_err(|error| format!("{error:#}"))?;
        crate::rpc::setup::seeds_for(&users, &config.name).map_err(|error| format!("{error:#}"))
    };
    let (bank, report) = Bank::open(storage, &config.name, &config.currency, seeds, options)
        .with_context(|| format!("open the ledger in {}", config.data_dir.display()))?;
    if let Some((segment, offset, bytes)) = &report.torn_tail {
        tracing::warn!(segment, offset, bytes, "recovered from a torn WAL tail");
    }
    tracing::info!(
        bank = %config.name,
        created = report.created,
        snapshot_lsn = report.snapshot_lsn.map(|lsn| lsn.0),
        replayed = report.replayed,
        accounts = report.accounts,
        in_doubt = report.in_doubt,
        "ledger recovered"
    );
    Ok(bank)
}

/// Checkpoints, fail-stop on storage failure, and in-doubt resolution.
async fn background(
    config: BankConfig,
    bank: Arc<Bank>,
    storage_failed: Arc<dyn Fn() + Send + Sync>,
) {
    let resolver = InDoubtResolver::new(&config);
    let mut checkpoint_failures = CheckpointFailures::default();
    let mut tick = tokio::time::interval(BACKGROUND_TICK);
    loop {
        tick.tick().await;
        if bank.poisoned().is_some() {
            tracing::error!("the ledger's log failed; stopping");
            storage_failed();
            return;
        }
        let for_checkpoint = Arc::clone(&bank);
        let checkpoint =
            tokio::task::spawn_blocking(move || for_checkpoint.checkpoint_if_due(now_ms())).await;
        match checkpoint {
            Ok(Ok(true)) => crate::servers::process::return_free_memory(),
            Ok(Err(error)) => checkpoint_failures.failed(&error),
            Ok(Ok(false)) | Err(_) => {}
        }
        resolver.resolve(&bank).await;
    }
}

/// Asks the gateway what was decided for the transactions the ledger's
/// in-doubt policy says are due (`ledger::in_doubt`), and applies each
/// answer as the gateway's phase 2 would.
struct InDoubtResolver {
    gateway: Option<Channel>,
}

/// How long one question to the gateway may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

impl InDoubtResolver {
    fn new(config: &BankConfig) -> InDoubtResolver {
        let gateway = config.gateway.as_ref().and_then(|url| {
            let tls = TlsDir::new(&config.tls_dir).client(&config.name).ok()?;
            let endpoint = Endpoint::from_shared(url.clone())
                .ok()?
                .tls_config(tls)
                .ok()?;
            Some(
                endpoint
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy(),
            )
        });
        if gateway.is_none() {
            tracing::warn!(
                "no usable --gateway: in-doubt transactions wait for the gateway to resend its decision"
            );
        }
        InDoubtResolver { gateway }
    }

    async fn resolve(&self, bank: &Bank) {
        let Some(channel) = &self.gateway else {
            return;
        };
        for txn in bank.in_doubt_due(now_ms()) {
            let Some(decision) = ask(channel, txn).await else {
                continue;
            };
            let applied = match decision {
                proto::Decision::Commit => bank.commit(txn, now_ms()).await,
                proto::Decision::Abort => bank.abort(txn, now_ms()).await,
                proto::Decision::Unspecified => continue,
            };
            match applied {
                Ok(()) => {
                    tracing::info!(txn_id = %txn, ?decision, "in-doubt transaction resolved by the gateway's decision");
                }
                Err(error) => {
                    tracing::error!(txn_id = %txn, %error, "applying the gateway's decision failed")
                }
            }
        }
    }
}

/// The gateway's decision for `txn`, or `None` if it did not give one
/// (asked again after the policy's backoff).
async fn ask(channel: &Channel, txn: TxnId) -> Option<proto::Decision> {
    let mut client = proto::decisions_client::DecisionsClient::new(channel.clone());
    let request = proto::GetDecisionRequest {
        txn_id: txn.to_string(),
    };
    match tokio::time::timeout(ASK_TIMEOUT, client.get_decision(request)).await {
        Ok(Ok(response)) => proto::Decision::try_from(response.into_inner().decision).ok(),
        Ok(Err(status)) => {
            tracing::warn!(txn_id = %txn, code = crate::rpc::request_log::code_name(status.code()), "GetDecision failed");
            None
        }
        Err(_) => None,
    }
}

/// The `bank` command line (also `minipay bank`).
pub type BankCommand = crate::servers::process::ServerCommand<BankSettings>;

/// Runs a bank process to completion; its exit code.
pub fn main(command: BankCommand) -> std::process::ExitCode {
    crate::servers::process::main("bank", command, |settings| {
        let config = BankConfig::from_settings(settings)?;
        Ok(Box::pin(run(
            config,
            None,
            crate::servers::process::terminated(),
        )))
    })
}
