# SPDX-License-Identifier: Apache-2.0
"""What the integration tests' raw HTTP servers share.

Those servers are small Python scripts held in strings in the test modules
(RECORDER, CANNED, ZERO_CL, ...) and run as processes of their own with
`Proc([PY, "-c", SCRIPT, ...])`. They import this module by name
(`from rawhttp import listen, serve_forever, heads`): conftest.Proc puts
this folder on their PYTHONPATH. Only the skeleton they all repeat is here:
the listening socket, the accept loop with a thread a connection, and
reading request heads.
"""
import socket
import threading


def listen(port, backlog=64):
    """A TCP socket listening on 127.0.0.1:port, with SO_REUSEADDR."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(backlog)
    return s


def serve_forever(sock, handle, errors=(OSError,), close=True):
    """Accepts connections on sock for good: each runs handle(conn, n) on a
    daemon thread, n counting the connections in the order they were
    accepted (0, 1, ...). An exception listed in `errors` ends the handler
    quietly; any other is an uncaught exception of its thread (printed).
    With close, the connection is closed when the handler ends, however it
    ends; without, it goes when nothing refers to it any more (this loop
    holds the newest one until the next connection comes)."""
    def run(conn, n):
        try:
            handle(conn, n)
        except errors:
            pass
        finally:
            if close:
                conn.close()
    n = 0
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=run, args=(conn, n), daemon=True).start()
        n += 1


def read_head(conn, buf=b""):
    """Reads from conn until buf holds a whole request head; returns (head,
    rest), split at the first blank line, or (None, buf) if the peer closed
    first."""
    while b"\r\n\r\n" not in buf:
        d = conn.recv(65536)
        if not d:
            return None, buf
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def heads(conn):
    """Yields the request heads read from conn, one after the other, until
    the peer closes. Nothing else is read: bytes after a head (a body) are
    taken for the start of the next head, as the servers that use this,
    which read no bodies, always did."""
    buf = b""
    while True:
        head, buf = read_head(conn, buf)
        if head is None:
            return
        yield head
