"""The audit log on a three-node cluster (real mhsmd processes; calls made with
Debian's python3-grpcio so that one scripted call is exactly one request).

A scripted sequence of calls by several identities (allowed, denied, failed with
NOT_FOUND, an unknown method, an unparsable message, writes with a request id) is
spread over the three nodes. Node 3 runs with small audit files (rotation) and, when
the test runs as root, without CAP_DAC_OVERRIDE (setpriv) so that permission bits
bind it: its audit directory made read-only makes it refuse requests (UNAVAILABLE)
once it needs a new file, and it serves again once the directory is writable. Then
the cluster stops (shutdown checkpoint) and:
  - every scripted call appears exactly once, on the node that served it, with the
    right identity, operationName, requestUri, result and status; no other record
    names a scripted identity;
  - records hold no plaintext, digest or signature, and only AuditEvent fields;
  - each node's chain is checked independently (seq, prevHash, nodeId, Ed25519
    checkpoint signatures with openssl), and `mhsm audit verify` passes on each node's
    files with the key `mhsm audit key` gives, and without --public-key;
  - on copies: an edited byte, a deleted line, two swapped lines, an edited
    checkpoint make verify exit 1 naming that file and line.
Last, node 3 starts with an unwritable audit directory: it refuses, then serves once
the directory is writable again, and its chain still verifies.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_audit.py
"""

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import mhtest  # noqa: E402

P = "Microsoft.KeyVault/managedHsm/"
SMALL_FILES = 4096  # node 3's max_file_bytes: a rotation every few records
SCRIPT_IDS = ("user2", "app", "auditor", "officer", "keyuser")
FIELDS = {"seq", "prevHash", "nodeId", "time", "category", "operationName",
          "operationVersion", "resultType", "resultSignature", "resultDescription",
          "httpStatusCode", "grpcStatus", "durationMs", "callerIpAddress", "identity",
          "requestUri", "resource", "correlationId", "callId", "properties", "signature",
          "publicKey"}
HTTP = {0: 200, 3: 400, 5: 404, 7: 403, 12: 501, 9: 409, 6: 409, 13: 500}
SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
           "--inh-caps=-dac_override,-dac_read_search,-fowner"]

h = mhtest.Harness("test_audit")
cl = h.cluster(3, audit={"checkpoint_interval_ms": 1000})
N = cl.nodes
N[2].audit_extra["max_file_bytes"] = SMALL_FILES
if os.geteuid() == 0:
    N[2].run_prefix = SETPRIV  # root ignores permission bits; without these caps it cannot
N[2].write_config()
st = {"calls": [], "secrets": {}}


def sp(name):
    return "spiffe://mhsm/" + name


def channel(i, who):
    c = h.certs
    creds = grpc.ssl_channel_credentials(
        root_certificates=mhtest.read_bytes(os.path.join(c, "ca.pem")),
        private_key=mhtest.read_bytes(os.path.join(c, who + ".key")),
        certificate_chain=mhtest.read_bytes(os.path.join(c, who + ".pem")))
    return grpc.secure_channel(N[i].endpoint, creds)


def call(i, who, path, req, want, op=None, key=None, resp_cls=None, raw=False, rid=None,
         action=None):
    """One unary call; records the expectation; returns the response (or None).
    |want|: a status code, or a tuple of acceptable ones (the record must carry the
    one the client saw)."""
    ch = channel(i, who)
    try:
        fn = ch.unary_unary(path, request_serializer=None if raw else
                            (lambda m: m.SerializeToString()),
                            response_deserializer=(resp_cls.FromString if resp_cls else None))
        try:
            resp, code, details = fn(req, timeout=30), grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            resp, code, details = None, e.code(), e.details() or ""
    finally:
        ch.close()
    wants = want if isinstance(want, tuple) else (want,)
    h.check(code in wants, "call %d: %s on node %d by %s -> %s" % (
        len(st["calls"]) + 1, path, i + 1, who, "/".join(w.name for w in wants)),
        "got %s %r" % (code, details))
    st["calls"].append({"node": i, "who": sp(who), "path": path,
                        "code": (code if code in wants else wants[0]).value[0],
                        "op": op, "key": key, "rid": rid, "got": code, "action": action})
    return resp


