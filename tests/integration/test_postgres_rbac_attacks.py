# SPDX-License-Identifier: Apache-2.0
"""Ways around PostgreSQL statement RBAC and the session lockdown, tried as an agent
that controls its wire bytes (helpers/pgraw.py) against a real PostgreSQL 15.

Each test checks the verdict the agent sees AND what the server did: the rows of a
table the attack would change, or the statements the server logged (the upstream
role gets log_statement=all, so pg.log lists everything that reached it).
Masking is test_postgres_mask_attacks.py's; the cases of ../shared/cases/sql.txt
are test_postgres.py's."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_postgres import agent_py, pg, policy  # noqa: E402,F401 (pg: a fixture)


def run(enforcer, pg, code, timeout=120):
    return agent_py(enforcer, f"PORT = {pg.port}\n" + code, timeout=timeout)


def denied(summ):
    return bool(summ) and summ[0].startswith("E:42501:agentgate: denied")


def log_all(pg):
    """Every statement of the upstream role's sessions goes to pg.log from now on."""
    pg.sql("ALTER ROLE app SET log_statement = 'all'")


def server_saw(pg, marker):
    """Did a text holding marker reach the server? (pg.log, log_statement=all: simple
    Queries are logged as "statement: ...", extended ones as "execute <name>: ...")"""
    with open(pg.log, errors="replace") as f:
        return any(marker in line for line in f)


def orders_ids(pg):
    return pg.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM orders")


# Runs a list of simple Queries, each on its own, on one connection: [summary, ...].
SEQ = r"""
c = Conn("127.0.0.1", PORT)
out = []
for sql in SQLS:
    c.send(Q(sql))
    out.append(summary(c.until_ready()))
c.close()
print(json.dumps(out))
"""


def run_seq(enforcer, pg, sqls):
    return run(enforcer, pg, f"SQLS = {sqls!r}\n" + SEQ)


# ---- settings: the session lockdown ---------------------------------------------------

RULES_READ_UPDATE_ANY = [{"target": "shop", "allow": {"statements": ["select", "update"]}}]


def test_update_pg_settings_cannot_turn_off_scs(enforcer, pg, tmp):
    """pg_settings is a view whose UPDATE rule calls set_config(): a role that may update
    any table (no tables: list) could switch standard_conforming_strings off with a plain
    UPDATE, and a second Query in the same write then parses differently on the server
    (notes D1/D3): `SELECT 'a\\'' ; DELETE ...` is one string constant to us, a DELETE to
    the server. The role may not delete, so nothing may be deleted; and the pinned
    settings must not change by UPDATE pg_settings in any form."""
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_READ_UPDATE_ANY))
    res = run(enforcer, pg, r"""
out = {}
c = Conn("127.0.0.1", PORT)
c.send(Q("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'") +
       Q("SELECT 'a\\'' ; DELETE FROM orders WHERE id = 1; --'"))
out["pipelined"] = summary(c.until_ready(2))
c.s.close()
c = Conn("127.0.0.1", PORT)
for k, sql in [
        ("explain", "EXPLAIN ANALYZE UPDATE pg_catalog.pg_settings SET setting = 'off' "
                    "WHERE name = 'standard_conforming_strings'"),
        ("search_path", "UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'"),
        ("encoding", "UPDATE \"pg_settings\" SET setting = 'SJIS' WHERE name = 'client_encoding'")]:
    c.send(Q(sql))
    out[k] = summary(c.until_ready())
c.send(Q("SHOW search_path"))
out["path"] = summary(c.until_ready())
out["scs"] = c.params.get("standard_conforming_strings")
c.close()
print(json.dumps(out))
""")
    # first what the server did: no row deleted, pg_settings never reached it
    assert orders_ids(pg) == "1,2,3,4,5", res
    assert not server_saw(pg, "pg_settings"), res
    for k in ("pipelined", "explain", "search_path", "encoding"):
        assert denied(res[k]), (k, res[k])
    # the second Query was judged and ran under scs=on: a string constant, one row
    assert res["pipelined"][1:] == ["ZI", "T", "D:a\\' ; DELETE FROM orders WHERE id = 1; --", "C:SELECT 1", "ZI"], \
        res["pipelined"]
    assert res["path"][1] == "D:public", res["path"]
    assert res["scs"] == "on"


RULES_VIEWS_ANY = [{"target": "shop", "allow": {"statements": ["select", "update", "create_view"]}}]


def test_view_over_pg_settings_cannot_turn_off_scs(enforcer, pg, tmp):
    """The same through a view: CREATE VIEW v AS SELECT * FROM pg_settings is automatically
    updatable, and UPDATE v reaches pg_settings' rule (set_config) while the classifier
    sees an UPDATE of public.v. A role that may create views and update any table must not
    get there: no view over pg_settings, nothing deleted by the pipelined exploit."""
    pg.sql("GRANT CREATE ON SCHEMA public TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_VIEWS_ANY))
    res = run(enforcer, pg, r"""
out = {}
c = Conn("127.0.0.1", PORT)
c.send(Q("CREATE VIEW v AS SELECT name, setting FROM pg_settings"))
out["view"] = summary(c.until_ready())
c.send(Q("UPDATE v SET setting = 'off' WHERE name = 'standard_conforming_strings'") +
       Q("SELECT 'a\'' ; DELETE FROM orders WHERE id = 1; --'"))
out["pipelined"] = summary(c.until_ready(2))
c.s.close()
print(json.dumps(out))
""")
    assert orders_ids(pg) == "1,2,3,4,5", res
    assert pg.sql("SELECT count(*) FROM pg_views WHERE viewname = 'v'") == "0", res
    assert denied(res["view"]), res
    assert not server_saw(pg, "FROM pg_settings")


# ---- names: unqualified pg_* relations -------------------------------------------------

RULES_CATALOG = [{"target": "shop",
                  "allow": {"statements": ["select"], "tables": ["public.orders", "pg_catalog.*"]}}]


def test_unqualified_pg_name_outside_the_catalog(enforcer, pg, tmp):
    """An unqualified name starting with pg_ was always taken as pg_catalog.<name>. But the
    server looks in pg_catalog first and then in the pinned schema: a table public.pg_private
    (or an extension's view such as pg_stat_statements, which lands in public) is what
    `FROM pg_private` reads. A rule that allows the catalogs (pg_catalog.*) must not hand
    out public tables whose name happens to start with pg_. Real catalog relations stay
    readable unqualified."""
    pg.sql("CREATE TABLE public.pg_private (id int, secret text); "
           "INSERT INTO pg_private VALUES (1, 'private-row-77'); GRANT SELECT ON pg_private TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, [
        "SELECT secret FROM pg_private",
        "SELECT secret FROM PG_PRIVATE WHERE id = 1",
        "SELECT secret FROM public.pg_private",
        "SELECT count(*) > 0 FROM pg_class WHERE relname = 'orders'",
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'public'",
    ])
    for i in (0, 1, 2):
        assert denied(res[i]), (i, res[i])
        assert "private-row-77" not in str(res[i])
    assert res[3][:3] == ["T", "D:t", "C:SELECT 1"], res[3]
    assert res[4][:3] == ["T", "D:1", "C:SELECT 1"], res[4]
    assert not server_saw(pg, "pg_private")
    assert server_saw(pg, "FROM pg_class WHERE relname")


def test_object_identifier_casts_read_the_catalog(enforcer, pg, tmp):
    """A cast to regclass, regrole... prints names from the catalog: g::oid::regclass over
    generate_series listed every relation (one in a schema the upstream role may not use
    too: regclassout checks no privilege), ::regrole every role, while SELECT FROM pg_class
    is denied (found by review, stop 59). Such a cast now reads its catalog table, which
    the table rules must grant."""
    pg.sql("CREATE SCHEMA hidden; CREATE TABLE hidden.payroll_9c (id int); "
           "REVOKE ALL ON SCHEMA hidden FROM PUBLIC; CREATE ROLE ceo_9c")
    scan = ("SELECT string_agg(g::oid::regclass::text, ',') FROM generate_series(16384, 20000) g "
            "WHERE g::oid::regclass::text !~ '^[0-9]+$'")
    # what the cast gives away: the server answers it (the test could fail)
    assert "payroll_9c" in pg.sql(scan)
    log_all(pg)
    enforcer.start(policy(pg, tmp))
    res = run_seq(enforcer, pg, [
        scan,
        "SELECT string_agg(g::oid::regrole::text, ',') FROM generate_series(10, 20000) g "
        "WHERE g::oid::regrole::text !~ '^[0-9]+$'",
        "SELECT 'orders'::regclass",
        "SELECT CAST('hidden.payroll_9c' AS pg_catalog.regclass)",
        "SELECT 'app=r/ceo_9c'::aclitem",
        "SELECT id FROM orders WHERE id = 1",
    ])
    for i in range(5):
        assert denied(res[i]), (i, res[i])
        assert "payroll_9c" not in str(res[i]) and "ceo_9c" not in str(res[i]), res[i]
    assert "pg_catalog.pg_class" in res[0][0] and "pg_catalog.pg_authid" in res[1][0], res
    assert res[5][0] == "T", res[5]
    assert not any(server_saw(pg, m) for m in ("generate_series(1", "'orders'::regclass", "hidden.payroll_9c",
                                               "aclitem")), "a denied statement reached the server"
    # a rule that grants the catalog allows them
    enforcer.stop()
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, ["SELECT 'orders'::regclass::text"])
    assert res[0][:3] == ["T", "D:orders", "C:SELECT 1"], res



