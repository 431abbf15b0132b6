//! DeleteRecords and DescribeProducers.
//!
//! DeleteRecords (API 21, v0-2): moves partitions' log start offsets forward, at the shard
//! owning each partition (its leader in cluster mode). Each topic needs DELETE
//! (TOPIC_AUTHORIZATION_FAILED); `__consumer_offsets` is refused (INVALID_TOPIC_EXCEPTION, as
//! Kafka refuses internal topics). Per partition, as Kafka answers: offset -1 means the high
//! watermark; an offset past the high watermark (or negative) is OFFSET_OUT_OF_RANGE; the
//! answer's low watermark is the log start offset after the call (unchanged when the offset
//! is not past it). Storage: [`crate::storage::log_start`].
//!
//! In a cluster the leader moves its own start (durably); followers learn it from the log
//! start offset of the leader's fetch responses and move theirs ([`Shard::follow_log_start`]),
//! as Kafka's followers do, and report it in their next fetch; the leader answers once every
//! other ISR member reported it (Kafka waits for the live replicas), REQUEST_TIMED_OUT after
//! the request's `timeout_ms`.
//!
//! DescribeProducers (API 61, v0): the idempotent producers a partition's log remembers
//! (id, epoch, last sequence, timestamp of the last batch), answered by any replica hosting
//! it, as Kafka answers; READ on the topic. No transactions here: coordinator epoch and
//! transaction start offset are always -1.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeProducersRequest,
    DescribeProducersResponse,
};

use crate::storage::ActiveProducer;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;
use crate::topics::Topic;

use super::partition_ops::{PartitionError, ShardReply, ShardRequest};
use super::partitions::unanswered;
use super::replica::{Replica, Role};
use super::shard::Shard;

/// DeleteRecords' "up to the high watermark" offset.
const HIGH_WATERMARK: i64 = -1;

