//! Child server processes (`bank`, `gateway`) for tools, tests and
//! benchmarks: started with `127.0.0.1:0`, their address read from the
//! `listening ADDRESS` line they print, and always killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{Context, bail, ensure};

/// A running server process; SIGKILLed on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    pub address: SocketAddr,
    /// Where it serves `/metrics`, if started with `--metrics-listen` (from
    /// the `metrics ADDRESS` line it prints before `listening`).
    pub metrics: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `program` with `args`, appending its stderr to `log`, and waits
    /// for its `listening ADDRESS` line.
    pub fn start(program: &Path, args: &[String], log: &Path) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with_env(program, args, log, &[])
    }

    /// [`ServerProcess::start`] with extra environment variables (say, a
    /// `RUST_LOG` filter).
    pub fn start_with_env(
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProcess> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = None;
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("metrics ") {
                        metrics = Some(address.parse().context("parse the metrics address")?);
                    }
                    if let Some(address) = line.strip_prefix("listening ") {
                        break address.parse().context("parse the listening address")?;
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log_text = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<&str> = log_text.lines().rev().take(5).collect();
                    bail!(
                        "{} exited before listening; last log lines:\n{}",
                        program.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(ServerProcess {
            child,
            address,
            metrics,
        })
    }

    /// SIGKILL, and reap.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.child.id());
        }
        Ok(())
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        Ok(self.child.wait()?)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which executables run the servers.
#[derive(Clone, Debug)]
pub enum Servers {
    /// This executable re-run as `minipay bank` / `minipay gateway` (so a
    /// user who built only `minipay` can run a cluster).
    ReExec(PathBuf),
    /// The `bank` and `gateway` binaries (integration tests).
    Binaries { bank: PathBuf, gateway: PathBuf },
}

impl Servers {
    fn command(&self, server: &str) -> (&Path, Vec<String>) {
        match (self, server) {
            (Servers::ReExec(exe), _) => (exe, vec![server.to_owned()]),
            (Servers::Binaries { bank, .. }, "bank") => (bank, Vec::new()),
            (Servers::Binaries { gateway, .. }, _) => (gateway, Vec::new()),
        }
    }
}

/// Two or more banks and a gateway on this machine, as real processes, in
/// `dir` with fresh certificates. Used by `minipay demo`, `minipay bench
/// --local` and `minipay chaos`.
pub struct LocalCluster {
    pub dir: std::path::PathBuf,
    servers: Servers,
    pub banks: Vec<(String, ServerProcess)>,
    pub gateway: Option<ServerProcess>,
    pub gateway_address: SocketAddr,
    /// Passed to every bank and gateway start (e.g. `--wal-segment-size`).
    server_flags: Vec<String>,
    /// Passed to every gateway start (e.g. `--payments-in-flight-max`).
    gateway_flags: Vec<String>,
    /// The gateway's `RUST_LOG`, if not its default.
    gateway_log_filter: Option<&'static str>,
}

/// A gateway log filter under which each vote is logged as it arrives
/// (YES votes are debug lines).
pub const VOTES_LOGGED: &str = "info,coordinator=debug";

/// Whether the gateway log at `log` (written under [`VOTES_LOGGED`]) shows
/// `bank`'s YES for payment `txn_id`. A bank listing the transaction as in
/// doubt is not enough: its answer may still be on the way when it is
/// frozen or killed.
pub fn gateway_logged_yes(log: &Path, bank: &str, txn_id: &str) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let bank = format!("\"{bank}\"");
    text.lines()
        .any(|line| line.contains("vote YES") && line.contains(txn_id) && line.contains(&bank))
}

impl LocalCluster {
    /// Writes certificates and `setup_json`, starts every bank and the gateway.
    pub fn start(dir: &Path, setup_json: &str, banks: &[&str]) -> anyhow::Result<LocalCluster> {
        let exe = std::env::current_exe().context("find the minipay executable")?;
        LocalCluster::start_with(Servers::ReExec(exe), dir, setup_json, banks, &[], &[])
    }

    /// [`LocalCluster::start`], with a gateway that logs every vote as it
    /// arrives (see [`gateway_logged_yes`]).
    pub fn start_logging_votes(
        dir: &Path,
        setup_json: &str,
        banks: &[&str],
    ) -> anyhow::Result<LocalCluster> {
        let exe = std::env::current_exe().context("find the minipay executable")?;
        LocalCluster::launch(
            Servers::ReExec(exe),
            dir,
            setup_json,
            banks,
            &[],
            &[],
            Some(VOTES_LOGGED),
        )
    }

    /// [`LocalCluster::start`] with the given server executables,
    /// `server_flags` added to every server's command line and
    /// `gateway_flags` to the gateway's.
    pub fn start_with(
        servers: Servers,
        dir: &Path,
        setup_json: &str,
        banks: &[&str],
        server_flags: &[String],
        gateway_flags: &[String],
    ) -> anyhow::Result<LocalCluster> {
        LocalCluster::launch(
            servers,
            dir,
            setup_json,
            banks,
            server_flags,
            gateway_flags,
            None,
        )
    }

