//! Proves the data path of the in-process server: produced batches come back byte-identical
//! through Fetch (all versions we serve), a cold fetch of a large range after a restart goes
//! file -> socket by splice (the per-shard splice counter covers the bytes), and with two
//! shards a partition owned by the other shard is produced to and fetched through the mesh,
//! one mesh request per Fetch (and per Produce) for all of its partitions there, with the
//! response limit kept in request order.

mod kafka_support;

use std::time::Instant;

use broker::cli::client::Client;
use broker::server::metrics::ShardMetrics;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn produce(client: &mut Client, topic: &str, partition: i32, records: bytes::Bytes) -> i64 {
    let (code, base_offset) = kafka_support::produce(client, topic, partition, records);
    assert_eq!(code, 0);
    base_offset
}

fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    version: i16,
) -> (i16, i64, bytes::Bytes) {
    fetch_all(client, topic, &[partition], offset, max_bytes, version).remove(0)
}

/// Equal except each batch's baseOffset (bytes 0..8) and partitionLeaderEpoch (12..16).
fn same_batch(got: &[u8], produced: &[u8]) -> bool {
    let normalize = |bytes: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for batch in broker::cli::client::complete_batches(bytes::Bytes::copy_from_slice(bytes)) {
            let mut batch = batch.to_vec();
            batch[..8].fill(0);
            batch[12..16].fill(0);
            out.extend_from_slice(&batch);
        }
        out
    };
    got.len() == produced.len() && normalize(got) == normalize(produced)
}

fn spliced(server: &broker::server::ServerHandle) -> u64 {
    server
        .metrics
        .iter()
        .map(|m| ShardMetrics::get(&m.bytes_spliced))
        .sum()
}

/// Requests the shards served for each other over the mesh.
fn forwarded(server: &broker::server::ServerHandle) -> u64 {
    server
        .metrics
        .iter()
        .map(|m| ShardMetrics::get(&m.requests_forwarded_in))
        .sum()
}

#[test]
fn produced_batches_come_back_byte_identical_in_every_fetch_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    broker::cli::topics_create(&server.addr.to_string(), "f", 1, -1, &[]).unwrap();
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let first = kafka_support::batch(&[b"a", b"bb", b"ccc"]);
    let second = kafka_support::batch(&[b"dddd"]);
    assert_eq!(produce(&mut client, "f", 0, first.clone()), 0);
    assert_eq!(produce(&mut client, "f", 0, second.clone()), 3);
    for version in 4..=12 {
        let (error, hw, records) = fetch(&mut client, "f", 0, 0, 1 << 20, version);
        assert_eq!((error, hw), (0, 4), "v{version}");
        // Only baseOffset and partitionLeaderEpoch differ from what was produced (both are
        // outside the CRC); the rest comes back byte for byte.
        assert_eq!(records.len(), first.len() + second.len());
        let (got_first, got_second) = records.split_at(first.len());
        assert!(
            same_batch(got_first, &first),
            "v{version}: first batch differs"
        );
        assert!(
            same_batch(got_second, &second),
            "v{version}: second batch differs"
        );
        assert_eq!(&got_second[..8], &3i64.to_be_bytes());
    }
    // At the end: empty after the long-poll, no error; past the end: OFFSET_OUT_OF_RANGE.
    let started = Instant::now();
    let (error, _, records) = fetch(&mut client, "f", 0, 4, 1 << 20, 12);
    assert_eq!((error, records.len()), (0, 0));
    assert!(
        started.elapsed().as_millis() >= 90,
        "max_wait_ms is honoured"
    );
    assert_eq!(fetch(&mut client, "f", 0, 99, 1 << 20, 12).0, 1);
    // ListOffsets earliest / latest / by time.
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("f"))
            .with_partitions(
                [-2i64, -1, 1_700_000_000_001]
                    .iter()
                    .map(|&ts| {
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts)
                    })
                    .collect(),
            )]);
    let response = client.call(&request, 7).unwrap();
    let offsets: Vec<i64> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(offsets, vec![0, 4, 1]);
}

