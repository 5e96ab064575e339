# SPDX-License-Identifier: Apache-2.0
"""The postgres module against a real PostgreSQL 15, with real clients (psql,
psycopg2, pgbench, libpq sslmode=require) placed in an agent cgroup and sent
through the kernel redirect. Every case of ../shared/cases/sql.txt checks the
verdict the agent sees AND the database afterwards."""
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import PY, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
from pg import Postgres, pg_gid, pg_uid  # noqa: E402

AGENT = "t-pg"
HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")


@pytest.fixture
def pg(tmp):
    os.chmod(tmp, 0o755)
    p = Postgres(tmp, ssl=True)
    yield p
    p.stop(immediate=True)


RULES_RO = [{"target": "shop",
             "allow": {"statements": ["select"], "tables": ["public.customers", "public.orders"]},
             "mask": {"columns": ["public.customers.email", "public.customers.cc"]}}]


def policy(pg, tmp, tls="disable", ca=None, mode="enforce", rules=None, user="app", pwfile=None,
           upstream=None):
    """The policy of ../shared/cases/sql.txt (agent_ro) for target 'shop', as YAML whose
    values are JSON (flow style)."""
    if pwfile is None:
        pwfile = os.path.join(tmp, "pw")
        with open(pwfile, "w") as f:
            f.write("app-secret-pw\n" if user == "app" else "md5-secret-pw\n")
        os.chmod(pwfile, 0o600)
    up = {"user": user, "password_file": pwfile, "database": "shop", "tls": tls}
    if ca:
        up["ca_file"] = ca
    up.update(upstream or {})
    doc = {
        "agents": [{"name": AGENT, "limits": {"connections": 64}}],
        "targets": [{"name": "shop", "protocol": "postgres", "address": f"127.0.0.1:{pg.port}",
                     "upstream": up}],
        "roles": [{"name": "ro", "rules": RULES_RO if rules is None else rules}],
        "bindings": [{"role": "ro", "agents": [AGENT]}],
    }
    return f"version: 1\nmode: {mode}\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in doc.items())


def psql(enforcer, pg, sql, extra=(), env=None, db="shop", user="agent_ro"):
    """psql as the agent through the kernel redirect; returns (rc, stdout, stderr)."""
    argv = ["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(pg.port), "-U", user, "-d", db,
            "-v", "ON_ERROR_STOP=1", *extra, "-c", sql]
    r = enforcer.exec(AGENT, ["env", "PGCONNECT_TIMEOUT=10", *[f"{k}={v}" for k, v in (env or {}).items()], *argv],
                      timeout=60)
    return r.returncode, r.stdout, r.stderr



def agent_py(enforcer, code, timeout=90):
    """Runs Python as the agent (its cgroup, the kernel redirect); returns the
    JSON its last output line holds."""
    prelude = f"import sys, json, struct, socket, time\nsys.path.insert(0, {HELPERS!r})\nfrom pgraw import *\n"
    r = enforcer.py(AGENT, prelude + textwrap.dedent(code), timeout=timeout)
    assert r.returncode == 0 and r.stdout.strip(), f"agent failed: {r.stdout}\n{r.stderr}\n" + enforcer.read_log()
    return json.loads(r.stdout.strip().splitlines()[-1])


def stmt_events(enforcer):
    return [e for e in enforcer.events() if e.get("class_uid") == 6005]


def denied(res):
    return res[0] == "err" and res[1] == "42501" and "agentgate: denied" in res[2]


