//! The data operations on the partitions a shard owns (`server::owned_partitions`): opening
//! and closing them, append, read, offsets, wait-for-data. Each operation has a local form
//! (the partition is here) and a routed form that serves it here or forwards it to the owning
//! shard over the mesh ([`Shard::on_shard`]).
//!
//! Partition directories are `<data dir>/<topic>-<partition>` (Kafka's layout). Which shard
//! owns a partition is in the topic metadata, so a restart reopens each on the same shard.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::kafka::codes;
use crate::kafka::response::Part;
use crate::storage::blocking;
use crate::storage::{self, FileRange, LogConfig, LogError, LogOverrides, PartitionLog, ReadChunk};
use crate::topics::{self, Topic, TopicError};

use super::partition_ops::{
    ConsumerRead, FollowerFetch, PartitionError, PartitionRead, ProduceAppend, Reader, SendChunk,
    ShardReply, ShardRequest,
};
use super::replica::Replica;
use super::shard::Shard;
use crate::cluster::controller::TopicPartition;

/// Storage settings of a topic: the profile's, with the topic's overrides.
pub fn log_config(shard: &Shard, topic: &Topic) -> LogConfig {
    let base = LogConfig::from_limits(&shard.config.profile.storage);
    let int = |key: &str| {
        topic
            .configs
            .get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let overrides = LogOverrides {
        segment_bytes: int("segment.bytes").map(|v| v as u64),
        segment_ms: int("segment.ms").map(|v| v as u64),
        retention_ms: int("retention.ms"),
        retention_bytes: int("retention.bytes"),
        flush: topic
            .configs
            .get("flush.policy")
            .and_then(|v| tuning::FlushPolicy::parse(v)),
        index_interval_bytes: None,
        max_batch_bytes: int("max.message.bytes").map(|v| v as u32),
        cleanup: topic
            .configs
            .get("cleanup.policy")
            .and_then(|v| storage::CleanupPolicy::parse(v)),
        delete_retention_ms: int("delete.retention.ms"),
        min_cleanable_dirty_ratio_ppm: topic
            .configs
            .get("min.cleanable.dirty.ratio")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|r| (r.clamp(0.0, 1.0) * 1_000_000.0).round() as u32),
        min_compaction_lag_ms: int("min.compaction.lag.ms"),
    };
    base.with_overrides(&overrides)
}

fn partition_dir(shard: &Shard, topic: &str, partition: usize) -> std::path::PathBuf {
    crate::topics::partition_dir(&shard.config.data_dir, topic, partition)
}

fn log_error(err: LogError) -> PartitionError {
    (err.error_code(), err.to_string())
}

/// A partition operation forwarded to shard `owner` that got no answer.
pub(super) fn unanswered(owner: usize) -> PartitionError {
    (
        codes::KAFKA_STORAGE_ERROR,
        format!("shard {owner} did not answer"),
    )
}

fn unknown(topic: &str, partition: i32) -> PartitionError {
    (
        codes::UNKNOWN_TOPIC_OR_PARTITION,
        format!("{topic}-{partition} is not hosted here"),
    )
}

impl Shard {
    /// Opens the logs of `topic` that this shard owns.
    pub async fn open_topic(&self, topic: &Topic) -> Result<(), String> {
        let config = log_config(self, topic);
        let mut list: Vec<Option<Rc<PartitionLog>>> = vec![None; topic.shards.len()];
        for (partition, &owner) in topic.shards.iter().enumerate() {
            if owner as usize != self.id || !topic.is_replica(partition, self.config.node_id) {
                continue;
            }
            list[partition] = Some(self.open_partition(topic, partition, config).await?);
        }
        self.partitions
            .logs
            .borrow_mut()
            .insert(topic.name.clone(), list);
        if topic.name == crate::group::OFFSETS_TOPIC {
            self.load_offsets_partitions(topic).await;
        }
        Ok(())
    }

    /// Opens one partition's log (and in cluster mode its replica).
    async fn open_partition(
        &self,
        topic: &Topic,
        partition: usize,
        config: LogConfig,
    ) -> Result<Rc<PartitionLog>, String> {
        let dir = partition_dir(self, &topic.name, partition);
        let log = PartitionLog::open(dir.clone(), config)
            .await
            .map_err(|err| format!("opening {}: {err}", dir.display()))?;
        if self.cluster.is_some() {
            let tp = TopicPartition::new(topic.name.clone(), partition as i32);
            let replica = Replica::open(tp, &log)
                .map_err(|err| format!("opening {}: {err}", dir.display()))?;
            self.partitions
                .replicas
                .borrow_mut()
                .insert((topic.name.clone(), partition as i32), Rc::new(replica));
        }
        Ok(Rc::new(log))
    }