#[test]
fn cold_fetch_of_a_large_range_goes_by_splice() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![b'z'; 1000];
    let batch = kafka_support::batch(&vec![&value[..]; 500]);
    let batches = 40;
    {
        let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
        broker::cli::topics_create(&server.addr.to_string(), "big", 1, -1, &[]).unwrap();
        let mut client = Client::connect(&server.addr.to_string()).unwrap();
        for _ in 0..batches {
            produce(&mut client, "big", 0, batch.clone());
        }
        server.shutdown();
    }
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let before = spliced(&server);
    let mut offset = 0i64;
    let mut fetched = Vec::new();
    while offset < batches as i64 * 500 {
        let (error, _, records) = fetch(&mut client, "big", 0, offset, 8 << 20, 12);
        assert_eq!(error, 0);
        let complete = broker::cli::client::complete_batches(records.clone());
        assert!(!complete.is_empty());
        for b in &complete {
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            offset = base + last_delta as i64 + 1;
            fetched.extend_from_slice(b);
        }
    }
    let produced: Vec<u8> = (0..batches).flat_map(|_| batch.iter().copied()).collect();
    assert!(
        same_batch(&fetched, &produced),
        "fetched bytes differ from produced"
    );
    let fetched = fetched.len();
    let by_splice = spliced(&server) - before;
    assert!(
        by_splice as usize >= fetched,
        "{by_splice} of {fetched} fetched bytes went by splice"
    );
}

#[test]
fn two_shards_forward_over_the_mesh() {
    // Two shards on any host; one connection lands on one of them, and the topic's four
    // partitions are spread over both, so the other shard's partitions are reached only
    // through the mesh: it must serve those requests (its forwarded-in counter) and the
    // records must come back as produced.
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::two_shards_profile(), dir.path());
    assert_eq!(server.metrics.len(), 2);
    broker::cli::topics_create(&server.addr.to_string(), "m", 4, -1, &[]).unwrap();
    let counters = |server: &broker::server::ServerHandle| -> Vec<(u64, u64)> {
        server
            .metrics
            .iter()
            .map(|m| {
                (
                    ShardMetrics::get(&m.connections_accepted),
                    ShardMetrics::get(&m.requests_forwarded_in),
                )
            })
            .collect()
    };
    let before = counters(&server);
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let mut batches = Vec::new();
    for partition in 0..4 {
        let batch = kafka_support::batch(&[format!("p{partition}").as_bytes()]);
        assert_eq!(produce(&mut client, "m", partition, batch.clone()), 0);
        batches.push(batch);
    }
    for (partition, batch) in batches.iter().enumerate() {
        let (error, hw, records) = fetch(&mut client, "m", partition as i32, 0, 1 << 20, 12);
        assert_eq!((error, hw), (0, 1), "partition {partition}");
        assert!(
            same_batch(&records, batch),
            "partition {partition}: fetched bytes differ from produced"
        );
    }
    let after = counters(&server);
    let accepted: Vec<u64> = (0..2).map(|s| after[s].0 - before[s].0).collect();
    let local = accepted
        .iter()
        .position(|&n| n == 1)
        .unwrap_or_else(|| panic!("one shard accepts the connection: {accepted:?}"));
    let remote = 1 - local;
    let forwarded_in: Vec<u64> = (0..2).map(|s| after[s].1 - before[s].1).collect();
    eprintln!(
        "two_shards: connection on shard {local}; requests forwarded in per shard {forwarded_in:?}"
    );
    // At least one partition is the other shard's: its produce and its fetch crossed.
    assert!(
        forwarded_in[remote] >= 2,
        "shard {remote} served {} requests for shard {local}",
        forwarded_in[remote]
    );
    assert_eq!(
        forwarded_in[local], 0,
        "nothing is forwarded to the shard the client is on"
    );
}

