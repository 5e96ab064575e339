# SPDX-License-Identifier: Apache-2.0
"""The http module's edges: an upstream certificate that does not verify, a
masked body over the masking bound, upstream keep-alive connections that
close, a request head that never ends, HTTP/1.0 keep-alive, a WebSocket
that goes through, and X-Forwarded-For. Real nginx, raw upstreams written
here, and clients inside the agent cgroup through the kernel redirect."""
import base64
import gzip
import json
import os
import re
import subprocess
import textwrap
import threading
import time


from conftest import AG, PY, Proc, free_port, wait_port
from test_http import AGENT, crlf, curl, http_events, make_ca, policy, raw, responses  # noqa: F401
from test_http import rec  # noqa: F401  (fixture)


def client(enforcer, code, timeout=40):
    """Python code run as the agent; it prints one JSON value."""
    r = enforcer.py(AGENT, code, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


NGINX = """
daemon off;
user root root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format c '$connection $request $status';
    access_log {d}/access.log c;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout {keepalive};
    types {{ application/json json; image/gif gif; }}
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {tls}
        root {d}/www;
        location /v1/gz/ {{ gzip on; gzip_types application/json; gzip_min_length 0; }}
        location /v1/upload {{ client_max_body_size 0; return 200 "ok $content_length\\n"; }}
        location / {{ }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp, procs, keepalive="75s", tls=None):
        self.d = os.path.join(tmp, f"nginx-{time.time_ns()}")
        self.www = os.path.join(self.d, "www")
        os.makedirs(os.path.join(self.www, "v1", "gz"))
        self.put("v1/inv.json", json.dumps({"id": 42, "email": "ada@example.com"}) + "\n")
        self.port = free_port()
        conf = os.path.join(self.d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX.format(d=self.d, port=self.port, keepalive=keepalive, ssl=" ssl" if tls else "",
                                 tls=f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else ""))
        procs.append(Proc(["nginx", "-c", conf, "-p", self.d], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL))
        wait_port("127.0.0.1", self.port)

    def put(self, rel, data):
        with open(os.path.join(self.www, rel), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)

    def log(self):
        """(connection number, request line, status) per request nginx served."""
        try:
            with open(os.path.join(self.d, "access.log")) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            conn, rest = line.split(" ", 1)
            req, status = rest.rsplit(" ", 1)
            out.append((int(conn), req, int(status)))
        return out


# ---- 1. upstream certificate verification ------------------------------------

def self_signed(tmp, cn="api.internal"):
    key, crt = os.path.join(tmp, "self.key"), os.path.join(tmp, "self.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "1", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=DNS:{cn}"], check=True, capture_output=True)
    return crt, key


def test_upstream_cert_not_verified_is_502_and_audited(enforcer, servers, tmp):
    crt, key = self_signed(tmp)
    ca, _, _ = make_ca(tmp, "trusted")          # the target trusts this CA, not the self-signed cert
    ng = Nginx(tmp, servers.procs, tls=(crt, key))
    front = free_port()
    enforcer.start(policy(front, upstream=f"address: 127.0.0.1:{ng.port}, tls: verify-full, ca_file: {ca}, "
                                          "server_name: api.internal"))
    r = curl(enforcer, "-H", "Host: api.internal", "-w", "\n%{http_code}", f"http://127.0.0.1:{front}/v1/invoices/42")
    assert r.returncode == 0, r.stderr
    body, code = r.stdout.rsplit("\n", 1)
    assert code == "502", r.stdout
    err = json.loads(body)
    assert err["error"] == "agentgate: upstream error"
    assert err["reason"].startswith("the upstream's TLS certificate failed verification: "), err
    assert "self-signed" in err["reason"] or "self signed" in err["reason"], err
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002)
    assert ev and ev["http_response"]["code"] == 502
    assert ev["status_detail"] == err["reason"] and ev["http_request"]["url"]["path"] == "/v1/invoices/42"
    # nothing reached nginx in the clear (it would log the plain request as a 400)
    time.sleep(0.2)
    assert ng.log() == []
    # a pipelined second request on the same connection is not sent either
    out = raw(enforcer, front, crlf("GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎⏎"
                                    "GET /v1/invoices/2 HTTP/1.1⏎Host: api.internal⏎⏎"))
    rs, rest = responses(out)
    assert [x[0] for x in rs] == [502] and rs[0][1]["connection"] == "close", out
    assert rest == b"<EOF>"
    # the handshake fails before the request is read: it is still answered
    out = raw(enforcer, front, b"G", crlf("ET /v1/invoices/3 HTTP/1.1⏎Host: api.internal⏎⏎"), wait=0.5)
    rs, rest = responses(out)
    assert [x[0] for x in rs] == [502] and "failed verification" in json.loads(rs[0][2])["reason"], out
    assert rest == b"<EOF>"
    assert ng.log() == []


# ---- 2. a masked body over the masking bound -----------------------------------

MASKED = """
version: 1
agents: [{{name: {agent}}}]
targets: [{{name: api, protocol: http, address: 127.0.0.1:{port}, upstream: {{}}}}]
roles:
  - name: reader
    rules:
      - target: api
        allow: {{http: ["GET /v1/**"]}}
        mask: {{json: ["$..email"]}}
bindings: [{{role: reader, agents: [{agent}]}}]
"""


def big_json(n_bytes):
    """A JSON array over n_bytes whose every element holds an email to mask,
    padded with random base64 (gzip shrinks it by a quarter at most)."""
    items, size = [], 0
    while size < n_bytes:
        it = json.dumps({"email": "ada@example.com", "pad": base64.b64encode(os.urandom(768)).decode()})
        items.append(it)
        size += len(it) + 1
    return "[" + ",".join(items) + "]"


def test_masked_body_over_bound_is_502(enforcer, servers, tmp):
    ng = Nginx(tmp, servers.procs)
    ng.put("v1/big.json", big_json(9 << 20))       # Content-Length over the bound: refused on the head
    ng.put("v1/gz/big.json", big_json(14 << 20))   # gzip (> 8 MiB still), chunked: crossed while streaming
    ng.put("v1/gz/small.json", big_json(1 << 20))
    enforcer.start(MASKED.format(agent=AGENT, port=ng.port))
    for path in ("/v1/big.json", "/v1/gz/big.json"):
        out = os.path.join(tmp, "out")
        r = curl(enforcer, "-o", out, "-D", "-", "--compressed", f"http://127.0.0.1:{ng.port}{path}")
        assert r.returncode == 0, (path, r.stderr)
        with open(out, "rb") as f:
            got = f.read()
        assert r.stdout.startswith("HTTP/1.1 502 "), (path, r.stdout)
        assert "connection: close" in r.stdout.lower(), (path, r.stdout)
        err = json.loads(got)
        assert err["reason"] == "the response body is larger than the masking bound (8 MiB) and cannot be masked"
        assert b"ada@example.com" not in got
    # a body under the bound on the same route is masked as usual
    r = curl(enforcer, f"http://127.0.0.1:{ng.port}/v1/gz/small.json")
    assert r.returncode == 0 and r.stdout.startswith('[{"email": "****"') or r.stdout.startswith('[{"email":"****"'), \
        r.stdout[:200]
    assert "ada@example.com" not in r.stdout
    evs = [e for e in http_events(enforcer) if e["http_response"]["code"] == 502]
    assert len(evs) == 2 and all("masking bound" in e["status_detail"] for e in evs)
    assert "ada@example.com" not in json.dumps(enforcer.events())


# ---- 3. upstream keep-alive -----------------------------------------------------

KEEPALIVE_CLIENT = r"""
import json, socket, time
s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
outs = []
for i, req in enumerate({reqs!r}):
    if i:
        time.sleep({pause})
    s.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for l in head.split(b"\r\n")[1:]:
        if l.lower().startswith(b"content-length:"):
            n = int(l.split(b":")[1])
    while len(body) < n:
        d = s.recv(65536)
        if not d:
            break
        body += d
    outs.append([head.split(b"\r\n")[0].decode() if head else "<EOF>", body[:n].decode(errors="replace")])
print(json.dumps(outs))
"""


def test_keepalive_upstream_closed_idle_connection_dials_again(enforcer, servers, tmp):
    ng = Nginx(tmp, servers.procs, keepalive="1s")
    enforcer.start(policy(ng.port, upstream="", rules='"GET /v1/**", "POST /v1/upload"'))
    get = "GET /v1/inv.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    post = "POST /v1/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
    outs = client(enforcer, KEEPALIVE_CLIENT.format(port=ng.port, reqs=[get, get, post], pause=2))
    assert [o[0] for o in outs] == ["HTTP/1.1 200 OK"] * 3, outs
    assert json.loads(outs[1][1])["id"] == 42 and outs[2][1] == "ok 5\n"
    log = ng.log()
    assert [x[1] for x in log] == ["GET /v1/inv.json HTTP/1.1", "GET /v1/inv.json HTTP/1.1",
                                   "POST /v1/upload HTTP/1.1"], log
    # three upstream connections: nginx closed each after 1 s idle
    assert len({x[0] for x in log}) == 3, log


def test_half_close_while_upstream_redials_still_answered(enforcer, servers, tmp):
    """A request followed by the agent's half-close, arriving when the
    upstream leg is not up (here: nginx closed the idle keep-alive
    connection, so a new one is dialled): answered, not dropped without an
    answer or an event (review, stop 34: the agent read EOF, nginx saw no
    second request)."""
    ng = Nginx(tmp, servers.procs, keepalive="1s")
    enforcer.start(policy(ng.port, upstream="", rules='"GET /v1/**"'))
    get = "GET /v1/inv.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    code = KEEPALIVE_CLIENT.format(port=ng.port, reqs=[get, get], pause=2).replace(
        "    s.sendall(req.encode())\n",
        "    s.sendall(req.encode())\n    if i == 1:\n        s.shutdown(socket.SHUT_WR)\n")
    assert "SHUT_WR" in code
    outs = client(enforcer, code)
    assert [o[0] for o in outs] == ["HTTP/1.1 200 OK"] * 2, outs
    assert json.loads(outs[1][1])["id"] == 42, outs
    assert [x[1] for x in ng.log()] == ["GET /v1/inv.json HTTP/1.1"] * 2, ng.log()


# A raw upstream that answers the first request of each connection and, on
# request number CLOSE_ON of a connection, reads it and closes without an
# answer (the keep-alive race: the upstream's timeout ran out as the request
# went). Records "conn-<n> METHOD TARGET" lines.
CLOSER = textwrap.dedent(r"""
    import sys
    from rawhttp import heads, listen, serve_forever
    port, logf, close_on = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    s = listen(port, 16)
    log = open(logf, "a", buffering=1)
    def serve(c, n):
        k = 0
        for head in heads(c):
            line = head.split(b"\r\n")[0].decode()
            k += 1
            log.write("conn-%d %s\n" % (n, " ".join(line.split()[:2])))
            if k == close_on:
                return
            body = b"answer %d.%d\n" % (n, k)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    serve_forever(s, serve, errors=())
""")


def closer(tmp, procs, close_on):
    port, logf = free_port(), os.path.join(tmp, f"closer-{time.time_ns()}.log")
    procs.append(Proc([PY, "-c", CLOSER, str(port), logf, str(close_on)]))
    wait_port("127.0.0.1", port)
    return port, lambda: open(logf).read().splitlines() if os.path.exists(logf) else []


def test_keepalive_race_resends_safe_request_once(enforcer, servers, tmp):
    port, log = closer(tmp, servers.procs, close_on=2)
    enforcer.start(policy(port, upstream="", rules='"GET /v1/**", "POST /v1/**"'))
    a = "GET /v1/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    b = "GET /v1/b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    outs = client(enforcer, KEEPALIVE_CLIENT.format(port=port, reqs=[a, b], pause=0.3))
    assert [o[0] for o in outs] == ["HTTP/1.1 200 OK"] * 2, outs
    # (connection numbers count wait_port's probe too)
    n0, n1 = (int(o[1].split()[1].split(".")[0]) for o in outs)
    assert outs[0][1] == f"answer {n0}.1\n" and outs[1][1] == f"answer {n1}.1\n" and n1 > n0, outs
    assert log() == [f"conn-{n0} GET /v1/a", f"conn-{n0} GET /v1/b", f"conn-{n1} GET /v1/b"]
    # the audit trail says which request went out twice
    assert enforcer.wait_event(lambda e: e.get("class_uid") == 4002 and
                               e["http_request"]["url"]["path"] == "/v1/b")
    evs = {e["http_request"]["url"]["path"]: e for e in enforcer.events() if e.get("class_uid") == 4002}
    assert evs["/v1/b"]["unmapped"].get("retried") is True and "retried" not in evs["/v1/a"]["unmapped"], evs


def test_keepalive_race_never_resends_a_body(enforcer, servers, tmp):
    port, log = closer(tmp, servers.procs, close_on=2)
    enforcer.start(policy(port, upstream="", rules='"GET /v1/**", "POST /v1/**"'))
    a = "GET /v1/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    b = "POST /v1/b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi"
    outs = client(enforcer, KEEPALIVE_CLIENT.format(port=port, reqs=[a, b], pause=0.3))
    assert outs[0][0] == "HTTP/1.1 200 OK", outs
    n0 = int(outs[0][1].split()[1].split(".")[0])
    assert outs[1][0] == "HTTP/1.1 502 Bad Gateway", outs
    assert json.loads(outs[1][1])["reason"] == "the upstream closed the connection"
    time.sleep(0.3)
    assert log() == [f"conn-{n0} GET /v1/a", f"conn-{n0} POST /v1/b"]


def test_new_connection_that_closes_is_not_retried(enforcer, servers, tmp):
    port, log = closer(tmp, servers.procs, close_on=1)
    enforcer.start(policy(port, upstream="", rules='"GET /v1/**"'))
    outs = client(enforcer, KEEPALIVE_CLIENT.format(port=port, reqs=["GET /v1/a HTTP/1.1\r\nHost: x\r\n\r\n"],
                                                    pause=0))
    assert outs[0][0] == "HTTP/1.1 502 Bad Gateway", outs
    time.sleep(0.3)
    assert len(log()) == 1 and log()[0].endswith(" GET /v1/a"), log()


# ---- 4. a request head that never ends --------------------------------------------

SLOW_CLIENT = r"""
import json, socket, time
s = socket.create_connection(("127.0.0.1", {port}), timeout=30)
t0 = time.time()
parts = {parts!r}
end = "open"
try:
    for p in parts:
        s.sendall(p.encode())
        time.sleep({gap})
    s.settimeout(25)
    d = s.recv(65536)
    end = "eof" if not d else "data:" + d[:60].decode(errors="replace")
except ConnectionResetError:
    end = "reset"
except BrokenPipeError:
    end = "pipe"
except socket.timeout:
    end = "timeout"
print(json.dumps([end, time.time() - t0]))
"""


# The head timeout (10 s) shortened to 3 s by the test knob: the same clock.
HEAD_MS = {"AGENTGATE_HTTP_HEAD_MS": "3000"}


def test_partial_head_closed_after_timeout(enforcer, rec):
    enforcer.start(policy(rec.port), env=HEAD_MS)
    # sends part of a head and stalls
    end, took = client(enforcer, SLOW_CLIENT.format(port=rec.port, parts=["GET /v1/invoices/1 HTTP/1.1\r\nHo"],
                                                    gap=0), timeout=60)
    assert end in ("eof", "reset"), end
    assert 2.8 <= took <= 6, took
    assert rec.all() == b""
    # trickling a byte a second does not extend it: the clock runs from the first byte
    head = "GET /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\nX-Slow: " + "a" * 30
    end, took = client(enforcer, SLOW_CLIENT.format(port=rec.port, parts=list(head[:40]), gap=0.5),
                       timeout=60)
    # (the first 40 bytes one by one, half a second apart: the close comes mid-trickle)
    assert end in ("eof", "reset", "pipe"), end
    assert took < 8, took
    assert rec.all() == b""
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and "too little in time" in json.dumps(e))
    assert ev, [e for e in enforcer.events() if e.get("class_uid") == 4001]


def test_idle_keepalive_is_not_a_partial_head(enforcer, rec):
    enforcer.start(policy(rec.port), env=HEAD_MS)
    req = "GET /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\n\r\n"
    outs = client(enforcer, KEEPALIVE_CLIENT.format(port=rec.port, reqs=[req, req], pause=4), timeout=60)
    assert [o[0] for o in outs] == ["HTTP/1.1 200 OK"] * 2, outs


def test_head_over_bound_is_400(enforcer, rec):
    enforcer.start(policy(rec.port))
    out = raw(enforcer, rec.port, crlf("GET /v1/invoices/1 HTTP/1.1⏎Host: api.internal⏎X-Big: " + "a" * 17000
                                       + "⏎⏎"))
    rs, rest = responses(out)
    assert [x[0] for x in rs] == [400] and "too l" in json.loads(rs[0][2])["reason"], out[:300]
    assert rec.all() == b""


# ---- 5. HTTP/1.0 keep-alive --------------------------------------------------------

def test_http10_keepalive_gets_close_and_no_chunked(enforcer, servers, tmp):
    ng = Nginx(tmp, servers.procs)
    doc = json.dumps({"items": list(range(2000))}) + "\n"
    ng.put("v1/gz/doc.json", doc)
    enforcer.start(policy(ng.port, upstream="", rules='"GET /v1/**"'))
    # nginx gzips for the HTTP/1.1 request it gets, and so answers chunked
    out = raw(enforcer, ng.port, b"GET /v1/gz/doc.json HTTP/1.0\r\nConnection: keep-alive\r\n"
                                 b"Accept-Encoding: gzip\r\n\r\n")
    assert out.endswith(b"<EOF>"), out[-100:]
    head, _, body = out[:-5].partition(b"\r\n\r\n")
    lines = [l.lower() for l in head.split(b"\r\n")]
    assert lines[0].startswith(b"http/1.1 200"), head
    assert b"connection: close" in lines and b"content-encoding: gzip" in lines, head
    assert not any(l.startswith(b"transfer-encoding") for l in lines), head
    assert gzip.decompress(body).decode() == doc
    # and the same for a denial: Connection: close, then the close
    out = raw(enforcer, ng.port, b"DELETE /v1/gz/doc.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    rs, rest = responses(out)
    assert [x[0] for x in rs] == [403] and rs[0][1]["connection"] == "close" and rest == b"<EOF>", out
    assert [x[1] for x in ng.log()] == ["GET /v1/gz/doc.json HTTP/1.1"]


# ---- 6. WebSocket --------------------------------------------------------------------

WS_UPSTREAM = textwrap.dedent(r"""
    import base64, hashlib, struct, sys, time
    from rawhttp import listen, read_head, serve_forever
    port, logf = int(sys.argv[1]), sys.argv[2]
    log = open(logf, "a", buffering=1)
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    class Conn:
        def __init__(self, c):
            self.c, self.buf = c, b""
        def need(self, n):
            while len(self.buf) < n:
                d = self.c.recv(65536)
                if not d:
                    raise EOFError
                self.buf += d
            out, self.buf = self.buf[:n], self.buf[n:]
            return out
        def head(self):
            h, self.buf = read_head(self.c, self.buf)
            if h is None:
                raise EOFError
            return h.decode()
        def frame(self):
            b0, b1 = self.need(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.need(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.need(8))[0]
            mask = self.need(4) if b1 & 0x80 else bytes(4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(self.need(n)))
            return b0 & 0x0F, bool(b1 & 0x80), data
    def frame(op, data):
        n = len(data)
        h = bytes([0x80 | op])
        h += bytes([n]) if n < 126 else (bytes([126]) + struct.pack("!H", n) if n < 65536
                                         else bytes([127]) + struct.pack("!Q", n))
        return h + data
    def serve(c, _):
        k = Conn(c)
        head = k.head()
        lines = head.split("\r\n")
        hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        log.write("head %s %s\n" % (lines[0], hdrs.get("upgrade", "-")))
        if hdrs.get("upgrade", "").lower() != "websocket":
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        path = lines[0].split(" ")[1]
        if path == "/ws-bare":     # a 101 and nothing else: a raw tunnel
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\nraw tunnel")
            return
        if path == "/ws-wrong":    # an accept for another key
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            return
        acc = base64.b64encode(hashlib.sha1(hdrs["sec-websocket-key"].encode() + GUID).digest())
        if path == "/ws-reflect":  # the request's credential, echoed in frames (split across two)
            log.write("extensions %s\n" % hdrs.get("sec-websocket-extensions", "-"))
            auth = hdrs.get("authorization", "-").encode()
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n" + frame(1, b"you sent " + auth)[:25])
            time.sleep(0.2)
            c.sendall(frame(1, b"you sent " + auth)[25:] + frame(8, b"\x03\xe8"))
            return
        if path == "/ws-deflate":  # an extension nobody offered
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
                      b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n" + frame(1, b"compressed"))
            return
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n" + frame(1, b"hello from upstream"))
        while True:
            op, masked, data = k.frame()
            log.write("frame op=%d masked=%d len=%d\n" % (op, masked, len(data)))
            if op == 8:
                c.sendall(frame(8, data))
                return
            c.sendall(frame(op, b"echo:" + data))
    serve_forever(listen(port, 16), serve, errors=(EOFError, OSError, KeyError))
""")

WS_CLIENT = r"""
import base64, hashlib, json, os, socket, struct
s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET {path} HTTP/1.1\r\nHost: api.internal\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % key).encode())
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        d = s.recv(65536)
        if not d:
            raise EOFError
        buf += d
    out, buf = buf[:n], buf[n:]
    return out