def test_array_type_names_of_object_identifier_types(enforcer, pg, tmp):
    """An array type's own name, _regclass (regclass[] written as PostgreSQL names it in
    pg_type), _regrole, _aclitem, read no catalog for the classifier, which took only
    regclass itself for one (found by review): array[g::oid]::_regclass over
    generate_series listed every relation, one in a schema the upstream role may not use
    too, and ::_regrole every role, under a rule granting two tables. They now read the
    catalog their element type does, as regclass[] did."""
    pg.sql("CREATE SCHEMA hidden; CREATE TABLE hidden.payroll_ar (id int); "
           "REVOKE ALL ON SCHEMA hidden FROM PUBLIC; CREATE ROLE ceo_ar")
    scan = ("SELECT array_to_string(array_agg(g::oid)::pg_catalog._regclass, ',') "
            "FROM generate_series(16384, 20000) g")
    roles = ("SELECT array_to_string(array_agg(g::oid)::_regrole, ',') FROM generate_series(10, 20000) g")
    # what the casts give away: the server answers them (the test could fail)
    assert "payroll_ar" in pg.sql(scan) and "ceo_ar" in pg.sql(roles)
    log_all(pg)
    enforcer.start(policy(pg, tmp))
    res = run_seq(enforcer, pg, [
        scan,
        roles,
        "SELECT '{orders}'::_regclass",
        "SELECT '{app=r/ceo_ar}'::_aclitem",
        "SELECT id FROM orders WHERE id = 1",
    ])
    for i in range(4):
        assert denied(res[i]), (i, res[i])
        assert "payroll_ar" not in str(res[i]) and "ceo_ar" not in str(res[i]), res[i]
    assert "pg_catalog.pg_class" in res[0][0] and "pg_catalog.pg_authid" in res[1][0], res
    assert res[4][0] == "T", res[4]
    assert not any(server_saw(pg, m) for m in ("_regclass", "_regrole", "_aclitem")), \
        "a denied statement reached the server"
    # a rule that grants the catalog allows the relations' names
    enforcer.stop()
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, ["SELECT ('{orders}'::_regclass)[1]::text"])
    assert res[0][:3] == ["T", "D:orders", "C:SELECT 1"], res


def test_catalog_reads_the_review_found(enforcer, pg, tmp):
    """Found by review (stop 64), against the server: under pg_catalog.* the relations holding
    settings and credentials (pg_roles' rolconfig, pg_db_role_setting) read what SHOW is
    refused for; a cast to a catalog row type (::pg_sequences, whose regclass field
    names any OID's relation) listed every relation under a rule granting none of the
    catalog. Both are denied before the server sees them; plain catalog reads still
    work under pg_catalog.*."""
    pg.sql("CREATE SCHEMA hidden; CREATE TABLE hidden.payroll_f1 (id int); "
           "REVOKE ALL ON SCHEMA hidden FROM PUBLIC; ALTER ROLE app SET work_mem = '7777kB'")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, [
        "SELECT rolconfig FROM pg_roles WHERE rolname = 'app'",
        "SELECT setconfig FROM pg_db_role_setting",
        "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'work_mem'",
        "SELECT count(*) > 0 FROM pg_class WHERE relname = 'orders'",
    ])
    for i in (0, 1, 2):
        assert denied(res[i]) and "SHOW is refused for" in res[i][0], (i, res[i])
        assert "7777" not in str(res[i]), res[i]
    assert res[3][:3] == ["T", "D:t", "C:SELECT 1"], res[3]
    assert not server_saw(pg, "rolconfig") and not server_saw(pg, "pg_db_role_setting")
    enforcer.stop()
    enforcer.start(policy(pg, tmp))
    scan = ("SELECT string_agg((('(s,s,o,' || g || ',1,1,1,1,t,1,1)')::pg_sequences).sequencename, ',') "
            "FROM generate_series(16384, 20000) g")
    res = run_seq(enforcer, pg, [scan, "SELECT NULL::pg_catalog.pg_range[]"])
    for r in res:
        assert denied(r) and "pg_catalog.pg_" in r[0], res
        assert "payroll_f1" not in str(r), r
    assert not server_saw(pg, "::pg_sequences") and not server_saw(pg, "pg_range[]")


def test_pg_typeof_gives_its_type_to_other_values(enforcer, pg, tmp):
    """pg_typeof() returns a regtype, and a literal or parameter beside it (GREATEST,
    UNION, CASE, coalesce) becomes one too: an OID comes back as the name of its type, a
    table's row type giving the table's name, with no cast in the text (found by review,
    stop 65). Such a pg_typeof reads pg_type, which the rule does not grant; cast straight
    to text it still works."""
    pg.sql("CREATE SCHEMA hidden; CREATE TABLE hidden.payroll_t5 (id int); "
           "REVOKE ALL ON SCHEMA hidden FROM PUBLIC")
    oid = pg.sql("SELECT reltype FROM pg_class WHERE relname = 'payroll_t5'")
    scan = f"SELECT greatest(pg_typeof(1), '{oid}')"
    # what it gives away: the server answers it (the test could fail)
    assert "payroll_t5" in pg.sql(scan)
    log_all(pg)
    enforcer.start(policy(pg, tmp))
    res = run_seq(enforcer, pg, [
        scan,
        f"SELECT pg_typeof(1) UNION SELECT '{oid}'",
        f"SELECT coalesce(nullif(o.pg_typeof, o.pg_typeof), '{oid}') FROM orders o",
        "SELECT pg_typeof(id)::text FROM orders WHERE id = 1",
    ])
    for i in range(3):
        assert denied(res[i]) and "pg_catalog.pg_type" in res[i][0], (i, res[i])
        assert "payroll_t5" not in str(res[i]), res[i]
    assert res[3][:3] == ["T", "D:integer", "C:SELECT 1"], res[3]
    out = run(enforcer, pg, f"""
c = Conn("127.0.0.1", PORT)
c.send(P("", "SELECT greatest(pg_typeof(1), $1)", [0]) + B("", "", ["{oid}"]) + E("") + S)
print(json.dumps(summary(c.until_ready())))
""")
    assert denied(out) and "payroll_t5" not in str(out), out
    assert not server_saw(pg, "greatest(pg_typeof") and not server_saw(pg, "UNION SELECT") \
        and not server_saw(pg, "nullif(o.pg_typeof"), "a denied statement reached the server"


def test_write_only_rules_do_not_read(enforcer, pg, tmp):
    """Found by review (stop 64): statements: [insert] allowed INSERT ... SELECT ... FROM orders RETURNING
    (rows back), [update, delete] DELETE ... RETURNING *. PostgreSQL asks SELECT privilege
    for both; so does agentgate now. Plain writes stay allowed."""
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=[{"target": "shop", "allow": {
        "statements": ["insert"], "tables": ["public.orders"]}}]))
    before = orders_ids(pg)
    res = run_seq(enforcer, pg, [
        "INSERT INTO orders (customer_id, total) SELECT customer_id, total FROM orders "
        "RETURNING customer_id, total",
        "INSERT INTO orders (customer_id, total) VALUES (5, 55) RETURNING id",
        "INSERT INTO orders (customer_id, total) VALUES (5, 56)",
    ])
    assert denied(res[0]) and "select" in res[0][0], res[0]
    assert denied(res[1]) and "select" in res[1][0], res[1]
    assert res[2][0] == "C:INSERT 0 1", res[2]
    assert pg.sql("SELECT count(*) FROM orders WHERE total = 56") == "1"
    assert pg.sql("SELECT count(*) FROM orders WHERE total = 55") == "0"
    assert not server_saw(pg, "RETURNING")
    enforcer.stop()
    enforcer.start(policy(pg, tmp, rules=[{"target": "shop", "allow": {
        "statements": ["update", "delete"], "tables": ["public.orders"]}}]))
    res = run_seq(enforcer, pg, [
        "DELETE FROM orders RETURNING *",
        "UPDATE orders SET id = id RETURNING *",
        "UPDATE orders SET total = 57 WHERE total = 56",
    ])
    assert denied(res[0]) and denied(res[1]), res
    assert res[2][0] == "C:UPDATE 1", res[2]
    assert orders_ids(pg).startswith(before), (before, orders_ids(pg))


# ---- MERGE: each action is the statement it performs ----------------------------------

RULES_MERGE_UPDATE = [{"target": "shop",
                       "allow": {"statements": ["select", "update", "merge"],
                                 "tables": ["public.orders", "public.customers"]}}]


def test_merge_actions_need_their_own_statements(enforcer, pg, tmp):
    """MERGE ... WHEN MATCHED THEN DELETE deletes rows, WHEN NOT MATCHED THEN INSERT inserts
    them. With merge and update granted but neither delete nor insert, only the UPDATE
    action may run (the same rule as INSERT ... ON CONFLICT DO UPDATE needing update)."""
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_MERGE_UPDATE))
    res = run_seq(enforcer, pg, [
        "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE",
        "MERGE INTO orders o USING customers c ON o.id = c.id "
        "WHEN MATCHED AND o.id > 100 THEN UPDATE SET total = o.total WHEN MATCHED THEN DELETE",
        "MERGE INTO orders o USING (VALUES (100)) v(id) ON o.id = v.id "
        "WHEN NOT MATCHED THEN INSERT (id, customer_id, total) VALUES (v.id, 1, 1)",
        "WITH x AS (SELECT 1) MERGE INTO orders o USING customers c ON o.id = c.id "
        "WHEN MATCHED THEN UPDATE SET total = o.total + 10",
    ])
    for i in (0, 1, 2):
        assert denied(res[i]), (i, res[i])
    # the UPDATE action alone is allowed and ran (2 matched rows)
    assert res[3] == ["C:MERGE 2", "ZI"], res[3]
    assert orders_ids(pg) == "1,2,3,4,5"
    assert pg.sql("SELECT string_agg(total::text, ',' ORDER BY id) FROM orders") == "11,12,3,4,5"
    assert not server_saw(pg, "THEN DELETE") and not server_saw(pg, "THEN INSERT")


# ---- functions the classifier cannot see as calls -------------------------------------

# A SECURITY DEFINER function that records each call in fn_calls (FN_CALLS
# creates the table too; FN_DEF is one more function).
FN_DEF = """
CREATE FUNCTION public.{name}({arg}) RETURNS {ret} LANGUAGE plpgsql SECURITY DEFINER AS
  $$BEGIN INSERT INTO public.fn_calls VALUES ('{name}'); RETURN {value}; END$$;
"""
FN_CALLS = "CREATE TABLE fn_calls (via text);" + FN_DEF


