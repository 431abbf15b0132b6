//! The shard side of consumer groups: each shard runs the group coordinators of the
//! `__consumer_offsets` partitions it owns, parks deferred requests (JoinGroup, SyncGroup,
//! commits waiting for their records) until the coordinator answers them, writes the
//! coordinator's records to the partition's log, replays that log when the partition opens,
//! and drives the coordinator's timers. Requests for a group are routed to the shard owning
//! the group's partition over the mesh, as Produce is routed to a partition's owner.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::group::error_code as ec;
use crate::group::{
    partition_for_group, CoordinatorSet, ListGroupsRequest, ListGroupsResponse, OffsetsRecord,
    Outputs, OFFSETS_TOPIC,
};
use crate::kafka::plain_batch::{self, plain_record};
use crate::storage::{self, PartitionLog};
use crate::topics::Topic;
use tokio::sync::oneshot;

use super::partition_ops::{GroupAnswer, GroupCall, ShardReply, ShardRequest};
use super::shard::Shard;

/// Longest the timer task sleeps between looks at the coordinators' deadlines: a deadline
/// armed while it sleeps is served at most this late.
const TIMER_POLL_MS: u64 = 50;

/// How often the group state's approximate size is charged anew to the shard's memory
/// budget, milliseconds (measuring walks every group and offset, so not on each request).
const STATE_MEASURE_INTERVAL_MS: u64 = 1000;

/// A timer sleep that ends this much later than asked means the shard (or the whole host) did
/// not run meanwhile; it is logged, because sessions may then run out at once (the members'
/// heartbeats were not read either, and clients time their own sessions out as well).
const TIMER_LATE_WARN_MS: u64 = 1000;

/// Bytes read per step when replaying a partition of `__consumer_offsets`.
const REPLAY_READ_BYTES: usize = 1 << 20;

fn now_ms() -> u64 {
    storage::now_ms().max(0) as u64
}

/// Encodes a coordinator's records as one uncompressed RecordBatch v2.
fn encode_batch(records: &[OffsetsRecord], now: i64) -> Result<Bytes, String> {
    let records: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| plain_record(i as i64, now, Some(r.key.clone()), r.value.clone()))
        .collect();
    plain_batch::encode(&records)
}

/// Every (key, value) record of a log, in offset order.
async fn read_records(log: &PartitionLog) -> Result<Vec<(Bytes, Option<Bytes>)>, String> {
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, REPLAY_READ_BYTES, None)
            .await
            .map_err(|err| format!("reading offset {offset}: {err}"))?;
        let bytes = read
            .to_vec()
            .map_err(|err| format!("reading offset {offset}: {err}"))?;
        let mut rest = Bytes::from(bytes);
        let before = offset;
        // Whole batches only: a read may end inside the last one.
        while rest.len() >= 12 {
            let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            let total = 12 + usize::try_from(len).map_err(|_| format!("batch at {offset}"))?;
            if rest.len() < total {
                break;
            }
            let mut batch = rest.split_to(total);
            // The batch's offset range, which a compacted batch keeps although records of it
            // (its last ones too) may be gone.
            if let Some(header) = crate::storage::record_batch::BatchHeader::parse(&batch) {
                offset = offset.max(header.next_offset());
            }
            let set = RecordBatchDecoder::decode(&mut batch)
                .map_err(|err| format!("batch near offset {offset}: {err}"))?;
            for record in set.records {
                offset = offset.max(record.offset + 1);
                if record.control {
                    continue;
                }
                if let Some(key) = record.key {
                    records.push((key, record.value));
                }
            }
        }
        if offset == before {
            return Err(format!("no progress reading at offset {offset}"));
        }
    }
    Ok(records)
}

impl Shard {
    fn offsets_topic(&self) -> Option<Rc<Topic>> {
        self.topic(OFFSETS_TOPIC)
    }

