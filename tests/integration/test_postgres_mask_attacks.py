# SPDX-License-Identifier: Apache-2.0
"""Ways around PostgreSQL masking, tried as an agent that controls its wire bytes.
Every test collects every message the agent receives (startup included) and
searches all of it for the masked values of helpers/pg.py (customers.cc and
customers.email, raw, reversed, hex and base64): none may appear. A case passes
when it is denied (42501) or its rows arrive masked (****)."""
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_postgres import RULES_RO, RULES_RW, agent_py, pg, policy  # noqa: E402,F401 (pg: a fixture)

# Runs inside the agent, before each test's own code: a pgraw.Conn that records
# every message it reads, and the leak search over what it recorded.
LIB = r'''
import base64
SECRETS = ["4111111111111111", "5500005555555559", "alice@example.com", "bob@example.org"]
class Rec(Conn):
    def __init__(self, *a, **kw):
        self.rx = []
        Conn.__init__(self, *a, **kw)
    def read(self):
        t, b = Conn.read(self)
        if t is not None:
            self.rx.append((t, b))
        return t, b
def step(c, data, n=1):
    """Sends data, returns the summary of what came back up to the n-th ReadyForQuery."""
    if data:
        c.send(data)
    try:
        return summary(c.until_ready(n))
    except (socket.timeout, OSError) as e:
        return ["NOANSWER:" + type(e).__name__]
def leaks(c):
    blob = b"".join(b for _, b in c.rx) + c.buf
    out = []
    for s in SECRETS:
        b = s.encode()
        for form in (b, b[::-1], b.hex().encode(), base64.b64encode(b)):
            if form in blob and s not in out:
                out.append(s)
    return out
'''


# Agent side of other_client(): turn(i) lets the other client take its i-th step
# and returns once it is done.
TURN = r"""
def turn(i):
    open(MARKS[2 * i], "w").close()
    while not os.path.exists(MARKS[2 * i + 1]):
        time.sleep(0.05)
"""


@contextlib.contextmanager
def other_client(pg, tmp, *steps):
    """Another client of the database, never through agentgate: each step (SQL for
    pg.sql, or a callable; a process it returns is waited for at the end) runs when
    the agent's code calls turn(i). Yields the prelude that defines turn() there."""
    marks = [os.path.join(tmp, f"turn-{i}-{w}") for i in range(len(steps)) for w in ("wanted", "done")]
    procs = []

    def body():
        for i, st in enumerate(steps):
            for _ in range(600):
                if os.path.exists(marks[2 * i]):
                    break
                time.sleep(0.05)
            else:
                return
            r = st() if callable(st) else pg.sql(st)
            if hasattr(r, "wait"):
                procs.append(r)
            open(marks[2 * i + 1], "w").close()
        for pr in procs:
            pr.wait(30)

    t = threading.Thread(target=body)
    t.start()
    try:
        yield f"import os\nMARKS = {marks!r}\n" + TURN
    finally:
        t.join()


# Selects on every public table, customers.cc masked: the lineage tests' policy.
RULES_MASK_CC = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.*"]},
                  "mask": {"columns": ["public.customers.cc"]}}]


def run(enforcer, pg, code, timeout=120):
    return agent_py(enforcer, LIB + f"PORT = {pg.port}\n" + code, timeout=timeout)


def denied(summ):
    """The first error of the answer is our denial (the statements of a Query before a
    denied one run, as PostgreSQL runs those before one that fails)."""
    errs = [x for x in summ if x.startswith("E:")]
    return bool(errs) and errs[0].startswith("E:42501:agentgate: denied")


def first_error(summ):
    return next((x for x in summ if x.startswith("E:")), "")


def masked(summ):
    rows = [x for x in summ if x.startswith("D:")]
    return bool(rows) and all("****" in r for r in rows)


# SQL over masked columns, each sent on its own: (id, SQL). Each must be denied
# or answered with masked rows only; the ones marked in MUST_DENY must be denied.
SQL_CASES = [
    ("plain", "SELECT id, email, cc FROM customers ORDER BY id"),
    # a plan's width is the masked column's average width (stop 59)
    ("explain", "EXPLAIN SELECT cc FROM customers"),
    ("explain_star", "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM customers"),
    # every node of a plan has a width: DECLARE's query, a CTE, a subquery (review, stop 64)
    ("explain_declare", "EXPLAIN DECLARE c CURSOR FOR SELECT cc FROM customers"),
    ("explain_cte", "EXPLAIN WITH t AS MATERIALIZED (SELECT cc FROM customers) SELECT 1 FROM t"),
    ("explain_subquery", "EXPLAIN SELECT 1 FROM (SELECT email FROM customers OFFSET 0) s"),
    ("subquery", "SELECT x FROM (SELECT cc AS x FROM customers) s"),
    ("cte", "WITH t AS (SELECT cc FROM customers) SELECT cc FROM t"),
    ("cte_mat", "WITH t AS MATERIALIZED (SELECT email, cc FROM customers) SELECT * FROM t"),
    ("table", "TABLE customers"),
    ("renamed", "SELECT * FROM customers c(a, b, x)"),
    ("lateral_out", "SELECT * FROM customers c, LATERAL (SELECT c.cc AS y) l"),
    ("concat_op", "SELECT cc || '' FROM customers"),
    ("concat", "SELECT concat(cc) FROM customers"),
    ("format", "SELECT format('%s', email) FROM customers"),
    ("coalesce", "SELECT COALESCE(cc, 'x') FROM customers"),
    ("cast_varchar", "SELECT cc::varchar FROM customers"),
    ("cast_text", "SELECT CAST(email AS text) FROM customers"),
    ("collate", 'SELECT email COLLATE "C" FROM customers'),
    ("case", "SELECT CASE WHEN id > 0 THEN cc END FROM customers"),
    ("field_of_row", "SELECT (c).cc FROM customers c"),
    ("whole_row", "SELECT c FROM customers c"),
    ("whole_row_text", "SELECT c::text FROM customers c"),
    ("row_to_json", "SELECT row_to_json(c) FROM customers c"),
    ("to_jsonb", "SELECT to_jsonb(c.*) FROM customers c"),
    ("json_build", "SELECT json_build_object('k', cc) FROM customers"),
    ("array_agg", "SELECT array_agg(cc) FROM customers"),
    ("string_agg", "SELECT string_agg(email, ',') FROM customers"),
    ("array_ctor", "SELECT ARRAY[cc] FROM customers"),
    ("row_ctor", "SELECT ROW(cc) FROM customers"),
    ("max", "SELECT max(cc) FROM customers"),
    ("reverse", "SELECT reverse(cc) FROM customers"),
    ("hex", "SELECT encode(convert_to(cc, 'UTF8'), 'hex') FROM customers"),
    ("xml", "SELECT xmlelement(name x, cc) FROM customers"),
    ("scalar_sublink", "SELECT (SELECT cc FROM customers ORDER BY id LIMIT 1)"),
    ("array_sublink", "SELECT ARRAY(SELECT cc FROM customers)"),
    ("correlated_sublink", "SELECT (SELECT c.cc) FROM customers c"),
    ("values_sublink", "VALUES ((SELECT cc FROM customers ORDER BY id LIMIT 1))"),
    ("unnest_from", "SELECT * FROM unnest(ARRAY(SELECT cc FROM customers))"),
    ("union", "SELECT cc FROM customers UNION ALL SELECT 'x'"),
    ("union_in_from", "SELECT * FROM (SELECT cc FROM customers UNION ALL SELECT cc FROM customers) s"),
    ("recursive_cte", "WITH RECURSIVE t(x) AS (SELECT cc FROM customers UNION ALL SELECT x FROM t WHERE false) "
                      "SELECT x FROM t"),
    ("distinct", "SELECT DISTINCT cc FROM customers"),
    ("error_cast_int", "SELECT cc::int FROM customers"),
    ("error_cast_jsonb", "SELECT email::jsonb FROM customers"),
    ("where_oracle", "SELECT id FROM customers WHERE cc = '4111111111111111'"),
    ("using_join", "SELECT id FROM customers a JOIN customers b USING (cc)"),
    ("natural_join", "SELECT 1 FROM customers NATURAL JOIN customers x"),
    ("order_by", "SELECT id FROM customers ORDER BY cc"),
    ("pg_notify", "SELECT pg_notify('ch', cc) FROM customers"),
    ("do_notice", "DO $$BEGIN RAISE NOTICE '%', (SELECT cc FROM customers LIMIT 1); END$$"),
    ("listen", "LISTEN ch"),
    ("notify", "NOTIFY ch, 'x'"),
    ("prepare", "PREPARE p AS SELECT cc FROM customers"),
    ("execute", "EXECUTE p"),
    ("copy_query", "COPY (SELECT cc FROM customers) TO STDOUT"),
    ("copy_table", "COPY customers TO STDOUT"),
    ("fetch_multi", "BEGIN; DECLARE c CURSOR FOR SELECT id, cc FROM customers; FETCH ALL FROM c"),
    ("hold_cursor", "DECLARE h CURSOR WITH HOLD FOR SELECT id, cc FROM customers"),
    ("fetch", "FETCH ALL FROM h"),
    ("move_fetch", "MOVE ABSOLUTE 0 IN h; FETCH 1 FROM h"),
    ("multi_mixed", "SELECT id FROM orders ORDER BY id; SELECT id, cc FROM customers ORDER BY id; SELECT 1"),
    ("multi_second_bad", "SELECT id, cc FROM customers; SELECT cc || '' FROM customers"),
]
MUST_DENY = {"concat_op", "concat", "format", "coalesce", "cast_varchar", "collate", "case", "whole_row",
             "whole_row_text", "row_to_json", "to_jsonb", "json_build", "array_agg", "string_agg", "array_ctor",
             "row_ctor", "max", "reverse", "hex", "xml", "scalar_sublink", "array_sublink", "correlated_sublink",
             "values_sublink", "union", "union_in_from", "recursive_cte", "distinct", "error_cast_int",
             "error_cast_jsonb", "where_oracle", "using_join", "natural_join", "order_by", "pg_notify",
             "do_notice", "listen", "notify", "prepare", "execute", "copy_query", "copy_table", "fetch_multi",
             "fetch", "move_fetch", "multi_second_bad", "explain", "explain_star",
             "explain_declare", "explain_cte", "explain_subquery"}
