# SPDX-License-Identifier: Apache-2.0
"""Identity in the running enforcer: an agent with a client_credentials
identity from a real OpenID provider (tests/oidc, oidc-provider) gets a
verified principal, which status and every audit event carry; without a
verified identity its connections are refused (fail closed)."""
import json
import os
import subprocess
import textwrap

import pytest

from conftest import HELPERS, connect_code
from test_token import AUDIENCE, CLIENT_ID, CLIENT_SECRET, idp  # noqa: F401 (fixture)


def secret_file(tmp, secret=CLIENT_SECRET):
    path = os.path.join(tmp, "client-secret")
    with open(path, "w") as f:
        f.write(secret)
    os.chmod(path, 0o600)
    return path


def app_password_file(tmp):
    """The upstream password of the test database's role app (helpers/pg.py), 0600."""
    path = os.path.join(tmp, "pw")
    with open(path, "w") as f:
        f.write("app-secret-pw\n")
    os.chmod(path, 0o600)
    return path


def bot_policy(tmp, issuer, target, rule, secret=CLIENT_SECRET):
    """t-bot, with a client_credentials identity from issuer, bound by name
    to one role holding rule for target (both YAML flow mappings)."""
    path = secret_file(tmp, secret)
    return f"""
    version: 1
    agents:
      - name: t-bot
        identity: {{source: client_credentials, issuer: "{issuer}", client_id: {CLIENT_ID},
                    client_secret_file: {path}, audience: "{AUDIENCE}"}}
    targets: [{target}]
    roles: [{{name: r, rules: [{rule}]}}]
    bindings: [{{role: r, agents: [t-bot]}}]
    """


def policy(tmp, issuer, port, secret=CLIENT_SECRET):
    return bot_policy(tmp, issuer, f"{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}",
                      "{target: echo}", secret)


def test_verified_principal_in_status_and_audit(enforcer, servers, idp, tmp):
    port, _ = servers.echo()
    enforcer.start(policy(tmp, idp.issuer, port))
    pr = enforcer.status()["agents"][0]["principal"]
    assert pr["verified"] is True, pr
    assert pr["iss"] == idp.issuer and pr["sub"] and pr["client_id"] == CLIENT_ID
    assert pr["exp"] and pr["source"] == "client_credentials"
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    assert r.stdout.split()[0] == "OK", r.stdout + r.stderr
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Open")
    assert ev["unmapped"]["agent"]["principal"] == {"iss": idp.issuer, "sub": pr["sub"], "verified": True}


def test_unverified_agent_refused(enforcer, servers, idp, tmp):
    port, log = servers.echo()
    enforcer.start(policy(tmp, idp.issuer, port, secret="wrong-secret"))
    pr = enforcer.status()["agents"][0]["principal"]
    assert pr["verified"] is False and "401" in pr["reason"], pr
    assert "wrong-secret" not in str(enforcer.status()) and "wrong-secret" not in enforcer.read_log()
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    assert r.stdout.split()[0] in ("ERR", "ERR-IO") or r.stdout.split()[-1] == "<eof>", r.stdout
    assert open(log).read() == ""
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Refuse")
    assert ev and ev["unmapped"]["reason"].startswith("identity not verified: ")


def test_identity_lost_is_audited(enforcer, servers, tmp):
    """Tokens live 6 s; the provider goes away: when the held token expires
    the principal becomes unverified, an Authentication (3002) event records
    it, and the agent's connections are refused from then on."""
    from test_token import Provider
    p = Provider(tmp, ttl=6)
    try:
        port, _ = servers.echo()
        enforcer.start(policy(tmp, p.issuer, port))
        assert enforcer.status()["agents"][0]["principal"]["verified"] is True
        p.stop()
        ev = enforcer.wait_event(lambda e: e.get("class_uid") == 3002 and
                                 e["unmapped"]["agent"]["principal"]["verified"] is False, timeout=20)
        assert ev and ev["disposition"] == "Blocked", ev
        r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
        assert r.stdout.split()[0] in ("ERR", "ERR-IO") or r.stdout.split()[-1] == "<eof>", r.stdout
    finally:
        p.stop()


def claims_policy(tmp, issuer, port, groups):
    path = secret_file(tmp)
    return f"""
    version: 1
    agents:
      - name: t-bot
        identity: {{source: client_credentials, issuer: "{issuer}", client_id: {CLIENT_ID},
                    client_secret_file: {path}, audience: "{AUDIENCE}"}}
    targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}]
    roles: [{{name: support-reader, rules: [{{target: echo}}]}}]
    bindings: [{{role: support-reader, claims: {{groups: {groups}}}}}]
    """


