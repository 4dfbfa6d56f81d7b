"""Minority: three real mhsmd processes; SIGSTOP two of them and the third must refuse
key operations with UNAVAILABLE and say why, while `health` and `cluster status` keep
answering; SIGCONT and the cluster serves again on all three, a write succeeds and
nothing written before is lost. Two rounds: the two followers, then the leader and
one follower.

The time until the lone node refuses is printed (informational); the only bound is
a generous one on the wait itself (3 x election timeout + 5 s).

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_cluster_minority.py
"""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64u, unb64u  # noqa: E402

ELECTION_MS = 1000
REFUSE_BOUND_S = 3 * ELECTION_MS / 1000.0 + 5

h = mhtest.Harness("test_cluster_minority")
cl = h.cluster(3, election_timeout_ms=ELECTION_MS, heartbeat_ms=100)
N = cl.nodes
written = {}  # name -> kid of every key whose create was acknowledged
attempted = set()  # every name a create was sent for (an unacknowledged one may exist)


def listing_ok(r):
    """Every acknowledged key with its kid, and nothing that was never asked for."""
    got = mhtest.listed_kids(r)
    if got is None:
        return False
    return (all(got.get(n) == kid.rsplit("/", 1)[0] or got.get(n) == kid
                for n, kid in written.items()) and set(got) <= attempted)


def sign_args(name="ec1", digest=None):
    return ["key", "sign", "--name", name, "--algorithm", "ES256", "--digest",
            b64u(digest or os.urandom(32))]


def create(i, name):
    attempted.add(name)
    r = N[i].cli("key", "create", "--name", name, "--kty", "EC-HSM", "--curve", "P-256")
    if r.rc == 0:
        written[name] = mhtest.key_of(r).get("kid")
    return r


def eventually(i, args, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        r = N[i].cli(*args, quiet=True)
        if pred(r) or time.monotonic() >= deadline:
            h.trace(r)
            return r
        time.sleep(0.05)


def all_serve_everything(what):
    for i in range(3):
        cl.wait_serving(i, timeout=60)
        r = eventually(i, ("key", "list"), listing_ok, timeout=10)
        h.check(listing_ok(r), "%s: node%d lists every acknowledged key (%d) and no other "
                "name" % (what, i + 1, len(written)),
                "want %s within %s, got %s" % (sorted(written), sorted(attempted),
                                              sorted(mhtest.listed_kids(r) or {})))
        dg = os.urandom(32)
        r = N[i].cli(*sign_args("ec1", dg))
        h.check(r.rc == 0 and r.json.get("kid") == written["ec1"], "%s: node%d signs" %
                (what, i + 1), r.describe())
        if r.rc == 0:
            j = (i + 1) % 3
            rv = N[j].cli("key", "verify", "--name", "ec1", "--algorithm", "ES256", "--digest",
                          b64u(dg), "--signature", b64u(unb64u(r.json["signature"])))
            h.check(rv.rc == 0 and rv.json.get("isValid") is True,
                    "%s: node%d verifies node%d's signature" % (what, j + 1, i + 1),
                    rv.describe())


def minority_round(rnd, stopped, lone):
    what = "round %d" % rnd
    for i in stopped:
        N[i].sigstop()
    try:
        t = cl.wait_refusing(lone, REFUSE_BOUND_S, args=sign_args())
        r = cl.last
        h.say("%s: node%d refused sign %.2fs after SIGSTOP of %s (informational)" %
              (what, lone + 1, t, ", ".join("node%d" % (i + 1) for i in stopped)))
        h.expect_err(r, "UNAVAILABLE", "%s: lone node%d refuses sign with UNAVAILABLE, saying "
                     "why" % (what, lone + 1),
                     contains=r"leader|quorum|majority|contact|election|heard")
        h.check(len(r.err.split("UNAVAILABLE:", 1)[-1].strip()) >= 10,
                "%s: the refusal carries a message" % what, r.err)
        for args, op in ((["key", "show", "--name", "ec1"], "show"),
                         (["key", "list"], "list"),
                         (["key", "verify", "--name", "ec1", "--algorithm", "ES256", "--digest",
                           b64u(os.urandom(32)), "--signature", b64u(os.urandom(64))],
                          "verify")):
            r = N[lone].cli(*args)
            h.expect_err(r, "UNAVAILABLE", "%s: lone node%d refuses %s" % (what, lone + 1, op))
        r = N[lone].cli("health")
        h.check(r.rc == 0 and isinstance(r.json, dict) and r.json.get("status"),
                "%s: health keeps answering on node%d (%s)" %
                (what, lone + 1, (r.json or {}).get("status")), r.describe())
        s = cl.status(lone)
        h.check(s is not None and s.get("serving") is False and s.get("servingReason"),
                "%s: cluster status answers on node%d: not serving, with a reason" %
                (what, lone + 1), s)
        name = "minority-%d" % rnd
        attempted.add(name)
        r = N[lone].cli("--timeout", "5", "key", "create", "--name", name, "--kty", "EC-HSM")
        h.check(r.rc != 0, "%s: a write on the lone node is not acknowledged (%s)" %
                (what, r.status), r.describe())
        if r.rc == 0:
            written[name] = mhtest.key_of(r).get("kid")
    finally:
        for i in stopped:
            if N[i].paused:
                N[i].sigcont()
    cl.leader(timeout=30)
    r = create(lone, "after-%d" % rnd)
    h.expect_ok(r, "%s: after SIGCONT a write through node%d succeeds" % (what, lone + 1))
    r = N[lone].cli("key", "show", "--name", "after-%d" % rnd)
    h.check(mhtest.key_of(r).get("kid") == written.get("after-%d" % rnd),
            "%s: node%d reads its own write" % (what, lone + 1), r.describe())
    r = create(stopped[0], "after-%d-b" % rnd)
    h.expect_ok(r, "%s: a write through the resumed node%d succeeds" % (what, stopped[0] + 1))
    all_serve_everything("%s after SIGCONT" % what)


with h.section("three nodes, activated, some keys"):
    cl.start_all()
    cl.leader()
    h.expect_ok(cl.activate(via=0), "activate")
    for i, name in enumerate(("ec1", "k2", "k3")):
        h.expect_ok(create(i, name), "create %s through node%d" % (name, i + 1))
    all_serve_everything("before")

if h.failed:  # no point in the rest without a serving, activated cluster
    h.say("setup failed: the remaining sections are skipped")
    h.finish()

with h.section("round 1: SIGSTOP both followers"):
    li = cl.leader()
    fol = cl.followers()
    h.say("leader node%d, followers %s" % (li + 1, ["node%d" % (i + 1) for i in fol]))
    minority_round(1, fol, li)

with h.section("round 2: SIGSTOP the leader and one follower"):
    li = cl.leader()
    fol = cl.followers()
    h.say("leader node%d, followers %s" % (li + 1, ["node%d" % (i + 1) for i in fol]))
    minority_round(2, [li, fol[0]], fol[1])

with h.section("final: every node up, nothing lost"):
    for i in range(3):
        h.check(N[i].running(), "node%d still running (no crash)" % (i + 1),
                N[i].proc.returncode if N[i].proc else None)
    all_serve_everything("final")

h.finish()
