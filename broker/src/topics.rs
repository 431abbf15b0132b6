//! Topic metadata: which topics exist, their ids, per-topic config overrides and the shard each
//! partition lives on.
//!
//! In single-node mode this lives durably in the data dir (`topics.json`, replaced atomically
//! with fsync); in cluster mode it moves to the coordinator. Both sit behind [`TopicStore`], so
//! the server only ever talks to the trait. This module validates names, partition counts and
//! configs and decides placement; it does not open partition logs.
//!
//! It also names partition directories (`<data dir>/<topic>-<partition>`, Kafka's layout) and
//! makes deleting them crash-safe, as Kafka does: once the topic's logs are closed, each
//! directory is renamed to `<topic>-<partition>.<topic id>-delete` ([`rename_for_deletion`],
//! the data dir fsync'ed), only then does the topic leave the store, and the renamed
//! directories are removed afterwards. At start [`sweep_data_dir`] removes every `-delete`
//! directory (on a single node, a topic whose directory was renamed but which is still in the
//! store had its deletion interrupted: it is deleted from the store first), and every partition
//! directory of a topic the store does not know. So a topic created again under the same name
//! never opens a directory of the old one.

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
    /// Config overrides (`retention.ms` ...), as Kafka names them: set at creation, changed
    /// by AlterConfigs and IncrementalAlterConfigs.
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
    /// A request Kafka refuses as malformed (a config operation on a key twice...).
    #[error("{0}")]
    InvalidRequest(String),
    /// CreatePartitions asked for a count the topic cannot take (INVALID_PARTITIONS).
    #[error("{0}")]
    PartitionCount(String),
    /// CreatePartitions while partitions of the topic are being reassigned.
    #[error("{0}")]
    ReassignmentInProgress(String),
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
            TopicError::InvalidRequest(_) => 42,
            TopicError::PartitionCount(_) => 37,
            TopicError::ReassignmentInProgress(_) => 60,
        }
    }
}

/// The topic configs this broker understands, with what their value must be.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
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
        "cleanup.policy" => match crate::storage::CleanupPolicy::parse(value) {
            Some(_) => Ok(()),
            None => bad("must be `delete`, `compact` or `compact,delete`"),
        },
        "delete.retention.ms" | "min.compaction.lag.ms" => match int() {
            Some(v) if v >= 0 => Ok(()),
            _ => bad("must be a non-negative integer"),
        },
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => bad("must be a number in 0 ..= 1"),
        },
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

/// Topic configs whose value is a comma-separated list (Kafka's LIST type), with their
/// default: the only ones IncrementalAlterConfigs may APPEND to or SUBTRACT from.
pub const LIST_CONFIG_DEFAULTS: &[(&str, &str)] = &[("cleanup.policy", "delete")];

/// One change of an AlterConfigs or IncrementalAlterConfigs request to a topic's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set the override (Kafka's SET; every entry of a non-incremental AlterConfigs).
    Set(String, String),
    /// Remove the override: the broker default applies again (DELETE).
    Delete(String),
    /// Add items to a list config (APPEND), starting from its effective value.
    Append(String, String),
    /// Remove items from a list config (SUBTRACT), starting from its effective value.
    Subtract(String, String),
}

impl ConfigOp {
    pub fn key(&self) -> &str {
        match self {
            ConfigOp::Set(key, _)
            | ConfigOp::Delete(key)
            | ConfigOp::Append(key, _)
            | ConfigOp::Subtract(key, _) => key,
        }
    }
}

/// A request to change one topic's config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAlteration {
    pub topic: String,
    /// AlterConfigs (not incremental): the overrides become exactly the `Set`s given, every
    /// other override is removed.
    pub replace_all: bool,
    pub ops: Vec<ConfigOp>,
    /// Check only; change nothing.
    pub validate_only: bool,
}