    /// Opens the partitions of a known topic that were added (CreatePartitions) and that
    /// this shard owns; the open ones stay as they are.
    pub async fn open_added_partitions(&self, topic: &Topic) -> Result<(), String> {
        let opened = self
            .partitions
            .logs
            .borrow()
            .get(&topic.name)
            .map_or(0, |list| list.len());
        if opened >= topic.shards.len() {
            return Ok(());
        }
        let config = log_config(self, topic);
        let mut added = Vec::with_capacity(topic.shards.len() - opened);
        for (partition, &owner) in topic.shards.iter().enumerate().skip(opened) {
            if owner as usize != self.id || !topic.is_replica(partition, self.config.node_id) {
                added.push(None);
                continue;
            }
            added.push(Some(self.open_partition(topic, partition, config).await?));
            tracing::info!(
                "shard {} opened added partition {}-{partition}",
                self.id,
                topic.name
            );
        }
        let mut logs = self.partitions.logs.borrow_mut();
        let list = logs.entry(topic.name.clone()).or_default();
        debug_assert_eq!(list.len(), opened, "partitions opened twice");
        list.extend(added);
        Ok(())
    }

    /// Opens the partitions this shard owns (after a restart, the same ones as before).
    pub async fn open_partitions(self: &Rc<Self>) -> Result<(), String> {
        let topics: Vec<Rc<Topic>> = self.topics.borrow().values().cloned().collect();
        let mut opened = Vec::new();
        let mut progress = tuning::progress::Progress::new(
            format!("shard {}: opening topics", self.id),
            "topics",
            topics.len() as u64,
        );
        for topic in topics {
            self.open_topic(&topic).await?;
            progress.advance(1);
            for (partition, &owner) in topic.shards.iter().enumerate() {
                if owner as usize == self.id && topic.is_replica(partition, self.config.node_id) {
                    opened.push(format!("{}-{partition}", topic.name));
                }
            }
        }
        progress.finish();
        // Operators (and the restart tests) read this line to see placement is stable.
        tracing::info!("shard {} opened partitions [{}]", self.id, opened.join(","));
        Ok(())
    }

    /// Closes (flushing) this shard's partitions of a topic being deleted; the control shard
    /// then renames their directories out of the way ([`Shard::delete_topic_data`]).
    pub async fn close_topic_logs(&self, name: &str) {
        self.partitions
            .replicas
            .borrow_mut()
            .retain(|(topic, _), _| topic != name);
        let list = self.partitions.logs.borrow_mut().remove(name);
        for (partition, log) in list.into_iter().flatten().enumerate() {
            if let Some(log) = log {
                if let Err(err) = log.close().await {
                    tracing::warn!("closing {name}-{partition}: {err}");
                }
            }
        }
    }