def test_attribute_notation_calls_a_function(enforcer, pg, tmp):
    """`SELECT o.touch FROM orders o` is PostgreSQL's functional notation for touch(o)
    when orders has no column touch (PostgREST/Hasura 'computed fields' are written this
    way). The classifier sees a column reference, so a user-defined function that no rule
    names runs: here a SECURITY DEFINER function that writes a row. It must be denied."""
    pg.sql(FN_CALLS.format(name="touch", arg="orders", ret="int", value="1"))
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, ["SELECT o.touch FROM orders o WHERE o.id = 1",
                                 "SELECT (o).touch FROM orders o WHERE o.id = 1"])
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    assert denied(res[0]) and denied(res[1]), res


def test_builtin_name_overloaded_in_public(enforcer, pg, tmp):
    """The safe-function list judges unqualified calls by name, assuming pg_catalog wins.
    It only wins ties: with public.lower(integer) defined, `lower(id)` on an integer calls
    the public function (the CVE-2018-1058 class), which no rule names. It must be denied."""
    pg.sql(FN_CALLS.format(name="lower", arg="integer", ret="text", value="'x'"))
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, ["SELECT lower(id) FROM orders WHERE id = 1"])
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    assert denied(res[0]), res


def test_user_operator_in_public(enforcer, pg, tmp):
    """An operator is a function call with other syntax. `'a'::text + o.id` has no
    pg_catalog operator; a public.+ (text, integer) defined by the database runs its
    function, which no rule names. It must be denied."""
    pg.sql(FN_CALLS.format(name="text_plus", arg="text, integer", ret="text", value="'x'") +
           "CREATE OPERATOR public.+ (LEFTARG = text, RIGHTARG = integer, FUNCTION = public.text_plus);")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, ["SELECT 'a'::text + o.id FROM orders o WHERE o.id = 1"])
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    assert denied(res[0]), res


def test_user_operator_with_a_new_symbol(enforcer, pg, tmp):
    """The part of the operator gap the classifier can close without the catalog: a
    symbol that is none of PostgreSQL's own operators (here ### defined by the database
    in public, over a SECURITY DEFINER function) can only be a user-defined one, so an
    unqualified use of it is denied. PostgreSQL's own symbols keep working."""
    pg.sql(FN_CALLS.format(name="hash_op", arg="integer, integer", ret="bool", value="true") +
           "CREATE OPERATOR public.### (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.hash_op);")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, ["SELECT id FROM orders o WHERE o.id ### 1",
                                 "SELECT id FROM orders WHERE id OPERATOR(public.###) 1",
                                 "SELECT count(*) FROM orders WHERE id BETWEEN 2 AND 3 AND id <> 3 "
                                 "AND NOT (id IS DISTINCT FROM 2) AND 'a' NOT LIKE 'b%' AND id IN (1, 2, 3)"])
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0", res
    assert denied(res[0]) and denied(res[1]), res
    assert res[2][:3] == ["T", "D:1", "C:SELECT 1"], res[2]
    assert not server_saw(pg, "###")


def test_attribute_notation_reaches_builtins(enforcer, pg, tmp):
    """(x).f is PostgreSQL's attribute notation for f(x), for x of any type, and t.f is
    f(t) when t has no column f. Neither looks like a call, so without care
    `('/etc/hostname'::text).pg_read_file` reads a file (the role may), `(4242)
    .pg_advisory_lock` takes a lock, and `c.row_to_json` reads every column of a row,
    the masked ones too. Each must be denied before the server sees it; safe built-ins
    and real columns keep working."""
    log_all(pg)
    enforcer.start(policy(pg, tmp))     # agent_ro: customers.email and .cc masked
    res = run_seq(enforcer, pg, [
        "SELECT ('/etc/hostname'::text).pg_read_file",
        "SELECT (4242).pg_advisory_lock",
        "SELECT (o.id).pg_terminate_backend FROM orders o WHERE o.id = 1",
        "SELECT c.row_to_json FROM customers c",
        "SELECT public.customers.concat FROM public.customers",
        "SELECT c.id FROM customers c WHERE c.to_jsonb::text LIKE '%4111%'",
        "SELECT x.json_agg FROM (SELECT cc FROM customers) x",
        "SELECT g.pg_advisory_lock FROM generate_series(4243, 4243) g",
        # names PostgreSQL resolves to another FROM item than the nearest
        "SELECT (SELECT generate_series.pg_advisory_lock FROM generate_series(4244, 4244)) "
        "FROM orders generate_series WHERE generate_series.id = 1",
        "SELECT (SELECT x.to_json FROM (orders x CROSS JOIN orders y) AS j LIMIT 1) FROM customers x",
        # allowed: a safe built-in either way, real columns
        "SELECT (o.id).abs, o.to_json FROM orders o WHERE o.id = 1",
        "SELECT c.id, c.email FROM customers c WHERE c.id = 1",
    ])
    for i in range(10):
        assert denied(res[i]), (i, res[i])
    assert "attribute notation" in res[0][0] and "pg_read_file" in res[0][0], res[0]
    assert "masked" in res[3][0], res[3]
    assert res[10][:3] == ["T", 'D:1|{"id":1,"customer_id":2,"total":1}', "C:SELECT 1"], res[10]
    assert res[11][:3] == ["T", "D:1|****", "C:SELECT 1"], res[11]
    assert "alice@" not in str(res) and "4111" not in str(res)
    for word in ("pg_read_file", "pg_advisory_lock", "pg_terminate_backend", "row_to_json", "concat",
                 "to_jsonb", "json_agg"):
        assert not server_saw(pg, word), word
    assert pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == "0"


def test_database_functions_a_rule_names(enforcer, pg, tmp):
    """What the catalog read changes for a rule that does name the database's function,
    and what stays open: o.touch runs when a rule names touch; pg_catalog.lower and
    OPERATOR(pg_catalog.+) reach the built-ins past a public.lower and a public.+;
    comparisons with = keep working (public has no =)."""
    pg.sql(FN_CALLS.format(name="touch", arg="orders", ret="int", value="1") +
           FN_DEF.format(name="lower", arg="integer", ret="text", value="'x'") +
           FN_DEF.format(name="text_plus", arg="text, integer", ret="text", value="'x'") +
           "CREATE OPERATOR public.+ (LEFTARG = text, RIGHTARG = integer, FUNCTION = public.text_plus);")
    rules = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.orders"],
                                          "functions": ["touch"]}}]
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=rules))
    res = run_seq(enforcer, pg, [
        "SELECT o.touch FROM orders o WHERE o.id = 1",
        "SELECT pg_catalog.lower('AbC'), 'a'::text OPERATOR(pg_catalog.||) 'b', 2 OPERATOR(pg_catalog.+) 3",
        "SELECT count(*) FROM orders WHERE id = 2 OR id IN (3, 4)",
        "SELECT lower(id) FROM orders WHERE id = 1",
        "SELECT 'a'::text + o.id FROM orders o WHERE o.id = 1",
    ])
    assert res[0][:3] == ["T", "D:1", "C:SELECT 1"], res[0]
    assert res[1][:3] == ["T", "D:abc|ab|5", "C:SELECT 1"], res[1]
    assert res[2][:3] == ["T", "D:3", "C:SELECT 1"], res[2]
    assert denied(res[3]) and "pg_catalog.lower" in res[3][0], res[3]
    assert denied(res[4]) and "OPERATOR(pg_catalog.+)" in res[4][0], res[4]
    assert pg.sql("SELECT string_agg(via, ',') FROM fn_calls") == "touch"


def test_database_comparisons_and_casts(enforcer, pg, tmp):
    """More places where PostgreSQL runs the database's code for a name the text does
    not call: a cast to a domain runs its CHECK; x IN (SELECT ...) compares with = and
    BETWEEN with >= and <=, looked up by name over the search path. With public
    defining those, each is denied before the server sees it; pg_catalog's operators,
    named, still work."""
    pg.sql(FN_CALLS.format(name="chk", arg="integer", ret="bool", value="true") +
           FN_DEF.format(name="teq", arg="text, integer", ret="bool", value="true") +
           "CREATE DOMAIN public.d AS integer CHECK (public.chk(VALUE));"
           "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = integer, FUNCTION = public.teq);"
           "CREATE OPERATOR public.>= (LEFTARG = text, RIGHTARG = integer, FUNCTION = public.teq);"
           "CREATE OPERATOR public.<= (LEFTARG = text, RIGHTARG = integer, FUNCTION = public.teq);")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_CATALOG))
    res = run_seq(enforcer, pg, [
        "SELECT 7::d",
        "SELECT count(*) FROM orders WHERE 'a'::text IN (SELECT 3)",
        "SELECT 'a'::text BETWEEN 1 AND 2",
        "SELECT count(*) FROM orders WHERE id OPERATOR(pg_catalog.=) 1",
        "SELECT '{5}'::_d",
    ])
    for i in (0, 1, 2, 4):
        assert denied(res[i]), (i, res[i])
    assert "type d" in res[0][0] and "IN (subquery)" in res[1][0] and "BETWEEN" in res[2][0], res
    assert res[3][:3] == ["T", "D:1", "C:SELECT 1"], res[3]
    # a Parse that declares its parameter of type d: the CHECK would run on
    # the value with no cast in the text
    oid = int(pg.sql("SELECT 'public.d'::regtype::oid"))
    seq = int(pg.sql("SELECT 'pg_sequences'::regtype::oid"))
    out = run(enforcer, pg, f"""
c = Conn("127.0.0.1", PORT)
c.send(P("", "SELECT $1::text", [{oid}]) + B("", "", ["88"]) + E("") + S)
r = summary(c.until_ready())
c.send(P("", "SELECT $1::text", [25]) + B("", "", ["89"]) + E("") + S)
r2 = summary(c.until_ready())
# a parameter of an object identifier type reads the catalog with no cast
# in the text: regclass names a relation (review, stop 64); so do the reg*
# fields of a catalog row type (pg_class's 83, pg_sequences' from 10000:
# its regclass field)
rs = []
for t, v in ((2205, "1259"), (2210, "{{1259}}"), (83, "(x)"), ({seq}, "(s,s,o,1259,1,1,1,1,t,1,1)")):
    c.send(P("", "SELECT $1", [t]) + B("", "", [v]) + E("") + S)
    rs.append(summary(c.until_ready()))
print(json.dumps([r, r2, rs]))
""")
    assert denied(out[0]) and "type OID" in out[0][0], out[0]
    assert "D:89" in out[1], out[1]
    for r in out[2]:
        assert denied(r) and "type OID" in r[0] and "pg_class" not in str(r), out[2]
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    assert not server_saw(pg, "7::d") and not server_saw(pg, "IN (SELECT 3)") and not server_saw(pg, "BETWEEN")


