//! The chaos test with real processes (see `bins/src/harness/chaos.rs` and
//! TESTING.md): 3 banks and a gateway over mTLS, concurrent clients
//! retrying payments, random processes SIGKILLed and restarted or paused
//! with SIGSTOP and continued, then healing and every invariant checked
//! from the servers' answers; and the report the run leaves (history,
//! results, page). 20 kills and 5 pauses here; `MINIPAY_CHAOS_KILLS` and
//! `MINIPAY_CHAOS_PAUSES` for more, or `minipay chaos --kills 500`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minipay::harness::chaos::{ChaosOptions, ChaosReport, run};
use minipay::harness::cluster::Servers;

fn from_env(name: &str, default: u32) -> u32 {
    std::env::var(name).map_or(default, |text| {
        text.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_pausing_random_processes_under_load_breaks_no_invariant_and_the_report_says_so()
 {
    let kills = from_env("MINIPAY_CHAOS_KILLS", 20);
    let pauses = from_env("MINIPAY_CHAOS_PAUSES", 5);
    let seed = std::env::var("MINIPAY_CHAOS_SEED")
        .map_or_else(|_| rand::random(), |text| text.parse().expect("a seed"));
    println!("chaos seed {seed} (MINIPAY_CHAOS_SEED={seed} repeats the fault schedule)");
    let dir = tempfile::tempdir().unwrap();
    let servers = Servers::Binaries {
        bank: PathBuf::from(env!("CARGO_BIN_EXE_bank")),
        gateway: PathBuf::from(env!("CARGO_BIN_EXE_gateway")),
    };
    // Small WAL segments and frequent snapshots: the servers rotate,
    // checkpoint and reuse segments while they are being killed.
    let options = ChaosOptions {
        kills,
        pauses,
        seed,
        report_dir: dir.path().join("report"),
        heal_timeout: Duration::from_secs(90),
        server_flags: ChaosOptions::wal_flags(Some(64 << 10), Some(100)),
    };
    let report = match run(servers, dir.path(), &options).await {
        Ok(report) if report.valid() => report,
        Ok(report) => {
            let kept = dir.keep();
            panic!(
                "{}\nlogs and data kept in {}",
                report.verdict(),
                kept.display()
            );
        }
        Err(error) => {
            let kept = dir.keep();
            panic!("{error:#}\nlogs and data kept in {}", kept.display());
        }
    };
    println!("{report}\n{}", report.verdict());
    assert_eq!(report.faults.kills.values().sum::<u32>(), kills);
    assert_eq!(report.faults.pauses.values().sum::<u32>(), pauses);
    assert!(report.committed > 0, "{report}");
    assert!(
        report.attempts > report.payments,
        "the faults forced retries: {report}"
    );
    let nemesis = history_is_well_formed(&options.report_dir.join("history.jsonl"));
    results_hold(&options.report_dir.join("results.json"), &report);
    page_shows_every_fault(&options.report_dir.join("report.html"), &nemesis);
}

/// Every line is an operation; every completion follows an invoke of the
/// same process and function; every kill is followed by its restart and
/// every pause by its resume. Returns the nemesis's completed operations
/// as (function, target).
fn history_is_well_formed(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut nemesis = Vec::new();
    let mut payments_ok = 0;
    for line in text.lines() {
        let op: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(op["time"].as_f64().is_some(), "{line}");
        let process = op["process"].to_string();
        let f = op["f"].as_str().unwrap().to_owned();
        match op["type"].as_str().unwrap() {
            "invoke" => assert!(open.insert(process, f).is_none(), "{line}"),
            "ok" | "fail" | "info" => {
                assert_eq!(open.remove(&process), Some(f.clone()), "{line}");
                if process == "\"nemesis\"" {
                    nemesis.push((f, op["value"].as_str().unwrap().to_owned()));
                } else if f == "pay" && op["type"] == "ok" {
                    payments_ok += 1;
                    assert!(op["txn_id"].is_string(), "{line}");
                }
            }
            other => panic!("type {other}: {line}"),
        }
    }
    assert!(payments_ok > 0);
    let kinds: Vec<&str> = nemesis.iter().map(|(f, _)| f.as_str()).collect();
    for (fault, ending) in [("kill", "restart"), ("pause", "resume")] {
        let started = kinds.iter().filter(|kind| **kind == fault).count();
        let ended = kinds.iter().filter(|kind| **kind == ending).count();
        assert!(started > 0, "no {fault} in the history");
        assert_eq!(started, ended, "every {fault} has its {ending}");
    }
    for pair in nemesis.chunks(2) {
        let expected_next = match pair[0].0.as_str() {
            "kill" => "restart",
            "pause" => "resume",
            other => panic!("{other} opens no fault"),
        };
        assert_eq!(pair[1].0, expected_next);
        assert_eq!(pair[1].1, pair[0].1, "the same target");
    }
    nemesis
}

fn results_hold(path: &Path, report: &ChaosReport) {
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(results["valid"], true);
    assert_eq!(results["seed"], report.seed);
    for invariant in [
        "conservation",
        "atomicity",
        "exactly-once",
        "durability",
        "liveness",
        "agreement",
    ] {
        let tally = &results["invariants"][invariant];
        assert_eq!(tally["valid"], true, "{invariant}: {tally}");
        // Every invariant had something to check: agreement too, from each
        // bank's GetTransactions against the gateway's decisions.
        assert!(tally["count"].as_u64() > Some(0), "{invariant}: {tally}");
        assert!(tally["first"].is_null() && tally["worst"].is_null());
    }
    assert!(results["operations"]["invoke"].as_u64() > Some(0));
    assert!(results["faults"]["kill"].is_object());
    assert!(results["faults"]["pause"].is_object());
}

fn page_shows_every_fault(path: &Path, nemesis: &[(String, String)]) {
    let html = std::fs::read_to_string(path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 5, "five charts");
    for fetching in [" src=", " href=", "url(", "@import"] {
        assert!(!html.contains(fetching), "nothing fetched from elsewhere");
    }
    for (f, target) in nemesis {
        if f == "kill" || f == "pause" {
            let label = format!("{f} {target}");
            assert!(html.contains(&label), "{label} labelled");
        }
    }
}
