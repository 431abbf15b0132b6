//! The layout of every request body this broker decodes with `kafka-protocol`: fields in wire
//! order, the versions that carry each one, and the tagged fields its decoder knows. The
//! pre-pass ([`super::precheck`]) walks a body with these before the decoder sees it.
//!
//! Written from the decoders kafka-protocol 0.18 generated from Kafka's message definitions
//! (`clients/src/main/resources/common/message/*Request.json`): a field is read only in the
//! versions listed, strings, bytes and arrays are compact (varint lengths) from the message's
//! first flexible version on, and every struct of a flexible version ends with tagged fields.
//! Nullability is left out: a null where the decoder wants a value is an error there, and it
//! occupies the same bytes either way. `tests/request_precheck.rs` checks each table against
//! the decoder, version by version (a body built from the table decodes to its last byte).
//! ApiVersions is absent: its body is never decoded.

use kafka_protocol::messages::ApiKey;

/// The wire type of a field.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Fixed width, in bytes: bool and int8 1, int16 2, int32 4, int64 8, uuid 16.
    Fixed(usize),
    /// String: i16 length (-1 null), or from the flexible versions on a varint length + 1.
    String,
    /// Bytes and records: i32 length (-1 null), or a varint length + 1.
    Bytes,
    /// Array: i32 count (-1 null), or a varint count + 1.
    Array(&'static Kind),
    Struct(&'static [Field]),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// The versions that carry the field, inclusive.
    pub min_version: i16,
    pub max_version: i16,
    /// A tagged field's tag: it is read in the tagged fields at the end of its struct.
    pub tag: Option<u32>,
}

impl Field {
    pub const fn since(self, version: i16) -> Field {
        Field {
            min_version: version,
            ..self
        }
    }

    pub const fn until(self, version: i16) -> Field {
        Field {
            max_version: version,
            ..self
        }
    }

    pub const fn tagged(self, tag: u32) -> Field {
        Field {
            tag: Some(tag),
            ..self
        }
    }

    pub fn in_version(&self, version: i16) -> bool {
        (self.min_version..=self.max_version).contains(&version)
    }
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        min_version: 0,
        max_version: i16::MAX,
        tag: None,
    }
}

/// One request body.
#[derive(Debug)]
pub struct Schema {
    pub api_key: ApiKey,
    /// The versions kafka-protocol decodes; others are refused without reading.
    pub min_version: i16,
    pub max_version: i16,
    /// First flexible version (compact lengths, tagged fields); `i16::MAX` for none.
    pub flexible_from: i16,
    pub fields: &'static [Field],
}

const BOOL: Kind = Kind::Fixed(1);
const INT8: Kind = Kind::Fixed(1);
const INT16: Kind = Kind::Fixed(2);
const INT32: Kind = Kind::Fixed(4);
const INT64: Kind = Kind::Fixed(8);
const UUID: Kind = Kind::Fixed(16);
const STRING: Kind = Kind::String;
const BYTES: Kind = Kind::Bytes;
const INT32S: Kind = Kind::Array(&INT32);
const STRINGS: Kind = Kind::Array(&STRING);

// Produce v3-13, flexible from 9.
const PRODUCE_PARTITION: Kind = Kind::Struct(&[f("index", INT32), f("records", BYTES)]);
const PRODUCE_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING).until(12),
    f("topic_id", UUID).since(13),
    f("partition_data", Kind::Array(&PRODUCE_PARTITION)),
]);
const PRODUCE: &[Field] = &[
    f("transactional_id", STRING),
    f("acks", INT16),
    f("timeout_ms", INT32),
    f("topic_data", Kind::Array(&PRODUCE_TOPIC)),
];

