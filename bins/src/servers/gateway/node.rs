//! A gateway process: configuration, recovery of the decision log, the mTLS
//! gRPC server (`Gateway` for clients, `Decisions` for banks), and phase-2
//! retries in the background.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use coordinator::{Clock, Entropy, Gateway, GatewayOptions, SetupUser};
use minipay_proto::v1 as proto;
use money::BankName;
use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::rpc::request_log::RequestLogLayer;
use crate::rpc::settings::parse_duration;
use crate::rpc::tls::{Role, TlsDir, require_role};
use crate::servers::gateway::bank_clients::BankClients;
use crate::servers::gateway::password_pool::PasswordPool;
use crate::servers::gateway::service::{DecisionService, GatewayService, SessionAuth};
use crate::servers::process::{
    CheckpointFailures, Lifecycle, Operations, StopSwitch, Stopped, serve_until_stopped,
};
use crate::servers::serving::{Gate, Health};
use crate::servers::transport_limits::TransportLimits;

/// Largest request the gateway decodes.
pub const GATEWAY_MESSAGE_LEN_MAX: usize = 64 * 1024;
/// How often unfinished phase 2s are retried.
const RESUME_EVERY: Duration = Duration::from_millis(500);

/// Every setting of the gateway; from flags, a TOML file, or both (flags win).
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewaySettings {
    /// Address to listen on, e.g. 127.0.0.1:7000 (port 0 picks one).
    #[arg(long, env = "MINIPAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the decision log.
    #[arg(long, env = "MINIPAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster setup file (JSON); its users are created on the first start.
    #[arg(long, env = "MINIPAY_SETUP")]
    pub setup: Option<PathBuf>,
    /// Directory with ca.pem and gateway.pem/.key.
    #[arg(long, env = "MINIPAY_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// A bank, as NAME=URL (repeat for each bank).
    #[arg(long = "bank", env = "MINIPAY_BANK", value_delimiter = ',')]
    #[serde(default)]
    pub banks: Vec<String>,
    /// Deadline of each Prepare.
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_PREPARE_TIMEOUT")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub prepare_timeout: Option<Duration>,
    /// Deadline of each Commit/Abort round (retried until acknowledged).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_COMMIT_TIMEOUT")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub commit_timeout: Option<Duration>,
    /// Currency of every payment (default INR).
    #[arg(long, env = "MINIPAY_CURRENCY")]
    pub currency: Option<String>,
    /// Finished payments (and their ids) are kept at least this long (default 7d).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_RETENTION")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub retention: Option<Duration>,
    /// Snapshot and trim the decision log after this many records (default 100000).
    #[arg(long, env = "MINIPAY_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Size of each write-ahead log segment file, in bytes (default 64 MiB;
    /// 64 KiB to 1 GiB, whole 4 KiB pages).
    #[arg(long, env = "MINIPAY_WAL_SEGMENT_SIZE")]
    pub wal_segment_size: Option<u64>,
    /// A session unused this long expires (default 30m).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_SESSION_IDLE")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub session_idle: Option<Duration>,
    /// A session expires this long after login, used or not (default 12h).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_SESSION_AGE_MAX")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub session_age_max: Option<Duration>,
    /// Failed logins within a minute that lock a username (default 5).
    #[arg(long, env = "MINIPAY_LOGIN_FAILURES_MAX")]
    pub login_failures_max: Option<u32>,
    /// How long a locked username stays locked (default 5m).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_LOGIN_LOCKOUT")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub login_lockout: Option<Duration>,
    /// Password-hashing threads, each holding the argon2 memory of one hash
    /// (19 MiB) from start (default: the number of cores).
    #[arg(long, env = "MINIPAY_HASH_WORKERS")]
    pub hash_workers: Option<usize>,
    /// Logins and registrations waiting for a hashing thread, at most;
    /// past it they are refused RESOURCE_EXHAUSTED (default 64).
    #[arg(long, env = "MINIPAY_HASH_QUEUE_MAX")]
    pub hash_queue_max: Option<usize>,
    /// Logins and registrations from one client address, as N/PERIOD: a
    /// burst of N, refilled over PERIOD (default 100/5s).
    #[arg(long, env = "MINIPAY_LOGIN_RATE_PER_ADDRESS")]
    pub login_rate_per_address: Option<String>,
    /// Logins naming one username, as N/PERIOD (default 10/1m).
    #[arg(long, env = "MINIPAY_LOGIN_RATE_PER_USERNAME")]
    pub login_rate_per_username: Option<String>,
    /// Client addresses, and usernames, whose login rate is tracked at
    /// once (each; default 65536).
    #[arg(long, env = "MINIPAY_RATE_LIMIT_KEYS_MAX")]
    pub rate_limit_keys_max: Option<usize>,
    /// New payments in their first phase at once; past it a new payment is
    /// refused RESOURCE_EXHAUSTED (default 256).
    #[arg(long, env = "MINIPAY_PAYMENTS_IN_FLIGHT_MAX")]
    pub payments_in_flight_max: Option<usize>,
    /// Payments answered before their phase 2 ends, at most (default 4096).
    #[arg(long, env = "MINIPAY_UNSETTLED_MAX")]
    pub unsettled_max: Option<usize>,
    /// Repeats of in-flight txn ids waiting for the outcome (default 4096).
    #[arg(long, env = "MINIPAY_WAITERS_MAX")]
    pub waiters_max: Option<usize>,
    /// Decided payments waiting for a bank to acknowledge phase 2; past it
    /// a new payment is refused RESOURCE_EXHAUSTED (default 65536).
    #[arg(long, env = "MINIPAY_SETTLING_MAX")]
    pub settling_max: Option<usize>,
    /// Registrations under way (usernames reserved, passwords hashing,
    /// accounts opening); past it a registration is refused
    /// RESOURCE_EXHAUSTED (default 1024).
    #[arg(long, env = "MINIPAY_REGISTRATIONS_IN_FLIGHT_MAX")]
    pub registrations_in_flight_max: Option<usize>,
    /// The largest payment, in major units (default 999999.99).
    #[arg(long, env = "MINIPAY_AMOUNT_MAX")]
    pub amount_max: Option<String>,
    /// Calls queued for one bank, per kind (prepare, phase 2), at most
    /// (default 4096).
    #[arg(long, env = "MINIPAY_BANK_QUEUE_MAX")]
    pub bank_queue_max: Option<usize>,
    /// Client and bank connections open at once (default 1024).
    #[arg(long, env = "MINIPAY_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Concurrent calls on one connection (default 256).
    #[arg(long, env = "MINIPAY_STREAMS_PER_CONNECTION_MAX")]
    pub streams_per_connection_max: Option<u32>,
    /// The longest one call may run before it is cancelled (default 60s).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_REQUEST_TIMEOUT")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub request_timeout: Option<Duration>,
    /// Serve Prometheus metrics over plain HTTP at ADDR/metrics (off
    /// unless given).
    #[arg(long, env = "MINIPAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// After SIGTERM, report NOT_SERVING and serve on this long before
    /// closing (default 0s).
    #[arg(long, value_parser = parse_duration, env = "MINIPAY_DRAIN_DELAY")]
    #[serde(
        default,
        deserialize_with = "crate::rpc::settings::deserialize_duration"
    )]
    pub drain_delay: Option<Duration>,
}

