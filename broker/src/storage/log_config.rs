//! Settings of one partition log: the profile's [`tuning::StorageLimits`] and Kafka's
//! compaction defaults, with per-topic overrides applied.

use tuning::{FlushPolicy, StorageLimits};

/// Effective settings of one partition log. Build with [`LogConfig::from_limits`] and
/// [`LogConfig::with_overrides`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll when the active segment would grow past this, bytes.
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch is older than this, milliseconds.
    pub segment_ms: u64,
    /// Delete sealed segments whose newest batch is older than this, milliseconds; -1 never.
    pub retention_ms: i64,
    /// Delete oldest sealed segments while the log is larger than this, bytes; -1 no limit.
    pub retention_bytes: i64,
    /// When appends are fdatasync'ed.
    pub flush: FlushPolicy,
    /// One sparse index entry per this many bytes of log.
    pub index_interval_bytes: u32,
    /// Largest accepted batch, bytes (header included).
    pub max_batch_bytes: u32,
    /// Size of the appender's aligned fill buffer, bytes (multiple of 4096, at least
    /// `max_batch_bytes + 4096`).
    pub write_buffer_bytes: u32,
    /// Preallocation ahead of the write position, bytes; 0 disables it.
    pub preallocate_bytes: u64,
    /// Preallocation writes zeros ahead of the appends (see [`super::log`]'s zero fill).
    pub preallocate_zeroes: bool,
    /// `cleanup.policy`: which of compaction and deletion by retention apply.
    pub cleanup: CleanupPolicy,
    /// Tombstones stay this long after the segment holding them was first cleaned (see
    /// [`super::compaction`]), milliseconds (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// A clean starts once dirty bytes are at least this share of the cleanable bytes, parts
    /// per million (`min.cleanable.dirty.ratio` 0.5 = 500000).
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// A segment is cleaned only once its newest batch is this old, milliseconds
    /// (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
}

/// Kafka's `cleanup.policy`: `delete`, `compact` or both (`compact,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub compact: bool,
    pub delete: bool,
}

impl CleanupPolicy {
    /// Kafka's default.
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        compact: false,
        delete: true,
    };
    /// `__consumer_offsets`' policy.
    pub const COMPACT: CleanupPolicy = CleanupPolicy {
        compact: true,
        delete: false,
    };

    /// Parses Kafka's comma-separated list (`delete`, `compact`, `compact,delete`, any order,
    /// spaces allowed); `None` for anything else or an empty list.
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let mut policy = CleanupPolicy {
            compact: false,
            delete: false,
        };
        for item in value.split(',') {
            match item.trim() {
                "compact" => policy.compact = true,
                "delete" => policy.delete = true,
                _ => return None,
            }
        }
        Some(policy)
    }
}

impl std::fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        })
    }
}

/// Kafka's defaults of the compaction settings.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 86_400_000;
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PPM: u32 = 500_000;

impl LogConfig {
    /// The profile's defaults.
    pub fn from_limits(limits: &StorageLimits) -> LogConfig {
        LogConfig {
            segment_bytes: limits.segment_bytes,
            segment_ms: limits.segment_ms,
            retention_ms: limits.retention_ms,
            retention_bytes: limits.retention_bytes,
            flush: limits.flush(),
            index_interval_bytes: limits.index_interval_bytes,
            max_batch_bytes: limits.max_batch_bytes,
            write_buffer_bytes: limits.write_buffer_bytes,
            preallocate_bytes: limits.preallocate_bytes,
            preallocate_zeroes: limits.preallocate_zeroes,
            cleanup: CleanupPolicy::DELETE,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_cleanable_dirty_ratio_ppm: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PPM,
            min_compaction_lag_ms: 0,
        }
    }

