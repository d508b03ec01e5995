//! A chaos run's verdict: `results.json` (per invariant: valid, how many
//! things were checked, first and worst violation; the seed, operations by
//! type, faults by kind and target) and the one line the run ends with.
//!
//! The run is valid when every invariant holds. An invariant with nothing
//! to check is valid and says so with a count of 0: the chaos run cannot see
//! the banks' per-transaction states, so agreement is only checked where the
//! simulation runs it; here the balances (atomicity) cover it.

use serde_json::json;

use super::ChaosReport;
use super::analysis::Analysis;
use minipay_simulation::invariants::{Tally, Violation};

fn violation_json(violation: Option<&Violation>, magnitude: Option<u128>) -> serde_json::Value {
    match violation {
        None => serde_json::Value::Null,
        Some(violation) => json!({
            "detail": violation.detail,
            "magnitude": magnitude.map(|magnitude| magnitude.to_string()),
        }),
    }
}

fn tally_json(tally: &Tally) -> serde_json::Value {
    json!({
        "valid": tally.valid(),
        "count": tally.checked,
        "violations": tally.violations,
        "first": violation_json(tally.first.as_ref(), None),
        "worst": violation_json(
            tally.worst.as_ref().map(|(_, worst)| worst),
            tally.worst.as_ref().map(|(magnitude, _)| *magnitude),
        ),
    })
}

/// The contents of `results.json`.
pub fn json(report: &ChaosReport, analysis: &Analysis) -> serde_json::Value {
    let invariants: serde_json::Map<String, serde_json::Value> = report
        .invariants
        .iter()
        .map(|(invariant, tally)| (invariant.to_string(), tally_json(tally)))
        .collect();
    json!({
        "valid": report.valid(),
        "seed": report.seed,
        "invariants": invariants,
        "operations": analysis.counts,
        "payments": {
            "sent": report.payments,
            "committed": report.committed,
            "aborted": report.aborted,
            "attempts": report.attempts,
        },
        "faults": {
            "kill": report.faults.kills,
            "pause": report.faults.pauses,
        },
        "stops_in_reused_segments": report.faults.stops_in_reused_segments,
        "seconds": report.seconds,
    })
}

/// The line a run ends with.
pub fn verdict(report: &ChaosReport) -> String {
    let faults: u32 =
        report.faults.kills.values().sum::<u32>() + report.faults.pauses.values().sum::<u32>();
    let seen = format!(
        "over {} payments, {faults} faults (seed {}); report in {}",
        report.payments,
        report.seed,
        report.report_dir.display()
    );
    let broken: Vec<String> = report
        .invariants
        .iter()
        .filter(|(_, tally)| !tally.valid())
        .map(|(invariant, tally)| format!("{invariant} ({} violations)", tally.violations))
        .collect();
    if !broken.is_empty() {
        return format!("chaos: INVALID — {} broken {seen}", broken.join(", "));
    }
    let unchecked: Vec<String> = report
        .invariants
        .iter()
        .filter(|(_, tally)| tally.checked == 0)
        .map(|(invariant, _)| invariant.to_string())
        .collect();
    let held = report.invariants.len() - unchecked.len();
    if unchecked.is_empty() {
        format!("chaos: VALID — {held} invariants hold {seen}")
    } else {
        format!(
            "chaos: VALID — {held} invariants hold, {} had nothing to check ({}) {seen}",
            unchecked.len(),
            unchecked.join(", ")
        )
    }
}
