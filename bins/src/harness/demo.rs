//! `minipay demo`: a whole cluster on this machine — two banks and a
//! gateway as real processes (this same executable, re-run as `minipay bank`
//! and `minipay gateway`) over mTLS — narrated through real client calls,
//! including a gateway outage and a bank killed after voting YES. Every
//! process it starts is stopped when it ends, whatever happens.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use minipay_proto::v1 as proto;
use money::Amount;

use crate::client::commands::{self as client, ClientCommand, ClientOptions, RetryOptions};
use crate::harness::cluster::{LocalCluster, gateway_logged_yes};
use crate::harness::wait::{Patience, wait_until};

const SETUP: &str = r#"{"users": [
  {"username": "alice", "password": "alice-pass", "bank": "bank_a", "account_no": "123", "balance": 1000},
  {"username": "bob", "password": "bob-pass1", "bank": "bank_b", "account_no": "456", "balance": "250.00"}
]}"#;

/// How long the demo waits for any one thing to happen, and how often it
/// looks.
const DEMO_PATIENCE: Patience = Patience {
    at_most: Duration::from_secs(30),
    poll_every: Duration::from_millis(50),
};

const T1: &str = "00000000-0000-4000-8000-00000000d001";
const T2: &str = "00000000-0000-4000-8000-00000000d002";
const T3: &str = "00000000-0000-4000-8000-00000000d003";

struct Demo {
    cluster: LocalCluster,
}

fn say(text: &str) {
    println!("\n== {text}");
}

impl Demo {
    fn options(&self, user: &str) -> ClientOptions {
        ClientOptions {
            gateway: Some(self.cluster.gateway_url()),
            tls_dir: Some(self.cluster.tls_dir()),
            profile: Some(self.cluster.dir.join(format!("profile-{user}"))),
            timeout: Duration::from_secs(30),
        }
    }

    async fn client(&self, user: &str, command: ClientCommand) -> anyhow::Result<()> {
        println!("[{user}] minipay {}", describe(&command));
        client::run(self.options(user), command).await
    }

    async fn login(&self, user: &str, password: &str) -> anyhow::Result<()> {
        println!("[{user}] minipay login --username {user}");
        client::login_as(&self.options(user), user, password).await
    }

    /// Balance of an account, asked of its bank directly (as the gateway).
    async fn balance(&self, bank: &str, account: &str) -> anyhow::Result<u64> {
        let mut client = self.cluster.bank_client(bank).await?;
        let found = client
            .get_account(proto::GetAccountRequest {
                account_no: account.into(),
            })
            .await?
            .into_inner();
        Ok(found.balance)
    }

    async fn total(&self, accounts: &[(&str, &str)]) -> anyhow::Result<u64> {
        let mut total = 0;
        for (bank, account) in accounts {
            total += self.balance(bank, account).await?;
        }
        Ok(total)
    }
}

fn describe(command: &ClientCommand) -> String {
    match command {
        ClientCommand::Pay {
            to, amount, txn_id, ..
        } => {
            format!(
                "pay --to {to} --amount {amount}{}",
                txn_id
                    .as_ref()
                    .map(|id| format!(" --txn-id {id}"))
                    .unwrap_or_default()
            )
        }
        ClientCommand::Balance => "balance".into(),
        ClientCommand::Sync { .. } => "sync --watch".into(),
        ClientCommand::Queue => "queue".into(),
        other => format!("{other:?}"),
    }
}

fn pay(to: &str, amount: &str, txn_id: &str) -> ClientCommand {
    ClientCommand::Pay {
        to: to.into(),
        amount: amount.into(),
        txn_id: Some(txn_id.into()),
        wait: false,
        retry: RetryOptions {
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(60),
        },
    }
}

/// Runs the demo in a fresh temporary directory; removes it on success and
/// keeps it (with every log) on failure.
pub async fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("minipay-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let result = run_in(&dir).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "\ndemo finished in {:.1} s; every process it started is stopped",
                started.elapsed().as_secs_f64()
            );
        }
        Err(_) => eprintln!("the demo failed; logs are kept in {}", dir.display()),
    }
    result
}

