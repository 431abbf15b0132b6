//! AlterConfigs (33) and IncrementalAlterConfigs (44): topic config overrides changed the way
//! Kafka changes them (AlterConfigs replaces a topic's whole set of overrides,
//! IncrementalAlterConfigs SETs, DELETEs, APPENDs to or SUBTRACTs from single keys), checked
//! like CreateTopics' configs, persisted and applied on every shard (`topic_changes`).
//!
//! Broker resources: this broker has no dynamically changeable broker config (every broker
//! setting comes from the command line and the tuning profile at start), so a change of any
//! key is refused as Kafka refuses a non-dynamic one (INVALID_CONFIG), a resource naming
//! another broker with INVALID_REQUEST. An empty change list is accepted (nothing to do).
//!
//! With an authorizer: ALTER_CONFIGS on the topic (TOPIC_AUTHORIZATION_FAILED) or, for a
//! broker, on the cluster (CLUSTER_AUTHORIZATION_FAILED).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;
use crate::topics::{ConfigAlteration, ConfigOp};

use super::shard::Shard;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs' operation numbers.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One resource of either request, decoded: its changes, or why they are refused already.
struct Resource {
    resource_type: i8,
    name: String,
    ops: Result<Vec<ConfigOp>, (i16, String)>,
}

/// The answer for one resource: (type, name, error code, message).
type Outcome = (i8, String, i16, Option<String>);

/// A resource of either request, its configs decoded by `op`.
fn resource<C>(
    resource_type: i8,
    name: &StrBytes,
    configs: Vec<C>,
    op: impl Fn(C) -> Result<ConfigOp, (i16, String)>,
) -> Resource {
    Resource {
        resource_type,
        name: name.as_str().to_string(),
        ops: configs.into_iter().map(op).collect(),
    }
}

/// The per-resource answers in either API's response type (distinct types, same fields).
macro_rules! resource_responses {
    ($response:ty, $outcomes:expr) => {
        $outcomes
            .into_iter()
            .map(|(resource_type, name, code, message)| {
                <$response>::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect()
    };
}

pub async fn alter_configs(
    shard: &Rc<Shard>,
    access: &Access,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            resource(
                r.resource_type,
                &r.resource_name,
                r.configs,
                |config| match config.value {
                    Some(value) => Ok(ConfigOp::Set(
                        config.name.as_str().to_string(),
                        value.as_str().to_string(),
                    )),
                    None => Err(null_value(config.name.as_str())),
                },
            )
        })
        .collect();
    let outcomes = alter(shard, access, resources, true, request.validate_only).await;
    AlterConfigsResponse::default()
        .with_responses(resource_responses!(AlterConfigsResourceResponse, outcomes))
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    access: &Access,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            resource(r.resource_type, &r.resource_name, r.configs, |config| {
                let key = config.name.as_str().to_string();
                let value = config.value.map(|v| v.as_str().to_string());
                match (config.config_operation, value) {
                    (OP_DELETE, _) => Ok(ConfigOp::Delete(key)),
                    (OP_SET, Some(value)) => Ok(ConfigOp::Set(key, value)),
                    (OP_APPEND, Some(value)) => Ok(ConfigOp::Append(key, value)),
                    (OP_SUBTRACT, Some(value)) => Ok(ConfigOp::Subtract(key, value)),
                    (OP_SET | OP_APPEND | OP_SUBTRACT, None) => Err(null_value(&key)),
                    (op, _) => Err((
                        codes::INVALID_REQUEST,
                        format!("unknown config operation {op} for `{key}`"),
                    )),
                }
            })
        })
        .collect();
    let outcomes = alter(shard, access, resources, false, request.validate_only).await;
    IncrementalAlterConfigsResponse::default()
        .with_responses(resource_responses!(AlterConfigsResourceResponse, outcomes))
}

fn null_value(key: &str) -> (i16, String) {
    (
        codes::INVALID_REQUEST,
        format!("a null value is not supported for config `{key}`"),
    )
}

