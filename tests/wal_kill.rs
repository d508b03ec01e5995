//! Durability across `kill -9`: a real `minipay wal bench` process appends
//! from many writers and logs each acknowledgement; it is killed at a random
//! moment, and every acknowledged record must come back intact on recovery.
//! In some rounds the bench checkpoints as it goes, so the log reuses its
//! segments and the kill lands in recycled ones: then every acknowledged
//! record after the checkpoint must come back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minipay::tools::wal::{BENCH_KIND, decode_bench_payload, reused_segments};
use rand::{Rng, SeedableRng};
use wal::{Options, Wal};

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
    let first = recovered.wal.first_lsn();
    recovered
        .wal
        .replay(first, |record| {
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
    // (writers, async, checkpoint every this many records)
    let rounds = [
        (1, false, None),
        (4, false, None),
        (16, false, None),
        (64, false, None),
        (16, true, None),
        (256, true, None),
        (16, false, Some(2000)),
        (256, true, Some(2000)),
    ];
    for (round, (writers, use_async, checkpoint)) in rounds.into_iter().enumerate() {
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
            .args(checkpoint.map(|every| format!("--checkpoint-every={every}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start minipay wal bench");
        let mut child = Killed(child);
        // With checkpoints, late enough that segments are being reused.
        let target = match checkpoint {
            None => rng.random_range(1..3000),
            Some(_) => rng.random_range(8000..14000),
        };
        wait_for_acks(&mut child.0, &ack_log, target);
        child.0.kill().expect("kill -9");
        child.0.wait().unwrap();
        let acked = acknowledged(&ack_log);
        if checkpoint.is_some() {
            assert!(
                reused_segments(&dir).unwrap() > 0,
                "seed {seed} round {round}: the kill landed in reused segments"
            );
        }
        let records = recovered_records(&dir);
        // Each writer appends in order and waits: what survives of it is a
        // gap-free run of its sequence, from 0 unless a checkpoint removed
        // the start, and every acknowledged record after that start. A
        // checkpoint may have removed all of a writer's records (the kill
        // can land a few records after a checkpoint that emptied the log up
        // to a segment start): such a writer has nothing left to check.
        for writer in 0..writers {
            let seqs: Vec<u64> = records
                .keys()
                .filter(|(w, _)| *w == writer)
                .map(|(_, s)| *s)
                .collect();
            let start = match (checkpoint, seqs.first()) {
                (None, _) => 0,
                (Some(_), None) => continue,
                (Some(_), Some(first)) => *first,
            };
            assert_eq!(
                seqs,
                (start..start + seqs.len() as u64).collect::<Vec<_>>(),
                "seed {seed} writer {writer}"
            );
            for key in acked.iter().filter(|(w, s)| *w == writer && *s >= start) {
                assert_eq!(
                    records.get(key),
                    Some(&true),
                    "seed {seed} round {round}: lost {key:?}"
                );
            }
        }
        if checkpoint.is_none() {
            assert!(records.len() >= acked.len());
        }
    }
}
