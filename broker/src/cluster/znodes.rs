//! The znodes of Kafka's ZooKeeper mode and their JSON, exactly as Kafka 2.x/3.x writes them,
//! so that operators' tools and habits carry over (`zkCli get /brokers/ids/1` reads the same).
//!
//! Encoders write what Kafka writes; decoders accept what Kafka writes, ignoring fields they
//! do not know (a newer Kafka's extra keys), and refuse the rest with a message naming the
//! path. Nothing here talks to ZooKeeper.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::controller::{ElectionType, LeaderAndIsr, Reassignment, TopicPartition};
use super::view::Endpoint;

pub const BROKER_IDS: &str = "/brokers/ids";
pub const TOPICS: &str = "/brokers/topics";
pub const CONFIG_TOPICS: &str = "/config/topics";
pub const DELETE_TOPICS: &str = "/admin/delete_topics";
pub const CONTROLLER: &str = "/controller";
pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
pub const CLUSTER_ID: &str = "/cluster/id";
/// The last block of producer ids handed to a broker.
pub const PRODUCER_ID_BLOCK: &str = "/latest_producer_id_block";
/// Ours, not Kafka's: a broker stopping cleanly creates `/controlled_shutdown/<id>`
/// (ephemeral) and the controller moves its leaderships away (Kafka asks with the
/// ControlledShutdown RPC, which kafka-protocol 0.18 no longer carries).
pub const CONTROLLED_SHUTDOWN: &str = "/controlled_shutdown";
/// Ours, not Kafka's: a broker whose log of a replica failed (a disk fault) keeps
/// `/offline_replicas/<id>` (ephemeral) listing them, and the controller moves their
/// leaderships and ISR places away (Kafka's broker notifies through
/// `/log_dir_event_notification` and answers the controller's LeaderAndIsr with the failed
/// partitions; kafka-protocol 0.18 no longer carries that RPC).
pub const OFFLINE_REPLICAS: &str = "/offline_replicas";
/// Ours, not Kafka's: a broker taking ElectLeaders creates a persistent sequential
/// `/admin/elect_leaders/request_<seq>` for the controller, which runs the elections and
/// deletes it (Kafka's controller takes them in memory from its own API handler).
pub const ELECT_LEADERS: &str = "/admin/elect_leaders";

/// The persistent parents every broker makes sure exist at start (Kafka's
/// `KafkaZkClient.createTopLevelPaths`).
pub const PERSISTENT_PATHS: &[&str] = &[
    "/brokers/ids",
    "/brokers/topics",
    "/config/topics",
    "/config/changes",
    "/config/users",
    "/admin/delete_topics",
    "/isr_change_notification",
    "/cluster",
    "/controlled_shutdown",
    "/offline_replicas",
    "/admin/elect_leaders",
];

pub fn broker_path(id: i32) -> String {
    format!("{BROKER_IDS}/{id}")
}

pub fn topic_path(topic: &str) -> String {
    format!("{TOPICS}/{topic}")
}

pub fn partitions_path(topic: &str) -> String {
    format!("{TOPICS}/{topic}/partitions")
}

pub fn partition_path(topic: &str, partition: i32) -> String {
    format!("{TOPICS}/{topic}/partitions/{partition}")
}

pub fn state_path(topic: &str, partition: i32) -> String {
    format!("{TOPICS}/{topic}/partitions/{partition}/state")
}

pub fn config_path(topic: &str) -> String {
    format!("{CONFIG_TOPICS}/{topic}")
}

pub fn controlled_shutdown_path(broker: i32) -> String {
    format!("{CONTROLLED_SHUTDOWN}/{broker}")
}

pub fn offline_replicas_path(broker: i32) -> String {
    format!("{OFFLINE_REPLICAS}/{broker}")
}

pub fn delete_path(topic: &str) -> String {
    format!("{DELETE_TOPICS}/{topic}")
}

/// A znode's data did not decode; names the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ZnodeError {
    pub path: String,
    pub reason: String,
}

fn decode<T: for<'de> Deserialize<'de>>(path: &str, data: &[u8]) -> Result<T, ZnodeError> {
    serde_json::from_slice(data).map_err(|err| ZnodeError {
        path: path.to_string(),
        reason: format!("not the JSON Kafka writes here: {err}"),
    })
}