while b"\r\n\r\n" not in buf:
    d = s.recv(65536)
    if not d:
        break
    buf += d
head, _, buf = buf.partition(b"\r\n\r\n")
status = head.split(b"\r\n")[0].decode()
res = {{"status": status}}
if " 101 " in status:
    want = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    res["accept_ok"] = b"sec-websocket-accept: " + want.lower() in head.lower()
    def send(op, data):
        m = os.urandom(4)
        n = len(data)
        h = bytes([0x80 | op])
        h += bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536
                                                else bytes([0x80 | 127]) + struct.pack("!Q", n))
        s.sendall(h + m + bytes(x ^ m[i % 4] for i, x in enumerate(data)))
    def recv():
        b0, b1 = need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", need(8))[0]
        return b0 & 0x0F, need(n)
    got = [recv()]
    send(1, b"ping 1")
    got.append(recv())
    big = bytes(range(256)) * 300
    send(2, big)
    op, data = recv()
    got.append((op, data == b"echo:" + big))
    send(8, b"\x03\xe8bye")
    got.append(recv())
    res["frames"] = [[op, d.decode(errors="replace") if isinstance(d, bytes) else d] for op, d in got]
else:
    n = 0
    for l in head.split(b"\r\n")[1:]:
        if l.lower().startswith(b"content-length:"):
            n = int(l.split(b":")[1])
    res["body"] = (buf + (need(n - len(buf)) if n > len(buf) else b""))[:n].decode()
