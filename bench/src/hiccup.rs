//! Host hiccups: how late a thread that asks to wake every millisecond really wakes, on each
//! core, measured beside a run (jHiccup's idea, for a whole machine). Such a thread does
//! almost nothing and runs under `SCHED_FIFO` (ahead of the bench's and the broker's own
//! threads), so when it wakes 8 ms late the core was not available: the hypervisor ran
//! another tenant on it, an interrupt storm, a kernel thread. No broker can answer faster than
//! the machine lets it run, so this is the floor under the tail latency measured in the same
//! window, and `bench produce`/`e2e` report it beside their percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A wake-up later than this counts as a stall.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(1);

/// What one core's meter saw.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CoreHiccups {
    pub cpu: usize,
    /// Wake-ups measured.
    pub samples: u64,
    /// Lateness of the wake-ups, milliseconds.
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
    /// Wake-ups later than [`STALL_THRESHOLD`], and their summed lateness.
    pub stalls: u64,
    pub stalled_ms: f64,
    /// The meter's thread ran under `SCHED_FIFO`, ahead of every ordinary thread: its
    /// lateness is the host's (hypervisor, interrupts, kernel), not a wait behind the bench's
    /// or the broker's own threads on that core. False when the policy was refused (no
    /// CAP_SYS_NICE): then the figure includes those waits too.
    #[serde(default)]
    pub realtime: bool,
}

/// Every core's figures over one window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hiccups {
    pub interval_us: u64,
    pub window_s: f64,
    pub cores: Vec<CoreHiccups>,
}

impl Hiccups {
    /// The longest stall on any core, milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.cores
            .iter()
            .map(|core| core.max_ms)
            .fold(0.0, f64::max)
    }

    pub fn render(&self) -> String {
        let cores: Vec<String> = self
            .cores
            .iter()
            .map(|core| {
                format!(
                    "cpu{} p99.9 {:.2} max {:.2} ms, {} stalls > 1 ms ({:.1} ms){}",
                    core.cpu,
                    core.p99_9_ms,
                    core.max_ms,
                    core.stalls,
                    core.stalled_ms,
                    if core.realtime {
                        ""
                    } else {
                        " (meter not real-time: includes waits behind this run's threads)"
                    }
                )
            })
            .collect();
        format!(
            "host hiccups over {:.0} s: {}",
            self.window_s,
            cores.join("; ")
        )
    }
}

/// The lateness of one core's wake-ups, recorded as they come.
#[derive(Debug)]
pub struct LatenessRecorder {
    histogram: Histogram<u64>,
    stalls: u64,
    stalled: Duration,
}

impl Default for LatenessRecorder {
    fn default() -> Self {
        LatenessRecorder {
            // 1 µs .. 60 s at 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            stalls: 0,
            stalled: Duration::ZERO,
        }
    }
}

impl LatenessRecorder {
    /// One wake-up that was asked for at `due` and happened at `woke`; how late it was.
    pub fn record(&mut self, due: Instant, woke: Instant) -> Duration {
        let late = woke.saturating_duration_since(due);
        self.histogram
            .saturating_record((late.as_micros() as u64).max(1));
        if late > STALL_THRESHOLD {
            self.stalls += 1;
            self.stalled += late;
        }
        late
    }

    pub fn finish(&self, cpu: usize) -> CoreHiccups {
        let ms = |quantile: f64| self.histogram.value_at_quantile(quantile) as f64 / 1000.0;
        CoreHiccups {
            cpu,
            samples: self.histogram.len(),
            p99_ms: ms(0.99),
            p99_9_ms: ms(0.999),
            max_ms: self.histogram.max() as f64 / 1000.0,
            stalls: self.stalls,
            stalled_ms: self.stalled.as_secs_f64() * 1000.0,
            realtime: false,
        }
    }
}

/// Puts the calling thread under `SCHED_FIFO` at the lowest real-time priority; false when
/// that is not allowed.
fn run_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// One sleeping thread per core, pinned to it, until [`HiccupMeter::stop`].
pub struct HiccupMeter {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<CoreHiccups>>,
    interval: Duration,
    started: Instant,
    slowest: SlowestWakeUp,
}

