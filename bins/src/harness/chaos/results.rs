//! A chaos run's verdict: `results.json` (per invariant: valid, how many
//! things were checked, first and worst violation; the seed, operations by
//! type, faults by kind and target) and the one line the run ends with.
//!
//! The run is valid when every invariant holds. An invariant with nothing
//! to check is valid and says so with a count of 0 (a run too short to make
//! a payment). Every bank's per-transaction states come from its
//! `GetTransactions`, so atomicity and agreement are checked per
//! transaction, as in the simulation.

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

#[cfg(test)]
mod tests {
    use super::*;
    use minipay_simulation::invariants::Invariant;

    fn report(broken: Option<Invariant>) -> ChaosReport {
        let invariants = Invariant::SIX
            .iter()
            .map(|invariant| {
                let mut tally = Tally {
                    checked: 3,
                    ..Tally::default()
                };
                if Some(*invariant) == broken {
                    let found = |detail: &str| Violation {
                        invariant: *invariant,
                        detail: detail.to_owned(),
                    };
                    tally.violations = 2;
                    tally.first = Some(found("b/2 holds 70"));
                    tally.worst = Some((20, found("a/1 holds 80")));
                }
                (*invariant, tally)
            })
            .collect();
        ChaosReport {
            seed: 7,
            payments: 10,
            invariants,
            report_dir: "out".into(),
            ..ChaosReport::default()
        }
    }

    #[test]
    fn a_broken_invariant_makes_the_run_invalid_and_names_its_first_and_worst() {
        let invalid = report(Some(Invariant::Atomicity));
        assert!(!invalid.valid());
        let line = verdict(&invalid);
        assert!(
            line.starts_with("chaos: INVALID — atomicity (2 violations) broken over 10 payments"),
            "{line}"
        );
        let results = json(&invalid, &Analysis::default());
        assert_eq!(results["valid"], false);
        let atomicity = &results["invariants"]["atomicity"];
        assert_eq!(atomicity["valid"], false);
        assert_eq!(atomicity["first"]["detail"], "b/2 holds 70");
        assert_eq!(atomicity["worst"]["detail"], "a/1 holds 80");
        assert_eq!(atomicity["worst"]["magnitude"], "20");
        assert!(results["invariants"]["liveness"]["first"].is_null());
    }

    #[test]
    fn a_valid_run_says_so_in_one_line() {
        let valid = report(None);
        assert!(valid.valid());
        assert_eq!(
            verdict(&valid),
            "chaos: VALID — 6 invariants hold over 10 payments, 0 faults (seed 7); report in out"
        );
        assert!(
            !ChaosReport::default().valid(),
            "nothing checked is not valid"
        );
    }
}
