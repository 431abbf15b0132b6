//! DeleteRecords, DescribeProducers, OffsetDelete and ListOffsets MAX_TIMESTAMP on the wire,
//! in-process with `--authorizer` (every client is `User:ANONYMOUS`): each answers Kafka's
//! authorization errors for what the ACLs refuse and works for what they allow (records of
//! `__consumer_offsets` are never deleted: INVALID_TOPIC_EXCEPTION); a Fetch below
//! the moved log start is OFFSET_OUT_OF_RANGE with the new start in the answer; ListOffsets
//! -3 before v7 is UNSUPPORTED_VERSION. Two shards, so requests are forwarded between them.

mod kafka_support;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteRecordsRequest, DescribeProducersRequest, FetchRequest,
    GroupId, ListOffsetsRequest, OffsetDeleteRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use broker::cli::client::Client;
use broker::security::acl_store::{AclFile, AuthorizerConfig};
use broker::security::authorizer::{
    operation, pattern_type, permission, resource_type, AclBinding, CLUSTER_NAME,
};
use broker::security::client::ANONYMOUS;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const UNSUPPORTED_VERSION: i16 = 35;
const GROUP_ID_NOT_FOUND: i16 = 69;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn grant(kind: i8, resource: &str, op: i8) -> AclBinding {
    AclBinding {
        resource_type: kind,
        resource_name: resource.into(),
        pattern_type: pattern_type::LITERAL,
        principal: ANONYMOUS.into(),
        host: "*".into(),
        operation: op,
        permission: permission::ALLOW,
    }
}

/// (error code, low watermark) of DeleteRecords of `topic`-0 below `offset`.
fn delete_records(client: &mut Client, topic: &str, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])]);
    let response = client.call(&request, 2).unwrap();
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// (error code, log start offset) of a Fetch v12 of `topic`-0 at `offset`.
fn fetch(client: &mut Client, topic: &str, offset: i64) -> (i16, i64) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.call(&request, 12).unwrap();
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.log_start_offset)
}

/// (error code, timestamp, offset) of ListOffsets `timestamp` of `topic`-0 at `version`.
fn list_offset(client: &mut Client, topic: &str, timestamp: i64, version: i16) -> (i16, i64, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response = client.call(&request, version).unwrap();
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.timestamp, p.offset)
}

#[test]
fn admin_record_apis_follow_the_acls_and_kafkas_rules() {
    let dir = tempfile::tempdir().unwrap();
    AclFile::save(
        dir.path(),
        &[
            grant(resource_type::CLUSTER, CLUSTER_NAME, operation::CREATE),
            grant(
                resource_type::CLUSTER,
                CLUSTER_NAME,
                operation::IDEMPOTENT_WRITE,
            ),
            grant(resource_type::TOPIC, "open", operation::WRITE),
            grant(resource_type::TOPIC, "open", operation::DELETE),
            grant(resource_type::TOPIC, "open", operation::READ),
            grant(resource_type::TOPIC, "closed", operation::WRITE),
            grant(resource_type::GROUP, "g", operation::READ),
            grant(
                resource_type::TOPIC,
                "__consumer_offsets",
                operation::DELETE,
            ),
        ],
    )
    .unwrap();
    let mut config = kafka_support::config(kafka_support::two_shards_profile(), dir.path());
    config.authorizer = Some(AuthorizerConfig::default());
    let server = broker::server::start(config).expect("server starts");
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    for topic in ["open", "closed"] {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
        assert_eq!(client.call(&request, 7).unwrap().topics[0].error_code, 0);
        let records = kafka_support::batch(&[b"a", b"b", b"c", b"d"]);
        assert_eq!(kafka_support::produce(&mut client, topic, 0, records).0, 0);
    }

    // DeleteRecords: DELETE on the topic; past the high watermark out of range; -1 is it.
    assert_eq!(delete_records(&mut client, "open", 2), (0, 2));
    assert_eq!(
        delete_records(&mut client, "closed", 2).0,
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(
        delete_records(&mut client, "open", 5).0,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        delete_records(&mut client, "__consumer_offsets", 0).0,
        INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(fetch(&mut client, "open", 1), (OFFSET_OUT_OF_RANGE, 2));
    assert_eq!(fetch(&mut client, "open", 2), (0, 2));
    assert_eq!(list_offset(&mut client, "open", -2, 7), (0, -1, 2));

    // MAX_TIMESTAMP from v7 only; the last record has the largest timestamp.
    assert_eq!(
        list_offset(&mut client, "open", -3, 7),
        (0, 1_700_000_000_003, 3)
    );
    assert_eq!(
        list_offset(&mut client, "open", -3, 6).0,
        UNSUPPORTED_VERSION
    );
    assert_eq!(delete_records(&mut client, "open", -1), (0, 4));
    assert_eq!(list_offset(&mut client, "open", -3, 7), (0, -1, -1));

    // DescribeProducers: READ on the topic; the test's batches carry no producer id.
    let request = DescribeProducersRequest::default().with_topics(
        ["open", "closed"]
            .iter()
            .map(|t| {
                TopicRequest::default()
                    .with_name(name(t))
                    .with_partition_indexes(vec![0])
            })
            .collect(),
    );
    let described = client.call(&request, 0).unwrap();
    let open = &described.topics[0].partitions[0];
    assert_eq!((open.error_code, open.active_producers.len()), (0, 0));
    assert_eq!(
        described.topics[1].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );

    // OffsetDelete: READ on the group, then on each topic.
    let offset_delete = |group: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(
                ["open", "closed"]
                    .iter()
                    .map(|t| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![
                                OffsetDeleteRequestPartition::default().with_partition_index(0)
                            ])
                    })
                    .collect(),
            )
    };
    let refused = client.call(&offset_delete("h"), 0).unwrap();
    assert_eq!(refused.error_code, GROUP_AUTHORIZATION_FAILED);
    // `g` holds nothing yet: the coordinator's answer for the whole group.
    let unknown = client.call(&offset_delete("g"), 0).unwrap();
    assert_eq!(unknown.error_code, GROUP_ID_NOT_FOUND);
    server.shutdown();
}
