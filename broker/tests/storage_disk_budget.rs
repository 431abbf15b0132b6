//! Proves the disk and open-file budget and the handling of a full disk, on a small ext4 file
//! system loop-mounted for the test (unmounted by a guard, also on failure), with the server
//! in-process:
//! - hundreds of partitions, each produced to once, take a few MiB of disk (not the profile's
//!   32 MiB preallocation each) and two open files each;
//! - a CreateTopics that cannot fit is refused with POLICY_VIOLATION and a message naming
//!   needed and free space, and leaves no partition directory behind;
//! - producing until the disk is full answers KAFKA_STORAGE_ERROR (not a hang), the partition
//!   is offline in Metadata and refuses produce and fetch, another partition keeps serving,
//!   and after a restart every acknowledged record is read back at its offset.

mod kafka_support;

use std::path::Path;

use broker::cli::client::Client;
use broker::storage::disk_budget::{self, PARTITION_FOOTPRINT_BYTES};
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// CreateTopics of one topic: (error code, message).
fn create(client: &mut Client, topic: &str, partitions: i32) -> (i16, String) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let response = client.call(&request, 7).unwrap();
    let topic = &response.topics[0];
    (
        topic.error_code,
        topic
            .error_message
            .as_ref()
            .map_or(String::new(), |m| m.to_string()),
    )
}

fn fetch(client: &mut Client, topic: &str, offset: i64) -> (i16, Vec<(i64, Bytes)>) {
    kafka_support::fetch_records(client, topic, 0, offset)
}

fn fetch_all(client: &mut Client, topic: &str) -> Vec<(i64, Bytes)> {
    kafka_support::fetch_every_record(client, topic, 0)
}

/// Metadata of one topic: per partition (error code, leader).
fn partition_states(client: &mut Client, topic: &str) -> (i16, Vec<(i16, i32)>) {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic))),
    ]));
    let response = client.call(&request, 12).unwrap();
    let t = &response.topics[0];
    let mut partitions: Vec<_> = t.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    (
        t.error_code,
        partitions
            .iter()
            .map(|p| (p.error_code, p.leader_id.0))
            .collect(),
    )
}

/// The tests count this process's open files: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn partition_dirs(data: &Path, topic: &str) -> usize {
    std::fs::read_dir(data)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(&format!("{topic}-"))
        })
        .count()
}

#[test]
fn many_partitions_fit_a_small_disk_and_a_topic_that_cannot_is_refused() {
    let _serial = serial();
    let fs = kafka_support::SmallFs::new(256);
    let data = fs.mount.join("data");
    let server = kafka_support::start(kafka_support::dev_profile(), &data);
    let addr = server.addr.to_string();
    let mut client = Client::connect(&addr).unwrap();

    // Half of what the check allows, so the topic is accepted with room to spare.
    let free = disk_budget::fs_space(&data).unwrap().free_bytes;
    let partitions = (free / 2 / PARTITION_FOOTPRINT_BYTES / 2) as i32;
    assert!(
        partitions >= 100,
        "{partitions} partitions fit in {free} bytes"
    );
    let used_before = fs.used_bytes();
    let files_before = open_files();
    assert_eq!(create(&mut client, "many", partitions), (0, String::new()));
    for partition in 0..partitions {
        let value = format!("record of partition {partition}");
        let (code, offset) = kafka_support::produce(
            &mut client,
            "many",
            partition,
            kafka_support::batch(&[value.as_bytes()]),
        );
        assert_eq!((code, offset), (0, 0), "partition {partition}");
    }
    let used = fs.used_bytes() - used_before;
    let files = open_files() - files_before;
    eprintln!(
        "{partitions} partitions: {} KiB of disk, {files} more open files",
        used >> 10
    );
    // The profile preallocates up to 32 MiB per segment: that would be over 3 GiB here.
    // Each first write preallocates 256 KiB at most, and all of them together stay inside the
    // shard's share of free space (plus the files' own blocks and some file system metadata).
    let budget = free / disk_budget::PREALLOCATION_SHARE_DIVISOR
        + partitions as u64 * disk_budget::PARTITION_FILES * 4096
        + (4 << 20);
    assert!(
        used <= budget,
        "{used} bytes used by {partitions} partitions, budget {budget}"
    );
    // Two per partition (its active `.log`: writer and reader), no index files: no index
    // entry yet.
    assert!(
        files <= partitions as usize * 2 + 16,
        "{files} files open for {partitions} partitions"
    );

    // A topic larger than the disk allows is refused whole, before any directory exists.
    let free = disk_budget::fs_space(&data).unwrap().free_bytes;
    let too_many = (free / 2 / PARTITION_FOOTPRINT_BYTES) as i32 + 10;
    let (code, message) = create(&mut client, "toolarge", too_many);
    assert_eq!(code, 44, "POLICY_VIOLATION: {message}");
    assert!(
        message.contains("not enough disk space") && message.contains("MiB free"),
        "{message}"
    );
    assert_eq!(partition_dirs(&data, "toolarge"), 0);
    assert_eq!(partition_states(&mut client, "toolarge").0, 3);
    // The topic that fits still serves.
    let (code, records) = fetch(&mut client, "many", 0);
    assert_eq!(code, 0);
    assert_eq!(&records[0].1[..], b"record of partition 0");
    server.shutdown();
}

