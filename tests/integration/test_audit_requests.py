# SPDX-License-Identifier: Apache-2.0
"""audit.allowed_requests: false drops the per-statement / per-request events
of ALLOWED statements and requests (what `make bench` compares against full
auditing), and nothing else: denials, connections and the setting itself
(status, log) stay visible. A real PostgreSQL and psql through the redirect."""
import json
import textwrap

from test_postgres import AGENT, agent_py, pg, policy, psql  # noqa: F401  (pg is a fixture)


def _events(enforcer, cls):
    return [e for e in enforcer.events() if e.get("class_uid") == cls]


def test_allowed_statements_not_recorded_denials_are(enforcer, pg, tmp):  # noqa: F811
    text = policy(pg, tmp)
    text += f"audit: {json.dumps({'allowed_requests': False, 'sinks': [{'type': 'file', 'path': enforcer.audit}]})}\n"
    enforcer.start(text)
    st = enforcer.status()
    assert st["audit"]["allowed_requests"] is False, st.get("audit")
    assert "allowed_requests: false" in enforcer.read_log()
    rc, out, err = psql(enforcer, pg, "SELECT count(*) FROM orders")
    assert rc == 0 and out.strip().isdigit(), err
    rc, out, err = psql(enforcer, pg, "DELETE FROM orders")
    assert rc != 0 and "agentgate: denied" in err, (rc, out, err)
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 6005 and
                             e["unmapped"].get("verdict") == "deny")
    assert ev and ev["unmapped"]["statement"]["tag"] == "delete", ev
    stmts = _events(enforcer, 6005)
    assert all(e["unmapped"]["verdict"] == "deny" for e in stmts), stmts
    # both sessions' connections are still recorded
    assert enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and
                               e.get("activity_name") == "Close" and
                               e["unmapped"].get("module") == "postgres")


def test_default_records_every_statement(enforcer, pg, tmp):  # noqa: F811
    enforcer.start(policy(pg, tmp))
    assert enforcer.status()["audit"]["allowed_requests"] is True
    rc, out, err = psql(enforcer, pg, "SELECT count(*) FROM orders")
    assert rc == 0, err
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 6005 and
                             e["unmapped"].get("verdict") == "allow")
    assert ev and ev["unmapped"]["statement"]["tables"] == "public.orders", ev


