# SPDX-License-Identifier: Apache-2.0
"""The command line as an SRE uses it."""
import json
import os
import re
import subprocess
import time

from conftest import AG, ROOT, pty_run, wait_for


def run(*args, **kw):
    return subprocess.run([AG, *args], capture_output=True, text=True, **kw)


def test_policy_check_good_and_bad(tmp):
    good = os.path.join(ROOT, "policies", "default.yaml")
    r = run("policy", "check", good)
    assert r.returncode == 0 and "ok (1 agents" in r.stdout, r.stdout + r.stderr
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("version: 1\nagents:\n  - name: a\n    limts: {connections: 5}\n")
    r = run("policy", "check", good, bad)
    assert r.returncode == 1
    assert re.search(re.escape(bad) + r":4:5: unknown key 'limts'", r.stderr), r.stderr
    assert "ok" in r.stdout      # the good file is still reported



def test_policy_check_warns_of_a_credential_sent_in_clear(tmp):
    """Legal, but whoever answers for 10.0.0.6 reads the bearer token: the
    check says so on stderr and still passes; verify-full or a loopback
    upstream is not warned about."""
    p = os.path.join(tmp, "p.yaml")
    with open(p, "w") as f:
        f.write("""version: 1
agents: [{name: a}]
targets:
  - {name: api, protocol: http, address: 10.0.0.6:80,
     upstream: {server_name: api.internal, bearer_token_file: /etc/agentgate-t/tok}}
  - {name: safe, protocol: http, address: 10.0.0.7:443,
     upstream: {server_name: safe.internal, tls: verify-full, bearer_token_file: /etc/agentgate-t/tok}}
  - {name: here, protocol: http, address: 127.0.0.1:8080,
     upstream: {server_name: here.internal, bearer_token_file: /etc/agentgate-t/tok}}
""")
    r = run("policy", "check", p)
    assert r.returncode == 0 and "ok (1 agents" in r.stdout, r.stdout + r.stderr
    assert r.stderr == (f"{p}: warning: target 'api': its credential (bearer_token_file) is sent upstream "
                        "over plain TCP (no tls): whoever answers for the upstream address can read it; "
                        "set tls: verify-full\n"), r.stderr


def test_policy_check_warns_of_an_http_target_without_a_name(tmp):
    """An http or kubernetes target with only an address forwards the
    agent's Host as sent (an upstream serving several sites there picks one
    by it): legal, and said on stderr. A host name, upstream.server_name or
    an upstream host name pins it; other protocols have no Host."""
    p = os.path.join(tmp, "p.yaml")
    with open(p, "w") as f:
        f.write("""version: 1
agents: [{name: a}]
targets:
  - {name: bare, protocol: http, address: 127.0.0.1:8080}
  - {name: cidr, protocol: kubernetes, address: 10.0.0.0/24:6443}
  - {name: pinned, protocol: http, address: 127.0.0.1:8081, upstream: {server_name: api.internal}}
  - {name: named, protocol: http, address: api.internal:80}
  - {name: named-up, protocol: http, address: 127.0.0.1:8082, upstream: {address: api.internal:80}}
  - {name: db, protocol: tcp, address: 127.0.0.1:5432}
""")
    r = run("policy", "check", p)
    assert r.returncode == 0 and "ok (1 agents" in r.stdout, r.stdout + r.stderr
    assert r.stderr == "".join(
        f"{p}: warning: target '{t}': it has no name (an address, no upstream.server_name), so the "
        "agent's Host is forwarded as sent, and an upstream serving several sites there picks one by "
        "it; set upstream.server_name to accept that name only\n" for t in ("bare", "cidr")), r.stderr


