//! Where `broker users` and `broker acls` find what they edit: a stopped single node's data
//! directory, or a cluster's coordinator reached the way its brokers reach it (the digest of
//! `--coordinator-digest-file`, and with `--coordinator-set-acl` new znodes readable by that
//! user only, Kafka's `zookeeper.set.acl`). One set of flags and one connection path for both
//! commands.

use std::future::Future;
use std::path::PathBuf;

use crate::cluster::users::ZnodeOptions;

/// How long a command waits for the coordinator, milliseconds.
const COORDINATOR_SESSION_TIMEOUT_MS: u64 = 10_000;

/// The stored state a command edits.
pub enum StoreAt {
    /// A single node's data directory.
    DataDir(PathBuf),
    /// A cluster's coordinator.
    Coordinator(CoordinatorAccess),
}

/// How a command reaches a cluster's coordinator.
pub struct CoordinatorAccess {
    /// Kafka's `zookeeper.connect`: `host:port[,host:port...][/chroot]`.
    pub connect: String,
    /// `user:password` for `addauth digest`.
    pub digest: Option<String>,
    /// New znodes get the creator-only-writes ACL.
    pub set_acl: bool,
}

impl CoordinatorAccess {
    /// The ACLs the command's new znodes get.
    pub fn znode_options(&self) -> ZnodeOptions {
        ZnodeOptions {
            secure: self.set_acl,
        }
    }

    /// Connects (authenticated when a digest is given) and runs `work` on a one-off runtime.
    pub fn run<T, F, Fut>(&self, work: F) -> Result<T, String>
    where
        F: FnOnce(zookeeper_client::Client, ZnodeOptions) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let options = self.znode_options();
        runtime.block_on(async move {
            let client = crate::cluster::agent::connect_to(
                &self.connect,
                COORDINATOR_SESSION_TIMEOUT_MS,
                self.digest.as_deref(),
                &options,
            )
            .await?;
            work(client, options).await
        })
    }
}

/// The command-line flags that say where the store is.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// A single node's data directory (the broker stopped).
    #[arg(
        long,
        required_unless_present = "coordinator",
        conflicts_with = "coordinator"
    )]
    data_dir: Option<PathBuf>,
    /// A cluster's coordinator, `host:port[,host:port...][/chroot]` (brokers may run).
    #[arg(long)]
    coordinator: Option<String>,
    /// With --coordinator: a file whose first line is `user:password` for `addauth digest`.
    #[arg(long, requires = "coordinator")]
    coordinator_digest_file: Option<PathBuf>,
    /// With --coordinator: new znodes are writable by the digest user only (Kafka's
    /// zookeeper.set.acl).
    #[arg(long, requires = "coordinator_digest_file")]
    coordinator_set_acl: bool,
}

impl StoreArgs {
    pub fn at(self) -> Result<StoreAt, String> {
        match (self.data_dir, self.coordinator) {
            (Some(dir), None) => Ok(StoreAt::DataDir(dir)),
            (None, Some(connect)) => Ok(StoreAt::Coordinator(CoordinatorAccess {
                connect,
                digest: self
                    .coordinator_digest_file
                    .as_deref()
                    .map(super::users::read_digest_file)
                    .transpose()?,
                set_acl: self.coordinator_set_acl,
            })),
            _ => Err("give --data-dir or --coordinator".into()),
        }
    }
}
