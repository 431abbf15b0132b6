//! [`PartitionLog`]: the log of one partition, a list of segments with one active appender.
//!
//! One log is owned by one shard (glommio executor): it is `!Send`, shared between that
//! shard's tasks by reference (`Rc<PartitionLog>`), and its methods take `&self`.
//!
//! Appends: validate every batch ([`super::record_batch`]), then under the append gate (FIFO,
//! so offsets follow arrival order) roll the segment if needed, make room in the appender's
//! aligned buffer for the whole record set (when it fits one buffer, so no write round sees
//! part of it), assign offsets, copy the batches into that buffer and rewrite `baseOffset` and
//! `partitionLeaderEpoch` there. Under [`FlushPolicy::Always`] the caller then waits for its
//! bytes to be written and fdatasync'ed: whichever waiting task finds no write in flight runs
//! the next write round for everyone pending (group commit). Under `never` and `interval_ms`
//! a background task (spawned when the disk is idle) writes back to back while data is
//! pending, grouping every append copied before each write, and the caller waits for the write
//! holding its bytes; under [`FlushPolicy::IntervalMs`] a timer task syncs written data at most
//! that much later. [`PartitionLog::append_queued`] returns after the copy instead.
//!
//! The promise: [`PartitionLog::promised_end_offset`] is the written end under `never` and
//! `interval_ms` and the synced end under `always`. Acknowledged appends are below it, and it
//! is a single node's high watermark: consumers read below it and long-poll on it
//! ([`PartitionLog::wait_promised_past`]), so what they saw survives what the policy survives.
//!
//! Zeros ahead (`preallocate_zeroes`): a task writes zeros into the active segment's
//! preallocated blocks past the data, one chunk at a time and each under the writer's turn, so
//! it only runs between write rounds and never beside one; after a burst it fdatasyncs them.
//! An append landing on them overwrites written blocks inside the file's size, so its
//! fdatasync has no size or extent change to write (a journal commit on a journaled ext4,
//! metadata blocks written in place without one).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use tuning::FlushPolicy;

use super::append_gate::AppendGate;
use super::blocking;
use super::error::{BatchError, LogError};
use super::log_cleaner::refuse_keyless_records;
use super::log_config::LogConfig;
use super::notify::Signal;
use super::producer_rebuild::{self, RebuildReport};
use super::producer_snapshot;
use super::producer_state::{ProducerTable, Refusal, Verdict};
use super::record_batch::{
    check_crc_as_computed, check_crcs, set_base_offset, set_partition_leader_epoch,
    validate_batches, validate_batches_deferring_crc, validate_stored_batches, BatchInfo,
    CRC_RANGE_START,
};
use super::recovery::{self, RecoveryReport, CLEAN_SHUTDOWN_FILE};
use super::segment::{now_ms, Segment};
use super::segment_appender::PAGE_BYTES;
use tuning::fs::sync_dir;

/// A task that runs write rounds hands the role on after this many back-to-back rounds, so
/// its own append does not wait behind an endless stream of others.
const MAX_ROUNDS_PER_WRITER: usize = 16;

/// One write of zeros ahead of the appends (`preallocate_zeroes`): a write round that wants
/// the disk meanwhile waits for at most this much.
const ZERO_CHUNK_BYTES: u64 = 128 * 1024;

/// Counters of one log since it was opened (for benchmarks, metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Successful append calls.
    pub appends: u64,
    /// O_DIRECT write rounds (each one write of one or more appends).
    pub write_rounds: u64,
    /// fdatasync calls on segment files from the append path (rolls and close included).
    pub syncs: u64,
    /// Bytes handed to O_DIRECT writes, padding and rewritten tail pages included.
    pub bytes_written: u64,
    /// Time spent waiting for O_DIRECT writes and for fdatasyncs of the append path,
    /// microseconds (what the disk took, as opposed to copying and bookkeeping).
    pub write_us: u64,
    pub sync_us: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record (the Produce response's `base_offset`).
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Batches and records appended.
    pub batches: u32,
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// Largest maxTimestamp of the appended batches.
    pub max_timestamp_ms: i64,
    /// The log start offset after the append (the Produce response's `log_start_offset`).
    pub log_start_offset: i64,
}

pub(crate) struct LogState {
    pub segments: VecDeque<Segment>,
    pub log_start_offset: i64,
    /// Log end offset: the offset the next appended record gets.
    pub next_offset: i64,
    /// Every offset below is in a file.
    pub written_offset: i64,
    /// Every offset below was fdatasync'ed.
    pub synced_offset: i64,
    /// What the flush policy promises: `written_offset` under `never` and `interval_ms`,
    /// `synced_offset` under `always`; never moves back (not even when the policy changes).
    /// A single node's high watermark: acknowledgements wait for it, consumers read below it.
    pub promised_offset: i64,
    pub writer_busy: bool,
    /// A background writer task was spawned and has not started yet.
    pub write_kicked: bool,
    pub failed: Option<String>,
    pub closed: bool,
    pub last_sync: Instant,
    pub sync_timer_armed: bool,
    /// A task writes zeros ahead of the appends ([`LogInner::kick_zero_fill`]).
    pub zero_fill_running: bool,
}

impl LogState {
    pub fn active(&self) -> &Segment {
        self.segments
            .back()
            .expect("a log always has an active segment")
    }
    pub fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("a log always has an active segment")
    }
    /// Index in `segments` of the segment holding `offset` (or the first one after it).
    pub fn segment_index_for(&self, offset: i64) -> usize {
        let n = self.segments.partition_point(|s| s.base_offset <= offset);
        n.saturating_sub(1)
    }
    pub fn segment_by_base(&self, base_offset: i64) -> Option<&Segment> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset < base_offset);
        self.segments
            .get(i)
            .filter(|s| s.base_offset == base_offset)
    }
}

pub(crate) struct LogInner {
    pub dir: PathBuf,
    pub config: Cell<LogConfig>,
    pub state: RefCell<LogState>,
    /// One appender at a time copies into the buffer (FIFO), rolls happen under it too.
    pub append_gate: AppendGate,
    /// Write rounds and rolls finished.
    pub progress: Signal,
    /// The log end offset moved (or the log closed): followers' long-polls wake on it.
    pub new_data: Signal,
    /// The promised end offset moved (or the log closed): consumers' long-polls wake on it.
    pub promised: Signal,
    pub recovery: RecoveryReport,
    pub stats: Cell<LogStats>,
    /// Background syncs of rolled segments take turns here, so they finish in roll order.
    pub segment_sync_gate: Rc<Semaphore>,
    /// Idempotent producers' recent batches (changed under the append gate).
    pub producers: RefCell<ProducerTable>,
    /// How `producers` was rebuilt at open.
    pub producer_rebuild: RebuildReport,
}