MUST_MASK = {"plain", "subquery", "cte", "cte_mat"}
NO_ROWS = {"hold_cursor"}   # allowed (judged as its SELECT): it sends no row; FETCH/MOVE are denied

RUN_SQL = r"""
out = {}
c = Rec("127.0.0.1", PORT)
for cid, sql in CASES:
    out[cid] = {"simple": step(c, Q(sql))}
    if ";" not in sql:   # the extended protocol: one statement per Parse
        out[cid]["extended"] = step(c, P("", sql) + B("", "", result_formats=(1,) if BINARY else ()) +
                                    D(b"P", "") + E("") + S)
    if out[cid]["simple"][-1] == "ZT" or out[cid]["simple"][-1] == "ZE":
        step(c, Q("ROLLBACK"))
out["_leaks"] = leaks(c)
c.close()
print(json.dumps(out))
"""


def check_sql_cases(res, cases):
    bad = []
    for cid, _ in cases:
        for proto, summ in res[cid].items():
            if cid in MUST_DENY and not denied(summ):
                bad.append((cid, proto, summ))
            elif cid in MUST_MASK and not masked(summ):
                bad.append((cid, proto, summ))
            elif cid in NO_ROWS:
                if any(x.startswith("D:") for x in summ):
                    bad.append((cid, proto, summ))
            elif cid == "multi_mixed":
                if not ("D:1|****" in summ and "D:2|****" in summ and summ[-1] == "ZI"):
                    bad.append((cid, proto, summ))
            elif not (denied(summ) or masked(summ)):
                bad.append((cid, proto, summ))
    return bad


def test_sql_shapes_over_masked_columns_lineage_only(enforcer, pg, tmp):
    """RULES_RO masks by lineage only (no detectors): every SQL shape that would carry a
    masked value out of the RowDescription's lineage (expressions, casts, COLLATE, whole
    rows, JSON/array/aggregate builders, sublinks, set operations, the error of a cast, a
    NOTICE, a notification, SQL PREPARE/EXECUTE, cursors FETCH/MOVE, COPY) is denied, in
    the simple and the extended protocol (binary results there); plain outputs through
    subqueries, CTEs and multi-statement Queries are masked. No value reaches the agent."""
    enforcer.start(policy(pg, tmp, rules=RULES_RO))
    res = run(enforcer, pg, f"CASES = {SQL_CASES!r}\nBINARY = True\n" + RUN_SQL, timeout=180)
    assert res["_leaks"] == [], (res["_leaks"], {k: v for k, v in res.items() if k != "_leaks"})
    bad = check_sql_cases(res, SQL_CASES)
    assert not bad, bad


def test_sql_shapes_over_masked_columns_with_detectors(enforcer, pg, tmp):
    """The same shapes under RULES_RW (lineage and detectors, COPY allowed by rule, text
    results): the detectors are no excuse to let a lineage-losing shape through, and no
    value reaches the agent."""
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = run(enforcer, pg, f"CASES = {SQL_CASES!r}\nBINARY = False\n" + RUN_SQL, timeout=180)
    assert res["_leaks"] == [], res["_leaks"]
    bad = check_sql_cases(res, SQL_CASES)
    assert not bad, bad


RUN_WIRE = r"""
out = {}
CUST = "SELECT id, email, cc FROM customers ORDER BY id"
ORD = "SELECT id FROM orders ORDER BY id"
def scenario(name, steps):
    c = Rec("127.0.0.1", PORT)
    r = []
    for data, n in steps:
        if isinstance(data, float):
            time.sleep(data)
            continue
        r.append(step(c, data, n))
    out[name] = [r, leaks(c)]
    c.close()
# max_rows: PortalSuspended, executed again, Described after the first batch, run to the end
scenario("suspended", [(P("s", CUST) + B("", "s") + E("", 1) + E("", 1) + D(b"P", "") + E("") + S, 1)])
# Described as a statement, then bound with binary results (all, and per column)
scenario("describe_s_binary", [(P("s", CUST) + D(b"S", "s") + S, 1),
                               (B("", "s", result_formats=(1,)) + E("") + S, 1),
                               (B("", "s", result_formats=(0, 1, 1)) + E("") + S, 1),
                               (B("", "s", result_formats=(1, 0, 0)) + D(b"P", "") + E("") + S, 1)])
# a named portal described over orders, closed, bound again under the same name over customers
scenario("rebind_after_close", [(P("so", ORD) + P("s", CUST) + B("p", "so") + D(b"P", "p") + C(b"P", "p") +
                                 B("p", "s") + E("p") + S, 1)])
# the unnamed portal described over orders, replaced by a Bind over customers, executed
scenario("rebind_unnamed", [(P("so", ORD) + P("s", CUST) + B("", "so") + D(b"P", "") + B("", "s") + E("") + S, 1)])
# an error in the pipeline: the rest is skipped until Sync; then the same again
scenario("after_error", [(P("s", CUST) + P("bad", "SELECT nosuch FROM orders") + B("", "s") + E("") + S, 1),
                         (B("", "s") + E("") + S, 1)])
# Describe sent after the Execute
scenario("describe_after", [(P("s", CUST) + B("", "s") + E("") + D(b"P", "") + S, 1)])
# Bind and Execute in two TCP writes
scenario("split_writes", [(P("s", CUST) + S, 1), (B("", "s", result_formats=(1,)), 0), (0.3, 0),
                          (E("", 1), 0), (0.3, 0), (E("") + S, 1)])
# a portal whose Describe the server skipped (error before it), executed in the same transaction
# (the portal outlives the error: it was bound before the savepoint rolled back to)
scenario("skipped_describe", [(Q("BEGIN"), 1), (P("s", CUST) + B("p", "s") + S, 1), (Q("SAVEPOINT a"), 1),
                              (P("bad", "SELECT nosuch FROM orders") + D(b"P", "p") + S, 1),
                              (Q("ROLLBACK TO SAVEPOINT a"), 1), (E("p") + S, 1)])
# a cursor DECLAREd in SQL, executed by name in the protocol (an untracked portal)
scenario("declared_cursor", [(Q("BEGIN"), 1), (Q("DECLARE c CURSOR FOR " + CUST), 1), (E("c") + S, 1),
                             (Q("ROLLBACK"), 1), (P("", "DECLARE d CURSOR WITH HOLD FOR " + CUST) + B("", "") +
                                                  E("") + S, 1), (E("d") + S, 1)])
# a portal described over orders; the Sync ends it; a SQL cursor WITH HOLD takes its
# name; a Describe the server skips (an error before it) is sent; then Execute of the
# name, all in one write: the Describe was sent for the new SQL epoch but never
# answered, and the old answer (three integers, nothing to mask) is not the cursor's
# (review, stop 25: the cursor's rows passed unmasked)
scenario("forged_described", [(P("s1", "SELECT id, id, id FROM orders") + B("c", "s1") + D(b"P", "c") + S +
                                Q("DECLARE c CURSOR WITH HOLD FOR " + CUST) +
                                P("bad", "SELECT nosuch FROM orders") + D(b"P", "c") + S + E("c") + S, 4)])
print(json.dumps(out))
"""


def test_extended_protocol_sequences_stay_masked(enforcer, pg, tmp):
    """Portals executed twice with max_rows (PortalSuspended) and re-Described; a statement
    Described 'S' then bound with binary result formats; a portal name reused after Close,
    and the unnamed portal re-bound, in one pipeline; Execute after an error (skip until
    Sync) and again after Sync; Describe after Execute; Bind and Execute split across TCP
    writes; a portal whose Describe the server skipped; a SQL cursor (DECLARE, WITH HOLD)
    Executed by name in the protocol (denied: not a portal the module tracks). Every row that arrives is masked,
    and no value reaches the agent."""
    enforcer.start(policy(pg, tmp, rules=RULES_RO))
    res = run(enforcer, pg, RUN_WIRE)
    bad = {k: v for k, v in res.items() if v[1]}
    assert not bad, bad
    for name, (steps, _) in res.items():
        for summ in steps:
            rows = [x for x in summ if x.startswith("D:")]
            assert all(r.count("****") == 2 for r in rows), (name, steps)
    assert [x for x in res["suspended"][0][0] if x.startswith("D:")] == ["D:1|****|****", "D:2|****|****"]
    for i in (1, 2, 3):   # binary for all, per column, and described after a binary Bind
        assert len([x for x in res["describe_s_binary"][0][i] if x.startswith("D:")]) == 2, res["describe_s_binary"]
    assert len([x for x in res["rebind_after_close"][0][0] if x.startswith("D:")]) == 2, res["rebind_after_close"]
    assert len([x for x in res["after_error"][0][1] if x.startswith("D:")]) == 2, res["after_error"]
    # the skipped Describe: rows masked, or refused rather than passed (today: refused, XX000)
    last = res["skipped_describe"][0][-1]
    assert masked(last) or last[0].startswith("E:XX000:agentgate:"), res["skipped_describe"]
    # a Describe sent but skipped does not describe: the cursor's rows are refused
    steps = res["forged_described"][0][0]
    assert not [x for x in steps if x.startswith("D:") and "alice" in x], steps
    assert any(x.startswith("E:XX000:agentgate:") for x in steps) or all(
        x.count("****") == 2 for x in steps if x.startswith("D:")), steps
    # a SQL cursor is no portal the module allowed: its Execute is denied
    assert denied(res["declared_cursor"][0][2]) and denied(res["declared_cursor"][0][5]), res["declared_cursor"]


RULES_INSERT = [{"target": "shop",
                 "allow": {"statements": ["select", "insert"], "tables": ["public.customers", "public.orders"]},
                 "mask": {"columns": ["public.customers.email", "public.customers.cc"]}}]


