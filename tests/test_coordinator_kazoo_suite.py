"""Proves the standalone coordinator passes kazoo's own test suite (the tests shipped in the
kazoo package: client API, recipes, watchers, caches, connection handling), except tests that
need what this server deliberately does not offer (digest/SASL auth and non-world ACLs,
reconfig, SSL, read-only mode) or that stop and start the servers. How: start the
coordinator binary on a free port, run `pytest --pyargs kazoo.tests...` in a subprocess with
a plugin that points kazoo's harness at it, and require a clean exit with nothing skipped
but what is deselected here. A missing module kazoo.testing needs fails the test: it must not
pass by running nothing."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_coordinator_kazoo import Coordinator

MODULES = [
    "kazoo.tests.test_client",
    "kazoo.tests.test_connection",
    "kazoo.tests.test_watchers",
    "kazoo.tests.test_cache",
    "kazoo.tests.test_lock",
    "kazoo.tests.test_queue",
    "kazoo.tests.test_barrier",
    "kazoo.tests.test_election",
    "kazoo.tests.test_counter",
    "kazoo.tests.test_party",
    "kazoo.tests.test_lease",
    "kazoo.tests.test_partitioner",
    "kazoo.tests.test_paths",
]

# Not offered by this server, or needing server restarts the plugin cannot do.
DESELECT = [
    "TestAuthentication",  # digest auth
    "test_create_makepath_incompatible_acls",  # digest ACL
    "test_get_acls",  # digest ACL
    "test_set_acls",  # digest ACL
    "test_default_acl",  # digest auth
    "TestReconfig",  # dynamic reconfiguration
    "TestSSLClient",  # TLS
    "TestReadOnlyMode",  # stops servers
    "test_request_queuing",  # stops servers
]


# What kazoo.testing and its tests import beyond kazoo (tests/requirements.txt).
NEEDED_MODULES = ["OpenSSL", "jks", "objgraph", "kazoo.testing"]


def test_the_kazoo_suite_has_what_it_needs():
    missing = []
    for name in NEEDED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    assert not missing, f"missing {', '.join(missing)}: run scripts/setup"


@pytest.mark.timeout(420)
def test_kazoo_suite_passes_against_the_coordinator(tmp_path):
    test_the_kazoo_suite_has_what_it_needs()
    srv = Coordinator(tmp_path, extra="maxClientCnxns=0\n")
    try:
        env = dict(os.environ)
        env["COORDINATOR_ADDRESS"] = srv.hosts
        env["ZOOKEEPER_VERSION"] = "3.8.0"
        env["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "kazoo_cluster_plugin",
            "-p", "no:cacheprovider", "--timeout", "60",
            "-k", " and ".join(f"not {name}" for name in DESELECT),
            "--pyargs", *MODULES,
        ]
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        tail = "\n".join(result.stdout.splitlines()[-40:])
        assert result.returncode == 0, f"kazoo suite failed:\n{tail}\n{result.stderr[-2000:]}"
        summary = result.stdout.splitlines()[-1]
        passed = re.search(r"(\d+) passed", summary)
        assert passed and int(passed.group(1)) > 0, f"nothing passed: {summary}"
        skipped = re.search(r"(\d+) skipped", summary)
        assert skipped is None, f"kazoo tests skipped themselves (a missing tool?): {summary}\n{tail}"
    finally:
        srv.stop()
