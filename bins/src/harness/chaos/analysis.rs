//! A chaos run's `history.jsonl` read back, one line at a time, into what
//! the results and the plots need: operations counted by type, each payment
//! attempt's latency (invoke to completion, by how it completed), per-second
//! rates and latency quantiles, and the fault periods (a kill until its
//! restart, a pause until its resume) labelled by their target.
//!
//! Memory is bounded whatever the run's length: at most
//! [`LATENCY_DOTS_MAX`] latencies of each completion type and
//! [`LATENCIES_PER_SECOND_MAX`] of each second are kept, chosen uniformly
//! (reservoir sampling, seeded, so the same history gives the same plots);
//! each second's maximum and counts are exact.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::OpType;
use crate::harness::report::Band;

pub const LATENCY_DOTS_MAX: usize = 20_000;
pub const LATENCIES_PER_SECOND_MAX: usize = 2_048;

/// At most `max` items, each of those offered equally likely to be kept.
#[derive(Clone, Debug, Default)]
pub struct Reservoir<T> {
    pub kept: Vec<T>,
    offered: u64,
}

impl<T> Reservoir<T> {
    fn offer(&mut self, item: T, max: usize, rng: &mut StdRng) {
        assert!(max > 0);
        self.offered += 1;
        if self.kept.len() < max {
            self.kept.push(item);
        } else {
            let slot = rng.random_range(0..self.offered);
            if let Some(kept) = self.kept.get_mut(slot as usize) {
                *kept = item;
            }
        }
        assert!(self.kept.len() <= max);
    }
}

/// One second of payment attempts, by when they completed.
#[derive(Clone, Debug, Default)]
pub struct Second {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub latencies_ms: Reservoir<f64>,
    pub latency_ms_max: f64,
}

#[derive(Debug, Default)]
pub struct Analysis {
    /// Operations of every process, by type.
    pub counts: BTreeMap<&'static str, u64>,
    /// Payment attempts: (invoked at, latency in ms), by completion type.
    pub latencies: BTreeMap<&'static str, Reservoir<(f64, f64)>>,
    /// Payment attempts by the second they completed in.
    pub seconds: BTreeMap<u64, Second>,
    pub faults: Vec<Band>,
    /// The last operation's time.
    pub end: f64,
}

/// An invoke not yet completed: when, and its function.
type Pending = (f64, String);

/// Reads the history at `path`. A completion without an earlier invoke of
/// the same process, or a line that is not an operation, is an error: the
/// history is not well formed.
pub fn read(path: &Path) -> anyhow::Result<Analysis> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut analysis = Analysis::default();
    let mut rng = StdRng::seed_from_u64(0);
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut faults_open: BTreeMap<String, (f64, String)> = BTreeMap::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        let op: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", path.display(), number + 1))?;
        let (Some(time), Some(op_type), Some(f)) = (
            op["time"].as_f64(),
            op["type"].as_str().and_then(OpType::parse),
            op["f"].as_str(),
        ) else {
            bail!("{} line {}: not an operation", path.display(), number + 1);
        };
        let process = op["process"].to_string();
        *analysis.counts.entry(op_type.name()).or_default() += 1;
        analysis.end = analysis.end.max(time);
        if op_type == OpType::Invoke {
            if let Some(earlier) = pending.insert(process.clone(), (time, f.to_owned())) {
                bail!(
                    "{} line {}: {process} invoked {f} with {} still open",
                    path.display(),
                    number + 1,
                    earlier.1
                );
            }
        } else {
            let Some((invoked, invoked_f)) = pending.remove(&process) else {
                bail!(
                    "{} line {}: {process} completed {f} without an invoke",
                    path.display(),
                    number + 1
                );
            };
            assert_eq!(invoked_f, f, "a completion is of the invoked function");
            if f == "pay" {
                analysis.completed_payment(invoked, time, op_type, &mut rng);
            }
        }
        if process == "\"nemesis\"" {
            let target = op["value"].as_str().unwrap_or("?").to_owned();
            analysis.nemesis(&mut faults_open, op_type, f, target, time);
        }
    }
    for (target, (start, kind)) in faults_open {
        analysis.faults.push(Band {
            start,
            end: analysis.end,
            label: format!("{kind} {target}"),
        });
    }
    Ok(analysis)
}

