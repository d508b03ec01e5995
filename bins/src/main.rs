//! `minipay`: the command-line tool: the client (register, login, pay with
//! an offline queue, …), the servers (`minipay bank`, `minipay gateway`),
//! certificates, WAL inspection, repair and benchmarking, and its own shell
//! completions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use minipay::tools::wal::{self as wal_tools, BenchConfig};
use wal::SyncPolicy;

#[derive(Parser)]
#[command(
    name = "minipay",
    version,
    about = "A miniature payment system: banks, a 2PC gateway and clients over one write-ahead log"
)]
struct Cli {
    #[command(flatten)]
    client: minipay::client::commands::ClientOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start two banks and a gateway on this machine and walk through
    /// payments, retries, an outage and a crash (the main job).
    Demo,
    /// Load generator: concurrent clients making seeded random payments,
    /// closed loop or open loop (--rate), a line a second, HDR latency
    /// percentiles, --report DIR for JSON and plots; checks that money is
    /// conserved.
    Bench(minipay::harness::load_generator::BenchArgs),
    /// Kill -9 random processes of a local cluster (3 banks, a gateway)
    /// under concurrent payments, restart them, heal, and check every
    /// invariant.
    Chaos(minipay::harness::chaos::ChaosArgs),
    /// Run a bank server (the same as the `bank` binary).
    Bank(Box<minipay::servers::bank::node::BankCommand>),
    /// Run the payment gateway (the same as the `gateway` binary).
    Gateway(Box<minipay::servers::gateway::node::GatewayCommand>),
    #[command(flatten)]
    Tool(ToolCommand),
    #[command(flatten)]
    Client(minipay::client::commands::ClientCommand),
}