impl crate::servers::process::ServerSettings for GatewaySettings {
    fn or(self, file: GatewaySettings) -> GatewaySettings {
        GatewaySettings {
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            setup: self.setup.or(file.setup),
            tls_dir: self.tls_dir.or(file.tls_dir),
            banks: if self.banks.is_empty() {
                file.banks
            } else {
                self.banks
            },
            prepare_timeout: self.prepare_timeout.or(file.prepare_timeout),
            commit_timeout: self.commit_timeout.or(file.commit_timeout),
            currency: self.currency.or(file.currency),
            retention: self.retention.or(file.retention),
            snapshot_every: self.snapshot_every.or(file.snapshot_every),
            wal_segment_size: self.wal_segment_size.or(file.wal_segment_size),
            session_idle: self.session_idle.or(file.session_idle),
            session_age_max: self.session_age_max.or(file.session_age_max),
            login_failures_max: self.login_failures_max.or(file.login_failures_max),
            login_lockout: self.login_lockout.or(file.login_lockout),
            hash_workers: self.hash_workers.or(file.hash_workers),
            hash_queue_max: self.hash_queue_max.or(file.hash_queue_max),
            login_rate_per_address: self.login_rate_per_address.or(file.login_rate_per_address),
            login_rate_per_username: self
                .login_rate_per_username
                .or(file.login_rate_per_username),
            rate_limit_keys_max: self.rate_limit_keys_max.or(file.rate_limit_keys_max),
            payments_in_flight_max: self.payments_in_flight_max.or(file.payments_in_flight_max),
            unsettled_max: self.unsettled_max.or(file.unsettled_max),
            waiters_max: self.waiters_max.or(file.waiters_max),
            settling_max: self.settling_max.or(file.settling_max),
            registrations_in_flight_max: self
                .registrations_in_flight_max
                .or(file.registrations_in_flight_max),
            amount_max: self.amount_max.or(file.amount_max),
            bank_queue_max: self.bank_queue_max.or(file.bank_queue_max),
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

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub setup: Option<PathBuf>,
    pub tls_dir: PathBuf,
    pub banks: Vec<(BankName, String)>,
    pub prepare_timeout: Duration,
    pub commit_timeout: Duration,
    pub currency: String,
    pub retention: Duration,
    pub snapshot_every: u64,
    pub wal_segment_size: u64,
    pub sessions: coordinator::sessions::SessionPolicy,
    pub login: coordinator::users::LoginPolicy,
    pub limits: GatewayLimits,
    pub transport: TransportLimits,
    pub operations: Operations,
}

/// The gateway's bounds on work in flight (README, "Limits").
#[derive(Clone, Copy, Debug)]
pub struct GatewayLimits {
    pub hash_workers: usize,
    pub hash_queue_max: usize,
    pub admission: coordinator::AdmissionPolicy,
    pub payments_in_flight_max: usize,
    pub unsettled_max: usize,
    pub waiters_max: usize,
    pub settling_max: usize,
    pub registrations_in_flight_max: usize,
    pub amount_max: money::Amount,
    pub bank_queue_max: usize,
}

/// The default bound on logins waiting for a hashing thread.
pub const HASH_QUEUE_MAX_DEFAULT: usize = 64;
/// The default bound on calls queued for one bank, per kind.
pub const BANK_QUEUE_MAX_DEFAULT: usize = 4096;

/// A rate as `N/PERIOD` (`100/5s`): a burst of N, refilled over PERIOD.
pub fn parse_rate(text: &str, flag: &str) -> anyhow::Result<coordinator::admission::RateLimit> {
    let form = || format!("{flag} must be N/PERIOD like 100/5s or 10/1m, not {text:?}");
    let (burst, period) = text.split_once('/').with_context(form)?;
    let burst: u32 = burst
        .parse()
        .ok()
        .filter(|burst| *burst > 0)
        .with_context(form)?;
    let period = parse_duration(period).map_err(|_| anyhow::anyhow!(form()))?;
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    if period_ms == 0 {
        bail!("{flag} {text:?}: the period must be at least 1ms");
    }
    Ok(coordinator::admission::RateLimit { burst, period_ms })
}

/// A count from a flag, its default if absent; zero refused.
fn at_least_one(value: Option<usize>, default: usize, flag: &str) -> anyhow::Result<usize> {
    let value = value.unwrap_or(default);
    if value == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(value)
}

impl GatewayLimits {
    fn from_settings(settings: &GatewaySettings) -> anyhow::Result<GatewayLimits> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let hash_workers = at_least_one(settings.hash_workers, cores, "--hash-workers")?;
        if hash_workers > crate::servers::gateway::password_pool::HASH_WORKERS_MAX {
            bail!(
                "--hash-workers must be at most {}",
                crate::servers::gateway::password_pool::HASH_WORKERS_MAX
            );
        }
        let amount_max = money::Amount(crate::servers::process::amount_max(
            settings.amount_max.as_deref(),
        )?);
        Ok(GatewayLimits {
            hash_workers,
            hash_queue_max: settings.hash_queue_max.unwrap_or(HASH_QUEUE_MAX_DEFAULT),
            admission: admission_policy(settings)?,
            payments_in_flight_max: at_least_one(
                settings.payments_in_flight_max,
                coordinator::gateway::PAYMENTS_IN_FLIGHT_MAX_DEFAULT,
                "--payments-in-flight-max",
            )?,
            unsettled_max: settings
                .unsettled_max
                .unwrap_or(coordinator::gateway::UNSETTLED_MAX_DEFAULT),
            waiters_max: settings
                .waiters_max
                .unwrap_or(coordinator::gateway::WAITERS_MAX_DEFAULT),
            settling_max: at_least_one(
                settings.settling_max,
                coordinator::gateway::SETTLING_MAX_DEFAULT,
                "--settling-max",
            )?,
            registrations_in_flight_max: at_least_one(
                settings.registrations_in_flight_max,
                coordinator::gateway::REGISTRATIONS_IN_FLIGHT_MAX_DEFAULT,
                "--registrations-in-flight-max",
            )?,
            amount_max,
            bank_queue_max: at_least_one(
                settings.bank_queue_max,
                BANK_QUEUE_MAX_DEFAULT,
                "--bank-queue-max",
            )?,
        })
    }
}

/// The login rates and how many keys they track.
fn admission_policy(settings: &GatewaySettings) -> anyhow::Result<coordinator::AdmissionPolicy> {
    let defaults = coordinator::AdmissionPolicy::default();
    let rate = |text: &Option<String>, default, flag: &str| match text {
        None => Ok(default),
        Some(text) => parse_rate(text, flag),
    };
    Ok(coordinator::AdmissionPolicy {
        per_address: rate(
            &settings.login_rate_per_address,
            defaults.per_address,
            "--login-rate-per-address",
        )?,
        per_username: rate(
            &settings.login_rate_per_username,
            defaults.per_username,
            "--login-rate-per-username",
        )?,
        keys_max: at_least_one(
            settings.rate_limit_keys_max,
            defaults.keys_max,
            "--rate-limit-keys-max",
        )?,
    })
}

impl GatewayConfig {
    /// Checks every setting, in a fixed order (so a start-up with several
    /// bad settings always names the same one first), and fills defaults.
    pub fn from_settings(settings: GatewaySettings) -> anyhow::Result<GatewayConfig> {
        let limits = GatewayLimits::from_settings(&settings)?;
        let banks = parse_banks(&settings.banks)?;
        let currency = parse_currency(settings.currency.as_deref())?;
        let sessions = session_policy(&settings)?;
        let login = login_policy(&settings)?;
        let snapshot_every = settings.snapshot_every.unwrap_or(100_000);
        if snapshot_every == 0 {
            bail!("--snapshot-every must be at least 1");
        }
        let retention = parse_retention(settings.retention)?;
        Ok(GatewayConfig {
            limits,
            transport: TransportLimits::from_settings(
                settings.connections_max,
                settings.streams_per_connection_max,
                settings.request_timeout,
            )?,
            operations: Operations {
                metrics_listen: settings.metrics_listen,
                drain: settings.drain_delay.unwrap_or_default(),
            },
            retention,
            snapshot_every,
            wal_segment_size: crate::servers::process::wal_segment_size(settings.wal_segment_size)?,
            sessions,
            login,
            listen: settings.listen.context("--listen is required")?,
            data_dir: settings.data_dir.context("--data-dir is required")?,
            setup: settings.setup,
            tls_dir: settings.tls_dir.context("--tls-dir is required")?,
            banks,
            prepare_timeout: round_timeout(settings.prepare_timeout, "--prepare-timeout")?,
            commit_timeout: round_timeout(settings.commit_timeout, "--commit-timeout")?,
            currency,
        })
    }
}

/// The `--bank NAME=URL` flags: each bank once, reached over mTLS only, and
/// at least one, since a gateway with no bank could take no payment.
fn parse_banks(flags: &[String]) -> anyhow::Result<Vec<(BankName, String)>> {
    let mut banks = Vec::new();
    for bank in flags {
        let (name, url) = bank
            .split_once('=')
            .with_context(|| format!("--bank {bank:?} must be NAME=URL"))?;
        let name = crate::rpc::setup::bank_name(name)?;
        if !url.starts_with("https://") {
            bail!("--bank {name}: the URL must be https:// (mTLS only), not {url:?}");
        }
        if banks.iter().any(|(known, _)| *known == name) {
            bail!("--bank {name} given twice");
        }
        banks.push((name, url.to_owned()));
    }
    if banks.is_empty() {
        bail!("at least one --bank NAME=URL is required");
    }
    Ok(banks)
}

/// The deadline of one Prepare, or of one Commit/Abort round (default 10s);
/// zero would fail every call, so it is refused.
fn round_timeout(value: Option<Duration>, flag: &str) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(Duration::from_secs(10));
    if value.is_zero() {
        bail!("{flag} must be positive");
    }
    Ok(value)
}

