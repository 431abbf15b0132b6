//! What one shard asks another: the control shard (shard 0) creates and deletes topics and
//! broadcasts the result; data requests go to the shard that owns the partition, group
//! requests to the shard coordinating the group. The bottom layer of `server`: these types
//! name no other server module.

use std::time::Duration;

use bytes::Bytes;

use crate::group::{
    DeleteGroupsResponse, DescribedGroup, ErrorCode, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, Response, SyncGroupRequest, SyncGroupResponse,
};
use crate::storage::AppendInfo;
use crate::topics::{Topic, TopicError};

/// One topic of a CreateTopics request, as the control shard needs it.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub name: String,
    /// -1 means the broker default.
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    pub validate_only: bool,
    /// Explicit replica assignment (partition, brokers); cluster mode only.
    pub assignments: Vec<(i32, Vec<i32>)>,
}

/// One partition of a follower's Fetch, as the leader's owning shard needs it.
#[derive(Debug, Clone)]
pub struct FollowerFetch {
    pub tp: crate::cluster::controller::TopicPartition,
    /// The fetching broker.
    pub follower: i32,
    /// The follower's log end.
    pub fetch_offset: i64,
    /// The epoch the follower knows (-1: not given).
    pub current_leader_epoch: i32,
    /// The epoch of the follower's last batch (-1: none).
    pub last_fetched_epoch: i32,
    pub max_bytes: usize,
    /// The follower's log start offset (-1: not given).
    pub log_start_offset: i64,
}

/// Per-partition failure: a Kafka error code and a message.
pub type PartitionError = (i16, String);

/// Per topic, in request order: the topic as created or changed (or as it would be, validate
/// only), or why not.
pub type TopicResults = Vec<(String, Result<Topic, TopicError>)>;

/// A request sent over the mesh.
pub enum ShardRequest {
    /// To shard 0: create these topics.
    CreateTopics(Vec<CreateSpec>),
    /// To shard 0: delete these topics.
    DeleteTopics(Vec<String>),
    /// From shard 0 to every shard: a topic now exists; open the partitions you own.
    TopicAdded(Topic),
    /// From shard 0 to every shard: a topic is gone; close and remove your partitions.
    TopicRemoved(String),
    /// From shard 0 to every shard: a known topic's metadata changed (cluster mode).
    TopicUpdated(Topic),
    /// From shard 0 to every shard: the newest cluster view (cluster mode).
    ClusterView(std::sync::Arc<crate::cluster::ClusterView>),
    /// To the owner: the appends of one Produce to the partitions it owns (answered in the
    /// same order, [`ShardReply::Appended`]).
    Append {
        appends: Vec<ProduceAppend>,
        acks: i16,
        timeout_ms: i32,
    },
    /// To the shard owning the partitions a connection uses: serve it from now on
    /// (`connection.rs`, "Moving").
    MoveConnection(super::connection::MovedConnection),
    /// To the owner: a consumer's reads of the partitions it owns, from one Fetch (answered
    /// in the same order, [`ShardReply::Read`]).
    Read(Vec<ConsumerRead>),
    /// To the owner: OffsetForLeaderEpoch for one partition.
    EpochEnd {
        tp: crate::cluster::controller::TopicPartition,
        current_leader_epoch: i32,
        leader_epoch: i32,
    },
    /// To the owner: a follower's Fetch of one partition (cluster mode).
    FollowerRead(FollowerFetch),
    /// To the owner: ListOffsets for one partition (-2 earliest, -1 latest, or a time).
    ListOffset {
        topic: String,
        partition: i32,
        timestamp: i64,
    },
    /// To the owner: answer when any of these (topic, partition, offset) has data, or after
    /// `max_wait` (Fetch long-poll).
    WaitForData {
        wanted: Vec<(String, i32, i64)>,
        max_wait: Duration,
        reader: Reader,
    },
    /// To the shard owning the group's partition of `__consumer_offsets`.
    Group(GroupCall),
    /// To the owner: DeleteRecords of one partition (-1: up to the high watermark).
    DeleteRecords {
        topic: String,
        partition: i32,
        offset: i64,
        timeout_ms: i32,
    },
    /// To the owner: the idempotent producers of one partition.
    DescribeProducers { topic: String, partition: i32 },
    /// To shard 0: change topics' config overrides (AlterConfigs, IncrementalAlterConfigs).
    AlterConfigs(Vec<crate::topics::ConfigAlteration>),
    /// To shard 0: add partitions to topics (CreatePartitions).
    CreatePartitions(Vec<PartitionsSpec>),
    /// To every shard: the sizes and offsets of the partition logs it owns (DescribeLogDirs).
    LogDirs,
}

/// One topic of a CreatePartitions request, as the control shard needs it.
#[derive(Debug, Clone)]
pub struct PartitionsSpec {
    pub name: String,
    /// The partition count wanted (the new total).
    pub count: i32,
    /// Replicas of each new partition (cluster mode); `None` lets the broker place them.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub validate_only: bool,
}

/// One partition log as DescribeLogDirs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirPartition {
    pub topic: String,
    pub partition: i32,
    /// Logical bytes of its segments (what was appended, without the page padding).
    pub size_bytes: u64,
    /// Log end offset minus the high watermark (a follower: how far it is behind the
    /// leader's high watermark it last heard of; 0 on a single node).
    pub offset_lag: i64,
}

