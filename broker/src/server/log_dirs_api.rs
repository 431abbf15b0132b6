//! DescribeLogDirs (35): the data directory (this broker's one log directory) with the size
//! of every partition log in it, gathered from every shard, and from v4 the file system's
//! total and usable bytes. The offset lag is Kafka's: how far a log's end is below its high
//! watermark (0 for a leader and on a single node).
//!
//! With an authorizer: DESCRIBE on the cluster, else CLUSTER_AUTHORIZATION_FAILED (from v3
//! in the response's error code; an empty answer before).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::access::Access;
use crate::security::authorizer::operation;

use super::partition_ops::{LogDirPartition, ShardReply, ShardRequest};
use super::shard::Shard;

pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    if !access.cluster(operation::DESCRIBE) {
        return DescribeLogDirsResponse::default().with_error_code(if version >= 3 {
            codes::CLUSTER_AUTHORIZATION_FAILED
        } else {
            codes::NONE
        });
    }
    // None: every partition; otherwise only those asked for.
    let wanted: Option<BTreeSet<(String, i32)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.as_str().to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect()
    });
    let mut partitions: Vec<LogDirPartition> = Vec::new();
    for id in 0..shard.shard_count {
        if id == shard.id {
            partitions.extend(shard.log_dir_partitions());
        } else {
            match shard.mesh.call(id, ShardRequest::LogDirs).await {
                Some(ShardReply::LogDirs(found)) => partitions.extend(found),
                _ => tracing::warn!("shard {id} did not list its logs"),
            }
        }
    }
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for p in partitions {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&(p.topic.clone(), p.partition)))
        {
            continue;
        }
        by_topic.entry(p.topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.partition)
                .with_partition_size(p.size_bytes as i64)
                .with_offset_lag(p.offset_lag),
        );
    }
    let data_dir = &shard.config.data_dir;
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(name, mut partitions)| {
                    partitions.sort_by_key(|p| p.partition_index);
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    // -1 ("unknown") unless the file system answers.
    result = match crate::storage::disk_budget::fs_space(data_dir) {
        Ok(space) => result
            .with_total_bytes(space.total_bytes as i64)
            .with_usable_bytes(space.free_bytes as i64),
        Err(_) => result.with_total_bytes(-1).with_usable_bytes(-1),
    };
    DescribeLogDirsResponse::default().with_results(vec![result])
}