    /// Creates `__consumer_offsets` if it does not exist yet (called on the control shard at
    /// start, so the topic exists before the server accepts connections).
    pub async fn ensure_offsets_topic(self: &Rc<Self>) {
        if self.offsets_topic().is_some() {
            return;
        }
        // Kafka's offsets.topic.replication.factor is 3; a smaller cluster gets all it has.
        let replication_factor = match self.cluster_view() {
            Some(view) => view.brokers.len().clamp(1, 3) as i16,
            None => -1,
        };
        let spec = super::partition_ops::CreateSpec {
            name: OFFSETS_TOPIC.to_string(),
            num_partitions: self.config.offsets_topic_partitions,
            replication_factor,
            // Kafka's: the latest commit of each group and partition is kept however old
            // (retention by age would lose a quiet group's offsets).
            configs: vec![("cleanup.policy".to_string(), "compact".to_string())],
            validate_only: false,
            assignments: Vec::new(),
        };
        for (name, result) in self.create_topics(vec![spec]).await {
            match result {
                Ok(_) => {}
                // Another broker of the cluster created it first.
                Err(crate::topics::TopicError::AlreadyExists(_)) => {}
                Err(err) => tracing::error!("creating {name}: {err}"),
            }
        }
    }

    /// The partitions of `__consumer_offsets` were opened on this shard (a single node: it
    /// leads them all): replay each into a fresh coordinator, which then serves its groups.
    pub async fn load_offsets_partitions(&self, topic: &Topic) {
        if self.cluster.is_some() {
            // In a cluster a coordinator follows the partition's leadership (`apply_roles`).
            return;
        }
        for (partition, &owner) in topic.shards.iter().enumerate() {
            if owner as usize == self.id {
                self.load_offsets_partition(partition as i32, topic.shards.len() as i32)
                    .await;
            }
        }
    }

