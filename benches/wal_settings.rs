//! `wal_settings`: which of several WAL settings commits faster, on a machine whose
//! speed swings by half from one ten seconds to the next (BENCHMARKS.md,
//! "Session 11"). Every variant gets its own log in one process, and they
//! take turns in short windows, the order reversed every other round, so a
//! slow period of the host falls on every variant alike. Each window's rate
//! is compared with the first variant's in the same round; the median of
//! those ratios, and how many rounds each variant won, is the result.
//!
//! Run: `cargo bench --bench wal_settings -- [--writers N] [--threads] [--size B]
//! [--window-ms MS] [--rounds R] VARIANT...`, where a variant is a
//! comma-separated list of settings: `syncs=N` (`syncs_in_flight_max`),
//! `delay=US` (`batch_delay_max` in µs); `default` for none; or `ideal`,
//! the ideal log of `ideal_log.rs` (async writers only), to see how far the
//! log is from what this disk and runtime allow in the same stretch of the
//! host. Writers are async tasks on a 2-thread runtime, or blocking threads
//! with `--threads`. Each log is checkpointed after each window (untimed),
//! so its segments are reused, as the servers' are.

mod ideal_log;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ideal_log::IdealLog;
use wal::{Options, RecordKind, Wal};

const KIND: RecordKind = RecordKind(0x7F);

struct Config {
    writers: usize,
    threads: bool,
    size: usize,
    window: Duration,
    rounds: usize,
    variants: Vec<String>,
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        writers: 256,
        threads: false,
        size: 256,
        window: Duration::from_millis(300),
        rounds: 40,
        variants: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = args.next().ok_or(format!("{name} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: not a number: {value}"))
        };
        match arg.as_str() {
            // Passed by `cargo bench` to every benchmark binary.
            "--bench" => {}
            "--writers" => config.writers = number("--writers")? as usize,
            "--threads" => config.threads = true,
            "--size" => config.size = number("--size")? as usize,
            "--window-ms" => config.window = Duration::from_millis(number("--window-ms")?),
            "--rounds" => config.rounds = number("--rounds")? as usize,
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            _ => config.variants.push(arg),
        }
    }
    if config.variants.len() < 2 {
        return Err("give at least two variants, e.g. `syncs=2 syncs=1`".into());
    }
    if config.writers == 0 || config.rounds == 0 || config.window.is_zero() {
        return Err("--writers, --rounds and --window-ms must be at least 1".into());
    }
    if config.threads && config.variants.iter().any(|variant| variant == IDEAL) {
        return Err("the ideal log has async writers only: drop --threads".into());
    }
    Ok(config)
}

/// The variant that is the ideal log, not a setting of minipay's.
const IDEAL: &str = "ideal";

/// A log the variants take turns on.
enum Subject {
    Minipay(Arc<Wal>),
    Ideal(IdealLog),
}

fn options(variant: &str, size: usize) -> Result<Options, String> {
    let mut options = Options {
        payload_len_max: size.max(4096) as u32,
        ..Options::default()
    };
    for setting in variant.split(',').filter(|s| *s != "default") {
        let (name, value) = setting
            .split_once('=')
            .ok_or(format!("{setting}: expected name=value"))?;
        let value: u64 = value
            .parse()
            .map_err(|_| format!("{setting}: not a number"))?;
        match name {
            "syncs" => options.syncs_in_flight_max = value as usize,
            "delay" => options.batch_delay_max = Duration::from_micros(value),
            _ => return Err(format!("{setting}: unknown setting (syncs, delay)")),
        }
    }
    Ok(options)
}

/// Appends from every writer until the window ends; returns records/s.
/// minipay's log is then checkpointed (untimed).
fn window(config: &Config, runtime: &tokio::runtime::Runtime, subject: &mut Subject) -> f64 {
    let payload = vec![0xA5u8; config.size];
    let log = match subject {
        Subject::Ideal(ideal) => {
            let (records, elapsed) = ideal.run(runtime, config.writers, &payload, |_, elapsed| {
                elapsed >= config.window
            });
            return records as f64 / elapsed.as_secs_f64();
        }
        Subject::Minipay(log) => log,
    };
    let started = Instant::now();
    let records: u64 = if config.threads {
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..config.writers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut records = 0;
                        while started.elapsed() < config.window {
                            log.append(KIND, &payload).expect("durable append");
                            records += 1;
                        }
                        records
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().expect("writer")).sum()
        })
    } else {
        runtime.block_on(async {
            let writers: Vec<_> = (0..config.writers)
                .map(|_| {
                    let (log, payload, window) = (Arc::clone(log), payload.clone(), config.window);
                    tokio::spawn(async move {
                        let mut records = 0u64;
                        while started.elapsed() < window {
                            log.append_async(KIND, &payload)
                                .await
                                .expect("durable append");
                            records += 1;
                        }
                        records
                    })
                })
                .collect();
            let mut records = 0;
            for writer in writers {
                records += writer.await.expect("writer task");
            }
            records
        })
    };
    let rate = records as f64 / started.elapsed().as_secs_f64();
    log.checkpoint(log.durable_lsn()).expect("checkpoint");
    rate
}

/// The `q`th percentile of `values` (nearest rank, rounding down), for the
/// rates and the ratios alike.
fn percentile(values: &[f64], q: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) * q / 100]
}

fn main() {
    let config = parse_args().unwrap_or_else(|error| {
        eprintln!("wal_settings: {error}");
        std::process::exit(2);
    });
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wal-settings");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut logs: Vec<Subject> = config
        .variants
        .iter()
        .enumerate()
        .map(|(i, variant)| {
            let dir = scratch.join(i.to_string());
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            if variant == IDEAL {
                return Subject::Ideal(IdealLog::create(&dir.join("ideal.tmp")));
            }
            let options = options(variant, config.size).unwrap_or_else(|error| {
                eprintln!("wal_settings: {error}");
                std::process::exit(2);
            });
            Subject::Minipay(Arc::new(Wal::open(&dir, options).expect("open wal").wal))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let mut rates = vec![Vec::with_capacity(config.rounds); logs.len()];
    for round in 0..config.rounds {
        for turn in 0..logs.len() {
            let i = if round % 2 == 0 {
                turn
            } else {
                logs.len() - 1 - turn
            };
            rates[i].push(window(&config, &runtime, &mut logs[i]));
        }
    }
    let how = if config.threads {
        "threads"
    } else {
        "async tasks"
    };
    println!(
        "wal_settings: {} {how}, {} B records, {} rounds of {} ms windows",
        config.writers,
        config.size,
        config.rounds,
        config.window.as_millis()
    );
    for (i, variant) in config.variants.iter().enumerate() {
        let at = |q: usize| percentile(&rates[i], q) / 1e3;
        print!(
            "  {variant}: median {:.0} k/s (p10 {:.0}, p90 {:.0})",
            at(50),
            at(10),
            at(90)
        );
        if i > 0 {
            let ratios: Vec<f64> = (0..config.rounds)
                .map(|r| rates[i][r] / rates[0][r])
                .collect();
            let wins = ratios.iter().filter(|ratio| **ratio > 1.0).count();
            print!(
                "; against {}: median ratio {:.3}, faster in {wins} of {} rounds",
                config.variants[0],
                percentile(&ratios, 50),
                config.rounds
            );
        }
        println!();
    }
    drop(logs);
    let _ = std::fs::remove_dir_all(&scratch);
}
