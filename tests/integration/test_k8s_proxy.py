# SPDX-License-Identifier: Apache-2.0
"""protocol: kubernetes: every case of cases/k8s.txt through the kernel
redirect to a raw recording upstream standing in for the apiserver, checking
the answer and exactly what the "apiserver" received (the enforcer's own
credential, Impersonate-User for the agent, the agent's identity headers
gone)."""
import json
import os

import pytest

from test_http import AGENT, Recorder, crlf, raw, responses


def cluster_policy(port, tok, roles, bindings):
    """A policy with the one kubernetes target; roles: the YAML list items
    under roles:, indented as here; bindings: the flow list's items."""
    return f"""
    version: 1
    agents: [{{name: {AGENT}}}]
    targets:
      - name: cluster
        protocol: kubernetes
        address: 127.0.0.1:{port}
        upstream: {{server_name: kubernetes.default, bearer_token_file: {tok}}}
    roles:
{roles}
    bindings: [{bindings}]
    """


def k8s_policy(port, tok, extra_role=""):
    return cluster_policy(port, tok, f"""\
      - name: pod-reader
        rules:
          - target: cluster
            allow: {{verbs: [get, list], resources: [pods], namespaces: [default]}}
      - name: probes
        rules:
          - target: cluster
            allow: {{verbs: [get], resources: [{extra_role or '"/nothing"'}]}}""",
                          f"{{role: pod-reader, agents: [{AGENT}]}}, {{role: probes, agents: [{AGENT}]}}")


@pytest.fixture
def rec(tmp, servers):
    return Recorder(tmp, servers.procs)


@pytest.fixture
def token(tmp):
    p = os.path.join(tmp, "sa-token")
    with open(p, "w") as f:
        f.write("enforcer-sa-token\n")
    os.chmod(p, 0o600)
    return p


def get(path, extra=""):
    return crlf(f"GET {path} HTTP/1.1⏎Host: kubernetes.default⏎{extra}⏎")


CASES = [
    ("K01", get("/api/v1/namespaces/default/pods"), 200),
    ("K03", get("/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1"), 200),
    ("K05", get("/api/v1/namespaces/default/pods?watch=true&fieldSelector=metadata.name%3Dweb-1"), 403),
    ("K07", get("/api/v1/namespaces/default/secrets"), 403),
    ("K09", get("/api/v1/namespaces/default/pods%2Fweb-1"), 400),
    ("K11", get("/api/v1/namespaces/default/pods/web-1/exec?command=sh",
                "Connection: Upgrade⏎Upgrade: websocket⏎"), 403),
    ("K11-spdy", get("/api/v1/namespaces/default/pods/web-1/exec?command=sh",
                     "Connection: Upgrade⏎Upgrade: SPDY/3.1⏎"), 403),
    ("K11-plain", get("/api/v1/namespaces/default/pods/web-1/exec?command=sh"), 403),
    ("K13", get("/api/v1/namespaces/default/pods/web-1/attach", "Connection: Upgrade⏎Upgrade: websocket⏎"), 403),
    ("K15", get("/api/v1/namespaces/default/pods/web-1/log"), 403),
    ("K17", get("/api/v1/namespaces/default/services/db:5432/proxy/"), 403),
    ("K19", get("/api/v1/pods"), 403),
    ("K21", get("/apis/apps/v1/namespaces/default/deployments"), 403),
    ("K23", crlf("DELETE /api/v1/namespaces/default/pods/web-1 HTTP/1.1⏎Host: kubernetes.default⏎⏎"), 403),
    ("K25", crlf("POST /api/v1/namespaces/default/pods/web-1/eviction HTTP/1.1⏎Host: kubernetes.default⏎"
                 "Content-Length: 2⏎⏎{}"), 403),
    ("K27", crlf("PUT /api/v1/namespaces/default/finalize HTTP/1.1⏎Host: kubernetes.default⏎"
                 "Content-Length: 2⏎⏎{}"), 403),
    ("K31-version", get("/version"), 403),
    ("dotdot", get("/api/v1/namespaces/default/pods/../secrets"), 400),
    ("watch-path", get("/api/v1/watch/namespaces/default/pods"), 403),
]