// Fetch v4-18, flexible from 12.
const FETCH_PARTITION: Kind = Kind::Struct(&[
    f("partition", INT32),
    f("current_leader_epoch", INT32).since(9),
    f("fetch_offset", INT64),
    f("last_fetched_epoch", INT32).since(12),
    f("log_start_offset", INT64).since(5),
    f("partition_max_bytes", INT32),
    f("replica_directory_id", UUID).since(17).tagged(0),
    f("high_watermark", INT64).since(18).tagged(1),
]);
const FETCH_TOPIC: Kind = Kind::Struct(&[
    f("topic", STRING).until(12),
    f("topic_id", UUID).since(13),
    f("partitions", Kind::Array(&FETCH_PARTITION)),
]);
const FETCH_FORGOTTEN_TOPIC: Kind = Kind::Struct(&[
    f("topic", STRING).since(7).until(12),
    f("topic_id", UUID).since(13),
    f("partitions", INT32S).since(7),
]);
const FETCH_REPLICA_STATE: Kind = Kind::Struct(&[
    f("replica_id", INT32).since(15),
    f("replica_epoch", INT64).since(15),
]);
const FETCH: &[Field] = &[
    f("cluster_id", STRING).since(12).tagged(0),
    f("replica_id", INT32).until(14),
    f("replica_state", FETCH_REPLICA_STATE).since(15).tagged(1),
    f("max_wait_ms", INT32),
    f("min_bytes", INT32),
    f("max_bytes", INT32),
    f("isolation_level", INT8),
    f("session_id", INT32).since(7),
    f("session_epoch", INT32).since(7),
    f("topics", Kind::Array(&FETCH_TOPIC)),
    f("forgotten_topics_data", Kind::Array(&FETCH_FORGOTTEN_TOPIC)).since(7),
    f("rack_id", STRING).since(11),
];

// ListOffsets v1-10, flexible from 6.
const LIST_OFFSETS_PARTITION: Kind = Kind::Struct(&[
    f("partition_index", INT32),
    f("current_leader_epoch", INT32).since(4),
    f("timestamp", INT64),
]);
const LIST_OFFSETS_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING),
    f("partitions", Kind::Array(&LIST_OFFSETS_PARTITION)),
]);
const LIST_OFFSETS: &[Field] = &[
    f("replica_id", INT32),
    f("isolation_level", INT8).since(2),
    f("topics", Kind::Array(&LIST_OFFSETS_TOPIC)),
    f("timeout_ms", INT32).since(10),
];

// Metadata v0-13, flexible from 9.
const METADATA_TOPIC: Kind = Kind::Struct(&[f("topic_id", UUID).since(10), f("name", STRING)]);
const METADATA: &[Field] = &[
    f("topics", Kind::Array(&METADATA_TOPIC)),
    f("allow_auto_topic_creation", BOOL).since(4),
    f("include_cluster_authorized_operations", BOOL)
        .since(8)
        .until(10),
    f("include_topic_authorized_operations", BOOL).since(8),
];

// CreateTopics v2-7, flexible from 5.
const CREATE_TOPICS_ASSIGNMENT: Kind =
    Kind::Struct(&[f("partition_index", INT32), f("broker_ids", INT32S)]);
const CREATE_TOPICS_CONFIG: Kind = Kind::Struct(&[f("name", STRING), f("value", STRING)]);
const CREATE_TOPICS_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING),
    f("num_partitions", INT32),
    f("replication_factor", INT16),
    f("assignments", Kind::Array(&CREATE_TOPICS_ASSIGNMENT)),
    f("configs", Kind::Array(&CREATE_TOPICS_CONFIG)),
]);
const CREATE_TOPICS: &[Field] = &[
    f("topics", Kind::Array(&CREATE_TOPICS_TOPIC)),
    f("timeout_ms", INT32),
    f("validate_only", BOOL),
];

// DeleteTopics v1-6, flexible from 4.
const DELETE_TOPICS_STATE: Kind =
    Kind::Struct(&[f("name", STRING).since(6), f("topic_id", UUID).since(6)]);
const DELETE_TOPICS: &[Field] = &[
    f("topics", Kind::Array(&DELETE_TOPICS_STATE)).since(6),
    f("topic_names", STRINGS).until(5),
    f("timeout_ms", INT32),
];

// DescribeConfigs v1-4, flexible from 4.
const DESCRIBE_CONFIGS_RESOURCE: Kind = Kind::Struct(&[
    f("resource_type", INT8),
    f("resource_name", STRING),
    f("configuration_keys", STRINGS),
]);
const DESCRIBE_CONFIGS: &[Field] = &[
    f("resources", Kind::Array(&DESCRIBE_CONFIGS_RESOURCE)),
    f("include_synonyms", BOOL),
    f("include_documentation", BOOL).since(3),
];