#[test]
fn a_full_disk_takes_one_partition_offline_and_loses_nothing_acknowledged() {
    let _serial = serial();
    let fs = kafka_support::SmallFs::new(160);
    let data = fs.mount.join("data");
    let ballast = fs.mount.join("ballast");
    let mut acknowledged: Vec<(i64, Bytes)> = Vec::new();
    {
        let server = kafka_support::start(kafka_support::dev_profile(), &data);
        let addr = server.addr.to_string();
        let mut client = Client::connect(&addr).unwrap();
        assert_eq!(create(&mut client, "fill", 1).0, 0);
        assert_eq!(create(&mut client, "other", 1).0, 0);
        for i in 0..10 {
            let value = format!("other {i}");
            let (code, _) = kafka_support::produce(
                &mut client,
                "other",
                0,
                kafka_support::batch(&[value.as_bytes()]),
            );
            assert_eq!(code, 0);
        }
        // Space the test gives back once the disk is full, to show the other partition
        // takes writes again while the failed one stays offline.
        std::fs::write(&ballast, vec![1u8; 16 << 20]).unwrap();

        let capacity = disk_budget::fs_space(&data).unwrap().total_bytes;
        let record_bytes = 64 * 1024;
        let mut error = 0;
        for i in 0..capacity / record_bytes as u64 + 100 {
            let mut value = vec![b'x'; record_bytes];
            value[..12].copy_from_slice(format!("{i:012}").as_bytes());
            let (code, offset) =
                kafka_support::produce(&mut client, "fill", 0, kafka_support::batch(&[&value]));
            if code != 0 {
                error = code;
                break;
            }
            acknowledged.push((offset, Bytes::from(value)));
        }
        assert_eq!(error, 56, "KAFKA_STORAGE_ERROR once the disk is full");
        assert!(
            acknowledged.len() > 100,
            "{} acknowledged",
            acknowledged.len()
        );

        // Offline: produce and fetch refused at once, Metadata says so.
        let (code, _) =
            kafka_support::produce(&mut client, "fill", 0, kafka_support::batch(&[b"late"]));
        assert_eq!(code, 56);
        assert_eq!(fetch(&mut client, "fill", 0).0, 56);
        assert_eq!(partition_states(&mut client, "fill"), (0, vec![(56, -1)]));
        // The other partition keeps serving: reads, and writes once there is room.
        assert_eq!(partition_states(&mut client, "other"), (0, vec![(0, 0)]));
        std::fs::remove_file(&ballast).unwrap();
        let (code, offset) =
            kafka_support::produce(&mut client, "other", 0, kafka_support::batch(&[b"more"]));
        assert_eq!((code, offset), (0, 10));
        let other = fetch_all(&mut client, "other");
        assert_eq!(other.len(), 11);
        assert_eq!(&other[10].1[..], b"more");
        // Still offline: only a restart brings it back, after recovery checked its files.
        assert_eq!(fetch(&mut client, "fill", 0).0, 56);
        server.shutdown();
    }
    let server = kafka_support::start(kafka_support::dev_profile(), &data);
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    assert_eq!(partition_states(&mut client, "fill"), (0, vec![(0, 0)]));
    let read = fetch_all(&mut client, "fill");
    assert!(read.len() >= acknowledged.len());
    for (offset, value) in &acknowledged {
        let (got_offset, got) = &read[*offset as usize];
        assert_eq!(got_offset, offset);
        assert!(got == value, "record at offset {offset} changed");
    }
    let (code, offset) =
        kafka_support::produce(&mut client, "fill", 0, kafka_support::batch(&[b"after"]));
    assert_eq!((code, offset), (0, read.len() as i64));
    server.shutdown();
}
