# SPDX-License-Identifier: Apache-2.0
"""Upstream session reuse in the postgres module: a session the agent ends
with Terminate while idle is reset (DISCARD ALL) and handed to the agent's
next connection with the same startup packet, instead of a new server
process, authentication and catalog read. Checked against a real
PostgreSQL 15 from its own side (pg_stat_activity, as the superuser), with
a raw wire-protocol client in the agent's cgroup."""
import json
import os
import signal
import textwrap
import threading
import time

from conftest import wait_for
from test_postgres import HELPERS, RULES_RW, agent_py, policy


def app_backends(pg):
    """PIDs of the server processes logged in as the target's user."""
    out = pg.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'")
    return sorted(int(x) for x in out.split())


def session(enforcer, pg, body, params=None):
    """A raw session as the agent: `body` runs with `c` connected; its
    variables named in the final print are returned."""
    return agent_py(enforcer, f"""
    c = Conn("127.0.0.1", {pg.port}, params={params!r})
    out = {{"startup": [t.decode() for t, _ in c.startup], "params": c.params}}
    {body}
    print(json.dumps(out))
    """)


def test_idle_session_reused_and_reset(enforcer, pg, tmp):
    enforcer.start(policy(pg, tmp))
    one = session(enforcer, pg, """
    out["set"] = summary(c.send(Q("SET datestyle = 'SQL, DMY'")) or c.until_ready())
    out["show"] = summary(c.send(Q("SHOW datestyle")) or c.until_ready())
    c.close()
    """)
    assert one["show"][1] == "D:SQL, DMY", one
    # the agent is gone; its server process stays, idle, for the next one
    time.sleep(0.5)
    kept = app_backends(pg)
    assert len(kept) == 1, kept
    two = session(enforcer, pg, """
    out["show"] = summary(c.send(Q("SHOW datestyle")) or c.until_ready())
    out["masked"] = summary(c.send(Q("SELECT email, cc FROM customers WHERE id = 1")) or c.until_ready())
    out["bind"] = summary(c.send(B("", "s1") + S) or c.until_ready())
    c.close()
    """)
    assert app_backends(pg) == kept, "the second session must run in the kept server process"
    # what a new session shows: AuthenticationOk, parameters, our key, ready
    assert two["startup"][0] == "R" and two["startup"][-1] == "Z" and "K" in two["startup"], two
    assert two["params"] == one["params"], (two["params"], one["params"])
    # DISCARD ALL ran: the setting is back to the startup value
    assert two["show"][1] == "D:ISO, MDY", two
    # the masked columns are still masked (the catalog was read again)
    assert two["masked"][1] == "D:****|****", two
    assert any(x.startswith("E:") for x in two["bind"]), two
    opens = [e for e in enforcer.events() if e.get("class_uid") == 4001 and e["activity_name"] == "Open"]
    assert len(opens) == 2, opens
    assert "upstream_reused" not in opens[0]["unmapped"]["postgres"]
    assert opens[1]["unmapped"]["postgres"]["upstream_reused"] is True, opens[1]


def test_not_reused_after_open_transaction_or_abrupt_close(enforcer, pg, tmp):
    """A session left inside a transaction, or without Terminate, is ended:
    the server rolls back, and the next agent gets a new server process."""
    enforcer.start(policy(pg, tmp, rules=[{"target": "shop", "allow": {
        "statements": ["select", "update"], "tables": ["public.customers", "public.orders"]}}]))
    session(enforcer, pg, """
    c.send(Q("BEGIN")); c.until_ready()
    c.send(Q("UPDATE orders SET total = 999 WHERE id = 1")); c.until_ready()
    c.close()
    """)
    assert wait_for(lambda: app_backends(pg) == [], 10), app_backends(pg)
    assert pg.sql("SELECT total FROM orders WHERE id = 1") != "999"
    session(enforcer, pg, """
    c.send(Q("SELECT 1")); c.until_ready()
    c.s.close()
    """)
    assert wait_for(lambda: app_backends(pg) == [], 10), app_backends(pg)
    # for comparison: the same with Terminate is kept
    session(enforcer, pg, """
    c.send(Q("SELECT 1")); c.until_ready()
    c.close()
    """)
    time.sleep(0.5)
    assert len(app_backends(pg)) == 1