/// The currency of every payment (default INR), as a three-letter code.
fn parse_currency(currency: Option<&str>) -> anyhow::Result<String> {
    let currency = currency.unwrap_or("INR").to_owned();
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        bail!("--currency must be a three-letter code like INR, not {currency:?}");
    }
    Ok(currency)
}

/// A duration setting in milliseconds, as the core's policies take it; zero
/// would expire or unlock at once, so it is refused.
fn positive_ms(value: Option<Duration>, default: Duration, flag: &str) -> anyhow::Result<u64> {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        bail!("{flag} must be positive");
    }
    Ok(value.as_millis() as u64)
}

/// How long sessions live: idle (default 30m) and at most (default 12h).
fn session_policy(
    settings: &GatewaySettings,
) -> anyhow::Result<coordinator::sessions::SessionPolicy> {
    Ok(coordinator::sessions::SessionPolicy {
        idle_ms: positive_ms(
            settings.session_idle,
            Duration::from_secs(30 * 60),
            "--session-idle",
        )?,
        absolute_ms: positive_ms(
            settings.session_age_max,
            Duration::from_secs(12 * 3600),
            "--session-age-max",
        )?,
        ..Default::default()
    })
}

/// When failed logins lock a username (default 5) and for how long (default
/// 5m); locking on zero failures would lock everyone out.
fn login_policy(settings: &GatewaySettings) -> anyhow::Result<coordinator::users::LoginPolicy> {
    let login = coordinator::users::LoginPolicy {
        failures_max: settings.login_failures_max.unwrap_or(5),
        lockout_ms: positive_ms(
            settings.login_lockout,
            Duration::from_secs(300),
            "--login-lockout",
        )?,
        ..Default::default()
    };
    if login.failures_max == 0 {
        bail!("--login-failures-max must be at least 1");
    }
    Ok(login)
}