/// The overrides after `ops`, checked the way [`validate_config`] checks a new topic's.
/// APPEND and SUBTRACT start from the effective value (the override, else the default), as
/// in Kafka. A key named twice is refused as Kafka does
/// (INVALID_REQUEST), APPEND/SUBTRACT on a non-list config and unknown keys with
/// INVALID_CONFIG. Deleting a key that has no override changes nothing.
pub fn alter_configs(
    current: &BTreeMap<String, String>,
    replace_all: bool,
    ops: &[ConfigOp],
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(TopicError::InvalidRequest(format!(
                "config `{}` is named more than once",
                op.key()
            )));
        }
    }
    let mut configs = if replace_all {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for op in ops {
        let key = op.key().to_string();
        let list_default = LIST_CONFIG_DEFAULTS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, default)| *default);
        let list_change = |items: &str, add: bool| -> Result<String, TopicError> {
            let Some(default) = list_default else {
                return Err(TopicError::InvalidConfig(
                    key.clone(),
                    "APPEND and SUBTRACT apply to list configs only".into(),
                ));
            };
            let base = current.get(&key).map_or(default, String::as_str);
            let mut list: Vec<String> = base
                .split(',')
                .map(|i| i.trim().to_string())
                .filter(|i| !i.is_empty())
                .collect();
            for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if add && !list.iter().any(|i| i == item) {
                    list.push(item.to_string());
                } else if !add {
                    list.retain(|i| i != item);
                }
            }
            Ok(list.join(","))
        };
        match op {
            ConfigOp::Set(_, value) => {
                validate_config(&key, value)?;
                configs.insert(key, value.clone());
            }
            ConfigOp::Delete(_) => {
                configs.remove(&key);
            }
            ConfigOp::Append(_, items) => {
                let value = list_change(items, true)?;
                validate_config(&key, &value)?;
                configs.insert(key, value);
            }
            ConfigOp::Subtract(_, items) => {
                let value = list_change(items, false)?;
                validate_config(&key, &value)?;
                configs.insert(key, value);
            }
        }
    }
    Ok(configs)
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

/// Name of the single-node topic store in the data dir.
pub const TOPICS_FILE: &str = "topics.json";
/// Suffix of a partition directory renamed out of the way by a topic deletion.
pub const DELETED_DIR_SUFFIX: &str = "-delete";

/// The directory of `partition` of `topic`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: usize) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// The topic and partition a partition directory's name `<topic>-<partition>` names.
pub fn parse_partition_dir(name: &str) -> Option<(&str, usize)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    validate_name(topic).ok()?;
    Some((topic, partition.parse().ok()?))
}

/// The topic, partition and topic id a renamed directory's name
/// `<topic>-<partition>.<topic id>-delete` names.
pub fn parse_deleted_dir(name: &str) -> Option<(&str, usize, [u8; 16])> {
    let (dir, id) = name.strip_suffix(DELETED_DIR_SUFFIX)?.rsplit_once('.')?;
    let (topic, partition) = parse_partition_dir(dir)?;
    Some((topic, partition, unhex(id)?))
}

/// Renames the existing partition directories of `topic` (its logs closed) to their `-delete`
/// names and fsyncs the data dir, so the rename is durable before the store changes. Returns
/// the new paths, for [`remove_deleted_dirs`] once the store changed.
pub fn rename_for_deletion(data_dir: &Path, topic: &Topic) -> Result<Vec<PathBuf>, TopicError> {
    let mut renamed = Vec::new();
    for partition in 0..topic.shards.len() {
        renamed.extend(rename_dir_for_deletion(data_dir, topic, partition)?);
    }
    sync_data_dir(data_dir)?;
    Ok(renamed)
}