print(json.dumps(res))
"""


def test_websocket_101_must_answer_the_upgrade(enforcer, servers, tmp):
    """A 101 was trusted on its status: from an endpoint whose status the agent
    can steer, a bare 101 made the connection a tunnel no rule judges (review,
    stop 27). Its Upgrade must be the protocol asked for and, for WebSocket,
    Sec-WebSocket-Accept the key's; otherwise 502 and nothing relayed."""
    port, logf = free_port(), os.path.join(tmp, "ws.log")
    servers.procs.append(Proc([PY, "-c", WS_UPSTREAM, str(port), logf]))
    wait_port("127.0.0.1", port)
    enforcer.start(policy(port, rules='"UPGRADE /ws-bare", "UPGRADE /ws-wrong"'))
    for path in ("/ws-bare", "/ws-wrong"):
        res = client(enforcer, WS_CLIENT.format(port=port, path=path))
        assert res["status"].startswith("HTTP/1.1 502"), (path, res)
        assert "not the upgrade asked for" in res["body"] and "raw tunnel" not in res["body"], (path, res)


def test_websocket_allowed_frames_both_ways(enforcer, servers, tmp):
    port, logf = free_port(), os.path.join(tmp, "ws.log")
    servers.procs.append(Proc([PY, "-c", WS_UPSTREAM, str(port), logf]))
    wait_port("127.0.0.1", port)
    enforcer.start(policy(port, rules='"UPGRADE /ws", "GET /v1/**"'))
    res = client(enforcer, WS_CLIENT.format(port=port, path="/ws"))
    assert res["status"] == "HTTP/1.1 101 Switching Protocols" and res["accept_ok"], res
    assert res["frames"] == [[1, "hello from upstream"], [1, "echo:ping 1"], [2, True], [8, "\u0003\ufffdbye"]], res
    with open(logf) as f:
        log = f.read().splitlines()
    assert log[0] == "head GET /ws HTTP/1.1 websocket", log
    assert log[1:] == ["frame op=1 masked=1 len=6", "frame op=2 masked=1 len=76800", "frame op=8 masked=1 len=5"]
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002 and e["http_request"]["url"]["path"] == "/ws")
    assert ev and ev["http_response"]["code"] == 101 and ev["disposition"] == "Allowed"
    # a route without an UPGRADE rule: 403, nothing upstream
    res = client(enforcer, WS_CLIENT.format(port=port, path="/v1/chat"))
    assert res["status"].startswith("HTTP/1.1 403"), res
    assert "UPGRADE" in json.loads(res["body"])["reason"]
    with open(logf) as f:
        assert len(f.read().splitlines()) == 4



