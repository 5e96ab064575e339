# SPDX-License-Identifier: Apache-2.0
"""Every audit event class the enforcer emits, validated against a JSON
Schema of its required fields (tests/integration/schemas/: the OCSF 1.8.0
requirements from shared/notes/identity-audit.md §4 plus our envelope and
agent context), with the checks a schema cannot express: type_uid =
class_uid * 100 + activity_id, activity names per class, and no secret in
any value.

Needs python3-jsonschema (Debian package, 4.10) under /usr/bin/python3.

validate_events() is also called by test_audit_sinks.py and
test_audit_spool.py on the trails they produce (loss events, syslog/http
runs), so every class emitted in these tests is checked."""
import copy
import json
import os
import re

import pytest

from conftest import connect_code

try:
    import jsonschema
except ImportError:          # the Debian package python3-jsonschema
    jsonschema = None
NEED = "python3-jsonschema is not installed (apt-get install python3-jsonschema)"

HERE = os.path.dirname(__file__)
SCHEMA_DIR = os.path.join(HERE, "schemas")


def _load():
    store, classes = {}, {}
    for f in sorted(os.listdir(SCHEMA_DIR)):
        with open(os.path.join(SCHEMA_DIR, f)) as fh:
            s = json.load(fh)
        store[s["$id"]] = s
        if f[:4].isdigit():
            classes[int(f[:4])] = s
    return store, classes


STORE, CLASSES = _load()

# values that must never reach the trail
SECRET_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\."),       # a JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(Bearer|Splunk|ApiKey) [A-Za-z0-9._~+/=-]{8,}"),  # an Authorization value
    re.compile(r"client_secret\W+[^\"]"),
]


def _validator(cls):
    schema = CLASSES[cls]
    resolver = jsonschema.RefResolver.from_schema(schema, store=STORE)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


def problems(ev):
    """Every way ev falls short of its class's schema, as strings."""
    if jsonschema is None:
        pytest.skip(NEED)
    cls = ev.get("class_uid")
    if cls not in CLASSES:
        return [f"class_uid {cls!r} has no schema in tests/integration/schemas/"]
    out = [f"{'/'.join(map(str, e.absolute_path)) or '<event>'}: {e.message}"
           for e in _validator(cls).iter_errors(ev)]
    act = ev.get("activity_id")
    if isinstance(act, int) and ev.get("type_uid") != cls * 100 + act:
        out.append(f"type_uid {ev.get('type_uid')} != {cls} * 100 + {act}")
    names = CLASSES[cls].get("x-activities", {}).get(str(act))
    if names is None:
        out.append(f"activity_id {act} is not an activity of class {cls}")
    elif ev.get("activity_name") not in (names if isinstance(names, list) else [names]):
        out.append(f"activity_name {ev.get('activity_name')!r} does not match activity_id {act}")
    text = json.dumps(ev)
    for p in SECRET_PATTERNS:
        if p.search(text):
            out.append(f"a value looks like a secret ({p.pattern})")
    return out


def validate_events(evs):
    """Asserts every event conforms; returns the set of classes seen."""
    bad = []
    for ev in evs:
        for p in problems(ev):
            bad.append(f"seq {ev.get('metadata', {}).get('sequence')} class {ev.get('class_uid')}: {p}")
    assert not bad, "\n".join(bad[:30])
    return {ev["class_uid"] for ev in evs}


SEEN = set()


def events(enforcer):
    with open(enforcer.audit) as f:
        return [json.loads(l) for l in f.read().split("\n")[:-1] if l.strip()]


