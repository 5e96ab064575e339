# SPDX-License-Identifier: Apache-2.0
"""Delegation to a postgres target (issues 3 and 4): with `user_tokens:
password` on the target and accept_user_tokens on the agent, the agent's
client sends a user's token as its password (psql, PGPASSWORD); the enforcer
verifies it with the agent's issuer and judges each statement with both the
agent's and the user's rules (allowed only if both allow; masks are the
union). Real PostgreSQL 15, real OpenID provider, real psql in the agent's
cgroup through the kernel redirect."""
import json
import os
import subprocess
import time

import pytest

from conftest import AG, HELPERS, PY, wait_for
import oidc
from oidc import AUDIENCE
from test_postgres import AGENT, psql, stmt_events
from test_reload import Holder, ended, rewrite

CLIENT_ID = "t-pg-deleg"
CLIENT_SECRET = "t-pg-deleg-secret-0123456789"


@pytest.fixture
def idp(tmp):
    p = oidc.Provider(tmp, CLIENT_ID, CLIENT_SECRET)
    yield p
    p.stop()


def start(enforcer, tmp, pg, idp, env=None):
    """Starts the enforcer on doc(); returns the policy file's path."""
    path = enforcer.start(policy_text(doc(tmp, pg, idp)), env=env)

    def verified():
        return any(a["name"] == AGENT and a["principal"]["verified"] for a in enforcer.status()["agents"])
    assert wait_for(verified, timeout=15), enforcer.status()
    return path


def policy_text(d):
    return "version: 1\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in d.items())


def doc(tmp, pg, idp):
    pw = os.path.join(tmp, "pw")
    with open(pw, "w") as f:
        f.write("app-secret-pw\n")
    os.chmod(pw, 0o600)
    secret = os.path.join(tmp, "client-secret")
    with open(secret, "w") as f:
        f.write(CLIENT_SECRET)
    os.chmod(secret, 0o600)
    # The agent may read customers and orders; finance users (bob) may read
    # orders and secrets and must not see customers.email unmasked.
    return {
        "agents": [{"name": AGENT, "accept_user_tokens": True,
                    "identity": {"source": "client_credentials", "issuer": idp.issuer,
                                 "client_id": CLIENT_ID, "client_secret_file": secret,
                                 "audience": AUDIENCE}}],
        "targets": [{"name": "shop", "protocol": "postgres", "address": f"127.0.0.1:{pg.port}",
                     "user_tokens": "password",
                     "upstream": {"user": "app", "password_file": pw, "database": "shop",
                                  "tls": "disable"}}],
        "roles": [
            {"name": "agent-ro", "rules": [{"target": "shop", "allow": {
                "statements": ["select"], "tables": ["public.customers", "public.orders"]}}]},
            {"name": "finance", "rules": [{"target": "shop", "allow": {
                "statements": ["select"], "tables": ["public.orders", "public.secrets"]}}]},
            {"name": "finance-cust", "rules": [{"target": "shop", "allow": {
                "statements": ["select"], "tables": ["public.customers"]},
                "mask": {"columns": ["public.customers.email"]}}]},
        ],
        "bindings": [{"role": "agent-ro", "agents": [AGENT]},
                     {"role": "finance", "claims": {"groups": ["finance"]}},
                     {"role": "finance-cust", "claims": {"groups": ["finance"]}}],
    }


def q(enforcer, pg, sql, token):
    return psql(enforcer, pg, sql, env={"PGPASSWORD": token})


def test_postgres_delegation_intersection_and_mask_union(enforcer, tmp, pg, idp):
    start(enforcer, tmp, pg, idp)
    bob = idp.exchange("bob")
    # both allow orders
    rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", bob)
    assert rc == 0, err
    # the agent allows customers, the user's finance-cust allows it with email masked: the
    # union of masks applies although the agent's own rule masks nothing
    pg.sql("INSERT INTO customers VALUES (9001, 'bob.secret@example.com', '4111111111111111') "
           "ON CONFLICT DO NOTHING")
    rc, out, err = q(enforcer, pg, "SELECT email FROM customers WHERE id = 9001", bob)
    assert rc != 0 or "bob.secret@example.com" not in out, out
    rc, out, err = q(enforcer, pg, "SELECT id, email FROM customers", bob)
    assert rc == 0, err
    assert "bob.secret@example.com" not in out and "****" in out
    # the user allows secrets, the agent does not: a user token never widens
    rc, out, err = q(enforcer, pg, "SELECT * FROM secrets", bob)
    assert rc != 0 and "agentgate: denied" in err
    # alice has no role here: nothing
    rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", idp.exchange("alice"))
    assert rc != 0 and "agentgate: denied" in err
    evs = stmt_events(enforcer)
    assert any(e["unmapped"].get("user", {}).get("sub") == "bob" for e in evs)
    assert bob not in json.dumps(enforcer.events())