# ../shared/cases/sql.txt, S-cases: (id, expect, SQL). ALLOW+MASK rows are
# checked for "****" in the masked columns. {tmp} is the test's directory.
CASES = [
    ("S01", "MASK", "SELECT id, email, cc FROM customers WHERE id = 1"),
    ("S03", "DENY", "SELECT * FROM customers; DELETE FROM orders"),
    ("S05", "DENY", "WITH r AS (SELECT 1), u AS (UPDATE orders SET total = 0 RETURNING 1) SELECT * FROM r"),
    ("S07", "DENY", "SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED"),
    ("S09", "DENY", "SELECT * INTO TEMP stolen FROM customers"),
    ("S11", "DENY", "CREATE MATERIALIZED VIEW mv AS SELECT * FROM customers"),
    ("S13", "DENY", "COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT binary)"),
    ("S15", "DENY", "COPY customers TO PROGRAM 'touch {tmp}/pwned'"),
    ("S17", "DENY", "COPY customers TO '{tmp}/x.csv'"),
    ("S19", "DENY", "DO $$ BEGIN EXECUTE 'DEL' || 'ETE FROM orders'; END $$"),
    ("S21", "DENY", "SELECT pg_read_file('/etc/passwd')"),
    ("S23", "DENY", "SELECT * FROM pg_ls_dir('.')"),
    ("S25", "DENY", "SELECT lo_import('/etc/passwd')"),
    ("S27", "DENY", "SELECT * FROM dblink('host=127.0.0.1 dbname=x', 'DELETE FROM orders') AS t(x text)"),
    ("S29", "DENY", "SELECT set_config('standard_conforming_strings', 'off', false)"),
    ("S31", "DENY", "SELECT set_config('application_name', (SELECT cc FROM customers LIMIT 1), false)"),
    ("S33", "DENY", "SELECT setval('orders_id_seq', 1)"),
    ("S35", "DENY", "SELECT query_to_xml('SELECT cc FROM secrets', true, false, '')"),
    ("S37", "DENY", "SELECT query_to_xml('SELECT harmless_looking()', true, false, '')"),
    ("S39", "DENY", "SELECT * FROM orders WHERE id = harmless_looking()"),
    ("S41", "DENY", "EXECUTE p(1)"),
    ("S43", "DENY", "FETCH ALL FROM c"),
    ("S45", "DENY", "SET SESSION AUTHORIZATION postgres"),
    ("S47", "DENY", "SET standard_conforming_strings = off"),
    ("S49", "DENY", "SET default_transaction_read_only = off"),
    ("S51", "DENY", "RESET ALL"),
    ("S53", "DENY", "EXPLAIN DELETE FROM orders"),
    ("S55", "DENY", "EXPLAIN (ANALYZE, FORMAT JSON) WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d"),
    ("S57", "DENY", "NOTIFY ch, 'payload'"),
    ("S59", "DENY", "VACUUM FULL orders"),
    ("S61", "DENY", "CALL do_something(1)"),
    ("S63", "DENY", "TRUNCATE orders"),
    ("S65", "DENY", "INSERT INTO orders SELECT * FROM orders"),
    ("S67", "DENY", "/* SELECT */ DELETE FROM orders"),
    ("S69", "ALLOW", "SELECT $q$; DELETE FROM orders; $q$"),
    ("S71", "MASK", 'SELECT * FROM "public"."customers"'),
    ("S73", "DENY", 'SELECT * FROM "Customers"'),
    ("S75", "DENY", "SELECT * FROM U&\"!0073ecrets\" UESCAPE '!'"),
    ("S77", "DENY", "SELECT id FROM customers UNION ALL SELECT id FROM secrets"),
    ("S79", "DENY", "SELECT * FROM customers WHERE id IN (SELECT id FROM secrets)"),
    ("S81", "DENY", "VALUES ((SELECT cc FROM secrets LIMIT 1))"),
    ("S83", "DENY", "SELECT * FROM pg_catalog.pg_authid"),
    ("S85", "MASK", "SELECT * FROM ONLY customers"),
    ("S87", "MASK", "SELECT cc AS x FROM customers"),
    ("S89", "DENY", "SELECT row_to_json(c) FROM customers c"),
    ("S91", "DENY", "SELECT cc::int FROM customers"),
    ("S93", "MASK", "SELECT * FROM customers AS secrets"),
    ("S95", "DENY", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM orders RETURNING 1'"),
    ("S97", "DENY", "GRANT ALL ON orders TO public"),
    ("S99", "DENY", "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a int PATH '$'))"),
]

RUN_CASES = r"""
import psycopg2
res = {}
for cid, sql in CASES:
    c = None
    try:
        c = psycopg2.connect(host="127.0.0.1", port=PORT, user="agent_ro", dbname="shop", connect_timeout=10)
        c.autocommit = True
        cur = c.cursor()
        cur.execute(sql)
        rows = cur.fetchall() if cur.description else []
        after = {}
        for name in ("standard_conforming_strings", "default_transaction_read_only", "session_authorization",
                     "search_path", "client_encoding"):
            after[name] = c.get_parameter_status(name)
        res[cid] = ["ok", [[str(v) for v in r] for r in rows][:5], after]
    except psycopg2.Error as e:
        res[cid] = ["err", e.pgcode, (e.pgerror or str(e)).strip()]
    finally:
        if c is not None:
            c.close()
print(json.dumps(res))
"""


def orders_state(pg):
    return pg.sql("SELECT count(*), sum(total) FROM orders")


def test_sql_cases_verdict_and_database_after(enforcer, pg, tmp):
    enforcer.start(policy(pg, tmp))
    before = orders_state(pg)
    cases = [(cid, sql.replace("{tmp}", tmp)) for cid, _, sql in CASES]
    res = agent_py(enforcer, f"CASES = {cases!r}\nPORT = {pg.port}\n" + RUN_CASES, timeout=180)
    bad = []
    for cid, expect, _ in CASES:
        r = res[cid]
        if expect == "DENY" and not denied(r):
            bad.append((cid, r))
        if expect == "ALLOW" and r[0] != "ok":
            bad.append((cid, r))
        if expect == "MASK":
            if r[0] != "ok" or not r[1]:
                bad.append((cid, r))
                continue
            # every email/cc value is masked; ids are not
            for row in r[1]:
                cells = [v for v in row if "@" in v or (v.isdigit() and len(v) > 12)]
                if cells:
                    bad.append((cid, r))
            if "****" not in json.dumps(r[1]):
                bad.append((cid, r))
    assert not bad, bad
    assert res["S01"][1] == [["1", "****", "****"]]
    assert res["S87"][1] == [["****"], ["****"]]
    # The database afterwards: nothing written, nothing created, no file, no program run.
    assert orders_state(pg) == before == "5|15"
    assert pg.sql("SELECT count(*) FROM customers") == "2"
    assert pg.sql("SELECT count(*) FROM pg_matviews WHERE matviewname = 'mv'") == "0"
    assert pg.sql("SELECT count(*) FROM pg_proc WHERE proname = 'f'") == "0"
    assert pg.sql("SELECT count(*) FROM pg_largeobject_metadata") == "0"
    assert pg.sql("SELECT last_value FROM orders_id_seq") == "5"
    assert pg.sql("SELECT has_table_privilege('public', 'orders', 'DELETE')") == "f"
    assert not os.path.exists(os.path.join(tmp, "x.csv"))
    assert not os.path.exists(os.path.join(tmp, "pwned"))
    # the settings never moved (what the server reported to the agent's own sessions)
    for cid in ("S01", "S69", "S71"):
        assert res[cid][2]["standard_conforming_strings"] == "on"
        assert res[cid][2]["client_encoding"] == "UTF8"
        assert res[cid][2]["session_authorization"] == "app"
    # one Datastore Activity event per statement, denials with the reason, never a value
    evs = wait_for(lambda: len(stmt_events(enforcer)) >= len(CASES) and stmt_events(enforcer), 5)
    assert evs, enforcer.events()
    dn = [e for e in evs if e["unmapped"]["verdict"] != "allow"]
    assert len(dn) >= sum(1 for c in CASES if c[1] == "DENY")
    ok = [e for e in evs if e["unmapped"]["verdict"] == "allow"]
    assert any(e["unmapped"]["statement"].get("masked_columns") == "public.customers.email,public.customers.cc"
               and e["unmapped"]["statement"]["rows"] == 1 for e in ok), ok
    blob = json.dumps(evs)
    assert "4111111111111111" not in blob and "alice@example.com" not in blob
    assert all(e["unmapped"]["agent"]["name"] == AGENT for e in evs)


def test_startup_lockdown(enforcer, pg, tmp):
    """D01, D03, D05 and the other startup parameters: refused, or replaced by the pinned value."""
    enforcer.start(policy(pg, tmp))
    res = agent_py(enforcer, f"""
    out = {{}}
    def attempt(name, **kw):
        try:
            c = Conn("127.0.0.1", {pg.port}, **kw)
        except OSError as e:
            out[name] = ["oserror", str(e)]
            return
        first_err = [summary([m])[0] for m in c.startup if m[0] == b"E"]
        if first_err or c.startup[-1][0] != b"Z":
            out[name] = ["refused", first_err]
            return
        c.send(Q("SELECT id FROM orders ORDER BY id LIMIT 1"))
        out[name] = ["ok", summary(c.until_ready()), c.params, c.key]
        c.close()
    attempt("D01", params={{"options": "-c standard_conforming_strings=off"}})
    attempt("D03", params={{"client_encoding": "SJIS"}})
    attempt("D05", user="agent_ro", database="agent_ro")
    attempt("otherdb", database="postgres")
    attempt("replication", params={{"replication": "database"}})
    attempt("search_path", params={{"search_path": "evil,public"}})
    attempt("role", params={{"role": "postgres"}})
    attempt("scs", params={{"standard_conforming_strings": "off"}})
    attempt("plain", params={{"application_name": "bot", "DateStyle": "ISO"}})
    print(json.dumps(out))
    """)
    for k in ("D01", "otherdb", "replication", "search_path", "role", "scs"):
        assert res[k][0] == "refused" and "42501" in res[k][1][0] and "agentgate: denied" in res[k][1][0], (k, res[k])
    # D03: the encoding the agent asked for is replaced by UTF8, and the server says so
    assert res["D03"][0] == "ok" and res["D03"][2]["client_encoding"] == "UTF8"
    # D05: libpq's default database (the user name) means the pinned one
    assert res["D05"][0] == "ok" and res["D05"][1][-2:] == ["C:SELECT 1", "ZI"]
    plain = res["plain"]
    assert plain[0] == "ok" and plain[2]["application_name"] == "bot"
    assert plain[2]["standard_conforming_strings"] == "on" and plain[2]["search_path" if "search_path" in plain[2] else "client_encoding"]
    # the cancel key is ours: not the backend's pid
    pids = pg.sql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity").split(",")
    assert str(plain[3][0]) not in pids
    refusals = [e for e in enforcer.events() if e.get("class_uid") == 4001 and e["activity_name"] == "Refuse"]
    assert any("options" in (e["unmapped"].get("reason") or json.dumps(e)) for e in refusals), refusals


def test_protocol_cases(enforcer, pg, tmp):
    """D07, D09, D11, D13, D15, D19, FunctionCall, and the extended protocol's error recovery."""
    enforcer.start(policy(pg, tmp))
    before = orders_state(pg)
    res = agent_py(enforcer, f"""
    out = {{}}
    def conn():
        return Conn("127.0.0.1", {pg.port})
    c = conn()
    # D07: bytes that are SJIS, not UTF-8
    c.send(msg(b"Q", b"SELECT E'\\x95\\x5c'; DELETE FROM orders WHERE id=1; --'\\0"))
    out["D07"] = summary(c.until_ready())
    # D09: set_config and the exploit in one write
    c.send(Q("SELECT set_config('standard_conforming_strings','off',false)") +
           Q("SELECT 'a\\\\'' ; DELETE FROM orders; --'"))
    out["D09"] = summary(c.until_ready(2))
    out["D09_scs"] = c.params.get("standard_conforming_strings")
    # D13: Bind to a statement the proxy never allowed, then the session goes on
    c.send(B("", "p_unknown") + E("") + S + Q("SELECT 1 FROM orders LIMIT 1"))
    out["D13"] = summary(c.until_ready(2))
    # D15: binary result format for cc
    c.send(P("", "SELECT cc FROM customers ORDER BY id") + B("", "", result_formats=[1]) + D(b"P", "") + E("") + S)
    out["D15"] = summary(c.until_ready())
    # FunctionCall (pg_read_file, OID 3826): never reaches the server
    c.send(F(3826, ["/etc/passwd"]))
    out["F"] = summary(c.until_ready())
    # extended protocol: a denied Parse skips its Bind/Execute, the next Sync recovers
    c.send(P("s1", "DELETE FROM orders") + B("", "s1") + E("") + S +
           P("s2", "SELECT id FROM orders ORDER BY id") + B("", "s2") + E("", 2) + S)
    out["ext"] = summary(c.until_ready(2))
    # the denied name was never created; the allowed one was
    c.send(B("", "s1") + E("") + S + B("", "s2") + E("", 1) + S)
    out["ext2"] = summary(c.until_ready(2))
    # a server-side error in a pipeline: the rest until Sync is skipped, the table stays right
    c.send(P("s3", "SELECT nosuchcolumn FROM orders") + B("", "s3") + E("") + P("s4", "SELECT 1 FROM orders LIMIT 1") + S +
           P("s4", "SELECT 2 FROM orders LIMIT 1") + B("", "s4") + E("") + S)
    out["ext3"] = summary(c.until_ready(2))
    # a duplicate statement name is the server's to refuse, and the old one is kept
    c.send(P("s2", "SELECT 3") + S + B("", "s2") + E("", 1) + S)
    out["dup"] = summary(c.until_ready(2))
    c.close()
    # D11: bytes after the Query's NUL
    c = conn()
    c.send(msg(b"Q", b"SELECT 1\\0DELETE FROM orders\\0"))
    out["D11"] = summary(c.until_ready())
    c.s.close()
    # D19: a huge announced length
    c = conn()
    c.send(b"Q" + struct.pack("!I", 0x7FFFFFF0) + b"SELECT 1")
    out["D19"] = summary(c.until_ready()) + summary([c.read()])
    c.s.close()
    print(json.dumps(out))
    """)
    dn = lambda s: s.startswith("E:42501:agentgate: denied")  # noqa: E731
    assert dn(res["D07"][0]) and res["D07"][-1] == "ZI", res["D07"]
    assert dn(res["D09"][0]), res["D09"]
    assert res["D09_scs"] == "on"
    assert dn(res["D13"][0]) and res["D13"][1] == "ZI" and res["D13"][-2:] == ["C:SELECT 1", "ZI"], res["D13"]
    assert res["D15"] == ["1", "2", "T", "D:****", "D:****", "C:SELECT 2", "ZI"], res["D15"]
    assert dn(res["F"][0]) and res["F"][-1] == "ZI", res["F"]
    assert dn(res["ext"][0]) and res["ext"][1] == "ZI", res["ext"]
    assert res["ext"][2:] == ["1", "2", "D:1", "D:2", "s", "ZI"], res["ext"]
    assert dn(res["ext2"][0]) and res["ext2"][1:] == ["ZI", "2", "D:1", "s", "ZI"], res["ext2"]
    assert res["ext3"][0].startswith("E:42703:") and res["ext3"][1] == "ZI", res["ext3"]
    assert res["ext3"][2:] == ["1", "2", "D:2", "C:SELECT 1", "ZI"], res["ext3"]
    assert res["dup"][0].startswith("E:42P05:"), res["dup"]
    assert res["dup"][1:] == ["ZI", "2", "D:1", "s", "ZI"], res["dup"]
    assert res["D11"][0].startswith("E:08P01:") and res["D11"][-1] == "EOF", res["D11"]
    assert res["D19"] == ["E:54000:agentgate: message too large", "ZI", "EOF"], res["D19"]
    assert orders_state(pg) == before


def test_cache_siblings_judged_apart(enforcer, pg, tmp):
    """The verdict cache's constant-blind key (PostgreSQL's own lexer, constant values left out).
    On one session (one worker, one cache) an allowed statement is followed by texts that differ
    from it in a name, a comment's end, a quote or a UESCAPE: each is judged on its own. A text that
    differs only in a constant but fails a grammar check on its value (float(0)) gets its sibling's
    verdict, reaches the server and is refused there as a syntax error (the safety argument in
    pg_classify.c), and nothing changes on the server."""
    enforcer.start(policy(pg, tmp))
    before = orders_state(pg)
    res = agent_py(enforcer, f"""
    out = {{}}
    c = Conn("127.0.0.1", {pg.port})
    def q(k, sql):
        c.send(Q(sql))
        out[k] = summary(c.until_ready())
    q("a1", "SELECT id FROM orders WHERE id = 1")
    q("a2", "SELECT id FROM orders WHERE id = 2")
    q("b1", "SELECT id FROM secrets WHERE id = 1")
    q("b2", 'SELECT id FROM "Orders" WHERE id = 1')
    q("c1", "SELECT id FROM orders WHERE id = 1 /* ; DELETE FROM orders */")
    q("c2", "SELECT id FROM orders WHERE id = 1 -- ; DELETE FROM orders")
    q("c3", "SELECT id FROM orders WHERE id = 1 --\\n; DELETE FROM orders")
    q("d1", "SELECT id FROM U&\\"!006Frders\\" UESCAPE '!' WHERE id = 1")
    q("d2", "SELECT id FROM U&\\"!006Frders\\" UESCAPE '#' WHERE id = 1")
    q("d3", "SELECT id FROM U&\\"!0073ecrets\\" UESCAPE '!' WHERE id = 1")
    q("e1", "SELECT $q$; DELETE FROM orders; $q$")
    q("e2", "SELECT 'q'; DELETE FROM orders; SELECT 'q'")
    q("e3", "SELECT E'\\\\''; DELETE FROM orders; --'")
    q("f1", "SELECT 1::float(9) FROM orders WHERE id = 1")
    q("f2", "SELECT 1::float(0) FROM orders WHERE id = 1")
    q("g1", "SELECT id, cc FROM customers ORDER BY 1")
    q("g2", "SELECT id, cc FROM customers ORDER BY 2")
    q("h1", "SELECT lower('x') FROM orders WHERE id = 1")
    q("h2", "SELECT pg_read_file('x') FROM orders WHERE id = 1")
    print(json.dumps(out))
    """)
    # denied: the error ends the answer (the statements before a denied one of
    # the text ran, as PostgreSQL runs them: c3, e2)
    dn = lambda s: s[-2].startswith("E:42501:agentgate: denied") and s[-1] == "ZI"  # noqa: E731
    ok = lambda s: s[0] == "T" and s[-2].startswith("C:SELECT") and s[-1] == "ZI"  # noqa: E731
    for k in ("a1", "a2", "c1", "c2", "d1", "e1", "f1", "g1", "h1"):
        assert ok(res[k]), (k, res[k])
    for k in ("b1", "b2", "c3", "d2", "d3", "e2", "e3", "g2", "h2"):
        assert dn(res[k]), (k, res[k])
    # the server's grammar (gram.y, opt_float) refuses it: nothing of the text ran
    assert res["f2"][0].startswith("E:22023:precision for type float"), res["f2"]
    assert res["f2"][-1] == "ZI", res["f2"]
    assert orders_state(pg) == before


RULES_RW = [{"target": "shop",
             "allow": {"statements": ["select", "insert", "copy"],
                       "tables": ["public.customers", "public.orders", "public.big", "public.notes",
                                  "public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers",
                                  "public.pgbench_history"]},
             "mask": {"columns": ["public.customers.email", "public.customers.cc"],
                      "detectors": ["credit_card", "email"]}}]


def test_denial_in_transaction_keeps_server_state(enforcer, pg, tmp):
    """A denied statement inside BEGIN leaves the transaction failed, as PostgreSQL would:
    the agent's COMMIT rolls back, and the insert before the denial is gone."""
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = agent_py(enforcer, f"""
    import psycopg2
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    cur = c.cursor()
    out = {{}}
    cur.execute("INSERT INTO orders (customer_id, total) VALUES (9, 900)")
    try:
        cur.execute("DELETE FROM orders")
        out["delete"] = "ran"
    except psycopg2.Error as e:
        out["delete"] = [e.pgcode, e.pgerror]
    try:
        cur.execute("SELECT 1 FROM orders LIMIT 1")
        out["after"] = "ran"
    except psycopg2.Error as e:
        out["after"] = e.pgcode
    c.rollback()
    # and the same in one simple-protocol string: nothing of it runs
    try:
        cur.execute("INSERT INTO orders (customer_id, total) VALUES (8, 800); DELETE FROM orders")
    except psycopg2.Error as e:
        out["multi"] = e.pgcode
    c.rollback()
    # explicit transaction with COMMIT after the denial
    c.autocommit = True
    cur.execute("BEGIN")
    cur.execute("INSERT INTO orders (customer_id, total) VALUES (7, 700)")
    try:
        cur.execute("TRUNCATE orders")
    except psycopg2.Error as e:
        out["truncate"] = e.pgcode
    cur.execute("COMMIT")
    out["commit"] = cur.statusmessage
    print(json.dumps(out))
    """)
    assert res["delete"][0] == "42501" and "agentgate: denied" in res["delete"][1]
    assert res["after"] == "25P02"          # current transaction is aborted
    assert res["multi"] == "42501"
    assert res["truncate"] == "42501"
    assert res["commit"] == "ROLLBACK"      # the server's own answer
    assert pg.sql("SELECT count(*) FROM orders WHERE customer_id IN (7, 8, 9)") == "0"
    assert orders_state(pg) == "5|15"


def test_cancel_with_enforcer_key(enforcer, pg, tmp):
    """D17: the agent cancels with the key we issued; a forged key does nothing."""
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = agent_py(enforcer, f"""
    import psycopg2, threading
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    out = {{}}
    def go():
        try:
            c.cursor().execute("SELECT count(*) FROM big a CROSS JOIN big b")
            out["q"] = "finished"
        except psycopg2.Error as e:
            out["q"] = e.pgcode
    raw = Conn("127.0.0.1", {pg.port})
    t = threading.Thread(target=go); t.start()
    time.sleep(1.0)
    cancel("127.0.0.1", {pg.port}, raw.key[0], raw.key[1] ^ 1)   # wrong key: nothing
    cancel("127.0.0.1", {pg.port}, c.get_backend_pid(), 12345)    # the key of no session
    time.sleep(1.0)
    out["still"] = t.is_alive()
    c.cancel()                                                     # libpq, our key
    t.join(30)
    out["pid"] = c.get_backend_pid()
    raw.close()
    print(json.dumps(out))
    """)
    assert res["still"] is True
    assert res["q"] == "57014", res      # query_canceled
    assert pg.sql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {res['pid']}") == "0"


def test_pgbench_extended_prepared_and_pipeline(enforcer, pg, tmp):
    """Real pgbench through the enforcer: simple, extended, prepared, and a pipeline of
    extended-protocol batches (many messages in one write)."""
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", pg.sock, "-p", str(pg.port), "-U", "postgres", "shop"],
                   check=True, capture_output=True)
    pg.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app")
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    script = os.path.join(tmp, "pipe.sql")
    with open(script, "w") as f:
        f.write("\\set aid random(1, 100000)\n\\startpipeline\n")
        for _ in range(10):
            f.write("SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")
        f.write("\\endpipeline\n")
    for mode in ("simple", "extended", "prepared"):
        r = enforcer.exec(AGENT, ["pgbench", "-n", "-S", "-M", mode, "-t", "200", "-c", "2", "-h", "127.0.0.1",
                                  "-p", str(pg.port), "-U", "agent_ro", "shop"], timeout=120)
        assert r.returncode == 0 and "number of failed transactions: 0" in r.stdout, (mode, r.stdout, r.stderr)
    r = enforcer.exec(AGENT, ["pgbench", "-n", "-M", "extended", "-f", script, "-t", "50", "-c", "2", "-h",
                              "127.0.0.1", "-p", str(pg.port), "-U", "agent_ro", "shop"], timeout=120)
    assert r.returncode == 0 and "number of failed transactions: 0" in r.stdout, (r.stdout, r.stderr)
    # a write pgbench's default script needs is denied (UPDATE is not in the rule)
    r = enforcer.exec(AGENT, ["pgbench", "-n", "-t", "1", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "agent_ro",
                              "shop"], timeout=60)
    assert r.returncode != 0 and "agentgate: denied" in r.stderr
    assert pg.sql("SELECT count(*) FROM pgbench_history") == "0"