def test_writes_returning_masked_columns(enforcer, pg, tmp):
    """With INSERT allowed on the masked table (lineage only): RETURNING a masked column,
    RETURNING *, a whole row, ON CONFLICT DO UPDATE returning the existing row, INSERT ...
    SELECT of masked columns into a column whose cast fails or whose NOT NULL fails (the
    error's DETAIL would hold the row) are denied; nothing is written, no value leaks."""
    enforcer.start(policy(pg, tmp, rules=RULES_INSERT))
    cases = [
        ("ret_col", "INSERT INTO customers VALUES (3, 'c@d.e', '1') RETURNING cc"),
        ("ret_star", "INSERT INTO customers VALUES (3, 'c@d.e', '1') RETURNING *"),
        ("ret_row", "INSERT INTO customers AS c VALUES (3, 'c@d.e', '1') RETURNING c"),
        ("upsert", "INSERT INTO customers VALUES (1, 'x', 'y') ON CONFLICT (id) DO UPDATE SET id = excluded.id "
                   "RETURNING email, cc"),
        ("upsert_nothing", "INSERT INTO customers VALUES (1, 'x', 'y') ON CONFLICT DO NOTHING RETURNING cc"),
        ("ins_sel_cast", "INSERT INTO orders (customer_id, total) SELECT id, cc::numeric FROM customers"),
        ("ins_sel_notnull", "INSERT INTO customers (email, cc) SELECT email, cc FROM customers"),
        ("ins_sel_copy", "INSERT INTO customers SELECT id + 10, email, cc FROM customers"),
    ]
    res = run(enforcer, pg, f"CASES = {cases!r}\n" + r"""
out = {}
c = Rec("127.0.0.1", PORT)
for cid, sql in CASES:
    out[cid] = [step(c, Q(sql)), step(c, P("", sql) + B("", "") + E("") + S)]
out["_leaks"] = leaks(c)
c.close()
print(json.dumps(out))
""")
    assert res.pop("_leaks") == [], res
    bad = [(k, v) for k, v in res.items() if not (denied(v[0]) and denied(v[1]))]
    assert not bad, bad
    assert pg.sql("SELECT count(*) FROM customers") == "2"
    assert pg.sql("SELECT count(*) FROM orders") == "5"


# A portal name the module still holds, described over a harmless result, while the
# server has dropped that portal without the module seeing it; DECLARE then creates a
# server portal of that name over the masked table, and the agent Executes it by name.
STALE_ENDS = {
    "close": 'Q("CLOSE c")',                         # SQL CLOSE: implicitly allowed
    "commit_and_chain": 'Q("COMMIT AND CHAIN")',     # ends the transaction, 'Z' stays 'T'
    "commit_begin": 'Q("COMMIT; BEGIN")',            # the same in one Query
    "rollback_to_savepoint": 'Q("ROLLBACK TO SAVEPOINT a")',   # the subtransaction's portals go
}


def stale_portal_code(end, binary):
    fmts = "(1,)" if binary else "()"
    return f"""
c = Rec("127.0.0.1", PORT)
r = [step(c, Q("BEGIN; SAVEPOINT a"))]
r.append(step(c, P("so", "SELECT id FROM orders ORDER BY id LIMIT 2") + B("c", "so", result_formats={fmts}) +
              D(b"P", "c") + S))
r.append(step(c, {end}))
r.append(step(c, Q("DECLARE c CURSOR FOR SELECT id, email, cc FROM customers ORDER BY id")))
r.append(step(c, E("c") + S))
r.append(step(c, Q("ROLLBACK")))
print(json.dumps([r, leaks(c)]))
"""


def _stale_portal(enforcer, pg, tmp, end, rules, binary):
    enforcer.start(policy(pg, tmp, rules=rules))
    steps, leaked = run(enforcer, pg, stale_portal_code(STALE_ENDS[end], binary))
    assert leaked == [], (leaked, steps)
    rows = [x for x in steps[4] if x.startswith("D:")]
    assert denied(steps[4]) or (rows and all(r.count("****") == 2 for r in rows)), steps


def test_stale_portal_close_then_declare(enforcer, pg, tmp):
    """Wire: BEGIN; SAVEPOINT a / P(so, orders) B(c, so) D(P, c) S / Q(CLOSE c) /
    Q(DECLARE c CURSOR FOR SELECT id, email, cc FROM customers) / E(c) S. The module keeps
    portal "c" with the orders description after the server closed it, so the Execute of
    the cursor's rows is read with a plan that masks nothing."""
    _stale_portal(enforcer, pg, tmp, "close", RULES_RO, False)


def test_stale_portal_commit_and_chain_then_declare(enforcer, pg, tmp):
    """As above, the portal dropped by COMMIT AND CHAIN (the transaction ends, ReadyForQuery
    says 'T', so the module's end-of-transaction sweep never runs)."""
    _stale_portal(enforcer, pg, tmp, "commit_and_chain", RULES_RO, False)


def test_stale_portal_commit_begin_in_one_query_then_declare(enforcer, pg, tmp):
    """As above, with Q("COMMIT; BEGIN")."""
    _stale_portal(enforcer, pg, tmp, "commit_begin", RULES_RO, False)


def test_stale_portal_rollback_to_savepoint_then_declare(enforcer, pg, tmp):
    """As above, the portal dropped by ROLLBACK TO SAVEPOINT (portals of the rolled-back
    subtransaction go; the transaction stays open)."""
    _stale_portal(enforcer, pg, tmp, "rollback_to_savepoint", RULES_RO, False)


def test_stale_portal_binary_plan_defeats_detectors(enforcer, pg, tmp):
    """RULES_RW (detectors on): the stale portal was bound with binary results, so its plan
    scans nothing (binary int4 is opaque to detectors); the cursor's text rows pass."""
    _stale_portal(enforcer, pg, tmp, "close", RULES_RW, True)


RULES_UPDATE = [{"target": "shop",
                 "allow": {"statements": ["select", "update"], "tables": ["public.customers"]},
                 "mask": {"columns": ["public.customers.email", "public.customers.cc"]}}]


def test_update_not_null_error_detail(enforcer, pg, tmp):
    """UPDATE allowed on the masked table, lineage masking only: UPDATE customers SET id =
    NULL WHERE id = 1 names no masked column, yet the server's not-null violation carries
    DETAIL 'Failing row contains (null, alice@example.com, 4111111111111111).'. The value
    must not reach the agent (denied, or the error's fields masked)."""
    enforcer.start(policy(pg, tmp, rules=RULES_UPDATE))
    res = run(enforcer, pg, r"""
c = Rec("127.0.0.1", PORT)
r = [step(c, Q("UPDATE customers SET id = NULL WHERE id = 1")),
     step(c, P("", "UPDATE customers SET id = NULL WHERE id = 2") + B("", "") + E("") + S)]
print(json.dumps([r, leaks(c)]))
""")
    assert res[1] == [], res
    assert pg.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM customers") == "1,2"


def test_insert_on_conflict_not_null_error_detail(enforcer, pg, tmp):
    """INSERT only (RULES_INSERT, lineage masking only): INSERT INTO customers VALUES (1,
    'x', 'y') ON CONFLICT (id) DO UPDATE SET id = NULL names no masked column and is
    allowed as an insert; the conflicting row's update fails NOT NULL and the server's
    DETAIL 'Failing row contains (null, alice@example.com, 4111111111111111).' carries the
    existing row. The value must not reach the agent."""
    enforcer.start(policy(pg, tmp, rules=RULES_INSERT))
    res = run(enforcer, pg, r"""
c = Rec("127.0.0.1", PORT)
r = [step(c, Q("INSERT INTO customers VALUES (1, 'x', 'y') ON CONFLICT (id) DO UPDATE SET id = NULL")),
     step(c, P("", "INSERT INTO customers VALUES (2, 'x', 'y') ON CONFLICT (id) DO UPDATE SET id = NULL") +
          B("", "") + E("") + S)]
print(json.dumps([r, leaks(c)]))
""")
    assert res[1] == [], res
    assert pg.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM customers") == "1,2"


def test_insert_on_conflict_do_update_needs_update(enforcer, pg, tmp):
    """Found on the way (RBAC, not masking): with only INSERT granted, INSERT ... ON
    CONFLICT (id) DO UPDATE SET total = 999 rewrites an existing row. It must be denied
    (42501) unless a rule grants update, and the row must stay as it was."""
    enforcer.start(policy(pg, tmp, rules=RULES_INSERT))
    res = run(enforcer, pg, r"""
c = Rec("127.0.0.1", PORT)
print(json.dumps(step(c, Q("INSERT INTO orders (id, customer_id, total) VALUES (1, 1, 999) "
                           "ON CONFLICT (id) DO UPDATE SET total = 999"))))
""")
    assert denied(res), res
    assert pg.sql("SELECT total FROM orders WHERE id = 1") == "1"


LONG_NAMES = r"""
CUST = "SELECT id, email, cc FROM customers ORDER BY id"
ORD = "SELECT id FROM orders ORDER BY id"
N1, N2 = "A" * 63 + "1", "A" * 63 + "2"   # one portal to PostgreSQL: it reads 63 bytes
N63 = "B" * 63
out = {}
c = Rec("127.0.0.1", PORT)
# described over orders under N1; Close and Bind under N2 reach the server's N1; Execute N1
out["alias"] = step(c, P("so", ORD) + P("s", CUST) + B(N1, "so") + D(b"P", N1) + C(b"P", N2) +
                    B(N2, "s") + E(N1) + S)
out["parse64"] = step(c, P("S" * 64, ORD) + S)
out["bind_stmt64"] = step(c, B("", "S" * 64) + E("") + S)
out["describe64"] = step(c, D(b"P", "P" * 64) + S)
out["execute64"] = step(c, E("P" * 64) + S)
out["close64"] = step(c, C(b"S", "S" * 64) + S)
# names of 63 bytes are PostgreSQL's own limit and work
out["ok63"] = step(c, P(N63, CUST) + B(N63, N63) + D(b"P", N63) + E(N63) + C(b"P", N63) + S)
out["_leaks"] = leaks(c)
c.close()
print(json.dumps(out))
"""


