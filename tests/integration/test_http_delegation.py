# SPDX-License-Identifier: Apache-2.0
"""Delegation through the http module, end to end (issue 3): an agent with
an OIDC identity and accept_user_tokens presents a user's token in
`Authorization: Bearer`; the request is allowed only if both the agent's
roles and the user's roles allow it, the token is consumed (never
forwarded), and a token exchanged for another actor, a tampered one or one
for another audience denies the request. Real enforcer, real OpenID
provider (oidc-provider, token exchange grant in tests/oidc/server.js), a
raw client in the agent's cgroup, a recording upstream."""
import base64
import json
import os

import pytest

from conftest import wait_for
import oidc
from oidc import AUDIENCE
from test_http import AGENT, Recorder, crlf, raw, responses

CLIENT_ID = "t-http-deleg"
CLIENT_SECRET = "t-http-deleg-secret-0123456789"


@pytest.fixture
def idp(tmp):
    p = oidc.Provider(tmp, CLIENT_ID, CLIENT_SECRET)
    yield p
    p.stop()


@pytest.fixture
def rec(tmp, servers):
    return Recorder(tmp, servers.procs)


AGENT_ROLES = """
      - name: agent-role
        rules: [{target: api, allow: {http: ["GET /a/*", "GET /b"]}}]
      - name: finance-role
        rules: [{target: api, allow: {http: ["GET /a/*", "GET /c"]}}]"""


def start(enforcer, tmp, idp, rec, upstream="server_name: api.internal", accept="true", roles=AGENT_ROLES,
          port=None):
    """The agent (OIDC identity, accept_user_tokens) and target 'api' (rec's
    port, or port); roles 'agent-role' (bound to the agent) and
    'finance-role' (bound to group finance)."""
    secret = os.path.join(tmp, "deleg-secret")
    with open(secret, "w") as f:
        f.write(CLIENT_SECRET)
    os.chmod(secret, 0o600)
    # The agent's own token carries groups [agents, support] (server.js);
    # bob is in finance, alice in support, mallory in nothing.
    enforcer.start(f"""
    version: 1
    agents:
      - name: {AGENT}
        identity: {{source: client_credentials, issuer: "{idp.issuer}", client_id: {CLIENT_ID},
                    client_secret_file: {secret}, audience: "{AUDIENCE}"}}
        accept_user_tokens: {accept}
    targets:
      - {{name: api, protocol: http, address: 127.0.0.1:{port or rec.port}, upstream: {{{upstream}}}}}
    roles:{roles}
    bindings:
      - {{role: agent-role, agents: [{AGENT}]}}
      - {{role: finance-role, claims: {{groups: [finance]}}}}
    """)

    def verified():
        st = enforcer.status()
        return any(a["name"] == AGENT and a["principal"]["verified"] for a in st["agents"])
    assert wait_for(verified, timeout=15), enforcer.status()


def get(enforcer, rec, path, token=None):
    rec.reset()
    auth = f"Authorization: Bearer {token}⏎" if token else ""
    out = raw(enforcer, rec.port, crlf(f"GET {path} HTTP/1.1⏎Host: api.internal⏎{auth}⏎"))
    rs, _ = responses(out)
    assert len(rs) == 1, out
    status, _, body = rs[0]
    return status, body


def test_intersection_of_agent_and_user(enforcer, tmp, idp, rec):
    start(enforcer, tmp, idp, rec)
    bob = idp.exchange("bob")
    # the agent alone
    assert get(enforcer, rec, "/b")[0] == 200
    # both allow it: forwarded, and the user's token is consumed, not forwarded
    status, _ = get(enforcer, rec, "/a/1", bob)
    assert status == 200
    seen = rec.all()
    assert seen.startswith(b"GET /a/1 HTTP/1.1\r\n") and b"authorization" not in seen.lower()
    assert bob.encode() not in seen
    # the agent allows /b, the user does not: denied, never reaches upstream
    status, body = get(enforcer, rec, "/b", bob)
    assert status == 403 and json.loads(body)["error"] == "agentgate: denied"
    assert rec.all() == b""
    # the user allows /c, the agent does not: a user token never widens
    status, body = get(enforcer, rec, "/c", bob)
    assert status == 403 and rec.all() == b""
    # a user with no role at all: nothing
    assert get(enforcer, rec, "/a/1", idp.exchange("alice"))[0] == 403
    # the audit trail names the delegating user, never the token
    evs = [e for e in enforcer.events() if e.get("class_uid") == 4002]
    assert evs and all(bob not in json.dumps(e) for e in evs)
    assert any("bob" in json.dumps(e) for e in evs)


