//! `payments_e2e`: cross-bank payments per second through a real `gateway`
//! and two real `bank` processes over mTLS on 127.0.0.1, every node durable
//! (each prepare, decision and commit fsynced before it is acknowledged).
//! 1 and 64 concurrent clients, each logged in as its own user, each paying
//! 0.01 INR to a user at the other bank. One element is one payment.
//! Per-payment latency percentiles are printed after the criterion figures.
//!
//! Run: `cargo bench --bench payments_e2e`. Compare in the same run with
//! `../shared/anchors/pgbench.sh` (PostgreSQL doing the same transfer).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use minipay::harness::cluster::ServerProcess;
use minipay_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};

const CLIENTS_MAX: usize = 64;

struct Cluster {
    _processes: Vec<ServerProcess>,
    gateway: std::net::SocketAddr,
    tls: PathBuf,
}

fn start_cluster() -> Cluster {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-scratch")
        .join("payments");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let tls = dir.join("tls");
    minipay::tools::certs::generate(&tls, &["bank_a".into(), "bank_b".into()]).expect("certs");
    let users: Vec<String> = (0..CLIENTS_MAX)
        .flat_map(|index| {
            [("bank_a", "a"), ("bank_b", "b")].map(|(bank, prefix)| {
                format!(
                    r#"{{"username": "{prefix}{index}", "password": "password-{index}", "bank": "{bank}", "account_no": "{prefix}{index}", "balance": 1000000}}"#
                )
            })
        })
        .collect();
    std::fs::write(
        dir.join("setup.json"),
        format!(r#"{{"users": [{}]}}"#, users.join(",")),
    )
    .expect("setup");
    let common = |data: &str| -> Vec<String> {
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.join(data).display().to_string(),
            "--setup".into(),
            dir.join("setup.json").display().to_string(),
            "--tls-dir".into(),
            tls.display().to_string(),
        ]
    };
    let bank = Path::new(env!("CARGO_BIN_EXE_bank"));
    let mut processes = Vec::new();
    let mut bank_flags = Vec::new();
    for name in ["bank_a", "bank_b"] {
        let mut args = common(name);
        args.extend(["--name".into(), name.into()]);
        let process = ServerProcess::start(bank, &args, &dir.join(format!("{name}.log")))
            .expect("start bank");
        bank_flags.extend([
            "--bank".to_owned(),
            format!("{name}=https://{}", process.address),
        ]);
        processes.push(process);
    }
    let mut args = common("gateway");
    args.extend(bank_flags);
    let gateway = ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_gateway")),
        &args,
        &dir.join("gateway.log"),
    )
    .expect("start gateway");
    let address = gateway.address;
    processes.push(gateway);
    Cluster {
        _processes: processes,
        gateway: address,
        tls,
    }
}

async fn channel(cluster: &Cluster) -> Channel {
    let tls = minipay::rpc::tls::TlsDir::new(&cluster.tls)
        .client("client")
        .expect("client tls");
    Endpoint::from_shared(format!("https://{}", cluster.gateway))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

struct Payer {
    client: proto::gateway_client::GatewayClient<Channel>,
    key: String,
    to_account: String,
}

async fn payers(cluster: &Cluster) -> Vec<Payer> {
    let mut payers = Vec::new();
    for index in 0..CLIENTS_MAX {
        let mut client = proto::gateway_client::GatewayClient::new(channel(cluster).await);
        let key = client
            .login(proto::LoginRequest {
                username: format!("a{index}"),
                password: format!("password-{index}"),
            })
            .await
            .expect("login")
            .into_inner()
            .session_key;
        payers.push(Payer {
            client,
            key,
            to_account: format!("b{index}"),
        });
    }
    payers
}

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

async fn pay(payer: &mut Payer) -> Duration {
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut request = tonic::Request::new(proto::PayRequest {
        txn_id: format!("00000000-0000-4000-8000-{sequence:012}"),
        to_bank: "bank_b".into(),
        to_account: payer.to_account.clone(),
        amount: 1,
        currency: "INR".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", payer.key).parse().expect("metadata"),
    );
    let started = Instant::now();
    let paid = payer.client.pay(request).await.expect("pay").into_inner();
    assert_eq!(
        paid.status,
        proto::PaymentStatus::Committed as i32,
        "{}",
        paid.reason
    );
    started.elapsed()
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

fn payments_e2e(c: &mut Criterion) {
    minipay::rpc::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = start_cluster();
    let payers = runtime.block_on(payers(&cluster));
    let payers: Vec<Arc<tokio::sync::Mutex<Payer>>> = payers
        .into_iter()
        .map(|payer| Arc::new(tokio::sync::Mutex::new(payer)))
        .collect();
    let mut group = c.benchmark_group("payments_e2e");
    let mut summaries = Vec::new();
    for clients in [1usize, 64] {
        let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_function(
            BenchmarkId::new("cross_bank", format!("{clients}_clients")),
            |b| {
                b.iter_custom(|rounds| {
                    runtime.block_on(async {
                        let started = Instant::now();
                        let tasks: Vec<_> = payers[..clients]
                            .iter()
                            .map(|payer| {
                                let payer = Arc::clone(payer);
                                let latencies = Arc::clone(&latencies);
                                tokio::spawn(async move {
                                    let mut payer = payer.lock().await;
                                    let mut own = Vec::with_capacity(rounds as usize);
                                    for _ in 0..rounds {
                                        own.push(pay(&mut payer).await);
                                    }
                                    latencies.lock().expect("latencies").extend(own);
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("client");
                        }
                        started.elapsed()
                    })
                })
            },
        );
        let mut sorted = std::mem::take(&mut *latencies.lock().expect("latencies"));
        sorted.sort_unstable();
        summaries.push(format!(
            "payments_e2e/cross_bank/{clients}_clients: {} payments, latency p50 {:?}, p99 {:?}",
            sorted.len(),
            percentile(&sorted, 50),
            percentile(&sorted, 99)
        ));
    }
    group.finish();
    for summary in summaries {
        println!("{summary}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = payments_e2e
}
criterion_main!(benches);
