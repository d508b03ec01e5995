//! Helpers shared by the integration tests: certificates, setup files,
//! mTLS clients, and real processes that are always stopped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use minipay_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};

/// A scratch directory with certificates and a setup file.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(banks: &[&str], setup_json: &str) -> Scratch {
        minipay::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let banks: Vec<String> = banks.iter().map(|bank| bank.to_string()).collect();
        minipay::certs::generate(&dir.path().join("tls"), &banks).unwrap();
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
    let config = minipay::tls::TlsDir::new(tls).client(identity).unwrap();
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

/// A child process killed (SIGKILL) when dropped, so no test leaves one behind.
pub struct Process {
    pub child: Child,
    pub address: SocketAddr,
}

impl Process {
    /// Starts `program` with `args`, stderr appended to `log`, and waits for
    /// its `listening ADDRESS` line on stdout.
    pub fn start(program: &str, args: &[String], log: &Path) -> Process {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("listening ") {
                        break address.parse().unwrap();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!(
                        "{program} exited before listening; log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, address }
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends a signal by name (`STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
