# SPDX-License-Identifier: Apache-2.0
"""Audit sinks against real receivers: rsyslog on loopback (plain TCP with
octet counting, TLS through its ossl driver, RELP through imrelp) with a
configuration written here, and the HTTP collector (helpers/collector.py)
standing in for Splunk HEC, Elasticsearch and a webhook.

Events come from real traffic: a client inside the agent cgroup opens
connections through the enforcer (each gives an Open and a Close event)."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import AG, PY, Proc, free_port, wait_for, wait_port

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))

RSYSLOGD = "/usr/sbin/rsyslogd"

TRAFFIC = textwrap.dedent(r"""
    import socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ok = 0
    for i in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"x")
        if s.recv(10):
            ok += 1
        s.close()
    print("OK", ok)
""")


def policy(port, sinks, extra=""):
    """sinks: YAML list items ("- {...}" lines); extra: more keys under audit.
    The agent's floods make audit events as fast as they connect, past the
    default limits.connect_rate (200 a second, bursts of 401)."""
    head = textwrap.dedent(f"""\
        version: 1
        agents: [{{name: t-agent, limits: {{connect_rate: 1000000}}}}]
        targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}]
        roles: [{{name: r, rules: [{{target: echo}}]}}]
        bindings: [{{role: r, agents: [t-agent]}}]
        audit:
        """)
    return (head + textwrap.indent(textwrap.dedent(extra), "  ") + "  sinks:\n" +
            textwrap.indent(textwrap.dedent(sinks), "    "))


def traffic(enforcer, port, n):
    r = enforcer.exec("t-agent", [PY, "-c", TRAFFIC, "127.0.0.1", str(port), str(n)], timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"OK {n}", r.stdout + r.stderr


def file_events(path):
    with open(path) as f:
        return [json.loads(l) for l in f.read().split("\n")[:-1] if l.strip()]


class Rsyslog:
    """rsyslogd in the foreground (-n -f conf -i pidfile) on free loopback
    ports: plain TCP, TLS (ossl, server cert signed by a CA made here) and
    RELP, each input writing the raw messages it received to its own file."""

    def __init__(self, tmp):
        self.tmp = os.path.join(tmp, "rsyslog")
        os.makedirs(os.path.join(self.tmp, "work"), exist_ok=True)
        self.ports = {"tcp": free_port(), "tls": free_port(), "relp": free_port()}
        self.proc = None
        self.ca = self._certs()

    def _certs(self):
        d = self.tmp

        def run(*a):
            subprocess.run(a, check=True, capture_output=True, cwd=d)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "1", "-subj", "/CN=agentgate test CA")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out",
            "srv.csr", "-subj", "/CN=127.0.0.1")
        with open(os.path.join(d, "ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "1", "-extfile", "ext")
        # a second CA that signed nothing here: verification must fail with it
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key",
            "-out", "other.pem", "-days", "1", "-subj", "/CN=some other CA")
        return os.path.join(d, "ca.pem")

    def out(self, name):
        return os.path.join(self.tmp, f"{name}.log")

    def start(self, direct=False):
        """direct: no in-memory main queue, so a message is written before
        rsyslog acknowledges it over RELP (what a receiver killed with
        SIGKILL must have done for nothing to be lost)."""
        d = self.tmp
        conf = os.path.join(d, "rsyslog.conf")
        with open(conf, "w") as f:
            if direct:
                f.write('main_queue(queue.type="Direct")\n')
            f.write(textwrap.dedent(f"""
                global(workDirectory="{d}/work" maxMessageSize="64k"
                       defaultNetstreamDriverCAFile="{d}/ca.pem"
                       defaultNetstreamDriverCertFile="{d}/srv.pem"
                       defaultNetstreamDriverKeyFile="{d}/srv.key")
                module(load="imtcp")
                module(load="imrelp")
                template(name="raw" type="string" string="%rawmsg%\\n")
                input(type="imtcp" port="{self.ports['tcp']}" address="127.0.0.1" ruleset="tcp")
                input(type="imtcp" port="{self.ports['tls']}" address="127.0.0.1" ruleset="tls"
                      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
                input(type="imrelp" port="{self.ports['relp']}" address="127.0.0.1" ruleset="relp")
                ruleset(name="tcp") {{ action(type="omfile" file="{self.out('tcp')}" template="raw") }}
                ruleset(name="tls") {{ action(type="omfile" file="{self.out('tls')}" template="raw") }}
                ruleset(name="relp") {{ action(type="omfile" file="{self.out('relp')}" template="raw") }}
            """))
        self.proc = Proc([RSYSLOGD, "-n", "-f", conf, "-i", os.path.join(d, "rsyslogd.pid")],
                         stdout=open(os.path.join(d, "rsyslogd.log"), "a"), stderr=subprocess.STDOUT)
        for p in self.ports.values():
            wait_port("127.0.0.1", p)

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            self.proc.stop(sig)
            self.proc = None

    def messages(self, name):
        """(raw header, OCSF event) per message received on that input."""
        try:
            with open(self.out(name), "rb") as f:
                data = f.read().decode()
        except FileNotFoundError:
            return []
        msgs = []
        for line in data.split("\n")[:-1]:
            hdr, sep, body = line.partition("] \ufeff")
            assert sep, f"no structured data + BOM in {line[:200]!r}"
            msgs.append((hdr + "]", json.loads(body)))
        return msgs


@pytest.fixture
def rsyslog(tmp):
    r = Rsyslog(tmp)
    yield r
    r.stop()


def syslog_sinks(rs, audit_path, ca=None):
    ca = ca or rs.ca
    return textwrap.dedent(f"""\
        - {{type: file, path: {audit_path}}}
        - {{type: syslog, address: 127.0.0.1:{rs.ports['tcp']}, transport: tcp}}
        - {{type: syslog, address: 127.0.0.1:{rs.ports['tls']}, transport: tls, ca_file: {ca}}}
        - {{type: syslog, address: 127.0.0.1:{rs.ports['relp']}, transport: relp}}
        """)


def wait_seqs(get, want, timeout=15):
    return wait_for(lambda: set(want) <= {e["metadata"]["sequence"] for e in get()}, timeout)


def test_syslog_tcp_tls_relp_complete_and_in_order(enforcer, servers, rsyslog):
    port, _ = servers.echo()
    rsyslog.start()
    enforcer.start(policy(port, syslog_sinks(rsyslog, enforcer.audit)))
    traffic(enforcer, port, 30)
    enforcer.stop()
    ref = file_events(enforcer.audit)
    assert len(ref) >= 60
    seqs = [e["metadata"]["sequence"] for e in ref]
    assert seqs == list(range(1, len(ref) + 1))
    validate_events(ref)
    with open(enforcer.audit) as f:
        ref_lines = f.read().split("\n")[:-1]
    for name in ("tcp", "tls", "relp"):
        assert wait_seqs(lambda: [e for _, e in rsyslog.messages(name)], seqs), name
        msgs = rsyslog.messages(name)
        got = [e["metadata"]["sequence"] for _, e in msgs]
        assert got == seqs, f"{name}: out of order or duplicated: {got[:20]}..."
        for (hdr, ev), line in zip(msgs, ref_lines):
            # the event is byte-for-byte what the file sink holds
            assert json.dumps(ev, separators=(",", ":"), ensure_ascii=False) == \
                json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
            # RFC 5424: <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD]
            parts = hdr.split(" ", 6)
            assert parts[0].startswith("<") and parts[0].endswith(">1"), hdr
            pri = int(parts[0][1:-2])
            assert pri // 8 == 13, hdr
            assert parts[1].endswith("Z") and "T" in parts[1], hdr
            assert parts[3] == "agentgate" and parts[5] == str(ev["class_uid"]), hdr
            assert parts[6] == f'[agentgate@32473 seq="{ev["metadata"]["sequence"]}"]', hdr


def test_syslog_tls_refuses_unverified_server(enforcer, servers, rsyslog):
    port, _ = servers.echo()
    rsyslog.start()
    other = os.path.join(rsyslog.tmp, "other.pem")
    sinks = textwrap.dedent(f"""\
        - {{type: file, path: {enforcer.audit}}}
        - {{type: syslog, address: 127.0.0.1:{rsyslog.ports['tls']}, transport: tls, ca_file: {other}}}
        """)
    enforcer.start(policy(port, sinks))
    traffic(enforcer, port, 3)
    assert wait_for(lambda: "TLS handshake" in enforcer.read_log(), 10), enforcer.read_log()
    enforcer.stop()
    assert rsyslog.messages("tls") == []
    assert "certificate" in enforcer.read_log()
    # nothing was acknowledged: the cursor still stands before the first event
    cur = [f for f in os.listdir(os.path.join(enforcer.state, "spool")) if f.startswith("cursor-syslog")]
    assert len(cur) == 1
    with open(os.path.join(enforcer.state, "spool", cur[0])) as f:
        assert int(f.read() or "0") == 0


@pytest.mark.parametrize("transport", ["relp", "tcp", "tls"])
def test_syslog_outage_then_recovery(enforcer, servers, rsyslog, transport):
    """rsyslog down while events are produced, then up: every sequence
    number arrives; duplicates only within one batch."""
    port, _ = servers.echo()
    rsyslog.start()
    sinks = textwrap.dedent(f"""\
        - {{type: file, path: {enforcer.audit}}}
        - {{type: syslog, address: 127.0.0.1:{rsyslog.ports[transport]}, transport: {transport}, ca_file: {rsyslog.ca}}}
        """) if transport == "tls" else textwrap.dedent(f"""\
        - {{type: file, path: {enforcer.audit}}}
        - {{type: syslog, address: 127.0.0.1:{rsyslog.ports[transport]}, transport: {transport}}}
        """)
    enforcer.start(policy(port, sinks))
    traffic(enforcer, port, 10)
    # Plain TCP and TLS have no application acknowledgement: what rsyslog's
    # kernel acknowledged but rsyslog had not processed when it stopped is
    # lost (documented in audit_sink_syslog.c). So the receiver is stopped
    # only once it has everything so far; what is produced while it is down
    # must all arrive, on every transport.
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 21, 10)
    first = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    assert wait_seqs(lambda: [e for _, e in rsyslog.messages(transport)], first)
    rsyslog.stop()
    traffic(enforcer, port, 100)          # produced while the receiver is down
    time.sleep(1)
    rsyslog.start()
    traffic(enforcer, port, 10)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 240, 10)
    ref = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    assert ref == list(range(1, len(ref) + 1)) and len(ref) >= 240
    # the sink retries with backoff capped at 5 s
    assert wait_seqs(lambda: [e for _, e in rsyslog.messages(transport)], ref, 20), \
        sorted(set(ref) - {e["metadata"]["sequence"] for _, e in rsyslog.messages(transport)})[:20]
    enforcer.stop(signal.SIGTERM)
    got = [e["metadata"]["sequence"] for _, e in rsyslog.messages(transport)]
    dups = len(got) - len(set(got))
    assert dups <= 1024, f"{dups} duplicates: more than one batch"
    # in order apart from a resent batch: never goes back further than a batch
    for a, b in zip(got, got[1:]):
        assert b > a or a - b < 1024


def test_relp_receiver_killed_mid_stream_loses_nothing(enforcer, servers, rsyslog):
    """rsyslog SIGKILLed while a flood is being delivered over RELP, then
    restarted: every sequence number arrives (RELP acknowledges, the sink
    resends what was not)."""
    port, _ = servers.echo()
    rsyslog.start(direct=True)
    sinks = textwrap.dedent(f"""\
        - {{type: file, path: {enforcer.audit}}}
        - {{type: syslog, address: 127.0.0.1:{rsyslog.ports['relp']}, transport: relp}}
        """)
    enforcer.start(policy(port, sinks))
    flood = subprocess.Popen([AG, "--state-dir", enforcer.state, "exec", "--agent", "t-agent", "--",
                              PY, "-c", TRAFFIC, "127.0.0.1", str(port), "1500"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: len(rsyslog.messages("relp")) >= 300, 30)
    rsyslog.stop(signal.SIGKILL)
    time.sleep(0.5)
    rsyslog.start(direct=True)
    out, _ = flood.communicate(timeout=120)
    assert out.strip() == "OK 1500", out
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 3001, 10)
    ref = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    assert wait_seqs(lambda: [e for _, e in rsyslog.messages("relp")], ref, 30), \
        sorted(set(ref) - {e["metadata"]["sequence"] for _, e in rsyslog.messages("relp")})[:20]
    enforcer.stop()
    got = [e["metadata"]["sequence"] for _, e in rsyslog.messages("relp")]
    assert len(got) - len(set(got)) <= 1024, "duplicates beyond one batch"


# ---- HTTP sinks against the collector (a test double: see its docstring) ----

from collector import Collector  # noqa: E402
from test_audit_schema import validate_events  # noqa: E402


@pytest.fixture
def collector():
    c = Collector(acks=True)
    c.start()
    yield c
    c.stop()


def http_sinks(col, tmp, audit_path, token="test-token", hec_extra=""):
    tok = os.path.join(tmp, "hec.token")
    with open(tok, "w") as f:
        f.write(token + "\n")
    os.chmod(tok, 0o600)
    base = f"http://127.0.0.1:{col.port}"
    return textwrap.dedent(f"""\
        - {{type: file, path: {audit_path}}}
        - {{type: splunk_hec, url: '{base}', token_file: {tok}, ack: true, index: sec{hec_extra}}}
        - {{type: elasticsearch, url: '{base}/', index: agentgate-audit}}
        - {{type: webhook, url: '{base}/hook'}}
        """)


def hec_seqs(col):
    with col.lock:
        return [e["event"]["metadata"]["sequence"] for e in col.hec]


def es_seqs(col):
    with col.lock:
        return [col.es_docs[i][1]["metadata"]["sequence"] for i in col.es_order]


def hook_seqs(col):
    with col.lock:
        return [e["metadata"]["sequence"] for e in col.webhook]


def test_http_sinks_complete_and_in_order(enforcer, servers, collector):
    port, _ = servers.echo()
    enforcer.start(policy(port, http_sinks(collector, enforcer.tmp, enforcer.audit)))
    traffic(enforcer, port, 20)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 41, 10)
    ref = file_events(enforcer.audit)
    seqs = [e["metadata"]["sequence"] for e in ref]
    for get in (hec_seqs, es_seqs, hook_seqs):
        assert wait_for(lambda: set(seqs) <= set(get(collector)), 15), get.__name__
    enforcer.stop()
    byseq = {e["metadata"]["sequence"]: e for e in ref}
    validate_events(file_events(enforcer.audit))
    assert hec_seqs(collector)[:len(seqs)] == seqs
    assert es_seqs(collector)[:len(seqs)] == seqs
    assert hook_seqs(collector)[:len(seqs)] == seqs
    with collector.lock:
        assert len(collector.hec_channels) == 1           # one channel per sink
        for env in collector.hec[:len(seqs)]:
            ev = env["event"]
            assert env["sourcetype"] == f"ocsf:{ev['class_uid']}"
            assert env["index"] == "sec" and env["source"] == "agentgate"
            assert abs(env["time"] * 1000 - ev["time"]) < 1
            assert ev == byseq[ev["metadata"]["sequence"]]
        for _id in collector.es_order[:len(seqs)]:
            index, doc = collector.es_docs[_id]
            assert index == "agentgate-audit" and doc["metadata"]["uid"] == _id
            assert doc == byseq[doc["metadata"]["sequence"]]
        assert all(s == 201 for s in collector.es_statuses)
    assert "test-token" not in enforcer.read_log()


def test_http_sinks_survive_errors_and_outage(enforcer, servers, collector):
    """503s, per-item 429s, an HEC batch whose ack never comes, then the
    collector down altogether while events are produced: every sequence
    arrives; Elasticsearch stores each event exactly once. The HEC sink's
    ack_timeout is 5 s: the batch whose ack was lost is posted again after
    5 s, not the default 60 s (which the wait below would not cover)."""
    port, _ = servers.echo()
    cport = collector.port
    enforcer.start(policy(port, http_sinks(collector, enforcer.tmp, enforcer.audit, hec_extra=", ack_timeout: 5s")))
    with collector.lock:
        collector.fail_next = 4
        collector.es_429_items = 7
        collector.lose_unacked = 1
    traffic(enforcer, port, 20)
    collector.stop()
    traffic(enforcer, port, 50)               # produced while the collector is down
    time.sleep(1)
    collector.start(cport)
    traffic(enforcer, port, 10)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 161, 10)
    seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    # HEC: the batch whose ack was lost is posted again ack_timeout (5 s)
    # after its post (a slow ack and a lost one look the same)
    for get, wait in ((hec_seqs, 30), (es_seqs, 30), (hook_seqs, 30)):
        assert wait_for(lambda: set(seqs) <= set(get(collector)), wait), \
            (get.__name__, sorted(set(seqs) - set(get(collector)))[:10])
    enforcer.stop()
    with collector.lock:
        statuses = list(collector.es_statuses)
        answered = [s for _, s in collector.requests]
    assert 429 in statuses and 409 in statuses, "per-item retry resent stored items: 409 = success"
    assert 503 in answered
    es = es_seqs(collector)
    assert len(es) == len(set(es)), "elasticsearch: each _id stored once"
    assert es[:len(seqs)] == sorted(es[:len(seqs)]) or set(es) >= set(seqs)
    for get in (hec_seqs, hook_seqs):
        got = get(collector)
        assert len(got) - len(set(got)) <= 500, f"{get.__name__}: more duplicates than one batch"


def dead_letter_path(enforcer):
    return os.path.join(enforcer.state, "spool", "dead-letter.jsonl")


def dead_letters(enforcer):
    """The dead-letter file's records, oldest first ([] before there is one)."""
    try:
        with open(dead_letter_path(enforcer)) as f:
            return [json.loads(l) for l in f]
    except FileNotFoundError:
        return []


def test_http_permanent_error_goes_to_dead_letter(enforcer, servers, collector):
    """A 400 (the events refused: HEC's "Invalid data format") is permanent: the
    events go to the dead-letter file, whole, and delivery moves on."""
    port, _ = servers.echo()
    collector.hec_400 = True
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit)
    sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l and "webhook" not in l)
    enforcer.start(policy(port, sinks + "\n"))
    traffic(enforcer, port, 5)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 11, 10)
    seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    dl = dead_letter_path(enforcer)

    def dead():
        return dead_letters(enforcer)
    assert wait_for(lambda: set(seqs) <= {d["event"]["metadata"]["sequence"] for d in dead()}, 10)
    enforcer.stop()
    d = dead()[0]
    assert d["sink"].startswith("splunk_hec-") and "HTTP 400" in d["reason"]
    assert os.stat(dl).st_mode & 0o777 == 0o600
    assert hec_seqs(collector) == []
    assert "test-token" not in enforcer.read_log() and "test-token" not in open(dl).read()