/// Kafka's UUID text form: 16 bytes in URL-safe base64 without padding (22 characters).
pub fn uuid_text(id: &[u8; 16]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

pub fn parse_uuid_text(text: &str) -> Option<[u8; 16]> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

/// `/brokers/ids/<id>`, version 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    #[serde(default)]
    pub features: BTreeMap<String, serde_json::Value>,
    pub listener_security_protocol_map: BTreeMap<String, String>,
    pub endpoints: Vec<String>,
    #[serde(default = "minus_one")]
    pub jmx_port: i32,
    /// The PLAINTEXT endpoint's port, -1 without one (Kafka's legacy fields).
    pub port: i32,
    /// The PLAINTEXT endpoint's host, null without one.
    #[serde(default)]
    pub host: Option<String>,
    pub version: i32,
    /// Milliseconds since the epoch, as a string (Kafka writes it so).
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

fn minus_one() -> i32 {
    -1
}

impl BrokerRegistration {
    /// A registration of `endpoints`, each with its listener's security protocol.
    pub fn new(
        endpoints: &[(Endpoint, &str)],
        rack: Option<&str>,
        now_ms: u64,
    ) -> BrokerRegistration {
        let plaintext = endpoints
            .iter()
            .find(|(_, protocol)| *protocol == "PLAINTEXT")
            .map(|(e, _)| e);
        BrokerRegistration {
            features: BTreeMap::new(),
            listener_security_protocol_map: endpoints
                .iter()
                .map(|(e, protocol)| (e.listener.clone(), protocol.to_string()))
                .collect(),
            endpoints: endpoints
                .iter()
                .map(|(e, _)| {
                    if e.host.contains(':') {
                        format!("{}://[{}]:{}", e.listener, e.host, e.port)
                    } else {
                        format!("{}://{}:{}", e.listener, e.host, e.port)
                    }
                })
                .collect(),
            jmx_port: -1,
            port: plaintext.map_or(-1, |e| e.port),
            host: plaintext.map(|e| e.host.clone()),
            version: 5,
            timestamp: now_ms.to_string(),
            rack: rack.map(str::to_string),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain JSON")
    }

    pub fn decode(path: &str, data: &[u8]) -> Result<BrokerRegistration, ZnodeError> {
        decode(path, data)
    }

    /// Every endpoint (`LISTENER://host:port`; unreadable ones are left out).
    pub fn parsed_endpoints(&self) -> Vec<Endpoint> {
        self.endpoints
            .iter()
            .filter_map(|text| {
                let (listener, address) = text.split_once("://")?;
                let (host, port) = address.rsplit_once(':')?;
                Some(Endpoint {
                    listener: listener.to_string(),
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port: port.parse().ok()?,
                })
            })
            .collect()
    }

    /// The endpoint of the listener whose protocol is PLAINTEXT, else the legacy fields.
    pub fn plaintext_endpoint(&self) -> (String, i32) {
        let plaintext = self
            .listener_security_protocol_map
            .iter()
            .find(|(_, protocol)| protocol.as_str() == "PLAINTEXT")
            .map(|(name, _)| name.as_str());
        if let Some(endpoint) = self
            .parsed_endpoints()
            .into_iter()
            .find(|e| Some(e.listener.as_str()) == plaintext)
        {
            return (endpoint.host, endpoint.port);
        }
        (self.host.clone().unwrap_or_default(), self.port)
    }
}

/// `/latest_producer_id_block`: `{"version":1,"broker":N,"block_start":"S","block_end":"E"}`,
/// an inclusive range, numbers as strings (as Kafka writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub version: i32,
    pub broker: i32,
    pub block_start: String,
    pub block_end: String,
}

impl ProducerIdBlock {
    pub fn encode(broker: i32, start: i64, end_inclusive: i64) -> Vec<u8> {
        serde_json::to_vec(&ProducerIdBlock {
            version: 1,
            broker,
            block_start: start.to_string(),
            block_end: end_inclusive.to_string(),
        })
        .expect("plain JSON")
    }

    /// The block's last id.
    pub fn decode_end(data: &[u8]) -> Result<i64, ZnodeError> {
        let block: ProducerIdBlock = decode(PRODUCER_ID_BLOCK, data)?;
        block.block_end.parse().map_err(|_| ZnodeError {
            path: PRODUCER_ID_BLOCK.to_string(),
            reason: format!("block_end `{}` is not a number", block.block_end),
        })
    }
}

/// `/controller`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerZnode {
    pub version: i32,
    pub brokerid: i32,
    pub timestamp: String,
}