/// The log of one partition. See the module documentation.
pub struct PartitionLog {
    pub(crate) inner: Rc<LogInner>,
}

/// How far an append's bytes must have gone when it returns (see [`PartitionLog::append`]
/// and [`PartitionLog::append_queued`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckAt {
    /// The flush policy's promise ([`PartitionLog::promised_end_offset`]).
    Promise,
    /// Under `never` and `interval_ms` only copied into the write buffer.
    Queued,
}

/// An fdatasync running while the next round is written.
struct PendingSync {
    task: glommio::Task<std::io::Result<u64>>,
    /// Every offset below was written before the sync started.
    target_offset: i64,
    path: PathBuf,
}

/// Clears `writer_busy` and wakes waiters when a write round or roll ends, however it ends.
struct WriterGuard<'a> {
    inner: &'a LogInner,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().writer_busy = false;
        self.inner.progress.notify();
    }
}

impl PartitionLog {
    /// Opens the log in `dir` (created if missing), recovering it as described in
    /// [`super::recovery`]: the active segment is verified and a torn or corrupt tail is cut
    /// off; missing or corrupt indexes are rebuilt. Then the idempotent producers' table is
    /// rebuilt from the newest producer snapshot and the batch headers after it
    /// ([`super::producer_rebuild`]).
    pub async fn open(
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<PartitionLog, LogError> {
        let dir = dir.into();
        let mut config = config;
        config.write_buffer_bytes = config.effective_write_buffer_bytes();
        let (segments, report) = recovery::recover(&dir, &config).await?;
        for sealed in segments.iter().rev().skip(1) {
            sealed.close_index_handles();
        }
        // Idempotent producers' recent batches: the newest snapshot and the log after it.
        let (producers, producer_rebuild) = producer_rebuild::rebuild(&dir, &segments).await;
        let next_offset = segments.back().map_or(0, |s| s.next_offset);
        // DeleteRecords may have moved the start inside the first segment.
        let first_base = segments.front().map_or(0, |s| s.base_offset);
        let log_start_offset = recovery::read_log_start(&dir, first_base, next_offset);
        let state = LogState {
            segments,
            log_start_offset,
            next_offset,
            written_offset: next_offset,
            synced_offset: next_offset,
            promised_offset: next_offset,
            writer_busy: false,
            write_kicked: false,
            failed: None,
            closed: false,
            last_sync: Instant::now(),
            sync_timer_armed: false,
            zero_fill_running: false,
        };
        Ok(PartitionLog {
            inner: Rc::new(LogInner {
                dir,
                config: Cell::new(config),
                state: RefCell::new(state),
                append_gate: AppendGate::default(),
                progress: Signal::default(),
                new_data: Signal::default(),
                promised: Signal::default(),
                recovery: report,
                stats: Cell::new(LogStats::default()),
                segment_sync_gate: Rc::new(Semaphore::new(1)),
                producers: RefCell::new(producers),
                producer_rebuild,
            }),
        })
    }

    /// Appends the concatenated RecordBatch v2 `batches` (the records field of a Produce
    /// request for this partition) atomically: all batches or none. Offsets are assigned
    /// consecutively from the log end offset; `baseOffset` and `partitionLeaderEpoch` are
    /// rewritten, nothing else. It returns once the flush policy's promise holds for every
    /// appended offset ([`PartitionLog::promised_end_offset`] passed them): under
    /// [`FlushPolicy::Always`] the bytes are written and fdatasync'ed (group commit); under
    /// `never` and `interval_ms` the O_DIRECT write holding them completed (the kernel has
    /// them), written by a background task that groups every append pending at the time.
    ///
    /// Errors: [`LogError::Batch`] (with CORRUPT_MESSAGE / INVALID_RECORD / MESSAGE_TOO_LARGE)
    /// for bad input, [`LogError::Io`] / [`LogError::Failed`] / [`LogError::Closed`] (all
    /// KAFKA_STORAGE_ERROR) for the disk.
    pub async fn append(&self, batches: &[u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        self.append_as(batches, Some(leader_epoch), AckAt::Promise)
            .await
    }

    /// [`PartitionLog::append`] that, under `never` and `interval_ms`, returns once the bytes
    /// are in the write buffer (the background write follows; under `always` it still waits
    /// for the fdatasync). For callers that promise nothing yet: a produce with acks=0, and a
    /// cluster leader, which counts its own write toward the high watermark separately
    /// ([`PartitionLog::wait_written`]).
    pub async fn append_queued(
        &self,
        batches: &[u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.append_as(batches, Some(leader_epoch), AckAt::Queued)
            .await
    }

    /// Appends batches fetched from the partition's leader, as a follower: they keep the
    /// offsets and leader epochs the leader gave them (the first must start at this log's
    /// end, each the next), idempotent producers are recorded but not judged (the leader
    /// did), and it returns only once the bytes are in the file (fdatasync'ed too under
    /// [`FlushPolicy::Always`]): a follower reports an offset to its leader only after its
    /// own write of it, so an acknowledged record is on every ISR member's storage.
    pub async fn append_replica(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_as(batches, None, AckAt::Promise).await
    }

    /// `leader_epoch`: Some for a leader's append (offsets and epoch assigned here), None for
    /// a follower's (kept as they came).
    async fn append_as(
        &self,
        batches: &[u8],
        leader_epoch: Option<i32>,
        ack: AckAt,
    ) -> Result<AppendInfo, LogError> {
        let inner = &self.inner;
        let config = inner.config.get();
        // A follower of a compacted log copies batches the leader's cleaner rewrote: fewer
        // records than their offsets span, and offsets missing between batches (as Kafka's
        // followers accept them). Elsewhere both mean something was lost: refused.
        let cleaned_allowed = leader_epoch.is_none() && config.cleanup.compact;
        // A leader's record set that fits the write buffer has its CRC-32Cs computed while it
        // is copied in (one read of the bytes instead of two); every other append checks them
        // here first, as do the paths below that answer without appending.
        let infos = if cleaned_allowed {
            validate_stored_batches(batches, config.max_batch_bytes)?
        } else if leader_epoch.is_some() {
            validate_batches_deferring_crc(batches, config.max_batch_bytes)?
        } else {
            validate_batches(batches, config.max_batch_bytes)?
        };
        let total_bytes: u64 = infos.iter().map(|b| b.header.total_bytes()).sum();
        let fits_buffer = total_bytes + PAGE_BYTES <= config.write_buffer_bytes as u64;
        let crc_in_copy = leader_epoch.is_some() && !config.cleanup.compact && fits_buffer;
        if leader_epoch.is_some() && !crc_in_copy {
            check_crcs(batches, &infos)?;
        }
        if leader_epoch.is_some() && config.cleanup.compact {
            refuse_keyless_records(batches, &infos)?;
        }
        inner.check_writable()?;
        let total_records: u64 = infos.iter().map(|b| b.header.records_count as u64).sum();
        let permit = inner
            .append_gate
            .acquire()
            .await
            .map_err(|_| LogError::Closed)?;
        inner.check_writable()?;
        if leader_epoch.is_none() {
            let log_end = inner.state.borrow().next_offset;
            check_replicated_offsets(&infos, log_end, cleaned_allowed)?;
        }
        if leader_epoch.is_some() && infos.iter().any(|b| b.header.producer_id >= 0) {
            let verdict = inner
                .producers
                .borrow()
                .check(infos.iter().map(|b| &b.header));
            if crc_in_copy && !matches!(verdict, Ok(Verdict::Append)) {
                check_crcs(batches, &infos)?;
            }
            match verdict {
                Ok(Verdict::Append) => {}
                Ok(Verdict::Duplicate(done)) => {
                    drop(permit);
                    return inner
                        .answer_duplicate(done.first_offset, done.last_offset, &config, ack)
                        .await;
                }
                Err(Refusal { code, reason }) => return Err(LogError::Producer { code, reason }),
            }
        }
        let now = now_ms();
        if inner.should_roll(total_bytes, total_records, now, &config) {
            inner.roll().await?;
        }
        // Room for the whole record set first when the buffer can hold it, so no write round
        // runs between two of its batches: nobody sees part of the request before the rest,
        // and a failed write leaves none of it written. (Every batch was validated above, as
        // Kafka validates a partition's record set before appending any of it.) A record set
        // larger than the buffer goes out in several rounds.
        if fits_buffer {
            inner.reserve(total_bytes as usize, &config).await?;
        }
        let base_offset = match leader_epoch {
            Some(_) => inner.state.borrow().next_offset,
            // A follower's first batch may start past the log end (a cleaned leader log).
            None => infos[0].header.base_offset,
        };
        // With the CRC-32Cs left to the copy, the whole record set goes into the buffer first
        // (room for it was made above, and nothing here yields, so no round takes a part of
        // it) and is dropped again if one batch's CRC does not match; only then does the log
        // take it in.
        let mut pushed_at = if crc_in_copy {
            let mut st = inner.state.borrow_mut();
            let appender = st
                .active_mut()
                .appender
                .as_mut()
                .ok_or_else(|| inner.no_appender())?;
            let start = appender.fill_len();
            for info in &infos {
                let bytes = &batches[info.position..info.position + info.total_bytes()];
                let crc = appender.push_with_crc(bytes, CRC_RANGE_START);
                if let Err(e) = check_crc_as_computed(&info.header, crc, info.position) {
                    appender.unpush_to(start);
                    return Err(e.into());
                }
            }
            Some(start)
        } else {
            None
        };
        let mut max_timestamp_ms = i64::MIN;
        for info in &infos {
            let bytes = &batches[info.position..info.position + info.total_bytes()];
            if pushed_at.is_none() {
                inner.reserve(bytes.len(), &config).await?;
            }
            let mut st = inner.state.borrow_mut();
            let st = &mut *st;
            let offset = st.next_offset;
            let segment = st.active_mut();
            let position = segment.size_bytes;
            let appender = segment
                .appender
                .as_mut()
                .ok_or_else(|| inner.no_appender())?;
            let dst = match pushed_at.as_mut() {
                Some(at) => {
                    let dst = appender.pushed_mut(*at, bytes.len());
                    *at += bytes.len();
                    dst
                }
                None => appender.push(bytes),
            };
            let mut header = info.header;
            if let Some(leader_epoch) = leader_epoch {
                set_base_offset(dst, offset);
                set_partition_leader_epoch(dst, leader_epoch);
                header.base_offset = offset;
                header.partition_leader_epoch = leader_epoch;
            }
            debug_assert!(
                header.base_offset == offset || (cleaned_allowed && header.base_offset > offset),
                "batch at {} appended where the log continues at {offset}",
                header.base_offset
            );
            if segment.rolling_timestamp_ms.is_none() {
                segment.rolling_timestamp_ms = Some(now);
            }
            segment.add_batch(&header, position, config.index_interval_bytes);
            inner.producers.borrow_mut().record(&header);
            max_timestamp_ms = max_timestamp_ms.max(header.max_timestamp);
            // Offsets increase within a partition: reads, indexes and the producer table
            // rely on it.
            debug_assert!(header.next_offset() > st.next_offset);
            st.next_offset = header.next_offset();
        }
        let end_offset = inner.state.borrow().next_offset;
        drop(permit);
        inner.new_data.notify();
        inner
            .wait_acknowledgeable(end_offset, leader_epoch.is_none(), &config, ack)
            .await?;
        inner.bump(|s| s.appends += 1);
        Ok(AppendInfo {
            base_offset,
            last_offset: end_offset - 1,
            batches: infos.len() as u32,
            records: total_records,
            bytes: total_bytes,
            max_timestamp_ms,
            log_start_offset: inner.state.borrow().log_start_offset,
        })
    }

    /// Writes and fdatasyncs everything appended so far, whatever the flush policy, including
    /// rolled segments whose background sync is still running.
    pub async fn flush(&self) -> Result<(), LogError> {
        let end = self.inner.state.borrow().next_offset;
        self.inner.check_open()?;
        self.inner.wait_persisted(end, true).await?;
        // Background syncs of rolled segments take turns on this gate: one turn here means
        // every sync queued before it finished.
        let _turn = self
            .inner
            .segment_sync_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let failed = self.inner.state.borrow().failed.clone();
        match failed {
            Some(reason) => Err(LogError::Failed {
                dir: self.inner.dir.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Flushes, seals the active segment's files (exact size, indexes synced) and leaves the
    /// clean-shutdown marker so the next open trusts the indexes. Later calls fail with
    /// [`LogError::Closed`]; waiting fetches wake up.
    pub async fn close(&self) -> Result<(), LogError> {
        let inner = &self.inner;
        let permit = inner
            .append_gate
            .acquire()
            .await
            .map_err(|_| LogError::Closed)?;
        let failed = inner.state.borrow().failed.is_some();
        let mut result = Ok(());
        if !failed {
            let end = inner.state.borrow().next_offset;
            result = inner.wait_persisted(end, true).await;
        }
        {
            let _writer = inner.acquire_writer().await;
            if result.is_ok() && !failed {
                result = match inner.seal_active().await {
                    Ok(sync) => {
                        let path = sync.path.clone();
                        match sync.sync().await {
                            Ok(()) => {
                                inner.bump(|s| s.syncs += 1);
                                Ok(())
                            }
                            Err(e) => {
                                Err(inner.fail(LogError::io(path, "syncing the sealed segment", e)))
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
            }
            if result.is_ok() && !failed {
                // Wait for background segment syncs, then record that everything is durable.
                let end = inner.state.borrow().next_offset;
                result = match inner.segment_sync_gate.acquire_permit(1).await {
                    Ok(_turn) => recovery::write_recovery_point(&inner.dir, end)
                        .map_err(|e| LogError::io(&inner.dir, "writing the recovery point", e)),
                    Err(_) => Err(LogError::Closed),
                };
            }
            if result.is_ok() && !failed {
                // The producer table at the end: the next open replays nothing.
                let end = inner.state.borrow().next_offset;
                let bytes = producer_snapshot::encode(end, &inner.producers.borrow());
                result = producer_snapshot::write(&inner.dir, end, &bytes)
                    .map_err(|e| LogError::io(&inner.dir, "writing the producer snapshot", e));
            }
            if result.is_ok() && !failed {
                let marker = inner.dir.join(CLEAN_SHUTDOWN_FILE);
                result = std::fs::write(&marker, b"")
                    .and_then(|_| sync_dir(&inner.dir))
                    .map_err(|e| LogError::io(marker, "writing the clean-shutdown marker", e));
            }
            inner.state.borrow_mut().closed = true;
        }
        drop(permit);
        inner.append_gate.close();
        inner.new_data.notify();
        inner.promised.notify();
        result
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset
    }

    /// Why the log went read-only, if a write, fdatasync or roll failed (a disk fault): it
    /// refuses appends until reopened, and the server takes the partition offline.
    pub fn failure(&self) -> Option<String> {
        self.inner.state.borrow().failed.clone()
    }

    /// The offset the next appended record will get (Kafka's log end offset).
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset
    }

    /// Every offset below this is in the segment files (not only in memory).
    pub fn written_end_offset(&self) -> i64 {
        self.inner.state.borrow().written_offset
    }

    /// Resolves once every offset below `end_offset` is in the segment files (`sync`: and
    /// fdatasync'ed), writing them itself when no write is running. A leader counts its own
    /// log end for the high watermark only from here.
    pub async fn wait_written(&self, end_offset: i64, sync: bool) -> Result<(), LogError> {
        self.inner.wait_persisted(end_offset, sync).await
    }

    /// Every offset of the active segment below this was fdatasync'ed (under `never` and
    /// `interval_ms`, rolled segments are synced in the background; [`PartitionLog::flush`]
    /// waits for those too).
    pub fn durable_end_offset(&self) -> i64 {
        self.inner.state.borrow().synced_offset
    }

    /// What the flush policy promises, a single node's high watermark: every offset below is
    /// in the segment files under `never` and `interval_ms` (a process crash keeps it), and
    /// fdatasync'ed under `always` (a power loss keeps it too). Acknowledgements
    /// ([`PartitionLog::append`]) wait for it to pass their offsets; consumers should read
    /// only below it (`max_offset` of [`PartitionLog::read`]), so no offset they saw can come
    /// back with other records after a crash. Never moves back.
    pub fn promised_end_offset(&self) -> i64 {
        self.inner.state.borrow().promised_offset
    }

    /// Resolves once [`PartitionLog::promised_end_offset`] is past `offset` or the log closed.
    /// A single node's consumer Fetch long-polls on it (raced against `max_wait_ms`).
    pub async fn wait_promised_past(&self, offset: i64) {
        loop {
            let wait = {
                let st = self.inner.state.borrow();
                if st.promised_offset > offset || st.closed {
                    return;
                }
                self.inner.promised.wait()
            };
            wait.await;
        }
    }

    /// Resolves once the log end offset is past `offset` (data at `offset` can be read) or
    /// the log closed. A follower's Fetch long-polls on it: it replicates what is appended,
    /// written or not.
    pub async fn wait_for_data(&self, offset: i64) {
        loop {
            let wait = {
                let st = self.inner.state.borrow();
                if st.next_offset > offset || st.closed {
                    return;
                }
                self.inner.new_data.wait()
            };
            wait.await;
        }
    }

    /// The directory holding the segment files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The effective settings.
    pub fn config(&self) -> LogConfig {
        self.inner.config.get()
    }

    /// Changes the settings (a topic config update). Takes effect at the next append, roll
    /// or retention pass; the write buffer size only changes at the next segment.
    pub fn set_config(&self, config: LogConfig) {
        let mut config = config;
        config.write_buffer_bytes = config.effective_write_buffer_bytes();
        self.inner.config.set(config);
    }

    /// What recovery did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Approximate heap bytes of the idempotent producers' table (for the memory budget).
    pub fn producer_state_bytes(&self) -> usize {
        self.inner.producers.borrow().approximate_bytes()
    }

    /// How the idempotent producers' table was rebuilt when the log was opened.
    pub fn producer_rebuild_report(&self) -> &RebuildReport {
        &self.inner.producer_rebuild
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.inner.stats.get()
    }

    /// Base offsets of the segments, oldest first (the last is the active segment).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        let st = self.inner.state.borrow();
        st.segments.iter().map(|s| s.base_offset).collect()
    }

    /// Segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Total logical size of all segments, bytes.
    pub fn size_bytes(&self) -> u64 {
        let st = self.inner.state.borrow();
        st.segments.iter().map(|s| s.size_bytes).sum()
    }
}

/// A follower's batches must continue the log at `log_end` and each other; with
/// `cleaned_allowed` (a compacted log) a batch may start past where the previous one ended.
fn check_replicated_offsets(
    infos: &[BatchInfo],
    log_end: i64,
    cleaned_allowed: bool,
) -> Result<(), LogError> {
    let mut expected = log_end;
    for info in infos {
        let follows = info.header.base_offset == expected
            || (cleaned_allowed && info.header.base_offset > expected);
        if !follows {
            return Err(LogError::Batch(BatchError::Corrupt {
                position: info.position,
                reason: format!(
                    "replicated batch starts at offset {}, the log continues at {expected}",
                    info.header.base_offset
                ),
            }));
        }
        expected = info.header.next_offset();
    }
    Ok(())
}

impl LogInner {
    /// Answers a retry of batches appended before (offsets `first..=last`) once they are as
    /// durable as a fresh append would be.
    async fn answer_duplicate(
        self: &Rc<Self>,
        first_offset: i64,
        last_offset: i64,
        config: &LogConfig,
        ack: AckAt,
    ) -> Result<AppendInfo, LogError> {
        let end = last_offset + 1;
        match (config.flush, ack) {
            (FlushPolicy::Always, _) => self.wait_persisted(end, true).await?,
            (_, AckAt::Promise) => self.wait_written_in_background(end).await?,
            (_, AckAt::Queued) => {}
        }
        Ok(AppendInfo {
            base_offset: first_offset,
            last_offset,
            batches: 0,
            records: 0,
            bytes: 0,
            max_timestamp_ms: -1,
            log_start_offset: self.state.borrow().log_start_offset,
        })
    }

    /// Waits until an append ending at `end_offset` may be acknowledged: synced under
    /// `always`; written, for a follower's copy (`replicated`); written in the background
    /// under `AckAt::Promise`; otherwise only handed to the writer.
    async fn wait_acknowledgeable(
        self: &Rc<Self>,
        end_offset: i64,
        replicated: bool,
        config: &LogConfig,
        ack: AckAt,
    ) -> Result<(), LogError> {
        if config.flush == FlushPolicy::Always {
            self.wait_persisted(end_offset, true).await
        } else if replicated {
            self.wait_persisted(end_offset, false).await
        } else if ack == AckAt::Promise {
            self.wait_written_in_background(end_offset).await
        } else {
            self.kick_writer();
            Ok(())
        }
    }

    fn bump(&self, f: impl FnOnce(&mut LogStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    pub(crate) fn check_open(&self) -> Result<(), LogError> {
        if self.state.borrow().closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), LogError> {
        let st = self.state.borrow();
        if st.closed {
            return Err(LogError::Closed);
        }
        if let Some(reason) = &st.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    /// The error of an append that finds the active segment without its appender.
    fn no_appender(&self) -> LogError {
        LogError::Failed {
            dir: self.dir.clone(),
            reason: "the active segment has no appender".into(),
        }
    }

    fn fail(&self, error: LogError) -> LogError {
        let mut st = self.state.borrow_mut();
        if st.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), %error, "partition log failed; appends refused until reopened");
            st.failed = Some(error.to_string());
        }
        error
    }

    fn should_roll(&self, bytes: u64, records: u64, now: i64, config: &LogConfig) -> bool {
        let st = self.state.borrow();
        let active = st.active();
        if active.is_empty() {
            return false;
        }
        let too_big = active.size_bytes + bytes > config.segment_bytes;
        let too_old = active
            .rolling_timestamp_ms
            .is_some_and(|t| now.saturating_sub(t) >= config.segment_ms as i64);
        let offsets_overflow =
            st.next_offset + records as i64 - active.base_offset > i32::MAX as i64;
        too_big || too_old || offsets_overflow
    }

    /// Waits until no write round or roll runs, then marks one as running.
    async fn acquire_writer(&self) -> WriterGuard<'_> {
        loop {
            let wait = {
                let mut st = self.state.borrow_mut();
                if !st.writer_busy {
                    st.writer_busy = true;
                    return WriterGuard { inner: self };
                }
                self.progress.wait()
            };
            wait.await;
        }
    }

    /// Returns once the fill buffer has room for `bytes` more (growing it up to
    /// `write_buffer_bytes`, or running write rounds); `bytes` must fit an emptied buffer.
    async fn reserve(self: &Rc<Self>, bytes: usize, config: &LogConfig) -> Result<(), LogError> {
        loop {
            let fits = {
                let mut st = self.state.borrow_mut();
                match st.active_mut().appender.as_mut() {
                    Some(a) => {
                        a.set_max_buffer_bytes(config.write_buffer_bytes as usize);
                        a.free_bytes() >= bytes || a.grow(bytes)
                    }
                    None => false,
                }
            };
            if fits {
                return Ok(());
            }
            self.make_room().await?;
        }
    }

    /// Frees room in the fill buffer: runs a write round, or waits for the one in flight.
    async fn make_room(self: &Rc<Self>) -> Result<(), LogError> {
        let wait = {
            let st = self.state.borrow();
            if let Some(reason) = &st.failed {
                return Err(LogError::Failed {
                    dir: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
            if st.writer_busy {
                Some(self.progress.wait())
            } else {
                let pending = st
                    .active()
                    .appender
                    .as_ref()
                    .is_some_and(|a| a.end() > a.written_end());
                if !pending {
                    // Nothing to write would free room: the batch cannot fit the buffer.
                    debug_assert!(false, "a validated batch must fit an emptied write buffer");
                    return Err(LogError::Failed {
                        dir: self.dir.clone(),
                        reason: "a batch does not fit the write buffer".into(),
                    });
                }
                None
            }
        };
        match wait {
            Some(w) => {
                w.await;
                Ok(())
            }
            None => {
                let sync = self.config.get().flush == FlushPolicy::Always;
                self.write_round(sync, MAX_ROUNDS_PER_WRITER).await
            }
        }
    }

    /// Returns once every offset below `end_offset` is written (and synced if `sync`),
    /// running write rounds itself whenever none is in flight.
    pub(crate) async fn wait_persisted(
        self: &Rc<Self>,
        end_offset: i64,
        sync: bool,
    ) -> Result<(), LogError> {
        loop {
            let wait = {
                let st = self.state.borrow();
                let reached = if sync {
                    st.synced_offset
                } else {
                    st.written_offset
                };
                if reached >= end_offset {
                    return Ok(());
                }
                if let Some(reason) = &st.failed {
                    return Err(LogError::Failed {
                        dir: self.dir.clone(),
                        reason: reason.clone(),
                    });
                }
                if st.writer_busy {
                    Some(self.progress.wait())
                } else {
                    None
                }
            };
            match wait {
                Some(w) => w.await,
                None => self.write_round(sync, MAX_ROUNDS_PER_WRITER).await?,
            }
        }
    }

    /// Returns once every offset below `end_offset` is written, leaving the writing to the
    /// background writer ([`LogInner::kick_writer`]): it yields once before each run, so
    /// every append copied by then goes out in the same write, and it writes back to back
    /// while data is pending. Under `interval_ms` its fdatasync does not delay this wait.
    async fn wait_written_in_background(self: &Rc<Self>, end_offset: i64) -> Result<(), LogError> {
        loop {
            let wait = {
                let st = self.state.borrow();
                if st.written_offset >= end_offset {
                    return Ok(());
                }
                if let Some(reason) = &st.failed {
                    return Err(LogError::Failed {
                        dir: self.dir.clone(),
                        reason: reason.clone(),
                    });
                }
                if st.closed {
                    return Err(LogError::Closed);
                }
                self.progress.wait()
            };
            // No-op while a writer runs: when it stops it kicks again if data is pending, and
            // its guard wakes this wait.
            self.kick_writer();
            wait.await;
        }
    }

    /// One group-commit round: write everything appended so far in one O_DIRECT write, then
    /// fdatasync if `sync`, the policy or a due interval asks.
    async fn write_round(self: &Rc<Self>, sync: bool, max_rounds: usize) -> Result<(), LogError> {
        let writer = self.acquire_writer().await;
        self.state.borrow_mut().write_kicked = false;
        let result = self.write_rounds(sync, max_rounds).await;
        drop(writer);
        // Appends that do not wait for their write (`never`, `interval_ms`) rely on a writer
        // running while data is pending: hand on to a background one if this one stopped early.
        if result.is_ok() {
            self.kick_writer();
            self.kick_zero_fill();
        }
        result
    }

    /// Starts the task that writes zeros into the active segment's preallocated blocks
    /// (`preallocate_zeroes`) if some wait for them and none runs.
    fn kick_zero_fill(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            let wanted = st
                .active()
                .appender
                .as_ref()
                .is_some_and(|a| a.zero_fill_wanted());
            if !wanted || st.zero_fill_running || st.closed || st.failed.is_some() {
                return;
            }
            st.zero_fill_running = true;
        }
        let inner = self.clone();
        glommio::spawn_local(async move {
            // A failed fdatasync failed the log (appends see it); nothing else to report here.
            let _ = inner.zero_fill().await;
            inner.state.borrow_mut().zero_fill_running = false;
        })
        .detach();
    }

    /// One burst of zeros: writes of up to [`ZERO_CHUNK_BYTES`] until the preallocated blocks
    /// past the data are written, each under the writer's turn so no write round runs beside
    /// it, then one fdatasync, so the converted extents and the file size are committed
    /// before the appends reach them.
    async fn zero_fill(self: &Rc<Self>) -> Result<(), LogError> {
        let mut zeros: Option<Rc<glommio::io::DmaBuffer>> = None;
        let mut written: Option<(Rc<glommio::io::DmaFile>, PathBuf)> = None;
        loop {
            let writer = self.acquire_writer().await;
            let chunk = {
                let st = self.state.borrow();
                if st.closed || st.failed.is_some() {
                    None
                } else {
                    let segment = st.active();
                    segment.appender.as_ref().and_then(|a| {
                        let (start, len) = a.next_zero_chunk(ZERO_CHUNK_BYTES)?;
                        Some((a.file().clone(), segment.log_path.clone(), start, len))
                    })
                }
            };
            let Some((file, path, start, len)) = chunk else {
                break;
            };
            let alloc = |len: u64| {
                let mut buffer = file.alloc_dma_buffer(len as usize);
                buffer.as_bytes_mut().fill(0);
                Rc::new(buffer)
            };
            let buffer = if len == ZERO_CHUNK_BYTES {
                zeros.get_or_insert_with(|| alloc(len)).clone()
            } else {
                alloc(len)
            };
            let write_started = Instant::now();
            let result = file.write_rc_at(buffer, start).await;
            let written_bytes = result.as_ref().map_or(0, |n| *n as u64);
            let write_us = write_started.elapsed().as_micros() as u64;
            super::io_latency::record_zero_fill(write_us, written_bytes);
            {
                let mut st = self.state.borrow_mut();
                if let Some(a) = st.active_mut().appender.as_mut() {
                    if Rc::ptr_eq(a.file(), &file) {
                        match result {
                            Ok(n) if n as u64 == len => a.zeroes_written(start + len),
                            // Zeros are an optimisation: the appends go on without them.
                            Ok(n) => {
                                tracing::warn!(file = %path.display(), written = n, "short write of zeros ahead");
                                a.stop_zero_fill();
                            }
                            Err(e) => {
                                tracing::warn!(file = %path.display(), error = %e, "writing zeros ahead failed");
                                a.stop_zero_fill();
                            }
                        }
                    }
                }
            }
            written = Some((file, path));
            drop(writer);
            self.kick_writer();
            // Appends and write rounds waiting for the writer's turn go first.
            glommio::executor().yield_now().await;
        }
        if let Some((file, path)) = written {
            let started = Instant::now();
            file.fdatasync()
                .await
                .map_err(|e| self.fail(LogError::io(path, "fdatasync of zeros ahead", e.into())))?;
            super::io_latency::record_zero_fill(started.elapsed().as_micros() as u64, 0);
        }
        Ok(())
    }

    /// Under `never` and `interval_ms` an append returns once its bytes are in the write
    /// buffer; this makes sure a task writes them (at once if the disk is idle).
    pub(crate) fn kick_writer(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            let pending = st
                .active()
                .appender
                .as_ref()
                .is_some_and(|a| a.end() > a.written_end());
            if !pending || st.writer_busy || st.write_kicked || st.closed || st.failed.is_some() {
                return;
            }
            st.write_kicked = true;
        }
        let inner = self.clone();
        glommio::spawn_local(async move {
            // Errors already failed the log (appends see them); nothing else to report here.
            let _ = inner.write_round(false, usize::MAX).await;
        })
        .detach();
    }

    async fn write_rounds(self: &Rc<Self>, sync: bool, max_rounds: usize) -> Result<(), LogError> {
        // Let appenders that are ready to run copy their batches into this round.
        glommio::executor().yield_now().await;
        // Then keep the disk busy: what was appended during a write goes out in the next one
        // at once, while the appenders just released copy their next batches. The fdatasync
        // of a round runs while the next round is written (the next write only rewrites the
        // shared tail page with identical leading bytes, so the synced bytes stay valid).
        let mut syncing: Option<PendingSync> = None;
        let mut rounds = 0;
        loop {
            if rounds < max_rounds {
                self.write_one().await?;
                rounds += 1;
            }
            if let Some(pending) = syncing.take() {
                // Under `never` and `interval_ms` acknowledgements wait for the write only:
                // wake them before waiting for the previous round's sync.
                if self.config.get().flush != FlushPolicy::Always {
                    self.progress.notify();
                }
                self.finish_sync(pending).await?;
            }
            self.progress.notify();
            let more = rounds < max_rounds && {
                let st = self.state.borrow();
                st.active()
                    .appender
                    .as_ref()
                    .is_some_and(|a| a.end() > a.written_end())
            };
            if let Some(pending) = self.start_sync_if_needed(sync) {
                if more {
                    syncing = Some(pending);
                    continue;
                }
                self.finish_sync(pending).await?;
                self.progress.notify();
                return Ok(());
            }
            if let FlushPolicy::IntervalMs(ms) = self.config.get().flush {
                self.arm_sync_timer(ms);
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Starts an fdatasync of the active segment if written data is not synced and `sync`,
    /// the policy or a due interval asks for it.
    fn start_sync_if_needed(&self, sync: bool) -> Option<PendingSync> {
        let st = self.state.borrow();
        let due = match self.config.get().flush {
            FlushPolicy::Always => true,
            FlushPolicy::IntervalMs(ms) => st.last_sync.elapsed() >= Duration::from_millis(ms),
            FlushPolicy::Never => false,
        };
        if st.synced_offset >= st.written_offset || !(sync || due) {
            return None;
        }
        let file = st.active().dma()?.clone();
        let task = glommio::spawn_local(async move {
            let started = Instant::now();
            file.fdatasync()
                .await
                .map(|_| started.elapsed().as_micros() as u64)
                .map_err(std::io::Error::from)
        });
        Some(PendingSync {
            task,
            target_offset: st.written_offset,
            path: st.active().log_path.clone(),
        })
    }

    async fn finish_sync(&self, pending: PendingSync) -> Result<(), LogError> {
        match pending.task.await {
            Ok(sync_us) => {
                super::io_latency::record_fdatasync(sync_us);
                self.bump(|s| {
                    s.syncs += 1;
                    s.sync_us += sync_us;
                });
                let mut st = self.state.borrow_mut();
                st.synced_offset = st.synced_offset.max(pending.target_offset);
                st.last_sync = Instant::now();
                if st.synced_offset > st.promised_offset {
                    st.promised_offset = st.synced_offset;
                    self.promised.notify();
                }
                Ok(())
            }
            Err(e) => Err(self.fail(LogError::io(pending.path, "fdatasync of the log", e))),
        }
    }

    /// Writes everything appended and not yet written in one O_DIRECT write (if anything).
    async fn write_one(self: &Rc<Self>) -> Result<(), LogError> {
        let started = {
            let mut st = self.state.borrow_mut();
            let end_offset = st.next_offset;
            let appender = st.active_mut().appender.as_mut();
            match appender {
                Some(a) => a.start_write().map(|job| {
                    let prealloc = a.preallocation_for(&job);
                    (job, prealloc, end_offset, a.path().to_path_buf())
                }),
                None => None,
            }
        };
        if let Some((job, prealloc, end_offset, path)) = started {
            if let Some(to) = prealloc {
                // FALLOC_FL_KEEP_SIZE: blocks are reserved but the file size follows the
                // writes. Measured on ext4 here, extending the size instead (unwritten extents
                // inside i_size) cost ~40% of the O_DIRECT write bandwidth.
                if let Err(e) = job.file.pre_allocate(to, true).await {
                    // Preallocation is an optimisation: a full disk shows up in the write.
                    tracing::warn!(file = %path.display(), error = %e, "preallocation failed");
                } else if let Some(a) = self.state.borrow_mut().active_mut().appender.as_mut() {
                    a.set_preallocated(to);
                }
            }
            let expected = job.buffer.len();
            let write_started = Instant::now();
            let result = job
                .file
                .write_rc_at(job.buffer.clone(), job.start)
                .await
                .map_err(std::io::Error::from);
            let write_us = write_started.elapsed().as_micros() as u64;
            super::io_latency::record_direct_write(write_us);
            #[cfg(test)]
            let result = super::fault_injection::after_write(result);
            let result = match result {
                Ok(n) if n == expected => Ok(()),
                Ok(n) => Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {n} of {expected} bytes at byte {}", job.start),
                )),
                Err(e) => Err(e),
            };
            let mut guard = self.state.borrow_mut();
            let st = &mut *guard;
            let segment = st.active_mut();
            if let Err(e) = result {
                if let Some(a) = segment.appender.as_mut() {
                    a.abandon_write();
                }
                drop(job);
                // `fail` borrows the state itself.
                drop(guard);
                return Err(self.fail(LogError::io(path, "writing the log", e)));
            }
            if let Some(a) = segment.appender.as_mut() {
                a.finish_write(&job);
            }
            self.bump(|s| {
                s.write_rounds += 1;
                s.bytes_written += expected as u64;
                s.write_us += write_us;
            });
            let index_result = segment
                .index
                .write_pending()
                .map_err(|e| LogError::io(segment.index.path(), "writing the index", e))
                .and_then(|_| {
                    segment.time_index.write_pending().map_err(|e| {
                        LogError::io(segment.time_index.path(), "writing the time index", e)
                    })
                });
            st.written_offset = end_offset;
            if self.config.get().flush != FlushPolicy::Always && end_offset > st.promised_offset {
                st.promised_offset = end_offset;
                self.promised.notify();
            }
            if let Err(e) = index_result {
                drop(job);
                drop(guard);
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    /// Under the interval policy: make sure written data is synced within `ms`.
    fn arm_sync_timer(self: &Rc<Self>, ms: u64) {
        {
            let mut st = self.state.borrow_mut();
            if st.sync_timer_armed || st.synced_offset >= st.written_offset || st.closed {
                return;
            }
            st.sync_timer_armed = true;
        }
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(ms)).await;
            if let Some(inner) = weak.upgrade() {
                let target = {
                    let mut st = inner.state.borrow_mut();
                    st.sync_timer_armed = false;
                    if st.closed || st.failed.is_some() {
                        return;
                    }
                    st.written_offset
                };
                if let Err(e) = inner.wait_persisted(target, true).await {
                    tracing::warn!(dir = %inner.dir.display(), error = %e, "interval flush failed");
                }
            }
        })
        .detach();
    }

    /// Seals the active segment (everything already written; writer held): the time index
    /// gets its last entry, pending index entries are written, the appender goes and the log
    /// is truncated to its size. What still has to reach the disk (the log's truncation and
    /// both indexes) is handed back; [`SegmentSync::sync`] does it.
    async fn seal_active(&self) -> Result<SegmentSync, LogError> {
        let (dma, size, path, index_handles) = {
            let mut st = self.state.borrow_mut();
            let segment = st.active_mut();
            segment.seal_time_index();
            let io_err = |path: &Path, e| LogError::io(path, "writing an index", e);
            let index_path = segment.index.path().to_path_buf();
            let time_path = segment.time_index.path().to_path_buf();
            segment
                .index
                .write_pending()
                .map_err(|e| io_err(&index_path, e))?;
            segment
                .time_index
                .write_pending()
                .map_err(|e| io_err(&time_path, e))?;
            let handles = vec![
                segment
                    .index
                    .file()
                    .handle()
                    .map_err(|e| io_err(&index_path, e))?,
                segment
                    .time_index
                    .file()
                    .handle()
                    .map_err(|e| io_err(&time_path, e))?,
            ];
            let dma = segment.dma().cloned().ok_or(LogError::Closed)?;
            segment.appender = None;
            segment.close_index_handles();
            (dma, segment.size_bytes, segment.log_path.clone(), handles)
        };
        dma.truncate(size).await.map_err(|e| {
            self.fail(LogError::io(
                &path,
                "truncating the log to its size",
                e.into(),
            ))
        })?;
        Ok(SegmentSync {
            dma,
            index_handles,
            path,
        })
    }

    /// Syncs a sealed segment in the background (as Kafka flushes a rolled segment
    /// asynchronously), in roll order, then writes the producer snapshot taken at the roll and
    /// records that every offset below `end_offset` is durable in the recovery point file.
    fn spawn_segment_sync(self: &Rc<Self>, sync: SegmentSync, end_offset: i64, snapshot: Vec<u8>) {
        let inner = self.clone();
        glommio::spawn_local(async move {
            let Ok(_turn) = inner.segment_sync_gate.acquire_static_permit(1).await else {
                return;
            };
            let path = sync.path.clone();
            let result = async {
                sync.sync().await?;
                let dir = inner.dir.clone();
                blocking::run(move || {
                    producer_snapshot::write(&dir, end_offset, &snapshot)?;
                    recovery::write_recovery_point(&dir, end_offset)
                })
                .await
            }
            .await;
            match result {
                Ok(()) => inner.bump(|s| s.syncs += 1),
                Err(e) => {
                    inner.fail(LogError::io(path, "syncing a rolled segment", e));
                }
            }
        })
        .detach();
    }

    /// Closes the active segment and starts a new one at the log end offset. Called under
    /// the append gate.
    ///
    /// Under every policy the sealed segment's own fdatasync (its truncation and indexes),
    /// the producer snapshot and the recovery point run in the background, in roll order
    /// ([`LogInner::spawn_segment_sync`]). Under `always` every byte below `end` is already
    /// fdatasync'ed by the wait below, so what is acknowledged does not depend on them; doing
    /// them here cost the appends behind the roll four more syncs in a row, two of them
    /// blocking the shard's thread.
    async fn roll(self: &Rc<Self>) -> Result<(), LogError> {
        let end = self.state.borrow().next_offset;
        let always = self.config.get().flush == FlushPolicy::Always;
        self.wait_persisted(end, always).await?;
        let _writer = self.acquire_writer().await;
        // The producer table at the roll (under the append gate: every batch below `end` and
        // nothing else), saved once the rolled segment is synced.
        let snapshot = producer_snapshot::encode(end, &self.producers.borrow());
        let sync = self.seal_active().await?;
        self.spawn_segment_sync(sync, end, snapshot);
        let config = self.config.get();
        let segment = Segment::create(&self.dir, end, &config)
            .await
            .map_err(|e| self.fail(e))?;
        tracing::debug!(dir = %self.dir.display(), base_offset = end, "rolled to a new segment");
        self.state.borrow_mut().segments.push_back(segment);
        Ok(())
    }
}

/// A sealed segment whose data and indexes still need an fdatasync.
struct SegmentSync {
    dma: Rc<glommio::io::DmaFile>,
    index_handles: Vec<std::fs::File>,
    path: PathBuf,
}

impl SegmentSync {
    /// fdatasync of the log (its truncation), then of both indexes off the shard's thread.
    async fn sync(self) -> std::io::Result<()> {
        let started = Instant::now();
        self.dma.fdatasync().await.map_err(std::io::Error::from)?;
        super::io_latency::record_fdatasync(started.elapsed().as_micros() as u64);
        let handles = self.index_handles;
        blocking::run(move || {
            for h in handles {
                h.sync_data()?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use crate::storage::disk_budget::INITIAL_PREALLOCATE_BYTES;
    use crate::storage::fault_injection::tests::{batch, config, values};
    use crate::storage::PartitionLog;

    /// Where the first hole at or after `from` starts (ext4 reports unwritten extents, which
    /// preallocation without zeros leaves, as holes too); the file size if there is none.
    fn first_hole(path: &Path, from: u64) -> u64 {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: lseek on a descriptor this function owns.
        let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_HOLE) };
        assert!(at >= 0, "{}", std::io::Error::last_os_error());
        at as u64
    }

    /// Lengths of the batches a sealed segment file holds, walked from its start; the walk
    /// must end exactly at the file's end.
    fn batch_lengths(path: &Path) -> Vec<u32> {
        let bytes = std::fs::read(path).unwrap();
        let mut lengths = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let length = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            lengths.push(length);
            at += 12 + length as usize;
        }
        assert_eq!(at, bytes.len(), "{}", path.display());
        lengths
    }

    #[test]
    fn zeros_ahead_are_written_then_overwritten_cut_at_the_seal_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut config = config();
                config.preallocate_zeroes = true;
                config.preallocate_bytes = 1 << 20;
                config.segment_bytes = 4 << 20;
                let segment = |base: i64| path.join(format!("{base:020}.log"));
                let log = PartitionLog::open(&path, config).await.unwrap();
                let mut expected = vec!["first".to_string()];
                log.append(&batch("first"), 0).await.unwrap();

                // After the first round, zeros fill the first preallocation step, between
                // rounds.
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::fs::metadata(segment(0)).unwrap().len() < INITIAL_PREALLOCATE_BYTES {
                    assert!(Instant::now() < deadline, "no zeros were written ahead");
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                let size = std::fs::metadata(segment(0)).unwrap().len();
                let bytes = std::fs::read(segment(0)).unwrap();
                let data_end = log.size_bytes() as usize;
                assert!(bytes[data_end..].iter().all(|b| *b == 0));
                // Written blocks, not reserved ones, all the way.
                assert_eq!(first_hole(&segment(0), 0), size);

                // Appends overwrite them, and zeros fill the next steps.
                let value = "v".repeat(100_000);
                for i in 0..20 {
                    let value = format!("{i}{value}");
                    log.append(&batch(&value), 0).await.unwrap();
                    expected.push(value);
                }
                assert_eq!(values(&log).await, expected);

                // The roll cuts the zeros off the sealed segment: it ends with its last batch.
                while log.segment_count() < 2 {
                    let value = format!("{}{value}", expected.len());
                    log.append(&batch(&value), 0).await.unwrap();
                    expected.push(value);
                }
                let sealed = batch_lengths(&segment(0));
                assert!(sealed.iter().all(|l| *l > 0), "{sealed:?}");
                let active = log.segment_base_offsets()[1];
                let value = "after the roll".to_string();
                log.append(&batch(&value), 0).await.unwrap();
                expected.push(value);
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::fs::metadata(segment(active)).unwrap().len() < INITIAL_PREALLOCATE_BYTES
                {
                    assert!(Instant::now() < deadline, "no zeros in the new segment");
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }

                // A crash leaves zeros past the data of the active segment: recovery ends the
                // log at the data, and the appends continue after it.
                drop(log);
                let log = PartitionLog::open(&path, config).await.unwrap();
                assert_eq!(values(&log).await, expected);
                let info = log.append(&batch("after the crash"), 0).await.unwrap();
                assert_eq!(info.base_offset, expected.len() as i64);
                expected.push("after the crash".into());
                log.close().await.unwrap();
                let log = PartitionLog::open(&path, config).await.unwrap();
                assert_eq!(values(&log).await, expected);
                log.close().await.unwrap();
                let lengths = batch_lengths(&segment(active));
                assert_eq!(lengths.len(), 2, "{lengths:?}");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