def test_discarded_dead_letters_are_reported_in_the_trail(enforcer, servers, collector):
    """Review: dead letters the dead-letter file's bound discarded (its
    older copy replaced) were only logged and counted in status: events a
    destination refused were then gone for it, and the trail said nothing.
    A 1008 Drop event (counter dead_letters_discarded) now says how many."""
    port, _ = servers.echo()
    collector.hec_400 = True
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit)
    sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l and "webhook" not in l)
    # dead letters: at most 64 KiB (max_bytes / 8, at least 64 KiB) and one older copy
    enforcer.start(policy(port, sinks + "\n", "spool: {max_bytes: 512KiB}\n"))
    traffic(enforcer, port, 150)

    def reports():
        return [e for e in file_events(enforcer.audit) if e["class_uid"] == 1008 and
                e.get("unmapped", {}).get("loss", {}).get("counter") == "dead_letters_discarded"]
    def logged():
        return sum(int(m) for m in re.findall(r"(\d+) older dead letters", enforcer.read_log()))

    def reported():
        return sum(r["count"] for r in reports())
    assert wait_for(lambda: logged() > 0, 20), enforcer.read_log()[-2000:]
    # every discard the log names is in the trail (the reports are
    # refused and dead-lettered too, and may discard more: counted next)
    assert wait_for(lambda: reported() == logged(), 10), (reported(), logged())
    reps = reports()
    enforcer.stop()
    for r in reps:
        assert r["activity_name"] == "Drop" and r["severity_id"] >= 3
        assert r["unmapped"]["loss"]["count"] == r["count"]
    validate_events(file_events(enforcer.audit))