/// How long finished payments (and their ids) are kept (default 7d): at
/// least as long as clients may retry a payment with the same txn id.
fn parse_retention(retention: Option<Duration>) -> anyhow::Result<Duration> {
    let retention = retention.unwrap_or(Duration::from_millis(
        coordinator::gateway::RETENTION_MS_DEFAULT,
    ));
    if retention < Duration::from_secs(86_400) {
        bail!("--retention must be at least 1d: clients retry with the same txn id for that long");
    }
    Ok(retention)
}

/// The setup file's users, as the gateway creates them on its first start.
fn setup_users(path: &std::path::Path) -> anyhow::Result<Vec<SetupUser>> {
    crate::rpc::setup::load(path)?
        .into_iter()
        .map(|user| {
            Ok(SetupUser {
                bank: crate::rpc::setup::bank_name(&user.bank)?,
                account: crate::rpc::setup::account_no(&user.account_no)?,
                username: user.username,
                password: user.password,
            })
        })
        .collect()
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::rpc::settings::now_ms()
    }
}

/// The operating system's CSPRNG.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        use rand::TryRngCore;
        rand::rngs::OsRng
            .try_fill_bytes(bytes)
            .expect("the operating system's random source works");
    }
}

fn open_gateway(
    config: &GatewayConfig,
    banks: BankClients,
) -> anyhow::Result<Gateway<BankClients>> {
    let storage = crate::servers::crash_point::storage(&config.data_dir.join("wal"))?;
    let options = GatewayOptions {
        wal: crate::servers::process::server_wal_options(config.wal_segment_size),
        prepare_timeout: config.prepare_timeout,
        commit_timeout: config.commit_timeout,
        currency: config.currency.clone(),
        banks: config.banks.iter().map(|(name, _)| name.clone()).collect(),
        login: config.login,
        sessions: config.sessions,
        snapshot_every: config.snapshot_every,
        retention_ms: config.retention.as_millis() as u64,
        tables: wal::table::StoreOptions::default(),
        password_cost: Default::default(),
        unsettled_max: config.limits.unsettled_max,
        payments_in_flight_max: config.limits.payments_in_flight_max,
        waiters_max: config.limits.waiters_max,
        settling_max: config.limits.settling_max,
        amount_max: config.limits.amount_max,
        admission: config.limits.admission,
        registrations_in_flight_max: config.limits.registrations_in_flight_max,
        phase_two_retry: coordinator::gateway::PHASE_TWO_RETRY_DEFAULT,
    };
    let setup = config.setup.clone();
    let mut setup_error = None;
    let users = || match setup.as_ref().map(|path| setup_users(path)) {
        None => Vec::new(),
        Some(Ok(users)) => users,
        Some(Err(error)) => {
            setup_error = Some(error);
            Vec::new()
        }
    };
    let gateway = Gateway::open(
        storage,
        options,
        banks,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        users,
    )
    .with_context(|| format!("open the decision log in {}", config.data_dir.display()))?;
    if let Some(error) = setup_error {
        return Err(error.context("read the setup file"));
    }
    Ok(gateway)
}

