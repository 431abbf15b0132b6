//! Group membership: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, members joining
//! (new, known, static with KIP-345 replacement), leaving and expiring.

use super::*;

impl GroupCoordinator {
    /// JoinGroup. The answer is usually deferred until the rebalance completes.
    pub fn join_group(
        &mut self,
        token: RequestToken,
        req: JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let reply_error = |out: &mut Outputs, code| join_error(out, token, &req.member_id, code);
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            return reply_error(out, code);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return reply_error(out, ec::INVALID_SESSION_TIMEOUT);
        }
        let new_member = req.member_id.is_empty();
        let mut g = match self.groups.remove(&req.group_id) {
            Some(g) => g,
            None if !new_member => return reply_error(out, ec::UNKNOWN_MEMBER_ID),
            None if self.groups.len() >= self.config.max_groups => {
                return reply_error(out, ec::COORDINATOR_NOT_AVAILABLE)
            }
            None => GroupMetadata::new(&req.group_id, now_ms),
        };
        // Kafka's acceptJoiningMember: members already in the group (or holding a handed-out
        // id) are always let back in; newcomers only below the limit.
        let known = g.members.contains_key(&req.member_id)
            || g.pending_members.contains_key(&req.member_id)
            || req
                .group_instance_id
                .as_ref()
                .is_some_and(|i| g.static_members.contains_key(i));
        if g.members.len() >= self.config.max_members_per_group && !known {
            reply_error(out, ec::GROUP_MAX_SIZE_REACHED);
        } else if new_member {
            self.join_new_member(&mut g, token, req, now_ms, out);
        } else {
            self.join_current_member(&mut g, token, req, now_ms, out);
        }
        if g.state == GroupState::PreparingRebalance {
            self.try_complete_join(&mut g, now_ms, out);
        }
        self.put_back(g);
    }

    /// SyncGroup. A follower's answer waits for the leader's assignment to be stored.
    pub fn sync_group(
        &mut self,
        token: RequestToken,
        req: SyncGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let reply =
            |out: &mut Outputs, resp| out.responses.push((token, Response::SyncGroup(resp)));
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            return reply(out, SyncGroupResponse::error(code));
        }
        let Some(mut g) = self.groups.remove(&req.group_id) else {
            return reply(out, SyncGroupResponse::error(ec::UNKNOWN_MEMBER_ID));
        };
        let error = if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            Some(ec::FENCED_INSTANCE_ID)
        } else if !g.members.contains_key(&req.member_id) {
            Some(ec::UNKNOWN_MEMBER_ID)
        } else if req.generation_id != g.generation_id {
            Some(ec::ILLEGAL_GENERATION)
        } else if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| g.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| g.protocol_name.as_ref() != Some(n))
        {
            Some(ec::INCONSISTENT_GROUP_PROTOCOL)
        } else {
            match g.state {
                GroupState::Empty | GroupState::Dead => Some(ec::UNKNOWN_MEMBER_ID),
                GroupState::PreparingRebalance => Some(ec::REBALANCE_IN_PROGRESS),
                GroupState::CompletingRebalance | GroupState::Stable => None,
            }
        };
        if let Some(code) = error {
            reply(out, SyncGroupResponse::error(code));
            return self.put_back(g);
        }
        self.remove_pending_sync(&mut g, &req.member_id);
        if g.state == GroupState::Stable {
            let assignment = g
                .members
                .get(&req.member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default();
            reply(
                out,
                SyncGroupResponse {
                    error_code: ec::NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment,
                },
            );
            self.reset_session(&mut g, &req.member_id, now_ms);
            return self.put_back(g);
        }
        // CompletingRebalance: park until the leader's assignment is stored.
        if let Some(member) = g.members.get_mut(&req.member_id) {
            if let Some(previous) = member.awaiting_sync.replace(token) {
                out.responses.push((
                    previous,
                    Response::SyncGroup(SyncGroupResponse::error(ec::REBALANCE_IN_PROGRESS)),
                ));
            }
        }
        if g.is_leader(&req.member_id) {
            // Members the leader left out get an empty assignment, as in Kafka; entries for
            // non-members are ignored.
            let given: HashMap<&str, &Bytes> = req
                .assignments
                .iter()
                .map(|a| (a.member_id.as_str(), &a.assignment))
                .collect();
            let assignment: BTreeMap<String, Bytes> = g
                .members
                .keys()
                .map(|id| {
                    let a = given
                        .get(id.as_str())
                        .map(|b| (*b).clone())
                        .unwrap_or_default();
                    (id.clone(), a)
                })
                .collect();
            let record = group_metadata_record(&g.group_id, &g.to_record_value(Some(&assignment)));
            self.append(
                vec![record],
                PendingAppend::SyncAssignment {
                    group_id: g.group_id.clone(),
                    generation_id: g.generation_id,
                    assignment,
                },
                out,
            );
        }
        self.put_back(g);
    }

    /// Heartbeat: keeps the member's session alive and tells it about rebalances.
    pub fn heartbeat(
        &mut self,
        token: RequestToken,
        req: HeartbeatRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let code = self.heartbeat_code(&req, now_ms);
        out.responses.push((
            token,
            Response::Heartbeat(HeartbeatResponse { error_code: code }),
        ));
    }

    fn heartbeat_code(&mut self, req: &HeartbeatRequest, now_ms: u64) -> ErrorCode {
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            return code;
        }
        let Some(mut g) = self.groups.remove(&req.group_id) else {
            return ec::UNKNOWN_MEMBER_ID;
        };
        let code = if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            ec::FENCED_INSTANCE_ID
        } else if !g.members.contains_key(&req.member_id) {
            ec::UNKNOWN_MEMBER_ID
        } else if req.generation_id != g.generation_id {
            ec::ILLEGAL_GENERATION
        } else {
            match g.state {
                GroupState::Empty | GroupState::Dead => ec::UNKNOWN_MEMBER_ID,
                GroupState::CompletingRebalance | GroupState::Stable => {
                    self.reset_session(&mut g, &req.member_id, now_ms);
                    ec::NONE
                }
                GroupState::PreparingRebalance => {
                    self.reset_session(&mut g, &req.member_id, now_ms);
                    ec::REBALANCE_IN_PROGRESS
                }
            }
        };
        self.put_back(g);
        code
    }

    /// LeaveGroup for a batch of members (one for v0-v2).
    pub fn leave_group(
        &mut self,
        token: RequestToken,
        req: LeaveGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let mut reply = LeaveGroupResponse {
            error_code: ec::NONE,
            members: Vec::with_capacity(req.members.len()),
        };
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            reply.error_code = code;
            out.responses.push((token, Response::LeaveGroup(reply)));
            return;
        }
        let mut group = self.groups.remove(&req.group_id);
        for leaving in req.members {
            let code = match group.as_mut() {
                None => ec::UNKNOWN_MEMBER_ID,
                Some(g) => self.leave_one(g, &leaving, now_ms, out),
            };
            reply.members.push(LeaveGroupMemberResult {
                member_id: leaving.member_id,
                group_instance_id: leaving.group_instance_id,
                error_code: code,
            });
        }
        if let Some(g) = group {
            self.put_back(g);
        }
        out.responses.push((token, Response::LeaveGroup(reply)));
    }

    fn leave_one(
        &mut self,
        g: &mut GroupMetadata,
        leaving: &LeavingMember,
        now_ms: u64,
        out: &mut Outputs,
    ) -> ErrorCode {
        if let Some(deadline) = g.pending_members.remove(&leaving.member_id) {
            self.cancel_timer(
                &g.group_id,
                TimerKind::PendingMember(leaving.member_id.clone()),
                deadline,
            );
            if g.state == GroupState::PreparingRebalance {
                self.try_complete_join(g, now_ms, out);
            }
            return ec::NONE;
        }
        if g.is_static_member_fenced(leaving.group_instance_id.as_deref(), &leaving.member_id) {
            return ec::FENCED_INSTANCE_ID;
        }
        let member_id = if g.members.contains_key(&leaving.member_id) {
            leaving.member_id.clone()
        } else if let Some(id) = leaving
            .group_instance_id
            .as_ref()
            .and_then(|i| g.static_members.get(i))
        {
            id.clone()
        } else {
            return ec::UNKNOWN_MEMBER_ID;
        };
        self.remove_member_and_update_group(g, &member_id, now_ms, out);
        ec::NONE
    }

    fn join_new_member(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            out.responses.push((
                token,
                Response::JoinGroup(JoinGroupResponse::error(
                    ec::INCONSISTENT_GROUP_PROTOCOL,
                    &req.member_id,
                )),
            ));
            return;
        }
        let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
        let new_id = self.generate_member_id(prefix);
        match req.group_instance_id.clone() {
            Some(instance) => match g.static_members.get(&instance).cloned() {
                Some(old_id) => self.update_static_member_and_rebalance(
                    g, token, req, &instance, &old_id, &new_id, now_ms, out,
                ),
                None => self.add_member_and_rebalance(g, token, req, new_id, now_ms, out),
            },
            None if req.require_known_member_id => {
                // KIP-394: hand out the id; the member must come back with it, so a client
                // that times out and retries does not leave defunct members behind.
                let deadline = now_ms.saturating_add(timeout_ms(req.session_timeout_ms));
                g.pending_members.insert(new_id.clone(), deadline);
                self.schedule(
                    &g.group_id,
                    TimerKind::PendingMember(new_id.clone()),
                    deadline,
                );
                out.responses.push((
                    token,
                    Response::JoinGroup(JoinGroupResponse::error(ec::MEMBER_ID_REQUIRED, &new_id)),
                ));
            }
            None => self.add_member_and_rebalance(g, token, req, new_id, now_ms, out),
        }
    }

    fn join_current_member(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let reply_error = |out: &mut Outputs, code| join_error(out, token, &req.member_id, code);
        if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            return reply_error(out, ec::INCONSISTENT_GROUP_PROTOCOL);
        }
        if let Some(deadline) = g.pending_members.get(&req.member_id).copied() {
            self.cancel_timer(
                &g.group_id,
                TimerKind::PendingMember(req.member_id.clone()),
                deadline,
            );
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(g, token, req, id, now_ms, out);
        }
        if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            return reply_error(out, ec::FENCED_INSTANCE_ID);
        }
        let instance_unknown = req
            .group_instance_id
            .as_ref()
            .is_some_and(|i| !g.static_members.contains_key(i));
        let Some(member) = g.members.get(&req.member_id) else {
            return reply_error(out, ec::UNKNOWN_MEMBER_ID);
        };
        if instance_unknown {
            return reply_error(out, ec::UNKNOWN_MEMBER_ID);
        }
        let matches = member.matches(&req.protocols);
        match g.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(g, token, &req, now_ms, out)
            }
            GroupState::CompletingRebalance if matches => {
                // Same metadata: the member missed its JoinGroup answer; repeat it.
                let resp = current_generation_join(g, &req.member_id);
                out.responses.push((token, Response::JoinGroup(resp)));
            }
            GroupState::Stable if matches && !g.is_leader(&req.member_id) => {
                let mut resp = current_generation_join(g, &req.member_id);
                resp.members.clear();
                out.responses.push((token, Response::JoinGroup(resp)));
            }
            // A leader rejoining a stable group forces a rebalance: it is how a consumer
            // reacts to changes the members' metadata does not show (new partitions).
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(g, token, &req, now_ms, out)
            }
            GroupState::Empty | GroupState::Dead => reply_error(out, ec::UNKNOWN_MEMBER_ID),
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        member_id: String,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if g.state == GroupState::PreparingRebalance && g.generation_id == 0 {
            g.new_member_added = true;
        }
        g.add(Member {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(token),
            awaiting_sync: None,
            is_new: true,
            session_deadline_ms: None,
        });
        let deadline = now_ms.saturating_add(self.config.new_member_join_timeout_ms.max(1));
        self.set_session_deadline(g, &member_id, deadline);
        self.maybe_prepare_rebalance(g, now_ms, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: &JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if let Some(m) = g.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.session_timeout_ms = req.session_timeout_ms;
            if let Some(previous) = m.awaiting_join.replace(token) {
                // The client gave up on its earlier JoinGroup and sent a new one.
                out.responses.push((
                    previous,
                    Response::JoinGroup(JoinGroupResponse::error(
                        ec::REBALANCE_IN_PROGRESS,
                        &req.member_id,
                    )),
                ));
            }
        }
        self.maybe_prepare_rebalance(g, now_ms, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn update_static_member_and_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        instance: &str,
        old_id: &str,
        new_id: &str,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let leader_before = g.leader_id.clone();
        // Whoever still waits under the old id is a zombie with the same instance id.
        if let Some(m) = g.members.get_mut(old_id) {
            if let Some(t) = m.awaiting_join.take() {
                out.responses.push((
                    t,
                    Response::JoinGroup(JoinGroupResponse::error(ec::FENCED_INSTANCE_ID, old_id)),
                ));
            }
            if let Some(t) = m.awaiting_sync.take() {
                out.responses.push((
                    t,
                    Response::SyncGroup(SyncGroupResponse::error(ec::FENCED_INSTANCE_ID)),
                ));
            }
        }
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let old_metadata = g.members.get(old_id).map(|m| m.metadata(&protocol));
        self.rekey_member(g, instance, old_id, new_id, now_ms);
        let mut rejoin = req;
        rejoin.member_id = new_id.to_owned();
        self.update_member_and_rebalance_no_prepare(g, token, &rejoin);
        match g.state {
            GroupState::Stable => {
                let selected = g.select_protocol();
                let new_metadata = g.members.get(new_id).map(|m| m.metadata(&protocol));
                if selected.is_some() && selected == g.protocol_name && new_metadata == old_metadata
                {
                    // Same protocol and subscription: no rebalance. Persist the new member id,
                    // then answer with the current generation; the member gets its old
                    // assignment in SyncGroup. A changed subscription needs a new assignment.
                    let value = g.to_record_value(None);
                    let record = group_metadata_record(&g.group_id, &value);
                    self.append(
                        vec![record],
                        PendingAppend::StaticRejoin(PendingRejoin {
                            group_id: g.group_id.clone(),
                            generation_id: g.generation_id,
                            token,
                            instance: instance.to_owned(),
                            old_member_id: old_id.to_owned(),
                            new_member_id: new_id.to_owned(),
                            leader_before,
                        }),
                        out,
                    );
                } else {
                    self.maybe_prepare_rebalance(g, now_ms, out);
                }
            }
            GroupState::CompletingRebalance => {
                // The leader may be assigning to the old member id: start over.
                self.prepare_rebalance(g, now_ms, out);
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {
                // Cannot happen (a static member exists); answer rather than park forever.
                if let Some(m) = g.members.get_mut(new_id) {
                    m.awaiting_join = None;
                }
                out.responses.push((
                    token,
                    Response::JoinGroup(JoinGroupResponse::error(ec::UNKNOWN_MEMBER_ID, new_id)),
                ));
            }
        }
    }

    fn update_member_and_rebalance_no_prepare(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: &JoinGroupRequest,
    ) {
        if let Some(m) = g.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.session_timeout_ms = req.session_timeout_ms;
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            m.awaiting_join = Some(token);
        }
    }

    /// Moves a static member from `from` to `to` (its session restarts under the new id).
    fn rekey_member(
        &mut self,
        g: &mut GroupMetadata,
        instance: &str,
        from: &str,
        to: &str,
        now_ms: u64,
    ) {
        let Some(mut m) = g.members.remove(from) else {
            return;
        };
        if let Some(deadline) = m.session_deadline_ms.take() {
            self.cancel_timer(&g.group_id, TimerKind::Session(from.to_owned()), deadline);
        }
        m.member_id = to.to_owned();
        g.members.insert(to.to_owned(), m);
        if g.is_leader(from) {
            g.leader_id = Some(to.to_owned());
        }
        g.static_members.insert(instance.to_owned(), to.to_owned());
        if g.pending_sync.remove(from) {
            g.pending_sync.insert(to.to_owned());
        }
        self.reset_session(g, to, now_ms);
    }

    /// A static member's new member id is stored (or failed): the parked JoinGroup gets the
    /// current generation, joins a rebalance that started meanwhile, or (on failure) the
    /// replacement is undone and the error answered.
    pub(super) fn static_rejoin_stored(
        &mut self,
        rejoin: PendingRejoin,
        result: Result<(), ErrorCode>,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let PendingRejoin {
            group_id,
            generation_id,
            token,
            instance,
            old_member_id,
            new_member_id,
            leader_before,
        } = rejoin;
        let Some(mut g) = self.groups.remove(&group_id) else {
            return;
        };
        let still_parked = g
            .members
            .get(&new_member_id)
            .is_some_and(|m| m.awaiting_join == Some(token));
        if still_parked {
            if let Some(m) = g.members.get_mut(&new_member_id) {
                m.awaiting_join = None;
            }
            match result {
                Ok(()) if g.state == GroupState::Stable && g.generation_id == generation_id => {
                    let is_leader = g.is_leader(&new_member_id);
                    let resp = JoinGroupResponse {
                        error_code: ec::NONE,
                        generation_id: g.generation_id,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol_name.clone(),
                        // The leader id from before the rejoin: an old client that
                        // rejoins as leader must not recompute the assignment.
                        leader: leader_before.unwrap_or_default(),
                        skip_assignment: is_leader,
                        member_id: new_member_id.clone(),
                        members: if is_leader {
                            current_member_metadata(&g)
                        } else {
                            Vec::new()
                        },
                    };
                    out.responses.push((token, Response::JoinGroup(resp)));
                }
                Ok(()) => {
                    // A rebalance started meanwhile: the member joins it.
                    if let Some(m) = g.members.get_mut(&new_member_id) {
                        m.awaiting_join = Some(token);
                    }
                }
                Err(code) => {
                    // Undo the replacement so the old member id stays valid.
                    self.rekey_member(&mut g, &instance, &new_member_id, &old_member_id, now_ms);
                    out.responses.push((
                        token,
                        Response::JoinGroup(JoinGroupResponse::error(
                            ec::group_store_error(code),
                            &new_member_id,
                        )),
                    ));
                }
            }
        }
        if g.state == GroupState::PreparingRebalance {
            self.try_complete_join(&mut g, now_ms, out);
        }
        self.put_back(g);
    }

    pub(super) fn on_session_expired(
        &mut self,
        g: &mut GroupMetadata,
        member_id: &str,
        at: u64,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let Some(m) = g.members.get_mut(member_id) else {
            return;
        };
        if m.session_deadline_ms != Some(at) {
            return;
        }
        m.session_deadline_ms = None;
        if m.may_expire() {
            self.remove_member_and_update_group(g, member_id, now_ms, out);
        }
    }

    fn remove_member_and_update_group(
        &mut self,
        g: &mut GroupMetadata,
        member_id: &str,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        self.drop_member(g, member_id, out);
        match g.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(g, now_ms, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(g, now_ms, out),
        }
    }

    /// Removes a member and answers whatever it had parked with UNKNOWN_MEMBER_ID, so the
    /// client (if alive) joins again from scratch.
    pub(super) fn drop_member(
        &mut self,
        g: &mut GroupMetadata,
        member_id: &str,
        out: &mut Outputs,
    ) {
        let Some(m) = g.remove(member_id) else {
            return;
        };
        // Operators read these lines to see why a consumer was rebalanced out.
        tracing::info!(
            "group {}: member {member_id} removed (state {:?})",
            g.group_id,
            g.state
        );
        if let Some(deadline) = m.session_deadline_ms {
            self.cancel_timer(
                &g.group_id,
                TimerKind::Session(member_id.to_owned()),
                deadline,
            );
        }
        if let Some(t) = m.awaiting_join {
            out.responses.push((
                t,
                Response::JoinGroup(JoinGroupResponse::error(ec::UNKNOWN_MEMBER_ID, member_id)),
            ));
        }
        if let Some(t) = m.awaiting_sync {
            out.responses.push((
                t,
                Response::SyncGroup(SyncGroupResponse::error(ec::UNKNOWN_MEMBER_ID)),
            ));
        }
        if g.pending_sync.is_empty() {
            self.set_sync_deadline(g, None);
        }
    }

    fn remove_pending_sync(&mut self, g: &mut GroupMetadata, member_id: &str) {
        if g.pending_sync.remove(member_id) && g.pending_sync.is_empty() {
            self.set_sync_deadline(g, None);
        }
    }
}

/// Answers a JoinGroup with `code`.
fn join_error(out: &mut Outputs, token: RequestToken, member_id: &str, code: ErrorCode) {
    out.responses.push((
        token,
        Response::JoinGroup(JoinGroupResponse::error(code, member_id)),
    ));
}