/// Renames one partition directory to its `-delete` name (not synced); None when absent.
fn rename_dir_for_deletion(
    data_dir: &Path,
    topic: &Topic,
    partition: usize,
) -> Result<Option<PathBuf>, TopicError> {
    let dir = partition_dir(data_dir, &topic.name, partition);
    let to = data_dir.join(format!(
        "{}-{partition}.{}{DELETED_DIR_SUFFIX}",
        topic.name,
        hex(&topic.id)
    ));
    match std::fs::rename(&dir, &to) {
        Ok(()) => Ok(Some(to)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(TopicError::Storage(format!(
            "renaming {} for deletion: {err}",
            dir.display()
        ))),
    }
}

fn sync_data_dir(data_dir: &Path) -> Result<(), TopicError> {
    tuning::fs::sync_dir(data_dir)
        .map_err(|err| TopicError::Storage(format!("syncing {}: {err}", data_dir.display())))
}

/// Renames one partition's directory out of the way (durably), as [`rename_for_deletion`]
/// does for a whole topic: a replica moved off this broker. None when there was none.
pub fn rename_partition_for_deletion(
    data_dir: &Path,
    topic: &Topic,
    partition: usize,
) -> Result<Option<PathBuf>, TopicError> {
    let renamed = rename_dir_for_deletion(data_dir, topic, partition)?;
    if renamed.is_some() {
        sync_data_dir(data_dir)?;
    }
    Ok(renamed)
}

/// Removes directories [`rename_for_deletion`] renamed (blocking; a failure is logged, the
/// next start sweeps what is left).
pub fn remove_deleted_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(err) = std::fs::remove_dir_all(dir) {
            tracing::warn!("removing {}: {err}", dir.display());
        }
    }
}

/// What [`sweep_data_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Topics whose interrupted deletion was completed (deleted from the store).
    pub deletions_completed: Vec<String>,
    /// Directories removed: `-delete` ones and partition directories of unknown topics.
    pub dirs_removed: Vec<PathBuf>,
}

