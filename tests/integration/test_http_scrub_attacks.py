# SPDX-License-Identifier: Apache-2.0
"""Adversarial review of "the injected credential never comes back"
(http_scrub.c, proto_http.c): an upstream that reflects the credential the
enforcer injected in the forms real servers write (PHP/Java URL encoding,
form encoding, an HTML error page, a value the server's parser trimmed), an
upstream that cuts the reflection short where the agent chooses, and the
framings the search must not break (pipelined answers whose first body
ends with bytes kept back, an HTTP/1.0 agent reading a chunked answer,
interim 103 answers, bodiless answers, a Kubernetes target). Each test
checks what the agent got; raw clients run in the agent cgroup through the
kernel redirect. The upstream is one small raw server: the path says what
it answers."""
import base64
import json
import os
import textwrap

import pytest

from conftest import PY, Proc, free_port, wait_port
from test_http import AGENT, crlf, policy, raw, responses

# What the reflecting upstream answers, by the path's last segment. It
# parses each request head as a server does (field values trimmed of
# blanks), finds the injected credential (Authorization, or X-Api-Key) and
# writes it back in the form asked for. Requests that arrive together are
# answered in one write (pipelining).
REFLECT = textwrap.dedent(r"""
    import base64, html, sys, urllib.parse
    from rawhttp import listen, serve_forever
    port = int(sys.argv[1])
    s = listen(port, 16)

    def php_urlencode(b):   # PHP urlencode(), Java URLEncoder: '~' too, a space as '+'
        return urllib.parse.quote_plus(b, safe="").replace("~", "%7E").encode()

    def answer(raw_head, head, path):
        fields = {}
        for l in head.split(b"\r\n")[1:]:
            k, v = l.split(b":", 1)
            fields[k.strip().lower()] = v.strip(b" \t")   # what a server's parser keeps
        auth = fields.get(b"authorization") or fields.get(b"x-api-key") or b""
        cred = auth.split(b" ", 1)[1] if b" " in auth else auth
        pw = base64.b64decode(cred).split(b":", 1)[1] if auth.startswith(b"Basic ") else cred
        kind = path.split("?")[0].rsplit("/", 1)[1]
        if kind == "php":
            q = php_urlencode(cred)
            body = b'{"next": "/login?t=' + q + b'"}'
            return (b"HTTP/1.1 302 Found\r\nLocation: /login?t=" + q + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if kind == "nested":   # a login redirect whose next= is a URL quoting the credential
            inner = "/cb?t=" + urllib.parse.quote_from_bytes(cred, safe="")
            return (b"HTTP/1.1 302 Found\r\nLocation: /login?next=" + urllib.parse.quote(inner, safe="").encode() +
                    b"&x=1\r\nContent-Length: 0\r\n\r\n")
        if kind == "form":
            q = urllib.parse.urlencode({"user": "svc", "pw": pw}).encode()   # spaces as '+'
            return b"HTTP/1.1 302 Found\r\nLocation: /login?" + q + b"\r\nContent-Length: 0\r\n\r\n"
        if kind == "html":
            body = (b"<html><body><h1>401</h1><p>password <code>" + html.escape(pw.decode()).encode() +
                    b"</code> rejected</p></body></html>")
            return (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/html\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if kind == "echo":
            body = b'{"authorization": "' + auth + b'"}'
            return (b"HTTP/1.1 200 OK\r\nX-Echo: " + auth + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if kind == "first":   # a debug page: the first n bytes of the request as received
            n = int(path.split("n=")[1])
            body = raw_head[:n]
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        if kind == "after":   # the request as received, from byte n on
            n = int(path.split("n=")[1])
            body = raw_head[n:]
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        if kind == "firsthdr":   # the same, in a response field (a debug header)
            n = int(path.split("n=")[1])
            v = raw_head[raw_head.find(b"Authorization"):][:n].replace(b"\r\n", b" ")
            return b"HTTP/1.1 200 OK\r\nX-Debug-Request: " + v + b"\r\nContent-Length: 0\r\n\r\n"
        if kind == "firstclose":
            n = int(path.split("n=")[1])
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + raw_head[:n]
        if kind == "tail":   # chunked; the body ends with the credential's first 3 bytes
            body = b'{"n": 1, "x": "' + cred[:3]
            return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        if kind == "ranged":   # a stored reflection served with ranges, as a file server does
            rng = fields.get(b"range", b"")
            if rng.startswith(b"bytes="):
                a, b = (int(x) for x in rng[6:].split(b"-"))
                part = raw_head[a:b + 1]
                return (b"HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\n"
                        b"Content-Range: bytes %d-%d/%d\r\n" % (a, a + len(part) - 1, len(raw_head)) +
                        b"Content-Length: %d\r\n\r\n" % len(part) + part)
            return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nAccept-Ranges: bytes\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(raw_head) + raw_head)
        if kind == "cred":   # an error quoting the credential without its scheme
            body = b'{"message": "Bad credentials", "token": "' + cred + b'"}'
            return (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if kind == "cookie":   # a session opened for the credential
            return (b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=" + cred[:8] + b"-session; HttpOnly\r\n"
                    b"set-cookie2: x=1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok")
        if kind == "plain":
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        if kind == "chunks":   # the credential split over 3-byte chunks
            body = b"token=" + cred + b";end"
            out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            for i in range(0, len(body), 3):
                out += b"%x\r\n" % len(body[i:i + 3]) + body[i:i + 3] + b"\r\n"
            return out + b"0\r\n\r\n"
        if kind == "early":   # 103 Early Hints quoting it, then a 204 that does too
            return (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css?t=" + cred + b">; rel=preload\r\n\r\n"
                    b"HTTP/1.1 204 No Content\r\nX-Echo: " + auth + b"\r\n\r\n")
        if kind == "notmod":
            return b"HTTP/1.1 304 Not Modified\r\nETag: \"" + cred + b"\"\r\n\r\n"
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def serve(c, _):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            out, close = b"", False
            while b"\r\n\r\n" in buf:   # every request that came in this read
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                out += answer(head + b"\r\n\r\n", head, path)
                close = close or "close" in path
            c.sendall(out)
            if close:
                return
    serve_forever(s, serve, errors=())
""")


