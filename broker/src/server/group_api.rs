//! The Kafka group APIs on the wire: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups. Each
//! handler decodes the request of whatever version came into the coordinator's typed request,
//! routes it to the group's coordinator (see [`super::groups`]) and encodes the answer in the
//! version asked for, leaving out fields the version does not have.
//!
//! With an authorizer, as Kafka's KafkaApis: FindCoordinator needs DESCRIBE on the group;
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup and OffsetCommit READ on the group (and
//! OffsetCommit READ on each topic); OffsetFetch and DescribeGroups DESCRIBE on the group (and
//! OffsetFetch DESCRIBE on each topic: others are left out of an all-topics answer);
//! DeleteGroups DELETE on the group; ListGroups lists every group to DESCRIBE on the cluster,
//! else only the groups the client may DESCRIBE. Refusals are GROUP_AUTHORIZATION_FAILED /
//! TOPIC_AUTHORIZATION_FAILED.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{
    DescribedGroup as WireGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    self as wire, BrokerId, GroupId, ListGroupsResponse as WireListGroupsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::group::error_code as ec;
use crate::group::{
    FetchedOffset, HeartbeatRequest, JoinGroupRequest, JoinProtocol, LeaveGroupRequest,
    LeavingMember, ListGroupsRequest, OffsetCommitPartition, OffsetCommitRequest,
    OffsetFetchRequest, Response, SyncAssignment, SyncGroupRequest,
};
use crate::kafka::codes::{GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED};
use crate::security::access::Access;
use crate::security::authorizer::{operation, resource_type};

use super::partition_ops::{GroupAnswer, GroupCall};
use super::shard::Shard;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn opt(text: &Option<String>) -> Option<StrBytes> {
    text.as_deref().map(s)
}

fn own(text: &StrBytes) -> String {
    text.as_str().to_owned()
}

fn own_opt(text: &Option<StrBytes>) -> Option<String> {
    text.as_ref().map(own)
}

/// Answers a `Done` response of the expected kind, or the call's error when the answer is of
/// another kind (never expected; kept instead of a panic).
async fn done(shard: &Rc<Shard>, call: GroupCall) -> Response {
    let fallback = call.error(ec::UNKNOWN_SERVER_ERROR);
    match shard.group_call(call).await {
        GroupAnswer::Done(response) => response,
        _ => match fallback {
            GroupAnswer::Done(response) => response,
            _ => Response::Heartbeat(crate::group::HeartbeatResponse {
                error_code: ec::UNKNOWN_SERVER_ERROR,
            }),
        },
    }
}

/// FindCoordinator v0-4: the leader of the group's partition of `__consumer_offsets` (on a
/// single node, this broker: each shard serves the groups of its partitions behind the same
/// listener). v4 batches keys.
pub fn find_coordinator(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::FindCoordinatorRequest,
    version: i16,
    listener: usize,
) -> wire::FindCoordinatorResponse {
    // Key type 0 is a group; 1 (transactions) is not served by this broker.
    let locate = |key: &str| -> Result<(BrokerId, String, i32), i16> {
        if req.key_type == 0 && !access.group(operation::DESCRIBE, key) {
            return Err(GROUP_AUTHORIZATION_FAILED);
        }
        if req.key_type == 1
            && !access.allows(operation::DESCRIBE, resource_type::TRANSACTIONAL_ID, key)
        {
            return Err(crate::kafka::codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        }
        if req.key_type != 0 {
            return Err(ec::COORDINATOR_NOT_AVAILABLE);
        }
        shard.group_coordinator_node(key, listener)
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| match locate(key.as_str()) {
                Ok((node, host, port)) => Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(node)
                    .with_host(s(&host))
                    .with_port(port),
                Err(code) => Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(-1))
                    .with_host(s(""))
                    .with_port(-1)
                    .with_error_code(code),
            })
            .collect();
        return wire::FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(req.key.as_str()) {
        Ok((node, host, port)) => wire::FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(s(&host))
            .with_port(port),
        Err(code) => wire::FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id(BrokerId(-1))
            .with_host(s(""))
            .with_port(-1),
    }
}

pub async fn join_group(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> wire::JoinGroupResponse {
    if !access.group(operation::READ, &req.group_id.0) {
        return wire::JoinGroupResponse::default()
            .with_error_code(GROUP_AUTHORIZATION_FAILED)
            .with_generation_id(-1);
    }
    let call = GroupCall::Join(JoinGroupRequest {
        group_id: own(&req.group_id.0),
        member_id: own(&req.member_id),
        group_instance_id: own_opt(&req.group_instance_id),
        protocol_type: own(&req.protocol_type),
        protocols: req
            .protocols
            .iter()
            .map(|p| JoinProtocol {
                name: own(&p.name),
                metadata: p.metadata.clone(),
            })
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        client_id: client_id.to_owned(),
        client_host: client_host.to_owned(),
        reason: own_opt(&req.reason),
        require_known_member_id: version >= 4,
    });
    let Response::JoinGroup(r) = done(shard, call).await else {
        return wire::JoinGroupResponse::default().with_error_code(ec::UNKNOWN_SERVER_ERROR);
    };
    let members = r
        .members
        .iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(&m.member_id))
                .with_group_instance_id(if version >= 5 {
                    opt(&m.group_instance_id)
                } else {
                    None
                })
                .with_metadata(m.metadata.clone())
        })
        .collect();
    wire::JoinGroupResponse::default()
        .with_error_code(r.error_code)
        .with_generation_id(r.generation_id)
        .with_protocol_type(if version >= 7 {
            opt(&r.protocol_type)
        } else {
            None
        })
        .with_protocol_name(opt(&r.protocol_name).or(if version >= 7 { None } else { Some(s("")) }))
        .with_leader(s(&r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(&r.member_id))
        .with_members(members)
}