// FindCoordinator v0-6, flexible from 3.
const FIND_COORDINATOR: &[Field] = &[
    f("key", STRING).until(3),
    f("key_type", INT8).since(1),
    f("coordinator_keys", STRINGS).since(4),
];

// JoinGroup v0-9, flexible from 6.
const JOIN_GROUP_PROTOCOL: Kind = Kind::Struct(&[f("name", STRING), f("metadata", BYTES)]);
const JOIN_GROUP: &[Field] = &[
    f("group_id", STRING),
    f("session_timeout_ms", INT32),
    f("rebalance_timeout_ms", INT32).since(1),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(5),
    f("protocol_type", STRING),
    f("protocols", Kind::Array(&JOIN_GROUP_PROTOCOL)),
    f("reason", STRING).since(8),
];

// SyncGroup v0-5, flexible from 4.
const SYNC_GROUP_ASSIGNMENT: Kind = Kind::Struct(&[f("member_id", STRING), f("assignment", BYTES)]);
const SYNC_GROUP: &[Field] = &[
    f("group_id", STRING),
    f("generation_id", INT32),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(3),
    f("protocol_type", STRING).since(5),
    f("protocol_name", STRING).since(5),
    f("assignments", Kind::Array(&SYNC_GROUP_ASSIGNMENT)),
];

// Heartbeat v0-4, flexible from 4.
const HEARTBEAT: &[Field] = &[
    f("group_id", STRING),
    f("generation_id", INT32),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(3),
];

// LeaveGroup v0-5, flexible from 4.
const LEAVE_GROUP_MEMBER: Kind = Kind::Struct(&[
    f("member_id", STRING).since(3),
    f("group_instance_id", STRING).since(3),
    f("reason", STRING).since(5),
]);
const LEAVE_GROUP: &[Field] = &[
    f("group_id", STRING),
    f("member_id", STRING).until(2),
    f("members", Kind::Array(&LEAVE_GROUP_MEMBER)).since(3),
];

// OffsetCommit v2-9, flexible from 8 (v0-1: `offsets_legacy`).
const OFFSET_COMMIT_PARTITION: Kind = Kind::Struct(&[
    f("partition_index", INT32),
    f("committed_offset", INT64),
    f("committed_leader_epoch", INT32).since(6),
    f("committed_metadata", STRING),
]);
const OFFSET_COMMIT_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING),
    f("partitions", Kind::Array(&OFFSET_COMMIT_PARTITION)),
]);
const OFFSET_COMMIT: &[Field] = &[
    f("group_id", STRING),
    f("generation_id_or_member_epoch", INT32),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(7),
    f("retention_time_ms", INT64).until(4),
    f("topics", Kind::Array(&OFFSET_COMMIT_TOPIC)),
];

// OffsetFetch v1-9, flexible from 6 (v0: `offsets_legacy`).
const OFFSET_FETCH_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING).until(7),
    f("partition_indexes", INT32S).until(7),
]);
const OFFSET_FETCH_GROUP_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING).since(8),
    f("partition_indexes", INT32S).since(8),
]);
const OFFSET_FETCH_GROUP: Kind = Kind::Struct(&[
    f("group_id", STRING).since(8),
    f("member_id", STRING).since(9),
    f("member_epoch", INT32).since(9),
    f("topics", Kind::Array(&OFFSET_FETCH_GROUP_TOPIC)).since(8),
]);
const OFFSET_FETCH: &[Field] = &[
    f("group_id", STRING).until(7),
    f("topics", Kind::Array(&OFFSET_FETCH_TOPIC)).until(7),
    f("groups", Kind::Array(&OFFSET_FETCH_GROUP)).since(8),
    f("require_stable", BOOL).since(7),
];

// ListGroups v0-5, flexible from 3.
const LIST_GROUPS: &[Field] = &[
    f("states_filter", STRINGS).since(4),
    f("types_filter", STRINGS).since(5),
];

// DescribeGroups v0-6, flexible from 5.
const DESCRIBE_GROUPS: &[Field] = &[
    f("groups", STRINGS),
    f("include_authorized_operations", BOOL).since(3),
];

// DeleteGroups v0-2, flexible from 2.
const DELETE_GROUPS: &[Field] = &[f("groups_names", STRINGS)];