/// At start, before any log opens: removes what interrupted topic deletions left in
/// `data_dir` (see the module documentation). `complete_deletions`: a topic still in the store
/// with a `-delete` directory of its id is deleted from the store (single node, where the
/// store is the truth; in cluster mode the coordinator decides and the store already follows
/// it). Partition directories of topics the store does not know are removed only when the
/// store's file exists (a data dir without one is not trusted to be ours to clean).
pub fn sweep_data_dir(
    data_dir: &Path,
    store: &mut dyn TopicStore,
    complete_deletions: bool,
) -> Result<Sweep, TopicError> {
    let list = |data_dir: &Path| -> Result<Vec<(String, PathBuf)>, TopicError> {
        let mut dirs = Vec::new();
        let entries = std::fs::read_dir(data_dir)
            .map_err(|err| TopicError::Storage(format!("listing {}: {err}", data_dir.display())))?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(name) = entry.file_name().to_str() {
                    dirs.push((name.to_string(), entry.path()));
                }
            }
        }
        Ok(dirs)
    };
    let mut sweep = Sweep::default();
    for (name, path) in list(data_dir)? {
        let Some((topic, _, id)) = parse_deleted_dir(&name) else {
            continue;
        };
        if complete_deletions && store.topics().get(topic).is_some_and(|t| t.id == id) {
            tracing::info!("completing the deletion of topic `{topic}`, interrupted by a stop");
            store.delete(topic)?;
            sweep.deletions_completed.push(topic.to_string());
        }
        tracing::info!("removing {}", path.display());
        remove_deleted_dirs(std::slice::from_ref(&path));
        sweep.dirs_removed.push(path);
    }
    if data_dir.join(TOPICS_FILE).exists() {
        for (name, path) in list(data_dir)? {
            let Some((topic, _)) = parse_partition_dir(&name) else {
                continue;
            };
            if store.topics().contains_key(topic) {
                continue;
            }
            tracing::warn!(
                "removing {}: a partition directory of no known topic (left by a deletion \
                 interrupted by a stop)",
                path.display()
            );
            remove_deleted_dirs(std::slice::from_ref(&path));
            sweep.dirs_removed.push(path);
        }
    }
    Ok(sweep)
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
        let path = data_dir.join(TOPICS_FILE);
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
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::data_file::replace(&dir.join(TOPICS_FILE), &text, 0o644)
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
    //! Proves names, configs and placement are validated/balanced, that the file store
    //! survives a reopen, and that the start-up sweep removes exactly what interrupted
    //! deletions left (completing them on a single node), by exercising them on a temp dir.
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
        for ok in ["delete", "compact", "compact,delete", "delete, compact"] {
            assert!(validate_config("cleanup.policy", ok).is_ok(), "{ok}");
        }
        assert!(validate_config("cleanup.policy", "compacted").is_err());
        assert!(validate_config("min.cleanable.dirty.ratio", "0.01").is_ok());
        assert!(validate_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_config("delete.retention.ms", "-1").is_err());
        assert!(validate_config("min.compaction.lag.ms", "0").is_ok());
    }

    #[test]
    fn config_alterations_follow_kafka() {
        let current: BTreeMap<String, String> = [
            ("retention.ms".to_string(), "1000".to_string()),
            ("segment.bytes".to_string(), "1048576".to_string()),
        ]
        .into();
        let set = |k: &str, v: &str| ConfigOp::Set(k.into(), v.into());
        // Incremental: the others stay, a delete removes one override.
        let next = alter_configs(
            &current,
            false,
            &[
                set("retention.ms", "2000"),
                ConfigOp::Delete("segment.bytes".into()),
            ],
        )
        .unwrap();
        assert_eq!(next.get("retention.ms").map(String::as_str), Some("2000"));
        assert!(!next.contains_key("segment.bytes"));
        // Non-incremental: only what is given remains.
        let next = alter_configs(&current, true, &[set("min.insync.replicas", "2")]).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next["min.insync.replicas"], "2");
        // APPEND starts from the default `delete`; SUBTRACT removes an item.
        let next = alter_configs(
            &current,
            false,
            &[ConfigOp::Append("cleanup.policy".into(), "compact".into())],
        )
        .unwrap();
        assert_eq!(next["cleanup.policy"], "delete,compact");
        let next = alter_configs(
            &next,
            false,
            &[ConfigOp::Subtract("cleanup.policy".into(), "delete".into())],
        )
        .unwrap();
        assert_eq!(next["cleanup.policy"], "compact");
        // Subtracting the last item leaves an empty list, which is not a valid policy.
        let err = alter_configs(
            &next,
            false,
            &[ConfigOp::Subtract(
                "cleanup.policy".into(),
                "compact".into(),
            )],
        )
        .unwrap_err();
        assert_eq!(err.code(), 40);
        // Errors: APPEND on a non-list (40), bad value (40), unknown key (40), twice (42).
        let append = ConfigOp::Append("retention.ms".into(), "5".into());
        assert_eq!(
            alter_configs(&current, false, &[append])
                .unwrap_err()
                .code(),
            40
        );
        let bad = set("segment.bytes", "12");
        assert_eq!(
            alter_configs(&current, false, &[bad]).unwrap_err().code(),
            40
        );
        let unknown = set("no.such.config", "1");
        assert_eq!(
            alter_configs(&current, false, &[unknown])
                .unwrap_err()
                .code(),
            40
        );
        let twice = [
            set("retention.ms", "5"),
            ConfigOp::Delete("retention.ms".into()),
        ];
        assert_eq!(
            alter_configs(&current, false, &twice).unwrap_err().code(),
            42
        );
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

    fn topic(name: &str, partitions: usize) -> Topic {
        Topic {
            name: name.into(),
            id: new_topic_id(),
            shards: vec![0; partitions],
            configs: BTreeMap::new(),
            replicas: Vec::new(),
        }
    }

    #[test]
    fn directory_names_parse_back() {
        assert_eq!(
            parse_partition_dir("orders.v1-x-12"),
            Some(("orders.v1-x", 12))
        );
        assert_eq!(parse_partition_dir("orders-"), None);
        assert_eq!(parse_partition_dir("lost+found"), None);
        assert_eq!(parse_partition_dir("a/b-1"), None);
        let t = topic("a.b-c", 3);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(partition_dir(dir.path(), &t.name, 2)).unwrap();
        let renamed = rename_for_deletion(dir.path(), &t).unwrap();
        assert_eq!(renamed.len(), 1, "only existing directories are renamed");
        let name = renamed[0].file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(DELETED_DIR_SUFFIX), "{name}");
        assert_eq!(parse_deleted_dir(name), Some(("a.b-c", 2, t.id)));
        assert_eq!(parse_deleted_dir("a.b-c-2.zz-delete"), None);
    }

    #[test]
    fn the_sweep_finishes_interrupted_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let mut store = FileTopicStore::open(data).unwrap();
        // `kept` is whole; `half` was stopped halfway through renaming (its store entry is
        // still there); `gone` left the store but not its (renamed and unrenamed) directories;
        // `other` has a renamed directory of an older topic of the same name.
        let (kept, half, gone, other) = (
            topic("kept", 2),
            topic("half", 2),
            topic("gone", 2),
            topic("other", 1),
        );
        for t in [&kept, &half, &gone, &other] {
            store.create(t.clone()).unwrap();
            for p in 0..t.shards.len() {
                let d = partition_dir(data, &t.name, p);
                std::fs::create_dir(&d).unwrap();
                std::fs::write(d.join("00000000000000000000.log"), b"old").unwrap();
            }
        }
        let half_renamed = data.join(format!("half-0.{}-delete", hex(&half.id)));
        std::fs::rename(partition_dir(data, "half", 0), &half_renamed).unwrap();
        let gone_renamed = data.join(format!("gone-1.{}-delete", hex(&gone.id)));
        std::fs::rename(partition_dir(data, "gone", 1), &gone_renamed).unwrap();
        store.delete("gone").unwrap();
        let older = data.join(format!("other-0.{}-delete", hex(&new_topic_id())));
        std::fs::create_dir(&older).unwrap();
        std::fs::write(data.join("not-a-dir-0"), b"").unwrap();

        // In cluster mode nothing is deleted from the store, only directories.
        let mut copy = FileTopicStore::open(data).unwrap();
        let before = data.read_dir().unwrap().count();
        let sweep = sweep_data_dir(data, &mut copy, false);
        let sweep = sweep.unwrap();
        assert!(sweep.deletions_completed.is_empty());
        assert!(copy.topics().contains_key("half"));
        // The renamed ones and gone-0 (its topic is unknown) went.
        assert_eq!(sweep.dirs_removed.len(), 4, "{sweep:?}");
        assert_eq!(data.read_dir().unwrap().count(), before - 4);
        assert!(!gone_renamed.exists() && !older.exists() && !half_renamed.exists());
        assert!(!partition_dir(data, "gone", 0).exists());
        assert!(partition_dir(data, "half", 1).exists());

        // On a single node, a `-delete` directory of a topic the store still has completes
        // its deletion; its unrenamed partition goes with it.
        let half_renamed = data.join(format!("half-1.{}-delete", hex(&half.id)));
        std::fs::rename(partition_dir(data, "half", 1), &half_renamed).unwrap();
        std::fs::create_dir(partition_dir(data, "half", 0)).unwrap();
        let sweep = sweep_data_dir(data, &mut store, true).unwrap();
        assert_eq!(sweep.deletions_completed, vec!["half".to_string()]);
        assert!(!half_renamed.exists() && !partition_dir(data, "half", 0).exists());
        let reopened = FileTopicStore::open(data).unwrap();
        let names: Vec<&String> = reopened.topics().keys().collect();
        assert_eq!(names, ["kept", "other"]);
        for p in 0..2 {
            assert!(partition_dir(data, "kept", p)
                .join("00000000000000000000.log")
                .exists());
        }
        assert!(partition_dir(data, "other", 0).exists());

        // A data dir without the store's file is not swept.
        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir(partition_dir(bare.path(), "x", 0)).unwrap();
        let mut empty = FileTopicStore::open(bare.path()).unwrap();
        assert!(sweep_data_dir(bare.path(), &mut empty, true)
            .unwrap()
            .dirs_removed
            .is_empty());
        assert!(partition_dir(bare.path(), "x", 0).exists());
    }
}
