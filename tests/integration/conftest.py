# SPDX-License-Identifier: Apache-2.0
"""Integration-test harness: a real enforcer with real BPF programs on real
cgroups, real servers on loopback, real clients placed in agent cgroups.

Everything a test starts is stopped by PID at teardown; kernel pins are
removed with `agentgate detach --all`; agent cgroups the tests created are
removed. Tests run as root and one enforcer at a time (the pins are global).
"""
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
sys.path.insert(0, HELPERS)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AG = os.path.join(ROOT, "agentgate")
PY = "/usr/bin/python3"
URING = os.path.join(ROOT, "build", "uring_connect")
TCP_PORT = 15001
DNS_BASE = 15100


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return left.split()[4]
    raise RuntimeError("no cgroup2 mount")


CG2 = cgroup2_mount()

# One integration run at a time on a host (the enforcer's pins, ports and host
# lock are global): a second pytest waits here until the first one ends.
os.makedirs("/run/agentgate", exist_ok=True)
_RUN_LOCK = open("/run/agentgate/tests.lock", "a")
import fcntl  # noqa: E402
fcntl.flock(_RUN_LOCK, fcntl.LOCK_EX)


def free_port(family=socket.AF_INET, kind=socket.SOCK_STREAM, host="127.0.0.1"):
    s = socket.socket(family, kind)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=5.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def wait_port(host, port, family=socket.AF_INET, timeout=5.0):
    def up():
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(0.2)
            s.connect((host, port))
            return True
        except OSError:
            return False
        finally:
            s.close()
    assert wait_for(up, timeout), f"server {host}:{port} did not come up"


class Proc:
    """A background process we started; stopped by its PID only."""

    def __init__(self, argv, **kw):
        self.argv = argv
        if "env" not in kw:   # the raw servers' scripts import helpers/rawhttp.py
            path = os.environ.get("PYTHONPATH")
            kw["env"] = dict(os.environ, PYTHONPATH=HELPERS + (os.pathsep + path if path else ""))
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)

    def stop(self, sig=signal.SIGTERM, timeout=5):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


ECHO_SERVER = textwrap.dedent(r"""
    import socket, sys, threading
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(128)
    log = open(sys.argv[3], "a", buffering=1)
    def serve(c, a):
        log.write("%s %d\n" % (a[0], a[1]))
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()
    while True:
        c, a = s.accept()
        threading.Thread(target=serve, args=(c, a), daemon=True).start()
""")