// InitProducerId v0-5, flexible from 2.
const INIT_PRODUCER_ID: &[Field] = &[
    f("transactional_id", STRING),
    f("transaction_timeout_ms", INT32),
    f("producer_id", INT64).since(3),
    f("producer_epoch", INT16).since(3),
];

// DescribeCluster v0-2, flexible from 0.
const DESCRIBE_CLUSTER: &[Field] = &[
    f("include_cluster_authorized_operations", BOOL),
    f("endpoint_type", INT8).since(1),
    f("include_fenced_brokers", BOOL).since(2),
];

// OffsetForLeaderEpoch v2-4, flexible from 4.
const OFFSET_FOR_LEADER_EPOCH_PARTITION: Kind = Kind::Struct(&[
    f("partition", INT32),
    f("current_leader_epoch", INT32),
    f("leader_epoch", INT32),
]);
const OFFSET_FOR_LEADER_EPOCH_TOPIC: Kind = Kind::Struct(&[
    f("topic", STRING),
    f(
        "partitions",
        Kind::Array(&OFFSET_FOR_LEADER_EPOCH_PARTITION),
    ),
]);
const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    f("replica_id", INT32).since(3),
    f("topics", Kind::Array(&OFFSET_FOR_LEADER_EPOCH_TOPIC)),
];

const fn schema(
    api_key: ApiKey,
    (min_version, max_version): (i16, i16),
    flexible_from: i16,
    fields: &'static [Field],
) -> Schema {
    Schema {
        api_key,
        min_version,
        max_version,
        flexible_from,
        fields,
    }
}

/// Every request body the broker decodes with kafka-protocol.
pub const SCHEMAS: &[Schema] = &[
    schema(ApiKey::Produce, (3, 13), 9, PRODUCE),
    schema(ApiKey::Fetch, (4, 18), 12, FETCH),
    schema(ApiKey::ListOffsets, (1, 10), 6, LIST_OFFSETS),
    schema(ApiKey::Metadata, (0, 13), 9, METADATA),
    schema(ApiKey::CreateTopics, (2, 7), 5, CREATE_TOPICS),
    schema(ApiKey::DeleteTopics, (1, 6), 4, DELETE_TOPICS),
    schema(ApiKey::DescribeConfigs, (1, 4), 4, DESCRIBE_CONFIGS),
    schema(ApiKey::FindCoordinator, (0, 6), 3, FIND_COORDINATOR),
    schema(ApiKey::JoinGroup, (0, 9), 6, JOIN_GROUP),
    schema(ApiKey::SyncGroup, (0, 5), 4, SYNC_GROUP),
    schema(ApiKey::Heartbeat, (0, 4), 4, HEARTBEAT),
    schema(ApiKey::LeaveGroup, (0, 5), 4, LEAVE_GROUP),
    schema(ApiKey::OffsetCommit, (2, 9), 8, OFFSET_COMMIT),
    schema(ApiKey::OffsetFetch, (1, 9), 6, OFFSET_FETCH),
    schema(ApiKey::ListGroups, (0, 5), 3, LIST_GROUPS),
    schema(ApiKey::DescribeGroups, (0, 6), 5, DESCRIBE_GROUPS),
    schema(ApiKey::DeleteGroups, (0, 2), 2, DELETE_GROUPS),
    schema(ApiKey::InitProducerId, (0, 5), 2, INIT_PRODUCER_ID),
    schema(ApiKey::DescribeCluster, (0, 2), 0, DESCRIBE_CLUSTER),
    schema(
        ApiKey::OffsetForLeaderEpoch,
        (2, 4),
        4,
        OFFSET_FOR_LEADER_EPOCH,
    ),
    schema(ApiKey::SaslHandshake, (0, 1), i16::MAX, SASL_HANDSHAKE),
    schema(ApiKey::SaslAuthenticate, (0, 2), 2, SASL_AUTHENTICATE),
    schema(
        ApiKey::DescribeUserScramCredentials,
        (0, 0),
        0,
        DESCRIBE_USER_SCRAM_CREDENTIALS,
    ),
    schema(
        ApiKey::AlterUserScramCredentials,
        (0, 0),
        0,
        ALTER_USER_SCRAM_CREDENTIALS,
    ),
    schema(ApiKey::CreateAcls, (1, 3), 2, CREATE_ACLS),
    schema(ApiKey::DescribeAcls, (1, 3), 2, ACL_FILTER_FIELDS),
    schema(ApiKey::DeleteAcls, (1, 3), 2, DELETE_ACLS),
    schema(ApiKey::DeleteRecords, (0, 2), 2, DELETE_RECORDS),
    schema(ApiKey::OffsetDelete, (0, 0), i16::MAX, OFFSET_DELETE),
    schema(ApiKey::DescribeProducers, (0, 0), 0, DESCRIBE_PRODUCERS),
    schema(ApiKey::AlterConfigs, (0, 2), 2, ALTER_CONFIGS),
    schema(
        ApiKey::IncrementalAlterConfigs,
        (0, 1),
        1,
        INCREMENTAL_ALTER_CONFIGS,
    ),
    schema(ApiKey::CreatePartitions, (0, 3), 2, CREATE_PARTITIONS),
    schema(ApiKey::DescribeLogDirs, (1, 4), 2, DESCRIBE_LOG_DIRS),
    schema(ApiKey::ElectLeaders, (0, 2), 2, ELECT_LEADERS),
    schema(
        ApiKey::AlterPartitionReassignments,
        (0, 1),
        0,
        ALTER_PARTITION_REASSIGNMENTS,
    ),
    schema(
        ApiKey::ListPartitionReassignments,
        (0, 0),
        0,
        LIST_PARTITION_REASSIGNMENTS,
    ),
];