def test_postgres_delegation_refuses_bad_tokens(enforcer, tmp, pg, idp):
    start(enforcer, tmp, pg, idp)
    rc, out, err = q(enforcer, pg, "SELECT 1", idp.exchange("bob", actor="agent-b"))
    assert rc != 0 and "user token refused" in err and "act.sub" in err
    rc, out, err = q(enforcer, pg, "SELECT 1", "not-a-token")
    assert rc != 0 and "user token refused" in err
    rc, out, err = q(enforcer, pg, "SELECT 1", idp.exchange("bob", resource="urn:elsewhere"))
    assert rc != 0 and "user token refused" in err


def test_reload_keeps_a_delegated_session_when_user_tokens_go(enforcer, tmp, pg, idp):
    """A reload that switches delegation off for a target leaves a session that began
    with a user's token on the policy it started with (enforcer_adopt_live): it is not
    judged under rules written for sessions without one. Here the reload also narrows
    the agent's rule to orders: the held session's old rules are not the agent's any
    more, so it ends at its next statement (FATAL 57P01: it kept reading customers
    before, review, stop 28); a new session gets the new rules."""
    path = start(enforcer, tmp, pg, idp)
    bob = idp.exchange("bob")
    held = Holder(enforcer, pg, agent=AGENT, env={"PGPASSWORD": bob})
    try:
        assert held.first == ["ok", 5]
        assert held.q("select count(*) from customers") == ["ok", 2]
        d = doc(tmp, pg, idp)
        del d["targets"][0]["user_tokens"]
        d["roles"][0]["rules"][0]["allow"]["tables"] = ["public.orders"]
        rewrite(enforcer, path, policy_text(d))
        r = enforcer.cli("reload")
        assert r.returncode == 0, r.stdout + r.stderr
        # the held session: it cannot move, and its old rules are gone
        got = held.q("select count(*) from customers")
        assert got[:2] == ["err", "57P01"] and "policy was reloaded" in got[2], got
        assert ended(held.q("select count(*) from secrets"))
        # a new session: no token asked for, the agent's new rule
        rc, out, err = psql(enforcer, pg, "select count(*) from customers")
        assert rc != 0 and "agentgate: denied" in err and "public.customers" in err, (rc, out, err)
        rc, out, err = psql(enforcer, pg, "select count(*) from orders")
        assert rc == 0 and out.strip() == "5", (rc, out, err)
    finally:
        held.close()


def test_user_tokens_gain_nothing_from_the_agents_bindings(enforcer, tmp, pg, idp):
    """Review, stop 26: a token exchanged for the agent names the agent in
    client_id, so a binding by client_id meant for the agent matched every
    user (mallory, with no group, got the agent's roles and the intersection
    narrowed nothing); and the agent's own token passed as a user's. User
    principals match bindings on sub and groups only, and a token whose sub
    is the agent's own is refused."""
    d = doc(tmp, pg, idp)
    d["bindings"][0] = {"role": "agent-ro", "claims": {"client_id": [CLIENT_ID]}}
    enforcer.start(policy_text(d))
    assert wait_for(lambda: any(a["name"] == AGENT and a["principal"]["verified"]
                                for a in enforcer.status()["agents"]), timeout=15)
    rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", idp.exchange("mallory"))
    assert rc != 0 and "agentgate: denied" in err, (rc, out, err)
    rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", idp.exchange("bob"))   # finance
    assert rc == 0 and out.strip() == "5", (rc, out, err)
    rc, out, err = q(enforcer, pg, "SELECT 1", idp.token())
    assert rc != 0 and "user token refused" in err and "agent's own principal" in err, (rc, out, err)


def test_delegated_session_ends_with_the_user_token(tmp, pg, enforcer):
    """Review, stop 26: a postgres session verified the user's token once and
    acted for the user for as long as it stayed open. Past the token's exp
    every statement is refused, asking for a reconnect."""
    idp = oidc.Provider(tmp, CLIENT_ID, CLIENT_SECRET, ttl=5)
    try:
        start(enforcer, tmp, pg, idp)
        bob = idp.exchange("bob")
        held = Holder(enforcer, pg, agent=AGENT, env={"PGPASSWORD": bob})
        try:
            assert held.q("select count(*) from orders") == ["ok", 5]
            time.sleep(6)
            r = held.q("select count(*) from orders")
            assert r[:2] == ["err", "42501"] and "token has expired" in r[2], r
        finally:
            held.close()
        # a fresh token works again (the agent's own refreshes meanwhile)
        rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", idp.exchange("bob"))
        assert rc == 0 and out.strip() == "5", (rc, out, err)
    finally:
        idp.stop()


# A COPY FROM STDIN held open by the raw client (its rows pass no
# statement check): the token as the password, one row sent, then it waits
# for a line on stdin and reports what the server side said by itself.
RAW_COPY = """
import json, socket, sys
sys.path.insert(0, %r)
from pgraw import *
c = Conn("127.0.0.1", %d, password=sys.argv[1])
c.send(Q("COPY deleg_copy (n) FROM STDIN"))
t, b = c.read()
c.send(msg(b"d", b"1\\n"))
print(json.dumps({"ready": any(t == b"Z" for t, _ in c.startup), "copy": t.decode() if t else None}), flush=True)
sys.stdin.readline()
c.s.settimeout(30)
got = []
try:
    while True:
        t, b = c.read()
        if t is None:
            got.append(["eof"])
            break
        got.append([t.decode(), fields(b) if t in (b"E", b"N") else None])
except (socket.timeout, OSError) as e:
    got.append(["error", str(e)])
print(json.dumps(got), flush=True)
"""