/// Who waits in a Fetch long-poll: a follower copies everything appended, a consumer only
/// what is below the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Consumer,
    Follower,
}

/// One partition's record batches of a Produce (a slice of the client's request buffer).
#[derive(Debug, Clone)]
pub struct ProduceAppend {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
}

/// A consumer's read of one partition: from `offset`, at most `max_bytes` (at least the first
/// batch when that is larger and `max_bytes` > 0).
#[derive(Debug, Clone)]
pub struct ConsumerRead {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: i32,
}

/// A piece of read data that can cross shards: memory, or a file range with its own
/// descriptor (so the receiving shard can splice it).
pub enum SendChunk {
    Memory(Bytes),
    File {
        file: std::fs::File,
        position: u64,
        len: u32,
    },
}

/// The result of reading one partition; `C` is a response part or a [`SendChunk`].
pub struct PartitionRead<C> {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub chunks: Vec<C>,
}

impl<C> PartitionRead<C> {
    pub fn error(error_code: i16) -> Self {
        PartitionRead {
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
        }
    }
}

/// The answer to a [`ShardRequest`].
pub enum ShardReply {
    /// Per topic, in request order: partitions created, or why not.
    Topics(TopicResults),
    Done,
    Appended(Vec<Result<AppendInfo, (i16, String)>>),
    Read(Vec<PartitionRead<SendChunk>>),
    /// `(epoch, end_offset)` of OffsetForLeaderEpoch, or an error code.
    EpochEnd(Result<(i32, i64), i16>),
    /// A follower's read and, when its log diverged, `(epoch, end_offset)`.
    FollowerRead(PartitionRead<SendChunk>, Option<(i32, i64)>),
    /// `(timestamp, offset)` or why not.
    Offset(Result<(i64, i64), (i16, String)>),
    Group(GroupAnswer),
    /// The log start offset after a DeleteRecords, or why not.
    LogStart(Result<i64, (i16, String)>),
    Producers(Result<Vec<crate::storage::ActiveProducer>, i16>),
    LogDirs(Vec<LogDirPartition>),
}

/// A group request on its way to the group's coordinator (possibly on another shard).
#[derive(Debug, Clone)]
pub enum GroupCall {
    Join(JoinGroupRequest),
    Sync(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveGroupRequest),
    Commit(OffsetCommitRequest),
    Fetch(OffsetFetchRequest),
    /// Answered by every shard for its own coordinators.
    List(ListGroupsRequest),
    Describe(String),
    Delete(String),
    OffsetDelete(crate::group::OffsetDeleteRequest),
}

/// The coordinator's answer to a [`GroupCall`].
#[derive(Debug)]
pub enum GroupAnswer {
    Done(Response),
    Fetched(OffsetFetchResponse),
    Listed(ListGroupsResponse),
    Described(DescribedGroup),
}

impl GroupCall {
    pub(super) fn group_id(&self) -> &str {
        match self {
            GroupCall::Join(r) => &r.group_id,
            GroupCall::Sync(r) => &r.group_id,
            GroupCall::Heartbeat(r) => &r.group_id,
            GroupCall::Leave(r) => &r.group_id,
            GroupCall::Commit(r) => &r.group_id,
            GroupCall::Fetch(r) => &r.group_id,
            GroupCall::List(_) => "",
            GroupCall::Describe(g) | GroupCall::Delete(g) => g,
            GroupCall::OffsetDelete(r) => &r.group_id,
        }
    }

    /// The answer when the call cannot reach a coordinator.
    pub fn error(&self, code: ErrorCode) -> GroupAnswer {
        let done = |r| GroupAnswer::Done(r);
        match self {
            GroupCall::Join(r) => done(Response::JoinGroup(JoinGroupResponse::error(
                code,
                &r.member_id,
            ))),
            GroupCall::Sync(_) => done(Response::SyncGroup(SyncGroupResponse::error(code))),
            GroupCall::Heartbeat(_) => {
                done(Response::Heartbeat(HeartbeatResponse { error_code: code }))
            }
            GroupCall::Leave(_) => done(Response::LeaveGroup(LeaveGroupResponse {
                error_code: code,
                members: Vec::new(),
            })),
            GroupCall::Commit(r) => {
                done(Response::OffsetCommit(OffsetCommitResponse::all(r, code)))
            }
            GroupCall::Fetch(_) => GroupAnswer::Fetched(OffsetFetchResponse {
                error_code: code,
                partitions: Vec::new(),
            }),
            GroupCall::List(_) => GroupAnswer::Listed(ListGroupsResponse {
                error_code: code,
                groups: Vec::new(),
            }),
            GroupCall::Describe(g) => GroupAnswer::Described(DescribedGroup {
                error_code: code,
                group_id: g.clone(),
                state: "",
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: Vec::new(),
            }),
            GroupCall::Delete(g) => done(Response::DeleteGroups(DeleteGroupsResponse {
                results: vec![(g.clone(), code)],
            })),
            GroupCall::OffsetDelete(_) => {
                done(Response::OffsetDelete(crate::group::OffsetDeleteResponse {
                    error_code: code,
                    partitions: Vec::new(),
                }))
            }
        }
    }
}
