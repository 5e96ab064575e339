# SPDX-License-Identifier: Apache-2.0
"""Delegation tokens (issue 3): a user's token an agent presents in-band is
verified with the agent's issuer and audience, and an RFC 8693 token must
name the agent's own principal in act.sub. Tokens come from a real OpenID
provider (tests/oidc/server.js, oidc-provider) through a token-exchange
grant; checked with `agentgate token verify --user`, which runs the
enforcer's checks (ident_user_check, the same jwt policy as
ident_user_verify)."""
import base64
import json
import os
import subprocess
import time

import pytest

from conftest import AG

import oidc
from oidc import AUDIENCE

CLIENT_ID = "t-deleg-a"
CLIENT_SECRET = "t-deleg-a-secret-0123456789"
REFUSED = "agentgate: token: refused: "


@pytest.fixture
def idp(tmp):
    p = oidc.Provider(tmp, CLIENT_ID, CLIENT_SECRET)
    yield p
    p.stop()


def policy(tmp, issuer, accept=True):
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write(CLIENT_SECRET)
    os.chmod(secret, 0o600)
    path = os.path.join(tmp, f"policy-{time.time_ns()}.yaml")
    with open(path, "w") as f:
        f.write(f"""version: 1
agents:
  - name: t-bot
    identity: {{source: client_credentials, issuer: "{issuer}", client_id: {CLIENT_ID},
                client_secret_file: {secret}, audience: "{AUDIENCE}"}}
    accept_user_tokens: {"true" if accept else "false"}
""")
    return path


def verify_user(tmp, pol, tok, actor=CLIENT_ID):
    argv = [AG, "--state-dir", os.path.join(tmp, "state"), "token", "verify", "--agent", "t-bot",
            "--policy", pol, "--user"]
    if actor:
        argv += ["--actor", actor]
    argv.append("-")
    r = subprocess.run(argv, input=tok, capture_output=True, text=True, timeout=30)
    assert tok not in r.stdout + r.stderr, "the token was printed"
    return r


def payload(tok):
    p = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_exchanged_token_for_this_agent_is_accepted(tmp, idp, alg):
    tok = idp.exchange("alice", alg=alg)
    assert payload(tok)["act"] == {"sub": CLIENT_ID}
    r = verify_user(tmp, policy(tmp, idp.issuer), tok)
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["sub"] == "alice" and c["act"] == {"sub": CLIENT_ID} and c["groups"] == ["support"]


def test_token_exchanged_for_another_agent_is_refused(tmp, idp):
    """act.sub names agent-b: replayed by this agent it would borrow b's delegation."""
    tok = idp.exchange("alice", actor="agent-b")
    r = verify_user(tmp, policy(tmp, idp.issuer), tok)
    assert r.returncode == 1
    assert r.stderr.startswith(REFUSED) and "act.sub names another actor" in r.stderr


def test_actor_must_match_the_agent_principal(tmp, idp):
    tok = idp.exchange("bob")
    r = verify_user(tmp, policy(tmp, idp.issuer), tok, actor="someone-else")
    assert r.returncode == 1 and "act.sub names another actor" in r.stderr
    r = verify_user(tmp, policy(tmp, idp.issuer), tok, actor=None)   # no principal to compare
    assert r.returncode == 1 and "act.sub names another actor" in r.stderr


def test_actor_of_another_issuer_is_refused(tmp, idp):
    """Review (stop 48): act.sub is a name at act.iss. A token whose actor
    has this agent's name at another issuer (a federating token service)
    was taken as exchanged for this agent; act.iss, when present, must be
    the agent's own issuer."""
    pol = policy(tmp, idp.issuer)
    tok = idp.exchange("alice", actor_iss="https://other-idp.example")
    assert payload(tok)["act"] == {"sub": CLIENT_ID, "iss": "https://other-idp.example"}
    r = verify_user(tmp, pol, tok)
    assert r.returncode == 1 and "act.iss names another issuer" in r.stderr, r.stderr
    tok = idp.exchange("alice", actor_iss=idp.issuer)
    r = verify_user(tmp, pol, tok)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["act"] == {"sub": CLIENT_ID, "iss": idp.issuer}


def test_agents_own_token_is_not_a_user_token(tmp, idp):
    """Review (stop 48): `token verify --user` said yes to the agent's own
    token (sub = the agent), which the enforcer refuses as a user token;
    the rule is now one function for both."""
    tok = idp.token()
    assert payload(tok)["sub"] == CLIENT_ID
    r = verify_user(tmp, policy(tmp, idp.issuer), tok)
    assert r.returncode == 1 and "the agent's own principal" in r.stderr, r.stderr


def test_plain_user_token_without_act_is_accepted(tmp, idp):
    tok = idp.exchange("bob", no_act=True)
    assert "act" not in payload(tok)
    r = verify_user(tmp, policy(tmp, idp.issuer), tok)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups"] == ["finance"]


def test_agent_without_accept_user_tokens_refuses(tmp, idp):
    tok = idp.exchange("alice")
    r = verify_user(tmp, policy(tmp, idp.issuer, accept=False), tok)
    assert r.returncode == 1 and "does not accept user tokens" in r.stderr


def test_tampered_user_token_is_refused(tmp, idp):
    """Widening the user's groups in the payload breaks the signature."""
    tok = idp.exchange("mallory")
    h, p, s = tok.split(".")
    claims = payload(tok)
    claims["groups"] = ["support", "admin"]
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    r = verify_user(tmp, policy(tmp, idp.issuer), ".".join([h, p2, s]))
    assert r.returncode == 1 and "signature" in r.stderr


def test_user_token_for_another_audience_is_refused(tmp, idp):
    tok = idp.exchange("alice", resource="urn:other-service")
    r = verify_user(tmp, policy(tmp, idp.issuer), tok)
    assert r.returncode == 1 and "aud" in r.stderr
