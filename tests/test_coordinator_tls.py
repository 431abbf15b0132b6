"""Proves the coordinator's secure client port (zoo.cfg `secureClientPort` with `ssl.*` PEM
files) with kazoo, a real ZooKeeper client, over TLS (`use_ssl=True`, a CA, a client
certificate): create, get and watch against a standalone server and a 3-server ensemble
(each server with its own secure port); a plain client on the TLS port gets no session; a
client certificate from another CA is refused with `ssl.clientAuth=need`; a certificate's
subject is the session's `x509:` identity in ACLs. Also Debian's zkCli (Apache ZooKeeper
3.8's Java client, Netty, PEM trust and key stores) against the secure port, with the
command docs/security.md gives. How: certificates made with the `openssl` CLI in a temp
dir, the `coordinator` binary on free loopback ports, stopped at the end."""

import contextlib
import subprocess
import threading
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import ACL, Id, Permissions

from cluster import Ensemble
from test_coordinator_kazoo import Coordinator, free_port, wait_until

pytestmark = pytest.mark.timeout(120)

ZKCLI = Path("/usr/share/zookeeper/bin/zkCli.sh")


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, client certificates; `NAME.pem`
    holds key and certificate (ZooKeeper's PEM key store form)."""

    def __init__(self, d):
        self.dir = Path(d)

    def ca(self, name):
        openssl(self.dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", "-days", "2")
        return self.dir / f"{name}.crt"

    def leaf(self, ca, name, subject):
        (self.dir / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        openssl(self.dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        openssl(self.dir, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
        pem = self.dir / f"{name}.pem"
        pem.write_bytes((self.dir / f"{name}.key").read_bytes() + (self.dir / f"{name}.crt").read_bytes())
        return pem

    def key(self, name):
        return str(self.dir / f"{name}.key")

    def crt(self, name):
        return str(self.dir / f"{name}.crt")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.ca("ca")
    p.ca("rogue")
    p.leaf("ca", "server", "/CN=localhost")
    p.leaf("ca", "app", "/O=streambox/CN=app")
    p.leaf("ca", "other", "/O=streambox/CN=other")
    p.leaf("rogue", "intruder", "/O=streambox/CN=app")
    return p


def ssl_cfg(pki, client_auth="need"):
    return (
        f"ssl.keyStore.location={pki.dir / 'server.pem'}\nssl.keyStore.type=PEM\n"
        f"ssl.trustStore.location={pki.crt('ca')}\nssl.trustStore.type=PEM\n"
        f"ssl.clientAuth={client_auth}\n"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory, pki):
    secure_port = free_port()
    srv = Coordinator(
        tmp_path_factory.mktemp("coordinator-tls"),
        extra=f"secureClientPort={secure_port}\nsecureClientPortAddress=127.0.0.1\n" + ssl_cfg(pki),
    )
    srv.secure_hosts = f"127.0.0.1:{secure_port}"
    yield srv
    srv.stop()


@pytest.fixture
def connect():
    clients = []

    def make(hosts, cert="app", ca="ca", pki=None, timeout=10, **kwargs):
        if pki is not None:
            kwargs.update(use_ssl=True, verify_certs=True, ca=pki.crt(ca))
            if cert is not None:
                kwargs.update(certfile=pki.crt(cert), keyfile=pki.key(cert))
        c = KazooClient(hosts=hosts, timeout=4.0, connection_retry={"max_tries": 1}, **kwargs)
        clients.append(c)
        c.start(timeout=timeout)
        return c

    yield make
    for c in clients:
        with contextlib.suppress(Exception):
            c.stop()
            c.close()


def watch_once(client, path):
    """Sets a data watch on `path`; the returned event is set when it fires."""
    fired = threading.Event()
    client.get(path, watch=lambda event: fired.set())
    return fired


def test_kazoo_creates_gets_and_watches_over_tls_on_a_standalone_server(server, pki, connect):
    tls = connect(server.secure_hosts, pki=pki)
    plain = connect(server.hosts)
    tls.create("/tls-standalone", b"over-tls")
    assert plain.get("/tls-standalone")[0] == b"over-tls"
    fired = watch_once(tls, "/tls-standalone")
    plain.set("/tls-standalone", b"changed")
    assert fired.wait(10), "the watch set over TLS fired"
    assert tls.get("/tls-standalone")[0] == b"changed"
    big = bytes(range(256)) * 2000
    tls.create("/tls-big", big)
    assert tls.get("/tls-big")[0] == big


def test_a_plain_client_on_the_tls_port_gets_no_session(server, connect):
    with pytest.raises(KazooTimeoutError):
        connect(server.secure_hosts, timeout=3)


def test_a_client_certificate_from_another_ca_is_refused(server, pki, connect):
    with pytest.raises(KazooTimeoutError):
        connect(server.secure_hosts, pki=pki, cert="intruder", timeout=3)
    with pytest.raises(KazooTimeoutError):
        connect(server.secure_hosts, pki=pki, cert=None, timeout=3)
    # The same client with a certificate of the trusted CA is served.
    assert connect(server.secure_hosts, pki=pki, cert="app").exists("/") is not None


def test_the_certificate_subject_is_an_x509_identity_in_acls(server, pki, connect):
    app = connect(server.secure_hosts, pki=pki, cert="app")
    other = connect(server.secure_hosts, pki=pki, cert="other")
    plain = connect(server.hosts)
    app.create("/x509-only", b"secret", acl=[ACL(Permissions.ALL, Id("x509", "CN=app,O=streambox"))])
    assert app.get("/x509-only")[0] == b"secret"
    for client in (other, plain):
        with pytest.raises(NoAuthError):
            client.get("/x509-only")


def test_kazoo_over_tls_on_a_three_server_ensemble(tmp_path, pki, connect):
    ens = Ensemble(tmp_path, extra=ssl_cfg(pki), secure=True)
    try:
        writer = connect(ens.secure_hosts([0]), pki=pki)
        watcher = connect(ens.secure_hosts([1]), pki=pki)
        plain = connect(ens.hosts([2]))
        writer.create("/tls-ensemble", b"one")
        watcher.sync("/tls-ensemble")
        fired = watch_once(watcher, "/tls-ensemble")
        plain.set("/tls-ensemble", b"two")
        assert fired.wait(10), "a watch on server 2 fired for a write through server 3"
        everywhere = connect(ens.secure_hosts(), pki=pki)
        everywhere.sync("/tls-ensemble")
        assert everywhere.get("/tls-ensemble")[0] == b"two"
        with pytest.raises(KazooTimeoutError):
            connect(ens.secure_hosts([2]), pki=pki, cert="intruder", timeout=3)
        # An x509 ACL holds on every server: reads are checked where the client is, writes by
        # the leader with the identities forwarded with them.
        writer.create("/x509-ensemble", b"app", acl=[ACL(Permissions.ALL, Id("x509", "CN=app,O=streambox"))])
        other = connect(ens.secure_hosts([1]), pki=pki, cert="other")
        other.sync("/x509-ensemble")
        with pytest.raises(NoAuthError):
            other.get("/x509-ensemble")
        with pytest.raises(NoAuthError):
            other.set("/x509-ensemble", b"other")
        app_elsewhere = connect(ens.secure_hosts([2]), pki=pki, cert="app")
        app_elsewhere.set("/x509-ensemble", b"app again")
        assert app_elsewhere.get("/x509-ensemble")[0] == b"app again"
    finally:
        ens.stop()


def zkcli(hosts, *command, flags=""):
    """One zkCli.sh command; returns its output (stdout and stderr)."""
    env = {"PATH": "/usr/bin:/bin", "CLIENT_JVMFLAGS": flags}
    out = subprocess.run([str(ZKCLI), "-server", hosts, *command], env=env, capture_output=True,
                         text=True, timeout=90)
    return out.stdout + out.stderr


def zkcli_tls_flags(pki, cert):
    # As docs/security.md gives them: Debian's zookeeper.jar manifest lacks two Netty jars
    # the Netty client needs, so the class path is given again with them.
    return (
        "-cp /usr/share/java/zookeeper.jar:/usr/share/java/netty-resolver.jar:/usr/share/java/netty-codec.jar "
        "-Dzookeeper.client.secure=true "
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty "
        f"-Dzookeeper.ssl.keyStore.location={pki.dir / (cert + '.pem')} -Dzookeeper.ssl.keyStore.type=PEM "
        f"-Dzookeeper.ssl.trustStore.location={pki.crt('ca')} -Dzookeeper.ssl.trustStore.type=PEM"
    )


def test_zkcli_over_tls_with_an_x509_acl(server, pki):
    # zkCli splits ACLs at commas, so its x509 ids are one-RDN subjects.
    pki.leaf("ca", "ops", "/CN=ops")
    flags = zkcli_tls_flags(pki, "ops")
    out = zkcli(server.secure_hosts, "create", "/via-zkcli", "hello", "x509:CN=ops:cdrwa", flags=flags)
    assert "Created /via-zkcli" in out, out
    out = zkcli(server.secure_hosts, "get", "/via-zkcli", flags=flags)
    assert "hello" in out.splitlines(), out
    out = zkcli(server.secure_hosts, "getAcl", "/via-zkcli", flags=flags)
    assert "'x509,'CN=ops" in out, out
    out = zkcli(server.hosts, "get", "/via-zkcli")
    assert "Insufficient permission : /via-zkcli" in out, out
    out = zkcli(server.secure_hosts, "get", "/via-zkcli", flags=zkcli_tls_flags(pki, "app"))
    assert "Insufficient permission : /via-zkcli" in out, out
