//! Helpers shared by the integration tests: certificates, setup files,
//! mTLS clients, and real processes that are always stopped.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minipay::harness::wait::Patience;
use minipay_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};

/// A scratch directory with certificates and a setup file.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(banks: &[&str], setup_json: &str) -> Scratch {
        minipay::rpc::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let banks: Vec<String> = banks.iter().map(|bank| bank.to_string()).collect();
        minipay::tools::certs::generate(&dir.path().join("tls"), &banks).unwrap();
        std::fs::write(dir.path().join("setup.json"), setup_json).unwrap();
        Scratch { dir }
    }

    pub fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    pub fn setup(&self) -> PathBuf {
        self.dir.path().join("setup.json")
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(name)
    }
}

pub const SETUP: &str = r#"{"users": [
    {"username": "alice", "password": "pass123", "bank": "bank_a", "account_no": "123", "balance": 1000},
    {"username": "bob", "password": "hunter22", "bank": "bank_a", "account_no": "456", "balance": "12.50"},
    {"username": "carol", "password": "secret77", "bank": "bank_b", "account_no": "789", "balance": 500}
]}"#;

/// An mTLS channel to `address` presenting `identity`'s certificate.
pub async fn channel(tls: &Path, identity: &str, address: SocketAddr) -> Channel {
    let config = minipay::rpc::tls::TlsDir::new(tls)
        .client(identity)
        .unwrap();
    Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

pub async fn bank_client(
    tls: &Path,
    identity: &str,
    address: SocketAddr,
) -> proto::bank_client::BankClient<Channel> {
    proto::bank_client::BankClient::new(channel(tls, identity, address).await)
}

/// The transactions a bank lists as in doubt.
pub async fn in_doubt_txns(
    client: &mut proto::bank_client::BankClient<Channel>,
) -> Vec<proto::InDoubtTxn> {
    client
        .list_in_doubt(proto::ListInDoubtRequest {})
        .await
        .unwrap()
        .into_inner()
        .txns
}

/// A real server process, killed when dropped (see `minipay::harness::cluster`).
pub struct Process(minipay::harness::cluster::ServerProcess);

impl std::ops::Deref for Process {
    type Target = minipay::harness::cluster::ServerProcess;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Process {
    pub fn start(program: &str, args: &[String], log: &Path) -> Process {
        Process::start_with_env(program, args, log, &[])
    }

    pub fn start_with_env(
        program: &str,
        args: &[String],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Process {
        Process(
            minipay::harness::cluster::ServerProcess::start_with_env(
                Path::new(program),
                args,
                log,
                env,
            )
            .unwrap(),
        )
    }

    pub fn signal(&self, name: &str) {
        self.0.signal(name).unwrap();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.0.terminate().unwrap()
    }
}

pub fn bank_args(scratch: &Scratch, name: &str, gateway: Option<SocketAddr>) -> Vec<String> {
    let mut args = vec![
        "--name".into(),
        name.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        scratch.data(name).display().to_string(),
        "--setup".into(),
        scratch.setup().display().to_string(),
        "--tls-dir".into(),
        scratch.tls().display().to_string(),
        "--in-doubt-timeout".into(),
        "1s".into(),
    ];
    if let Some(gateway) = gateway {
        args.extend(["--gateway".into(), format!("https://{gateway}")]);
    }
    args
}

pub fn txn_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

pub fn leg(account: &str, direction: proto::Direction, amount: u64) -> proto::Leg {
    proto::Leg {
        account_no: account.into(),
        direction: direction as i32,
        amount,
    }
}

/// A request carrying `authorization: Bearer <key>`.
pub fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// The caller's balance through the gateway's `GetBalance`.
pub async fn gateway_balance(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    key: &str,
) -> proto::GetBalanceResponse {
    client
        .get_balance(authorized(proto::GetBalanceRequest {}, key))
        .await
        .unwrap()
        .into_inner()
}

/// How long a test waits for another process before failing, and how often
/// it looks: generous, because a loaded CI machine is slow, and frequent,
/// because most waits end within milliseconds.
pub const TEST_PATIENCE: Patience = Patience {
    at_most: Duration::from_secs(30),
    poll_every: Duration::from_millis(20),
};

/// Polls `condition` until it holds; a wait past [`TEST_PATIENCE`] fails the
/// test with what it was waiting for.
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if let Err(error) = minipay::harness::wait::wait_until(what, TEST_PATIENCE, condition).await {
        panic!("{error}");
    }
}

/// Flags for a gateway over `banks`, with the given phase deadlines.
pub fn gateway_args(
    scratch: &Scratch,
    banks: &[(&str, SocketAddr)],
    prepare_timeout: &str,
    commit_timeout: &str,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        scratch.data("gateway").display().to_string(),
        "--setup".into(),
        scratch.setup().display().to_string(),
        "--tls-dir".into(),
        scratch.tls().display().to_string(),
        "--prepare-timeout".into(),
        prepare_timeout.into(),
        "--commit-timeout".into(),
        commit_timeout.into(),
    ];
    for (name, address) in banks {
        args.extend(["--bank".into(), format!("{name}=https://{address}")]);
    }
    args
}

/// The `minipay` client binary with a profile in a scratch directory,
/// pointed at one gateway.
pub struct Cli<'a> {
    pub scratch: &'a Scratch,
    pub gateway: String,
}

impl Cli<'_> {
    pub fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_minipay"))
            .arg("--profile")
            .arg(self.scratch.dir.path().join("profile"))
            .arg("--tls-dir")
            .arg(self.scratch.tls())
            .args(["--gateway", &self.gateway])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args, "");
        assert!(!output.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// Two banks and a gateway as real processes (logs in the scratch
/// directory): each bank with `bank_flags`, the gateway with
/// `gateway_flags` (prepare deadline 30s, commit rounds 2s).
pub struct Cluster {
    pub banks: Vec<Process>,
    pub gateway: Process,
}

pub fn start_cluster(scratch: &Scratch, bank_flags: &[&str], gateway_flags: &[&str]) -> Cluster {
    let mut banks = Vec::new();
    for name in ["bank_a", "bank_b"] {
        let mut args = bank_args(scratch, name, None);
        args.extend(bank_flags.iter().map(|flag| flag.to_string()));
        banks.push(Process::start(
            env!("CARGO_BIN_EXE_bank"),
            &args,
            &scratch.dir.path().join(format!("{name}.log")),
        ));
    }
    let mut args = gateway_args(
        scratch,
        &[("bank_a", banks[0].address), ("bank_b", banks[1].address)],
        "30s",
        "2s",
    );
    args.extend(gateway_flags.iter().map(|flag| flag.to_string()));
    let gateway = Process::start(
        env!("CARGO_BIN_EXE_gateway"),
        &args,
        &scratch.dir.path().join("gateway.log"),
    );
    Cluster { banks, gateway }
}

/// A session key for `username` (the login must succeed).
pub async fn login(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    username: &str,
    password: &str,
) -> String {
    client
        .login(proto::LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_key
}
