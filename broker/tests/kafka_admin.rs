//! Proves topic administration over the wire against an in-process server: CreateTopics
//! (validation errors included), Metadata, DescribeConfigs (overrides and profile defaults),
//! DeleteTopics, topic metadata surviving a restart, and auto-create off by default but
//! available behind the flag.

mod kafka_support;

use broker::cli::client::Client;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeConfigsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn metadata_error(client: &mut Client, topic: &str, allow_auto_create: bool) -> (i16, usize) {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(allow_auto_create)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]));
    let response = client.call(&request, 12).unwrap();
    (
        response.topics[0].error_code,
        response.topics[0].partitions.len(),
    )
}

#[test]
fn create_describe_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr;
    {
        let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
        addr = server.addr.to_string();
        broker::cli::topics_create(
            &addr,
            "orders",
            3,
            -1,
            &[("retention.ms".into(), "60000".into())],
        )
        .unwrap();
        let mut client = Client::connect(&addr).unwrap();
        // Invalid requests get their Kafka codes.
        let bad = CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(name("orders"))
                .with_num_partitions(1)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(name("bad/name"))
                .with_num_partitions(1)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(name("zero"))
                .with_num_partitions(0)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(name("rf3"))
                .with_num_partitions(1)
                .with_replication_factor(3),
        ]);
        let codes: Vec<i16> = client
            .call(&bad, 7)
            .unwrap()
            .topics
            .iter()
            .map(|t| t.error_code)
            .collect();
        assert_eq!(codes, vec![36, 17, 37, 38]);
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders")),
        ]);
        let response = client.call(&request, 4).unwrap();
        let configs: Vec<(String, String, i8)> = response.results[0]
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_string(),
                    c.value.as_ref().unwrap().as_str().to_string(),
                    c.config_source,
                )
            })
            .collect();
        assert!(
            configs.contains(&("retention.ms".into(), "60000".into(), 1)),
            "{configs:?}"
        );
        assert!(configs.contains(&("segment.bytes".into(), "268435456".into(), 5)));
        assert_eq!(metadata_error(&mut client, "orders", true), (0, 3));
        // Auto-create is off by default.
        assert_eq!(metadata_error(&mut client, "ghost", true), (3, 0));
        broker::cli::topics_create(&addr, "doomed", 2, -1, &[]).unwrap();
        server.shutdown();
    }
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    let addr = server.addr.to_string();
    let mut client = Client::connect(&addr).unwrap();
    assert_eq!(metadata_error(&mut client, "orders", false), (0, 3));
    broker::cli::topics_delete(&addr, "doomed").unwrap();
    assert_eq!(metadata_error(&mut client, "doomed", false), (3, 0));
    assert!(!dir.path().join("doomed-0").exists());
    assert!(broker::cli::topics_delete(&addr, "doomed").is_err());
}

#[test]
fn auto_create_behind_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_support::start_with(kafka_support::dev_profile(), dir.path(), true);
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    // The client may still refuse auto-creation.
    assert_eq!(metadata_error(&mut client, "auto", false), (3, 0));
    assert_eq!(metadata_error(&mut client, "auto", true), (0, 1));
    assert_eq!(metadata_error(&mut client, "auto", false), (0, 1));
}
