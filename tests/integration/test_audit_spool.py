# SPDX-License-Identifier: Apache-2.0
"""The audit spool with a real enforcer: resuming from the cursor after
SIGKILL, a full spool in each on_full mode, a flood from one agent.

A webhook sink pointed at the collector (helpers/collector.py, a test
double) is the sink that can be taken down and brought back; while it is
down nothing it has not acknowledged may leave the spool."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import AG, PY, connect_code, free_port, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from collector import Collector  # noqa: E402
from test_audit_schema import validate_events  # noqa: E402
from test_audit_sinks import TRAFFIC, file_events, policy, traffic  # noqa: E402


# connects until the first refusal; prints how many worked
UNTIL_REFUSED = textwrap.dedent(r"""
    import socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ok = 0
    for i in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"x")
            if not s.recv(10):
                break
            s.close()
        except OSError:
            break
        ok += 1
    print("OK", ok)
""")


def sinks(audit_path, hook_port):
    return textwrap.dedent(f"""\
        - {{type: file, path: {audit_path}}}
        - {{type: webhook, url: 'http://127.0.0.1:{hook_port}/hook'}}
        """)


def seqs(evs):
    return [e["metadata"]["sequence"] for e in evs]


def verify(enforcer):
    r = enforcer.cli("audit", "verify", enforcer.audit)
    return r.returncode, r.stdout + r.stderr


def unclean_events(evs):
    return [e for e in evs if e["class_uid"] == 1008 and "unclean_stop" in e.get("unmapped", {})]


def test_sigkill_mid_batch_resumes_from_cursor(enforcer, servers):
    col = Collector()
    col.start()
    try:
        port, _ = servers.echo()
        enforcer.start(policy(port, sinks(enforcer.audit, col.port)))
        traffic(enforcer, port, 5)
        flood = subprocess.Popen([AG, "--state-dir", enforcer.state, "exec", "--agent", "t-agent", "--",
                                  PY, "-c", TRAFFIC, "127.0.0.1", str(port), "2000"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: len(file_events(enforcer.audit)) >= 200, 20)
        enforcer.stop(signal.SIGKILL)           # mid-flood, mid-batch
        flood.wait(30)
        before = seqs(file_events(enforcer.audit))
        assert before == list(range(1, len(before) + 1))

        enforcer.start(policy(port, sinks(enforcer.audit, col.port)))
        traffic(enforcer, port, 10)

        def starts_now():
            return [e for e in file_events(enforcer.audit) if e["class_uid"] == 6002 and e["activity_name"] == "Start"]
        # the file sink delivers the first run's backlog before the second Start
        assert wait_for(lambda: len(starts_now()) == 2, 10), len(starts_now())
        evs = file_events(enforcer.audit)
        starts = starts_now()
        # the sequence is the spool's: the second run continues it
        assert starts[1]["metadata"]["sequence"] > max(before) - 1
        assert wait_for(lambda: len(file_events(enforcer.audit)) >= len(evs) + 0 and
                        set(seqs(file_events(enforcer.audit))) <= {e["metadata"]["sequence"] for e in col.webhook}, 20)
        enforcer.stop()
        got = seqs(file_events(enforcer.audit))
        # the file sink skipped what it held already: no gap, no duplicate
        assert got == list(range(1, len(got) + 1)), got[len(before) - 3:len(before) + 3]
        hook = [e["metadata"]["sequence"] for e in col.webhook]
        assert set(hook) >= set(got)
        assert len(hook) - len(set(hook)) <= 500, "duplicates beyond one batch"
        # what the kill took before the spool had it (no sequence yet, so no
        # gap) is reported at the next start, right after the spool's last line
        unclean = unclean_events(file_events(enforcer.audit))
        assert len(unclean) == 1, unclean
        after = unclean[0]["unmapped"]["unclean_stop"]["after_sequence"]
        assert after >= max(before) and unclean[0]["metadata"]["sequence"] == after + 1
        assert unclean[0]["metadata"]["sequence"] < starts[1]["metadata"]["sequence"]
        assert "without a clean stop" in unclean[0]["message"] and unclean[0]["severity_id"] == 4
        # a clean stop: the next start reports nothing
        enforcer.start(policy(port, sinks(enforcer.audit, col.port)))
        traffic(enforcer, port, 2)
        enforcer.stop()
        assert len(unclean_events(file_events(enforcer.audit))) == 1
        rc, out = verify(enforcer)
        assert rc == 0, out
        assert "warning" not in out, out
        validate_events(file_events(enforcer.audit))
    finally:
        col.stop()


def spool_policy(port, audit_path, hook_port, on_full):
    extra = f"""\
        spool: {{max_bytes: 64KiB, on_full: {on_full}}}
        """
    return policy(port, sinks(audit_path, hook_port), extra)


def on_disk(spool):
    """Bytes of every segment file in the spool, compressed copies and
    their temporary files included."""
    total = 0
    for f in os.listdir(spool):
        if f.startswith("seg-"):
            try:
                total += os.path.getsize(os.path.join(spool, f))
            except FileNotFoundError:
                pass
    return total


def loss_events(evs):
    return [e for e in evs if e["class_uid"] == 1008 and
            e.get("unmapped", {}).get("loss", {}).get("counter") == "spool_full"]


def test_spool_full_drop_newest(enforcer, servers):
    port, _ = servers.echo()
    hook_port = free_port()                 # nobody listens yet: the webhook holds the spool
    enforcer.start(spool_policy(port, enforcer.audit, hook_port, "drop_newest"))
    n = 300
    spool = os.path.join(enforcer.state, "spool")
    # the spool's files never take more than max_bytes, not even for a moment
    # (a segment being compressed is on disk twice; a dropped one until it is
    # unlinked): sampled all through the traffic, not only at its end
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], on_disk(spool))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        traffic(enforcer, port, n)          # decisions never wait: every connection works
        assert wait_for(lambda: "spool full" in enforcer.read_log(), 5), enforcer.read_log()
        time.sleep(0.5)
    finally:
        done.set()
        sampler.join()
    assert 0 < peak[0] <= 64 * 1024, peak[0]
    assert on_disk(spool) <= 64 * 1024
    # (sealing compresses segments, so some room can return before the sink
    # does: there may be several loss windows, each reported once)

    def accounted():
        evs = file_events(enforcer.audit)
        conns = [e for e in evs if e["class_uid"] == 4001 and e.get("dst_endpoint", {}).get("port") == port]
        return len(conns) + sum(l["count"] for l in loss_events(evs))

    col = Collector()
    col.start(hook_port)
    try:
        # the sink catches up, room returns, the last window is reported
        assert wait_for(lambda: accounted() == 2 * n, 20), accounted()
        enforcer.stop()
    finally:
        col.stop()
    evs = file_events(enforcer.audit)
    assert seqs(evs) == list(range(1, len(evs) + 1)), "dropped events take no sequence number"
    losses = loss_events(evs)
    assert losses
    prev = 0
    for loss in losses:
        lu = loss["unmapped"]["loss"]
        assert loss["activity_name"] == "Drop" and loss["count"] == lu["count"] > 0
        assert lu["on_full"] == "drop_newest"
        assert prev <= lu["after_sequence"] < loss["metadata"]["sequence"]
        assert loss["start_time"] <= loss["end_time"] and loss["severity_id"] >= 3
        assert "actor" in loss and "device" in loss
        prev = loss["metadata"]["sequence"]
    assert 1008 in validate_events(evs)
    dropped = sum(l["count"] for l in losses)
    conns = [e for e in evs if e["class_uid"] == 4001 and e.get("dst_endpoint", {}).get("port") == port]
    assert len(conns) + dropped == 2 * n, (len(conns), dropped)
    rc, out = verify(enforcer)
    assert rc == 0, out


def test_spool_full_fail_closed(enforcer, servers):
    port, _ = servers.echo()
    hook_port = free_port()
    enforcer.start(spool_policy(port, enforcer.audit, hook_port, "fail_closed"))
    r = enforcer.exec("t-agent", [PY, "-c", UNTIL_REFUSED, "127.0.0.1", str(port), "400"],
                      timeout=120)
    made = int(r.stdout.split()[-1])
    assert 0 < made < 400, r.stdout + r.stderr     # refused once audit could not be recorded
    assert "fail_closed" in enforcer.read_log()

    col = Collector()
    col.start(hook_port)
    try:
        assert wait_for(lambda: loss_events(file_events(enforcer.audit)), 20), "no loss event"
        out = enforcer.py("t-agent", connect_code("127.0.0.1", port))
        assert out.stdout.startswith("OK"), out.stdout   # accepting again
        enforcer.stop()
    finally:
        col.stop()
    evs = file_events(enforcer.audit)
    assert seqs(evs) == list(range(1, len(evs) + 1))
    validate_events(evs)
    losses = loss_events(evs)
    assert losses and all(l["unmapped"]["loss"]["on_full"] == "fail_closed" and l["count"] > 0
                          for l in losses)


DENIED = textwrap.dedent(r"""
    import socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    refused = 0
    for i in range(n):
        s = socket.socket()
        try:
            s.connect((host, port))
        except OSError:
            refused += 1
        s.close()
    print("REFUSED", refused)
