//! The bench's figures over time: HDR latency histograms ([`Latencies`]),
//! what the clients saw in the current second ([`Interval`]), one row per
//! second ([`SecondRow`]) and the whole run ([`Timeline`]), and the table
//! those rows are printed as ([`Table`]).
//!
//! It knows nothing of gRPC or of how payments are scheduled: the clients
//! record each answer into the current [`Interval`], and once a second the
//! table's task closes it into a row. Invariants: a histogram's memory is
//! fixed whatever it records (latencies past [`LATENCY_HIGHEST`] count as
//! that); the run keeps at most [`ROWS_MAX`] rows (later ones are printed
//! and counted, not kept); every answer lands in exactly one row.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The smallest latency told apart from zero.
pub const LATENCY_LOWEST: Duration = Duration::from_micros(1);
/// The largest latency recorded as itself; longer ones count as this.
pub const LATENCY_HIGHEST: Duration = Duration::from_secs(60);
/// Significant decimal digits every recorded latency keeps.
const SIGNIFICANT_DIGITS: u8 = 3;
/// The most per-second rows a run keeps for its report (about 28 hours).
pub const ROWS_MAX: usize = 100_000;

/// Latencies in an HDR histogram of microseconds, bounded by
/// [`LATENCY_LOWEST`]..[`LATENCY_HIGHEST`].
#[derive(Clone, Debug)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        let histogram = Histogram::new_with_bounds(
            LATENCY_LOWEST.as_micros() as u64,
            LATENCY_HIGHEST.as_micros() as u64,
            SIGNIFICANT_DIGITS,
        )
        .expect("the latency bounds are valid");
        Latencies { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros);
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The latency `percent` of the recorded ones are at or under, in ms
    /// (`None` when nothing was recorded).
    pub fn percentile_ms(&self, percent: f64) -> Option<f64> {
        assert!((0.0..=100.0).contains(&percent), "percentile {percent}");
        (!self.is_empty()).then(|| micros_to_ms(self.histogram.value_at_percentile(percent)))
    }

    /// The largest latency recorded, in ms (`None` when nothing was).
    pub fn max_ms(&self) -> Option<f64> {
        (!self.is_empty()).then(|| micros_to_ms(self.histogram.max()))
    }

    pub fn add(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms of the same bounds add");
    }

    pub fn reset(&mut self) {
        self.histogram.reset();
    }
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// What the clients saw over one interval (or, merged, the whole run).
#[derive(Clone, Debug, Default)]
pub struct Interval {
    pub committed: u64,
    pub aborted: u64,
    /// Answered with an error other than a refusal for load: the errors.
    pub failed: u64,
    /// Attempts the gateway shed (each then resent); not payments.
    pub refused: u64,
    /// Of each payment, from its intended send time to its final answer.
    pub latencies: Latencies,
    /// Of each shed attempt, from its send to the refusal.
    pub refusal_latencies: Latencies,
}

impl Interval {
    /// Payments answered, whatever the answer.
    pub fn payments(&self) -> u64 {
        self.committed + self.aborted + self.failed
    }

    fn add(&mut self, other: &Interval) {
        self.committed += other.committed;
        self.aborted += other.aborted;
        self.failed += other.failed;
        self.refused += other.refused;
        self.latencies.add(&other.latencies);
        self.refusal_latencies.add(&other.refusal_latencies);
    }

    fn reset(&mut self) {
        self.committed = 0;
        self.aborted = 0;
        self.failed = 0;
        self.refused = 0;
        self.latencies.reset();
        self.refusal_latencies.reset();
    }
}