/// Commands that run and exit.
#[derive(Subcommand)]
enum ToolCommand {
    /// Inspect, verify, repair or benchmark a write-ahead log.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Deterministic simulation of the whole system under faults: many
    /// seeds, or `--seed S` to replay one.
    Sim(minipay::harness::sim::SimArgs),
    /// What a long history costs: build one in process through the cores,
    /// then measure real servers on it.
    #[command(subcommand)]
    HistoryBench(minipay::harness::history::HistoryCommand),
    /// Generate a development CA and mTLS certificates for every node.
    Certs {
        /// Directory to write ca.pem, gateway.pem/.key, <bank>.pem/.key, client.pem/.key.
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated bank names, e.g. bank_a,bank_b.
        #[arg(long, value_delimiter = ',', required = true)]
        banks: Vec<String>,
    },
    /// Print the completion script for SHELL to standard output, e.g.
    /// `minipay completions bash > ~/.local/share/bash-completion/completions/minipay`.
    Completions {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Print every record: LSN, kind, length and decoded payload.
    Dump {
        dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Print the history tables instead of the records: the newest
        /// manifest, then each table's header and entries.
        #[arg(long)]
        tables: bool,
    },
    /// Check a log, and the history tables beside it, without changing
    /// them; exit non-zero on corruption.
    Verify {
        dir: PathBuf,
        /// Truncate at the first bad record, keeping the original bytes in
        /// `.broken` copies, and report what was dropped.
        #[arg(long)]
        repair: bool,
    },
    /// Durable appends from concurrent writers, compared with the raw disk.
    Bench(BenchArgs),
    /// The raw disk alone: pwrite + fdatasync per second on a preallocated
    /// scratch file next to DIR (what no log can beat).
    Disk {
        dir: PathBuf,
        /// Bytes written before each fdatasync.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Threads syncing concurrently, each in its own region.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Write through O_DIRECT (whole 4 KiB pages), as the log does.
        #[arg(long)]
        direct: bool,
    },
}

#[derive(Args)]
struct BenchArgs {
    dir: PathBuf,
    #[arg(long, default_value_t = 16)]
    writers: u32,
    /// Total records, spread over the writers.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Payload bytes per record (at least 16).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Write `<writer> <seq>` here as each append is acknowledged.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Async writers (tasks on a 2-thread tokio runtime) instead of threads.
    #[arg(long = "async")]
    use_async: bool,
    /// Segment file size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
    /// Longest a flush is held back for a batch to gather, in microseconds.
    #[arg(long, default_value_t = wal::Options::default().batch_delay_max.as_micros() as u64)]
    batch_delay_us_max: u64,
    /// How many fdatasync calls may overlap.
    #[arg(long, default_value_t = wal::Options::default().syncs_in_flight_max)]
    syncs_in_flight: usize,
    /// Checkpoint the log each time this many more records are durable (old
    /// segments are then reused, as in a log whose owner saves its state).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Do not zero-fill the next segment in the background (rotation then
    /// prepares it on the commit path).
    #[arg(long)]
    no_prepare_ahead: bool,
    /// Skip fsync entirely. NOT DURABLE: only to measure the CPU path.
    #[arg(long)]
    no_sync_not_durable: bool,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Tool(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let tool = match cli.command {
        Command::Bank(command) => return minipay::servers::bank::node::main(*command),
        Command::Gateway(command) => return minipay::servers::gateway::node::main(*command),
        Command::Client(command) => return client_main(cli.client, command),
        Command::Demo => return demo_main(),
        Command::Chaos(args) => return chaos_main(args),
        Command::Bench(args) => return bench_main(cli.client, args),
        // The simulation's nodes log what real ones would (timeouts, failed
        // syncs) by design; its report says what happened.
        Command::Tool(ToolCommand::Sim(args)) => {
            return match minipay::harness::sim::main(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Tool(tool) => tool,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The tools (`wal dump`, `wal verify`, `sim`, …) print for a reader that may
/// stop early (`minipay wal dump DIR | head`): like any Unix filter they
/// should then end at once and silently, by SIGPIPE, rather than report a
/// broken pipe (or panic in `println!`). Rust ignores SIGPIPE by default;
/// the servers and the client keep that, since their sockets report EPIPE
/// as an error where it belongs.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called once at start-up, before any other thread exists, to
    // restore the default disposition of one signal; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn bench_main(
    options: minipay::client::commands::ClientOptions,
    args: minipay::harness::load_generator::BenchArgs,
) -> ExitCode {
    let json = args.json;
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(minipay::harness::load_generator::run(
                args,
                options.gateway,
                options.tls_dir,
            ))
        });
    match outcome {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report serializes")
                );
            } else {
                println!("{}", report.human());
            }
            if report.conserved {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo_main() -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(minipay::harness::demo::run()));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn chaos_main(args: minipay::harness::chaos::ChaosArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(minipay::harness::chaos::main(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn client_main(
    options: minipay::client::commands::ClientOptions,
    command: minipay::client::commands::ClientCommand,
) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(minipay::client::commands::run(options, command)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(tool: ToolCommand) -> anyhow::Result<()> {
    match tool {
        ToolCommand::Sim(_) => unreachable!("the simulation runs without logging"),
        ToolCommand::HistoryBench(command) => minipay::harness::history::main(command),
        ToolCommand::Certs { out, banks } => {
            for file in minipay::tools::certs::generate(&out, &banks)? {
                println!("{file}");
            }
            Ok(())
        }
        ToolCommand::Completions { shell } => {
            // Generated from the same definition that parses the arguments,
            // so the script cannot drift from the commands and flags.
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "minipay",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        ToolCommand::Wal(WalCommand::Dump { dir, json, tables }) => {
            wal_tools::dump(&dir, json, tables)
        }
        ToolCommand::Wal(WalCommand::Verify { dir, repair }) => {
            println!("{}", wal_tools::verify(&dir, repair)?);
            Ok(())
        }
        ToolCommand::Wal(WalCommand::Disk {
            dir,
            size,
            threads,
            direct,
        }) => {
            let raw = wal_tools::raw_disk(&dir, size, threads, direct)?;
            let how = if direct { "O_DIRECT " } else { "" };
            println!(
                "raw disk: {threads} threads x ({how}pwrite {size} B + fdatasync): {} syncs, {:.0} syncs/s, {:.1} MB/s, p50 {:.0} us",
                raw.syncs,
                raw.per_sec,
                raw.per_sec * size as f64 / 1e6,
                raw.p50_us
            );
            Ok(())
        }
        ToolCommand::Wal(WalCommand::Bench(args)) => {
            let config = BenchConfig {
                dir: args.dir,
                writers: args.writers,
                records: args.records,
                size: args.size,
                ack_log: args.ack_log,
                use_async: args.use_async,
                segment_size: args.segment_size,
                batch_delay_max: std::time::Duration::from_micros(args.batch_delay_us_max),
                syncs_in_flight_max: args.syncs_in_flight,
                checkpoint_every: args.checkpoint_every,
                prepare_segments_ahead: !args.no_prepare_ahead,
                sync: if args.no_sync_not_durable {
                    SyncPolicy::NeverNotDurable
                } else {
                    SyncPolicy::Always
                },
            };
            let report = wal_tools::bench(&config)?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.human());
            }
            Ok(())
        }
    }
}
