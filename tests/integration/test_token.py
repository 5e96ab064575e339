# SPDX-License-Identifier: Apache-2.0
"""`agentgate token verify` against a real OpenID provider on loopback
(tests/oidc/server.js, oidc-provider): discovery, JWKS cache, refetch on an
unknown kid, last known good while the issuer is down, and the transport
rules (http only on loopback literals, exact issuer in discovery)."""
import base64
import http.server
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import AG

import oidc
from oidc import AUDIENCE

CLIENT_ID = "t-agent-a"
CLIENT_SECRET = "t-agent-a-secret-0123456789"
REFUSED = "agentgate: token: refused: "


def Provider(tmp, ttl=300):
    return oidc.Provider(tmp, CLIENT_ID, CLIENT_SECRET, ttl=ttl)


@pytest.fixture
def idp(tmp):
    p = Provider(tmp)
    yield p
    p.stop()


def header(tok):
    h = tok.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


def write_policy(tmp, issuer, source="client_credentials", audience=AUDIENCE, name="t-bot"):
    secret = os.path.join(tmp, "client-secret")
    with open(secret, "w") as f:
        f.write(CLIENT_SECRET)
    os.chmod(secret, 0o600)
    path = os.path.join(tmp, f"policy-{time.time_ns()}.yaml")
    with open(path, "w") as f:
        f.write(f"""version: 1
agents:
  - name: {name}
    identity: {{source: {source}, issuer: "{issuer}", client_id: {CLIENT_ID},
                client_secret_file: {secret}, audience: "{audience}"}}
  - name: t-local
    identity: {{source: local}}
""")
    return path


def verify(tmp, policy, tok, agent="t-bot", stdin=False):
    state = os.path.join(tmp, "state")
    argv = [AG, "--state-dir", state, "token", "verify", "--agent", agent, "--policy", policy]
    argv.append("-" if stdin else tok)
    r = subprocess.run(argv, input=tok if stdin else None, capture_output=True, text=True, timeout=30)
    assert tok not in r.stdout and tok not in r.stderr, "the token was printed"
    return r


def claims_of(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def cache_files(tmp):
    d = os.path.join(tmp, "state", "jwks")
    return [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".json")] if os.path.isdir(d) else []


def test_valid_tokens_every_alg_and_stdin(tmp, idp):
    pol = write_policy(tmp, idp.issuer)
    for alg in ("RS256", "ES256", "EdDSA"):
        tok = idp.token(alg=alg)
        c = claims_of(verify(tmp, pol, tok))
        assert c["iss"] == idp.issuer and c["sub"] == CLIENT_ID and c["client_id"] == CLIENT_ID
        assert c["aud"] == [AUDIENCE] and c["alg"] == alg and c["exp"] > time.time()
        assert c["groups"] == ["agents", "support"]
    # "-": the token comes from stdin (and so never shows in ps).
    c = claims_of(verify(tmp, pol, idp.token() + "\n", stdin=True))
    assert c["sub"] == CLIENT_ID
    # the last good JWKS was kept, private to root
    files = cache_files(tmp)
    assert len(files) == 1 and (os.stat(files[0]).st_mode & 0o077) == 0