impl ControllerZnode {
    pub fn encode(broker: i32, now_ms: u64) -> Vec<u8> {
        serde_json::to_vec(&ControllerZnode {
            version: 1,
            brokerid: broker,
            timestamp: now_ms.to_string(),
        })
        .expect("plain JSON")
    }

    pub fn decode(data: &[u8]) -> Result<ControllerZnode, ZnodeError> {
        decode(CONTROLLER, data)
    }
}

/// `/controller_epoch` holds a plain integer as text.
pub fn decode_controller_epoch(data: &[u8]) -> Result<i32, ZnodeError> {
    std::str::from_utf8(data)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .ok_or_else(|| ZnodeError {
            path: CONTROLLER_EPOCH.to_string(),
            reason: "not an integer".to_string(),
        })
}

/// `/cluster/id`: note Kafka writes `version` as a string here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdZnode {
    pub version: String,
    pub id: String,
}

impl ClusterIdZnode {
    pub fn encode(id: &str) -> Vec<u8> {
        serde_json::to_vec(&ClusterIdZnode {
            version: "1".to_string(),
            id: id.to_string(),
        })
        .expect("plain JSON")
    }

    pub fn decode(data: &[u8]) -> Result<String, ZnodeError> {
        decode::<ClusterIdZnode>(CLUSTER_ID, data).map(|znode| znode.id)
    }
}

/// `/brokers/topics/<t>`, version 3: the replica assignment and the topic id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicZnode {
    pub version: i32,
    /// Partition index (as a string key) -> replicas, preferred leader first.
    pub partitions: BTreeMap<String, Vec<i32>>,
    #[serde(default)]
    pub adding_replicas: BTreeMap<String, Vec<i32>>,
    #[serde(default)]
    pub removing_replicas: BTreeMap<String, Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
}

/// A topic's assignment as the broker uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAssignment {
    pub id: [u8; 16],
    /// `replicas[p]` for every partition 0..n.
    pub replicas: Vec<Vec<i32>>,
}

impl TopicAssignment {
    pub fn encode(&self) -> Vec<u8> {
        let znode = TopicZnode {
            version: 3,
            partitions: self
                .replicas
                .iter()
                .enumerate()
                .map(|(p, replicas)| (p.to_string(), replicas.clone()))
                .collect(),
            adding_replicas: BTreeMap::new(),
            removing_replicas: BTreeMap::new(),
            topic_id: Some(uuid_text(&self.id)),
        };
        serde_json::to_vec(&znode).expect("plain JSON")
    }

    /// Decodes a topic znode; partitions must be exactly 0..n. A topic written by a Kafka
    /// without topic ids gets an all-zero id (Metadata then reports none).
    pub fn decode(path: &str, data: &[u8]) -> Result<TopicAssignment, ZnodeError> {
        let znode: TopicZnode = decode(path, data)?;
        let bad = |reason: String| ZnodeError {
            path: path.to_string(),
            reason,
        };
        let mut by_index = BTreeMap::new();
        for (key, replicas) in znode.partitions {
            let index: usize = key
                .parse()
                .map_err(|_| bad(format!("partition key `{key}` is not a number")))?;
            if replicas.is_empty() {
                return Err(bad(format!("partition {index} has no replicas")));
            }
            by_index.insert(index, replicas);
        }
        if by_index.keys().enumerate().any(|(i, &index)| i != index) {
            return Err(bad("partitions are not numbered 0..n".to_string()));
        }
        let id = match &znode.topic_id {
            Some(text) => parse_uuid_text(text)
                .ok_or_else(|| bad(format!("topic_id `{text}` is not a uuid")))?,
            None => [0; 16],
        };
        Ok(TopicAssignment {
            id,
            replicas: by_index.into_values().collect(),
        })
    }
}

impl TopicZnode {
    /// Decodes a topic znode as it is (for a rewrite that keeps what it does not change).
    pub fn decode(path: &str, data: &[u8]) -> Result<TopicZnode, ZnodeError> {
        decode(path, data)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain JSON")
    }

