//! `bench report`: one HTML page with SVG charts from one or more run results, so runs can be
//! compared by eye (flush policies, before/after a change). Inputs are the `--json` summaries
//! of `bench produce`/`consume`/`e2e` (their per-second timeline and latency distribution) and
//! HdrHistogram `.hgrm` files (`--hgrm`, distribution only). Charts:
//!
//! - throughput per second over the run, one line per run;
//! - p50, p99 and p99.9 per second over the run (solid, dashed, dotted), one colour per run;
//! - the percentile distribution on HdrHistogram's log scale (x = 1/(1-percentile)), one line
//!   per run, as HdrHistogram's plotter draws it;
//! - a table of each run's summary.
//!
//! The page is self-contained (no scripts or styles fetched); a small inline script records,
//! once the browser has laid the page out, how many charts and lines it drew and their size, so
//! a headless browser can check the page rendered (tests/test_bench_report.py).

use std::fmt::Write;
use std::path::Path;

use crate::report::{PercentilePoint, Summary};

/// One input: its label (the file name) and what it holds.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    /// Absent for an `.hgrm` input.
    pub summary: Option<Summary>,
    pub distribution: Vec<PercentilePoint>,
}

/// Reads a `--json` summary or an `.hgrm` distribution, naming the file on error.
pub fn load_run(path: &Path) -> Result<Run, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let label = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    if path.extension().is_some_and(|ext| ext == "hgrm") {
        let distribution = parse_hgrm(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(Run {
            label,
            summary: None,
            distribution,
        });
    }
    let summary: Summary = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a bench --json summary: {e}", path.display()))?;
    Ok(Run {
        label,
        distribution: summary.distribution.clone(),
        summary: Some(summary),
    })
}

/// The `(percentile, ms)` rows of HdrHistogram's percentile output (`Value Percentile
/// TotalCount 1/(1-Percentile)`; comment and header lines skipped).
pub fn parse_hgrm(text: &str) -> Result<Vec<PercentilePoint>, String> {
    let mut points = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 4 || line.trim_start().starts_with('#') {
            continue;
        }
        let (Ok(ms), Ok(quantile)) = (words[0].parse::<f64>(), words[1].parse::<f64>()) else {
            continue;
        };
        if !(0.0..=1.0).contains(&quantile) || !ms.is_finite() || ms < 0.0 {
            return Err(format!("line {}: not a percentile row: {line}", number + 1));
        }
        points.push(PercentilePoint {
            percentile: quantile * 100.0,
            ms,
        });
    }
    if points.is_empty() {
        return Err("no percentile rows (expected HdrHistogram's .hgrm output)".into());
    }
    Ok(points)
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 45.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
/// The distribution's x axis ends at 99.9999% (1/(1-p) = 10^6).
const LOG_X_MAX: f64 = 6.0;

struct Line {
    label: String,
    colour: &'static str,
    dash: &'static str,
    points: Vec<(f64, f64)>,
}

/// How the x axis is drawn.
enum XAxis {
    Seconds,
    /// x holds log10(1/(1-percentile/100)).
    Percentile,
}

