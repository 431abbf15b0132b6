//! Proves the topic-change APIs over the wire against an in-process single node, at their
//! oldest and newest versions: IncrementalAlterConfigs and AlterConfigs (Kafka's errors for a
//! resource or key named twice, a null value, another broker's id, a broker config), the
//! overrides and an added partition surviving a restart, CreatePartitions' refusals, and
//! DescribeLogDirs listing every partition with its size.

mod kafka_support;

use broker::cli::client::Client;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as FullResource, AlterableConfig as FullConfig,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn op(key: &str, operation: i8, value: Option<&str>) -> AlterableConfig {
    AlterableConfig::default()
        .with_name(s(key))
        .with_config_operation(operation)
        .with_value(value.map(s))
}

fn resource(kind: i8, name: &str, configs: Vec<AlterableConfig>) -> AlterConfigsResource {
    AlterConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(s(name))
        .with_configs(configs)
}

/// The topic's overrides (DescribeConfigs entries whose source is the topic).
fn overrides(client: &mut Client, topic: &str) -> Vec<(String, String)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(topic))]);
    let response = client.call(&request, 4).unwrap();
    response.results[0]
        .configs
        .iter()
        .filter(|c| c.config_source == 1)
        .map(|c| {
            let value = c.value.as_ref().map(|v| v.as_str().to_string());
            (c.name.as_str().to_string(), value.unwrap_or_default())
        })
        .collect()
}

fn partitions(client: &mut Client, topic: &str) -> usize {
    let request = MetadataRequest::default().with_topics(None);
    let response = client.call(&request, 12).unwrap();
    response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .map_or(0, |t| t.partitions.len())
}

#[test]
fn alter_configs_create_partitions_and_log_dirs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
        let addr = server.addr.to_string();
        for topic in ["t", "u", "v"] {
            broker::cli::topics_create(&addr, topic, 1, -1, &[]).unwrap();
        }
        let mut client = Client::connect(&addr).unwrap();

        for version in [0, 1] {
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                resource(TOPIC, "t", vec![op("retention.ms", 0, Some("60000"))]),
                // Named twice: both copies refused.
                resource(TOPIC, "dup", vec![]),
                resource(TOPIC, "dup", vec![]),
                resource(TOPIC, "u", vec![op("a", 0, Some("1")), op("a", 1, None)]),
                resource(BROKER, "7", vec![]),
                resource(BROKER, "", vec![op("log.retention.ms", 0, Some("1"))]),
                resource(TOPIC, "v", vec![op("segment.bytes", 9, Some("1"))]),
            ]);
            let response = client.call(&request, version).unwrap();
            let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
            // ok, twice x2, a key twice (42), another broker (42), no dynamic broker configs
            // (40), unknown operation (42).
            assert_eq!(codes, vec![0, 42, 42, 42, 42, 40, 42], "v{version}");
        }
        assert_eq!(
            overrides(&mut client, "t"),
            vec![("retention.ms".into(), "60000".into())]
        );

        // AlterConfigs replaces the whole set; a resource twice or a null value is refused.
        let full = |configs: &[(&str, Option<&str>)]| {
            FullResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s("t"))
                .with_configs(
                    configs
                        .iter()
                        .map(|(key, value)| {
                            FullConfig::default()
                                .with_name(s(key))
                                .with_value(value.map(s))
                        })
                        .collect(),
                )
        };
        let segment_ms = [("segment.ms", Some("3600000"))];
        for version in [0, 2] {
            for (resources, code) in [
                (vec![full(&segment_ms), full(&[])], 42),
                (vec![full(&segment_ms)], 0),
                (vec![full(&[("x", None)])], 42),
            ] {
                let request = AlterConfigsRequest::default().with_resources(resources);
                let response = client.call(&request, version).unwrap();
                assert_eq!(response.responses[0].error_code, code, "v{version}");
            }
        }
        assert_eq!(
            overrides(&mut client, "t"),
            vec![("segment.ms".into(), "3600000".into())]
        );

        // CreatePartitions: 1 -> 2 at v0, then refusals at v3.
        let grow = |count: i32, assignments: Option<Vec<Vec<i32>>>| {
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_count(count)
                    .with_assignments(assignments.map(|list| {
                        list.into_iter()
                            .map(|ids| {
                                kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment::default()
                                    .with_broker_ids(ids.into_iter().map(Into::into).collect())
                            })
                            .collect()
                    }))])
        };
        let response = client.call(&grow(2, None), 0).unwrap();
        assert_eq!(response.results[0].error_code, 0);
        assert_eq!(partitions(&mut client, "t"), 2);
        for (count, assignments, code) in [
            (2, None, 37),
            (1, None, 37),
            (4, Some(vec![vec![1]]), 39),
            (3, Some(vec![vec![9]]), 39),
        ] {
            let response = client.call(&grow(count, assignments), 3).unwrap();
            assert_eq!(response.results[0].error_code, code, "count {count}");
        }
        assert_eq!(partitions(&mut client, "t"), 2);

        for version in [1, 4] {
            let response = client
                .call(
                    &DescribeLogDirsRequest::default().with_topics(None),
                    version,
                )
                .unwrap();
            assert_eq!(response.results.len(), 1);
            let dir = &response.results[0];
            let topic = dir
                .topics
                .iter()
                .find(|t| t.name.0.as_str() == "t")
                .unwrap();
            let listed: Vec<(i32, i64)> = topic
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.partition_size))
                .collect();
            assert_eq!(listed, vec![(0, 0), (1, 0)], "v{version}");
            if version >= 4 {
                assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
            }
        }
    }
    // Restarted: the overrides and the added partition are still there.
    let server = kafka_support::start(kafka_support::dev_profile(), dir.path());
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    assert_eq!(partitions(&mut client, "t"), 2);
    assert_eq!(
        overrides(&mut client, "t"),
        vec![("segment.ms".into(), "3600000".into())]
    );
}
