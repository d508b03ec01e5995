//! Helpers shared by the crash tests on simulated storage.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use wal::sim::{CrashMode, SimStorage};
use wal::{RecordKind, Wal};

/// An acknowledged record: (lsn, payload).
pub type Acked = BTreeSet<(u64, Vec<u8>)>;

/// Records in the log as (lsn, payload), from its first.
pub fn read_all(log: &Wal) -> Vec<(u64, Vec<u8>)> {
    let mut records = Vec::new();
    log.replay(log.first_lsn(), |record| {
        records.push((record.lsn.0, record.payload.to_vec()));
        Ok::<_, std::convert::Infallible>(())
    })
    .expect("replay of an opened log");
    records
}

/// Runs `writers` threads appending `appends` records each (`body` of
/// `writer * 1000 + index`, then `after_append(log, writer, index)`), while
/// taking `images` crash images of `storage` with what was acknowledged
/// before each.
pub fn crash_images_while_appending(
    storage: &SimStorage,
    log: &Arc<Wal>,
    mode: CrashMode,
    (writers, appends, images): (u64, u64, usize),
    body: fn(u64) -> Vec<u8>,
    after_append: &(dyn Fn(&Wal, u64, u64) + Sync),
) -> Vec<(Acked, SimStorage)> {
    let acknowledged = Mutex::new(BTreeSet::new());
    let mut taken = Vec::new();
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let acknowledged = &acknowledged;
            scope.spawn(move || {
                for index in 0..appends {
                    let body = body(writer * 1000 + index);
                    let lsn = log.append(RecordKind(1), &body).unwrap();
                    acknowledged.lock().unwrap().insert((lsn.0, body));
                    after_append(log, writer, index);
                }
            });
        }
        for _ in 0..images {
            let known = acknowledged.lock().unwrap().clone();
            taken.push((known, storage.crash_with(mode)));
            std::thread::yield_now();
        }
    });
    taken
}

/// Every image opens and holds every record acknowledged before it was
/// taken, from the log's first LSN on (earlier ones a checkpoint removed).
pub fn assert_images_keep_acknowledged(
    images: Vec<(Acked, SimStorage)>,
    open: impl Fn(&SimStorage) -> Wal,
    mode: CrashMode,
) {
    for (known, image) in images {
        let recovered = open(&image);
        let first = recovered.first_lsn().0;
        let records: Acked = read_all(&recovered).into_iter().collect();
        let expected: Acked = known.into_iter().filter(|(lsn, _)| *lsn >= first).collect();
        assert!(
            expected.is_subset(&records),
            "{mode:?}: an acknowledged record was lost"
        );
    }
}
