//! What every minipay server process shares: logging setup and signals.

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The write-ahead log settings of the bank and gateway processes: one sync
/// in flight and no batch delay. Three servers and their clients share the
/// CPUs, and under load they are CPU-bound: every `fdatasync` costs CPU (a
/// virtio kick, the ext4 path, a wake-up), so fewer, fuller syncs leave more
/// for the calls (measured: 1.2x the payments/s of two syncs in flight and
/// a 200 µs delay, settings for a log that has the machine to itself; see
/// BENCHMARKS.md). One sync in flight is also the library's default now.
///
/// `segment_size` comes from `--wal-segment-size` (checked by
/// [`wal_segment_size`]); a record may take at most a quarter of a segment
/// (1 MiB with the default 64 MiB; the servers' records are a few hundred
/// bytes, at most a few KiB).
pub fn server_wal_options(segment_size: u64) -> wal::Options {
    let defaults = wal::Options::default();
    wal::Options {
        syncs_in_flight_max: 1,
        batch_delay_max: std::time::Duration::ZERO,
        segment_size,
        payload_len_max: defaults
            .payload_len_max
            .min(u32::try_from(segment_size / 4).unwrap_or(u32::MAX)),
        ..defaults
    }
}

/// The range of `--wal-segment-size` a server accepts.
pub const WAL_SEGMENT_SIZE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// Checks `--wal-segment-size` (default: the WAL's, 64 MiB): within
/// [`WAL_SEGMENT_SIZE`] and whole 4 KiB pages.
pub fn wal_segment_size(setting: Option<u64>) -> anyhow::Result<u64> {
    let size = setting.unwrap_or(wal::Options::default().segment_size);
    if !WAL_SEGMENT_SIZE.contains(&size) || !size.is_multiple_of(4096) {
        anyhow::bail!(
            "--wal-segment-size must be a multiple of 4096 bytes from {} to {}, not {size}",
            WAL_SEGMENT_SIZE.start(),
            WAL_SEGMENT_SIZE.end()
        );
    }
    Ok(size)
}

/// The largest amount one payment (at the gateway) or one leg (at a bank)
/// may move, from `--amount-max` in major units; in minor units.
pub fn amount_max(setting: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = setting else {
        return Ok(ledger::bank::AMOUNT_MAX_DEFAULT.0);
    };
    let amount = money::Amount::parse_major(text)
        .map_err(|error| anyhow::anyhow!("--amount-max {text:?}: {error}"))?;
    if amount.is_zero() {
        anyhow::bail!("--amount-max must be positive");
    }
    Ok(amount.0)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
        _ = interrupt.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
    }
}

/// Why a server process stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop (SIGTERM); in-flight calls finished.
    Shutdown,
    /// Its log failed; the process must exit non-zero.
    StorageFailed,
}

/// How long a stopping server waits for clients to close their connections
/// (in-flight calls finish well within it).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The stop switch of a server process: the first reason pulled wins.
#[derive(Clone)]
pub struct StopSwitch(std::sync::Arc<tokio::sync::watch::Sender<Option<Stopped>>>);

impl Default for StopSwitch {
    fn default() -> StopSwitch {
        StopSwitch(std::sync::Arc::new(tokio::sync::watch::channel(None).0))
    }
}

impl StopSwitch {
    pub fn pull(&self, reason: Stopped) {
        self.0.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }

    /// A callback for services: the log failed, stop now.
    pub fn on_storage_failure(&self) -> std::sync::Arc<dyn Fn() + Send + Sync> {
        let switch = self.clone();
        std::sync::Arc::new(move || switch.pull(Stopped::StorageFailed))
    }

    /// Resolves once pulled.
    pub async fn pulled(&self) {
        let _ = self.0.subscribe().wait_for(Option::is_some).await;
    }

    pub fn reason(&self) -> Stopped {
        (*self.0.borrow()).unwrap_or(Stopped::Shutdown)
    }
}

