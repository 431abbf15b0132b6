//! Latency histograms and the summary every latency-measuring subcommand prints and writes.
//!
//! Latencies are recorded in microseconds into an HdrHistogram (3 significant digits, up to one
//! hour). The JSON summary uses the same top-level field names in every subcommand
//! (`msgs_per_s`, `mb_per_s`, `p50_ms` ... `max_ms`, `errors`, `schedule_kept`), so scripts can
//! compare runs of `produce`, `consume`, `e2e` and `coordinator` alike.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency the histogram holds, microseconds (one hour); longer ones are clamped.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl LatencyHistogram {
    /// Records one latency; zero is recorded as 1 µs and values past an hour as an hour.
    pub fn record(&mut self, latency: Duration) {
        self.record_us(latency.as_micros() as u64, 1);
    }

    /// Records `count` samples of `latency_us` microseconds.
    pub fn record_us(&mut self, latency_us: u64, count: u64) {
        let value = latency_us.clamp(1, LATENCY_US_MAX);
        self.histogram
            .record_n(value, count)
            .expect("value is clamped into the histogram's range");
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share bounds");
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// The latency at `quantile` (0..=1), milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The longest latency, milliseconds; 0 when nothing was recorded.
    pub fn max_ms(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.histogram.max() as f64 / 1000.0
    }

    /// What was recorded after `earlier`, a copy of this histogram taken before (the samples of
    /// one interval of a run).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut interval = self.clone();
        interval
            .histogram
            .subtract(&earlier.histogram)
            .expect("an earlier copy holds a subset of the samples");
        interval
    }

    /// The percentile distribution as HdrHistogram's plotter draws it: 5 steps per halving of
    /// the distance to 100%.
    pub fn distribution(&self) -> Vec<PercentilePoint> {
        if self.is_empty() {
            return Vec::new();
        }
        self.histogram
            .iter_quantiles(5)
            .map(|step| PercentilePoint {
                percentile: step.quantile_iterated_to() * 100.0,
                ms: step.value_iterated_to() as f64 / 1000.0,
            })
            .collect()
    }

    /// Samples at or above `latency_us`.
    pub fn count_at_least_us(&self, latency_us: u64) -> u64 {
        self.histogram.len()
            - self
                .histogram
                .count_between(0, latency_us.saturating_sub(1))
    }

    /// Writes the percentile distribution in HdrHistogram's `.hgrm` text format (values in ms).
    pub fn write_hgrm(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        for step in self.histogram.iter_quantiles(5) {
            let quantile = step.quantile_iterated_to();
            let inverse = if quantile < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - quantile))
            } else {
                "inf".to_string()
            };
            writeln!(
                out,
                "{:>12.3} {:>14.12} {:>10} {:>14}",
                step.value_iterated_to() as f64 / 1000.0,
                quantile,
                step.count_since_last_iteration(),
                inverse
            )?;
        }
        writeln!(
            out,
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
            self.histogram.mean() / 1000.0,
            self.histogram.stdev() / 1000.0
        )?;
        writeln!(
            out,
            "#[Max     = {:>12.3}, Total count    = {:>12}]",
            self.max_ms(),
            self.histogram.len()
        )
    }
}

/// One point of a latency distribution: `percentile` (0..=100) of the samples took at most
/// `ms`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub ms: f64,
}

/// One second of a run: what was acknowledged in it and the latencies of those messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// End of the second, from the start of the run.
    pub t_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
    /// Against the embedded node: the slowest O_DIRECT write round, fdatasync or write of
    /// zeros ahead of its logs that ended in this second. A slow second with a slow disk operation in it waited for
    /// the device; one without did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_max_ms: Option<f64>,
    /// The latest wake-up of the host hiccup meter on any core in this second
    /// ([`crate::hiccup`]): how long the machine itself kept a core from running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_stall_max_ms: Option<f64>,
}

impl Second {
    /// The second ending at `t_s` in which `msgs`/`bytes` were acknowledged over `span_s`
    /// seconds with the latencies of `interval`.
    pub fn new(
        t_s: f64,
        span_s: f64,
        msgs: u64,
        bytes: u64,
        interval: &LatencyHistogram,
    ) -> Second {
        let span_s = span_s.max(1e-9);
        Second {
            t_s,
            msgs_per_s: msgs as f64 / span_s,
            mb_per_s: bytes as f64 / span_s / 1e6,
            p50_ms: interval.quantile_ms(0.5),
            p99_ms: interval.quantile_ms(0.99),
            p99_9_ms: interval.quantile_ms(0.999),
            max_ms: interval.max_ms(),
            disk_max_ms: None,
            host_stall_max_ms: None,
        }
    }
}

