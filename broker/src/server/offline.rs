//! Partitions taken offline by a disk fault, shared by every shard of the process.
//!
//! A write or fdatasync error (an I/O error, a full disk) fails one partition log: it refuses
//! appends and reads until the broker restarts and recovery checks its files. The owning shard
//! records the partition here, with the error, so that Metadata on any shard answers it with
//! KAFKA_STORAGE_ERROR (as Kafka reports a replica on an offline log directory) and the
//! operator sees it in `broker topics describe` and in the log. The other partitions keep
//! serving. Looked up once per partition of a Metadata answer, never on the produce or
//! fetch paths (those ask the log itself).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The offline partitions, by (topic, partition), with the error that took each offline.
#[derive(Debug, Default)]
pub struct OfflinePartitions {
    partitions: Mutex<BTreeMap<(String, i32), String>>,
}

impl OfflinePartitions {
    /// Records that `topic`-`partition` went offline because of `reason` (first reason kept).
    /// True the first time.
    pub fn mark(&self, topic: &str, partition: i32, reason: &str) -> bool {
        let mut map = self.lock();
        match map.entry((topic.to_string(), partition)) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                tracing::error!(
                    "partition {topic}-{partition} is offline after a disk fault: {reason}; \
                     acknowledged records stay on disk, restart the broker once the disk is \
                     fixed"
                );
                entry.insert(reason.to_string());
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
        }
    }

    /// Why `topic`-`partition` is offline, if it is.
    pub fn reason(&self, topic: &str, partition: i32) -> Option<String> {
        self.lock().get(&(topic.to_string(), partition)).cloned()
    }

    /// Whether any partition of `topic` is offline (cheap check before per-partition lookups).
    pub fn any_of(&self, topic: &str) -> bool {
        self.lock()
            .range((topic.to_string(), i32::MIN)..=(topic.to_string(), i32::MAX))
            .next()
            .is_some()
    }

    /// Forgets the partitions of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        self.lock().retain(|(name, _), _| name != topic);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), String>> {
        // A panic while holding this lock leaves a consistent map (every change is one call).
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    //! Marking keeps the first reason, lookups are per partition, deletes forget.
    use super::*;

    #[test]
    fn marks_and_forgets() {
        let offline = OfflinePartitions::default();
        assert!(!offline.any_of("t"));
        assert!(offline.mark("t", 1, "EIO"));
        assert!(!offline.mark("t", 1, "later"));
        assert!(offline.mark("u", 0, "ENOSPC"));
        assert_eq!(offline.reason("t", 1).as_deref(), Some("EIO"));
        assert_eq!(offline.reason("t", 0), None);
        assert!(offline.any_of("t") && !offline.any_of("v"));
        offline.forget_topic("t");
        assert!(!offline.any_of("t") && offline.any_of("u"));
    }
}