def test_k8s_cases(enforcer, rec, token):
    enforcer.start(k8s_policy(rec.port, token))
    for cid, req, want in CASES:
        rec.reset()
        out = raw(enforcer, rec.port, req, idle=0.5)   # one answer, on a loopback upstream
        rs, _ = responses(out)
        assert rs and rs[0][0] == want, (cid, out)
        got = rec.all()
        if want == 200:
            line = req.split(b"\r\n")[0]
            assert got.startswith(line + b"\r\n"), (cid, got)
            assert b"\r\nAuthorization: Bearer enforcer-sa-token\r\n" in got, (cid, got)
            assert b"\r\nImpersonate-User: " + AGENT.encode() + b"\r\n" in got, (cid, got)
        else:
            assert got == b"", (cid, got)
            body = json.loads(rs[0][2])
            assert body["error"] == "agentgate: denied" and body["reason"], cid


def test_k29_identity_headers_replaced(enforcer, rec, token):
    enforcer.start(k8s_policy(rec.port, token))
    out = raw(enforcer, rec.port, get("/api/v1/namespaces/default/pods",
                                      "X-Remote-User: admin⏎X-Remote-Group: system:masters⏎"
                                      "Impersonate-User: admin⏎Impersonate-Group: system:masters⏎"
                                      "Impersonate-Extra-scopes: all⏎Authorization: Bearer agent-own⏎"))
    assert responses(out)[0][0][0] == 200
    got = rec.all()
    assert got == (b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: kubernetes.default\r\n"
                   b"Accept-Encoding: identity\r\n"   # answers are searched for the credential
                   b"Impersonate-User: " + AGENT.encode() + b"\r\n"
                   b"Authorization: Bearer enforcer-sa-token\r\n\r\n"), got


def test_k31_non_resource_only_when_listed(enforcer, rec, token):
    enforcer.start(k8s_policy(rec.port, token, extra_role='"/version", "/healthz"'))
    for path, want in (("/version", 200), ("/healthz", 200), ("/openapi/v2", 403), ("/metrics", 403)):
        rec.reset()
        rs, _ = responses(raw(enforcer, rec.port, get(path)))
        assert rs[0][0] == want, path
        assert (rec.all() != b"") == (want == 200), path


def test_k8s_audit_attributes(enforcer, rec, token):
    enforcer.start(k8s_policy(rec.port, token))
    raw(enforcer, rec.port, get("/api/v1/namespaces/kube-system/pods"))
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002)
    assert ev and ev["http_response"]["code"] == 403
    assert ev["unmapped"]["kubernetes"] == {"verb": "list", "resource": "pods", "namespace": "kube-system"}
    assert "kube-system" in ev["unmapped"]["reason"]


