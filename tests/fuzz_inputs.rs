//! The fuzz entry points (`minipay::harness::fuzzing`, driven by `cargo fuzz` in
//! `fuzz/`) over seeded random inputs, so every CI run builds and exercises
//! them. Coverage-guided runs and what they found: TESTING.md.

use std::sync::Arc;

use minipay::harness::fuzzing;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use wal::sim::SimStorage;

fn random_bytes(rng: &mut StdRng, len_max: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.random_range(0..=len_max)];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// The first segment of a real log holding a few records.
fn real_segment() -> Vec<u8> {
    let storage = SimStorage::new();
    let options = wal::Options {
        segment_size: 1 << 14,
        payload_len_max: 1 << 12,
        background_flush: false,
        prepare_segments_ahead: false,
        ..wal::Options::default()
    };
    let log = wal::Wal::open_storage(Arc::new(storage.clone()), options)
        .unwrap()
        .wal;
    for index in 0..20u8 {
        log.append(
            wal::RecordKind(1 + index % 3),
            &vec![index; usize::from(index) * 7],
        )
        .unwrap();
    }
    drop(log);
    let segment = storage
        .contents(&wal::segment_name(wal::Lsn::FIRST))
        .unwrap();
    let end = wal::SEGMENT_HEADER_LEN + 20 * wal::RECORD_HEADER_LEN + (0..20).sum::<usize>() * 7;
    segment[..end + 64].to_vec()
}

#[test]
fn wal_recovery_takes_random_and_damaged_logs() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..300 {
        fuzzing::wal_recovery(&random_bytes(&mut rng, 2_048));
    }
    let segment = real_segment();
    fuzzing::wal_recovery(&segment);
    for _ in 0..500 {
        let mut damaged = segment.clone();
        match rng.random_range(0..3) {
            0 => {
                let at = rng.random_range(0..damaged.len());
                damaged[at] ^= 1 << rng.random_range(0..8);
            }
            1 => damaged.truncate(rng.random_range(0..segment.len())),
            _ => {
                let at = rng.random_range(0..damaged.len());
                let len = rng.random_range(1..=32).min(damaged.len() - at);
                rng.fill_bytes(&mut damaged[at..at + len]);
            }
        }
        fuzzing::wal_recovery(&damaged);
    }
}

#[test]
fn bank_handlers_take_any_request() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..300 {
        fuzzing::bank_requests(&random_bytes(&mut rng, 600));
    }
}

#[test]
fn gateway_handlers_take_any_request() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..60 {
        fuzzing::gateway_requests(&random_bytes(&mut rng, 400));
    }
}
