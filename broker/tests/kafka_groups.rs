//! Proves the group APIs over the wire against an in-process two-shard server: FindCoordinator
//! (v2 and batched v4) names this broker, offsets committed with OffsetCommit v2 and v9 come
//! back from OffsetFetch v1, v7 and v8 (batched groups) for groups whose coordinators sit on
//! either shard, they survive a server restart (replayed from `__consumer_offsets`), and the
//! internal topic is marked internal and can be neither produced to nor deleted.

mod kafka_support;

use broker::cli::client::Client;
use broker::group::{partition_for_group, OFFSETS_TOPIC};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, FindCoordinatorRequest, GroupId, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn commit(client: &mut Client, group: &str, offset: i64, version: i16) {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_retention_time_ms(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(
                (0..2)
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset + p as i64)
                            .with_committed_metadata(Some(s("m")))
                    })
                    .collect(),
            )]);
    let response = client.call(&request, version).unwrap();
    for p in &response.topics[0].partitions {
        assert_eq!(p.error_code, 0, "commit {group} v{version}");
    }
}

fn fetch_v7(client: &mut Client, group: &str) -> Vec<i64> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0, 1, 2])]));
    let response = client.call(&request, 7).unwrap();
    assert_eq!(response.error_code, 0);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

fn check_offsets(client: &mut Client, groups: &[(&str, i64)]) {
    for &(group, offset) in groups {
        assert_eq!(fetch_v7(client, group), vec![offset, offset + 1, -1]);
        // v1: no top-level error, all committed offsets of listed partitions.
        let v1 = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![1])]));
        let response = client.call(&v1, 1).unwrap();
        assert_eq!(
            response.topics[0].partitions[0].committed_offset,
            offset + 1
        );
    }
    // v8: several groups in one request, one with every offset (null topics).
    let request = OffsetFetchRequest::default().with_groups(
        groups
            .iter()
            .map(|(group, _)| {
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0])]))
            })
            .chain(std::iter::once(
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(groups[0].0)))
                    .with_topics(None),
            ))
            .collect(),
    );
    let response = client.call(&request, 8).unwrap();
    assert_eq!(response.groups.len(), groups.len() + 1);
    for (answer, (_, offset)) in response.groups.iter().zip(groups) {
        assert_eq!(answer.error_code, 0);
        assert_eq!(answer.topics[0].partitions[0].committed_offset, *offset);
    }
    let all = &response.groups[groups.len()];
    assert_eq!(all.topics[0].partitions.len(), 2);
}

#[test]
fn offsets_round_trip_across_shards_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let profile = kafka_support::all_cores_profile();
    // Two groups whose coordinators are on different partitions (and, with two shards,
    // usually different shards).
    let groups = [("test-group", 10i64), ("my-group", 500)];
    assert_ne!(
        partition_for_group(groups[0].0, 16),
        partition_for_group(groups[1].0, 16)
    );
    {
        let server = kafka_support::start(profile.clone(), dir.path());
        let mut client = Client::connect(&server.addr.to_string()).unwrap();
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_num_partitions(2)
                    .with_replication_factor(1),
            ]);
        assert_eq!(client.call(&create, 7).unwrap().topics[0].error_code, 0);

        let found = client
            .call(
                &FindCoordinatorRequest::default().with_key(s("test-group")),
                2,
            )
            .unwrap();
        assert_eq!(found.error_code, 0);
        assert_eq!(found.port, server.addr.port() as i32);
        let batched = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]);
        let found = client.call(&batched, 4).unwrap();
        assert_eq!(found.coordinators.len(), 2);
        assert!(found.coordinators.iter().all(|c| c.error_code == 0));

        commit(&mut client, groups[0].0, 1, 2);
        commit(&mut client, groups[0].0, groups[0].1, 9);
        commit(&mut client, groups[1].0, groups[1].1, 9);
        check_offsets(&mut client, &groups);

        let meta = client
            .call(&MetadataRequest::default().with_topics(None), 12)
            .unwrap();
        let internal = meta
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(OFFSETS_TOPIC))
            .expect("__consumer_offsets exists");
        assert!(internal.is_internal);
        assert_eq!(internal.partitions.len(), 16);

        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(OFFSETS_TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(kafka_support::batch(&[b"junk"])))])]);
        let answer = client.call(&produce, 9).unwrap();
        assert_ne!(answer.responses[0].partition_responses[0].error_code, 0);
        let delete = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(s(OFFSETS_TOPIC))])
            .with_timeout_ms(5000);
        let answer = client.call(&delete, 4).unwrap();
        assert_ne!(answer.responses[0].error_code, 0);
        server.shutdown();
    }
    let server = kafka_support::start(profile, dir.path());
    let mut client = Client::connect(&server.addr.to_string()).unwrap();
    check_offsets(&mut client, &groups);
    server.shutdown();
}
