"""No plaintext at rest, on every node of a three-node cluster: import (through a
follower, which forwards to the leader) an AES-256 key with known bytes (JWK) and an
RSA key with a known private exponent (PEM made by openssl), use both (encrypt/decrypt,
sign, wrap), back them up, write enough to make every node take a raft snapshot (small
snapshot_threshold), stop the three nodes with SIGTERM, then search every file of the
three node directories (data directory: raft segments, raft snapshots -- decompressed
when raft wrote them as LZ4 frames --, LMDB, sealed files; config; the log) and the
backup blobs for those secrets and for the plaintexts, digests and signatures that
went through the cluster: raw bytes, hex, and base64/base64url at every alignment.
Positive controls prove the search finds each pattern where it is known to be, reads
the snapshots' content and the raft segments.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_no_plaintext.py
"""

import base64
import json
import os
import stat
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64u, unb64u  # noqa: E402

SNAPSHOT_THRESHOLD = 16
FILLERS = 40  # writes after the secrets: more than 2 * SNAPSHOT_THRESHOLD
LZ4_MAGIC = b"\x04\x22\x4d\x18"

h = mhtest.Harness("test_no_plaintext")
cl = h.cluster(n=3, snapshot_threshold=SNAPSHOT_THRESHOLD, snapshot_trailing=4)
node = cl.nodes[1]  # replaced by a follower once the cluster runs
secret_dir = os.path.join(h.tmp, "secrets")  # outside the node's directory
os.makedirs(secret_dir, exist_ok=True)


def spath(name, data=None):
    p = os.path.join(secret_dir, name)
    if data is not None:
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
    return p


def patterns(secret):
    """Byte patterns any stored copy of |secret| (>= 32 bytes) would contain:
    raw, hex (both cases) of a 16-byte slice, and for base64 and base64url the encoding
    of a 27-byte slice at each of the 3 alignments a larger encoding can put it in."""
    s = secret[:32] if len(secret) >= 32 else secret
    pats = {"raw": [s], "hex": [s[:16].hex().encode(), s[:16].hex().upper().encode()],
            "base64": [], "base64url": []}
    for phase in range(3):
        chunk = s[phase:phase + 27]
        pats["base64"].append(base64.b64encode(chunk))
        pats["base64url"].append(base64.urlsafe_b64encode(chunk))
    return pats


def files_under(root):
    for dp, _, fns in os.walk(root):
        for fn in fns:
            yield os.path.join(dp, fn)


def lz4_frames_decoded(data):
    """raft writes snapshots as LZ4 frames (libraft built with lz4): the decompressed
    content of a file that starts with the LZ4 frame magic, else None."""
    if not data.startswith(LZ4_MAGIC):
        return None
    rc, out, err = mhtest.run(["lz4", "-d", "-c"], input_bytes=data)
    if rc != 0:
        raise RuntimeError("lz4 -d failed: %s" % err)
    return out


def contents(p):
    """[(label, bytes)]: the file as stored and, for an LZ4 frame, decompressed."""
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError:
        return []
    out = [(os.path.relpath(p, h.tmp), data)]
    dec = lz4_frames_decoded(data)
    if dec is not None:
        out.append((os.path.relpath(p, h.tmp) + " (lz4 -d)", dec))
    return out


def search(paths, secret):
    """[(path, form)] where a pattern of |secret| occurs."""
    hits = []
    pats = patterns(secret)
    for p in paths:
        for label, data in contents(p):
            for form, plist in pats.items():
                if any(x in data for x in plist):
                    hits.append((label, form))
    return hits


def raft_files(n):
    """(snapshots, segments) under a node's data directory: raft snapshot data files
    (snapshot-T-I-TS, not .meta) and every other file in the raft directory."""
    snaps, segs = [], []
    raft_dir = os.path.join(n.data_dir, "raft")
    for p in files_under(raft_dir):
        b = os.path.basename(p)
        if b.startswith("snapshot-") and not b.endswith(".meta"):
            snaps.append(p)
        elif not b.startswith("snapshot-"):
            segs.append(p)
    return snaps, segs


def joined(paths):
    return b"".join(d for p in paths for _, d in contents(p))


def snapshot_count(n):
    return sum(1 for ln in n.log_text().splitlines() if "snapshot taken" in ln)