def test_hec_request_refused_is_retried_not_dead_lettered(enforcer, servers, collector):
    """A HEC 400 that refuses the request, not its events (code 10, "Data
    channel is missing": a sink with ack: false on a token with indexer
    acknowledgement on; 7, an index the token may not write): dead-lettering
    moved the whole backlog out of the SIEM, a batch every few seconds
    (review, stop 34). It is retried, and once the token is fixed every
    event arrives."""
    port, _ = servers.echo()
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit).replace("ack: true", "ack: false")
    sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l and "webhook" not in l)
    enforcer.start(policy(port, sinks + "\n"))
    traffic(enforcer, port, 5)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 11, 10)
    assert wait_for(lambda: any(st == 400 for p, st in collector.requests), 10), collector.requests
    time.sleep(1)
    assert dead_letters(enforcer) == [], dead_letters(enforcer)[:1]
    assert hec_seqs(collector) == []
    with collector.lock:
        collector.acks = False          # the token's acknowledgement turned off
    seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    assert wait_for(lambda: set(seqs) <= set(hec_seqs(collector)), 15), (seqs, hec_seqs(collector))
    assert dead_letters(enforcer) == []


def test_hec_ack_needs_hec_answer(enforcer, servers, collector):
    """With ack: true, an answer that is not HEC's (a proxy's 202, a 200 page
    with no ackId and no code 0) counted the batch as delivered (review,
    stop 34); it is retried until HEC answers."""
    port, _ = servers.echo()
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit)
    sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l and "webhook" not in l)
    with collector.lock:
        collector.fake_answers = [(202, {}), (200, {"html": "maintenance"})]
    enforcer.start(policy(port, sinks + "\n"))
    traffic(enforcer, port, 5)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 11, 10)
    seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    assert wait_for(lambda: set(seqs) <= set(hec_seqs(collector)), 20), (seqs, hec_seqs(collector))
    with collector.lock:
        assert collector.fake_answers == []