def test_statement_events_in_order_before_close(enforcer, pg, tmp):  # noqa: F811
    """A statement's event is built after its answer has gone out and after
    what else the worker had ready (the agent's next query goes upstream
    first): still one event per statement, in the session's order, all
    before the connection's Close, also for a session that ends right
    after its last answer. Simple queries one by one, a two-statement
    query, three Executes pipelined in one Sync, then a simple query and
    Terminate sent together."""
    enforcer.start(policy(pg, tmp))
    res = agent_py(enforcer, f"PORT = {pg.port}\n" + textwrap.dedent("""
        c = Conn("127.0.0.1", PORT)
        out = []
        for i in range(5):
            c.send(Q(f"SELECT id FROM orders ORDER BY id LIMIT {i}"))
            out.append(summary(c.until_ready()))
        c.send(Q("SELECT id FROM orders LIMIT 1; SELECT id FROM orders LIMIT 2"))
        out.append(summary(c.until_ready()))
        c.send(P("s", "SELECT id FROM orders ORDER BY id LIMIT $1") + S)
        out.append(summary(c.until_ready()))
        c.send(b"".join(B("", "s", [str(n)]) + E("") for n in (4, 3, 2)) + S)
        out.append(summary(c.until_ready()))
        c.send(Q("SELECT id FROM orders LIMIT 1") + X)
        out.append(summary(c.until_ready()))
        c.s.close()
        for k in range(8):   # the answer and the server's end often come in one read
            c = Conn("127.0.0.1", PORT)
            c.send(Q("SELECT id FROM orders LIMIT 3") + X)
            c.s.shutdown(socket.SHUT_WR)
            out.append(summary(c.until_ready()))
            c.s.close()
        print(json.dumps(out))
    """))
    assert all(r[-1] == "ZI" and not any(x.startswith("E:") for x in r) for r in res), res
    close = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e.get("activity_name") == "Close" and
                                e["unmapped"].get("module") == "postgres")
    assert close, enforcer.read_log()
    stmts = [e for e in enforcer.events() if e.get("class_uid") == 6005 and
             e["unmapped"]["connection_uid"] == close["connection_info"]["uid"]]
    got = [(e["unmapped"]["statement"]["protocol"], e["unmapped"]["statement"]["rows"],
            e["unmapped"]["statement"].get("index")) for e in stmts]
    assert got == [("simple", 0, 1), ("simple", 1, 1), ("simple", 2, 1), ("simple", 3, 1), ("simple", 4, 1),
                   ("simple", 1, 1), ("simple", 2, 2),
                   ("extended", 4, 1), ("extended", 3, 1), ("extended", 2, 1),
                   ("simple", 1, 1)], got
    seqs = [e["metadata"]["sequence"] for e in stmts]
    assert seqs == sorted(seqs) and seqs[-1] < close["metadata"]["sequence"], (seqs, close["metadata"])
    assert all(e["unmapped"]["verdict"] == "allow" and e.get("duration") is not None for e in stmts), stmts
    # the short sessions: each one's event, then its Close
    assert enforcer.wait_event(lambda e: len([x for x in enforcer.events() if x.get("class_uid") == 4001 and
                                              x.get("activity_name") == "Close"]) >= 9)
    evs = enforcer.events()
    closes = [e for e in evs if e.get("class_uid") == 4001 and e.get("activity_name") == "Close" and
              e["connection_info"]["uid"] != close["connection_info"]["uid"]]
    assert len(closes) == 8, closes
    for cl in closes:
        mine = [e for e in evs if e.get("class_uid") == 6005 and
                e["unmapped"]["connection_uid"] == cl["connection_info"]["uid"]]
        assert [e["unmapped"]["statement"]["rows"] for e in mine] == [3], mine
        assert mine[0]["metadata"]["sequence"] < cl["metadata"]["sequence"], (mine, cl)


def test_allowed_requests_must_be_boolean(enforcer, pg, tmp):  # noqa: F811
    path = f"{tmp}/bad.yaml"
    with open(path, "w") as f:
        f.write(policy(pg, tmp) + "audit: {allowed_requests: sometimes}\n")
    r = enforcer.cli("policy", "check", path)
    assert r.returncode != 0 and "allowed_requests" in (r.stdout + r.stderr), (r.stdout, r.stderr)


def test_http_allowed_requests_not_recorded_denials_are(enforcer, tmp, servers):
    """The same for HTTP (4002): an allowed GET leaves no event, a denied
    DELETE on the same keep-alive connection does."""
    import textwrap
    from test_http import Recorder, crlf, policy as http_policy, raw, responses
    rec = Recorder(tmp, servers.procs)
    text = textwrap.dedent(http_policy(rec.port))
    text += f"audit: {json.dumps({'allowed_requests': False, 'sinks': [{'type': 'file', 'path': enforcer.audit}]})}\n"
    enforcer.start(text)
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/7 HTTP/1.1⏎Host: api.internal⏎⏎"),
              crlf("DELETE /v1/invoices/7 HTTP/1.1⏎Host: api.internal⏎⏎"))
    got, _ = responses(out)
    assert [g[0] for g in got] == [200, 403], out
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002)
    assert ev and ev["http_request"]["http_method"] == "DELETE" and ev["unmapped"]["verdict"] == "deny", ev
    assert enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and e.get("activity_name") == "Close")
    assert [e["http_request"]["http_method"] for e in _events(enforcer, 4002)] == ["DELETE"]
