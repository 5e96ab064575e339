# SPDX-License-Identifier: Apache-2.0
"""Identity in the running enforcer: an agent with a client_credentials
identity from a real OpenID provider (tests/oidc, oidc-provider) gets a
verified principal, which status and every audit event carry; without a
verified identity its connections are refused (fail closed)."""
import os

from conftest import connect_code
from test_token import AUDIENCE, CLIENT_ID, CLIENT_SECRET, idp  # noqa: F401 (fixture)


def secret_file(tmp, secret=CLIENT_SECRET):
    path = os.path.join(tmp, "client-secret")
    with open(path, "w") as f:
        f.write(secret)
    os.chmod(path, 0o600)
    return path


def policy(tmp, issuer, port, secret=CLIENT_SECRET):
    path = secret_file(tmp, secret)
    return f"""
    version: 1
    agents:
      - name: t-bot
        identity: {{source: client_credentials, issuer: "{issuer}", client_id: {CLIENT_ID},
                    client_secret_file: {path}, audience: "{AUDIENCE}"}}
    targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}]
    roles: [{{name: r, rules: [{{target: echo}}]}}]
    bindings: [{{role: r, agents: [t-bot]}}]
    """


def test_verified_principal_in_status_and_audit(enforcer, servers, idp, tmp):
    port, _ = servers.echo()
    enforcer.start(policy(tmp, idp.issuer, port))
    pr = enforcer.status()["agents"][0]["principal"]
    assert pr["verified"] is True, pr
    assert pr["iss"] == idp.issuer and pr["sub"] and pr["client_id"] == CLIENT_ID
    assert pr["exp"] and pr["source"] == "client_credentials"
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    assert r.stdout.split()[0] == "OK", r.stdout + r.stderr
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Open")
    assert ev["unmapped"]["agent"]["principal"] == {"iss": idp.issuer, "sub": pr["sub"], "verified": True}


def test_unverified_agent_refused(enforcer, servers, idp, tmp):
    port, log = servers.echo()
    enforcer.start(policy(tmp, idp.issuer, port, secret="wrong-secret"))
    pr = enforcer.status()["agents"][0]["principal"]
    assert pr["verified"] is False and "401" in pr["reason"], pr
    assert "wrong-secret" not in str(enforcer.status()) and "wrong-secret" not in enforcer.read_log()
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    assert r.stdout.split()[0] in ("ERR", "ERR-IO") or r.stdout.split()[-1] == "<eof>", r.stdout
    assert open(log).read() == ""
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Refuse")
    assert ev and ev["unmapped"]["reason"].startswith("identity not verified: ")


def test_identity_lost_is_audited(enforcer, servers, tmp):
    """Tokens live 6 s; the provider goes away: when the held token expires
    the principal becomes unverified, an Authentication (3002) event records
    it, and the agent's connections are refused from then on."""
    from test_token import Provider
    p = Provider(tmp, ttl=6)
    try:
        port, _ = servers.echo()
        enforcer.start(policy(tmp, p.issuer, port))
        assert enforcer.status()["agents"][0]["principal"]["verified"] is True
        p.stop()
        ev = enforcer.wait_event(lambda e: e.get("class_uid") == 3002 and
                                 e["unmapped"]["agent"]["principal"]["verified"] is False, timeout=20)
        assert ev and ev["disposition"] == "Blocked", ev
        r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
        assert r.stdout.split()[0] in ("ERR", "ERR-IO") or r.stdout.split()[-1] == "<eof>", r.stdout
    finally:
        p.stop()


def claims_policy(tmp, issuer, port, groups):
    path = secret_file(tmp)
    return f"""
    version: 1
    agents:
      - name: t-bot
        identity: {{source: client_credentials, issuer: "{issuer}", client_id: {CLIENT_ID},
                    client_secret_file: {path}, audience: "{AUDIENCE}"}}
    targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}]
    roles: [{{name: support-reader, rules: [{{target: echo}}]}}]
    bindings: [{{role: support-reader, claims: {{groups: {groups}}}}}]
    """


def test_binding_by_claims(enforcer, servers, idp, tmp):
    """The provider puts groups [agents, support] in the token: a binding on
    groups: [support] grants the role; one on [finance] does not."""
    port, log = servers.echo()
    enforcer.start(claims_policy(tmp, idp.issuer, port, "[support]"))
    assert "support" in enforcer.status()["agents"][0]["principal"]["groups"]
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    assert r.stdout.split() == ["OK", "127.0.0.1", str(port), "hello"], r.stdout + r.stderr
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Open")
    assert ev["unmapped"]["rule"].startswith("role 'support-reader'")
    enforcer.stop()
    enforcer.start(claims_policy(tmp, idp.issuer, port, "[finance]"))
    r = enforcer.py("t-bot", connect_code("127.0.0.1", port))
    out = r.stdout.split()
    assert out and (out[0] in ("ERR", "ERR-IO") or out[-1] == "<eof>"), r.stdout + r.stderr
    ev = enforcer.wait_event(lambda e: e.get("activity_name") == "Refuse")
    assert ev and "claims" in ev["unmapped"]["reason"]