def patterns(data):
    """Forms a stored copy of |data| would take: raw, hex, base64, base64url (every
    alignment of an inner slice)."""
    s = data[:32]
    out = [s, s[:16].hex().encode(), s[:16].hex().upper().encode()]
    for phase in range(3):
        chunk = s[phase:phase + 24]
        out += [base64.b64encode(chunk), base64.urlsafe_b64encode(chunk),
                base64.urlsafe_b64encode(chunk).rstrip(b"=")]
    return out


def chain_problems(lines, raft_id, pub_hex):
    """Independent check of one node's chain: [problem, ...] (empty: fine)."""
    bad = []
    prev = None
    spki = bytes.fromhex("302a300506032b6570032100") + bytes.fromhex(pub_hex or "00" * 32)
    pem = os.path.join(h.tmp, "audit-pub.pem")
    with open(pem, "w") as f:
        f.write(mhtest._pem("PUBLIC KEY", spki))
    sigs = 0
    for k, ln in enumerate(lines):
        if ln.rec is None:
            bad.append("%r: not JSON" % ln)
            continue
        if k == 0:
            if ln.get("seq") != 1 or ln.get("prevHash") != "0" * 64:
                bad.append("first line is not seq 1 with a zero prevHash: %r" % ln)
        else:
            if ln.get("seq") != lines[k - 1].get("seq", default=-10) + 1:
                bad.append("seq not consecutive at %r" % ln)
            if ln.get("prevHash") != hashlib.sha256(prev).hexdigest():
                bad.append("prevHash mismatch at %r" % ln)
        if ln.get("nodeId") != raft_id:
            bad.append("nodeId not %d at %r" % (raft_id, ln))
        if ln.op == "AuditCheckpoint":
            msg = "mhsm-audit-checkpoint-v1\n%d\n%d\n%s" % (raft_id, ln.get("seq"),
                                                          ln.get("prevHash"))
            mp = os.path.join(h.tmp, "cp.msg")
            sg = os.path.join(h.tmp, "cp.sig")
            with open(mp, "w") as f:
                f.write(msg)
            with open(sg, "wb") as f:
                f.write(mhtest.unb64u(ln.get("signature") or ""))
            rc, out, err = mhtest.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pem,
                                       "-rawin", "-in", mp, "-sigfile", sg])
            if rc != 0:
                bad.append("checkpoint signature does not verify (openssl) at %r" % ln)
            else:
                sigs += 1
        prev = ln.raw
    if sigs == 0:
        bad.append("no signed checkpoint")
    return bad


def refusing_for_audit(r):
    return r.rc == 1 and r.status == "UNAVAILABLE" and "audit" in r.err.lower()


def verify(paths, *extra):
    return N[0].cli("audit", "verify", *extra, *paths)


def names_line(r, path, line):
    m = re.search(r"error: audit log does not verify: (.+):(\d+): ", r.err)
    return (r.rc == 1 and m is not None and int(m.group(2)) == line
            and (m.group(1) == path or os.path.basename(m.group(1)) == os.path.basename(path)))