    /// The partitions being reassigned: Kafka's `adding_replicas` and `removing_replicas`
    /// (a key that is not a partition number is skipped; `TopicAssignment::decode` refuses
    /// such a znode anyway).
    pub fn reassignments(&self) -> BTreeMap<i32, Reassignment> {
        let mut out: BTreeMap<i32, Reassignment> = BTreeMap::new();
        for (key, adding) in &self.adding_replicas {
            if let (Ok(p), false) = (key.parse::<i32>(), adding.is_empty()) {
                out.entry(p).or_default().adding = adding.clone();
            }
        }
        for (key, removing) in &self.removing_replicas {
            if let (Ok(p), false) = (key.parse::<i32>(), removing.is_empty()) {
                out.entry(p).or_default().removing = removing.clone();
            }
        }
        out
    }

    /// Sets partition `p`'s replicas and reassignment (none: removes its entries).
    pub fn set_partition(&mut self, p: i32, replicas: Vec<i32>, reassignment: &Reassignment) {
        let key = p.to_string();
        self.partitions.insert(key.clone(), replicas);
        for (map, list) in [
            (&mut self.adding_replicas, &reassignment.adding),
            (&mut self.removing_replicas, &reassignment.removing),
        ] {
            if list.is_empty() {
                map.remove(&key);
            } else {
                map.insert(key.clone(), list.clone());
            }
        }
    }
}

/// `/admin/elect_leaders/request_<seq>` (ours): `{"version":1,"election_type":0,
/// "partitions":[{"topic":"t","partition":0}]}`, election_type as in ElectLeaders (0
/// preferred, 1 unclean).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ElectLeadersZnode {
    version: i32,
    election_type: i8,
    partitions: Vec<OfflineReplica>,
}

pub fn encode_elect_leaders(election: ElectionType, partitions: &[TopicPartition]) -> Vec<u8> {
    serde_json::to_vec(&ElectLeadersZnode {
        version: 1,
        election_type: match election {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        },
        partitions: listed(partitions),
    })
    .expect("plain JSON")
}

pub fn decode_elect_leaders(
    path: &str,
    data: &[u8],
) -> Result<(ElectionType, Vec<TopicPartition>), ZnodeError> {
    let znode: ElectLeadersZnode = decode(path, data)?;
    let election = match znode.election_type {
        0 => ElectionType::Preferred,
        1 => ElectionType::Unclean,
        other => {
            return Err(ZnodeError {
                path: path.to_string(),
                reason: format!("election_type {other} is neither 0 nor 1"),
            })
        }
    };
    Ok((
        election,
        znode
            .partitions
            .into_iter()
            .map(|r| TopicPartition::new(r.topic, r.partition))
            .collect(),
    ))
}

/// `/brokers/topics/<t>/partitions/<p>/state`, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateZnode {
    controller_epoch: i32,
    leader: i32,
    version: i32,
    leader_epoch: i32,
    isr: Vec<i32>,
}

pub fn encode_state(state: &LeaderAndIsr) -> Vec<u8> {
    serde_json::to_vec(&StateZnode {
        controller_epoch: state.controller_epoch,
        leader: state.leader,
        version: 1,
        leader_epoch: state.leader_epoch,
        isr: state.isr.clone(),
    })
    .expect("plain JSON")
}

pub fn decode_state(path: &str, data: &[u8]) -> Result<LeaderAndIsr, ZnodeError> {
    let znode: StateZnode = decode(path, data)?;
    Ok(LeaderAndIsr {
        leader: znode.leader,
        leader_epoch: znode.leader_epoch,
        isr: znode.isr,
        controller_epoch: znode.controller_epoch,
    })
}

/// `/config/topics/<t>`: the topic's config overrides, values as strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ConfigZnode {
    version: i32,
    config: BTreeMap<String, String>,
}

pub fn encode_config(config: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(&ConfigZnode {
        version: 1,
        config: config.clone(),
    })
    .expect("plain JSON")
}

pub fn decode_config(path: &str, data: &[u8]) -> Result<BTreeMap<String, String>, ZnodeError> {
    decode::<ConfigZnode>(path, data).map(|znode| znode.config)
}

/// One failed replica in `/offline_replicas/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OfflineReplica {
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct OfflineReplicasZnode {
    version: i32,
    partitions: Vec<OfflineReplica>,
}