impl Analysis {
    fn completed_payment(&mut self, invoked: f64, time: f64, op_type: OpType, rng: &mut StdRng) {
        let latency_ms = (time - invoked).max(0.0) * 1_000.0;
        self.latencies.entry(op_type.name()).or_default().offer(
            (invoked, latency_ms),
            LATENCY_DOTS_MAX,
            rng,
        );
        let second = self.seconds.entry(time.max(0.0) as u64).or_default();
        match op_type {
            OpType::Ok => second.ok += 1,
            OpType::Fail => second.fail += 1,
            OpType::Info => second.info += 1,
            OpType::Invoke => unreachable!("a completion"),
        }
        second
            .latencies_ms
            .offer(latency_ms, LATENCIES_PER_SECOND_MAX, rng);
        second.latency_ms_max = second.latency_ms_max.max(latency_ms);
    }

    /// A fault opens at a kill's or a pause's invoke and closes when its
    /// restart or resume has completed.
    fn nemesis(
        &mut self,
        open: &mut BTreeMap<String, (f64, String)>,
        op_type: OpType,
        f: &str,
        target: String,
        time: f64,
    ) {
        match (f, op_type) {
            ("kill" | "pause", OpType::Invoke) => {
                open.insert(target, (time, f.to_owned()));
            }
            ("restart" | "resume", OpType::Info) => {
                if let Some((start, kind)) = open.remove(&target) {
                    self.faults.push(Band {
                        start,
                        end: time,
                        label: format!("{kind} {target}"),
                    });
                }
            }
            _ => {}
        }
    }
}

/// The `quantile` (0 to 1) of `values`, sorted in place; nearest rank.
pub fn quantile(values: &mut [f64], quantile: f64) -> Option<f64> {
    assert!((0.0..=1.0).contains(&quantile));
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservoir_keeps_at_most_its_bound_and_everything_below_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut small = Reservoir::default();
        for item in 0..5 {
            small.offer(item, 10, &mut rng);
        }
        assert_eq!(small.kept, [0, 1, 2, 3, 4]);
        let mut large = Reservoir::default();
        for item in 0..10_000 {
            large.offer(item, 10, &mut rng);
        }
        assert_eq!(large.kept.len(), 10);
        assert!(
            large.kept.iter().any(|item| *item >= 10),
            "later items get in"
        );
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&mut values, 0.5), Some(3.0));
        assert_eq!(quantile(&mut values, 1.0), Some(5.0));
        assert_eq!(quantile(&mut values, 0.0), Some(1.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn faults_become_bands_and_completions_need_invokes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let lines = [
            r#"{"time":0.1,"process":0,"type":"invoke","f":"pay"}"#,
            r#"{"time":0.2,"process":"nemesis","type":"invoke","f":"pause","value":"bank_a"}"#,
            r#"{"time":0.2,"process":"nemesis","type":"info","f":"pause","value":"bank_a"}"#,
            r#"{"time":0.3,"process":0,"type":"ok","f":"pay","value":"committed"}"#,
            r#"{"time":0.9,"process":"nemesis","type":"invoke","f":"resume","value":"bank_a"}"#,
            r#"{"time":0.9,"process":"nemesis","type":"info","f":"resume","value":"bank_a"}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let analysis = read(&path).unwrap();
        assert_eq!(analysis.counts["invoke"], 3);
        assert_eq!(analysis.counts["info"], 2);
        assert_eq!(analysis.faults.len(), 1);
        assert_eq!(analysis.faults[0].label, "pause bank_a");
        assert_eq!(
            (analysis.faults[0].start, analysis.faults[0].end),
            (0.2, 0.9)
        );
        let (invoked, latency_ms) = analysis.latencies["ok"].kept[0];
        assert_eq!(invoked, 0.1);
        assert!((latency_ms - 200.0).abs() < 1e-6);

        std::fs::write(&path, lines[3]).unwrap();
        let error = read(&path).unwrap_err();
        assert!(error.to_string().contains("without an invoke"), "{error}");
    }
}
