//! Proves topic deletion is crash-safe on a single node, with the in-process server and the
//! project's own client: a topic deleted and created again under the same name serves only
//! the new topic's records, and the directories of the old one are gone. A deletion stopped
//! at any step (some or all partition directories renamed to `-delete` while the topic is
//! still in the store; the store changed but the renamed directories not removed, or removed
//! halfway; or, as an older broker left it, the store changed and the directories never
//! renamed) is finished when the broker starts again: the topic is gone, nothing of it is
//! left in the data dir, and a topic created under its name starts empty.
mod kafka_support;

use std::path::Path;
use std::time::{Duration, Instant};

use broker::cli::ConsumeOptions;
use broker::topics::{self, FileTopicStore, TopicStore};

const TOPIC: &str = "t.del-x";
const PARTITIONS: i32 = 2;

fn produce(addr: &str, prefix: &str, count: usize) {
    let lines: String = (0..count).map(|i| format!("{prefix}-{i}\n")).collect();
    let sent = broker::cli::produce(addr, TOPIC, None, None, lines.as_bytes()).unwrap();
    assert_eq!(sent, count as u64);
}

/// Every record of the topic from the beginning, sorted.
fn consume_all(addr: &str) -> Vec<String> {
    let options = ConsumeOptions {
        topic: TOPIC,
        from_beginning: true,
        partition: None,
        max_messages: None,
        idle_timeout: Duration::from_millis(1500),
        key_separator: None,
    };
    let mut out = Vec::new();
    broker::cli::consume(addr, &options, &mut out).unwrap();
    let mut lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn expected(prefix: &str, count: usize) -> Vec<String> {
    let mut lines: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    lines.sort();
    lines
}

/// Names in the data dir that belong to the topic (its partition directories, renamed or not).
fn topic_dirs(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&format!("{TOPIC}-")))
        .collect();
    names.sort();
    names
}

/// Creates the topic again, writes new records and checks only they come back.
fn recreate_and_check(addr: &str) {
    broker::cli::topics_create(addr, TOPIC, PARTITIONS, -1, &[]).unwrap();
    produce(addr, "new", 60);
    assert_eq!(consume_all(addr), expected("new", 60));
}

#[test]
fn a_recreated_topic_sees_only_its_own_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    let addr = server.addr.to_string();
    broker::cli::topics_create(&addr, TOPIC, PARTITIONS, -1, &[]).unwrap();
    produce(&addr, "old", 200);
    assert_eq!(consume_all(&addr), expected("old", 200));
    broker::cli::topics_delete(&addr, TOPIC).unwrap();
    // The partition directories were renamed before the answer; their removal follows.
    assert!(
        topic_dirs(dir.path())
            .iter()
            .all(|n| n.ends_with("-delete")),
        "{:?}",
        topic_dirs(dir.path())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !topic_dirs(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", topic_dirs(dir.path()));
        std::thread::sleep(Duration::from_millis(20));
    }
    recreate_and_check(&addr);
    server.shutdown();
}

/// Where a deletion stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Partition 0 renamed, partition 1 not, the store unchanged.
    RenamedHalf,
    /// Both renamed, the store unchanged.
    RenamedAll,
    /// Both renamed and the store changed.
    StoreChanged,
    /// As `StoreChanged`, and one renamed directory half removed.
    RemovedHalf,
    /// The store changed, the directories still under their names (an older broker's order).
    StoreChangedNotRenamed,
}

#[test]
fn a_deletion_stopped_at_any_step_is_finished_at_start() {
    for stop in [
        Stop::RenamedHalf,
        Stop::RenamedAll,
        Stop::StoreChanged,
        Stop::RemovedHalf,
        Stop::StoreChangedNotRenamed,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        {
            let server = kafka_support::start(kafka_support::dev_profile(), data);
            let addr = server.addr.to_string();
            broker::cli::topics_create(&addr, TOPIC, PARTITIONS, -1, &[]).unwrap();
            produce(&addr, "old", 200);
            server.shutdown();
        }
        // The data dir as the deletion left it when the broker stopped.
        let mut store = FileTopicStore::open(data).unwrap();
        let topic = store.topics()[TOPIC].clone();
        match stop {
            Stop::RenamedHalf => {
                let mut first = topic.clone();
                first.shards.truncate(1);
                topics::rename_for_deletion(data, &first).unwrap();
            }
            Stop::RenamedAll => {
                topics::rename_for_deletion(data, &topic).unwrap();
            }
            Stop::StoreChanged | Stop::RemovedHalf => {
                let renamed = topics::rename_for_deletion(data, &topic).unwrap();
                store.delete(TOPIC).unwrap();
                if let Stop::RemovedHalf = stop {
                    std::fs::remove_file(renamed[1].join("00000000000000000000.index")).unwrap();
                }
            }
            Stop::StoreChangedNotRenamed => {
                store.delete(TOPIC).unwrap();
            }
        }
        drop(store);
        assert!(!topic_dirs(data).is_empty());

        let server = kafka_support::start(kafka_support::dev_profile(), data);
        let addr = server.addr.to_string();
        assert!(
            topic_dirs(data).is_empty(),
            "{stop:?}: {:?}",
            topic_dirs(data)
        );
        assert!(
            !FileTopicStore::open(data)
                .unwrap()
                .topics()
                .contains_key(TOPIC),
            "{stop:?}: the deletion was finished"
        );
        recreate_and_check(&addr);
        server.shutdown();
    }
}