""")


def test_flood_from_one_agent_is_rate_limited(enforcer, servers):
    """One agent cannot flood the trail: beyond its rate the events are
    counted in loss events, enforcement is unaffected (every attempt is
    refused), the sequence stays gap-free."""
    port, _ = servers.echo()
    col = Collector()
    col.start()
    n = 3000
    try:
        enforcer.start(policy(port, sinks(enforcer.audit, col.port)),
                       env={"AGENTGATE_AUDIT_RATE": "200/400"})
        r = enforcer.exec("t-agent", [PY, "-c", DENIED, "127.0.0.1", str(port + 1), str(n)], timeout=120)
        assert r.stdout.strip() == f"REFUSED {n}", r.stdout + r.stderr
        time.sleep(1.5)                    # suppressed counts are reported every second
        enforcer.stop()
    finally:
        col.stop()
    evs = file_events(enforcer.audit)
    assert seqs(evs) == list(range(1, len(evs) + 1))
    validate_events(evs)
    refused = [e for e in evs if e["class_uid"] == 4001 and e.get("dst_endpoint", {}).get("port") == port + 1]
    lost = sum(e["unmapped"]["loss"]["count"] for e in evs if e["class_uid"] == 1008 and
               e.get("unmapped", {}).get("loss", {}).get("counter") in ("agent_rate_limited",
                                                                         "ringbuf_dropped"))
    assert len(refused) < n and lost > 0
    assert len(refused) + lost == n, (len(refused), lost)


def test_drops_counted_across_a_stop_with_a_full_spool(enforcer, servers):
    """The enforcer stops while the spool is full and events are being
    dropped: the count must survive the stop (spool/dropped) and be reported
    by the next run once there is room. It was kept only in memory: the
    next run reported nothing of the first run's drops (review, stop 19)."""
    port, _ = servers.echo()
    hook_port = free_port()                 # nobody listens: the webhook holds the spool
    text = spool_policy(port, enforcer.audit, hook_port, "drop_newest")
    enforcer.start(text)
    n = 300
    traffic(enforcer, port, n)
    assert wait_for(lambda: "spool full" in enforcer.read_log(), 5), enforcer.read_log()
    enforcer.stop()
    assert os.path.exists(os.path.join(enforcer.state, "spool", "dropped"))
    col = Collector()
    col.start(hook_port)
    try:
        enforcer.start(text)

        def accounted():
            evs = file_events(enforcer.audit)
            conns = [e for e in evs if e["class_uid"] == 4001 and e.get("dst_endpoint", {}).get("port") == port]
            return len(conns) + sum(l["count"] for l in loss_events(evs))
        # every connection event of the first run is either in the file or
        # in a loss count (the count also holds the first run's Stop and the
        # second run's Start when they found no room)
        assert wait_for(lambda: accounted() >= 2 * n, 20), accounted()
        enforcer.stop()
    finally:
        col.stop()
    assert not os.path.exists(os.path.join(enforcer.state, "spool", "dropped"))
    evs = file_events(enforcer.audit)
    assert seqs(evs) == list(range(1, len(evs) + 1))
    assert max(l["count"] for l in loss_events(evs)) > 100


