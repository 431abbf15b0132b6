//! What a broker knows of the cluster: live brokers, the controller, every topic's assignment
//! and partition states, as last read from the coordinator through watches. The agent builds
//! it; shards get immutable snapshots (`Arc<ClusterView>`) and answer Metadata, route and
//! check leadership from them without asking anyone.

use std::collections::BTreeMap;

use super::controller::{LeaderAndIsr, NO_LEADER};

/// A registered (live) broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The czxid of its registration: the broker epoch (KIP-380).
    pub epoch: i64,
}

/// One partition: its replicas and, once the controller wrote it, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub replicas: Vec<i32>,
    pub state: Option<LeaderAndIsr>,
    /// Stat.version of the state znode (the partition epoch of conditional writes).
    pub state_version: i32,
    /// The zxid of the state's last write (-1 unknown). A broker whose registration (its
    /// broker epoch, a czxid) is newer than the state that names it leader is a new process:
    /// it waits for the controller's new epoch instead of leading its predecessor's.
    pub state_mzxid: i64,
}

impl PartitionView {
    /// The leader and its epoch, when there is one.
    pub fn leader(&self) -> Option<(i32, i32)> {
        self.state
            .as_ref()
            .filter(|state| state.leader != NO_LEADER)
            .map(|state| (state.leader, state.leader_epoch))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    pub id: [u8; 16],
    pub partitions: Vec<PartitionView>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: String,
    /// The controller's broker id, -1 while there is none.
    pub controller: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicView>,
}

impl ClusterView {
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionView> {
        let topic = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
    }

    /// The leader of a partition and its epoch; `None` when unknown or offline.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        self.partition(topic, partition)?.leader()
    }

    /// True once every partition of `topic` has a state with a leader (CreateTopics waits
    /// for this, as Kafka waits for the metadata of new partitions).
    pub fn topic_online(&self, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|t| t.partitions.iter().all(|p| p.leader().is_some()))
    }
}
