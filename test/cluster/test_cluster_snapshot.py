"""Snapshot catch-up: a three-node cluster with a small snapshot threshold (32) and
trailing (8) takes several snapshots under ~150 writes (grpcio creates and updates
spread over the nodes). Node 3 is stopped and its data directory wiped; the operator
removes it (`mhsm cluster remove --id 3`: two voters left); more keys are written while
it is out; node 3 restarts with a join config (no members line, data directory empty)
and the operator adds it back (`mhsm cluster add --id 3 --address ...`). The leader's
log no longer holds the early entries, so node 3 catches up from a snapshot (its log
says it restored one), fetches the domain secret from the others, and then serves
the same keys: its key list equals node 1's, its signature verifies on node 1, and it
decrypts a ciphertext made before the wipe. Status shows three voters again.

Run (needs /usr/bin/python3 with python3-grpcio):
  MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_cluster_snapshot.py
"""

import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64u, unb64u  # noqa: E402

import grpc  # noqa: E402

THRESHOLD = 32
TRAILING = 8
CREATES = 100      # before the wipe, plus UPDATES updates: ~150 raft entries
UPDATES = 50
CREATES_OUT = 40   # while node 3 is out: more than THRESHOLD + TRAILING
OP_TIMEOUT = 120   # one operator command (catch-up included), generous for ASan

h = mhtest.Harness("test_cluster_snapshot")
cl = h.cluster(n=3, election_timeout_ms=1000, heartbeat_ms=100, snapshot_threshold=THRESHOLD,
               snapshot_trailing=TRAILING)
n1, n3 = cl.nodes[0], cl.nodes[2]
# Set by the steps; defaults so a failed step leaves the later ones something to check.
names, out_names, ct0 = [], [], None
secret_msg, dg_before = os.urandom(40), os.urandom(32)


class Api:
    """CreateKey and UpdateKey on one node over grpcio, admin certificate."""

    def __init__(self, node, m):
        creds = grpc.ssl_channel_credentials(
            root_certificates=mhtest.read_bytes(os.path.join(h.certs, "ca.pem")),
            private_key=mhtest.read_bytes(os.path.join(h.certs, "admin.key")),
            certificate_chain=mhtest.read_bytes(os.path.join(h.certs, "admin.pem")))
        self.ch = grpc.secure_channel(node.endpoint, creds)
        ser = lambda x: x.SerializeToString()  # noqa: E731
        T = m["types"]
        self.create = self.ch.unary_unary("/mhsm.v1.Keys/CreateKey", request_serializer=ser,
                                          response_deserializer=T.KeyBundle.FromString)
        self.update = self.ch.unary_unary("/mhsm.v1.Keys/UpdateKey", request_serializer=ser,
                                          response_deserializer=T.KeyBundle.FromString)


def write_keys(apis, prefix, count, updates=0):
    """|count| oct-HSM creates then |updates| tag updates, round-robin over |apis|;
    returns the names created and the list of failures."""
    K = m["keys"]
    names, errors = [], []
    for i in range(count):
        name = "%s-%d" % (prefix, i)
        try:
            apis[i % len(apis)].create(K.CreateKeyRequest(name=name, kty="oct-HSM", key_size=128,
                                                          request_id="%s-c%d" % (prefix, i)),
                                       timeout=60)
            names.append(name)
        except grpc.RpcError as e:
            errors.append(("create", name, e.code().name, e.details()))
    for i in range(updates):
        name = names[i % len(names)] if names else "%s-0" % prefix
        try:
            apis[(i + 1) % len(apis)].update(
                K.UpdateKeyRequest(name=name, tags={"round": str(i)}, replace_tags=True,
                                   request_id="%s-u%d" % (prefix, i)), timeout=60)
        except grpc.RpcError as e:
            errors.append(("update", name, e.code().name, e.details()))
    return names, errors


def snapshot_lines(node, since_start=False):
    return [ln for ln in node.log_text(since_start=since_start).splitlines()
            if "snapshot taken" in ln]


def voters(st):
    """Sorted raft ids of the voters in a status JSON (None if no status)."""
    if not isinstance(st, dict):
        return None
    return sorted(int(x["id"]) for x in st.get("members", []) if x.get("role") == "voter")


def key_list(node):
    r = node.cli("key", "list", quiet=True)
    if r.rc != 0 or not isinstance(r.json, list):
        return None, r
    return sorted(it["kid"] for it in r.json), r


def raft_files(node):
    out = []
    for dp, _, fns in os.walk(node.data_dir):
        out += [os.path.join(dp, f) for f in fns]
    return out


