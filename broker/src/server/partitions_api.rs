//! CreatePartitions (37): adds partitions to existing topics. On a single node the control
//! shard places them on the least loaded shards; in cluster mode this broker assigns their
//! replicas (Kafka's spread, continuing where the topic's assignment left off, or the
//! request's explicit assignment) and writes the topic's znode, and the controller elects
//! their leaders (`server::cluster`, `cluster::controller`). The answer comes once the new
//! partitions are open here (and, in a cluster, have leaders).
//!
//! With an authorizer: ALTER on the topic (TOPIC_AUTHORIZATION_FAILED).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;

use super::partition_ops::PartitionsSpec;
use super::shard::Shard;

pub async fn create_partitions(
    shard: &Rc<Shard>,
    access: &Access,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for topic in &request.topics {
        *counts.entry(topic.name.0.as_str().to_string()).or_default() += 1;
    }
    let mut results: Vec<Option<CreatePartitionsTopicResult>> = Vec::new();
    let mut specs = Vec::new();
    let mut spec_at = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let refused = |code: i16, message: String| {
            Some(
                CreatePartitionsTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            )
        };
        let result = if counts[&name] > 1 {
            refused(
                codes::INVALID_REQUEST,
                format!("topic `{name}` is named more than once"),
            )
        } else if !access.topic(operation::ALTER, &name) {
            refused(codes::TOPIC_AUTHORIZATION_FAILED, "not authorized".into())
        } else {
            spec_at.push(results.len());
            specs.push(PartitionsSpec {
                name: name.clone(),
                count: topic.count,
                assignments: topic.assignments.map(|list| {
                    list.into_iter()
                        .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                        .collect()
                }),
                validate_only: request.validate_only,
            });
            None
        };
        results.push(result);
    }
    if !specs.is_empty() {
        let answers = shard.create_partitions(specs).await;
        debug_assert_eq!(answers.len(), spec_at.len(), "one answer per topic");
        for (at, (name, answer)) in spec_at.into_iter().zip(answers) {
            let result = CreatePartitionsTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(name)));
            results[at] = Some(match answer {
                Ok(_) => result,
                Err(err) => result
                    .with_error_code(err.code())
                    .with_error_message(Some(StrBytes::from_string(err.to_string()))),
            });
        }
    }
    CreatePartitionsResponse::default().with_results(
        results
            .into_iter()
            .map(|r| r.expect("every topic answered"))
            .collect(),
    )
}