/// Runs the demo's acts in order in `dir`; each act narrates itself and
/// checks what it shows, so the first act that goes wrong stops the demo.
async fn run_in(dir: &Path) -> anyhow::Result<()> {
    crate::rpc::tls::install_crypto_provider();
    let mut demo = start_cluster(dir)?;
    let carol_account = register_carol(&demo).await?;
    let accounts = [
        ("bank_a", "123"),
        ("bank_b", "456"),
        ("bank_b", carol_account.as_str()),
    ];
    // Taken once carol's account exists, so conservation covers all three.
    let before = demo.total(&accounts).await?;
    log_in_alice_and_bob(&demo).await?;
    pay_across_banks(&demo).await?;
    retry_pays_once(&demo).await?;
    unaffordable_payment_aborts(&demo).await?;
    queue_through_a_gateway_outage(&mut demo).await?;
    kill_a_bank_after_its_yes(&mut demo).await?;
    check_final_balances(&demo, &accounts, before).await?;

    say("Stopping every process");
    demo.cluster.stop()
}

/// Act 1: certificates, a setup file, and two banks and the gateway started
/// as real processes, each shown with its pid and address.
fn start_cluster(dir: &Path) -> anyhow::Result<Demo> {
    say("A development CA, certificates for every node, and a setup file");
    println!("alice: bank_a/123 with 1,000.00 INR; bob: bank_b/456 with 250.00 INR");
    say("Two banks and the gateway start as real processes over mutual TLS");
    let cluster = LocalCluster::start_logging_votes(dir, SETUP, &["bank_a", "bank_b"])?;
    for (name, bank) in &cluster.banks {
        println!(
            "{name}: pid {}, listening on {}",
            bank.child.id(),
            bank.address
        );
    }
    if let Some(gateway) = &cluster.gateway {
        println!(
            "gateway: pid {}, listening on {}",
            gateway.child.id(),
            gateway.address
        );
    }
    Ok(Demo { cluster })
}

/// Act 2: carol registers (a user made at run time, unlike alice and bob,
/// who come from the setup file) and logs in. Returns her account number.
async fn register_carol(demo: &Demo) -> anyhow::Result<String> {
    say(
        "carol registers with 50.00 INR at bank_b; alice and bob log in (argon2id passwords, session keys stored 0600)",
    );
    println!("[carol] minipay register --username carol --bank bank_b --initial-balance 50");
    let (_, carol_account) = client::register(
        &demo.cluster.gateway_url(),
        &demo.cluster.tls_dir(),
        "carol",
        "carol-pass",
        "bank_b",
        Amount(5_000),
    )
    .await?;
    demo.login("carol", "carol-pass").await?;
    demo.client("carol", ClientCommand::Balance).await?;
    Ok(carol_account)
}

/// Act 2, continued: alice and bob log in and see their opening balances.
async fn log_in_alice_and_bob(demo: &Demo) -> anyhow::Result<()> {
    demo.login("alice", "alice-pass").await?;
    demo.login("bob", "bob-pass1").await?;
    demo.client("alice", ClientCommand::Balance).await?;
    demo.client("bob", ClientCommand::Balance).await
}

/// Act 3: a payment from bank_a to bank_b, decided by two-phase commit.
async fn pay_across_banks(demo: &Demo) -> anyhow::Result<()> {
    say("A cross-bank payment: 2PC across bank_a and bank_b");
    demo.client("alice", pay("bank_b/456", "100.00", T1)).await
}

/// Act 4: the same payment resent under the same transaction id, as a client
/// retry would, is answered from the stored outcome and not paid again.
async fn retry_pays_once(demo: &Demo) -> anyhow::Result<()> {
    say("The same transaction id again (a client retry): paid once");
    demo.client("alice", pay("bank_b/456", "100.00", T1))
        .await?;
    ensure!(
        demo.balance("bank_a", "123").await? == 90_000,
        "alice must have paid exactly once"
    );
    Ok(())
}

