//! `broker leaders elect` and `broker partitions reassign|list-reassignments`: Kafka's
//! `kafka-leader-election.sh` and `kafka-reassign-partitions.sh` as one-partition-at-a-time
//! commands, through ElectLeaders, AlterPartitionReassignments and
//! ListPartitionReassignments against any broker.

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, ClientError};

/// How long the broker may wait for the controller's elections.
const ELECTION_TIMEOUT_MS: i32 = 30_000;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// The partitions of `topic`, from Metadata.
fn partition_ids(client: &mut Client, topic: &str) -> Result<Vec<i32>, ClientError> {
    let response = super::metadata(client, Some(&[topic]))?;
    let found = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic));
    match found {
        Some(t) if t.error_code == 0 => {
            Ok(t.partitions.iter().map(|p| p.partition_index).collect())
        }
        Some(t) => Err(ClientError::Kafka(format!(
            "topic {topic}: error code {}",
            t.error_code
        ))),
        None => Err(ClientError::Kafka(format!("topic {topic} not found"))),
    }
}

fn message(text: &Option<StrBytes>) -> &str {
    text.as_ref().map_or("", |m| m.as_str())
}

/// `leaders elect --election preferred|unclean [--topic T [--partition P]...]`: prints one
/// line per partition (`t-0 elected` or the error); fails if any partition failed for a
/// reason other than "not needed".
pub fn leaders_elect(
    bootstrap: &str,
    unclean: bool,
    topic: Option<&str>,
    partitions: &[i32],
) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let topic_partitions = match topic {
        None => None,
        Some(topic) => {
            let partitions = if partitions.is_empty() {
                partition_ids(&mut client, topic)?
            } else {
                partitions.to_vec()
            };
            Some(vec![TopicPartitions::default()
                .with_topic(name(topic))
                .with_partitions(partitions)])
        }
    };
    let request = ElectLeadersRequest::default()
        .with_election_type(i8::from(unclean))
        .with_topic_partitions(topic_partitions)
        .with_timeout_ms(ELECTION_TIMEOUT_MS);
    let response = client.call(&request, 2)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka(format!(
            "elect leaders: error code {}",
            response.error_code
        )));
    }
    let mut failed = 0;
    for topic in &response.replica_election_results {
        for p in &topic.partition_result {
            let tp = format!("{}-{}", topic.topic.as_str(), p.partition_id);
            match p.error_code {
                0 => println!("{tp} elected"),
                84 => println!("{tp} not needed: {}", message(&p.error_message)),
                code => {
                    failed += 1;
                    println!("{tp} error {code}: {}", message(&p.error_message));
                }
            }
        }
    }
    if failed > 0 {
        return Err(ClientError::Kafka(format!(
            "{failed} partitions could not be elected"
        )));
    }
    Ok(())
}

/// `partitions reassign --topic T --partition P (--replicas 1,2,3 | --cancel)`.
pub fn partitions_reassign(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    replicas: Option<&[i32]>,
) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(ELECTION_TIMEOUT_MS)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    replicas.map(|r| r.iter().map(|&b| BrokerId(b)).collect()),
                )])]);
    let response = client.call(&request, 0)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka(format!(
            "reassign: error code {}: {}",
            response.error_code,
            message(&response.error_message)
        )));
    }
    for t in &response.responses {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(ClientError::Kafka(format!(
                    "{}-{}: error code {}: {}",
                    t.name.as_str(),
                    p.partition_index,
                    p.error_code,
                    message(&p.error_message)
                )));
            }
        }
    }
    match replicas {
        Some(r) => println!("{topic}-{partition}: reassignment to {r:?} started"),
        None => println!("{topic}-{partition}: reassignment cancelled"),
    }
    Ok(())
}

/// `partitions list-reassignments [--topic T]`: one line per partition being reassigned.
pub fn partitions_list_reassignments(
    bootstrap: &str,
    topic: Option<&str>,
) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let topics = match topic {
        None => None,
        Some(topic) => {
            let partitions = partition_ids(&mut client, topic)?;
            Some(vec![ListPartitionReassignmentsTopics::default()
                .with_name(name(topic))
                .with_partition_indexes(partitions)])
        }
    };
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(ELECTION_TIMEOUT_MS)
        .with_topics(topics);
    let response = client.call(&request, 0)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka(format!(
            "list reassignments: error code {}: {}",
            response.error_code,
            message(&response.error_message)
        )));
    }
    let ids = |list: &[BrokerId]| {
        list.iter()
            .map(|b| b.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{:<40} {:<16} {:<12} REMOVING",
        "PARTITION", "REPLICAS", "ADDING"
    );
    for t in &response.topics {
        for p in &t.partitions {
            println!(
                "{:<40} {:<16} {:<12} {}",
                format!("{}-{}", t.name.as_str(), p.partition_index),
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas)
            );
        }
    }
    Ok(())
}
