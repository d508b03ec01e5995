//! `report.html` of a chaos run: the verdict and the invariants' table, then
//! Jepsen's three plots of the payment attempts (raw latency, latency
//! quantiles per second, rate per second) and two of the banks (total money,
//! transactions in doubt), every one with each fault period shaded and
//! labelled by its target. Drawn by [`crate::harness::report`]; this module
//! only turns the run's figures into series.

use std::fmt::Write as _;

use super::ChaosReport;
use super::analysis::{Analysis, quantile};
use super::results::verdict;
use super::samples::Sample;
use crate::harness::report::{Chart, Mark, Series, escape, page};

const COMPLETIONS: [&str; 3] = ["ok", "fail", "info"];

/// The whole page.
pub fn html(report: &ChaosReport, analysis: &Analysis, samples: &[Sample]) -> String {
    let charts = [
        raw_latency(analysis),
        latency_quantiles(analysis),
        rate(analysis),
        total_money(report, samples, analysis),
        in_doubt(samples, analysis),
    ];
    page(
        &format!("minipay chaos, seed {}", report.seed),
        &summary(report, analysis),
        &charts,
    )
}

fn chart(title: &str, y_label: &str, series: Vec<Series>, analysis: &Analysis) -> Chart {
    Chart {
        title: title.to_owned(),
        x_label: "seconds since the start".to_owned(),
        y_label: y_label.to_owned(),
        series,
        bands: analysis.faults.clone(),
        log_y: false,
    }
}

fn raw_latency(analysis: &Analysis) -> Chart {
    let series = COMPLETIONS
        .iter()
        .map(|completion| {
            let mut points = analysis
                .latencies
                .get(completion)
                .map(|kept| kept.kept.clone())
                .unwrap_or_default();
            points.sort_by(|left, right| left.0.total_cmp(&right.0));
            Series {
                name: (*completion).to_owned(),
                mark: Mark::Dots,
                points,
            }
        })
        .collect();
    Chart {
        log_y: true,
        ..chart(
            "Latency of every payment attempt (by when it was invoked)",
            "latency (ms)",
            series,
            analysis,
        )
    }
}

fn latency_quantiles(analysis: &Analysis) -> Chart {
    let mut series: Vec<Series> = ["p50", "p95", "p99", "max"]
        .iter()
        .map(|name| Series {
            name: (*name).to_owned(),
            mark: Mark::Line,
            points: Vec::new(),
        })
        .collect();
    for (second, figures) in &analysis.seconds {
        let mut latencies = figures.latencies_ms.kept.clone();
        let x = *second as f64 + 0.5;
        for (index, wanted) in [0.5, 0.95, 0.99].into_iter().enumerate() {
            if let Some(value) = quantile(&mut latencies, wanted) {
                series[index].points.push((x, value));
            }
        }
        series[3].points.push((x, figures.latency_ms_max));
    }
    Chart {
        log_y: true,
        ..chart(
            "Payment latency quantiles per second (by completion)",
            "latency (ms)",
            series,
            analysis,
        )
    }
}

fn rate(analysis: &Analysis) -> Chart {
    let series = COMPLETIONS
        .iter()
        .map(|completion| Series {
            name: (*completion).to_owned(),
            mark: Mark::Line,
            points: analysis
                .seconds
                .iter()
                .map(|(second, figures)| {
                    let count = match *completion {
                        "ok" => figures.ok,
                        "fail" => figures.fail,
                        _ => figures.info,
                    };
                    (*second as f64 + 0.5, count as f64)
                })
                .collect(),
        })
        .collect();
    chart(
        "Payment attempts completed per second",
        "attempts / s",
        series,
        analysis,
    )
}

/// The banks' total less what they opened with: 0 while nothing is in
/// flight. A sample reads the banks one after another and phase 2 commits
/// at each bank in its own time, so with cross-bank payments in flight it
/// swings either way; after healing it must be 0. (The total itself, near
/// its opening value on an axis from zero, would show no movement.)
fn total_money(report: &ChaosReport, samples: &[Sample], analysis: &Analysis) -> Chart {
    // Plotting only: the money itself is never a float.
    let opened = report.opening_total as f64;
    let apart = samples
        .iter()
        .filter_map(|sample| Some((sample.time, sample.total? as f64 - opened)))
        .collect();
    chart(
        &format!(
            "Total money in the banks' accounts less the {} they opened with \
             (samples where every bank answered)",
            report.opening_total
        ),
        "minor units",
        vec![Series {
            name: "held − opened with".to_owned(),
            mark: Mark::Line,
            points: apart,
        }],
        analysis,
    )
}

fn in_doubt(samples: &[Sample], analysis: &Analysis) -> Chart {
    let mut banks: Vec<&String> = samples
        .iter()
        .flat_map(|sample| sample.in_doubt.keys())
        .collect();
    banks.sort();
    banks.dedup();
    let series = banks
        .into_iter()
        .map(|bank| Series {
            name: bank.clone(),
            mark: Mark::Line,
            points: samples
                .iter()
                .filter_map(|sample| Some((sample.time, *sample.in_doubt.get(bank)? as f64)))
                .collect(),
        })
        .collect();
    chart(
        "Transactions in doubt (holds awaiting a decision), per bank",
        "transactions",
        series,
        analysis,
    )
}

fn summary(report: &ChaosReport, analysis: &Analysis) -> String {
    let mut html = format!("<p><strong>{}</strong></p>\n", escape(&verdict(report)));
    html.push_str(
        "<table><tr><th>invariant</th><th>valid</th><th>checked</th><th>violations</th><th>first</th><th>worst</th></tr>\n",
    );
    for (invariant, tally) in &report.invariants {
        let detail = |violation: Option<&minipay_simulation::invariants::Violation>| {
            violation.map_or(String::from("—"), |violation| escape(&violation.detail))
        };
        let _ = writeln!(
            html,
            "<tr><td>{invariant}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if tally.valid() { "yes" } else { "NO" },
            tally.checked,
            tally.violations,
            detail(tally.first.as_ref()),
            detail(tally.worst.as_ref().map(|(_, worst)| worst)),
        );
    }
    html.push_str("</table>\n");
    let operations: Vec<String> = analysis
        .counts
        .iter()
        .map(|(op_type, count)| format!("{count} {op_type}"))
        .collect();
    let faults: Vec<String> = [
        ("kill", &report.faults.kills),
        ("pause", &report.faults.pauses),
    ]
    .iter()
    .flat_map(|(kind, targets)| {
        targets
            .iter()
            .map(move |(target, count)| format!("{kind} {target} ×{count}"))
    })
    .collect();
    let _ = writeln!(
        html,
        "<p>Operations: {}. Payments: {} sent, {} committed, {} aborted, {} attempts. Faults: {}. \
         Shaded bands are fault periods: a kill until its restart completed, a pause until its resume.</p>",
        operations.join(", "),
        report.payments,
        report.committed,
        report.aborted,
        report.attempts,
        escape(&faults.join(", ")),
    );
    html
}