    /// A topic's replica lists changed (a reassignment step): this shard opens the partitions
    /// it owns that became this broker's, and closes those that are no longer, renaming their
    /// directories away (removed in the background; a restart's sweep finishes a removal a
    /// crash interrupted).
    pub async fn replicas_moved(&self, old: &Topic, new: &Topic) {
        let me = self.config.node_id;
        let config = log_config(self, new);
        // Partitions the old topic did not have are added ones: `open_added_partitions`
        // opens those.
        for (partition, &owner) in new.shards.iter().enumerate().take(old.shards.len()) {
            if owner as usize != self.id {
                continue;
            }
            let was = old.is_replica(partition, me);
            let is = new.is_replica(partition, me);
            let key = (new.name.clone(), partition as i32);
            if is && !was {
                let dir = partition_dir(self, &new.name, partition);
                let opened = match PartitionLog::open(dir.clone(), config).await {
                    Ok(log) => Replica::open(
                        TopicPartition::new(new.name.clone(), partition as i32),
                        &log,
                    )
                    .map(|replica| (log, replica))
                    .map_err(|err| err.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                match opened {
                    Ok((log, replica)) => {
                        tracing::info!("{}-{partition}: a new replica here", new.name);
                        self.partitions
                            .replicas
                            .borrow_mut()
                            .insert(key, Rc::new(replica));
                        let mut logs = self.partitions.logs.borrow_mut();
                        let list = logs.entry(new.name.clone()).or_default();
                        if list.len() < old.shards.len() {
                            list.resize(old.shards.len(), None);
                        }
                        list[partition] = Some(Rc::new(log));
                    }
                    Err(err) => tracing::error!("opening {}: {err}", dir.display()),
                }
            } else if was && !is {
                self.partitions.replicas.borrow_mut().remove(&key);
                let log = self
                    .partitions
                    .logs
                    .borrow_mut()
                    .get_mut(&new.name)
                    .and_then(|list| list.get_mut(partition))
                    .and_then(Option::take);
                if let Some(log) = log {
                    if let Err(err) = log.close().await {
                        tracing::warn!("closing {}-{partition}: {err}", new.name);
                    }
                }
                let (data_dir, topic) = (self.config.data_dir.clone(), new.clone());
                let renamed = blocking::run(move || {
                    topics::rename_partition_for_deletion(&data_dir, &topic, partition)
                })
                .await;
                match renamed {
                    Ok(Some(dir)) => {
                        tracing::info!(
                            "{}-{partition}: replica moved away, removing its log",
                            new.name
                        );
                        glommio::spawn_local(blocking::run(move || {
                            topics::remove_deleted_dirs(&[dir])
                        }))
                        .detach();
                    }
                    Ok(None) => {}
                    Err(err) => tracing::error!("{}-{partition}: {err}", new.name),
                }
            }
        }
    }

    /// On the control shard, once every shard closed the logs of `topic`: renames its
    /// partition directories out of the way (durably), deletes it from the store, then
    /// removes the directories in the background. A crash at any point leaves either the
    /// topic with its data, or `-delete` directories that the next start sweeps (completing
    /// the deletion), never old files under the name a new topic would use.
    pub async fn delete_topic_data(&self, topic: &Topic) -> Result<Topic, TopicError> {
        let store = self
            .store
            .as_ref()
            .expect("the control shard holds the store");
        let (data_dir, closed) = (self.config.data_dir.clone(), topic.clone());
        let renamed =
            blocking::run(move || topics::rename_for_deletion(&data_dir, &closed)).await?;
        let deleted = store.borrow_mut().delete(&topic.name);
        match &deleted {
            Ok(_) => {
                glommio::spawn_local(blocking::run(move || topics::remove_deleted_dirs(&renamed)))
                    .detach();
            }
            Err(err) => tracing::error!(
                "topic `{}`: its directories were renamed for deletion but the store could \
                 not be changed ({err}); the next start completes the deletion",
                topic.name
            ),
        }
        deleted
    }

    /// Flushes and closes every partition this shard owns.
    pub async fn close_partitions(self: &Rc<Self>) -> Result<(), String> {
        let mut first_error = None;
        for log in self.partitions.all() {
            if let Err(err) = log.close().await {
                tracing::error!("shard {}: closing {}: {err}", self.id, log.dir().display());
                first_error.get_or_insert(err.to_string());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies retention, then compaction, to every owned partition; runs periodically.
    pub async fn apply_retention(&self) {
        let now = storage::now_ms();
        for log in self.partitions.all() {
            if let Err(err) = log.apply_retention(now).await {
                tracing::warn!("retention of {}: {err}", log.dir().display());
            }
            if let Err(err) = log.clean(now).await {
                tracing::warn!("compaction of {}: {err}", log.dir().display());
            }
        }
    }

    // ---- local operations (the partition is on this shard) ----

    /// Appends to a partition of this shard: on a single node straight to its log, answering
    /// once the flush policy's promise holds (acks 1 and -1) or once copied (acks 0, nobody
    /// hears the answer), and refusing acks -1 with NOT_ENOUGH_REPLICAS when the topic's
    /// `min.insync.replicas` is above 1 (as Kafka with one replica); in cluster mode as its leader, with `acks` and `timeout_ms` as the
    /// produce asked.
    pub async fn append_local(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        records: &[u8],
        acks: i16,
        timeout_ms: i32,
    ) -> Result<storage::AppendInfo, PartitionError> {
        if self.cluster.is_some() {
            let Some(found) = self.topic(topic) else {
                return Err(unknown(topic, partition));
            };
            return self
                .append_as_leader(&found, partition, records, acks, timeout_ms)
                .await;
        }
        if acks == -1 {
            // Kafka's rule holds on one node too: its single replica is the whole ISR.
            let min_insync = self
                .topic(topic)
                .map_or(1, |found| super::replication::min_insync(self, &found));
            if min_insync > 1 {
                return Err((
                    super::replication::NOT_ENOUGH_REPLICAS,
                    format!(
                        "{topic}-{partition}: a single node is one in-sync replica, fewer than \
                         min.insync.replicas={min_insync}"
                    ),
                ));
            }
        }
        let log = self
            .partitions
            .get(topic, partition)
            .ok_or_else(|| unknown(topic, partition))?;
        let appended = if acks == 0 {
            log.append_queued(records, 0).await
        } else {
            log.append(records, 0).await
        };
        appended.map_err(|err| {
            self.note_disk_fault(topic, partition, &log);
            log_error(err)
        })
    }

    /// Takes the partition offline (for Metadata and `topics describe`) if its log failed on
    /// a disk fault; the log itself already refuses appends. In a cluster the controller is
    /// told (`/offline_replicas/<id>`), and moves the partition's leadership and ISR place to
    /// the other replicas.
    pub(super) fn note_disk_fault(&self, topic: &str, partition: i32, log: &PartitionLog) {
        let Some(reason) = log.failure() else {
            return;
        };
        if self.offline.mark(topic, partition, &reason) {
            if let Some(cluster) = &self.cluster {
                let tp = crate::cluster::controller::TopicPartition::new(topic, partition);
                let command = crate::cluster::Command::ReplicaOffline { tp };
                if cluster.commands.try_send(command).is_err() {
                    tracing::error!(
                        "{topic}-{partition}: the cluster agent's queue is full or stopped; \
                         the controller is not told that this replica failed"
                    );
                }
            }
        }
    }

    /// A consumer's read, only below the high watermark: on a single node the end of what the
    /// flush policy promises ([`PartitionLog::promised_end_offset`]), in cluster mode the
    /// replicated one, and only at the leader (`current_leader_epoch` -1: not checked).
    pub async fn read_local(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        current_leader_epoch: i32,
    ) -> PartitionRead<Part> {
        let Some(log) = self.partitions.get(topic, partition) else {
            return PartitionRead::error(codes::UNKNOWN_TOPIC_OR_PARTITION);
        };
        // An offline partition is not read (as Kafka treats a replica on an offline log
        // directory) until a restart has recovered its files.
        if log.failure().is_some() {
            self.note_disk_fault(topic, partition, &log);
            return PartitionRead::error(codes::KAFKA_STORAGE_ERROR);
        }
        // What a consumer may read: below the promised end on a single node (written or
        // synced, by the flush policy), below the high watermark of a cluster leader.
        let high_watermark = if self.cluster.is_none() {
            log.promised_end_offset()
        } else {
            match self.consumer_bounds(topic, partition, current_leader_epoch) {
                Ok(high_watermark) => high_watermark,
                Err(code) => return PartitionRead::error(code),
            }
        };
        // What is below the high watermark was appended: the empty answer below and the
        // read's bound both take it for a position within the log.
        debug_assert!(
            high_watermark <= log.log_end_offset(),
            "{topic}-{partition}: HW {high_watermark} > LEO {}",
            log.log_end_offset()
        );
        // Between the high watermark and the log end: nothing to read yet.
        if offset >= high_watermark && offset <= log.log_end_offset() {
            return PartitionRead {
                error_code: codes::NONE,
                high_watermark,
                log_start_offset: log.log_start_offset(),
                chunks: Vec::new(),
            };
        }
        let mut read = self
            .read_log(
                &log,
                topic,
                partition,
                offset,
                max_bytes,
                Some(high_watermark),
            )
            .await;
        // Errors too: a client never sees a high watermark past what it may read.
        read.high_watermark = high_watermark;
        read
    }

    /// Reads `log` from `offset`, below `max_offset` when given.
    pub async fn read_log(
        &self,
        log: &PartitionLog,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
    ) -> PartitionRead<Part> {
        match log.read(offset, max_bytes, max_offset).await {
            Ok(result) => PartitionRead {
                error_code: codes::NONE,
                high_watermark: result.log_end_offset,
                log_start_offset: result.log_start_offset,
                chunks: result
                    .chunks
                    .into_iter()
                    .map(|chunk| match chunk {
                        ReadChunk::File(range) => Part::File(range),
                        ReadChunk::Memory(bytes) => Part::Memory(bytes),
                        ReadChunk::Cached(bytes) => Part::Cached(bytes),
                    })
                    .collect(),
            },
            Err(err) => PartitionRead {
                error_code: {
                    if !matches!(err, LogError::OffsetOutOfRange { .. }) {
                        tracing::warn!(
                            "shard {}: read {topic}-{partition}@{offset}: {err}",
                            self.id
                        );
                    }
                    err.error_code()
                },
                high_watermark: log.log_end_offset(),
                log_start_offset: log.log_start_offset(),
                chunks: Vec::new(),
            },
        }
    }

    pub async fn list_offset_local(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<(i64, i64), PartitionError> {
        let log = self
            .partitions
            .get(topic, partition)
            .ok_or_else(|| unknown(topic, partition))?;
        match timestamp {
            -2 => Ok((-1, log.log_start_offset())),
            -1 if self.cluster.is_some() => self
                .consumer_bounds(topic, partition, -1)
                .map(|high_watermark| (-1, high_watermark))
                .map_err(|code| (code, format!("{topic}-{partition}"))),
            -1 => Ok((-1, log.promised_end_offset())),
            // MAX_TIMESTAMP: among what consumers may read.
            -3 => {
                let bound = if self.cluster.is_some() {
                    self.consumer_bounds(topic, partition, -1)
                        .map_err(|code| (code, format!("{topic}-{partition}")))?
                } else {
                    log.promised_end_offset()
                };
                match log.max_timestamp_offset(bound).await.map_err(log_error)? {
                    Some(found) => Ok((found.timestamp_ms, found.offset)),
                    None => Ok((-1, -1)),
                }
            }
            ts if ts >= 0 => match log.offset_for_timestamp(ts).await.map_err(log_error)? {
                Some(found) => Ok((found.timestamp_ms, found.offset)),
                None => Ok((-1, -1)),
            },
            _ => Err((
                codes::UNSUPPORTED_VERSION,
                format!("timestamp {timestamp} is not supported"),
            )),
        }
    }

    /// Resolves when any of the local partitions has data at or after its offset that the
    /// reader may see: appended, for a follower (`reader` Follower); below the high watermark,
    /// for a consumer (woken when it moves, not by appends it cannot read yet): a cluster
    /// leader's replicated one, or a single node's promised end.
    pub async fn wait_local(
        &self,
        wanted: &[(String, i32, i64)],
        max_wait: Duration,
        reader: Reader,
    ) {
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
        for (topic, partition, offset) in wanted {
            let offset = *offset;
            match (reader, self.partitions.replica(topic, *partition)) {
                (Reader::Consumer, Some(replica)) if self.cluster.is_some() => {
                    waits.push(Box::pin(async move {
                        replica.wait_high_watermark_past(offset).await
                    }));
                }
                (Reader::Consumer, _) if self.cluster.is_none() => {
                    if let Some(log) = self.partitions.get(topic, *partition) {
                        waits.push(Box::pin(
                            async move { log.wait_promised_past(offset).await },
                        ));
                    }
                }
                _ => {
                    if let Some(log) = self.partitions.get(topic, *partition) {
                        waits.push(Box::pin(async move { log.wait_for_data(offset).await }));
                    }
                }
            }
        }
        waits.push(Box::pin(glommio::timer::sleep(max_wait)));
        FirstOf(waits).await
    }

    // ---- routed operations (forward to the owner when it is another shard) ----

    pub(super) fn owner(&self, topic: &Topic, partition: i32) -> Option<usize> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.shards.get(p))
            .map(|&s| s as usize)
    }

    /// The appends of one Produce, answered in the order of `appends`. Each owning shard gets
    /// its partitions in one mesh request; every partition is appended at once (so the
    /// partitions of a shard share its group commits and each shard's wait overlaps the
    /// others').
    pub async fn append_many(
        self: &Rc<Self>,
        appends: Vec<(&Topic, i32, Bytes)>,
        acks: i16,
        timeout_ms: i32,
    ) -> Vec<Result<storage::AppendInfo, PartitionError>> {
        let mut answers = Vec::with_capacity(appends.len());
        let mut routed = Vec::with_capacity(appends.len());
        for (at, (topic, partition, records)) in appends.into_iter().enumerate() {
            let owner = self
                .owner(topic, partition)
                .ok_or_else(|| unknown(&topic.name, partition))
                .and_then(|owner| self.check_leader(&topic.name, partition).map(|()| owner));
            match owner {
                Ok(owner) => {
                    let append = ProduceAppend {
                        topic: topic.name.clone(),
                        partition,
                        records,
                    };
                    routed.push((at, owner, append));
                    answers.push(None);
                }
                Err(err) => answers.push(Some(Err(err))),
            }
        }
        let shard = self.clone();
        let served = self
            .per_owner(routed, move |owner, list| {
                let shard = shard.clone();
                async move {
                    shard
                        .on_shard(
                            owner,
                            list,
                            |list| shard.append_local_all(list, acks, timeout_ms),
                            |appends| ShardRequest::Append {
                                appends,
                                acks,
                                timeout_ms,
                            },
                            |reply| match reply {
                                Some(ShardReply::Appended(results)) => results,
                                _ => Vec::new(),
                            },
                        )
                        .await
                }
            })
            .await;
        for (at, owner, result) in served {
            answers[at] = Some(result.unwrap_or_else(|| Err(unanswered(owner))));
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unanswered(self.id))))
            .collect()
    }

    /// This shard's appends of its own partitions, all at once, answered in order.
    async fn append_local_all(
        self: &Rc<Self>,
        list: Vec<ProduceAppend>,
        acks: i16,
        timeout_ms: i32,
    ) -> Vec<Result<storage::AppendInfo, PartitionError>> {
        let tasks: Vec<_> = list
            .into_iter()
            .map(|append| {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    shard
                        .append_local(
                            &append.topic,
                            append.partition,
                            &append.records,
                            acks,
                            timeout_ms,
                        )
                        .await
                })
                .detach()
            })
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.unwrap_or_else(|| {
                Err((codes::KAFKA_STORAGE_ERROR, "append was cancelled".into()))
            }));
        }
        results
    }

    /// Runs `items` (each with where its answer goes and its owning shard) in one group per
    /// owner, all owners at once (a group is awaited in place when it is the only one);
    /// `run(owner, group)` answers a group in order. Gives `(at, owner, answer)` for every
    /// item; `None` where its group answered fewer than it was given.
    async fn per_owner<T, R, F, Fut>(
        &self,
        items: Vec<(usize, usize, T)>,
        run: F,
    ) -> Vec<(usize, usize, Option<R>)>
    where
        T: 'static,
        R: 'static,
        F: Fn(usize, Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>> + 'static,
    {
        let mut by_owner: Vec<(Vec<usize>, Vec<T>)> = Vec::new();
        by_owner.resize_with(self.shard_count, Default::default);
        for (at, owner, item) in items {
            by_owner[owner].0.push(at);
            by_owner[owner].1.push(item);
        }
        let busy = by_owner.iter().filter(|(at, _)| !at.is_empty()).count();
        let mut groups = Vec::with_capacity(busy);
        for (owner, (at, list)) in by_owner.into_iter().enumerate() {
            if at.is_empty() {
                continue;
            }
            let answers = run(owner, list);
            let group = if busy == 1 {
                Group::Inline(Box::pin(answers))
            } else {
                Group::Task(glommio::spawn_local(answers).detach())
            };
            groups.push((owner, at, group));
        }
        let mut served = Vec::new();
        for (owner, at, group) in groups {
            let answers = match group {
                Group::Inline(answers) => Some(answers.await),
                Group::Task(task) => task.await,
            };
            let mut answers = answers.unwrap_or_default().into_iter();
            served.extend(at.into_iter().map(|at| (at, owner, answers.next())));
        }
        served
    }

    /// A consumer's read of one partition (see [`Self::read_many`]).
    pub async fn read(self: &Rc<Self>, topic: &Topic, read: ConsumerRead) -> PartitionRead<Part> {
        self.read_many(vec![(topic, read)])
            .await
            .pop()
            .unwrap_or_else(|| PartitionRead::error(codes::KAFKA_STORAGE_ERROR))
    }

    /// A consumer's reads of the partitions of one Fetch, answered in the order of `reads`.
    /// Each owning shard gets its partitions in one mesh call, and the owners read at once:
    /// a Fetch costs one hop per other shard, not one per partition, and waits for the
    /// slowest owner instead of the sum of them.
    pub async fn read_many(
        self: &Rc<Self>,
        reads: Vec<(&Topic, ConsumerRead)>,
    ) -> Vec<PartitionRead<Part>> {
        let mut answers: Vec<Option<PartitionRead<Part>>> = Vec::with_capacity(reads.len());
        let mut routed = Vec::with_capacity(reads.len());
        for (at, (topic, read)) in reads.into_iter().enumerate() {
            let owner = self
                .owner(topic, read.partition)
                .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)
                .and_then(|owner| {
                    self.check_leader(&topic.name, read.partition)
                        .map(|()| owner)
                        .map_err(|(code, _)| code)
                });
            match owner {
                Ok(owner) => {
                    routed.push((at, owner, read));
                    answers.push(None);
                }
                Err(code) => answers.push(Some(PartitionRead::error(code))),
            }
        }
        let shard = self.clone();
        let served = self
            .per_owner(routed, move |owner, list| {
                let shard = shard.clone();
                async move { shard.read_on(owner, list).await }
            })
            .await;
        for (at, _, read) in served {
            answers[at] = read;
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| PartitionRead::error(codes::KAFKA_STORAGE_ERROR)))
            .collect()
    }

    /// Reads `list` on shard `owner` (one mesh call when that is another shard).
    async fn read_on(
        self: &Rc<Self>,
        owner: usize,
        list: Vec<ConsumerRead>,
    ) -> Vec<PartitionRead<Part>> {
        self.on_shard(
            owner,
            list,
            |list| self.read_local_all(list),
            ShardRequest::Read,
            |reply| match reply {
                Some(ShardReply::Read(reads)) => reads.into_iter().map(from_send_chunks).collect(),
                // Fewer answers than reads: the rest get KAFKA_STORAGE_ERROR.
                _ => Vec::new(),
            },
        )
        .await
    }

    /// This shard's reads of its own partitions, in order.
    async fn read_local_all(&self, list: Vec<ConsumerRead>) -> Vec<PartitionRead<Part>> {
        let mut reads = Vec::with_capacity(list.len());
        for read in list {
            reads.push(
                self.read_local(
                    &read.topic,
                    read.partition,
                    read.offset,
                    read.max_bytes,
                    read.current_leader_epoch,
                )
                .await,
            );
        }
        reads
    }

    /// A follower's Fetch of one partition, at the shard owning it.
    pub async fn follower_read(
        self: &Rc<Self>,
        topic: &Topic,
        fetch: FollowerFetch,
    ) -> (PartitionRead<Part>, Option<(i32, i64)>) {
        let Some(owner) = self.owner(topic, fetch.tp.partition) else {
            return (
                PartitionRead::error(codes::UNKNOWN_TOPIC_OR_PARTITION),
                None,
            );
        };
        self.on_shard(
            owner,
            fetch,
            |fetch| async move { self.follower_read_local(&fetch).await },
            ShardRequest::FollowerRead,
            |reply| match reply {
                Some(ShardReply::FollowerRead(read, diverging)) => {
                    (from_send_chunks(read), diverging)
                }
                _ => (PartitionRead::error(codes::KAFKA_STORAGE_ERROR), None),
            },
        )
        .await
    }

    pub async fn list_offset(
        self: &Rc<Self>,
        topic: &Topic,
        partition: i32,
        timestamp: i64,
    ) -> Result<(i64, i64), PartitionError> {
        let owner = self
            .owner(topic, partition)
            .ok_or_else(|| unknown(&topic.name, partition))?;
        self.check_leader(&topic.name, partition)?;
        self.on_shard(
            owner,
            (),
            |()| self.list_offset_local(&topic.name, partition, timestamp),
            |()| ShardRequest::ListOffset {
                topic: topic.name.clone(),
                partition,
                timestamp,
            },
            |reply| match reply {
                Some(ShardReply::Offset(result)) => result,
                _ => Err(unanswered(owner)),
            },
        )
        .await
    }

    /// Waits until one of `wanted` (topic, partition, offset) has data, on whichever shards
    /// own them, or `max_wait` passes.
    pub async fn wait_any(
        self: &Rc<Self>,
        wanted: Vec<(Rc<Topic>, i32, i64)>,
        max_wait: Duration,
        reader: Reader,
    ) {
        let mut by_shard: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); self.shard_count];
        for (topic, partition, offset) in &wanted {
            if let Some(owner) = self.owner(topic, *partition) {
                by_shard[owner].push((topic.name.clone(), *partition, *offset));
            }
        }
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
        for (owner, list) in by_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let shard = self.clone();
            waits.push(Box::pin(async move {
                let shard = &shard;
                shard
                    .on_shard(
                        owner,
                        list,
                        |list| async move { shard.wait_local(&list, max_wait, reader).await },
                        |wanted| ShardRequest::WaitForData {
                            wanted,
                            max_wait,
                            reader,
                        },
                        drop,
                    )
                    .await
            }));
        }
        waits.push(Box::pin(glommio::timer::sleep(max_wait)));
        FirstOf(waits).await
    }

    /// Serves a data request forwarded by another shard.
    pub async fn handle_data_request(self: &Rc<Self>, request: ShardRequest) -> ShardReply {
        match request {
            ShardRequest::Append {
                appends,
                acks,
                timeout_ms,
            } => ShardReply::Appended(self.append_local_all(appends, acks, timeout_ms).await),
            ShardRequest::Read(list) => ShardReply::Read(
                self.read_local_all(list)
                    .await
                    .into_iter()
                    .map(to_send_chunks)
                    .collect(),
            ),
            ShardRequest::EpochEnd {
                tp,
                current_leader_epoch,
                leader_epoch,
            } => {
                ShardReply::EpochEnd(self.epoch_end_local(&tp, current_leader_epoch, leader_epoch))
            }
            ShardRequest::FollowerRead(fetch) => {
                let (read, diverging) = self.follower_read_local(&fetch).await;
                ShardReply::FollowerRead(to_send_chunks(read), diverging)
            }
            ShardRequest::ListOffset {
                topic,
                partition,
                timestamp,
            } => ShardReply::Offset(self.list_offset_local(&topic, partition, timestamp).await),
            ShardRequest::WaitForData {
                wanted,
                max_wait,
                reader,
            } => {
                self.wait_local(&wanted, max_wait, reader).await;
                ShardReply::Done
            }
            ShardRequest::DescribeProducers { topic, partition } => {
                ShardReply::Producers(self.producers_local(&topic, partition).await)
            }
            ShardRequest::DeleteRecords {
                topic,
                partition,
                offset,
                timeout_ms,
            } => ShardReply::LogStart(
                self.delete_records_local(&topic, partition, offset, timeout_ms)
                    .await,
            ),
            _ => ShardReply::Done,
        }
    }
}

