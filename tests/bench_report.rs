//! `minipay bench` against its own cluster of real processes, its output
//! piped as a script would read it: a row a second in plain lines, a summary
//! whose totals agree with the rows and with `bench.json`, and a report page
//! holding its plots; bad flags are refused before anything starts.
//! Nothing here asserts a timing: the runs last a few seconds, and only
//! counts that hold at any speed are checked.

use std::path::Path;
use std::process::{Command, Output};

/// One per-second row as printed: elapsed, errors, total, rates, percentiles.
#[derive(Debug)]
struct Row {
    errors: u64,
    total: u64,
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minipay"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// The rows under the header: lines whose first column is a time (`1.00s`).
fn rows(stdout: &str) -> Vec<Row> {
    let header = stdout
        .lines()
        .position(|line| line.split_whitespace().next() == Some("elapsed"))
        .unwrap_or_else(|| panic!("no header in:\n{stdout}"));
    let columns: Vec<&str> = stdout
        .lines()
        .nth(header)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(columns[..3], ["elapsed", "errors", "total"]);
    assert!(columns.contains(&"p99(ms)") && columns.contains(&"max(ms)"));
    stdout
        .lines()
        .skip(header + 1)
        .take_while(|line| {
            let first = line.split_whitespace().next().unwrap_or("");
            first
                .strip_suffix('s')
                .is_some_and(|seconds| seconds.parse::<f64>().is_ok())
        })
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), columns.len(), "a row of every column: {line}");
            Row {
                errors: fields[1].parse().unwrap(),
                total: fields[2].parse().unwrap(),
            }
        })
        .collect()
}

/// The count in the summary's `N payments in T s` line.
fn summary_payments(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|line| line.contains(" payments in "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// What every report must show, whatever the load: rows that add up to the
/// summary and to `bench.json`, and a page with its plots. Returns the JSON.
fn check_run(output: &Output, report: &Path) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "piped output is plain lines:\n{stdout:?}"
    );
    let rows = rows(&stdout);
    assert!(rows.len() >= 2, "a row a second:\n{stdout}");
    assert!(rows.windows(2).all(|pair| pair[0].total <= pair[1].total));
    let printed = summary_payments(&stdout);
    assert_eq!(rows.last().unwrap().total, printed, "{stdout}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("bench.json")).unwrap()).unwrap();
    assert_eq!(json["payments"], printed);
    let seconds = json["seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), rows.len());
    assert_eq!(json["seconds_left_out"], 0);
    let sum = |field: &str| -> u64 { seconds.iter().map(|row| row[field].as_u64().unwrap()).sum() };
    assert_eq!(sum("payments"), printed);
    assert_eq!(sum("errors"), json["failed"].as_u64().unwrap());
    assert_eq!(
        sum("errors"),
        rows.iter().map(|row| row.errors).sum::<u64>()
    );
    let outcomes = ["committed", "aborted", "failed"].map(|field| json[field].as_u64().unwrap());
    assert_eq!(outcomes.iter().sum::<u64>(), printed);
    assert_eq!(json["failed"], 0, "{stdout}");
    assert_eq!(json["conserved"], true);
    for percentile in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        assert!(json[percentile].as_f64().unwrap() > 0.0, "{percentile}");
    }
    assert!(json["p50_ms"].as_f64() <= json["max_ms"].as_f64());
    let servers = json["servers"].as_array().unwrap();
    let names: Vec<&str> = servers
        .iter()
        .map(|server| server["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bank_a", "bank_b", "gateway"]);
    for server in servers {
        assert!(
            server["rss_anon_peak_bytes"].as_u64().unwrap() > 0,
            "{server}"
        );
        assert!(server["data_bytes"].as_u64().unwrap() > 0, "{server}");
        assert!(stdout.contains(&format!(
            "{}: RssAnon peak",
            server["name"].as_str().unwrap()
        )));
    }
    assert!(json["data_bytes_total"].as_u64().unwrap() > 0);

    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.matches("<svg").count() >= 2, "the plots");
    for shown in ["Throughput", "p99", "max", "polyline"] {
        assert!(html.contains(shown), "{shown} in the page");
    }
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained"
    );
    json
}

#[test]
fn a_closed_loop_for_a_duration_prints_rows_that_add_up_to_its_summary_and_report() {
    let report = tempfile::tempdir().unwrap();
    let output = bench(&[
        "--local",
        "--clients",
        "4",
        "--accounts",
        "10",
        "--duration",
        "3",
        "--seed",
        "42",
        "--hot-percent",
        "50",
        "--report",
        report.path().to_str().unwrap(),
    ]);
    let json = check_run(&output, report.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("seed 42 (repeat with --seed 42)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("closed loop, 4 clients, 50% of payments into 4 hot accounts"));
    assert_eq!(json["seed"], 42);
    assert_eq!(json["args"]["duration"], 3);
    assert_eq!(json["rate"], serde_json::Value::Null);
    assert_eq!(json["unsent_behind_schedule"], serde_json::Value::Null);
}

#[test]
fn an_open_loop_sends_every_payment_due_or_counts_it_as_behind_schedule() {
    let report = tempfile::tempdir().unwrap();
    let output = bench(&[
        "--local",
        "--clients",
        "4",
        "--accounts",
        "10",
        "--duration",
        "2",
        "--rate",
        "50",
        "--report",
        report.path().to_str().unwrap(),
    ]);
    let json = check_run(&output, report.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("open loop at 50 payments/s, 4 clients"),
        "{stdout}"
    );
    assert!(stdout.contains("latency (from each payment's due time)"));
    assert_eq!(json["rate"], 50);
    // 2 s at 50/s: 100 payments due, each either answered or left unsent.
    let unsent = json["unsent_behind_schedule"].as_u64().unwrap();
    assert_eq!(json["payments"].as_u64().unwrap() + unsent, 100);
    assert!(stdout.contains(&format!("{unsent} payments due were never sent")));
}

#[test]
fn bad_bench_flags_are_refused_before_anything_starts() {
    for (flags, reason) in [
        (&["--rate", "0"][..], "--rate must be between 1 and"),
        (&["--duration", "0"], "--duration must be between 1 and"),
        (&["--payments", "0"], "--payments must be at least 1"),
        (
            &["--hot-percent", "101"],
            "--hot-percent must be at most 100",
        ),
        (&["--hot-set", "0"], "--hot-set must be between 1 and"),
    ] {
        let output = bench(&[&["--local"], flags].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} accepted");
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
        assert!(
            !stderr.contains("starting a local cluster"),
            "{flags:?}: {stderr}"
        );
    }
}