/// The latest wake-up on any core of a running meter since the last
/// [`SlowestWakeUp::take_ms`]: `bench produce` puts it beside each second of its timeline.
#[derive(Debug, Clone, Default)]
pub struct SlowestWakeUp(Arc<AtomicU64>);

impl SlowestWakeUp {
    fn record(&self, late: Duration) {
        self.0.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
    }

    /// Milliseconds, and starts over.
    pub fn take_ms(&self) -> f64 {
        self.0.swap(0, Ordering::Relaxed) as f64 / 1e3
    }
}

impl HiccupMeter {
    /// Starts measuring on `cpus`, waking every `interval`.
    pub fn start(cpus: &[usize], interval: Duration) -> std::io::Result<HiccupMeter> {
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = SlowestWakeUp::default();
        let mut threads = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let stop = stop.clone();
            let slowest = slowest.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("hiccup-{cpu}"))
                    .spawn(move || {
                        crate::produce::pin_to_cpu(cpu);
                        let realtime = run_realtime();
                        let mut recorder = LatenessRecorder::default();
                        let mut due = Instant::now() + interval;
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            let woke = Instant::now();
                            slowest.record(recorder.record(due, woke));
                            due = woke + interval;
                        }
                        CoreHiccups {
                            realtime,
                            ..recorder.finish(cpu)
                        }
                    })?,
            );
        }
        Ok(HiccupMeter {
            stop,
            threads,
            interval,
            started: Instant::now(),
            slowest,
        })
    }

    /// Reads the latest wake-up on any core while the meter runs.
    pub fn slowest_wake_up(&self) -> SlowestWakeUp {
        self.slowest.clone()
    }

    /// Every online core, waking every millisecond (jHiccup's resolution).
    pub fn start_on_all_cores() -> std::io::Result<HiccupMeter> {
        let cpus: Vec<usize> = (0..tuning::online_cpus()).collect();
        HiccupMeter::start(&cpus, Duration::from_millis(1))
    }

    pub fn stop(self) -> Hiccups {
        self.stop.store(true, Ordering::Relaxed);
        let window_s = self.started.elapsed().as_secs_f64();
        let cores = self
            .threads
            .into_iter()
            .filter_map(|thread| thread.join().ok())
            .collect();
        Hiccups {
            interval_us: self.interval.as_micros() as u64,
            window_s,
            cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_recorded_and_stalls_are_counted_and_summed() {
        let mut recorder = LatenessRecorder::default();
        let due = Instant::now();
        recorder.record(due, due + Duration::from_micros(60));
        recorder.record(due, due + Duration::from_micros(80));
        recorder.record(due, due + Duration::from_millis(7));
        recorder.record(due, due + Duration::from_millis(3));
        // Woken early (a spurious wake-up) is no lateness, not a negative one.
        assert_eq!(
            recorder.record(due + Duration::from_millis(1), due),
            Duration::ZERO
        );
        let core = recorder.finish(1);
        assert_eq!(core.samples, 5);
        assert_eq!(core.stalls, 2);
        assert!((core.stalled_ms - 10.0).abs() < 0.01, "{}", core.stalled_ms);
        assert!((core.max_ms - 7.0).abs() < 0.01, "{}", core.max_ms);
    }

    #[test]
    fn the_meter_wakes_on_each_core_it_was_given() {
        let meter = HiccupMeter::start(&[0], Duration::from_millis(1)).unwrap();
        let slowest = meter.slowest_wake_up();
        std::thread::sleep(Duration::from_millis(300));
        // A sleeping thread always wakes a little late (timer slack at least).
        let slowest_ms = slowest.take_ms();
        assert!(slowest_ms > 0.0);
        let hiccups = meter.stop();
        assert_eq!(hiccups.cores.len(), 1);
        assert_eq!(hiccups.cores[0].cpu, 0);
        assert!(
            slowest_ms <= hiccups.cores[0].max_ms + 0.001,
            "{slowest_ms} {hiccups:?}"
        );
        // 300 ms at one wake-up per millisecond; even a badly stalled machine manages a few.
        assert!(hiccups.cores[0].samples >= 10, "{:?}", hiccups.cores[0]);
        assert!(hiccups.render().contains("cpu0"));
        // As root (CI, this machine) the meter runs ahead of ordinary threads.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(hiccups.cores[0].realtime, "SCHED_FIFO refused to root");
        }
    }
}