def test_large_result_masking_and_copy(enforcer, pg, tmp):
    """120k rows with detectors, masked columns in binary and text, COPY allowed by rule
    (in and out), COPY of a table with masked columns denied, side channels masked."""
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = agent_py(enforcer, f"""
    import psycopg2, io
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    out = {{}}
    cur.execute("SELECT id, label, note FROM big ORDER BY id")
    rows = cur.fetchall()
    out["n"] = len(rows)
    out["notes"] = sorted(set(r[2] for r in rows))
    out["label5"] = rows[4][1]
    cur.execute("SELECT body FROM notes ORDER BY id")
    out["body"] = [r[0] for r in cur.fetchall()]
    buf = io.StringIO()
    cur.copy_expert("COPY orders TO STDOUT", buf)
    out["copy_out"] = len(buf.getvalue().splitlines())
    cur.copy_expert("COPY orders (customer_id, total) FROM STDIN", io.StringIO("3\\t30\\n4\\t40\\n"))
    out["copy_in"] = cur.rowcount
    try:
        cur.copy_expert("COPY customers TO STDOUT", io.StringIO())
        out["copy_masked"] = "ran"
    except psycopg2.Error as e:
        out["copy_masked"] = e.pgcode
    buf = io.StringIO()
    cur.copy_expert("COPY notes TO STDOUT", buf)
    out["copy_notes"] = buf.getvalue()
    # a value in an error message (a side channel) is masked by the detectors
    try:
        cur.execute("SELECT id FROM orders WHERE id = 'carol@example.net'")
        out["err"] = "ran"
    except psycopg2.Error as e:
        out["err"] = [e.pgcode, e.pgerror]
    # binary COPY cannot be scanned: refused (the session ends)
    try:
        cur.copy_expert("COPY notes TO STDOUT WITH (FORMAT binary)", io.BytesIO())
        out["copy_binary"] = "ran"
    except psycopg2.Error as e:
        out["copy_binary"] = [e.pgcode, str(e)]
    print(json.dumps(out))
    """, timeout=180)
    assert res["n"] == 120000
    assert res["notes"] == ["card ****", "plain"], res["notes"]
    assert res["label5"] == "row 5"
    assert res["body"] == ["mail me at **** please", "nothing here"]
    assert res["copy_out"] == 5
    assert res["copy_in"] == 2
    assert res["copy_masked"] == "42501"
    assert res["copy_notes"] == "1\tmail me at **** please\n2\tnothing here\n", res["copy_notes"]
    # refused: no row of it reaches the agent (the session ends with our FATAL error)
    assert res["copy_binary"][0] == "42501" and "binary COPY output cannot be masked" in res["copy_binary"][1], res

    # (the "LINE 1:" part psycopg2 adds is the agent's own query text, echoed client-side)
    first = res["err"][1].splitlines()[0]
    assert res["err"][0] == "22P02" and "****" in first and "carol@" not in first, res["err"]
    assert pg.sql("SELECT count(*) FROM orders") == "7"
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 6005 and e["unmapped"]["statement"].get("rows") == 120000)
    assert ev and ev["unmapped"]["statement"]["masked_values"] == 120