    /// A cluster over a directory that already has its certificates,
    /// setup file and data (say, one `minipay history-bench build` made),
    /// with no process started yet: the caller starts each one.
    pub fn existing(
        servers: Servers,
        dir: &Path,
        gateway_flags: &[String],
    ) -> anyhow::Result<LocalCluster> {
        for needed in ["tls", "setup.json"] {
            ensure!(
                dir.join(needed).exists(),
                "{} has no {needed}: not a cluster directory",
                dir.display()
            );
        }
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            servers,
            banks: Vec::new(),
            gateway: None,
            gateway_address: std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
            server_flags: Vec::new(),
            gateway_flags: gateway_flags.to_vec(),
            gateway_log_filter: None,
        })
    }

    fn launch(
        servers: Servers,
        dir: &Path,
        setup_json: &str,
        banks: &[&str],
        server_flags: &[String],
        gateway_flags: &[String],
        gateway_log_filter: Option<&'static str>,
    ) -> anyhow::Result<LocalCluster> {
        let names: Vec<String> = banks.iter().map(|name| (*name).to_owned()).collect();
        crate::tools::certs::generate(&dir.join("tls"), &names)?;
        std::fs::write(dir.join("setup.json"), setup_json)?;
        // The banks must know the gateway's address (for in-doubt questions)
        // before it runs: reserve one.
        let gateway_address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cluster = LocalCluster {
            dir: dir.to_path_buf(),
            servers,
            banks: Vec::new(),
            gateway: None,
            gateway_address,
            server_flags: server_flags.to_vec(),
            gateway_flags: gateway_flags.to_vec(),
            gateway_log_filter,
        };
        for name in banks {
            let bank = cluster.start_bank(name, "127.0.0.1:0")?;
            cluster.banks.push(((*name).to_owned(), bank));
        }
        cluster.gateway = Some(cluster.start_gateway()?);
        Ok(cluster)
    }

    fn server_args(&self, data: &str) -> Vec<String> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        let mut args = vec![
            "--data-dir".into(),
            path(data),
            "--setup".into(),
            path("setup.json"),
            "--tls-dir".into(),
            path("tls"),
        ];
        args.extend(self.server_flags.iter().cloned());
        args
    }

    /// Starts (or restarts, given its old address) a bank.
    pub fn start_bank(&self, name: &str, listen: &str) -> anyhow::Result<ServerProcess> {
        let (program, mut args) = self.servers.command("bank");
        args.extend(["--name", name, "--listen", listen].map(str::to_owned));
        args.extend(self.server_args(name));
        args.extend([
            "--gateway".into(),
            format!("https://{}", self.gateway_address),
            "--in-doubt-timeout".into(),
            "1s".into(),
        ]);
        ServerProcess::start(program, &args, &self.dir.join(format!("{name}.log")))
    }

    /// Starts (or restarts) the gateway on its reserved address.
    pub fn start_gateway(&self) -> anyhow::Result<ServerProcess> {
        let (program, mut args) = self.servers.command("gateway");
        args.extend(["--listen".to_owned(), self.gateway_address.to_string()]);
        args.extend(self.server_args("gateway"));
        for (name, bank) in &self.banks {
            args.extend(["--bank".into(), format!("{name}=https://{}", bank.address)]);
        }
        args.extend(["--prepare-timeout", "10s", "--commit-timeout", "2s"].map(str::to_owned));
        args.extend(self.gateway_flags.iter().cloned());
        let env: Vec<_> = self
            .gateway_log_filter
            .map(|filter| ("RUST_LOG", filter))
            .into_iter()
            .collect();
        ServerProcess::start_with_env(program, &args, &self.dir.join("gateway.log"), &env)
    }

    pub fn gateway_url(&self) -> String {
        format!("https://{}", self.gateway_address)
    }

    pub fn tls_dir(&self) -> std::path::PathBuf {
        self.dir.join("tls")
    }

    pub fn bank(&mut self, name: &str) -> &mut ServerProcess {
        &mut self
            .banks
            .iter_mut()
            .find(|(bank, _)| bank == name)
            .expect("a bank of this cluster")
            .1
    }

    /// A client of a bank, presenting the gateway's certificate.
    pub async fn bank_client(
        &self,
        name: &str,
    ) -> anyhow::Result<minipay_proto::v1::bank_client::BankClient<tonic::transport::Channel>> {
        let address = self
            .banks
            .iter()
            .find(|(bank, _)| bank == name)
            .context("unknown bank")?
            .1
            .address;
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))?
            .tls_config(crate::rpc::tls::TlsDir::new(&self.tls_dir()).client("gateway")?)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
            .with_context(|| format!("connect to {name} at {address}"))?;
        Ok(minipay_proto::v1::bank_client::BankClient::new(channel))
    }

    /// Starts a bank again on the address it had (after it was killed).
    pub fn restart_bank(&mut self, name: &str) -> anyhow::Result<()> {
        let listen = self.bank(name).address.to_string();
        let restarted = self.start_bank(name, &listen)?;
        *self.bank(name) = restarted;
        Ok(())
    }

    /// Starts the gateway again on its address (after it was killed).
    pub fn restart_gateway(&mut self) -> anyhow::Result<()> {
        if let Some(mut gateway) = self.gateway.take() {
            gateway.kill_9();
        }
        self.gateway = Some(self.start_gateway()?);
        Ok(())
    }

    /// Stops every process gracefully (SIGTERM).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut gateway) = self.gateway.take() {
            gateway.terminate()?;
        }
        for (_, bank) in &mut self.banks {
            bank.terminate()?;
        }
        Ok(())
    }
}