def test_extension_names_in_public(enforcer, pg, tmp):
    """An extension in public (hstore here; PostGIS is the common one) defines = and other
    operators there. Those are left to PostgreSQL (C code a superuser installed), so
    comparisons keep working; its functions are not: o.hstore is hstore(o), a whole row
    through a function no rule names."""
    pg.sql("CREATE EXTENSION hstore")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_RO_ORDERS))
    res = run_seq(enforcer, pg, [
        "SELECT count(*) FROM orders WHERE id = 2 OR id IN (3, 4)",
        "SELECT o.hstore FROM orders o WHERE o.id = 1",
    ])
    assert res[0][:3] == ["T", "D:3", "C:SELECT 1"], res[0]
    assert denied(res[1]) and "hstore" in res[1][0], res[1]
    assert not server_saw(pg, "o.hstore")


def test_catalog_read_again_for_a_pooled_session(enforcer, pg, tmp):
    """An upstream session kept in the pool is handed to the agent's next connection; the
    pinned schema's names are read again then, so a function created in between is
    known: the second connection's o.touch is denied."""
    rules = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.orders"],
                                          "functions": ["pg_backend_pid"]}}]
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=rules))
    first = run_seq(enforcer, pg, ["SELECT o.touch FROM orders o WHERE o.id = 1",
                                   "SELECT pg_backend_pid()"])
    assert first[0][0].startswith("E:42703:"), first[0]     # no such column: the server said so
    pg.sql(FN_CALLS.format(name="touch", arg="orders", ret="int", value="1"))
    second = run_seq(enforcer, pg, ["SELECT o.touch FROM orders o WHERE o.id = 1",
                                    "SELECT pg_backend_pid()"])
    assert denied(second[0]), second[0]
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    # the same server session: it came from the pool
    assert first[1][1] == second[1][1] and first[1][1].startswith("D:"), (first, second)


def test_session_that_creates_functions(enforcer, pg, tmp):
    """The names are read when a session starts. A session that may create functions
    could create public.touch(orders) and then call it as o.touch, in the same message or
    later: from its CREATE FUNCTION on, every name counts as one the database may define
    (qualified pg_catalog names still work) until it reads the names again: at its next
    statement once the change is done (test_open_sessions_read_names_again), or a new
    session at its start."""
    pg.sql("CREATE TABLE fn_calls (via text); GRANT INSERT ON fn_calls TO app; GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    body = "RETURNS int LANGUAGE sql AS $$INSERT INTO public.fn_calls VALUES ('t') RETURNING 1$$"
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=rules))
    res = run_seq(enforcer, pg, [
        f"CREATE FUNCTION public.touch(orders) {body}; SELECT o.touch FROM orders o WHERE o.id = 1",
        f"CREATE FUNCTION public.touch2(orders) {body}",
        "SELECT o.touch2 FROM orders o WHERE o.id = 1",
        "SELECT count(*) FROM orders WHERE id = 1",
        "SELECT pg_catalog.count(*) FROM orders WHERE id OPERATOR(pg_catalog.=) 1",
    ])
    again = run_seq(enforcer, pg, ["SELECT o.touch2 FROM orders o WHERE o.id = 1",
                                   "SELECT count(*) FROM orders WHERE id = 1"])
    # the CREATE FUNCTION ran, the SELECT after it was denied: PostgreSQL rolls the
    # message's implicit transaction back, so touch was never made
    assert res[0][0] == "C:CREATE FUNCTION" and denied(res[0][1:]) and "new session" in res[0][1], res[0]
    assert res[1][0] == "C:CREATE FUNCTION", res[1]
    # read again: touch2 is the database's, count and = are the built-ins
    assert denied(res[2]) and "attribute notation" in res[2][0], res[2]
    assert res[3][:3] == ["T", "D:1", "C:SELECT 1"], res[3]
    assert res[4][:3] == ["T", "D:1", "C:SELECT 1"], res[4]
    assert denied(again[0]) and "attribute notation" in again[0][0], again[0]
    assert again[1][:3] == ["T", "D:1", "C:SELECT 1"], again[1]
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    assert pg.sql("SELECT count(*) FROM pg_proc WHERE proname = 'touch'") == "0"
    assert not server_saw(pg, "o.touch")



