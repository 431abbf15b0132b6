"""Running the servers as an operator does: the systemd units `broker tuning service-unit`
prints pass `systemd-analyze verify`, and the command line, CPU affinity and limits they state
start a working broker and coordinator; `--log-format json` writes one JSON object per line
with the fields the metrics use as labels (the broker's `shard`)."""

import json
import os
import resource
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import PROFILES, Broker, broker_bin
from test_coordinator_kazoo import coordinator_binary, four_letter, free_port

pytestmark = pytest.mark.timeout(120)


def service_unit(*args):
    done = subprocess.run([broker_bin(), "tuning", "service-unit", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def zoo_config(tmp_path):
    """A standalone coordinator's zoo.cfg on a free loopback port: (port, path)."""
    port = free_port()
    path = tmp_path / "zoo.cfg"
    path.write_text(f"tickTime=200\ndataDir={tmp_path / 'zk-data'}\nclientPort={port}\n"
                    "clientPortAddress=127.0.0.1\n4lw.commands.whitelist=ruok\n")
    return port, path


def unit_settings(text):
    """`{key: value}` of the unit's [Service] section (one value per key)."""
    settings, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif "=" in line and section == "[Service]":
            key, value = line.split("=", 1)
            settings[key] = value
    return settings


def verify(path):
    done = subprocess.run(["systemd-analyze", "verify", str(path)],
                          capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if path.name in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def start_as_unit(settings, log_path):
    """Starts the unit's ExecStart with its CPUAffinity, LimitNOFILE and LimitMEMLOCK applied,
    as systemd would (the test runs without systemd as PID 1)."""
    argv = shlex.split(settings["ExecStart"])
    cpus = {int(cpu) for cpu in settings["CPUAffinity"].split()} if "CPUAffinity" in settings else None
    nofile = int(settings["LimitNOFILE"])
    assert settings["LimitMEMLOCK"] == "infinity"

    def limits():
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        # As far as this process may raise them: a container without CAP_SYS_RESOURCE keeps
        # its hard limits (systemd, as PID 1, sets the unit's values).
        for limit, value in [(resource.RLIMIT_NOFILE, nofile),
                             (resource.RLIMIT_MEMLOCK, resource.RLIM_INFINITY)]:
            _, hard = resource.getrlimit(limit)
            if hard != resource.RLIM_INFINITY and (value == resource.RLIM_INFINITY or value > hard):
                value = hard
            resource.setrlimit(limit, (value, value))

    log = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            preexec_fn=limits)
    log.close()
    return proc, cpus


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_service_units_verify_and_start_a_working_broker_and_coordinator(tmp_path):
    profile = PROFILES / "dev-2core.toml"
    port = free_port()
    broker_unit = service_unit(
        "broker", "--tuning", str(profile), "--data-dir", str(tmp_path / "broker-data"),
        "--binary", broker_bin(), "--", "--listen", f"127.0.0.1:{port}")
    zk_port, zoo_cfg = zoo_config(tmp_path)
    coordinator_unit = service_unit(
        "coordinator", "--config", str(zoo_cfg), "--tuning", str(profile),
        "--binary", str(coordinator_binary()), "--user", "streambox")

    for name, text in [("streambox-broker.service", broker_unit),
                       ("streambox-coordinator.service", coordinator_unit)]:
        path = tmp_path / name
        path.write_text(text)
        verify(path)

    broker_settings = unit_settings(broker_unit)
    # dev-2core runs its one shard on cpu 1; the coordinator gets the other core.
    assert broker_settings["CPUAffinity"] == "1"
    coordinator_settings = unit_settings(coordinator_unit)
    assert coordinator_settings["User"] == "streambox"
    assert "User" not in broker_settings
    assert "1" not in coordinator_settings["CPUAffinity"].split()

    broker, broker_cpus = start_as_unit(broker_settings, tmp_path / "broker.log")
    coordinator, _ = start_as_unit(coordinator_settings, tmp_path / "coordinator.log")
    try:
        lines = [broker.stdout.readline().decode() for _ in range(2)]
        assert f"listening on 127.0.0.1:{port}\n" in lines, (
            "".join(lines) + (tmp_path / "broker.log").read_text())
        assert os.sched_getaffinity(broker.pid) == broker_cpus
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        created = admin.create_topics([NewTopic("unit-t", 2, 1)])
        created["unit-t"].result(timeout=30)
        assert len(admin.list_topics(timeout=10).topics["unit-t"].partitions) == 2

        deadline = time.time() + 20
        answer = None
        while time.time() < deadline and answer != "imok":
            try:
                answer = four_letter(zk_port, "ruok")
            except OSError:
                time.sleep(0.1)
        assert answer == "imok", (tmp_path / "coordinator.log").read_text()
    finally:
        stop(broker)
        stop(coordinator)
    assert broker.returncode == 0, (tmp_path / "broker.log").read_text()


def json_lines(path):
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    return [json.loads(line) for line in lines]


def test_json_logs_carry_the_shard_and_parse_line_by_line(tmp_path):
    broker = Broker(tmp_path / "data", extra=["--log-format", "json"]).start()
    broker.stop()
    events = json_lines(broker.stderr_path)
    for event in events:
        assert {"timestamp", "level", "message"} <= event.keys(), event
    opened = [e for e in events if "opened partitions" in e["message"]]
    assert opened, events
    assert any(span.get("name") == "shard" and span.get("shard") == 0
               for span in opened[0].get("spans", [])), opened[0]

    zk_port, zoo_cfg = zoo_config(tmp_path)
    log_path = tmp_path / "coordinator.log"
    with open(log_path, "ab") as log:
        coordinator = subprocess.Popen(
            [str(coordinator_binary()), "--config", str(zoo_cfg), "--log-format", "json"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if four_letter(zk_port, "ruok") == "imok":
                    break
            except OSError:
                time.sleep(0.1)
    finally:
        stop(coordinator)
    events = json_lines(log_path)
    assert all(e["level"] in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR") for e in events), events
    assert any(str(zk_port) in e["message"] or e.get("port") == zk_port for e in events), events


def test_the_broker_runs_without_transparent_huge_pages(tmp_path):
    """`broker serve` turns THP off for itself (docs/tuning.md): a shard's page fault never
    clears a whole 2 MiB page. The kernel reports the process's flag in /proc/PID/status."""
    broker = Broker(tmp_path / "data").start()
    try:
        status = (Path("/proc") / str(broker.proc.pid) / "status").read_text()
    finally:
        broker.stop()
    flags = [line for line in status.splitlines() if line.startswith("THP_enabled:")]
    assert flags == ["THP_enabled:\t0"], flags


def test_the_broker_warns_when_its_data_dir_is_mounted_with_online_discard(tmp_path):
    """With `-o discard` appends queue behind the device discard of every freed block
    (docs/operations.md): `broker serve` says so at start, naming the data
    dir, and says nothing of it on a mount without it. What this host's mount is comes from
    findmnt (util-linux), read independently of the broker."""
    data = tmp_path / "data"
    options = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", "-T", str(tmp_path)],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    discard = "discard" in options.strip().split(",")
    broker = Broker(data).start()
    broker.stop()
    log = broker.stderr_path.read_text(errors="replace")
    warned = [line for line in log.splitlines() if "mounted with online discard" in line]
    if discard:
        assert len(warned) == 1 and str(data) in warned[0], log[-2000:]
    else:
        assert warned == [], warned


def test_the_broker_notes_ext4s_short_journal_commit_interval_under_flush_never(tmp_path):
    """Under flush `interval` and `never` appends stalled behind ext4's periodic journal
    commits at the default 5 s (docs/operations.md): `broker serve` notes it at start when the
    data dir is on such a mount and its policy is one of those; not under `always`, and not
    once the mount commits every 30 s. The data dir is on a loop-mounted ext4 of its own."""
    image, mount_point = tmp_path / "fs.img", tmp_path / "mnt"
    mount_point.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "256M"], check=True, timeout=60)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True, timeout=60)
    try:
        profile = (PROFILES / "dev-2core.toml").read_text()
        never = tmp_path / "never.toml"
        never.write_text(profile.replace('flush_policy = "always"', 'flush_policy = "never"'))
        assert 'flush_policy = "never"' in never.read_text()

        def noted(name, path):
            broker = Broker(mount_point / name, profile=str(path)).start()
            broker.stop()
            log = broker.stderr_path.read_text(errors="replace")
            return [line for line in log.splitlines() if "journal commit every" in line]

        at_five = noted("never", never)
        assert len(at_five) == 1 and str(mount_point / "never") in at_five[0], at_five
        assert "every 5 s" in at_five[0] and "flush never" in at_five[0], at_five
        assert noted("always", PROFILES / "dev-2core.toml") == []
        subprocess.run(["mount", "-o", "remount,commit=30", str(mount_point)], check=True,
                       timeout=60)
        assert noted("never_at_30", never) == []
    finally:
        subprocess.run(["umount", str(mount_point)], timeout=60)