/// `/offline_replicas/<id>`: `{"version":1,"partitions":[{"topic":"t","partition":0}]}`.
pub fn encode_offline_replicas(partitions: &BTreeSet<TopicPartition>) -> Vec<u8> {
    serde_json::to_vec(&OfflineReplicasZnode {
        version: 1,
        partitions: listed(partitions),
    })
    .expect("plain JSON")
}

/// Partitions as the `{"topic":..,"partition":..}` objects of our znodes' lists.
fn listed<'a>(partitions: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<OfflineReplica> {
    partitions
        .into_iter()
        .map(|tp| OfflineReplica {
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
        .collect()
}

pub fn decode_offline_replicas(
    path: &str,
    data: &[u8],
) -> Result<BTreeSet<TopicPartition>, ZnodeError> {
    let znode: OfflineReplicasZnode = decode(path, data)?;
    Ok(znode
        .partitions
        .into_iter()
        .map(|r| TopicPartition::new(r.topic, r.partition))
        .collect())
}

#[cfg(test)]
mod tests {
    //! Proves the JSON matches what Kafka writes (field names, string-typed timestamps and
    //! versions, rack only when set) by decoding texts in Kafka's form and re-encoding ours.
    use super::*;

    #[test]
    fn reassignments_and_election_requests_round_trip() {
        let text = br#"{"version":3,"partitions":{"0":[3,1,2],"1":[1]},"adding_replicas":{"0":[3]},"removing_replicas":{"0":[2]},"topic_id":"AAAAAAAAAAAAAAAAAAAAAA"}"#;
        let mut znode = TopicZnode::decode("/brokers/topics/t", text).unwrap();
        let reassigning = znode.reassignments();
        assert_eq!(
            reassigning,
            BTreeMap::from([(
                0,
                Reassignment {
                    adding: vec![3],
                    removing: vec![2]
                }
            )])
        );
        znode.set_partition(0, vec![3, 1], &Reassignment::default());
        let again = TopicZnode::decode("/brokers/topics/t", &znode.encode()).unwrap();
        assert!(again.reassignments().is_empty());
        assert_eq!(again.partitions["0"], vec![3, 1]);
        assert_eq!(again.topic_id.as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAA"));

        let tps = vec![TopicPartition::new("t", 0), TopicPartition::new("u", 2)];
        let data = encode_elect_leaders(ElectionType::Unclean, &tps);
        assert_eq!(
            decode_elect_leaders("/admin/elect_leaders/request_1", &data).unwrap(),
            (ElectionType::Unclean, tps)
        );
        let bad = br#"{"version":1,"election_type":7,"partitions":[]}"#;
        let err = decode_elect_leaders("/admin/elect_leaders/request_2", bad).unwrap_err();
        assert!(err.to_string().contains("request_2"), "{err}");
    }

    #[test]
    fn offline_replicas_round_trip_and_bad_data_names_the_path() {
        let set: BTreeSet<TopicPartition> =
            [TopicPartition::new("a", 1), TopicPartition::new("b", 0)].into();
        let data = encode_offline_replicas(&set);
        assert_eq!(
            std::str::from_utf8(&data).unwrap(),
            r#"{"version":1,"partitions":[{"topic":"a","partition":1},{"topic":"b","partition":0}]}"#
        );
        assert_eq!(
            decode_offline_replicas("/offline_replicas/1", &data),
            Ok(set)
        );
        let err = decode_offline_replicas("/offline_replicas/1", b"[1]").unwrap_err();
        assert_eq!(err.path, "/offline_replicas/1");
    }

    #[test]
    fn broker_registration_is_kafkas_v5() {
        let endpoint = |listener: &str, host: &str, port| Endpoint {
            listener: listener.into(),
            host: host.into(),
            port,
        };
        let ours = BrokerRegistration::new(
            &[(endpoint("PLAINTEXT", "127.0.0.1", 9092), "PLAINTEXT")],
            None,
            1_600_000_000_000,
        );
        let json: serde_json::Value = serde_json::from_slice(&ours.encode()).unwrap();
        assert_eq!(json["version"], 5);
        assert_eq!(json["timestamp"], "1600000000000");
        assert_eq!(json["endpoints"][0], "PLAINTEXT://127.0.0.1:9092");
        assert_eq!(
            json["listener_security_protocol_map"]["PLAINTEXT"],
            "PLAINTEXT"
        );
        assert!(json.get("rack").is_none());
        let racked = BrokerRegistration::new(
            &[(endpoint("PLAINTEXT", "h", 1), "PLAINTEXT")],
            Some("r1"),
            0,
        );
        let json: serde_json::Value = serde_json::from_slice(&racked.encode()).unwrap();
        assert_eq!(json["rack"], "r1");
        // As a Kafka 3.x broker writes it.
        let kafka = br#"{"features":{},"listener_security_protocol_map":{"PLAINTEXT":"PLAINTEXT"},"endpoints":["PLAINTEXT://kafka-1:29092"],"jmx_port":-1,"port":29092,"host":"kafka-1","version":5,"timestamp":"1700000000000"}"#;
        let parsed = BrokerRegistration::decode("/brokers/ids/1", kafka).unwrap();
        assert_eq!(parsed.plaintext_endpoint(), ("kafka-1".to_string(), 29092));
        // Two listeners, none PLAINTEXT: the legacy fields are null and -1, as Kafka writes.
        let two = BrokerRegistration::new(
            &[
                (endpoint("INTERNAL", "10.0.0.1", 9093), "SSL"),
                (endpoint("CLIENT", "::1", 9094), "SASL_SSL"),
            ],
            None,
            0,
        );
        let json: serde_json::Value = serde_json::from_slice(&two.encode()).unwrap();
        assert_eq!(json["endpoints"][0], "INTERNAL://10.0.0.1:9093");
        assert_eq!(json["endpoints"][1], "CLIENT://[::1]:9094");
        assert_eq!(json["listener_security_protocol_map"]["INTERNAL"], "SSL");
        assert_eq!(json["host"], serde_json::Value::Null);
        assert_eq!(json["port"], -1);
        let back = BrokerRegistration::decode("/brokers/ids/2", &two.encode()).unwrap();
        assert_eq!(
            back.parsed_endpoints(),
            vec![
                endpoint("INTERNAL", "10.0.0.1", 9093),
                endpoint("CLIENT", "::1", 9094)
            ]
        );
    }

    #[test]
    fn topic_znode_round_trips_and_rejects_gaps() {
        let assignment = TopicAssignment {
            id: [7; 16],
            replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1]],
        };
        let bytes = assignment.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["partitions"]["1"], serde_json::json!([2, 3]));
        assert_eq!(json["topic_id"].as_str().unwrap().len(), 22);
        assert_eq!(TopicAssignment::decode("/t", &bytes).unwrap(), assignment);
        let gap = br#"{"version":3,"partitions":{"0":[1],"2":[1]}}"#;
        assert!(TopicAssignment::decode("/t", gap).is_err());
        let garbage = b"{";
        assert!(TopicAssignment::decode("/t", garbage)
            .unwrap_err()
            .to_string()
            .starts_with("/t: "));
    }

    #[test]
    fn state_and_small_znodes() {
        let kafka =
            br#"{"controller_epoch":3,"leader":1,"version":1,"leader_epoch":4,"isr":[1,2]}"#;
        let state = decode_state("/s", kafka).unwrap();
        assert_eq!(
            state,
            LeaderAndIsr {
                leader: 1,
                leader_epoch: 4,
                isr: vec![1, 2],
                controller_epoch: 3
            }
        );
        assert_eq!(decode_state("/s", &encode_state(&state)).unwrap(), state);
        assert_eq!(decode_controller_epoch(b"12").unwrap(), 12);
        assert!(decode_controller_epoch(b"x").is_err());
        let cluster = ClusterIdZnode::encode("abc");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&cluster).unwrap()["version"],
            "1"
        );
        assert_eq!(ClusterIdZnode::decode(&cluster).unwrap(), "abc");
        let config: BTreeMap<String, String> =
            [("min.insync.replicas".to_string(), "2".to_string())].into();
        assert_eq!(
            decode_config("/c", &encode_config(&config)).unwrap(),
            config
        );
        let controller = ControllerZnode::decode(&ControllerZnode::encode(3, 5)).unwrap();
        assert_eq!((controller.version, controller.brokerid), (1, 3));
        assert_eq!(parse_uuid_text(&uuid_text(&[9; 16])), Some([9; 16]));
    }
}