try:
    with h.section("three nodes, activated; pick a follower"):
        cl.start_all(wait=True)
        # Activation is a write: it needs a leader (UNAVAILABLE, outcome unknown, before).
        h.say("leader before activation: node %d" % (cl.leader(timeout=30) + 1))
        h.expect_ok(cl.activate(via=0), "security-domain download through node 1")
        fi = cl.followers()[0]
        node = cl.nodes[fi]
        h.say("importing and using the keys through follower %s" % node.name)

    secrets = {}  # label -> bytes that must never be at rest
    with h.section("import an AES-256 key with known bytes (JWK)"):
        k = os.urandom(32)
        secrets["AES key k"] = k
        jwk_path = spath("aes.jwk", json.dumps({"kty": "oct", "k": b64u(k)}))
        r = node.cli("key", "import", "--name", "known-aes", "--jwk-file", jwk_path)
        h.expect_ok(r, "import oct JWK")
        h.check(r.rc == 0 and r.json["key"]["kty"] == "oct-HSM" and "k" not in r.json["key"],
                "imported as oct-HSM, k never returned", r.describe())
        aes_version = r.json["key"]["kid"].rsplit("/", 1)[1] if r.rc == 0 else "x"

    with h.section("import an RSA key with a known private exponent (PEM)"):
        pem = spath("rsa.pem")
        mhtest.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                       "-out", pem)
        f = mhtest.openssl_key_fields(pem)
        d = f["privateExponent"].lstrip(b"\x00")
        h.check(len(d) >= 250, "d extracted from `openssl pkey -text` (%d bytes)" % len(d))
        secrets["RSA d (bytes 0..32)"] = d[:32]
        secrets["RSA d (bytes 100..132)"] = d[100:132]
        secrets["RSA d (last 32 bytes)"] = d[-32:]
        secrets["RSA p (bytes 8..40)"] = f["prime1"].lstrip(b"\x00")[8:40]
        secrets["RSA q (bytes 8..40)"] = f["prime2"].lstrip(b"\x00")[8:40]
        r = node.cli("key", "import", "--name", "known-rsa", "--pem-file", pem)
        h.expect_ok(r, "import RSA PEM")
        h.check(r.rc == 0 and unb64u(r.json["key"]["n"]) == f["modulus"].lstrip(b"\x00")
                and "d" not in r.json["key"], "imported modulus matches, d never returned",
                r.describe())

    with h.section("use both keys"):
        msg = os.urandom(48)
        secrets["plaintext (GCM)"] = msg
        r = node.cli("key", "encrypt", "--name", "known-aes", "--algorithm", "A256GCM",
                     "--value", b64u(msg))
        h.expect_ok(r, "A256GCM encrypt")
        g = r.json
        r = node.cli("key", "decrypt", "--name", "known-aes", "--algorithm", "A256GCM",
                     "--value", g["result"], "--iv", g["iv"], "--tag", g["tag"])
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg, "A256GCM decrypt", r.describe())
        # The server really holds k: its CBC output equals openssl's with the same k and iv.
        iv = os.urandom(16)
        msg2 = os.urandom(64)
        secrets["plaintext (CBC)"] = msg2
        r = node.cli("key", "encrypt", "--name", "known-aes", "--algorithm", "A256CBCPAD",
                     "--value", b64u(msg2), "--iv", b64u(iv))
        want = mhtest.openssl("enc", "-aes-256-cbc", "-K", k.hex(), "-iv", iv.hex(),
                              input_bytes=msg2)
        h.check(r.rc == 0 and unb64u(r.json["result"]) == want,
                "A256CBCPAD ciphertext equals openssl's with the known key", r.describe())
        cek = os.urandom(32)
        secrets["wrapped key (A256KW)"] = cek
        r = node.cli("key", "wrap", "--name", "known-aes", "--algorithm", "A256KW", "--value",
                     b64u(cek))
        h.expect_ok(r, "A256KW wrap")
        r = node.cli("key", "unwrap", "--name", "known-aes", "--algorithm", "A256KW",
                     "--value", r.json["result"] if r.rc == 0 else "AA")
        h.check(r.rc == 0 and unb64u(r.json["result"]) == cek, "A256KW unwrap", r.describe())

        dg = os.urandom(32)
        secrets["digest"] = dg
        r = node.cli("key", "sign", "--name", "known-rsa", "--algorithm", "RS256", "--digest",
                     b64u(dg))
        h.expect_ok(r, "RS256 sign")
        sig = unb64u(r.json["signature"]) if r.rc == 0 else b""
        secrets["signature"] = sig
        rc, out, err = mhtest.run(["openssl", "pkeyutl", "-verify", "-inkey", pem, "-in",
                                   spath("dg.bin", dg), "-sigfile", spath("sig.bin", sig),
                                   "-pkeyopt", "digest:sha256"])
        h.check(rc == 0, "openssl verifies the signature with the original key", err)
        msg3 = os.urandom(40)
        secrets["plaintext (RSA-OAEP-256)"] = msg3
        ct = mhtest.openssl("pkeyutl", "-encrypt", "-inkey", pem, "-pkeyopt",
                            "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                            "-pkeyopt", "rsa_mgf1_md:sha256", input_bytes=msg3)
        r = node.cli("key", "decrypt", "--name", "known-rsa", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(ct))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg3,
                "RSA-OAEP-256 decrypt of openssl's ciphertext", r.describe())

    backups = []
    with h.section("back up both keys"):
        for name in ("known-aes", "known-rsa"):
            p = os.path.join(h.tmp, name + ".backup")
            h.expect_ok(node.cli("key", "backup", "--name", name, "--file", p),
                        "backup " + name)
            backups.append(p)
        r = node.cli("key", "rotate", "--name", "known-aes")
        h.expect_ok(r, "rotate known-aes (more writes through the log)")

    with h.section("enough writes that every node takes a snapshot"):
        before = [snapshot_count(n) for n in cl.nodes]
        errs = []
        for i in range(FILLERS):
            r = node.cli("key", "create", "--name", "filler-%d" % i, "--kty", "oct-HSM",
                         "--size", 128, quiet=True)
            if r.rc != 0:
                errs.append(r.describe())
        h.check(not errs, "%d filler creates through %s" % (FILLERS, node.name), errs[:3])
        ok = False
        for _ in range(60):  # bounded: snapshots are taken on the thread pool
            now = [snapshot_count(n) for n in cl.nodes]
            if all(a > b for a, b in zip(now, before)):
                ok = True
                break
            time.sleep(0.5)
        h.check(ok, "every node logged `snapshot taken` after the secrets went in",
                "before %s, now %s" % (before, now))
        # Every node applies the last filler before it stops, so its LMDB holds the
        # state the search is about.
        li = cl.leader(timeout=30)
        st = cl.status(li)
        commit = int(st.get("commitIndex", 0)) if st else 0
        lag = None
        for _ in range(60):  # bounded
            sts = [cl.status(i) for i in range(3)]
            lag = [int(s.get("appliedIndex", 0)) if s else -1 for s in sts]
            if commit and all(a >= commit for a in lag):
                break
            time.sleep(0.5)
        h.check(commit and all(a >= commit for a in lag),
                "every node applied the leader's commit index %d" % commit, lag)

    with h.section("stop the three nodes"):
        for n in cl.nodes:
            rc = n.stop()
            h.check(rc == 0, "%s: SIGTERM -> exit 0" % n.name, "exit status %s" % rc)

    with h.section("positive controls: the search finds what is there"):
        h.check(search([spath("rsa.pem")], secrets["RSA d (bytes 100..132)"]),
                "d found (base64) in the PEM it was imported from")
        h.check(search([jwk_path], secrets["AES key k"]), "k found (base64url) in its JWK")
        bad_controls = 0
        for label, sec in secrets.items():
            for form, plist in patterns(sec).items():
                for i, pat in enumerate(plist):
                    if form == "raw":
                        blob = b"junk" + sec + b"junk"
                    elif form == "hex":
                        blob = b"x" + (sec.hex() if i == 0 else sec.hex().upper()).encode()
                    else:
                        enc = base64.b64encode if form == "base64" else base64.urlsafe_b64encode
                        blob = enc(b"\x00" * ((3 - i) % 3) + sec)
                    if pat not in blob:
                        bad_controls += 1
                        h.fail("control: %s %s pattern %d found in its own encoding"
                               % (label, form, i))
        h.check(bad_controls == 0,
                "every pattern of every secret is found in an encoding of that secret")
        control = spath("control.bin", b"\x00" * 1000 + secrets["AES key k"] + b"\x01" * 77)
        h.check([f for _, f in search([control], secrets["AES key k"])] == ["raw"],
                "raw bytes found inside a binary file")
        mhtest.run(["lz4", "-q", "-f", control, control + ".lz4"])
        hits = search([control + ".lz4"], secrets["AES key k"])
        h.check((os.path.relpath(control + ".lz4", h.tmp) + " (lz4 -d)", "raw") in hits,
                "raw bytes found in the decompressed content of an LZ4 frame", hits)

    with h.section("search the three nodes' files, their logs and the backups"):
        files = []
        for n in cl.nodes:
            files += sorted(files_under(n.dir))
            data_files = list(files_under(n.data_dir))
            h.check(len(data_files) >= 2 and os.path.exists(n.log_path),
                    "%s: there is something to search (%d files in the data dir, the log)"
                    % (n.name, len(data_files)), data_files)
            stored = joined(data_files)
            h.check(b"known-rsa" in stored and b"known-aes" in stored,
                    "control: %s's stored state holds the key names (not secret)" % n.name)
            snaps, segs = raft_files(n)
            h.check(bool(snaps), "%s: a raft snapshot on disk" % n.name,
                    [os.path.relpath(p, h.tmp) for p in files_under(n.data_dir)])
            snap_data = joined(snaps)
            h.check(b"known-rsa" in snap_data and b"known-aes" in snap_data,
                    "control: %s's snapshot content (as searched) holds the key names" % n.name,
                    [os.path.relpath(p, h.tmp) for p in snaps])
            h.check(("filler-%d" % (FILLERS - 1)).encode() in joined(segs),
                    "control: %s's raft segments (as searched) hold the last write" % n.name,
                    [os.path.relpath(p, h.tmp) for p in segs])
            audit = n.audit_files()
            h.check(audit and all(p in data_files for p in audit),
                    "control: %s's audit files are in the data dir (searched)" % n.name,
                    [os.path.relpath(p, h.tmp) for p in audit])
        audit = [p for n in cl.nodes for p in n.audit_files()]
        h.check(b"known-rsa" in joined(audit) and b"known-aes" in joined(audit),
                "control: the audit records (as searched) name the imported keys")
        files += backups
        total = sum(os.path.getsize(p) for p in files)
        h.say("searching %d files, %d bytes: %s" % (len(files), total, ", ".join(
            os.path.relpath(p, h.tmp) for p in files)))
        for label, sec in secrets.items():
            hits = search(files, sec)
            h.check(not hits, "%s: not found at rest or in the log" % label, hits)
        for n in cl.nodes:
            seal = os.path.join(n.data_dir, "node-seal.key")
            if os.path.exists(seal):
                mode = stat.S_IMODE(os.stat(seal).st_mode)
                h.check(mode == 0o600, "%s: node-seal.key is 0600" % n.name, oct(mode))
            else:
                h.fail("%s: node-seal.key exists in the data directory" % n.name,
                       os.listdir(n.data_dir))

    with h.section("restart: the keys still work on every node (the search did not miss "
                   "them by loss)"):
        cl.start_all(wait=True)
        iv = bytes(range(16))
        want = mhtest.openssl("enc", "-aes-256-cbc", "-K", k.hex(), "-iv", iv.hex(),
                              input_bytes=b"after restart")
        for i in range(3):
            cl.wait_serving(i, timeout=60)
            r = cl.nodes[i].cli("key", "encrypt", "--name", "known-aes", "--version",
                                aes_version, "--algorithm", "A256CBCPAD", "--value",
                                b64u(b"after restart"), "--iv", b64u(iv))
            h.check(r.rc == 0 and unb64u(r.json["result"]) == want,
                    "after restart node %d encrypts with k under the imported AES version"
                    % (i + 1), r.describe())
        for n in cl.nodes:
            rc = n.stop()
            h.check(rc == 0, "%s: SIGTERM -> exit 0" % n.name, "exit status %s" % rc)
except Exception as e:  # noqa: BLE001 -- outside a section: still a failure
    import traceback
    traceback.print_exc(file=sys.stdout)
    h.fail("unexpected exception", "%s: %s" % (type(e).__name__, e))
finally:
    h.finish()
