//! Committed offsets: OffsetCommit (answered once its records are stored, or
//! REQUEST_TIMED_OUT), OffsetFetch, OffsetDelete, and offset retention (KIP-211).

use super::*;

/// A commit judged partition by partition: the results, the offsets to apply once stored
/// (index into the results), the records to append.
type CommitPlan = (
    Vec<PartitionResult>,
    Vec<(usize, CommittedOffset)>,
    Vec<OffsetsRecord>,
);

impl GroupCoordinator {
    /// OffsetCommit. Answered once the records are durable (or at once on error).
    pub fn offset_commit(
        &mut self,
        token: RequestToken,
        req: OffsetCommitRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let all = |code: ErrorCode| OffsetCommitResponse::all(&req, code);
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::OffsetsOrAdmin) {
            out.responses
                .push((token, Response::OffsetCommit(all(code))));
            return;
        }
        let mut g = match self.groups.remove(&req.group_id) {
            Some(g) => g,
            // A commit from a client that does not use group management creates the group.
            None if req.generation_id < 0 && self.groups.len() < self.config.max_groups => {
                GroupMetadata::new(&req.group_id, now_ms)
            }
            None if req.generation_id < 0 => {
                let resp = all(ec::COORDINATOR_NOT_AVAILABLE);
                out.responses.push((token, Response::OffsetCommit(resp)));
                return;
            }
            None => {
                let resp = all(ec::ILLEGAL_GENERATION);
                out.responses.push((token, Response::OffsetCommit(resp)));
                return;
            }
        };
        if let Some(code) = self.commit_refusal(&mut g, &req, now_ms) {
            out.responses
                .push((token, Response::OffsetCommit(all(code))));
            return self.put_back(g);
        }
        let (results, stored, records) =
            self.commit_partitions(&g.group_id, req.partitions, now_ms);
        if records.is_empty() {
            out.responses.push((
                token,
                Response::OffsetCommit(OffsetCommitResponse {
                    partitions: results,
                }),
            ));
        } else {
            let session_ms = g
                .members
                .get(&req.member_id)
                .map(|m| timeout_ms(m.session_timeout_ms));
            let wait_ms = self.config.offsets_commit_timeout_ms.max(1);
            let wait_ms = session_ms.map_or(wait_ms, |s| wait_ms.min((s / 2).max(1)));
            let timeout_at_ms = now_ms.saturating_add(wait_ms);
            let id = self.append(
                records,
                PendingAppend::OffsetCommit(PendingCommit {
                    token: Some(token),
                    group_id: g.group_id.clone(),
                    results,
                    stored,
                    timeout_at_ms,
                }),
                out,
            );
            self.schedule(&g.group_id, TimerKind::Commit(id), timeout_at_ms);
        }
        self.put_back(g);
    }

    /// Why the member may not commit to `g` now (generation, membership, group state);
    /// `None` if it may. A commit from a current member also renews its session.
    fn commit_refusal(
        &mut self,
        g: &mut GroupMetadata,
        req: &OffsetCommitRequest,
        now_ms: u64,
    ) -> Option<ErrorCode> {
        if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            Some(ec::FENCED_INSTANCE_ID)
        } else if req.generation_id < 0 && g.state == GroupState::Empty {
            None
        } else if !g.members.contains_key(&req.member_id) {
            Some(ec::UNKNOWN_MEMBER_ID)
        } else if req.generation_id != g.generation_id {
            Some(ec::ILLEGAL_GENERATION)
        } else {
            match g.state {
                GroupState::Stable | GroupState::PreparingRebalance => {
                    // Commits are allowed while preparing a rebalance: the member learns
                    // about it from its next heartbeat and commits before revoking.
                    self.reset_session(g, &req.member_id, now_ms);
                    None
                }
                GroupState::CompletingRebalance => Some(ec::REBALANCE_IN_PROGRESS),
                GroupState::Empty | GroupState::Dead => Some(ec::UNKNOWN_MEMBER_ID),
            }
        }
    }

    /// Judges each partition of a commit the group may make (the partition exists, its
    /// metadata fits) and builds the records of those that pass.
    fn commit_partitions(
        &self,
        group_id: &str,
        partitions: Vec<OffsetCommitPartition>,
        now_ms: u64,
    ) -> CommitPlan {
        let mut results = Vec::with_capacity(partitions.len());
        let mut stored = Vec::new();
        let mut records = Vec::new();
        for (i, p) in partitions.into_iter().enumerate() {
            let metadata = p.metadata.unwrap_or_default();
            let code = if !p.partition_exists {
                ec::UNKNOWN_TOPIC_OR_PARTITION
            } else if metadata.len() > self.config.max_offset_metadata_bytes {
                ec::OFFSET_METADATA_TOO_LARGE
            } else {
                let value = OffsetCommitValue {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: metadata.clone(),
                    commit_timestamp_ms: p.commit_timestamp_ms.unwrap_or(ms_i64(now_ms)),
                    expire_timestamp_ms: None,
                };
                records.push(offset_commit_record(
                    group_id,
                    &p.topic,
                    p.partition,
                    &value,
                ));
                stored.push((
                    i,
                    CommittedOffset {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp_ms: value.commit_timestamp_ms,
                    },
                ));
                ec::NONE
            };
            results.push(PartitionResult {
                topic: p.topic,
                partition: p.partition,
                error_code: code,
            });
        }
        (results, stored, records)
    }

    /// OffsetFetch for one group: answered at once from memory.
    pub fn offset_fetch(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::OffsetsOrAdmin) {
            return OffsetFetchResponse {
                error_code: code,
                partitions: Vec::new(),
            };
        }
        let offsets = self.groups.get(&req.group_id).map(|g| &g.offsets);
        let fetched = |topic: &str, partition: i32, c: Option<&CommittedOffset>| FetchedOffset {
            topic: topic.to_owned(),
            partition,
            offset: c.map_or(-1, |c| c.offset),
            leader_epoch: c.map_or(-1, |c| c.leader_epoch),
            metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
            error_code: ec::NONE,
        };
        let partitions = match &req.partitions {
            Some(list) => list
                .iter()
                .map(|(t, p)| fetched(t, *p, offsets.and_then(|o| o.get(&(t.clone(), *p)))))
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((t, p), c)| fetched(t, *p, Some(c)))
                .collect(),
        };
        OffsetFetchResponse {
            error_code: ec::NONE,
            partitions,
        }
    }

    /// Every committed offset this coordinator holds as (group, topic, partition, offset),
    /// for the consumer lag metrics.
    pub fn all_committed_offsets(&self, out: &mut Vec<(String, String, i32, i64)>) {
        for (group, metadata) in &self.groups {
            for ((topic, partition), committed) in &metadata.offsets {
                out.push((group.clone(), topic.clone(), *partition, committed.offset));
            }
        }
    }

    /// Committed offsets of a group, for `broker groups describe` and lag reports.
    pub fn committed_offsets(&self, group_id: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.groups
            .get(group_id)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// OffsetDelete (Kafka's `handleDeleteOffsets`): an Empty group loses the asked offsets;
    /// a consumer group with members keeps those of topics its members subscribe to
    /// (GROUP_SUBSCRIBED_TO_TOPIC) and loses the others; a group of another protocol type
    /// with members is NON_EMPTY_GROUP. Answered once the tombstones are durable. Memory
    /// drops the offsets at once, as for DeleteGroups: a commit racing the tombstones lands
    /// after them in the log, so memory and replay agree.
    pub fn offset_delete(
        &mut self,
        token: RequestToken,
        req: OffsetDeleteRequest,
        _now_ms: u64,
        out: &mut Outputs,
    ) {
        let group_error = |code| OffsetDeleteResponse {
            error_code: code,
            partitions: Vec::new(),
        };
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::OffsetsOrAdmin) {
            out.responses
                .push((token, Response::OffsetDelete(group_error(code))));
            return;
        }
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            out.responses.push((
                token,
                Response::OffsetDelete(group_error(ec::GROUP_ID_NOT_FOUND)),
            ));
            return;
        };
        // Topics that may not lose their offsets; `None`: every topic may.
        let subscribed: Option<Option<BTreeSet<String>>> = match g.state {
            GroupState::Empty | GroupState::Dead => None,
            _ if g.protocol_type.as_deref() == Some("consumer") => Some(subscriptions(
                g.protocol_name.as_deref(),
                g.members.values(),
            )),
            _ => {
                out.responses.push((
                    token,
                    Response::OffsetDelete(group_error(ec::NON_EMPTY_GROUP)),
                ));
                return;
            }
        };
        let mut response = OffsetDeleteResponse {
            error_code: ec::NONE,
            partitions: Vec::with_capacity(req.partitions.len()),
        };
        let mut records = Vec::new();
        let mut deleted = Vec::new();
        for (topic, partition) in req.partitions {
            let refused = match &subscribed {
                None => false,
                // Subscriptions that cannot be read protect every topic, as Kafka does.
                Some(None) => true,
                Some(Some(topics)) => topics.contains(&topic),
            };
            let code = if refused {
                ec::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                if g.offsets.remove(&(topic.clone(), partition)).is_some() {
                    records.push(offset_tombstone(&g.group_id, &topic, partition));
                    deleted.push(response.partitions.len());
                }
                ec::NONE
            };
            response.partitions.push(PartitionResult {
                topic,
                partition,
                error_code: code,
            });
        }
        if records.is_empty() {
            out.responses
                .push((token, Response::OffsetDelete(response)));
        } else {
            self.append(
                records,
                PendingAppend::OffsetDelete {
                    token,
                    response,
                    deleted,
                },
                out,
            );
        }
    }

    /// Offset retention (Kafka's `offsets.retention.minutes`, KIP-211): an Empty group that
    /// used group management loses all its offsets once it has been empty for the retention
    /// time; a group that never did (commits with generation -1) loses each offset that
    /// many milliseconds after it was committed. A group left with nothing is deleted.
    /// Groups with members keep their offsets (the consumer protocol's subscriptions would be
    /// needed to tell which are stale). Tombstones go to the log like any deletion.
    pub(super) fn expire_offsets(&mut self, now_ms: u64, out: &mut Outputs) {
        let retention_ms = self.config.offsets_retention_ms;
        let now = ms_i64(now_ms);
        let busy: BTreeSet<String> = self
            .pending_appends
            .values()
            .filter_map(|p| match p {
                PendingAppend::OffsetCommit(commit) => Some(commit.group_id.clone()),
                _ => None,
            })
            .collect();
        let mut records = Vec::new();
        let mut emptied = Vec::new();
        for g in self.groups.values_mut() {
            // A commit still in flight would land after our tombstones in memory but before
            // them in the log: leave such groups for the next check.
            if g.state != GroupState::Empty || busy.contains(&g.group_id) {
                continue;
            }
            let expired = |base_ms: i64| base_ms.saturating_add(ms_i64(retention_ms)) <= now;
            let group_expired = g.protocol_type.is_some() && expired(g.state_timestamp_ms);
            let gone: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| group_expired || expired(c.commit_timestamp_ms))
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                records.push(offset_tombstone(&g.group_id, &key.0, key.1));
                g.offsets.remove(&key);
            }
            if g.offsets.is_empty() && g.members.is_empty() && g.pending_members.is_empty() {
                emptied.push(g.group_id.clone());
            }
        }
        for group_id in emptied {
            if self.groups.remove(&group_id).is_some() {
                records.push(group_tombstone(&group_id));
            }
        }
        if !records.is_empty() {
            self.append(records, PendingAppend::GroupMetadata, out);
        }
    }

    /// An OffsetCommit's records are stored (or failed): memory takes the offsets, and the
    /// commit is answered unless it already was (REQUEST_TIMED_OUT).
    pub(super) fn offset_commit_stored(
        &mut self,
        commit: PendingCommit,
        result: Result<(), ErrorCode>,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let PendingCommit {
            token,
            group_id,
            mut results,
            stored,
            ..
        } = commit;
        match result {
            Ok(()) => {
                // The log now holds these offsets, so memory does too, even if the
                // group was deleted meanwhile (replay would bring them back).
                let mut g = self
                    .groups
                    .remove(&group_id)
                    .unwrap_or_else(|| GroupMetadata::new(&group_id, now_ms));
                for (i, c) in stored {
                    let r = &results[i];
                    g.offsets.insert((r.topic.clone(), r.partition), c);
                }
                self.put_back(g);
            }
            Err(code) => {
                let code = ec::offset_store_error(code);
                for (i, _) in stored {
                    results[i].error_code = code;
                }
            }
        }
        if let Some(token) = token {
            out.responses.push((
                token,
                Response::OffsetCommit(OffsetCommitResponse {
                    partitions: results,
                }),
            ));
        }
    }

    /// Answers a commit whose records are still not stored (Kafka's
    /// `offsets.commit.timeout.ms`): stored partitions get REQUEST_TIMED_OUT, the others keep
    /// their own error. The append stays pending, so the offsets count once it lands.
    pub(super) fn on_commit_timeout(&mut self, id: AppendId, out: &mut Outputs) {
        let Some(PendingAppend::OffsetCommit(PendingCommit {
            token,
            results,
            stored,
            ..
        })) = self.pending_appends.get_mut(&id)
        else {
            return;
        };
        let Some(token) = token.take() else {
            return;
        };
        let mut partitions = results.clone();
        for (i, _) in stored.iter() {
            partitions[*i].error_code = ec::REQUEST_TIMED_OUT;
        }
        tracing::warn!(
            "OffsetCommit answered REQUEST_TIMED_OUT: its append is still not done (partition {} of {})",
            self.partition,
            crate::group::placement::OFFSETS_TOPIC
        );
        out.responses.push((
            token,
            Response::OffsetCommit(OffsetCommitResponse { partitions }),
        ));
    }
}

/// An OffsetDelete's tombstones are stored (or failed): answers it, the deleted offsets with
/// the store's error on failure.
pub(super) fn offsets_deleted(
    token: RequestToken,
    mut response: OffsetDeleteResponse,
    deleted: &[usize],
    result: Result<(), ErrorCode>,
    out: &mut Outputs,
) {
    if let Err(code) = result {
        let code = ec::offset_store_error(code);
        for &i in deleted {
            response.partitions[i].error_code = code;
        }
    }
    out.responses
        .push((token, Response::OffsetDelete(response)));
}