class Servers:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def echo(self, host="127.0.0.1", port=None):
        """A TCP echo server; returns (port, log path). The log lists every
        peer that connected, so a test can prove a request never arrived."""
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        port = port or free_port(fam, host=host)
        log = os.path.join(self.tmp, f"echo-{port}.log")
        open(log, "w").close()
        self.procs.append(Proc([PY, "-c", ECHO_SERVER, host, str(port), log]))
        wait_port(host, port, fam)
        # The readiness probe itself is logged: start from a clean log.
        time.sleep(0.05)
        open(log, "w").close()
        return port, log

    def http(self, host="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        port = free_port(fam, host=host)
        d = os.path.join(self.tmp, f"www-{port}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("hello from the test server\n")
        self.procs.append(Proc([PY, "-m", "http.server", str(port), "--bind", host, "--directory", d],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(host, port, fam)
        return port

    def dnsmasq(self, records, extra=()):
        """dnsmasq on 127.0.0.1:PORT answering only the given {name: ip} records
        (and what extra dnsmasq options add)."""
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ready\x04test\x00\x00\x01\x00\x01"

        def answers(port):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.settimeout(0.2)
                s.sendto(q, ("127.0.0.1", port))
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False
            finally:
                s.close()

        for _ in range(5):
            port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
            # dnsmasq listens on TCP on the same port too, and exits when that
            # one is taken (an ephemeral port of some test's connection)
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                t.close()
            argv = ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                    "--no-daemon", "--conf-file=/dev/null", f"--port={port}",
                    "--listen-address=127.0.0.1", "--bind-interfaces", "--user=root",
                    f"--pid-file={self.tmp}/dnsmasq-{port}.pid", "--local-ttl=60"]
            for name, ip in records.items():
                argv.append(f"--host-record={name},{ip}")
            argv += list(extra)
            proc = Proc(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            # Ready when it answers a query (a fixed sleep lost the race on a loaded
            # machine: the enforcer forwarded the test's first query to a port nothing
            # listened on yet); one that exited lost its port meanwhile: another port
            wait_for(lambda: answers(port) or proc.p.poll() is not None, 10)
            if proc.p.poll() is None and answers(port):
                return port
        raise AssertionError("dnsmasq did not come up on any of 5 ports")

    def tls(self, cn="allowed.test"):
        """openssl s_server with a fresh self-signed certificate; returns port."""
        key = os.path.join(self.tmp, "tls.key")
        crt = os.path.join(self.tmp, "tls.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", f"/CN={cn}"],
                       check=True, capture_output=True)
        port = free_port()
        self.procs.append(Proc(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", crt,
                                "-key", key, "-www", "-quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port("127.0.0.1", port)
        return port

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def detach_all(state_dir="/tmp"):
    subprocess.run([AG, "--state-dir", state_dir, "detach", "--all"], capture_output=True)


class Enforcer:
    def __init__(self, tmp):
        self.tmp = tmp
        self.state = os.path.join(tmp, "state")
        self.audit = os.path.join(tmp, "audit.jsonl")
        self.proc = None
        self.agents = set()
        self.log = os.path.join(tmp, "enforcer.log")

    def policy(self, text):
        path = os.path.join(self.tmp, f"policy-{time.time_ns()}.yaml")
        text = textwrap.dedent(text)
        if "audit:" not in text:
            text += f"\naudit:\n  sinks:\n    - {{type: file, path: {self.audit}}}\n"
        with open(path, "w") as f:
            f.write(text)
        # YAML or JSON ("name": "t-pg"): CI left the JSON policies' cgroups behind
        for m in re.finditer(r"\bname\"?:\s*\"?(t-[A-Za-z0-9_.-]+)", text):
            self.agents.add(m.group(1))
        return path

    def start(self, policy_text, env=None, expect_ready=True, nofile=None, cwd=None, core=False):
        path = self.policy(policy_text)
        e = dict(os.environ)
        # At least two workers unless a test says otherwise (the default is
        # one per CPU): what crosses workers (the session pool, cancel keys,
        # shared TLS contexts) stays tested on a 1-CPU machine too.
        # test_workers_knob starts the default.
        if len(os.sched_getaffinity(0)) < 2:
            e.setdefault("AGENTGATE_WORKERS", "2")
        e.update(env or {})
        kw = {}
        if nofile:   # soft and hard: the enforcer raises its soft limit to the hard one
            kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if core:     # core files allowed, as a host may have them
            kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_CORE, (-1, -1))
        if cwd:
            kw["cwd"] = cwd
        self.proc = Proc([AG, "--state-dir", self.state, "run", "--policy", path],
                         stdout=open(self.log, "a"), stderr=subprocess.STDOUT, env=e, **kw)
        if expect_ready:
            ok = wait_for(lambda: self.proc.p.poll() is not None or self.status_rc() == 0, 10)
            assert self.proc.p.poll() is None and ok, "enforcer did not start:\n" + self.read_log()
        return path

    def read_log(self):
        with open(self.log) as f:
            return f.read()

    def cli(self, *args, **kw):
        return subprocess.run([AG, "--state-dir", self.state, *args], capture_output=True, text=True,
                              **kw)

    def status_rc(self):
        return self.cli("status").returncode

    def status(self):
        r = self.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            self.proc.stop(sig)

    def exec(self, agent, argv, user=None, timeout=20, **kw):
        cmd = [AG, "--state-dir", self.state, "exec", "--agent", agent]
        if user:
            cmd += ["--user", user]
        return subprocess.run(cmd + ["--", *argv], capture_output=True, text=True, timeout=timeout, **kw)

    def py(self, agent, code, user=None, timeout=20):
        """Runs Python code as the agent (inside its cgroup, through exec)."""
        return self.exec(agent, [PY, "-c", textwrap.dedent(code)], user=user, timeout=timeout)

    def in_cgroup(self, agent, argv, timeout=20):
        """Runs argv inside the agent's cgroup WITHOUT exec's hardening (as an
        attached workload would run: full root capabilities)."""
        procs = os.path.join(self.cgroup_path(agent), "cgroup.procs")
        return subprocess.run(["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv],
                              capture_output=True, text=True, timeout=timeout)

    def cgroup_path(self, agent):
        return os.path.join(CG2, "agentgate", agent)

    def events(self):
        """Complete audit lines so far (a batch may be mid-write: a last line
        without its newline is not complete yet)."""
        try:
            with open(self.audit) as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return [json.loads(l) for l in data.split("\n")[:-1] if l.strip()]

    def wait_event(self, pred, timeout=5.0):
        found = wait_for(lambda: [e for e in self.events() if pred(e)], timeout)
        return found[0] if found else None

    def cleanup(self):
        self.stop()
        detach_all(self.state)
        for a in self.agents:
            d = self.cgroup_path(a)
            if os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


@pytest.fixture(scope="session", autouse=True)
def clean_kernel_state():
    r = subprocess.run(["ss", "-ltnH", f"sport = :{TCP_PORT}"], capture_output=True, text=True)
    if r.stdout.strip():
        pytest.exit(f"port {TCP_PORT} is in use (an enforcer is running?): stop it before the tests",
                    returncode=1)
    detach_all()
    yield
    detach_all()


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="agtest-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def servers(tmp):
    s = Servers(tmp)
    yield s
    s.stop()


@pytest.fixture
def pg(tmp):
    """A PostgreSQL 15 of the tests' own (helpers/pg.py: initdb in tmp, the
    'shop' schema), plain TCP. test_postgres.py has its own, with TLS."""
    from pg import Postgres
    os.chmod(tmp, 0o755)
    p = Postgres(tmp)
    yield p
    p.stop(immediate=True)


@pytest.fixture
def enforcer(tmp):
    e = Enforcer(tmp)
    yield e
    e.cleanup()


def pty_run(argv):
    """Runs argv with a new pseudo-terminal as its stdin, stdout and stderr
    (its controlling terminal); returns all it wrote there."""
    import pty
    pid, master = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    out = b""
    while True:
        try:
            d = os.read(master, 65536)
        except OSError:   # EIO: the child is gone and the terminal drained
            break
        if not d:
            break
        out += d
    os.waitpid(pid, 0)
    os.close(master)
    return out


def connect_code(host, port, family="AF_INET", send=b"hello\n"):
    """Python snippet for an agent: connect, send, print reply and getpeername, or the errno."""
    return f"""
    import socket, errno, sys
    s = socket.socket(socket.{family}, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(({host!r}, {port}))
    except OSError as e:
        print("ERR", errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
    try:
        peer = s.getpeername()    # raises if a reset already arrived
        s.sendall({send!r})
        data = s.recv(100)
    except OSError as e:
        print("ERR-IO", errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
    print("OK", peer[0], peer[1], data.decode(errors="replace").strip() or "<eof>")
    """
