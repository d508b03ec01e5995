//! Prometheus metrics: the recorder the cores' `metrics` calls land in when
//! a server runs with `--metrics-listen ADDR`, and the plain-HTTP endpoint
//! that serves them at `/metrics` in the text exposition format (0.0.4).
//!
//! Without the flag no recorder is installed and every `metrics::counter!`
//! / `histogram!` in the cores is a no-op (the simulation never installs
//! one). With it, each call finds its series in a map of at most
//! [`SERIES_MAX`] entries; a counter or a histogram bucket is one relaxed
//! atomic add. Gauges that describe state (in-doubt holds, unsettled
//! payments, bytes on disk) are set just before each scrape by the
//! server's observers.
//!
//! Every metric is listed once, with its kind and help text, in
//! [`CATALOG`]; README ("Metrics") describes them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Series (a name with one set of label values) kept at most; past it new
/// series are dropped (and counted in `minipay_metrics_series_dropped_total`).
pub const SERIES_MAX: usize = 1024;
/// Scrapes served at once; more connections are closed at once.
pub const METRICS_CONNECTIONS_MAX: usize = 8;
/// The longest request head a scrape may send.
pub const METRICS_REQUEST_LEN_MAX: usize = 8 * 1024;
/// How long one scrape connection may take.
pub const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Observers (callbacks that set gauges before a scrape) at most.
pub const OBSERVERS_MAX: usize = 8;

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric a minipay server exports: name, kind, help.
pub const CATALOG: &[(&str, Kind, &str)] = &[
    (
        "minipay_payments_total",
        Kind::Counter,
        "Payments answered by the gateway, by outcome (committed, aborted, refused).",
    ),
    (
        "minipay_payment_duration_seconds",
        Kind::Histogram,
        "Time from a new payment's arrival at the gateway to its durable decision.",
    ),
    (
        "minipay_phase_duration_seconds",
        Kind::Histogram,
        "Time of each 2PC phase at the gateway: prepare (all votes), commit or abort (all acknowledgements).",
    ),
    (
        "minipay_bank_prepares_total",
        Kind::Counter,
        "Prepares a bank answered, by vote (yes, no).",
    ),
    (
        "minipay_bank_commits_total",
        Kind::Counter,
        "Transactions a bank committed (posted).",
    ),
    (
        "minipay_bank_aborts_total",
        Kind::Counter,
        "Transactions a bank aborted (voided or refused).",
    ),
    (
        "minipay_wal_sync_duration_seconds",
        Kind::Histogram,
        "Duration of each write-ahead log fdatasync.",
    ),
    (
        "minipay_wal_records_per_sync",
        Kind::Histogram,
        "Records made durable by each write-ahead log sync (group commit).",
    ),
    (
        "minipay_wal_records_total",
        Kind::Counter,
        "Records written to the write-ahead log.",
    ),
    (
        "minipay_wal_appended_bytes_total",
        Kind::Counter,
        "Bytes written to the write-ahead log, padding included.",
    ),
    (
        "minipay_wal_bytes",
        Kind::Gauge,
        "Bytes of write-ahead log segment files on disk (preallocated).",
    ),
    (
        "minipay_table_bytes",
        Kind::Gauge,
        "Bytes of history table files on disk.",
    ),
    (
        "minipay_tables",
        Kind::Gauge,
        "History table files on disk.",
    ),
    (
        "minipay_snapshot_bytes",
        Kind::Gauge,
        "Bytes of snapshot files on disk.",
    ),
    (
        "minipay_in_doubt_holds",
        Kind::Gauge,
        "Transactions a bank voted YES on and holds funds for, awaiting the decision.",
    ),
    (
        "minipay_unsettled_payments",
        Kind::Gauge,
        "Payments the gateway decided whose phase 2 has not been acknowledged by every bank.",
    ),
    (
        "minipay_logins_refused_total",
        Kind::Counter,
        "Logins refused, by reason (bad_credentials, locked, rate, busy).",
    ),
    (
        "minipay_requests_shed_total",
        Kind::Counter,
        "Calls refused RESOURCE_EXHAUSTED (load shed), by method.",
    ),
    (
        "minipay_requests_total",
        Kind::Counter,
        "gRPC calls answered, by method and status code.",
    ),
    (
        "minipay_metrics_series_dropped_total",
        Kind::Counter,
        "Metric series not recorded because the registry held SERIES_MAX already.",
    ),
];

/// Upper bounds of the buckets of a `_seconds` histogram.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Upper bounds of the buckets of a count histogram (records per sync).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

fn buckets_for(name: &str) -> &'static [f64] {
    if name.ends_with("_seconds") {
        SECONDS_BUCKETS
    } else {
        COUNT_BUCKETS
    }
}