pub async fn sync_group(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::SyncGroupRequest,
    version: i16,
) -> wire::SyncGroupResponse {
    if !access.group(operation::READ, &req.group_id.0) {
        return wire::SyncGroupResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
    }
    let call = GroupCall::Sync(SyncGroupRequest {
        group_id: own(&req.group_id.0),
        generation_id: req.generation_id,
        member_id: own(&req.member_id),
        group_instance_id: own_opt(&req.group_instance_id),
        protocol_type: own_opt(&req.protocol_type),
        protocol_name: own_opt(&req.protocol_name),
        assignments: req
            .assignments
            .iter()
            .map(|a| SyncAssignment {
                member_id: own(&a.member_id),
                assignment: a.assignment.clone(),
            })
            .collect(),
    });
    let Response::SyncGroup(r) = done(shard, call).await else {
        return wire::SyncGroupResponse::default().with_error_code(ec::UNKNOWN_SERVER_ERROR);
    };
    let v5 = version >= 5;
    wire::SyncGroupResponse::default()
        .with_error_code(r.error_code)
        .with_protocol_type(if v5 { opt(&r.protocol_type) } else { None })
        .with_protocol_name(if v5 { opt(&r.protocol_name) } else { None })
        .with_assignment(r.assignment)
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::HeartbeatRequest,
) -> wire::HeartbeatResponse {
    if !access.group(operation::READ, &req.group_id.0) {
        return wire::HeartbeatResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
    }
    let call = GroupCall::Heartbeat(HeartbeatRequest {
        group_id: own(&req.group_id.0),
        generation_id: req.generation_id,
        member_id: own(&req.member_id),
        group_instance_id: own_opt(&req.group_instance_id),
    });
    let code = match done(shard, call).await {
        Response::Heartbeat(r) => r.error_code,
        _ => ec::UNKNOWN_SERVER_ERROR,
    };
    wire::HeartbeatResponse::default().with_error_code(code)
}

