//! Storage engine of one partition: segments of Kafka RecordBatch v2, written as produced.
//!
//! Entry point: [`PartitionLog`] (open / append / read / offsets / retention / close). The
//! on-disk format, group commit, flush policies and recovery are described in
//! `docs/storage.md`. Everything here is single-shard (`!Send`): a log is owned by the shard
//! whose executor opened it.

pub mod append_gate;
pub mod batch_cache;
pub mod blocking;
pub mod compaction;
pub mod disk_budget;
pub mod error;
#[cfg(test)]
mod fault_injection;
pub mod file_range;
pub mod io_latency;
pub mod iopoll_probe;
pub mod leader_epoch_checkpoint;
pub mod log;
pub mod log_cleaner;
pub mod log_config;
pub mod log_reader;
pub mod log_start;
pub mod notify;
pub mod offset_index;
pub mod producer_rebuild;
pub mod producer_snapshot;
pub mod producer_state;
pub mod record_batch;
pub mod recovery;
pub mod retention;
pub mod segment;
pub mod segment_appender;
mod segment_swap;
mod stream_copy;
pub mod time_index;
pub mod truncation;

pub use compaction::CleanOutcome;
pub use error::{kafka_code, BatchError, LogError};
pub use file_range::{FileHandle, FileRange};
pub use log::{AppendInfo, LogStats, PartitionLog};
pub use log_config::{CleanupPolicy, LogConfig, LogOverrides};
pub use log_reader::{ActiveProducer, LogReadResult, ReadChunk, TimestampOffset};
pub use recovery::{RecoveryReport, Truncation, CLEAN_SHUTDOWN_FILE};
pub use retention::RetentionOutcome;
pub use segment::now_ms;
