//! The Produce API (v3-v10): each partition's records field is a slice of the receive buffer
//! (kafka-protocol decodes `Bytes` fields by slicing, not copying) and goes to the owning
//! partition log as it came; the log validates it and only rewrites the base offset. The
//! partitions of one request are appended concurrently, so they share group commits, and the
//! partitions another shard owns go to it in one mesh request.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;

use super::metrics::ShardMetrics;
use super::partition_ops::PartitionError;
use super::shard::Shard;

type Outcome = Result<crate::storage::AppendInfo, PartitionError>;

/// Appends everything in the request; `None` when acks = 0 (no response is sent).
/// Each topic needs WRITE (TOPIC_AUTHORIZATION_FAILED for its partitions otherwise).
pub async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let timeout_ms = request.timeout_ms;
    let acks_valid = (-1..=1).contains(&acks);
    // Per topic, per partition: refused at once with an error code, or appended (its place
    // in `appends`).
    let mut pending = Vec::with_capacity(request.topic_data.len());
    let mut topics = Vec::new();
    let mut appends_at = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.as_str();
        let authorized = access.topic(operation::WRITE, name);
        let topic = shard.topic(name);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let index = data.index;
            let slot = match (&topic, data.records, acks_valid) {
                (_, _, false) => Err(codes::INVALID_REQUIRED_ACKS),
                _ if !authorized => Err(codes::TOPIC_AUTHORIZATION_FAILED),
                (None, _, _) => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                // Only the group coordinators write `__consumer_offsets`, as in Kafka.
                (Some(t), _, _) if t.name == crate::group::OFFSETS_TOPIC => {
                    Err(codes::INVALID_TOPIC_EXCEPTION)
                }
                (Some(_), None, _) => Err(codes::CORRUPT_MESSAGE),
                (Some(topic), Some(records), true) => {
                    topics.push(topic.clone());
                    appends_at.push((index, records));
                    Ok(appends_at.len() - 1)
                }
            };
            partitions.push((index, slot));
        }
        pending.push((topic_data.name, partitions));
    }
    let appends = topics
        .iter()
        .zip(appends_at)
        .map(|(topic, (index, records))| (&**topic, index, records))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = shard
        .append_many(appends, acks, timeout_ms)
        .await
        .into_iter()
        .map(Some)
        .collect();
    let mut responses = Vec::with_capacity(pending.len());
    for (name, partitions) in pending {
        let mut results = Vec::with_capacity(partitions.len());
        for (index, slot) in partitions {
            let outcome: Outcome = match slot {
                Err(code) => Err((code, String::new())),
                Ok(at) => outcomes[at].take().unwrap_or_else(|| {
                    Err((codes::KAFKA_STORAGE_ERROR, "append was not answered".into()))
                }),
            };
            let entry = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            results.push(match outcome {
                // log_start_offset exists from v5, error_message from v8.
                Ok(info) => {
                    count_append(shard, name.0.as_str(), index, &info);
                    entry
                        .with_base_offset(info.base_offset)
                        .with_log_start_offset(if version >= 5 {
                            info.log_start_offset
                        } else {
                            -1
                        })
                }
                Err((code, message)) => {
                    if code == codes::CORRUPT_MESSAGE || code == codes::INVALID_RECORD {
                        tracing::info!("produce to {}-{index} refused: {message}", name.0.as_str());
                    }
                    entry
                        .with_error_code(code)
                        .with_base_offset(-1)
                        .with_log_start_offset(-1)
                        .with_error_message(
                            (version >= 8 && !message.is_empty())
                                .then(|| StrBytes::from_string(message)),
                        )
                }
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(results),
        );
    }
    shard.metrics.errors_answered(
        kafka_protocol::messages::ApiKey::Produce as i16,
        responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)),
    );
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

/// The metrics of one partition's append: per shard, per partition, and the append's size.
fn count_append(shard: &Shard, topic: &str, partition: i32, info: &crate::storage::AppendInfo) {
    let metrics = &shard.metrics;
    ShardMetrics::add(&metrics.produce_records, info.records);
    ShardMetrics::add(&metrics.produce_bytes, info.bytes);
    metrics.produce_append_bytes.record(info.bytes);
    metrics.produce_append_records.record(info.records);
    shard.traffic.update(topic, partition, |t| {
        t.records_in += info.records;
        t.bytes_in += info.bytes;
    });
}

#[cfg(test)]
mod tests {
    //! Proves the Produce path does not copy record bytes while decoding: the records field
    //! kafka-protocol returns points into the frame buffer, checked by pointer range.
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    #[test]
    fn records_are_slices_of_the_receive_buffer() {
        for version in [3i16, 9, 10] {
            let records = Bytes::from(vec![0xAB; 4096]);
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records))])]);
            let mut buf = BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            let frame = buf.freeze();
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            let decoded = ProduceRequest::decode(&mut frame.clone(), version).unwrap();
            let got = decoded.topic_data[0].partition_data[0]
                .records
                .clone()
                .unwrap();
            assert_eq!(got.len(), 4096);
            assert!(
                range.contains(&(got.as_ptr() as usize)),
                "v{version}: records copied"
            );
        }
    }
}