/// A histogram with fixed buckets: a count per bucket (not cumulative; the
/// last is +Inf), the sum (f64 bits) and the count.
struct Buckets {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl metrics::HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let index = self.bounds.partition_point(|bound| *bound < value);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

#[derive(Clone)]
enum Series {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

/// The process's metrics: every series recorded so far.
#[derive(Default)]
pub struct Registry {
    series: RwLock<HashMap<Key, Series>>,
    dropped: AtomicU64,
    observers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Registry {
    /// The series for `key`, made by `make` if new and there is room.
    fn series(&self, key: &Key, make: impl FnOnce() -> Series) -> Option<Series> {
        if let Some(found) = self.series.read().expect("metrics lock").get(key) {
            return Some(found.clone());
        }
        let mut series = self.series.write().expect("metrics lock");
        if let Some(found) = series.get(key) {
            return Some(found.clone());
        }
        if series.len() >= SERIES_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let made = make();
        series.insert(key.clone(), made.clone());
        Some(made)
    }

    /// Runs `observe` before every scrape (to set gauges from the server's
    /// state); at most [`OBSERVERS_MAX`].
    pub fn observe(&self, observe: impl Fn() + Send + Sync + 'static) {
        let mut observers = self.observers.lock().expect("observers lock");
        if observers.len() < OBSERVERS_MAX {
            observers.push(Box::new(observe));
        } else {
            tracing::warn!("metrics observers full; one is not run");
        }
    }

    /// Every series in the Prometheus text exposition format (0.0.4):
    /// sorted by name, each name with its HELP and TYPE once.
    pub fn render(&self) -> String {
        for observe in self.observers.lock().expect("observers lock").iter() {
            observe();
        }
        let series = self.series.read().expect("metrics lock");
        let mut keys: Vec<&Key> = series.keys().collect();
        keys.sort_by(|a, b| {
            a.name()
                .cmp(b.name())
                .then_with(|| labels(a).cmp(&labels(b)))
        });
        let mut text = String::new();
        let mut previous: Option<&str> = None;
        for key in keys {
            let name = key.name();
            let entry = &series[key];
            if previous != Some(name) {
                header(&mut text, name, entry);
                previous = Some(name);
            }
            let labels = labels(key);
            match entry {
                Series::Counter(value) => line(
                    &mut text,
                    name,
                    &labels,
                    value.load(Ordering::Relaxed) as f64,
                ),
                Series::Gauge(bits) => line(
                    &mut text,
                    name,
                    &labels,
                    f64::from_bits(bits.load(Ordering::Relaxed)),
                ),
                Series::Histogram(buckets) => histogram(&mut text, name, &labels, buckets),
            }
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        let name = "minipay_metrics_series_dropped_total";
        header(&mut text, name, &Series::Counter(Arc::default()));
        line(&mut text, name, &[], dropped as f64);
        text
    }
}

fn labels(key: &Key) -> Vec<(String, String)> {
    key.labels()
        .map(|label| (label.key().to_owned(), label.value().to_owned()))
        .collect()
}

fn header(text: &mut String, name: &str, entry: &Series) {
    use std::fmt::Write;
    let kind = match entry {
        Series::Counter(_) => "counter",
        Series::Gauge(_) => "gauge",
        Series::Histogram(_) => "histogram",
    };
    if let Some((_, _, help)) = CATALOG.iter().find(|(known, _, _)| *known == name) {
        let _ = writeln!(text, "# HELP {name} {help}");
    }
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// A label value escaped as the exposition format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn line(text: &mut String, name: &str, labels: &[(String, String)], value: f64) {
    use std::fmt::Write;
    text.push_str(name);
    if !labels.is_empty() {
        text.push('{');
        for (index, (key, value)) in labels.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            let _ = write!(text, "{key}=\"{}\"", escape(value));
        }
        text.push('}');
    }
    let _ = writeln!(text, " {value}");
}

fn histogram(text: &mut String, name: &str, labels: &[(String, String)], buckets: &Buckets) {
    let bucket_name = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (index, count) in buckets.counts.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        let bound = buckets
            .bounds
            .get(index)
            .map_or_else(|| "+Inf".to_owned(), f64::to_string);
        let mut with_le = labels.to_vec();
        with_le.push(("le".to_owned(), bound));
        line(text, &bucket_name, &with_le, cumulative as f64);
    }
    let sum = f64::from_bits(buckets.sum.load(Ordering::Relaxed));
    line(text, &format!("{name}_sum"), labels, sum);
    line(text, &format!("{name}_count"), labels, cumulative as f64);
}

/// The process-wide registry as the `metrics` recorder.
struct Installed(Arc<Registry>);

impl Recorder for Installed {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self
            .0
            .series(key, || Series::Counter(Arc::new(AtomicU64::new(0))))
        {
            Some(Series::Counter(value)) => Counter::from_arc(value),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.0.series(key, || {
            Series::Gauge(Arc::new(AtomicU64::new(0f64.to_bits())))
        }) {
            Some(Series::Gauge(value)) => Gauge::from_arc(value),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.0.series(key, || {
            Series::Histogram(Arc::new(Buckets::new(buckets_for(key.name()))))
        }) {
            Some(Series::Histogram(buckets)) => Histogram::from_arc(buckets),
            _ => Histogram::noop(),
        }
    }
}

/// The registry, installed as the process's recorder on first use (once
/// per process; a second server in the same process shares it).
pub fn registry() -> Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    Arc::clone(REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::default());
        if metrics::set_global_recorder(Installed(Arc::clone(&registry))).is_err() {
            tracing::warn!("a metrics recorder was installed already; /metrics stays empty");
        }
        registry
    }))
}

