//! What a broker knows of the cluster: live brokers, the controller, every topic's assignment
//! and partition states, as last read from the coordinator through watches. The agent builds
//! it; shards get immutable snapshots (`Arc<ClusterView>`) and answer Metadata, route and
//! check leadership from them without asking anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::controller::{LeaderAndIsr, Reassignment, TopicPartition, NO_LEADER};

/// One listener's endpoint of a broker, as its registration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Kafka's listener name (`PLAINTEXT`, `INTERNAL`...).
    pub listener: String,
    pub host: String,
    pub port: i32,
}

/// A registered (live) broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    /// Its PLAINTEXT endpoint (or the registration's legacy host and port).
    pub host: String,
    pub port: i32,
    /// Every listener's endpoint.
    pub endpoints: Vec<Endpoint>,
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
    /// The reassignment in progress (adding/removing replicas of the topic znode).
    pub reassignment: Reassignment,
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
    /// Brokers whose registration went away, and when: Metadata keeps listing each for
    /// [`DEPARTED_LISTED`] (see [`ClusterView::metadata_brokers`]).
    pub departed: BTreeMap<i32, (BrokerInfo, Instant)>,
    pub topics: BTreeMap<String, TopicView>,
    /// Per broker, its replicas whose log failed (`/offline_replicas/<id>`).
    pub offline_replicas: BTreeMap<i32, BTreeSet<TopicPartition>>,
}

/// How long Metadata keeps listing a broker after its registration went away. The
/// controller moves the broker's leaderships in the same moment; librdkafka (2.16) re-asks
/// for a dead leader's partitions once a second, and when one answer both moves a partition
/// and drops its old leader from the broker list, it parks the partition's messages on its
/// internal broker until the next answer, a second later. Listed a little longer, the old
/// leader is dropped only after the client moved the partition to the new one.
pub const DEPARTED_LISTED: Duration = Duration::from_secs(3);

impl BrokerInfo {
    /// The host and port of its listener `name`, when it has that listener.
    pub fn endpoint(&self, name: &str) -> Option<(&str, i32)> {
        self.endpoints
            .iter()
            .find(|e| e.listener == name)
            .map(|e| (e.host.as_str(), e.port))
    }
}

impl ClusterView {
    /// Broker `id`'s replica of `topic`-`partition` failed (a disk fault on that broker).
    pub fn replica_failed(&self, id: i32, topic: &str, partition: i32) -> bool {
        self.offline_replicas.get(&id).is_some_and(|failed| {
            failed.contains(&TopicPartition {
                topic: topic.to_string(),
                partition,
            })
        })
    }

    /// The brokers a Metadata answer lists at `now`: the live ones, and those that left
    /// less than [`DEPARTED_LISTED`] ago.
    pub fn metadata_brokers(&self, now: Instant) -> impl Iterator<Item = &BrokerInfo> {
        let live = self.brokers.values();
        let departed = self
            .departed
            .values()
            .filter(move |(_, at)| now.saturating_duration_since(*at) < DEPARTED_LISTED)
            .map(|(broker, _)| broker);
        live.chain(departed)
    }

    /// Takes a broker out of the live set; it stays listed in Metadata for a while.
    pub fn broker_departed(&mut self, id: i32, now: Instant) -> bool {
        self.departed
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < DEPARTED_LISTED);
        match self.brokers.remove(&id) {
            Some(broker) => {
                self.departed.insert(id, (broker, now));
                true
            }
            None => false,
        }
    }

    /// Records a live registration (new, or back after it departed).
    pub fn broker_registered(&mut self, broker: BrokerInfo) {
        self.departed.remove(&broker.id);
        self.brokers.insert(broker.id, broker);
    }

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

#[cfg(test)]
mod tests {
    //! A departed broker stays in Metadata's list for [`DEPARTED_LISTED`], not longer, and
    //! leaves the list of departed brokers when it registers again.
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: 9090 + id,
            endpoints: Vec::new(),
            rack: None,
            epoch: id as i64,
        }
    }

    fn listed(view: &ClusterView, now: Instant) -> Vec<i32> {
        view.metadata_brokers(now).map(|b| b.id).collect()
    }

    #[test]
    fn departed_broker_is_listed_for_a_while_then_dropped() {
        let start = Instant::now();
        let mut view = ClusterView::default();
        view.broker_registered(broker(1));
        view.broker_registered(broker(2));
        assert!(view.broker_departed(2, start));
        assert!(!view.broker_departed(2, start), "already gone");
        assert_eq!(view.brokers.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            listed(&view, start + Duration::from_millis(100)),
            vec![1, 2]
        );
        assert_eq!(listed(&view, start + DEPARTED_LISTED), vec![1]);
        view.broker_registered(broker(2));
        assert!(view.departed.is_empty());
        assert_eq!(listed(&view, start + DEPARTED_LISTED * 2), vec![1, 2]);
    }
}