def test_refused_user_tokens_deny_the_request(enforcer, tmp, idp, rec):
    start(enforcer, tmp, idp, rec)
    other_actor = idp.exchange("bob", actor="agent-b")
    status, body = get(enforcer, rec, "/a/1", other_actor)
    assert status == 403 and "act.sub" in json.loads(body)["reason"]
    # tampered: bob claims alice's name; the signature breaks
    h, p, s = idp.exchange("bob").split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["groups"] = ["finance", "admin"]
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert get(enforcer, rec, "/a/1", ".".join([h, p2, s]))[0] == 403
    # another audience
    assert get(enforcer, rec, "/a/1", idp.exchange("bob", resource="urn:elsewhere"))[0] == 403
    assert rec.all() == b""


def test_upstream_bearer_agent_token(enforcer, tmp, idp, rec):
    """upstream: {bearer: agent_token}: the agent's own verified access token
    goes upstream in place of whatever the agent sent."""
    start(enforcer, tmp, idp, rec, upstream="server_name: api.internal, bearer: agent_token", accept="false")
    rec.reset()
    out = raw(enforcer, rec.port, crlf("GET /b HTTP/1.1⏎Host: api.internal⏎Authorization: Bearer forged⏎⏎"))
    rs, _ = responses(out)
    assert [r[0] for r in rs] == [200], out
    seen = rec.all().decode()
    auth = [l for l in seen.split("\r\n") if l.lower().startswith("authorization:")]
    assert len(auth) == 1 and "forged" not in seen, seen
    tok = auth[0].split(None, 2)[2]
    p = tok.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    assert claims["sub"] == CLIENT_ID and claims["iss"] == idp.issuer
    assert tok not in json.dumps(enforcer.events())   # never in the audit trail


def test_pipelined_requests_keep_their_own_masks(enforcer, tmp, idp, servers):
    """Two pipelined requests of different delegating users have different
    masks (masks are the union of the agent's and the user's rules). The
    second is judged before the first one's answer is read: the first answer
    must still get its own, wider mask (it got the second's, and the email
    its user's role masks went out)."""
    from test_http import nginx
    port, d = nginx(tmp, servers.procs)
    os.makedirs(os.path.join(d, "www", "a"))
    with open(os.path.join(d, "www", "a", "1"), "w") as f:
        f.write('{"email": "carol@example.net", "card": "4111 1111 1111 1111"}\n')
    start(enforcer, tmp, idp, None, upstream="", port=port, roles="""
      - name: agent-role
        rules: [{target: api, allow: {http: ["GET /a/*"]}, mask: {detectors: [credit_card]}}]
      - name: finance-role
        rules: [{target: api, allow: {http: ["GET /a/*"]}, mask: {detectors: [email]}}]""")
    bob = idp.exchange("bob")
    req = "GET /a/1 HTTP/1.1⏎Host: api⏎Accept-Encoding: identity⏎{auth}⏎"
    out = raw(enforcer, port, crlf(req.format(auth=f"Authorization: Bearer {bob}⏎") + req.format(auth="")))
    rs, _ = responses(out)
    assert [r[0] for r in rs] == [200, 200], out
    first, second = rs[0][2], rs[1][2]
    assert b"4111" not in first and b"carol@example.net" not in first, first     # bob's: card and email
    assert b"4111" not in second and b"carol@example.net" in second, second      # the agent's: card only
