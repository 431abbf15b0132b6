//! `coordinator`: the coordinator binary.
//!
//! `coordinator --config zoo.cfg [--tuning profile.toml|default|dev-2core]` loads the
//! ZooKeeper configuration file and the host profile and serves until killed. Log verbosity
//! follows `RUST_LOG` (default `info`); `--log-format json` writes one JSON object per line.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use coordinator::config::ZooConfig;
use coordinator::server::{self, ServerOptions};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A ZooKeeper-protocol coordinator (standalone, or a ZAB ensemble with server.N lines)"
)]
struct Args {
    /// ZooKeeper configuration file (zoo.cfg format).
    #[arg(long)]
    config: PathBuf,
    /// Host tuning profile: a TOML file or a built-in name (`default`, `dev-2core`).
    #[arg(long)]
    tuning: Option<String>,
    /// Log lines for people (`human`) or one JSON object per line (`json`), on stderr.
    #[arg(long, default_value = "human")]
    log_format: tuning::logging::LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tuning::logging::init(args.log_format);
    let zoo = match ZooConfig::load(&args.config) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    let profile = match args.tuning.as_deref() {
        None => tuning::Profile::load_or_default(None),
        Some(name) => match tuning::Profile::builtin(name) {
            Some(p) => Ok(p),
            None => tuning::Profile::load(std::path::Path::new(name)),
        },
    };
    let profile = match profile {
        Ok(p) => p,
        Err(e) => {
            eprintln!("coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    let mut opts = ServerOptions::new(zoo);
    opts.max_connections = profile.network.max_connections;
    // The profile may relax durability for benchmarks on throwaway disks; zoo.cfg's
    // forceSync=no does the same, as in ZooKeeper.
    opts.sync_log &= profile.storage.flush() != tuning::FlushPolicy::Never;
    match server::start(opts) {
        Ok(handle) => {
            handle.wait();
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("coordinator: {e}");
            ExitCode::from(1)
        }
    }
}
