//! Topic metadata: which topics exist, their ids, per-topic config overrides and the shard each
//! partition lives on.
//!
//! In single-node mode this lives durably in the data dir (`topics.json`, replaced atomically
//! with fsync); in cluster mode it moves to the coordinator. Both sit behind [`TopicStore`], so
//! the server only ever talks to the trait. This module validates names, partition counts and
//! configs and decides placement; it does not open partition logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions one topic may have; bounds the work one CreateTopics request can cause.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// One topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    /// The topic id Kafka clients see (Metadata v10+, Fetch v13+), 16 random bytes.
    pub id: [u8; 16],
    /// `shards[p]` is the shard that owns partition `p`; fixed at creation.
    pub shards: Vec<u32>,
    /// Config overrides set at creation (`retention.ms` ...), as Kafka names them.
    pub configs: BTreeMap<String, String>,
    /// Cluster mode: `replicas[p]` lists the brokers holding partition `p` (from the
    /// coordinator). Empty on a single node, which holds every partition.
    #[serde(default)]
    pub replicas: Vec<Vec<i32>>,
}

impl Topic {
    pub fn partition_count(&self) -> i32 {
        self.shards.len() as i32
    }

    /// Whether broker `node` keeps a log of `partition` (always, on a single node).
    pub fn is_replica(&self, partition: usize, node: i32) -> bool {
        self.replicas.is_empty()
            || self
                .replicas
                .get(partition)
                .is_some_and(|replicas| replicas.contains(&node))
    }
}

/// Why a topic operation failed, with the Kafka error code a client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name `{0}`: {1}")]
    InvalidName(String, &'static str),
    #[error("invalid partition count {0}: must be 1 ..= {PARTITIONS_PER_TOPIC_MAX}")]
    InvalidPartitions(i32),
    #[error("invalid replication factor {0}: {1}")]
    InvalidReplicationFactor(i16, String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    TimedOut(String),
    #[error("invalid config `{0}`: {1}")]
    InvalidConfig(String, String),
    #[error("topic store: {0}")]
    Storage(String),
    /// The data directory cannot hold the new partitions (see `storage::disk_budget`).
    #[error("{0}")]
    NoSpace(String),
}

impl TopicError {
    /// The Kafka error code for this failure.
    pub fn code(&self) -> i16 {
        match self {
            TopicError::AlreadyExists(_) => 36,
            TopicError::UnknownTopic(_) => 3,
            TopicError::InvalidName(..) => 17,
            TopicError::InvalidPartitions(_) => 37,
            TopicError::InvalidReplicationFactor(..) => 38,
            TopicError::InvalidReplicaAssignment(_) => 39,
            TopicError::TimedOut(_) => 7,
            TopicError::InvalidConfig(..) => 40,
            TopicError::Storage(_) => -1,
            // POLICY_VIOLATION: clients show its message and do not retry.
            TopicError::NoSpace(_) => 44,
        }
    }
}

/// The topic configs this broker understands, with what their value must be.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "flush.policy",
    "unclean.leader.election.enable",
    "min.insync.replicas",
];

/// Checks a topic name the way Kafka does.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let bad = |why| Err(TopicError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not allowed");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// Checks one config override; `segment.bytes` and friends must be in the ranges storage takes.
pub fn validate_config(key: &str, value: &str) -> Result<(), TopicError> {
    let bad = |why: &str| Err(TopicError::InvalidConfig(key.to_string(), why.to_string()));
    let int = || value.trim().parse::<i64>().ok();
    match key {
        "cleanup.policy" if value == "delete" => Ok(()),
        "cleanup.policy" => bad("only `delete` is supported"),
        "retention.ms" | "retention.bytes" => match int() {
            Some(v) if v == -1 || v > 0 => Ok(()),
            _ => bad("must be -1 or a positive integer"),
        },
        "segment.bytes" => match int() {
            Some(v) if (64 * 1024..=i32::MAX as i64).contains(&v) => Ok(()),
            _ => bad("must be an integer in 65536 ..= 2147483647"),
        },
        "segment.ms" => match int() {
            Some(v) if v > 0 => Ok(()),
            _ => bad("must be a positive integer"),
        },
        "max.message.bytes" => match int() {
            Some(v) if (61..=i32::MAX as i64).contains(&v) => Ok(()),
            _ => bad("must be an integer >= 61"),
        },
        "min.insync.replicas" => match int() {
            Some(v) if v >= 1 => Ok(()),
            _ => bad("must be a positive integer"),
        },
        "unclean.leader.election.enable" if value == "true" || value == "false" => Ok(()),
        "unclean.leader.election.enable" => bad("must be `true` or `false`"),
        "flush.policy" => match tuning::FlushPolicy::parse(value) {
            Some(_) => Ok(()),
            None => bad("must be `always`, `never` or `interval_ms=N`"),
        },
        _ => bad("unknown topic config"),
    }
}