def test_network_dns_lifecycle_and_checkpoint_events(enforcer, servers):
    from test_datapath import DNS_QUERY, dns_policy
    web, _ = servers.echo("127.0.0.2")
    dns = servers.dnsmasq({"api.test": "127.0.0.2"})
    enforcer.start(dns_policy(dns, web))
    code = DNS_QUERY + f"""
import socket
frm, rcode, ips = query("api.test", ("192.0.2.53", 53))
frm, rcode, ips = query("blocked.example", ("192.0.2.53", 53))
s = socket.create_connection(("127.0.0.2", {web}), timeout=5); s.sendall(b"hi"); s.recv(10); s.close()
try:
    socket.create_connection(("127.0.0.3", {web}), timeout=5)
except OSError:
    pass
print("done")
"""
    r = enforcer.py("t-agent", code)
    assert r.stdout.strip().endswith("done"), r.stdout + r.stderr
    assert enforcer.wait_event(lambda e: e["class_uid"] == 4001 and e["activity_name"] == "Close")
    enforcer.stop()
    evs = events(enforcer)
    seen = validate_events(evs)
    assert {4001, 4003, 6002, 1008} <= seen, seen
    acts = {(e["class_uid"], e["activity_name"]) for e in evs}
    assert {(4001, "Open"), (4001, "Close"), (4001, "Refuse"), (4003, "Response"), (4003, "Query"),
            (6002, "Start"), (6002, "Stop"), (1008, "Other")} <= acts, acts
    SEEN.update(seen)


def test_authentication_events(enforcer, servers, tmp):
    from test_enforcer_identity import policy as id_policy
    from test_token import Provider
    p = Provider(tmp)
    try:
        port, _ = servers.echo()
        enforcer.start(id_policy(tmp, p.issuer, port))
        r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
        assert r.stdout.startswith("OK"), r.stdout + r.stderr
        assert enforcer.wait_event(lambda e: e["class_uid"] == 3002)
        enforcer.stop()
    finally:
        p.stop()
    evs = events(enforcer)
    seen = validate_events(evs)
    assert 3002 in seen
    [auth] = [e for e in evs if e["class_uid"] == 3002][:1]
    assert auth["user"]["uid"] and auth["unmapped"]["agent"]["principal"]["verified"] is True
    SEEN.update(seen)


def test_schemas_can_fail():
    """Each kind of defect is caught: the schemas are not vacuous."""
    good = {
        "class_uid": 4001, "class_name": "Network Activity", "category_uid": 4,
        "category_name": "Network Activity", "activity_id": 1, "activity_name": "Open",
        "type_uid": 400101, "type_name": "Network Activity: Open", "severity_id": 1,
        "severity": "Informational", "time": 1795927100123,
        "status_id": 1, "status": "Success", "action_id": 1, "action": "Allowed",
        "disposition_id": 1, "disposition": "Allowed",
        "connection_info": {"protocol_num": 6, "direction_id": 2},
        "actor": {"process": {"pid": 1, "name": "python3"}, "user": {"uid": "a", "name": "a"}},
        "metadata": {"version": "1.8.0", "uid": "0192d5e2-6f1c-7a55-9d7e-3b1f5c2a9e01", "sequence": 3,
                     "prev_hash": "0" * 64, "log_name": "agentgate",
                     "product": {"name": "agentgate", "vendor_name": "agentgate", "version": "0.1"}},
        "unmapped": {"policy": {"hash": "a" * 64, "path": "p.yaml"}, "verdict": "allow",
                     "agent": {"name": "a", "cgroup": "/x", "cgroup_id": 7,
                               "principal": {"iss": "local", "sub": "a", "verified": False}}},
    }
    assert problems(good) == []

    def broken(mut):
        ev = copy.deepcopy(good)
        mut(ev)
        return problems(ev)
    assert broken(lambda e: e["metadata"].pop("uid"))
    assert broken(lambda e: e["metadata"].update(uid="0192d5e2-6f1c-4a55-9d7e-3b1f5c2a9e01"))  # v4
    assert broken(lambda e: e["metadata"].update(version="1.7.0"))
    assert broken(lambda e: e["metadata"].update(sequence=0))
    assert broken(lambda e: e.update(type_uid=400102))
    assert broken(lambda e: e.update(activity_name="Close"))
    assert broken(lambda e: e.update(activity_id=2, type_uid=400102, activity_name="Close"))  # no traffic
    assert broken(lambda e: e.pop("disposition"))
    assert broken(lambda e: e.pop("connection_info"))
    assert broken(lambda e: e["unmapped"].pop("agent"))
    assert broken(lambda e: e["unmapped"].pop("policy"))
    assert broken(lambda e: e.update(class_uid=4999))
    assert broken(lambda e: e.update(message="token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.sig"))
    assert broken(lambda e: e.update(message="Authorization: Bearer abcdefghijklmnop"))
    drop = {k: v for k, v in good.items() if k not in ("connection_info",)}
    drop.update(class_uid=1008, class_name="Event Log Activity", category_uid=1,
                category_name="System Activity", activity_id=99, activity_name="Drop",
                type_uid=100899, message="x", device={"hostname": "h", "type_id": 1})
    assert broken(lambda e: None) == []
    assert problems(drop)          # a Drop needs count, start/end time, severity >= 3, unmapped.loss
    drop.update(count=3, start_time=1, end_time=2, severity_id=4)
    drop["unmapped"]["loss"] = {"counter": "spool_full", "count": 3}
    assert problems(drop) == []