def test_statement_and_portal_names_past_63_bytes_are_refused(enforcer, pg, tmp):
    """PostgreSQL keys prepared statements and portals by their first 63 bytes. A portal
    described over a harmless query under one long name, then closed and re-bound over the
    masked table under another long name with the same first 63 bytes, was executed with
    the harmless description: the card numbers came back in clear (found by review). Names
    longer than 63 bytes are now denied in Parse, Bind, Describe, Execute and Close (also
    the bound on what a session's names make the enforcer allocate); 63 bytes still work."""
    enforcer.start(policy(pg, tmp, rules=RULES_RO))
    res = run(enforcer, pg, LONG_NAMES)
    assert res.pop("_leaks") == [], res
    ok = res.pop("ok63")
    assert [x for x in ok if x.startswith("D:")] == ["D:1|****|****", "D:2|****|****"], ok
    for k, v in res.items():
        errs = [x for x in v if x.startswith("E:")]
        assert len(errs) == 1 and denied(errs) and "longer than 63 bytes" in errs[0], (k, v)
        assert not [x for x in v if x.startswith("D:")], (k, v)


DEPENDENTS = """
CREATE VIEW cust_v AS SELECT id, upper(cc) AS shout, email FROM customers;
CREATE VIEW cust_vv AS SELECT shout AS s2, id FROM cust_v;
CREATE VIEW ids_v AS SELECT id FROM customers;
CREATE VIEW filt_v AS SELECT id FROM customers WHERE cc LIKE '4%';
CREATE VIEW row_v AS SELECT c::text AS t FROM customers c;
CREATE VIEW rowid_v AS SELECT c.id, c::text AS t FROM customers c;
CREATE VIEW rowjson_v AS SELECT c.id, row_to_json(c) AS doc FROM customers c;
CREATE MATERIALIZED VIEW rowid_m AS SELECT c.id, c::text AS t FROM customers c;
CREATE VIEW ord_v AS SELECT id FROM orders;
CREATE MATERIALIZED VIEW cust_m AS SELECT id, cc FROM customers;
CREATE TABLE cust_kid (extra int) INHERITS (customers);
INSERT INTO cust_kid VALUES (7, 'kid@example.com', '4012888888881881', 70);
CREATE TABLE pcards (id int, cc text) PARTITION BY RANGE (id);
CREATE TABLE pcards_1 PARTITION OF pcards FOR VALUES FROM (0) TO (100);
INSERT INTO pcards VALUES (1, '6011111111111117');
CREATE TABLE cust_parent (id int, email text, cc text);
ALTER TABLE customers INHERIT cust_parent;
CREATE TABLE pmix (id int, cc text) PARTITION BY RANGE (id);
CREATE TABLE pmix_1 PARTITION OF pmix FOR VALUES FROM (0) TO (100);
INSERT INTO pmix VALUES (2, '378282246310005');
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app;
"""
RULES_SCHEMA = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.*"]},
                 "mask": {"columns": ["public.customers.email", "public.customers.cc", "public.pcards.cc",
                                      "public.pmix_1.cc"]}}]
DEPENDENT_CASES = [
    # (id, SQL, the rows the agent must get; None: denied)
    ("view", "SELECT * FROM cust_v", ["D:NULL|****|****"] * 3),   # a masked int is NULL
    ("view_of_view", "SELECT * FROM cust_vv", ["D:****|NULL"] * 3),
    ("view_where_masked", "SELECT id FROM filt_v", ["D:NULL"] * 2),
    ("view_reads_no_masked_column", "SELECT id FROM ids_v ORDER BY 1", ["D:1", "D:2", "D:7"]),
    ("view_of_another_table", "SELECT * FROM ord_v ORDER BY 1", ["D:1", "D:2", "D:3", "D:4", "D:5"]),
    ("whole_row_view", "SELECT * FROM row_v", ["D:****"] * 3),
    # a whole row beside a named column: PostgreSQL records only the named
    # column's dependency (review, stop 34: the rows came in clear)
    ("whole_row_with_column", "SELECT t FROM rowid_v", ["D:****"] * 3),
    ("row_to_json_with_column", "SELECT doc FROM rowjson_v", ['D:"****"'] * 3),   # json: a JSON string
    ("whole_row_with_column_matview", "SELECT t FROM rowid_m", ["D:****"] * 2),
    ("matview", "SELECT * FROM cust_m", ["D:NULL|****"] * 2),
    ("child", "SELECT * FROM cust_kid", ["D:7|****|****|70"]),
    ("parent_with_child", "SELECT * FROM customers ORDER BY id", ["D:1|****|****", "D:2|****|****", "D:7|****|****"]),
    ("partition", "SELECT * FROM pcards_1", ["D:1|****"]),
    ("partitioned", "SELECT * FROM pcards", ["D:1|****"]),
    # a parent shows its children's rows: a masked table's parent, and the
    # partitioned table of a masked partition (review, stop 39: in clear)
    ("parent", "SELECT * FROM cust_parent ORDER BY id", ["D:1|****|****", "D:2|****|****", "D:7|****|****"]),
    ("partitioned_over_masked_partition", "SELECT * FROM pmix", ["D:2|****"]),
    ("parent_col_in_where", "SELECT id FROM cust_parent WHERE cc LIKE '4%'", None),
    ("view_col_in_where", "SELECT id FROM cust_v WHERE shout LIKE '4%'", None),
    ("child_col_in_where", "SELECT id FROM cust_kid WHERE cc LIKE '4%'", None),
    ("partition_col_in_order", "SELECT id FROM pcards_1 ORDER BY cc", None),
    ("view_position_in_order", "SELECT * FROM cust_v ORDER BY 1", None),
]


def test_views_children_and_partitions_of_a_masked_table(enforcer, pg, tmp):
    """Under a schema.* rule, a view over a masked table, an inheritance child and a
    partition are other relations, and PostgreSQL reports their own OIDs for their
    columns: they were not masked (a documented gap until now). The catalog query now
    follows inheritance and view rules (recursively, materialized views too): a child's
    or partition's column of a masked column's name is masked, and every column of a
    view that reads a masked column anywhere, or a whole row, is (pg_depend does not say
    which output column comes from which). Such columns are denied outside the select
    list like the table's own; a view that reads no masked column stays in clear."""
    pg.sql(DEPENDENTS)
    enforcer.start(policy(pg, tmp, rules=RULES_SCHEMA))
    res = run(enforcer, pg, f"CASES = {DEPENDENT_CASES!r}\n" + r"""
SECRETS.extend(["4012888888881881", "6011111111111117", "kid@example.com", "378282246310005"])
out = {}
c = Rec("127.0.0.1", PORT)
for cid, sql, _ in CASES:
    out[cid] = step(c, Q(sql))
out["_leaks"] = leaks(c)
c.close()
print(json.dumps(out))
""")
    assert res.pop("_leaks") == [], res
    for cid, _, want in DEPENDENT_CASES:
        got = res[cid]
        if want is None:
            assert denied(got), (cid, got)
        else:
            assert [x for x in got if x.startswith("D:")] == want, (cid, got)



def test_a_masked_table_made_again_through_agentgate_is_masked_in_open_sessions(enforcer, pg, tmp):
    """A masked table dropped and created again during a session has a new OID, which
    the session's lineage (read at its start) did not know: its column came in clear
    until the session ended (a documented gap until stop 37). Enforce mode denies DDL on
    a table with masked columns (checked first); observe mode sends it all the same. A
    session that runs DDL now bumps its database's relations epoch once its change is
    done, and every masking session of the database reads its lineage again before its
    next statement while idle: the new table is masked in the session that was open, and
    in the one that made it."""
    pg.sql("CREATE TABLE people (id int, ssn text); ALTER TABLE people OWNER TO app; "
           "GRANT CREATE ON SCHEMA public TO app; INSERT INTO people VALUES (1, 'plainsecret-one')")
    rules = [{"target": "shop", "allow": {"statements": ["select", "insert", "create_table", "drop_table"],
                                          "tables": ["public.people"]},
              "mask": {"columns": ["public.people.ssn"]}}]
    enforcer.start(policy(pg, tmp, rules=rules))
    res = run(enforcer, pg, r"""
c = Conn("127.0.0.1", PORT)
print(json.dumps({"drop": summary(c.until_ready()) if c.send(Q("DROP TABLE people")) is None else None}))
""")
    assert res["drop"][0].startswith("E:42501:agentgate: denied: DDL on public.people not allowed"), res
    enforcer.stop()
    enforcer.start(policy(pg, tmp, rules=rules, mode="observe"))
    res = run(enforcer, pg, r"""
SECRETS[:] = ["plainsecret-one", "plainsecret-two"]
out = {}
one = Rec("127.0.0.1", PORT)
two = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT id, ssn FROM people"))
out["drop"] = step(two, Q("DROP TABLE people"))
out["create"] = step(two, Q("CREATE TABLE people (id int, ssn text)"))
out["insert"] = step(two, Q("INSERT INTO people VALUES (2, 'plainsecret-two')"))
out["after"] = step(one, Q("SELECT id, ssn FROM people"))
out["own"] = step(two, Q("SELECT id, ssn FROM people"))
out["leaks"] = leaks(one) + leaks(two)
print(json.dumps(out))
""")
    assert res["before"][:3] == ["T", "D:1|****", "C:SELECT 1"], res
    assert res["drop"][0] == "C:DROP TABLE" and res["create"][0] == "C:CREATE TABLE", res
    assert res["after"][:3] == ["T", "D:2|****", "C:SELECT 1"], res
    assert res["own"][:3] == ["T", "D:2|****", "C:SELECT 1"], res
    assert res["leaks"] == [], res
    assert enforcer.status()["counters"]["pg_lineage_refreshed"] >= 2


def test_a_view_made_past_agentgate_is_masked_once_the_lineage_ages(enforcer, pg, tmp):
    """A view over a masked table created by another client of the database (not
    through agentgate: no epoch tells) came in clear for the rest of a session that was
    open. A lineage older than AGENTGATE_PG_LINEAGE_MS (default 60 s; 1 s here) is read
    again before the session's next statement while idle."""
    rules = RULES_MASK_CC
    enforcer.start(policy(pg, tmp, rules=rules), env={"AGENTGATE_PG_LINEAGE_MS": "1000"})
    with other_client(pg, tmp, "CREATE VIEW late_v AS SELECT id, cc FROM customers; GRANT SELECT ON late_v TO app") as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT id, cc FROM customers ORDER BY 1"))
