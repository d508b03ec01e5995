//! Model-based tests: random appends, async appends, checkpoints, snapshots,
//! reopens and crashes against a plain `Vec` of what must be in the log.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use proptest::prelude::*;
use wal::sim::SimStorage;
use wal::{Lsn, Options, RecordKind, ReplayError, Wal};

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future on this thread, parking until its waker fires.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u8>),
    AppendAsync(Vec<Vec<u8>>),
    Checkpoint,
    Snapshot,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let body = proptest::collection::vec(any::<u8>(), 0..120);
    prop_oneof![
        8 => body.clone().prop_map(Op::Append),
        3 => proptest::collection::vec(body, 1..8).prop_map(Op::AppendAsync),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn options() -> Options {
    Options {
        segment_size: 1024,
        payload_len_max: 128,
        prepare_segments_ahead: true,
        // Not the default: keeps overlapping syncs in the model's reach.
        syncs_in_flight_max: 2,
        ..Options::default()
    }
}

fn contents_from(log: &Wal, from: Lsn) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    log.replay(from, |record| {
        assert_eq!(record.kind, RecordKind(9));
        records.push(record.payload.to_vec());
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    records
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_always_holds_exactly_what_was_acknowledged(ops in proptest::collection::vec(op(), 1..60)) {
        let mut storage = SimStorage::new();
        let mut log = Wal::open_storage(Arc::new(storage.clone()), options()).unwrap().wal;
        // model[i] is the payload of lsn i + 1.
        let mut model: Vec<Vec<u8>> = Vec::new();
        // Everything before this lsn may be gone (checkpointed).
        let mut kept_from = Lsn::FIRST;
        for op in ops {
            match op {
                Op::Append(body) => {
                    let lsn = log.append(RecordKind(9), &body).unwrap();
                    model.push(body);
                    prop_assert_eq!(lsn, Lsn(model.len() as u64));
                }
                Op::AppendAsync(bodies) => {
                    let futures: Vec<_> = bodies.iter().map(|body| log.append_async(RecordKind(9), body)).collect();
                    for (future, body) in futures.into_iter().zip(bodies) {
                        let lsn = block_on(future).unwrap();
                        model.push(body);
                        prop_assert_eq!(lsn, Lsn(model.len() as u64));
                    }
                }
                Op::Checkpoint => {
                    let durable = log.durable_lsn();
                    log.checkpoint(durable).unwrap();
                    kept_from = durable.next();
                    prop_assert!(log.first_lsn() <= kept_from);
                }
                Op::Snapshot => {
                    let durable = log.durable_lsn();
                    log.checkpoint_with_snapshot(durable, &durable.0.to_le_bytes()).unwrap();
                    kept_from = durable.next();
                }
                Op::Reopen | Op::Crash => {
                    drop(log);
                    if matches!(op, Op::Crash) {
                        storage = storage.crash();
                    }
                    let recovered = Wal::open_storage(Arc::new(storage.clone()), options()).unwrap();
                    prop_assert_eq!(recovered.report.next_lsn, Lsn(model.len() as u64 + 1));
                    if let Some(snapshot) = &recovered.snapshot {
                        prop_assert!(snapshot.lsn.next() <= kept_from.max(Lsn::FIRST));
                    }
                    log = recovered.wal;
                }
            }
            let first = log.first_lsn();
            prop_assert!(first <= kept_from);
            let held = contents_from(&log, first);
            prop_assert_eq!(&held[..], &model[first.0 as usize - 1..]);
        }
    }
}

#[test]
fn replay_from_before_a_checkpoint_reports_the_missing_records() {
    let log = Wal::open_storage(Arc::new(SimStorage::new()), options())
        .unwrap()
        .wal;
    for index in 0..40u8 {
        log.append(RecordKind(9), &[index; 100]).unwrap();
    }
    let before = log.segment_count();
    assert!(before > 2);
    let removed = log.checkpoint(Lsn(30)).unwrap();
    assert!(removed > 0);
    assert_eq!(log.segment_count(), before - removed);
    let first = log.first_lsn();
    assert!(first > Lsn(1) && first <= Lsn(31), "first lsn {first}");
    match log.replay(Lsn(1), |_| Ok::<_, std::convert::Infallible>(())) {
        Err(ReplayError::Missing {
            requested,
            first: reported,
        }) => {
            assert_eq!((requested, reported), (Lsn(1), first));
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let tail = contents_from(&log, Lsn(31));
    assert_eq!(tail.len(), 10);
    assert_eq!(tail[0], vec![30u8; 100]);
}

#[test]
fn appends_over_the_size_limit_or_of_kind_zero_are_refused_and_change_nothing() {
    let log = Wal::open_storage(Arc::new(SimStorage::new()), options())
        .unwrap()
        .wal;
    let error = log.append(RecordKind(9), &[0; 129]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "record payload of 129 bytes exceeds the limit of 128 bytes"
    );
    assert!(log.append(RecordKind(0), b"x").is_err());
    assert!(block_on(log.append_async(RecordKind(9), &[0; 129])).is_err());
    assert_eq!(log.append(RecordKind(9), b"ok").unwrap(), Lsn(1));
}

#[test]
fn checkpoint_beyond_the_durable_lsn_is_refused() {
    let log = Wal::open_storage(Arc::new(SimStorage::new()), options())
        .unwrap()
        .wal;
    log.append(RecordKind(9), b"one").unwrap();
    assert!(log.checkpoint(Lsn(2)).is_err());
    assert!(matches!(
        log.replay(Lsn(1), |_| Err::<(), _>("stop")),
        Err(ReplayError::Visitor("stop"))
    ));
}
