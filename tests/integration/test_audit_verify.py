# SPDX-License-Identifier: Apache-2.0
"""Tamper evidence: `agentgate audit verify` on a real enforcer's file sink."""
import json
import os
import re
import signal
import time

from conftest import connect_code, wait_for


def policy(port):
    return f"""
    version: 1
    agents: [{{name: t-agent}}]
    targets: [{{name: echo, protocol: tcp, address: 127.0.0.1:{port}}}]
    roles: [{{name: r, rules: [{{target: echo}}]}}]
    bindings: [{{role: r, agents: [t-agent]}}]
    """


def run_and_stop(enforcer, servers):
    port, _ = servers.echo()
    enforcer.start(policy(port))
    for _ in range(3):
        enforcer.py("t-agent", connect_code("127.0.0.1", port))        # allowed
        enforcer.py("t-agent", connect_code("127.0.0.1", port + 1))    # refused
    enforcer.stop()
    with open(enforcer.audit) as f:
        lines = f.read().splitlines(keepends=True)
    assert len(lines) >= 5, lines
    return lines


def verify(enforcer, path, *extra):
    r = enforcer.cli("audit", "verify", path, *extra)
    return r.returncode, r.stdout + r.stderr


def write(enforcer, name, lines):
    path = os.path.join(enforcer.tmp, name)
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def broken_line(out):
    m = re.search(r":(\d+): (\S+):", out)
    assert m, out
    return int(m.group(1)), m.group(2)


def test_audit_verify_detects_tampering(enforcer, servers):
    lines = run_and_stop(enforcer, servers)
    evs = [json.loads(l) for l in lines]
    assert all(len(e["metadata"]["prev_hash"]) == 64 for e in evs)
    cps = [i for i, e in enumerate(evs) if "checkpoint" in e.get("unmapped", {})]
    assert cps and cps[-1] == len(lines) - 1, "a clean stop ends with a checkpoint"
    assert evs[cps[-1]]["class_uid"] == 1008
    assert all("PRIVATE" not in l for l in lines)
    key = os.path.join(enforcer.state, "audit-signing.key")
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert os.path.exists(os.path.join(enforcer.state, "audit-signing.pub"))

    rc, out = verify(enforcer, enforcer.audit)
    assert rc == 0, out
    assert f"{len(lines) - len(cps)} events, {len(cps)} checkpoints verified" in out

    k = 2   # 0-based index of a plain event with a successor
    assert k not in cps and k + 1 < len(lines)

    # one byte edited, JSON still valid: named by its line number (1-based)
    ed = list(lines)
    i = ed[k].index('"class_name":"') + len('"class_name":"')
    ed[k] = ed[k][:i] + ("X" if ed[k][i] != "X" else "Y") + ed[k][i + 1:]
    rc, out = verify(enforcer, write(enforcer, "edited.jsonl", ed))
    assert rc == 1, out
    assert broken_line(out) == (k + 1, "edited"), out

    rc, out = verify(enforcer, write(enforcer, "deleted.jsonl", lines[:k] + lines[k + 1:]))
    assert rc == 1, out
    assert broken_line(out) == (k + 1, "deleted"), out

    sw = list(lines)
    sw[k], sw[k + 1] = sw[k + 1], sw[k]
    rc, out = verify(enforcer, write(enforcer, "swapped.jsonl", sw))
    assert rc == 1, out
    assert broken_line(out)[1] == "reordered", out

    c = cps[0]
    bad = list(lines)
    m = re.search(r'"signature":"([0-9a-f])', bad[c])
    flip = "1" if m.group(1) != "1" else "2"
    bad[c] = bad[c][:m.start(1)] + flip + bad[c][m.end(1):]
    rc, out = verify(enforcer, write(enforcer, "badsig.jsonl", bad))
    assert rc == 1, out
    assert broken_line(out) == (c + 1, "bad-signature"), out

    # a public key that did not sign: every checkpoint fails
    other = os.path.join(enforcer.tmp, "other-state")
    os.makedirs(other, mode=0o700)
    gen = os.path.join(enforcer.tmp, "gen.pem")
    assert os.system(f"openssl genpkey -algorithm ed25519 -out {gen} && "
                     f"openssl pkey -in {gen} -pubout -out {other}/audit-signing.pub") == 0
    rc, out = verify(enforcer, enforcer.audit, "--pubkey", f"{other}/audit-signing.pub")
    assert rc == 1, out
    assert broken_line(out) == (c + 1, "bad-signature"), out

    # a tail cut off after the last checkpoint is a warning, not a break
    rc, out = verify(enforcer, write(enforcer, "tail.jsonl", lines[:-1]))
    assert rc == 0 and "not signed" in out, out

    rc, out = verify(enforcer, enforcer.audit, "--bogus")
    assert rc == 2, out

    # Found by review (stop 17). A rotated file can start with a checkpoint:
    # it was reported broken (the events it counts are in the file before).
    rc, out = verify(enforcer, write(enforcer, "from-cp.jsonl", lines[cps[0]:]), "--strict")
    assert rc == 0 and "continues a chain" in out, out
    # A run that starts from a zero head is tied to nothing before it: the
    # file's own first run appended again verified clean; it is a warning
    # now, and --strict fails it.
    twice = write(enforcer, "twice.jsonl", lines + lines)
    rc, out = verify(enforcer, twice)
    assert rc == 0 and "started a new chain" in out and "warning" in out, out
    rc, out = verify(enforcer, twice, "--strict")
    assert rc == 1, out
    # The last line (the stop checkpoint) is chained to nothing after it: a
    # duplicate key made it say two things (a SIEM may take the first
    # class_uid, jansson the last). A duplicate key is malformed.
    dup = lines[:-1] + ['{"class_uid":4001,"dst_endpoint":{"ip":"10.6.6.6","port":22},' + lines[-1][1:]]
    rc, out = verify(enforcer, write(enforcer, "dup.jsonl", dup))
    assert rc == 1 and broken_line(out) == (len(lines), "malformed"), out
    # what cannot be read is an error (exit 2), not an empty file
    rc, out = verify(enforcer, enforcer.tmp)
    assert rc == 2 and "Is a directory" in out, out
    # a clean stop ends with a stop checkpoint, signed as such: taking the
    # mark off makes the signature fail (a file cut after a periodic
    # checkpoint is told apart: test_audit_chain.c)
    assert '"stop":true' in lines[-1] and all('"stop"' not in lines[i] for i in cps[:-1]), lines[-1]
    unstop = lines[:-1] + [lines[-1].replace('"stop":true,', "").replace(',"stop":true', "")]
    assert unstop[-1] != lines[-1]
    rc, out = verify(enforcer, write(enforcer, "unstop.jsonl", unstop))
    assert rc == 1 and broken_line(out) == (len(lines), "bad-signature"), out
    # nothing signed: --strict fails
    rc, out = verify(enforcer, write(enforcer, "empty.jsonl", []), "--strict")
    assert rc == 1 and "no checkpoint" in out, out