def test_es_items_matched_by_id_not_position(enforcer, servers, collector):
    """A _bulk answer whose items are not in request order (a proxy between,
    another version): each event takes the status of the item naming its own
    _id. By position, the 400 of one event dead-lettered another (stored
    already) and the refused one counted as delivered though never stored."""
    port, _ = servers.echo()
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit)
    sinks = "\n".join(l for l in sinks.splitlines() if "splunk_hec" not in l and "webhook" not in l)
    with collector.lock:
        collector.es_reverse = True
        collector.es_400_seqs = {3}
    enforcer.start(policy(port, sinks + "\n"))
    traffic(enforcer, port, 10)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 21, 10)
    seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]

    def dead():
        return [d["event"]["metadata"]["sequence"] for d in dead_letters(enforcer)]
    want = set(seqs) - {3}
    assert wait_for(lambda: want <= set(es_seqs(collector)) and dead() == [3], 15), \
        (sorted(want - set(es_seqs(collector)))[:10], dead())
    enforcer.stop()
    stored = es_seqs(collector)
    assert 3 not in stored and len(stored) == len(set(stored))
    assert dead() == [3]


def test_hec_without_ack_ids_is_not_posted_again(enforcer, servers):
    """`ack: true` against a HEC whose token has indexer acknowledgement off: 200
    and no ackId. Each batch was posted again every few seconds, for good,
    indexing it again and again while the spool filled (review, stop 27). A 200
    without an ackId now counts as delivered, and the log says so once."""
    col = Collector(acks=False)
    col.start()
    try:
        port, _ = servers.echo()
        sinks = http_sinks(col, enforcer.tmp, enforcer.audit)
        sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l and "webhook" not in l)
        enforcer.start(policy(port, sinks + "\n"))
        traffic(enforcer, port, 5)
        assert wait_for(lambda: len(file_events(enforcer.audit)) >= 11, 10)
        seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
        assert wait_for(lambda: set(seqs) <= set(hec_seqs(col)), 10), hec_seqs(col)
        time.sleep(3)
        got = hec_seqs(col)
        assert len(got) == len(set(got)), got          # none indexed twice
        assert enforcer.read_log().count("answers no ackId") == 1
    finally:
        col.stop()


