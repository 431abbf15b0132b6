//! Progress lines for long operations (log recovery at start, opening a shard's partitions,
//! compaction): at most one `info` line per second while the work goes on, and one at the end
//! when it took a second or more, so an operator watching a slow start sees it moving and
//! knows how much is left. Work that finishes within a second logs nothing here.

use std::time::{Duration, Instant};

/// How often a progress line is written.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// One long operation's progress: `done` of `total` units (segments, bytes, partitions).
#[derive(Debug)]
pub struct Progress {
    /// What is being done and to what, e.g. `recovering /data/orders-0`.
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    interval: Duration,
}

impl Progress {
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
        let now = Instant::now();
        Progress {
            what,
            unit,
            total,
            done: 0,
            started: now,
            last_line: now,
            interval,
        }
    }

    /// Counts `n` more units done; writes a line if the last one is a second old.
    pub fn advance(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        debug_assert!(self.done <= self.total, "progress past its total");
        let now = Instant::now();
        if now.duration_since(self.last_line) >= self.interval {
            self.last_line = now;
            tracing::info!(
                done = self.done,
                total = self.total,
                unit = self.unit,
                elapsed_ms = now.duration_since(self.started).as_millis() as u64,
                "{}: {} of {} {}",
                self.what,
                self.done,
                self.total,
                self.unit
            );
        }
    }

    /// Ends the operation: one closing line if it took a second or more.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(run: impl FnOnce()) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_slow_operation_logs_how_far_it_got_and_when_it_ended() {
        let text = logged(|| {
            let mut progress =
                Progress::with_interval("recovering d".into(), "segments", 3, Duration::ZERO);
            for _ in 0..3 {
                progress.advance(1);
            }
            progress.finish();
        });
        for expected in [
            "recovering d: 1 of 3 segments",
            "recovering d: 3 of 3 segments",
            "recovering d: done, 3 segments in",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn a_quick_operation_logs_nothing() {
        let text = logged(|| {
            let mut progress = Progress::new("recovering d".into(), "segments", 2);
            progress.advance(2);
            progress.finish();
        });
        assert_eq!(text, "");
    }
}
