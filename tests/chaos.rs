//! The chaos test with real processes (see `bins/src/chaos.rs` and
//! TESTING.md): 3 banks and a gateway over mTLS, concurrent clients
//! retrying payments, random processes SIGKILLed and restarted, then healing
//! and every invariant checked from the servers' answers. 20 kills here;
//! `MINIPAY_CHAOS_KILLS` for more, or `minipay chaos --kills 500`.

use std::path::PathBuf;
use std::time::Duration;

use minipay::harness::chaos::{ChaosOptions, run};
use minipay::harness::cluster::Servers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_random_processes_under_load_breaks_no_invariant() {
    let kills = std::env::var("MINIPAY_CHAOS_KILLS").map_or(20, |text| {
        text.parse().expect("MINIPAY_CHAOS_KILLS must be a number")
    });
    let seed = std::env::var("MINIPAY_CHAOS_SEED")
        .map_or_else(|_| rand::random(), |text| text.parse().expect("a seed"));
    println!("chaos seed {seed} (MINIPAY_CHAOS_SEED={seed} repeats the fault schedule)");
    let dir = tempfile::tempdir().unwrap();
    let servers = Servers::Binaries {
        bank: PathBuf::from(env!("CARGO_BIN_EXE_bank")),
        gateway: PathBuf::from(env!("CARGO_BIN_EXE_gateway")),
    };
    // Small WAL segments and frequent snapshots: the servers rotate,
    // checkpoint and reuse segments while they are being killed.
    let options = ChaosOptions {
        kills,
        seed,
        heal_timeout: Duration::from_secs(90),
        server_flags: ChaosOptions::wal_flags(Some(64 << 10), Some(100)),
    };
    match run(servers, dir.path(), &options).await {
        Ok(report) => {
            println!("{report}");
            assert_eq!(report.kills.values().sum::<u32>(), kills);
            assert!(report.committed > 0, "{report}");
            assert!(
                report.attempts > report.payments,
                "the kills forced retries: {report}"
            );
        }
        Err(error) => {
            let kept = dir.keep();
            panic!("{error:#}\nlogs and data kept in {}", kept.display());
        }
    }
}