def test_http_refused_credentials_are_retried_not_dead_lettered(enforcer, servers, collector):
    """A 401 refuses the request, not its events (a token rotated on one side
    first): retried with backoff, nothing dead-lettered, and once the
    collector takes the token every event arrives. Before, the whole backlog
    went to the dead-letter file at the collector's speed (review, stop 27).
    A 413 (a proxy's body limit) halves the batches until they fit."""
    port, _ = servers.echo()
    collector.max_events = 3
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit, token="rotated-token")
    sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l)
    enforcer.start(policy(port, sinks + "\n"))
    traffic(enforcer, port, 5)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 11, 10)
    time.sleep(3)
    dl = dead_letter_path(enforcer)
    assert not os.path.exists(dl)
    assert hec_seqs(collector) == []
    assert any(st == 401 for _, st in collector.requests)
    collector.token = "rotated-token"
    seqs = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]
    assert wait_for(lambda: set(seqs) <= set(hec_seqs(collector)), 15), (seqs, hec_seqs(collector))
    assert wait_for(lambda: set(seqs) <= set(hook_seqs(collector)), 15), (seqs, hook_seqs(collector))
    enforcer.stop()
    assert not os.path.exists(dl)
    assert any(st == 413 for _, st in collector.requests)
    assert "rotated-token" not in enforcer.read_log()



def test_dead_letter_file_is_bounded_and_counted(enforcer, servers, collector):
    """Dead letters are rotated at an eighth of the spool's max_bytes (here
    512 KiB: 64 KiB), keeping one older file; what the rotation drops is
    counted in status and logged. Before, the file grew without bound and
    nothing counted it. (A batch refused whole is followed by the retry
    backoff, capped at 200 ms here through its test knob: five batches
    took 12 s at 5 s.)"""
    port, _ = servers.echo()
    collector.hec_400 = True
    sinks = http_sinks(collector, enforcer.tmp, enforcer.audit)
    sinks = "\n".join(l for l in sinks.splitlines() if "elasticsearch" not in l and "webhook" not in l)
    enforcer.start(policy(port, sinks + "\n", extra="spool: {max_bytes: 512KiB}\n"),
                   env={"AGENTGATE_SINK_BACKOFF_MS": "200"})
    traffic(enforcer, port, 150)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 301, 20)
    n = len(file_events(enforcer.audit))
    counters = lambda: enforcer.status()["counters"]
    assert wait_for(lambda: counters()["audit_dead_lettered"] >= n, 20), counters()
    c = counters()
    dl = dead_letter_path(enforcer)
    lines = [sum(1 for _ in open(p)) for p in (dl, dl + ".1")]
    assert os.path.getsize(dl) <= 64 << 10 and os.path.getsize(dl + ".1") <= 64 << 10
    assert os.stat(dl + ".1").st_mode & 0o777 == 0o600
    assert c["audit_dead_letters_discarded"] > 0, c
    assert c["audit_dead_lettered"] == sum(lines) + c["audit_dead_letters_discarded"], (c, lines)
    # the newest dead letters are the ones kept, whole lines in order
    seqs = [json.loads(l)["event"]["metadata"]["sequence"] for p in (dl + ".1", dl) for l in open(p)]
    assert all(a < b for a, b in zip(seqs, seqs[1:])) and len(seqs) == sum(lines), seqs
    assert "older dead letters" in enforcer.read_log() and "test-token" not in enforcer.read_log()