def test_delegated_session_ends_when_the_issuer_withdraws_the_key(tmp, pg, enforcer):
    """A postgres session verified the user's token once and kept acting for
    the user after the issuer stopped publishing the key that signed it (a key
    rotated away from, say compromised), until the token's exp: a known limit
    until stop 50. The session now checks the key again whenever the issuer's
    keys change (refreshed at their TTL: 2 s here, 1 s between fetches,
    through the test knobs), at each statement and every 0.2 s besides. The
    provider keeps its previous key for one rotation: after one the sessions
    go on, after two they end by themselves, with FATAL 57P01 saying why: an
    idle one, and one in COPY FROM STDIN, whose rows are not committed (the
    review of this change: COPY data passes no statement check). A fresh
    token then works; the old one is refused."""
    pg.sql("CREATE TABLE IF NOT EXISTS deleg_copy (n int); GRANT SELECT, INSERT ON deleg_copy TO app")
    before = int(pg.sql("SELECT count(*) FROM deleg_copy").strip())
    idp = oidc.Provider(tmp, CLIENT_ID, CLIENT_SECRET)
    d = doc(tmp, pg, idp)
    for role in d["roles"][:2]:   # the agent's and finance's: COPY into deleg_copy
        role["rules"][0]["allow"]["statements"] += ["insert", "copy"]
        role["rules"][0]["allow"]["tables"].append("public.deleg_copy")
    copier = None
    try:
        enforcer.start(policy_text(d), env={"AGENTGATE_JWKS_TTL_S": "2", "AGENTGATE_JWKS_REFETCH_S": "1"})
        assert wait_for(lambda: any(a["name"] == AGENT and a["principal"]["verified"]
                                    for a in enforcer.status()["agents"]), 15), enforcer.status()
        bob = idp.exchange("bob", alg="ES256")   # an EC key; the agent's own token is RS256
        held = Holder(enforcer, pg, agent=AGENT, env={"PGPASSWORD": bob})
        try:
            assert held.first == ["ok", 5]
            idp.rotate()
            time.sleep(4.5)   # two TTLs: the new set was fetched, and still has bob's key
            assert held.q("select count(*) from orders") == ["ok", 5]
            assert held.q("select count(*) from customers") == ["ok", 2]
            copier = subprocess.Popen([AG, "--state-dir", enforcer.state, "exec", "--agent", AGENT,
                                       "--", PY, "-c", RAW_COPY % (HELPERS, pg.port), bob],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            first = json.loads(copier.stdout.readline() or "null")
            assert first == {"ready": True, "copy": "G"}, (first, copier.stderr.read() if not first else "")
            idp.rotate()
            copier.stdin.write("go\n")
            copier.stdin.flush()
            said = json.loads(copier.stdout.readline() or "null")
            assert said and said[0][0] == "E" and said[0][1]["S"] == "FATAL", said
            assert said[0][1]["C"] == "57P01", said
            msg = said[0][1]["M"]
            assert "delegating user's token no longer verifies" in msg, said
            assert "no longer publishes the token's key" in msg and "reconnect with a fresh one" in msg, said
            assert said[-1] == ["eof"], said
            # the idle session has ended too, by itself (its statements may be
            # refused first for the agent's own token, which lost its key too,
            # until the agent has a new one)
            last = []

            def held_ended():
                last[:] = held.q("select count(*) from orders")
                return ended(last) or "delegating user's token no longer verifies" in last[-1]
            assert wait_for(held_ended, 15, step=0.5), last
        finally:
            held.close()
            if copier:
                copier.kill()
                copier.wait()
        # the COPY's rows were not committed
        assert int(pg.sql("SELECT count(*) FROM deleg_copy").strip()) == before
        # the Close events say why
        closes = [e for e in enforcer.events() if e.get("class_uid") == 4001 and e.get("activity_name") == "Close"
                  and "delegating user's token no longer verifies" in json.dumps(e)]
        assert len(closes) >= 2, [(e.get("status_detail"), e["unmapped"].get("reason"), e["unmapped"].get("module"))
                                  for e in enforcer.events() if e.get("activity_name") == "Close"]
        # a fresh token, signed with the current key: a new session acts for bob,
        # once the agent has a new token of its own
        assert wait_for(lambda: any(a["name"] == AGENT and a["principal"]["verified"]
                                    for a in enforcer.status()["agents"]), 15)
        rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", idp.exchange("bob"))
        assert rc == 0 and out.strip() == "5", (rc, out, err)
        # the old token is refused at the start of a new session
        rc, out, err = q(enforcer, pg, "SELECT count(*) FROM orders", bob)
        assert rc != 0 and "user token refused" in err, (rc, out, err)
    finally:
        idp.stop()
