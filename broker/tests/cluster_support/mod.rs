//! Shared helpers of the cluster tests: a standalone coordinator in-process on a free
//! loopback port (stopped when dropped), a cluster member's `ServeConfig`, the members of a
//! cluster started and stopped by id, a ZooKeeper client for the znodes, polling with a
//! deadline, and a consumer's read of a partition. Test crates
//! that use it also declare `mod kafka_support;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use broker::cli::client::{complete_batches, Client};
use broker::cluster::ClusterConfig;
use broker::server::{self, ServeConfig, ServerHandle};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use zookeeper_client as zk;

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

/// A cluster member's settings with the tests' defaults (session 2 s, one replica, ISR lag
/// 2 s); tests change what they need with struct update syntax.
pub fn cluster_config(id: i32, connect: String) -> ClusterConfig {
    ClusterConfig {
        broker_id: id,
        connect,
        session_timeout_ms: 2000,
        rack: None,
        unclean_leader_election: false,
        default_replication_factor: 1,
        min_insync_replicas: 1,
        replica_lag_time_max_ms: 2000,
        controlled_shutdown_timeout_ms: 5000,
        coordinator_digest: None,
        coordinator_set_acl: false,
    }
}

/// Makes a member's settings from its id and data directory.
pub type MemberConfig = dyn Fn(i32, &Path) -> ServeConfig;

/// Brokers of one cluster in this process, by id, each with its data directory; started and
/// stopped by the test, all stopped when dropped (also on failure).
pub struct Members {
    handles: BTreeMap<i32, ServerHandle>,
    pub dirs: BTreeMap<i32, PathBuf>,
    config: Box<MemberConfig>,
    _root: tempfile::TempDir,
}

impl Members {
    /// Members with these data directories (under `root`, kept until drop), none started;
    /// `config` makes a member's settings from its id and data directory.
    pub fn new(
        dirs: BTreeMap<i32, PathBuf>,
        root: tempfile::TempDir,
        config: impl Fn(i32, &Path) -> ServeConfig + 'static,
    ) -> Members {
        Members {
            handles: BTreeMap::new(),
            dirs,
            config: Box::new(config),
            _root: root,
        }
    }

    pub fn addr(&self, id: i32) -> String {
        self.handles[&id].addr.to_string()
    }

    pub fn stop(&mut self, id: i32) {
        if let Some(handle) = self.handles.remove(&id) {
            handle.shutdown();
        }
    }

    pub fn start(&mut self, id: i32) {
        let handle = server::start((self.config)(id, &self.dirs[&id])).unwrap();
        self.handles.insert(id, handle);
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for (_, handle) in std::mem::take(&mut self.handles) {
            handle.shutdown();
        }
    }
}

/// Polls `check` every 50 ms until it gives a value; fails the test after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A ZooKeeper client (on its own current-thread runtime) for reading the cluster's znodes.
pub struct Zk(pub tokio::runtime::Runtime, pub zk::Client);

impl Zk {
    /// Connects to `connect` (`host:port/chroot`).
    pub fn connect(connect: &str) -> Zk {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(zk::Client::connect(connect)).unwrap();
        Zk(runtime, client)
    }

    pub fn json(&self, path: &str) -> Option<serde_json::Value> {
        let (data, _) = self.0.block_on(self.1.get_data(path)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// `(leader, leader_epoch, isr)` of a partition, from its state znode.
    pub fn state(&self, topic: &str, partition: i32) -> Option<(i32, i32, Vec<i32>)> {
        let json = self.json(&format!(
            "/brokers/topics/{topic}/partitions/{partition}/state"
        ))?;
        Some((
            json["leader"].as_i64()? as i32,
            json["leader_epoch"].as_i64()? as i32,
            ints(&json["isr"]),
        ))
    }
}

/// The integers of a JSON array (none when it is not one).
pub fn ints(value: &serde_json::Value) -> Vec<i32> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_i64())
                .map(|v| v as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// Every record a consumer reads from `addr`'s `topic`-`partition`: offset -> value.
pub fn consume(addr: &str, topic: &str, partition: i32) -> BTreeMap<i64, Vec<u8>> {
    let mut client = Client::connect(addr).unwrap();
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let response = client.call(&request, 12).unwrap();
        let answer = &response.responses[0].partitions[0];
        assert_eq!(answer.error_code, 0, "fetch from {addr}");
        let before = out.len();
        for mut batch in complete_batches(answer.records.clone().unwrap_or_default()) {
            for record in RecordBatchDecoder::decode(&mut batch).unwrap().records {
                if record.offset >= offset {
                    out.insert(record.offset, record.value.unwrap().to_vec());
                    offset = record.offset + 1;
                }
            }
        }
        if out.len() == before {
            return out;
        }
    }
}