def test_killed_idle_session_not_handed_out(enforcer, pg, tmp):
    """The server ends a kept session (pg_terminate_backend, an idle timeout):
    the next agent connects to a new one as if nothing was kept."""
    enforcer.start(policy(pg, tmp))
    session(enforcer, pg, 'c.send(Q("SELECT id FROM orders WHERE id = 1")); c.until_ready(); c.close()')
    time.sleep(0.5)
    (old,) = app_backends(pg)
    pg.sql(f"SELECT pg_terminate_backend({old})")
    assert wait_for(lambda: old not in app_backends(pg), 10)
    res = session(enforcer, pg, """
    out["q"] = summary(c.send(Q("SELECT id FROM orders WHERE id = 1")) or c.until_ready())
    c.close()
    """)
    assert res["q"][-2:] == ["C:SELECT 1", "ZI"], res
    assert len(app_backends(pg)) == 1 and old not in app_backends(pg)


def test_different_startup_gets_its_own_session(enforcer, pg, tmp):
    """Sessions are kept per agent, target and startup packet: another
    application_name is another session, and both are kept."""
    enforcer.start(policy(pg, tmp))
    session(enforcer, pg, 'c.close()', params={"application_name": "first"})
    time.sleep(0.3)
    first = app_backends(pg)
    res = session(enforcer, pg, """
    out["app"] = summary(c.send(Q("SHOW application_name")) or c.until_ready())
    c.close()
    """, params={"application_name": "second"})
    assert res["app"][1] == "D:second", res
    time.sleep(0.3)
    both = app_backends(pg)
    assert len(both) == 2 and set(first) < set(both), (first, both)
    res = session(enforcer, pg, """
    out["app"] = summary(c.send(Q("SHOW application_name")) or c.until_ready())
    c.close()
    """, params={"application_name": "first"})
    assert res["app"][1] == "D:first", res
    assert app_backends(pg) == both


def test_cancel_in_reused_session(enforcer, pg, tmp):
    """The key the agent gets in a reused session cancels that session's
    query (the kept session's own server key behind it)."""
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    session(enforcer, pg, 'c.close()')
    time.sleep(0.3)
    (kept,) = app_backends(pg)
    res = agent_py(enforcer, f"""
    import psycopg2, threading
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True   # else the cancelled query leaves a failed transaction: not kept
    out = {{}}
    def go():
        try:
            c.cursor().execute("SELECT count(*) FROM big a CROSS JOIN big b")
            out["q"] = "finished"
        except psycopg2.Error as e:
            out["q"] = e.pgcode
    t = threading.Thread(target=go); t.start()
    time.sleep(1.0)
    c.cancel()
    t.join(30)
    c.close()
    print(json.dumps(out))
    """)
    assert res["q"] == "57014", res      # query_canceled
    time.sleep(0.3)
    assert app_backends(pg) == [kept], "the cancelled session is idle again: kept"
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e["activity_name"] == "Open"
                             and e["unmapped"]["postgres"].get("upstream_reused"))
    assert ev, "the psycopg2 session must have reused the kept one"


def test_server_silent_on_reset_ends_the_connection(enforcer, pg, tmp):
    """A server that does not answer DISCARD ALL (here: its process stopped)
    costs one connection for 5 s, then the connection ends, audited, and
    nothing is kept."""
    enforcer.start(policy(pg, tmp))
    ready, go = os.path.join(tmp, "ready"), os.path.join(tmp, "go")
    box = {}

    def agent():
        box["res"] = session(enforcer, pg, f"""
    import os
    c.send(Q("SELECT id FROM orders WHERE id = 1")); c.until_ready()
    open({ready!r}, "w").close()
    while not os.path.exists({go!r}):
        time.sleep(0.05)
    c.close()
    """)

    t = threading.Thread(target=agent)
    t.start()
    assert wait_for(lambda: os.path.exists(ready), 30)
    (pid,) = app_backends(pg)
    os.kill(pid, signal.SIGSTOP)
    try:
        open(go, "w").close()
        t.join(30)
        ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e["activity_name"] == "Close"
                                 and "DISCARD ALL in time" in json.dumps(e), timeout=15)
        assert ev, [e for e in enforcer.events() if e.get("class_uid") == 4001]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: app_backends(pg) == [], 10), app_backends(pg)


