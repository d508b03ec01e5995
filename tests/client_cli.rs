//! The `minipay` client commands through the real binary against a real
//! cluster (two `bank` processes and a `gateway`): each command, bad input
//! messages and exit codes, and the offline queue across a gateway outage.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Cli, Process, SETUP, Scratch, bank_args, gateway_args};

/// Two banks and a gateway, real processes, stopped when dropped.
struct Running {
    _bank_a: Process,
    bank_b: Process,
    banks: [(&'static str, std::net::SocketAddr); 2],
    gateway: Process,
    gateway_log: std::path::PathBuf,
}

fn start(scratch: &Scratch, prepare_timeout: &str, commit_timeout: &str) -> Running {
    let bank = env!("CARGO_BIN_EXE_bank");
    let log = |name: &str| scratch.dir.path().join(name);
    let bank_a = Process::start(bank, &bank_args(scratch, "bank_a", None), &log("a.log"));
    let bank_b = Process::start(bank, &bank_args(scratch, "bank_b", None), &log("b.log"));
    let banks = [("bank_a", bank_a.address), ("bank_b", bank_b.address)];
    let gateway_log = log("gateway.log");
    let gateway = Process::start(
        env!("CARGO_BIN_EXE_gateway"),
        &gateway_args(scratch, &banks, prepare_timeout, commit_timeout),
        &gateway_log,
    );
    Running {
        _bank_a: bank_a,
        bank_b,
        banks,
        gateway,
        gateway_log,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn client_commands_work_and_a_payment_made_while_the_gateway_is_down_is_delivered_once() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let Running {
        _bank_a,
        bank_b: _bank_b,
        banks,
        mut gateway,
        gateway_log,
    } = start(&scratch, "2s", "2s");
    let address = gateway.address;
    let cli = Cli {
        scratch: &scratch,
        gateway: format!("https://{address}"),
    };

    assert_eq!(
        cli.ok(
            &["login", "--username", "alice", "--password-stdin"],
            "pass123\n"
        ),
        "logged in as alice\n"
    );
    assert_eq!(
        mode(&scratch.dir.path().join("profile/session.json")),
        0o600
    );
    assert_eq!(
        cli.ok(&["balance"], ""),
        "bank_a/123: 1,000.00 INR (available 1,000.00 INR)\n"
    );
    let paid = cli.ok(
        &[
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "12.50",
            "--txn-id",
            "00000000-0000-4000-8000-000000000001",
        ],
        "",
    );
    assert!(
        paid.contains("12.50 INR to bank_b/789: committed"),
        "{paid}"
    );
    // The same command again pays nothing more.
    let again = cli.ok(
        &[
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "12.50",
            "--txn-id",
            "00000000-0000-4000-8000-000000000001",
        ],
        "",
    );
    assert!(
        again.contains("(already processed; not paid again)"),
        "{again}"
    );
    assert_eq!(
        cli.ok(&["balance"], ""),
        "bank_a/123: 987.50 INR (available 987.50 INR)\n"
    );

    for (args, message) in [
        (
            vec!["pay", "--to", "bank_b/789", "--amount", "12.345"],
            "more than 2 decimal places",
        ),
        (
            vec!["pay", "--to", "bank_b/789", "--amount", "-1"],
            "not a plain decimal number",
        ),
        (
            vec!["pay", "--to", "bank_b", "--amount", "1"],
            "--to must be BANK/ACCOUNT",
        ),
        (
            vec!["pay", "--to", "bank_b/789", "--amount", "0"],
            "--amount must be positive",
        ),
        (
            vec![
                "pay",
                "--to",
                "bank_b/789",
                "--amount",
                "13",
                "--txn-id",
                "00000000-0000-4000-8000-000000000001",
            ],
            "already used for a different payment",
        ),
        (
            vec![
                "pay",
                "--to",
                "bank_b/789",
                "--amount",
                "1",
                "--txn-id",
                "nope",
            ],
            "--txn-id",
        ),
    ] {
        let error = cli.fails(&args);
        assert!(
            error.starts_with("error: ") && error.contains(message),
            "{args:?}: {error}"
        );
    }
    let refused = cli.ok(&["pay", "--to", "bank_b/789", "--amount", "5000"], "");
    assert!(
        refused.contains("aborted: insufficient funds in account 123"),
        "{refused}"
    );

    // Offline: the gateway is down, the payment is queued durably.
    gateway.kill_9();
    let queued = cli.ok(
        &[
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "1",
            "--txn-id",
            "00000000-0000-4000-8000-000000000002",
        ],
        "",
    );
    assert!(queued.contains("stays queued"), "{queued}");
    assert!(
        cli.ok(&["queue"], "")
            .contains("00000000-0000-4000-8000-000000000002: 1.00 INR to bank_b/789: queued")
    );
    assert!(cli.fails(&["sync"]).contains("1 payments still queued"));
    // Back on the same address: sync delivers it once.
    let mut args = gateway_args(&scratch, &banks, "2s", "2s");
    args[1] = address.to_string();
    let _gateway = Process::start(env!("CARGO_BIN_EXE_gateway"), &args, &gateway_log);
    // The restart ended the session: the user is asked to log in again and
    // the payment keeps its place and its id.
    assert!(
        cli.fails(&["sync"])
            .contains("minipay login --username NAME")
    );
    assert!(
        cli.ok(&["queue"], "")
            .contains("00000000-0000-4000-8000-000000000002")
    );
    cli.ok(
        &["login", "--username", "alice", "--password-stdin"],
        "pass123\n",
    );
    let synced = cli.ok(
        &[
            "sync",
            "--watch",
            "--retry-initial",
            "100ms",
            "--retry-max",
            "1s",
        ],
        "",
    );
    assert!(
        synced.contains("1.00 INR to bank_b/789: committed"),
        "{synced}"
    );
    assert_eq!(cli.ok(&["queue"], ""), "no queued payments\n");
    assert_eq!(
        cli.ok(&["balance"], ""),
        "bank_a/123: 986.50 INR (available 986.50 INR)\n"
    );
    assert!(
        cli.ok(&["status", "00000000-0000-4000-8000-000000000002"], "")
            .contains("committed")
    );
    let history = cli.ok(&["history"], "");
    assert_eq!(history.lines().count(), 3, "{history}");

    let registered = cli.ok(
        &[
            "register",
            "--username",
            "erin",
            "--bank",
            "bank_b",
            "--initial-balance",
            "30",
            "--password-stdin",
        ],
        "erin-secret\n",
    );
    assert!(
        registered.starts_with("registered erin: account bank_b/"),
        "{registered}"
    );
    assert_eq!(cli.ok(&["logout"], ""), "logged out\n");
    assert!(cli.fails(&["balance"]).contains("not logged in"));
    assert!(
        cli.fails(&["login", "--username", "alice", "--password-stdin"])
            .contains("password is empty")
    );
    let wrong = cli.run(
        &["login", "--username", "alice", "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong username or password"));
}

fn balance_of(cli: &Cli<'_>) -> String {
    cli.ok(&["balance"], "")
}

#[test]
fn a_reply_lost_after_the_gateway_got_the_payment_and_a_client_killed_during_sync_never_pay_twice()
{
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let Running {
        _bank_a,
        bank_b,
        banks,
        mut gateway,
        gateway_log,
    } = start(&scratch, "10s", "2s");
    let address = gateway.address;
    let cli = Cli {
        scratch: &scratch,
        gateway: format!("https://{address}"),
    };
    cli.ok(
        &["login", "--username", "alice", "--password-stdin"],
        "pass123\n",
    );

    // The first attempt reaches the gateway, but bank_b is frozen, so the
    // answer comes after the client stopped waiting: the reply is lost.
    bank_b.signal("STOP");
    let lost = cli.ok(
        &[
            "--timeout",
            "1s",
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "3",
            "--txn-id",
            "00000000-0000-4000-8000-000000000003",
        ],
        "",
    );
    assert!(lost.contains("stays queued"), "{lost}");
    bank_b.signal("CONT");
    // The gateway finishes the payment on its own (the client is gone).
    let started = std::time::Instant::now();
    while !balance_of(&cli).contains("bank_a/123: 997.00 INR") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the gateway never finished the payment"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The resend uses the same id: the stored outcome, not a second payment.
    let resent = cli.ok(&["sync"], "");
    assert!(
        resent.contains("committed (already processed; not paid again)"),
        "{resent}"
    );
    assert_eq!(
        balance_of(&cli),
        "bank_a/123: 997.00 INR (available 997.00 INR)\n"
    );

    // A client killed with SIGKILL in the middle of `sync --watch` (the
    // gateway is down, so it is backing off) keeps its queue.
    gateway.terminate();
    let queued = cli.ok(
        &[
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "4",
            "--txn-id",
            "00000000-0000-4000-8000-000000000004",
        ],
        "",
    );
    assert!(queued.contains("stays queued"), "{queued}");
    let mut syncing = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .arg("--profile")
        .arg(scratch.dir.path().join("profile"))
        .args([
            "sync",
            "--watch",
            "--retry-initial",
            "50ms",
            "--retry-max",
            "100ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(syncing.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert!(
        first_line.contains("still queued; retrying"),
        "{first_line}"
    );
    syncing.kill().unwrap();
    syncing.wait().unwrap();
    let mut args = gateway_args(&scratch, &banks, "10s", "2s");
    args[1] = address.to_string();
    let _gateway = Process::start(env!("CARGO_BIN_EXE_gateway"), &args, &gateway_log);
    cli.ok(
        &["login", "--username", "alice", "--password-stdin"],
        "pass123\n",
    );
    let delivered = cli.ok(&["sync"], "");
    assert!(
        delivered.contains("4.00 INR to bank_b/789: committed"),
        "{delivered}"
    );
    assert_eq!(cli.ok(&["sync"], ""), "no queued payments\n");
    assert_eq!(
        balance_of(&cli),
        "bank_a/123: 993.00 INR (available 993.00 INR)\n"
    );
}

#[test]
fn pay_wait_keeps_retrying_with_backoff_until_the_gateway_answers() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let running = start(&scratch, "2s", "2s");
    let cli = Cli {
        scratch: &scratch,
        gateway: format!("https://{}", running.gateway.address),
    };
    cli.ok(
        &["login", "--username", "alice", "--password-stdin"],
        "pass123\n",
    );
    cli.ok(&["balance"], "");
    // The gateway hangs (SIGSTOP): every attempt times out, the payment stays
    // queued and `--wait` keeps retrying with backoff.
    running.gateway.signal("STOP");
    let mut paying = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .arg("--profile")
        .arg(scratch.dir.path().join("profile"))
        .args([
            "--timeout",
            "300ms",
            "pay",
            "--to",
            "bank_b/789",
            "--amount",
            "2",
            "--wait",
            "--retry-initial",
            "100ms",
            "--retry-max",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(paying.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("still queued; retrying") {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "pay --wait ended early: {seen}"
        );
        seen.push_str(&line);
    }
    running.gateway.signal("CONT");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(paying.wait().unwrap().success());
    assert!(
        rest.contains("2.00 INR to bank_b/789: committed"),
        "{seen}{rest}"
    );
    assert_eq!(
        cli.ok(&["balance"], ""),
        "bank_a/123: 998.00 INR (available 998.00 INR)\n"
    );
}
