"""Three real mhsmd processes on loopback, one raft group: activation through a
follower, keys created on node 1 and used on nodes 2 and 3 (show, list, sign, verify,
encrypt, decrypt across nodes), writes through followers with read-your-writes on the
node asked, listings that agree, a disable that the other nodes honour within a
heartbeat or so, cluster status agreement, leadership transfer, the operator/node/app
certificate boundaries, and a SIGTERMed follower that rejoins from its data directory
and serves without any custodian.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_cluster_replication.py
"""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64u, unb64u  # noqa: E402

# Bounded wait for a node other than the one asked to see a committed change: it
# learns the commit index with the next heartbeat (100 ms); generous for a loaded VM.
PROPAGATION_S = 3.0

h = mhtest.Harness("test_cluster_replication")
cl = h.cluster(3, election_timeout_ms=1000, heartbeat_ms=100)
N = cl.nodes
st = {}


def list_names(r):
    kids = mhtest.listed_kids(r)
    return None if kids is None else sorted(kids)


def is_valid(r):
    return r.rc == 0 and isinstance(r.json, dict) and r.json.get("isValid") is True


def sign(i, name, alg, digest):
    return N[i].cli("key", "sign", "--name", name, "--algorithm", alg, "--digest", b64u(digest))


def verify(i, name, alg, digest, sig):
    return N[i].cli("key", "verify", "--name", name, "--algorithm", alg, "--digest",
                    b64u(digest), "--signature", b64u(sig))