def test_policy_check_warns_of_a_secret_file_others_may_read(tmp):
    """DESIGN §3: a secret file group or others may access is reported, not
    refused. policy check names the target (or sink), the field, the path and
    the mode, from a stat (the content is never shown), and exits 0; at 0600
    it says nothing."""
    os.chmod(tmp, 0o755)
    pw, tok = os.path.join(tmp, "pw"), os.path.join(tmp, "tok")
    for path, mode in ((pw, 0o644), (tok, 0o640)):
        with open(path, "w") as f:
            f.write("check-secret-value\n")
        os.chmod(path, mode)
    p = os.path.join(tmp, "p.yaml")
    with open(p, "w") as f:
        f.write(f"""version: 1
agents: [{{name: a}}]
targets:
  - {{name: db, protocol: postgres, address: 127.0.0.1:5432, upstream: {{user: app, password_file: {pw}}}}}
  - {{name: api, protocol: http, address: 127.0.0.1:8080, upstream: {{server_name: api.internal, bearer_token_file: {tok}}}}}
audit:
  sinks:
    - {{type: stdout}}
    - {{type: webhook, url: "https://127.0.0.1:9", token_file: {tok}}}
""")
    r = run("policy", "check", p)
    assert r.returncode == 0 and "ok (1 agents" in r.stdout, r.stdout + r.stderr
    assert r.stderr == (
        f"{p}: warning: target 'db': password_file '{pw}' may be accessed by group or others "
        "(mode 0644); make it 0600\n"
        f"{p}: warning: target 'api': bearer_token_file '{tok}' may be accessed by group or others "
        "(mode 0640); make it 0600\n"
        f"{p}: warning: audit sink 1 (webhook): token_file '{tok}' may be accessed by group or others "
        "(mode 0640); make it 0600\n"), r.stderr
    assert "check-secret-value" not in r.stdout + r.stderr
    os.chmod(pw, 0o600)
    os.chmod(tok, 0o600)
    r = run("policy", "check", p)
    assert r.returncode == 0 and "ok (1 agents" in r.stdout and r.stderr == "", r.stdout + r.stderr


def test_policy_explain(tmp):
    p = os.path.join(tmp, "p.yaml")
    with open(p, "w") as f:
        f.write("""version: 1
agents: [{name: a}, {name: b}]
targets: [{name: db, protocol: tcp, address: 10.0.0.5:5432}]
roles: [{name: r, rules: [{target: db}]}]
bindings: [{role: r, agents: [a]}]
""")
    r = run("policy", "explain", "--policy", p, "--agent", "a", "--target", "db")
    assert r.returncode == 0 and r.stdout.startswith("allow:") and "role 'r'" in r.stdout
    r = run("policy", "explain", "--policy", p, "--agent", "b", "--target", "db")
    assert r.returncode == 0 and r.stdout.startswith("deny:")
    r = run("policy", "explain", "--policy", p, "--agent", "c", "--target", "db")
    assert r.returncode == 1 and "no agent 'c'" in r.stderr


def test_status_human_and_json_and_audit_tail(enforcer, servers):
    port, _ = servers.echo()
    enforcer.start(f"""
    version: 1
    agents: [{{name: t-agent}}]
    targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}},
              {{name: db, protocol: postgres, address: 127.0.0.1:5432}}]
    roles: [{{name: r, rules: [{{target: echo}}]}}]
    bindings: [{{role: r, agents: [t-agent]}}]
    """)
    r = enforcer.cli("status")
    assert r.returncode == 0
    assert "t-agent" in r.stdout and "attached" in r.stdout and "known limits:" in r.stdout
    st = enforcer.status()
    a = st["agents"][0]
    assert a["principal"] == {"source": "local", "iss": "local", "sub": "t-agent", "exp": None,
                              "verified": False}
    assert a["cgroup"] == "/agentgate/t-agent" and a["attached"] is True
    assert st["policy"]["mode"] == "enforce" and len(st["policy"]["hash"]) == 64
    db = [t for t in st["targets"] if t["name"] == "db"][0]
    assert db["module"] == "postgres"          # inspected by its module
    assert any("needs approval" in l for l in st["known_limits"])
    enforcer.py("t-agent", f"import socket; socket.create_connection(('127.0.0.1', {port})).close()")
    enforcer.py("t-agent", "import socket\ntry: socket.create_connection(('127.0.0.1', 9), timeout=2)\nexcept OSError: pass")

    def tail():
        r = enforcer.cli("audit", "tail", "-n", "50", "--json")
        return [json.loads(l) for l in r.stdout.splitlines()] if r.returncode == 0 else []
    evs = wait_for(lambda: [e for e in tail() if e.get("activity_name") == "Refuse"] and tail())
    assert evs and evs[0]["class_uid"] == 6002          # enforcer start comes first
    human = enforcer.cli("audit", "tail").stdout
    assert "Network Activity/Refuse agent=t-agent verdict=deny dst=127.0.0.1:9" in human, human


