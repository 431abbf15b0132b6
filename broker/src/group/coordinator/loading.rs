//! Loading and leaving a partition of `__consumer_offsets`: the records replayed at start
//! become groups and offsets ([`GroupCoordinator::replay`], [`GroupCoordinator::finish_loading`]);
//! at resignation every parked request is answered NOT_COORDINATOR.

use super::*;

impl GroupCoordinator {
    /// Applies one record of this partition of `__consumer_offsets`, in log order, while
    /// loading. An error names what is wrong inside the key or value; the shell adds the log
    /// offset, reports it, and may skip the record.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RecordError> {
        match OffsetsKey::decode(key)? {
            OffsetsKey::OffsetCommit {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => {
                    let v = OffsetCommitValue::decode(v)?;
                    self.load.offsets.entry(group).or_default().insert(
                        (topic, partition),
                        CommittedOffset {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata,
                            commit_timestamp_ms: v.commit_timestamp_ms,
                        },
                    );
                }
                None => {
                    if let Some(offsets) = self.load.offsets.get_mut(&group) {
                        offsets.remove(&(topic, partition));
                    }
                }
            },
            OffsetsKey::GroupMetadata { group } => match value {
                Some(v) => {
                    let v = GroupMetadataValue::decode(v)?;
                    self.load.groups.insert(group, v);
                }
                None => {
                    self.load.groups.remove(&group);
                }
            },
        }
        Ok(())
    }

    /// Ends loading: rebuilds the groups from what was replayed and starts serving. Groups
    /// come back in their last stored generation; members stored with them get a fresh
    /// session from `now_ms` (those that do not heartbeat again expire, as in Kafka).
    pub fn finish_loading(&mut self, now_ms: u64) {
        let load = std::mem::take(&mut self.load);
        let mut offsets = load.offsets;
        for (group_id, value) in load.groups {
            let mut g = GroupMetadata::new(&group_id, now_ms);
            g.generation_id = value.generation;
            g.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
            g.protocol_name = value.protocol.clone();
            if value.current_state_timestamp_ms >= 0 {
                g.state_timestamp_ms = value.current_state_timestamp_ms;
            }
            for m in value.members {
                let member = Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![JoinProtocol {
                        name: value.protocol.clone().unwrap_or_default(),
                        metadata: m.subscription,
                    }],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    is_new: false,
                    session_deadline_ms: None,
                };
                g.add(member);
            }
            if !g.members.is_empty() {
                // A stored generation with members was stable when written (it is written
                // when the leader's assignment is stored).
                g.state = GroupState::Stable;
                g.leader_id = value
                    .leader
                    .filter(|l| g.members.contains_key(l))
                    .or_else(|| g.members.keys().next().cloned());
            }
            g.offsets = offsets.remove(&group_id).unwrap_or_default();
            let ids: Vec<String> = g.members.keys().cloned().collect();
            for id in ids {
                self.reset_session(&mut g, &id, now_ms);
            }
            self.groups.insert(group_id, g);
        }
        // Offsets of groups that never used group management (or whose metadata was
        // deleted without their offsets) make Empty groups.
        for (group_id, group_offsets) in offsets {
            if group_offsets.is_empty() {
                continue;
            }
            let mut g = GroupMetadata::new(&group_id, now_ms);
            g.offsets = group_offsets;
            self.groups.insert(group_id, g);
        }
        self.status = CoordinatorStatus::Active;
        self.retention_check_at_ms =
            Some(now_ms.saturating_add(self.config.offsets_retention_check_interval_ms.max(1)));
    }

    /// This broker stopped leading the partition: every parked request is answered
    /// NOT_COORDINATOR (clients then find the new coordinator) and all state is dropped.
    pub fn resign(&mut self, out: &mut Outputs) {
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                if let Some(t) = m.awaiting_join.take() {
                    out.responses.push((
                        t,
                        Response::JoinGroup(JoinGroupResponse::error(
                            ec::NOT_COORDINATOR,
                            &m.member_id,
                        )),
                    ));
                }
                if let Some(t) = m.awaiting_sync.take() {
                    out.responses.push((
                        t,
                        Response::SyncGroup(SyncGroupResponse::error(ec::NOT_COORDINATOR)),
                    ));
                }
            }
        }
        let mut pending: Vec<(AppendId, PendingAppend)> = self.pending_appends.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, p) in pending {
            match p {
                PendingAppend::OffsetCommit(PendingCommit {
                    token: Some(token),
                    mut results,
                    ..
                }) => {
                    for r in &mut results {
                        r.error_code = ec::NOT_COORDINATOR;
                    }
                    out.responses.push((
                        token,
                        Response::OffsetCommit(OffsetCommitResponse {
                            partitions: results,
                        }),
                    ));
                }
                PendingAppend::OffsetCommit(PendingCommit { token: None, .. }) => {}
                PendingAppend::StaticRejoin(PendingRejoin {
                    token,
                    new_member_id,
                    ..
                }) => out.responses.push((
                    token,
                    Response::JoinGroup(JoinGroupResponse::error(
                        ec::NOT_COORDINATOR,
                        &new_member_id,
                    )),
                )),
                PendingAppend::DeleteGroups {
                    token,
                    mut results,
                    deleted,
                } => {
                    for i in deleted {
                        results[i].1 = ec::NOT_COORDINATOR;
                    }
                    out.responses.push((
                        token,
                        Response::DeleteGroups(DeleteGroupsResponse { results }),
                    ));
                }
                PendingAppend::OffsetDelete {
                    token,
                    mut response,
                    deleted,
                } => {
                    for i in deleted {
                        response.partitions[i].error_code = ec::NOT_COORDINATOR;
                    }
                    out.responses
                        .push((token, Response::OffsetDelete(response)));
                }
                PendingAppend::SyncAssignment { .. } | PendingAppend::GroupMetadata => {}
            }
        }
        self.groups.clear();
        self.timers.clear();
        self.retention_check_at_ms = None;
        self.status = CoordinatorStatus::Resigned;
    }
}
