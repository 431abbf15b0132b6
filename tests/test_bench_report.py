"""`bench report` draws real runs, checked in a real browser: two short `bench produce` runs
against the embedded single node (flush `always` and `never`) write their `--json` and
`--hgrm` results, `bench report` turns them into one page, and headless Chromium (Debian's
package) loads it; the page's own script records what the browser laid out, and the test reads
that back from the rendered DOM: three charts, one line per run and percentile, each drawn
with a width."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import PROFILES
from test_coordinator_kazoo import built_binary

pytestmark = pytest.mark.timeout(180)


def bench(*args, cwd):
    done = subprocess.run([str(built_binary("bench")), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_report_of_two_runs_renders_in_a_browser(tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: run scripts/setup (Debian package chromium)"
    always = PROFILES / "dev-2core.toml"
    never = tmp_path / "never.toml"
    never.write_text(always.read_text().replace('flush_policy = "always"', 'flush_policy = "never"'))
    assert 'flush_policy = "never"' in never.read_text()
    for name, profile in [("always", always), ("never", never)]:
        out = bench("produce", "--rate", "5000", "--duration", "3", "--tuning", str(profile),
                    "--json", f"{name}.json", "--hgrm", f"{name}.hgrm", cwd=tmp_path)
        assert "produce: 15000 msgs" in out, out
        # The machine's own stalls were measured beside the run, on every core.
        hiccups = json.loads((tmp_path / f"{name}.json").read_text())["host_hiccups"]
        assert [core["cpu"] for core in hiccups["cores"]] == list(range(os.cpu_count())), hiccups
        assert all(core["samples"] >= 100 for core in hiccups["cores"]), hiccups
        assert re.search(r"host hiccups over \d+ s: cpu0 p99.9 ", out), out
        # Each second also carries the embedded node's slowest disk operation and the host's
        # longest stall in it.
        timeline = json.loads((tmp_path / f"{name}.json").read_text())["timeline"]
        assert len(timeline) >= 2, timeline
        for second in timeline:
            assert second["disk_max_ms"] > 0 and second["host_stall_max_ms"] > 0, second
    out = bench("report", "--out", "report.html", "--title", "flush policies",
                "always.json", "never.json", "never.hgrm", cwd=tmp_path)
    assert "3 runs" in out
    page = (tmp_path / "report.html").read_text()
    assert "<td>always</td>" in page and "<td>never</td>" in page
    assert "<th>host stall max ms</th>" in page

    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" +
         str(tmp_path / "chromium-profile"), "--dump-dom", (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:2000]
    assert 'data-charts="3"' in body.group(1), body.group(0)
    # Throughput: 2 runs; latency over time: 2 runs x (3 percentiles, the slowest disk
    # operation, the host's longest stall); distribution: 3 inputs.
    assert 'data-lines="15"' in body.group(1), body.group(0)
    widths = [float(w) for w in re.findall(r'data-drawn-width="([0-9.]+)"', dom)]
    assert len(widths) == 15 and all(w > 0 for w in widths), widths
    runs = re.findall(r'<polyline class="series" data-run="([^"]+)"', dom)
    assert {"always", "never", "always p99.9", "never p50", "always slowest disk operation",
            "never host stall"} <= set(runs), runs