def fake_pg_server(port, rec, greet):
    """A fake PostgreSQL server on port: for each connection it runs greet
    (Python lines; c is the connection, data what is recorded), then appends
    data and everything else the client sends to the file rec."""
    code = textwrap.dedent(f"""
        import socket, struct
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", {port})); s.listen(8)
        while True:
            c, _ = s.accept()
            c.settimeout(2)
            data = b""
            try:
        GREET
                while True:
                    d = c.recv(4096)
                    if not d:
                        break
                    data += d
            except OSError:
                pass
            open({rec!r}, "ab").write(data)
            c.close()
        """)
    return subprocess.Popen([PY, "-c", code.replace("GREET\n", textwrap.indent(textwrap.dedent(greet).strip("\n"),
                                                                            " " * 8) + "\n")])


def test_upstream_down_and_tls_failures(enforcer, pg, tmp, servers):
    """A clear ErrorResponse when the upstream is down, when its certificate does not verify,
    and when it refuses TLS that the target requires; nothing is sent in plaintext."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    # a fake server that says 'N' to SSLRequest and records everything it receives
    rec = os.path.join(tmp, "plain.bin")
    fake_port = free_tcp_port()
    fake = fake_pg_server(fake_port, rec, """
        data = c.recv(8)
        c.sendall(b"N")
        """)
    try:
        import time as _t
        _t.sleep(0.3)
        pol = policy(pg, tmp, tls="verify-full", ca=pg.other_ca)
        pol = pol.replace("}]\nroles", "}]\nroles", 1)
        doc_extra = (f'targets: [{{"name": "shop", "protocol": "postgres", "address": "127.0.0.1:{pg.port}", '
                     f'"upstream": {{"user": "app", "password_file": "{tmp}/pw", "database": "shop", '
                     f'"tls": "verify-full", "ca_file": "{pg.other_ca}"}}}}, '
                     f'{{"name": "down", "protocol": "postgres", "address": "127.0.0.1:{dead_port}", '
                     f'"upstream": {{"user": "app", "password_file": "{tmp}/pw", "database": "shop"}}}}, '
                     f'{{"name": "plain", "protocol": "postgres", "address": "127.0.0.1:{fake_port}", '
                     f'"upstream": {{"user": "app", "password_file": "{tmp}/pw", "database": "shop", '
                     f'"tls": "require"}}}}]\n')
        lines = [doc_extra if l.startswith("targets:") else l for l in pol.splitlines(keepends=True)]
        rules = [dict(RULES_RO[0]), {"target": "down"}, {"target": "plain"}]
        lines = [f"roles: {json.dumps([{'name': 'ro', 'rules': rules}])}\n" if l.startswith("roles:") else l
                 for l in lines]
        enforcer.start("".join(lines))
        rc, out, err = psql(enforcer, pg, "SELECT 1 FROM orders LIMIT 1")
        assert rc != 0 and "agentgate: upstream TLS" in err and "certificate verify failed" in err, err
        r = enforcer.exec(AGENT, ["psql", "-X", "-h", "127.0.0.1", "-p", str(dead_port), "-U", "a", "-d", "shop",
                                  "-c", "SELECT 1"], timeout=30)
        assert r.returncode != 0 and "agentgate: upstream" in r.stderr and "unreachable" in r.stderr, r.stderr
        r = enforcer.exec(AGENT, ["psql", "-X", "-h", "127.0.0.1", "-p", str(fake_port), "-U", "a", "-d", "shop",
                                  "-c", "SELECT 1"], timeout=30)
        assert r.returncode != 0 and "does not accept TLS" in r.stderr, r.stderr
        _t.sleep(0.5)
        got = open(rec, "rb").read()
        # SSLRequests (libpq retries without TLS on the agent leg: one more
        # attempt) and nothing else
        ssl_req = struct.pack("!II", 8, 80877103)
        assert got and got == ssl_req * (len(got) // 8), got
    finally:
        fake.kill()
        fake.wait()


def test_tls_require_with_ca_file_checks_the_chain(enforcer, pg, tmp):
    """tls: require ignored ca_file: any certificate was taken. As libpq's sslmode=require
    with a root certificate file does (verify-ca), a ca_file now makes require check the
    server's chain against it, not its name: a server whose certificate another CA signed
    is refused, with the reason to the agent and in the log, before anything is sent; the
    right CA passes under a server_name the certificate does not carry."""
    enforcer.start(policy(pg, tmp, tls="require", ca=pg.other_ca, upstream={"server_name": "not-db.test"}))
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders WHERE id = 1")
    assert rc != 0 and "agentgate: upstream TLS" in err and "certificate verify failed" in err, (out, err)
    assert wait_for(lambda: "certificate verify failed" in enforcer.read_log(), 5), enforcer.read_log()
    assert "chain checked against ca_file" in enforcer.read_log(), enforcer.read_log()
    assert wait_for(lambda: "certificate verify failed" in json.dumps(enforcer.events()), 5), enforcer.events()
    enforcer.stop()
    enforcer.start(policy(pg, tmp, tls="require", ca=pg.ca, upstream={"server_name": "not-db.test"}))
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders WHERE id = 1")
    assert rc == 0 and out.strip() == "1", (out, err)


def test_tls_verify_full_name_only_from_a_dns_san(enforcer, pg, tmp):
    """verify-full took OpenSSL's default name check: a server certificate without a DNS SAN
    passed on the name in its subject's CN, and a partial wildcard (d*.corp.test) matched
    db.corp.test. Neither does since stop 67 (RFC 9525): the server gets certificates its
    own CA signs here, each loaded by a configuration reload; a DNS SAN passes."""
    certdir = os.path.join(tmp, "pgcerts")
    want = "db.corp.test"

    def serve(name, cn, san):
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=certdir)
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        with open(os.path.join(certdir, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext")
        for ext in ("crt", "key"):
            dst = os.path.join(certdir, f"server.{ext}")
            shutil.copy(os.path.join(certdir, f"{name}.{ext}"), dst)
            os.chown(dst, pg_uid(), pg_gid())
            os.chmod(dst, 0o600)
        pg.sql("SELECT pg_reload_conf()")
        time.sleep(0.5)
        r = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-connect", f"127.0.0.1:{pg.port}"],
                           input="", capture_output=True, text=True, timeout=20)
        assert f"CN = {cn}" in r.stdout or f"CN={cn}" in r.stdout, r.stdout[-2000:]

    enforcer.start(policy(pg, tmp, tls="verify-full", ca=pg.ca, upstream={"server_name": want}))
    for name, cn, san in [("cn-only", want, None), ("partial", "x", "DNS:d*.corp.test")]:
        serve(name, cn, san)
        rc, out, err = psql(enforcer, pg, "SELECT id FROM orders WHERE id = 1")
        assert rc != 0 and "certificate verify failed: hostname mismatch" in err, (name, out, err)
    serve("san", "x", f"DNS:{want}")
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders WHERE id = 1")
    assert rc == 0 and out.strip() == "1", (out, err)


# A fake server's greeting (fake_pg_server()): an SSLRequest is declined,
# then the StartupMessage is read.
NO_SSL_STARTUP = """
        n = struct.unpack("!I", c.recv(4))[0]
        first = c.recv(n - 4)
        if first[:4] == struct.pack("!I", 80877103):     # SSLRequest: no
            c.sendall(b"N")
            n = struct.unpack("!I", c.recv(4))[0]
            c.recv(n - 4)