try:
    with h.section("three nodes (node 3: small audit files, no DAC override), activated"):
        m = h.proto_modules(("types", "keys", "crypto", "rbac", "audit"))
        K, C, R, A = m["keys"], m["crypto"], m["rbac"], m["audit"]
        cl.start_all(wait=True)
        cl.leader(timeout=30)
        h.expect_ok(cl.activate(via=0), "activate (admin gets its key roles)")
        names = []
        for role, who, scope in ((mhtest.ROLE_USER, "user2", "/"),
                                 (mhtest.ROLE_OFFICER, "officer", "/"),
                                 (mhtest.ROLE_AUDITOR, "auditor", "/"),
                                 (mhtest.ROLE_USER, "keyuser", "/keys/a-k1")):
            r = N[0].assign(role, sp(who), scope)
            h.expect_ok(r, "assign %s to %s" % (role, who))
            names.append((r.json or {}).get("name"))
        for i in range(3):
            cl.wait_until(i, ("role", "assignment", "list"),
                          lambda r: r.rc == 0 and set(names) <= {a.get("name")
                                                                 for a in r.json or []},
                          what="the four assignments")
        r = N[0].cli("audit", "key")
        st["key"] = r.json if r.rc == 0 and isinstance(r.json, dict) else {}
        h.check(re.match(r"^[0-9a-f]{64}$", st["key"].get("publicKey", "")) and
                int(st["key"].get("nodeId") or 0) == 1 and
                os.path.realpath(st["key"].get("directory", "")) ==
                os.path.realpath(N[0].audit_dir()), "mhsm audit key: hex key, node 1, its "
                "directory", r.describe())
        r3 = N[2].cli("audit", "key")
        h.check(r3.rc == 0 and (r3.json or {}).get("publicKey") == st["key"].get("publicKey"),
                "node 3 gives the same audit key", r3.describe())
        with open(os.path.join(h.tmp, "audit.pub"), "w") as f:
            f.write(st["key"].get("publicKey", ""))

    with h.section("scripted calls"):
        OK, DENIED = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
        dg = os.urandom(32)
        pt = b"audit plaintext that must never be logged " + os.urandom(16)
        st["secrets"] = {"digest": dg, "plaintext": pt}
        call(1, "user2", "/mhsm.v1.Keys/CreateKey",
             K.CreateKeyRequest(name="a-k1", kty="EC-HSM", crv="P-256",
                                request_id="audit-rid-create-1"),
             OK, op="KeyCreate", key="a-k1", resp_cls=m["types"].KeyBundle,
             rid="audit-rid-create-1")
        s = call(1, "user2", "/mhsm.v1.Crypto/Sign",
                 C.SignRequest(name="a-k1", alg="ES256", digest=dg), OK, op="KeySign",
                 key="a-k1", resp_cls=C.SignResponse)
        if s is not None:
            st["secrets"]["signature"] = s.signature
        call(2, "app", "/mhsm.v1.Crypto/Sign", C.SignRequest(name="a-k1", alg="ES256",
                                                             digest=dg), DENIED, op="KeySign",
             key="a-k1", action="keys/sign/action")
        call(0, "auditor", "/mhsm.v1.Keys/GetKey", K.GetKeyRequest(name="no-such-key"),
             grpc.StatusCode.NOT_FOUND, key="no-such-key")
        call(1, "auditor", "/mhsm.v1.Keys/ListKeys", K.ListKeysRequest(), OK,
             resp_cls=K.ListKeysResponse)
        call(2, "user2", "/mhsm.v1.Keys/NoSuchMethod", K.GetKeyRequest(name="x"),
             grpc.StatusCode.UNIMPLEMENTED, op="UnknownMethod")
        # gRPC servers answer an unparsable request INTERNAL (grpc-core, grpc-java).
        call(0, "app", "/mhsm.v1.Keys/GetKey", b"\x0a\xff\xff\xff\xff\x0f\x12",
             (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT), raw=True)
        call(2, "user2", "/mhsm.v1.Keys/CreateKey",
             K.CreateKeyRequest(name="a-oct", kty="oct-HSM", key_size=256), OK, op="KeyCreate",
             key="a-oct", resp_cls=m["types"].KeyBundle)
        e = call(2, "user2", "/mhsm.v1.Crypto/Encrypt",
                 C.KeyOperationRequest(name="a-oct", alg="A256GCM", value=pt), OK,
                 key="a-oct", resp_cls=C.KeyOperationResponse)
        if e is not None:
            st["secrets"]["ciphertext"] = e.value
        call(1, "user2", "/mhsm.v1.Keys/DeleteKey", K.KeyNameRequest(
            name="a-k1", request_id="audit-rid-delete-1"), OK, key="a-k1",
            rid="audit-rid-delete-1")
        call(1, "officer", "/mhsm.v1.Keys/PurgeDeletedKey", K.KeyNameRequest(name="a-k1"), OK,
             op="KeyPurge", key="a-k1")
        call(0, "user2", "/mhsm.v1.AccessControl/CreateRoleAssignment",
             R.CreateRoleAssignmentRequest(scope="/", role_definition_id=mhtest.ROLE_AUDITOR,
                                           principal_id=sp("app")), DENIED,
             op="RoleAssignmentCreate", action="roleAssignments/write/action")
        call(2, "officer", "/mhsm.v1.AccessControl/CreateRoleAssignment",
             R.CreateRoleAssignmentRequest(scope="/", role_definition_id=mhtest.ROLE_AUDITOR,
                                           principal_id=sp("policy")), OK,
             op="RoleAssignmentCreate", resp_cls=R.RoleAssignment)
        call(1, "keyuser", "/mhsm.v1.AccessControl/WhoAmI", R.WhoAmIRequest(), OK,
             resp_cls=R.WhoAmIResponse)
        call(0, "app", "/mhsm.v1.Audit/GetAuditKey", A.GetAuditKeyRequest(), OK,
             resp_cls=A.GetAuditKeyResponse)

    with h.section("fail closed: node 3's audit directory read-only"):
        d3 = N[2].audit_dir()
        h.check(len(N[2].audit_files()) >= 2, "node 3 rotated its small files already",
                N[2].audit_files())
        os.chmod(d3, 0o555)
        try:
            r = cl.wait_until(2, ("key", "list"), refusing_for_audit, timeout=60,
                              what="UNAVAILABLE naming the audit log")
            h.ok("node 3 refuses once it cannot start a new audit file, naming the audit "
                 "log: %s" % r.err.strip()[:200])
            r = N[2].cli("key", "show", "--name", "a-oct")
            h.expect_err(r, "UNAVAILABLE", "node 3 refuses another call too")
            h.expect_ok(N[0].cli("key", "show", "--name", "a-oct"), "node 1 still serves")
        finally:
            os.chmod(d3, 0o700)
        waited = cl.wait_serving(2, timeout=30)
        h.ok("node 3 serves again %.1fs after its audit directory is writable" % waited)

    with h.section("stop the cluster (shutdown checkpoints)"):
        for n in N:
            rc = n.stop()
            h.check(rc == 0, "%s: SIGTERM -> exit 0" % n.name, rc)
        recs = [n.audit_records() for n in N]
        for i, n in enumerate(N):
            h.check(recs[i] and recs[i][-1].op == "AuditCheckpoint",
                    "%s: the last record is a checkpoint" % n.name,
                    recs[i][-1] if recs[i] else None)
            h.check(any(x.op == "AuditStart" for x in recs[i]), "%s: an AuditStart record"
                    % n.name)
        h.check(any(x.op == "AuditResumed" for x in recs[2]),
                "node 3 wrote AuditResumed after the failure")

    with h.section("every scripted call exactly once, on its node, with its result"):
        for k, c in enumerate(st["calls"]):
            hits = [(i, x) for i in range(3) for x in recs[i]
                    if x.principal == c["who"] and x.get("requestUri") == c["path"]
                    and (c["key"] is None or x.get("properties", "keyName") == c["key"])]
            where = {i for i, _ in hits}
            if not h.check(len(hits) == 1 and where == {c["node"]},
                           "call %d (%s by %s): exactly one record, on node %d"
                           % (k + 1, c["path"], c["who"], c["node"] + 1), hits):
                continue
            x = hits[0][1]
            want_type = "Success" if c["code"] == 0 else "Failure"
            ok = (x.get("grpcStatus") == c["code"] and x.get("resultType") == want_type
                  and x.get("nodeId") == c["node"] + 1
                  and x.get("callerIpAddress") == "127.0.0.1"
                  and isinstance(x.get("durationMs"), (int, float)) and x.get("durationMs") >= 0
                  and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", x.get("time") or "")
                  and (c["code"] not in HTTP or x.get("httpStatusCode") == HTTP[c["code"]])
                  and (c["op"] is None or x.op == c["op"])
                  and (c["rid"] is None or x.get("correlationId") == c["rid"])
                  and x.get("resultSignature"))
            h.check(ok, "call %d: record has status %d, %s, %s, node %d, caller ip, time, "
                    "duration" % (k + 1, c["code"], want_type, c["op"] or x.op, c["node"] + 1), x)
            if c["code"] == 7:
                h.check(x.get("properties", "decision") == "deny"
                        and (x.get("properties", "dataAction") or "").endswith(c["action"]),
                        "call %d: decision deny naming %s" % (k + 1, c["action"]), x)
            elif c["code"] == 0 and c["op"] not in (None, "UnknownMethod") \
                    and x.get("properties", "dataAction"):
                h.check(x.get("properties", "decision") == "allow",
                        "call %d: decision allow" % (k + 1), x)
        ids = {sp(w) for w in SCRIPT_IDS}
        extra = [x for i in range(3) for x in recs[i] if x.principal in ids]
        h.check(len(extra) == len(st["calls"]),
                "no other record names a scripted identity (%d calls, %d records)"
                % (len(st["calls"]), len(extra)), extra[:5])

    with h.section("no plaintext, digest, signature; only AuditEvent fields"):
        blob = b"".join(mhtest.read_bytes(p) for n in N for p in n.audit_files())
        h.check(b"a-k1" in blob and b"KeySign" in blob, "control: the search reads the records")
        for label, sec in st["secrets"].items():
            hits = [p for p in patterns(sec) if p in blob]
            h.check(not hits, "%s not in any audit file" % label, hits[:2])
        bad = [x for i in range(3) for x in recs[i]
               if x.rec is None or (x.get("requestUri") and not set(x.rec) <= FIELDS)]
        h.check(not bad, "every record parses; request records hold only AuditEvent fields",
                bad[:3])

    with h.section("chains check independently and with `mhsm audit verify`"):
        pub = st["key"].get("publicKey")
        for i, n in enumerate(N):
            probs = chain_problems(recs[i], i + 1, pub)
            h.check(not probs, "%s: chain, node id and checkpoint signatures (openssl)"
                    % n.name, probs[:3])
            files = n.audit_files()
            r = verify(files, "--public-key", pub or "00")
            j = r.json if isinstance(r.json, dict) else {}
            h.check(r.rc == 0 and j.get("ok") is True and j.get("unsignedTail") == 0,
                    "%s: mhsm audit verify --public-key HEX (%d files): ok, nothing unsigned"
                    % (n.name, len(files)), r.describe())
        r = verify(N[1].audit_files(), "--public-key", "@" + os.path.join(h.tmp, "audit.pub"))
        h.expect_ok(r, "node 2: --public-key @FILE")
        other = "%064x" % (int(pub or "1", 16) ^ 1)
        r = verify(N[1].audit_files(), "--public-key", other)
        h.check(r.rc == 1 and "does not verify" in r.err, "another public key: exit 1",
                r.describe())

    with h.section("tampered copies: verify fails and names the file and line"):
        def copy_of(n, tag):
            d = os.path.join(h.tmp, "tamper-%s-%s" % (n.name, tag))
            os.makedirs(d)
            out = []
            for p in n.audit_files():
                q = os.path.join(d, os.path.basename(p))
                shutil.copyfile(p, q)
                out.append(q)
            return out

        def lines_of(p):
            return mhtest.read_bytes(p).split(b"\n")[:-1]

        def write_lines(p, ls):
            with open(p, "wb") as f:
                f.write(b"".join(x + b"\n" for x in ls))

        def request_line(ls, start):
            for k in range(start, len(ls) - 1):
                if b'"AuditCheckpoint"' not in ls[k] and b'"operationName":"' in ls[k]:
                    return k
            return None

        cases = []
        for n in (N[0], N[2]):
            files = copy_of(n, "edit")
            fi = 1 if len(files) > 2 else 0
            ls = lines_of(files[fi])
            k = request_line(ls, 1)
            at = ls[k].index(b'"operationName":"') + len(b'"operationName":"')
            ls[k] = ls[k][:at] + bytes([ls[k][at] ^ 0x20]) + ls[k][at + 1:]  # flip a case
            write_lines(files[fi], ls)
            cases.append(("%s: a byte edited in a line" % n.name, files, files[fi], k + 1))
        files = copy_of(N[0], "delete")
        ls = lines_of(files[0])
        k = request_line(ls, 2)
        del ls[k]
        write_lines(files[0], ls)
        cases.append(("node1: a line deleted", files, files[0], k + 1))
        files = copy_of(N[0], "swap")
        ls = lines_of(files[0])
        k = request_line(ls, 2)
        ls[k], ls[k + 1] = ls[k + 1], ls[k]
        write_lines(files[0], ls)
        cases.append(("node1: two lines swapped", files, files[0], k + 1))
        files = copy_of(N[1], "sig")
        ls = lines_of(files[-1])
        last = ls[-1]
        m_ = re.search(rb'"signature":"([A-Za-z0-9_-])', last)
        flip = b"A" if m_ and m_.group(1) != b"A" else b"B"
        ls[-1] = last[:m_.end(1) - 1] + flip + last[m_.end(1):] if m_ else last
        write_lines(files[-1], ls)
        cases.append(("node2: the final checkpoint's signature altered", files, files[-1],
                      len(ls)))
        for what, files, bad_file, line in cases:
            r = verify(files, "--public-key", pub or "00")
            h.check(names_line(r, bad_file, line),
                    "%s: exit 1, names %s:%d" % (what, os.path.basename(bad_file), line),
                    r.describe())
        st["cases"] = cases
        st["clean"] = [(n.name, copy_of(n, "clean")) for n in N]

    with h.section("node 3 started with an unwritable audit directory"):
        d3 = N[2].audit_dir()
        n_before = len(N[2].audit_files())
        N[0].start(wait=False)
        N[1].start(wait=False)
        N[0].wait_ready()
        N[1].wait_ready()
        # Without --public-key, verify asks the node it talks to (node 1) for the key.
        for name, files in st.get("clean", []):
            r = verify(files)
            h.check(r.rc == 0 and (r.json or {}).get("ok") is True,
                    "%s's files (stopped copy): mhsm audit verify without --public-key (key "
                    "from node 1)" % name, r.describe())
        for what, files, bad_file, line in st.get("cases", []):
            r = verify(files)
            h.check(names_line(r, bad_file, line), "%s: fails without --public-key too, "
                    "naming the line" % what, r.describe())
        os.chmod(d3, 0o555)
        try:
            N[2].start(wait=False)
            r = cl.wait_until(2, ("key", "list"), refusing_for_audit, timeout=60,
                              what="UNAVAILABLE naming the audit log")
            h.ok("node 3 refuses from the start, naming the audit log")
            h.check(len(N[2].audit_files()) == n_before, "no file was created in the read-only "
                    "directory")
        finally:
            os.chmod(d3, 0o700)
        waited = cl.wait_serving(2, timeout=60)
        h.ok("node 3 serves %.1fs after the directory became writable" % waited)
        rc = N[2].stop()
        h.check(rc == 0, "node 3: SIGTERM -> exit 0", rc)
        r = verify(N[2].audit_files(), "--public-key", st["key"].get("publicKey") or "00")
        h.check(r.rc == 0 and (r.json or {}).get("ok") is True,
                "node 3's chain still verifies across the failed start", r.describe())
        mode = stat.S_IMODE(os.stat(d3).st_mode)
        h.check(all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in N[2].audit_files()),
                "audit files are 0600 (dir %o)" % mode)
        for n in N:
            n.stop()
except Exception as e:  # noqa: BLE001 -- outside a section: still a failure
    import traceback
    traceback.print_exc(file=sys.stdout)
    h.fail("unexpected exception", "%s: %s" % (type(e).__name__, e))
finally:
    for n in N:
        try:
            os.chmod(n.audit_dir(), 0o700)
        except OSError:
            pass
    h.finish()