/// Gives the memory the allocator holds free back to the system. A
/// checkpoint (and a merge with it) allocates for a moment in proportion to
/// what it moves, and glibc keeps what is freed for reuse: measured, the
/// heap in use stays flat with the history while the memory held free
/// grows to the largest moment seen (BENCHMARKS.md, "History on disk").
/// Called after each checkpoint, so resident memory follows the working set.
pub fn return_free_memory() {
    // SAFETY: malloc_trim only releases free pages of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often a checkpoint that keeps failing (a full disk) is logged.
pub const CHECKPOINT_FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A failed checkpoint leaves the old snapshot and tables standing and the
/// log keeping everything, so the server goes on serving; the failure is
/// logged at most once per [`CHECKPOINT_FAILURE_LOG_EVERY`], with how many
/// failed since the last line. A failed log stops the server elsewhere.
#[derive(Default)]
pub struct CheckpointFailures {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl CheckpointFailures {
    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= CHECKPOINT_FAILURE_LOG_EVERY);
        if due {
            let failed_since = self.unlogged;
            tracing::error!(
                %error,
                failed_since,
                "checkpoint failed; serving on from the log, the old snapshot and tables stand"
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

/// Runs a server until `shutdown` resolves or the switch is pulled, then
/// lets in-flight calls finish (at most [`SHUTDOWN_GRACE`] for idle
/// connections to close). `serve` receives the future that ends serving.
///
/// `recover` runs beside serving from the start: it recovers the log, opens
/// the services' gates, reports SERVING, and then runs the server's timers
/// until the process stops. If it fails, the server stops and `run` returns
/// its error. On `shutdown` (SIGTERM) the server reports NOT_SERVING and
/// goes on serving for `drain` (so load balancers see it leave before its
/// port closes), then stops taking calls.
pub async fn serve_until_stopped<F, E>(
    serve: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
    stop: &StopSwitch,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    lifecycle: Lifecycle,
    recover: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<Stopped>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let Lifecycle { health, drain } = lifecycle;
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => {
                    health.not_serving().await;
                    tracing::info!(?drain, "draining: health is NOT_SERVING; calls are served until the drain delay ends");
                    tokio::time::sleep(drain).await;
                    stop.pull(Stopped::Shutdown);
                }
                () = stop.pulled() => health.not_serving().await,
            }
        });
    }
    let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
    let recovering = {
        let stop = stop.clone();
        let failed = std::sync::Arc::clone(&failed);
        tokio::spawn(async move {
            if let Err(error) = recover.await {
                *failed.lock().expect("recovery error lock") = Some(error);
                stop.pull(Stopped::Shutdown);
            }
        })
    };
    let ending = {
        let stop = stop.clone();
        Box::pin(async move { stop.pulled().await })
    };
    tokio::select! {
        served = serve(ending) => served?,
        _ = async {
            stop.pulled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the stop; closing them"),
    }
    recovering.abort();
    let _ = recovering.await;
    if let Some(error) = failed.lock().expect("recovery error lock").take() {
        return Err(error);
    }
    Ok(stop.reason())
}

/// The settings of how a server is operated, beside what it serves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Operations {
    /// Where `/metrics` is served over plain HTTP (`--metrics-listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--drain-delay`.
    pub drain: std::time::Duration,
}

/// How a server reports its health while it starts and stops.
pub struct Lifecycle {
    pub health: crate::servers::serving::Health,
    /// How long a server serves on after SIGTERM with its health
    /// NOT_SERVING (`--drain-delay`).
    pub drain: std::time::Duration,
}

/// Reads settings from a TOML file (kebab-case keys, unknown keys refused).
pub fn read_settings<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Threads for blocking work (checkpoints) at most; tokio's default is 512.
/// Password hashing has its own fixed pool.
pub const BLOCKING_THREADS_MAX: usize = 8;

/// Runs a server to completion on a multi-threaded runtime and turns how it
/// ended into the process exit code: 0 after SIGTERM, 3 after a storage
/// failure, 1 (with the error on stderr) if it could not run.
pub fn run_server(
    what: &str,
    server: impl FnOnce() -> anyhow::Result<
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Stopped>>>>,
    >,
) -> std::process::ExitCode {
    let outcome = server().and_then(|future| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS_MAX)
            .build()?;
        runtime.block_on(future)
    });
    match outcome {
        Ok(Stopped::Shutdown) => std::process::ExitCode::SUCCESS,
        Ok(Stopped::StorageFailed) => std::process::ExitCode::from(3),
        Err(error) => {
            eprintln!("error: {error:#}");
            tracing::error!("{what} failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Settings a server reads from flags and, optionally, a TOML file.
pub trait ServerSettings: serde::de::DeserializeOwned {
    /// `self` (from flags) with unset fields taken from `file`.
    fn or(self, file: Self) -> Self;
}

/// A server's command line: its settings, `--config FILE.toml` and
/// `--log-format` (the `bank` / `gateway` binaries and `minipay bank|gateway`).
#[derive(Debug, clap::Args)]
pub struct ServerCommand<S: clap::Args> {
    #[command(flatten)]
    pub settings: S,
    /// A TOML file with the same keys as the flags (kebab-case); flags win.
    #[arg(long, env = "MINIPAY_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[arg(long, env = "MINIPAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Sets up logging, merges flags with the config file, and runs the server
/// `serve` builds from the settings; the process exit code.
pub fn main<S: clap::Args + ServerSettings>(
    what: &str,
    command: ServerCommand<S>,
    serve: impl FnOnce(
        S,
    ) -> anyhow::Result<
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Stopped>>>>,
    >,
) -> std::process::ExitCode {
    init_logging(command.log_format);
    run_server(what, || {
        let settings = match &command.config {
            Some(path) => command.settings.or(read_settings(path)?),
            None => command.settings,
        };
        serve(settings)
    })
}