WS_READ_ALL = r"""
import base64, json, os, socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET {path} HTTP/1.1\r\nHost: api.internal\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
           "Sec-WebSocket-Key: %s\r\n\r\n" % key).encode())
buf = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
print(json.dumps({{"raw": buf.decode("latin-1")}}))
"""


def test_websocket_frames_searched_for_the_injected_credential(enforcer, servers, tmp):
    """The target's credential goes upstream on the upgrade request; an
    upstream that echoes it inside the WebSocket (a debug endpoint, an
    error frame) handed it to the agent, the tunnel's bytes being relayed
    as they were (review, stop 34). They are searched like an answer's body
    (starred, lengths kept, also across reads), and no compression is
    negotiated on such a target: the agent's permessage-deflate offer is
    not forwarded, and a 101 that takes an extension anyway is a 502."""
    port, logf = free_port(), os.path.join(tmp, "ws.log")
    servers.procs.append(Proc([PY, "-c", WS_UPSTREAM, str(port), logf]))
    wait_port("127.0.0.1", port)
    tok = os.path.join(tmp, "tok")
    with open(tok, "w") as f:
        f.write("ws-secret-token-0123456789\n")
    os.chmod(tok, 0o600)
    enforcer.start(policy(port, rules='"UPGRADE /ws-reflect", "UPGRADE /ws-deflate"',
                          upstream=f"bearer_token_file: {tok}"))
    res = client(enforcer, WS_READ_ALL.format(port=port, path="/ws-reflect"))
    raw = res["raw"]
    assert raw.startswith("HTTP/1.1 101"), raw
    assert "ws-secret-token" not in raw and "you sent Bearer " + "*" * 26 in raw, raw
    with open(logf) as f:
        assert "extensions -" in f.read().splitlines(), "the extension offer must not go upstream"
    res = client(enforcer, WS_READ_ALL.format(port=port, path="/ws-deflate"))
    assert res["raw"].startswith("HTTP/1.1 502") and "compressed" not in res["raw"], res