/// Spreads `count` new partitions over `shard_count` shards, each to the shard that owns the
/// fewest partitions so far (ties to the lowest shard), and counts them in `owned`.
pub fn place_partitions(owned: &mut [usize], count: usize) -> Vec<u32> {
    debug_assert!(!owned.is_empty());
    (0..count)
        .map(|_| {
            let (shard, _) = owned
                .iter()
                .enumerate()
                .min_by_key(|(shard, n)| (**n, *shard))
                .expect("at least one shard");
            owned[shard] += 1;
            shard as u32
        })
        .collect()
}

/// A fresh random topic id (never all zero, which Kafka reserves for "no id").
pub fn new_topic_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    loop {
        // SAFETY: writes at most id.len() bytes into id.
        let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
        if n == id.len() as isize && id != [0u8; 16] {
            return id;
        }
    }
}

/// Where topic metadata is kept. One implementation per deployment mode.
pub trait TopicStore {
    /// Every topic, by name.
    fn topics(&self) -> &BTreeMap<String, Topic>;
    /// Adds a topic (already validated and placed) durably.
    fn create(&mut self, topic: Topic) -> Result<(), TopicError>;
    /// Removes a topic durably and returns it.
    fn delete(&mut self, name: &str) -> Result<Topic, TopicError>;
    /// Adds or replaces a topic durably (cluster mode: the coordinator decided it).
    fn put(&mut self, topic: Topic) -> Result<(), TopicError>;
}

/// The single-node [`TopicStore`]: `topics.json` in the data dir.
pub struct FileTopicStore {
    path: PathBuf,
    topics: BTreeMap<String, Topic>,
}

#[derive(Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<Topic>,
}

impl FileTopicStore {
    /// Opens (or starts) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<FileTopicStore, TopicError> {
        let path = data_dir.join("topics.json");
        let topics = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TopicsFile = serde_json::from_slice(&bytes).map_err(|err| {
                    TopicError::Storage(format!("{}: corrupt: {err}", path.display()))
                })?;
                if file.version != 1 {
                    return Err(TopicError::Storage(format!(
                        "{}: unknown version {}",
                        path.display(),
                        file.version
                    )));
                }
                file.topics
                    .into_iter()
                    .map(|topic| (topic.name.clone(), topic))
                    .collect()
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => {
                return Err(TopicError::Storage(format!("{}: {err}", path.display())));
            }
        };
        Ok(FileTopicStore { path, topics })
    }

    fn persist(&self) -> Result<(), TopicError> {
        let file = TopicsFile {
            version: 1,
            topics: self.topics.values().cloned().collect(),
        };
        let text =
            serde_json::to_vec_pretty(&file).map_err(|err| TopicError::Storage(err.to_string()))?;
        crate::data_file::replace(&self.path, &text, 0o644)
            .map_err(|err| TopicError::Storage(format!("{}: {err}", self.path.display())))
    }
}

impl TopicStore for FileTopicStore {
    fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    fn create(&mut self, topic: Topic) -> Result<(), TopicError> {
        if self.topics.contains_key(&topic.name) {
            return Err(TopicError::AlreadyExists(topic.name));
        }
        let name = topic.name.clone();
        self.topics.insert(name.clone(), topic);
        if let Err(err) = self.persist() {
            self.topics.remove(&name);
            return Err(err);
        }
        Ok(())
    }

    fn put(&mut self, topic: Topic) -> Result<(), TopicError> {
        let name = topic.name.clone();
        let before = self.topics.insert(name.clone(), topic);
        if let Err(err) = self.persist() {
            match before {
                Some(before) => self.topics.insert(name, before),
                None => self.topics.remove(&name),
            };
            return Err(err);
        }
        Ok(())
    }

    fn delete(&mut self, name: &str) -> Result<Topic, TopicError> {
        let topic = self
            .topics
            .remove(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
        if let Err(err) = self.persist() {
            self.topics.insert(name.to_string(), topic);
            return Err(err);
        }
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    //! Proves names, configs and placement are validated/balanced, and that the file store
    //! survives a reopen, by exercising them directly on a temp dir.
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_x-2").is_ok());
        assert_eq!(validate_name("").unwrap_err().code(), 17);
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn configs_are_checked() {
        assert!(validate_config("retention.ms", "-1").is_ok());
        assert!(validate_config("retention.ms", "0").is_err());
        assert!(validate_config("segment.bytes", "1000").is_err());
        assert!(validate_config("segment.bytes", "1048576").is_ok());
        assert_eq!(validate_config("nope", "1").unwrap_err().code(), 40);
    }

    #[test]
    fn placement_balances_by_count() {
        let mut owned = vec![3, 0];
        assert_eq!(place_partitions(&mut owned, 4), vec![1, 1, 1, 0]);
        assert_eq!(owned, vec![4, 3]);
    }

    #[test]
    fn store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileTopicStore::open(dir.path()).unwrap();
        let topic = Topic {
            name: "t".into(),
            id: new_topic_id(),
            shards: vec![0, 1],
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            replicas: Vec::new(),
        };
        store.create(topic.clone()).unwrap();
        assert_eq!(store.create(topic.clone()).unwrap_err().code(), 36);
        let store = FileTopicStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().get("t"), Some(&topic));
        let mut store = store;
        store.delete("t").unwrap();
        assert!(FileTopicStore::open(dir.path())
            .unwrap()
            .topics()
            .is_empty());
    }
}