"""


def test_cleartext_password_only_to_a_verified_server(enforcer, pg, tmp):
    """Found by review (stop 28): under tls disable or require, whoever answered
    the dial could ask for the password in clear (AuthenticationCleartextPassword)
    and got it. It is sent only to a server verified by tls: verify-full; any
    other gets nothing and the agent a 28000 error naming why."""
    rec = os.path.join(tmp, "asked.bin")
    fake_port = free_tcp_port()
    fake = fake_pg_server(fake_port, rec, NO_SSL_STARTUP + """
        c.sendall(b"R" + struct.pack("!II", 8, 3))      # the password, in clear
        """)
    try:
        time.sleep(0.3)
        pol = policy(pg, tmp).replace(f"127.0.0.1:{pg.port}", f"127.0.0.1:{fake_port}")
        enforcer.start(pol)
        r = enforcer.exec(AGENT, ["psql", "-X", "-h", "127.0.0.1", "-p", str(fake_port), "-U", "a", "-d", "shop",
                                  "-c", "SELECT 1"], timeout=30)
        assert r.returncode != 0 and "agentgate: upstream authentication" in r.stderr and \
            "verify-full" in r.stderr, r.stderr
        time.sleep(0.5)
        got = open(rec, "rb").read() if os.path.exists(rec) else b""
        assert b"app-secret-pw" not in got and not got.startswith(b"p"), got
    finally:
        fake.kill()
        fake.wait()


def memory_count(pid, needle):
    """Copies of needle in the writable memory of process pid (root reads
    /proc/PID/mem): heap, thread arenas, stacks."""
    n = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if not parts[1].startswith("rw") or (len(parts) > 5 and parts[5].startswith("[v")):
                continue
            try:
                mem.seek(lo)
                n += mem.read(hi - lo).count(needle)
            except OSError:
                pass
    return n


def test_password_answer_not_left_in_memory(enforcer, pg, tmp):
    """What authenticates the enforcer upstream (here an md5 answer, which
    any server asking md5 with the same salt accepts) went through two
    buffers that were freed or reused without being wiped: the session's
    output builder and the connection's output queue. After the session
    ended, no copy is left in the enforcer's memory (found by review)."""
    rec = os.path.join(tmp, "asked.bin")
    fake_port = free_tcp_port()
    salt = b"\x01\x02\x03\x04"
    fake = fake_pg_server(fake_port, rec, NO_SSL_STARTUP + """
        c.sendall(b"R" + struct.pack("!II", 12, 5) + b"\x01\x02\x03\x04")   # md5, this salt
        """)
    try:
        time.sleep(0.3)
        enforcer.start(policy(pg, tmp).replace(f"127.0.0.1:{pg.port}", f"127.0.0.1:{fake_port}"))
        for _ in range(3):
            enforcer.exec(AGENT, ["psql", "-X", "-h", "127.0.0.1", "-p", str(fake_port), "-U", "a", "-d", "shop",
                                  "-c", "SELECT 1"], timeout=30)
        inner = hashlib.md5(b"app-secret-pw" + b"app").hexdigest().encode()
        answer = b"md5" + hashlib.md5(inner + salt).hexdigest().encode()
        assert wait_for(lambda: os.path.exists(rec) and open(rec, "rb").read().count(answer) == 3, timeout=10), \
            open(rec, "rb").read() if os.path.exists(rec) else "nothing recorded"
        assert wait_for(lambda: enforcer.status()["agents"][0]["connections"] == 0, timeout=10)
        assert memory_count(enforcer.proc.p.pid, answer) == 0
        assert memory_count(enforcer.proc.p.pid, b"app-secret-pw") == 0
    finally:
        fake.kill()
        fake.wait()


def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_tls_both_legs_and_md5(enforcer, pg, tmp):
    """verify-full upstream with the right CA, an agent with sslmode=require (certificate
    from the local CA), and md5 authentication upstream."""
    enforcer.start(policy(pg, tmp, tls="verify-full", ca=pg.ca))
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders ORDER BY id LIMIT 1",
                        env={"PGSSLMODE": "require"})
    assert rc == 0 and out.strip() == "1", err
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e["activity_name"] == "Open")
    assert ev["unmapped"]["postgres"]["agent_tls"] is True
    # libpq with the local CA as root: verify-full against the certificate we mint
    ca = os.path.join(tmp, "local-ca.crt")   # the state directory is hidden from agents
    with open(os.path.join(enforcer.state, "ca", "ca.crt")) as src, open(ca, "w") as dst:
        dst.write(src.read())
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders ORDER BY id LIMIT 1",
                        env={"PGSSLMODE": "verify-ca", "PGSSLROOTCERT": ca})
    assert rc == 0 and out.strip() == "1", err
    pg.sql("ALTER SYSTEM SET log_connections = on", db="postgres")
    enforcer.stop()
    enforcer.start(policy(pg, tmp, user="app_md5"))
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders ORDER BY id LIMIT 1")
    assert rc == 0 and out.strip() == "1", err
    # a wrong password: a clear error, no session
    bad = os.path.join(tmp, "badpw")
    with open(bad, "w") as f:
        f.write("nope\n")
    enforcer.stop()
    enforcer.start(policy(pg, tmp, pwfile=bad))
    rc, out, err = psql(enforcer, pg, "SELECT 1")
    assert rc != 0 and "upstream authentication" in err and "password authentication failed" in err, err


def test_agent_leg_encryption_requests(enforcer, pg, tmp):
    """What README says of the agent leg's negotiation, each case once
    (a review found no test of them): GSSENCRequest is answered 'N'
    (a second one ends the session); SSLRequest then gets 'S' and TLS from
    the local CA, inside which another SSLRequest ends the session; bytes
    sent after SSLRequest before the handshake close the connection
    (CVE-2021-23214); a ClientHello as the first bytes (PG 17 direct TLS) is
    refused."""
    enforcer.start(policy(pg, tmp))
    res = agent_py(enforcer, f"""
    import ssl
    out = {{}}
    def startup():
        body = struct.pack("!I", 196608) + b"user\\0agent_ro\\0database\\0shop\\0\\0"
        return struct.pack("!I", len(body) + 4) + body
    def rd(s):
        # the answer's first byte, an error's SQLSTATE, or how it ended
        try:
            d = s.recv(200)
        except OSError as e:
            return type(e).__name__
        if d[:1] == b"E":
            return "E:" + d.split(b"\\0C")[1][:5].decode()
        return d[:1].decode("latin1") or "EOF"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    GSS, SSL = struct.pack("!II", 8, 80877104), struct.pack("!II", 8, 80877103)
    s = socket.create_connection(("127.0.0.1", {pg.port}), timeout=5)
    s.sendall(GSS); out["gss"] = rd(s)
    s.sendall(GSS); out["gss2"] = rd(s)
    s = socket.create_connection(("127.0.0.1", {pg.port}), timeout=5)
    s.sendall(GSS); s.recv(1)
    s.sendall(SSL); out["ssl"] = rd(s)
    t = ctx.wrap_socket(s)
    t.sendall(SSL); out["ssl-in-tls"] = rd(t)
    s = socket.create_connection(("127.0.0.1", {pg.port}), timeout=5)
    s.sendall(SSL + startup()); out["inject"] = rd(s)
    s = socket.create_connection(("127.0.0.1", {pg.port}), timeout=5)
    try:
        ctx.wrap_socket(s); out["direct"] = "handshake"
    except (ssl.SSLError, OSError) as e:
        out["direct"] = "refused"
    print(json.dumps(out))
    """)
    assert res == {"gss": "N", "gss2": "E:08P01", "ssl": "S", "ssl-in-tls": "E:08P01", "inject": "EOF",
                   "direct": "refused"}, res
    for why in ("bytes sent after SSLRequest before the TLS handshake", "direct TLS negotiation is not supported"):
        ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e.get("activity_name") == "Refuse" and
                                 e.get("unmapped", {}).get("reason") == why)
        assert ev, (why, [e.get("unmapped", {}).get("reason") for e in enforcer.events()])