def test_reused_session_outlives_decision_deadline(enforcer, pg, tmp):
    """(Found in review.) A reused session is decided: the 10 s deadline an
    accepted connection has until its upstream is up must not end it (2 s
    here, through its test knob)."""
    enforcer.start(policy(pg, tmp), env={"AGENTGATE_DECISION_MS": "2000"})
    session(enforcer, pg, 'c.send(Q("SELECT 1")); c.until_ready(); c.close()')
    time.sleep(0.5)
    assert len(app_backends(pg)) == 1
    res = session(enforcer, pg, """
    out["first"] = summary(c.send(Q("SELECT 1")) or c.until_ready())
    time.sleep(3)
    try:
        out["late"] = summary(c.send(Q("SELECT 2")) or c.until_ready())
    except OSError as e:
        out["late"] = ["OSError: " + str(e)]
    c.close()
    """)
    assert res["first"][-1] == "ZI", res
    assert res["late"][-2:] == ["C:SELECT 1", "ZI"], res


def test_reused_session_start_is_on_the_start_clock(enforcer, pg, tmp):
    """A reused session's own start (our catalog read on the kept server
    session) is on the session-start clock, not the accept-time decision
    deadline: a server slower than that deadline (its backend stopped for 3
    s here, against a 2 s deadline) does not end it. Fails without the
    deadline clear in conn_adopt_upstream()."""
    enforcer.start(policy(pg, tmp), env={"AGENTGATE_DECISION_MS": "2000"})
    session(enforcer, pg, 'c.send(Q("SELECT 1")); c.until_ready(); c.close()')
    assert wait_for(lambda: len(app_backends(pg)) == 1, 5)
    (pid,) = app_backends(pg)
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(3.0, os.kill, (pid, signal.SIGCONT))
    resume.start()
    try:
        t0 = time.monotonic()
        res = session(enforcer, pg, 'out["r"] = summary(c.send(Q("SELECT 2")) or c.until_ready()); c.close()')
        took = time.monotonic() - t0
    finally:
        resume.cancel()
        os.kill(pid, signal.SIGCONT)
    assert res["r"][-2:] == ["C:SELECT 1", "ZI"], res
    assert took >= 2.5, took   # it did wait for the stopped backend
    assert app_backends(pg) == [pid] or wait_for(lambda: pid in app_backends(pg), 5)


def test_unsynced_extended_batch_not_kept(enforcer, pg, tmp):
    """Terminate after Parse/Bind/Execute/Flush without Sync: the server may
    hold an implicit transaction; the session is ended, not kept."""
    enforcer.start(policy(pg, tmp))
    res = session(enforcer, pg, """
    c.send(P("", "SELECT id FROM orders WHERE id = 1") + B("", "") + E("") + H)
    got = []
    while not got or got[-1] != "C:SELECT 1":
        got += summary([c.read()])
    out["got"] = got
    c.close()
    """)
    assert res["got"][-1] == "C:SELECT 1", res
    assert wait_for(lambda: app_backends(pg) == [], 10), app_backends(pg)