turn(0)
time.sleep(1.5)
out["view"] = step(one, Q("SELECT id, cc FROM late_v"))
out["leaks"] = leaks(one)
print(json.dumps(out))
""")
    assert res["before"][:4] == ["T", "D:1|****", "D:2|****", "C:SELECT 2"], res
    # every column of a view that reads a masked column is masked (a masked int is NULL)
    assert res["view"][:4] == ["T", "D:NULL|****", "D:NULL|****", "C:SELECT 2"], res
    assert res["leaks"] == [], res


def test_a_long_mask_list_still_masks(enforcer, pg, tmp):
    """The lineage query names every masked column's table; a long mask list
    (80 columns of a table whose schema and table names are 63 bytes each)
    made its text overflow a fixed buffer, the query was skipped and every
    masked column came back in clear (review, stop 34). Its text is sized
    to the list now, and a list it cannot build refuses the session."""
    from test_postgres import psql
    sch, tab = "s" * 63, "t" * 63
    cols = [f"c{i}" for i in range(80)]
    pg.sql(f'CREATE SCHEMA "{sch}"; CREATE TABLE "{sch}"."{tab}" ({", ".join(c + " text" for c in cols)});'
           f'GRANT USAGE ON SCHEMA "{sch}" TO app; GRANT SELECT ON "{sch}"."{tab}" TO app;')
    rules = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.customers"]},
              "mask": {"columns": [f"{sch}.{tab}.{c}" for c in cols] + ["public.customers.email"]}}]
    enforcer.start(policy(pg, tmp, rules=rules))
    rc, out, err = psql(enforcer, pg, "SELECT email FROM customers ORDER BY id")
    assert rc == 0, err
    assert out.split() == ["****", "****"], out



def test_error_text_masked_before_it_is_cut(enforcer, pg, tmp):
    """An error's fields are cut to 4 KiB; cut before the detectors ran, a
    card number straddling the cut kept its first digits, which no
    detector saw whole (review, stop 34). Masked first, then cut."""
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = agent_py(enforcer, f"""
    import psycopg2
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    out = {{}}
    for pad in (4048, 4050, 4052, 4054):   # the card across byte 4096 of the message
        try:
            c.cursor().execute("SELECT (repeat('x', %d) || '4111111111111111')::int" % pad)
            out[pad] = "ran"
        except psycopg2.Error as e:
            out[pad] = [e.pgcode, e.diag.message_primary]
    print(json.dumps(out))
    """)
    for pad, (code, msg) in res.items():
        assert code == "22P02", (pad, code)
        assert len(msg.encode()) <= 4096, (pad, len(msg))
        assert "4111" not in msg[-40:], (pad, msg[-60:])


def test_a_mask_that_names_no_column_refuses_the_session(enforcer, pg, tmp):
    """A column mask the catalog does not have (a typo, a table written in
    another case than PostgreSQL folds it to, another schema) masked
    nothing, silently: the e-mails came back in clear and could be searched
    in WHERE (review, stop 19). The session is now refused, saying why."""
    from test_postgres import psql
    for col in ["public.customers.emial", "public.Customers.email", "app.customers.email"]:
        rules = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.customers"]},
                  "mask": {"columns": [col]}}]
        enforcer.start(policy(pg, tmp, rules=rules))
        rc, out, err = psql(enforcer, pg, "SELECT email FROM customers ORDER BY id")
        assert rc != 0 and "example.com" not in out, (col, out)
        assert "agentgate: denied: the policy masks column " + col in err, (col, err)
        enforcer.stop()
    rules = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.customers"]},
              "mask": {"columns": ["public.customers.email"]}}]
    enforcer.start(policy(pg, tmp, rules=rules))
    rc, out, err = psql(enforcer, pg, "SELECT email FROM customers ORDER BY id")
    assert rc == 0 and "****" in out and "example.com" not in out, (out, err)


# A Flush or Sync with a body: PostgreSQL refuses it (pq_getmsgend), and after the
# Flush's error skips to the next Sync; the module had no request to charge the error
# to, took it as the Query's, and was left with the skipped Binds, Describes and
# Execute pending: the next batch's rows were read under another portal's plan
# (review, stop 27). Now the session ends first.
MALFORMED_CONTROL = r"""
out = {}
s_id, s_cc = "SELECT id FROM customers", "SELECT cc FROM customers"
for name, bad in (("flush", msg(b"H", b"\0")), ("sync", msg(b"S", b"\0"))):
    c = Rec("127.0.0.1", PORT)
    w1 = (P("a", s_id) + P("b", s_cc) + bad + Q("SELECT 1") + B("c", "a") + B("c2", "a") +
          D(b"P", "c") + D(b"P", "c") + E("c") + S)
    w2 = B("m", "b") + B("n", "a") + D(b"P", "m") + D(b"P", "n") + E("m") + S
    r1 = step(c, w1)
    try:
        r2 = step(c, w2)
    except OSError as e:
        r2 = ["NOANSWER:" + type(e).__name__]
    out[name] = [r1, r2, leaks(c)]
    c.close()
print(json.dumps(out))
"""


def test_malformed_flush_or_sync_ends_the_session(enforcer, pg, tmp):
    enforcer.start(policy(pg, tmp, rules=RULES_RO))
    res = run(enforcer, pg, MALFORMED_CONTROL)
    for name, (r1, r2, lk) in res.items():
        assert lk == [], (name, r1, r2)
        assert any(x.startswith("E:08P01:agentgate: malformed") for x in r1), (name, r1)
        assert not [x for x in r1 + r2 if x.startswith("D:") and "****" not in x and x != "D:1"], (name, r1, r2)


# COPY FROM STDIN, as libpq sends it in the extended protocol (Parse, Bind, Execute,
# Sync; then the data, CopyDone and a second Sync): the server ignores the first Sync
# while in COPY, so one ReadyForQuery answers two Syncs. The module counted both, and
# the next Query ended the session ("answers no pending request"); a stray Sync could
# also shift the queue (review, stop 27).
COPY_SEQS = r"""
def until(c, want):
    got = []
    while True:
        t, b = c.read()
        got.append((t, b))
        if t is None or t in want:
            return summary(got)
def count(c):
    return step(c, Q("SELECT count(*) FROM orders"))
cp = "COPY orders (customer_id, total) FROM STDIN"
out = {}
c = Rec("127.0.0.1", PORT)
# extended, libpq's way
out["extended"] = [until(c, (b"G", b"E")) if c.send(P("", cp) + B("", "") + E("") + S) is None else None,
                   step(c, msg(b"d", b"1\t10\n") + msg(b"c") + S), count(c)]
# simple, with a Sync and a Flush inside the data (the server ignores them)
c.send(Q(cp))
out["simple"] = [until(c, (b"G", b"E")),
                 step(c, msg(b"d", b"1\t11\n") + S + H + msg(b"d", b"2\t12\n") + msg(b"c")), count(c)]
# a bad row: the server fails the COPY; in the extended protocol it then skips to
# the next Sync it receives (the one inside the data never reaches it)
c.send(P("", cp) + B("", "") + E("") + S)
out["error"] = [until(c, (b"G", b"E")),
                step(c, msg(b"d", b"x\ty\n") + S + msg(b"d", b"1\t13\n") + msg(b"c") +
                     P("", "SELECT 42") + B("", "") + E("") + S), count(c)]
# COPY among other statements of one Query: refused
out["multi"] = [step(c, Q(cp + "; SELECT 1")), count(c)]
# CopyFail
c.send(Q(cp))
out["fail"] = [until(c, (b"G", b"E")), step(c, msg(b"d", b"1\t14\n") + msg(b"f", b"changed my mind\0")), count(c)]
# a Query inside the COPY: the session ends
c.send(Q(cp))
out["query_inside"] = [until(c, (b"G", b"E")), step(c, Q("SELECT 1"))]
c.close()
print(json.dumps(out))
"""


def test_copy_from_stdin_is_followed_as_the_server_reads_it(enforcer, pg, tmp):
    from test_postgres import RULES_RW
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = run(enforcer, pg, COPY_SEQS)
    ext = res["extended"]
    assert ext[0][-1] == "G" and ext[1][:2] == ["C:COPY 1", "ZI"], ext
    assert ext[2][:3] == ["T", "D:6", "C:SELECT 1"], ext
    simple = res["simple"]
    assert simple[0][-1] == "G" and simple[1][:2] == ["C:COPY 2", "ZI"], simple
    assert simple[2][:3] == ["T", "D:8", "C:SELECT 1"], simple
    err = res["error"]
    assert err[0][-1] == "G" and err[1][0].startswith("E:22P02:") and err[1][1:] == ["ZI"], err
    assert err[2][:3] == ["T", "D:8", "C:SELECT 1"], err
    multi = res["multi"]
    assert denied(multi[0]) and "only statement" in multi[0][0], multi
    assert multi[1][:3] == ["T", "D:8", "C:SELECT 1"], multi
    fail = res["fail"]
    assert fail[1][0].startswith("E:57014:") and fail[2][:3] == ["T", "D:8", "C:SELECT 1"], fail
    qi = res["query_inside"]
    assert qi[0][-1] == "G" and any(x.startswith("E:08P01:agentgate: message 'Q' during COPY") for x in qi[1]), qi
    assert pg.sql("SELECT count(*) FROM orders") == "8"

def test_a_lineage_refresh_keeps_the_agents_unnamed_statement(enforcer, pg, tmp):
    """The refresh read the lineage (and the names) by a simple Query, which drops the
    unnamed prepared statement: an agent that prepared one (libpq's PQprepare with an
    empty name), then a named one, got 'unnamed prepared statement does not exist'
    from its next Bind (review, stop 37). Our queries now go by the extended protocol
    under a statement name of ours, which the agent may not Parse."""
    rules = RULES_MASK_CC
    enforcer.start(policy(pg, tmp, rules=rules), env={"AGENTGATE_PG_LINEAGE_MS": "1000"})
    before = enforcer.status()["counters"].get("pg_lineage_refreshed", 0)
    res = run(enforcer, pg, r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["unnamed"] = step(one, P("", "SELECT id, cc FROM customers ORDER BY 1") + S)
time.sleep(1.5)                                    # the lineage is due
out["named"] = step(one, P("s1", "SELECT id FROM customers ORDER BY 1") + S)
out["bind"] = step(one, B("", "") + D(b"P", "") + E("") + S)
out["ours"] = step(one, P("agentgate_refresh", "SELECT 1") + S)
out["after"] = step(one, B("", "s1") + E("") + S)
out["leaks"] = leaks(one)
print(json.dumps(out))
""")
    assert res["unnamed"] == ["1", "ZI"], res
    assert res["named"] == ["1", "ZI"], res
    assert res["bind"] == ["2", "T", "D:1|****", "D:2|****", "C:SELECT 2", "ZI"], res
    assert denied(res["ours"]) and "agentgate's own" in res["ours"][0], res
    assert res["after"] == ["2", "D:1", "D:2", "C:SELECT 2", "ZI"], res
    assert res["leaks"] == [], res
    # the refresh ran between the two Parses (else the test shows nothing)
    assert enforcer.status()["counters"]["pg_lineage_refreshed"] >= before + 1


