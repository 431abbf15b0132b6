//! The embedded single node `bench produce` / `e2e` start when no `--bootstrap` is given: a
//! broker on a free loopback port with its data in a temporary directory, run with the given
//! profile (its shard cores), stopped and deleted when the value is dropped. So one command
//! shows the whole system working on a fresh machine. The coordinator joins it once brokers
//! register there; until then the broker keeps its topic metadata in its data directory.

use std::net::SocketAddr;
use std::sync::Arc;

use broker::server::{self, ServeConfig, ServerHandle};
use broker::storage::io_latency::DiskLatency;

/// A running single node; dropping it stops the broker and removes its data.
pub struct EmbeddedNode {
    handle: Option<ServerHandle>,
    data_dir: tempfile::TempDir,
}

impl EmbeddedNode {
    /// Starts a broker with `profile` on 127.0.0.1 (a free port), data under the system's
    /// temporary directory.
    pub fn start(profile: tuning::Profile) -> Result<EmbeddedNode, String> {
        let data_dir = tempfile::Builder::new()
            .prefix("bench-node-")
            .tempdir()
            .map_err(|err| format!("temporary data dir: {err}"))?;
        let config = ServeConfig {
            profile,
            data_dir: data_dir.path().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            node_id: 0,
            auto_create_topics: false,
            default_partitions: 1,
            fetch_by_splice: true,
            metrics_listen: None,
            group: broker::group::GroupConfig::default(),
            offsets_topic_partitions: broker::group::DEFAULT_OFFSETS_TOPIC_PARTITIONS,
            cluster: None,
            security: Default::default(),
            inter_broker_sasl: None,
            authorizer: None,
        };
        let handle = server::start(config).map_err(|err| format!("embedded broker: {err}"))?;
        Ok(EmbeddedNode {
            handle: Some(handle),
            data_dir,
        })
    }

    /// The broker's address.
    pub fn address(&self) -> SocketAddr {
        self.handle.as_ref().expect("running until dropped").addr
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Reads the node's disk latency: the slowest write round or fdatasync of its logs.
    pub fn disk_meter(&self) -> DiskMeter {
        let handle = self.handle.as_ref().expect("running until dropped");
        DiskMeter(handle.metrics.iter().map(|m| m.disk.clone()).collect())
    }
}

/// The embedded node's disk, as its shards recorded it (`broker::storage::io_latency`).
#[derive(Clone, Debug)]
pub struct DiskMeter(Vec<Arc<DiskLatency>>);

impl DiskMeter {
    /// The slowest O_DIRECT write round, fdatasync or write of zeros ahead of any shard since
    /// the last call, ms.
    pub fn take_slowest_ms(&self) -> f64 {
        let us = self.0.iter().map(|d| d.take_slowest_us()).max();
        us.unwrap_or(0) as f64 / 1e3
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        // Stop the broker (it flushes and closes its partitions) before the directory goes.
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}