    /// Replays one partition of `__consumer_offsets` (of `partitions`) into a fresh
    /// coordinator for its groups: on a single node at open, in a cluster when this broker
    /// becomes the partition's leader.
    pub async fn load_offsets_partition(&self, partition: i32, partitions: i32) {
        let Some(log) = self.partitions.get(OFFSETS_TOPIC, partition) else {
            return;
        };
        let records = match read_records(&log).await {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(
                    "shard {}: {OFFSETS_TOPIC}-{partition} in {}: {err}; groups of this partition are not served",
                    self.id,
                    log.dir().display()
                );
                return;
            }
        };
        let mut set = self.groups.set.borrow_mut();
        let set = set.get_or_insert_with(|| {
            CoordinatorSet::new(self.groups.config.clone(), partitions, self.groups.seed)
        });
        let coordinator = set.lead(partition);
        let mut bad = 0usize;
        for (key, value) in &records {
            if coordinator.replay(key, value.as_deref()).is_err() {
                bad += 1;
            }
        }
        coordinator.finish_loading(now_ms());
        if bad > 0 {
            tracing::warn!("{OFFSETS_TOPIC}-{partition}: skipped {bad} unreadable records");
        }
        tracing::info!(
            "shard {}: loaded {OFFSETS_TOPIC}-{partition} ({} records)",
            self.id,
            records.len()
        );
    }

    /// This broker no longer leads a partition of `__consumer_offsets`: its groups go (their
    /// waiting requests are answered NOT_COORDINATOR; clients find the new leader).
    pub fn resign_offsets_partition(self: &Rc<Self>, partition: i32) {
        let mut out = Outputs::default();
        if let Some(set) = self.groups.set.borrow_mut().as_mut() {
            set.resign(partition, &mut out);
        }
        self.drive_groups(out);
    }

    /// Sends a group request to its coordinator's shard and waits for the answer.
    pub async fn group_call(self: &Rc<Self>, call: GroupCall) -> GroupAnswer {
        let Some(topic) = self.offsets_topic() else {
            return call.error(ec::COORDINATOR_NOT_AVAILABLE);
        };
        let partition = partition_for_group(call.group_id(), topic.shards.len() as i32);
        let Some(&owner) = topic.shards.get(partition as usize) else {
            return call.error(ec::COORDINATOR_NOT_AVAILABLE);
        };
        self.group_call_on(owner as usize, call).await
    }

    /// ListGroups over every shard's coordinators.
    pub async fn list_all_groups(self: &Rc<Self>, req: ListGroupsRequest) -> ListGroupsResponse {
        let mut merged = ListGroupsResponse {
            error_code: ec::NONE,
            groups: Vec::new(),
        };
        for shard in 0..self.shard_count {
            if let GroupAnswer::Listed(listed) = self
                .group_call_on(shard, GroupCall::List(req.clone()))
                .await
            {
                if listed.error_code != ec::NONE {
                    merged.error_code = listed.error_code;
                }
                merged.groups.extend(listed.groups);
            }
        }
        merged
    }

    async fn group_call_on(self: &Rc<Self>, owner: usize, call: GroupCall) -> GroupAnswer {
        // Built before the call travels, for when the owner does not answer.
        let unanswered = (owner != self.id).then(|| call.error(ec::COORDINATOR_NOT_AVAILABLE));
        self.on_shard(
            owner,
            call,
            |call| self.group_local(call),
            ShardRequest::Group,
            |reply| match (reply, unanswered) {
                (Some(ShardReply::Group(answer)), _) => answer,
                (_, Some(unanswered)) => unanswered,
                (_, None) => unreachable!("answers come back only from another shard"),
            },
        )
        .await
    }

    /// Serves a group request on this shard (the coordinator's).
    pub async fn group_local(self: &Rc<Self>, call: GroupCall) -> GroupAnswer {
        let now = now_ms();
        let mut out = Outputs::default();
        let token = self.groups.next_token.get();
        self.groups.next_token.set(token + 1);
        let (tx, rx) = oneshot::channel();
        let immediate = {
            let mut set = self.groups.set.borrow_mut();
            let Some(set) = set.as_mut() else {
                return call.error(ec::COORDINATOR_NOT_AVAILABLE);
            };
            if let GroupCall::List(req) = &call {
                return GroupAnswer::Listed(set.list_groups(req));
            }
            let coordinator = match set.for_group(call.group_id()) {
                Ok(c) => c,
                Err(code) => return call.error(code),
            };
            match &call {
                GroupCall::Fetch(req) => Some(GroupAnswer::Fetched(coordinator.offset_fetch(req))),
                GroupCall::Describe(g) => coordinator
                    .describe_groups(std::slice::from_ref(g))
                    .pop()
                    .map(GroupAnswer::Described),
                _ => {
                    self.groups.parked.borrow_mut().insert(token, tx);
                    match call.clone() {
                        GroupCall::Join(r) => coordinator.join_group(token, r, now, &mut out),
                        GroupCall::Sync(r) => coordinator.sync_group(token, r, now, &mut out),
                        GroupCall::Heartbeat(r) => coordinator.heartbeat(token, r, now, &mut out),
                        GroupCall::Leave(r) => coordinator.leave_group(token, r, now, &mut out),
                        GroupCall::Commit(r) => coordinator.offset_commit(token, r, now, &mut out),
                        GroupCall::Delete(g) => {
                            coordinator.delete_groups(token, vec![g], now, &mut out)
                        }
                        GroupCall::OffsetDelete(r) => {
                            coordinator.offset_delete(token, r, now, &mut out)
                        }
                        GroupCall::Fetch(_) | GroupCall::Describe(_) | GroupCall::List(_) => {}
                    }
                    None
                }
            }
        };
        if let Some(answer) = immediate {
            return answer;
        }
        self.drive_groups(out);
        match rx.await.ok() {
            Some(response) => GroupAnswer::Done(response),
            // The coordinator went away (partition resigned) without answering.
            None => call.error(ec::NOT_COORDINATOR),
        }
    }

    /// Delivers a coordinator's answers to the parked requests and writes its records.
    fn drive_groups(self: &Rc<Self>, out: Outputs) {
        for (token, response) in out.responses {
            if let Some(tx) = self.groups.parked.borrow_mut().remove(&token) {
                let _ = tx.send(response);
            }
        }
        for append in out.appends {
            let shard = self.clone();
            glommio::spawn_local(async move {
                let result = match encode_batch(&append.records, storage::now_ms()) {
                    Err(err) => {
                        tracing::error!("encoding group records: {err}");
                        Err(ec::UNKNOWN_SERVER_ERROR)
                    }
                    Ok(batch) if append.records.is_empty() => {
                        drop(batch);
                        Ok(())
                    }
                    Ok(batch) => shard
                        .append_local(
                            OFFSETS_TOPIC,
                            append.partition,
                            &batch,
                            -1,
                            shard.config.group.offsets_commit_timeout_ms as i32,
                        )
                        .await
                        .map(|_| ())
                        .map_err(|(code, message)| {
                            tracing::warn!(
                                "{OFFSETS_TOPIC}-{}: append failed: {message}",
                                append.partition
                            );
                            code
                        }),
                };
                let mut out = Outputs::default();
                if let Some(set) = shard.groups.set.borrow_mut().as_mut() {
                    set.append_completed(append.partition, append.id, result, now_ms(), &mut out);
                }
                shard.drive_groups(out);
            })
            .detach();
        }
    }

    /// Runs the coordinators' timers (session expiry, rebalance and join delays, offset
    /// retention) until the shard stops.
    /// Charges the approximate size of this shard's groups and offsets to its memory budget
    /// (an admitted charge: state already taken in; it makes reads wait sooner).
    fn charge_group_state(&self) {
        let bytes = self
            .groups
            .set
            .borrow()
            .as_ref()
            .map_or(0, CoordinatorSet::approximate_bytes) as u64;
        let mut charge = self.groups.state_charge.borrow_mut();
        match charge.as_mut() {
            Some(charge) => charge.set_admitted(bytes),
            None => *charge = Some(self.memory.charge(bytes)),
        }
    }

    pub async fn run_group_timers(self: Rc<Self>) {
        let mut state_measured_at_ms = 0;
        loop {
            let now = now_ms();
            if now >= state_measured_at_ms + STATE_MEASURE_INTERVAL_MS {
                state_measured_at_ms = now;
                self.charge_group_state();
                self.partitions.charge_producer_state(&self.memory);
            }
            let next = self
                .groups
                .set
                .borrow()
                .as_ref()
                .and_then(CoordinatorSet::next_deadline_ms);
            let wait_ms = match next {
                Some(at) if at <= now => 0,
                Some(at) => (at - now).min(TIMER_POLL_MS),
                None => TIMER_POLL_MS,
            };
            if wait_ms > 0 {
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
                let late_ms = now_ms().saturating_sub(now + wait_ms);
                if late_ms >= TIMER_LATE_WARN_MS {
                    tracing::warn!(
                        "shard {}: group timers woke {late_ms} ms late: the shard did not run; sessions may expire together",
                        self.id
                    );
                }
                continue;
            }
            let mut out = Outputs::default();
            if let Some(set) = self.groups.set.borrow_mut().as_mut() {
                set.tick(now, &mut out);
            }
            self.drive_groups(out);
            // Let the tasks just spawned run before looking at the deadlines again.
            glommio::yield_if_needed().await;
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Proves an append of several `__consumer_offsets` records is one RecordBatch, not one
    //! batch per record, and that every record survives the round trip.
    use super::*;
    use crate::storage::record_batch::validate_batches;

    #[test]
    fn records_of_one_append_share_one_batch() {
        let records: Vec<OffsetsRecord> = (0..5u8)
            .map(|i| OffsetsRecord {
                key: Bytes::from(vec![i; 8]),
                value: (i != 3).then(|| Bytes::from(vec![i; 20])),
            })
            .collect();
        let batch = encode_batch(&records, 1_700_000_000_000).unwrap();
        let mut bytes = batch.clone();
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        assert_eq!(sets.len(), 1, "one batch per append");
        assert_eq!(sets[0].records.len(), 5);
        for (record, original) in sets[0].records.iter().zip(&records) {
            assert_eq!(record.key.as_ref(), Some(&original.key));
            assert_eq!(record.value, original.value);
        }
        // The storage engine's own validator agrees: one batch, the whole buffer.
        let infos = validate_batches(&batch, 1 << 20).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].total_bytes(), batch.len());
    }
}