@pytest.fixture
def reflect(servers):
    port = free_port()
    servers.procs.append(Proc([PY, "-c", REFLECT, str(port)]))
    wait_port("127.0.0.1", port)
    return port


def secret_file(tmp, name, data):
    p = os.path.join(tmp, name)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, 0o600)
    return p


def get(path, extra=""):
    return crlf(f"GET {path} HTTP/1.1⏎Host: api.internal⏎{extra}⏎")


def strip_marks(out):
    for mark in (b"<OPEN>", b"<EOF>", b"<RST>"):   # what raw() adds: how the connection ended
        out = out.removesuffix(mark)
    return out


def windows(secret, k=8):
    """Every k-byte piece of the secret: none may reach the agent."""
    return [secret[i:i + k] for i in range(len(secret) - k + 1)]


def no_piece(out, secret, k=8):
    for w in windows(secret, k):
        assert w not in out, (w, out)


# ---- 1. forms of the credential real upstreams write ---------------------------

def test_php_urlencoded_tilde_starred(enforcer, reflect, tmp):
    """A token with '~', reflected the way PHP urlencode() and Java's
    URLEncoder write it ('~' as %7E): starred in the Location and the body.
    (Was: '~' counted as a byte no encoder escapes, so the search's needle
    never matched; the whole token reached the agent.)"""
    tok = b"tok~en-abcdef-0123456789"
    f = secret_file(tmp, "token", tok + b"\n")
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {f}"))
    out = raw(enforcer, reflect, get("/v1/r/php"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 302, out
    enc = tok.replace(b"~", b"%7E")
    assert enc not in out and tok not in out, out
    stars = "*" * len(enc)
    assert rs[0][1]["location"] == "/login?t=" + stars, rs[0][1]
    assert json.loads(rs[0][2]) == {"next": "/login?t=" + stars}, rs[0][2]


def test_nested_redirect_double_encoded_starred(enforcer, reflect, tmp):
    """A token with '/', '+' and '=' quoted in a URL that is itself the
    next= of a login redirect: percent-encoded twice (%252F). Starred.
    (Was: only one level of percent-encoding was read.)"""
    import urllib.parse
    tok = b"a1b2c3d4/e5f6+g7h8=i9j0/k1"
    f = secret_file(tmp, "token", tok + b"\n")
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {f}"))
    out = raw(enforcer, reflect, get("/v1/r/nested"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 302, out
    twice = urllib.parse.quote(urllib.parse.quote_from_bytes(tok, safe=""), safe="")
    assert "%252F" in twice
    assert rs[0][1]["location"] == "/login?next=%2Fcb%3Ft%3D" + "*" * len(twice) + "&x=1", rs[0][1]


def test_form_encoded_basic_password_starred(enforcer, reflect, tmp):
    """A Basic password with spaces, quoted in a redirect built by
    urlencode() (each space a '+'): starred. (Was: '+' was not read as a
    space; the password reached the agent.)"""
    pw = b"correct horse battery staple"
    f = secret_file(tmp, "basic", b"svc:" + pw + b"\n")
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, basic_auth_file: {f}"))
    out = raw(enforcer, reflect, get("/v1/r/form"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 302, out
    assert rs[0][1]["location"] == "/login?user=svc&pw=" + "*" * len(pw), rs[0][1]
    assert b"horse" not in out, out


def test_html_escaped_basic_password_starred(enforcer, reflect, tmp):
    """An HTML error page quoting a Basic password that holds & < > " ':
    html.escape() writes them as character references; starred, the page's
    length unchanged. (Was: no HTML form was searched for.)"""
    pw = b"pA<5&w\"rd'x>9-long"
    f = secret_file(tmp, "basic", b"svc:" + pw + b"\n")
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, basic_auth_file: {f}"))
    out = raw(enforcer, reflect, get("/v1/r/html"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 401, out
    import html
    esc = html.escape(pw.decode()).encode()
    assert esc not in out and b"pA&lt;5" not in out, out
    assert rs[0][2] == (b"<html><body><h1>401</h1><p>password <code>" + b"*" * len(esc) +
                        b"</code> rejected</p></body></html>"), rs[0][2]


@pytest.mark.parametrize("blank", [b" ", b"\t", b"  \t"])
def test_credential_file_with_trailing_blank_starred(enforcer, reflect, tmp, blank):
    """A header value_file whose value ends with blanks (read_secret() drops
    only CR and LF): the upstream's parser trims them, so its echo is the
    value without them; starred in the field and the body. (Was: the search
    looked for the value with its blanks and never found it.)"""
    key = b"key-0123456789abcdef"
    f = secret_file(tmp, "apikey", key + blank + b"\n")
    enforcer.start(policy(reflect, rules='"GET /v1/**"',
                          upstream=f"server_name: api.internal, header: {{name: X-Api-Key, value_file: {f}}}"))
    out = raw(enforcer, reflect, get("/v1/r/echo"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 200, out
    assert key not in out, out
    assert rs[0][1]["x-echo"] == "*" * len(key), rs[0][1]
    assert json.loads(rs[0][2]) == {"authorization": "*" * len(key)}, rs[0][2]


@pytest.mark.parametrize("scheme", ["token", "SSWS"])
def test_other_auth_scheme_credential_starred(enforcer, reflect, tmp, scheme):
    """header: {name: Authorization, value_file} holding '<scheme> <cred>'
    (GitHub's 'token ghp_...', Okta's 'SSWS ...'): an error quoting the
    credential alone must be starred."""
    cred = b"ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
    f = secret_file(tmp, "auth", scheme.encode() + b" " + cred + b"\n")
    enforcer.start(policy(reflect, rules='"GET /v1/**"',
                          upstream=f"server_name: api.internal, header: {{name: Authorization, value_file: {f}}}"))
    out = raw(enforcer, reflect, get("/v1/r/cred"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 401, out
    assert cred not in out, out
    assert json.loads(rs[0][2])["token"] == "*" * len(cred), rs[0][2]


# ---- 2. the reflection cut short where the agent chooses ------------------------

SECRET = b"s3cr3t-upstream-token-0123456789"


@pytest.fixture
def bearer(tmp):
    return secret_file(tmp, "token", SECRET + b"\n")


@pytest.mark.parametrize("kind", ["first", "firstclose"])
def test_reflection_cut_short_at_body_end_not_leaked(enforcer, reflect, bearer, kind):
    """A debug page shows the first n bytes of the request as received. The
    agent chooses n (and can pad the head before the injected line), so the
    body ends one byte before the credential does: scrub_buf() sees no whole
    occurrence, scrub_keep() keeps the end back as the start of one, and at
    the body's end it went to the agent as it was: every byte of the
    credential but the last."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    # learn where the credential starts in the forwarded head: ask for all of it
    out = strip_marks(raw(enforcer, reflect, get(f"/v1/r/{kind}?n=4096"), wait=0.5))
    assert out.startswith(b"HTTP/1.1 200"), out
    at = out.split(b"\r\n\r\n", 1)[1].find(b"Authorization: Bearer ")
    assert at > 0 and SECRET not in out, out
    n = at + len(b"Authorization: Bearer ") + len(SECRET) - 1   # the cut: all but the last byte
    out = strip_marks(raw(enforcer, reflect, get(f"/v1/r/{kind}?n={n:04d}"), wait=0.5))
    assert out.startswith(b"HTTP/1.1 200"), out
    body = out.split(b"\r\n\r\n", 1)[1]
    assert body.endswith(b"Authorization: Bearer " + b"*" * (len(SECRET) - 1)) or \
        body.endswith(b"Authorization: Bearer "), body[-80:]
    no_piece(out, SECRET[:-1], 8)


def test_reflection_starting_inside_the_credential_not_leaked(enforcer, reflect, bearer):
    """The other end of the cut: the request as received from byte n on, n
    inside the credential, so the streamed body starts with all of it but
    its first bytes. The start of a streamed body was never checked (a
    masked one's was): the agent read the token but its first byte (review,
    stop 27). The start is now held until it can be told, and starred."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    out = strip_marks(raw(enforcer, reflect, get("/v1/r/first?n=4096"), wait=0.5))
    assert out.startswith(b"HTTP/1.1 200"), out
    at = out.split(b"\r\n\r\n", 1)[1].find(b"Authorization: Bearer ") + len(b"Authorization: Bearer ")
    assert at > 40 and SECRET not in out, out
    for k in (1, 5, 20):
        out = strip_marks(raw(enforcer, reflect, get(f"/v1/r/after?n={at + k:04d}"), wait=0.5))
        assert out.startswith(b"HTTP/1.1 200"), out
        body = out.split(b"\r\n\r\n", 1)[1]
        assert body.startswith(b"*" * (len(SECRET) - k) + b"\r\n"), (k, body[:80])
        no_piece(out, SECRET[1:], 8)
    # a body that starts otherwise goes out as it is
    out = strip_marks(raw(enforcer, reflect, get("/v1/r/after?n=0000"), wait=0.5))
    assert out.split(b"\r\n\r\n", 1)[1].startswith(b"GET /v1/r/after?n=0000 HTTP/1.1\r\n"), out


def test_session_cookie_not_passed_to_the_agent(enforcer, reflect, bearer):
    """A session the upstream opens after accepting the injected credential is a
    bearer credential of its own (review, stop 27): Set-Cookie never reaches the
    agent; other fields do."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    out = strip_marks(raw(enforcer, reflect, get("/v1/r/cookie"), wait=0.5))
    assert out.startswith(b"HTTP/1.1 200") and b"X-Kept: 1" in out, out
    assert b"cookie" not in out.lower() and b"session" not in out, out


def test_reflection_cut_short_in_a_response_field_not_leaked(enforcer, reflect, bearer):
    """The same cut in a response field: a debug header quoting the first n
    bytes of the Authorization line. Each field's value is checked for an
    end that is how the credential begins."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    for cut in (1, 4, 9):
        n = len(b"Authorization: Bearer ") + len(SECRET) - cut
        out = strip_marks(raw(enforcer, reflect, get(f"/v1/r/firsthdr?n={n:04d}"), wait=0.5))
        assert out.startswith(b"HTTP/1.1 200"), out
        assert b"x-debug-request: authorization: bearer " + b"*" * (len(SECRET) - cut) + b"\r\n" in out.lower(), out
        no_piece(out, SECRET[:-1], 8)


def test_range_inside_reflected_credential_not_leaked(enforcer, reflect, bearer):
    """An upstream that serves a stored reflection with ranges (a request
    log, a file server): the agent asks for the bytes of the credential but
    its first and last. No whole occurrence is in the answer, so nothing is
    starred: 30 of its 32 bytes reach the agent."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    req = "GET /v1/r/ranged HTTP/1.1⏎Host: api.internal⏎Range: bytes={:05d}-{:05d}⏎⏎"
    out = strip_marks(raw(enforcer, reflect, crlf(req.format(0, 9999))))
    assert out.startswith(b"HTTP/1.1 20") and SECRET not in out, out
    at = out.split(b"\r\n\r\n", 1)[1].find(b"Authorization: Bearer ") + len(b"Authorization: Bearer ")
    assert at > 40, out
    out = strip_marks(raw(enforcer, reflect, crlf(req.format(at + 1, at + len(SECRET) - 2))))
    assert out.startswith(b"HTTP/1.1 2"), out
    no_piece(out, SECRET, 8)


# ---- 3. framings the search must not break ---------------------------------------

def test_pipelined_answer_after_a_kept_back_end(enforcer, reflect, bearer):
    """Two requests pipelined; the upstream answers both in one write, the
    first a chunked body ending with the credential's first 3 bytes (kept
    back as the start of an occurrence). The agent gets the first body whole
    and in order, then the second answer, intact."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    out = strip_marks(raw(enforcer, reflect, get("/v1/r/tail") + get("/v1/r/plain")))
    first, rest = out.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in first.lower(), out
    body = b""
    while True:
        n, rest = rest.split(b"\r\n", 1)
        if int(n, 16) == 0:
            rest = rest[2:]
            break
        body, rest = body + rest[:int(n, 16)], rest[int(n, 16) + 2:]
    assert body == b'{"n": 1, "x": "' + SECRET[:3], body
    rs, tail = responses(rest)
    assert [r[0] for r in rs] == [200] and rs[0][2] == b"hello", rest
    assert tail == b"", tail


def test_http10_agent_reads_chunked_answer_starred(enforcer, reflect, bearer):
    """An HTTP/1.0 agent; the upstream answers chunked with the credential
    split over 3-byte chunks: the agent gets the data as it is, delimited by
    the close, the credential starred, nothing lost."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    out = strip_marks(raw(enforcer, reflect, crlf("GET /v1/r/chunks HTTP/1.0⏎Host: api.internal⏎⏎"), wait=0.5))
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), out
    assert b"chunked" not in head.lower(), head
    assert body == b"token=" + b"*" * len(SECRET) + b";end", body


def test_interim_and_bodiless_answers_starred(enforcer, reflect, bearer):
    """A 103 Early Hints quoting the credential, the 204 after it, and a 304
    whose ETag is the credential: every head is searched."""
    enforcer.start(policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {bearer}"))
    out = strip_marks(raw(enforcer, reflect, get("/v1/r/early") + get("/v1/r/notmod")))
    assert SECRET not in out, out
    stars = b"*" * len(SECRET)
    assert b"HTTP/1.1 103 Early Hints\r\nLink: </s.css?t=" + stars + b">; rel=preload\r\n" in out, out
    assert b"HTTP/1.1 204" in out and b"X-Echo: Bearer " + stars + b"\r\n" in out, out
    assert b"HTTP/1.1 304" in out and b"ETag: \"" + stars + b"\"\r\n" in out, out


def test_kubernetes_target_credential_starred(enforcer, reflect, tmp):
    """protocol: kubernetes with a bearer_token_file (a service-account
    token; '.' and '-' as in a JWT): an apiserver error quoting it is
    starred, as on http targets."""
    tok = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYSJ9.c2lnbmF0dXJl-x_y"
    f = secret_file(tmp, "sa-token", tok + b"\n")
    enforcer.start(f"""
    version: 1
    agents: [{{name: {AGENT}}}]
    targets:
      - name: cluster
        protocol: kubernetes
        address: 127.0.0.1:{reflect}
        upstream: {{server_name: kubernetes.default, bearer_token_file: {f}}}
    roles:
      - name: pod-reader
        rules:
          - target: cluster
            allow: {{verbs: [get, list], resources: [pods], namespaces: [default]}}
    bindings: [{{role: pod-reader, agents: [{AGENT}]}}]
    """)
    out = raw(enforcer, reflect, crlf("GET /api/v1/namespaces/default/pods/echo HTTP/1.1⏎Host: kubernetes.default⏎⏎"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 200, out
    assert tok not in out, out
    no_piece(out, tok, 12)
    assert rs[0][1]["x-echo"] == "Bearer " + "*" * len(tok), rs[0][1]


def test_credential_in_a_directory_others_may_write_is_not_read(enforcer, reflect, tmp):
    """The injected credential is read with root's rights, so only through a
    path no one but root can re-point (review, stop 24: only an agent's
    token_file was held to that). Its directory made writable by anyone
    after the policy loaded (where the load's own check cannot see it): the
    request gets 502 naming the file and the upstream gets nothing."""
    d = os.path.join(tmp, "creds")
    os.mkdir(d, 0o755)
    tok = b"tok-abcdef-0123456789"
    f = secret_file(d, "token", tok + b"\n")
    pol = policy(reflect, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {f}")
    enforcer.start(pol)
    os.chmod(d, 0o777)
    out = raw(enforcer, reflect, get("/v1/r/x"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 502, out
    assert b"bearer_token_file" in rs[0][2] and b"x-echo" not in out.lower(), out
    assert tok not in out
    # the log names the directory, never the token
    log = enforcer.read_log()
    assert "may be changed by others" in log and tok.decode() not in log, log[-2000:]