def test_policy_explain_kubernetes(tmp):
    import subprocess
    import textwrap
    from conftest import AG
    pol = os.path.join(tmp, "k.yaml")
    with open(pol, "w") as f:
        f.write(textwrap.dedent("""
        version: 1
        agents: [{name: a}]
        targets: [{name: cluster, protocol: kubernetes, address: 127.0.0.1:6443}]
        roles: [{name: r, rules: [{target: cluster, allow: {verbs: [get, list, update], resources: [pods],
                                                             namespaces: [default]}}]}]
        bindings: [{role: r, agents: [a]}]
        """))

    def explain(req):
        r = subprocess.run([AG, "policy", "explain", "--policy", pol, "--agent", "a", "--target", "cluster", req],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    out = explain("GET /api/v1/namespaces/default/pods")
    assert out[-2:] == ["kubernetes: verb list, resource pods, namespace default", "allow: role 'r' rule 1 (line 5)"]
    out = explain("GET /api/v1/namespaces/default/pods?watch=true")
    assert out[-1] == "deny (403): no rule allows watch pods in namespace 'default'"
    out = explain("UPGRADE /api/v1/namespaces/default/pods/web-1/exec")
    assert out[-2] == "kubernetes: verb create, resource pods/exec, namespace default"
    assert out[-1].startswith("deny (403)")
    assert explain("GET /api/v1/namespaces/default/pods%2Fweb-1")[-1].startswith("deny (400)")
    # an upgraded GET of a subresource is the apiserver's get
    out = explain("UPGRADE /api/v1/namespaces/default/pods/web-1/log")
    assert out[-2] == "kubernetes: verb get, resource pods/log, namespace default"
    # a PUT may create the object: create is needed too
    out = explain("PUT /api/v1/namespaces/default/pods/web-1")
    assert out[-1].startswith("deny (403): no rule allows create pods in namespace 'default' (a PUT"), out


def test_delete_keeps_its_body_on_kubernetes(enforcer, rec, token):
    """A body on DELETE is refused on http targets (an upstream that ignores it
    reads it as its next request), but the API server reads DeleteOptions
    from it: on a kubernetes target it is forwarded, byte for byte."""
    enforcer.start(k8s_policy(rec.port, token).replace("verbs: [get, list]", "verbs: [get, list, delete]"))
    body = b'{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground"}'
    out = raw(enforcer, rec.port, crlf("DELETE /api/v1/namespaces/default/pods/web-1 HTTP/1.1⏎"
                                       "Host: kubernetes.default⏎Content-Type: application/json⏎"
                                       f"Content-Length: {len(body)}⏎⏎") + body)
    assert responses(out)[0][0][0] == 200, out
    got = rec.all()
    assert got.startswith(b"DELETE /api/v1/namespaces/default/pods/web-1 HTTP/1.1\r\n"), got
    assert got.endswith(b"\r\n\r\n" + body), got
    # a body on GET has no meaning there either
    rec.reset()
    out = raw(enforcer, rec.port, crlf("GET /api/v1/namespaces/default/pods HTTP/1.1⏎"
                                       "Host: kubernetes.default⏎Content-Length: 2⏎⏎{}"))
    assert responses(out)[0][0][0] == 400, out
    assert rec.all() == b""


def verbs_policy(port, tok):
    return f"""
    version: 1
    agents: [{{name: {AGENT}}}]
    targets:
      - name: cluster
        protocol: kubernetes
        address: 127.0.0.1:{port}
        upstream: {{server_name: kubernetes.default, bearer_token_file: {tok}}}
    roles:
      - name: creator
        rules:
          - target: cluster
            allow: {{verbs: [create], resources: ["*"], namespaces: [dev]}}
      - name: exec-in-ops
        rules:
          - target: cluster
            allow: {{verbs: [create], resources: [pods/exec], namespaces: [ops]}}
      - name: reads-all
        rules:
          - target: cluster
            allow: {{verbs: [get], resources: ["*"], namespaces: [ro]}}
      - name: patcher
        rules:
          - target: cluster
            allow: {{verbs: [get, patch, update], namespaces: [stage],
                     resources: [deployments.apps, rolebindings.rbac.authorization.k8s.io]}}
    bindings: [{{role: creator, agents: [{AGENT}]}}, {{role: patcher, agents: [{AGENT}]}},
               {{role: exec-in-ops, agents: [{AGENT}]}}, {{role: reads-all, agents: [{AGENT}]}}]
    """


def with_body(method, path, ctype, body, extra=""):
    return crlf(f"{method} {path} HTTP/1.1⏎Host: kubernetes.default⏎{extra}Content-Type: {ctype}⏎"
                f"Content-Length: {len(body)}⏎⏎") + body


WS = "Connection: Upgrade⏎Upgrade: websocket⏎Sec-WebSocket-Version: 13⏎Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==⏎"
DEPLOY = b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: brand-new}\n"
RB = b'{"kind":"RoleBinding","roleRef":{"kind":"ClusterRole","name":"admin"},"subjects":[{"kind":"User","name":"x"}]}'
VERB_CASES = [
    # an upgrade keeps the apiserver's verb: these GETs are get, which the creator lacks
    ("log_ws", get("/api/v1/namespaces/dev/pods/web-1/log?follow=true", WS), 403),
    ("log", get("/api/v1/namespaces/dev/pods/web-1/log?follow=true"), 403),
    ("proxy_ws", get("/api/v1/namespaces/dev/services/db:80/proxy/admin", WS), 403),
    ("status_ws", get("/api/v1/namespaces/dev/pods/web-1/status", WS), 403),
    ("scale_spdy", get("/apis/apps/v1/namespaces/dev/deployments/d/scale",
                       "Connection: Upgrade⏎Upgrade: SPDY/3.1⏎"), 403),
    # exec is create, upgraded or not ...
    ("exec_ws", get("/api/v1/namespaces/ops/pods/web-1/exec?command=sh", WS), 200),
    # ... but not with a bearer token of the agent's own in a subprotocol
    ("exec_ws_token", get("/api/v1/namespaces/ops/pods/web-1/exec?command=sh",
                          WS + "Sec-WebSocket-Protocol: v5.channel.k8s.io, "
                               "base64url.bearer.authorization.k8s.io.YWdlbnQtb3du⏎"), 403),
    # an upgraded stream needs its subresource named: "*" covers exec in dev only
    # without the upgrade (stop 52; before, a wildcard opened the stream) ...
    ("exec_ws_star", get("/api/v1/namespaces/dev/pods/web-1/exec?command=sh", WS), 403),
    ("exec_star", with_body("POST", "/api/v1/namespaces/dev/pods/web-1/exec?command=sh",
                            "application/json", b"{}"), 200),
    # ... and a read-everything rule reads services/proxy, but opens no WebSocket there
    ("proxy_ws_star", get("/api/v1/namespaces/ro/services/db:80/proxy/admin", WS), 403),
    ("proxy_star", get("/api/v1/namespaces/ro/services/db:80/proxy/admin"), 200),
    ("console_ws_star", get("/apis/subresources.kubevirt.io/v1/namespaces/ro/virtualmachineinstances/vm/console",
                            WS), 403),
    # PUT and server-side apply create a missing object: they need create too
    ("apply", with_body("PATCH", "/apis/apps/v1/namespaces/stage/deployments/brand-new?fieldManager=a&force=true",
                        "application/apply-patch+yaml", DEPLOY), 403),
    ("apply_charset", with_body("PATCH", "/apis/apps/v1/namespaces/stage/deployments/brand-new",
                                "Application/Apply-Patch+YAML; charset=utf-8", DEPLOY), 403),
    ("merge", with_body("PATCH", "/apis/apps/v1/namespaces/stage/deployments/web",
                        "application/merge-patch+json", b'{"spec":{"replicas":2}}'), 200),
    ("strategic", with_body("PATCH", "/apis/apps/v1/namespaces/stage/deployments/web",
                            "application/strategic-merge-patch+json; charset=utf-8", b'{"spec":{}}'), 200),
    ("put_rb", with_body("PUT", "/apis/rbac.authorization.k8s.io/v1/namespaces/stage/rolebindings/mine",
                         "application/json", RB), 403),
]