pub async fn leave_group(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::LeaveGroupRequest,
    version: i16,
) -> wire::LeaveGroupResponse {
    if !access.group(operation::READ, &req.group_id.0) {
        return wire::LeaveGroupResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
    }
    let members = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: own(&m.member_id),
                group_instance_id: own_opt(&m.group_instance_id),
                reason: own_opt(&m.reason),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: own(&req.member_id),
            group_instance_id: None,
            reason: None,
        }]
    };
    let call = GroupCall::Leave(LeaveGroupRequest {
        group_id: own(&req.group_id.0),
        members,
    });
    let Response::LeaveGroup(r) = done(shard, call).await else {
        return wire::LeaveGroupResponse::default().with_error_code(ec::UNKNOWN_SERVER_ERROR);
    };
    if version < 3 {
        let code = if r.error_code != ec::NONE {
            r.error_code
        } else {
            r.members.first().map_or(ec::NONE, |m| m.error_code)
        };
        return wire::LeaveGroupResponse::default().with_error_code(code);
    }
    wire::LeaveGroupResponse::default()
        .with_error_code(r.error_code)
        .with_members(
            r.members
                .iter()
                .map(|m| {
                    MemberResponse::default()
                        .with_member_id(s(&m.member_id))
                        .with_group_instance_id(opt(&m.group_instance_id))
                        .with_error_code(m.error_code)
                })
                .collect(),
        )
}

pub async fn offset_commit(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::OffsetCommitRequest,
    version: i16,
) -> wire::OffsetCommitResponse {
    offset_commit_at(shard, access, req, version, &[]).await
}

/// OffsetCommit with v1's per-partition commit timestamps, in request order (-1 or absent:
/// the coordinator's clock, as for every later version).
pub async fn offset_commit_at(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::OffsetCommitRequest,
    version: i16,
    commit_timestamps_ms: &[i64],
) -> wire::OffsetCommitResponse {
    let mut partitions = Vec::new();
    // (topic, partition, error) of the partitions refused before the coordinator is asked.
    let mut refused: Vec<(String, i32, i16)> = Vec::new();
    let group_allowed = access.group(operation::READ, &req.group_id.0);
    let mut timestamps = commit_timestamps_ms.iter();
    for topic in &req.topics {
        let name = own(&topic.name.0);
        let code = if !group_allowed {
            GROUP_AUTHORIZATION_FAILED
        } else if !access.topic(operation::READ, &name) {
            TOPIC_AUTHORIZATION_FAILED
        } else {
            ec::NONE
        };
        if code != ec::NONE {
            for p in &topic.partitions {
                timestamps.next();
                refused.push((name.clone(), p.partition_index, code));
            }
            continue;
        }
        let known = shard.topic(&name).map_or(0, |t| t.shards.len() as i32);
        for p in &topic.partitions {
            partitions.push(OffsetCommitPartition {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: own_opt(&p.committed_metadata),
                partition_exists: (0..known).contains(&p.partition_index),
                commit_timestamp_ms: timestamps.next().copied().filter(|t| *t >= 0),
            });
        }
    }
    // Everything refused: the coordinator is not asked, as in Kafka.
    let ask = !partitions.is_empty() || refused.is_empty();
    let call = GroupCall::Commit(OffsetCommitRequest {
        group_id: own(&req.group_id.0),
        generation_id: req.generation_id_or_member_epoch,
        member_id: own(&req.member_id),
        group_instance_id: own_opt(&req.group_instance_id),
        partitions,
    });
    let results = if ask {
        match done(shard, call).await {
            Response::OffsetCommit(r) => r
                .partitions
                .into_iter()
                .map(|r| (r.topic, r.partition, r.error_code))
                .collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (topic, index, code) in results.into_iter().chain(refused) {
        let partition = OffsetCommitResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(code);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(partition),
            _ => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    wire::OffsetCommitResponse::default().with_topics(topics)
}

fn refused_offset(topic: String, partition: i32, error_code: i16) -> FetchedOffset {
    FetchedOffset {
        topic,
        partition,
        offset: -1,
        leader_epoch: -1,
        metadata: String::new(),
        error_code,
    }
}

async fn fetch_one(
    shard: &Rc<Shard>,
    access: &Access,
    group_id: String,
    partitions: Option<Vec<(String, i32)>>,
) -> (i16, Vec<FetchedOffset>) {
    if !access.group(operation::DESCRIBE, &group_id) {
        let named = partitions.unwrap_or_default().into_iter();
        let refused = named
            .map(|(t, p)| refused_offset(t, p, GROUP_AUTHORIZATION_FAILED))
            .collect();
        return (GROUP_AUTHORIZATION_FAILED, refused);
    }
    let mut refused = Vec::new();
    let partitions = partitions.map(|named| {
        let (allowed, denied): (Vec<_>, Vec<_>) = named
            .into_iter()
            .partition(|(t, _)| access.topic(operation::DESCRIBE, t));
        refused.extend(
            denied
                .into_iter()
                .map(|(t, p)| refused_offset(t, p, TOPIC_AUTHORIZATION_FAILED)),
        );
        allowed
    });
    let call = GroupCall::Fetch(OffsetFetchRequest {
        group_id,
        partitions,
    });
    match shard.group_call(call).await {
        GroupAnswer::Fetched(mut r) => {
            // An all-topics answer leaves out what the client may not describe.
            r.partitions
                .retain(|p| access.topic(operation::DESCRIBE, &p.topic));
            r.partitions.extend(refused);
            (r.error_code, r.partitions)
        }
        _ => (ec::UNKNOWN_SERVER_ERROR, Vec::new()),
    }
}

/// Groups fetched offsets by topic, keeping first-seen order.
fn by_topic(partitions: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for p in partitions {
        match topics.iter_mut().find(|(name, _)| *name == p.topic) {
            Some((_, list)) => list.push(p),
            None => topics.push((p.topic.clone(), vec![p])),
        }
    }
    topics
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::OffsetFetchRequest,
    version: i16,
) -> wire::OffsetFetchResponse {
    let epochs = version >= 5;
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for group in &req.groups {
            let wanted = group.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .flat_map(|t| t.partition_indexes.iter().map(|&p| (own(&t.name.0), p)))
                    .collect()
            });
            let (code, fetched) = fetch_one(shard, access, own(&group.group_id.0), wanted).await;
            let topics = by_topic(fetched)
                .into_iter()
                .map(|(name, list)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s(&name)))
                        .with_partitions(
                            list.iter()
                                .map(|p| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p.partition)
                                        .with_committed_offset(p.offset)
                                        .with_committed_leader_epoch(p.leader_epoch)
                                        .with_metadata(Some(s(&p.metadata)))
                                        .with_error_code(p.error_code)
                                })
                                .collect(),
                        )
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id.clone())
                    .with_topics(topics)
                    .with_error_code(code),
            );
        }
        return wire::OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partition_indexes.iter().map(|&p| (own(&t.name.0), p)))
            .collect()
    });
    let (code, fetched) = fetch_one(shard, access, own(&req.group_id.0), wanted).await;
    let topics = by_topic(fetched)
        .into_iter()
        .map(|(name, list)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(&name)))
                .with_partitions(
                    list.iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
                                .with_committed_leader_epoch(if epochs {
                                    p.leader_epoch
                                } else {
                                    -1
                                })
                                .with_metadata(Some(s(&p.metadata)))
                                // v0-1 have no top-level error: it goes on every partition.
                                .with_error_code(if version < 2 && code != ec::NONE {
                                    code
                                } else {
                                    p.error_code
                                })
                        })
                        .collect(),
                )
        })
        .collect();
    wire::OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 { code } else { ec::NONE })
}

