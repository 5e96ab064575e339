# SPDX-License-Identifier: Apache-2.0
"""A raw PostgreSQL protocol client for tests that need exact bytes: pipelined
messages in one write, Parse/Bind/Execute by hand, FunctionCall, malformed
messages, CancelRequest. Runs inside the agent (imported by code passed to
`agentgate exec python3 -c`)."""
import socket
import struct


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def Q(sql):
    return msg(b"Q", cstr(sql))


def P(name, sql, types=()):
    """Parse; types: parameter type OIDs (0: the server infers)."""
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) +
               b"".join(struct.pack("!I", t) for t in types))


def B(portal, stmt, params=(), result_formats=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            p = p.encode() if isinstance(p, str) else p
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return msg(b"B", body)


def D(kind, name):
    return msg(b"D", kind + cstr(name))


def E(portal, max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!i", max_rows))


def C(kind, name):
    return msg(b"C", kind + cstr(name))


S = msg(b"S")
H = msg(b"H")
X = msg(b"X")


def F(oid, args=()):
    body = struct.pack("!I", oid) + struct.pack("!h", 0) + struct.pack("!h", len(args))
    for a in args:
        a = a.encode()
        body += struct.pack("!i", len(a)) + a
    return msg(b"F", body + struct.pack("!h", 0))


class Conn:
    def __init__(self, host, port, user="agent_ro", database="shop", params=None, timeout=10, password=None):
        """password: answers AuthenticationCleartextPassword (a user's
        token, for delegation). A host starting with '/' is a directory
        holding the server's Unix socket (as libpq's host), for tests that
        ask PostgreSQL itself what it answers."""
        if host.startswith("/"):
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(f"{host}/.s.PGSQL.{port}")
        else:
            self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        kv = {"user": user, "database": database}
        kv.update(params or {})
        body = struct.pack("!I", 196608) + b"".join(cstr(k) + cstr(v) for k, v in kv.items()) + b"\0"
        self.s.sendall(struct.pack("!I", len(body) + 4) + body)
        self.params, self.key, self.startup = {}, None, []
        while True:
            t, b = self.read()
            self.startup.append((t, b))
            if t is None or t == b"Z":
                break
            if t == b"R" and password is not None and struct.unpack("!I", b[:4])[0] == 3:
                self.s.sendall(msg(b"p", cstr(password)))
            elif t == b"S":
                k, v = b.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif t == b"K":
                self.key = struct.unpack("!II", b)

    def send(self, data):
        self.s.sendall(data)

    def read(self):
        """One message (type, body); (None, None) at EOF."""
        if not isinstance(self.buf, bytearray):   # bytes += made a 12 MB message quadratic
            self.buf = bytearray(self.buf)
        while True:
            if len(self.buf) >= 5:
                n = struct.unpack("!I", self.buf[1:5])[0]
                if len(self.buf) >= n + 1:
                    t, b = bytes(self.buf[:1]), bytes(self.buf[5:n + 1])
                    del self.buf[:n + 1]
                    return t, b
            d = self.s.recv(1 << 20)
            if not d:
                return None, None
            self.buf += d

    def until_ready(self, count=1):
        """Messages up to and including the count-th ReadyForQuery (or EOF)."""
        out = []
        while count:
            t, b = self.read()
            if t is None:
                out.append((None, None))
                break
            out.append((t, b))
            if t == b"Z":
                count -= 1
        return out

    def close(self):
        try:
            self.s.sendall(X)
        except OSError:
            pass
        self.s.close()


def fields(body):
    """ErrorResponse/NoticeResponse fields as a dict."""
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def datarow(body):
    n = struct.unpack("!h", body[:2])[0]
    off, vals = 2, []
    for _ in range(n):
        ln = struct.unpack("!i", body[off:off + 4])[0]
        off += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(body[off:off + ln].decode(errors="replace"))
            off += ln
    return vals


def summary(msgs):
    """[(type, detail)]: errors as 'E:<sqlstate>:<message>', rows as 'D:<values>', others as type."""
    out = []
    for t, b in msgs:
        if t is None:
            out.append("EOF")
        elif t in (b"E", b"N"):
            f = fields(b)
            out.append(f"{t.decode()}:{f.get('C')}:{f.get('M')}")
        elif t == b"D":
            out.append("D:" + "|".join("NULL" if v is None else v for v in datarow(b)))
        elif t == b"Z":
            out.append("Z" + b.decode())
        elif t == b"C":
            out.append("C:" + b.rstrip(b"\0").decode())
        else:
            out.append(t.decode())
    return out


def cancel(host, port, pid, key):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(struct.pack("!IIII", 16, 80877102, pid, key))
    try:
        s.recv(1)
    except OSError:
        pass
    s.close()