# ---- file sink: rotation and reopen on SIGHUP ----------------------------------

def test_file_rotation_and_sighup_reopen(enforcer, servers):
    port, _ = servers.echo()
    d = enforcer.tmp
    by_size, by_age, plain = (os.path.join(d, n) for n in ("size.jsonl", "age.jsonl", "plain.jsonl"))
    sinks = textwrap.dedent(f"""\
        - {{type: file, path: {enforcer.audit}}}
        - {{type: file, path: {by_size}, rotate_bytes: 16KiB, keep: 3}}
        - {{type: file, path: {by_age}, rotate_age: 1s}}
        - {{type: file, path: {plain}}}
        """)
    old_umask = os.umask(0)                  # the sink sets 0600 itself
    try:
        enforcer.start(policy(port, sinks))
    finally:
        os.umask(old_umask)
    traffic(enforcer, port, 60)
    time.sleep(1.2)
    traffic(enforcer, port, 5)
    assert wait_for(lambda: len(file_events(enforcer.audit)) >= 131, 10)

    # logrotate-style: move the file away, SIGHUP, the sink writes a new one
    moved = plain + ".moved"
    os.rename(plain, moved)
    enforcer.proc.p.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    traffic(enforcer, port, 5)
    assert wait_for(lambda: os.path.exists(plain) and len(file_events(plain)) >= 10, 10)
    enforcer.stop()
    ref = [e["metadata"]["sequence"] for e in file_events(enforcer.audit)]

    for p in [by_size + s for s in ("", ".1", ".2", ".3")]:
        assert os.path.exists(p), p
        assert os.stat(p).st_mode & 0o777 == 0o600, p
        assert 0 < os.path.getsize(p) <= 16 * 1024   # rotation falls between lines
    assert not os.path.exists(by_size + ".4"), "keep: 3"
    kept = []
    for p in [by_size + s for s in (".3", ".2", ".1", "")]:
        kept += [e["metadata"]["sequence"] for e in file_events(p)]
    assert kept == ref[-len(kept):], "rotated files hold consecutive events, oldest in .3"
    assert len(kept) < len(ref)

    assert os.path.exists(by_age + ".1")
    aged = [e["metadata"]["sequence"] for e in file_events(by_age + ".1")] + \
        [e["metadata"]["sequence"] for e in file_events(by_age)]
    assert aged == ref[-len(aged):]

    both = [e["metadata"]["sequence"] for e in file_events(moved)] + \
        [e["metadata"]["sequence"] for e in file_events(plain)]
    assert both == ref, "nothing lost or repeated across the reopen"
    assert os.stat(plain).st_mode & 0o777 == 0o600


# ---- review, stop 19 ------------------------------------------------------------

def test_http_redirect_is_retried_not_dead_lettered(enforcer, servers, collector):
    """A 3xx (a load balancer's redirect during maintenance) is not the events'
    fault: retried, never sent to the dead-letter file (it moved every event
    there, out of the SIEM)."""
    port, _ = servers.echo()
    collector.redirect_next = 3
    enforcer.start(policy(port, f"- {{type: webhook, url: 'http://127.0.0.1:{collector.port}/hook'}}\n"))
    traffic(enforcer, port, 4)
    assert wait_for(lambda: collector.redirect_next == 0 and len(hook_seqs(collector)) >= 9, 15), hook_seqs(collector)
    enforcer.stop()
    assert not os.path.exists(os.path.join(enforcer.state, "spool", "dead-letter.jsonl"))
    got = hook_seqs(collector)
    assert sorted(set(got)) == list(range(1, max(got) + 1)), got
    assert any(st == 307 for _, st in collector.requests)


def test_webhook_answer_over_the_limit_is_still_an_acknowledgement(enforcer, servers, collector):
    """A webhook's 2xx acknowledges the batch whatever its body says; a
    receiver that echoes what it got (here 9 MiB, past the 8 MiB the sink
    keeps of an answer) made the sink abort the transfer and post the same
    batch again and again (review, stop 35)."""
    port, _ = servers.echo()
    collector.hook_pad = 9 << 20
    enforcer.start(policy(port, f"- {{type: webhook, url: 'http://127.0.0.1:{collector.port}/hook'}}\n"))
    traffic(enforcer, port, 4)
    assert wait_for(lambda: len(hook_seqs(collector)) >= 9, 15), hook_seqs(collector)
    time.sleep(1.5)   # a failed batch is posted again within 100-200 ms
    got = hook_seqs(collector)
    enforcer.stop()
    assert got == sorted(set(got)), f"batches posted again: {got}"
    assert not os.path.exists(os.path.join(enforcer.state, "spool", "dead-letter.jsonl"))