def test_http_and_datastore_events(enforcer, servers, tmp):
    """HTTP Activity (4002) from the http module and Datastore Activity (6005)
    from the postgres module, allowed and denied, against their schemas."""
    import sys
    sys.path.insert(0, os.path.join(HERE, "helpers"))
    from pg import Postgres
    from test_http import Recorder, crlf, raw
    from test_http import AGENT as HTTP_AGENT
    from test_postgres import psql
    from test_postgres import policy as pg_policy

    rec = Recorder(tmp, servers.procs)
    os.chmod(tmp, 0o755)
    pg = Postgres(tmp)
    try:
        doc = pg_policy(pg, tmp)
        # both modules in one policy: the postgres policy plus an http agent, target and role
        out = []
        for l in doc.splitlines():
            if l.startswith("agents: "):
                agents = json.loads(l[len("agents: "):]) + [{"name": HTTP_AGENT}]
                l = "agents: " + json.dumps(agents)
            elif l.startswith("targets: "):
                t = json.loads(l[len("targets: "):]) + [{"name": "api", "protocol": "http",
                                                         "address": f"127.0.0.1:{rec.port}",
                                                         "upstream": {"server_name": "api.internal"}}]
                l = "targets: " + json.dumps(t)
            elif l.startswith("roles: "):
                r = json.loads(l[len("roles: "):]) + [{"name": "web", "rules": [
                    {"target": "api", "allow": {"http": ["GET /ok"]}}]}]
                l = "roles: " + json.dumps(r)
            elif l.startswith("bindings: "):
                b = json.loads(l[len("bindings: "):]) + [{"role": "web", "agents": [HTTP_AGENT]}]
                l = "bindings: " + json.dumps(b)
            out.append(l)
        enforcer.start("\n".join(out) + "\n")
        raw(enforcer, rec.port, crlf("GET /ok HTTP/1.1⏎Host: api.internal⏎⏎GET /no HTTP/1.1⏎Host: api.internal⏎⏎"))
        assert psql(enforcer, pg, "SELECT count(*) FROM orders")[0] == 0
        assert psql(enforcer, pg, "DELETE FROM orders")[0] != 0
        assert enforcer.wait_event(lambda e: e["class_uid"] == 6005 and e["unmapped"]["verdict"] == "deny")
        enforcer.stop()
    finally:
        pg.stop()
    evs = events(enforcer)
    seen = validate_events(evs)
    assert {4002, 6005} <= seen, seen
    assert {e["unmapped"]["verdict"] for e in evs if e["class_uid"] == 4002} == {"allow", "deny"}
    assert {e["unmapped"]["verdict"] for e in evs if e["class_uid"] == 6005} == {"allow", "deny"}
    SEEN.update(seen)