def test_binding_by_claims(enforcer, servers, idp, tmp):
    """The provider puts groups [agents, support] in the token: a binding on
    groups: [support] grants the role; one on [finance] does not."""
    port, log = servers.echo()
    enforcer.start(claims_policy(tmp, idp.issuer, port, "[support]"))
    assert "support" in enforcer.status()["agents"][0]["principal"]["groups"]
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    assert r.stdout.split() == ["OK", "127.0.0.1", str(port), "hello"], r.stdout + r.stderr
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Open")
    assert ev["unmapped"]["rule"].startswith("role 'support-reader'")
    enforcer.stop()
    enforcer.start(claims_policy(tmp, idp.issuer, port, "[finance]"))
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    out = r.stdout.split()
    assert out and (out[0] in ("ERR", "ERR-IO") or out[-1] == "<eof>"), r.stdout + r.stderr
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Refuse")
    assert ev and "claims" in ev["unmapped"]["reason"]


# An agent that holds one connection open across the loss of its identity:
# one exchange, then it waits for FLAG, then another on the same connection.
# Prints one JSON line per exchange.
HOLDS_OPEN = textwrap.dedent(r"""
    import json, os, socket, sys, time
    sys.path.insert(0, sys.argv[4])
    kind, port, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sql = sys.argv[5] if len(sys.argv) > 5 else "SELECT count(*) FROM customers"
    if kind == "http":
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        def exchange():
            s.sendall(b"GET /v1/x HTTP/1.1\r\nHost: api.internal\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, body = buf.split(b"\r\n\r\n", 1)
            n = int([l.split(b":")[1] for l in head.split(b"\r\n")
                     if l.lower().startswith(b"content-length:")][0])
            while len(body) < n:
                body += s.recv(65536)
            return [int(head.split()[1]), body[:n].decode()]
    else:
        from pgraw import Conn, Q, P, B, E, S, summary
        c = Conn("127.0.0.1", port, user="agent")
        c.send((Q("BEGIN") if kind == "pg-tx" else b"") + P("q", sql) + S)
        c.until_ready(2 if kind == "pg-tx" else 1)
        def exchange():
            c.send(B("", "q") + E("") + S)
            out = summary(c.until_ready())
            try:
                c.send(Q(sql))
                return [out, summary(c.until_ready())]
            except OSError as e:   # a session that ended
                return [out, ["closed: " + type(e).__name__]]
    print(json.dumps(exchange()), flush=True)
    while not os.path.exists(flag):
        time.sleep(0.05)
    print(json.dumps(exchange()), flush=True)
""")


