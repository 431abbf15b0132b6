//! `bench`: the bench binary. Parses the command line and calls the library; one subcommand
//! per benchmark.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmarks for the broker, the coordinator and this host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Storage engine vs this disk: appends 16 KiB batches of 100-byte records with flush
    /// policy `never`, then `always`, beside the disk's O_DIRECT sequential write bandwidth.
    Storage(StorageArgs),
}

#[derive(clap::Args)]
struct StorageArgs {
    /// Seconds each append phase (`never`, then `always`) runs.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the scratch files (must be on the disk to measure, not tmpfs); a
    /// temporary directory inside it is created and removed.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Concurrent appending tasks on the one shard.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Size of one record batch, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_bytes: usize,
    /// Value size of one record, bytes.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Bytes written by the O_DIRECT bandwidth probe (in 1 MiB writes).
    #[arg(long, default_value_t = 1 << 30)]
    limit_bytes: u64,
    /// Tuning profile whose `[storage]` settings the log uses (default: built-in defaults).
    #[arg(long)]
    tuning: Option<PathBuf>,
    /// Override the profile's `storage.write_buffer_bytes`.
    #[arg(long)]
    write_buffer_bytes: Option<u32>,
    /// Override the profile's `storage.preallocate_bytes`.
    #[arg(long)]
    preallocate_bytes: Option<u64>,
    /// Override the profile's `storage.segment_bytes`.
    #[arg(long)]
    segment_bytes: Option<u64>,
}

/// The `[storage]` settings: the profile's (or the defaults), then the command-line overrides.
fn storage_limits(a: &StorageArgs) -> Result<tuning::StorageLimits, String> {
    let mut limits = match &a.tuning {
        Some(path) => {
            tuning::Profile::load(path)
                .map_err(|e| e.to_string())?
                .storage
        }
        None => tuning::StorageLimits::default(),
    };
    if let Some(v) = a.write_buffer_bytes {
        limits.write_buffer_bytes = v;
    }
    if let Some(v) = a.preallocate_bytes {
        limits.preallocate_bytes = v;
    }
    if let Some(v) = a.segment_bytes {
        limits.segment_bytes = v;
    }
    Ok(limits)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Storage(a) => storage_limits(&a)
            .and_then(|storage| {
                bench::storage::run(&bench::storage::StorageBenchOptions {
                    phase_seconds: a.duration,
                    dir: a.dir,
                    appenders: a.appenders,
                    batch_bytes: a.batch_bytes,
                    record_bytes: a.record_bytes,
                    limit_bytes: a.limit_bytes,
                    limit_write_bytes: 1 << 20,
                    storage,
                })
            })
            .and_then(|report| {
                println!("{}", report.summary());
                match &a.json {
                    Some(path) => report.write_json(path),
                    None => Ok(()),
                }
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
