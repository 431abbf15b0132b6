//! Kafka error codes the group coordinator answers with.
//!
//! They are the wire values (`i16`) so the Kafka front end copies them into responses as they
//! are; names follow `org.apache.kafka.common.protocol.Errors`.

/// A Kafka protocol error code as it travels on the wire.
pub type ErrorCode = i16;

pub const NONE: ErrorCode = 0;
pub const UNKNOWN_SERVER_ERROR: ErrorCode = -1;
pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = 3;
pub const INVALID_FETCH_SIZE: ErrorCode = 4;
pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = 6;
pub const REQUEST_TIMED_OUT: ErrorCode = 7;
pub const MESSAGE_TOO_LARGE: ErrorCode = 10;
pub const OFFSET_METADATA_TOO_LARGE: ErrorCode = 12;
pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode = 14;
pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = 15;
pub const NOT_COORDINATOR: ErrorCode = 16;
pub const RECORD_LIST_TOO_LARGE: ErrorCode = 18;
pub const NOT_ENOUGH_REPLICAS: ErrorCode = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode = 20;
pub const ILLEGAL_GENERATION: ErrorCode = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode = 23;
pub const INVALID_GROUP_ID: ErrorCode = 24;
pub const UNKNOWN_MEMBER_ID: ErrorCode = 25;
pub const INVALID_SESSION_TIMEOUT: ErrorCode = 26;
pub const REBALANCE_IN_PROGRESS: ErrorCode = 27;
pub const INVALID_COMMIT_OFFSET_SIZE: ErrorCode = 28;
pub const KAFKA_STORAGE_ERROR: ErrorCode = 56;
pub const NON_EMPTY_GROUP: ErrorCode = 68;
pub const GROUP_ID_NOT_FOUND: ErrorCode = 69;
pub const MEMBER_ID_REQUIRED: ErrorCode = 79;
pub const GROUP_MAX_SIZE_REACHED: ErrorCode = 81;
pub const FENCED_INSTANCE_ID: ErrorCode = 82;
pub const GROUP_SUBSCRIBED_TO_TOPIC: ErrorCode = 86;

/// What a failed append of group metadata means to the member waiting on it (Kafka's
/// `GroupMetadataManager.storeGroup` mapping): log-level failures become coordinator errors
/// so the client rediscovers the coordinator and retries instead of giving up.
pub fn group_store_error(append_error: ErrorCode) -> ErrorCode {
    match append_error {
        UNKNOWN_TOPIC_OR_PARTITION
        | NOT_ENOUGH_REPLICAS
        | NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | REQUEST_TIMED_OUT => COORDINATOR_NOT_AVAILABLE,
        NOT_LEADER_OR_FOLLOWER | KAFKA_STORAGE_ERROR => NOT_COORDINATOR,
        MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE | INVALID_FETCH_SIZE => UNKNOWN_SERVER_ERROR,
        other => other,
    }
}

/// The same mapping for a failed append of offset commits (Kafka's `storeOffsets`): an
/// oversized commit is the client's fault and says so.
pub fn offset_store_error(append_error: ErrorCode) -> ErrorCode {
    match append_error {
        MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE | INVALID_FETCH_SIZE => {
            INVALID_COMMIT_OFFSET_SIZE
        }
        other => group_store_error(other),
    }
}
