//! Consumer groups: the group coordinator and the `__consumer_offsets` record formats.
//!
//! [`GroupCoordinator`] is a sans-IO state machine for the groups of one partition of
//! `__consumer_offsets` (Kafka's classic group protocol: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups). It takes
//! typed requests and the time, and hands back responses and records to append; the Kafka
//! front end decodes the wire, parks deferred requests, appends the records to the
//! partition's log and replays that log at start. [`placement`] maps a group to its partition
//! as Kafka does. Not in here: sockets, the log, the wire codec, partition assignment (the
//! group leader's client computes it). See docs/consumer-groups.md.

pub mod config;
pub mod coordinator;
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
pub use error_code::ErrorCode;
pub use metadata::{CommittedOffset, GroupState};
pub use placement::{partition_for_group, DEFAULT_OFFSETS_TOPIC_PARTITIONS, OFFSETS_TOPIC};
pub use records::{OffsetsKey, OffsetsRecord, RecordError};
pub use requests::*;
