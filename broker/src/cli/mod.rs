//! The `broker` binary's operator commands: `topics create|list|describe|delete`,
//! `topics alter|add-partitions` ([`topic_changes`]), `log-dirs describe` ([`log_dirs`]), `produce`
//! (lines from stdin), `consume` and `groups list|describe`, as thin Kafka-protocol clients
//! of a running broker. They use only the public protocol, so they work against any
//! Kafka-API broker. `users add|delete|list` ([`users`]) edits a stopped single node's SCRAM
//! credentials in its data directory instead; `tuning probe` ([`probe`]) measures the host
//! and writes a tuning profile, and `tuning service-unit` ([`service_unit`]) prints the
//! systemd units that run the broker and the coordinator with that profile. `records delete`
//! ([`records`]) moves a partition's log start offset (DeleteRecords).

pub mod acls;
pub mod client;
pub mod groups;
pub mod leaders;
pub mod log_dirs;
pub mod probe;
pub mod reassign;
pub mod records;
pub mod service_unit;
pub mod store;
pub mod topic_changes;
pub mod users;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::kafka::plain_batch::{self, plain_record};
use client::{complete_batches, Client, ClientError};
use leaders::Leaders;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn kafka_error(what: &str, code: i16, message: Option<&StrBytes>) -> ClientError {
    let detail = message.map(|m| m.as_str().to_string()).unwrap_or_default();
    ClientError::Kafka(format!("{what}: error code {code} {detail}"))
}

/// `topics create`.
pub fn topics_create(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(key.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            )]);
    let response = client.call(&request, 7)?;
    for topic in response.topics {
        if topic.error_code != 0 {
            return Err(kafka_error(
                &format!("create {}", topic.name.0.as_str()),
                topic.error_code,
                topic.error_message.as_ref(),
            ));
        }
        println!(
            "created topic {} with {} partitions, replication factor {}",
            topic.name.0.as_str(),
            topic.num_partitions,
            topic.replication_factor
        );
    }
    Ok(())
}

fn metadata(client: &mut Client, topics: Option<&[&str]>) -> Result<MetadataResponse, ClientError> {
    let request = MetadataRequest::default().with_topics(topics.map(|names| {
        names
            .iter()
            .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
            .collect()
    }));
    client.call(&request, 12)
}

/// `cluster`: the cluster id, the controller and the live brokers, from Metadata.
pub fn cluster(bootstrap: &str) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let response = metadata(&mut client, Some(&[]))?;
    println!(
        "cluster id: {}",
        response
            .cluster_id
            .as_ref()
            .map(|id| id.as_str())
            .unwrap_or("")
    );
    println!("controller: {}", response.controller_id.0);
    let mut brokers: Vec<_> = response.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    for broker in brokers {
        match &broker.rack {
            Some(rack) => println!(
                "broker {} {}:{} rack {}",
                broker.node_id.0,
                broker.host.as_str(),
                broker.port,
                rack.as_str()
            ),
            None => println!(
                "broker {} {}:{}",
                broker.node_id.0,
                broker.host.as_str(),
                broker.port
            ),
        }
    }
    Ok(())
}

/// `topics list`.
pub fn topics_list(bootstrap: &str) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let response = metadata(&mut client, None)?;
    let mut names: Vec<String> = response
        .topics
        .iter()
        .filter_map(|topic| topic.name.as_ref().map(|n| n.0.as_str().to_string()))
        .collect();
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

