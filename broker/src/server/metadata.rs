//! The Metadata API (v0-v12): this node as the only broker, the topics a client asks for with
//! this node leading every partition. Unknown topics are auto-created only when the server was
//! started with `--auto-create-topics` and the client allows it.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::topics::Topic;

use super::partition_ops::CreateSpec;
use super::shard::Shard;

/// A client-visible cluster id (Metadata v2+).
pub const CLUSTER_ID: &str = "kbroker-single-node";

fn topic_entry(shard: &Shard, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let node = BrokerId(shard.config.node_id);
    MetadataResponseTopic::default()
        .with_error_code(codes::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        // Clients leave internal topics out of pattern subscriptions.
        .with_is_internal(version >= 1 && topic.name == crate::group::OFFSETS_TOPIC)
        // Fields are only set from the version that has them (the codec refuses others).
        .with_topic_id(if version >= 10 {
            uuid::Uuid::from_bytes(topic.id)
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(
            (0..topic.partition_count())
                .map(|partition| {
                    MetadataResponsePartition::default()
                        .with_partition_index(partition)
                        .with_leader_id(node)
                        .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}

fn missing(name: Option<TopicName>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name)
        .with_topic_id(id)
}

pub async fn handle(shard: &Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let mut topics = Vec::new();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    if all {
        for topic in shard.topics.borrow().values() {
            topics.push(topic_entry(shard, topic, version));
        }
    } else {
        let wanted = request.topics.unwrap_or_default();
        let mut to_create = Vec::new();
        for entry in &wanted {
            if let Some(name) = &entry.name {
                if shard.topic(name.0.as_str()).is_none()
                    && shard.config.auto_create_topics
                    && (request.allow_auto_topic_creation || version < 4)
                {
                    to_create.push(CreateSpec {
                        name: name.0.as_str().to_string(),
                        num_partitions: -1,
                        replication_factor: -1,
                        configs: Vec::new(),
                        validate_only: false,
                    });
                }
            }
        }
        if !to_create.is_empty() {
            for (name, result) in shard.create_topics(to_create).await {
                if let Err(err) = result {
                    tracing::info!("auto-create of `{name}` failed: {err}");
                }
            }
        }
        for entry in wanted {
            match entry.name {
                Some(name) => match shard.topic(name.0.as_str()) {
                    Some(topic) => topics.push(topic_entry(shard, &topic, version)),
                    None => {
                        let code = if crate::topics::validate_name(name.0.as_str()).is_err() {
                            codes::INVALID_TOPIC_EXCEPTION
                        } else {
                            codes::UNKNOWN_TOPIC_OR_PARTITION
                        };
                        topics.push(missing(Some(name), uuid::Uuid::nil(), code));
                    }
                },
                None => match shard.topic_by_id(entry.topic_id.as_bytes()) {
                    Some(topic) => topics.push(topic_entry(shard, &topic, version)),
                    None => topics.push(missing(None, entry.topic_id, codes::UNKNOWN_TOPIC_ID)),
                },
            }
        }
    }
    let (host, port) = &shard.advertised;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(shard.config.node_id))
            .with_host(StrBytes::from_string(host.clone()))
            .with_port(*port)])
        .with_cluster_id((version >= 2).then(|| StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(if version >= 1 {
            shard.config.node_id
        } else {
            -1
        }))
        .with_topics(topics)
}

/// Topic names as bytes for responses that name topics.
pub fn name_bytes(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}