def test_sink_url_password_never_logged(enforcer, servers):
    """Basic auth in an Elasticsearch URL is common; the sink's description in
    logs and status must not carry it."""
    port, _ = servers.echo()
    dead = free_port()
    enforcer.start(policy(port, f"- {{type: file, path: {enforcer.audit}}}\n"
                                f"- {{type: elasticsearch, url: 'http://elastic:S3cretPassw0rd@127.0.0.1:{dead}', "
                                f"index: agentgate}}\n"))
    traffic(enforcer, port, 2)
    assert wait_for(lambda: "elasticsearch http://127.0.0.1" in enforcer.read_log(), 10), enforcer.read_log()
    st = enforcer.cli("status", "--json").stdout
    enforcer.stop()
    assert "S3cretPassw0rd" not in enforcer.read_log() + st


def test_two_sinks_sharing_a_cursor_are_refused(enforcer, servers, tmp):
    """Two sinks that differ only in their token would share one cursor file:
    the slower lost its backlog to the faster's progress. Refused at start."""
    port, _ = servers.echo()
    toks = []
    for n in ("a", "b"):
        toks.append(os.path.join(tmp, f"tok-{n}"))
        with open(toks[-1], "w") as f:
            f.write(f"token-{n}\n")
        os.chmod(toks[-1], 0o600)
    url = f"http://127.0.0.1:{free_port()}/hook"
    enforcer.start(policy(port, f"- {{type: webhook, url: '{url}', token_file: {toks[0]}}}\n"
                                f"- {{type: webhook, url: '{url}', token_file: {toks[1]}}}\n"),
                   expect_ready=False)
    assert wait_for(lambda: enforcer.proc.p.poll() is not None, 10)
    assert enforcer.proc.p.returncode != 0
    assert "deliver to the same destination and would share one cursor" in enforcer.read_log()


def test_hec_slow_acks_are_waited_for_not_reposted(enforcer, servers):
    """Indexer acknowledgements that take longer than the sink's wait for them
    per attempt (30 s; 2 s here, by the test knob, with acks that take 3 s):
    the batch is not posted again (each POST is another copy indexed); a
    retry of the same batch polls its ackId first. With a 10 s wait and acks
    of 11 s it was posted every 10 s, forever (review, stop 19)."""
    port, _ = servers.echo()
    col = Collector(acks=True, ack_delay=3)
    col.start()
    try:
        tok = os.path.join(enforcer.tmp, "hec.token")
        with open(tok, "w") as f:
            f.write("test-token\n")
        os.chmod(tok, 0o600)
        enforcer.start(policy(port, f"- {{type: file, path: {enforcer.audit}}}\n"
                                    f"- {{type: splunk_hec, url: 'http://127.0.0.1:{col.port}', "
                                    f"token_file: {tok}, ack: true}}\n"),
                      env={"AGENTGATE_HEC_ACK_WAIT_MS": "2000"})
        traffic(enforcer, port, 2)
        want = set(range(1, 6))             # Start, and Open and Close of each connection
        assert wait_for(lambda: want <= set(hec_seqs(col)), 40), (hec_seqs(col), col.hec_posts)
        enforcer.stop()
        posted = [q for p in col.hec_posts for q in p]
        assert len(posted) == len(set(posted)), col.hec_posts
        # the wait did run out (the knob took): the retry found the ack pending
        assert "not acknowledged by the indexer" in enforcer.read_log(), enforcer.read_log()[-2000:]
    finally:
        col.stop()


# ---- file sink on a disk that fills up (stop 67) ---------------------------------