/// A read made sendable to another shard: file ranges travel as their own descriptors, so
/// the receiving shard splices from them; cached bytes travel as a copy.
fn to_send_chunks(read: PartitionRead<Part>) -> PartitionRead<SendChunk> {
    let mut chunks = Vec::with_capacity(read.chunks.len());
    let mut error_code = read.error_code;
    for part in read.chunks {
        match part {
            Part::Memory(bytes) => chunks.push(SendChunk::Memory(bytes)),
            // The batch cache's buffers stay on their shard: the bytes travel as a copy.
            Part::Cached(bytes) => chunks.push(SendChunk::Memory(Bytes::copy_from_slice(&bytes))),
            Part::File(range) => {
                // SAFETY: dup of a descriptor kept open by `range.file`.
                let fd = unsafe { libc::dup(range.file.raw_fd()) };
                if fd < 0 {
                    error_code = codes::KAFKA_STORAGE_ERROR;
                    chunks.clear();
                    break;
                }
                // SAFETY: fd is a fresh descriptor owned by nobody else.
                let file = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
                chunks.push(SendChunk::File {
                    file,
                    position: range.position,
                    len: range.len,
                });
            }
        }
    }
    PartitionRead {
        error_code,
        high_watermark: read.high_watermark,
        log_start_offset: read.log_start_offset,
        chunks,
    }
}

/// The other side of [`to_send_chunks`].
fn from_send_chunks(read: PartitionRead<SendChunk>) -> PartitionRead<Part> {
    PartitionRead {
        error_code: read.error_code,
        high_watermark: read.high_watermark,
        log_start_offset: read.log_start_offset,
        chunks: read
            .chunks
            .into_iter()
            .map(|chunk| match chunk {
                SendChunk::Memory(bytes) => Part::Memory(bytes),
                SendChunk::File {
                    file,
                    position,
                    len,
                } => Part::File(FileRange {
                    file: Rc::new(file),
                    position,
                    len,
                }),
            })
            .collect(),
    }
}

/// One owner's group in [`Shard::per_owner`]: awaited in place when it is the only owner,
/// else a task, so every owner works at once.
enum Group<R> {
    Inline(Pin<Box<dyn Future<Output = Vec<R>>>>),
    Task(glommio::task::JoinHandle<Vec<R>>),
}

/// Resolves when the first of its futures does.
struct FirstOf(Vec<Pin<Box<dyn Future<Output = ()>>>>);

impl Future for FirstOf {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        for future in self.0.iter_mut() {
            if future.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
