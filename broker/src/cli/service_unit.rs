//! `broker tuning service-unit broker|coordinator`: prints the systemd unit that runs a broker
//! (`serve` with the given profile and data directory, pinned to the profile's shard cores) or
//! a coordinator (`--config zoo.cfg`, on the cores no shard uses), with the limits both need
//! (`tuning::systemd`). Paths are made absolute, as systemd requires; the profile is read so
//! that a unit is never written for a profile the broker would refuse.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use tuning::systemd::{self, ServiceUnit};
use tuning::Profile;

#[derive(Debug, Subcommand)]
pub enum Service {
    /// A unit running `broker serve`.
    Broker {
        /// The profile `serve` runs with (its shard cores become the unit's CPUAffinity).
        #[arg(long)]
        tuning: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// The broker executable the unit starts.
        #[arg(long, default_value = "/usr/local/bin/broker")]
        binary: PathBuf,
        /// The account the service runs as (root when absent).
        #[arg(long)]
        user: Option<String>,
        /// More `serve` flags, after `--` (e.g. `--listener`, `--coordinator`, `--broker-id`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// A unit running the coordinator.
    Coordinator {
        /// Its zoo.cfg.
        #[arg(long)]
        config: PathBuf,
        /// The profile of this host: the coordinator runs on the cores no shard uses, with the
        /// profile's flush policy.
        #[arg(long)]
        tuning: PathBuf,
        /// The coordinator executable the unit starts.
        #[arg(long, default_value = "/usr/local/bin/coordinator")]
        binary: PathBuf,
        /// The account the service runs as (root when absent).
        #[arg(long)]
        user: Option<String>,
    },
}

/// The unit's text, or why it cannot be written.
pub fn render(service: &Service) -> Result<String, String> {
    let unit = match service {
        Service::Broker {
            tuning,
            data_dir,
            binary,
            user,
            serve_args,
        } => {
            let profile = load(tuning)?;
            let mut exec_start = vec![
                absolute(binary)?,
                "serve".to_string(),
                "--tuning".to_string(),
                absolute(tuning)?,
                "--data-dir".to_string(),
                absolute(data_dir)?,
            ];
            exec_start.extend(serve_args.iter().cloned());
            ServiceUnit {
                description: "streambox broker (Kafka API)".to_string(),
                exec_start,
                user: user.clone(),
                cpus: systemd::broker_cpus(&profile),
            }
        }
        Service::Coordinator {
            config,
            tuning,
            binary,
            user,
        } => {
            let profile = load(tuning)?;
            ServiceUnit {
                description: "streambox coordinator (ZooKeeper protocol, ZAB)".to_string(),
                exec_start: vec![
                    absolute(binary)?,
                    "--config".to_string(),
                    absolute(config)?,
                    "--tuning".to_string(),
                    absolute(tuning)?,
                ],
                user: user.clone(),
                cpus: systemd::coordinator_cpus(&profile, tuning::online_cpus()),
            }
        }
    };
    Ok(unit.render())
}

fn load(path: &Path) -> Result<Profile, String> {
    Profile::load(path).map_err(|err| err.to_string())
}

fn absolute(path: &Path) -> Result<String, String> {
    let path = std::path::absolute(path).map_err(|err| format!("{}: {err}", path.display()))?;
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{}: not UTF-8", path.display()))
}
