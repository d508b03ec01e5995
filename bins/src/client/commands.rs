//! The `minipay` client commands: register, login, logout, balance, pay,
//! status, history, queue, sync. A profile directory holds the session
//! (mode 0600) and the persistent payment queue ([`crate::client::queue`]).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use minipay_proto::v1 as proto;
use money::Amount;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::client::queue::{Outcome, PaymentQueue, QueuedPayment};
use crate::rpc::session_key::authorized;
use crate::rpc::tls::TlsDir;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of Register and Login (a password hash each).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, clap::Args)]
pub struct ClientOptions {
    /// The gateway's URL (remembered from the last login).
    #[arg(long, global = true)]
    pub gateway: Option<String>,
    /// Directory with ca.pem and client.pem/.key (remembered from the last login).
    #[arg(long, global = true)]
    pub tls_dir: Option<PathBuf>,
    /// Profile directory: session and payment queue (default ~/.config/minipay).
    #[arg(long, global = true)]
    pub profile: Option<PathBuf>,
    /// How long to wait for the gateway's answer before treating it as
    /// unreachable (the payment then stays queued under its id).
    #[arg(long, global = true, default_value = "30s", value_parser = crate::rpc::settings::parse_duration)]
    pub timeout: Duration,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create a user and an account at a bank.
    Register {
        #[arg(long)]
        username: String,
        #[arg(long)]
        bank: String,
        /// Opening balance in major units, e.g. 1000 or 12.50.
        #[arg(long, default_value = "0")]
        initial_balance: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in; the session is stored in the profile (mode 0600).
    Login {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the session.
    Logout,
    /// Show the balance of your account.
    Balance,
    /// Pay someone: queued durably first, then sent.
    Pay {
        /// Destination as BANK/ACCOUNT, e.g. bank_b/456.
        #[arg(long)]
        to: String,
        /// Amount in major units, e.g. 12.50.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        /// Use this transaction id instead of a new random one.
        #[arg(long)]
        txn_id: Option<String>,
        /// If the gateway is unreachable, keep retrying until an outcome arrives.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        retry: RetryOptions,
    },
    /// Ask the gateway about one payment.
    Status { txn_id: String },
    /// This profile's payments and their outcomes.
    History,
    /// Payments still waiting for an outcome.
    Queue,
    /// Send queued payments; with --watch, retry with backoff until all have an outcome.
    Sync {
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        retry: RetryOptions,
    },
}

/// Exponential backoff between resends.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct RetryOptions {
    /// First wait between attempts.
    #[arg(long, default_value = "5s", value_parser = crate::rpc::settings::parse_duration)]
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    #[arg(long, default_value = "60s", value_parser = crate::rpc::settings::parse_duration)]
    pub retry_max: Duration,
}

/// What the profile remembers between commands.
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    gateway: String,
    tls_dir: PathBuf,
    username: String,
    session_key: String,
    expires_at_ms: u64,
}

struct Profile {
    dir: PathBuf,
}

impl Profile {
    fn new(options: &ClientOptions) -> anyhow::Result<Profile> {
        let dir = match &options.profile {
            Some(dir) => dir.clone(),
            None => {
                let home =
                    std::env::var_os("HOME").context("HOME is not set; pass --profile DIR")?;
                PathBuf::from(home).join(".config").join("minipay")
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create profile {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Profile { dir })
    }

    fn session_path(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    fn session(&self) -> anyhow::Result<Option<Session>> {
        match std::fs::read(self.session_path()) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).context("read the stored session")?,
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).context("read the stored session"),
        }
    }