// ElectLeaders v0-2, flexible from 2.
const ELECT_LEADERS: &[Field] = &[
    f("election_type", INT8).since(1),
    f(
        "topic_partitions",
        Kind::Array(&Kind::Struct(&[
            f("topic", STRING),
            f("partitions", INT32S),
        ])),
    ),
    f("timeout_ms", INT32),
];

// AlterPartitionReassignments v0-1 and ListPartitionReassignments v0, flexible from 0.
const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    f("timeout_ms", INT32),
    f("allow_replication_factor_change", BOOL).since(1),
    f(
        "topics",
        Kind::Array(&Kind::Struct(&[
            f("name", STRING),
            f(
                "partitions",
                Kind::Array(&Kind::Struct(&[
                    f("partition_index", INT32),
                    f("replicas", INT32S),
                ])),
            ),
        ])),
    ),
];
const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[
    f("timeout_ms", INT32),
    f(
        "topics",
        Kind::Array(&Kind::Struct(&[
            f("name", STRING),
            f("partition_indexes", INT32S),
        ])),
    ),
];

// CreateAcls, DescribeAcls, DeleteAcls v1-3, flexible from 2.
const CREATE_ACLS: &[Field] = &[f(
    "creations",
    Kind::Array(&Kind::Struct(&[
        f("resource_type", INT8),
        f("resource_name", STRING),
        f("resource_pattern_type", INT8),
        f("principal", STRING),
        f("host", STRING),
        f("operation", INT8),
        f("permission_type", INT8),
    ])),
)];
const ACL_FILTER_FIELDS: &[Field] = &[
    f("resource_type_filter", INT8),
    f("resource_name_filter", STRING),
    f("pattern_type_filter", INT8),
    f("principal_filter", STRING),
    f("host_filter", STRING),
    f("operation", INT8),
    f("permission_type", INT8),
];
const DELETE_ACLS: &[Field] = &[f("filters", Kind::Array(&Kind::Struct(ACL_FILTER_FIELDS)))];

// SaslHandshake v0-1, never flexible; SaslAuthenticate v0-2, flexible from 2.
const SASL_HANDSHAKE: &[Field] = &[f("mechanism", STRING)];
const SASL_AUTHENTICATE: &[Field] = &[f("auth_bytes", BYTES)];

// DescribeUserScramCredentials v0 and AlterUserScramCredentials v0, flexible from 0.
const SCRAM_USER_NAME: Kind = Kind::Struct(&[f("name", STRING)]);
const DESCRIBE_USER_SCRAM_CREDENTIALS: &[Field] = &[f("users", Kind::Array(&SCRAM_USER_NAME))];
const SCRAM_CREDENTIAL_DELETION: Kind = Kind::Struct(&[f("name", STRING), f("mechanism", INT8)]);
const SCRAM_CREDENTIAL_UPSERTION: Kind = Kind::Struct(&[
    f("name", STRING),
    f("mechanism", INT8),
    f("iterations", INT32),
    f("salt", BYTES),
    f("salted_password", BYTES),
]);
const ALTER_USER_SCRAM_CREDENTIALS: &[Field] = &[
    f("deletions", Kind::Array(&SCRAM_CREDENTIAL_DELETION)),
    f("upsertions", Kind::Array(&SCRAM_CREDENTIAL_UPSERTION)),
];

