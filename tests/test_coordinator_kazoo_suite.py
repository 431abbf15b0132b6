"""Proves the standalone coordinator passes kazoo's own test suite (the tests shipped in the
kazoo package: client API, recipes, watchers, caches, connection handling, digest
authentication and ACLs), except tests that need what this server does not offer (SASL,
reconfig, SSL, read-only mode) or that stop and start the servers; and that kazoo's
authentication and ACL tests also pass against a three-server ensemble (writes forwarded by
followers are checked on the leader with the client's identities; the members prove a shared
quorum secret to each other). How: start the
coordinator binaries on free ports, run `pytest --pyargs kazoo.tests...` in a subprocess with
a plugin that points kazoo's harness at them, and require a clean exit with nothing skipped
but what is deselected here. A missing module kazoo.testing needs fails the test: it must not
pass by running nothing."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import Ensemble
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
    "TestReconfig",  # dynamic reconfiguration
    "TestSSLClient",  # TLS
    "TestReadOnlyMode",  # stops servers
    "test_request_queuing",  # stops servers
]


# kazoo's tests of digest authentication and ACLs (all in test_client).
ACL_TESTS = [
    "TestAuthentication",
    "test_create_makepath_incompatible_acls",
    "test_get_acls",
    "test_set_acls",
    "test_default_acl",
]

# The super digest kazoo's own harness gives ZooKeeper (super:test).
SUPER_DIGEST = "DigestAuthenticationProvider.superDigest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=\n"


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


def run_kazoo_tests(tmp_path, hosts, selection, modules, timeout_s):
    """Runs kazoo's tests selected by the `-k` expression against `hosts`; returns how many
    passed, after requiring a clean exit with nothing skipped."""
    test_the_kazoo_suite_has_what_it_needs()
    env = dict(os.environ)
    env["COORDINATOR_ADDRESS"] = hosts
    env["ZOOKEEPER_VERSION"] = "3.8.0"
    env["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "kazoo_cluster_plugin",
        "-p", "no:cacheprovider", "--timeout", "60",
        "-k", selection, "--pyargs", *modules,
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)
    tail = "\n".join(result.stdout.splitlines()[-40:])
    assert result.returncode == 0, f"kazoo suite failed:\n{tail}\n{result.stderr[-2000:]}"
    summary = result.stdout.splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, f"nothing passed: {summary}"
    skipped = re.search(r"(\d+) skipped", summary)
    assert skipped is None, f"kazoo tests skipped themselves (a missing tool?): {summary}\n{tail}"
    return int(passed.group(1))


@pytest.mark.timeout(420)
def test_kazoo_suite_passes_against_the_coordinator(tmp_path):
    srv = Coordinator(tmp_path, extra="maxClientCnxns=0\n" + SUPER_DIGEST)
    try:
        selection = " and ".join(f"not {name}" for name in DESELECT)
        run_kazoo_tests(tmp_path, srv.hosts, selection, MODULES, timeout_s=400)
    finally:
        srv.stop()


@pytest.mark.timeout(180)
def test_kazoo_acl_and_auth_tests_pass_against_an_ensemble(tmp_path):
    # The members also authenticate each other with a shared secret (quorum.auth.secretFile).
    secret = tmp_path / "quorum.secret"
    secret.write_text("kazoo-acl-test-quorum-secret\n")
    extra = f"maxClientCnxns=0\nquorum.auth.secretFile={secret}\n" + SUPER_DIGEST
    ens = Ensemble(tmp_path / "ensemble", extra=extra)
    try:
        selection = " or ".join(ACL_TESTS)
        passed = run_kazoo_tests(tmp_path, ens.hosts(), selection, ["kazoo.tests.test_client"], timeout_s=150)
        # TestAuthentication has several tests; the four single tests one each.
        assert passed >= len(ACL_TESTS) + 2, f"only {passed} ACL/auth tests ran"
    finally:
        ens.stop()