def identity_changes_midway(enforcer, tmp, kind, port, change, changed, sql=None):
    """Runs HOLDS_OPEN as t-bot (sql: its statement); calls change() between
    its two exchanges, then waits until changed(principal) holds for the
    principal `status` shows. Returns both exchanges."""
    from conftest import AG, PY, wait_for
    flag = os.path.join(tmp, "identity-changed")
    agent = subprocess.Popen([AG, "--state-dir", enforcer.state, "exec", "--agent", "t-bot", "--",
                              PY, "-c", HOLDS_OPEN, kind, str(port), flag, HELPERS] + ([sql] if sql else []),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(agent.stdout.readline() or "null")
        change()
        assert wait_for(lambda: changed(enforcer.status()["agents"][0]["principal"]), timeout=20), \
            "the principal did not change"
        open(flag, "w").close()
        second = json.loads(agent.stdout.readline() or "null")
    finally:
        agent.kill()
        err = agent.communicate(timeout=10)[1]
    assert first and second, err
    return first, second


def lose_identity_midway(enforcer, tmp, p, kind, port):
    """identity_changes_midway: the provider stopped, until the principal is unverified."""
    return identity_changes_midway(enforcer, tmp, kind, port, p.stop, lambda pr: pr["verified"] is False)


def test_identity_lost_stops_requests_on_open_http_connection(enforcer, servers, tmp):
    """A keep-alive HTTP connection opened while the agent was verified: once
    its identity is lost, the next request on it is refused (403, the
    reason named) and never reaches the upstream. The check was made only
    when a connection was accepted (found by review, stop 23)."""
    from test_http import Recorder
    from test_token import Provider
    p = Provider(tmp, ttl=6)
    try:
        rec = Recorder(tmp, servers.procs)
        enforcer.start(bot_policy(
            tmp, p.issuer,
            f"{{name: api, protocol: http, address: 127.0.0.1:{rec.port}, upstream: {{server_name: api.internal}}}}",
            '{target: api, allow: {http: ["GET /v1/x"]}}'))
        first, second = lose_identity_midway(enforcer, tmp, p, "http", rec.port)
        assert first[0] == 200, first
        assert second[0] == 403 and "identity not verified" in second[1], second
        assert rec.all().count(b"GET /v1/x") == 1, rec.all()
    finally:
        p.stop()


def test_identity_lost_stops_statements_on_open_postgres_session(enforcer, pg, tmp):
    """The same for a PostgreSQL session: after the loss, neither a new
    statement nor a statement prepared before it runs (42501)."""
    from test_token import Provider
    p = Provider(tmp, ttl=6)
    try:
        pw = app_password_file(tmp)
        enforcer.start(bot_policy(
            tmp, p.issuer,
            f"{{name: shop, protocol: postgres, address: 127.0.0.1:{pg.port}, "
            f"upstream: {{user: app, password_file: {pw}, database: shop, tls: disable}}}}",
            "{target: shop, allow: {statements: [select], tables: [public.customers]}}"))
        first, second = lose_identity_midway(enforcer, tmp, p, "pg", pg.port)
        assert any(x.startswith("D:") for x in first[0]) and any(x.startswith("D:") for x in first[1]), first
        for out in second:
            assert not any(x.startswith("D:") for x in out), second
            assert any(x.startswith("E:42501:agentgate: denied") and "identity not verified" in x
                       for x in out), second
    finally:
        p.stop()


@pytest.mark.parametrize("kind", ["pg", "pg-tx"])
def test_claims_change_stops_statements_on_open_postgres_session(enforcer, pg, tmp, kind):
    """Bindings by claims follow the identity the enforcer refreshes. A session
    that started while the token's groups bound a role without masks, then got
    a token whose groups bind a role that masks customers.email: the session's
    masks were those of its start, so the column came back in clear (found by
    review, stop 24). Now neither a new nor a prepared statement runs in it:
    it ends (FATAL 57P01), inside a transaction too (pg-tx: it was refused
    its COMMIT as well, and stayed stuck: review, stop 43); a new session
    has the new role's masks."""
    from test_token import Provider
    p = Provider(tmp, ttl=6)
    try:
        pw = app_password_file(tmp)
        enforcer.start(f"""
        version: 1
        agents:
          - name: t-bot
            identity: {{source: client_credentials, issuer: "{p.issuer}", client_id: {CLIENT_ID},
                        client_secret_file: {secret_file(tmp)}, audience: "{AUDIENCE}"}}
        targets:
          - {{name: shop, protocol: postgres, address: 127.0.0.1:{pg.port},
             upstream: {{user: app, password_file: {pw}, database: shop, tls: disable}}}}
        roles:
          - {{name: support, rules: [{{target: shop, allow: {{statements: [select], tables: [public.customers]}}}}]}}
          - {{name: finance, rules: [{{target: shop, allow: {{statements: [select], tables: [public.customers]}},
                                      mask: {{columns: [public.customers.email]}}}}]}}
        bindings:
          - {{role: support, claims: {{groups: [support]}}}}
          - {{role: finance, claims: {{groups: [finance]}}}}
        """)
        sql = "SELECT email FROM customers ORDER BY id LIMIT 1"
        clear = pg.sql(sql).strip()
        assert "@" in clear, clear

        def to_finance():
            import urllib.request
            urllib.request.urlopen(urllib.request.Request(p.issuer + "/admin/groups?set=agents,finance",
                                                          data=b"", method="POST"), timeout=5).read()

        first, second = identity_changes_midway(enforcer, tmp, kind, pg.port, to_finance,
                                                lambda pr: "finance" in pr.get("groups", []), sql)
        assert all(f"D:{clear}" in out for out in first), first
        # the open session cannot take the new role's mask: it ends (FATAL
        # 57P01, which pools take for "reconnect") at its next statement
        for out in second:
            assert not any(x.startswith("D:") for x in out), second
        assert any(x.startswith("E:57P01:agentgate: the agent's identity now binds other rules") and
                   "reconnect" in x for x in second[0]), second
        assert second[1] in (["EOF"], ["closed: ConnectionResetError"], ["closed: BrokenPipeError"]), second
        # a new session: the finance role, its mask
        r = enforcer.py("t-bot", f"""
import sys, json
sys.path.insert(0, {HELPERS!r})
from pgraw import Conn, Q, summary
c = Conn("127.0.0.1", {pg.port}, user="agent")
c.send(Q({sql!r}))
print(json.dumps(summary(c.until_ready())))
""")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert any(x.startswith("D:") for x in out) and f"D:{clear}" not in out, out
    finally:
        p.stop()


def test_status_json_is_ascii_whatever_the_claims(enforcer, servers, idp, tmp):
    """A principal's claims are the issuer's (and its users') text: a bidi override
    or a C1 control in a group would act on the operator's terminal. `status --json`
    writes ASCII JSON (\\u escapes) that still reads back as the claim."""
    import urllib.parse
    import urllib.request
    evil = "supp\u202eort\u0085x\u00e9"
    urllib.request.urlopen(urllib.request.Request(
        idp.issuer + "/admin/groups?set=" + urllib.parse.quote("agents," + evil, safe=","),
        data=b"", method="POST"), timeout=5).read()
    port, _ = servers.echo()
    enforcer.start(policy(tmp, idp.issuer, port))
    r = enforcer.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    raw = r.stdout.encode("utf-8")
    assert all(b < 0x80 for b in raw), [c for c in r.stdout if ord(c) > 0x7f]
    pr = json.loads(r.stdout)["agents"][0]["principal"]
    assert pr["verified"] is True and evil in pr["groups"], pr
    assert "\\u202e" in r.stdout.lower()