def eventually(i, args, pred, timeout=PROPAGATION_S):
    """Runs `mhsm args` on node i until pred(result) holds or |timeout| passes;
    returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        r = N[i].cli(*args, quiet=True)
        if pred(r) or time.monotonic() >= deadline:
            h.trace(r)
            return r
        time.sleep(0.05)


def voters(s):
    return sorted(int(m["id"]) for m in (s or {}).get("members", []) if m.get("role") == "voter")


def check_status_agreement(what):
    # Right after a leader change a follower serves only once it applied what the new
    # leader had committed (its barrier entry): wait for that, bounded.
    deadline = time.monotonic() + 10
    while True:
        sts = [cl.status(i) for i in range(3)]
        if all(s and s.get("serving") is True for s in sts) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    leaders = {int(s.get("leaderId") or 0) for s in sts if s}
    h.check(all(sts) and len(leaders) == 1 and 0 not in leaders,
            "%s: every node's status names the same leader" % what,
            [(s or {}).get("leaderId") for s in sts])
    h.check(all(voters(s) == [1, 2, 3] for s in sts),
            "%s: every node's status lists voters 1, 2, 3" % what, [voters(s) for s in sts])
    for i, s in enumerate(sts):
        if s:
            h.check(int(s.get("nodeId") or 0) == i + 1 and s.get("serving") is True,
                    "%s: node %d answers for itself and serves" % (what, i + 1),
                    {k: s.get(k) for k in ("nodeId", "state", "serving", "servingReason")})
    return sts


with h.section("three nodes up, one leader"):
    cl.start_all()
    li = cl.leader()
    st["leader"] = li
    h.ok("leader elected: node%d" % (li + 1))
    s = cl.status(li)
    h.check(s is not None and s.get("state") == "leader" and voters(s) == [1, 2, 3],
            "leader's status: state leader, voters 1,2,3", s)
    r = N[li].cli("key", "list")
    h.expect_err(r, ("FAILED_PRECONDITION", "UNAVAILABLE"),
                 "before activation the key plane is refused", contains="domain|activ")

with h.section("activate through a follower; every member gets the domain"):
    fol = cl.followers()
    h.check(len(fol) == 2, "two followers", fol)
    r = cl.activate(via=fol[0])
    h.expect_ok(r, "security-domain download through follower node%d" % (fol[0] + 1))
    for i in range(3):
        r = N[i].cli("security-domain", "show")
        h.check(r.rc == 0 and (r.json or {}).get("activationStatus") == "Active",
                "node%d: security domain Active" % (i + 1), r.describe())
        r = N[i].cli("key", "list")
        h.check(r.rc == 0 and list_names(r) == [], "node%d: key list empty and served" % (i + 1),
                r.describe())

if h.failed:  # no point in the rest without a serving, activated cluster
    h.say("setup failed: the remaining sections are skipped")
    h.finish()

with h.section("create RSA, EC, oct on node 1; read-your-writes there"):
    kids = {}
    for name, args in (("rsa1", ("--kty", "RSA-HSM", "--size", "2048")),
                       ("ec1", ("--kty", "EC-HSM", "--curve", "P-256")),
                       ("oct1", ("--kty", "oct-HSM", "--size", "256"))):
        r = N[0].cli("key", "create", "--name", name, *args)
        kid = mhtest.key_of(r).get("kid")
        h.check(r.rc == 0 and kid, "create %s on node1" % name, r.describe())
        kids[name] = kid
        r = N[0].cli("key", "show", "--name", name)
        h.check(kid and mhtest.key_of(r).get("kid") == kid,
                "node1 shows %s right after creating it" % name,
                r.describe())
    st["kids"] = kids

with h.section("show and list on nodes 2 and 3"):
    kids = st["kids"]
    for i in (1, 2):
        for name, kid in sorted(kids.items()):
            r = eventually(i, ("key", "show", "--name", name),
                           lambda r, kid=kid: mhtest.key_of(r).get("kid") == kid)
            h.check(kid and mhtest.key_of(r).get("kid") == kid,
                    "node%d shows %s (same kid)" % (i + 1, name),
                    r.describe())
        pub0 = mhtest.key_of(N[0].cli("key", "show", "--name", "rsa1", quiet=True))
        pubi = mhtest.key_of(N[i].cli("key", "show", "--name", "rsa1", quiet=True))
        h.check(pub0.get("n") and pub0.get("n") == pubi.get("n"),
                "node%d: same RSA public key as node1" % (i + 1))
        r = N[i].cli("key", "list")
        h.check(list_names(r) == sorted(kids), "node%d lists the three keys" % (i + 1),
                r.describe())

with h.section("sign on node 3, verify on node 1 (and with openssl)"):
    for name, alg, dlen in (("ec1", "ES256", 32), ("rsa1", "RS256", 32), ("rsa1", "PS256", 32)):
        dg = os.urandom(dlen)
        r = sign(2, name, alg, dg)
        sig = unb64u(r.json["signature"]) if r.rc == 0 else b""
        h.check(r.rc == 0 and r.json.get("kid") == st["kids"][name],
                "node3 signs with %s %s" % (name, alg), r.describe())
        h.check(is_valid(verify(0, name, alg, dg, sig)),
                "node1 verifies node3's %s signature" % alg)
        h.check(is_valid(verify(1, name, alg, dg, sig)),
                "node2 verifies node3's %s signature" % alg)
        bad = bytearray(dg)
        bad[0] ^= 1
        r = verify(0, name, alg, bytes(bad), sig)
        h.check(r.rc == 0 and r.json.get("isValid") is False,
                "node1: %s signature over another digest is invalid" % alg, r.describe())
    dg = os.urandom(32)
    r = sign(2, "ec1", "ES256", dg)
    if r.rc == 0:
        pub = os.path.join(h.tmp, "ec1-pub.pem")
        with open(pub, "w") as f:
            f.write(mhtest.public_pem_from_jwk(mhtest.key_of(N[0].cli("key", "show", "--name", "ec1"))))
        der = mhtest.ecdsa_raw_to_der(unb64u(r.json["signature"]))
        sigf = os.path.join(h.tmp, "ec1.sig")
        with open(sigf, "wb") as f:
            f.write(der)
        rc, out, err = mhtest.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub,
                                   "-sigfile", sigf], input_bytes=dg)
        h.check(rc == 0, "openssl verifies node3's ES256 signature with node1's public key",
                err)

with h.section("encrypt on node 2, decrypt on node 3"):
    msg = b"replicated secret \x00\xff" + os.urandom(16)
    r = N[1].cli("key", "encrypt", "--name", "rsa1", "--algorithm", "RSA-OAEP-256", "--value",
                 b64u(msg))
    h.check(r.rc == 0, "node2: RSA-OAEP-256 encrypt", r.describe())
    if r.rc == 0:
        r = N[2].cli("key", "decrypt", "--name", "rsa1", "--algorithm", "RSA-OAEP-256",
                     "--value", r.json["result"])
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg,
                "node3 decrypts node2's RSA-OAEP-256 ciphertext", r.describe())
    aad = b"aad-v1"
    r = N[1].cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                 b64u(msg), "--aad", b64u(aad))
    h.check(r.rc == 0, "node2: A256GCM encrypt", r.describe())
    if r.rc == 0:
        g = r.json
        r = N[2].cli("key", "decrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                     g["result"], "--iv", g["iv"], "--tag", g["tag"], "--aad", b64u(aad))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg,
                "node3 decrypts node2's A256GCM ciphertext", r.describe())
        r = N[0].cli("key", "decrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                     g["result"], "--iv", g["iv"], "--tag", g["tag"], "--aad", b64u(b"other"))
        h.expect_err(r, "INVALID_ARGUMENT", "node1: A256GCM decrypt with another AAD refused")
    cek = os.urandom(32)
    r = N[2].cli("key", "wrap", "--name", "rsa1", "--algorithm", "RSA-OAEP-256", "--value",
                 b64u(cek))
    h.check(r.rc == 0, "node3: wrap", r.describe())
    if r.rc == 0:
        r = N[0].cli("key", "unwrap", "--name", "rsa1", "--algorithm", "RSA-OAEP-256",
                     "--value", r.json["result"])
        h.check(r.rc == 0 and unb64u(r.json["result"]) == cek, "node1 unwraps node3's wrap",
                r.describe())

with h.section("writes through followers, read-your-writes on the node asked"):
    fol = cl.followers()
    for k, fi in enumerate(fol):
        f = N[fi]
        name = "fw%d" % (k + 1)
        tag = "n%d" % (fi + 1)
        r = f.cli("key", "create", "--name", name, "--kty", "EC-HSM", "--curve", "P-384")
        kid = mhtest.key_of(r).get("kid")
        h.check(r.rc == 0 and kid, "follower node%d: create %s" % (fi + 1, name), r.describe())
        r = f.cli("key", "show", "--name", name)
        h.check(kid and mhtest.key_of(r).get("kid") == kid,
                "node%d shows %s right after creating it" % (fi + 1, name), r.describe())
        r = f.cli("key", "set-attributes", "--name", name, "--tags", "via=" + tag)
        h.check(r.rc == 0 and (r.json or {}).get("tags") == {"via": tag},
                "follower node%d: set-attributes tags" % (fi + 1), r.describe())
        r = f.cli("key", "show", "--name", name)
        h.check(r.rc == 0 and r.json.get("tags") == {"via": tag},
                "node%d shows the new tags right after" % (fi + 1), r.describe())
        r = f.cli("key", "rotate", "--name", name)
        kid2 = mhtest.key_of(r).get("kid")
        h.check(r.rc == 0 and kid2 and kid2 != kid, "follower node%d: rotate" % (fi + 1),
                r.describe())
        r = f.cli("key", "show", "--name", name)
        h.check(kid2 and mhtest.key_of(r).get("kid") == kid2,
                "node%d shows the rotated version right after" % (fi + 1), r.describe())
        r = f.cli("key", "list-versions", "--name", name)
        h.check(r.rc == 0 and isinstance(r.json, list) and len(r.json) == 2,
                "node%d lists two versions right after" % (fi + 1), r.describe())
        r = f.cli("key", "delete", "--name", name)
        h.check(r.rc == 0 and (r.json or {}).get("recoveryId"),
                "follower node%d: delete" % (fi + 1), r.describe())
        h.expect_err(f.cli("key", "show", "--name", name), "NOT_FOUND",
                     "node%d: %s not found right after the delete" % (fi + 1, name))
        r = f.cli("key", "show-deleted", "--name", name)
        h.expect_ok(r, "node%d: show-deleted right after" % (fi + 1))
        r = f.cli("key", "recover", "--name", name)
        h.check(kid2 and mhtest.key_of(r).get("kid") == kid2, "follower node%d: recover" % (fi + 1),
                r.describe())
        r = f.cli("key", "show", "--name", name)
        h.check(kid2 and mhtest.key_of(r).get("kid") == kid2,
                "node%d shows %s right after the recover" % (fi + 1, name), r.describe())
        dg = os.urandom(48)
        r = f.cli("key", "sign", "--name", name, "--algorithm", "ES384", "--digest", b64u(dg))
        h.check(r.rc == 0 and r.json.get("kid") == kid2,
                "node%d signs with the rotated, recovered key right after" % (fi + 1),
                r.describe())
        if r.rc == 0:
            other = [i for i in range(3) if i != fi][0]
            rv = eventually(other, ("key", "verify", "--name", name, "--algorithm", "ES384",
                                    "--digest", b64u(dg), "--signature", r.json["signature"]),
                            is_valid)
            h.check(is_valid(rv), "node%d verifies it" % (other + 1), rv.describe())
        if kid:
            st.setdefault("fw", []).append(name)
    r = N[fol[0]].cli("key", "create", "--name", "gone", "--kty", "EC-HSM")
    h.expect_ok(r, "follower node%d: create gone" % (fol[0] + 1))
    h.expect_ok(N[fol[1]].cli("key", "delete", "--name", "gone"),
                "follower node%d: delete gone" % (fol[1] + 1))
    r = N[fol[0]].cli("key", "create", "--name", "gone", "--kty", "EC-HSM")
    h.expect_err(r, "FAILED_PRECONDITION", "follower node%d: create on a name deleted through "
                 "the other follower is refused (the leader's answer is forwarded)" %
                 (fol[0] + 1), contains=r"recover|purge")

with h.section("key list agrees on all three nodes"):
    want = sorted(list(st["kids"]) + st.get("fw", []))
    lists = [eventually(i, ("key", "list"), lambda r: list_names(r) == want) for i in range(3)]
    for i, r in enumerate(lists):
        h.check(list_names(r) == want, "node%d lists %s" % (i + 1, want), r.describe())
    kid_sets = [sorted(it["kid"] for it in (r.json or [])) for r in lists]
    h.check(kid_sets[0] == kid_sets[1] == kid_sets[2], "the three listings agree kid for kid",
            kid_sets)

with h.section("a key disabled through node 2 is refused everywhere"):
    dg = os.urandom(32)
    r = N[1].cli("key", "set-attributes", "--name", "ec1", "--enabled", "false")
    h.check(r.rc == 0 and r.json["attributes"]["enabled"] is False,
            "node2: set-attributes --enabled false", r.describe())
    h.expect_err(sign(1, "ec1", "ES256", dg), "FAILED_PRECONDITION",
                 "node2 refuses sign right after (no wait)", contains="disabled")
    # The leader answered the update only once every member applied it (or had
    # stopped serving): no node may sign with the old state, not even once.
    for i in (0, 2):
        h.expect_err(sign(i, "ec1", "ES256", dg), "FAILED_PRECONDITION",
                     "node%d refuses sign with the disabled key right after (no wait)" % (i + 1),
                     contains="disabled")
    r = N[2].cli("key", "set-attributes", "--name", "ec1", "--enabled", "true")
    h.expect_ok(r, "node3: re-enable")
    h.expect_ok(sign(2, "ec1", "ES256", dg), "node3 signs right after re-enabling")
    r = eventually(0, ("key", "sign", "--name", "ec1", "--algorithm", "ES256", "--digest",
                       b64u(dg)), lambda r: r.rc == 0)
    h.expect_ok(r, "node1 signs again")

with h.section("a disable while a follower is paused, then the follower resumes"):
    # The paused member cannot acknowledge the apply, so the leader answers after
    # the election-timeout fallback; once resumed, the member must not serve the
    # old state even before it heard from the leader again (lease gap).
    dg = os.urandom(32)
    li = cl.leader()
    f = [i for i in range(3) if i != li][0]
    # A sign request already on an open connection when the member resumes is read in
    # the same poll as the leader's queued heartbeats: it must still be refused.
    import grpc  # noqa: E402 -- python3-grpcio, only this section needs it
    m = h.proto_modules(("types", "keys", "crypto"))
    rd = mhtest.read_bytes
    creds = grpc.ssl_channel_credentials(rd(os.path.join(h.certs, "ca.pem")),
                                         rd(os.path.join(h.certs, "admin.key")),
                                         rd(os.path.join(h.certs, "admin.pem")))
    ch = grpc.secure_channel(N[f].endpoint, creds)
    gsign = ch.unary_unary("/mhsm.v1.Crypto/Sign",
                           request_serializer=lambda x: x.SerializeToString(),
                           response_deserializer=m["crypto"].SignResponse.FromString)
    sreq = m["crypto"].SignRequest(name="ec1", alg="ES256", digest=dg)
    gsign(sreq, timeout=30)  # connected and served before the pause
    N[f].sigstop()
    try:
        time.sleep(1.5)
        t0 = time.monotonic()
        r = N[li].cli("key", "set-attributes", "--name", "ec1", "--enabled", "false")
        h.check(r.rc == 0 and r.json["attributes"]["enabled"] is False,
                "leader: set-attributes --enabled false with node%d paused (%.2fs)" %
                (f + 1, time.monotonic() - t0), r.describe())
        fut = gsign.future(sreq, timeout=30)
        time.sleep(0.3)
    finally:
        N[f].sigcont()
    try:
        fut.result()
        h.fail("resumed node%d refuses the queued sign (it signed with the old state)" % (f + 1))
    except grpc.RpcError as e:
        h.check(e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE),
                "resumed node%d refuses the queued sign (%s)" % (f + 1, e.code()), e.details())
    ch.close()
    r = sign(f, "ec1", "ES256", dg)
    h.check(r.rc != 0 and r.status in ("FAILED_PRECONDITION", "UNAVAILABLE"),
            "resumed node%d refuses sign right away (disabled or catching up)" % (f + 1),
            r.describe())
    r = eventually(f, ("key", "sign", "--name", "ec1", "--algorithm", "ES256", "--digest",
                       b64u(dg)), lambda r: r.status == "FAILED_PRECONDITION", timeout=10)
    h.expect_err(r, "FAILED_PRECONDITION", "resumed node%d: key disabled" % (f + 1),
                 contains="disabled")
    r = N[li].cli("key", "set-attributes", "--name", "ec1", "--enabled", "true")
    h.expect_ok(r, "leader: re-enable")
    for i in range(3):
        h.expect_ok(sign(i, "ec1", "ES256", dg), "node%d signs right after re-enabling" % (i + 1))

with h.section("cluster status agrees"):
    sts = check_status_agreement("before transfer")
    s = sts[0] or {}
    h.check(all(isinstance(s.get(k), (int, str)) for k in ("term", "commitIndex",
                                                           "appliedIndex", "lastIndex")),
            "status carries term, commit/applied/last index", s)
    r = N[0].cli("cluster", "status", "--output", "table", cert="operator")
    rows = [ln for ln in r.out.splitlines() if ln.strip()]
    h.check(r.rc == 0 and sum(1 for ln in rows if "voter" in ln) == 3,
            "cluster status --output table: one row per voter", r.describe())

with h.section("transfer leadership to a follower"):
    old = cl.leader()
    target = cl.followers()[0]
    tid = N[target].raft_id
    new = None
    for attempt in range(3):
        r = N[old].cli("cluster", "transfer", "--id", tid, cert="operator")
        h.check(r.rc == 0, "cluster transfer --id %d (attempt %d) exits 0" % (tid, attempt + 1),
                r.describe())
        new = cl.leader()
        if new == target:
            break
        h.say("raft picked node%d (best effort in raft 0.15); retrying" % (new + 1))
    h.say("leader after transfer: node%d (wanted node%d)" % (new + 1, target + 1))
    h.check(new is not None, "a leader after the transfer")
    check_status_agreement("after transfer")
    r = N[new].cli("key", "create", "--name", "after-transfer", "--kty", "oct-HSM", "--size",
                   "256")
    h.expect_ok(r, "create on the new leader")
    st["kids"]["after-transfer"] = mhtest.key_of(r).get("kid")
    old_f = [i for i in range(3) if i != new][0]
    r = N[old_f].cli("key", "create", "--name", "after-transfer2", "--kty", "EC-HSM")
    h.expect_ok(r, "create through a follower of the new leader")
    st["kids"]["after-transfer2"] = mhtest.key_of(r).get("kid")
    for i in range(3):
        r = eventually(i, ("key", "show", "--name", "after-transfer2"), lambda r: r.rc == 0)
        h.expect_ok(r, "node%d serves after the transfer" % (i + 1))

with h.section("certificate boundaries: app, admin, node certificates"):
    for c in ("app", "admin"):
        r = N[0].cli("cluster", "status", cert=c)
        h.expect_err(r, "PERMISSION_DENIED", "%s certificate: cluster status denied" % c)
    r = N[1].cli("cluster", "transfer", cert="app")
    h.expect_err(r, "PERMISSION_DENIED", "app certificate: cluster transfer denied")
    r = N[0].cli("key", "list", cert="node2")
    h.expect_err(r, "PERMISSION_DENIED", "node2 certificate: key list denied (data plane)")
    r = N[2].cli("key", "sign", "--name", "ec1", "--algorithm", "ES256", "--digest",
                 b64u(os.urandom(32)), cert="node1")
    h.expect_err(r, "PERMISSION_DENIED", "node1 certificate: sign denied")

with h.section("a SIGTERMed follower rejoins from its data directory"):
    fi = cl.followers()[0]
    f = N[fi]
    rc = f.stop()
    h.check(rc == 0, "SIGTERM node%d -> exit 0" % (fi + 1), rc)
    up = [i for i in range(3) if i != fi]
    r = N[up[0]].cli("key", "create", "--name", "while-down", "--kty", "RSA-HSM", "--size",
                     "2048")
    h.expect_ok(r, "create while node%d is down (2 of 3 up)" % (fi + 1))
    st["kids"]["while-down"] = mhtest.key_of(r).get("kid")
    r = N[up[1]].cli("key", "delete", "--name", "fw1")
    h.expect_ok(r, "delete fw1 while node%d is down" % (fi + 1))
    f.start()
    cl.wait_serving(fi, timeout=60)
    r = f.cli("security-domain", "show")
    h.check(r.rc == 0 and (r.json or {}).get("activationStatus") == "Active",
            "restarted node%d is Active without any custodian" % (fi + 1), r.describe())
    want = sorted(list(st["kids"]) + [n for n in st.get("fw", []) if n != "fw1"])
    r = eventually(fi, ("key", "list"), lambda r: list_names(r) == want, timeout=30)
    h.check(list_names(r) == want, "node%d lists the same keys, including the one made while "
            "it was down, without the one deleted" % (fi + 1), r.describe())
    ref = sorted(it["kid"] for it in (N[up[0]].cli("key", "list").json or []))
    h.check(sorted(it["kid"] for it in (r.json or [])) == ref,
            "node%d's listing matches node%d's kid for kid" % (fi + 1, up[0] + 1))
    dg = os.urandom(32)
    r = sign(fi, "while-down", "RS256", dg)
    h.check(r.rc == 0 and r.json.get("kid") == st["kids"]["while-down"],
            "node%d signs with the key created while it was down" % (fi + 1), r.describe())
    if r.rc == 0:
        h.check(is_valid(verify(up[1], "while-down", "RS256", dg, unb64u(r.json["signature"]))),
                "node%d verifies it" % (up[1] + 1))
    r = sign(fi, "rsa1", "RS256", dg)
    h.expect_ok(r, "node%d signs with rsa1" % (fi + 1))
    check_status_agreement("after the restart")

h.finish()
