# SPDX-License-Identifier: Apache-2.0
"""The test OpenID provider (tests/oidc/server.js, npm oidc-provider) for the
identity tests: one class, started on 127.0.0.1 and stopped by its PID."""
import base64
import json
import os
import select
import subprocess
import time
import urllib.parse
import urllib.request
import warnings

from conftest import ROOT, Proc, free_port

OIDC_DIR = os.path.join(ROOT, "tests", "oidc")
AUDIENCE = "urn:agentgate"


class Provider:
    """server.js on 127.0.0.1:port with one client_credentials client;
    ttl = access-token lifetime in seconds."""

    def __init__(self, tmp, client_id, client_secret, port=None, ttl=300, pk_pem=None):
        r = subprocess.run([os.path.join(OIDC_DIR, "setup.sh")], capture_output=True, text=True)
        assert r.returncode == 0, "tests/oidc/setup.sh failed: " + r.stderr
        self.client_id, self.client_secret = client_id, client_secret
        # One CI run saw node print its runtime warning and then nothing
        # for 60 s (stop 33; the same test passed 3 of 3 times alone; again
        # in stop 58's CI, 61 s of one test's setup). Such a start is ended
        # and made once more on a fresh port, with what the stuck one was
        # doing kept for the message if that fails too, and shown as a
        # warning in pytest's summary when the second start works.
        stuck = ""
        for attempt in range(2):
            why = self._start(tmp, port if attempt == 0 else None, ttl, pk_pem, client_id, client_secret)
            if not why:
                if stuck:
                    warnings.warn("OIDC provider started on the second attempt; the first: " + stuck)
                return
            stuck += f"attempt {attempt + 1}: {why}\n"
            self.proc.stop()
            if port:
                break   # the caller's port: no other to try
        raise AssertionError("OIDC provider did not start:\n" + stuck)

    def _start(self, tmp, port, ttl, pk_pem, client_id, client_secret):
        """Starts server.js; "" once it says READY, else what it was doing."""
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(tmp, f"oidc-{self.port}-{time.time_ns()}.log")
        env = dict(os.environ, OIDC_TTL=str(ttl))
        if pk_pem:      # a "<client_id>-pk" client authenticating with private_key_jwt
            env["OIDC_PK_CLIENT_PEM"] = pk_pem
        self.proc = Proc(["node", os.path.join(OIDC_DIR, "server.js"), str(self.port), client_id,
                          client_secret], stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                         cwd=OIDC_DIR, env=env)
        out = self.proc.p.stdout
        # node loads oidc-provider and makes its keys: 0.5-0.8 s on the test
        # VM, never above 6.4 s in a CI run (pytest --durations); a start
        # that hangs is given up after 20 s, not 60 (CI must stay under 30 min)
        end = time.time() + 20
        line = b""
        while time.time() < end and b"READY" not in line:
            ready, _, _ = select.select([out], [], [], 0.5)
            if ready:
                line = out.readline()
                if not line:
                    break
        if b"READY" in line:
            return ""
        pid, state = self.proc.p.pid, []
        try:
            for t in sorted(os.listdir(f"/proc/{pid}/task")):
                with open(f"/proc/{pid}/task/{t}/stat") as f:
                    st = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/task/{t}/wchan") as f:
                    state.append(f"{t}:{st[0]}:{f.read().strip() or '-'}:cpu={int(st[11]) + int(st[12])}")
        except OSError as e:
            state.append(f"({e})")
        return (f"port {self.port}, exit {self.proc.p.poll()}, last stdout {line!r}, threads "
                f"{' '.join(state)}, log: {open(self.log).read()}")

    def token(self, resource=AUDIENCE, alg="RS256"):
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "resource": resource,
                                       "token_alg": alg}).encode()
        req = urllib.request.Request(self.issuer + "/token", data=body, method="POST")
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        req.add_header("Authorization", "Basic " + basic)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)["access_token"]

    def exchange(self, user, actor=None, no_act=False, resource=AUDIENCE, alg="RS256", actor_iss=None):
        """RFC 8693 token exchange by this client for a test user (server.js):
        sub = user, act.sub = this client (or actor) and act.iss = actor_iss
        when given, or no act with no_act."""
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": user, "subject_token_type": "urn:agentgate:test:user",
                "resource": resource, "token_alg": alg}
        if actor:
            form["actor"] = actor
        if actor_iss:
            form["actor_iss"] = actor_iss
        if no_act:
            form["no_act"] = "1"
        req = urllib.request.Request(self.issuer + "/token", data=urllib.parse.urlencode(form).encode(),
                                     method="POST")
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        req.add_header("Authorization", "Basic " + basic)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)["access_token"]

    def rotate(self):
        req = urllib.request.Request(self.issuer + "/admin/rotate", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def stop(self):
        self.proc.stop()