/// `topics describe`: partitions, leaders and configs.
pub fn topics_describe(bootstrap: &str, name: &str) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let response = metadata(&mut client, Some(&[name]))?;
    for topic in &response.topics {
        if topic.error_code != 0 {
            return Err(kafka_error(
                &format!("describe {name}"),
                topic.error_code,
                None,
            ));
        }
        println!(
            "topic {name} id {} partitions {}",
            crate::cluster::znodes::uuid_text(topic.topic_id.as_bytes()),
            topic.partitions.len()
        );
        let mut partitions: Vec<_> = topic.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition_index);
        let list = |ids: &[kafka_protocol::messages::BrokerId]| {
            ids.iter()
                .map(|b| b.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        for partition in partitions {
            println!(
                "  partition {} leader {} epoch {} replicas {} isr {}{}",
                partition.partition_index,
                partition.leader_id.0,
                partition.leader_epoch,
                list(&partition.replica_nodes),
                list(&partition.isr_nodes),
                partition_state(partition)
            );
        }
    }
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(name.to_string()))]);
    let response = client.call(&request, 4)?;
    for result in response.results {
        if result.error_code != 0 {
            return Err(kafka_error(
                "describe configs",
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        for config in result.configs {
            println!(
                "  config {}={}{}",
                config.name.as_str(),
                config.value.as_ref().map(|v| v.as_str()).unwrap_or(""),
                if config.config_source == 5 {
                    " (default)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// What `topics describe` says after a partition's line: nothing when it has a leader,
/// " offline" without one, and which replicas' disks failed when the broker says so.
fn partition_state(
    partition: &kafka_protocol::messages::metadata_response::MetadataResponsePartition,
) -> String {
    if partition.error_code == 56 {
        let replicas: Vec<String> = partition
            .offline_replicas
            .iter()
            .map(|b| b.0.to_string())
            .collect();
        return format!(
            " offline (KAFKA_STORAGE_ERROR: disk fault on replica {})",
            replicas.join(",")
        );
    }
    if partition.leader_id.0 < 0 {
        " offline".to_string()
    } else {
        String::new()
    }
}

/// `topics delete`.
pub fn topics_delete(bootstrap: &str, name: &str) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![topic_name(name)]);
    let response = client.call(&request, 5)?;
    for result in response.responses {
        if result.error_code != 0 {
            return Err(kafka_error(
                &format!("delete {name}"),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
    }
    println!("deleted topic {name}");
    Ok(())
}

/// Records sent per Produce request by `produce`.
const PRODUCE_BATCH_RECORDS: usize = 1000;

/// `produce`: one record per stdin line; with `key_separator`, `key<sep>value`. Keyed records
/// go to crc32c(key) % partitions, others round-robin (or all to `partition` when given).
pub fn produce(
    bootstrap: &str,
    topic: &str,
    key_separator: Option<&str>,
    partition: Option<i32>,
    input: impl BufRead,
) -> Result<u64, ClientError> {
    let mut leaders = Leaders::discover(bootstrap, topic)?;
    let partitions = leaders.partition_count();
    let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut pending_count = 0usize;
    let mut next = 0i32;
    let mut sent = 0u64;
    for line in input.lines() {
        let line = line?;
        let (key, value) = match key_separator.and_then(|sep| line.split_once(sep)) {
            Some((key, value)) => (
                Some(Bytes::from(key.to_string())),
                Bytes::from(value.to_string()),
            ),
            None => (None, Bytes::from(line)),
        };
        let target = match (partition, &key) {
            (Some(p), _) => p,
            (None, Some(key)) => (crc32c::crc32c(key) % partitions as u32) as i32,
            (None, None) => {
                next = (next + 1) % partitions;
                next
            }
        };
        let records = pending.entry(target).or_default();
        // Offsets 0, 1, ... of the partition's pending batch.
        records.push(plain_record(
            records.len() as i64,
            now_ms(),
            key,
            Some(value),
        ));
        pending_count += 1;
        if pending_count >= PRODUCE_BATCH_RECORDS {
            sent += send_batches(&mut leaders, topic, &mut pending)?;
            pending_count = 0;
        }
    }
    sent += send_batches(&mut leaders, topic, &mut pending)?;
    Ok(sent)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long `produce` keeps retrying a partition whose leader is moving (librdkafka's
/// message.timeout.ms is 300 s; an operator's command should give up sooner).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors a broker answers before it appends anything, so the records can go again (to the
/// new leader) without being stored twice: UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE,
/// NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS.
const RETRIABLE_BEFORE_APPEND: [i16; 4] = [3, 5, 6, 19];

/// Sends each partition's pending records to its leader, one request per leader (acks=all).
/// Partitions refused before the append are sent again, to the leader a new lookup names,
/// for up to [`DELIVERY_TIMEOUT`].
fn send_batches(
    leaders: &mut Leaders,
    topic: &str,
    pending: &mut BTreeMap<i32, Vec<Record>>,
) -> Result<u64, ClientError> {
    let mut pending = std::mem::take(pending);
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut count = 0u64;
    while !pending.is_empty() {
        let mut refused = None;
        for (leader, partitions) in leaders.by_leader(pending.keys().copied())? {
            let mut data = Vec::with_capacity(partitions.len());
            for partition in partitions {
                let batch =
                    plain_batch::encode(&pending[&partition]).map_err(ClientError::Protocol)?;
                data.push(
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                );
            }
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(data)]);
            let response = leaders.client(leader)?.call(&request, 9)?;
            for topic in response.responses {
                for partition in topic.partition_responses {
                    let error = kafka_error(
                        &format!("produce to partition {}", partition.index),
                        partition.error_code,
                        partition.error_message.as_ref(),
                    );
                    if partition.error_code == 0 {
                        count += pending
                            .remove(&partition.index)
                            .map_or(0, |records| records.len() as u64);
                    } else if RETRIABLE_BEFORE_APPEND.contains(&partition.error_code) {
                        refused = Some(error);
                    } else {
                        return Err(error);
                    }
                }
            }
        }
        if let Some(error) = refused {
            if Instant::now() >= deadline {
                return Err(error);
            }
            std::thread::sleep(leaders::METADATA_RETRY);
            leaders.refresh()?;
        }
    }
    Ok(count)
}

/// Options of `consume`.
pub struct ConsumeOptions<'a> {
    pub topic: &'a str,
    pub from_beginning: bool,
    pub partition: Option<i32>,
    /// Stop after this many records.
    pub max_messages: Option<u64>,
    /// Stop when no record arrived for this long.
    pub idle_timeout: Duration,
    /// Print `key<sep>value` instead of the value.
    pub key_separator: Option<&'a str>,
}

/// `consume`: prints each record's value (or key and value) on its own line.
pub fn consume(
    bootstrap: &str,
    options: &ConsumeOptions,
    out: &mut impl Write,
) -> Result<u64, ClientError> {
    let mut leaders = Leaders::discover(bootstrap, options.topic)?;
    let partitions: Vec<i32> = match options.partition {
        Some(p) => vec![p],
        None => (0..leaders.partition_count()).collect(),
    };
    let by_leader = leaders.by_leader(partitions)?;
    let timestamp = if options.from_beginning { -2 } else { -1 };
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    for (&leader, partitions) in &by_leader {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(options.topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let response = leaders.client(leader)?.call(&request, 7)?;
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.error_code != 0 {
                    return Err(kafka_error("list offsets", partition.error_code, None));
                }
                positions.insert(partition.partition_index, partition.offset);
            }
        }
    }
    // With several leaders each long-poll is short, so one quiet leader does not hold up
    // the others' records.
    let max_wait_ms = if by_leader.len() > 1 { 100 } else { 500 };
    let mut consumed = 0u64;
    let mut last_record = Instant::now();
    loop {
        let mut got_any = false;
        for (&leader, partitions) in &by_leader {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(16 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(options.topic))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_fetch_offset(positions.get(p).copied().unwrap_or(0))
                                    .with_partition_max_bytes(4 << 20)
                            })
                            .collect(),
                    )]);
            let response = leaders.client(leader)?.call(&request, 12)?;
            for topic in response.responses {
                for partition in topic.partitions {
                    if partition.error_code != 0 {
                        return Err(kafka_error("fetch", partition.error_code, None));
                    }
                    let Some(records) = partition.records else {
                        continue;
                    };
                    let position = positions.entry(partition.partition_index).or_insert(0);
                    for batch in complete_batches(records) {
                        let mut batch = batch;
                        let set = RecordBatchDecoder::decode(&mut batch)
                            .map_err(|err| ClientError::Protocol(err.to_string()))?;
                        for record in set.records {
                            if record.offset < *position || record.control {
                                continue;
                            }
                            *position = record.offset + 1;
                            got_any = true;
                            if let (Some(sep), Some(key)) = (options.key_separator, &record.key) {
                                out.write_all(key)?;
                                out.write_all(sep.as_bytes())?;
                            }
                            out.write_all(record.value.as_deref().unwrap_or(&[]))?;
                            out.write_all(b"\n")?;
                            consumed += 1;
                            if options.max_messages.is_some_and(|max| consumed >= max) {
                                out.flush()?;
                                return Ok(consumed);
                            }
                        }
                    }
                }
            }
        }
        if got_any {
            last_record = Instant::now();
        } else if last_record.elapsed() >= options.idle_timeout {
            out.flush()?;
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    //! `topics describe` says why a partition is offline.
    use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
    use kafka_protocol::messages::BrokerId;

    use super::partition_state;

    #[test]
    fn describe_names_a_disk_fault() {
        let led = MetadataResponsePartition::default().with_leader_id(BrokerId(1));
        assert_eq!(partition_state(&led), "");
        let leaderless = MetadataResponsePartition::default().with_leader_id(BrokerId(-1));
        assert_eq!(partition_state(&leaderless), " offline");
        let failed = leaderless
            .with_error_code(56)
            .with_offline_replicas(vec![BrokerId(0)]);
        assert_eq!(
            partition_state(&failed),
            " offline (KAFKA_STORAGE_ERROR: disk fault on replica 0)"
        );
    }
}