/// If `listen` is given: installs the recorder, binds `listen`, prints
/// `metrics ADDRESS` (for scripts that bind port 0) and serves `/metrics`
/// there in the background. The registry, to add observers to.
pub async fn start(listen: Option<SocketAddr>) -> anyhow::Result<Option<Arc<Registry>>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let registry = registry();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("--metrics-listen {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "metrics at http://{address}/metrics (plain HTTP)");
    println!("metrics {address}");
    tokio::spawn(serve(listener, Arc::clone(&registry)));
    Ok(Some(registry))
}

async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(METRICS_CONNECTION_TIMEOUT, scrape(stream, &registry)).await;
            drop(slot);
        });
    }
}

/// Answers one HTTP/1.x request on `stream`: `GET /metrics` with the text,
/// anything else 404 or 405; then closes.
async fn scrape(mut stream: tokio::net::TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || head.len() + read > METRICS_REQUEST_LEN_MAX {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let request_line = head.split(|byte| *byte == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|byte| *byte == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|byte| *byte == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        ),
        (b"GET", _) => ("404 Not Found", "text/plain", "only /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Sets the on-disk gauges from the files in a server's `wal` directory:
/// log segments, history tables and snapshots.
pub fn observe_disk(dir: &std::path::Path) {
    let (mut wal, mut tables, mut table_bytes, mut snapshots) = (0u64, 0u64, 0u64, 0u64);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if name.ends_with(".wal") {
                wal += meta.len();
            } else if name.starts_with("table-") && name.ends_with(".tbl") {
                tables += 1;
                table_bytes += meta.len();
            } else if name.starts_with("snapshot-") {
                snapshots += meta.len();
            }
        }
    }
    metrics::gauge!("minipay_wal_bytes").set(wal as f64);
    metrics::gauge!("minipay_tables").set(tables as f64);
    metrics::gauge!("minipay_table_bytes").set(table_bytes as f64);
    metrics::gauge!("minipay_snapshot_bytes").set(snapshots as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::HistogramFn;

    #[test]
    fn a_histogram_counts_each_value_in_its_bucket_cumulatively() {
        let buckets = Buckets::new(SECONDS_BUCKETS);
        buckets.record(0.0001); // on the first bound: le="0.0001"
        buckets.record(0.003);
        buckets.record(60.0); // past every bound: +Inf only
        let mut text = String::new();
        histogram(&mut text, "x_seconds", &[], &buckets);
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum 60.0031\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut text = String::new();
        line(
            &mut text,
            "m",
            &[("k".to_owned(), "a\"b\\c\nd".to_owned())],
            1.0,
        );
        assert_eq!(text, "m{k=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn series_past_the_bound_are_dropped_and_counted() {
        let registry = Registry::default();
        for index in 0..SERIES_MAX + 3 {
            let key = Key::from_parts(
                "minipay_requests_total",
                vec![metrics::Label::new("n", index.to_string())],
            );
            registry.series(&key, || Series::Counter(Arc::default()));
        }
        assert_eq!(registry.series.read().unwrap().len(), SERIES_MAX);
        assert!(
            registry
                .render()
                .contains("minipay_metrics_series_dropped_total 3\n")
        );
    }

    #[test]
    fn every_catalogued_name_follows_the_conventions() {
        for (name, kind, help) in CATALOG {
            assert!(name.starts_with("minipay_"), "{name}");
            assert!(!help.is_empty(), "{name}");
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                Kind::Gauge | Kind::Histogram => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
    }
}
