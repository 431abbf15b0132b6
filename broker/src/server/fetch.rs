//! The Fetch API (v4-v16): reads each asked partition from its owner (file ranges plus the
//! in-memory tail), long-polls up to `max_wait_ms` while fewer than `min_bytes` are
//! available, honours `max_bytes` and per-partition max bytes, and encodes the answer with
//! the record bytes as parts that the connection splices from the segment files.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;

use crate::kafka::codes;
use crate::kafka::fetch_response::{self, PartitionData, TopicData};
use crate::kafka::response::Response;
use crate::security::access::Access;
use crate::security::authorizer::operation;
use crate::topics::Topic;

use super::partition_ops::{ConsumerRead, FollowerFetch, PartitionRead, Reader};
use super::shard::Shard;
use crate::cluster::controller::TopicPartition;

/// Longest long-poll honoured, whatever the client asks (bounds a connection's idle hold).
const MAX_WAIT_MS_LIMIT: i32 = 30_000;

struct Wanted {
    topic: Option<Rc<Topic>>,
    /// READ on the topic (a follower: CLUSTER_ACTION on the cluster).
    authorized: bool,
    name: Bytes,
    id: [u8; 16],
    partitions: Vec<WantedPartition>,
}

#[derive(Clone, Copy)]
struct WantedPartition {
    partition: i32,
    offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    /// A follower's log start offset (-1 from consumers).
    log_start_offset: i64,
}

/// A consumer needs READ on each topic, a follower CLUSTER_ACTION on the cluster
/// (TOPIC_AUTHORIZATION_FAILED for the partitions otherwise, as Kafka answers).
/// The long-poll's wait is added to `remote_us` (Kafka's remote time of a fetch).
pub async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
    remote_us: &std::cell::Cell<u64>,
) -> Response {
    // A broker replicating (v15+ carries its id in replica_state); -1 for consumers.
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let follower = (replica_id >= 0 && shard.cluster.is_some()).then_some(replica_id);
    let cluster_action = follower.is_some() && access.cluster(operation::CLUSTER_ACTION);
    let wanted: Vec<Wanted> = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = if version >= 13 {
                shard.topic_by_id(topic.topic_id.as_bytes())
            } else {
                shard.topic(topic.topic.0.as_str())
            };
            let authorized = match (&found, follower) {
                (_, Some(_)) => cluster_action,
                (Some(t), None) => access.topic(operation::READ, &t.name),
                // By name: READ decides whether the client learns it is unknown.
                (None, None) if version < 13 => {
                    access.topic(operation::READ, topic.topic.0.as_str())
                }
                (None, None) => true,
            };
            Wanted {
                authorized,
                topic: found,
                name: topic.topic.0.into_bytes(),
                id: *topic.topic_id.as_bytes(),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|p| WantedPartition {
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0),
                        current_leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: p.last_fetched_epoch,
                        log_start_offset: p.log_start_offset,
                    })
                    .collect(),
            }
        })
        .collect();
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_LIMIT) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let mut waited = false;
    loop {
        let (topics, total, any_error) =
            read_all(shard, &wanted, max_bytes, version, follower).await;
        let now = Instant::now();
        if total >= min_bytes || any_error || waited || now >= deadline {
            count_answer(shard, &wanted, &topics, follower.is_some());
            return fetch_response::encode(correlation_id, version, codes::NONE, 0, topics);
        }
        drop(topics);
        let waits = wanted
            .iter()
            .filter(|w| w.authorized)
            .filter_map(|w| w.topic.as_ref().map(|t| (t, &w.partitions)))
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |p| (topic.clone(), p.partition, p.offset))
            })
            .collect();
        let reader = if follower.is_some() {
            Reader::Follower
        } else {
            Reader::Consumer
        };
        let wait_started = Instant::now();
        shard.wait_any(waits, deadline - now, reader).await;
        remote_us.set(remote_us.get() + wait_started.elapsed().as_micros() as u64);
        waited = true;
    }
}

/// Every partition a consumer's Fetch can read (authorized, topic known), in request order,
/// each asked for up to its own limit within the response's.
async fn prefetch(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    max_bytes: usize,
) -> Vec<PartitionRead<crate::kafka::response::Part>> {
    let reads = wanted
        .iter()
        .filter(|want| want.authorized)
        .filter_map(|want| want.topic.as_deref().map(|topic| (topic, &want.partitions)))
        .flat_map(|(topic, partitions)| {
            partitions.iter().map(move |p| {
                let asked = (p.max_bytes as usize).min(max_bytes).max(1);
                (topic, consumer_read(topic, p, asked))
            })
        })
        .collect();
    shard.read_many(reads).await
}

fn consumer_read(topic: &Topic, want: &WantedPartition, max_bytes: usize) -> ConsumerRead {
    ConsumerRead {
        topic: topic.name.clone(),
        partition: want.partition,
        offset: want.offset,
        max_bytes,
        current_leader_epoch: want.current_leader_epoch,
    }
}