/// Act 5: a payment larger than bob's balance is aborted at both banks.
async fn unaffordable_payment_aborts(demo: &Demo) -> anyhow::Result<()> {
    say("A payment bob cannot afford is aborted everywhere");
    demo.client(
        "bob",
        pay(
            "bank_a/123",
            "10000.00",
            "00000000-0000-4000-8000-00000000d0ff",
        ),
    )
    .await
}

/// Act 6: with the gateway stopped, alice's payment waits in her local
/// queue; when the gateway is back (sessions live in its memory, so she logs
/// in again), `sync --watch` delivers it.
async fn queue_through_a_gateway_outage(demo: &mut Demo) -> anyhow::Result<()> {
    say("The gateway stops; alice pays anyway: the payment waits in her local queue");
    if let Some(mut gateway) = demo.cluster.gateway.take() {
        gateway.terminate()?;
    }
    demo.client("alice", pay("bank_b/456", "5.00", T2)).await?;
    demo.client("alice", ClientCommand::Queue).await?;
    say(
        "The gateway comes back (sessions live in memory: alice logs in again); the queue is delivered",
    );
    demo.cluster.gateway = Some(demo.cluster.start_gateway()?);
    demo.login("alice", "alice-pass").await?;
    let retry = RetryOptions {
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
    };
    demo.client("alice", ClientCommand::Sync { watch: true, retry })
        .await
}

/// Act 7: bank_b is killed with SIGKILL right after it votes YES (bank_a is
/// frozen meanwhile, so the decision cannot reach bank_b first); its hold
/// survives in its WAL and the payment commits once it is restarted.
async fn kill_a_bank_after_its_yes(demo: &mut Demo) -> anyhow::Result<()> {
    say(
        "bank_b is killed with SIGKILL right after voting YES; the payment commits once it is back",
    );
    demo.cluster.bank("bank_a").signal("STOP")?;
    let options = demo.options("alice");
    println!(
        "[alice] minipay pay --to bank_b/456 --amount 20.00 --txn-id {T3}   (bank_a is frozen meanwhile, to hold the decision)"
    );
    let payment = tokio::spawn(client::run(options, pay("bank_b/456", "20.00", T3)));
    let gateway_log = demo.cluster.dir.join("gateway.log");
    wait_until(
        "the gateway to receive bank_b's YES",
        DEMO_PATIENCE,
        || async { gateway_logged_yes(&gateway_log, "bank_b", T3) },
    )
    .await?;
    let b_address = demo.cluster.bank("bank_b").address;
    demo.cluster.bank("bank_b").kill_9();
    println!("bank_b voted YES and was killed (SIGKILL)");
    demo.cluster.bank("bank_a").signal("CONT")?;
    payment.await.context("payment task")??;
    let restarted = demo.cluster.start_bank("bank_b", &b_address.to_string())?;
    println!(
        "bank_b restarted (pid {}): its hold survived in its WAL",
        restarted.child.id()
    );
    *demo.cluster.bank("bank_b") = restarted;
    let demo = &*demo;
    wait_until("bank_b to apply the commit", DEMO_PATIENCE, || async {
        demo.balance("bank_b", "456").await.ok() == Some(25_000 + 10_000 + 500 + 2_000)
    })
    .await?;
    demo.login("bob", "bob-pass1").await?;
    demo.client("bob", ClientCommand::Balance).await
}

/// Act 8: every balance shown once more, and checked: the total over all
/// three accounts is what it was before the first payment, and alice paid
/// exactly the payments that committed.
async fn check_final_balances(
    demo: &Demo,
    accounts: &[(&str, &str)],
    before: u64,
) -> anyhow::Result<()> {
    say("Final balances: money is conserved");
    demo.client("alice", ClientCommand::Balance).await?;
    demo.login("carol", "carol-pass").await?;
    demo.client("carol", ClientCommand::Balance).await?;
    let after = demo.total(accounts).await?;
    println!(
        "total before: {} INR, after: {} INR",
        Amount(before),
        Amount(after)
    );
    ensure!(
        before == after,
        "money was created or destroyed: {before} != {after}"
    );
    ensure!(
        demo.balance("bank_a", "123").await? == 100_000 - 10_000 - 500 - 2_000,
        "alice's balance"
    );
    Ok(())
}