def test_audit_tail_follow(enforcer, servers):
    port, _ = servers.echo()
    enforcer.start(f"""
    version: 1
    agents: [{{name: t-agent}}]
    targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}]
    roles: [{{name: r, rules: [{{target: echo}}]}}]
    bindings: [{{role: r, agents: [t-agent]}}]
    """)
    f = subprocess.Popen([AG, "--state-dir", enforcer.state, "audit", "tail", "-f", "--json", "-n", "1"],
                         stdout=subprocess.PIPE, text=True)
    try:
        first = f.stdout.readline()
        assert json.loads(first)["class_uid"] == 6002
        enforcer.py("t-agent", "import socket\ntry: socket.create_connection(('127.0.0.1', 9), timeout=2)\nexcept OSError: pass")
        line = f.stdout.readline()
        assert json.loads(line)["activity_name"] == "Refuse"
    finally:
        f.kill()
        f.wait()


def test_run_refuses_unsupported_features(tmp):
    p = os.path.join(tmp, "p.yaml")
    with open(p, "w") as f:
        f.write(f"""version: 1
agents: [{{name: a}}]
approvals: {{notify: {{webhook: 'http://127.0.0.1:1/x'}}}}
""")
    r = run("--state-dir", os.path.join(tmp, "s"), "run", "--policy", p, timeout=20)
    assert r.returncode == 1 and "approvals are not implemented" in r.stderr, r.stderr


def test_run_refuses_what_it_cannot_enforce(tmp):
    """Delegation for an agent with no issuer to verify user tokens with, and
    an upstream given by host name, pass `policy check` but `run` refuses
    them at start instead of silently widening or guessing."""
    p = os.path.join(tmp, "p.yaml")
    with open(p, "w") as f:
        f.write("""version: 1
agents: [{name: a, accept_user_tokens: true}]
targets: [{name: db, protocol: postgres, address: 127.0.0.1:5432, upstream: {address: "db.internal:5432"}}]
roles: [{name: r, rules: [{target: db, allow: {statements: [select]}}]}]
bindings: [{role: r, agents: [a]}]
""")
    assert run("policy", "check", p).returncode == 0     # the shape is valid
    r = run("--state-dir", os.path.join(tmp, "s"), "run", "--policy", p, timeout=20)
    assert r.returncode == 1, r.stderr
    assert "accept_user_tokens needs an OIDC identity" in r.stderr, r.stderr
    assert "upstream.address must be an IP address" in r.stderr, r.stderr


def test_usage_lists_every_command_of_design():
    # DESIGN.md's command line, as --help shows it: each command that runs
    # (replay was missing: stop 66), and approvals named as not built yet
    r = run("--help")
    assert r.returncode == 0, r.stderr
    cmds = [l.split()[0] + (" " + l.split()[1] if l.split()[0] in ("policy", "audit", "token") else "")
            for l in r.stdout.splitlines() if l.startswith("  ") and l.strip()]
    for c in ("run", "exec", "attach", "detach", "status", "reload", "policy check", "policy explain",
              "audit tail", "audit verify", "replay", "token verify", "version", "approvals"):
        assert c in cmds, (c, r.stdout)
    r = run("replay")
    assert r.returncode == 2 and "usage: agentgate replay SESSION" in r.stderr, r.stderr


def test_unimplemented_commands_say_so():
    for args in (["approvals", "list"],):
        r = run(*args)
        assert r.returncode == 2 and "not implemented in this build" in r.stderr, args


