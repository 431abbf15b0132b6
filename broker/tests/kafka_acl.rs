//! The authorizer in the request path, in-process over PLAINTEXT (every client is
//! `User:ANONYMOUS`): ACLs from a single node's `acls.json` decide each API with Kafka's
//! error codes, and an ACL created through the API reaches every shard's snapshot at once
//! (two shards, fresh connections spread over both by SO_REUSEPORT).

mod kafka_support;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeAclsRequest,
    FindCoordinatorRequest, InitProducerIdRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use broker::cli::client::Client;
use broker::security::acl_store::{AclFile, AuthorizerConfig};
use broker::security::authorizer::{
    operation, pattern_type, permission, resource_type, AclBinding, CLUSTER_NAME,
};
use broker::security::client::ANONYMOUS;

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn grant(kind: i8, name: &str, op: i8) -> AclBinding {
    AclBinding {
        resource_type: kind,
        resource_name: name.into(),
        pattern_type: pattern_type::LITERAL,
        principal: ANONYMOUS.into(),
        host: "*".into(),
        operation: op,
        permission: permission::ALLOW,
    }
}

fn create_topic(client: &mut Client, name: &str) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    client.call(&request, 7).unwrap().topics[0].error_code
}

fn listed_topics(client: &mut Client) -> Vec<String> {
    let response = client
        .call(&MetadataRequest::default().with_topics(None), 12)
        .unwrap();
    let mut names: Vec<String> = response
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    names.sort();
    names
}

#[test]
fn each_api_answers_kafkas_authorization_errors() {
    let dir = tempfile::tempdir().unwrap();
    AclFile::save(
        dir.path(),
        &[
            grant(resource_type::CLUSTER, CLUSTER_NAME, operation::CREATE),
            grant(resource_type::TOPIC, "open", operation::WRITE),
        ],
    )
    .unwrap();
    let mut config = kafka_support::config(kafka_support::dev_profile(), dir.path());
    config.authorizer = Some(AuthorizerConfig::default());
    let server = broker::server::start(config).expect("server starts");
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    assert_eq!(create_topic(&mut client, "open"), 0);
    assert_eq!(create_topic(&mut client, "closed"), 0);
    let records = kafka_support::batch(&[b"v"]);
    assert_eq!(
        kafka_support::produce(&mut client, "open", 0, records.clone()).0,
        0
    );
    assert_eq!(
        kafka_support::produce(&mut client, "closed", 0, records).0,
        TOPIC_AUTHORIZATION_FAILED
    );
    // WRITE implies DESCRIBE: only `open` is listed (`__consumer_offsets` neither).
    assert_eq!(listed_topics(&mut client), ["open"]);
    let deleted = client
        .call(
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s("open"))])
                .with_timeout_ms(10_000),
            4,
        )
        .unwrap();
    assert_eq!(deleted.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    // WRITE on some topic is enough for an idempotent producer id (KIP-679).
    let pid = client.call(&InitProducerIdRequest::default(), 4).unwrap();
    assert_eq!(pid.error_code, 0);
    assert!(pid.producer_id.0 >= 0);
    let coordinator = client
        .call(&FindCoordinatorRequest::default().with_key(s("g")), 3)
        .unwrap();
    assert_eq!(coordinator.error_code, GROUP_AUTHORIZATION_FAILED);
    let described = client.call(&DescribeAclsRequest::default(), 1).unwrap();
    assert_eq!(described.error_code, CLUSTER_AUTHORIZATION_FAILED);
    server.shutdown();
}

#[test]
fn an_acl_created_through_one_shard_applies_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_support::config(kafka_support::two_shards_profile(), dir.path());
    config.authorizer = Some(AuthorizerConfig {
        super_users: Vec::new(),
        allow_if_no_acl: true,
    });
    let server = broker::server::start(config).expect("server starts");
    let addr = server.addr.to_string();
    let mut client = Client::connect(&addr).unwrap();
    assert_eq!(create_topic(&mut client, "t"), 0);
    let records = kafka_support::batch(&[b"v"]);
    assert_eq!(
        kafka_support::produce(&mut client, "t", 0, records.clone()).0,
        0
    );
    // No ACL on the cluster: allow.everyone.if.no.acl.found lets ANONYMOUS create one.
    let deny = AclCreation::default()
        .with_resource_type(resource_type::TOPIC)
        .with_resource_name(s("t"))
        .with_resource_pattern_type(pattern_type::LITERAL)
        .with_principal(s(ANONYMOUS))
        .with_host(s("*"))
        .with_operation(operation::WRITE)
        .with_permission_type(permission::DENY);
    let created = client
        .call(&CreateAclsRequest::default().with_creations(vec![deny]), 1)
        .unwrap();
    assert_eq!(created.results[0].error_code, 0);
    for _ in 0..8 {
        let mut fresh = Client::connect(&addr).unwrap();
        assert_eq!(
            kafka_support::produce(&mut fresh, "t", 0, records.clone()).0,
            TOPIC_AUTHORIZATION_FAILED
        );
    }
    let stored = AclFile::load(dir.path()).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].permission, permission::DENY);
    server.shutdown();
}
