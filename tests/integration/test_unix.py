# SPDX-License-Identifier: Apache-2.0
"""AF_UNIX (case 7 of the network cases): an agent connects and sends datagrams
only to the addresses its unix_sockets names, checked in the kernel
(cgroup/connect_unix and sendmsg_unix) against real listeners."""
import os
import select
import signal
import socket
import textwrap
import threading
import time

import subprocess

from conftest import AG, PY, wait_for


def unix_policy(tmp, entries, mode="enforce"):
    lst = ", ".join('"%s"' % e for e in entries)
    return f"""
    version: 1
    mode: {mode}
    agents:
      - name: t-unix
        unix_sockets: [{lst}]
    targets:
      - {{name: web, protocol: tcp, address: 127.0.0.1:9}}
    roles:
      - name: r
        rules: [{{target: web}}]
    bindings:
      - {{role: r, agents: [t-unix]}}
    """


class Listeners:
    """Stream and datagram listeners outside the agent cgroup, recording what
    reached each (the test double is none: these are real sockets)."""

    def __init__(self):
        self.socks = {}
        self.got = []
        self.stop = False
        self.lock = threading.Lock()

    def add(self, name, addr, typ):
        s = socket.socket(socket.AF_UNIX, typ)
        s.bind(addr)
        if not addr.startswith("\0"):
            os.chmod(addr, 0o777)
        if typ != socket.SOCK_DGRAM:
            s.listen(64)
        self.socks[s] = (name, typ)

    def run(self):
        while not self.stop:
            r, _, _ = select.select(list(self.socks), [], [], 0.1)
            for s in r:
                name, typ = self.socks[s]
                if typ == socket.SOCK_DGRAM:
                    data = s.recv(100)
                    with self.lock:
                        self.got.append((name, data.decode()))
                else:
                    c, _ = s.accept()
                    with self.lock:
                        self.got.append((name, "conn"))
                    c.close()

    def __enter__(self):
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop = True
        self.t.join()
        for s in self.socks:
            s.close()


# Runs in the agent: each probe prints ok or the errno's name.
PROBES = """
import errno, os, socket, sys
out = []
def try_(fn):
    try:
        fn(); out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
def stream(addr, typ=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_UNIX, typ); s.settimeout(5)
    try: s.connect(addr)
    finally: s.close()
def dgram(addr, data):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try: s.sendto(data.encode(), addr)
    finally: s.close()
def dgram_connect(addr, data):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try: s.connect(addr); s.send(data.encode())
    finally: s.close()
"""