def test_observe_mode_records_and_allows(enforcer, pg, tmp):
    enforcer.start(policy(pg, tmp, mode="observe"))
    rc, out, err = psql(enforcer, pg, "SELECT count(*) FROM secrets")
    assert rc == 0 and out.strip() == "1", err
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 6005 and
                             e["unmapped"]["statement"].get("tables") == "public.secrets")
    assert ev and ev["unmapped"]["verdict"] == "would_deny" and "public.secrets" in ev["unmapped"]["reason"], ev
    # per statement, the extended protocol, FunctionCall: each recorded once, with its reason
    res = agent_py(enforcer, f"""
    out = {{}}
    c = Conn("127.0.0.1", {pg.port})
    c.send(Q("SELECT id FROM orders ORDER BY id LIMIT 2; SELECT count(*) FROM secrets"))
    out["multi"] = summary(c.until_ready())
    c.send(P("", "SELECT cc FROM secrets") + B("", "") + E("") + S)
    out["ext"] = summary(c.until_ready())
    c.send(F(89))   # version(): runs, observe mode denies nothing
    out["F"] = summary(c.until_ready())
    c.close()
    print(json.dumps(out))
    """)
    assert res["multi"][-3:] == ["D:1", "C:SELECT 1", "ZI"] and "D:2" in res["multi"], res["multi"]
    assert res["ext"][-2:] == ["C:SELECT 1", "ZI"] and res["F"][0] == "V", res
    evs = session_stmt_events(enforcer, 5)
    m1, m2, ext, fc = evs[1:5]
    assert [m1["unmapped"]["statement"]["index"], m2["unmapped"]["statement"]["index"]] == [1, 2]
    assert m1["unmapped"]["statement"]["rows"] == 2 and m2["unmapped"]["statement"]["rows"] == 1
    assert m1["unmapped"]["statement"]["decision"] == "allow" and m2["unmapped"]["statement"]["decision"] == "deny"
    assert all(e["unmapped"]["verdict"] == "would_deny" for e in (m1, m2, ext, fc)), evs
    assert "statement 2 of this message was denied" in m1["unmapped"]["reason"], m1
    assert "public.secrets" in m2["unmapped"]["reason"] and "public.secrets" in ext["unmapped"]["reason"], ext
    assert ext["unmapped"]["statement"]["protocol"] == "extended" and ext["unmapped"]["statement"]["rows"] == 1
    assert fc["unmapped"]["statement"]["protocol"] == "fastpath" and "FunctionCall" in fc["unmapped"]["reason"]
    time.sleep(0.5)
    assert len(stmt_events(enforcer)) == 5, [brief(e) for e in stmt_events(enforcer)]
    # a startup parameter the policy refuses: the session goes on without it, and the
    # session's Open event gives the reason (it was read from a stack frame long gone)
    r = agent_py(enforcer, f"""
    c = Conn("127.0.0.1", {pg.port}, params={{"search_path": "evil"}})
    c.send(Q("SHOW search_path"))
    print(json.dumps(summary(c.until_ready())))
    c.close()
    """)
    assert r[-3:] == ["D:public", "C:SHOW", "ZI"], r
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e.get("activity_name") == "Open" and
                             e["unmapped"].get("module") == "postgres" and e["unmapped"].get("reason"))
    assert ev and ev["unmapped"]["reason"] == 'startup parameter "search_path" is not allowed', ev
    assert ev["unmapped"]["verdict"] == "would_deny", ev


def test_policy_explain(enforcer, pg, tmp):
    """agentgate policy explain for a postgres target: verdict, rule, tables, masked columns;
    nothing sent (the server is not even needed)."""
    path = enforcer.policy(policy(pg, tmp))
    def explain(sql):
        r = enforcer.cli("policy", "explain", "--policy", path, "--agent", AGENT, "--target", "shop", sql)
        assert r.returncode == 0, r.stderr
        return r.stdout
    out = explain("SELECT id, email FROM customers WHERE id = 1")
    assert "verdict: allow" in out and "rule: role 'ro' rule 1" in out and "tables: public.customers" in out
    assert "masked columns: public.customers.email, public.customers.cc" in out
    out = explain("DELETE FROM orders")
    assert "verdict: deny (agentgate: denied:" in out and "class: write" in out and "tables: public.orders" in out
    out = explain("SELECT * FROM customers WHERE cc LIKE '4%'")
    assert "verdict: deny" in out and "cc" in out
    assert pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'") == "0"


def session_stmt_events(enforcer, n, timeout=5):
    """The first n 6005 events, in the order they were recorded."""
    evs = wait_for(lambda: len(stmt_events(enforcer)) >= n and stmt_events(enforcer), timeout)
    assert evs, stmt_events(enforcer)
    return sorted(evs, key=lambda e: e["metadata"]["sequence"])


def brief(e):
    st, um = e["unmapped"]["statement"], e["unmapped"]
    return (st.get("index"), st.get("tag"), st.get("tables"), st.get("rows"), um["verdict"], st.get("decision"))


RULES_STMT = [{"target": "shop",
               "allow": {"statements": ["select", "insert"], "tables": ["public.customers", "public.orders"]},
               "mask": {"columns": ["public.customers.cc"]}}]


def test_one_event_per_statement_of_a_query(enforcer, pg, tmp):
    """A simple-protocol Query holding several statements gives one 6005 event per statement,
    each with its own tag, class, tables, rows, masked columns and verdict; what is forwarded
    or denied does not change."""
    enforcer.start(policy(pg, tmp, rules=RULES_STMT))
    res = agent_py(enforcer, f"""
    import psycopg2
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    out = {{}}
    # 1: three reads, the second with a masked column
    cur.execute("SELECT id FROM orders ORDER BY id; SELECT id, cc FROM customers ORDER BY id; SELECT 42")
    out["last"] = cur.fetchall()
    # 2: a write and a read
    cur.execute("INSERT INTO orders (customer_id, total) VALUES (1, 10); SELECT count(*) FROM orders")
    out["count"] = cur.fetchall()
    # 3: the server fails the second: the third never runs
    try:
        cur.execute("SELECT 1 FROM orders LIMIT 1; SELECT nosuchcolumn FROM orders; SELECT 2 FROM customers")
        out["err"] = "ran"
    except psycopg2.Error as e:
        out["err"] = e.pgcode
    # 4: the second is a DELETE, denied: the first runs, as PostgreSQL runs the
    # statements before one that fails; nothing after it does
    try:
        cur.execute("SELECT 1 FROM orders LIMIT 1; DELETE FROM orders; SELECT 3")
        out["deny"] = "ran"
    except psycopg2.Error as e:
        out["deny"] = [e.pgcode, e.pgerror]
    # 5: one statement, as before
    cur.execute("SELECT id FROM customers WHERE id = 1")
    out["one"] = cur.fetchall()
    print(json.dumps(out))
    """)
    assert res["last"] == [[42]] and res["count"] == [[6]] and res["one"] == [[1]], res
    assert res["err"] == "42703", res
    assert res["deny"][0] == "42501" and "agentgate: denied" in res["deny"][1], res
    assert orders_state(pg) == "6|25"
    evs = session_stmt_events(enforcer, 12)
    got = [brief(e) for e in evs]
    assert got == [
        (1, "select", "public.orders", 5, "allow", "allow"),
        (2, "select", "public.customers", 2, "allow", "allow"),
        (3, "select", None, 1, "allow", "allow"),
        (1, "insert", "public.orders", 0, "allow", "allow"),
        (2, "select", "public.orders", 1, "allow", "allow"),
        (1, "select", "public.orders", 1, "allow", "allow"),
        (2, "select", "public.orders", 0, "allow", "allow"),
        (3, "select", "public.customers", None, "allow", "allow"),
        (1, "select", "public.orders", 1, "allow", "allow"),
        (2, "delete", "public.orders", None, "deny", "deny"),
        (3, "select", None, None, "deny", None),
        (1, "select", "public.customers", 1, "allow", "allow"),
    ], got
    st = [e["unmapped"]["statement"] for e in evs]
    # each statement its own class, the message's count, masking only where it happened
    assert [s["class"] for s in st[3:5]] == ["write", "read"]
    assert all(s["statements"] == 3 for s in st[:3]) and st[11]["statements"] == 1
    assert st[1]["masked_columns"] == "public.customers.cc" and st[1]["masked_values"] == 2, st[1]
    assert "masked_columns" not in st[0] and "masked_values" not in st[0] and "masked_columns" not in st[2]
    # the failing statement has the server's error; the one after it says it never ran
    assert st[6]["server_error"] == "42703" and "server_error" not in st[5], st[5:8]
    assert "not run" in evs[7]["unmapped"]["reason"] and "server_error" not in st[7]
    # the denial: the DELETE carries the reason; the others say which statement it was
    assert "delete" in evs[9]["unmapped"]["reason"].lower(), evs[9]
    assert "reason" not in evs[8]["unmapped"] and st[8]["statements"] == 3, evs[8]
    assert "statement 2 of this message was denied" in evs[10]["unmapped"]["reason"], evs[10]
    # each allowed statement names the rule that allowed it
    assert all(e["unmapped"]["rule"].startswith("role 'ro' rule 1") for e in evs[:9]), evs[:9]


