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

use super::{BenchArgs, BenchReport};
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
    seconds: &'a [super::SecondRow],
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

fn charts(report: &BenchReport) -> Vec<Chart> {
    let points = |value: &dyn Fn(&super::SecondRow) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .seconds
            .iter()
            .filter_map(|row| Some((row.elapsed_s, value(row)?)))
            .collect()
    };
    let line = |name: &str, points: Vec<(f64, f64)>| Series {
        name: name.to_owned(),
        mark: Mark::Line,
        points,
    };
    let throughput = Chart {
        title: "Throughput".to_owned(),
        x_label: "seconds since the start".to_owned(),
        y_label: "payments/s".to_owned(),
        series: vec![
            line("that second", points(&|row| Some(row.payments_per_sec))),
            line(
                "since the start",
                points(&|row| Some(row.payments_per_sec_cumulative)),
            ),
        ],
        bands: Vec::new(),
        log_y: false,
    };
    let latency = Chart {
        title: "Latency of each second's payments".to_owned(),
        x_label: "seconds since the start".to_owned(),
        y_label: "ms (log scale)".to_owned(),
        series: vec![
            line("p50", points(&|row| row.p50_ms)),
            line("p95", points(&|row| row.p95_ms)),
            line("p99", points(&|row| row.p99_ms)),
            line("max", points(&|row| row.max_ms)),
        ],
        bands: Vec::new(),
        log_y: true,
    };
    let mut charts = vec![throughput, latency];
    if report.failed > 0 || report.refused > 0 {
        charts.push(Chart {
            title: "Errors and refusals".to_owned(),
            x_label: "seconds since the start".to_owned(),
            y_label: "per second".to_owned(),
            series: vec![
                Series {
                    name: "errors".to_owned(),
                    mark: Mark::Dots,
                    points: points(&|row| Some(row.errors as f64)),
                },
                Series {
                    name: "refused for load (resent)".to_owned(),
                    mark: Mark::Dots,
                    points: points(&|row| Some(row.refused as f64)),
                },
            ],
            bands: Vec::new(),
            log_y: false,
        });
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