def test_audit_chain_continues_across_restart(enforcer, servers):
    run_and_stop(enforcer, servers)
    lines = run_and_stop(enforcer, servers)
    evs = [json.loads(l) for l in lines]
    starts = [e for e in evs if e["class_uid"] == 6002 and e["activity_name"] == "Start"]
    assert len(starts) == 2, "two runs appended to one file"
    # the sequence is the spool's: the second run continues it
    assert [e["metadata"]["sequence"] for e in evs] == list(range(1, len(evs) + 1))
    rc, out = verify(enforcer, enforcer.audit)
    assert rc == 0, out
    assert "warning" not in out, out


def test_checkpoint_lost_in_a_crash_does_not_break_the_next_count(enforcer, servers):
    """A checkpoint stamped (its sequence saved in checkpoint-seq) whose line
    a SIGKILL lost before it reached the spool: the next run must count from
    the newest checkpoint the spool still holds, or its first checkpoint's
    count is short and `audit verify` reports a tampered trail that is not
    (review, stop 19). The lost checkpoint is made by hand: the newest entry
    of checkpoint-seq names a sequence past the spool's end."""
    run_and_stop(enforcer, servers)            # ends with a stop checkpoint at S
    path = os.path.join(enforcer.state, "spool", "checkpoint-seq")
    with open(path) as f:
        nums = [int(x) for x in f.read().split() if int(x)]
    # a second run whose events after S no checkpoint covers, killed
    port, _ = servers.echo()
    enforcer.start(policy(port))
    for _ in range(3):
        enforcer.py("t-agent", connect_code("127.0.0.1", port + 1))    # refused
    assert wait_for(lambda: sum(1 for _ in open(enforcer.audit)) >= len(nums) and
                    "Refuse" in open(enforcer.audit).read().rsplit("Start", 1)[-1], timeout=5)
    time.sleep(0.5)
    enforcer.stop(signal.SIGKILL)
    with open(enforcer.audit) as f:
        spooled = json.loads(f.read().splitlines()[-1])["metadata"]["sequence"]
    # ... with a checkpoint it stamped past the spool's end, lost with it
    with open(path, "w") as f:
        f.write("".join(f"{n:020d}\n" for n in [spooled + 1000, *nums]))
    run_and_stop(enforcer, servers)
    rc, out = verify(enforcer, enforcer.audit)
    assert rc == 0, out


def test_line_appended_after_a_clean_stop_is_not_signed_by_the_next_run(enforcer, servers):
    """Review (stop 48): an event appended to the audit file after a clean
    stop, with the next sequence and the right prev_hash (both computable
    from the file), was taken back into the spool at the next start as if
    a power cut had left the spool short, and the next run's checkpoint
    signed it: `audit verify --strict` passed a forged event. After a clean
    stop nothing is taken back: the forged line stays unsigned and the
    chain breaks where the next run begins."""
    import hashlib
    lines = run_and_stop(enforcer, servers)
    last = lines[-1].rstrip("\n")
    ev = json.loads(lines[-2])
    ev["message"] = "FORGED: the agent did nothing wrong"
    ev["metadata"]["sequence"] = json.loads(last)["metadata"]["sequence"] + 1
    ev["metadata"]["prev_hash"] = hashlib.sha256(last.encode()).hexdigest()
    with open(enforcer.audit, "a") as f:
        f.write(json.dumps(ev, separators=(",", ":")) + "\n")
    rc, out = verify(enforcer, enforcer.audit)
    assert rc == 0 and "not signed" in out, out            # before: an unsigned tail
    run_and_stop(enforcer, servers)
    assert "did not write: left unsigned" in enforcer.read_log()
    rc, out = verify(enforcer, enforcer.audit, "--strict")
    assert rc == 1, out
    line, kind = broken_line(out)
    assert line == len(lines) + 2, out                     # the next run's first line
