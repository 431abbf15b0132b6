//! `broker`: the broker binary. Parses the command line and calls the library.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "broker",
    about = "Thread-per-core broker speaking the Kafka wire protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker until SIGTERM/SIGINT.
    Serve {
        /// Tuning profile (TOML); the builtin `default` when absent.
        #[arg(long)]
        tuning: Option<PathBuf>,
        /// Directory holding topic metadata and partition logs.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// host:port clients are told to connect to; the listen address when absent.
        #[arg(long)]
        advertise: Option<String>,
        /// Broker (node) id.
        #[arg(long, default_value_t = 0)]
        id: i32,
        /// Create unknown topics when a client asks for their metadata (off, as Kafka advises).
        #[arg(long)]
        auto_create_topics: bool,
        /// Partitions of auto-created topics and of CreateTopics with num_partitions = -1.
        #[arg(long, default_value_t = 1)]
        default_partitions: i32,
    },
}

fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            tuning,
            data_dir,
            listen,
            advertise,
            id,
            auto_create_topics,
            default_partitions,
        } => {
            let profile = match tuning::Profile::load_or_default(tuning.as_deref()) {
                Ok(profile) => profile,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            let advertise = match advertise.as_deref().map(parse_host_port) {
                None => None,
                Some(Some(pair)) => Some(pair),
                Some(None) => {
                    eprintln!("error: --advertise must be host:port");
                    return ExitCode::from(2);
                }
            };
            let config = broker::server::ServeConfig {
                profile,
                data_dir,
                listen,
                advertise,
                node_id: id,
                auto_create_topics,
                default_partitions,
            };
            match broker::server::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
