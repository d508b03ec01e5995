//! Durability across `kill -9`: a real `minipay wal bench` process appends
//! from many writers and logs each acknowledgement; it is killed at a random
//! moment, and every acknowledged record must come back intact on recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minipay::wal_tools::{BENCH_KIND, decode_bench_payload};
use rand::{Rng, SeedableRng};
use wal::{Lsn, Options, Wal};

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn acknowledged(ack_log: &Path) -> BTreeSet<(u32, u64)> {
    let text = std::fs::read_to_string(ack_log).unwrap_or_default();
    // Only whole lines: each is written by one write call, so a line is
    // either complete or absent.
    text.lines()
        .filter_map(|line| {
            let (writer, seq) = line.split_once(' ')?;
            Some((writer.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

/// Polls the ack log until it holds `lines` acknowledgements, or the
/// process exits, or a generous bound passes.
fn wait_for_acks(child: &mut Child, ack_log: &Path, lines: usize) {
    let started = Instant::now();
    while acknowledged(ack_log).len() < lines {
        assert!(
            child.try_wait().unwrap().is_none(),
            "bench exited before the kill"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn recovered_records(dir: &Path) -> BTreeMap<(u32, u64), bool> {
    let recovered = Wal::open(dir, Options::default()).expect("recovery after kill -9");
    let mut records = BTreeMap::new();
    recovered
        .wal
        .replay(Lsn::FIRST, |record| {
            assert_eq!(record.kind, BENCH_KIND);
            let bench = decode_bench_payload(record.payload).expect("a bench payload");
            let previous = records.insert((bench.writer, bench.seq), bench.valid);
            assert!(previous.is_none(), "record {bench:?} appears twice");
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap();
    records
}

#[test]
fn every_acknowledged_append_survives_kill_9_at_random_moments() {
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rounds = [
        (1, false),
        (4, false),
        (16, false),
        (64, false),
        (16, true),
        (256, true),
    ];
    for (round, (writers, use_async)) in rounds.into_iter().enumerate() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("wal");
        let ack_log = scratch.path().join("acks");
        let child = Command::new(env!("CARGO_BIN_EXE_minipay"))
            .args(["wal", "bench"])
            .arg(&dir)
            .args([
                "--writers",
                &writers.to_string(),
                "--records",
                "1000000",
                "--size",
                "200",
            ])
            .args(["--segment-size", "262144"])
            .arg("--ack-log")
            .arg(&ack_log)
            .args(use_async.then_some("--async"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start minipay wal bench");
        let mut child = Killed(child);
        let target = rng.random_range(1..3000);
        wait_for_acks(&mut child.0, &ack_log, target);
        child.0.kill().expect("kill -9");
        child.0.wait().unwrap();
        let acked = acknowledged(&ack_log);
        let records = recovered_records(&dir);
        for key in &acked {
            assert_eq!(
                records.get(key),
                Some(&true),
                "seed {seed} round {round}: lost {key:?}"
            );
        }
        // Each writer appends in order and waits: what survives of it is a
        // gap-free prefix of its sequence.
        for writer in 0..writers {
            let seqs: Vec<u64> = records
                .keys()
                .filter(|(w, _)| *w == writer)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(
                seqs,
                (0..seqs.len() as u64).collect::<Vec<_>>(),
                "seed {seed} writer {writer}"
            );
        }
        assert!(records.len() >= acked.len());
    }
}
