//! `broker records delete`: DeleteRecords on one partition (Kafka's
//! `kafka-delete-records.sh`), sent to the partition's leader. Records below `--before` stop
//! being served and the partition's log start offset (the low watermark printed) moves there;
//! `--before -1` deletes up to the high watermark.
//!
//! `broker producers describe` (Kafka's `kafka-transactions.sh describe-producers`): the
//! idempotent producers each partition's leader remembers (DescribeProducers).

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{DeleteRecordsRequest, DescribeProducersRequest};

use super::client::ClientError;
use super::leaders::Leaders;
use super::{kafka_error, topic_name};

/// How long the broker may take, milliseconds (the request's `timeout_ms`).
const DELETE_TIMEOUT_MS: i32 = 30_000;

/// DeleteRecords of `topic`-`partition` below `before`; returns the new low watermark.
pub fn records_delete(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    before: i64,
) -> Result<i64, ClientError> {
    let mut leaders = Leaders::discover(bootstrap, topic)?;
    let leader = leaders
        .by_leader([partition])?
        .into_keys()
        .next()
        .ok_or_else(|| ClientError::Kafka(format!("partition {partition} has no leader")))?;
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(DELETE_TIMEOUT_MS)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(before)])]);
    let response = leaders.client(leader)?.call(&request, 2)?;
    let result = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| {
            ClientError::Protocol("DeleteRecords answer without the partition".into())
        })?;
    if result.error_code != 0 {
        return Err(kafka_error(
            &format!("delete records of {topic}-{partition}"),
            result.error_code,
            None,
        ));
    }
    println!(
        "{topic}-{partition}: low watermark {}",
        result.low_watermark
    );
    Ok(result.low_watermark)
}

/// `producers describe`: one line per producer of each partition (all of the topic's when
/// `partition` is None), asked of the partition's leader.
pub fn producers_describe(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
) -> Result<(), ClientError> {
    let mut leaders = Leaders::discover(bootstrap, topic)?;
    let partitions: Vec<i32> = match partition {
        Some(p) => vec![p],
        None => (0..leaders.partition_count()).collect(),
    };
    println!(
        "{:<30} {:>9} {:>20} {:>6} {:>13} {:>15}",
        "TOPIC", "PARTITION", "PRODUCER ID", "EPOCH", "LAST SEQUENCE", "LAST TIMESTAMP"
    );
    for (leader, partitions) in leaders.by_leader(partitions)? {
        let request = DescribeProducersRequest::default()
            .with_topics(vec![TopicRequest::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(partitions)]);
        let response = leaders.client(leader)?.call(&request, 0)?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(kafka_error(
                        &format!("describe producers of {topic}-{}", p.partition_index),
                        p.error_code,
                        p.error_message.as_ref(),
                    ));
                }
                for producer in &p.active_producers {
                    println!(
                        "{:<30} {:>9} {:>20} {:>6} {:>13} {:>15}",
                        topic,
                        p.partition_index,
                        producer.producer_id.0,
                        producer.producer_epoch,
                        producer.last_sequence,
                        producer.last_timestamp
                    );
                }
            }
        }
    }
    Ok(())
}
