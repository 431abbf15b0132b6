//! The rebalance phases of a group: PreparingRebalance (the join phase, KIP-134's initial
//! delay, KIP-62's rebalance timeout), CompletingRebalance (waiting for the leader's
//! assignment, stored before members get it), Stable.

use super::*;

impl GroupCoordinator {
    pub(super) fn maybe_prepare_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if matches!(
            g.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(g, now_ms, out);
        }
    }

    pub(super) fn prepare_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if g.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(g, ec::REBALANCE_IN_PROGRESS, now_ms, out);
        }
        self.set_sync_deadline(g, None);
        let rebalance_timeout_ms = g.rebalance_timeout_ms();
        let delay_ms = self.config.initial_rebalance_delay_ms;
        if g.state == GroupState::Empty && delay_ms > 0 {
            g.initial_join_remaining_ms = Some(rebalance_timeout_ms.saturating_sub(delay_ms));
            g.new_member_added = false;
            self.set_join_deadline(g, Some(now_ms.saturating_add(delay_ms)));
        } else {
            g.initial_join_remaining_ms = None;
            self.set_join_deadline(g, Some(now_ms.saturating_add(rebalance_timeout_ms.max(1))));
        }
        g.state = GroupState::PreparingRebalance;
        g.state_timestamp_ms = ms_i64(now_ms);
        self.try_complete_join(g, now_ms, out);
    }

    /// Completes the join phase early once everyone is in, except during the initial delay,
    /// which exists precisely to wait for members nobody knows about yet.
    pub(super) fn try_complete_join(
        &mut self,
        g: &mut GroupMetadata,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if g.state == GroupState::PreparingRebalance
            && g.initial_join_remaining_ms.is_none()
            && g.all_members_joined()
        {
            self.complete_join(g, now_ms, out);
        }
    }

    pub(super) fn on_join_deadline(
        &mut self,
        g: &mut GroupMetadata,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(remaining_ms) = g.initial_join_remaining_ms {
            if g.new_member_added && remaining_ms > 0 {
                // KIP-134: someone joined during the delay; wait once more for the rest.
                g.new_member_added = false;
                let delay_ms = self.config.initial_rebalance_delay_ms.min(remaining_ms);
                g.initial_join_remaining_ms = Some(remaining_ms - delay_ms);
                self.set_join_deadline(g, Some(now_ms.saturating_add(delay_ms.max(1))));
                return;
            }
        }
        self.complete_join(g, now_ms, out);
    }

    fn complete_join(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        self.set_join_deadline(g, None);
        g.initial_join_remaining_ms = None;
        // Dynamic members that did not rejoin in time are gone; static ones stay until
        // their session expires (they are expected back with the same instance id).
        let failed: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in failed {
            self.drop_member(g, &id, out);
        }
        if !g.members.is_empty() && !g.elect_joined_leader() {
            // Nobody rejoined: wait another rebalance timeout for sessions to expire.
            let timeout = g.rebalance_timeout_ms().max(1);
            self.set_join_deadline(g, Some(now_ms.saturating_add(timeout)));
            return;
        }
        g.init_next_generation(now_ms);
        tracing::info!(
            "group {}: generation {} with {} members",
            g.group_id,
            g.generation_id,
            g.members.len()
        );
        if g.state == GroupState::Empty {
            let record = group_metadata_record(&g.group_id, &g.to_record_value(None));
            self.append(vec![record], PendingAppend::GroupMetadata, out);
            return;
        }
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in &ids {
            let resp = current_generation_join(g, id);
            if let Some(m) = g.members.get_mut(id) {
                if let Some(t) = m.awaiting_join.take() {
                    out.responses.push((t, Response::JoinGroup(resp)));
                }
                m.is_new = false;
            }
            self.reset_session(g, id, now_ms);
            g.pending_sync.insert(id.clone());
        }
        let timeout = g.rebalance_timeout_ms().max(1);
        self.set_sync_deadline(g, Some(now_ms.saturating_add(timeout)));
    }

    pub(super) fn on_sync_deadline(
        &mut self,
        g: &mut GroupMetadata,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if !matches!(
            g.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            return;
        }
        let missing: Vec<String> = g.pending_sync.iter().cloned().collect();
        if missing.is_empty() {
            return;
        }
        for id in missing {
            self.drop_member(g, &id, out);
        }
        self.maybe_prepare_rebalance(g, now_ms, out);
    }

    /// The leader's assignment is stored (or failed): the group becomes Stable and every
    /// member gets its part, or the members get the error and the group rebalances again.
    /// Nothing happens if another rebalance started while the append was in flight.
    pub(super) fn assignment_stored(
        &mut self,
        group_id: &str,
        generation_id: i32,
        assignment: &BTreeMap<String, Bytes>,
        result: Result<(), ErrorCode>,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let Some(mut g) = self.groups.remove(group_id) else {
            return;
        };
        if g.state == GroupState::CompletingRebalance && g.generation_id == generation_id {
            match result {
                Ok(()) => {
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = assignment.get(id).cloned().unwrap_or_default();
                    }
                    self.propagate_assignment(&mut g, ec::NONE, now_ms, out);
                    g.state = GroupState::Stable;
                    g.state_timestamp_ms = ms_i64(now_ms);
                }
                Err(code) => {
                    self.reset_and_propagate_assignment_error(
                        &mut g,
                        ec::group_store_error(code),
                        now_ms,
                        out,
                    );
                    self.maybe_prepare_rebalance(&mut g, now_ms, out);
                }
            }
        }
        self.put_back(g);
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        g: &mut GroupMetadata,
        code: ErrorCode,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
        }
        self.propagate_assignment(g, code, now_ms, out);
    }

    /// Answers every parked SyncGroup with the member's assignment (or `code`), and restarts
    /// those members' sessions: a session that ran out while parked was not expired.
    fn propagate_assignment(
        &mut self,
        g: &mut GroupMetadata,
        code: ErrorCode,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let Some(m) = g.members.get_mut(&id) else {
                continue;
            };
            let Some(t) = m.awaiting_sync.take() else {
                continue;
            };
            let resp = if code == ec::NONE {
                SyncGroupResponse {
                    error_code: ec::NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                }
            } else {
                SyncGroupResponse::error(code)
            };
            out.responses.push((t, Response::SyncGroup(resp)));
            self.reset_session(g, &id, now_ms);
        }
    }
}
