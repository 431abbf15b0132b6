"""Fixtures for the real-client tests: start the `broker` binary on a free port with a temp
data dir, stop it (SIGTERM, or kill -9 when a test asks), and locate or build the binary."""

import os
import pathlib
import re
import select
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROFILES = ROOT / "tuning" / "profiles"


def broker_bin():
    """The newest built `broker` binary (release or debug), building debug if there is none."""
    if os.environ.get("BROKER_BIN"):
        return os.environ["BROKER_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    built = [target / p / "broker" for p in ("release", "debug")]
    built = [p for p in built if p.exists()]
    if not built:
        subprocess.run(["cargo", "build", "-p", "broker", "--bin", "broker"], cwd=ROOT, check=True)
        return str(target / "debug" / "broker")
    return str(max(built, key=lambda p: p.stat().st_mtime))


class Broker:
    """One broker process."""

    def __init__(self, data_dir, profile="dev-2core.toml", extra=(), protocol=None, tls=None):
        self.data_dir = pathlib.Path(data_dir)
        # A security protocol (e.g. SASL_PLAINTEXT, SSL): listen with `--listener PROTOCOL://...`.
        self.protocol = protocol
        # TLS files (a `Pki` or anything with .server_cert, .server_key and optionally
        # .client_ca, .ca): --tls-cert, --tls-key (--tls-client-ca, --tls-ca when set).
        self.tls = tls
        # Listener name -> bound port, from the broker's `listener NAME on HOST:PORT` lines.
        self.listeners = {}
        self.profile = profile if os.path.isabs(str(profile)) else str(PROFILES / profile)
        self.extra = list(extra)
        self.proc = None
        self.port = None
        # The port of `/metrics` when started with --metrics-listen (its `metrics on` line).
        self.metrics_port = None
        self.stderr_path = self.data_dir.parent / (self.data_dir.name + ".stderr")

    def start(self, port=0, timeout=60):
        """Starts the process and waits (at most `timeout` s) for `listening on HOST:PORT`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [broker_bin(), "serve", "--tuning", self.profile, "--data-dir", str(self.data_dir),
             *(["--listener", f"{self.protocol}://127.0.0.1:{port}"] if self.protocol
               else ["--listen", f"127.0.0.1:{port}"]),
             *(tls_args(self.tls) if self.tls else []),
             *self.extra],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        # Read stdout unbuffered with select so that a broker that never prints cannot block
        # the wait past the deadline.
        deadline = time.time() + timeout
        fd = self.proc.stdout.fileno()
        out = b""
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], min(0.5, max(0.0, deadline - time.time())))
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
            match = re.search(rb"(?m)^listening on [^:\n]+:(\d+)\r?\n", out)
            if match:
                self.port = int(match.group(1))
                metrics = re.search(rb"(?m)^metrics on http://[^\n]+:(\d+)/metrics\r?$", out)
                self.metrics_port = int(metrics.group(1)) if metrics else None
                self.listeners = {name.decode(): int(port) for name, port in
                                  re.findall(rb"(?m)^listener (\S+) on [^\n]+:(\d+)\r?$", out)}
                return self
        self.kill()
        tail = "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"broker did not start: stdout {out[-500:]!r}; {self.stderr_path}:\n{tail}")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.stderr.close()
        return code

    def kill(self):
        """kill -9, as a crash."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.stderr.close()

    def log(self):
        return self.stderr_path.read_text(errors="replace")

    def cli(self, *args, input=None, timeout=120):
        return subprocess.run([broker_bin(), *args], input=input, capture_output=True,
                              timeout=timeout, check=True)


def add_scram_users(data_dir, users):
    """`broker users add` for each ((user, mechanism), password) of `users` into `data_dir`
    (password files beside it)."""
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for (user, mechanism), password in users.items():
        pw = data_dir.parent / f"{user}.pw"
        pw.write_text(password + "\n")
        subprocess.run([broker_bin(), "users", "add", user, "--mechanism", mechanism,
                        "--password-file", str(pw), "--data-dir", str(data_dir)],
                       check=True, capture_output=True, timeout=60)


def tls_args(tls):
    args = ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
    if getattr(tls, "client_ca", None):
        args += ["--tls-client-ca", str(tls.client_ca)]
    if getattr(tls, "ca", None):
        args += ["--tls-ca", str(tls.ca)]
    return args


class Pki:
    """Certificates made with the openssl CLI in `directory`: a CA, a broker certificate it
    signed for 127.0.0.1 and localhost, a client certificate it signed (subject
    O=example, CN=client), and a second CA with a client certificate of its own (a stranger).
    `client_ca` is None until `require_client_certificates()`."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self._ca("ca", "/CN=test-ca")
        self.server_cert, self.server_key = self.issue("broker", "/CN=localhost",
                                                       san="IP:127.0.0.1,DNS:localhost")
        self.client_cert, self.client_key = self.issue("client", "/O=example/CN=client")
        other_ca, other_key = self._ca("other-ca", "/CN=other-ca")
        self.stranger_cert, self.stranger_key = self.issue(
            "stranger", "/O=example/CN=client", ca=(other_ca, other_key))
        self.client_ca = None

    def require_client_certificates(self):
        self.client_ca = self.ca
        return self

    def _openssl(self, *args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    def _ca(self, name, subject):
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                      "-subj", subject, "-keyout", str(key), "-out", str(cert))
        return cert, key

    def issue(self, name, subject, san=None, ca=None):
        """A key and a certificate for `subject`, signed by `ca` (this PKI's CA by default)."""
        ca_cert, ca_key = ca or (self.ca, self.ca_key)
        cert, key, csr = (self.dir / f"{name}.pem", self.dir / f"{name}.key",
                          self.dir / f"{name}.csr")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                      "-keyout", str(key), "-out", str(csr))
        ext = self.dir / f"{name}.ext"
        ext.write_text((f"subjectAltName={san}\n" if san else "")
                       + "basicConstraints=CA:FALSE\n")
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
                      str(ca_key), "-CAcreateserial", "-days", "2", "-out", str(cert),
                      "-extfile", str(ext))
        return cert, key


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data").start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker") / "data").start()
    yield b
    b.stop()


def all_cores_profile(path):
    """A profile with a shard on every core (2 shards on the 2-core development box)."""
    path = pathlib.Path(path)
    path.write_text(
        'description = "test: a shard per core"\ncores = "all"\n'
        "[core_defaults]\nmemory_budget_bytes = 134217728\n"
        '[storage]\nsegment_bytes = 16777216\npreallocate_bytes = 0\nflush_policy = "always"\n')
    return str(path)
