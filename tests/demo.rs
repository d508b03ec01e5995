//! `minipay demo`, the README's first command, runs to the end and tells
//! the story it promises: payments, a retry paid once, a refusal, an outage
//! with a queued payment, a bank killed after voting YES, money conserved.

use std::process::Command;

#[test]
fn the_demo_runs_end_to_end_and_conserves_money() {
    let output = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "100.00 INR to bank_b/456: committed",
        "committed (already processed; not paid again)",
        "aborted: insufficient funds in account 456",
        "stays queued",
        "5.00 INR to bank_b/456: committed",
        "bank_b voted YES and was killed (SIGKILL)",
        "20.00 INR to bank_b/456: committed",
        "bank_b/456: 375.00 INR (available 375.00 INR)",
        "total before: 1,300.00 INR, after: 1,300.00 INR",
        "every process it started is stopped",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn the_load_generator_pays_concurrently_and_checks_conservation() {
    let output = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args([
            "bench",
            "--local",
            "--clients",
            "4",
            "--payments",
            "40",
            "--accounts",
            "10",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["committed"], 40);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["conserved"], true);
    assert_eq!(report["total_before"], report["total_after"]);
    assert!(report["payments_per_sec"].as_f64().unwrap() > 0.0);
    let refused = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(["bench", "--local", "--clients", "0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--clients must be between 1 and 1024")
    );
}