/// Both requests: every resource answered, in request order.
async fn alter(
    shard: &Rc<Shard>,
    access: &Access,
    resources: Vec<Resource>,
    replace_all: bool,
    validate_only: bool,
) -> Vec<Outcome> {
    let mut counts: BTreeMap<(i8, &str), usize> = BTreeMap::new();
    for resource in &resources {
        *counts
            .entry((resource.resource_type, resource.name.as_str()))
            .or_default() += 1;
    }
    let duplicated: Vec<bool> = resources
        .iter()
        .map(|r| counts[&(r.resource_type, r.name.as_str())] > 1)
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(resources.len());
    let mut alterations = Vec::new();
    let mut altered_at = Vec::new();
    for (resource, duplicated) in resources.into_iter().zip(duplicated) {
        let refuse = |code: i16, message: String| {
            Some((
                resource.resource_type,
                resource.name.clone(),
                code,
                Some(message),
            ))
        };
        let outcome = match (resource.resource_type, &resource.ops) {
            // Kafka refuses every copy of a resource named twice.
            _ if duplicated => refuse(
                codes::INVALID_REQUEST,
                format!("resource `{}` is named more than once", resource.name),
            ),
            (RESOURCE_BROKER, _) if !access.cluster(operation::ALTER_CONFIGS) => {
                refuse(codes::CLUSTER_AUTHORIZATION_FAILED, "not authorized".into())
            }
            (RESOURCE_TOPIC, _) if !access.topic(operation::ALTER_CONFIGS, &resource.name) => {
                refuse(codes::TOPIC_AUTHORIZATION_FAILED, "not authorized".into())
            }
            (RESOURCE_BROKER | RESOURCE_TOPIC, Err((code, message))) => {
                refuse(*code, message.clone())
            }
            (RESOURCE_BROKER, Ok(ops)) => broker_outcome(shard, &resource.name, ops)
                .map(|(code, message)| {
                    (
                        resource.resource_type,
                        resource.name.clone(),
                        code,
                        Some(message),
                    )
                })
                .or(Some((
                    resource.resource_type,
                    resource.name.clone(),
                    codes::NONE,
                    None,
                ))),
            (RESOURCE_TOPIC, Ok(ops)) => {
                altered_at.push(outcomes.len());
                alterations.push(ConfigAlteration {
                    topic: resource.name.clone(),
                    replace_all,
                    ops: ops.clone(),
                    validate_only,
                });
                None
            }
            (other, _) => refuse(
                codes::INVALID_REQUEST,
                format!("resource type {other} is not supported"),
            ),
        };
        outcomes.push(outcome);
    }
    if !alterations.is_empty() {
        let results = shard.alter_topic_configs(alterations).await;
        debug_assert_eq!(results.len(), altered_at.len(), "one result per alteration");
        for (at, (name, result)) in altered_at.into_iter().zip(results) {
            outcomes[at] = Some(match result {
                Ok(_) => (RESOURCE_TOPIC, name, codes::NONE, None),
                Err(err) => (RESOURCE_TOPIC, name, err.code(), Some(err.to_string())),
            });
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every resource answered"))
        .collect()
}

/// A broker resource's change: `None` when accepted (nothing to change), else Kafka's error.
fn broker_outcome(shard: &Shard, name: &str, ops: &[ConfigOp]) -> Option<(i16, String)> {
    // "" is the cluster-wide default of every broker; otherwise this broker's id.
    if !name.is_empty() && name.parse::<i32>().ok() != Some(shard.config.node_id) {
        return Some((
            codes::INVALID_REQUEST,
            format!(
                "broker resource `{name}` is not this broker (id {})",
                shard.config.node_id
            ),
        ));
    }
    if ops.is_empty() {
        return None;
    }
    let keys: Vec<&str> = ops.iter().map(ConfigOp::key).collect();
    Some((
        codes::INVALID_CONFIG,
        format!(
            "cannot update these configs dynamically: {} (this broker has no dynamic broker \
             configs; set them on the command line or in the tuning profile)",
            keys.join(", ")
        ),
    ))
}