def test_a_relation_made_past_the_lineage_is_read_before_it_is_judged(enforcer, pg, tmp):
    """A view over a masked table made by another client (not through agentgate) was
    unknown to the session's lineage until it aged (60 s): inside a transaction a plain
    column of it was masked whole, but an expression, a WHERE or an ORDER BY over it
    came in clear (known limits, stop 38). The session now keeps the names of the
    database's relations from its lineage read: a statement naming one it does not know
    waits while the lineage is read again (inside the agent's transaction too), and is
    judged with it. A relation dropped and made again under a known name (a new OID) is
    still caught by the OID check: masked whole, then read."""
    rules = RULES_MASK_CC
    pg.sql("CREATE VIEW swap_v AS SELECT id, 'x'::text AS cc FROM customers; GRANT SELECT ON swap_v TO app")
    enforcer.start(policy(pg, tmp, rules=rules))
    with other_client(pg, tmp,
                      "CREATE VIEW tx_v AS SELECT id, cc FROM customers;"
                      "CREATE TABLE tx_t (id int, note text); INSERT INTO tx_t VALUES (1, 'hello');"
                      "GRANT SELECT ON tx_v, tx_t TO app",
                      "CREATE VIEW idle_v AS SELECT id, cc FROM customers; GRANT SELECT ON idle_v TO app",
                      "DROP VIEW swap_v; CREATE VIEW swap_v AS SELECT id, cc FROM customers;"
                      "GRANT SELECT ON swap_v TO app") as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["begin"] = step(one, Q("BEGIN"))
out["before"] = step(one, Q("SELECT id, cc FROM customers ORDER BY 1"))
turn(0)
out["tx_view"] = step(one, Q("SELECT id, cc FROM tx_v"))
out["tx_table"] = step(one, Q("SELECT id, note FROM tx_t"))
out["tx_expr"] = step(one, Q("SELECT upper(cc) FROM tx_v"))
out["rollback"] = step(one, Q("ROLLBACK"))
turn(1)
out["idle_expr"] = step(one, Q("SELECT upper(cc) FROM idle_v WHERE id = 1"))
out["idle_where"] = step(one, Q("SELECT id FROM idle_v WHERE cc LIKE '4%'"))
out["idle_order"] = step(one, Q("SELECT id FROM idle_v ORDER BY cc"))
out["idle_view"] = step(one, Q("SELECT id, cc FROM idle_v"))
out["swap_before"] = step(one, Q("SELECT id, cc FROM swap_v WHERE id = 1"))
turn(2)
out["swap_plain"] = step(one, Q("SELECT id, cc FROM swap_v WHERE id = 1"))
out["swap_expr"] = step(one, Q("SELECT upper(cc) FROM swap_v WHERE id = 1"))
out["leaks"] = leaks(one)
print(json.dumps(out))
""")
    assert res["before"][:4] == ["T", "D:1|****", "D:2|****", "C:SELECT 2"], res
    # inside the transaction: read again before the first statement that names them
    assert res["tx_view"][:4] == ["T", "D:NULL|****", "D:NULL|****", "C:SELECT 2"], res
    assert res["tx_table"][:3] == ["T", "D:1|hello", "C:SELECT 1"], res
    assert denied(res["tx_expr"]) and "masked column cc" in res["tx_expr"][0], res
    # at idle, long before the lineage ages (60 s)
    for k in ("idle_expr", "idle_where", "idle_order"):
        assert denied(res[k]) and "masked column cc" in res[k][0], (k, res)
    assert res["idle_view"][:4] == ["T", "D:NULL|****", "D:NULL|****", "C:SELECT 2"], res
    # a known name with a new OID: masked whole, which makes the lineage due
    assert res["swap_before"][:3] == ["T", "D:1|x", "C:SELECT 1"], res
    assert res["swap_plain"][:3] == ["T", "D:NULL|****", "C:SELECT 1"], res
    assert denied(res["swap_expr"]) and "masked column cc" in res["swap_expr"][0], res
    assert res["leaks"] == [], res
    c = enforcer.status()["counters"]
    assert c["pg_lineage_unknown_masked"] >= 2 and c["pg_lineage_refreshed"] >= 3, c


def test_a_relation_the_transactions_snapshot_hides_is_denied(enforcer, pg, tmp):
    """In a REPEATABLE READ transaction the lineage read sees the catalog as of the
    transaction's snapshot, while PostgreSQL resolves a relation's name afresh: a view
    made after the snapshot is found by the agent's statement and not by the read. Such
    a statement is denied, saying to run it in a new transaction; there the view is
    known. A statement behind others still in flight is denied likewise (the lineage
    cannot be read while they run), and the next one alone is read for."""
    rules = RULES_MASK_CC
    enforcer.start(policy(pg, tmp, rules=rules))
    with other_client(pg, tmp,
                      "CREATE VIEW rr_v AS SELECT id, cc FROM customers; GRANT SELECT ON rr_v TO app",
                      "CREATE VIEW pipe_v AS SELECT id, cc FROM customers; GRANT SELECT ON pipe_v TO app") as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["begin"] = step(one, Q("BEGIN ISOLATION LEVEL REPEATABLE READ"))
out["snapshot"] = step(one, Q("SELECT id FROM customers ORDER BY 1"))
turn(0)
out["rr_expr"] = step(one, Q("SELECT upper(cc) FROM rr_v"))
out["rr_plain"] = step(one, Q("SELECT id, cc FROM rr_v"))
out["rollback"] = step(one, Q("ROLLBACK"))
out["new_tx_expr"] = step(one, Q("SELECT upper(cc) FROM rr_v"))
turn(1)
out["piped"] = step(one, Q("SELECT id FROM customers WHERE id = 1") + Q("SELECT upper(cc) FROM pipe_v"), 2)
out["alone"] = step(one, Q("SELECT upper(cc) FROM pipe_v"))
out["leaks"] = leaks(one)
print(json.dumps(out))
""")
    assert res["snapshot"][:2] == ["T", "D:1"], res
    assert denied(res["rr_expr"]), res
    assert "rr_v is not in the masked columns' lineage read in this transaction" in res["rr_expr"][0], res
    # the transaction failed: no read there, denied (PostgreSQL would refuse it too: 25P02)
    assert denied(res["rr_plain"]) and "rr_v is newer than the masked columns' lineage" in res["rr_plain"][0], res
    assert res["rollback"][:2] == ["C:ROLLBACK", "ZI"], res
    assert denied(res["new_tx_expr"]) and "masked column cc" in res["new_tx_expr"][0], res
    piped = json.dumps(res["piped"])
    assert "D:1" in piped and "pipe_v is newer than the masked columns' lineage" in piped, res
    assert denied(res["alone"]) and "masked column cc" in res["alone"][0], res
    assert res["leaks"] == [], res


def test_parse_and_failed_transactions_are_read_for_too(enforcer, pg, tmp):
    """Review of the reads for unknown relations: a Parse set the session's unsynced
    mark before it was judged, so it never got the read and was always refused as if
    requests were in flight (inside a transaction, until it ended); and a failed
    transaction skipped the check, though PostgreSQL still runs a ROLLBACK TO SAVEPOINT
    and what follows it in the message, so an expression over a new view came in
    clear. A Parse is read for like a Query, and a failed transaction's statement that
    names an unknown relation is denied."""
    rules = RULES_MASK_CC
    enforcer.start(policy(pg, tmp, rules=rules))
    with other_client(pg, tmp,
                      "CREATE VIEW ext_v AS SELECT id, cc FROM customers; GRANT SELECT ON ext_v TO app",
                      "CREATE VIEW ext2_v AS SELECT id, cc FROM customers; GRANT SELECT ON ext2_v TO app",
                      "CREATE VIEW sp_v AS SELECT id, cc FROM customers; GRANT SELECT ON sp_v TO app") as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT id, cc FROM customers WHERE id = 1"))
