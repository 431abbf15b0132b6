//! The Metadata API (v0-v12). On a single node: this node as the only broker, leading every
//! partition. In cluster mode: the live brokers (and for a few seconds one whose registration
//! just went away: `ClusterView::metadata_brokers`), the controller, the cluster id and every
//! partition's leader, epoch, replicas and ISR from this shard's cluster view (an offline
//! partition answers LEADER_NOT_AVAILABLE with leader -1). A single node's partition that a
//! disk fault took offline answers KAFKA_STORAGE_ERROR with leader -1 and this node as its
//! offline replica (see `offline.rs`). Unknown topics are auto-created
//! only when the server was started with `--auto-create-topics` and the client allows it.
//!
//! With an authorizer, the answer lists only topics the client may DESCRIBE (a named one it
//! may not is TOPIC_AUTHORIZATION_FAILED), and auto-creation needs CREATE on the cluster or
//! the topic (TOPIC_AUTHORIZATION_FAILED otherwise), as Kafka answers.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::controller::NO_LEADER;
use crate::cluster::ClusterView;
use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;
use crate::topics::Topic;

use super::partition_ops::CreateSpec;
use super::shard::Shard;

/// A client-visible cluster id (Metadata v2+).
pub const CLUSTER_ID: &str = "kbroker-single-node";

fn topic_entry(shard: &Shard, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let partitions = match shard.cluster_view() {
        Some(view) => cluster_partitions(&view, topic, version),
        None => single_node_partitions(shard, topic, version),
    };
    MetadataResponseTopic::default()
        .with_error_code(codes::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        // Clients leave internal topics out of pattern subscriptions.
        .with_is_internal(version >= 1 && topic.name == crate::group::OFFSETS_TOPIC)
        // Fields are only set from the version that has them (the codec refuses others).
        .with_topic_id(if version >= 10 {
            uuid::Uuid::from_bytes(topic.id)
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(partitions)
}

/// A single node leads every partition.
fn single_node_partitions(
    shard: &Shard,
    topic: &Topic,
    version: i16,
) -> Vec<MetadataResponsePartition> {
    let node = BrokerId(shard.config.node_id);
    let any_offline = shard.offline.any_of(&topic.name);
    (0..topic.partition_count())
        .map(|partition| {
            let entry = MetadataResponsePartition::default()
                .with_partition_index(partition)
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![node]);
            if any_offline && shard.offline.reason(&topic.name, partition).is_some() {
                // Its only replica is offline after a disk fault: no leader, no ISR.
                return entry
                    .with_error_code(codes::KAFKA_STORAGE_ERROR)
                    .with_leader_id(BrokerId(NO_LEADER))
                    .with_isr_nodes(Vec::new())
                    .with_offline_replicas(if version >= 5 { vec![node] } else { Vec::new() });
            }
            entry.with_leader_id(node).with_isr_nodes(vec![node])
        })
        .collect()
}

fn ids(list: &[i32]) -> Vec<BrokerId> {
    list.iter().copied().map(BrokerId).collect()
}

/// Leaders, epochs, replicas and ISRs from the cluster view.
fn cluster_partitions(
    view: &ClusterView,
    topic: &Topic,
    version: i16,
) -> Vec<MetadataResponsePartition> {
    match view.topics.get(&topic.name) {
        Some(t) => t
            .partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                let (code, leader, epoch, isr) = match &partition.state {
                    Some(state) if state.leader != NO_LEADER => (
                        codes::NONE,
                        state.leader,
                        state.leader_epoch,
                        state.isr.clone(),
                    ),
                    Some(state) => (
                        codes::LEADER_NOT_AVAILABLE,
                        NO_LEADER,
                        state.leader_epoch,
                        state.isr.clone(),
                    ),
                    None => (codes::LEADER_NOT_AVAILABLE, NO_LEADER, -1, Vec::new()),
                };
                let offline: Vec<i32> = partition
                    .replicas
                    .iter()
                    .copied()
                    .filter(|&id| {
                        !view.brokers.contains_key(&id)
                            || view.replica_failed(id, &topic.name, index as i32)
                    })
                    .collect();
                MetadataResponsePartition::default()
                    .with_error_code(code)
                    .with_partition_index(index as i32)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(if version >= 7 { epoch } else { -1 })
                    .with_replica_nodes(ids(&partition.replicas))
                    .with_isr_nodes(ids(&isr))
                    .with_offline_replicas(if version >= 5 {
                        ids(&offline)
                    } else {
                        Vec::new()
                    })
            })
            .collect(),
        None => Vec::new(),
    }
}

fn missing(name: Option<TopicName>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name)
        .with_topic_id(id)
}

