//! CreateTopics, DeleteTopics and DescribeConfigs: the topic administration APIs, answered by
//! asking the control shard (create, delete) or reading this shard's topic view (describe).
//! With an authorizer: creating needs CREATE on the cluster or the topic, deleting DELETE on
//! the topic (TOPIC_AUTHORIZATION_FAILED otherwise), describing configs DESCRIBE_CONFIGS on
//! the topic or, for a broker, the cluster (CLUSTER_AUTHORIZATION_FAILED).

use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;
use crate::storage::log_config;
use crate::topics::{Topic, TOPIC_CONFIG_KEYS};

use super::partition_ops::CreateSpec;
use super::shard::Shard;

/// A result naming `name` with `code` (and Kafka's message from v1 of both APIs).
fn refused<T: Default>(name: String, code: i16, with: impl Fn(T, TopicName, i16) -> T) -> T {
    with(T::default(), TopicName(StrBytes::from_string(name)), code)
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    access: &Access,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut specs = Vec::with_capacity(request.topics.len());
    let may_create_any = access.cluster(operation::CREATE);
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        if !may_create_any && !access.topic(operation::CREATE, &name) {
            results.push(refused(
                name,
                codes::TOPIC_AUTHORIZATION_FAILED,
                |r: CreatableTopicResult, n, c| r.with_name(n).with_error_code(c),
            ));
            continue;
        }
        specs.push(CreateSpec {
            name,
            num_partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            configs: topic
                .configs
                .into_iter()
                .filter_map(|config| {
                    config
                        .value
                        .map(|value| (config.name.as_str().to_string(), value.as_str().to_string()))
                })
                .collect(),
            validate_only: request.validate_only,
            assignments: topic
                .assignments
                .into_iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.into_iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
        });
    }
    for (name, result) in shard.create_topics(specs).await {
        let entry =
            CreatableTopicResult::default().with_name(TopicName(StrBytes::from_string(name)));
        results.push(match result {
            // topic_id exists from v7, partition counts from v5.
            Ok(topic) if version >= 5 => entry
                .with_topic_id(if version >= 7 {
                    uuid::Uuid::from_bytes(topic.id)
                } else {
                    uuid::Uuid::nil()
                })
                .with_num_partitions(topic.partition_count())
                .with_replication_factor(topic.replicas.first().map_or(1, |r| r.len() as i16)),
            Ok(_) => entry,
            Err(err) => entry
                .with_error_code(err.code())
                .with_error_message(Some(StrBytes::from_string(err.to_string()))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    access: &Access,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut names = Vec::new();
    let mut results = Vec::new();
    if version >= 6 {
        for state in request.topics {
            match state.name {
                Some(name) => names.push(name.0.as_str().to_string()),
                None => match shard.topic_by_id(state.topic_id.as_bytes()) {
                    Some(topic) => names.push(topic.name.clone()),
                    None => results.push(
                        DeletableTopicResult::default()
                            .with_name(None)
                            .with_topic_id(state.topic_id)
                            .with_error_code(codes::UNKNOWN_TOPIC_ID),
                    ),
                },
            }
        }
    } else {
        names.extend(
            request
                .topic_names
                .into_iter()
                .map(|name| name.0.as_str().to_string()),
        );
    }
    names.retain(|name| {
        if access.topic(operation::DELETE, name) {
            return true;
        }
        results.push(refused(
            name.clone(),
            codes::TOPIC_AUTHORIZATION_FAILED,
            |r: DeletableTopicResult, n, c| r.with_name(Some(n)).with_error_code(c),
        ));
        false
    });
    // The group coordinators own `__consumer_offsets`: deleting it would lose every group.
    if let Some(at) = names.iter().position(|n| n == crate::group::OFFSETS_TOPIC) {
        let name = names.remove(at);
        results.push(
            DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_error_code(codes::INVALID_TOPIC_EXCEPTION)
                .with_error_message((version >= 5).then(|| {
                    StrBytes::from_static_str(
                        "the internal topic __consumer_offsets cannot be deleted",
                    )
                })),
        );
    }
    for (name, result) in shard.delete_topics(names).await {
        let entry =
            DeletableTopicResult::default().with_name(Some(TopicName(StrBytes::from_string(name))));
        results.push(match result {
            Ok(topic) if version >= 6 => entry.with_topic_id(uuid::Uuid::from_bytes(topic.id)),
            Ok(_) => entry,
            Err(err) => entry
                .with_error_code(err.code())
                .with_error_message((version >= 5).then(|| StrBytes::from_string(err.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(results)
}

/// A topic config's effective value: the override, else the profile's default.
pub fn config_value(shard: &Shard, topic: &Topic, key: &str) -> (String, bool) {
    if let Some(value) = topic.configs.get(key) {
        return (value.clone(), false);
    }
    let storage = &shard.config.profile.storage;
    let value = match key {
        "cleanup.policy" => "delete".to_string(),
        "delete.retention.ms" => log_config::DEFAULT_DELETE_RETENTION_MS.to_string(),
        "min.cleanable.dirty.ratio" => {
            (log_config::DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PPM as f64 / 1e6).to_string()
        }
        "min.compaction.lag.ms" => "0".to_string(),
        "retention.ms" => storage.retention_ms.to_string(),
        "retention.bytes" => storage.retention_bytes.to_string(),
        "segment.bytes" => storage.segment_bytes.to_string(),
        "segment.ms" => storage.segment_ms.to_string(),
        "max.message.bytes" => storage.max_batch_bytes.to_string(),
        "flush.policy" => storage.flush().to_string(),
        "min.insync.replicas" => shard
            .config
            .cluster
            .as_ref()
            .map_or(1, |c| c.min_insync_replicas)
            .to_string(),
        "unclean.leader.election.enable" => shard
            .config
            .cluster
            .as_ref()
            .is_some_and(|c| c.unclean_leader_election)
            .to_string(),
        _ => String::new(),
    };
    (value, true)
}

/// Kafka's ConfigSource numbers.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's ConfigType numbers.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub fn describe_configs(
    shard: &Shard,
    access: &Access,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let entry = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if resource.resource_type == RESOURCE_BROKER {
            results.push(if access.cluster(operation::DESCRIBE_CONFIGS) {
                entry
            } else {
                entry.with_error_code(codes::CLUSTER_AUTHORIZATION_FAILED)
            });
            continue;
        }
        if resource.resource_type == RESOURCE_TOPIC
            && !access.topic(operation::DESCRIBE_CONFIGS, resource.resource_name.as_str())
        {
            results.push(entry.with_error_code(codes::TOPIC_AUTHORIZATION_FAILED));
            continue;
        }
        if resource.resource_type != RESOURCE_TOPIC {
            results.push(
                entry
                    .with_error_code(codes::INVALID_REQUEST)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only topic and broker resources are supported",
                    ))),
            );
            continue;
        }
        let Some(topic) = shard.topic(resource.resource_name.as_str()) else {
            results.push(entry.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION));
            continue;
        };
        let configs = TOPIC_CONFIG_KEYS
            .iter()
            // Null (and, leniently, an empty list) asks for every config.
            .filter(|key| match &resource.configuration_keys {
                None => true,
                Some(keys) if keys.is_empty() => true,
                Some(keys) => keys.iter().any(|wanted| wanted.as_str() == **key),
            })
            .map(|key| {
                let (value, is_default) = config_value(shard, &topic, key);
                let config_type = match *key {
                    "cleanup.policy" | "flush.policy" => TYPE_STRING,
                    "unclean.leader.election.enable" => TYPE_BOOLEAN,
                    "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
                    "max.message.bytes" | "segment.bytes" | "min.insync.replicas" => TYPE_INT,
                    _ => TYPE_LONG,
                };
                DescribeConfigsResourceResult::default()
                    .with_name(StrBytes::from_static_str(key))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_config_source(if is_default {
                        SOURCE_DEFAULT
                    } else {
                        SOURCE_TOPIC
                    })
                    .with_config_type(if version >= 3 { config_type } else { 0 })
            })
            .collect();
        results.push(entry.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(results)
}
