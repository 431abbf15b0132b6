//! Progress lines of long operations, for the broker (log recovery at start, a shard opening
//! its topics, compaction) and the coordinator (a large frame, in practice a SNAP, sent to or
//! received from a peer): at most one `info` line per second while the work goes on, so an
//! operator watching a slow start or a slow transfer sees it moving and knows how much is
//! left, and a closing line when the whole took a second or more. Work that finishes within a
//! second logs nothing here.
//!
//! A line reads `WHAT: DONE of TOTAL UNIT (P%) after T s`, e.g.
//! `recovering /data/orders-0: 12 of 40 segments (30%) after 12.0 s` or
//! `sending to server 3: 2097152 of 10485760 bytes (20%) after 1.0 s`, and carries the fields
//! `done`, `total`, `unit` and `elapsed_ms` (plus those of the spans it is logged in, such as
//! the coordinator's `peer`). No line is written for the last unit: the closing line, or the
//! caller's own completion line, says that.

use std::fmt;
use std::time::{Duration, Instant};

/// How often a progress line is written.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// One long operation's progress: `done` of `total` units (segments, topics, bytes).
#[derive(Debug)]
pub struct Progress {
    /// What is being done and to what, e.g. `recovering /data/orders-0`.
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    next_line: Instant,
    interval: Duration,
}

impl Progress {
    /// An operation of `total` units starting now, with a line a second.
    pub fn new(what: String, unit: &'static str, total: u64) -> Progress {
        Progress::with_interval(what, unit, total, PROGRESS_INTERVAL)
    }

    /// A line every `interval` (and a closing one if the whole took that long).
    pub fn with_interval(
        what: String,
        unit: &'static str,
        total: u64,
        interval: Duration,
    ) -> Progress {
        Progress::started_at(what, unit, total, interval, Instant::now())
    }

    /// As [`Progress::with_interval`], on a clock the caller reads (tests pass their own).
    pub fn started_at(
        what: String,
        unit: &'static str,
        total: u64,
        interval: Duration,
        now: Instant,
    ) -> Progress {
        Progress {
            what,
            unit,
            total,
            done: 0,
            started: now,
            next_line: now + interval,
            interval,
        }
    }

    /// Counts `n` more units done; writes a line if the last one is `interval` old.
    pub fn advance(&mut self, n: u64) {
        let done = self.done.saturating_add(n);
        if let Some(line) = self.advance_to(done, Instant::now()) {
            line.log();
        }
    }

    /// Records that `done` units are done at `now`; the line to write if one is due (the
    /// caller logs it with [`ProgressLine::log`]).
    pub fn advance_to(&mut self, done: u64, now: Instant) -> Option<ProgressLine<'_>> {
        debug_assert!(
            done >= self.done,
            "progress went back: {done} < {}",
            self.done
        );
        debug_assert!(
            done <= self.total,
            "progress past its total: {done} > {}",
            self.total
        );
        self.done = done;
        if now < self.next_line || done >= self.total {
            return None;
        }
        self.next_line = now + self.interval;
        Some(ProgressLine {
            what: &self.what,
            unit: self.unit,
            done,
            total: self.total,
            elapsed_ms: now.saturating_duration_since(self.started).as_millis() as u64,
        })
    }

    /// Time since the operation started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the operation: one closing line if it took `interval` or more.
    pub fn finish(self) {
        let elapsed = self.started.elapsed();
        if elapsed >= self.interval {
            tracing::info!(
                done = self.done,
                total = self.total,
                unit = self.unit,
                elapsed_ms = elapsed.as_millis() as u64,
                "{}: done, {} {} in {:.1} s",
                self.what,
                self.done,
                self.unit,
                elapsed.as_secs_f64()
            );
        }
    }
}

/// One progress line: how much of the operation is done, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressLine<'a> {
    pub what: &'a str,
    pub unit: &'static str,
    pub done: u64,
    pub total: u64,
    pub elapsed_ms: u64,
}

impl ProgressLine<'_> {
    /// Writes the line (`info`), with its numbers as fields too.
    pub fn log(&self) {
        tracing::info!(
            done = self.done,
            total = self.total,
            unit = self.unit,
            elapsed_ms = self.elapsed_ms,
            "{self}"
        );
    }
}

impl fmt::Display for ProgressLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} {} ({:.0}%) after {:.1} s",
            self.what,
            self.done,
            self.total,
            self.unit,
            self.done as f64 * 100.0 / self.total.max(1) as f64,
            self.elapsed_ms as f64 / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    //! Proves lines come at most once per interval with done of total, none for the last
    //! unit, a closing line only for an operation that took the interval or longer.
    use super::*;
    use crate::logging::captured;

    #[test]
    fn lines_come_once_per_interval_and_not_for_the_last_unit() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut p =
            Progress::started_at("sending to server 3".into(), "bytes", 10 << 20, second, t0);
        assert_eq!(p.advance_to(1 << 20, t0 + Duration::from_millis(500)), None);
        let line = p
            .advance_to(2 << 20, t0 + Duration::from_millis(1000))
            .unwrap();
        assert_eq!(
            (line.done, line.total, line.elapsed_ms),
            (2 << 20, 10 << 20, 1000)
        );
        assert_eq!(
            line.to_string(),
            "sending to server 3: 2097152 of 10485760 bytes (20%) after 1.0 s"
        );
        assert_eq!(
            p.advance_to(3 << 20, t0 + Duration::from_millis(1500)),
            None
        );
        assert!(p
            .advance_to(4 << 20, t0 + Duration::from_millis(2000))
            .is_some());
        assert_eq!(
            p.advance_to(10 << 20, t0 + Duration::from_millis(9000)),
            None
        );
    }

    #[test]
    fn a_slow_operation_logs_how_far_it_got_and_when_it_ended() {
        let text = captured(|| {
            let mut progress =
                Progress::with_interval("recovering d".into(), "segments", 3, Duration::ZERO);
            for _ in 0..3 {
                progress.advance(1);
            }
            progress.finish();
        });
        for expected in [
            "recovering d: 1 of 3 segments (33%) after ",
            "recovering d: 2 of 3 segments (67%) after ",
            "recovering d: done, 3 segments in",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        assert!(
            !text.contains("3 of 3"),
            "a line for the last unit in\n{text}"
        );
    }

    #[test]
    fn a_quick_operation_logs_nothing() {
        let text = captured(|| {
            let mut progress = Progress::new("recovering d".into(), "segments", 2);
            progress.advance(2);
            progress.finish();
        });
        assert_eq!(text, "");
    }
}