/// Serves until `shutdown` resolves or storage fails: binds first (health
/// NOT_SERVING, every other call UNAVAILABLE), recovers the decision log,
/// then serves.
pub async fn run(
    config: GatewayConfig,
    listener: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Stopped> {
    crate::rpc::tls::install_crypto_provider();
    let tls = TlsDir::new(&config.tls_dir);
    let banks = BankClients::new(&config.banks, &tls, config.limits.bank_queue_max)?;
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
    let (health, health_service) = Health::starting(&[GATEWAY_SERVICE, DECISIONS_SERVICE]).await;
    let (reflection, reflection_alpha) =
        crate::servers::serving::reflection(&[GATEWAY_SERVICE, DECISIONS_SERVICE])?;
    let (clients_gate, decisions_gate) = (Gate::default(), Gate::default());
    let router = config
        .transport
        .server()
        .tls_config(tls.server("gateway")?)
        .context("configure TLS")?
        .layer(RequestLogLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(clients_gate.clone())
        .add_service(decisions_gate.clone());
    let metrics = crate::servers::metrics::start(config.operations.metrics_listen).await?;
    tracing::info!(%address, "gateway recovering (mTLS; health NOT_SERVING until recovered)");
    let recover = {
        let (config, health, stop) = (config.clone(), health.clone(), stop.clone());
        async move {
            crate::servers::serving::recovery_hold().await;
            let opened = (config.clone(), banks.clone());
            let gateway = Arc::new(
                tokio::task::spawn_blocking(move || open_gateway(&opened.0, opened.1))
                    .await
                    .context("recovery task")??,
            );
            let limits = config.limits;
            let passwords = PasswordPool::start(
                limits.hash_workers,
                limits.hash_queue_max,
                Default::default(),
            );
            let clients = GatewayService::new(
                Arc::clone(&gateway),
                banks,
                passwords,
                stop.on_storage_failure(),
            );
            let clients = proto::gateway_server::GatewayServer::new(clients)
                .max_decoding_message_size(GATEWAY_MESSAGE_LEN_MAX);
            clients_gate.open(SessionAuth::new(clients, Arc::clone(&gateway)));
            let decisions = proto::decisions_server::DecisionsServer::new(DecisionService::new(
                Arc::clone(&gateway),
            ))
            .max_decoding_message_size(GATEWAY_MESSAGE_LEN_MAX);
            decisions_gate.open(InterceptedService::new(decisions, require_role(Role::Bank)));
            if let Some(metrics) = &metrics {
                let (observed, dir) = (Arc::clone(&gateway), config.data_dir.join("wal"));
                metrics.observe(move || {
                    metrics::gauge!("minipay_unsettled_payments")
                        .set(observed.unfinished().len() as f64);
                    crate::servers::metrics::observe_disk(&dir);
                });
            }
            health.serving().await;
            tracing::info!(%address, banks = ?config.banks, ?limits, transport = ?config.transport, "gateway serving (mTLS)");
            println!("listening {address}");
            resume_loop(gateway, stop).await;
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
    tracing::info!(?reason, "gateway stopped");
    Ok(reason)
}

/// The gateway's gRPC service names, as health checks name them.
pub const GATEWAY_SERVICE: &str =
    <proto::gateway_server::GatewayServer<GatewayService> as tonic::server::NamedService>::NAME;
pub const DECISIONS_SERVICE: &str =
    <proto::decisions_server::DecisionsServer<DecisionService> as tonic::server::NamedService>::NAME;

/// Retries phase 2 of decided transactions until every bank acknowledged,
/// takes checkpoints, and stops the gateway if its log failed.
async fn resume_loop(gateway: Arc<Gateway<BankClients>>, stop: StopSwitch) {
    let mut checkpoint_failures = CheckpointFailures::default();
    let mut tick = tokio::time::interval(RESUME_EVERY);
    loop {
        tick.tick().await;
        if gateway.poisoned().is_some() {
            tracing::error!("the decision log failed; stopping");
            stop.pull(Stopped::StorageFailed);
            return;
        }
        if let Err(error) = gateway.resume().await {
            tracing::error!(%error, "phase 2 retry failed");
        }
        let for_checkpoint = Arc::clone(&gateway);
        match tokio::task::spawn_blocking(move || for_checkpoint.checkpoint_if_due()).await {
            Ok(Ok(true)) => crate::servers::process::return_free_memory(),
            Ok(Err(error)) => checkpoint_failures.failed(&error),
            Ok(Ok(false)) | Err(_) => {}
        }
    }
}

/// The `gateway` command line (also `minipay gateway`).
pub type GatewayCommand = crate::servers::process::ServerCommand<GatewaySettings>;

/// Runs a gateway process to completion; its exit code.
pub fn main(command: GatewayCommand) -> std::process::ExitCode {
    crate::servers::process::main("gateway", command, |settings| {
        let config = GatewayConfig::from_settings(settings)?;
        Ok(Box::pin(run(
            config,
            None,
            crate::servers::process::terminated(),
        )))
    })
}