fn records_len(records: &[crate::kafka::response::Part]) -> usize {
    records.iter().map(crate::kafka::response::Part::len).sum()
}

/// The metrics of an answer: record bytes out (per shard, and per partition for consumers)
/// and the partitions' error codes. `topics` is in the order of `wanted`.
fn count_answer(shard: &Shard, wanted: &[Wanted], topics: &[TopicData], follower: bool) {
    debug_assert_eq!(wanted.len(), topics.len());
    let metrics = &shard.metrics;
    let mut total = 0u64;
    for (want, data) in wanted.iter().zip(topics) {
        for partition in &data.partitions {
            let len = records_len(&partition.records) as u64;
            total += len;
            if let (Some(topic), false, true) = (&want.topic, follower, len > 0) {
                shard.traffic.update(&topic.name, partition.partition, |t| {
                    t.bytes_out += len;
                });
            }
        }
    }
    let counter = if follower {
        &metrics.follower_fetch_bytes
    } else {
        &metrics.fetch_bytes
    };
    super::metrics::ShardMetrics::add(counter, total);
    metrics.errors_answered(
        kafka_protocol::messages::ApiKey::Fetch as i16,
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
    );
}

/// A partition answered with `error_code` and nothing else.
fn failed(partition: i32, error_code: i16) -> PartitionData {
    PartitionData {
        partition,
        error_code,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        records: Vec::new(),
        diverging_epoch: None,
    }
}

async fn read_all(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    max_bytes: usize,
    version: i16,
    follower: Option<i32>,
) -> (Vec<TopicData>, usize, bool) {
    // A consumer's partitions are read at once, each up to its own limit within the
    // response's (one mesh call per other shard owning some); the response's limit is then
    // applied in request order, as reading them one after the other would: a partition whose
    // data goes past what is left of it is read again with that (rare: the response is
    // nearly full), and past the limit only offsets are answered.
    let mut prefetched = match follower {
        None => prefetch(shard, wanted, max_bytes).await.into_iter(),
        Some(_) => Vec::new().into_iter(),
    };
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(wanted.len());
    for want in wanted {
        let mut partitions = Vec::with_capacity(want.partitions.len());
        for want_partition in &want.partitions {
            let partition = want_partition.partition;
            let offset = want_partition.offset;
            let partition_max = want_partition.max_bytes;
            let data = match &want.topic {
                _ if !want.authorized => {
                    any_error = true;
                    failed(partition, codes::TOPIC_AUTHORIZATION_FAILED)
                }
                None => {
                    any_error = true;
                    failed(
                        partition,
                        if version >= 13 {
                            codes::UNKNOWN_TOPIC_ID
                        } else {
                            codes::UNKNOWN_TOPIC_OR_PARTITION
                        },
                    )
                }
                Some(topic) => {
                    let budget = (partition_max as usize).min(remaining);
                    // The response is full: report offsets without records.
                    let asked = if budget == 0 && total > 0 {
                        0
                    } else {
                        budget.max(1)
                    };
                    let (read, diverging_epoch) = match follower {
                        Some(follower) => {
                            let fetch = FollowerFetch {
                                tp: TopicPartition::new(topic.name.clone(), partition),
                                follower,
                                fetch_offset: offset,
                                current_leader_epoch: want_partition.current_leader_epoch,
                                last_fetched_epoch: want_partition.last_fetched_epoch,
                                max_bytes: asked,
                                log_start_offset: want_partition.log_start_offset,
                            };
                            shard.follower_read(topic, fetch).await
                        }
                        None => {
                            let read = prefetched.next().unwrap_or_else(|| {
                                PartitionRead::error(codes::KAFKA_STORAGE_ERROR)
                            });
                            let read = if asked > 0 && records_len(&read.chunks) > asked {
                                let again = consumer_read(topic, want_partition, asked);
                                shard.read(topic, again).await
                            } else {
                                read
                            };
                            (read, None)
                        }
                    };
                    if diverging_epoch.is_some() {
                        any_error = true;
                    }
                    if read.error_code != codes::NONE {
                        any_error = true;
                    }
                    let mut records = read.chunks;
                    if budget == 0 && total > 0 {
                        records.clear();
                    }
                    let len = records_len(&records);
                    total += len;
                    remaining = remaining.saturating_sub(len);
                    PartitionData {
                        partition,
                        error_code: read.error_code,
                        high_watermark: read.high_watermark,
                        last_stable_offset: read.high_watermark,
                        log_start_offset: read.log_start_offset,
                        records,
                        diverging_epoch: diverging_epoch.filter(|_| version >= 12),
                    }
                }
            };
            partitions.push(data);
        }
        topics.push(TopicData {
            name: want.name.clone(),
            id: want.id,
            partitions,
        });
    }
    (topics, total, any_error)
}
