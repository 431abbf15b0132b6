//! Retention: deletes whole sealed segments from the front of the log by age
//! (`retention_ms`, judged by a segment's newest batch timestamp, as Kafka does) and by size
//! (`retention_bytes`), never the active segment. The log start offset moves to the first
//! remaining segment, and producer snapshots below it go with the segments. Only logs whose
//! `cleanup.policy` contains `delete` are cut by time and size. Whatever the policy, sealed
//! segments wholly below the log start offset (moved by DeleteRecords:
//! [`super::log_start`]) go too. The shard runs [`PartitionLog::apply_retention`] every
//! `retention_check_interval_ms`.

use super::blocking;
use super::error::LogError;
use super::log::PartitionLog;
use super::producer_snapshot;
use super::segment::segment_file;
use tuning::fs::sync_dir;

/// Size and newest timestamp of a segment, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStat {
    pub size_bytes: u64,
    pub max_timestamp_ms: i64,
}

/// How many segments, from the front of `segments` (the last one is the active segment and
/// is never counted), retention deletes at `now_ms`. A segment expires by time when
/// `now_ms - max_timestamp_ms > retention_ms`; deletion stops at the first segment that has
/// not expired. By size, oldest segments go while the log stays at or above
/// `retention_bytes` without them.
pub fn segments_to_delete(
    segments: &[SegmentStat],
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> usize {
    let deletable = segments.len().saturating_sub(1);
    let mut count = 0;
    if retention_ms >= 0 {
        while count < deletable
            && now_ms.saturating_sub(segments[count].max_timestamp_ms) > retention_ms
        {
            count += 1;
        }
    }
    if retention_bytes >= 0 {
        let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
        let mut remaining = total - segments[..count].iter().map(|s| s.size_bytes).sum::<u64>();
        while count < deletable && remaining - segments[count].size_bytes >= retention_bytes as u64
        {
            remaining -= segments[count].size_bytes;
            count += 1;
        }
    }
    count
}

/// How many segments from the front (of those whose next offsets are given, oldest first;
/// the last is the active segment and never counts) hold only offsets below
/// `log_start_offset`.
pub fn segments_below_log_start(
    next_offsets: impl ExactSizeIterator<Item = i64>,
    log_start_offset: i64,
) -> usize {
    let deletable = next_offsets.len().saturating_sub(1);
    next_offsets
        .take(deletable)
        .take_while(|&next| next <= log_start_offset)
        .count()
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Base offsets of the deleted segments.
    pub deleted_base_offsets: Vec<i64>,
    pub deleted_bytes: u64,
    /// The log start offset after the pass.
    pub log_start_offset: i64,
}

impl PartitionLog {
    /// Deletes the segments retention says have expired at `now_ms` (milliseconds since the
    /// epoch). Reads already holding a [`super::FileRange`] of a deleted segment still work
    /// (the file stays open).
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let inner = &self.inner;
        let config = inner.config.get();
        let removed = {
            let mut st = inner.state.borrow_mut();
            if st.closed {
                return Err(LogError::Closed);
            }
            let stats: Vec<SegmentStat> = st
                .segments
                .iter()
                .map(|s| SegmentStat {
                    size_bytes: s.size_bytes,
                    max_timestamp_ms: s.max_timestamp_ms,
                })
                .collect();
            let by_policy = if config.cleanup.delete {
                segments_to_delete(&stats, now_ms, config.retention_ms, config.retention_bytes)
            } else {
                0
            };
            let below_start = segments_below_log_start(
                st.segments.iter().map(|s| s.next_offset),
                st.log_start_offset,
            );
            let n = by_policy.max(below_start);
            let removed: Vec<_> = st.segments.drain(..n).collect();
            if let Some(front) = st.segments.front() {
                st.log_start_offset = st.log_start_offset.max(front.base_offset);
            }
            removed
        };
        let mut outcome = RetentionOutcome {
            log_start_offset: self.log_start_offset(),
            ..RetentionOutcome::default()
        };
        let mut paths = Vec::new();
        for seg in removed {
            outcome.deleted_base_offsets.push(seg.base_offset);
            outcome.deleted_bytes += seg.size_bytes;
            for ext in ["log", "index", "timeindex"] {
                paths.push(segment_file(&inner.dir, seg.base_offset, ext));
            }
            tracing::info!(
                dir = %inner.dir.display(),
                base_offset = seg.base_offset,
                bytes = seg.size_bytes,
                "retention deletes a segment"
            );
        }
        // Unlinking a large file frees its extents synchronously (tens of ms for a GiB on
        // ext4): do it on glommio's blocking thread pool, not on the shard's thread.
        let deleted_any = !outcome.deleted_base_offsets.is_empty();
        // Snapshots below the first kept segment go (the log start may lie inside it: its
        // snapshot is still what a rebuild starts from).
        let first_kept = inner
            .state
            .borrow()
            .segments
            .front()
            .map_or(outcome.log_start_offset, |s| s.base_offset);
        let dir = inner.dir.clone();
        blocking::run(move || {
            if deleted_any {
                producer_snapshot::list(&dir)
                    .and_then(|offsets| {
                        let below: Vec<i64> =
                            offsets.into_iter().filter(|&o| o < first_kept).collect();
                        producer_snapshot::remove(&dir, &below)
                    })
                    .map_err(|e| LogError::io(&dir, "deleting producer snapshots", e))?;
            }
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io(path, "deleting an expired segment", e)),
                }
            }
            Ok(())
        })
        .await?;
        if !outcome.deleted_base_offsets.is_empty() {
            sync_dir(&inner.dir)
                .map_err(|e| LogError::io(&inner.dir, "syncing the directory", e))?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    //! The deletion rule on hand-made segment lists: time prefix, size bound, active kept.
    use super::*;

    fn seg(size_bytes: u64, max_timestamp_ms: i64) -> SegmentStat {
        SegmentStat {
            size_bytes,
            max_timestamp_ms,
        }
    }

    #[test]
    fn time_deletes_only_the_expired_prefix_and_never_the_active() {
        let s = [seg(10, 100), seg(10, 500), seg(10, 200), seg(10, 0)];
        assert_eq!(segments_to_delete(&s, 1000, 600, -1), 1);
        assert_eq!(segments_to_delete(&s, 10_000, 600, -1), 3);
        assert_eq!(segments_to_delete(&s, 1000, -1, -1), 0);
    }

    #[test]
    fn below_log_start_counts_whole_segments_and_never_the_active() {
        // Segments ending at 10, 20, 30 and the active one at 35.
        let ends = [10, 20, 30, 35];
        assert_eq!(segments_below_log_start(ends.into_iter(), 0), 0);
        assert_eq!(segments_below_log_start(ends.into_iter(), 19), 1);
        assert_eq!(segments_below_log_start(ends.into_iter(), 20), 2);
        assert_eq!(segments_below_log_start(ends.into_iter(), 35), 3);
    }

    #[test]
    fn size_keeps_the_log_at_or_above_the_limit() {
        let s = [seg(10, 0), seg(20, 0), seg(30, 0), seg(40, 0)];
        assert_eq!(segments_to_delete(&s, 0, -1, 100), 0);
        assert_eq!(segments_to_delete(&s, 0, -1, 90), 1);
        assert_eq!(segments_to_delete(&s, 0, -1, 70), 2);
        assert_eq!(segments_to_delete(&s, 0, -1, 1), 3);
    }
}