pub async fn delete_records(
    shard: &Rc<Shard>,
    access: &Access,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic_request in request.topics {
        let name = topic_request.name.0.as_str();
        let authorized = access.topic(operation::DELETE, name);
        let topic = shard.topic(name);
        let mut partitions = Vec::with_capacity(topic_request.partitions.len());
        for partition in topic_request.partitions {
            let result = match &topic {
                _ if !authorized => Err(codes::TOPIC_AUTHORIZATION_FAILED),
                None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                // The group coordinators replay it from its start: never cut by a client.
                Some(_) if name == crate::group::OFFSETS_TOPIC => {
                    Err(codes::INVALID_TOPIC_EXCEPTION)
                }
                Some(topic) => shard
                    .delete_records(
                        topic,
                        partition.partition_index,
                        partition.offset,
                        request.timeout_ms,
                    )
                    .await
                    .map_err(|(code, message)| {
                        if code != codes::OFFSET_OUT_OF_RANGE {
                            tracing::warn!(
                                "DeleteRecords {name}-{}: {message}",
                                partition.partition_index
                            );
                        }
                        code
                    }),
            };
            let entry = DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index);
            partitions.push(match result {
                Ok(low_watermark) => entry.with_low_watermark(low_watermark),
                Err(code) => entry.with_error_code(code).with_low_watermark(-1),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic_request.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

pub async fn describe_producers(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic_request in request.topics {
        let name = topic_request.name.0.as_str();
        let authorized = access.topic(operation::READ, name);
        let topic = shard.topic(name);
        let mut partitions = Vec::with_capacity(topic_request.partition_indexes.len());
        for &index in &topic_request.partition_indexes {
            let result = match &topic {
                _ if !authorized => Err(codes::TOPIC_AUTHORIZATION_FAILED),
                None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                Some(topic) => shard.producers_of(topic, index).await,
            };
            let entry = PartitionResponse::default().with_partition_index(index);
            partitions.push(match result {
                Ok(producers) => entry.with_active_producers(
                    producers
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(p.producer_id.into())
                                .with_producer_epoch(p.producer_epoch.into())
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect(),
                ),
                Err(code) => entry.with_error_code(code),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic_request.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

impl Shard {
    /// The producers of one partition, at the shard owning it.
    async fn producers_of(
        self: &Rc<Self>,
        topic: &Topic,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>, i16> {
        let owner = self
            .owner(topic, partition)
            .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
        self.on_shard(
            owner,
            (),
            |()| self.producers_local(&topic.name, partition),
            |()| ShardRequest::DescribeProducers {
                topic: topic.name.clone(),
                partition,
            },
            |reply| match reply {
                Some(ShardReply::Producers(result)) => result,
                _ => Err(codes::KAFKA_STORAGE_ERROR),
            },
        )
        .await
    }

    /// The producers of a partition this shard hosts (leader or follower).
    pub async fn producers_local(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>, i16> {
        let log = self
            .partitions
            .get(topic, partition)
            // Kafka's answer when this broker holds no replica of the partition.
            .ok_or(codes::NOT_LEADER_OR_FOLLOWER)?;
        log.active_producers().await.map_err(|err| {
            tracing::warn!("DescribeProducers {topic}-{partition}: {err}");
            err.error_code()
        })
    }

    /// DeleteRecords of one partition, at the shard owning it.
    pub async fn delete_records(
        self: &Rc<Self>,
        topic: &Topic,
        partition: i32,
        offset: i64,
        timeout_ms: i32,
    ) -> Result<i64, PartitionError> {
        let owner = self.owner(topic, partition).ok_or_else(|| {
            (
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("{}-{partition} does not exist", topic.name),
            )
        })?;
        self.check_leader(&topic.name, partition)?;
        self.on_shard(
            owner,
            (),
            |()| self.delete_records_local(&topic.name, partition, offset, timeout_ms),
            |()| ShardRequest::DeleteRecords {
                topic: topic.name.clone(),
                partition,
                offset,
                timeout_ms,
            },
            |reply| match reply {
                Some(ShardReply::LogStart(result)) => result,
                _ => Err(unanswered(owner)),
            },
        )
        .await
    }

    /// A follower moves its log start offset up to its leader's (from a fetch response),
    /// within what it has, and drops the segments wholly below it.
    pub async fn follow_log_start(
        &self,
        replica: &Replica,
        leader_log_start: i64,
    ) -> Result<(), String> {
        let tp = &replica.tp;
        let Some(log) = self.partitions.get(&tp.topic, tp.partition) else {
            return Ok(());
        };
        if leader_log_start <= log.log_start_offset() {
            return Ok(());
        }
        let moved = log
            .advance_log_start(leader_log_start)
            .await
            .map_err(|err| format!("moving the log start offset: {err}"))?;
        if moved {
            log.apply_retention(crate::storage::now_ms())
                .await
                .map_err(|err| format!("deleting segments below the log start: {err}"))?;
        }
        Ok(())
    }

    /// A follower whose next offset is below its leader's log start (the leader answered
    /// OFFSET_OUT_OF_RANGE: DeleteRecords or retention moved its start past this log's end)
    /// empties its log to start there and fetches on from it, as Kafka's followers do
    /// (`truncateFullyAndStartAt`); its epoch cache starts over with the batches it fetches.
    pub async fn restart_follower_at(
        &self,
        replica: &Replica,
        leader_log_start: i64,
    ) -> Result<(), String> {
        let tp = &replica.tp;
        let Some(log) = self.partitions.get(&tp.topic, tp.partition) else {
            return Ok(());
        };
        let before = log.log_end_offset();
        if leader_log_start <= before {
            return Ok(());
        }
        let log = Rc::new(
            log.restarted_at(leader_log_start)
                .await
                .map_err(|err| format!("starting the log over at {leader_log_start}: {err}"))?,
        );
        self.partitions
            .replace(&tp.topic, tp.partition, log.clone());
        replica.cache.borrow_mut().truncate_from_end(i64::MIN);
        replica.save_cache(&log);
        tracing::warn!(
            "{tp}: the leader's log starts at {leader_log_start}, past this log's end \
             {before}; the log starts over there"
        );
        Ok(())
    }

    /// DeleteRecords of a partition this shard owns: the bound is the high watermark (a
    /// cluster leader's replicated one, a single node's promised end). A cluster leader
    /// answers once every other ISR member reported a log start at or past the new one
    /// (Kafka's DelayedDeleteRecords), REQUEST_TIMED_OUT after `timeout_ms`.
    pub async fn delete_records_local(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout_ms: i32,
    ) -> Result<i64, PartitionError> {
        let log = self.partitions.get(topic, partition).ok_or_else(|| {
            (
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("{topic}-{partition} is not hosted here"),
            )
        })?;
        let high_watermark = if self.cluster.is_some() {
            self.consumer_bounds(topic, partition, -1)
                .map_err(|code| (code, format!("{topic}-{partition}")))?
        } else {
            log.promised_end_offset()
        };
        let offset = if offset == HIGH_WATERMARK {
            high_watermark
        } else {
            offset
        };
        let low_watermark = log
            .delete_records_before(offset, high_watermark)
            .await
            .map_err(|err| (err.error_code(), err.to_string()))?;
        if let Some(replica) = self.partitions.replica(topic, partition) {
            let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
            self.wait_followers_log_start(&replica, low_watermark, timeout)
                .await
                .map_err(|code| {
                    (
                        code,
                        format!("{topic}-{partition}: followers' log start below {low_watermark}"),
                    )
                })?;
        }
        Ok(low_watermark)
    }

    /// While leading `replica`: until every other ISR member's last fetch reported a log
    /// start at or past `offset`, at most `timeout` (REQUEST_TIMED_OUT), or until leadership
    /// moves (NOT_LEADER_OR_FOLLOWER).
    async fn wait_followers_log_start(
        &self,
        replica: &Replica,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), i16> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = replica.changed.wait();
            let done = match &*replica.role.borrow() {
                Role::Leader(leader) => {
                    let starts = replica.follower_log_starts.borrow();
                    leader
                        .isr()
                        .iter()
                        .filter(|&&b| b != self.config.node_id)
                        .all(|b| starts.get(b).is_some_and(|&start| start >= offset))
                }
                _ => return Err(codes::NOT_LEADER_OR_FOLLOWER),
            };
            if done {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(codes::REQUEST_TIMED_OUT);
            }
            futures_lite::future::or(wait, glommio::timer::sleep(left)).await;
        }
    }
}
