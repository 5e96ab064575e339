# SPDX-License-Identifier: Apache-2.0
"""audit.allowed_requests: false drops the per-statement / per-request events
of ALLOWED statements and requests (what `make bench` compares against full
auditing), and nothing else: denials, connections and the setting itself
(status, log) stay visible. A real PostgreSQL and psql through the redirect."""
import json

from test_postgres import AGENT, pg, policy, psql  # noqa: F401  (pg is a fixture)


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
