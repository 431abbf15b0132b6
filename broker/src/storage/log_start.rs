//! The log start offset moved by DeleteRecords (Kafka's `deleteRecordsOnLeader` /
//! `maybeIncrementLogStartOffset`), and the file that keeps it across restarts.
//!
//! Without DeleteRecords the log start is the first segment's base offset. DeleteRecords
//! moves it forward to any offset up to the high watermark, possibly inside a segment:
//! offsets below it are no longer served (a fetch gets OFFSET_OUT_OF_RANGE, ListOffsets
//! earliest answers it), and the sealed segments wholly below it are deleted at once (and by
//! any later retention pass). The start is written to [`LOG_START_OFFSET_FILE`] (one decimal
//! offset, replaced crash-safely as the recovery point is) before the move is acknowledged
//! and before memory shows it; at open the log start is the larger of that file and the first
//! segment's base, never past the log end ([`super::recovery::read_log_start`]). It only moves forward: writes take turns on the
//! log's segment-sync gate, so a slower write of a smaller start cannot land last.
//!
//! Cluster mode: a follower moves its own start to the leader's when a fetch response
//! carries a larger one ([`PartitionLog::advance_log_start`]), as Kafka's followers do.

use super::blocking;
use super::error::LogError;
use super::log::PartitionLog;
use super::recovery::{write_offset_file, LOG_START_OFFSET_FILE};

impl PartitionLog {
    /// Moves the log start offset forward to `offset` (DeleteRecords): `offset` must be at
    /// most `high_watermark` (the end of what consumers may read), else OFFSET_OUT_OF_RANGE.
    /// Returns the log start offset after the call (Kafka's low watermark): unchanged when
    /// `offset` is not past it. The new start is durable when this returns; sealed segments
    /// wholly below it are then deleted.
    pub async fn delete_records_before(
        &self,
        offset: i64,
        high_watermark: i64,
    ) -> Result<i64, LogError> {
        let current = self.log_start_offset();
        if offset < 0 || offset > high_watermark || offset > self.log_end_offset() {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: current,
                log_end_offset: high_watermark,
            });
        }
        let moved = self.advance_log_start(offset).await?;
        if moved {
            if let Err(err) = self.apply_retention(super::now_ms()).await {
                // The start moved and is durable; the segments go at the next pass.
                tracing::warn!(dir = %self.dir().display(), %err, "deleting segments below the log start");
            }
        }
        Ok(self.log_start_offset())
    }

    /// Moves the log start offset forward to `offset` (capped at the log end) if it is past
    /// the current one, writing it durably first. True if it moved. Segments are not deleted
    /// here (the next retention pass does).
    pub async fn advance_log_start(&self, offset: i64) -> Result<bool, LogError> {
        let inner = &self.inner;
        inner.check_open()?;
        let _turn = inner
            .segment_sync_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let target = {
            let st = inner.state.borrow();
            let target = offset.min(st.next_offset);
            if target <= st.log_start_offset {
                return Ok(false);
            }
            target
        };
        let dir = inner.dir.clone();
        blocking::run(move || write_offset_file(&dir, LOG_START_OFFSET_FILE, target))
            .await
            .map_err(|e| LogError::io(&inner.dir, "writing the log start offset", e))?;
        let mut st = inner.state.borrow_mut();
        debug_assert!(
            target <= st.next_offset,
            "the log start never passes the log end"
        );
        st.log_start_offset = st.log_start_offset.max(target);
        tracing::info!(
            dir = %inner.dir.display(),
            log_start_offset = st.log_start_offset,
            "log start offset moved"
        );
        Ok(true)
    }
}