def test_other_audience_refused(tmp, idp):
    pol = write_policy(tmp, idp.issuer)
    r = verify(tmp, pol, idp.token(resource="urn:someone-else"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(REFUSED) and "aud does not contain the expected audience" in r.stderr


def test_tampered_tokens_refused(tmp, idp):
    pol = write_policy(tmp, idp.issuer)
    for alg in ("RS256", "ES256"):
        h, p, s = idp.token(alg=alg).split(".")
        mid = len(s) // 2
        bad_sig = f"{h}.{p}.{s[:mid]}{'A' if s[mid] != 'A' else 'B'}{s[mid + 1:]}"
        r = verify(tmp, pol, bad_sig)
        assert r.returncode == 1 and r.stderr.startswith(REFUSED), r.stderr
        assert "signature" in r.stderr, r.stderr
        claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        claims["sub"] = "admin"
        p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        r = verify(tmp, pol, f"{h}.{p2}.{s}")
        assert r.returncode == 1 and "signature" in r.stderr, r.stderr


def test_usage_and_identity_errors(tmp, idp):
    pol = write_policy(tmp, idp.issuer)
    tok = idp.token()
    r = subprocess.run([AG, "token", "verify", tok], capture_output=True, text=True)
    assert r.returncode == 2 and tok not in r.stderr
    r = subprocess.run([AG, "token", "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2
    r = verify(tmp, pol, tok, agent="t-local")
    assert r.returncode == 1 and "no verifiable identity" in r.stderr
    r = verify(tmp, pol, tok, agent="t-nobody")
    assert r.returncode == 1 and "no agent 't-nobody'" in r.stderr


def cached_kids(tmp):
    """The kids of the JWKS in the cache file (by key, not by substring: a
    base64 modulus can hold the text "rs2" by chance)."""
    with open(cache_files(tmp)[0]) as f:
        return [k.get("kid") for k in json.loads(json.load(f)["jwks"])["keys"]]


def test_key_rotation_refetches_on_unknown_kid(tmp, idp):
    pol = write_policy(tmp, idp.issuer)
    old = idp.token()
    assert header(old)["kid"] == "rs1"
    assert claims_of(verify(tmp, pol, old))["kid"] == "rs1"   # the cache now holds generation 1
    kids = cached_kids(tmp)
    assert "rs1" in kids and "rs2" not in kids, kids
    idp.rotate()
    new = idp.token()
    assert header(new)["kid"] == "rs2"
    # rs2 is not in the cached set (still within its TTL): -ENOKEY, one refetch, verified.
    assert claims_of(verify(tmp, pol, new))["kid"] == "rs2"
    assert "rs2" in cached_kids(tmp)
    # the previous generation is still published, so the old token still verifies
    assert claims_of(verify(tmp, pol, old))["kid"] == "rs1"


def age_cache(tmp, seconds):
    f = cache_files(tmp)[0]
    with open(f) as fh:
        c = json.load(fh)
    c["fetched_at"] -= seconds
    with open(f, "w") as fh:
        json.dump(c, fh)


def test_issuer_down_last_known_good_then_bound(tmp, idp):
    pol = write_policy(tmp, idp.issuer)
    tok = idp.token(alg="ES256")
    claims_of(verify(tmp, pol, tok))
    idp.stop()
    # within the TTL: the cached set answers, no fetch needed
    assert claims_of(verify(tmp, pol, tok))["sub"] == CLIENT_ID
    # past the TTL (max 1 h) but within the 24 h bound: the refresh fails,
    # the last known good set still verifies, and the failure is reported
    age_cache(tmp, 2 * 3600)
    r = verify(tmp, pol, tok)
    assert claims_of(r)["sub"] == CLIENT_ID
    assert "warning" in r.stderr and "unreachable" in r.stderr, r.stderr
    # past the bound: nothing to verify with
    age_cache(tmp, 23 * 3600)
    r = verify(tmp, pol, tok)
    assert r.returncode == 1 and r.stderr.startswith(REFUSED + "no keys for the issuer: discovery:"), r.stderr


@pytest.mark.parametrize("issuer", ["http://192.0.2.1", "http://192.0.2.1:8080/realms/x",
                                    "http://localhost:{port}", "http://[2001:db8::1]"])
def test_http_issuer_off_loopback_refused_before_any_connection(tmp, idp, issuer):
    issuer = issuer.format(port=idp.port)
    pol = write_policy(tmp, issuer)
    tok = idp.token()
    t0 = time.monotonic()
    r = verify(tmp, pol, tok)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip() == (f"{REFUSED}issuer '{issuer}': http:// is allowed only on a loopback "
                                "literal (127.0.0.0/8, [::1]); use https://"), r.stderr
    assert took < 2.0      # the connect timeout is 3 s: nothing was dialled
    assert cache_files(tmp) == []


class Stub(http.server.BaseHTTPRequestHandler):
    doc = {}
    hits = []

    def do_GET(self):
        Stub.hits.append(self.path)
        body = json.dumps(Stub.doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def stub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    Stub.hits = []
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_discovery_with_another_issuer_refused(tmp, idp, stub):
    tok = idp.token()
    # The real provider, configured with a trailing slash: discovery is
    # fetched from the same place, but the document's issuer has no slash.
    r = verify(tmp, write_policy(tmp, idp.issuer + "/"), tok)
    assert r.returncode == 1
    assert r.stderr.strip() == (REFUSED + "no keys for the issuer: discovery: the document's issuer "
                                "differs from the configured issuer"), r.stderr
    # A discovery document naming the real provider as issuer, served elsewhere.
    me = f"http://127.0.0.1:{stub}"
    Stub.doc = {"issuer": idp.issuer, "jwks_uri": idp.issuer + "/jwks"}
    r = verify(tmp, write_policy(tmp, me), tok)
    assert r.returncode == 1 and "document's issuer differs" in r.stderr, r.stderr
    assert Stub.hits == ["/.well-known/openid-configuration"]


def test_discovery_jwks_uri_off_loopback_refused(tmp, idp, stub):
    me = f"http://127.0.0.1:{stub}"
    for uri in ("http://192.0.2.1/jwks", "https://127.0.0.1:1/jwks", "ftp://127.0.0.1/jwks"):
        Stub.hits = []
        Stub.doc = {"issuer": me, "jwks_uri": uri}
        r = verify(tmp, write_policy(tmp, me), idp.token())
        assert r.returncode == 1 and "discovery: jwks_uri refused" in r.stderr, r.stderr
        assert Stub.hits == ["/.well-known/openid-configuration"]     # jwks never fetched