/// The page.
pub fn render(runs: &[Run], title: &str) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;margin:20px}} table{{border-collapse:collapse}} \
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} \
         svg.chart{{display:block;margin:10px 0 30px 0}}</style></head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(title)
    );
    html += &summary_table(runs);

    let colour = |i: usize| COLOURS[i % COLOURS.len()];
    let timelines: Vec<(usize, &Run, &Summary)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.summary.as_ref().map(|s| (i, r, s)))
        .filter(|(_, _, s)| !s.timeline.is_empty())
        .collect();
    if !timelines.is_empty() {
        let throughput: Vec<Line> = timelines
            .iter()
            .map(|(i, run, s)| Line {
                label: run.label.clone(),
                colour: colour(*i),
                dash: "",
                points: s.timeline.iter().map(|p| (p.t_s, p.msgs_per_s)).collect(),
            })
            .collect();
        html += &chart(
            "throughput",
            "Throughput per second",
            "s",
            "msgs/s",
            &throughput,
            XAxis::Seconds,
        );
        let mut latency = Vec::new();
        for (i, run, s) in &timelines {
            for (name, dash, value) in [
                (
                    "p50",
                    "",
                    (|p: &crate::report::Second| p.p50_ms) as fn(_) -> f64,
                ),
                ("p99", "6,3", |p| p.p99_ms),
                ("p99.9", "2,3", |p| p.p99_9_ms),
            ] {
                latency.push(Line {
                    label: format!("{} {name}", run.label),
                    colour: colour(*i),
                    dash,
                    points: s.timeline.iter().map(|p| (p.t_s, value(p))).collect(),
                });
            }
            // The causes beside each second, where the run measured them.
            for (name, dash, cause) in [
                (
                    "slowest disk operation",
                    "8,3,2,3",
                    (|p: &crate::report::Second| p.disk_max_ms) as fn(_) -> Option<f64>,
                ),
                ("host stall", "1,4", |p| p.host_stall_max_ms),
            ] {
                let points: Vec<(f64, f64)> = s
                    .timeline
                    .iter()
                    .filter_map(|p| cause(p).map(|ms| (p.t_s, ms)))
                    .collect();
                if !points.is_empty() {
                    latency.push(Line {
                        label: format!("{} {name}", run.label),
                        colour: colour(*i),
                        dash,
                        points,
                    });
                }
            }
        }
        html += &chart(
            "latency-over-time",
            "Latency per second: p50 (solid), p99 (dashed), p99.9 (dotted); the host's longest \
             stall (sparse dots) and, against an embedded node, its slowest O_DIRECT write round \
             or fdatasync (dash-dot)",
            "s",
            "ms",
            &latency,
            XAxis::Seconds,
        );
    }
    let distributions: Vec<Line> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.distribution.is_empty())
        .map(|(i, run)| Line {
            label: run.label.clone(),
            colour: colour(i),
            dash: "",
            points: run
                .distribution
                .iter()
                .map(|p| (percentile_x(p.percentile), p.ms))
                .collect(),
        })
        .collect();
    if !distributions.is_empty() {
        html += &chart(
            "distribution",
            "Latency by percentile",
            "percentile",
            "ms",
            &distributions,
            XAxis::Percentile,
        );
    }
    html += RENDER_CHECK;
    html += "</body></html>\n";
    html
}

/// Records, after layout, what the browser drew: `data-charts` and `data-lines` on `<body>`,
/// and each line's drawn width in `data-drawn-width`.
const RENDER_CHECK: &str = "<script>\nwindow.addEventListener('load', function () {\n\
  var charts = document.querySelectorAll('svg.chart');\n\
  var lines = document.querySelectorAll('svg.chart polyline.series');\n\
  lines.forEach(function (l) { l.setAttribute('data-drawn-width', String(l.getBBox().width)); });\n\
  document.body.setAttribute('data-charts', String(charts.length));\n\
  document.body.setAttribute('data-lines', String(lines.length));\n\
});\n</script>\n";

/// log10(1/(1-p)), capped at [`LOG_X_MAX`] (100% is drawn at the axis end).
fn percentile_x(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 10f64.powf(-LOG_X_MAX) {
        LOG_X_MAX
    } else {
        (1.0 / rest).log10().clamp(0.0, LOG_X_MAX)
    }
}

fn summary_table(runs: &[Run]) -> String {
    let mut t = String::from(
        "<table id=\"summary\"><tr><th>run</th><th>workload</th><th>msgs/s</th><th>MB/s</th>\
         <th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th>\
         <th>host stall max ms</th></tr>\n",
    );
    for run in runs {
        match &run.summary {
            Some(s) => {
                let _ = writeln!(
                    t,
                    "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.3}</td>\
                     <td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                    escape(&run.label),
                    escape(&s.workload),
                    s.msgs_per_s,
                    s.mb_per_s,
                    s.p50_ms,
                    s.p99_ms,
                    s.p99_9_ms,
                    s.max_ms,
                    s.errors,
                    s.host_hiccups
                        .as_ref()
                        .map_or("-".to_string(), |h| format!("{:.2}", h.max_ms()))
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "<tr><td>{}</td><td colspan=\"9\">distribution only (.hgrm)</td></tr>",
                    escape(&run.label)
                );
            }
        }
    }
    t + "</table>\n"
}

fn chart(id: &str, title: &str, x_label: &str, y_label: &str, lines: &[Line], x: XAxis) -> String {
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (x_min, x_max) = match x {
        XAxis::Seconds => (0.0, all().map(|p| p.0).fold(1.0, f64::max)),
        XAxis::Percentile => (0.0, LOG_X_MAX),
    };
    let y_max = nice_ceiling(all().map(|p| p.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |v: f64| LEFT + (v - x_min) / (x_max - x_min).max(1e-9) * plot_w;
    let sy = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<h2>{}</h2>\n<svg class=\"chart\" id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">",
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" \
         stroke=\"#999\"/>"
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = sy(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 5.0,
            y + 4.0,
            tick(v)
        );
    }
    let x_ticks: Vec<(f64, String)> = match x {
        XAxis::Seconds => (0..=5)
            .map(|i| {
                let v = x_min + (x_max - x_min) * i as f64 / 5.0;
                let digits = if x_max - x_min < 10.0 { 1 } else { 0 };
                (v, format!("{v:.digits$}"))
            })
            .collect(),
        XAxis::Percentile => ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64, l.to_string()))
            .collect(),
    };
    for (v, label) in x_ticks {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            sx(v),
            TOP + plot_h + 15.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 12 {})\" \
         text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (n, line) in lines.iter().enumerate() {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline class=\"series\" data-run=\"{}\" fill=\"none\" stroke=\"{}\" \
             stroke-width=\"1.5\" stroke-dasharray=\"{}\" points=\"{}\"/>",
            escape(&line.label),
            line.colour,
            line.dash,
            points.join(" ")
        );
        let legend_y = TOP + 12.0 + 13.0 * n as f64;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{legend_y:.1}\" font-size=\"11\" fill=\"{}\">{}</text>",
            LEFT + 8.0,
            line.colour,
            escape(&line.label)
        );
    }
    svg + "</svg>\n"
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (1 when `v` is 0).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

