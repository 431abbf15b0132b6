//! A fixed-bucket histogram of relaxed atomics, for the metrics: one thread records into it
//! (a shard, per request or per disk operation, never per record) and the metrics endpoint
//! reads it from another thread at scrape time, without locks.
//!
//! Buckets are powers of two of the recorded unit (`1, 2, 4, ... 2^(BUCKETS-1)`), so finding a
//! value's bucket is one leading-zeros count; values above the last bound land in `+Inf`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Finite buckets: upper bounds `2^0 ..= 2^(BUCKETS-1)` of the recorded unit.
pub const BUCKETS: usize = 28;

#[derive(Debug)]
pub struct AtomicHistogram {
    /// Per bucket (not cumulative); the last slot counts values above every bound.
    counts: [AtomicU64; BUCKETS + 1],
    sum: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

/// A histogram read at one moment, as prometheus-client's encoder takes it (it makes the
/// counts cumulative itself).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, observations above the previous bound and at or below this one),
    /// ascending; the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    /// Records one value (in the histogram's unit: microseconds, bytes, ...).
    pub fn record(&self, value: u64) {
        let index = if value <= 1 {
            0
        } else {
            // Smallest i with value <= 2^i.
            (64 - (value - 1).leading_zeros()) as usize
        };
        self.counts[index.min(BUCKETS)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The histogram now, bounds and sum multiplied by `scale` (e.g. 1e-6 for microseconds
    /// shown in seconds). Bounds up to `max_bound` (in the recorded unit) are listed; the
    /// counts above it show in `+Inf` only.
    pub fn snapshot(&self, scale: f64, max_bound: u64) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(BUCKETS + 1);
        // Counts of buckets past `max_bound` go to `+Inf`.
        let mut above = 0;
        for (index, count) in self.counts.iter().enumerate().take(BUCKETS) {
            let count = count.load(Ordering::Relaxed);
            let bound = 1u64 << index;
            if bound <= max_bound {
                buckets.push((bound as f64 * scale, count));
            } else {
                above += count;
            }
        }
        above += self.counts[BUCKETS].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, above));
        HistogramSnapshot {
            sum: self.sum.load(Ordering::Relaxed) as f64 * scale,
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
        }
    }

    /// Observations recorded so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl HistogramSnapshot {
    /// Adds another snapshot taken with the same scale and bounds (shards summed).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        debug_assert_eq!(self.buckets.len(), other.buckets.len());
        self.sum += other.sum;
        self.count += other.count;
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_smallest_bound_at_or_above_them() {
        let h = AtomicHistogram::default();
        for v in [0, 1, 2, 3, 4, 5, 1000, 1024, 1025] {
            h.record(v);
        }
        let s = h.snapshot(1.0, 2048);
        let at = |bound: f64| s.buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!(at(1.0), 2);
        assert_eq!(at(2.0), 1);
        assert_eq!(at(4.0), 2);
        assert_eq!(at(8.0), 1);
        assert_eq!(at(16.0), 0);
        assert_eq!(at(1024.0), 2);
        assert_eq!(at(2048.0), 1);
        assert_eq!(s.count, 9);
        assert_eq!(s.sum, (1 + 2 + 3 + 4 + 5 + 1000 + 1024 + 1025) as f64);
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 0));
    }

    #[test]
    fn values_past_the_last_bound_count_in_inf_only() {
        let h = AtomicHistogram::default();
        h.record(u64::MAX / 2);
        h.record(10);
        let s = h.snapshot(1e-6, 1 << 20);
        assert_eq!(s.buckets.len(), 22);
        assert_eq!(s.buckets[4].1, 1);
        assert_eq!(s.buckets[21], (f64::INFINITY, 1));
        assert_eq!(s.count, 2);
        let mut merged = s.clone();
        merged.merge(&s);
        assert_eq!(merged.count, 4);
        assert_eq!(merged.buckets[4].1, 2);
        assert_eq!(merged.buckets[21].1, 2);
    }
}
