# SPDX-License-Identifier: Apache-2.0
"""Attacks on the http and kubernetes modules that the case files do not
list: ways around a path rule, framing a second parser could read another
way, agent identity and credential headers in forms the strip list might
miss, the injected credential coming back in an answer, masked bodies a
client reads as JSON while the masker did not, and Kubernetes requests the
apiserver attributes differently. Each test checks what the agent got AND
what the upstream received. Raw clients run inside the agent cgroup
through the kernel redirect; upstreams are the recording one of
test_http.py and small raw servers written here."""
import gzip
import json
import os
import subprocess
import textwrap
import time
import zlib

import pytest

from conftest import PY, Proc, free_port, wait_for, wait_port
from test_http import AGENT, Recorder, crlf, mask_policy, nginx, policy, raw, raw_each, responses

SECRET = "s3cr3t-upstream-token"


@pytest.fixture
def rec(tmp, servers):
    return Recorder(tmp, servers.procs)


@pytest.fixture
def token(tmp):
    p = os.path.join(tmp, "token")
    with open(p, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(p, 0o600)
    return p


def refused_400(enforcer, rec, req, cid):
    """req is refused with a 400 that closes; the valid request pipelined
    behind it is neither answered nor forwarded; nothing reaches upstream."""
    rec.reset()
    out = raw(enforcer, rec.port, req + crlf("GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"))
    rs, rest = responses(out)
    assert [r[0] for r in rs] == [400], (cid, out)
    assert rs[0][1]["connection"] == "close", cid
    assert json.loads(rs[0][2])["error"] == "agentgate: denied", cid
    assert rest in (b"<EOF>", b"<RST>"), (cid, out)
    time.sleep(0.05)
    assert rec.all() == b"", (cid, rec.received())


# ---- 1. path rules ------------------------------------------------------------

# Each target is one that some server reads as a path the rules
# ("GET /v1/invoices", "GET /v1/invoices/*") do not allow, or that two
# parsers read differently. None is in test_http.py's DENY_400.
PATH_TRICKS = {
    "dot-mixed-case": "/v1/invoices/%2e%2E/admin",
    "dot-half-encoded": "/v1/invoices/.%2E/admin",
    "dot-upper": "/v1/invoices/%2E./admin",
    "slash-upper": "/v1/invoices/42%2Fadmin",
    "slash-lower": "/v1/invoices/42%2fadmin",
    "backslash-lower": "/v1/invoices/42%5cadmin",
    "double-enc-slash": "/v1/invoices/42%252fadmin",
    "double-enc-upper": "/v1/invoices/%252E%252E",
    "matrix": "/v1/invoices;x=y/42",
    "matrix-enc": "/v1/invoices/42%3Bx=y",
    "trailing-dot-seg": "/v1/invoices/.",
    "trailing-dotdot-seg": "/v1/invoices/..",
    "overlong-3": "/v1/invoices/%E0%80%AE%E0%80%AE",
    "overlong-slash": "/v1/invoices/%C0%AFadmin",
    "surrogate": "/v1/invoices/%ED%A0%80",
    "above-max": "/v1/invoices/%F4%90%80%80",
    "lone-continuation": "/v1/invoices/%80",
    "iis-u-escape": "/v1/invoices/%u002e%u002e",
    "short-escape": "/v1/invoices/4%2",
    "enc-question": "/v1/invoices/42%3F/../../admin",
    "enc-hash": "/v1/invoices/42%23/../admin",
    "hash-in-query": "/v1/invoices/42?x=1#/../admin",
    "userinfo": "http://a@api.internal/v1/invoices/42",
    "userinfo-host": "http://api.internal@evil.internal/v1/invoices/42",
    "authority-form": "api.internal:80",
    "scheme-relative": "//api.internal/v1/invoices/42",
    "no-slash": "v1/invoices/42",
}


def test_path_tricks_refused(enforcer, rec):
    enforcer.start(policy(rec.port))
    for cid, target in PATH_TRICKS.items():
        refused_400(enforcer, rec, crlf(f"GET {target} HTTP/1.1⏎Host: api.internal⏎⏎"), cid)


# U+FF0E FULLWIDTH FULL STOP, U+2025 TWO DOT LEADER, U+FE52 SMALL FULL STOP,
# U+FF0F FULLWIDTH SOLIDUS, U+FF3C FULLWIDTH REVERSE SOLIDUS, U+FF05
# FULLWIDTH PERCENT SIGN, U+FF1B FULLWIDTH SEMICOLON: valid, shortest-form
# UTF-8, but Unicode compatibility normalisation (NFKC, as some frameworks
# apply to paths, and the "best fit" mappings of Windows servers) turns them
# into '.', '..', '/', '\', '%' and ';'. So "/v1/invoices/<U+2025>" matches
# "GET /v1/invoices/*" here and is "/v1/invoices/.." (the collection's
# parent) to such a server. Whose meaning depends on the reader: refused.
COMPAT = {
    "fullwidth-dotdot": "/v1/invoices/%EF%BC%8E%EF%BC%8E",
    "two-dot-leader": "/v1/invoices/%E2%80%A5",
    "small-full-stop": "/v1/invoices/%EF%B9%92%EF%B9%92",
    "fullwidth-solidus": "/v1/invoices/42%EF%BC%8Fadmin",
    "fullwidth-backslash": "/v1/invoices/42%EF%BC%BCadmin",
    "fullwidth-percent": "/v1/invoices/%EF%BC%852e%EF%BC%852e",
    "fullwidth-semicolon": "/v1/invoices/42%EF%BC%9Bx",
    # the best-fit '\\' and '%' of Windows code page 1252 (stop 59)
    "set-minus": "/v1/invoices/42%E2%88%96..%E2%88%96admin",
    "arabic-percent": "/v1/invoices/%D9%AA2e%D9%AA2e",
}


def test_path_unicode_compatibility_forms_refused(enforcer, rec):
    enforcer.start(policy(rec.port))
    for cid, target in COMPAT.items():
        refused_400(enforcer, rec, crlf(f"GET {target} HTTP/1.1⏎Host: api.internal⏎⏎"), cid)
    # other non-ASCII text stays allowed (escaped, checked, forwarded as checked)
    rec.reset()
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/caf%c3%a9 HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all() == b"GET /v1/invoices/caf%C3%A9 HTTP/1.1\r\nHost: api.internal\r\n\r\n"


# A segment that is "." or ".." once a server trims its white space or
# cuts its ";params" (Tomcat) off: Java's strip(), .NET's Trim(), Python's
# strip() and Go's TrimSpace drop U+00A0, U+0085, U+3000, U+2003, U+FEFF...
# "..%C2%A0" passed (found by review, stop 67); the others were refused.
TRIMMED_DOTS = ("..%C2%A0", "..%c2%a0", ".%C2%A0", "%C2%A0..", "..%C2%85", "..%E3%80%80", "%E2%80%83..",
                "..%E2%80%AF", "..%EF%BB%BF", "..%E2%80%8B", "%20%C2%A0..%E3%80%80",
                "..%20", ".%09", "..%0D", "..%00", "..;", "..;x=1", ".;", "..%3B")


def test_dot_segments_behind_trimmed_white_space_refused(enforcer, servers, tmp):
    """Through a real nginx: each is a 400 that closes, and nginx never sees
    it (its access log); a name with such white space in it still goes."""
    port, d = nginx(tmp, servers.procs)
    enforcer.start(policy(port, upstream="", rules='"GET /v1/invoices/**"'))
    for seg in TRIMMED_DOTS:
        out = raw(enforcer, port, crlf(f"GET /v1/invoices/{seg}/secret HTTP/1.1⏎Host: 127.0.0.1⏎⏎"))
        rs, rest = responses(out)
        assert [r[0] for r in rs] == [400], (seg, out)
        assert rs[0][1]["connection"] == "close" and rest in (b"<EOF>", b"<RST>"), (seg, out)
    out = raw(enforcer, port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: 127.0.0.1⏎⏎"
                                   "GET /v1/invoices/a%c2%a0b HTTP/1.1⏎Host: 127.0.0.1⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200, 404], out
    time.sleep(0.2)
    with open(os.path.join(d, "access.log")) as f:
        log = f.read()
    assert "secret" not in log and "/v1/invoices/42 " in log and "/v1/invoices/a%C2%A0b " in log, log


def test_method_override_in_query_refused(enforcer, rec):
    """The method-override headers are stripped; their query twin is not a
    header: Symfony (and Laravel on it) takes "_method" from the query of a
    POST, so "POST /v1/invoices?_method=DELETE" under a POST rule deletes."""
    enforcer.start(policy(rec.port, rules='"POST /v1/invoices", "GET /v1/invoices/*"'))
    for q in ("_method=DELETE", "x=1&_method=PUT", "%5Fmethod=DELETE", "_%6Dethod=DELETE", "_METHOD=patch",
              "a=b;_method=DELETE",
              # PHP drops leading spaces and reads '.' as '_'; ASP.NET MVC
              # takes the header's name (found by review, stop 17)
              ".method=DELETE", "+_method=DELETE", "%20_method=DELETE", "[method=DELETE",
              "X-HTTP-Method-Override=DELETE", "x_http_method=PUT", "X-Method-Override=PATCH",
              # PHP ends a name at a decoded NUL: a long tail after it hid
              # the name from the length-bounded check (review, stop 34)
              "_method%00" + "a" * 40 + "=DELETE"):
        refused_400(enforcer, rec, crlf(f"POST /v1/invoices?{q} HTTP/1.1⏎Host: api.internal⏎Content-Length: 0⏎⏎"), q)
    # a parameter that only contains the name is an ordinary one
    rec.reset()
    out = raw(enforcer, rec.port, crlf("POST /v1/invoices?x_method=DELETE&q=_method HTTP/1.1⏎Host: api.internal⏎"
                                       "Content-Length: 0⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all().startswith(b"POST /v1/invoices?x_method=DELETE&q=_method HTTP/1.1\r\n")


def test_method_override_in_form_body_cut_off(enforcer, rec):
    """Symfony, Laravel, Rails and ASP.NET take a POST's method from a form
    body too (_method=DELETE in application/x-www-form-urlencoded; found by
    review, stop 17). Such a body is scanned as it streams: the piece that
    names an override never reaches the upstream, which so never gets the
    whole request, and the connection closes. Other forms pass whole."""
    enforcer.start(policy(rec.port, rules='"POST /v1/invoices", "GET /v1/invoices/*"'))
    form = "Content-Type: application/x-www-form-urlencoded⏎"
    # Rack (Rails, Sinatra) takes a POST body without a media type, or with
    # an empty Content-Type, for a form; qs (Express) reads _method[] as its
    # first element (review, stop 43)
    for form, body in ((form, "_method=DELETE"), (form, "amount=5&+_method=DELETE"), (form, "x=1;.method=PUT"),
                       ("", "_method=DELETE"), ("Content-Type:⏎", "_method=DELETE"),
                       ("Content-Type: ; charset=utf-8⏎", "_method=PUT"), (form, "_method[]=DELETE")):
        for framing in (f"Content-Length: {len(body)}⏎⏎{body}",
                        f"Transfer-Encoding: chunked⏎⏎{len(body):x}⏎{body}⏎0⏎⏎"):
            rec.reset()
            out = raw(enforcer, rec.port, crlf(f"POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎{form}{framing}"))
            assert b"HTTP/1.1 200" not in out, (body, out)
            time.sleep(0.1)
            got = rec.all()
            assert b"method" not in got.split(b"\r\n\r\n", 1)[-1], (body, got)
    # a compressed form body is not read as sent by an upstream that
    # inflates it (ASP.NET Core): refused before any of it goes
    import gzip
    z = gzip.compress(b"_method=DELETE")
    for ct in (form, ""):
        rec.reset()
        out = raw(enforcer, rec.port, crlf(f"POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎{ct}"
                                           f"Content-Encoding: gzip⏎Content-Length: {len(z)}⏎⏎") + z)
        assert [r[0] for r in responses(out)[0]] == [415], out
        assert rec.all() == b"", rec.all()
    form = "Content-Type: application/x-www-form-urlencoded⏎"
    rec.reset()
    out = raw(enforcer, rec.port, crlf(f"POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎{form}"
                                       "Content-Length: 21⏎⏎amount=5&note=_method"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all().endswith(b"\r\n\r\namount=5&note=_method")
    # not a form: the body is the application's (JSON here), passed whole
    rec.reset()
    out = raw(enforcer, rec.port, crlf("POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎"
                                       "Content-Type: application/json⏎Content-Length: 17⏎⏎{\"_method=\": \"x\"}"))
    assert [r[0] for r in responses(out)[0]] == [200], out


def test_method_override_in_json_and_multipart_bodies_cut_off(enforcer, rec):
    """Laravel takes its request input, "_method" included, from a JSON body, and
    Rack (Rails), PHP and ASP.NET Core read a multipart part named "_method" as the
    form field: POST /v1/invoices with either ran DELETE behind a POST rule (found
    by review, stop 59). Both are scanned as they stream, as forms are: the piece
    naming an override never reaches the upstream. Other JSON and multipart bodies
    pass whole; a multipart body without a readable boundary, or compressed, is
    refused before any of it goes."""
    enforcer.start(policy(rec.port, rules='"POST /v1/invoices", "GET /v1/invoices/*"'))
    mp = "Content-Type: multipart/form-data; boundary=----b7⏎"
    part = ('------b7\r\nContent-Disposition: form-data; name="amount"\r\n\r\n5\r\n'
            '------b7\r\nContent-Disposition: form-data; name="{}"\r\n\r\nDELETE\r\n------b7--\r\n')
    cut = (("Content-Type: application/json⏎", '{"amount": 5, "_method": "DELETE"}'),
           ("Content-Type: application/vnd.api+json; charset=utf-8⏎", '{"a": [1, {"b": 2}], "\\u005fmethod": "PUT"}'),
           (mp, part.format("_method")), (mp, part.format("X-HTTP-Method-Override")))
    for ct, body in cut:
        for framing in (f"Content-Length: {len(body)}⏎⏎", f"Transfer-Encoding: chunked⏎⏎{len(body):x}⏎"):
            rec.reset()
            tail = body if framing.startswith("Content-Length") else body + "\r\n0\r\n\r\n"
            out = raw(enforcer, rec.port, crlf(f"POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎{ct}{framing}") +
                      tail.encode())
            assert b"HTTP/1.1 200" not in out, (body, out)
            time.sleep(0.1)
            got = rec.all()
            assert b"DELETE" not in got and b"PUT" not in got, (body, got)
    # the same names elsewhere pass whole
    ok = (("Content-Type: application/json⏎", '{"amount": 5, "note": "_method", "x": {"_method": 1}}'),
          (mp, part.format("payment_method")),
          (mp, '------b7\r\nContent-Disposition: form-data; name="f"; filename="_method"\r\n\r\n'
               'name="_method"\r\n------b7--\r\n'))
    for ct, body in ok:
        rec.reset()
        out = raw(enforcer, rec.port, crlf(f"POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎{ct}"
                                           f"Content-Length: {len(body)}⏎⏎") + body.encode())
        assert [r[0] for r in responses(out)[0]] == [200], (body, out)
        assert rec.all().endswith(body.encode()), (body, rec.all())
    # unreadable or compressed multipart: refused, nothing sent
    z = gzip.compress(part.format("_method").encode())
    for ct, body, status in (("Content-Type: multipart/form-data⏎", b"--x\r\n", 400),
                             (mp + "Content-Encoding: gzip⏎", z, 415)):
        rec.reset()
        out = raw(enforcer, rec.port, crlf(f"POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎{ct}"
                                           f"Content-Length: {len(body)}⏎⏎") + body)
        assert [r[0] for r in responses(out)[0]] == [status], out
        assert rec.all() == b"", rec.all()


def test_method_tricks(enforcer, rec):
    """Methods are case-sensitive tokens: lower case, an unknown method, HEAD
    under a GET rule, and OPTIONS * under an any-method rule."""
    enforcer.start(policy(rec.port))
    refused_400(enforcer, rec, crlf("get /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"), "lower")
    refused_400(enforcer, rec, crlf("G-T /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"), "non-letter")
    refused_400(enforcer, rec, crlf("GET  /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"), "double-space")
    refused_400(enforcer, rec, crlf("GET /v1/invoices/1 HTTP/1.2⏎Host: api.internal⏎⏎"), "version")
    refused_400(enforcer, rec, crlf("GET /v1/invoices/1 http/1.1⏎Host: api.internal⏎⏎"), "version-case")
    for req in ("HEAD /v1/invoices/1", "PROPFIND /v1/invoices/1", "OPTIONS /v1/invoices/1",
                "GETS /v1/invoices/1"):
        rec.reset()
        out = raw(enforcer, rec.port, crlf(f"{req} HTTP/1.1⏎Host: api.internal⏎⏎"))
        if req.startswith("HEAD"):   # the answer to HEAD has a head only
            assert out.startswith(b"HTTP/1.1 403 ") and out.endswith(b"\r\n\r\n<OPEN>"), (req, out)
        else:
            rs, rest = responses(out)
            assert [r[0] for r in rs] == [403], (req, out)
            assert rest == b"<OPEN>", req
        assert rec.all() == b"", req
    enforcer.stop()
    enforcer.start(policy(rec.port, rules='"* /**"'))
    for req, why in (("OPTIONS * HTTP/1.1", "asterisk"), ("TRACE /v1/invoices/1 HTTP/1.1", None)):
        rec.reset()
        out = raw(enforcer, rec.port, crlf(f"{req}⏎Host: api.internal⏎⏎"))
        rs, _ = responses(out)
        assert [r[0] for r in rs] == [403], (req, out)
        if why:
            assert why in json.loads(rs[0][2])["reason"]
        assert rec.all() == b"", req


# ---- 2. framing ------------------------------------------------------------------

FRAMING = {
    "te-chunked-chunked": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding: chunked, chunked⏎⏎0⏎⏎",
    "te-identity": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding: identity⏎Content-Length: 3⏎⏎abc",
    "te-gzip-chunked": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding: gzip, chunked⏎⏎0⏎⏎",
    "te-two-fields": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding: chunked⏎"
                     "Transfer-Encoding: chunked⏎⏎0⏎⏎",
    "te-lower-name-cl": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎content-length: 3⏎"
                        "transfer-encoding: CHUNKED⏎⏎0⏎⏎",
    "te-http10": "POST /v1/invoices HTTP/1.0⏎Transfer-Encoding: chunked⏎⏎0⏎⏎",
    "te-tab-prefix": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding:\tchunked\x0b⏎⏎0⏎⏎",
    "cl-same-twice": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Content-Length: 3⏎Content-Length: 3⏎⏎abc",
    "cl-list": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Content-Length: 3, 3⏎⏎abc",
    "cl-negative": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Content-Length: -1⏎⏎",
    "cl-hex": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Content-Length: 0x3⏎⏎abc",
    "cl-huge": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Content-Length: 99999999999999999999⏎⏎abc",
    "name-space": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎Authorization : Bearer x⏎⏎",
    "name-space-inside": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎X Forwarded-For: 1.2.3.4⏎⏎",
    "nul-value": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎X-A: a\x00b⏎⏎",
    "cr-value": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎X-A: a\rImpersonate-User: admin⏎⏎",
    "del-name": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎X-\x7fA: b⏎⏎",
    "utf8-name": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎Authorizatión: b⏎⏎",
    "obs-fold-tab": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎X-A: b⏎\tAuthorization: c⏎⏎",
    "host-after-fold": "GET /v1/invoices/1 HTTP/1.1⏎X-A: b⏎ Host: api.internal⏎⏎",
    "host-empty": "GET /v1/invoices/1 HTTP/1.1⏎Host:⏎⏎",
    "host-userinfo": "GET /v1/invoices/1 HTTP/1.1⏎Host: evil@api.internal⏎⏎",
    "host-trailing-dot": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal.⏎⏎",
    "host-two-values": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal, evil.internal⏎⏎",
    "host-case-dup": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎HOST: evil.internal⏎⏎",
    "no-host-11": "GET /v1/invoices/1 HTTP/1.1⏎⏎",
    "expect-other": "POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Expect: 100-continue, x⏎Content-Length: 1⏎⏎a",
    "many-headers": "GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎" + "X-A: b⏎" * 101 + "⏎",
}


def test_framing_variants_refused(enforcer, rec):
    enforcer.start(policy(rec.port, rules='"POST /v1/invoices", "GET /v1/invoices/*"'))
    for cid, req in FRAMING.items():
        refused_400(enforcer, rec, crlf(req), cid)


# Chunk framing is only read after the head was judged and forwarded: a bad
# chunk ends the connection there; what follows it must never be read as a
# request, by us or by the upstream.
BAD_CHUNKS = {
    "size-17-digits": "00000000000000005⏎hello⏎0⏎⏎",
    "size-overflow": "10000000000000005⏎hello⏎0⏎⏎",
    "size-plus": "+5⏎hello⏎0⏎⏎",
    "size-minus": "-5⏎hello⏎0⏎⏎",
    "size-0x": "0x5⏎hello⏎0⏎⏎",
    "size-space": "5 ⏎hello⏎0⏎⏎",
    "ext-quoted": '5;a="x y"⏎hello⏎0⏎⏎',
    "ext-bare-lf": "5;a\nhello⏎0⏎⏎",
    "data-longer": "3⏎hello⏎0⏎⏎",
    "data-bare-lf": "5⏎hello\n0⏎⏎",
    "trailer-fold": "5⏎hello⏎0⏎X-T: a⏎ Authorization: b⏎⏎",
    "trailer-no-colon": "5⏎hello⏎0⏎Authorization⏎⏎",
    "last-bare-lf": "5⏎hello⏎0⏎\n",
}


def test_bad_chunks_never_let_a_smuggled_request_through(enforcer, rec):
    enforcer.start(policy(rec.port, rules='"POST /v1/invoices", "GET /v1/invoices/*"'))
    smuggled = "DELETE /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"
    for cid, body in BAD_CHUNKS.items():
        rec.reset()
        req = crlf("POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding: chunked⏎⏎" + body + smuggled)
        out = raw(enforcer, rec.port, req)
        rs, rest = responses(out)
        # no answer (the upstream never got a whole request), the connection closed
        assert [r[0] for r in rs] in ([], [400]), (cid, out)
        assert rest in (b"<EOF>", b"<RST>"), (cid, out)
        time.sleep(0.1)
        got = rec.all()
        assert got == b"" or got.startswith(b"POST /v1/invoices HTTP/1.1\r\n"), (cid, got)
        assert b"DELETE" not in got, (cid, got)
        # what went of the body went re-encoded, and never as a whole body
        assert not got.endswith(b"0\r\n\r\n"), (cid, got)


def test_trailers_never_forwarded(enforcer, rec):
    """Trailer fields after the last chunk can carry Authorization, Host or
    a Content-Length; they are read and dropped, and the pipelined request
    after them is judged on its own."""
    enforcer.start(policy(rec.port, rules='"POST /v1/invoices", "GET /v1/invoices/*"'))
    req = crlf("POST /v1/invoices HTTP/1.1⏎Host: api.internal⏎Transfer-Encoding: chunked⏎⏎"
               "000005;a=b;c⏎hello⏎0;x⏎Authorization: Bearer agent⏎Host: evil.internal⏎Content-Length: 40⏎"
               "Impersonate-User: admin⏎⏎"
               "DELETE /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"
               "GET /v1/invoices/2 HTTP/1.1⏎Host: api.internal⏎⏎")
    out = raw(enforcer, rec.port, req)
    rs, rest = responses(out)
    assert [r[0] for r in rs] == [200, 403, 200], out
    assert rs[0][2] == b"seen POST /v1/invoices body=5\n"
    assert rec.all() == (b"POST /v1/invoices HTTP/1.1\r\nHost: api.internal\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n"
                         b"GET /v1/invoices/2 HTTP/1.1\r\nHost: api.internal\r\n\r\n")


def test_pipeline_split_byte_by_byte(enforcer, rec):
    """An allowed and a denied request sent one byte per write: each head is
    judged whole, never on a prefix."""
    enforcer.start(policy(rec.port))
    data = crlf("GET /v1/invoices/7 HTTP/1.1⏎Host: api.internal⏎⏎DELETE /v1/invoices/7 HTTP/1.1⏎"
                "Host: api.internal⏎⏎GET /v1/invoices/8 HTTP/1.1⏎Host: api.internal⏎⏎")
    out = raw(enforcer, rec.port, *[data[i:i + 1] for i in range(len(data))], wait=0.005)
    rs, rest = responses(out)
    assert [r[0] for r in rs] == [200, 403, 200], out
    assert rec.all() == (b"GET /v1/invoices/7 HTTP/1.1\r\nHost: api.internal\r\n\r\n"
                         b"GET /v1/invoices/8 HTTP/1.1\r\nHost: api.internal\r\n\r\n")


# An upstream that, like many static-file and redirect handlers, does not
# read a body on GET or HEAD: whatever follows the head is its next request
# (the "0.CL" desync of Kettle's "HTTP/1.1 must die", 2025). Logs request lines.
ZERO_CL = textwrap.dedent(r"""
    import sys
    from rawhttp import listen, read_head, serve_forever
    port, logf = int(sys.argv[1]), sys.argv[2]
    log = open(logf, "a", buffering=1)
    s = listen(port, 16)
    def serve(c, _):
        buf = b""
        while True:
            head, buf = read_head(c, buf)
            if head is None:
                return
            lines = head.split(b"\r\n")
            log.write(lines[0].decode(errors="replace") + "\n")
            method = lines[0].split(b" ")[0]
            if method not in (b"GET", b"HEAD"):
                n = 0
                for l in lines[1:]:
                    if l.lower().startswith(b"content-length:"):
                        n = int(l.split(b":")[1])
                while len(buf) < n:
                    buf += c.recv(65536)
                buf = buf[n:]
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    serve_forever(s, serve, errors=(OSError, ValueError))
""")


def test_get_body_is_not_a_second_request(enforcer, servers, tmp):
    port, logf = free_port(), os.path.join(tmp, "zerocl.log")
    servers.procs.append(Proc([PY, "-c", ZERO_CL, str(port), logf]))
    wait_port("127.0.0.1", port)
    enforcer.start(policy(port))
    smuggled = b"DELETE /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\n\r\n"
    for framing in (b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled,
                    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"):
        out = raw(enforcer, port, b"GET /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\n" + framing)
        assert out.count(b"HTTP/1.1 ") == 1, out
        time.sleep(0.2)
        with open(logf) as f:
            log = f.read()
        assert "DELETE" not in log, log


def test_body_on_delete_or_options_is_not_a_second_request(enforcer, servers, tmp):
    """DELETE's and OPTIONS' bodies have no defined meaning (RFC 9110): a
    server that never reads one (Python's http.server, for one) took the body
    for its next request, so an allowed OPTIONS or DELETE carried a denied
    DELETE (found by review, stop 17). Such a body is refused, nothing of the
    request is forwarded; without a body they pass."""
    port, logf = free_port(), os.path.join(tmp, "bodies.log")
    servers.procs.append(Proc([PY, "-c", ZERO_CL, str(port), logf]))
    wait_port("127.0.0.1", port)
    enforcer.start(policy(port, rules='"GET /v1/invoices/*", "OPTIONS /v1/**", "DELETE /v1/drafts/*"'))
    smuggled = b"DELETE /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\n\r\n"
    for line in (b"OPTIONS /v1/invoices/1", b"DELETE /v1/drafts/9"):
        for framing in (b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled,
                        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"):
            out = raw(enforcer, port, line + b" HTTP/1.1\r\nHost: api.internal\r\n" + framing)
            rs, rest = responses(out)
            assert [r[0] for r in rs] == [400], (line, out)
            assert b"with a body" in rs[0][2], out
    time.sleep(0.2)
    with open(logf) as f:
        assert f.read() == "", "nothing may be forwarded"
    for line in (b"OPTIONS /v1/invoices/1", b"DELETE /v1/drafts/9"):
        out = raw(enforcer, port, line + b" HTTP/1.1\r\nHost: api.internal\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200"), (line, out)
    time.sleep(0.2)
    with open(logf) as f:
        assert f.read().split("\n")[:2] == ["OPTIONS /v1/invoices/1 HTTP/1.1", "DELETE /v1/drafts/9 HTTP/1.1"]


def test_webdav_destination_refused(enforcer, rec):
    """COPY and MOVE write to the path their Destination field names, which
    no rule was asked about: MOVE /dav/scratch/x with Destination:
    /dav/protected/config replaced a file the rules protect (nginx's dav
    module, found by review, stop 17). Any request with a Destination field
    is refused."""
    enforcer.start(policy(rec.port, rules='"MOVE /v1/scratch/**", "COPY /v1/scratch/**", "GET /v1/invoices/*"'))
    for req in ("MOVE /v1/scratch/x HTTP/1.1⏎Host: api.internal⏎Destination: /v1/protected/config⏎⏎",
                "COPY /v1/scratch/x HTTP/1.1⏎Host: api.internal⏎Destination: http://api.internal/v1/protected/c⏎"
                "Overwrite: T⏎⏎",
                "MOVE /v1/scratch/x HTTP/1.1⏎Host: api.internal⏎DESTINATION: /v1/scratch/y⏎⏎"):
        refused_400(enforcer, rec, crlf(req), req)
    rec.reset()
    out = raw(enforcer, rec.port, crlf("MOVE /v1/scratch/x HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all().startswith(b"MOVE /v1/scratch/x HTTP/1.1\r\n")


# ---- 3. the agent's identity headers, the injected credential -------------------

def test_identity_headers_any_case_and_duplicated(enforcer, rec, token):
    enforcer.start(policy(rec.port, upstream=f"server_name: api.internal, bearer_token_file: {token}"))
    hdrs = ["aUtHoRiZaTiOn: Bearer one", "AUTHORIZATION: Bearer two", "authorization: Basic eDp5",
            "COOKIE: a=1", "cookie: b=2", "PROXY-AUTHORIZATION: Basic eA==", "proxy-connection: keep-alive",
            "x-forwarded-host: evil.internal", "X-FORWARDED-PROTO: https", "x-Forwarded-Prefix: /admin",
            "FORWARDED: for=1.2.3.4;host=evil", "x-real-ip: 1.2.3.4",
            "X-HTTP-METHOD-OVERRIDE: DELETE", "x-http-method: DELETE", "X-METHOD-OVERRIDE: PUT",
            "impersonate-user: admin", "IMPERSONATE-GROUP: system:masters", "Impersonate-Uid: 0",
            "impersonate-extra-scopes: all", "x-remote-user: admin", "X-REMOTE-GROUP: system:masters",
            "X-Remote-Extra-Scopes: all", "Connection: x-kept-not", "x-kept-not: 1", "X-Kept: yes"]
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎" +
                                       "".join(h + "⏎" for h in hdrs) + "⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all() == (b"GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\nX-Kept: yes\r\n"
                         b"Accept-Encoding: identity\r\n"
                         b"Authorization: Bearer " + SECRET.encode() + b"\r\n\r\n")


# CGI, PHP-FPM and WSGI servers (Werkzeug/Flask, PHP's own server) map a
# header name to HTTP_<NAME> with '-' and '_' both '_': "X_Forwarded_For" IS
# X-Forwarded-For to them (Flask's ProxyFix trusts it), "X_HTTP_Method_Override"
# is Symfony's override. The strip list matches names with '-' only.
UNDERSCORE = ["X_Forwarded_For: 6.6.6.6", "x_forwarded_host: evil.internal", "X-Forwarded_Proto: https",
              "X_Real_IP: 6.6.6.6", "X_HTTP_Method_Override: DELETE", "x_method_override: PUT",
              "Proxy_Authorization: Basic eA==", "Impersonate_User: admin", "X_Remote_User: admin",
              "Content_Length: 5", "Transfer_Encoding: chunked",
              # what masked routes strip (a 304 oracle on the unmasked body;
              # found by review, stop 17)
              'If_None_Match: "abc"', "If_Modified_Since: Mon, 30 Nov 2026 10:00:00 GMT", "If_Range: x",
              'If_Match: "abc"', "If_Unmodified_Since: Mon, 30 Nov 2026 10:00:00 GMT",
              # path overrides (IIS-style servers read HTTP_X_ORIGINAL_URL; review, stop 43)
              "X_Original_URL: /v1/admin/users", "x_rewrite_url: /v1/admin/users", "X_Override_URL: /a",
              "X_Original_URI: /a"]


def test_underscore_twins_of_stripped_headers_refused(enforcer, rec):
    enforcer.start(policy(rec.port))
    for h in UNDERSCORE:
        refused_400(enforcer, rec, crlf(f"GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎{h}⏎⏎"), h)
    # other names with '_' are ordinary fields
    rec.reset()
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎api_key: k1⏎X_Trace_Id: 7⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all() == b"GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\napi_key: k1\r\nX_Trace_Id: 7\r\n\r\n"


def test_named_credential_header_not_overridable(enforcer, rec, tmp):
    key = os.path.join(tmp, "apikey")
    with open(key, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(key, 0o600)
    enforcer.start(policy(rec.port, upstream=f"server_name: api.internal, "
                                              f"header: {{name: X-Api-Key, value_file: {key}}}"))
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎"
                                       "X-Api-Key: other-tenants-key⏎x-api-key: another⏎"
                                       "X_Api_Key: third⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    got = rec.all()
    assert b"other-tenants-key" not in got and b"another" not in got and b"third" not in got, got
    assert got == (b"GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\nAccept-Encoding: identity\r\n"
                   b"X-Api-Key: " + SECRET.encode() + b"\r\n\r\n"), got


def test_path_override_headers_stripped(enforcer, rec):
    enforcer.start(policy(rec.port))
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎"
                                       "X-Original-URL: /v1/admin/users⏎X-Rewrite-URL: /v1/admin/users⏎"
                                       "X-Override-URL: /v1/admin/users⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all() == b"GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\n\r\n", rec.all()


# An upstream that echoes what it got: the request head in the body, the
# Authorization value in a response header and in a redirect's Location
# (debug endpoints, error pages, TRACE and "login" redirects do this).
ECHO_UPSTREAM = textwrap.dedent(r"""
    import sys, urllib.parse
    from rawhttp import heads, listen, serve_forever
    port = int(sys.argv[1])
    s = listen(port, 16)
    def serve(c, _):
        for head in heads(c):
            auth = b""
            for l in head.split(b"\r\n")[1:]:
                k, v = l.split(b":", 1)
                if k.strip().lower() == b"authorization":
                    auth = v.strip()
            body = head + b"\r\n"
            loc = b"/login?token=" + urllib.parse.quote_from_bytes(auth).encode()
            c.sendall(b"HTTP/1.1 302 Found\r\nX-Echo-Authorization: " + auth + b"\r\nLocation: " + loc +
                      b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    serve_forever(s, serve, errors=())
""")


def test_injected_credential_never_reflected_to_agent(enforcer, servers, token):
    """The credential comes back in a response field, in a redirect's
    Location and in the body: the agent gets '*' where it stood, the same
    number of bytes (the framing holds), and the event counts them."""
    port = free_port()
    servers.procs.append(Proc([PY, "-c", ECHO_UPSTREAM, str(port)]))
    wait_port("127.0.0.1", port)
    enforcer.start(policy(port, upstream=f"server_name: api.internal, bearer_token_file: {token}"))
    out = raw(enforcer, port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎⏎"))
    rs, _ = responses(out)
    assert rs and rs[0][0] == 302, out
    assert SECRET.encode() not in out, out
    stars = b"*" * len(SECRET)
    assert rs[0][1]["x-echo-authorization"] == "Bearer " + stars.decode(), rs[0][1]
    assert rs[0][1]["location"] == "/login?token=Bearer%20" + stars.decode(), rs[0][1]
    assert b"Authorization: Bearer " + stars in rs[0][2], rs[0][2]
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002)
    assert ev and ev["unmapped"].get("credential_starred") == 3, ev


# Answers in small pieces, the credential split across them: a chunked body
# (one chunk per piece), a Content-Length body, and one delimited by the
# close; the credential written as it is, percent-encoded and JSON-escaped.
SLOW_ECHO = textwrap.dedent(r"""
    import base64, json, sys, time, urllib.parse
    from rawhttp import heads, listen, serve_forever
    port = int(sys.argv[1])
    s = listen(port, 16)
    def serve(c, _):
        for head in heads(c):
            path = head.split(b" ")[1].decode()
            auth = b""
            for l in head.split(b"\r\n")[1:]:
                k, v = l.split(b":", 1)
                if k.strip().lower() == b"authorization":
                    auth = v.strip()
            cred = auth.split(b" ", 1)[1]
            secret = base64.b64decode(cred).split(b":", 1)[1] if auth.startswith(b"Basic") else cred
            body = (b'{"raw": "' + cred + b'", "q": "' + urllib.parse.quote_from_bytes(cred, safe="").encode() +
                    b'", "json": ' + json.dumps(cred.decode()).replace("/", "\\/").encode() +
                    b', "pw": "' + secret + b'", "pad": "' + b"x" * 3000 + b'"}')
            pieces = [body[i:i + 7] for i in range(0, len(body), 7)][:40] + [body[280:]]
            pieces = [p for p in pieces if p]
            if path.endswith("/chunked"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                for p in pieces:
                    c.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
                    time.sleep(0.005)
                c.sendall(b"0\r\n\r\n")
            elif path.endswith("/length"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
                for p in pieces:
                    c.sendall(p)
                    time.sleep(0.005)
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                for p in pieces:
                    c.sendall(p)
                    time.sleep(0.005)
                return
    serve_forever(s, serve, errors=())
""")


def test_reflected_credential_starred_in_streamed_bodies(enforcer, servers, tmp):
    """Basic auth whose base64 has '/', '+' and '=': the value, its
    percent-encoded and JSON-escaped forms and the decoded password are
    starred in bodies streamed in 7-byte pieces, whatever the framing; the
    rest of each body is intact."""
    import base64
    import urllib.parse
    port = free_port()
    servers.procs.append(Proc([PY, "-c", SLOW_ECHO, str(port)]))
    wait_port("127.0.0.1", port)
    # base64 "c3Y6cHc+Png/fmxvbmctcGFzc3dvcmQ="; the password is long enough to be searched for too
    userpass = b"sv:pw>>x?~long-password"
    cred = base64.b64encode(userpass)
    assert b"+" in cred and b"/" in cred and b"=" in cred, cred
    pf = os.path.join(tmp, "basic")
    with open(pf, "wb") as f:
        f.write(userpass + b"\n")
    os.chmod(pf, 0o600)
    enforcer.start(policy(port, rules='"GET /v1/**"', upstream=f"server_name: api.internal, basic_auth_file: {pf}"))
    forms = [cred, urllib.parse.quote_from_bytes(cred, safe="").encode(), cred.replace(b"/", b"\\/"),
             userpass.split(b":", 1)[1]]
    for kind in ("chunked", "length", "close"):
        out = raw(enforcer, port, crlf(f"GET /v1/echo/{kind} HTTP/1.1⏎Host: api.internal⏎⏎"), wait=1.0)
        head, body = out.split(b"\r\n\r\n", 1)
        for mark in (b"<OPEN>", b"<EOF>", b"<RST>"):   # what raw() adds: how the connection ended
            body = body.removesuffix(mark)
        assert head.startswith(b"HTTP/1.1 200"), (kind, out)
        if kind == "chunked":
            assert b"transfer-encoding: chunked" in head.lower(), head
            plain, rest = b"", body
            while True:
                n, rest = rest.split(b"\r\n", 1)
                if int(n, 16) == 0:
                    break
                plain, rest = plain + rest[:int(n, 16)], rest[int(n, 16) + 2:]
            body = plain
        elif kind == "length":
            assert b"content-length: %d" % len(body) in head.lower(), (head, len(body))
        for f in forms:
            assert f not in body, (kind, f, body[:400])
        doc = json.loads(body)
        assert set(doc["raw"]) == {"*"} and len(doc["raw"]) == len(cred), (kind, doc)
        assert set(doc["pw"]) == {"*"} and set(doc["q"]) == {"*"} and set(doc["json"]) == {"*"}, (kind, doc)
        assert doc["pad"] == "x" * 3000, kind


# A stream of events (Server-Sent Events, a Kubernetes watch): the second
# event comes 5 s after the first.
SSE_UPSTREAM = textwrap.dedent(r"""
    import sys, time
    from rawhttp import listen, read_head, serve_forever
    port = int(sys.argv[1])
    s = listen(port, 16)
    def serve(c, _):
        if read_head(c)[0] is None:
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for ev in (b'data: {"n": 1, "token": "s3cr3t-upstream-token"}\n\n', b'data: {"n": 2}\n\n'):
            c.sendall(b"%x\r\n" % len(ev) + ev + b"\r\n")
            time.sleep(5)
        c.sendall(b"0\r\n\r\n")
        c.close()
    serve_forever(s, serve, errors=(), close=False)
""")


def test_streamed_events_not_delayed_by_the_search(enforcer, servers, token):
    """Searching a streamed answer for the credential keeps back only an end
    that could begin it: each event of a stream reaches the agent when it
    is sent, not when the next one comes (the credential in it starred)."""
    port = free_port()
    servers.procs.append(Proc([PY, "-c", SSE_UPSTREAM, str(port)]))
    wait_port("127.0.0.1", port)
    enforcer.start(policy(port, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {token}"))
    r = enforcer.py(AGENT, f"""
    import socket
    s = socket.create_connection(("127.0.0.1", {port}), timeout=3)
    s.sendall(b"GET /v1/events HTTP/1.1\\r\\nHost: api.internal\\r\\n\\r\\n")
    got = b""
    try:
        while b'"n": 1' not in got or not got.endswith(b"\\n\\n\\r\\n"):
            d = s.recv(4096)
            if not d:
                break
            got += d
        print("FIRST", got.decode())
    except socket.timeout:
        print("TIMEOUT", got.decode())
    """, timeout=30)
    assert r.stdout.startswith("FIRST"), r.stdout + r.stderr
    assert SECRET not in r.stdout and '"token": "' + "*" * len(SECRET) + '"' in r.stdout, r.stdout


def test_compressed_answer_refused_when_credential_injected(enforcer, rec, canned, token):
    """An answer on a target that injects a credential is searched for it:
    the upstream is asked for identity (the agent's Accept-Encoding does not
    go), and a compressed body it sends anyway is a 502, never passed on."""
    enforcer.start(policy(rec.port, upstream=f"server_name: api.internal, bearer_token_file: {token}"))
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎Accept-Encoding: gzip, br⏎⏎"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    sent = rec.all().lower()
    assert b"accept-encoding: identity\r\n" in sent and b"gzip" not in sent, sent
    body = gzip.compress(b'{"echo": "Bearer ' + SECRET.encode() + b'"}')
    canned.put("gz", body, ["Content-Type: application/json", "Content-Encoding: gzip"])
    canned.put("id", b'{"ok": 1}', ["Content-Type: application/json", "Content-Encoding: identity"])
    enforcer.stop()
    enforcer.start(policy(canned.port, rules='"GET /v1/**"', upstream=f"server_name: api.internal, bearer_token_file: {token}"))
    (status, hdrs, got), out = fetch(enforcer, canned.port, "gz")
    assert status == 502 and body not in out, out
    assert "compressed" in json.loads(got)["reason"], got
    (status, hdrs, got), out = fetch(enforcer, canned.port, "id")
    assert status == 200 and got == b'{"ok": 1}', out
    # without a credential to protect, a compressed answer passes as it came
    enforcer.stop()
    enforcer.start(policy(canned.port, rules='"GET /v1/**"'))
    (status, hdrs, got), out = fetch(enforcer, canned.port, "gz")
    assert status == 200 and got == body, out


# ---- 4. masking ----------------------------------------------------------------

# Serves GET /r/<name> with the file DIR/<name> as the WHOLE response (status
# line, head and body written by the test), so heads no real server sends
# (two Content-Encoding fields, codings we cannot decode) can be tried.
CANNED = textwrap.dedent(r"""
    import os, sys
    from rawhttp import heads, listen, serve_forever
    port, d = int(sys.argv[1]), sys.argv[2]
    s = listen(port, 16)
    def serve(c, _):
        for head in heads(c):
            name = head.split(b"\r\n")[0].split(b" ")[1].decode().rsplit("/", 1)[1]
            # content negotiation: DIR/<name>.yaml answers Accept: application/yaml
            if b"\r\naccept: application/yaml" in head.lower() and os.path.exists(os.path.join(d, name + ".yaml")):
                name += ".yaml"
            with open(os.path.join(d, name), "rb") as f:
                c.sendall(f.read())
    serve_forever(s, serve, errors=())
""")


class Canned:
    def __init__(self, tmp, procs):
        self.dir = os.path.join(tmp, f"canned-{time.time_ns()}")
        os.makedirs(self.dir)
        self.port = free_port()
        procs.append(Proc([PY, "-c", CANNED, str(self.port), self.dir]))
        wait_port("127.0.0.1", self.port)

    def put(self, name, body, headers=(), status="200 OK"):
        head = f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers)
        head += f"Content-Length: {len(body)}\r\n\r\n"
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(head.encode() + body)


@pytest.fixture
def canned(tmp, servers):
    return Canned(tmp, servers.procs)


# JSON paths and one detector, as test_http.py's masking test: the email
# is found by its path only; the card by the detector.
MASK = '{json: ["$.customer.email", "$..ssn"], detectors: [credit_card]}'
EMAIL = b"ada@example.com"


def fetch(enforcer, port, name):
    out = raw(enforcer, port, crlf(f"GET /v1/r/{name} HTTP/1.1⏎Host: api.internal⏎⏎"))
    rs, rest = responses(out)
    assert len(rs) == 1, (name, out)
    return rs[0], out


def test_mask_escaped_member_names(enforcer, canned):
    """A member name spelled with escapes is the same name to every JSON
    reader: the path matches the decoded name."""
    body = (b'{"customer": {"\\u0065mail": "ada@example.com", "name": "Ada"}, '
            b'"x": {"\\u0073\\u0073\\u006e": "078-05-1120"}, "y": [{"s\\u0073n": 123456789}]}')
    canned.put("esc", body, ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, MASK))
    (status, hdrs, got), out = fetch(enforcer, canned.port, "esc")
    assert status == 200, out
    assert json.loads(got) == {"customer": {"email": "****", "name": "Ada"}, "x": {"ssn": "****"},
                               "y": [{"ssn": "****"}]}, got
    assert EMAIL not in out and b"078-05" not in out and b"123456789" not in out


# Bodies a client reads as JSON (Python's json, JavaScript's JSON.parse, Go's
# encoding/json: the last duplicate wins, \u0000 is a character, requests'
# .json() skips a UTF-8 BOM) but the strict masker does not: they must not
# fall through to text scanning, which knows nothing of $.customer.email.
LENIENT_JSON = {
    "dup-key": b'{"customer": {"email": "ada@example.com", "email": "ada@example.com"}}',
    "dup-key-escaped": b'{"customer": {"email": "x", "\\u0065mail": "ada@example.com"}}',
    "dup-outer": b'{"customer": {"email": "ada@example.com"}, "customer": {"email": "ada@example.com"}}',
    "bom": b'\xef\xbb\xbf{"customer": {"email": "ada@example.com"}}',
    "nul-escape": b'{"customer": {"email": "ada@example.com", "n": "a\\u0000b"}}',
    "lone-surrogate": b'{"customer": {"email": "ada@example.com", "n": "\\ud800"}}',
    "bad-utf8-in-string": b'{"customer": {"email": "ada@example.com", "n": "\xff"}}',
    "nan": b'{"customer": {"email": "ada@example.com"}, "n": NaN, "m": -Infinity}',
    "xssi-prefix": b")]}',\n" + b'{"customer": {"email": "ada@example.com"}}',
    "ndjson": b'{"customer": {"email": "x"}}\n{"customer": {"email": "ada@example.com"}}\n',
}


def test_mask_lenient_json_not_passed_as_text(enforcer, canned):
    for name, body in LENIENT_JSON.items():
        canned.put(name, body, ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, MASK))
    for name in LENIENT_JSON:
        (status, hdrs, got), out = fetch(enforcer, canned.port, name)
        assert EMAIL not in out, (name, out)
        assert status == 502, (name, out)
        assert "lenient" in json.loads(got)["reason"], (name, got)
    # what no JSON reader takes (cut short, a stray quote, a raw control
    # byte) may still be read as JSON by the agent: on a route with JSON
    # paths it is refused too (test_mask_wrapped_json_not_scanned_as_text);
    # without an object or array in it, it is text to the detectors
    canned.put("cut", b'{"customer": {"email": "ada@example.com"}, "card": "4111 1111 1111 1111", "n": [1, 2',
               ["Content-Type: application/json"])
    (status, hdrs, got), out = fetch(enforcer, canned.port, "cut")
    assert status == 502 and EMAIL not in out and b"4111" not in out, out
    canned.put("text", b"card 4111 1111 1111 1111 on file", ["Content-Type: text/plain"])
    (status, hdrs, got), out = fetch(enforcer, canned.port, "text")
    assert status == 200 and b"4111" not in out and b"****" in got, out


def test_mask_wrapped_json_not_scanned_as_text(enforcer, canned):
    """JSON wrapped for a browser (JSONP as Express's res.jsonp() writes it,
    a "while(1);" prefix, HTML after it) is not JSON, so it went to the
    detectors as text, and the keys the JSON paths name passed unmasked
    (found by review, stop 17). Such a body is refused; text without such
    a key is still masked by the detectors."""
    canned.put("jsonp", b"/**/ typeof cb === 'function' && cb({\"customer\":{\"name\":\"Ada\",\"email\":"
               b"\"ada@example.com\"},\"ssn\":\"078-05-1120\"});", ["Content-Type: text/javascript"])
    canned.put("prefixed", b"while(1);{\"customer\":{\"email\":\"ada@example.com\"}}",
               ["Content-Type: application/json"])
    canned.put("text", b"card 4111111111111111 on file", ["Content-Type: text/plain"])
    enforcer.start(mask_policy(canned.port, MASK))
    for name in ("jsonp", "prefixed"):
        (status, _, body), out = fetch(enforcer, canned.port, name)
        assert status == 502, (name, out)
        assert EMAIL not in out and b"078-05-1120" not in out, (name, out)
    (status, _, body), out = fetch(enforcer, canned.port, "text")
    assert status == 200 and body == b"card **** on file", out


def test_head_on_masked_route_hides_unmasked_length(enforcer, canned):
    """The answer to HEAD says how long GET's body would be: on a masked
    route that is the unmasked length (how long the hidden values are), so
    it is not passed on; on an unmasked route it is."""
    with open(os.path.join(canned.dir, "h"), "wb") as f:
        f.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4321\r\n"
                b'ETag: "44f71c37"\r\nContent-MD5: gKsYvs3NfWRcBQNQHSPg9g==\r\n'
                b"Repr-Digest: sha-256=:iaR2xzU=:\r\nDigest: SHA-256=iaR2xzU=\r\n\r\n")
    pol = mask_policy(canned.port, MASK)
    assert 'allow: {http: ["GET /v1/**"]}' in pol
    enforcer.start(pol.replace('allow: {http: ["GET /v1/**"]}', 'allow: {http: ["GET /v1/**", "HEAD /v1/**"]}'))
    out = raw(enforcer, canned.port, crlf("HEAD /v1/r/h HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert out.startswith(b"HTTP/1.1 200"), out
    assert b"4321" not in out and b"content-length" not in out.lower(), out
    # validators and digests of the unmasked body: an offline oracle for
    # the hidden values (found by review, stop 17)
    for name in (b"etag", b"content-md5", b"repr-digest", b"digest"):
        assert name + b":" not in out.lower(), (name, out)
    enforcer.stop()
    enforcer.start(policy(canned.port, rules='"HEAD /v1/**"'))
    out = raw(enforcer, canned.port, crlf("HEAD /v1/r/h HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert out.startswith(b"HTTP/1.1 200") and b"Content-Length: 4321\r\n" in out, out
    assert b'ETag: "44f71c37"\r\n' in out and b"Repr-Digest: " in out, out


def test_mask_binary_or_stacked_coding_refused(enforcer, canned):
    """What text detectors cannot read is refused, never passed through as
    "no match": a body gzipped twice with the codings in two fields (only
    the last was undone), a gzip body labelled identity, UTF-16 JSON, and
    codings zlib does not do."""
    doc = json.dumps({"customer": {"email": "ada@example.com"}, "card": "4111 1111 1111 1111"}).encode()
    canned.put("gzgz", gzip.compress(gzip.compress(doc)),
               ["Content-Type: application/json", "Content-Encoding: gzip", "Content-Encoding: gzip"])
    canned.put("gz-as-identity", gzip.compress(doc), ["Content-Type: application/json"])
    canned.put("deflate-gzip", gzip.compress(zlib.compress(doc)),
               ["Content-Type: application/json", "Content-Encoding: deflate", "Content-Encoding: gzip"])
    canned.put("utf16", doc.decode().encode("utf-16"), ["Content-Type: application/json; charset=utf-16"])
    canned.put("br", b"\x1b\x2a\x00\xf8" + doc, ["Content-Type: application/json", "Content-Encoding: br"])
    canned.put("gzip-br", gzip.compress(doc), ["Content-Type: application/json", "Content-Encoding: gzip, br"])
    canned.put("compress", doc, ["Content-Type: application/json", "Content-Encoding: compress"])
    # two gzip members one after the other: gzip readers decode both, and so
    # does the masker (RFC 1952): the whole document is masked
    half = len(doc) // 2
    canned.put("gzip-members", gzip.compress(doc[:half]) + gzip.compress(doc[half:]),
               ["Content-Type: application/json", "Content-Encoding: gzip"])
    enforcer.start(mask_policy(canned.port, MASK))
    for name in ("gzgz", "gz-as-identity", "deflate-gzip", "utf16", "br", "gzip-br", "compress"):
        (status, hdrs, got), out = fetch(enforcer, canned.port, name)
        assert status == 502, (name, out[:300])
        assert EMAIL not in out and b"4111" not in out, name
        assert "content-encoding" not in hdrs, name
    (status, hdrs, got), out = fetch(enforcer, canned.port, "gzip-members")
    assert status == 200 and b"****" in got, out[:300]
    assert EMAIL not in out and b"4111" not in out
    assert "content-encoding" not in hdrs


PACED_CLIENT = r"""
import json, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
t0, got = time.time(), []
for i in range(n):   # a new connection each time: the agent's share holds them all
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"GET /v1/r/bomb HTTP/1.1\r\nHost: api.internal\r\n\r\n")
    out = b""
    while b"\r\n\r\n" not in out:
        out += s.recv(65536)
    head, body = out.split(b"\r\n\r\n", 1)
    n_len = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < n_len:
        body += s.recv(1 << 20)
    got.append([head.split(b" ")[1].decode(), len(body), body.count(b"4111 1111"), body.count(b"****")])
    s.close()
print(json.dumps({"secs": time.time() - t0, "got": got}))
"""


def test_masking_time_is_paced_per_agent(enforcer, canned):
    """A gzip body that inflates a thousandfold costs a worker tens of ms to
    inflate and scan per answer, from a few KiB the upstream sent: the time
    is charged to the agent's limits.mask_cpu (here 2% of a CPU after a
    20 ms burst, a test knob), and past it the next answer is read only when
    the agent's share allows, on a new connection too. Each answer still
    arrives whole and masked."""
    text = b"card 4111 1111 1111 1111 of ann@example.com; " * 140000   # 6.3 MB
    canned.put("bomb", gzip.compress(text), ["Content-Type: text/plain", "Content-Encoding: gzip"])
    text = mask_policy(canned.port, MASK).replace(f"{{name: {AGENT}}}", f"{{name: {AGENT}, limits: {{mask_cpu: 2}}}}")
    # an answer held for the agent's share is not the upstream being late
    text = text.replace("upstream: {}", "upstream: {response_timeout: 1s}")
    enforcer.start(text, env={"AGENTGATE_PARSE_BURST_MS": "20"})
    n = 4
    r = enforcer.exec(AGENT, [PY, "-c", PACED_CLIENT, str(canned.port), str(n)], timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for status, size, leaked, starred in out["got"]:
        assert status == "200" and leaked == 0 and starred >= 140000, out["got"]
    a = [a for a in enforcer.status()["agents"] if a["name"] == AGENT][0]
    spent = a["mask_ms"] / 1000
    assert a["mask_paced"] > 0 and spent > 0.04, a
    # the last answer's time is charged after it was sent
    assert out["secs"] >= 0.6 * (spent * (n - 1) / n - 0.02) * 50, (out["secs"], a)


def test_mask_depth_and_side_doors(enforcer, canned):
    """Nesting past the bound is refused, not skipped; error statuses and
    bodies labelled text are masked like any other."""
    deep = b'{"customer": {"email": "ada@example.com"}, "d": ' + b"[" * 70 + b'"4111111111111111"' + \
        b"]" * 70 + b"}"
    canned.put("deep", deep, ["Content-Type: application/json"])
    canned.put("err", b'{"customer": {"email": "ada@example.com"}}', ["Content-Type: text/plain"],
               status="404 Not Found")
    enforcer.start(mask_policy(canned.port, MASK))
    (status, _, got), out = fetch(enforcer, canned.port, "deep")
    assert status == 502 and EMAIL not in out and b"4111" not in out, out[:300]
    (status, _, got), out = fetch(enforcer, canned.port, "err")
    assert status == 404 and json.loads(got) == {"customer": {"email": "****"}}, out


def test_mask_detectors_see_response_headers(enforcer, canned):
    canned.put("hdr", b'{"ok": true}', ["Content-Type: application/json", "X-Customer-Email: ada@example.com",
                                          "Location: /v1/customers/ada@example.com",
                                          "X-Card: 4111 1111 1111 1111"])
    enforcer.start(mask_policy(canned.port, '{json: ["$.customer.email"], detectors: [credit_card, email]}'))
    (status, hdrs, got), out = fetch(enforcer, canned.port, "hdr")
    assert status in (200, 502), out
    assert EMAIL not in out and b"4111" not in out, out


def test_mask_detectors_see_response_field_names(enforcer, canned):
    """A field's name is data too where an upstream makes names of it
    (S3's x-amz-meta-<key>, a field per account): a card number, an SSN or
    a key in a name passed as it came, on the final answer and on a 103
    before it (found by review), where a JSON member name holding one is
    masked. Such a name is masked in place ('*' is a token byte); the
    value after it is masked on its own."""
    with open(os.path.join(canned.dir, "names"), "wb") as f:
        f.write(b"HTTP/1.1 103 Early Hints\r\nX-Meta-4111111111111111: 1\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Card-4111-1111-1111-1111: 2\r\n"
                b"x-amz-meta-078-05-1120: 4111 1111 1111 1111\r\n"
                b"AKIAIOSFODNN7EXAMPLE: k\r\nX-Plain-42: as-is\r\nContent-Length: 12\r\n\r\n"
                b'{"ok": true}')
    enforcer.start(mask_policy(canned.port, "{detectors: [credit_card, us_ssn, api_key]}"))
    out = raw(enforcer, canned.port, crlf("GET /v1/r/names HTTP/1.1⏎Host: api.internal⏎⏎"))
    for leak in (b"4111", b"078-05", b"AKIA"):
        assert leak not in out, (leak, out)
    assert b"HTTP/1.1 103 Early Hints\r\nX-Meta-****: 1\r\n\r\n" in out, out
    assert b"\r\nX-Card-****: 2\r\n" in out and b"\r\nx-amz-meta-****: ****\r\n" in out, out
    assert b"\r\n****: k\r\n" in out and b"\r\nX-Plain-42: as-is\r\n" in out, out
    assert out.endswith(b'{"ok": true}<OPEN>'), out


def test_mask_content_negotiation_does_not_drop_json_paths(enforcer, canned):
    doc = {"customer": {"email": "ada@example.com"}, "ssn": "not-a-detectable-value-42"}
    canned.put("neg", json.dumps(doc).encode(), ["Content-Type: application/json"])
    canned.put("neg.yaml", b"customer:\n  email: ada@example.com\nssn: not-a-detectable-value-42\n",
               ["Content-Type: application/yaml"])
    enforcer.start(mask_policy(canned.port, MASK))
    (status, _, got), out = fetch(enforcer, canned.port, "neg")
    assert status == 200 and json.loads(got) == {"customer": {"email": "****"}, "ssn": "****"}, out
    out = raw(enforcer, canned.port, crlf("GET /v1/r/neg HTTP/1.1⏎Host: api.internal⏎Accept: application/yaml⏎⏎"))
    assert EMAIL not in out and b"not-a-detectable" not in out, out


def test_mask_json_in_response_fields(enforcer, canned):
    """A field holding JSON (Dropbox's Dropbox-API-Result carries a file's
    metadata, an X-Pagination field a page's cursor): on a route whose mask
    names only JSON paths it was passed as it came, and with detectors its
    escapes hid an address (found by review). On a path route such a field
    goes masked whole; with detectors, when they match it decoded."""
    canned.put("dbx", b'{"ok": true}', ["Content-Type: application/json",
                                       'Dropbox-API-Result: {"name": "a.txt", "customer": {"email": '
                                       '"ada@example.com"}, "ssn": "078-05-1120"}',
                                       'X-Pagination: {"next": "ada\\u0040example.com"}',
                                       'Report-To: {"group": "csp", "max_age": 60}', "X-Keep: plain"])
    enforcer.start(mask_policy(canned.port, '{json: ["$.customer.email", "$..ssn"]}'))
    out = raw(enforcer, canned.port, crlf("GET /v1/r/dbx HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert EMAIL not in out and b"078-05" not in out and b"u0040" not in out, out
    assert b"Dropbox-API-Result: ****\r\n" in out and b"X-Keep: plain\r\n" in out, out
    enforcer.stop()
    enforcer.start(mask_policy(canned.port, "{detectors: [email, us_ssn]}"))
    out = raw(enforcer, canned.port, crlf("GET /v1/r/dbx HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert EMAIL not in out and b"078-05" not in out and b"u0040" not in out, out
    assert b"X-Pagination: ****\r\n" in out, out
    assert b'Report-To: {"group": "csp", "max_age": 60}\r\n' in out, out   # nothing in it: as it came


def test_mask_escapes_in_text_not_passed(enforcer, canned):
    """JSONP on a route with detectors only is text to the masker, scanned
    as written: the escapes PHP's json_encode and Python's json.dumps write
    for non-ASCII ("jos\\u00e9@ex\\u00e4mple.com") and JavaScript's "\\x40"
    spelled an address the detectors did not see, which the agent's JSON
    or JavaScript reader then decoded (found by review). Such text is
    refused; JSONP whose escapes hide nothing is masked as before."""
    canned.put("idn", b'cb({"email": "jos\\u00e9@ex\\u00e4mple.com", "n": 1});', ["Content-Type: text/javascript"])
    canned.put("x40", b"cb({'email': 'ada\\x40example.com'});", ["Content-Type: text/javascript"])
    canned.put("plain", b'cb({"email": "ada@example.com", "path": "C:\\\\temp"});', ["Content-Type: text/javascript"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    for name in ("idn", "x40"):
        (status, _, got), out = fetch(enforcer, canned.port, name)
        assert status == 502 and b"mple.com" not in out, (name, out)
        assert "escapes" in json.loads(got)["reason"], got
    (status, _, got), out = fetch(enforcer, canned.port, "plain")
    assert status == 200 and got == b'cb({"email": "****", "path": "C:\\\\temp"});', out


def test_mask_escapes_in_json_held_in_a_string(enforcer, canned):
    """JSON held in a JSON string (a Python service returning json.dumps()
    of a record as a field) is decoded twice by the agent, and the second
    time its escapes spell what the detectors saw only escaped: the
    non-ASCII address "jos\\u00e9@ex\\u00e4mple.com" passed (found by review).
    Such a string is masked whole; one whose escapes spell nothing stays."""
    inner = json.dumps({"email": "jos\u00e9@ex\u00e4mple.com", "n": 1})
    keep = json.dumps({"path": "C:\\temp", "city": "Z\u00fcrich"})
    canned.put("dbl", json.dumps({"record": inner, "other": keep, "id": 7}).encode(),
               ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    (status, _, got), out = fetch(enforcer, canned.port, "dbl")
    assert status == 200 and b"mple.com" not in out, out
    assert json.loads(got) == {"record": "****", "other": keep, "id": 7}, got


def test_mask_keys_of_another_format_in_a_string(enforcer, canned):
    """A string value holding YAML, a properties file, XML or a query whose
    key a path names (a ConfigMap's "app.yaml": "db:\\n  password: ..."):
    the agent's YAML or XML reader finds the value, which $..password does
    not reach inside a string (found by review: passed), where a body in
    such a format is refused. Such a string is masked whole; prose using
    the word is left."""
    cm = {"kind": "ConfigMap", "data": {"app.yaml": "db:\n  host: pg\n  password: hunter2\n",
                                        "app.properties": "db.password=hunter3",
                                        "feed.xml": "<c><email>ada@example.com</email></c>",
                                        "about": "we answer every email"}}
    canned.put("cm", json.dumps(cm).encode(), ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, '{json: ["$..password", "$.customer.email"]}'))
    (status, _, got), out = fetch(enforcer, canned.port, "cm")
    assert status == 200 and b"hunter" not in out and EMAIL not in out, out
    assert json.loads(got)["data"] == {"app.yaml": "****", "app.properties": "****", "feed.xml": "****",
                                       "about": "we answer every email"}, got


def test_mask_html_character_references(enforcer, canned):
    """Pages hide an address from harvesters as character references
    (WordPress's antispambot() in a post's content.rendered, a CMS's
    "ada&#64;example&#46;com"), which a browser or an HTML-to-text reader
    undoes and the detectors did not (found by review). A page is refused;
    a JSON string holding such HTML is masked whole; "&amp;" and a query's
    '&' are left alone."""
    canned.put("page", b"<p>Write to ada&#64;example&#46;com &amp; co</p>", ["Content-Type: text/html"])
    post = {"id": 7, "content": {"rendered": "<p>&#97;&#100;&#97;&#64;example.com</p>"}, "link": "/?p=7&x=1"}
    canned.put("post", json.dumps(post).encode(), ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    (status, _, got), out = fetch(enforcer, canned.port, "page")
    assert status == 502 and b"example&#46;com" not in out, out
    (status, _, got), out = fetch(enforcer, canned.port, "post")
    assert status == 200 and json.loads(got) == {"id": 7, "content": {"rendered": "****"}, "link": "/?p=7&x=1"}, out


def test_mask_card_with_no_break_spaces(enforcer, canned):
    """A card number whose groups are kept on one line by no-break spaces
    (HTML's "&nbsp;", U+00A0 in text and JSON, the narrow one locale
    formatting writes) reads as the card it is, and passed the
    credit_card detector, which knew ' ', '-' and '.' only (found by
    review). Masked where it stands; a page spelling it with "&nbsp;" is
    refused, as other character references are."""
    doc = {"card": "4111\u00a01111\u00a01111\u00a01111", "note": "pay 4111\u202f1111\u202f1111\u202f1111 now"}
    canned.put("json", json.dumps(doc).encode(), ["Content-Type: application/json"])
    canned.put("utf8", json.dumps(doc, ensure_ascii=False).encode(), ["Content-Type: application/json"])
    canned.put("text", "card 4111\u00a01111\u00a01111\u00a01111 on file".encode(),
               ["Content-Type: text/plain; charset=utf-8"])
    canned.put("page", b"<p>card 4111&nbsp;1111&nbsp;1111&nbsp;1111</p>", ["Content-Type: text/html"])
    enforcer.start(mask_policy(canned.port, "{detectors: [credit_card]}"))
    for name in ("json", "utf8"):
        (status, _, got), out = fetch(enforcer, canned.port, name)
        assert status == 200 and json.loads(got) == {"card": "****", "note": "pay **** now"}, (name, out)
    (status, _, got), out = fetch(enforcer, canned.port, "text")
    assert status == 200 and got == b"card **** on file", out
    (status, _, got), out = fetch(enforcer, canned.port, "page")
    assert status == 502 and b"4111" not in out, out


def test_mask_url_encoded_more_than_three_times(enforcer, canned):
    """A value URL-encoded more times than the three rounds the masker maps
    back (a return URL inside a state inside a redirect) went out as it
    came; the agent decodes as many times as it likes (found by review). It
    is looked into further and masked whole when something is there."""
    body = {"next": "/login?r=%2Fcb%3Fs%3Dto%252525253Dada%25252540example.com", "plain": "/a?b=1%25252520"}
    canned.put("deep", json.dumps(body).encode(), ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    (status, _, got), out = fetch(enforcer, canned.port, "deep")
    assert status == 200 and json.loads(got) == {"next": "****", "plain": "/a?b=1%25252520"}, out


def test_mask_charset_the_masker_does_not_read_refused(enforcer, canned):
    """A body labelled UTF-7 is other text to a client that honours the
    label (Python requests' .json() and .text do): "ada+AEA-example.com" is
    ada@example.com and "+-1 415..." a phone number, neither of which the
    detectors saw in the bytes (found by review). Such an answer is a 502;
    UTF-8 and Latin-1 labels are masked as before."""
    doc = '{"email": "ada@example.com", "phone": "+1 415 555 2671"}'
    # "@" as UTF-7 may write it (RFC 2152 leaves it to the encoder), "+" as it must
    utf7 = b'{"email": "ada+AEA-example.com", "phone": "+-1 415 555 2671"}'
    assert utf7.decode("utf-7") == doc
    canned.put("utf7", utf7, ["Content-Type: application/json; charset=utf-7"])
    canned.put("latin1", doc.encode(), ["Content-Type: application/json; charset=ISO-8859-1"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email, phone]}"))
    (status, _, got), out = fetch(enforcer, canned.port, "utf7")
    assert status == 502 and b"AEA" not in out and b"415" not in out, out
    assert "charset" in json.loads(got)["reason"], got
    (status, _, got), out = fetch(enforcer, canned.port, "latin1")
    assert status == 200 and json.loads(got) == {"email": "****", "phone": "****"}, out


def test_mask_charset_the_text_names_refused(enforcer, canned):
    """Text that names its own charset, with no label saying otherwise: an
    XML declaration's encoding="UTF-7" is what libxml2 (lxml, PHP,
    Nokogiri, xmllint) decodes by, and "ada+AEA-example.com" then reads
    ada@example.com, which the detectors did not see; an HTML meta charset
    likewise (found by review: passed unmasked). Refused with 502; a
    declaration of UTF-8 is masked as before."""
    xml7 = b'<?xml version="1.0" encoding="UTF-7"?><c><e>ada+AEA-example.com</e></c>'
    assert xml7.decode("utf-7").endswith("<e>ada@example.com</e></c>")
    canned.put("xml7", xml7, ["Content-Type: application/xml"])
    canned.put("html7", b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-7">'
               b"</head><p>ada+AEA-example.com</p></html>", ["Content-Type: text/html"])
    canned.put("xml8", b'<?xml version="1.0" encoding="UTF-8"?><c><e>ada@example.com</e></c>',
               ["Content-Type: application/xml"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    for name in ("xml7", "html7"):
        (status, _, got), out = fetch(enforcer, canned.port, name)
        assert status == 502 and b"AEA" not in out, (name, out)
        assert "charset" in json.loads(got)["reason"], got
    (status, _, got), out = fetch(enforcer, canned.port, "xml8")
    assert status == 200 and got == b'<?xml version="1.0" encoding="UTF-8"?><c><e>****</e></c>', out


def test_mask_document_in_a_string_that_names_a_charset(enforcer, canned, tmp):
    """A JSON string holding a document that names a charset the masker does
    not read (an XML declaration's encoding="UTF-7", an HTML meta charset,
    CSS @charset) or declares XML entities: the agent that reads the
    document from the string (xmllint, lxml) reads ada@example.com, which
    the detectors did not see (found by review: passed; a text body saying
    so is refused). Such a string is masked whole, the rest of the answer
    is masked as before; a document in UTF-8 is masked in place."""
    xml7 = '<?xml version="1.0" encoding="UTF-7"?><c><e>ada+AEA-example.com</e></c>'
    path = os.path.join(tmp, "u7.xml")
    with open(path, "w") as f:
        f.write(xml7)
    r = subprocess.run(["xmllint", "--encode", "utf-8", path], capture_output=True, check=True)
    assert b"<e>ada@example.com</e>" in r.stdout, r.stdout   # what the agent's reader gets
    doc = {"doc": xml7,
           "page": '<html><head><meta charset="utf-7"></head><p>ada+AEA-example.com</p></html>',
           "css": '@charset "UTF-7"; a::after { content: "ada+AEA-example.com" }',
           "ent": '<!DOCTYPE r [<!ENTITY a "ada@exa">]><r>&a;mple.com</r>',
           "utf8": '<?xml version="1.0" encoding="UTF-8"?><c><e>ada@example.com</e></c>',
           "id": 7}
    canned.put("docs", json.dumps(doc).encode(), ["Content-Type: application/json"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    (status, _, got), out = fetch(enforcer, canned.port, "docs")
    assert status == 200 and b"AEA" not in out and b"ada@" not in out, out
    assert json.loads(got) == {"doc": "****", "page": "****", "css": "****", "ent": "****",
                               "utf8": '<?xml version="1.0" encoding="UTF-8"?><c><e>****</e></c>', "id": 7}, got


def test_mask_xml_entity_declarations_refused(enforcer, canned, tmp):
    """A DOCTYPE's internal subset declaring entities: a reader that expands
    them (xmllint --noent, lxml, PHP, Python's ElementTree) reads
    "ada@exa" + "mple.com" as ada@example.com, which the detectors did not
    see in the pieces (found by review: passed). Refused with 502, parameter
    entities and XHTML too; a DOCTYPE that declares none is masked as text."""
    docs = {
        "xml": (b'<!DOCTYPE r [<!ENTITY a "ada@exa"><!ENTITY b "mple.com">]><r>&a;&b;</r>', "application/xml"),
        "param": (b'<?xml version="1.0"?>\n<!DOCTYPE r [\n<!ENTITY % p "<!ENTITY a \'ada@exa\'>"> %p;\n'
                  b'<!ENTITY b "mple.com">]><r>&a;&b;</r>', "text/xml"),
        "xhtml": (b'<!DOCTYPE html [<!ENTITY a "ada@exa">]><html xmlns="http://www.w3.org/1999/xhtml">'
                  b'<body><p>&a;mple.com</p></body></html>', "application/xhtml+xml"),
    }
    for name, (body, ct) in docs.items():
        path = os.path.join(tmp, name + ".xml")
        with open(path, "wb") as f:
            f.write(body)
        r = subprocess.run(["xmllint", "--noent", path], capture_output=True, check=True)
        assert b"ada@example.com" in r.stdout, (name, r.stdout)   # what the agent's reader would get
        assert EMAIL not in body
        canned.put(name, body, ["Content-Type: " + ct])
    canned.put("plain", b'<!DOCTYPE r [<!ELEMENT r ANY>]><r>ada@example.com &amp; co</r>',
               ["Content-Type: application/xml"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    for name in docs:
        (status, _, got), out = fetch(enforcer, canned.port, name)
        assert status == 502 and b"ada@exa" not in out and b"mple.com" not in out, (name, out)
        assert "entities" in json.loads(got)["reason"], got
    (status, _, got), out = fetch(enforcer, canned.port, "plain")
    assert status == 200 and got == b'<!DOCTYPE r [<!ELEMENT r ANY>]><r>**** &amp; co</r>', out


# ---- 5. Kubernetes ---------------------------------------------------------------

def k8s_policy(port, tok):
    return f"""
    version: 1
    agents: [{{name: {AGENT}}}]
    targets:
      - name: cluster
        protocol: kubernetes
        address: 127.0.0.1:{port}
        upstream: {{server_name: kubernetes.default, bearer_token_file: {tok}}}
    roles:
      - name: pod-reader
        rules:
          - target: cluster
            allow: {{verbs: [get, list, delete], resources: [pods], namespaces: [default]}}
    bindings: [{{role: pod-reader, agents: [{AGENT}]}}]
    """


def kreq(method, target, extra=""):
    return crlf(f"{method} {target} HTTP/1.1⏎Host: kubernetes.default⏎{extra}⏎")


# (request, expected status): the apiserver's reading (requestinfo.go,
# url.ParseQuery, Convert_Slice_string_To_bool) decides list vs watch,
# delete vs deletecollection and what a subresource is. Allowed: get, list,
# delete of pods in "default". Every 200 must be forwarded as sent (so the
# apiserver judges what we judged).
K8S = [
    # watch is any first "watch" value but "0" and "false" (any case), the key after decoding
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=1"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch="), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=yes"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=TRUE"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?w%61tch=true"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?%77atch=1"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=+false"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=false%20"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?a=1&&watch=true&b"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=false&watch=true"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=true&watch=false"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=true;x=1"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?x=%zz&watch=true"), 400),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=fal%C5%BFe"), 403),   # U+017F folds to 's' in Go
    (kreq("HEAD", "/api/v1/namespaces/default/pods?watch=true"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=false"), 200),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=FaLsE"), 200),
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=0"), 200),
    (kreq("GET", "/api/v1/namespaces/default/pods?Watch=true"), 200),          # not the key "watch"
    (kreq("GET", "/api/v1/namespaces/default/pods?watch%00=true"), 200),
    # a name makes it a get; the deprecated watch path is watch whatever the method
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1?watch=true"), 200),
    (kreq("GET", "/api/v1/watch/namespaces/default/pods/web-1"), 403),
    (kreq("DELETE", "/api/v1/watch/namespaces/default/pods/web-1"), 403),
    (kreq("GET", "/api/v1/proxy/namespaces/default/pods/web-1"), 403),
    # delete without a name is deletecollection, a fieldSelector naming one does not change that
    (kreq("DELETE", "/api/v1/namespaces/default/pods/web-1"), 200),
    (kreq("DELETE", "/api/v1/namespaces/default/pods"), 403),
    (kreq("DELETE", "/api/v1/namespaces/default/pods/"), 403),
    (kreq("DELETE", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1"), 403),
    # subresources are not the resource; exec over plain POST is still create
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1/status"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1/proxy/admin"), 403),
    (kreq("POST", "/api/v1/namespaces/default/pods/web-1/exec?command=sh", "Content-Length: 0⏎"), 403),
    (kreq("POST", "/api/v1/namespaces/default/pods/web-1/exec?command=sh",
          "Connection: Upgrade⏎Upgrade: SPDY/3.1⏎Content-Length: 0⏎"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1/portforward", "Connection: Upgrade⏎Upgrade: websocket⏎"),
     403),
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1/ephemeralcontainers"), 403),
    # an upgrade where the apiserver would not see one
    (kreq("GET", "/api/v1/namespaces/default/pods?watch=false", "Connection: Upgrade⏎Upgrade: websocket⏎"), 403),
    # the namespace object and cluster scope are not "pods in default"
    (kreq("GET", "/api/v1/namespaces/default"), 403),
    (kreq("GET", "/api/v1/pods"), 403),
    (kreq("GET", "/api/v1/pods?fieldSelector=metadata.namespace%3Ddefault"), 403),
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1/../../../kube-system/pods"), 400),
    (kreq("GET", "/api/v1/namespaces/kube-%73ystem/pods"), 403),
    (kreq("GET", "/api/v1/namespaces/Default/pods"), 403),
    (kreq("GET", "/apis//v1/namespaces/default/pods"), 400),
    (kreq("GET", "/api/v1/namespaces/default/pods%2Fweb-1%2Fexec"), 400),
    (kreq("GET", "/api/v1/namespaces/default/pods/web-1%3Bexec"), 400),
    (kreq("OPTIONS", "/api/v1/namespaces/default/pods"), 403),
    (kreq("get", "/api/v1/namespaces/default/pods"), 400),
    # other groups' "pods" are not core pods
    (kreq("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"), 403),
    (kreq("GET", "/apis/v1/namespaces/default/pods"), 403),
]


def test_k8s_attribution_tricks(enforcer, rec, token):
    enforcer.start(k8s_policy(rec.port, token))
    outs = raw_each(enforcer, rec.port, [req for req, _ in K8S])
    assert len(outs) == len(K8S), outs
    for (req, want), out in zip(K8S, outs):
        rs, _ = responses(out)
        assert rs and rs[0][0] == want, (req.split(b"\r\n")[0], out)
    # the upstream connections, in the order the requests were sent: one for
    # each request allowed, holding that request as sent; none for the others
    sent = [req.split(b"\r\n")[0] for req, want in K8S if want == 200]
    assert wait_for(lambda: len([g for g in rec.received() if g]) == len(sent))
    time.sleep(0.3)   # a denied request that leaked would come after the last allowed one
    got = [g for g in rec.received() if g]
    assert len(got) == len(sent), (sent, got)
    for line, g in zip(sent, got):
        assert g.startswith(line + b"\r\n"), (line, g)
        assert b"\r\nImpersonate-User: " + AGENT.encode() + b"\r\n" in g, (line, g)


def test_k8s_encoded_namespace_forwarded_as_judged(enforcer, rec, token):
    """A percent-encoded namespace is judged decoded, and forwarded decoded:
    the apiserver never sees a form we did not judge."""
    enforcer.start(k8s_policy(rec.port, token))
    out = raw(enforcer, rec.port, kreq("GET", "/api/v1/namespaces/d%65fault/pod%73?fieldSelector=a%3Db"))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all().startswith(b"GET /api/v1/namespaces/default/pods?fieldSelector=a%3Db HTTP/1.1\r\n")


def test_k8s_identity_headers_any_case(enforcer, rec, token):
    enforcer.start(k8s_policy(rec.port, token))
    hdrs = ["impersonate-user: admin", "IMPERSONATE-GROUP: system:masters", "Impersonate-Uid: 0",
            "impersonate-extra-scopes: all", "x-remote-user: admin", "X-REMOTE-GROUP: system:masters",
            "x-remote-extra-scopes: x", "authorization: Bearer agent-own", "AUTHORIZATION: Bearer two",
            "X-Forwarded-User: admin"]
    out = raw(enforcer, rec.port, kreq("GET", "/api/v1/namespaces/default/pods", "".join(h + "⏎" for h in hdrs)))
    assert [r[0] for r in responses(out)[0]] == [200], out
    assert rec.all() == (b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: kubernetes.default\r\n"
                         b"Accept-Encoding: identity\r\n"
                         b"Impersonate-User: " + AGENT.encode() + b"\r\n"
                         b"Authorization: Bearer " + SECRET.encode() + b"\r\n\r\n"), rec.all()


def test_mask_conditionals_not_an_oracle(enforcer, servers, tmp):
    """On a masked route the agent's If-None-Match / If-Match / If-Modified-Since
    never reach the upstream: a 304 to a guessed (content-hash) ETag would say
    what the unmasked body is. nginx's ETag is its file's mtime and size."""
    port, d = nginx(tmp, servers.procs)
    path = os.path.join(d, "www", "v1", "inv")
    with open(path, "w") as f:
        f.write(json.dumps({"customer": {"email": "ada@example.com"}}) + "\n")
    st = os.stat(path)
    etag = '"%x-%x"' % (int(st.st_mtime), st.st_size)
    since = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(st.st_mtime + 60))
    enforcer.start(mask_policy(port, '{json: ["$.customer.email"]}'))
    for cond in (f"If-None-Match: {etag}", f"If-Modified-Since: {since}"):
        out = raw(enforcer, port, crlf(f"GET /v1/inv HTTP/1.1⏎Host: 127.0.0.1:{port}⏎{cond}⏎⏎"))
        rs, _ = responses(out)
        assert rs and rs[0][0] == 200 and b"****" in out and b"ada@" not in out, (cond, out)


def test_mask_escapes_in_response_fields_that_are_not_json(enforcer, canned):
    """A response field that is not a JSON object or array was scanned as
    written: its escapes or character references ("ada\\u0040example.com",
    a JSON string, a title="ada&#64;example.com" parameter) spelled an
    address the detectors did not see, where the same text as a body is
    refused (found by review). Such a field goes masked whole."""
    canned.put("hdr", b"ok", ["Content-Type: text/plain",
                               'X-Owner: "ada\\u0040example.com"',
                               'Link: </u/7>; rel="author"; title="ada&#64;example&#46;com"',
                               "X-Keep: plain"])
    enforcer.start(mask_policy(canned.port, "{detectors: [email]}"))
    out = raw(enforcer, canned.port, crlf("GET /v1/r/hdr HTTP/1.1⏎Host: api.internal⏎⏎"))
    assert b"u0040" not in out and b"&#64;" not in out, out
    assert b"X-Keep: plain\r\n" in out, out
