//! `broker topics alter <topic> --config k=v --delete-config k` (IncrementalAlterConfigs) and
//! `broker topics add-partitions <topic> --partitions N` (CreatePartitions): changes to an
//! existing topic through the public admin APIs, so they work against any Kafka-API broker.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{CreatePartitionsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, ClientError};

/// IncrementalAlterConfigs' SET and DELETE, and the topic resource type.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const RESOURCE_TOPIC: i8 = 2;

/// `topics alter`: sets `set` and removes the overrides named in `delete` (the broker
/// default applies again), in one request.
pub fn topics_alter(
    bootstrap: &str,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_config_operation(OP_SET)
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    configs.extend(delete.iter().map(|key| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(key.clone()))
            .with_config_operation(OP_DELETE)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let response = client.call(&request, 1)?;
    for result in &response.responses {
        if result.error_code != 0 {
            return Err(super::kafka_error(
                &format!("alter {name}"),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
    }
    println!(
        "altered topic {name}: {} set, {} deleted",
        set.len(),
        delete.len()
    );
    Ok(())
}

/// `topics add-partitions`: grows the topic to `partitions` partitions.
pub fn topics_add_partitions(
    bootstrap: &str,
    name: &str,
    partitions: i32,
) -> Result<(), ClientError> {
    let mut client = Client::connect(bootstrap)?;
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(super::topic_name(name))
            .with_count(partitions)
            .with_assignments(None)]);
    let response = client.call(&request, 3)?;
    for result in &response.results {
        if result.error_code != 0 {
            return Err(super::kafka_error(
                &format!("add partitions to {name}"),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
    }
    println!("topic {name} now has {partitions} partitions");
    Ok(())
}
