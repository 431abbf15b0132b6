//! Shared helpers of the cluster tests: a standalone coordinator in-process on a free
//! loopback port (stopped when dropped), and a cluster member's `ServeConfig`. Test crates
//! that use it also declare `mod kafka_support;`.

#![allow(dead_code)]

use std::path::Path;

use broker::cluster::ClusterConfig;
use broker::server::ServeConfig;

/// A standalone coordinator (tickTime 200 ms: sessions of 400 ms .. 4 s).
pub struct Coordinator {
    handle: Option<coordinator::server::ServerHandle>,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    pub fn start() -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "tickTime=200\ndataDir={}\nclientPort=0\nclientPortAddress=127.0.0.1\n",
            dir.path().display()
        );
        let zoo = coordinator::config::ZooConfig::parse(&text, Path::new("test.cfg")).unwrap();
        let handle = coordinator::server::start(coordinator::server::ServerOptions::new(zoo))
            .expect("coordinator starts");
        Coordinator {
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn addr(&self) -> String {
        self.handle.as_ref().unwrap().local_addr().to_string()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// Broker `id` of a cluster at `connect` (coordinator address and chroot), one shard, the
/// given cluster settings.
pub fn member_config(data_dir: &Path, cluster: ClusterConfig) -> ServeConfig {
    ServeConfig {
        profile: crate::kafka_support::dev_profile(),
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        node_id: cluster.broker_id,
        auto_create_topics: false,
        default_partitions: 1,
        fetch_by_splice: true,
        metrics_listen: None,
        group: broker::group::GroupConfig::default(),
        offsets_topic_partitions: 3,
        cluster: Some(cluster),
        security: Default::default(),
        inter_broker_sasl: None,
        authorizer: None,
    }
}