def test_extended_events_in_order_after_answers(enforcer, pg, tmp):
    """Executes pipelined in one write get one event each, in their order, with their own
    rows, masked columns and server error (the events are built after the answers went
    out); an Execute answered without a ReadyForQuery (Flush) is recorded before the
    Sync comes. No Describe is sent: masking asks for the description itself (a client
    that skipped Describe got unmasked rows before)."""
    enforcer.start(policy(pg, tmp, rules=RULES_STMT))
    res = agent_py(enforcer, f"""
    out = {{}}
    c = Conn("127.0.0.1", {pg.port})
    c.send(P("", "SELECT id FROM orders ORDER BY id") + B("", "") + E("") +
           P("", "SELECT id, cc FROM customers ORDER BY id") + B("", "") + E("") +
           P("", "SELECT id FROM orders WHERE id = 1") + B("", "") + E("") +
           P("", "SELECT 1 / (id - id) FROM orders") + B("", "") + E("") + S)
    b1 = c.until_ready()
    out["b1"] = [m[0].decode() for m in b1]
    out["rows"] = [datarow(b) for t, b in b1 if t == b"D"]
    c.send(P("", "SELECT id FROM orders WHERE id < 3") + B("", "") + E("") + H)
    msgs = []
    while True:
        t, b = c.read()
        msgs.append(t.decode())
        if t == b"C":
            break
    out["flush"] = msgs
    def recorded():
        for line in open({enforcer.audit!r}):
            e = json.loads(line)
            st = e.get("unmapped", {{}}).get("statement", {{}})
            if e.get("class_uid") == 6005 and st.get("rows") == 2 and st.get("protocol") == "extended":
                return True
        return False
    t0 = time.time()
    while not recorded() and time.time() - t0 < 5:
        time.sleep(0.05)
    out["before_sync"] = recorded()
    c.send(S)
    out["sync"] = [m[0].decode() for m in c.until_ready()]
    # the statement described, then executed in binary without a portal Describe
    c.send(P("s1", "SELECT cc FROM customers ORDER BY id") + D(b"S", "s1") + S)
    c.until_ready()
    c.send(B("", "s1", result_formats=(1,)) + E("", 1) + E("") + S)
    b2 = c.until_ready()
    out["bin"] = [datarow(b) for t, b in b2 if t == b"D"]
    out["b2"] = [m[0].decode() for m in b2]
    c.close()
    print(json.dumps(out))
    """)
    assert res["b1"].count("C") == 3 and "E" in res["b1"] and res["b1"][-1] == "Z", res
    assert res["flush"][-1] == "C" and res["before_sync"] and res["sync"] == ["Z"], res
    evs = session_stmt_events(enforcer, 7)
    st = [e["unmapped"]["statement"] for e in evs]
    assert [x["protocol"] for x in st] == ["extended"] * 7, st
    assert [x.get("rows") for x in st[5:]] == [1, 1] and all("cc" in x.get("masked_columns", "") for x in st[5:])
    evs, st = evs[:5], st[:5]
    assert [x.get("rows") for x in st] == [5, st[1]["rows"], 1, 0, 2] and st[1]["rows"] >= 2, st
    # no Describe was sent: the rows are masked all the same, and the agent sees no
    # RowDescription it did not ask for
    assert res["rows"][5:7] == [["1", "****"], ["2", "****"]], res["rows"]
    assert "T" not in res["b1"] and "T" not in res["flush"], res
    assert res["bin"] == [["****"], ["****"]] and res["b2"] == ["2", "D", "s", "D", "C", "Z"], res
    assert "cc" in st[1].get("masked_columns", "") and "masked_columns" not in st[0], st
    assert st[3].get("server_error") == "22012" and "server_error" not in st[2], st
    assert all(e["unmapped"]["verdict"] == "allow" for e in evs), [brief(e) for e in evs]
    assert all(e["duration"] >= 0 for e in evs)


RULES_REVIEW = [{"target": "shop",
                 "allow": {"statements": ["select"], "tables": ["public.orders"]},
                 "review": {"statements": ["update"], "tables": ["public.orders"]}}]


def test_review_is_told_apart_from_deny(enforcer, pg, tmp):
    """A review verdict is denied until approvals exist, but the agent's error and the 6005
    event say review (needs approval), distinctly from a plain deny."""
    enforcer.start(policy(pg, tmp, rules=RULES_REVIEW))
    res = agent_py(enforcer, f"""
    import psycopg2
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    out = {{}}
    for name, sql in (("review", "UPDATE orders SET total = 0 WHERE id = 1"),
                      ("deny", "DELETE FROM orders WHERE id = 1"),
                      ("multi", "SELECT 1 FROM orders LIMIT 1; UPDATE orders SET total = 0")):
        try:
            cur.execute(sql)
            out[name] = "ran"
        except psycopg2.Error as e:
            out[name] = [e.pgcode, e.diag.message_primary, e.diag.message_detail]
    # extended protocol: the same
    try:
        cur2 = c.cursor()
        cur2.execute("PREPARE x AS SELECT 1")   # SQL PREPARE is denied (plain deny)
    except psycopg2.Error as e:
        out["prepare"] = [e.pgcode, e.diag.message_primary, e.diag.message_detail]
    raw = Conn("127.0.0.1", {pg.port})
    raw.send(P("u", "UPDATE orders SET total = 0") + B("", "u") + E("") + S)
    out["ext"] = summary(raw.until_ready())
    raw.close()
    print(json.dumps(out))
    """)
    code, msg, detail = res["review"]
    assert code == "42501" and msg.startswith("agentgate: denied: review: needs approval"), res["review"]
    assert "role 'ro' rule 1" in msg and detail and "review" in detail, res["review"]
    code, msg, detail = res["deny"]
    assert code == "42501" and msg.startswith("agentgate: denied") and "review" not in msg, res["deny"]
    assert "approval" not in msg and not detail, res["deny"]
    assert res["multi"][0] == "42501" and "review: needs approval" in res["multi"][1], res["multi"]
    assert "review" not in res["prepare"][1] and not res["prepare"][2], res["prepare"]
    assert res["ext"][0].startswith("E:42501:agentgate: denied: review: needs approval"), res["ext"]
    assert orders_state(pg) == "5|15"
    evs = session_stmt_events(enforcer, 6)
    by = [(e["unmapped"]["statement"].get("tag"), e["unmapped"]["statement"].get("decision"),
           e["unmapped"]["verdict"], e["unmapped"].get("reason", "")) for e in evs]
    upd, dele, m1, m2, prep, ext = by
    assert upd[:3] == ("update", "review", "deny") and upd[3].startswith("review: needs approval"), upd
    assert dele[:3] == ("delete", "deny", "deny") and "review" not in dele[3] and "approval" not in dele[3], dele
    # the SELECT before it ran, as before a denied statement (the statements of a Query
    # before one that fails run in PostgreSQL)
    assert m1 == ("select", "allow", "allow", ""), m1
    assert m2[:3] == ("update", "review", "deny") and m2[3].startswith("review: needs approval"), m2
    assert prep[1] == "deny" and "review" not in prep[3], prep
    assert ext[:3] == ("update", "review", "deny") and evs[5]["unmapped"]["statement"]["protocol"] == "extended"
    assert evs[0]["status_detail"].startswith("review: needs approval")


def test_message_too_large_is_told(enforcer, pg, tmp):
    """A message over the 16 MiB bound ends the session, and the agent reads why first:
    FATAL 54000 'agentgate: message too large'. Under the bound, a long text is only denied
    (the classifier's 1 MiB limit) and the session goes on."""
    enforcer.start(policy(pg, tmp))
    res = agent_py(enforcer, f"""
    import psycopg2
    out = {{}}
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    try:
        cur.execute("SELECT length(%s)", ("x" * (15 << 20),))
        out["15"] = "ran"
    except psycopg2.Error as e:
        out["15"] = [e.pgcode, (e.pgerror or str(e)).strip()]
    cur.execute("SELECT id FROM orders ORDER BY id LIMIT 1")
    out["after15"] = cur.fetchall()
    try:
        cur.execute("SELECT length(%s)", ("x" * (17 << 20),))
        out["17"] = "ran"
    except psycopg2.Error as e:
        out["17"] = [type(e).__name__, e.pgcode, (e.pgerror or str(e)).strip()]
    try:   # the session ended: the next statement cannot run
        c.cursor().execute("SELECT 1")
        out["closed"] = False
    except psycopg2.Error:
        out["closed"] = True
    c2 = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    cur = c2.cursor()
    cur.execute("SELECT count(*) FROM orders")
    out["next"] = cur.fetchall()
    print(json.dumps(out))
    """, timeout=120)
    assert res["15"][0] == "42501" and "longer than" in res["15"][1], res["15"]
    assert res["after15"] == [[1]]
    kind, code, msg = res["17"]
    assert code == "54000" and "agentgate: message too large" in msg, res["17"]
    assert res["closed"] is True
    assert res["next"] == [[5]]
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e["activity_name"] == "Close" and
                             "over the limit" in (e["unmapped"].get("reason") or ""))
    assert ev, [e for e in enforcer.events() if e.get("class_uid") == 4001]