def test_upgrades_and_creating_writes_need_the_apiserver_verbs(enforcer, rec, token):
    """Found by review: an Upgrade header turned any subresource GET (pods/log,
    services/proxy, status, scale) into create, so an agent that may only create
    read them; and PUT or a server-side apply PATCH, which create a missing object
    (the apiserver then authorizes create too), passed with patch or update alone. Now
    an upgrade keeps the apiserver's verb, those writes need create as well, and a
    bearer token in Sec-WebSocket-Protocol is refused. Nothing denied reaches the
    upstream."""
    enforcer.start(verbs_policy(rec.port, token))
    for cid, req, want in VERB_CASES:
        rec.reset()
        rs, _ = responses(raw(enforcer, rec.port, req))
        assert rs and rs[0][0] == want, (cid, rs)
        got = rec.all()
        if want == 403:
            assert got == b"", (cid, got)
        else:
            assert got.startswith(req.split(b"\r\n")[0] + b"\r\n"), (cid, got)
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002 and
                             e["unmapped"].get("kubernetes", {}).get("resource") ==
                             "rolebindings.rbac.authorization.k8s.io")
    assert ev and ev["unmapped"]["kubernetes"]["verb"] == "update", ev
    assert "no rule allows create rolebindings.rbac.authorization.k8s.io" in ev["unmapped"]["reason"], ev
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002 and
                             e["unmapped"].get("kubernetes", {}).get("resource") ==
                             "virtualmachineinstances.subresources.kubevirt.io/console")
    assert ev and ev["unmapped"]["reason"] == (
        "an upgraded stream needs a rule naming virtualmachineinstances.subresources.kubevirt.io/console: "
        "role 'reads-all' rule 1 covers get virtualmachineinstances.subresources.kubevirt.io/console in "
        "namespace 'ro' only by a wildcard"), ev