class SmallDisk:
    """A small file system for a file sink, mounted in the test's tmp and
    undone after it. "tmpfs": a 1 MiB tmpfs, where a full disk fails the
    write(2). "thin": ext4 (no journal) on a loop device whose backing file
    lies on a 4 MiB tmpfs, a thin-provisioned volume: writes land in the
    page cache and it is fdatasync that fails (ENOSPC) once the storage
    behind is full, as with a full thin pool. fill() makes it full (for
    "thin", also taking what the volume can still store, blocks the tmpfs
    holds already, with a file of its own); free() makes room again."""

    def __init__(self, tmp, kind, opts=""):
        self.kind, self.loop = kind, None
        self.top = os.path.join(tmp, "disk")
        os.makedirs(self.top)
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True)
        if kind == "tmpfs":
            run("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700" + opts, "tmpfs", self.top)
            self.mnt = self.top
            return
        run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", self.top)
        img = os.path.join(self.top, "img")
        run("truncate", "-s", "32M", img)
        run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-b", "4096", img)
        self.loop = run("losetup", "-f", "--show", img).stdout.strip()
        self.mnt = os.path.join(self.top, "mnt")
        os.mkdir(self.mnt)
        run("mount", "-o", "errors=continue", self.loop, self.mnt)
        os.chmod(self.mnt, 0o700)

    def fill(self):
        subprocess.run(f"dd if=/dev/zero of={self.top}/fill bs=4k", shell=True, capture_output=True)
        if self.kind == "thin":
            fd = os.open(os.path.join(self.mnt, "slack"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                for _ in range(512):
                    os.write(fd, b"\0" * 65536)
                    os.fdatasync(fd)
            except OSError:
                pass
            os.close(fd)

    def free(self):
        os.unlink(os.path.join(self.top, "fill"))

    def remove(self):
        if self.loop:
            if subprocess.run(["umount", self.mnt], capture_output=True).returncode:
                subprocess.run(["umount", "-l", self.mnt], capture_output=True)
            subprocess.run(["losetup", "-d", self.loop], capture_output=True)
        if subprocess.run(["umount", self.top], capture_output=True).returncode:
            subprocess.run(["umount", "-l", self.top], capture_output=True)


@pytest.fixture
def small_disk(tmp, enforcer):
    """enforcer: torn down first, so nothing holds a file on the disk."""
    made = []

    def make(kind, opts=""):
        made.append(SmallDisk(tmp, kind, opts))
        return made[-1]
    yield make
    for d in made:
        d.remove()


def seq_list(path):
    return [e["metadata"]["sequence"] for e in file_events(path)]


@pytest.mark.parametrize("kind", ["tmpfs", "thin"])
def test_file_sink_full_disk_writes_each_event_once(enforcer, servers, small_disk, kind):
    """Review (stop 67): a file sink whose write or fdatasync failed (ENOSPC)
    wrote again from its cursor, so the lines written since its last good
    sync were in the file twice ('reordered' for audit verify), and after a
    failed fdatasync a later one returns 0 though the pages were lost
    (errseq). It now cuts the file back to its last good sync first. Events
    are made while the disk is full; once there is room again each sequence
    is in the file once, in order, and verify --strict passes."""
    disk = small_disk(kind)
    path = os.path.join(disk.mnt, "audit.jsonl")
    port, _ = servers.echo()
    enforcer.start(policy(port, f"- {{type: file, path: {enforcer.audit}}}\n"
                                f"- {{type: file, path: {path}}}\n"))
    traffic(enforcer, port, 20)
    assert wait_for(lambda: len(file_events(path)) >= 40, 10)
    disk.fill()
    for _ in range(6):      # batches of events, each refused by the full disk
        traffic(enforcer, port, 25)
        time.sleep(0.3)
    assert wait_for(lambda: "No space left on device" in enforcer.read_log(), 10), \
        enforcer.read_log()[-2000:]
    disk.free()
    traffic(enforcer, port, 5)
    ref = lambda: seq_list(enforcer.audit)
    assert wait_for(lambda: seq_list(path)[-1:] == ref()[-1:], 20), (seq_list(path)[-3:], ref()[-3:])
    enforcer.stop()
    got, want = seq_list(path), seq_list(enforcer.audit)
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} lines written twice"
    assert got == want
    r = enforcer.cli("audit", "verify", path, "--strict")
    assert r.returncode == 0, r.stdout + r.stderr


def rotated_files(d):
    """audit.jsonl.N .. audit.jsonl.1, audit.jsonl in d: oldest first."""
    names = [p for p in os.listdir(d) if re.fullmatch(r"audit\.jsonl\.\d+", p)]
    return sorted(names, key=lambda p: -int(p.rsplit(".", 1)[1])) + ["audit.jsonl"]


def rotated_seqs(d):
    return [q for name in rotated_files(d) if os.path.exists(os.path.join(d, name))
            for q in seq_list(os.path.join(d, name))]


@pytest.mark.parametrize("how", ["no_inode", "immutable_dir"])
def test_file_sink_rotation_that_fails_resumes_without_duplicates(enforcer, servers, small_disk, how):
    """Review (stop 67): a rotation that failed in the middle of a batch
    wrote the batch again from its start, so the lines before the rotation
    were in path.1 and again in path (no_inode: the new file cannot be
    created, its tmpfs is out of inodes); a rename that failed (immutable
    directory) went on writing the same file past rotate_bytes, one
    rotation attempt per line. Now the file is synced before the rename and
    those lines count delivered; a failed rename or creation is retried
    with the rest. Once the disk takes them again every event is in the
    files once, in order, none over rotate_bytes, and the chain verifies."""
    disk = small_disk("tmpfs", ",nr_inodes=64")
    path = os.path.join(disk.mnt, "audit.jsonl")
    port, _ = servers.echo()
    enforcer.start(policy(port, f"- {{type: file, path: {enforcer.audit}}}\n"
                                f"- {{type: file, path: {path}, rotate_bytes: 16KiB, keep: 50}}\n"),
                   env={"AGENTGATE_SINK_BACKOFF_MS": "200"})
    traffic(enforcer, port, 10)
    assert wait_for(lambda: len(rotated_seqs(disk.mnt)) >= 20, 10)
    blockers = []
    if how == "no_inode":
        try:
            for i in range(100):
                p = os.path.join(disk.mnt, f"blocker{i}")
                open(p, "w").close()
                blockers.append(p)
        except OSError:
            pass
        assert len(blockers) < 100
    else:
        subprocess.run(["chattr", "+i", disk.mnt], check=True)
    try:
        for _ in range(6):
            traffic(enforcer, port, 12)
            time.sleep(0.2)
        want = "No space left on device" if how == "no_inode" else "Operation not permitted"
        assert wait_for(lambda: want in enforcer.read_log(), 10), enforcer.read_log()[-2000:]
    finally:
        if how == "immutable_dir":
            subprocess.run(["chattr", "-i", disk.mnt], check=True)
        for p in blockers:
            os.unlink(p)
    traffic(enforcer, port, 5)
    ref = lambda: seq_list(enforcer.audit)
    assert wait_for(lambda: rotated_seqs(disk.mnt)[-1:] == ref()[-1:], 20), \
        (rotated_seqs(disk.mnt)[-3:], ref()[-3:])
    enforcer.stop()
    files = rotated_files(disk.mnt)
    got, lines = [], []
    for name in files:
        p = os.path.join(disk.mnt, name)
        assert os.path.getsize(p) <= 16 << 10, (name, os.path.getsize(p))
        got += seq_list(p)
        with open(p) as f:
            lines += f.readlines()
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} lines written twice"
    assert got == seq_list(enforcer.audit)
    whole = os.path.join(enforcer.tmp, "rotated-whole.jsonl")
    with open(whole, "w") as f:
        f.writelines(lines)
    r = enforcer.cli("audit", "verify", whole, "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
