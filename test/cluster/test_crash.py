"""Crash safety: kill -9 mhsmd in the middle of a burst of creates (3 parallel CLI
loops); after a restart on the same data directory, with no custodian involved,
every create that was acknowledged (exit 0) is present with the same kid and is
usable, and no key appears that nobody asked for. Repeated for a few rounds; keys
of earlier rounds must survive later crashes too.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_crash.py
"""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64u, unb64u  # noqa: E402

ROUNDS = 3
LOOPS = 3
PER_LOOP = 20  # creates attempted per loop and round (at most)
KILL_AFTER = 25  # acknowledged creates (of up to 60) in this round before the kill -9
KTYS = (("EC-HSM", ["--curve", "P-256"]), ("oct-HSM", ["--size", "256"]),
        ("RSA-HSM", ["--size", "2048"]))

h = mhtest.Harness("test_crash")
node = h.node("node1")
acked = {}  # name -> (kty, kid): every create that returned 0
attempted = set()
lock = threading.Lock()


def burst_loop(rnd, loop, stop):
    fails = 0
    for i in range(PER_LOOP):
        if stop.is_set() and fails >= 2:
            return
        kty, extra = KTYS[(loop + i) % len(KTYS)]
        name = "r%d-l%d-k%02d" % (rnd, loop, i)
        with lock:
            attempted.add(name)
        r = node.cli("key", "create", "--name", name, "--kty", kty, *extra, "--timeout", "20",
                     quiet=True, timeout=60)
        if r.rc == 0 and isinstance(r.json, dict):
            with lock:
                acked[name] = (kty, r.json["key"]["kid"])
            fails = 0
        else:
            fails += 1
            if not stop.is_set():
                # Before the kill every create must succeed.
                with lock:
                    errors.append(r.describe())


def use_key(name, kty):
    """True when the key performs its operation end to end."""
    if kty == "oct-HSM":
        msg = os.urandom(40)
        r = node.cli("key", "encrypt", "--name", name, "--algorithm", "A256GCM", "--value",
                     b64u(msg), quiet=True)
        if r.rc != 0:
            return False, r.describe()
        g = r.json
        r = node.cli("key", "decrypt", "--name", name, "--algorithm", "A256GCM", "--value",
                     g["result"], "--iv", g["iv"], "--tag", g["tag"], quiet=True)
        return r.rc == 0 and unb64u(r.json["result"]) == msg, r.describe()
    alg = "ES256" if kty == "EC-HSM" else "PS256"
    dg = os.urandom(32)
    r = node.cli("key", "sign", "--name", name, "--algorithm", alg, "--digest", b64u(dg),
                 quiet=True)
    if r.rc != 0:
        return False, r.describe()
    r = node.cli("key", "verify", "--name", name, "--algorithm", alg, "--digest", b64u(dg),
                 "--signature", r.json["signature"], quiet=True)
    return r.rc == 0 and r.json == {"isValid": True}, r.describe()


errors = []
try:
    node.start()
    with h.section("activate"):
        h.expect_ok(node.activate(), "security-domain download")

    for rnd in range(ROUNDS):
        with h.section("round %d: burst of creates, kill -9, restart" % (rnd + 1)):
            errors.clear()
            before = len(acked)
            stop = threading.Event()
            threads = [threading.Thread(target=burst_loop, args=(rnd, i, stop), daemon=True)
                       for i in range(LOOPS)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 300
            while (time.monotonic() < deadline and len(acked) - before < KILL_AFTER
                   and any(t.is_alive() for t in threads)):
                time.sleep(0.05)
            stop.set()
            node.kill9()
            for t in threads:
                t.join(timeout=300)
            h.check(not any(t.is_alive() for t in threads), "burst loops ended")
            n_round = len(acked) - before
            h.check(n_round >= KILL_AFTER,
                    "at least %d creates acknowledged before the kill (%d)" % (KILL_AFTER,
                                                                              n_round))
            h.check(not errors, "no create failed before the kill", "; ".join(errors[:3]))
            h.say("round %d: %d acknowledged, %d attempted in total" % (rnd + 1, n_round,
                                                                        len(attempted)))
            node.start()
            r = node.cli("security-domain", "show")
            h.check(r.rc == 0 and r.json.get("activationStatus") == "Active",
                    "Active after restart, without any custodian", r.describe())
            missing, wrong = [], []
            for name, (kty, kid) in sorted(acked.items()):
                r = node.cli("key", "show", "--name", name, quiet=True)
                if r.rc != 0:
                    missing.append("%s (%s)" % (name, r.err.strip()[:100]))
                elif r.json["key"]["kid"] != kid or r.json["key"]["kty"] != kty:
                    wrong.append(name)
            h.check(not missing, "every acknowledged key (%d) present after restart" % len(acked),
                    "missing: %s" % missing[:5])
            h.check(not wrong, "every acknowledged key has its acknowledged kid and kty",
                    wrong[:5])
            unusable = []
            for name, (kty, kid) in sorted(acked.items()):
                if name.startswith("r%d-" % rnd) or name.endswith("-k00"):
                    ok, detail = use_key(name, kty)
                    if not ok:
                        unusable.append("%s: %s" % (name, detail))
            h.check(not unusable, "acknowledged keys of this round (and the first of each "
                    "loop of earlier rounds) sign/verify or encrypt/decrypt", unusable[:3])
            r = node.cli("key", "list")
            listed = set()
            if r.rc == 0 and isinstance(r.json, list):
                listed = {it["kid"].split("/keys/", 1)[1].split("/")[0] for it in r.json}
            h.check(r.rc == 0 and set(acked) <= listed <= attempted,
                    "list: every acknowledged key, nothing never asked for",
                    "extra %s missing %s" % (sorted(listed - attempted)[:5],
                                             sorted(set(acked) - listed)[:5]))
            for name in sorted(listed - set(acked)):
                # A create in flight at the kill may have committed: it must then be whole.
                r = node.cli("key", "show", "--name", name, quiet=True)
                if r.rc == 0:
                    kty = r.json["key"]["kty"]
                    ok, detail = use_key(name, kty)
                    h.check(ok, "in-flight create %s that committed is usable" % name, detail)

    with h.section("final SIGTERM"):
        r = node.cli("key", "create", "--name", "final", "--kty", "EC-HSM", "--curve", "P-256")
        h.expect_ok(r, "create after the crashes")
        rc = node.stop()
        h.check(rc == 0, "SIGTERM -> exit 0", "exit status %s" % rc)
except Exception as e:  # noqa: BLE001 -- outside a section: still a failure
    import traceback
    traceback.print_exc(file=sys.stdout)
    h.fail("unexpected exception", "%s: %s" % (type(e).__name__, e))
finally:
    h.finish()