def test_prepared_statement_not_run_after_names_change(enforcer, pg, tmp):
    """A statement prepared while upper() was only the built-in: PostgreSQL
    analyses a prepared statement again when its plan is invalidated (DDL,
    ANALYZE) and then picks up public.upper(varchar), created since, an exact
    match that beats pg_catalog.upper(text) (review, stop 34: its INSERT ran
    on a select-only Bind). Once the database's names change, a statement
    judged with the old ones is refused at Bind: prepare it again."""
    pg.sql("CREATE TABLE fn_calls (via text); GRANT INSERT ON fn_calls TO app; GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    enforcer.start(policy(pg, tmp, rules=rules))
    r = run(enforcer, pg, textwrap.dedent("""
        c = Conn("127.0.0.1", PORT)
        c.send(P("s", "SELECT upper(id::varchar) FROM orders WHERE id = 1") + B("", "s") + E("") + S)
        first = summary(c.until_ready())
        c.send(Q("CREATE FUNCTION public.upper(varchar) RETURNS text LANGUAGE sql AS "
                 "$$INSERT INTO public.fn_calls VALUES ('u') RETURNING 'x'$$"))
        made = summary(c.until_ready())
        c.send(B("", "s") + E("") + S)
        again = summary(c.until_ready())
        print(json.dumps({"first": first, "made": made, "again": again}))
    """))
    assert "D:1" in r["first"], r
    assert r["made"][0] == "C:CREATE FUNCTION", r
    assert denied(r["again"]) and "prepare it again" in r["again"][0], r
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"


def test_names_created_in_another_session(enforcer, pg, tmp):
    """Found by review (stop 30): a session's snapshot of the database's names was
    stale once another session created one. Session 1 opens; session 2 (the same
    agent here; another agent's would do the same) creates public.lower(integer);
    session 1's lower(id) would then run it, judged as the safe built-in. From the
    change on, session 1 judges every name as the database's: denied."""
    pg.sql("CREATE TABLE fn_calls (via text); GRANT INSERT ON fn_calls TO app; GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=rules))
    r = run(enforcer, pg, textwrap.dedent("""
        one = Conn("127.0.0.1", PORT)
        one.send(Q("SELECT lower('A')"))
        before = summary(one.until_ready())
        two = Conn("127.0.0.1", PORT)
        two.send(Q("CREATE FUNCTION public.lower(integer) RETURNS text LANGUAGE sql AS "
                   "$$INSERT INTO public.fn_calls VALUES ('lower') RETURNING 'x'$$"))
        made = summary(two.until_ready())
        one.send(Q("SELECT lower(id) FROM orders WHERE id = 1"))
        after = summary(one.until_ready())
        one.send(Q("SELECT pg_catalog.lower('B')"))
        qualified = summary(one.until_ready())
        three = Conn("127.0.0.1", PORT)
        three.send(Q("SELECT lower(id) FROM orders WHERE id = 1"))
        fresh = summary(three.until_ready())
        # the change is done: the session that made it goes on working, and a
        # session opened now is not made stale by that
        four = Conn("127.0.0.1", PORT)
        two.send(Q("SELECT 2"))
        two.until_ready()
        four.send(Q("SELECT count(*) FROM orders WHERE id = 1"))
        later = summary(four.until_ready())
        # a CREATE FUNCTION prepared first and run later: the change is its Bind
        two.send(P("mk", "CREATE FUNCTION public.upper(integer) RETURNS text LANGUAGE sql AS "
                         "$$INSERT INTO public.fn_calls VALUES ('upper') RETURNING 'y'$$") + S)
        two.until_ready()
        five = Conn("127.0.0.1", PORT)
        two.send(B("", "mk") + E("") + S)
        bound = summary(two.until_ready())
        five.send(Q("SELECT upper(id) FROM orders WHERE id = 1"))
        prepared = summary(five.until_ready())
        print(json.dumps({"before": before, "made": made, "after": after, "qualified": qualified,
                          "fresh": fresh, "later": later, "bound": bound, "prepared": prepared}))
    """))
    assert r["before"][:3] == ["T", "D:a", "C:SELECT 1"], r
    assert r["made"][0] == "C:CREATE FUNCTION", r
    assert denied(r["after"]), r
    assert r["qualified"][:3] == ["T", "D:b", "C:SELECT 1"], r
    assert denied(r["fresh"]), r          # a new session reads the names: public.lower is the database's
    assert r["later"][:3] == ["T", "D:1", "C:SELECT 1"], r
    assert "C:CREATE FUNCTION" in r["bound"], r
    assert denied(r["prepared"]), r
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"


def test_open_sessions_read_names_again(enforcer, pg, tmp):
    """An open session made stale by a change of names (above) used to deny unqualified
    built-ins until it reconnected: a migration run by one agent broke every other agent's
    open sessions. Now a stale session reads the names again before the next statement it
    judges while idle, and then judges as a new session would: built-ins pass again, a
    name the change added is the database's. Inside a transaction it stays careful."""
    pg.sql("CREATE TABLE fn_calls (via text); GRANT INSERT ON fn_calls TO app; GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=rules))
    before = enforcer.status()["counters"].get("pg_names_refreshed")
    r = run(enforcer, pg, textwrap.dedent("""
        def fn(name, arg="integer"):
            return Q(f"CREATE FUNCTION public.{name}({arg}) RETURNS text LANGUAGE sql AS "
                     f"$$INSERT INTO public.fn_calls VALUES ('{name}') RETURNING 'x'$$")
        out = {}
        one = Conn("127.0.0.1", PORT)
        two = Conn("127.0.0.1", PORT)
        one.send(Q("SELECT upper('a')"))
        out["start"] = summary(one.until_ready())
        two.send(fn("add_one"))
        out["made"] = summary(two.until_ready())
        one.send(Q("SELECT upper('b')"))
        out["builtin"] = summary(one.until_ready())
        two.send(fn("lower"))
        two.until_ready()
        one.send(Q("SELECT lower(id) FROM orders WHERE id = 1"))
        out["shadowed"] = summary(one.until_ready())
        one.send(Q("SELECT upper('c')"))
        out["again"] = summary(one.until_ready())
        # inside a transaction: no new read; careful until it ends
        one.send(Q("BEGIN"))
        one.until_ready()
        two.send(fn("add_two"))
        two.until_ready()
        one.send(Q("SELECT upper('d')"))
        out["in_tx"] = summary(one.until_ready())
        one.send(Q("ROLLBACK"))
        one.until_ready()
        one.send(Q("SELECT upper('e')"))
        out["after_tx"] = summary(one.until_ready())
        # its own change, done: it reads the names again too
        one.send(fn("add_three"))
        out["own"] = summary(one.until_ready())
        one.send(Q("SELECT upper('f')"))
        out["after_own"] = summary(one.until_ready())
        # pipelined behind the read, and the extended protocol
        two.send(fn("add_four"))
        two.until_ready()
        one.send(Q("SELECT upper('g')") + Q("SELECT lower(id) FROM orders WHERE id = 1"))
        out["pipe1"] = summary(one.until_ready())
        out["pipe2"] = summary(one.until_ready())
        two.send(fn("add_five"))
        two.until_ready()
        one.send(P("", "SELECT upper('h')") + B("", "") + E("") + S)
        out["extended"] = summary(one.until_ready())
        # a message over 1 MiB waits whole in the input buffer while the names are
        # read (then denied as too long: an ordinary error, the session goes on)
        two.send(fn("add_six"))
        two.until_ready()
        one.send(Q("SELECT length('" + "a" * (2 << 20) + "')"))
        out["big"] = summary(one.until_ready())
        one.send(Q("SELECT upper('i')"))
        out["after_big"] = summary(one.until_ready())
        print(json.dumps(out))
    """))
    after = enforcer.status()["counters"]["pg_names_refreshed"]
    assert r["start"][:3] == ["T", "D:A", "C:SELECT 1"], r
    assert r["made"][0] == "C:CREATE FUNCTION", r
    assert r["builtin"][:3] == ["T", "D:B", "C:SELECT 1"], r
    assert denied(r["shadowed"]), r       # public.lower(integer) is the database's now
    assert r["again"][:3] == ["T", "D:C", "C:SELECT 1"], r
    assert denied(r["in_tx"]), r
    assert r["after_tx"][:3] == ["T", "D:E", "C:SELECT 1"], r
    assert r["own"][0] == "C:CREATE FUNCTION", r
    assert r["after_own"][:3] == ["T", "D:F", "C:SELECT 1"], r
    assert r["pipe1"][:3] == ["T", "D:G", "C:SELECT 1"], r
    assert denied(r["pipe2"]), r
    assert "D:H" in r["extended"] and "C:SELECT 1" in r["extended"], r
    assert denied(r["big"]) and "longer than" in r["big"][0], r
    assert r["after_big"][:3] == ["T", "D:I", "C:SELECT 1"], r
    assert before == 0 and after >= 7, (before, after)
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"


def test_names_read_again_fails_closed(enforcer, pg, tmp):
    """When the server does not answer the names query (here: it waits on a lock on
    pg_proc, and the agent cancels it), the session keeps the older names and stays
    careful: its statement is judged stale (built-ins denied), and the same change is not
    tried again at every statement; a later change is."""
    pg.sql("GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    enforcer.start(policy(pg, tmp, rules=rules))
    mk = "CREATE FUNCTION public.{}(integer) RETURNS int LANGUAGE sql AS $$SELECT 1$$"
    prep = run(enforcer, pg, textwrap.dedent(f"""
        two = Conn("127.0.0.1", PORT)
        two.send(Q({mk.format("add_a")!r}))
        print(json.dumps(summary(two.until_ready())))
    """))
    assert prep[0] == "C:CREATE FUNCTION", prep
    # pg_proc is locked for 3 s when the script asks (the sessions' start reads it
    # too: they are opened first)
    signals = [os.path.join(tmp, "lock-1")]
    locks = []

    def take_locks():
        for sig in signals:
            for _ in range(600):
                if os.path.exists(sig):
                    break
                time.sleep(0.05)
            else:
                return
            p = subprocess.Popen(
                ["psql", "-X", "-q", "-h", pg.sock, "-p", str(pg.port), "-U", "postgres", "-d", "shop",
                 "-c", "BEGIN", "-c", "LOCK TABLE pg_catalog.pg_proc IN ACCESS EXCLUSIVE MODE",
                 "-c", f"\\! touch {sig}.held", "-c", "SELECT pg_sleep(3)", "-c", "COMMIT"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            locks.append(p)
            p.wait(timeout=60)
            open(sig + ".released", "w").close()

    t = threading.Thread(target=take_locks)
    t.start()
    try:
        r = run(enforcer, pg, textwrap.dedent(f"""
            out = {{}}
            one = Conn("127.0.0.1", PORT)
            two = Conn("127.0.0.1", PORT)
            one.send(Q("SELECT upper('a')"))
            out["start"] = summary(one.until_ready())
            import os

            def locked(sig):
                open(sig, "w").close()
                for _ in range(600):
                    if os.path.exists(sig + ".held"):
                        return
                    time.sleep(0.05)
                raise SystemExit("no lock")
            two.send(Q({mk.format("add_b")!r}))          # done: one is stale
            out["made_b"] = summary(two.until_ready())
            locked({signals[0]!r})
            one.send(Q("SELECT upper('b')"))             # the read waits on the lock
            time.sleep(0.5)
            cancel("127.0.0.1", PORT, *one.key)
            out["cancelled"] = summary(one.until_ready())
            one.send(Q("SELECT upper('c')"))
            out["same_change"] = summary(one.until_ready())
            while not os.path.exists({signals[0]!r} + ".released"):
                time.sleep(0.05)
            two.send(Q({mk.format("add_c")!r}))
            out["made"] = summary(two.until_ready())
            one.send(Q("SELECT upper('d')"))
            out["later"] = summary(one.until_ready())
            print(json.dumps(out))
        """))
    finally:
        for sig in signals:
            open(sig, "a").close()   # the thread ends even if the script failed early
        t.join()
    assert r["start"][:3] == ["T", "D:A", "C:SELECT 1"], r
    assert r["made_b"][0] == "C:CREATE FUNCTION", r
    assert denied(r["cancelled"]) and "read again" in r["cancelled"][0], r
    assert denied(r["same_change"]), r
    assert r["made"][0] == "C:CREATE FUNCTION", r
    assert r["later"][:3] == ["T", "D:D", "C:SELECT 1"], r
    assert enforcer.status()["counters"]["pg_names_refreshed"] >= 1


def test_no_names_read_while_a_change_is_open(enforcer, pg, tmp):
    """Found by review of the names refresh: a change becomes visible when the server
    commits it, which an agent can make happen with no ReadyForQuery (COMMIT by Parse,
    Bind, Execute and Flush, no Sync). A session that read the names while the change
    was open would then take public.lower(integer) for the built-in. While any session
    of the database has a change not seen done, every session judges as stale, new ones
    too, and none reads the names; once the change is done they do."""
    pg.sql("CREATE TABLE fn_calls (via text); GRANT INSERT ON fn_calls TO app; GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    enforcer.start(policy(pg, tmp, rules=rules))
    r = run(enforcer, pg, textwrap.dedent("""
        out = {}
        one = Conn("127.0.0.1", PORT)
        two = Conn("127.0.0.1", PORT)
        two.send(Q("BEGIN"))
        two.until_ready()
        two.send(Q("CREATE FUNCTION public.lower(integer) RETURNS text LANGUAGE sql AS "
                   "$$INSERT INTO public.fn_calls VALUES ('lower') RETURNING 'x'$$"))
        out["made"] = summary(two.until_ready())
        one.send(Q("SELECT upper('a')"))              # the change is open: no read, stale
        out["open"] = summary(one.until_ready())
        # committed with no ReadyForQuery: the change is visible, its end unseen
        two.send(P("", "COMMIT") + B("", "") + E("") + msg(b"H"))
        got = []
        while not any(t == b"C" for t, _ in got):
            got.append(two.read())
        out["commit"] = summary(got)
        one.send(Q("SELECT lower(id) FROM orders WHERE id = 1"))
        out["attack"] = summary(one.until_ready())
        three = Conn("127.0.0.1", PORT)               # a new session, too
        three.send(Q("SELECT lower(id) FROM orders WHERE id = 1"))
        out["new"] = summary(three.until_ready())
        two.send(S)                                  # the end is seen
        two.until_ready()
        one.send(Q("SELECT upper('b')"))
        out["done"] = summary(one.until_ready())
        one.send(Q("SELECT lower(id) FROM orders WHERE id = 1"))
        out["after"] = summary(one.until_ready())
        print(json.dumps(out))
    """))
    assert r["made"][0] == "C:CREATE FUNCTION" and r["made"][-1] == "ZT", r
    assert denied(r["open"]), r
    assert r["commit"][-1] == "C:COMMIT", r
    assert denied(r["attack"]), r
    assert denied(r["new"]), r
    assert r["done"][:3] == ["T", "D:B", "C:SELECT 1"], r
    assert denied(r["after"]), r
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"


def test_a_change_left_open_is_ended(enforcer, pg, tmp):
    """While a change of names is open every session of the database denies unqualified
    built-ins, so one held open (review: a transaction left open, or a Parse of CREATE
    FUNCTION never followed by a Sync, which PostgreSQL's idle timeouts do not see)
    would hold them all. Past its time (AGENTGATE_PG_CHANGE_OPEN_MS here; 120 s by
    default) the changer's session is ended with an error that says why, and the
    others go on."""
    pg.sql("GRANT CREATE ON SCHEMA public TO app")
    rules = [{"target": "shop", "allow": {"statements": ["select", "create_function"]}}]
    enforcer.start(policy(pg, tmp, rules=rules), env={"AGENTGATE_PG_CHANGE_OPEN_MS": "1500"})
    r = run(enforcer, pg, textwrap.dedent("""
        out = {}
        mk = "CREATE FUNCTION public.{}(integer) RETURNS int LANGUAGE sql AS $$SELECT 1$$"
        one = Conn("127.0.0.1", PORT)
        two = Conn("127.0.0.1", PORT)
        two.send(Q("BEGIN"))
        two.until_ready()
        two.send(Q(mk.format("left_open")))
        out["made"] = summary(two.until_ready())
        one.send(Q("SELECT upper('a')"))
        out["open"] = summary(one.until_ready())
        t0 = time.monotonic()
        out["ended"] = summary(two.until_ready())      # the enforcer's FATAL, then EOF
        out["after_s"] = time.monotonic() - t0
        one.send(Q("SELECT upper('b')"))
        out["back"] = summary(one.until_ready())
        # a Parse of a change, flushed, never synced
        three = Conn("127.0.0.1", PORT)
        three.send(P("", mk.format("never_synced")) + msg(b"H"))
        out["parsed"] = summary([three.read()])
        one.send(Q("SELECT upper('c')"))
        out["open2"] = summary(one.until_ready())
        out["ended2"] = summary(three.until_ready())
        one.send(Q("SELECT upper('d')"))
        out["back2"] = summary(one.until_ready())
        print(json.dumps(out))
    """))
    assert r["made"][0] == "C:CREATE FUNCTION" and r["made"][-1] == "ZT", r
    assert denied(r["open"]), r
    assert r["ended"][0].startswith("E:57P05:agentgate: this session's change") and "not seen done" in r["ended"][0], r
    assert r["ended"][-1] == "EOF" and r["after_s"] < 10, r
    assert r["back"][:3] == ["T", "D:B", "C:SELECT 1"], r
    assert r["parsed"] == ["1"], r
    assert denied(r["open2"]), r
    assert "not seen done" in r["ended2"][0] and r["ended2"][-1] == "EOF", r
    assert r["back2"][:3] == ["T", "D:D", "C:SELECT 1"], r
    # the open transaction was rolled back when its session ended
    assert pg.sql("SELECT count(*) FROM pg_proc WHERE proname IN ('left_open', 'never_synced')") == "0"


# ---- CTE names and their scope ----------------------------------------------------------

RULES_RO_ORDERS = [{"target": "shop", "allow": {"statements": ["select"], "tables": ["public.orders"]}}]


def test_cte_names_shadow_tables_only_in_scope(enforcer, pg, tmp):
    """A CTE named like a forbidden table is the CTE (PostgreSQL reads it, not the table),
    but only where it is in scope: a sibling subquery, the other branch of a UNION, an
    earlier CTE of a non-recursive WITH and a schema-qualified name all reach the table."""
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_RO_ORDERS))
    res = run_seq(enforcer, pg, [
        # allowed: the CTE, 5 rows of orders (secrets has 1)
        "WITH secrets AS (SELECT id FROM orders) SELECT count(*) FROM secrets",
        # denied: each reaches public.secrets
        "WITH orders AS (SELECT * FROM secrets) SELECT count(*) FROM orders",
        "SELECT (WITH secrets AS (SELECT 1) SELECT count(*) FROM secrets), (SELECT count(*) FROM secrets)",
        "(WITH secrets AS (SELECT 1 AS id) SELECT id FROM secrets) UNION ALL SELECT id FROM secrets",
        "WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1 AS id) SELECT * FROM a",
        "WITH secrets AS (SELECT 1 AS id) SELECT * FROM public.secrets",
        "SELECT * FROM orders o WHERE EXISTS (WITH x AS (SELECT 1) SELECT 1 FROM secrets s WHERE s.id = o.id)",
    ])
    assert res[0][:3] == ["T", "D:5", "C:SELECT 1"], res[0]
    for i in range(1, 7):
        assert denied(res[i]), (i, res[i])
        assert "378282246310005" not in str(res[i])
    assert server_saw(pg, "WITH secrets AS (SELECT id FROM orders)")
    assert not server_saw(pg, "FROM secrets)") and not server_saw(pg, "public.secrets")
    assert not server_saw(pg, "secrets s WHERE")


# ---- protocol ---------------------------------------------------------------------------

RULES_INS = [{"target": "shop",
              "allow": {"statements": ["select", "insert"], "tables": ["public.orders"]}}]


def test_extended_pipeline_denial_rolls_back_the_batch(enforcer, pg, tmp):
    """In one write: Parse/Bind/Execute of an allowed INSERT, then a Parse of a denied
    DELETE (with its Bind/Execute), then Sync. PostgreSQL runs everything up to Sync in one
    implicit transaction; the failed Parse rolls it back. So the insert must be gone as
    well, the DELETE never ran, and after Sync the session works. Then the same inside
    BEGIN with simple Queries pipelined: COMMIT answers ROLLBACK."""
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_INS))
    res = run(enforcer, pg, r"""
out = {}
c = Conn("127.0.0.1", PORT)
c.send(P("", "INSERT INTO orders (id, customer_id, total) VALUES (10, 1, 10)") + B("", "") + E("") +
       P("", "DELETE FROM orders WHERE id < 3") + B("", "") + E("") + S +
       Q("SELECT count(*) FROM orders"))
out["ext"] = summary(c.until_ready(2))
c.send(Q("BEGIN") + Q("INSERT INTO orders (id, customer_id, total) VALUES (11, 1, 11)") +
       Q("SELECT 1; UPDATE orders SET total = 0") + Q("SELECT count(*) FROM orders") + Q("COMMIT"))
out["tx"] = summary(c.until_ready(5))
c.close()
print(json.dumps(out))
""")
    ext = res["ext"]
    assert ext[:2] == ["1", "2"] and ext[2].startswith("C:INSERT"), ext
    assert denied(ext[3:]) and ext[4] == "ZI", ext
    assert ext[5:] == ["T", "D:5", "C:SELECT 1", "ZI"], ext
    tx = res["tx"]
    assert tx[:4] == ["C:BEGIN", "ZT", "C:INSERT 0 1", "ZT"], tx
    # the statement before the denied one ran, as PostgreSQL runs it
    assert tx[4:7] == ["T", "D:1", "C:SELECT 1"] and denied(tx[7:]) and tx[8] == "ZE", tx
    assert tx[9].startswith("E:25P02:") and tx[10] == "ZE", tx
    assert tx[11:] == ["C:ROLLBACK", "ZI"], tx
    assert orders_ids(pg) == "1,2,3,4,5"
    assert pg.sql("SELECT sum(total) FROM orders") == "15"
    assert server_saw(pg, "VALUES (10, 1, 10)")
    assert not server_saw(pg, "DELETE FROM orders") and not server_saw(pg, "SET total = 0")


# A Query whose later statement is denied, in the forms transaction control
# takes; {bad} is the denied statement. Each entry: Queries sent one after the
# other on one connection.
TX_QUERIES = [
    ["BEGIN; INSERT INTO orders (id, customer_id, total) VALUES (20, 1, 1); {bad}",
     "INSERT INTO orders (id, customer_id, total) VALUES (21, 1, 1)", "COMMIT"],
    ["BEGIN; SELECT id FROM orders WHERE id = 1; SAVEPOINT a; "
     "INSERT INTO orders (id, customer_id, total) VALUES (22, 1, 1); {bad}; SELECT 1",
     "ROLLBACK TO SAVEPOINT a", "INSERT INTO orders (id, customer_id, total) VALUES (23, 1, 1)", "COMMIT"],
    ["BEGIN; INSERT INTO orders (id, customer_id, total) VALUES (24, 1, 1); COMMIT; {bad}",
     "SELECT count(*) FROM orders WHERE id = 24"],
    ["INSERT INTO orders (id, customer_id, total) VALUES (25, 1, 1); {bad}",
     "SELECT count(*) FROM orders WHERE id = 25"],
    ["BEGIN", "INSERT INTO orders (id, customer_id, total) VALUES (26, 1, 1); {bad}", "COMMIT"],
]


def test_denied_statement_of_a_query_leaves_the_transaction_as_postgres_would(enforcer, pg, tmp):
    """PostgreSQL runs a Query's statements one by one and stops at the first that fails:
    those before it have run, so a BEGIN among them leaves an aborted block ('E': the
    next statements fail until ROLLBACK), a COMMIT among them has committed, a SAVEPOINT
    can be rolled back to. A denied statement must leave the server exactly so. Before
    (review): the whole text was stood in for, so "BEGIN; INSERT ...; DELETE ..." left
    the session outside any transaction ('I'), and the agent's next INSERT committed on
    its own where PostgreSQL would have refused it (25P02) and rolled all back. The
    reference is PostgreSQL itself, with a statement that fails in place of the denied
    one; the denied statement never reaches the server."""
    _query_with_a_statement_not_allowed(enforcer, pg, tmp, RULES_INS,
                                        "E:42501:agentgate: denied: statement delete")


RULES_INS_REVIEW = [{"target": "shop",
                     "allow": {"statements": ["select", "insert", "delete"], "tables": ["public.orders"]},
                     "review": {"statements": ["delete"], "tables": ["public.orders"]}}]


def test_statement_needing_approval_in_a_query_leaves_the_transaction_as_postgres_would(enforcer, pg, tmp):
    """As above, with the DELETE needing approval (a review rule; approvals are not
    available, so it is refused) instead of denied: the statements before it run, as
    before a denied one (review, stop 65: the whole text was stood in for)."""
    _query_with_a_statement_not_allowed(enforcer, pg, tmp, RULES_INS_REVIEW,
                                        "E:42501:agentgate: denied: review: needs approval")


def _query_with_a_statement_not_allowed(enforcer, pg, tmp, rules, refusal):
    import pgraw
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=rules))

    def norm(summ):
        # errors by code, but the two stand-ins for the same failure
        out = []
        for x in summ:
            if x.startswith("E:"):
                x = "E:fails" if x.startswith(("E:42501:agentgate: denied", "E:42P01:")) else x[:8]
            out.append(x)
        return out

    want, ids = [], []
    for seq in TX_QUERIES:
        c = pgraw.Conn(pg.sock, pg.port, user="postgres")
        got = []
        for q in seq:
            c.send(pgraw.Q(q.format(bad="DELETE FROM no_such_table")))
            got.append(norm(pgraw.summary(c.until_ready())))
        c.close()
        want.append(got)
        ids.append(orders_ids(pg))
        pg.sql("DELETE FROM orders WHERE id >= 20")
    res = run(enforcer, pg, f"SEQS = {json.dumps(TX_QUERIES)}\n" + r"""
out = []
for seq in SEQS:
    c = Conn("127.0.0.1", PORT)
    got = []
    for q in seq:
        c.send(Q(q.format(bad="DELETE FROM orders")))
        got.append(summary(c.until_ready()))
    c.close()
    out.append(got)
    time.sleep(0.2)
print(json.dumps(out))
""")
    got_ids = []
    for i, seq in enumerate(res):
        assert [norm(s) for s in seq] == want[i], (TX_QUERIES[i], seq, want[i])
        assert any(x.startswith(refusal) for s in seq for x in s), seq
    # what committed: the same (ids after each sequence, added up)
    assert want[0][0][-1] == "ZE" and want[0][1][0].startswith("E:25P02") and want[0][2][0] == "C:ROLLBACK"
    got_ids = orders_ids(pg)
    assert got_ids == "1,2,3,4,5,23,24", got_ids
    assert ids == ["1,2,3,4,5", "1,2,3,4,5,23", "1,2,3,4,5,24", "1,2,3,4,5", "1,2,3,4,5"], ids
    assert not server_saw(pg, "DELETE FROM orders")


def test_deep_nesting_is_denied_and_the_session_lives(enforcer, pg, tmp):
    """Texts that nest deeply (parentheses; unary operators under 8 KB, down to one byte a
    level: the tree walk; a long left-deep + chain, casts, brackets over 8 KB: the lexer's
    bound)
    must be denied without taking down the enforcer (libpg_query's recursion, the tree
    walk), and the same session goes on."""
    enforcer.start(policy(pg, tmp, rules=RULES_RO_ORDERS))
    res = run(enforcer, pg, r"""
texts = {
    "parens": "SELECT " + "(" * 20000 + "1" + ")" * 20000 + " FROM orders",
    "minus": "SELECT " + "-(" * 2000 + "id" + ")" * 2000 + " FROM orders",
    "unary": "SELECT " + "-+" * 4040 + "id FROM orders",
    "chain": "SELECT 1" + "+1" * 100000 + " FROM orders",
    "casts": "SELECT 1" + "::int" * 50000 + " FROM orders",
    "arrays": "SELECT ARRAY" + "[" * 5000 + "1" + "]" * 5000,
}
out = {}
c = Conn("127.0.0.1", PORT, timeout=60)
for k, sql in texts.items():
    c.send(Q(sql))
    out[k] = summary(c.until_ready())
c.send(Q("SELECT count(*) FROM orders"))
out["after"] = summary(c.until_ready())
c.close()
print(json.dumps(out))
""")
    for k in ("parens", "minus", "unary", "chain", "casts", "arrays"):
        assert denied(res[k]) and res[k][-1] == "ZI", (k, res[k])
    assert res["after"] == ["T", "D:5", "C:SELECT 1", "ZI"], res["after"]
    assert orders_ids(pg) == "1,2,3,4,5"


# ---- DDL that reaches objects it does not name ------------------------------------------

RULES_TRUNCATE = [{"target": "shop",
                   "allow": {"statements": ["select", "truncate_table"], "tables": ["public.orders"]}}]


def test_truncate_cascade_reaches_unnamed_tables(enforcer, pg, tmp):
    """TRUNCATE orders CASCADE also empties every table with a foreign key to orders. A rule
    that grants truncate on public.orders alone must not empty public.order_notes: CASCADE
    names objects the classifier cannot see (like DROP ... CASCADE), so only a rule without
    tables: may allow it. Plain TRUNCATE orders is the rule's to allow (the server then
    refuses it because of the foreign key)."""
    pg.sql("CREATE TABLE order_notes (order_id int REFERENCES orders(id), note text); "
           "INSERT INTO order_notes VALUES (1, 'keep me'); "
           "GRANT SELECT, INSERT, TRUNCATE ON order_notes TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_TRUNCATE))
    res = run_seq(enforcer, pg, ["TRUNCATE orders CASCADE",
                                 "TRUNCATE TABLE ONLY public.orders RESTART IDENTITY CASCADE",
                                 "TRUNCATE orders"])
    assert pg.sql("SELECT count(*) FROM order_notes") == "1", res
    assert orders_ids(pg) == "1,2,3,4,5"
    assert denied(res[0]) and denied(res[1]), res
    assert res[2][0].startswith("E:0A000:cannot truncate a table referenced in a foreign key"), res[2]
    assert not server_saw(pg, "orders CASCADE") and not server_saw(pg, "IDENTITY CASCADE")


RULES_TRIGGER = [{"target": "shop",
                  "allow": {"statements": ["select", "insert", "create_trigger"], "tables": ["public.orders"]}}]


def test_create_trigger_function_needs_a_rule(enforcer, pg, tmp):
    """CREATE TRIGGER ... EXECUTE FUNCTION f() makes every later write run f. Like CALL p(),
    f must be named by the rule's functions:; here it is a SECURITY DEFINER function of the
    database that empties public.secrets, which no rule names. The trigger must not be
    created, and the INSERT the rule allows must not run f."""
    pg.sql("CREATE FUNCTION public.audit_trg() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS "
           "$$BEGIN DELETE FROM public.secrets; RETURN NULL; END$$; GRANT TRIGGER ON orders TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_TRIGGER))
    res = run_seq(enforcer, pg, [
        "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION audit_trg()",
        "CREATE TRIGGER t2 AFTER INSERT ON public.orders FOR EACH ROW EXECUTE PROCEDURE public.audit_trg()",
        "INSERT INTO orders (customer_id, total) VALUES (1, 6)"])
    assert pg.sql("SELECT count(*) FROM secrets") == "1", res
    assert pg.sql("SELECT count(*) FROM pg_trigger WHERE tgname IN ('t', 't2')") == "0", res
    assert denied(res[0]) and denied(res[1]), res
    assert res[2] == ["C:INSERT 0 1", "ZI"], res[2]
    assert not server_saw(pg, "CREATE TRIGGER")


RULES_FOREIGN = [{"target": "shop",
                  "allow": {"statements": ["select", "create_foreign_table"],
                            "tables": ["public.orders", "public.scratch"]}}]


def test_foreign_table_reads_what_its_options_name(enforcer, pg, tmp):
    """A foreign table's rows come from what its OPTIONS name: with file_fdw, a server
    file or a program's output (COPY's FROM '/file' and FROM PROGRAM, which are always
    denied). A rule that lets the agent create one table, public.scratch, and read it must
    not let it read /etc/hostname or run a program on the database server: CREATE FOREIGN
    TABLE names its real source in strings the classifier cannot judge, so only a rule
    without tables: may allow it."""
    pg.sql("CREATE EXTENSION file_fdw; CREATE SERVER files FOREIGN DATA WRAPPER file_fdw; "
           "GRANT USAGE ON FOREIGN SERVER files TO app; GRANT CREATE ON SCHEMA public TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_FOREIGN))
    res = run_seq(enforcer, pg, [
        "CREATE FOREIGN TABLE scratch (line text) SERVER files OPTIONS (program 'echo ran-by-agent-42')",
        "SELECT * FROM scratch",
        "DROP FOREIGN TABLE IF EXISTS scratch",
        "CREATE FOREIGN TABLE public.scratch (line text) SERVER files OPTIONS (filename '/etc/hostname')",
        "SELECT * FROM scratch",
    ])
    assert pg.sql("SELECT count(*) FROM pg_class WHERE relname = 'scratch'") == "0", res
    assert "ran-by-agent-42" not in str(res), res
    assert denied(res[0]) and denied(res[3]), res
    assert not server_saw(pg, "OPTIONS (program") and not server_saw(pg, "OPTIONS (filename")


def test_functions_with_side_effects_on_other_sessions(enforcer, pg, tmp):
    """Under a read-only rule: signalling another backend (pg_terminate_backend,
    pg_cancel_backend, also hidden in WHERE or FROM), advisory locks, sequences, XID
    assignment and notifications must be denied, and the server must show none of their
    effects: the victim session lives, the sequence did not move, none of it was logged."""
    victim = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "app", "-d", "shop",
                               "-Atc", "SELECT 'victim', pg_sleep(60)"],
                              env=dict(os.environ, PGPASSWORD="app-secret-pw"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = ""
        for _ in range(100):
            pid = pg.sql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT ''victim''%'")
            if pid:
                break
            time.sleep(0.1)
        assert pid.isdigit(), pid
        log_all(pg)
        enforcer.start(policy(pg, tmp, rules=RULES_RO_ORDERS))
        sqls = [f"SELECT pg_terminate_backend({pid})",
                f"SELECT pg_catalog.pg_cancel_backend({pid})",
                f"SELECT id FROM orders WHERE pg_terminate_backend({pid})",
                f"SELECT * FROM orders, pg_terminate_backend({pid}) t",
                f"SELECT id FROM orders ORDER BY pg_cancel_backend({pid})",
                "SELECT pg_advisory_lock(4242)",
                "SELECT pg_try_advisory_lock(4242) FROM orders LIMIT 1",
                "SELECT nextval('orders_id_seq')",
                "SELECT txid_current()",
                "SELECT pg_current_xact_id()",
                "LISTEN chan",
                "SELECT pg_notify('chan', 'x')"]
        res = run_seq(enforcer, pg, sqls)
        assert victim.poll() is None, "the victim session was ended"
        assert pg.sql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'") == "1"
        assert pg.sql("SELECT last_value FROM orders_id_seq") == "5"
        for i, sql in enumerate(sqls):
            assert denied(res[i]), (sql, res[i])
        for marker in ("_backend(", "advisory_lock(", "nextval(", "xact_id(", "LISTEN chan", "pg_notify("):
            assert not server_saw(pg, marker), marker
    finally:
        victim.kill()
        victim.wait()


RULES_DDL_ANY = [{"target": "shop", "allow": {"statements": ["select", "ddl"]}}]


def test_create_operator_binds_a_function_no_rule_names(enforcer, pg, tmp):
    """An operator is a function call that the classifier does not judge as one (it allows
    any unqualified operator). A role that may run DDL (a schema-migration agent, no
    tables: list) but no function outside the safe list must not bind one to an operator:
    CREATE OPERATOR ### (FUNCTION = pg_terminate_backend) and then `SELECT pid ### 0`
    ended another session. Same for an aggregate's state function."""
    pg.sql("GRANT CREATE ON SCHEMA public TO app")
    victim = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "app", "-d", "shop",
                               "-Atc", "SELECT 'victim', pg_sleep(60)"],
                              env=dict(os.environ, PGPASSWORD="app-secret-pw"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = ""
        for _ in range(100):
            pid = pg.sql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT ''victim''%'")
            if pid:
                break
            time.sleep(0.1)
        assert pid.isdigit(), pid
        log_all(pg)
        enforcer.start(policy(pg, tmp, rules=RULES_DDL_ANY))
        res = run_seq(enforcer, pg, [
            "CREATE OPERATOR public.### (LEFTARG = int4, RIGHTARG = int8, FUNCTION = pg_terminate_backend)",
            f"SELECT {pid} ### 0::int8",
            "CREATE AGGREGATE public.agg_nv(regclass) (SFUNC = pg_catalog.setval, STYPE = int8, INITCOND = '1')",
            "CREATE OPERATOR public.#### (RIGHTARG = regclass, PROCEDURE = nextval)",
            "ALTER OPERATOR public.### (int4, int8) SET (RESTRICT = pg_read_file)",
        ])
        assert victim.poll() is None, ("the victim session was ended", res)
        assert pg.sql("SELECT count(*) FROM pg_operator WHERE oprname LIKE '###%'") == "0", res
        assert pg.sql("SELECT count(*) FROM pg_proc WHERE proname = 'agg_nv'") == "0", res
        for i in (0, 2, 3, 4):
            assert denied(res[i]) and "function" in res[i][0], (i, res[i])
        assert not server_saw(pg, "CREATE OPERATOR") and not server_saw(pg, "CREATE AGGREGATE")
    finally:
        victim.kill()
        victim.wait()


def test_operator_classes_and_exclusion_operators(enforcer, pg, tmp):
    """An index runs its operator class's support functions on every row, and an EXCLUDE
    constraint its operator: code the statement never calls by name. With the database's
    public.evil_ops (a hash class over a function that writes a row) `CREATE INDEX ...
    (id evil_ops)` ran it once per row; `EXCLUDE (id WITH ===)` binds a user-defined
    operator no rule names. Both are denied; pg_catalog's classes, named or not, work
    (which also shows the session read the pinned schema's operator classes)."""
    pg.sql(FN_CALLS.format(name="evil_hash", arg="integer", ret="integer", value="0") +
           FN_DEF.format(name="evil_eq", arg="integer, integer", ret="bool", value="false") +
           "CREATE OPERATOR public.=== (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.evil_eq,"
           " COMMUTATOR = ===);"
           "CREATE OPERATOR CLASS public.evil_ops FOR TYPE integer USING hash AS OPERATOR 1 =,"
           " FUNCTION 1 public.evil_hash(integer);"
           "CREATE TABLE t_app (id int); INSERT INTO t_app VALUES (1), (2);"
           "ALTER TABLE t_app OWNER TO app; GRANT CREATE ON SCHEMA public TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_DDL_ANY))
    res = run_seq(enforcer, pg, [
        "CREATE INDEX ON t_app USING hash (id evil_ops)",
        "CREATE INDEX ON t_app USING hash (id public.evil_ops)",
        "ALTER TABLE t_app ADD EXCLUDE USING hash (id WITH ===)",
        "CREATE TABLE t_part (id int) PARTITION BY HASH (id evil_ops)",
        "CREATE INDEX t_app_ok ON t_app USING hash (id pg_catalog.int4_ops)",
        "CREATE INDEX t_app_ok2 ON t_app (id int4_ops)",
    ])
    for i in range(4):
        assert denied(res[i]) and "operator" in res[i][0], (i, res[i])
    assert "evil_ops" in res[0][0] and "pinned schema defines" in res[0][0], res[0]
    assert res[4][0] == "C:CREATE INDEX", res[4]
    assert res[5][0] == "C:CREATE INDEX", res[5]
    assert pg.sql("SELECT count(*) FROM fn_calls") == "0"
    assert pg.sql("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                  "WHERE c.relname = 't_app'") == "2"
    assert not server_saw(pg, "evil_ops") and not server_saw(pg, "===")


# ---- ways around found by review (stop 17) ----------------------------------------------

RULES_REVIEW = [{"target": "shop",
                 "allow": {"statements": ["select", "insert"],
                           "tables": ["public.customers", "public.orders", "public.docs", "pg_catalog.*"]},
                 "mask": {"columns": ["public.customers.email", "public.customers.cc"]}}]


def test_ways_around_found_by_review(enforcer, pg, tmp):
    """Each of these read masked values or a table no rule allows, or ran a function no
    rule names, on PostgreSQL 15 before the fix: a CTE of WITH RECURSIVE used before its
    definition (the classifier took the name for the table it shadows), a join alias
    whose column list renames masked columns, subscripts in INSERT's column list (never
    walked), an ORDER BY position counted past a t.* (which PostgreSQL expands), the
    planner statistics (values sampled from every column) under pg_catalog.*, and SHOW
    of a custom setting (what current_setting() is denied for). Denied, the server never
    sees them; the allowed controls still work, and a renamed masked column as a plain
    output column is masked by its lineage."""
    pg.sql("CREATE TABLE docs (id int, doc jsonb); GRANT SELECT, INSERT ON docs TO app; "
           "ANALYZE customers; ALTER ROLE app SET app.secret = 'custom-secret-77'")
    assert "4111111111111111" in pg.sql("SELECT histogram_bounds::text FROM pg_stats "
                                        "WHERE tablename = 'customers' AND attname = 'cc'")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_REVIEW))
    res = run_seq(enforcer, pg, [
        "WITH RECURSIVE a AS (SELECT total || '' AS rv_one FROM orders), "
        "orders AS (SELECT cc AS total FROM customers) SELECT rv_one FROM a",
        "SELECT j.k || '' AS rv_two FROM (customers CROSS JOIN (SELECT 1) o) AS j(i, m, k)",
        "INSERT INTO docs (id, doc[(SELECT cc FROM secrets LIMIT 1)]) VALUES (1, '1')",
        "INSERT INTO docs (id, doc[(SELECT cc FROM customers LIMIT 1)]) VALUES (2, '1')",
        "SELECT o.*, c.id AS rv_five, c.cc FROM orders o, customers c WHERE o.id = 1 ORDER BY 5 DESC",
        "SELECT attname AS rv_six, histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
        "SHOW app.secret",
        # controls
        "SELECT j.k AS rv_ok FROM (customers CROSS JOIN (SELECT 1) o) AS j(i, m, k)",
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT count(*) FROM t",
        "INSERT INTO docs (id, doc) VALUES (3, '{\"a\": 1}')",
        "SELECT count(*) FROM docs",
    ])
    for i in range(7):
        assert denied(res[i]), (i, res[i])
    out = str(res)
    for value in ("4111111111111111", "5500005555555559", "378282246310005", "custom-secret-77"):
        assert value not in out, (value, res)
    assert res[7][0] == "T" and "C:SELECT 2" in res[7], res[7]
    assert res[8][:3] == ["T", "D:3", "C:SELECT 1"], res[8]
    assert "C:INSERT 0 1" in res[9], res[9]
    assert res[10][:3] == ["T", "D:1", "C:SELECT 1"], res[10]   # only the control's row
    for marker in ("rv_one", "rv_two", "doc[(SELECT", "rv_five", "rv_six", "SHOW app.secret"):
        assert not server_saw(pg, marker), marker
    assert server_saw(pg, "rv_ok")


def test_cycle_mark_values_are_casts(enforcer, pg, tmp):
    """CYCLE ... SET m TO <typed literal> DEFAULT <typed literal> casts to a type, like
    `dom 'a'` anywhere else: a domain whose CHECK calls a function ran that function from a
    read-only SELECT, and it wrote to a table no rule allows (found by review, stop 17).
    Denied, the server never sees it and the function never runs; plain mark values pass."""
    pg.sql("CREATE SCHEMA other; CREATE TABLE other.log (v text); "
           "CREATE FUNCTION other.hook(v text) RETURNS boolean LANGUAGE plpgsql AS "
           "'BEGIN INSERT INTO other.log VALUES (v); RETURN true; END'; "
           "CREATE DOMAIN other.dom AS text CHECK (other.hook(VALUE)); "
           "GRANT USAGE ON SCHEMA other TO app; GRANT INSERT, SELECT ON other.log TO app")
    log_all(pg)
    enforcer.start(policy(pg, tmp, rules=RULES_RO_ORDERS))
    res = run_seq(enforcer, pg, [
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "CYCLE n SET m TO other.dom 'a' DEFAULT other.dom 'b' USING p SELECT n AS cy_one FROM r",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "CYCLE n SET m TO 'a' DEFAULT 'b' USING p SELECT count(*) AS cy_ok FROM r",
    ])
    assert denied(res[0]), res[0]
    assert res[1][:3] == ["T", "D:3", "C:SELECT 1"], res[1]
    assert not server_saw(pg, "cy_one") and server_saw(pg, "cy_ok")
    assert pg.sql("SELECT count(*) FROM other.log").strip() == "0"