// DeleteRecords v0-2, flexible from 2.
const DELETE_RECORDS_PARTITION: Kind =
    Kind::Struct(&[f("partition_index", INT32), f("offset", INT64)]);
const DELETE_RECORDS_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING),
    f("partitions", Kind::Array(&DELETE_RECORDS_PARTITION)),
]);
const DELETE_RECORDS: &[Field] = &[
    f("topics", Kind::Array(&DELETE_RECORDS_TOPIC)),
    f("timeout_ms", INT32),
];

// OffsetDelete v0, never flexible.
const OFFSET_DELETE_PARTITION: Kind = Kind::Struct(&[f("partition_index", INT32)]);
const OFFSET_DELETE_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING),
    f("partitions", Kind::Array(&OFFSET_DELETE_PARTITION)),
]);
// DescribeProducers v0, flexible from 0.
const DESCRIBE_PRODUCERS_TOPIC: Kind =
    Kind::Struct(&[f("name", STRING), f("partition_indexes", INT32S)]);
const DESCRIBE_PRODUCERS: &[Field] = &[f("topics", Kind::Array(&DESCRIBE_PRODUCERS_TOPIC))];

const OFFSET_DELETE: &[Field] = &[
    f("group_id", STRING),
    f("topics", Kind::Array(&OFFSET_DELETE_TOPIC)),
];

// AlterConfigs v0-2, flexible from 2.
const ALTER_CONFIGS_CONFIG: Kind = Kind::Struct(&[f("name", STRING), f("value", STRING)]);
const ALTER_CONFIGS_RESOURCE: Kind = Kind::Struct(&[
    f("resource_type", INT8),
    f("resource_name", STRING),
    f("configs", Kind::Array(&ALTER_CONFIGS_CONFIG)),
]);
const ALTER_CONFIGS: &[Field] = &[
    f("resources", Kind::Array(&ALTER_CONFIGS_RESOURCE)),
    f("validate_only", BOOL),
];

// IncrementalAlterConfigs v0-1, flexible from 1.
const INCREMENTAL_ALTER_CONFIGS_CONFIG: Kind = Kind::Struct(&[
    f("name", STRING),
    f("config_operation", INT8),
    f("value", STRING),
]);
const INCREMENTAL_ALTER_CONFIGS_RESOURCE: Kind = Kind::Struct(&[
    f("resource_type", INT8),
    f("resource_name", STRING),
    f("configs", Kind::Array(&INCREMENTAL_ALTER_CONFIGS_CONFIG)),
]);
const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f(
        "resources",
        Kind::Array(&INCREMENTAL_ALTER_CONFIGS_RESOURCE),
    ),
    f("validate_only", BOOL),
];

// CreatePartitions v0-3, flexible from 2.
const CREATE_PARTITIONS_ASSIGNMENT: Kind = Kind::Struct(&[f("broker_ids", INT32S)]);
const CREATE_PARTITIONS_TOPIC: Kind = Kind::Struct(&[
    f("name", STRING),
    f("count", INT32),
    f("assignments", Kind::Array(&CREATE_PARTITIONS_ASSIGNMENT)),
]);
const CREATE_PARTITIONS: &[Field] = &[
    f("topics", Kind::Array(&CREATE_PARTITIONS_TOPIC)),
    f("timeout_ms", INT32),
    f("validate_only", BOOL),
];

// DescribeLogDirs v1-4, flexible from 2.
const DESCRIBE_LOG_DIRS_TOPIC: Kind = Kind::Struct(&[f("topic", STRING), f("partitions", INT32S)]);
const DESCRIBE_LOG_DIRS: &[Field] = &[f("topics", Kind::Array(&DESCRIBE_LOG_DIRS_TOPIC))];

/// The layout of `api_key`'s request body, if the broker decodes it with kafka-protocol.
pub fn find(api_key: ApiKey) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.api_key == api_key)
}