def test_short_spool_segment_is_skipped_and_reported(enforcer, servers):
    """Review: a closed spool segment whose file ends before the next
    segment begins (a power cut took the tail written since the last
    fdatasync, which a segment roll does not wait for; or a damaged disk)
    stalled every sink that had not read it yet, for good and without a
    word: a new file sink got the lines up to the hole and nothing after,
    not even the next run's events. The sinks now go on after the hole and
    a loss event (1008 Drop, counter spool_lost) names the sequences."""
    port, _ = servers.echo()
    hook_port = free_port()                 # nobody listens: the webhook keeps every segment
    hook = f"- {{type: webhook, url: 'http://127.0.0.1:{hook_port}/hook'}}\n"
    extra = "spool: {max_bytes: 1MiB}\n"   # 128 KiB segments, sealed only after 10 s
    enforcer.start(policy(port, hook + f"- {{type: file, path: {enforcer.audit}}}\n", extra))
    traffic(enforcer, port, 100)
    enforcer.stop()
    spool = os.path.join(enforcer.state, "spool")
    segs = sorted(f for f in os.listdir(spool) if f.startswith("seg-"))
    closed = [i for i in range(len(segs) - 1) if segs[i].endswith(".log")]
    assert closed, segs                    # (older ones may be sealed already)
    first, nxt = int(segs[closed[0]][4:24]), int(segs[closed[0] + 1][4:24])
    path = os.path.join(spool, segs[closed[0]])
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    assert len(lines) == nxt - first, (len(lines), first, nxt)
    keep = 5                               # the power cut: lines first+5.. gone, one torn
    with open(path, "wb") as f:
        f.write(b"".join(l + b"\n" for l in lines[:keep]) + lines[keep][:40])
    lost = list(range(first + keep, nxt))

    other = os.path.join(enforcer.tmp, "other.jsonl")   # a new sink reads the spool from its start
    enforcer.start(policy(port, hook + f"- {{type: file, path: {other}}}\n", extra))
    traffic(enforcer, port, 3)

    def starts():
        return [e for e in file_events(other) if e["class_uid"] == 6002 and e["activity_name"] == "Start"]
    assert wait_for(lambda: len(starts()) == 2, 10), (len(file_events(other)), enforcer.read_log()[-2000:])

    def reports():
        return [e for e in file_events(other) if e["class_uid"] == 1008 and
                e.get("unmapped", {}).get("loss", {}).get("counter") == "spool_lost"]
    assert wait_for(lambda: reports(), 10)
    enforcer.stop()
    evs = file_events(other)
    got = seqs(evs)
    assert got == sorted(got) and len(got) == len(set(got))
    assert not set(lost) & set(got) and set(got) >= set(range(1, first + keep))
    assert got == [s for s in range(1, max(got) + 1) if s not in lost]
    (rep,) = reports()
    lu = rep["unmapped"]["loss"]
    assert lu["count"] == rep["count"] == len(lost), lu
    assert (lu["first_sequence"], lu["last_sequence"]) == (lost[0], lost[-1])
    assert rep["activity_name"] == "Drop" and rep["severity_id"] >= 3
    assert "ends before sequence" in enforcer.read_log()
    validate_events(evs)
    # the trail says where the lines are missing
    r = enforcer.cli("audit", "verify", other)
    assert r.returncode == 1 and f"sequence {lost[0]}..{lost[-1]} missing" in r.stdout, r.stdout