/// Metadata for a request that came in on listener `listener`: brokers are listed with
/// that listener's endpoints (a broker without it is left out, as Kafka does).
pub async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: MetadataRequest,
    version: i16,
    listener: usize,
) -> MetadataResponse {
    let mut topics = Vec::new();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    if all {
        for topic in shard.topics.borrow().values() {
            if access.topic(operation::DESCRIBE, &topic.name) {
                topics.push(topic_entry(shard, topic, version));
            }
        }
    } else {
        let wanted = request.topics.unwrap_or_default();
        let mut to_create = Vec::new();
        let may_create_any = access.cluster(operation::CREATE);
        let mut refused_creation = Vec::new();
        for entry in &wanted {
            if let Some(name) = &entry.name {
                if shard.topic(name.0.as_str()).is_none()
                    && shard.config.auto_create_topics
                    && (request.allow_auto_topic_creation || version < 4)
                    && access.topic(operation::DESCRIBE, name.0.as_str())
                {
                    if !may_create_any && !access.topic(operation::CREATE, name.0.as_str()) {
                        refused_creation.push(name.0.as_str().to_string());
                        continue;
                    }
                    to_create.push(CreateSpec {
                        name: name.0.as_str().to_string(),
                        num_partitions: -1,
                        replication_factor: -1,
                        configs: Vec::new(),
                        validate_only: false,
                        assignments: Vec::new(),
                    });
                }
            }
        }
        if !to_create.is_empty() {
            for (name, result) in shard.create_topics(to_create).await {
                if let Err(err) = result {
                    tracing::info!("auto-create of `{name}` failed: {err}");
                }
            }
        }
        for entry in wanted {
            match entry.name {
                Some(name)
                    if !access.topic(operation::DESCRIBE, name.0.as_str())
                        || refused_creation.iter().any(|r| r == name.0.as_str()) =>
                {
                    topics.push(missing(
                        Some(name),
                        uuid::Uuid::nil(),
                        codes::TOPIC_AUTHORIZATION_FAILED,
                    ));
                }
                Some(name) => match shard.topic(name.0.as_str()) {
                    Some(topic) => topics.push(topic_entry(shard, &topic, version)),
                    None => {
                        let code = if crate::topics::validate_name(name.0.as_str()).is_err() {
                            codes::INVALID_TOPIC_EXCEPTION
                        } else {
                            codes::UNKNOWN_TOPIC_OR_PARTITION
                        };
                        topics.push(missing(Some(name), uuid::Uuid::nil(), code));
                    }
                },
                None => match shard.topic_by_id(entry.topic_id.as_bytes()) {
                    Some(topic) if !access.topic(operation::DESCRIBE, &topic.name) => topics.push(
                        missing(None, entry.topic_id, codes::TOPIC_AUTHORIZATION_FAILED),
                    ),
                    Some(topic) => topics.push(topic_entry(shard, &topic, version)),
                    None => topics.push(missing(None, entry.topic_id, codes::UNKNOWN_TOPIC_ID)),
                },
            }
        }
    }
    if let Some(view) = shard.cluster_view() {
        let name = shard.listener_name(listener);
        return MetadataResponse::default()
            .with_brokers(
                view.metadata_brokers(std::time::Instant::now())
                    .filter_map(|broker| {
                        let (host, port) = broker.endpoint(name)?;
                        Some((broker, host, port))
                    })
                    .map(|(broker, host, port)| {
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(broker.id))
                            .with_host(StrBytes::from_string(host.to_string()))
                            .with_port(port)
                            .with_rack(
                                (version >= 1)
                                    .then(|| broker.rack.clone().map(StrBytes::from_string))
                                    .flatten(),
                            )
                    })
                    .collect(),
            )
            .with_cluster_id((version >= 2).then(|| StrBytes::from_string(view.cluster_id.clone())))
            .with_controller_id(BrokerId(if version >= 1 { view.controller } else { -1 }))
            .with_topics(topics);
    }
    let (host, port) = shard.advertised(listener);
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(shard.config.node_id))
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
        .with_cluster_id((version >= 2).then(|| StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(if version >= 1 {
            shard.config.node_id
        } else {
            -1
        }))
        .with_topics(topics)
}

/// Topic names as bytes for responses that name topics.
pub fn name_bytes(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

/// DescribeCluster v0-1: the same brokers, controller and cluster id as Metadata (v1's
/// endpoint type 1 is brokers; controllers are KRaft's and not served).
pub fn describe_cluster(
    shard: &Shard,
    request: &DescribeClusterRequest,
    listener: usize,
) -> DescribeClusterResponse {
    if request.endpoint_type != 1 {
        return DescribeClusterResponse::default()
            .with_error_code(codes::UNSUPPORTED_ENDPOINT_TYPE)
            .with_controller_id(BrokerId(-1));
    }
    let broker = |id: i32, host: &str, port: i32, rack: Option<&String>| {
        DescribeClusterBroker::default()
            .with_broker_id(BrokerId(id))
            .with_host(StrBytes::from_string(host.to_string()))
            .with_port(port)
            .with_rack(rack.cloned().map(StrBytes::from_string))
    };
    match shard.cluster_view() {
        Some(view) => DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(view.cluster_id.clone()))
            .with_controller_id(BrokerId(view.controller))
            .with_endpoint_type(1)
            .with_brokers(
                view.brokers
                    .values()
                    .filter_map(|b| {
                        let (host, port) = b.endpoint(shard.listener_name(listener))?;
                        Some(broker(b.id, host, port, b.rack.as_ref()))
                    })
                    .collect(),
            ),
        None => {
            let (host, port) = shard.advertised(listener);
            DescribeClusterResponse::default()
                .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
                .with_controller_id(BrokerId(shard.config.node_id))
                .with_endpoint_type(1)
                .with_brokers(vec![broker(shard.config.node_id, &host, port, None)])
        }
    }
}
