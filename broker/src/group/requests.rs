//! Typed inputs and outputs of the group coordinator, one pair per Kafka group API.
//!
//! They carry what every wire version of the API needs, without the framing: the Kafka front
//! end decodes a request of any version into one of these, and encodes the response back in
//! the version asked for (dropping fields the version lacks). Mutating requests are answered
//! through [`Outputs`](super::Outputs), tagged with the [`RequestToken`] the shell chose,
//! because JoinGroup and SyncGroup answers come only when the rebalance completes and offset
//! commits only once their records are durable.

use super::error_code::ErrorCode;
use bytes::Bytes;

/// Chosen by the shell to match a deferred response to the request it parked.
pub type RequestToken = u64;

/// One protocol a joining member supports, in its preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinProtocol {
    pub name: String,
    pub metadata: Bytes,
}

/// JoinGroup (API 11), all versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGroupRequest {
    pub group_id: String,
    /// Empty on a member's first join.
    pub member_id: String,
    /// Static membership (KIP-345, v5+).
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<JoinProtocol>,
    pub session_timeout_ms: i32,
    /// v0 has none: pass the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// v8+ (KIP-800); informational.
    pub reason: Option<String>,
    /// KIP-394: true for JoinGroup v4+. A dynamic member joining with an empty member id is
    /// then given an id and MEMBER_ID_REQUIRED, and must join again with it.
    pub require_known_member_id: bool,
}

/// One member as the group leader sees it in the JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGroupResponse {
    pub error_code: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// v9+ (KIP-814): the static leader rejoined and must not recompute the assignment.
    pub skip_assignment: bool,
    pub member_id: String,
    /// Non-empty for the leader only.
    pub members: Vec<JoinGroupMember>,
}

impl JoinGroupResponse {
    pub fn error(error_code: ErrorCode, member_id: &str) -> Self {
        JoinGroupResponse {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// One member's assignment, as sent by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

/// SyncGroup (API 14), all versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    /// v5+; checked against the group's when present.
    pub protocol_name: Option<String>,
    /// Empty unless the sender is the leader.
    pub assignments: Vec<SyncAssignment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroupResponse {
    pub error_code: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncGroupResponse {
    pub fn error(error_code: ErrorCode) -> Self {
        SyncGroupResponse {
            error_code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Heartbeat (API 12), all versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error_code: ErrorCode,
}

/// One member leaving; v0-v2 requests carry exactly one with no instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub reason: Option<String>,
}

/// LeaveGroup (API 13), all versions (batched since v3, KIP-345).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveGroupMemberResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error_code: ErrorCode,
}

/// For v0-v2 the front end answers with the single member's error as the top-level error
/// when the top-level one is NONE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    pub error_code: ErrorCode,
    pub members: Vec<LeaveGroupMemberResult>,
}

/// One partition of an OffsetCommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// -1 when the client does not send it (v0-v5).
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Whether the broker's metadata knows this topic-partition. The coordinator does not
    /// see topic metadata; unknown partitions are answered UNKNOWN_TOPIC_OR_PARTITION and not
    /// stored.
    pub partition_exists: bool,
    /// OffsetCommit v1's explicit commit time; `None` (and every later version) stores the
    /// coordinator's clock. It only matters to retention of offsets of groups without members.
    pub commit_timestamp_ms: Option<i64>,
}

/// OffsetCommit (API 8), all versions. Generation -1 with an empty member id is a commit from
/// a client that does not use group management (manual assignment, admin tools): accepted
/// while the group has no members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<OffsetCommitPartition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: i32,
    pub error_code: ErrorCode,
}

/// Per-partition results in the order of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    pub partitions: Vec<PartitionResult>,
}

impl OffsetCommitResponse {
    /// Every partition of `request` refused with `code` (the whole commit was refused).
    pub fn all(request: &OffsetCommitRequest, code: ErrorCode) -> OffsetCommitResponse {
        OffsetCommitResponse {
            partitions: request
                .partitions
                .iter()
                .map(|p| PartitionResult {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error_code: code,
                })
                .collect(),
        }
    }
}

/// OffsetFetch (API 9) for one group (v8+ batches groups: call once per group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    /// `None` asks for every committed offset of the group (v2+).
    pub partitions: Option<Vec<(String, i32)>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error_code: ErrorCode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    pub error_code: ErrorCode,
    pub partitions: Vec<FetchedOffset>,
}

/// ListGroups (API 16). Filters are empty for "all"; states (v4+) and types (v5+) compare
/// case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListGroupsRequest {
    pub states_filter: Vec<String>,
    pub types_filter: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListGroupsResponse {
    pub error_code: ErrorCode,
    pub groups: Vec<ListedGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the selected protocol; empty unless the group is Stable.
    pub metadata: Bytes,
    /// Empty unless the group is Stable.
    pub assignment: Bytes,
}

/// DescribeGroups (API 15) answer for one group. An unknown group is described as Dead with
/// no error, as Kafka does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    pub error_code: ErrorCode,
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    /// The selected protocol when Stable, else empty.
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

/// DeleteGroups (API 42): one result per requested group, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteGroupsResponse {
    pub results: Vec<(String, ErrorCode)>,
}

/// OffsetDelete (API 47): committed offsets of one group to delete. The front end answers
/// partitions of unknown topics itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetDeleteRequest {
    pub group_id: String,
    pub partitions: Vec<(String, i32)>,
}

/// A group-level error (the partitions are then not answered one by one), else per
/// partition in request order: NONE (deleted, or nothing was committed) or
/// GROUP_SUBSCRIBED_TO_TOPIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetDeleteResponse {
    pub error_code: ErrorCode,
    pub partitions: Vec<PartitionResult>,
}

/// A response the shell must send for the request it parked under the same token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    DeleteGroups(DeleteGroupsResponse),
    OffsetDelete(OffsetDeleteResponse),
}
