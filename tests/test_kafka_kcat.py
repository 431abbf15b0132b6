"""Proves Debian's kcat (librdkafka 2.0.2) works against the broker: it lists metadata, and
100,000 keyed messages produced to a 6-partition topic come back byte-identical with each
key's messages in order."""

import collections
import json
import subprocess

import pytest

KCAT = "kcat"


def kcat(*args, input=None, timeout=120):
    return subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout,
                          check=True)


def test_kcat_lists_metadata(broker):
    broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "meta", "--partitions", "3")
    out = kcat("-b", broker.bootstrap, "-L", "-J").stdout
    meta = json.loads(out)
    assert [b["id"] for b in meta["brokers"]] == [0]
    topics = {t["topic"]: t for t in meta["topics"]}
    assert len(topics["meta"]["partitions"]) == 3
    assert all(p["leader"] == 0 for p in topics["meta"]["partitions"])


def test_kcat_100k_keyed_roundtrip(broker):
    broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "keyed", "--partitions", "6")
    lines = [f"k{i % 1000}:v{i}-{'x' * (i % 37)}" for i in range(100_000)]
    kcat("-b", broker.bootstrap, "-P", "-t", "keyed", "-K:", input=("\n".join(lines) + "\n").encode())
    out = kcat("-b", broker.bootstrap, "-C", "-t", "keyed", "-o", "beginning", "-e", "-q",
               "-f", "%p\t%o\t%k\t%s\n").stdout.decode()
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 100_000
    got = sorted(f"{k}:{v}" for _, _, k, v in rows)
    assert got == sorted(lines)
    # Per key: one partition, offsets increasing, values in produce order.
    by_key = collections.defaultdict(list)
    for p, o, k, v in rows:
        by_key[k].append((int(p), int(o), int(v[1:].split("-")[0])))
    assert len(by_key) == 1000
    partitions_used = set()
    for k, entries in by_key.items():
        assert len({p for p, _, _ in entries}) == 1, k
        partitions_used.add(entries[0][0])
        entries.sort(key=lambda e: e[1])
        seqs = [s for _, _, s in entries]
        assert seqs == sorted(seqs), k
    assert len(partitions_used) == 6
