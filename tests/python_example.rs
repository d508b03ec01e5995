//! The Python client example (`examples/python/pay.py`, grpcio) against a
//! real cluster over mTLS: it logs in, pays once, and running it again with
//! the same txn id pays nothing more; the gateway and both banks show the
//! payment committed exactly once and the balances moved by its amount.
//!
//! Needs `python3` with pip: grpcio and grpcio-tools (pinned in
//! `examples/python/requirements.txt`) are installed once into the target
//! directory and reused. A machine with only Rust (no `python3`) skips it
//! with a printed reason, unless `MINIPAY_REQUIRE_PYTHON=1` (set by
//! `.ci/run`) makes that a failure (TESTING.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{SETUP, authorized, channel};
use minipay::harness::cluster::{LocalCluster, Servers};
use minipay_proto::v1::{self as proto, PaymentStatus};

const TXN_ID: &str = "00000000-0000-4000-8000-00000000a11c";
const PASSWORD: &str = "pass123";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python")
}

/// Whether `python3` runs at all. Without it the test is skipped (printed),
/// or fails where `MINIPAY_REQUIRE_PYTHON=1` says Python must be there.
fn python_present() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        if std::env::var_os("MINIPAY_REQUIRE_PYTHON").is_some_and(|require| require == "1") {
            panic!("python3 is not installed, and MINIPAY_REQUIRE_PYTHON=1 requires it");
        }
        eprintln!(
            "SKIPPED: python3 is not installed; the Python example's test needs CPython 3 with pip (MINIPAY_REQUIRE_PYTHON=1 makes this a failure)"
        );
    }
    found
}

/// A directory holding the pinned grpcio and grpcio-tools, installed with
/// `pip install --target` the first time and reused after. Its name carries
/// a checksum of requirements.txt, so changing a pin installs afresh; it is
/// renamed into place only once pip succeeded, so a broken install is
/// never reused.
fn grpcio_site() -> PathBuf {
    let requirements = example_dir().join("requirements.txt");
    let pins = std::fs::read(&requirements).unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let site = cache.join(format!("python-grpcio-{:08x}", crc32fast::hash(&pins)));
    if site.is_dir() {
        return site;
    }
    let partial = cache.join(format!("python-grpcio-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let installed = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(["--quiet", "--target"])
        .arg(&partial)
        .arg("-r")
        .arg(&requirements)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "pip install -r {} failed: {}",
        requirements.display(),
        String::from_utf8_lossy(&installed.stderr)
    );
    // Another test run may have finished first: either copy will do.
    if std::fs::rename(&partial, &site).is_err() {
        assert!(site.is_dir(), "could not move {}", partial.display());
        let _ = std::fs::remove_dir_all(&partial);
    }
    site
}

/// `pay.py` paying 12.50 from alice to carol (bank_b/789) under `TXN_ID`.
fn run_example(site: &Path, cluster: &LocalCluster, password: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .arg(example_dir().join("pay.py"))
        .args(["--gateway", &cluster.gateway_url()])
        .arg("--tls-dir")
        .arg(cluster.tls_dir())
        .args(["--username", "alice", "--to", "bank_b/789"])
        .args(["--amount", "12.50", "--txn-id", TXN_ID])
        .env("PYTHONPATH", site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{password}").unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

type GatewayClient = proto::gateway_client::GatewayClient<tonic::transport::Channel>;

/// The gateway's record of `TXN_ID`, asked as alice.
async fn stored_payment(gateway: &mut GatewayClient, key: &str) -> proto::Payment {
    gateway
        .get_payment(authorized(
            proto::GetPaymentRequest {
                txn_id: TXN_ID.into(),
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_pays_once_however_often_it_is_run_with_one_txn_id() {
    if !python_present() {
        return;
    }
    let site = grpcio_site();
    let dir = tempfile::tempdir().unwrap();
    minipay::rpc::tls::install_crypto_provider();
    let servers = Servers::Binaries {
        bank: PathBuf::from(env!("CARGO_BIN_EXE_bank")),
        gateway: PathBuf::from(env!("CARGO_BIN_EXE_gateway")),
    };
    let cluster =
        LocalCluster::start_with(servers, dir.path(), SETUP, &["bank_a", "bank_b"], &[], &[])
            .unwrap();

    let first = run_example(&site, &cluster, PASSWORD);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}{stderr}");
    print!("pay.py printed:\n{stdout}");
    let paid = format!("{TXN_ID}: 12.50 INR bank_a/123 -> bank_b/789: committed");
    assert!(stdout.contains(&format!("paid: {paid}")), "{stdout}");
    assert!(stdout.contains(&format!("read back: {paid}")), "{stdout}");
    assert!(!stdout.contains("already processed"), "{stdout}");

    // The same id again: the stored outcome, nothing paid.
    let second = run_example(&site, &cluster, PASSWORD);
    let (again, stderr) = text(&second);
    assert!(second.status.success(), "{again}{stderr}");
    assert!(
        again.contains(&format!("paid: {paid} [already processed; not paid again]")),
        "{again}"
    );

    // A wrong password: a clear error and a failed exit, no payment.
    let refused = run_example(&site, &cluster, "not-the-password");
    let (refused_out, refused_err) = text(&refused);
    assert!(!refused.status.success(), "{refused_out}");
    assert!(
        refused_err.starts_with("error: UNAUTHENTICATED"),
        "{refused_err}"
    );
    for output in [&stdout, &again, &refused_out, &refused_err] {
        assert!(!output.contains(PASSWORD) && !output.contains("not-the-password"));
    }

    // The servers' side: the gateway's record of the payment, and each bank's.
    let gateway = channel(&cluster.tls_dir(), "client", cluster.gateway_address).await;
    let mut gateway = GatewayClient::new(gateway);
    let key = gateway
        .login(proto::LoginRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_key;
    let stored = stored_payment(&mut gateway, &key).await;
    assert_eq!(stored.status(), PaymentStatus::Committed);
    assert_eq!(
        (
            stored.amount,
            stored.from_account.as_str(),
            stored.to_account.as_str()
        ),
        (1250, "123", "789")
    );
    // Phase 2 may still be under way after the answer; once both banks
    // acknowledged it, each shows the payment applied exactly once.
    common::wait_until("the payment to be settled at both banks", || {
        let (mut gateway, key) = (gateway.clone(), key.clone());
        async move { stored_payment(&mut gateway, &key).await.settled }
    })
    .await;
    for (bank, account, balance) in [
        ("bank_a", "123", 100_000 - 1250),
        ("bank_b", "789", 50_000 + 1250),
    ] {
        let found = cluster
            .bank_client(bank)
            .await
            .unwrap()
            .get_account(proto::GetAccountRequest {
                account_no: account.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (found.balance, found.available),
            (balance, balance),
            "{bank}/{account}"
        );
    }
}