def run_probes(enforcer, agent, body, cwd=None):
    code = PROBES + textwrap.dedent(body) + "\nprint(' '.join(out))\n"
    r = enforcer.exec(agent, [PY, "-c", code], cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def unix_events(enforcer):
    return [e for e in enforcer.events() if "unix" in e.get("unmapped", {})]


def test_unix_connect_and_sendto_only_to_listed_addresses(enforcer, tmp):
    """Case 7a/7b: connect (stream, seqpacket, datagram) and an unconnected
    sendto reach only the listed addresses; everything else fails with EACCES
    before the kernel looks the path up, nothing reaches the listener, and
    each refusal is counted and audited with the address. Ways around the
    list, each refused: another spelling of a listed path (//, /./), a
    relative path from the socket's directory, a symlink the agent made to
    an unlisted socket, an abstract name with one more byte or one less, a
    listed path with a byte more, a 107-byte path that differs
    from a listed one in its last byte. Outside the agent cgroup nothing
    changes (control)."""
    d = os.path.join(tmp, "socks")
    os.mkdir(d)
    os.chmod(tmp, 0o755)
    tag = f"ag-t-{os.getpid()}"
    ok, no, okd, nod = (os.path.join(d, n) for n in ("ok.sock", "no.sock", "okd.sock", "nod.sock"))
    okseq = os.path.join(d, "okseq.sock")
    # as long a path as Python binds (107 bytes; 108, with no NUL, it refuses)
    full = os.path.join(d, "L" * (106 - len(d)))
    full2 = full[:-1] + "M"
    assert len(full) == 107
    enforcer.start(unix_policy(tmp, [ok, okd, okseq, f"@{tag}-ok", f"@{tag}-okd", full]))
    with Listeners() as L:
        L.add("ok", ok, socket.SOCK_STREAM)
        L.add("no", no, socket.SOCK_STREAM)
        L.add("okseq", okseq, socket.SOCK_SEQPACKET)
        L.add("okd", okd, socket.SOCK_DGRAM)
        L.add("nod", nod, socket.SOCK_DGRAM)
        L.add("@ok", f"\0{tag}-ok", socket.SOCK_STREAM)
        L.add("@no", f"\0{tag}-no", socket.SOCK_STREAM)
        L.add("@okd", f"\0{tag}-okd", socket.SOCK_DGRAM)
        L.add("@nod", f"\0{tag}-nod", socket.SOCK_DGRAM)
        L.add("@ok+", f"\0{tag}-ok\0", socket.SOCK_STREAM)
        L.add("full", full, socket.SOCK_STREAM)
        L.add("full2", full2, socket.SOCK_STREAM)
        link = os.path.join(tmp, "link.sock")
        body = f"""
        try_(lambda: stream({ok!r}))                                   # 0 listed
        try_(lambda: stream({no!r}))                                   # 1
        try_(lambda: stream({okseq!r}, socket.SOCK_SEQPACKET))         # 2 listed
        try_(lambda: dgram({okd!r}, "a"))                              # 3 listed
        try_(lambda: dgram({nod!r}, "b"))                              # 4
        try_(lambda: dgram_connect({nod!r}, "c"))                      # 5
        try_(lambda: stream("\\0{tag}-ok"))                            # 6 listed
        try_(lambda: stream("\\0{tag}-no"))                            # 7
        try_(lambda: dgram("\\0{tag}-okd", "d"))                       # 8 listed
        try_(lambda: dgram("\\0{tag}-nod", "e"))                       # 9
        try_(lambda: stream("\\0{tag}-ok\\0"))                         # 10 one byte more
        try_(lambda: stream({ok.replace("/socks/", "//socks/")!r}))    # 11 another spelling
        try_(lambda: stream({ok.replace("/socks/", "/socks/./")!r}))   # 12
        os.chdir({d!r})
        try_(lambda: stream("ok.sock"))                                # 13 relative
        try_(lambda: stream("no.sock"))                                # 14
        os.symlink({no!r}, {link!r})
        try_(lambda: stream({link!r}))                                 # 15 symlink to an unlisted one
        try_(lambda: stream(({ok!r} + "\\0trailing").encode()))       # 16 the kernel reads to the NUL
        try_(lambda: stream({ok!r} + "x"))                             # 17 a byte more (no such file)
        try_(lambda: stream("\\0{tag}-o"))                             # 18 a byte less (no listener)
        try_(lambda: stream({full!r}))                                 # 19 listed, 107 bytes
        try_(lambda: stream({full2!r}))                                # 20 the last byte differs
        """
        got = run_probes(enforcer, "t-unix", body)
        assert got == ["ok", "EACCES", "ok", "ok", "EACCES", "EACCES", "ok", "EACCES", "ok", "EACCES",
                       "EACCES", "EACCES", "EACCES", "EACCES", "EACCES", "EACCES", "ok",
                       "EACCES", "EACCES", "ok", "EACCES"], got
        assert wait_for(lambda: len(L.got) >= 7, 5)
        time.sleep(0.3)   # anything more would show up
        got_agent = list(L.got)
        # the same probes outside the cgroup reach every listener (control)
        os.unlink(link)
        before = len(L.got)
        r = subprocess.run([PY, "-c", PROBES + textwrap.dedent(body) + "\nprint(' '.join(out))\n"],
                                         capture_output=True, text=True, timeout=20)
        assert r.stdout.split() == ["ok"] * 17 + ["ENOENT", "ECONNREFUSED", "ok", "ok"], r.stdout + r.stderr
        assert len(L.got) > before
        os.unlink(link)
    assert sorted(got_agent) == sorted([("ok", "conn"), ("okseq", "conn"), ("okd", "a"), ("@ok", "conn"),
                                        ("@okd", "d"), ("ok", "conn"), ("full", "conn")]), got_agent
    st = enforcer.status()
    assert st["counters"]["denied_unix"] == 14, st["counters"]
    assert st["kernel_features"]["connect_unix"] is True
    evs = enforcer.wait_event(lambda e: len(unix_events(enforcer)) >= 14) and unix_events(enforcer)
    assert len(evs) == 14, evs
    by = {(e["unmapped"]["unix"]["address"], e["unmapped"]["unix"]["operation"]) for e in evs}
    assert (no, "connect") in by and (nod, "sendmsg") in by and (nod, "connect") in by, by
    assert (f"@{tag}-no", "connect") in by and (f"@{tag}-nod", "sendmsg") in by, by
    assert (f"@{tag}-ok\\x00", "connect") in by, by   # bytes outside printable ASCII escaped
    assert ("ok.sock", "connect") in by and (link, "connect") in by, by
    assert (ok + "x", "connect") in by and (f"@{tag}-o", "connect") in by and (full2, "connect") in by, by
    for e in evs:
        assert e["activity_name"] == "Refuse" and e["unmapped"]["verdict"] == "deny", e
        assert e["unmapped"]["agent"]["name"] == "t-unix" and e["unmapped"]["enforced_by"] == "kernel", e
        assert e["connection_info"]["protocol_name"] == "unix", e


def test_unix_observe_mode_lets_through_and_reports(enforcer, tmp):
    """In observe mode an unlisted address is reached and reported as
    would_deny; nothing is counted as refused."""
    no = os.path.join(tmp, "no.sock")
    os.chmod(tmp, 0o755)
    enforcer.start(unix_policy(tmp, ["/nonexistent/x.sock"], mode="observe"))
    with Listeners() as L:
        L.add("no", no, socket.SOCK_STREAM)
        got = run_probes(enforcer, "t-unix", f"try_(lambda: stream({no!r}))")
        assert got == ["ok"], got
        assert wait_for(lambda: ("no", "conn") in L.got, 5)
    ev = enforcer.wait_event(lambda e: e.get("unmapped", {}).get("unix", {}).get("address") == no)
    assert ev and ev["unmapped"]["verdict"] == "would_deny" and ev["activity_name"] == "Open", ev
    assert enforcer.status()["counters"]["denied_unix"] == 0


def test_unix_reload_adds_and_drops_addresses(enforcer, tmp):
    """agentgate reload changes the kernel's list in place: an address the
    new policy adds is reachable at once, one it drops is refused, and a
    restart keeps exactly what the policy names."""
    a, b = os.path.join(tmp, "a.sock"), os.path.join(tmp, "b.sock")
    os.chmod(tmp, 0o755)
    path = enforcer.start(unix_policy(tmp, [a]))
    with Listeners() as L:
        L.add("a", a, socket.SOCK_STREAM)
        L.add("b", b, socket.SOCK_STREAM)
        probe = f"try_(lambda: stream({a!r})); try_(lambda: stream({b!r}))"
        assert run_probes(enforcer, "t-unix", probe) == ["ok", "EACCES"]
        text = open(path).read().replace(f'"{a}"', f'"{b}"')
        with open(path, "w") as f:
            f.write(text)
        r = enforcer.cli("reload")
        assert r.returncode == 0, r.stdout + r.stderr
        assert run_probes(enforcer, "t-unix", probe) == ["EACCES", "ok"]
        enforcer.stop()
        # programs and the list stay pinned while no enforcer runs
        assert run_probes_in_cgroup(enforcer, probe) == ["EACCES", "ok"]
        enforcer.start(unix_policy(tmp, [a]))
        assert run_probes(enforcer, "t-unix", probe) == ["ok", "EACCES"]


def run_probes_in_cgroup(enforcer, body):
    r = enforcer.in_cgroup("t-unix", [PY, "-c", PROBES + textwrap.dedent(body) + "\nprint(' '.join(out))\n"])
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def test_unix_sockets_policy_errors(enforcer, tmp):
    """The loader says what is wrong with an entry, and refuses the policy."""
    for entry, msg in [("relative.sock", "must be an absolute path"),
                       ("/a//b.sock", "empty, '.' or '..' component"),
                       ("/a/./b.sock", "empty, '.' or '..' component"),
                       ("/a/../b.sock", "empty, '.' or '..' component"),
                       ("/a/", "empty, '.' or '..' component"),
                       ("@", "1 to 107 bytes after '@'"),
                       ("/" + "x" * 108, "longer than a socket address holds")]:
        p = enforcer.policy(unix_policy(tmp, [entry]))
        r = enforcer.cli("policy", "check", p)
        assert r.returncode != 0 and msg in (r.stdout + r.stderr), (entry, r.stdout + r.stderr)
    p = enforcer.policy(unix_policy(tmp, ["/" + "x" * 107, "@" + "y" * 107, "/run/a.sock"]))
    r = enforcer.cli("policy", "check", p)
    assert r.returncode == 0, r.stdout + r.stderr


def test_admin_socket_refuses_a_listed_agent(enforcer, tmp):
    """Defence in depth: even an agent whose unix_sockets names the enforcer's
    admin socket (the kernel lets the connect through) is refused by the
    enforcer, which checks the peer's cgroup."""
    sock = os.path.join(enforcer.state, "admin.sock")
    enforcer.start(unix_policy(tmp, [sock]))
    r = enforcer.in_cgroup("t-unix", [AG, "--state-dir", enforcer.state, "status"])
    assert r.returncode != 0 and "peer runs inside an agent cgroup" in r.stderr, r.stdout + r.stderr
    assert enforcer.status()["counters"]["denied_unix"] == 0


def run_in(cg, body):
    code = PROBES + textwrap.dedent(body) + "\nprint(' '.join(out))\n"
    r = subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec {PY} -c "$0"', code],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def test_unix_refused_in_a_cgroup_without_its_programs(enforcer, tmp):
    """Threat model 13c for AF_UNIX: a policy cgroup made again (no programs
    until the enforcer attaches it), the agents' parent cgroup, and a cgroup
    under it no policy names reach no AF_UNIX address, not even a listed
    one: the parent carries the AF_UNIX programs in override mode, and there
    they have no agent. The enforcer is stopped (SIGSTOP) so the window
    lasts. `detach --all` takes them off with the rest."""
    ok = os.path.join(tmp, "ok.sock")
    os.chmod(tmp, 0o755)
    enforcer.start(unix_policy(tmp, [ok]))
    cg = enforcer.cgroup_path("t-unix")
    parent = os.path.dirname(cg)
    probe = f"try_(lambda: stream({ok!r}))"
    with Listeners() as L:
        L.add("ok", ok, socket.SOCK_STREAM)
        assert run_in(cg, probe) == ["ok"]
        enforcer.proc.p.send_signal(signal.SIGSTOP)
        try:
            os.rmdir(cg)
            os.makedirs(cg)
            assert run_in(cg, probe) == ["EACCES"]
            assert run_in(parent, probe) == ["EACCES"]
            stray = os.path.join(parent, "t-unix-stray")
            os.makedirs(stray, exist_ok=True)
            try:
                assert run_in(stray, probe) == ["EACCES"]
            finally:
                os.rmdir(stray)
        finally:
            enforcer.proc.p.send_signal(signal.SIGCONT)
        assert wait_for(lambda: enforcer.status()["agents"][0]["cgroup_id"] == os.stat(cg).st_ino and
                        run_in(cg, probe) == ["ok"], timeout=5)
        enforcer.stop()
        subprocess.run([AG, "--state-dir", enforcer.state, "detach", "--all"], capture_output=True)
        assert run_in(parent, probe) == ["ok"]
    ev = enforcer.wait_event(lambda e: e.get("unmapped", {}).get("unix", {}).get("address") == ok and
                             e["unmapped"].get("reason") == "cgroup has no agent configured")
    assert ev, unix_events(enforcer)


def test_unix_path_refused_from_a_user_namespace(enforcer, tmp):
    """Review: a path is looked up in the caller's mount namespace. An agent
    in a user namespace of its own may mount a tmpfs over the directory of a
    listed socket and put a symlink to any other socket there. From such a
    namespace only abstract names are matched; `agentgate exec` refuses to
    make one (unshare, clone with CLONE_NEWUSER, setns: EPERM). Here the
    agent is an attached workload with full root capabilities."""
    d, other = os.path.join(tmp, "socks"), os.path.join(tmp, "other")
    os.mkdir(d)
    os.mkdir(other)
    os.chmod(tmp, 0o755)
    ok, no = os.path.join(d, "ok.sock"), os.path.join(other, "no.sock")
    tag = f"ag-u-{os.getpid()}"
    enforcer.start(unix_policy(tmp, [ok, f"@{tag}"]))
    cg = enforcer.cgroup_path("t-unix")
    probe = PROBES + textwrap.dedent(f"""
        try_(lambda: stream({ok!r}))
        try_(lambda: stream("\\0{tag}"))
        print(' '.join(out))
        """)
    with Listeners() as L:
        L.add("ok", ok, socket.SOCK_STREAM)
        L.add("no", no, socket.SOCK_STREAM)
        L.add("@", f"\0{tag}", socket.SOCK_STREAM)
        # the remap works (outside the agent cgroup it reaches "no")
        remap = f'mount -t tmpfs none {d} && ln -s {no} {ok} && exec {PY} -c "$0"'
        r = subprocess.run(["unshare", "-Urm", "sh", "-c", remap, probe], capture_output=True, text=True, timeout=20)
        assert r.stdout.split() == ["ok", "ok"], r.stdout + r.stderr
        assert wait_for(lambda: ("no", "conn") in L.got, 5), L.got
        L.got.clear()
        # in the agent cgroup: the path is refused from the user namespace, the abstract name is not
        r = subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec unshare -Urm sh -c \'{remap}\' "$0"',
                            probe], capture_output=True, text=True, timeout=20)
        assert r.stdout.split() == ["EACCES", "ok"], r.stdout + r.stderr
        assert wait_for(lambda: ("@", "conn") in L.got, 5), L.got
        time.sleep(0.3)
        assert ("no", "conn") not in L.got and ("ok", "conn") not in L.got, L.got
        # without the namespace the listed path is reached (control)
        assert run_in(cg, f"try_(lambda: stream({ok!r}))") == ["ok"]
    ev = enforcer.wait_event(lambda e: "user namespace" in e.get("unmapped", {}).get("reason", ""))
    assert ev and ev["unmapped"]["unix"]["address"] == ok, unix_events(enforcer)
    # exec makes no user namespace
    r = enforcer.exec("t-unix", ["unshare", "-U", "true"])   # before stop 44: made one (rc 0)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stdout + r.stderr
    r = enforcer.exec("t-unix", ["unshare", "-n", "true"])   # no capabilities: no namespace at all
    assert r.returncode != 0, r.stdout + r.stderr


def test_exec_user_lookup_is_not_the_agents(enforcer, tmp):
    """Review: exec --user looked the user up after joining the cgroup, where
    glibc's NSS modules (nss_systemd here, nscd elsewhere) reach AF_UNIX
    sockets the agent may not: users known only there were missed, and
    each lookup was refused and audited as the agent's. The lookup now
    happens before."""
    enforcer.start(unix_policy(tmp, ["/nonexistent/x.sock"]))
    # the command itself looks nothing up (id would ask nscd: refused, as the agent's own)
    r = enforcer.exec("t-unix", ["sh", "-c", "echo $USER; grep -E '^(Uid|Gid):' /proc/self/status"], user="nobody")
    out = r.stdout.split()
    assert r.returncode == 0 and out[0] == "nobody" and out[2] == "65534" and out[7] == "65534", r.stdout + r.stderr
    time.sleep(0.5)
    assert enforcer.status()["counters"]["denied_unix"] == 0, [
        (e["unmapped"]["unix"], e["actor"]["process"]["name"]) for e in unix_events(enforcer)]
    assert unix_events(enforcer) == []