pub async fn list_groups(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::ListGroupsRequest,
    version: i16,
) -> WireListGroupsResponse {
    let all = access.cluster(operation::DESCRIBE);
    let mut listed = shard
        .list_all_groups(ListGroupsRequest {
            states_filter: req.states_filter.iter().map(own).collect(),
            types_filter: req.types_filter.iter().map(own).collect(),
        })
        .await;
    if !all {
        listed
            .groups
            .retain(|g| access.group(operation::DESCRIBE, &g.group_id));
    }
    WireListGroupsResponse::default()
        .with_error_code(listed.error_code)
        .with_groups(
            listed
                .groups
                .iter()
                .map(|g| {
                    ListedGroup::default()
                        .with_group_id(GroupId(s(&g.group_id)))
                        .with_protocol_type(s(&g.protocol_type))
                        .with_group_state(if version >= 4 { s(g.state) } else { s("") })
                        .with_group_type(if version >= 5 { s("classic") } else { s("") })
                })
                .collect(),
        )
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::DescribeGroupsRequest,
    version: i16,
) -> wire::DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in &req.groups {
        if !access.group(operation::DESCRIBE, &id.0) {
            groups.push(
                WireGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(GROUP_AUTHORIZATION_FAILED),
            );
            continue;
        }
        let call = GroupCall::Describe(own(&id.0));
        let GroupAnswer::Described(g) = shard.group_call(call).await else {
            groups.push(
                WireGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ec::UNKNOWN_SERVER_ERROR),
            );
            continue;
        };
        let members = g
            .members
            .iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(s(&m.member_id))
                    .with_group_instance_id(if version >= 4 {
                        opt(&m.group_instance_id)
                    } else {
                        None
                    })
                    .with_client_id(s(&m.client_id))
                    .with_client_host(s(&m.client_host))
                    .with_member_metadata(m.metadata.clone())
                    .with_member_assignment(m.assignment.clone())
            })
            .collect();
        groups.push(
            WireGroup::default()
                .with_error_code(g.error_code)
                .with_group_id(GroupId(s(&g.group_id)))
                .with_group_state(s(g.state))
                .with_protocol_type(s(&g.protocol_type))
                .with_protocol_data(s(&g.protocol_data))
                .with_members(members)
                .with_authorized_operations(i32::MIN),
        );
    }
    wire::DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::DeleteGroupsRequest,
) -> wire::DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in &req.groups_names {
        let code = if !access.group(operation::DELETE, &id.0) {
            GROUP_AUTHORIZATION_FAILED
        } else {
            match done(shard, GroupCall::Delete(own(&id.0))).await {
                Response::DeleteGroups(r) => r.results.first().map_or(ec::NONE, |(_, c)| *c),
                _ => ec::UNKNOWN_SERVER_ERROR,
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code),
        );
    }
    wire::DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete v0: READ on the group (else GROUP_AUTHORIZATION_FAILED for the whole
/// request) and on each topic (else TOPIC_AUTHORIZATION_FAILED); partitions of topics or
/// indexes this broker does not know are UNKNOWN_TOPIC_OR_PARTITION; the rest go to the
/// group's coordinator ([`crate::group::GroupCoordinator::offset_delete`]).
pub async fn offset_delete(
    shard: &Rc<Shard>,
    access: &Access,
    req: wire::OffsetDeleteRequest,
) -> wire::OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let group_id = own(&req.group_id.0);
    if !access.group(operation::READ, &group_id) {
        return wire::OffsetDeleteResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
    }
    // (topic, partition, error decided here or None for the coordinator's), request order.
    let mut decided: Vec<(TopicName, i32, Option<i16>)> = Vec::new();
    let mut asked = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        let known = shard.topic(name);
        let allowed = access.topic(operation::READ, name);
        for p in &topic.partitions {
            let index = p.partition_index;
            let code = if !allowed {
                Some(TOPIC_AUTHORIZATION_FAILED)
            } else if !known
                .as_ref()
                .is_some_and(|t| index >= 0 && (index as usize) < t.shards.len())
            {
                Some(ec::UNKNOWN_TOPIC_OR_PARTITION)
            } else {
                asked.push((name.to_owned(), index));
                None
            };
            decided.push((topic.name.clone(), index, code));
        }
    }
    let mut coordinator_codes = Vec::new();
    if !asked.is_empty() {
        let call = GroupCall::OffsetDelete(crate::group::OffsetDeleteRequest {
            group_id,
            partitions: asked,
        });
        match done(shard, call).await {
            Response::OffsetDelete(r) if r.error_code != ec::NONE => {
                return wire::OffsetDeleteResponse::default().with_error_code(r.error_code);
            }
            Response::OffsetDelete(r) => {
                coordinator_codes = r.partitions.into_iter().map(|p| p.error_code).collect()
            }
            _ => {
                return wire::OffsetDeleteResponse::default()
                    .with_error_code(ec::UNKNOWN_SERVER_ERROR)
            }
        }
    }
    let mut answers = coordinator_codes.into_iter();
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for (name, index, code) in decided {
        let code = code.unwrap_or_else(|| answers.next().unwrap_or(ec::UNKNOWN_SERVER_ERROR));
        let partition = OffsetDeleteResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name == name => t.partitions.push(partition),
            _ => topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    wire::OffsetDeleteResponse::default().with_topics(topics)
}