def test_audit_tail_escapes_what_agents_choose(enforcer, servers):
    """Found by review: `audit tail` printed event strings raw, and agents choose much
    of them (here a PostgreSQL database name, which the refusal's reason quotes): a
    carriage return and an erase-line sequence wiped the real line on the operator's
    terminal and printed a forged "allow" line in its place. Every byte outside
    printable ASCII is now shown as \\xNN, and quotes and backslashes are escaped."""
    enforcer.start("""
    version: 1
    agents: [{name: t-agent}]
    targets: [{name: db, protocol: postgres, address: 127.0.0.1:5432,
               upstream: {user: app, database: shop}}]
    roles: [{name: r, rules: [{target: db, allow: {statements: [select], tables: [public.t]}}]}]
    bindings: [{role: r, agents: [t-agent]}]
    """)
    r = enforcer.py("t-agent", r"""
    import socket, struct
    db = b'x"\r\x1b[2K1796050389999 #99 Datastore Activity/Query agent=t-agent verdict=allow\xe2\x80\xae'
    body = struct.pack("!I", 196608) + b"user\0app\0database\0" + db + b"\0\0"
    s = socket.create_connection(("127.0.0.1", 5432), timeout=5)
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    try:
        s.recv(4096)
    except OSError:
        pass
    """)
    assert r.returncode == 0, r.stderr
    ev = enforcer.wait_event(lambda e: "1796050389999" in json.dumps(e))
    assert ev, "no event quotes the database name"
    human = enforcer.cli("audit", "tail", "-n", "50").stdout
    line = [l for l in human.splitlines() if "1796050389999" in l]
    assert len(line) == 1, human
    assert "\r" not in human and "\x1b" not in human and "\u202e" not in human, repr(human)
    assert '\\"\\x0d\\x1b[2K1796050389999 #99' in line[0] and "\\xe2\\x80\\xae" in line[0], line[0]


def test_audit_tail_json_on_a_terminal_escapes_controls(enforcer, pg, tmp):
    """Event strings hold what agents sent with only U+0000-U+001F escaped, so
    `audit tail --json` wrote C1 controls (U+009B is an 8-bit CSI) and bidi
    overrides raw onto the operator's terminal (review, stop 23). On a
    terminal every non-ASCII character is now written as \\uXXXX; into a
    pipe the line stays the spooled bytes."""
    from test_enforcer_identity import app_password_file
    pw = app_password_file(tmp)
    enforcer.start(f"""
    version: 1
    agents: [{{name: t-agent}}]
    targets: [{{name: shop, protocol: postgres, address: 127.0.0.1:{pg.port},
                upstream: {{user: app, password_file: {pw}, database: shop, tls: disable}}}}]
    roles: [{{name: r, rules: [{{target: shop, allow: {{statements: [select], tables: [public.customers]}}}}]}}]
    bindings: [{{role: r, agents: [t-agent]}}]
    """)
    r = enforcer.py("t-agent", f"""
    import sys
    sys.path.insert(0, {os.path.join(ROOT, "tests", "integration", "helpers")!r})
    from pgraw import Conn, Q
    c = Conn("127.0.0.1", {pg.port}, user="agent\\u009b2J\\u202e")
    c.send(Q("SELECT 1"))
    c.until_ready()
    c.close()
    print("done")
    """)
    assert r.stdout.strip() == "done", r.stdout + r.stderr
    evil = "agent\u009b2J\u202e".encode()
    piped = lambda: enforcer.cli("audit", "tail", "-n", "50", "--json").stdout.encode()
    assert wait_for(lambda: evil in piped()), "the event with the user is not there"
    out = pty_run([AG, "--state-dir", enforcer.state, "audit", "tail", "-n", "50", "--json"])
    assert b"\xc2\x9b" not in out and b"\xe2\x80\xae" not in out, out
    assert b"agent\\u009b2j\\u202e" in out.lower(), re.findall(rb'"user":"agent.{0,30}', out)
    lines = [l for l in out.replace(b"\r\n", b"\n").split(b"\n") if l.strip()]
    assert lines and all(json.loads(l) for l in lines)   # still JSON, line by line
