//! Consumer groups: the group coordinator and the `__consumer_offsets` record formats.
//!
//! [`GroupCoordinator`] is a sans-IO state machine for the groups of one partition of
//! `__consumer_offsets` (Kafka's classic group protocol: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete). It takes
//! typed requests and the time, and hands back responses and records to append; the Kafka
//! front end decodes the wire, parks deferred requests, appends the records to the
//! partition's log and replays that log at start. [`placement`] maps a group to its partition
//! as Kafka does. Not in here: sockets, the log, the wire codec, partition assignment (the
//! group leader's client computes it). See docs/consumer-groups.md.
//!
//! How a shell drives one coordinator (the leader of partition `p` of `__consumer_offsets`):
//!
//! ```
//! use broker::group::*;
//! use bytes::Bytes;
//!
//! let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 0, 1, 0x5eed);
//! // At start: replay the partition's records in log order, then serve.
//! let log: Vec<OffsetsRecord> = Vec::new();
//! for record in &log {
//!     coordinator.replay(&record.key, record.value.as_deref()).expect("valid record");
//! }
//! coordinator.finish_loading(0);
//!
//! // A JoinGroup v5 arrives on a connection; the shell picks token 1 for it.
//! let mut out = Outputs::default();
//! let join = JoinGroupRequest {
//!     group_id: "g".into(),
//!     member_id: String::new(),
//!     group_instance_id: None,
//!     protocol_type: "consumer".into(),
//!     protocols: vec![JoinProtocol { name: "range".into(), metadata: Bytes::new() }],
//!     session_timeout_ms: 45_000,
//!     rebalance_timeout_ms: 300_000,
//!     client_id: "rdkafka".into(),
//!     client_host: "/127.0.0.1".into(),
//!     reason: None,
//!     require_known_member_id: true, // JoinGroup v4+
//! };
//! coordinator.join_group(1, join, 0, &mut out);
//! // Send what is answered, append what must be stored (then report it), re-arm the timer.
//! let (token, response) = &out.responses[0];
//! assert_eq!(*token, 1);
//! assert!(matches!(response, Response::JoinGroup(r) if r.error_code == error_code::MEMBER_ID_REQUIRED));
//! let appends: Vec<Append> = std::mem::take(&mut out.appends);
//! for append in appends {
//!     // ... write append.records to the log, then:
//!     coordinator.append_completed(append.id, Ok(()), 0, &mut out);
//! }
//! if let Some(at_ms) = coordinator.next_deadline_ms() {
//!     // ... at `at_ms`: coordinator.tick(at_ms, &mut out) and handle `out` the same way.
//!     assert!(at_ms > 0);
//! }
//! ```

pub mod config;
pub mod coordinator;
pub mod coordinator_set;
pub mod error_code;
mod member;
pub mod metadata;
pub mod placement;
pub mod records;
pub mod requests;

#[cfg(test)]
mod coordinator_tests;
#[cfg(test)]
mod simulation_tests;

pub use config::GroupConfig;
pub use coordinator::{Append, AppendId, CoordinatorStatus, GroupCoordinator, Outputs};
pub use coordinator_set::CoordinatorSet;
pub use error_code::ErrorCode;
pub use metadata::{CommittedOffset, GroupState};
pub use placement::{partition_for_group, DEFAULT_OFFSETS_TOPIC_PARTITIONS, OFFSETS_TOPIC};
pub use records::{OffsetsKey, OffsetsRecord, RecordError};
pub use requests::*;