    /// Writes the session atomically with mode 0600.
    fn store(&self, session: &Session) -> anyhow::Result<()> {
        let temp = self.dir.join("session.json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .context("write the session")?;
        file.write_all(&serde_json::to_vec(session)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, self.session_path()).context("store the session")?;
        Ok(())
    }

    fn forget(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.session_path()) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    fn queue(&self) -> anyhow::Result<PaymentQueue> {
        PaymentQueue::open(&self.dir.join("queue"))
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        rpassword::prompt_password("Password: ").context("read the password")?
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

async fn connect(
    gateway: &str,
    tls_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<proto::gateway_client::GatewayClient<Channel>> {
    let tls = TlsDir::new(tls_dir).client("client")?;
    let channel = Endpoint::from_shared(gateway.to_owned())
        .with_context(|| format!("bad gateway URL {gateway:?}"))?
        .tls_config(tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .connect_lazy();
    Ok(proto::gateway_client::GatewayClient::new(channel))
}

/// Whether a failed call means "could not reach the gateway" (retry later)
/// rather than a refusal.
fn unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

fn refusal(status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        Code::Unauthenticated => anyhow::anyhow!(
            "{} (`minipay login --username NAME`; queued payments keep their transaction ids)",
            status.message()
        ),
        code => anyhow::anyhow!(
            "{} ({})",
            status.message(),
            crate::rpc::request_log::code_name(code)
        ),
    }
}

fn money(amount: u64, currency: &str) -> String {
    format!("{} {currency}", Amount(amount))
}

fn require_session(profile: &Profile) -> anyhow::Result<Session> {
    profile
        .session()?
        .context("not logged in: run `minipay login --username NAME` first")
}

/// Creates a user and an account; prints and returns where (bank, account).
pub async fn register(
    gateway: &str,
    tls_dir: &Path,
    username: &str,
    password: &str,
    bank: &str,
    initial_balance: Amount,
) -> anyhow::Result<(String, String)> {
    let mut client = connect(gateway, tls_dir, REGISTER_TIMEOUT).await?;
    let request = proto::RegisterRequest {
        username: username.to_owned(),
        password: password.to_owned(),
        bank: bank.to_owned(),
        initial_balance: initial_balance.0,
    };
    let registered = client
        .register(request)
        .await
        .map_err(|status| refusal(&status))?
        .into_inner();
    println!(
        "registered {username}: account {}/{}",
        registered.bank, registered.account_no
    );
    Ok((registered.bank, registered.account_no))
}

async fn login(
    profile: &Profile,
    gateway: &str,
    tls_dir: &Path,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    let mut client = connect(gateway, tls_dir, REGISTER_TIMEOUT).await?;
    let request = proto::LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    let session = client
        .login(request)
        .await
        .map_err(|status| refusal(&status))?
        .into_inner();
    profile.store(&Session {
        gateway: gateway.to_owned(),
        tls_dir: tls_dir
            .canonicalize()
            .unwrap_or_else(|_| tls_dir.to_path_buf()),
        username: username.to_owned(),
        session_key: session.session_key,
        expires_at_ms: session.expires_at_ms,
    })?;
    println!("logged in as {username}");
    Ok(())
}

/// Logs in with a password given by the program (the demo), storing the
/// session in `options`' profile like `minipay login`.
pub async fn login_as(
    options: &ClientOptions,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    let profile = Profile::new(options)?;
    let gateway = options.gateway.clone().context("--gateway is required")?;
    let tls_dir = options.tls_dir.clone().context("--tls-dir is required")?;
    crate::rpc::tls::install_crypto_provider();
    login(&profile, &gateway, &tls_dir, username, password).await
}

/// Everything a command needs that `run` works out before dispatching: the
/// profile, the session it remembers, and where and how to reach the gateway.
struct Invocation {
    profile: Profile,
    remembered: Option<Session>,
    gateway: String,
    tls_dir: PathBuf,
    timeout: Duration,
}

/// Runs a client command; prints what happened. Errors carry the message a
/// user needs; the caller exits non-zero.
pub async fn run(options: ClientOptions, command: ClientCommand) -> anyhow::Result<()> {
    let invocation = Invocation::new(&options)?;
    crate::rpc::tls::install_crypto_provider();
    match command {
        ClientCommand::Register {
            username,
            bank,
            initial_balance,
            password_stdin,
        } => {
            invocation
                .register(&username, &bank, &initial_balance, password_stdin)
                .await
        }
        ClientCommand::Login {
            username,
            password_stdin,
        } => invocation.login(&username, password_stdin).await,
        ClientCommand::Logout => invocation.logout().await,
        ClientCommand::Balance => invocation.balance().await,
        ClientCommand::Pay {
            to,
            amount,
            txn_id,
            wait,
            retry,
        } => invocation.pay(&to, &amount, txn_id, wait, retry).await,
        ClientCommand::Status { txn_id } => invocation.status(&txn_id).await,
        ClientCommand::History => invocation.history(),
        ClientCommand::Queue => invocation.queue(),
        ClientCommand::Sync { watch, retry } => invocation.sync(watch, retry).await,
    }
}

impl Invocation {
    /// Resolves the gateway and TLS directory from the flags, else from the
    /// remembered session. Every command needs a TLS directory, even those
    /// that only read the profile, so a missing one is reported up front.
    fn new(options: &ClientOptions) -> anyhow::Result<Invocation> {
        let profile = Profile::new(options)?;
        let remembered = profile.session()?;
        let gateway = options
            .gateway
            .clone()
            .or_else(|| remembered.as_ref().map(|session| session.gateway.clone()))
            .unwrap_or_else(|| "https://127.0.0.1:7000".to_owned());
        let tls_dir = options
            .tls_dir
            .clone()
            .or_else(|| remembered.as_ref().map(|session| session.tls_dir.clone()))
            .context("--tls-dir is required (the directory with ca.pem and client.pem/.key)")?;
        Ok(Invocation {
            profile,
            remembered,
            gateway,
            tls_dir,
            timeout: options.timeout,
        })
    }

    /// Connects with the user's `--timeout` (register and login use their own,
    /// longer deadline because the gateway hashes a password).
    async fn connect(&self) -> anyhow::Result<proto::gateway_client::GatewayClient<Channel>> {
        connect(&self.gateway, &self.tls_dir, self.timeout).await
    }

    /// `minipay register`: creates a user and an account at a bank.
    async fn register(
        &self,
        username: &str,
        bank: &str,
        initial_balance: &str,
        password_stdin: bool,
    ) -> anyhow::Result<()> {
        let initial_balance = Amount::parse_major(initial_balance).context("--initial-balance")?;
        let password = read_password(password_stdin)?;
        register(
            &self.gateway,
            &self.tls_dir,
            username,
            &password,
            bank,
            initial_balance,
        )
        .await?;
        Ok(())
    }

    /// `minipay login`: stores a new session in the profile.
    async fn login(&self, username: &str, password_stdin: bool) -> anyhow::Result<()> {
        let password = read_password(password_stdin)?;
        login(
            &self.profile,
            &self.gateway,
            &self.tls_dir,
            username,
            &password,
        )
        .await
    }

    /// `minipay logout`: ends the session at the gateway, then forgets it.
    /// A session the gateway no longer knows is forgotten all the same.
    async fn logout(&self) -> anyhow::Result<()> {
        if let Some(session) = &self.remembered {
            let mut client = self.connect().await?;
            if let Err(status) = client
                .logout(authorized(proto::LogoutRequest {}, &session.session_key)?)
                .await
                && status.code() != Code::Unauthenticated
            {
                return Err(refusal(&status));
            }
        }
        self.profile.forget()?;
        println!("logged out");
        Ok(())
    }

    /// `minipay balance`: the account's balance, what is available of it, and
    /// how many decided payments the bank has not applied yet.
    async fn balance(&self) -> anyhow::Result<()> {
        let session = require_session(&self.profile)?;
        let mut client = self.connect().await?;
        let balance = client
            .get_balance(authorized(
                proto::GetBalanceRequest {},
                &session.session_key,
            )?)
            .await
            .map_err(|status| refusal(&status))?
            .into_inner();
        println!(
            "{}/{}: {} (available {}){}",
            balance.bank,
            balance.account_no,
            money(balance.balance, &balance.currency),
            money(balance.available, &balance.currency),
            match balance.unsettled {
                0 => String::new(),
                count => format!("; {count} decided payment(s) not applied by the bank yet"),
            }
        );
        Ok(())
    }

    /// `minipay pay`: queues the payment durably first, then sends it; with
    /// `wait`, keeps resending until it has an outcome.
    async fn pay(
        &self,
        to: &str,
        amount: &str,
        txn_id: Option<String>,
        wait: bool,
        retry: RetryOptions,
    ) -> anyhow::Result<()> {
        let session = require_session(&self.profile)?;
        let payment = new_payment(to, amount, txn_id)?;
        let txn_id = payment.txn_id.clone();
        let mut queue = self.profile.queue()?;
        queue_once(&mut queue, payment)?;
        let mut client = self.connect().await?;
        let delivered = send(&mut client, &session, &mut queue, &txn_id, self.timeout).await?;
        if !delivered {
            println!("no outcome yet: payment {txn_id} stays queued (run `minipay sync --watch`)");
            if wait {
                sync(&mut client, &session, &mut queue, true, retry, self.timeout).await?;
            }
        }
        Ok(())
    }

    /// `minipay status`: asks the gateway about one payment; if the gateway
    /// is unreachable, shows what the local queue knows of it instead.
    async fn status(&self, txn_id: &str) -> anyhow::Result<()> {
        let session = require_session(&self.profile)?;
        let mut client = self.connect().await?;
        match client
            .get_payment(authorized(
                proto::GetPaymentRequest {
                    txn_id: txn_id.to_owned(),
                },
                &session.session_key,
            )?)
            .await
        {
            Ok(payment) => println!("{}", describe(&payment.into_inner())),
            Err(status) if unreachable(&status) => match self.profile.queue()?.get(txn_id) {
                Some(queued) => {
                    println!("gateway unreachable; locally: {}", describe_local(queued))
                }
                None => return Err(refusal(&status)),
            },
            Err(status) => return Err(refusal(&status)),
        }
        Ok(())
    }

    /// `minipay history`: this profile's payments and their outcomes.
    fn history(&self) -> anyhow::Result<()> {
        for payment in self.profile.queue()?.history() {
            println!("{}", describe_local(&payment));
        }
        Ok(())
    }

    /// `minipay queue`: the payments still waiting for an outcome.
    fn queue(&self) -> anyhow::Result<()> {
        let pending = self.profile.queue()?.pending();
        if pending.is_empty() {
            println!("no queued payments");
        }
        for payment in pending {
            println!("{}", describe_local(&payment));
        }
        Ok(())
    }

    /// `minipay sync`: sends the queued payments; with `watch`, retries with
    /// backoff until all have an outcome.
    async fn sync(&self, watch: bool, retry: RetryOptions) -> anyhow::Result<()> {
        let session = require_session(&self.profile)?;
        let mut client = self.connect().await?;
        let mut queue = self.profile.queue()?;
        sync(
            &mut client,
            &session,
            &mut queue,
            watch,
            retry,
            self.timeout,
        )
        .await
    }
}

/// Parses `minipay pay`'s flags into the payment to queue. A given
/// transaction id is normalised; otherwise the payment gets a new random one.
fn new_payment(to: &str, amount: &str, txn_id: Option<String>) -> anyhow::Result<QueuedPayment> {
    let (to_bank, to_account) = to
        .split_once('/')
        .context("--to must be BANK/ACCOUNT, e.g. bank_b/456")?;
    let amount = Amount::parse_major(amount).context("--amount")?;
    if amount.is_zero() {
        bail!("--amount must be positive");
    }
    let txn_id = match txn_id {
        Some(id) => money::TxnId::parse(&id)
            .map(|txn| txn.to_string())
            .context("--txn-id")?,
        None => uuid::Uuid::new_v4().to_string(),
    };
    Ok(QueuedPayment {
        txn_id,
        to_bank: to_bank.to_owned(),
        to_account: to_account.to_owned(),
        amount: amount.0,
        currency: "INR".to_owned(),
        queued_at_ms: crate::rpc::settings::now_ms(),
        outcome: None,
    })
}

/// Queues a payment unless its transaction id is already known. The same
/// payment again is resent under the same id, so it is paid at most once
/// whatever happened before; a different payment under a used id is refused.
fn queue_once(queue: &mut PaymentQueue, payment: QueuedPayment) -> anyhow::Result<()> {
    let txn_id = payment.txn_id.clone();
    match queue.get(&txn_id) {
        None => {
            queue.queue(payment)?;
            println!("payment {txn_id} queued");
        }
        Some(known)
            if (&known.to_bank, &known.to_account, known.amount)
                != (&payment.to_bank, &payment.to_account, payment.amount) =>
        {
            bail!("transaction id {txn_id} was already used for a different payment; use a new id");
        }
        Some(known) => {
            println!(
                "payment {txn_id} is already known ({}); asking the gateway again",
                describe_local(known)
            );
        }
    }
    Ok(())
}

fn describe(payment: &proto::Payment) -> String {
    let status = match proto::PaymentStatus::try_from(payment.status) {
        Ok(proto::PaymentStatus::Committed) => "committed".to_owned(),
        Ok(proto::PaymentStatus::Aborted) => format!("aborted: {}", payment.reason),
        Ok(proto::PaymentStatus::Initiated) => "in flight".to_owned(),
        Ok(proto::PaymentStatus::Unspecified) | Err(_) => "unknown".to_owned(),
    };
    format!(
        "payment {}: {} to {}/{}: {}{}",
        payment.txn_id,
        money(payment.amount, &payment.currency),
        payment.to_bank,
        payment.to_account,
        status,
        if payment.replayed {
            " (already processed; not paid again)"
        } else {
            ""
        }
    )
}

fn describe_local(payment: &QueuedPayment) -> String {
    let status = match &payment.outcome {
        None => "queued".to_owned(),
        Some(outcome) if outcome.committed => "committed".to_owned(),
        Some(outcome) => format!("aborted: {}", outcome.reason),
    };
    format!(
        "payment {}: {} to {}/{}: {status}",
        payment.txn_id,
        money(payment.amount, &payment.currency),
        payment.to_bank,
        payment.to_account
    )
}

/// Sends one queued payment. Returns false if the gateway could not be
/// reached or shed it for load (the payment stays queued); records and
/// prints a final outcome.
async fn send(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    session: &Session,
    queue: &mut PaymentQueue,
    txn_id: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let payment = queue
        .get(txn_id)
        .cloned()
        .context("payment not in the queue")?;
    let request = proto::PayRequest {
        txn_id: payment.txn_id.clone(),
        to_bank: payment.to_bank.clone(),
        to_account: payment.to_account.clone(),
        amount: payment.amount,
        currency: payment.currency.clone(),
    };
    // The whole attempt, connection and TLS handshake included, is bounded:
    // a gateway that accepts connections but never answers must not hang us.
    let answer = match tokio::time::timeout(
        timeout,
        client.pay(authorized(request, &session.session_key)?),
    )
    .await
    {
        Err(_) => return Ok(false),
        Ok(answer) => answer,
    };
    match answer {
        Ok(response) => record_answer(queue, txn_id, response.into_inner()),
        Err(status) if unreachable(&status) => Ok(false),
        // The gateway shed the payment before writing anything: it stays
        // queued under its id and is resent with the backoff.
        Err(status) if status.code() == Code::ResourceExhausted => {
            println!(
                "payment {txn_id}: the gateway is overloaded ({}); it stays queued",
                status.message()
            );
            Ok(false)
        }
        Err(status) if status.code() == Code::Unauthenticated => Err(refusal(&status)),
        Err(status) => record_refusal(queue, txn_id, &status),
    }
}

/// Prints the gateway's answer and, if it is final (committed or aborted),
/// settles the payment in the queue. Returns whether it was final; a payment
/// still in flight stays queued and is asked about again.
fn record_answer(
    queue: &mut PaymentQueue,
    txn_id: &str,
    response: proto::Payment,
) -> anyhow::Result<bool> {
    println!("{}", describe(&response));
    let outcome = match proto::PaymentStatus::try_from(response.status) {
        Ok(proto::PaymentStatus::Committed) => Outcome {
            committed: true,
            reason: String::new(),
        },
        Ok(proto::PaymentStatus::Aborted) => Outcome {
            committed: false,
            reason: response.reason,
        },
        _ => return Ok(false),
    };
    queue.settle(txn_id, outcome)?;
    Ok(true)
}

/// Settles a payment the gateway refused outright: nothing moved, so the
/// refusal is final and the payment is never resent.
fn record_refusal(
    queue: &mut PaymentQueue,
    txn_id: &str,
    status: &tonic::Status,
) -> anyhow::Result<bool> {
    let reason = format!("refused: {}", status.message());
    queue.settle(
        txn_id,
        Outcome {
            committed: false,
            reason: reason.clone(),
        },
    )?;
    println!("payment {txn_id}: {reason}");
    Ok(true)
}

/// Sends every queued payment; with `watch`, retries with exponential
/// backoff (and jitter) until each has an outcome.
async fn sync(
    client: &mut proto::gateway_client::GatewayClient<Channel>,
    session: &Session,
    queue: &mut PaymentQueue,
    watch: bool,
    retry: RetryOptions,
    timeout: Duration,
) -> anyhow::Result<()> {
    if retry.retry_initial.is_zero() || retry.retry_max < retry.retry_initial {
        bail!("--retry-initial must be positive and at most --retry-max");
    }
    let mut backoff = retry.retry_initial;
    loop {
        let pending = queue.pending();
        if pending.is_empty() {
            println!("no queued payments");
            return Ok(());
        }
        let mut unreached = 0;
        for payment in pending {
            if !send(client, session, queue, &payment.txn_id, timeout).await? {
                unreached += 1;
            }
        }
        if unreached == 0 {
            return Ok(());
        }
        if !watch {
            bail!(
                "{unreached} payments still queued: the gateway is unreachable (run `minipay sync --watch`)"
            );
        }
        let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 5));
        let wait = backoff + jitter;
        println!(
            "{unreached} payments still queued; retrying in {:.1} s",
            wait.as_secs_f64()
        );
        let started = Instant::now();
        tokio::time::sleep(wait).await;
        debug_assert!(started.elapsed() >= wait);
        backoff = (backoff * 2).min(retry.retry_max);
    }
}