/// One second of the run (the last row may be shorter).
#[derive(Clone, Debug, Serialize)]
pub struct SecondRow {
    /// Seconds since the load started, at the end of this row's interval.
    pub elapsed_s: f64,
    /// Payments answered in this interval.
    pub payments: u64,
    pub committed: u64,
    pub aborted: u64,
    pub errors: u64,
    pub refused: u64,
    /// Payments answered since the start.
    pub total: u64,
    pub payments_per_sec: f64,
    pub payments_per_sec_cumulative: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The rows so far and the whole run merged.
#[derive(Debug, Default)]
pub struct Timeline {
    pub rows: Vec<SecondRow>,
    /// Rows printed but not kept, past [`ROWS_MAX`].
    pub rows_left_out: u64,
    pub whole: Interval,
    previous_elapsed: Duration,
}

impl Timeline {
    /// Closes `interval` at `elapsed` into a row (kept if there is room),
    /// merges it into the whole run and empties it for reuse.
    pub fn close(&mut self, interval: &mut Interval, elapsed: Duration) -> SecondRow {
        assert!(elapsed >= self.previous_elapsed, "time went backwards");
        let length = (elapsed - self.previous_elapsed).as_secs_f64();
        self.whole.add(interval);
        let total = self.whole.payments();
        let rate = |count: u64, seconds: f64| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        let row = SecondRow {
            elapsed_s: elapsed.as_secs_f64(),
            payments: interval.payments(),
            committed: interval.committed,
            aborted: interval.aborted,
            errors: interval.failed,
            refused: interval.refused,
            total,
            payments_per_sec: rate(interval.payments(), length),
            payments_per_sec_cumulative: rate(total, elapsed.as_secs_f64()),
            p50_ms: interval.latencies.percentile_ms(50.0),
            p95_ms: interval.latencies.percentile_ms(95.0),
            p99_ms: interval.latencies.percentile_ms(99.0),
            max_ms: interval.latencies.max_ms(),
        };
        if self.rows.len() < ROWS_MAX {
            self.rows.push(row.clone());
        } else {
            self.rows_left_out += 1;
        }
        self.previous_elapsed = elapsed;
        interval.reset();
        row
    }
}

/// Where the rows are printed: plain lines, or, on a terminal, lines with a
/// status line redrawn beneath them between rows.
pub struct Table {
    out: Box<dyn Write + Send>,
    terminal: bool,
}

/// Column headings, each as wide as its column below.
const HEADER: &str =
    "  elapsed  errors     total  pay/s(inst)   pay/s(cum)  p50(ms)  p95(ms)  p99(ms)  max(ms)";

impl Table {
    /// Rows on stdout, or on stderr when stdout carries `--json`.
    pub fn new(to_stderr: bool) -> Table {
        if to_stderr {
            let stream = std::io::stderr();
            Table {
                terminal: stream.is_terminal(),
                out: Box::new(stream),
            }
        } else {
            let stream = std::io::stdout();
            Table {
                terminal: stream.is_terminal(),
                out: Box::new(stream),
            }
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// A line of its own (the seed, say), above the table.
    pub fn note(&mut self, text: &str) {
        self.line(text);
    }

    pub fn header(&mut self) {
        self.line(HEADER);
    }

    pub fn row(&mut self, row: &SecondRow) {
        self.line(&format_row(row));
    }

    /// Redraws the status line (terminals only; piped output gets none).
    pub fn status(&mut self, text: &str) {
        if self.terminal {
            let _ = write!(self.out, "\r\x1b[2K{text}");
            let _ = self.out.flush();
        }
    }

    fn line(&mut self, text: &str) {
        let clear = if self.terminal { "\r\x1b[2K" } else { "" };
        let _ = writeln!(self.out, "{clear}{text}");
        let _ = self.out.flush();
    }
}

/// One row under [`HEADER`]; a percentile of a second with no answer is `-`.
pub fn format_row(row: &SecondRow) -> String {
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |ms| format!("{ms:.1}"));
    format!(
        "{:>8.2}s {:>7} {:>9} {:>12.1} {:>12.1} {:>8} {:>8} {:>8} {:>8}",
        row.elapsed_s,
        row.errors,
        row.total,
        row.payments_per_sec,
        row.payments_per_sec_cumulative,
        ms(row.p50_ms),
        ms(row.p95_ms),
        ms(row.p99_ms),
        ms(row.max_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(committed: u64, failed: u64, latencies_ms: &[u64]) -> Interval {
        let mut interval = Interval {
            committed,
            failed,
            ..Interval::default()
        };
        for &ms in latencies_ms {
            interval.latencies.record(Duration::from_millis(ms));
        }
        interval
    }

    #[test]
    fn percentiles_keep_three_digits_and_the_max() {
        let mut latencies = Latencies::new();
        for ms in 1..=1000 {
            latencies.record(Duration::from_millis(ms));
        }
        let close = |value: Option<f64>, expected: f64| {
            let value = value.unwrap();
            assert!(
                (value - expected).abs() <= expected / 1000.0,
                "{value} vs {expected}"
            );
        };
        close(latencies.percentile_ms(50.0), 500.0);
        close(latencies.percentile_ms(99.0), 990.0);
        close(latencies.max_ms(), 1000.0);
        assert_eq!(Latencies::new().percentile_ms(50.0), None);
        assert_eq!(Latencies::new().max_ms(), None);
    }

    #[test]
    fn latencies_out_of_range_are_clamped_not_lost() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(3600));
        assert_eq!(latencies.len(), 2);
        let max = latencies.max_ms().unwrap();
        assert!((max - 60_000.0).abs() <= 60.0, "{max}");
    }

    #[test]
    fn rows_add_up_to_the_whole_run() {
        let mut timeline = Timeline::default();
        let mut current = interval(10, 1, &[5, 7, 9]);
        let first = timeline.close(&mut current, Duration::from_secs(1));
        assert_eq!((first.payments, first.errors, first.total), (11, 1, 11));
        assert_eq!(current.payments(), 0, "the interval is emptied");
        assert!(current.latencies.is_empty());
        let empty = timeline.close(&mut current, Duration::from_secs(2));
        assert_eq!((empty.payments, empty.total, empty.p99_ms), (0, 11, None));
        let mut last = interval(4, 0, &[20]);
        let last = timeline.close(&mut last, Duration::from_millis(2500));
        assert_eq!(last.total, 15);
        assert!(
            (last.payments_per_sec - 8.0).abs() < 1e-9,
            "4 in half a second"
        );
        assert!((last.payments_per_sec_cumulative - 6.0).abs() < 1e-9);
        assert_eq!(
            timeline.rows.iter().map(|row| row.payments).sum::<u64>(),
            15
        );
        assert_eq!(timeline.whole.payments(), 15);
        assert_eq!(timeline.whole.latencies.len(), 4);
    }

    #[test]
    fn rows_line_up_under_the_header() {
        let mut timeline = Timeline::default();
        let row = timeline.close(&mut interval(812, 0, &[4]), Duration::from_secs(1));
        let line = format_row(&row);
        assert_eq!(line.len(), HEADER.len(), "{line}\n{HEADER}");
        assert_eq!(
            line.split_whitespace().count(),
            HEADER.split_whitespace().count()
        );
        assert!(line.trim_start().starts_with("1.00s"));
    }
}