    /// These settings with every `Some` field of `overrides` taking precedence. The write
    /// buffer grows if needed so one batch and the tail page always fit.
    pub fn with_overrides(mut self, overrides: &LogOverrides) -> LogConfig {
        if let Some(v) = overrides.segment_bytes {
            self.segment_bytes = v;
        }
        if let Some(v) = overrides.segment_ms {
            self.segment_ms = v;
        }
        if let Some(v) = overrides.retention_ms {
            self.retention_ms = v;
        }
        if let Some(v) = overrides.retention_bytes {
            self.retention_bytes = v;
        }
        if let Some(v) = overrides.flush {
            self.flush = v;
        }
        if let Some(v) = overrides.index_interval_bytes {
            self.index_interval_bytes = v;
        }
        if let Some(v) = overrides.max_batch_bytes {
            self.max_batch_bytes = v;
        }
        if let Some(v) = overrides.cleanup {
            self.cleanup = v;
        }
        if let Some(v) = overrides.delete_retention_ms {
            self.delete_retention_ms = v;
        }
        if let Some(v) = overrides.min_cleanable_dirty_ratio_ppm {
            self.min_cleanable_dirty_ratio_ppm = v;
        }
        if let Some(v) = overrides.min_compaction_lag_ms {
            self.min_compaction_lag_ms = v;
        }
        self.write_buffer_bytes = self.effective_write_buffer_bytes();
        self
    }

    pub(crate) fn effective_write_buffer_bytes(&self) -> u32 {
        let need = (self.max_batch_bytes as u64 + 2 * 4096).div_ceil(4096) * 4096;
        (self.write_buffer_bytes as u64)
            .max(need)
            .min(u32::MAX as u64) as u32
    }
}

/// Per-log overrides of the profile (Kafka topic configs `segment.bytes`, `segment.ms`,
/// `retention.ms`, `retention.bytes`, `flush.*`, `index.interval.bytes`,
/// `max.message.bytes`, `cleanup.policy`, `delete.retention.ms`,
/// `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`). `None` keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOverrides {
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<u64>,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub flush: Option<FlushPolicy>,
    pub index_interval_bytes: Option<u32>,
    pub max_batch_bytes: Option<u32>,
    pub cleanup: Option<CleanupPolicy>,
    pub delete_retention_ms: Option<i64>,
    pub min_cleanable_dirty_ratio_ppm: Option<u32>,
    pub min_compaction_lag_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    //! Overrides replace exactly the fields they set, and the write buffer follows a larger
    //! batch limit so one batch and the tail page always fit.
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = LogConfig::from_limits(&StorageLimits::default());
        assert_eq!(base.flush, FlushPolicy::Always);
        let same = base.with_overrides(&LogOverrides::default());
        assert_eq!(same, base);
        let o = LogOverrides {
            flush: Some(FlushPolicy::Never),
            retention_ms: Some(1000),
            max_batch_bytes: Some(8 << 20),
            ..LogOverrides::default()
        };
        let c = base.with_overrides(&o);
        assert_eq!(c.flush, FlushPolicy::Never);
        assert_eq!(c.retention_ms, 1000);
        assert_eq!(c.segment_bytes, base.segment_bytes);
        assert!(c.write_buffer_bytes as u64 >= (8 << 20) + 4096);
        assert_eq!(c.write_buffer_bytes % 4096, 0);
        assert_eq!(c.cleanup, CleanupPolicy::DELETE);
    }

    #[test]
    fn cleanup_policies_parse_as_kafka_lists() {
        let both = CleanupPolicy {
            compact: true,
            delete: true,
        };
        assert_eq!(
            CleanupPolicy::parse("compact"),
            Some(CleanupPolicy::COMPACT)
        );
        assert_eq!(CleanupPolicy::parse("delete"), Some(CleanupPolicy::DELETE));
        assert_eq!(CleanupPolicy::parse("delete, compact"), Some(both));
        assert_eq!(both.to_string(), "compact,delete");
        for bad in ["", "compacted", "compact,,delete"] {
            assert_eq!(CleanupPolicy::parse(bad), None, "{bad:?}");
        }
    }
}