try:
    with h.section("protoc --python_out"):
        m = h.proto_modules()
        h.ok("python modules generated from proto/ and imported")

    with h.section("three nodes (snapshot_threshold %d, trailing %d), activated"
                   % (THRESHOLD, TRAILING)):
        cl.start_all(wait=True)
        # Activation is a write: it needs a leader (UNAVAILABLE, outcome unknown, before).
        h.say("leader before activation: node %d" % (cl.leader(timeout=30) + 1))
        h.expect_ok(cl.activate(via=0), "security-domain download through node 1")
        st = cl.status(0)
        h.check(voters(st) == [1, 2, 3], "status: three voters", st)

    with h.section("keys made before the wipe, a ciphertext"):
        h.expect_ok(n1.cli("key", "create", "--name", "snap-ec", "--kty", "EC-HSM", "--curve",
                           "P-256"), "create snap-ec")
        h.expect_ok(n1.cli("key", "create", "--name", "snap-aes", "--kty", "oct-HSM", "--size",
                           256), "create snap-aes")
        r = n1.cli("key", "encrypt", "--name", "snap-aes", "--algorithm", "A256GCM", "--value",
                   b64u(secret_msg), "--aad", b64u(b"before-wipe"))
        ct0 = h.expect_ok(r, "A256GCM encrypt on node 1 before the wipe")

    with h.section("%d creates and %d updates over all three nodes" % (CREATES, UPDATES)):
        apis = [Api(n, m) for n in cl.nodes]
        names, errors = write_keys(apis, "pre", CREATES, UPDATES)
        h.check(not errors, "every write succeeded", errors[:10])
        for a in apis:
            a.ch.close()
        # Each node snapshots on its own schedule; bounded wait for the last ones.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(len(snapshot_lines(n)) >= 2 for n in cl.nodes):
                break
            time.sleep(0.5)
        for i, n in enumerate(cl.nodes):
            lines = snapshot_lines(n)
            h.check(len(lines) >= 2, "node %d logged `snapshot taken` at least twice (%d)"
                    % (i + 1, len(lines)), lines[-3:])
            if lines:
                h.say("node %d: %s" % (i + 1, lines[-1].strip()))

    with h.section("stop node 3, wipe its data, operator removes it"):
        rc = n3.stop()
        h.check(rc == 0, "node 3: SIGTERM -> exit 0", "exit status %s" % rc)
        n3.wipe_data()
        h.check(not os.path.exists(n3.data_dir), "node 3's data directory is gone")
        li = cl.leader(timeout=30)
        h.say("leader: node %d" % (li + 1))
        r = cl.nodes[li].cli("--timeout", OP_TIMEOUT, "cluster", "remove", "--id", 3,
                             cert="operator", timeout=OP_TIMEOUT + 30)
        h.expect_ok(r, "mhsm cluster remove --id 3 (operator, via the leader)")
        ok = False
        for _ in range(50):  # bounded: the removal commits within a few heartbeats
            sts = [cl.status(i) for i in (0, 1)]
            if all(voters(s) == [1, 2] and all(int(x["id"]) != 3 for x in s.get("members", []))
                   for s in sts):
                ok = True
                break
            time.sleep(0.3)
        h.check(ok, "status on nodes 1 and 2: two voters (1, 2), node 3 not a member", sts)

    with h.section("more writes while node 3 is out"):
        apis = [Api(n, m) for n in cl.nodes[:2]]
        out_names, errors = write_keys(apis, "out", CREATES_OUT)
        h.check(not errors and len(out_names) == CREATES_OUT,
                "%d creates through nodes 1 and 2 succeeded" % CREATES_OUT, errors[:10])
        for a in apis:
            a.ch.close()

    with h.section("node 3 rejoins empty with a join config; operator adds it back"):
        n3.members = None
        n3.join = True
        n3.write_config()
        cfg = mhtest.read_bytes(n3.config_path).decode()
        h.check("join = true" in cfg and not re.search(r"^members\s*=", cfg, re.MULTILINE),
                "node 3's config: join = true, no members line", cfg)
        # The leader as the members see it, asked before node 3 runs: a joining node
        # is no member yet and need not know the leader until it is added.
        li = cl.leader(timeout=30)
        n3.start(wait=False)
        time.sleep(1)
        h.check(n3.running(), "node 3 with an empty data directory and join = true runs",
                n3.log_tail())
        r = cl.nodes[li].cli("--timeout", OP_TIMEOUT, "cluster", "add", "--id", 3, "--address",
                             n3.raft_address, cert="operator", timeout=OP_TIMEOUT + 30)
        h.expect_ok(r, "mhsm cluster add --id 3 --address %s (operator)" % n3.raft_address)
        cl.wait_serving(2, timeout=120)
        h.ok("node 3 serves keys (domain secret fetched from the other members)")

    with h.section("node 3 caught up from a snapshot"):
        log3 = n3.log_text(since_start=True).splitlines()
        restored = [ln for ln in log3 if "snapshot" in ln and re.search(r"restor|install", ln)]
        h.check(bool(restored), "node 3's log shows it restored a snapshot",
                [ln for ln in log3 if "snapshot" in ln][:5] or log3[-15:])
        for ln in restored[:3]:
            h.say("node 3: %s" % ln.strip())
        snaps = [p for p in raft_files(n3) if os.path.basename(p).startswith("snapshot-")]
        h.check(bool(snaps), "node 3's data directory holds a snapshot file",
                [os.path.relpath(p, n3.dir) for p in raft_files(n3)])

    with h.section("node 3 serves the same keys"):
        l1 = l3 = None
        for _ in range(60):  # bounded wait for the last entries to be applied on node 3
            l1, _ = key_list(n1)
            l3, _ = key_list(n3)
            if l1 is not None and l1 == l3:
                break
            time.sleep(0.5)
        h.check(l1 is not None and l1 == l3,
                "node 3's key list equals node 1's (%d keys)" % len(l1 or []),
                l1 and l3 and (sorted(set(l1) ^ set(l3))[:10]))
        want = {"snap-ec", "snap-aes"} | set(names) | set(out_names)
        got = {kid.split("/keys/")[1].split("/")[0] for kid in (l3 or [])}
        h.check(want <= got, "node 3 lists every key written before, and while it was out",
                sorted(want - got)[:10])
        r = n3.cli("key", "show", "--name", "pre-0")
        h.check(r.rc == 0 and r.json["tags"].get("round") is not None,
                "node 3 shows pre-0 with the tags of the updates", r.describe())
        r = n3.cli("key", "sign", "--name", "snap-ec", "--algorithm", "ES256", "--digest",
                   b64u(dg_before))
        sig = h.expect_ok(r, "ES256 sign on node 3")
        if sig:
            v = n1.cli("key", "verify", "--name", "snap-ec", "--algorithm", "ES256", "--digest",
                       b64u(dg_before), "--signature", sig["signature"])
            h.check(v.rc == 0 and v.json == {"isValid": True},
                    "node 3's signature verifies on node 1", v.describe())
        if ct0:
            r = n3.cli("key", "decrypt", "--name", "snap-aes", "--algorithm", "A256GCM",
                       "--value", ct0["result"], "--iv", ct0["iv"], "--tag", ct0["tag"],
                       "--aad", b64u(b"before-wipe"))
            h.check(r.rc == 0 and unb64u(r.json["result"]) == secret_msg,
                    "node 3 decrypts the ciphertext made on node 1 before the wipe",
                    r.describe())
        r = n3.cli("key", "create", "--name", "after-rejoin", "--kty", "EC-HSM", "--curve",
                   "P-256")
        h.expect_ok(r, "a write through node 3 after it rejoined")
        r = n1.cli("key", "show", "--name", "after-rejoin")
        ok = r.rc == 0
        for _ in range(20):  # node 1 may apply it a heartbeat later
            if ok:
                break
            time.sleep(0.3)
            r = n1.cli("key", "show", "--name", "after-rejoin")
            ok = r.rc == 0
        h.check(ok, "node 1 shows the key written through node 3", r.describe())

    with h.section("three voters again"):
        ok, sts = False, None
        for _ in range(50):  # bounded: promotion to voter is part of `cluster add`
            sts = [cl.status(i) for i in range(3)]
            if all(voters(s) == [1, 2, 3] for s in sts):
                ok = True
                break
            time.sleep(0.3)
        h.check(ok, "status on every node: voters 1, 2, 3", sts)
        st3 = sts[2] if sts else None
        h.check(isinstance(st3, dict) and any(int(x["id"]) == 3 and x.get("address") ==
                                              n3.raft_address for x in st3.get("members", [])),
                "node 3 is listed with its raft address", st3)

    with h.section("stop the cluster"):
        for i, n in enumerate(cl.nodes):
            rc = n.stop()
            h.check(rc == 0, "node %d: SIGTERM -> exit 0" % (i + 1), "exit status %s" % rc)
except Exception as e:  # noqa: BLE001 -- outside a section: still a failure
    import traceback
    traceback.print_exc(file=sys.stdout)
    h.fail("unexpected exception", "%s: %s" % (type(e).__name__, e))
finally:
    h.finish()
