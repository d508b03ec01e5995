//! `minipay bench --report DIR`: the run written down as `DIR/bench.json`
//! (the flags, then every figure of the [`BenchReport`], per-second rows
//! included) and `DIR/report.html`, a self-contained page with a summary
//! table and plots of throughput and latency percentiles over time.
//!
//! It only reads a finished report; the plots are [`crate::harness::report`]'s.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::{BenchArgs, BenchReport, SecondRow};
use crate::harness::report::{Chart, Mark, Series, escape, page};

/// The JSON file's name in the report directory.
pub const JSON: &str = "bench.json";
/// The HTML page's name in the report directory.
pub const HTML: &str = "report.html";

/// `bench.json`: the flags, the summary's fields, then the rows.
#[derive(Serialize)]
struct BenchFile<'a> {
    args: &'a BenchArgs,
    #[serde(flatten)]
    report: &'a BenchReport,
    seconds: &'a [SecondRow],
}

/// Writes `bench.json` and `report.html` into `dir` (which exists).
pub fn write(dir: &Path, args: &BenchArgs, report: &BenchReport) -> anyhow::Result<()> {
    let file = BenchFile {
        args,
        report,
        seconds: &report.seconds,
    };
    let json = serde_json::to_string_pretty(&file)?;
    std::fs::write(dir.join(JSON), json + "\n")
        .with_context(|| format!("write {}", dir.join(JSON).display()))?;
    std::fs::write(dir.join(HTML), html(report))
        .with_context(|| format!("write {}", dir.join(HTML).display()))?;
    Ok(())
}

/// The page: what ran, the whole-run figures, then the plots.
pub fn html(report: &BenchReport) -> String {
    page("minipay bench", &summary(report), &charts(report))
}

/// `value` of each row that has one, against the row's time.
fn points(report: &BenchReport, value: impl Fn(&SecondRow) -> Option<f64>) -> Vec<(f64, f64)> {
    report
        .seconds
        .iter()
        .filter_map(|row| Some((row.elapsed_s, value(row)?)))
        .collect()
}

fn series(name: &str, mark: Mark, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_owned(),
        mark,
        points,
    }
}

/// Throughput and latency percentiles over time, and errors and refusals
/// when there were any.
fn charts(report: &BenchReport) -> Vec<Chart> {
    let over_time = |title: &str, y_label: &str, series: Vec<Series>, log_y: bool| Chart {
        title: title.to_owned(),
        x_label: "seconds since the start".to_owned(),
        y_label: y_label.to_owned(),
        series,
        bands: Vec::new(),
        log_y,
    };
    let throughput = vec![
        series(
            "that second",
            Mark::Line,
            points(report, |row| Some(row.payments_per_sec)),
        ),
        series(
            "since the start",
            Mark::Line,
            points(report, |row| Some(row.payments_per_sec_cumulative)),
        ),
    ];
    let latency = vec![
        series("p50", Mark::Line, points(report, |row| row.p50_ms)),
        series("p95", Mark::Line, points(report, |row| row.p95_ms)),
        series("p99", Mark::Line, points(report, |row| row.p99_ms)),
        series("max", Mark::Line, points(report, |row| row.max_ms)),
    ];
    let mut charts = vec![
        over_time("Throughput", "payments/s", throughput, false),
        over_time(
            "Latency of each second's payments",
            "ms (log scale)",
            latency,
            true,
        ),
    ];
    if report.failed > 0 || report.refused > 0 {
        let errors = vec![
            series(
                "errors",
                Mark::Dots,
                points(report, |row| Some(row.errors as f64)),
            ),
            series(
                "refused for load (resent)",
                Mark::Dots,
                points(report, |row| Some(row.refused as f64)),
            ),
        ];
        charts.push(over_time(
            "Errors and refusals",
            "per second",
            errors,
            false,
        ));
    }
    charts
}

fn summary(report: &BenchReport) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("load", report.load_shape()),
        ("seed", report.seed.to_string()),
        (
            "payments",
            format!("{} in {:.2} s", report.payments, report.elapsed_s),
        ),
        ("payments/s", format!("{:.1}", report.payments_per_sec)),
        (
            "committed / aborted / failed",
            format!(
                "{} / {} / {}",
                report.committed, report.aborted, report.failed
            ),
        ),
        ("refused for load (resent)", report.refused.to_string()),
        (
            "latency p50 / p95 / p99 / p999 / max",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms",
                report.p50_ms, report.p95_ms, report.p99_ms, report.p999_ms, report.max_ms
            ),
        ),
    ];
    if let Some(unsent) = report.unsent_behind_schedule {
        rows.push(("due but never sent at the end", unsent.to_string()));
    }
    for server in &report.servers {
        let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64);
        rows.push((
            "server",
            format!(
                "{}: RssAnon peak {}, data on disk {} ({} allocated)",
                server.name,
                mib(server.rss_anon_peak_bytes),
                server.data_bytes.map_or("-".to_owned(), mib),
                server.data_allocated_bytes.map_or("-".to_owned(), mib)
            ),
        ));
    }
    let conserved = if report.conserved {
        "conserved"
    } else {
        "NOT CONSERVED"
    };
    rows.push(("total of all balances", conserved.to_owned()));
    let mut html = String::from("<table>\n");
    for (name, value) in rows {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    html.push_str("</table>\n");
    if report.rate.is_some() {
        html.push_str(
            "<p>Open loop: each payment's latency runs from the time it was due, so a \
             backlog shows as latency.</p>\n",
        );
    }
    if report.seconds_left_out > 0 {
        let _ = writeln!(
            html,
            "<p>The plots stop after {} rows; {} later rows were printed but not kept.</p>",
            report.seconds.len(),
            report.seconds_left_out
        );
    }
    html
}