def test_watch_on_a_masked_route_is_refused(tmp, enforcer, rec, token):
    """A watch answers with {"type":...,"object":{...}} events: paths written for
    get and list (here $.data) do not reach into "object", and a one-event stream
    is one JSON value that passed unmasked (review, stop 25). A watch on a masked
    route is refused before anything reaches the apiserver; list still works."""
    enforcer.start(f"""
    version: 1
    agents: [{{name: {AGENT}}}]
    targets:
      - name: cluster
        protocol: kubernetes
        address: 127.0.0.1:{rec.port}
        upstream: {{server_name: kubernetes.default, bearer_token_file: {token}}}
    roles:
      - name: cm-reader
        rules:
          - target: cluster
            allow: {{verbs: [get, list, watch], resources: [configmaps], namespaces: [default]}}
            mask: {{json: ["$.data", "$.items[*].data"]}}
    bindings: [{{role: cm-reader, agents: [{AGENT}]}}]
    """)
    out = raw(enforcer, rec.port, get("/api/v1/namespaces/default/configmaps?watch=1"
                                      "&fieldSelector=metadata.name%3Ddb&timeoutSeconds=1"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 403 and b"a watch on a masked route is not allowed" in rs[0][2], out
    assert rec.all() == b""
    out = raw(enforcer, rec.port, get("/api/v1/namespaces/default/configmaps"))
    rs, _ = responses(out)
    assert rs and rs[0][0] != 403, out
    assert b"GET /api/v1/namespaces/default/configmaps HTTP/1.1" in rec.all()


def events_policy(port, tok):
    return cluster_policy(port, tok, """\
      - name: event-reader
        rules:
          - target: cluster
            allow: {verbs: [get, list], resources: [events], namespaces: [default]}
      - name: ops
        rules:
          - target: cluster
            allow: {verbs: ["*"], resources: ["*"], namespaces: [ops]}
            review: {verbs: [delete, deletecollection], resources: [events], namespaces: [ops]}""",
                          f"{{role: event-reader, agents: [{AGENT}]}}, {{role: ops, agents: [{AGENT}]}}")


def test_events_rule_names_its_group(enforcer, rec, token):
    """Events are served by the core group and by events.k8s.io (the same
    objects). As in the apiserver's RBAC, a resource is matched with its
    group: "events" allows the core group's only. A review of "events"
    holds them through either group (review, stop 67: DELETE through
    /apis/events.k8s.io went through unheld under an allow of "*")."""
    enforcer.start(events_policy(rec.port, token))
    for path, want in (("/api/v1/namespaces/default/events", 200),
                       ("/apis/events.k8s.io/v1/namespaces/default/events", 403),
                       ("/apis/events.k8s.io/v1/namespaces/default/events/e1", 403)):
        rec.reset()
        rs, _ = responses(raw(enforcer, rec.port, get(path), idle=0.5))
        assert rs[0][0] == want, (path, rs)
        assert (rec.all() != b"") == (want == 200), (path, rec.all())
    for path in ("/apis/events.k8s.io/v1/namespaces/ops/events/e1", "/api/v1/namespaces/ops/events/e1",
                 "/apis/events.k8s.io/v1/namespaces/ops/events"):
        rec.reset()
        out = raw(enforcer, rec.port, crlf(f"DELETE {path} HTTP/1.1⏎Host: kubernetes.default⏎⏎"), idle=0.5)
        rs, _ = responses(out)
        assert rs[0][0] == 403 and "review" in json.loads(rs[0][2])["reason"], (path, out)
        assert rec.all() == b"", (path, rec.all())
    rec.reset()
    out = raw(enforcer, rec.port, crlf("DELETE /api/v1/namespaces/ops/pods/p1 HTTP/1.1⏎"
                                       "Host: kubernetes.default⏎⏎"), idle=0.5)
    assert responses(out)[0][0][0] == 200, out
    assert rec.all().startswith(b"DELETE /api/v1/namespaces/ops/pods/p1 HTTP/1.1\r\n")