fn tick(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{LatencyHistogram, RunCounts, Second};
    use std::time::Duration;

    fn summary(latencies_ms: &[u64]) -> Summary {
        let mut histogram = LatencyHistogram::default();
        for ms in latencies_ms {
            histogram.record_us(ms * 1000, 1);
        }
        let mut summary = Summary::new(
            RunCounts {
                workload: "produce",
                msgs: latencies_ms.len() as u64,
                bytes: 100 * latencies_ms.len() as u64,
                elapsed: Duration::from_secs(2),
                errors: 0,
                schedule_kept: true,
                target_msgs_per_s: None,
            },
            &histogram,
        );
        summary.timeline = (1..=2)
            .map(|t| Second::new(t as f64, 1.0, 500, 50_000, &histogram))
            .collect();
        summary
    }

    #[test]
    fn a_json_summary_round_trips_and_draws_three_charts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("always.json");
        crate::report::write_json(&path, &summary(&[1, 2, 3, 40])).unwrap();
        let run = load_run(&path).unwrap();
        assert_eq!(run.label, "always");
        assert_eq!(run.summary.as_ref().unwrap().timeline.len(), 2);
        assert!(!run.distribution.is_empty());
        let page = render(&[run], "t");
        for id in ["throughput", "latency-over-time", "distribution"] {
            assert!(page.contains(&format!("id=\"{id}\"")), "{id} missing");
        }
        // 1 throughput line, 3 latency lines, 1 distribution line.
        assert_eq!(page.matches("<polyline class=\"series\"").count(), 5);
    }

    #[test]
    fn a_run_against_the_embedded_node_also_draws_its_slowest_disk_operation_and_host_stall() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("always.json");
        let mut with_disk = summary(&[1, 2, 3, 40]);
        for (second, ms) in with_disk.timeline.iter_mut().zip([0.4, 37.0]) {
            second.disk_max_ms = Some(ms);
            second.host_stall_max_ms = Some(ms / 10.0);
        }
        crate::report::write_json(&path, &with_disk).unwrap();
        let run = load_run(&path).unwrap();
        let timeline = &run.summary.as_ref().unwrap().timeline;
        assert_eq!(timeline[1].disk_max_ms, Some(37.0));
        assert_eq!(timeline[1].host_stall_max_ms, Some(3.7));
        let page = render(&[run], "t");
        assert_eq!(page.matches("<polyline class=\"series\"").count(), 7);
        assert!(page.contains("always slowest disk operation"));
        assert!(page.contains("always host stall"));
        assert!(with_disk
            .render()
            .contains("37.000 ms, in the second ending at 2.0 s"));
    }

    #[test]
    fn hgrm_rows_are_read_and_junk_is_refused() {
        let mut histogram = LatencyHistogram::default();
        for ms in 1..=100u64 {
            histogram.record_us(ms * 1000, 1);
        }
        let mut text = Vec::new();
        histogram.write_hgrm(&mut text).unwrap();
        let points = parse_hgrm(&String::from_utf8(text).unwrap()).unwrap();
        assert_eq!(points.first().unwrap().percentile, 0.0);
        let last = points.last().unwrap();
        assert_eq!(last.percentile, 100.0);
        assert!((99.0..=101.0).contains(&last.ms), "{last:?}");
        assert!(parse_hgrm("hello\nworld\n").is_err());
        assert!(parse_hgrm("1.0 7.0 3 4\n").is_err());
    }

    #[test]
    fn percentiles_sit_on_hdrhistograms_log_axis() {
        assert_eq!(percentile_x(0.0), 0.0);
        assert!((percentile_x(99.0) - 2.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-6);
        assert_eq!(percentile_x(100.0), LOG_X_MAX);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.0031), 0.005);
        assert_eq!(nice_ceiling(1_200_000.0), 2_000_000.0);
    }
}