def test_cidr_target_never_reuses_another_address(enforcer, pg, tmp):
    """(Found in review.) A CIDR target is dialled at the agent's own
    destination: a session kept from 127.0.0.2 is not handed to a
    connection to 127.0.0.1."""
    pg.listen_on(["127.0.0.1", "127.0.0.2"])
    doc = policy(pg, tmp).replace(f'"127.0.0.1:{pg.port}"', f'"127.0.0.0/8:{pg.port}"')
    assert "127.0.0.0/8" in doc
    enforcer.start(doc)
    for host in ("127.0.0.2", "127.0.0.1", "127.0.0.2"):
        res = agent_py(enforcer, f"""
        c = Conn({host!r}, {pg.port})
        out = {{"q": summary(c.send(Q("SELECT 1")) or c.until_ready())}}
        c.close()
        print(json.dumps(out))
        """)
        assert res["q"][-1] == "ZI", res
        time.sleep(0.3)
    opens = [e for e in enforcer.events() if e.get("class_uid") == 4001 and e["activity_name"] == "Open"]
    reused = [bool(e["unmapped"]["postgres"].get("upstream_reused")) for e in opens]
    assert reused == [False, False, True], reused
    assert len(app_backends(pg)) == 2


def _two_agents(pg, tmp, limit):
    """policy() with the agent's connection limit set to `limit`, and a
    second agent, t-pg2, under the same role."""
    lines = []
    for line in policy(pg, tmp).splitlines():
        key, _, val = line.partition(": ")
        if key == "agents":
            agents = json.loads(val)
            agents[0]["limits"]["connections"] = limit
            agents.append({"name": "t-pg2", "limits": {"connections": 64}})
            line = "agents: " + json.dumps(agents)
        elif key == "bindings":
            b = json.loads(val)
            b[0]["agents"].append("t-pg2")
            line = "bindings: " + json.dumps(b)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _churn(enforcer, pg, n, agent=None):
    """n sessions, each with its own application_name (its own pool key),
    each ended with Terminate while idle: each is reset and kept."""
    # a connection still ending (its reset on the way) counts against a
    # small limit for a moment: such a refusal is retried
    code = f"""
    for i in range({n}):
        for attempt in range(50):
            try:
                c = Conn("127.0.0.1", {pg.port}, params={{"application_name": "churn%d" % i}})
                break
            except (ConnectionResetError, ConnectionRefusedError):
                time.sleep(0.1)
        c.send(Q("SELECT 1")); c.until_ready()
        c.close()
    print(json.dumps({{"ok": True}}))
    """
    if agent is None:
        return agent_py(enforcer, code)
    prelude = f"import sys, json, struct, socket, time\nsys.path.insert(0, {HELPERS!r})\nfrom pgraw import *\n"
    r = enforcer.py(agent, prelude + textwrap.dedent(code), timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr + enforcer.read_log()


def test_kept_sessions_within_the_agents_connection_limit(enforcer, pg, tmp):
    """Kept server sessions are not connections of the agent, so they would
    escape limits.connections: an agent limited to 2 connections that ends
    8 sessions with 8 different startup packets keeps at most 2 server
    processes, its own oldest making room (review, stop 34: it kept 8, up to
    the pool's 16, a server process each)."""
    enforcer.start(_two_agents(pg, tmp, 2))
    _churn(enforcer, pg, 8)
    time.sleep(0.5)
    assert len(app_backends(pg)) == 2, app_backends(pg)


def test_one_agents_churn_keeps_anothers_session(enforcer, pg, tmp):
    """The pool holds 16 sessions for all agents. One agent ending 20
    sessions with 20 startup packets pushes out its own oldest, not the
    session another agent kept: that agent's next connection reuses it
    (review, stop 34: oldest-first eviction gave the churning agent all 16)."""
    enforcer.start(_two_agents(pg, tmp, 64))
    _churn(enforcer, pg, 1, agent="t-pg2")
    time.sleep(0.3)
    (other,) = app_backends(pg)
    _churn(enforcer, pg, 20)
    time.sleep(0.5)
    kept = app_backends(pg)
    assert len(kept) == 16 and other in kept, (other, kept)
    _churn(enforcer, pg, 1, agent="t-pg2")
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e["activity_name"] == "Open"
                             and e["unmapped"].get("agent", {}).get("name") == "t-pg2"
                             and e["unmapped"]["postgres"].get("upstream_reused"))
    assert ev, "t-pg2's second session must reuse the session it kept"
