"""pytest plugin: point kazoo's own test harness at an already running server.

kazoo's test suite (shipped inside the package, `kazoo.tests`) normally starts Java
ZooKeeper servers through `kazoo.testing.harness.get_global_cluster`. This plugin replaces
that function with a cluster object that only holds the address in `COORDINATOR_ADDRESS`,
so the suite runs against our coordinator. Tests that stop/start servers cannot work this
way and are deselected by the caller."""

import os

import kazoo.testing.harness as harness


class _Server:
    def __init__(self, address):
        self.address = address
        self.secure_address = address
        self.running = True

    def run(self):
        pass

    def stop(self):
        pass

    def destroy(self):
        pass


class _Cluster(list):
    def start(self):
        pass

    def stop(self):
        pass

    def terminate(self):
        pass

    def get_logs(self, *args, **kwargs):
        return []


_CLUSTER = _Cluster([_Server(os.environ["COORDINATOR_ADDRESS"])])
harness.get_global_cluster = lambda: _CLUSTER
