//! The ListOffsets API (v1-v7): earliest (-2), latest (-1), the largest timestamp (-3, from
//! v7: KIP-734) and by timestamp, per partition, asked of the shard that owns it. Each topic
//! needs DESCRIBE.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;

use super::shard::Shard;

/// ListOffsets' "the record with the largest timestamp" (from v7).
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic_request in request.topics {
        let name = topic_request.name.0.as_str();
        let authorized = access.topic(operation::DESCRIBE, name);
        let topic = shard.topic(name);
        let mut partitions = Vec::with_capacity(topic_request.partitions.len());
        for partition in topic_request.partitions {
            let entry = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index);
            let result = match &topic {
                _ if !authorized => Err((codes::TOPIC_AUTHORIZATION_FAILED, String::new())),
                None => Err((codes::UNKNOWN_TOPIC_OR_PARTITION, String::new())),
                Some(_) if partition.timestamp == MAX_TIMESTAMP && version < 7 => {
                    Err((codes::UNSUPPORTED_VERSION, String::new()))
                }
                Some(topic) => {
                    shard
                        .list_offset(topic, partition.partition_index, partition.timestamp)
                        .await
                }
            };
            partitions.push(match result {
                Ok((timestamp, offset)) => entry.with_timestamp(timestamp).with_offset(offset),
                Err((code, _)) => entry
                    .with_error_code(code)
                    .with_timestamp(-1)
                    .with_offset(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic_request.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