def test_upstream_tls_context_built_once(enforcer, pg, tmp):
    """verify-full upstream TLS: the target's context (CA file) is built once and shared by
    every session, across workers: many sessions, sequential and concurrent, all verified.
    The CA file rotated on disk (left open at stop 36: seen only when the policy changed)
    is loaded again within a second or so: replaced by a CA that signed nothing, new sessions
    fail (kept idle sessions made under the old context are not reused), and the right one
    back, they verify again."""
    live_ca = os.path.join(tmp, "live-ca.pem")
    with open(pg.ca) as src, open(live_ca, "w") as dst:
        dst.write(src.read())
    enforcer.start(policy(pg, tmp, tls="verify-full", ca=live_ca))
    code = f"""
    import psycopg2, threading
    out = {{"ok": 0, "err": []}}
    lock = threading.Lock()
    def one():
        try:
            c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop",
                                 connect_timeout=10)
            cur = c.cursor()
            cur.execute("SELECT id FROM orders ORDER BY id LIMIT 1")
            assert cur.fetchall() == [(1,)]
            c.close()
            with lock:
                out["ok"] += 1
        except Exception as e:
            with lock:
                out["err"].append(str(e))
    def many(n):
        for _ in range(n):
            one()
    N, T = 10, 4
    many(N)
    ts = [threading.Thread(target=many, args=(N,)) for _ in range(T)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps(out))
    """
    res = agent_py(enforcer, code, timeout=180)
    assert res == {"ok": 50, "err": []}, res
    def opens():
        return [e for e in enforcer.events() if e.get("class_uid") == 4001 and e["activity_name"] == "Open"]
    assert wait_for(lambda: len(opens()) >= 50, 10), len(opens())   # the sink writes in batches
    # a psql session ends idle and is kept for reuse, made under the current context
    rc, out, err = psql(enforcer, pg, "SELECT id FROM orders ORDER BY id LIMIT 1")
    assert rc == 0 and out.strip() == "1", err
    # the CA file rotated (renamed over) to a CA that signed nothing: nothing verifies,
    # and the kept session is not reused
    def rotate(src):
        shutil.copy(src, live_ca + ".new")
        os.replace(live_ca + ".new", live_ca)
    rotate(pg.other_ca)
    last = []
    def fails():
        last[:] = psql(enforcer, pg, "SELECT 1 FROM orders LIMIT 1")
        return last[0] != 0 and "certificate verify failed" in last[2]
    assert wait_for(fails, 10), last
    assert "TLS files changed; loaded again" in enforcer.read_log()
    # and back: sessions verify again
    rotate(pg.ca)
    assert wait_for(lambda: psql(enforcer, pg, "SELECT id FROM orders ORDER BY id LIMIT 1")[1].strip() == "1", 10)


def test_server_value_over_16mib(enforcer, pg, tmp):
    """A value over 16 MiB from the server: passed on when nothing in its result is masked
    (the session goes on, the rows are counted); refused with a clear error, ending the
    session, when detectors must scan it (a row to mask must be whole)."""
    big = "SELECT length(v), v FROM (SELECT repeat('ab', 10 << 20) AS v) t"
    code = f"""
    import psycopg2
    out = {{}}
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    try:
        cur.execute({big!r})
        n, v = cur.fetchone()
        out["big"] = [n, len(v), v[:4], v[-4:]]
    except psycopg2.Error as e:
        out["big"] = [e.pgcode, (e.pgerror or str(e)).strip()]
    try:
        cur.execute("SELECT id FROM orders ORDER BY id LIMIT 1")
        out["after"] = cur.fetchall()
    except psycopg2.Error as e:
        out["after"] = str(e)
    print(json.dumps(out))
    """
    enforcer.start(policy(pg, tmp))          # masks by column name only: this result has none
    res = agent_py(enforcer, code, timeout=120)
    assert res["big"] == [20 << 20, 20 << 20, "abab", "abab"], str(res)[:300]
    assert res["after"] == [[1]]
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 6005 and e["unmapped"]["statement"].get("rows") == 1
                             and e["unmapped"]["statement"]["tag"] == "select")
    assert ev and ev["unmapped"]["verdict"] == "allow"
    enforcer.stop()
    enforcer.start(policy(pg, tmp, rules=RULES_RW))   # detectors scan every text value
    res = agent_py(enforcer, code, timeout=120)
    assert res["big"][0] == "54000" and "over the limit" in res["big"][1], str(res)[:300]
    assert res["after"] != [[1]]           # the session ended


def test_password_file_in_a_directory_others_may_write_is_not_read(enforcer, pg, tmp):
    """The upstream password is read with root's rights, so only through a path no
    one but root can re-point (review, stop 24). Its directory made writable by
    anyone after the policy loaded: the agent gets 28000, nothing is sent, the log
    names the directory and never the password; root's again, the next connection
    logs in (the file is read per upstream login)."""
    d = os.path.join(tmp, "creds")
    os.mkdir(d, 0o755)
    pwfile = os.path.join(d, "pw")
    with open(pwfile, "w") as f:
        f.write("app-secret-pw\n")
    os.chmod(pwfile, 0o600)
    enforcer.start(policy(pg, tmp, pwfile=pwfile))
    os.chmod(d, 0o777)
    rc, out, err = psql(enforcer, pg, "SELECT id FROM customers ORDER BY id")
    assert rc != 0 and "cannot read the password file" in err, out + err
    log = enforcer.read_log()
    assert "may be changed by others" in log and "app-secret-pw" not in log, log[-2000:]
    os.chmod(d, 0o755)
    rc, out, err = psql(enforcer, pg, "SELECT id FROM customers ORDER BY id")
    assert rc == 0 and out.split() == ["1", "2"], out + err


def test_password_file_others_may_read_is_reported_and_used(enforcer, pg, tmp):
    """DESIGN §3: a secret file group or others may access is reported, not
    refused. A 0640 password_file: the log warns at start, status lists it
    (target, field, path, mode), the Start event carries the list, and the
    agent still logs in. Made 0600, status lists nothing and a reload's event
    has no list; made 0644 again, the reload warns and its event lists it.
    The password reaches none of them."""
    from test_audit_schema import validate_events
    pwfile = os.path.join(tmp, "pw")
    with open(pwfile, "w") as f:
        f.write("app-secret-pw\n")
    os.chmod(pwfile, 0o640)
    want = {"target": "shop", "field": "password_file", "path": pwfile, "mode": "0640"}
    enforcer.start(policy(pg, tmp, pwfile=pwfile))
    warning = (f"target 'shop': password_file '{pwfile}' may be accessed by group or others "
               "(mode 0640); make it 0600")
    assert warning in enforcer.read_log(), enforcer.read_log()[-2000:]
    assert enforcer.status()["secret_files_exposed"] == [want]
    text = enforcer.cli("status")
    assert f"  target 'shop': password_file '{pwfile}' (mode 0640)" in text.stdout, text.stdout
    start = enforcer.wait_event(lambda e: e["class_uid"] == 6002 and e["activity_name"] == "Start")
    assert start and start["unmapped"]["secret_files_exposed"] == [want], start
    rc, out, err = psql(enforcer, pg, "SELECT id FROM customers ORDER BY id")
    assert rc == 0 and out.split() == ["1", "2"], out + err

    os.chmod(pwfile, 0o600)
    assert enforcer.status()["secret_files_exposed"] == []
    assert enforcer.cli("reload").returncode == 0
    os.chmod(pwfile, 0o644)
    assert enforcer.cli("reload").returncode == 0
    assert wait_for(lambda: len([e for e in enforcer.events() if e["class_uid"] == 3004]) == 2)
    quiet, loud = [e for e in enforcer.events() if e["class_uid"] == 3004]
    assert "secret_files_exposed" not in quiet["entity"]["data"], quiet
    assert loud["entity"]["data"]["secret_files_exposed"] == [dict(want, mode="0644")], loud
    assert "(mode 0644); make it 0600" in enforcer.read_log()
    assert enforcer.status()["secret_files_exposed"] == [dict(want, mode="0644")]
    rc, out, err = psql(enforcer, pg, "SELECT id FROM customers ORDER BY id")
    assert rc == 0 and out.split() == ["1", "2"], out + err
    enforcer.stop()
    evs = enforcer.events()
    validate_events(evs)
    assert "app-secret-pw" not in json.dumps(evs) + enforcer.read_log()
