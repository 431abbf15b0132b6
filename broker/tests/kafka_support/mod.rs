//! Shared helpers of the Kafka integration tests: start a server in-process on a free port
//! with a temp data dir, and build record batches.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use broker::kafka::plain_batch::{self, plain_record};
use broker::server::{self, ServeConfig, ServerHandle};
use bytes::Bytes;

pub fn profile_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tuning/profiles")
        .join(name)
}

/// The one-shard development profile.
pub fn dev_profile() -> tuning::Profile {
    tuning::Profile::load(&profile_path("dev-2core.toml")).expect("dev profile loads")
}

/// Every online core runs a shard (2 on the development box), small buffers.
pub fn all_cores_profile() -> tuning::Profile {
    let text = "cores = \"all\"\n[core_defaults]\nmemory_budget_bytes = 67108864\n[storage]\nsegment_bytes = 8388608\npreallocate_bytes = 0\n";
    tuning::Profile::parse(text, Path::new("<test:all-cores>"), tuning::online_cpus())
        .expect("all-cores profile parses")
}

/// Exactly two shards, whatever this host has: on cpus 0 and 1, or both on cpu 0 on a
/// one-cpu host (two glommio executors may share a cpu), so tests of the mesh between
/// shards run everywhere. Small buffers.
pub fn two_shards_profile() -> tuning::Profile {
    let text = "cores = \"all\"\n[core_defaults]\nmemory_budget_bytes = 67108864\n[storage]\nsegment_bytes = 8388608\npreallocate_bytes = 0\n";
    let mut profile = tuning::Profile::parse(text, Path::new("<test:two-shards>"), 2)
        .expect("two-shard profile parses");
    if tuning::online_cpus() < 2 {
        profile.cores[1].cpu = 0;
    }
    assert_eq!(profile.shard_cores().len(), 2);
    profile
}

pub fn start(profile: tuning::Profile, data_dir: &Path) -> ServerHandle {
    start_with(profile, data_dir, false)
}

pub fn start_with(
    profile: tuning::Profile,
    data_dir: &Path,
    auto_create_topics: bool,
) -> ServerHandle {
    server::start(ServeConfig {
        auto_create_topics,
        ..config(profile, data_dir)
    })
    .expect("server starts")
}

/// A single node on a free loopback port, node id 0, no auto-creation, PLAINTEXT.
pub fn config(profile: tuning::Profile, data_dir: &Path) -> ServeConfig {
    ServeConfig {
        profile,
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        node_id: 0,
        auto_create_topics: false,
        default_partitions: 1,
        fetch_by_splice: true,
        metrics_listen: None,
        group: broker::group::GroupConfig::default(),
        offsets_topic_partitions: broker::group::DEFAULT_OFFSETS_TOPIC_PARTITIONS,
        cluster: None,
        security: Default::default(),
        inter_broker_sasl: None,
        authorizer: None,
    }
}

/// One uncompressed RecordBatch v2 holding `values`.
pub fn batch(values: &[&[u8]]) -> Bytes {
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let value = Bytes::copy_from_slice(value);
            plain_record(i as i64, 1_700_000_000_000 + i as i64, None, Some(value))
        })
        .collect();
    plain_batch::encode(&records).unwrap()
}

/// Produces `records` (one or more batches) to `topic`-`partition` with acks=all (Produce v9);
/// the partition's error code and base offset.
/// A Produce request (acks=all, 10 s timeout) of `records` to one partition.
pub fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                topic.to_string(),
            )))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

pub fn produce(
    client: &mut broker::cli::client::Client,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let request = produce_request(topic, partition, records);
    let response = client.call(&request, 9).unwrap();
    let answer = &response.responses[0].partition_responses[0];
    (answer.error_code, answer.base_offset)
}

/// A loop-mounted ext4 file system of `size_mib` in a temp dir; unmounted on drop.
pub struct SmallFs {
    _base: tempfile::TempDir,
    pub mount: PathBuf,
}

impl SmallFs {
    pub fn new(size_mib: u64) -> SmallFs {
        // The image lives next to the other test data (not in a tmpfs /tmp: loop-mounting a
        // file on tmpfs is fine too, but /var/tmp is disk on CI hosts).
        let base = tempfile::Builder::new()
            .prefix("small-fs")
            .tempdir_in("/var/tmp")
            .unwrap();
        let image = base.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let mount = base.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        );
        SmallFs { _base: base, mount }
    }

    pub fn used_bytes(&self) -> u64 {
        let space = broker::storage::disk_budget::fs_space(&self.mount).unwrap();
        space.total_bytes - space.free_bytes
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // A lazy unmount cannot fail on a busy mount (a file still open by a dying server).
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup installs it)"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Fetches `partition` of `topic` from `offset` (up to 8 MiB, no wait): (error code,
/// (offset, value) of each record).
pub fn fetch_records(
    client: &mut broker::cli::client::Client,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, Vec<(i64, Bytes)>) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::records::RecordBatchDecoder;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(8 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                topic.to_string(),
            )))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(8 << 20)])]);
    let response = client.call(&request, 11).unwrap();
    let p = &response.responses[0].partitions[0];
    let mut records = Vec::new();
    for mut batch in broker::cli::client::complete_batches(p.records.clone().unwrap_or_default()) {
        for record in RecordBatchDecoder::decode(&mut batch).unwrap().records {
            records.push((record.offset, record.value.unwrap()));
        }
    }
    (p.error_code, records)
}

/// Every record of `partition` of `topic`, from offset 0 to the end.
pub fn fetch_every_record(
    client: &mut broker::cli::client::Client,
    topic: &str,
    partition: i32,
) -> Vec<(i64, Bytes)> {
    let mut all: Vec<(i64, Bytes)> = Vec::new();
    loop {
        let next = all.last().map_or(0, |(offset, _)| offset + 1);
        let (code, records) = fetch_records(client, topic, partition, next);
        assert_eq!(code, 0, "fetch {topic}-{partition} at {next}");
        let fresh: Vec<_> = records.into_iter().filter(|(o, _)| *o >= next).collect();
        if fresh.is_empty() {
            return all;
        }
        all.extend(fresh);
    }
}