turn(0)
out["idle_parse"] = step(one, P("", "SELECT upper(cc) FROM ext_v WHERE id = 1") + B("", "") + E("") + S)
out["begin"] = step(one, Q("BEGIN"))
turn(1)
out["tx_parse"] = step(one, P("", "SELECT id, cc FROM ext2_v") + B("", "") + E("") + S)
out["savepoint"] = step(one, Q("SAVEPOINT a"))
out["fail"] = step(one, Q("SELECT 1/0"))
turn(2)
out["rollback_to"] = step(one, Q("ROLLBACK TO SAVEPOINT a; SELECT upper(cc) FROM sp_v"))
out["end"] = step(one, Q("ROLLBACK"))
out["leaks"] = leaks(one)
print(json.dumps(out))
""")
    assert res["before"][:3] == ["T", "D:1|****", "C:SELECT 1"], res
    assert res["idle_parse"][0].startswith("E:42501:agentgate: denied: masked column cc"), res
    assert res["tx_parse"][:6] == ["1", "2", "D:NULL|****", "D:NULL|****", "C:SELECT 2", "ZT"], res
    assert res["fail"][0].startswith("E:22012"), res
    assert denied(res["rollback_to"]) and "sp_v is newer than the masked columns' lineage" in res["rollback_to"][0], res
    assert res["leaks"] == [], res


def test_a_create_is_not_read_for_but_a_relation_it_shares_is(enforcer, pg, tmp):
    """The relation a CREATE makes is not in the lineage read yet: it does not make the
    session read the lineage again, so a table the agent creates and fills inside its
    transaction works. But only when no other statement of the message names it: a
    SELECT before a CREATE ... IF NOT EXISTS of a view's name made past agentgate would
    read that view (the CREATE then only notes that it exists)."""
    rules = [{"target": "shop", "allow": {"statements": ["select", "insert", "create_table", "create_index",
                                                         "drop_index", "drop_table", "select_into", "rename"],
                                          "tables": ["public.*", "pg_temp.*"]},
              "mask": {"columns": ["public.customers.cc"]}}]
    pg.sql("GRANT CREATE ON SCHEMA public TO app")
    enforcer.start(policy(pg, tmp, rules=rules))
    with other_client(pg, tmp, "CREATE VIEW dba_v AS SELECT id, cc FROM customers; GRANT SELECT ON dba_v TO app",
                      "CREATE VIEW v AS SELECT id, cc FROM customers; GRANT SELECT ON v TO app") as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT id, cc FROM customers WHERE id = 1"))
turn(0)
out["shared"] = step(one, Q("SELECT upper(cc) FROM dba_v; CREATE TABLE IF NOT EXISTS dba_v (a int)"))
out["begin"] = step(one, Q("BEGIN"))
out["create"] = step(one, Q("CREATE TABLE own_t (id int)"))
out["insert"] = step(one, Q("INSERT INTO own_t VALUES (1)"))
out["select"] = step(one, Q("SELECT id FROM own_t"))
out["commit"] = step(one, Q("COMMIT"))
out["temp"] = step(one, Q("BEGIN; CREATE TEMP TABLE tt (id int); INSERT INTO tt VALUES (2)"))
out["temp_select"] = step(one, Q("SELECT id FROM tt"))
out["temp_commit"] = step(one, Q("COMMIT"))
# names that are never relations a read could find: an index, a DROP ... IF EXISTS
out["ddl"] = step(one, Q("BEGIN") + Q("CREATE INDEX own_i ON own_t (id)"), 2)
# an index is no relation the read takes: still unknown after a read inside a READ COMMITTED
# transaction, which saw the catalog as it is now
out["ddl_rename"] = step(one, Q("ALTER INDEX own_i RENAME TO own_j"))
out["ddl_rest"] = step(one, Q("DROP INDEX own_j") + Q("DROP TABLE IF EXISTS nope_t") +
                            Q("SELECT id INTO own_t2 FROM own_t") + Q("COMMIT"), 4)
# a temporary table named unqualified, rolled back: the name is the database's view now
out["tv"] = step(one, Q("BEGIN") + Q("CREATE TEMP TABLE v (id int)"), 2)
out["tv_read"] = step(one, Q("SELECT id FROM v"))
turn(1)
out["tv_gone"] = step(one, Q("ROLLBACK; SELECT upper(cc) FROM v"))
out["leaks"] = leaks(one)
print(json.dumps(out))
""")
    assert res["create"][:2] == ["C:CREATE TABLE", "ZT"], res
    assert res["insert"][:2] == ["C:INSERT 0 1", "ZT"], res
    assert res["select"][:3] == ["T", "D:1", "C:SELECT 1"], res
    assert res["commit"][:2] == ["C:COMMIT", "ZI"], res
    # the session's own temporary table, named unqualified, inside its transaction
    assert res["temp"][-1] == "ZT", res["temp"]
    assert res["temp_select"][:4] == ["T", "D:2", "C:SELECT 1", "ZT"], res
    assert res["temp_commit"][:2] == ["C:COMMIT", "ZI"], res
    ddl = json.dumps([res["ddl"], res["ddl_rename"], res["ddl_rest"]])
    assert "E:" not in ddl and "C:CREATE INDEX" in ddl and "C:ALTER INDEX" in ddl, ddl
    assert "C:DROP INDEX" in ddl and "C:SELECT 1" in ddl and "C:COMMIT" in ddl, ddl
    assert res["tv_read"][:3] == ["T", "C:SELECT 0", "ZT"], res
    # the ROLLBACK before it ran (as PostgreSQL runs it), the SELECT was denied
    assert res["tv_gone"][0] == "C:ROLLBACK" and denied(res["tv_gone"]), res
    assert "masked column cc" in first_error(res["tv_gone"]), res
    assert denied(res["shared"]) and "masked column cc" in first_error(res["shared"]), res
    assert res["leaks"] == [], res


def test_verdicts_judged_before_a_lineage_change_are_not_used_after_it(enforcer, pg, tmp):
    """An expression over a view changed in place past agentgate (CREATE OR REPLACE
    VIEW keeps its name and OID) is not masked until the lineage is read again (a known
    limit). But the verdict cache and prepared statements kept what was judged before
    the read: the same text with other values, or a statement prepared before, went on
    reading the masked column in clear after the read knew the view (review, stop 38).
    A read that finds another lineage gives the session a new key for the cache, and
    prepared statements judged before it are refused."""
    rules = RULES_MASK_CC
    pg.sql("CREATE VIEW cache_v AS SELECT id, 'x'::text AS cc FROM customers; GRANT SELECT ON cache_v TO app")
    enforcer.start(policy(pg, tmp, rules=rules))
    with other_client(pg, tmp, "CREATE OR REPLACE VIEW cache_v AS SELECT id, cc FROM customers",
                      "CREATE TABLE read_t (id int); GRANT SELECT ON read_t TO app") as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT id, cc FROM customers ORDER BY 1"))
turn(0)
# the window: an expression over the changed view is judged harmless (known limit)
out["window"] = step(one, Q("SELECT upper(cc) FROM cache_v WHERE id = 1"))
out["prepare"] = step(one, P("s", "SELECT upper(cc) FROM cache_v") + S)
# a relation the session does not know: the lineage is read again first
turn(1)
out["read"] = step(one, Q("SELECT id FROM read_t"))
out["cached"] = step(one, Q("SELECT upper(cc) FROM cache_v WHERE id = 2"))
out["bind"] = step(one, B("", "s") + E("") + S)
print(json.dumps(out))
""")
    assert res["before"][:4] == ["T", "D:1|****", "D:2|****", "C:SELECT 2"], res
    assert res["window"][:3] == ["T", "D:4111111111111111", "C:SELECT 1"], res   # the known limit
    assert res["prepare"] == ["1", "ZI"], res
    assert res["read"][:2] == ["T", "C:SELECT 0"], res
    assert denied(res["cached"]), res
    assert res["bind"][0].startswith("E:42501:agentgate: denied: the masked columns' lineage changed"), res
    assert "5500005555555559" not in json.dumps(res["cached"] + res["bind"]), res
    assert enforcer.status()["counters"]["pg_lineage_refreshed"] >= 1


# The README's event trigger (PostgreSQL targets): DDL announces itself on agentgate_catalog.
EVENT_TRIGGER = """
CREATE OR REPLACE FUNCTION agentgate_catalog_notify() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('agentgate_catalog', txid_current()::text); END $$;
CREATE EVENT TRIGGER agentgate_ddl ON ddl_command_end EXECUTE FUNCTION agentgate_catalog_notify();
"""
EVENT_TRIGGER_DROP = "DROP EVENT TRIGGER IF EXISTS agentgate_ddl; DROP FUNCTION IF EXISTS agentgate_catalog_notify()"


def test_a_view_replaced_past_agentgate_is_known_at_once_with_the_event_trigger(enforcer, pg, tmp):
    """A view replaced in place by another client (CREATE OR REPLACE VIEW keeps its
    OID) showed the masked column through its new definition until the session read
    the lineage again, up to 60 s later. With the README's event trigger installed,
    the change is announced (NOTIFY agentgate_catalog) as it commits, every session
    LISTENs, and an idle session reads the lineage again before its next statement:
    the expression over the masked column is denied at once, and the agent never
    sees the notification. Without the trigger the window stays (the test before)."""
    pg.sql("CREATE VIEW notify_v AS SELECT id, 'x'::text AS cc FROM customers; GRANT SELECT ON notify_v TO app")
    pg.sql(EVENT_TRIGGER)
    try:
        enforcer.start(policy(pg, tmp, rules=RULES_MASK_CC))
        with other_client(pg, tmp, "CREATE OR REPLACE VIEW notify_v AS SELECT id, cc FROM customers") as pre:
            res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT upper(cc) FROM notify_v WHERE id = 1"))
turn(0)
time.sleep(0.5)   # the notification reaches the idle session
out["after"] = step(one, Q("SELECT upper(cc) FROM notify_v WHERE id = 1"))
out["plain"] = step(one, Q("SELECT cc FROM notify_v"))   # every column of such a view is masked
# the ways around it: silence the session, or make every session read the catalog
out["unlisten"] = step(one, Q("UNLISTEN *"))
out["discard"] = step(one, Q("DISCARD ALL"))
out["notify"] = step(one, Q("NOTIFY agentgate_catalog, '1'"))
out["pg_notify"] = step(one, Q("SELECT pg_notify('agentgate_catalog', '1')"))
out["leaks"] = leaks(one)
out["notifications"] = sum(1 for t, _ in one.rx if t == b"A")
print(json.dumps(out))
""")
        assert res["before"][:3] == ["T", "D:X", "C:SELECT 1"], res
        assert denied(res["after"]) and "masked column" in res["after"][0], res
        assert res["plain"][:4] == ["T", "D:****", "D:****", "C:SELECT 2"], json.dumps(res)
        assert "4111111111111111" not in json.dumps(res), res
        assert res["leaks"] == [], res
        assert res["notifications"] == 0, res   # ours never reach the agent
        for k in ("unlisten", "discard", "notify", "pg_notify"):
            assert denied(res[k]), (k, res[k])
        assert enforcer.status()["counters"]["pg_catalog_notified"] >= 1
    finally:
        pg.sql(EVENT_TRIGGER_DROP)
        pg.sql("DROP VIEW IF EXISTS notify_v")


