//! What recording one payment's metrics costs, with the servers' recorder
//! installed: the facade calls a payment makes at the gateway (its call
//! counted by method and code, its outcome, its latency, two phase
//! latencies) and at a bank (a batch call counted, a YES vote, a commit),
//! timed in a loop. Compared in BENCHMARKS.md ("Metrics") with the CPU a
//! whole payment costs end to end.
//!
//! `cargo bench --bench metrics_record`

use std::time::{Duration, Instant};

fn one_payment(seconds: f64) {
    // Gateway: the request log layer's count (a method label made per call).
    let method = String::from("/minipay.v1.Gateway/Pay");
    metrics::counter!("minipay_requests_total", "method" => method, "code" => "OK").increment(1);
    metrics::counter!("minipay_payments_total", "outcome" => "committed").increment(1);
    metrics::histogram!("minipay_payment_duration_seconds").record(seconds);
    metrics::histogram!("minipay_phase_duration_seconds", "phase" => "prepare").record(seconds);
    metrics::histogram!("minipay_phase_duration_seconds", "phase" => "commit").record(seconds);
    // A bank: its share of a batch call, its vote and its commit.
    let method = String::from("/minipay.v1.Bank/PrepareBatch");
    metrics::counter!("minipay_requests_total", "method" => method, "code" => "OK").increment(1);
    metrics::counter!("minipay_bank_prepares_total", "vote" => "yes").increment(1);
    metrics::counter!("minipay_bank_commits_total").increment(1);
}

fn main() {
    let _registry = minipay::servers::metrics::registry();
    let payments = 1_000_000u32;
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for index in 0..payments {
                one_payment(f64::from(index % 1000) * 1e-5);
            }
            started.elapsed()
        })
        .collect();
    rounds.sort();
    let median = rounds[rounds.len() / 2];
    println!(
        "metrics of one payment (8 facade calls): median {:.0} ns over 7 rounds of {payments} (min {:.0}, max {:.0})",
        median.as_nanos() as f64 / f64::from(payments),
        rounds[0].as_nanos() as f64 / f64::from(payments),
        rounds[6].as_nanos() as f64 / f64::from(payments),
    );
}
