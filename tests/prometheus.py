"""A real Prometheus server (Debian's `prometheus` package, installed by scripts/setup) for the
metrics tests: it scrapes the given `host:port` targets every `scrape_interval_s` on a free
loopback port with its own temp storage, and answers PromQL through its HTTP API, as an
operator's Prometheus would. Always stopped by `stop()` (use it as a context manager)."""

import json
import pathlib
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from test_coordinator_kazoo import free_port


def prometheus_binary():
    path = shutil.which("prometheus")
    assert path, "the `prometheus` server is missing: run scripts/setup (Debian package prometheus)"
    return path


class Prometheus:
    """One Prometheus server scraping `targets` (a dict job name -> list of `host:port`)."""

    def __init__(self, workdir, targets, scrape_interval_s=1, metrics_path="/metrics"):
        self.workdir = pathlib.Path(workdir)
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.metrics_path = metrics_path
        self.port = None
        self.proc = None
        self.log_path = self.workdir / "prometheus.log"

    def config_text(self):
        jobs = []
        for job, targets in self.targets.items():
            quoted = ", ".join(f"'{t}'" for t in targets)
            jobs.append(
                f"  - job_name: '{job}'\n"
                f"    metrics_path: '{self.metrics_path}'\n"
                f"    static_configs:\n"
                f"      - targets: [{quoted}]\n")
        return (
            "global:\n"
            f"  scrape_interval: {self.scrape_interval_s}s\n"
            f"  scrape_timeout: {self.scrape_interval_s}s\n"
            f"  evaluation_interval: {self.scrape_interval_s}s\n"
            "scrape_configs:\n" + "".join(jobs))

    def start(self, timeout=30):
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config_text())
        self.port = free_port()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={config}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"prometheus not ready within {timeout}s: {self.tail()}")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path, **params):
        """GET `/api/v1/<path>` with `params`; the `data` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(self.url(f"/api/v1/{path}?{query}"), timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """An instant PromQL query: a list of `(labels, float value)`."""
        data = self.api("query", query=expr)
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def scalar(self, expr):
        """The single value of an instant query that must give exactly one series."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr} gave {result}"
        return result[0][1]

    def targets_up(self):
        """`{scrape url: health}` of every active target."""
        data = self.api("targets")
        return {t["scrapeUrl"]: t["health"] for t in data["activeTargets"]}

    def wait_scraped(self, timeout=30):
        """Waits until every target was scraped successfully at least once."""
        deadline = time.time() + timeout
        health = {}
        while time.time() < deadline:
            health = self.targets_up()
            if health and all(h == "up" for h in health.values()):
                return
            time.sleep(0.25)
        raise AssertionError(f"targets not up within {timeout}s: {health}")

    def tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
