//! OffsetForLeaderEpoch (v0-4, KIP-101/279/320): for each partition, the largest leader epoch
//! at or below the one asked and the offset where it ends in the leader's log (the start of
//! the next epoch, or the log end for the current one), from the partition's leader-epoch
//! cache. Clients (librdkafka >= 2.1, kafka-python) ask it after a leader move to check their
//! position was not cut away; followers here use Fetch's diverging epoch instead. Only the
//! leader answers; `current_leader_epoch` is checked as for Fetch. On a single node (no
//! epochs) the answer is epoch 0 ending at the log end.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::cluster::controller::TopicPartition;
use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;

use super::partition_ops::{ShardReply, ShardRequest};
use super::replica::Role;
use super::shard::Shard;

/// A broker asking (replica_id >= 0) needs CLUSTER_ACTION on the cluster, a client DESCRIBE
/// on each topic (TOPIC_AUTHORIZATION_FAILED otherwise, as Kafka answers both).
pub async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let from_broker = request.replica_id.0 >= 0;
    let cluster_action = from_broker && access.cluster(operation::CLUSTER_ACTION);
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.as_str().to_string();
        let authorized = if from_broker {
            cluster_action
        } else {
            access.topic(operation::DESCRIBE, &name)
        };
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let entry = EpochEndOffset::default().with_partition(p.partition);
            let answer = match shard.topic(&name) {
                _ if !authorized => Err(codes::TOPIC_AUTHORIZATION_FAILED),
                None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                Some(found) => {
                    let tp = TopicPartition::new(name.clone(), p.partition);
                    match shard.owner(&found, p.partition) {
                        None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                        Some(owner) => {
                            shard
                                .on_shard(
                                    owner,
                                    tp,
                                    |tp| async move {
                                        shard.epoch_end_local(
                                            &tp,
                                            p.current_leader_epoch,
                                            p.leader_epoch,
                                        )
                                    },
                                    |tp| ShardRequest::EpochEnd {
                                        tp,
                                        current_leader_epoch: p.current_leader_epoch,
                                        leader_epoch: p.leader_epoch,
                                    },
                                    |reply| match reply {
                                        Some(ShardReply::EpochEnd(answer)) => answer,
                                        _ => Err(codes::KAFKA_STORAGE_ERROR),
                                    },
                                )
                                .await
                        }
                    }
                }
            };
            partitions.push(match answer {
                Ok((epoch, end_offset)) => {
                    entry.with_leader_epoch(epoch).with_end_offset(end_offset)
                }
                Err(code) => entry
                    .with_error_code(code)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

impl Shard {
    /// The answer for one partition owned here: `(epoch, end_offset)`, (-1, -1) when no
    /// epoch at or below `leader_epoch` is known (Kafka's UNDEFINED), or an error code.
    pub fn epoch_end_local(
        &self,
        tp: &TopicPartition,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<(i32, i64), i16> {
        let Some(log) = self.partitions.get(&tp.topic, tp.partition) else {
            return Err(codes::NOT_LEADER_OR_FOLLOWER);
        };
        if self.cluster.is_none() {
            return Ok((0, log.log_end_offset()));
        }
        let replica = self
            .partitions
            .replica(&tp.topic, tp.partition)
            .ok_or(codes::NOT_LEADER_OR_FOLLOWER)?;
        let epoch = match &*replica.role.borrow() {
            Role::Leader(leader) => leader.epoch(),
            _ => return Err(codes::NOT_LEADER_OR_FOLLOWER),
        };
        if current_leader_epoch >= 0 && current_leader_epoch < epoch {
            return Err(super::replication::FENCED_LEADER_EPOCH);
        }
        if current_leader_epoch > epoch {
            return Err(super::replication::UNKNOWN_LEADER_EPOCH);
        }
        let end = replica
            .cache
            .borrow()
            .end_offset_for(leader_epoch, log.log_end_offset())
            .unwrap_or((-1, -1));
        Ok(end)
    }
}