# ---- 7. X-Forwarded-For ---------------------------------------------------------------

def test_forwarded_for_truthful_when_configured(enforcer, rec):
    req = crlf("GET /v1/invoices/42 HTTP/1.1⏎Host: api.internal⏎X-Forwarded-For: 6.6.6.6⏎"
               "X-Forwarded-Host: evil⏎Forwarded: for=6.6.6.6⏎⏎")
    enforcer.start(policy(rec.port, upstream="server_name: api.internal, forwarded_for: true"))
    out = raw(enforcer, rec.port, req)
    assert responses(out)[0][0][0] == 200
    # the agent dials 127.0.0.1, so that is its address as the enforcer sees it
    assert rec.all() == (b"GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\n"
                         b"X-Forwarded-For: 127.0.0.1\r\n\r\n")
    enforcer.stop()
    rec.reset()
    enforcer.start(policy(rec.port, upstream="server_name: api.internal"))
    out = raw(enforcer, rec.port, req)
    assert responses(out)[0][0][0] == 200
    assert rec.all() == b"GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\n\r\n"


def check_target(tmp, target):
    """`agentgate policy check` on a policy with one target t; (rc, output)."""
    p = os.path.join(tmp, f"p-{time.time_ns()}.yaml")
    with open(p, "w") as f:
        f.write(textwrap.dedent(f"""
        version: 1
        agents: [{{name: a}}]
        targets: [{target}]
        roles: [{{name: r, rules: [{{target: t}}]}}]
        bindings: [{{role: r, agents: [a]}}]
        """))
    r = subprocess.run([AG, "policy", "check", p], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_forwarded_for_validated(tmp):
    def check(target):
        return check_target(tmp, target)
    rc, _ = check("{name: t, protocol: http, address: 127.0.0.1:80, upstream: {forwarded_for: true}}")
    assert rc == 0
    rc, out = check("{name: t, protocol: http, address: 127.0.0.1:80, upstream: {forwarded_for: maybe}}")
    assert rc != 0 and "forwarded_for" in out, out
    rc, out = check("{name: t, protocol: postgres, address: 127.0.0.1:5432, upstream: {forwarded_for: true}}")
    assert rc != 0 and "forwarded_for" in out, out


def test_keepalive_tls_upstream_closed_idle_connection_dials_again(enforcer, servers, tmp):
    ca, crt, key = make_ca(tmp, "ka")
    ng = Nginx(tmp, servers.procs, keepalive="1s", tls=(crt, key))
    front = free_port()
    enforcer.start(policy(front, upstream=f"address: 127.0.0.1:{ng.port}, tls: verify-full, ca_file: {ca}, "
                                          "server_name: api.internal", rules='"GET /v1/**"'))
    get = "GET /v1/inv.json HTTP/1.1\r\nHost: api.internal\r\n\r\n"
    outs = client(enforcer, KEEPALIVE_CLIENT.format(port=front, reqs=[get, get], pause=2))
    assert [o[0] for o in outs] == ["HTTP/1.1 200 OK"] * 2, outs
    log = ng.log()
    assert len(log) == 2 and len({x[0] for x in log}) == 2, log


def test_keepalive_upstream_gone_when_dialling_again_is_502(enforcer, servers, tmp):
    ng = Nginx(tmp, servers.procs, keepalive="1s")
    proc = servers.procs[-1]
    enforcer.start(policy(ng.port, upstream="", rules='"GET /v1/**"'))
    get = "GET /v1/inv.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    done = []
    t = threading.Thread(target=lambda: done.append(
        client(enforcer, KEEPALIVE_CLIENT.format(port=ng.port, reqs=[get, get], pause=3))))
    t.start()
    time.sleep(1.5)     # the first answer is back and nginx closed the idle connection
    proc.stop()
    t.join(30)
    outs = done[0]
    assert outs[0][0] == "HTTP/1.1 200 OK", outs
    assert outs[1][0] == "HTTP/1.1 502 Bad Gateway", outs
    assert json.loads(outs[1][1])["reason"] == "the upstream is not reachable"


# ---- an upstream that does not answer: upstream.response_timeout ----------------

# A raw upstream: /v1/never is read and never answered; /v1/slow/S answers
# after S seconds; /v1/watch sends its head at once and its body (one chunk)
# 3 s later, like a Kubernetes watch that waits for an event; /v1/interim/N
# sends N "100 Continue" a second apart, then its answer. Records
# "conn-<n> METHOD TARGET" lines.
SILENT = textwrap.dedent(r"""
    import sys, time
    from rawhttp import heads, listen, serve_forever
    port, logf = int(sys.argv[1]), sys.argv[2]
    s = listen(port, 16)
    log = open(logf, "a", buffering=1)
    def ok(c, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    def serve(c, n):
        for head in heads(c):
            path = head.split(b"\r\n")[0].split()[1].decode()
            log.write("conn-%d %s\n" % (n, path))
            if path == "/v1/partial":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
            if path in ("/v1/never", "/v1/partial"):
                while c.recv(65536):
                    pass
                return
            if path.startswith("/v1/slow/"):
                time.sleep(float(path.rsplit("/", 1)[1]))
                ok(c, b"slow " + path.encode())
            elif path == "/v1/watch":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                time.sleep(3)
                c.sendall(b"6\r\nevent\n\r\n0\r\n\r\n")
            elif path.startswith("/v1/json/"):
                pad = "a" * int(path.rsplit("/", 1)[1])
                body = ('{"pad": "%s"}' % pad).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            elif path.startswith("/v1/interim/"):
                for _ in range(int(path.rsplit("/", 1)[1])):
                    time.sleep(1)
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                ok(c, b"after interim")
    serve_forever(s, serve, errors=())
""")

# One connection: sends each request (all at once when pipelined), waits
# `nap` seconds without reading, reads until EOF or 20 s; prints [seconds
# to EOF or None, the bytes read].
TIMED_CLIENT = r"""
import json, socket, time
s = socket.create_connection(("127.0.0.1", {port}), timeout=20)
t0 = time.time()
s.sendall("".join({reqs!r}).encode())
time.sleep({nap})
out, took = b"", None
try:
    while True:
        d = s.recv(65536)
        if not d:
            took = time.time() - t0
            break
        out += d
except ConnectionResetError:
    took = time.time() - t0
    out += b"<RST>"
except socket.timeout:
    pass
print(json.dumps([took, out.decode(errors="replace")]))
"""


def silent(tmp, procs):
    port, logf = free_port(), os.path.join(tmp, f"silent-{time.time_ns()}.log")
    procs.append(Proc([PY, "-c", SILENT, str(port), logf]))
    wait_port("127.0.0.1", port)
    return port, lambda: open(logf).read().splitlines() if os.path.exists(logf) else []


def get(path, close=False):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"


def statuses(out):
    return [int(x) for x in re.findall(r"HTTP/1\.1 (\d{3}) [A-Z]", out)]


def test_upstream_that_never_answers_is_504_after_response_timeout(enforcer, servers, tmp):
    port, log = silent(tmp, servers.procs)
    enforcer.start(policy(port, upstream="response_timeout: 2s", rules='"GET /v1/**"'))
    took, out = client(enforcer, TIMED_CLIENT.format(nap=0, port=port, reqs=[get("/v1/never")]), timeout=60)
    # answered, then closed, at the timeout: not before, and not only when the agent gives up
    assert took is not None and 1.9 <= took <= 4.5, (took, out)
    rs, rest = responses(out.encode())
    assert len(rs) == 1 and rs[0][0] == 504 and rest == b"", out
    body = json.loads(rs[0][2])
    assert body["error"] == "agentgate: upstream error" and "response_timeout" in body["reason"], body
    assert [x.split()[1] for x in log()] == ["/v1/never"]
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4002 and e["http_request"]["url"]["path"] == "/v1/never")
    assert ev and ev["http_response"]["code"] == 504, ev
    # an answer head begun and never finished is no answer either
    took, out = client(enforcer, TIMED_CLIENT.format(nap=0, port=port, reqs=[get("/v1/partial")]), timeout=60)
    assert took is not None and 1.9 <= took <= 4.5 and statuses(out) == [504], (took, out)
    # the default is 60 s: without the key the same request is still waiting after 5 s
    enforcer.stop()
    enforcer.start(policy(port, upstream="", rules='"GET /v1/**"'))
    code = TIMED_CLIENT.format(nap=0, port=port, reqs=[get("/v1/never")]).replace("timeout=20", "timeout=5")
    took, out = client(enforcer, code, timeout=60)
    assert took is None and out == "", (took, out)


