//! Errors of the storage engine, each mapped to the Kafka error code a Produce, Fetch or
//! ListOffsets response carries for it.
//!
//! Bad batches from a client ([`BatchError`]) are operating errors answered with a code; file
//! problems ([`LogError::Io`], [`LogError::Corrupt`]) name the file and the byte position.

use std::path::PathBuf;

/// Kafka protocol error codes used by the storage engine (see the Kafka protocol guide).
pub mod kafka_code {
    /// OFFSET_OUT_OF_RANGE: the requested offset is not in the log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// CORRUPT_MESSAGE: a batch failed its CRC, length or magic check.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// MESSAGE_TOO_LARGE: a batch is larger than `max_batch_bytes` (`message.max.bytes`).
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// KAFKA_STORAGE_ERROR: the log's disk failed (I/O error, log closed).
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// INVALID_RECORD: a batch is well formed but its content is inconsistent.
    pub const INVALID_RECORD: i16 = 87;
}

/// Why a RecordBatch v2 (or a run of them, as in a Produce request) was rejected. `position`
/// is the byte position of the offending batch in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Length, magic, CRC-32C or truncation problem: CORRUPT_MESSAGE (2).
    #[error("corrupt record batch at byte {position}: {reason}")]
    Corrupt { position: usize, reason: String },
    /// Header fields that contradict each other (record count, offset delta): INVALID_RECORD (87).
    #[error("invalid record batch at byte {position}: {reason}")]
    InvalidRecord { position: usize, reason: String },
    /// Batch larger than the limit: MESSAGE_TOO_LARGE (10).
    #[error(
        "record batch at byte {position} is {size_bytes} bytes, more than the limit {max_bytes}"
    )]
    TooLarge {
        position: usize,
        size_bytes: u64,
        max_bytes: u32,
    },
}

impl BatchError {
    /// The Kafka error code a Produce response carries for this rejection.
    pub fn error_code(&self) -> i16 {
        match self {
            BatchError::Corrupt { .. } => kafka_code::CORRUPT_MESSAGE,
            BatchError::InvalidRecord { .. } => kafka_code::INVALID_RECORD,
            BatchError::TooLarge { .. } => kafka_code::MESSAGE_TOO_LARGE,
        }
    }

    /// Byte position of the offending batch in the validated input.
    pub fn position(&self) -> usize {
        match self {
            BatchError::Corrupt { position, .. }
            | BatchError::InvalidRecord { position, .. }
            | BatchError::TooLarge { position, .. } => *position,
        }
    }
}

/// Why a partition log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The appended bytes were rejected; nothing of the request was appended.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A read or a timestamp lookup asked for an offset outside
    /// `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// A file operation failed; `file` names the file.
    #[error("{}: {context}: {source}", file.display())]
    Io {
        file: PathBuf,
        context: &'static str,
        source: std::io::Error,
    },
    /// A file holds something that cannot be repaired automatically (for example a segment
    /// file whose name is not a base offset, or an index of an old segment that points past
    /// its log); names the file and the byte position.
    #[error("{}: byte {position}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        position: u64,
        reason: String,
    },
    /// An earlier write failed, so the log refuses further appends until it is reopened
    /// (recovery then truncates whatever is not intact).
    #[error("partition log {} failed earlier and is read-only: {reason}", dir.display())]
    Failed { dir: PathBuf, reason: String },
    /// The log was closed.
    #[error("partition log is closed")]
    Closed,
    /// An idempotent producer's batch does not follow its last one (a gap, a stale epoch):
    /// OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH or DUPLICATE_SEQUENCE_NUMBER.
    #[error("{reason}")]
    Producer { code: i16, reason: String },
}

impl LogError {
    /// The Kafka error code a response carries for this failure.
    pub fn error_code(&self) -> i16 {
        match self {
            LogError::Batch(e) => e.error_code(),
            LogError::Producer { code, .. } => *code,
            LogError::OffsetOutOfRange { .. } => kafka_code::OFFSET_OUT_OF_RANGE,
            LogError::Io { .. }
            | LogError::Corrupt { .. }
            | LogError::Failed { .. }
            | LogError::Closed => kafka_code::KAFKA_STORAGE_ERROR,
        }
    }

    pub(crate) fn io(
        file: impl Into<PathBuf>,
        context: &'static str,
        source: std::io::Error,
    ) -> Self {
        LogError::Io {
            file: file.into(),
            context,
            source,
        }
    }
}
