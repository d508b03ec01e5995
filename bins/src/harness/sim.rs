//! `minipay sim`: runs the deterministic simulation (`minipay_simulation`)
//! over many seeds, or replays one.

/// `minipay sim`: many seeds, or one seed replayed with its events.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Replay this one seed and print its report.
    #[arg(long, conflicts_with_all = ["seeds", "from"])]
    pub seed: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1_000)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Steps with faults per seed (then the system heals).
    #[arg(long, default_value_t = minipay_simulation::SimConfig::default().steps)]
    pub steps: u64,
    /// Threads running seeds in parallel (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Break a rule on purpose to watch the checker catch it.
    #[arg(long, value_parser = ["vote-yes-before-durable", "balance-without-waiting", "registration-before-durable"])]
    pub broken: Option<String>,
}

pub fn main(args: SimArgs) -> anyhow::Result<()> {
    let config = minipay_simulation::SimConfig {
        steps: args.steps,
        broken: args.broken.as_deref().map(|broken| match broken {
            "balance-without-waiting" => minipay_simulation::Broken::BalanceWithoutWaiting,
            "registration-before-durable" => minipay_simulation::Broken::RegistrationBeforeDurable,
            _ => minipay_simulation::Broken::VoteYesBeforeDurable,
        }),
        ..minipay_simulation::SimConfig::default()
    };
    if let Some(seed) = args.seed {
        let report = minipay_simulation::run(seed, &config)
            .map_err(|failure| anyhow::anyhow!("{failure}"))?;
        println!("{report:?}");
        return Ok(());
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let started = std::time::Instant::now();
    let summary = minipay_simulation::run_seeds(args.from, args.seeds, &config, threads)
        .map_err(|failure| anyhow::anyhow!("{failure}"))?;
    println!(
        "ok: seeds {}..{}: {summary} ({:.1} s)",
        args.from,
        args.from + args.seeds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