def test_response_timeout_counts_until_the_head_only(enforcer, servers, tmp):
    port, log = silent(tmp, servers.procs)
    enforcer.start(policy(port, upstream="response_timeout: 2s", rules='"GET /v1/**"'))
    # a slow answer within the timeout; a body silent for longer than the
    # timeout after its head (a watch); interim 1xx that keep restarting it
    reqs = [get("/v1/slow/1.2"), get("/v1/watch"), get("/v1/interim/3", close=True)]
    took, out = client(enforcer, TIMED_CLIENT.format(nap=0, port=port, reqs=reqs), timeout=60)
    assert statuses(out) == [200, 200, 100, 100, 100, 200], out
    assert "slow /v1/slow/1.2" in out and "event" in out and out.endswith("after interim"), out
    assert took is not None and took >= 7, took   # 1.2 + 3 + 3: nothing was cut short
    # pipelined: the second waits behind the first (1.5 s) and then takes
    # 1.5 s itself; its clock starts when its answer is awaited, not when sent
    reqs = [get("/v1/slow/1.5"), get("/v1/slow/1.5", close=True)]
    took, out = client(enforcer, TIMED_CLIENT.format(nap=0, port=port, reqs=reqs), timeout=60)
    assert statuses(out) == [200, 200], out


def test_response_timeout_on_a_pipeline_answers_every_request(enforcer, servers, tmp):
    port, log = silent(tmp, servers.procs)
    enforcer.start(policy(port, upstream="response_timeout: 2s", rules='"GET /v1/**"'))
    reqs = [get("/v1/slow/0"), get("/v1/never"), get("/v1/slow/0")]
    took, out = client(enforcer, TIMED_CLIENT.format(nap=0, port=port, reqs=reqs), timeout=60)
    # the first answered; the one the upstream sits on and the one behind it get a 504 each, in order
    assert statuses(out) == [200, 504, 504], out
    assert took is not None and took <= 4.5, took
    assert enforcer.wait_event(lambda e: len(http_events(enforcer)) >= 3)
    assert sorted(e["http_response"]["code"] for e in http_events(enforcer)) == [200, 504, 504]