/// One Fetch of `partitions` of `topic`, each from `offset` and up to `max_bytes` (also the
/// response's limit): (error, high watermark, records) per partition, in request order.
fn fetch_all(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    offset: i64,
    max_bytes: i32,
    version: i16,
) -> Vec<(i16, i64, bytes::Bytes)> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes)
                    })
                    .collect(),
            )]);
    let response = client.call(&request, version).unwrap();
    response.responses[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.error_code,
                p.high_watermark,
                p.records.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_fetch_crosses_to_the_other_shard_once_and_keeps_the_response_limit_in_order() {
    // Four partitions over two shards, one batch each (of growing sizes). A Fetch of all four
    // must cost the other shard one mesh request, not one per partition, and answer exactly
    // what reading them one after the other would: with a response limit that ends inside
    // the third partition's batch, the first two come whole, the third as a Fetch of it
    // alone with what is left would answer, the fourth with offsets only.
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::two_shards_profile(), dir.path());
    broker::cli::topics_create(&server.addr.to_string(), "f", 4, -1, &[]).unwrap();
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let mut batches = Vec::new();
    for partition in 0..4 {
        let value = vec![b'a' + partition as u8; 200 * (partition as usize + 1)];
        let batch = kafka_support::batch(&[&value]);
        assert_eq!(produce(&mut client, "f", partition, batch.clone()), 0);
        batches.push(batch);
    }
    let before = forwarded(&server);
    let all = fetch_all(&mut client, "f", &[0, 1, 2, 3], 0, 1 << 20, 12);
    assert_eq!(
        forwarded(&server) - before,
        1,
        "one mesh request for the other shard's partitions"
    );
    for (partition, (error, hw, records)) in all.iter().enumerate() {
        assert_eq!((*error, *hw), (0, 1), "partition {partition}");
        assert!(
            same_batch(records, &batches[partition]),
            "partition {partition}"
        );
    }

    let limit = batches[0].len() + batches[1].len() + batches[2].len() / 2;
    let left_for_third = (limit - batches[0].len() - batches[1].len()) as i32;
    let alone = fetch_all(&mut client, "f", &[2], 0, left_for_third, 12);
    let limited = fetch_all(&mut client, "f", &[0, 1, 2, 3], 0, limit as i32, 12);
    assert!(same_batch(&limited[0].2, &batches[0]));
    assert!(same_batch(&limited[1].2, &batches[1]));
    assert_eq!(limited[2], alone[0], "the third as a Fetch of it alone");
    assert_eq!(
        (limited[3].0, limited[3].1, limited[3].2.len()),
        (0, 1, 0),
        "past the limit: offsets only"
    );
}

#[test]
fn a_produce_to_partitions_of_both_shards_crosses_to_the_other_once() {
    // One Produce naming four partitions over two shards: the other shard's partitions go
    // to it in one mesh request, and every partition answers for its own batch.
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start(kafka_support::two_shards_profile(), dir.path());
    broker::cli::topics_create(&server.addr.to_string(), "p", 4, -1, &[]).unwrap();
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    let batches: Vec<bytes::Bytes> = (0..4)
        .map(|p| kafka_support::batch(&[format!("value of {p}").as_bytes()]))
        .collect();
    let mut request = kafka_support::produce_request("p", 0, batches[0].clone());
    for (partition, batch) in batches.iter().enumerate().skip(1) {
        request.topic_data[0].partition_data.push(
            kafka_protocol::messages::produce_request::PartitionProduceData::default()
                .with_index(partition as i32)
                .with_records(Some(batch.clone())),
        );
    }
    let before = forwarded(&server);
    let response = client.call(&request, 9).unwrap();
    assert_eq!(forwarded(&server) - before, 1, "one mesh request");
    let answers = &response.responses[0].partition_responses;
    assert_eq!(answers.len(), 4);
    for (partition, answer) in answers.iter().enumerate() {
        assert_eq!(answer.index, partition as i32);
        assert_eq!((answer.error_code, answer.base_offset), (0, 0));
        let (error, hw, records) = fetch(&mut client, "p", partition as i32, 0, 1 << 20, 12);
        assert_eq!((error, hw), (0, 1), "partition {partition}");
        assert!(
            same_batch(&records, &batches[partition]),
            "partition {partition}"
        );
    }
}