def test_sessions_of_a_hot_standby_start_though_they_cannot_listen(enforcer, tmp):
    """A hot standby refuses LISTEN ("cannot execute LISTEN during recovery"): the
    session start, which sends it after its catalog reads, lets that error pass and
    the session works, masked, as before stop 41. The standby here is a copy of the
    test cluster started with standby.signal and no primary: in recovery for good."""
    from pg import Postgres
    d = os.path.join(tmp, "standby")
    os.makedirs(d)
    os.chmod(tmp, 0o755)   # the server's user reaches its directory (the pg fixture does the same)
    os.chmod(d, 0o755)
    sb = Postgres(d, standby=True)
    try:
        assert sb.sql("SELECT pg_is_in_recovery()") == "t"
        # a session without column masks reads only the names before the LISTEN
        # (review, stop 41: its LISTEN error was taken for a failed read)
        enforcer.start(policy(sb, tmp, rules=[{"target": "shop", "allow": {"statements": ["select"],
                                                                          "tables": ["public.customers"]}}]))
        res = run(enforcer, sb, r"""
one = Rec("127.0.0.1", PORT)
print(json.dumps({"select": step(one, Q("SELECT id, cc FROM customers ORDER BY 1"))}))
""")
        assert res["select"][:4] == ["T", "D:1|4111111111111111", "D:2|5500005555555559", "C:SELECT 2"], res
        enforcer.stop()
        enforcer.start(policy(sb, tmp, rules=RULES_MASK_CC))
        res = run(enforcer, sb, r"""
one = Rec("127.0.0.1", PORT)
print(json.dumps({"select": step(one, Q("SELECT id, cc FROM customers ORDER BY 1")),
                  "write": step(one, Q("SELECT 1 FROM customers FOR UPDATE"))}))
""")
        assert res["select"][:4] == ["T", "D:1|****", "D:2|****", "C:SELECT 2"], res
        assert res["write"][0].startswith("E:42501:agentgate: denied"), res
    finally:
        sb.stop(immediate=True)


def test_a_lineage_read_the_agent_cancels_ends_the_session(enforcer, pg, tmp):
    """The agent could keep a stale lineage for good by cancelling each read of it with
    its own CancelRequest (or a short statement_timeout): the read failed, the old
    lineage stayed, and the next try came 60 s later (review, stop 38). A lineage read
    that fails now ends the session (fail closed); the agent reconnects."""
    rules = RULES_MASK_CC
    enforcer.start(policy(pg, tmp, rules=rules), env={"AGENTGATE_PG_LINEAGE_MS": "1000"})
    def hold_catalog():   # the read waits on this lock: the cancel lands in it
        p = subprocess.Popen(["psql", "-X", "-h", pg.sock, "-p", str(pg.port), "-U", "postgres", "-d", "shop",
                              "-c", "BEGIN", "-c", "LOCK TABLE pg_catalog.pg_class IN ACCESS EXCLUSIVE MODE",
                              "-c", "SELECT pg_sleep(3)", "-c", "COMMIT"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return p

    with other_client(pg, tmp, hold_catalog) as pre:
        res = run(enforcer, pg, pre + r"""
out = {}
one = Rec("127.0.0.1", PORT)
out["before"] = step(one, Q("SELECT id, cc FROM customers ORDER BY 1"))
time.sleep(1.2)                                    # the lineage is due
turn(0)
one.send(Q("SELECT id, cc FROM customers ORDER BY 1"))   # the read goes first, and waits
time.sleep(0.5)
cancel("127.0.0.1", PORT, *one.key)
out["after"] = step(one, b"")
out["then"] = step(one, b"")
print(json.dumps(out))
""")
    assert res["before"][:4] == ["T", "D:1|****", "D:2|****", "C:SELECT 2"], res
    assert res["after"][0].startswith("E:57P01:agentgate: the masked columns' lineage could not be read again"), res
    assert res["then"] == ["EOF"], res                  # the session is over


def test_values_whose_escapes_spell_what_the_detectors_mask(enforcer, pg, tmp):
    """A value whose own escapes spell an address or a card (a json value Python's
    json.dumps wrote, "jos\\u00e9@ex\\u00e4mple.com"; a page's "ada&#64;example.com")
    passed the detectors, which read it as written, and its reader undoes them (found by
    review, stop 65). Such a value goes masked whole: '****' as text, '"****"' as json and
    jsonb (with jsonb's version byte in binary), NULL for other types; quoted in an error,
    the field is '****'; a COPY row holding one ends the session."""
    pg.sql("ALTER TABLE notes ADD COLUMN j json, ADD COLUMN jb jsonb, ADD COLUMN arr text[]; "
           "INSERT INTO notes (id, body, j, jb, arr) VALUES "
           "(10, 'write to ada&#64;example&#46;com', '{\"e\": \"jos\\u00e9@ex\\u00e4mple.com\"}', "
           "'{\"h\": \"ada&#64;example.com\"}', '{\"ada&#64;example.com\"}'), "
           "(11, 'plain &amp; simple', '{\"n\": \"caf\\u00e9\"}', '{\"e\": \"ada@example.com\"}', '{x}')")
    # what a reader makes of them (the test could fail)
    assert pg.sql("SELECT (j->>'e') FROM notes WHERE id = 10") == "josé@exämple.com"
    assert pg.sql("SELECT j::text FROM notes WHERE id = 10") == '{"e": "jos\\u00e9@ex\\u00e4mple.com"}'
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = agent_py(enforcer, f"""
    import psycopg2, io
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    out = {{}}
    cur.execute("SELECT id, body, j::text, jb::text, arr FROM notes WHERE id >= 10 ORDER BY id")
    out["rows"] = cur.fetchall()
    cur.execute("SELECT j, jb FROM notes WHERE id = 10")
    out["json"] = cur.fetchall()
    try:
        cur.execute("SELECT j::text::int FROM notes WHERE id = 10")
        out["err"] = "ran"
    except psycopg2.Error as e:
        out["err"] = [e.pgcode, e.diag.message_primary]
    try:
        cur.copy_expert("COPY (SELECT j FROM notes WHERE id = 10) TO STDOUT WITH (FORMAT csv)", io.StringIO())
        out["copy"] = "ran"
    except psycopg2.Error as e:
        out["copy"] = [e.pgcode, str(e)]
    # COPY's text format doubles the backslash its reader takes back
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    try:
        c.cursor().copy_expert("COPY (SELECT j FROM notes WHERE id = 10) TO STDOUT", io.StringIO())
        out["copy_text"] = "ran"
    except psycopg2.Error as e:
        out["copy_text"] = [e.pgcode, str(e)]
    buf = io.StringIO()
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.cursor().copy_expert("COPY (SELECT j FROM notes WHERE id = 11) TO STDOUT", buf)
    out["copy_plain"] = buf.getvalue()
    print(json.dumps(out))
    """)
    assert res["copy_text"][0] == "42501" and "escapes" in res["copy_text"][1], res["copy_text"]
    assert res["copy_plain"] == '{"n": "caf\\\\u00e9"}\n', res["copy_plain"]
    rows = res["rows"]
    assert rows[0] == [10, "****", "****", "****", None], rows
    # nothing hidden: as they were (an '&amp;', an escape that spells no address)
    assert rows[1] == [11, "plain &amp; simple", '{"n": "caf\\u00e9"}', '{"e": "****"}', ["x"]], rows
    assert res["json"] == [["****", "****"]], res["json"]
    assert res["err"][0] == "22P02" and res["err"][1] == "****", res["err"]
    assert res["copy"][0] == "42501" and "escapes" in res["copy"][1], res["copy"]
    # binary results: json's is its text, jsonb's has its version byte
    out = run(enforcer, pg, r"""
c = Conn("127.0.0.1", PORT)
c.send(P("", "SELECT j, jb, body FROM notes WHERE id = 10", []) + B("", "", [], [1]) + E("") + S)
print(json.dumps(summary(c.until_ready())))
""")
    assert 'D:"****"|\x01"****"|****' in out, out


def test_escapes_under_another_layer_of_escaping(enforcer, pg, tmp):
    """A value whose own escapes spell an address is masked whole in a text column
    ('ada\\u0040example.com' -> '****'). The same value reached the agent in clear
    when one more layer of escaping wrapped it: COPY's default text format doubles
    its backslash, and so do an array's and a record's text forms; their readers
    undo that layer and hand back exactly the value the text column masks."""
    pg.sql("ALTER TABLE notes ADD COLUMN IF NOT EXISTS arr2 text[]; "
           "INSERT INTO notes (id, body, arr2) VALUES "
           "(20, E'ada\\\\u0040example.com', ARRAY[E'ada\\\\u0040example.com'])")
    assert pg.sql("SELECT body FROM notes WHERE id = 20") == "ada\\u0040example.com"
    enforcer.start(policy(pg, tmp, rules=RULES_RW))
    res = agent_py(enforcer, f"""
    import psycopg2, io
    c = psycopg2.connect(host="127.0.0.1", port={pg.port}, user="agent_ro", dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    out = {{}}
    cur.execute("SELECT body, arr2, row(body)::text FROM notes WHERE id = 20")
    out["rows"] = cur.fetchall()
    buf = io.StringIO()
    try:
        cur.copy_expert("COPY (SELECT body FROM notes WHERE id = 20) TO STDOUT", buf)
        out["copy"] = buf.getvalue()
    except psycopg2.Error as e:
        out["copy"] = [e.pgcode, str(e)]
    print(json.dumps(out))
    """)
    body, arr, rec = res["rows"][0]
    assert body == "****", res
    assert arr is None or arr == ["****"], res          # not ["ada\\u0040example.com"]
    assert rec is None or "u0040" not in rec, res
    assert "u0040" not in json.dumps(res["copy"]), res