def test_response_timeout_not_run_while_the_agent_is_slow_to_read(enforcer, servers, tmp):
    """A masked answer of 7.5 MB goes into the agent's output at once; the
    agent reads nothing for 4.5 s, so the enforcer stops reading the
    upstream, whose prompt answer to the next request waits unread. That is
    the agent's delay, not the upstream's: no 504 (found by review)."""
    port, log = silent(tmp, servers.procs)
    enforcer.start(policy(port, upstream="response_timeout: 2s", rules='"GET /v1/**"',
                          extra_rule="mask: {detectors: [email]}"))
    reqs = [get("/v1/json/7500000"), get("/v1/slow/0", close=True)]
    took, out = client(enforcer, TIMED_CLIENT.format(nap=4.5, port=port, reqs=reqs), timeout=60)
    assert statuses(out) == [200, 200], out[:300] + out[-300:]
    assert out.endswith("slow /v1/slow/0"), out[-100:]


def test_upstream_tls_handshake_that_never_ends_is_cut(enforcer, servers, tmp):
    """An upstream that accepts the TCP connection and never answers the
    ClientHello: before, the agent's request waited for good (the dial's
    deadline ends at the connect; the handshake had none)."""
    port, log = silent(tmp, servers.procs)
    front = free_port()
    enforcer.start(policy(front, upstream=f"address: 127.0.0.1:{port}, tls: require, response_timeout: 2s",
                          rules='"GET /v1/**"'))
    took, out = client(enforcer, TIMED_CLIENT.format(nap=0, port=front, reqs=[get("/v1/a")]), timeout=60)
    assert took is not None and 1.9 <= took <= 5, (took, out)
    assert "HTTP/1.1 200" not in out
    ev = enforcer.wait_event(lambda e: e.get("class_uid") == 4001 and "TLS handshake did not complete" in json.dumps(e))
    assert ev, [e for e in enforcer.events() if e.get("class_uid") == 4001]


def test_response_timeout_validated(tmp):
    def check(target):
        return check_target(tmp, target)
    for ok in ("1s", "90s", "24h"):
        assert check(f"{{name: t, protocol: http, address: 127.0.0.1:80, upstream: {{response_timeout: {ok}}}}}")[0] == 0
    assert check("{name: t, protocol: kubernetes, address: 127.0.0.1:6443, upstream: {response_timeout: 5m}}")[0] == 0
    for bad in ("0s", "500ms", "25h", "soon", "-1s"):
        rc, out = check(f"{{name: t, protocol: http, address: 127.0.0.1:80, upstream: {{response_timeout: {bad}}}}}")
        assert rc != 0 and "response_timeout" in out, (bad, out)
    rc, out = check("{name: t, protocol: postgres, address: 127.0.0.1:5432, upstream: {response_timeout: 5s}}")
    assert rc != 0 and "response_timeout" in out, out
