//! Settings of the group coordinator, with Kafka's names in the docs and our defaults.

/// Group coordinator settings. Every field has a default (see [`GroupConfig::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Kafka's `group.initial.rebalance.delay.ms` (KIP-134): how long the first rebalance of
    /// an empty group waits for more members before completing; each member arriving in that
    /// window extends it by the same amount, up to the members' rebalance timeout. Default
    /// 3000 ms, as Kafka: consumers started together (a deployment, a test's three consumers)
    /// land in one generation instead of one rebalance each. Set 0 to complete as soon as all
    /// known members have joined (a lone consumer then starts at once).
    pub initial_rebalance_delay_ms: u64,
    /// Kafka's `group.min.session.timeout.ms`; a JoinGroup asking for less is refused with
    /// INVALID_SESSION_TIMEOUT. Default 6000 ms.
    pub min_session_timeout_ms: i32,
    /// Kafka's `group.max.session.timeout.ms`. Default 1 800 000 ms (30 min).
    pub max_session_timeout_ms: i32,
    /// How long a new member may wait in a JoinGroup before it is dropped (Kafka's fixed
    /// `NewMemberJoinTimeoutMs`): a client that gave up and retried would otherwise leave a
    /// defunct member behind for the whole rebalance. Default 300 000 ms.
    pub new_member_join_timeout_ms: u64,
    /// Kafka's `group.max.size`; JoinGroup beyond it gets GROUP_MAX_SIZE_REACHED. Kafka's
    /// default is unbounded; ours is 1000 so one group cannot exhaust a shard.
    pub max_members_per_group: usize,
    /// Groups one coordinator (one partition of `__consumer_offsets`) holds; a request that
    /// would create one more gets COORDINATOR_NOT_AVAILABLE. Default 100 000.
    pub max_groups: usize,
    /// Kafka's `offset.metadata.max.bytes`; longer commit metadata gets
    /// OFFSET_METADATA_TOO_LARGE. Default 4096.
    pub max_offset_metadata_bytes: usize,
    /// Kafka's `offsets.retention.minutes` (KIP-211), in ms: offsets of a group empty for
    /// this long (or, for groups that never had members, committed this long ago) are
    /// deleted. Default 7 days, as Kafka.
    pub offsets_retention_ms: u64,
    /// Kafka's `offsets.retention.check.interval.ms`: how often expired offsets are looked
    /// for. Default 600 000 ms.
    pub offsets_retention_check_interval_ms: u64,
    /// Kafka's `offsets.commit.timeout.ms`: longest an OffsetCommit waits for its records to
    /// be stored before it is answered REQUEST_TIMED_OUT (the records still count if they
    /// land later). A member's commit waits at most half its session timeout: answers on a
    /// connection go in request order, so a parked commit holds back the member's heartbeat
    /// answers, and librdkafka gives up its own membership when it sees no heartbeat answer
    /// for a session timeout. Default 5000 ms, as Kafka.
    pub offsets_commit_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            new_member_join_timeout_ms: 300_000,
            max_members_per_group: 1000,
            max_groups: 100_000,
            max_offset_metadata_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offsets_commit_timeout_ms: 5000,
        }
    }
}