/// The result of one measured run, as printed and as written with `--json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// What ran (`produce`, `consume`, `e2e`, `coordinator:create` ...).
    pub workload: String,
    pub msgs: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// False when the generator could not keep its own send schedule (see the run's notes):
    /// then the latencies still include the delay, but the offered load was lower than asked.
    pub schedule_kept: bool,
    /// The intended rate, messages per second; absent when running flat out.
    pub target_msgs_per_s: Option<f64>,
    /// Per second of the run (runs that sample it: `produce`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Second>,
    /// The whole run's latency distribution (`bench report` draws it).
    #[serde(default)]
    pub distribution: Vec<PercentilePoint>,
    /// How late a thread asking to wake every millisecond woke on each core during the run:
    /// the machine's own stalls, the floor under this run's tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_hiccups: Option<crate::hiccup::Hiccups>,
}

/// The counts of a run, before percentiles are read from its histogram.
#[derive(Debug, Clone)]
pub struct RunCounts<'a> {
    pub workload: &'a str,
    pub msgs: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub errors: u64,
    pub schedule_kept: bool,
    pub target_msgs_per_s: Option<f64>,
}

impl Summary {
    pub fn new(counts: RunCounts<'_>, histogram: &LatencyHistogram) -> Summary {
        let RunCounts {
            workload,
            msgs,
            bytes,
            elapsed,
            errors,
            schedule_kept,
            target_msgs_per_s,
        } = counts;
        let elapsed_s = elapsed.as_secs_f64().max(1e-9);
        Summary {
            workload: workload.to_string(),
            msgs,
            bytes,
            elapsed_s,
            msgs_per_s: msgs as f64 / elapsed_s,
            mb_per_s: bytes as f64 / elapsed_s / 1e6,
            p50_ms: histogram.quantile_ms(0.5),
            p90_ms: histogram.quantile_ms(0.9),
            p99_ms: histogram.quantile_ms(0.99),
            p99_9_ms: histogram.quantile_ms(0.999),
            p99_99_ms: histogram.quantile_ms(0.9999),
            max_ms: histogram.max_ms(),
            errors,
            schedule_kept,
            target_msgs_per_s,
            timeline: Vec::new(),
            distribution: histogram.distribution(),
            host_hiccups: None,
        }
    }

    /// The human-readable block printed at the end of a run.
    pub fn render(&self) -> String {
        let mut text = format!(
            "{}: {} msgs in {:.2} s = {:.0} msgs/s, {:.1} MB/s",
            self.workload, self.msgs, self.elapsed_s, self.msgs_per_s, self.mb_per_s
        );
        if let Some(target) = self.target_msgs_per_s {
            text += &format!(" (target {target:.0} msgs/s)");
        }
        text += &format!(
            "\n  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}\n  errors: {}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p99_9_ms, self.p99_99_ms, self.max_ms, self.errors
        );
        let disk = self
            .timeline
            .iter()
            .filter_map(|second| second.disk_max_ms.map(|ms| (ms, second.t_s)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((ms, t_s)) = disk {
            text += &format!(
                "\n  slowest disk operation of the node (O_DIRECT write round, fdatasync or zeros ahead): {ms:.3} ms, in the second ending at {t_s:.1} s"
            );
        }
        if let Some(hiccups) = &self.host_hiccups {
            text += &format!("\n  {}", hiccups.render());
        }
        if !self.schedule_kept {
            text += "\n  WARNING: the generator could NOT keep its own schedule: the offered load was lower than asked";
        }
        text
    }
}

/// Writes `value` as pretty JSON to `path`, naming the file on error.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|err| err.to_string())?;
    std::fs::write(path, text + "\n").map_err(|err| format!("{}: {err}", path.display()))
}

/// Writes the histogram's percentile distribution to `path`.
pub fn write_hgrm(path: &Path, histogram: &LatencyHistogram) -> Result<(), String> {
    let mut file =
        std::fs::File::create(path).map_err(|err| format!("{}: {err}", path.display()))?;
    histogram
        .write_hgrm(&mut file)
        .map_err(|err| format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    //! Proves the summary's JSON carries the shared field names with the right values.
    use super::*;

    #[test]
    fn json_has_the_shared_top_level_fields() {
        let mut histogram = LatencyHistogram::default();
        for us in 1..=1000u64 {
            histogram.record_us(us * 1000, 1);
        }
        let summary = Summary::new(
            RunCounts {
                workload: "produce",
                msgs: 2_000,
                bytes: 200_000,
                elapsed: Duration::from_secs(2),
                errors: 3,
                schedule_kept: true,
                target_msgs_per_s: Some(1000.0),
            },
            &histogram,
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&summary).unwrap()).unwrap();
        for field in [
            "msgs_per_s",
            "mb_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "p99_99_ms",
            "max_ms",
            "errors",
            "schedule_kept",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["msgs_per_s"], 1000.0);
        assert_eq!(json["mb_per_s"], 0.1);
        assert_eq!(json["errors"], 3);
        assert_eq!(json["schedule_kept"], true);
        let p50 = json["p50_ms"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        let max = json["max_ms"].as_f64().unwrap();
        assert!((999.0..=1001.0).contains(&max), "{max}");
        let mut hgrm = Vec::new();
        histogram.write_hgrm(&mut hgrm).unwrap();
        assert!(String::from_utf8(hgrm)
            .unwrap()
            .contains("Total count    =         1000"));
    }
}
