"""One real mhsmd on loopback, driven through the real `mhsm` CLI: every RPC's happy
path and one failure for each rule of issue 3 (not activated, wrong algorithm for the
key, disabled, expired, not yet valid, operation not in key_ops, unknown key, reuse of
a deleted name, invalid names and tags, oversized message, handshake refusals, backup
from another security domain, corrupted backup), then SIGTERM and a restart on the
same data directory without any custodian.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_single_node.py
"""

import json
import os
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64std, b64u, unb64u  # noqa: E402

MAX_MESSAGE = 65536

h = mhtest.Harness("test_single_node")
node = h.node("node1", api={"max_message_bytes": MAX_MESSAGE})
certs = h.certs
alive = {}  # name -> latest kid, for every key that exists (not deleted)
st = {}  # values carried between sections


def cert(name):
    return os.path.join(certs, name + ".pem")


def tmpfile(name, data=None):
    p = os.path.join(h.tmp, name)
    if data is not None:
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
    return p


def version_of(kid):
    return kid.rsplit("/", 1)[1]


def create(name, *args, what=None, record=True):
    r = node.cli("key", "create", "--name", name, *args)
    if what is not None:
        h.expect_ok(r, what)
    if r.rc == 0 and record:
        alive[name] = mhtest.key_of(r).get("kid")
    return r


def sign(name, alg, digest, version=None):
    args = ["key", "sign", "--name", name, "--algorithm", alg, "--digest", b64u(digest)]
    if version:
        args += ["--version", version]
    return node.cli(*args)


def verify(name, alg, digest, sig, version=None):
    args = ["key", "verify", "--name", name, "--algorithm", alg, "--digest", b64u(digest),
            "--signature", b64u(sig)]
    if version:
        args += ["--version", version]
    return node.cli(*args)


def sig_of(r):
    return unb64u(r.json["signature"]) if r.rc == 0 and isinstance(r.json, dict) else b""


def is_valid(r):
    return r.rc == 0 and isinstance(r.json, dict) and r.json.get("isValid")


def list_names(r):
    """Key names of a list result (JSON array of items with kid)."""
    if r.rc != 0 or not isinstance(r.json, list):
        return None
    return [it["kid"].split("/keys/", 1)[1].split("/")[0] for it in r.json]


def openssl_verify(pub_pem, digest, sig, alg):
    """True when the openssl CLI accepts |sig| over |digest| with |pub_pem|."""
    pub = tmpfile("verify-pub.pem", pub_pem)
    dg = tmpfile("verify-digest.bin", digest)
    args = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-in", dg]
    if alg.startswith("ES"):
        sig = mhtest.ecdsa_raw_to_der(sig)
    else:
        args += ["-pkeyopt", "digest:sha%s" % alg[2:]]
        if alg.startswith("PS"):
            args += ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest"]
    sf = tmpfile("verify-sig.bin", sig)
    rc, out, err = mhtest.run(args + ["-sigfile", sf])
    return rc == 0 and b"Signature Verified Successfully" in out


try:
    node.start()

    # ------------------------------------------------------------ not activated
    with h.section("before activation"):
        r = node.cli("health")
        h.check(r.rc == 0 and r.json == {"status": "SERVING"}, "health: SERVING", r.describe())
        r = node.cli("security-domain", "show")
        h.expect_ok(r, "security-domain show before activation")
        h.check(isinstance(r.json, dict) and r.json.get("activationStatus") == "NotActivated"
                and r.json.get("message"), "status NotActivated with a message", r.describe())
        r = create("early", "--kty", "EC-HSM", "--curve", "P-256")
        h.expect_err(r, "FAILED_PRECONDITION", "key create before activation refused",
                     contains=r"security-domain download")
        r = node.cli("key", "list")
        h.expect_err(r, "FAILED_PRECONDITION", "key list before activation refused",
                     contains=r"security-domain download")
        r = sign("early", "ES256", os.urandom(32))
        h.expect_err(r, "FAILED_PRECONDITION", "key sign before activation refused",
                     contains=r"security-domain download")
        # Bad download requests must not activate (and must not write the file).
        bad = tmpfile("sd-bad.json")
        r = node.cli("security-domain", "download", "--sd-wrapping-keys", cert("sd1"),
                     cert("sd2"), "--sd-quorum", "2", "--security-domain-file", bad)
        h.expect_err(r, "INVALID_ARGUMENT", "download with 2 certificates refused")
        r = node.cli("security-domain", "download", "--sd-wrapping-keys", cert("sd1"),
                     cert("sd2"), cert("sd3"), "--sd-quorum", "4",
                     "--security-domain-file", bad)
        h.expect_err(r, "INVALID_ARGUMENT", "download with quorum 4 of 3 refused")
        r = node.cli("security-domain", "download", "--sd-wrapping-keys", cert("sd1"),
                     cert("sd2"), cert("admin"), "--sd-quorum", "2",
                     "--security-domain-file", bad)
        h.expect_err(r, "INVALID_ARGUMENT", "download with an EC (non-RSA) certificate refused")
        h.check(not os.path.exists(bad), "no SD file written by a refused download")
        r = node.cli("security-domain", "show")
        h.check(r.rc == 0 and r.json.get("activationStatus") == "NotActivated",
                "still NotActivated after refused downloads", r.describe())

    # ------------------------------------------------------------- activation
    with h.section("activation: security-domain download"):
        sd_path = tmpfile("sd.json")
        r = node.activate(sd_path, quorum=2)
        h.expect_ok(r, "security-domain download (3 certs, quorum 2)")
        h.check(r.json == {"status": "Active"}, "download prints {\"status\":\"Active\"}",
                r.describe())
        with open(sd_path) as f:
            sd = json.load(f)
        shares = sd["SharedKeys"]["enc_shares"]
        h.check(len(shares) == 3 and sd["SharedKeys"]["required"] == 2
                and sd["SharedKeys"]["key_algorithm"] == "shamir_share"
                and sd["EncData"]["kdf"] == "sp108_kdf" and len(sd["EncData"]["data"]) >= 1,
                "SD file: 3 shares, required 2, shamir_share, sp108_kdf, data items")
        # Independent recovery with openssl + Python: any 2 custodians give the same secret.
        m12, items12 = mhtest.sd_recover(sd, [(cert("sd1"), os.path.join(certs, "sd1.key")),
                                              (cert("sd2"), os.path.join(certs, "sd2.key"))])
        m23, items23 = mhtest.sd_recover(sd, [(cert("sd2"), os.path.join(certs, "sd2.key")),
                                              (cert("sd3"), os.path.join(certs, "sd3.key"))])
        h.check(len(m12) == 32 and m12 == m23 and items12 == items23 and items12,
                "SD file recovers with custodians 1+2 and 2+3 to the same master key and items")
        try:
            mhtest.sd_recover(sd, [(cert("sd1"), os.path.join(certs, "sd1.key"))])
            h.fail("one custodian alone cannot recover the SD")
        except ValueError:
            h.ok("one custodian alone cannot recover the SD")
        r = node.cli("security-domain", "show")
        h.check(r.rc == 0 and r.json.get("activationStatus") == "Active"
                and r.json.get("retentionDays") == 90, "show: Active, retentionDays 90",
                r.describe())
        with open(sd_path, "rb") as f:
            before = f.read()
        r = node.activate(sd_path)
        h.check(r.rc == 2, "download refuses to overwrite an existing SD file (exit 2)",
                r.describe())
        with open(sd_path, "rb") as f:
            h.check(f.read() == before, "existing SD file unchanged")
        r = node.activate(tmpfile("sd-again.json"))
        h.expect_err(r, "ALREADY_EXISTS", "second download refused",
                     contains=r"already|once")
        h.check(not os.path.exists(tmpfile("sd-again.json")),
                "no SD file written by the refused second download")

    # ------------------------------------------------------------ create/show
    with h.section("create and show: RSA, EC (P-256, P-384, P-256K), oct"):
        r = create("rsa1", "--kty", "RSA-HSM", "--size", "2048", what="create RSA-HSM 2048")
        k = mhtest.key_of(r)
        h.check(k.get("kty") == "RSA-HSM" and len(unb64u(k.get("n", ""))) == 256
                and unb64u(k.get("e", "")) == b"\x01\x00\x01"
                and k.get("kid", "").startswith("https://mhsm-test/keys/rsa1/")
                and "d" not in k and "p" not in k,
                "RSA bundle: kty, 256-byte n, e=AQAB, kid URI, no private members", k)
        a = r.json.get("attributes", {}) if r.json else {}
        h.check(a.get("enabled") is True and isinstance(a.get("created"), int)
                and isinstance(a.get("updated"), int) and a.get("recoverableDays") == 90
                and a.get("recoveryLevel") and a.get("exportable") is False,
                "attributes: enabled, created, updated, recoverableDays 90, recoveryLevel, "
                "exportable false", a)
        for name, crv, size in (("ec256", "P-256", 32), ("ec384", "P-384", 48),
                                ("ec256k", "P-256K", 32)):
            r = create(name, "--kty", "EC-HSM", "--curve", crv, what="create EC-HSM " + crv)
            k = mhtest.key_of(r)
            h.check(k.get("kty") == "EC-HSM" and k.get("crv") == crv
                    and len(unb64u(k.get("x", ""))) == size
                    and len(unb64u(k.get("y", ""))) == size and "d" not in k,
                    "EC %s bundle: crv, %d-byte x and y, no d" % (crv, size), k)
        r = create("oct1", "--kty", "oct-HSM", "--size", "256", what="create oct-HSM 256")
        k = mhtest.key_of(r)
        h.check(k.get("kty") == "oct-HSM" and not any(f in k for f in ("k", "n", "e", "x", "y")),
                "oct bundle carries no key material", k)
        for name in ("rsa1", "ec256", "ec384", "ec256k", "oct1"):
            r = node.cli("key", "show", "--name", name)
            h.check(r.rc == 0 and mhtest.key_of(r).get("kid") == alive[name],
                    "show %s returns the created kid" % name, r.describe())
        r = node.cli("key", "show", "--name", "oct1")
        h.check(not any(f in mhtest.key_of(r) for f in ("k", "n", "x")), "show oct1: no material",
                r.describe())
        r = node.cli("key", "show", "--name", "rsa1", "--version", version_of(alive["rsa1"]))
        h.check(r.rc == 0 and mhtest.key_of(r).get("kid") == alive["rsa1"], "show --version",
                r.describe())
        r = node.cli("key", "show", "--name", "ec256", "--output", "table")
        h.check(r.rc == 0 and r.json is None and "ec256" in r.out,
                "--output table prints text, not JSON", r.describe())
        r = node.cli("key", "create", "--help")
        h.check(r.rc == 0 and "--kty" in (r.out + r.err), "key create --help", r.describe())
        r = node.cli("key", "create", "--kty", "EC-HSM")
        h.check(r.rc == 2, "key create without --name: usage error (exit 2)", r.describe())
        r = node.cli("key", "frobnicate", "--name", "x")
        h.check(r.rc == 2, "unknown command: usage error (exit 2)", r.describe())
        r = create("rsa-small", "--kty", "RSA-HSM", "--size", "1024")
        h.expect_err(r, "INVALID_ARGUMENT", "RSA 1024 refused")
        r = create("oct-odd", "--kty", "oct-HSM", "--size", "100")
        h.expect_err(r, "INVALID_ARGUMENT", "oct size 100 refused")
        r = create("ec-bad", "--kty", "EC-HSM", "--curve", "P-192")
        h.check(r.rc in (1, 2) and r.rc != 0, "curve P-192 refused", r.describe())

    # ------------------------------------------------------------------ paging
    with h.section("list and list-versions beyond one page"):
        kids = [alive.get("many")] if "many" in alive else []
        for i in range(30):
            r = create("many", "--kty", "oct-HSM", "--size", "128")
            if r.rc != 0:
                h.fail("create version %d of many" % i, r.describe())
                break
            kids.append(mhtest.key_of(r)["kid"])
        h.check(len(set(kids)) == 30, "30 distinct versions of 'many' created")
        r = node.cli("key", "list-versions", "--name", "many")
        got = [it.get("kid") for it in r.json] if isinstance(r.json, list) else None
        h.check(got is not None and sorted(got) == sorted(kids),
                "list-versions returns all 30 versions (pages followed)",
                "got %s" % (len(got) if got is not None else r.describe()))
        r = node.cli("key", "list-versions", "--name", "many", "--maxresults", "7")
        got7 = [it.get("kid") for it in r.json] if isinstance(r.json, list) else None
        h.check(got7 is not None and len(set(got7)) == 7 and set(got7) <= set(kids),
                "list-versions --maxresults 7: 7 distinct versions of the 30", r.describe())
        r = node.cli("key", "list-versions", "--name", "many", "--maxresults", "27")
        got27 = [it.get("kid") for it in r.json] if isinstance(r.json, list) else None
        h.check(got27 is not None and len(set(got27)) == 27 and set(got27) <= set(kids),
                "list-versions --maxresults 27 (more than one page): 27 distinct",
                r.describe())
        r = node.cli("key", "show", "--name", "many")
        h.check(r.rc == 0 and mhtest.key_of(r).get("kid") in kids, "show many: latest is one of them",
                r.describe())
        st["many_latest"] = mhtest.key_of(r).get("kid")
        for i in range(22):
            create("pg-%02d" % i, "--kty", "oct-HSM", "--size", "128")
        r = node.cli("key", "list")
        names = list_names(r)
        h.check(names is not None and sorted(names) == sorted(alive),
                "key list returns every key once (%d > 25, pages followed)" % len(alive),
                "want %s got %s" % (sorted(alive), names))
        h.check(isinstance(r.json, list) and all(
            set(it) <= {"kid", "attributes", "tags", "managed"} for it in r.json),
            "list items carry no key material", r.out[:300])
        r = node.cli("key", "list", "--maxresults", "4")
        names = list_names(r)
        h.check(names is not None and len(set(names)) == 4 and set(names) <= set(alive),
                "key list --maxresults 4: 4 distinct keys", r.describe())
        r = node.cli("key", "list", "--output", "table")
        h.check(r.rc == 0 and r.json is None and "pg-00" in r.out and "rsa1" in r.out,
                "key list --output table", r.describe())
        r = node.cli("key", "list-versions", "--name", "no-such-key")
        h.check(r.rc == 1 and r.status == "NOT_FOUND" or (r.rc == 0 and r.json == []),
                "list-versions of an unknown key: NOT_FOUND or empty", r.describe())

    # ---------------------------------------------------------- set-attributes
    with h.section("set-attributes: tags, enable/disable, ops, per version"):
        r = node.cli("key", "set-attributes", "--name", "ec384", "--tags", "env=prod",
                     "team=crypto")
        h.expect_ok(r, "set-attributes --tags")
        h.check(r.json and r.json.get("tags") == {"env": "prod", "team": "crypto"},
                "tags set", r.describe())
        r = node.cli("key", "show", "--name", "ec384")
        h.check(r.json and r.json.get("tags") == {"env": "prod", "team": "crypto"},
                "tags visible in show", r.describe())
        r = node.cli("key", "set-attributes", "--name", "ec384", "--enabled", "false")
        h.check(r.rc == 0 and r.json["attributes"]["enabled"] is False, "disable", r.describe())
        r = sign("ec384", "ES384", os.urandom(48))
        h.expect_err(r, "FAILED_PRECONDITION", "sign with a disabled key refused",
                     contains="disabled")
        r = node.cli("key", "set-attributes", "--name", "ec384", "--enabled", "true")
        h.check(r.rc == 0 and r.json["attributes"]["enabled"] is True, "enable again",
                r.describe())
        r = sign("ec384", "ES384", os.urandom(48))
        h.expect_ok(r, "sign works after enabling")
        r = node.cli("key", "show", "--name", "ec384")
        h.check(r.json and r.json.get("tags") == {"env": "prod", "team": "crypto"},
                "enable/disable kept the tags", r.describe())
        r = node.cli("key", "set-attributes", "--name", "ec384", "--ops", "sign")
        h.check(r.rc == 0 and mhtest.key_of(r).get("key_ops") == ["sign"], "set --ops sign",
                r.describe())
        dg = os.urandom(48)
        s = sig_of(sign("ec384", "ES384", dg))
        r = verify("ec384", "ES384", dg, s)
        h.expect_err(r, "FAILED_PRECONDITION", "verify refused: not in key_ops",
                     contains="key_ops")
        r = node.cli("key", "set-attributes", "--name", "ec384", "--ops", "sign", "verify")
        h.check(r.rc == 0 and sorted(mhtest.key_of(r).get("key_ops", [])) == ["sign", "verify"],
                "set --ops sign verify", r.describe())
        h.check(is_valid(verify("ec384", "ES384", dg, s)), "verify allowed again")
        r = node.cli("key", "list-versions", "--name", "many")
        vers = [it["kid"] for it in r.json] if isinstance(r.json, list) else []
        older = [k for k in vers if k != st.get("many_latest")]
        if older:
            v = version_of(older[0])
            r = node.cli("key", "set-attributes", "--name", "many", "--version", v,
                         "--enabled", "false", "--tags", "old=yes")
            h.check(r.rc == 0 and mhtest.key_of(r).get("kid") == older[0]
                    and r.json["attributes"]["enabled"] is False,
                    "set-attributes --version on an older version", r.describe())
            r = node.cli("key", "show", "--name", "many")
            h.check(r.rc == 0 and r.json["attributes"]["enabled"] is True
                    and r.json.get("tags", {}) == {},
                    "the latest version is untouched", r.describe())
            r = node.cli("key", "show", "--name", "many", "--version", v)
            h.check(r.rc == 0 and r.json["attributes"]["enabled"] is False
                    and r.json.get("tags") == {"old": "yes"}, "the older version changed",
                    r.describe())
        r = node.cli("key", "set-attributes", "--name", "no-such-key", "--enabled", "false")
        h.expect_err(r, "NOT_FOUND", "set-attributes on an unknown key: NOT_FOUND")

    # ------------------------------------------------------------- sign/verify
    with h.section("sign and verify: RS256, PS256, ES256, ES384, ES256K"):
        pub = {}
        for name in ("rsa1", "ec256", "ec384", "ec256k"):
            pub[name] = mhtest.public_pem_from_jwk(mhtest.key_of(node.cli("key", "show", "--name", name)))
        for name, alg, dlen, slen in (("rsa1", "RS256", 32, 256), ("rsa1", "PS256", 32, 256),
                                      ("rsa1", "RS384", 48, 256), ("rsa1", "PS512", 64, 256),
                                      ("ec256", "ES256", 32, 64), ("ec384", "ES384", 48, 96),
                                      ("ec256k", "ES256K", 32, 64)):
            dg = os.urandom(dlen)
            r = sign(name, alg, dg)
            s = sig_of(r)
            h.check(r.rc == 0 and len(s) == slen and r.json.get("kid") == alive[name],
                    "%s sign on %s: %d-byte signature, kid" % (alg, name, slen), r.describe())
            h.check(is_valid(verify(name, alg, dg, s)), "%s verify: isValid true" % alg)
            bad = bytearray(s)
            bad[len(bad) // 2] ^= 0x01
            r = verify(name, alg, dg, bytes(bad))
            h.check(r.rc == 0 and r.json == {"isValid": False},
                    "%s verify of a tampered signature: isValid false" % alg, r.describe())
            r = verify(name, alg, os.urandom(dlen), s)
            h.check(r.rc == 0 and r.json == {"isValid": False},
                    "%s verify with another digest: isValid false" % alg, r.describe())
            if alg != "ES256K":
                h.check(openssl_verify(pub[name], dg, s, alg),
                        "openssl verifies the %s signature with the public JWK" % alg)
            st.setdefault("sigs", []).append((name, alg, dg, s, alive[name]))
        r = sign("rsa1", "RS256", os.urandom(48))
        h.expect_err(r, "INVALID_ARGUMENT", "RS256 with a 48-byte digest refused",
                     contains="digest")
        r = sign("ec256", "ES256", os.urandom(31))
        h.expect_err(r, "INVALID_ARGUMENT", "ES256 with a 31-byte digest refused")
        dg = os.urandom(32)
        r = node.cli("key", "sign", "--name", "ec256", "--algorithm", "ES256", "--digest",
                     b64std(dg))
        s = sig_of(r)
        h.check(r.rc == 0 and is_valid(verify("ec256", "ES256", dg, s)),
                "digest given as padded standard base64 is accepted", r.describe())

    # ------------------------------------------------------ encrypt/decrypt/wrap
    with h.section("encrypt/decrypt RSA-OAEP-256, A256GCM, A256CBCPAD; wrap/unwrap"):
        msg = b"attack at dawn \x00\xff" + os.urandom(20)
        r = node.cli("key", "encrypt", "--name", "rsa1", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(msg))
        ct = unb64u(r.json["result"]) if r.rc == 0 else b""
        h.check(r.rc == 0 and len(ct) == 256 and r.json.get("kid") == alive["rsa1"],
                "RSA-OAEP-256 encrypt: 256-byte result, kid", r.describe())
        r = node.cli("key", "decrypt", "--name", "rsa1", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(ct))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg, "RSA-OAEP-256 decrypt",
                r.describe())
        # openssl encrypts with the public JWK; the server decrypts.
        pubf = tmpfile("rsa1-pub.pem", mhtest.public_pem_from_jwk(
            mhtest.key_of(node.cli("key", "show", "--name", "rsa1"))))
        oct_ = mhtest.openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", pubf, "-pkeyopt",
                              "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                              "-pkeyopt", "rsa_mgf1_md:sha256", input_bytes=msg)
        r = node.cli("key", "decrypt", "--name", "rsa1", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(oct_))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg,
                "server decrypts an RSA-OAEP-256 ciphertext made by openssl", r.describe())
        bad = bytearray(ct)
        bad[10] ^= 1
        r = node.cli("key", "decrypt", "--name", "rsa1", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(bytes(bad)))
        h.expect_err(r, "INVALID_ARGUMENT", "RSA-OAEP-256 decrypt of a tampered ciphertext")

        aad = b"header-v1"
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                     b64u(msg), "--aad", b64u(aad))
        ok = r.rc == 0 and all(f in r.json for f in ("result", "iv", "tag"))
        first_iv = r.json.get("iv") if ok else None
        h.check(ok and len(unb64u(r.json["iv"])) == 12 and len(unb64u(r.json["tag"])) == 16
                and len(unb64u(r.json["result"])) == len(msg),
                "A256GCM encrypt returns result, 12-byte iv, 16-byte tag", r.describe())
        if ok:
            g = r.json
            st["gcm"] = (g["result"], g["iv"], g["tag"], aad, msg)
            r = node.cli("key", "decrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                         g["result"], "--iv", g["iv"], "--tag", g["tag"], "--aad", b64u(aad))
            h.check(r.rc == 0 and unb64u(r.json["result"]) == msg, "A256GCM decrypt",
                    r.describe())
            r = node.cli("key", "decrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                         g["result"], "--iv", g["iv"], "--tag", g["tag"], "--aad",
                         b64u(b"header-v2"))
            h.expect_err(r, "INVALID_ARGUMENT", "A256GCM decrypt with other AAD refused")
            t = bytearray(unb64u(g["tag"]))
            t[0] ^= 0x80
            r = node.cli("key", "decrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                         g["result"], "--iv", g["iv"], "--tag", b64u(bytes(t)), "--aad",
                         b64u(aad))
            h.expect_err(r, "INVALID_ARGUMENT", "A256GCM decrypt with a tampered tag refused")
        r2 = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                      b64u(msg), "--aad", b64u(aad))
        h.check(r2.rc == 0 and ok and r2.json.get("iv") != first_iv,
                "A256GCM: a fresh iv per encryption", r2.describe())

        iv = os.urandom(16)
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256CBCPAD", "--value",
                     b64u(msg), "--iv", b64u(iv))
        cbc = unb64u(r.json["result"]) if r.rc == 0 else b""
        h.check(r.rc == 0 and len(cbc) % 16 == 0 and len(cbc) > len(msg),
                "A256CBCPAD encrypt with an iv: padded result", r.describe())
        r = node.cli("key", "decrypt", "--name", "oct1", "--algorithm", "A256CBCPAD", "--value",
                     b64u(cbc), "--iv", b64u(iv))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == msg, "A256CBCPAD decrypt",
                r.describe())
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256CBCPAD", "--value",
                     b64u(msg), "--iv", b64u(os.urandom(8)))
        h.expect_err(r, "INVALID_ARGUMENT", "A256CBCPAD with an 8-byte iv refused")

        cek = os.urandom(32)
        r = node.cli("key", "wrap", "--name", "rsa1", "--algorithm", "RSA-OAEP-256", "--value",
                     b64u(cek))
        w = unb64u(r.json["result"]) if r.rc == 0 else b""
        h.check(r.rc == 0 and len(w) == 256, "wrap RSA-OAEP-256", r.describe())
        r = node.cli("key", "unwrap", "--name", "rsa1", "--algorithm", "RSA-OAEP-256", "--value",
                     b64u(w))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == cek, "unwrap RSA-OAEP-256",
                r.describe())
        r = node.cli("key", "wrap", "--name", "oct1", "--algorithm", "A256KW", "--value",
                     b64u(cek))
        w = unb64u(r.json["result"]) if r.rc == 0 else b""
        h.check(r.rc == 0 and len(w) == 40, "wrap A256KW: 40-byte result", r.describe())
        r = node.cli("key", "unwrap", "--name", "oct1", "--algorithm", "A256KW", "--value",
                     b64u(w))
        h.check(r.rc == 0 and unb64u(r.json["result"]) == cek, "unwrap A256KW", r.describe())
        bad = bytearray(w)
        bad[5] ^= 1
        r = node.cli("key", "unwrap", "--name", "oct1", "--algorithm", "A256KW", "--value",
                     b64u(bytes(bad)))
        h.expect_err(r, "INVALID_ARGUMENT", "A256KW unwrap of a tampered blob refused")

    # ------------------------------------------------------------------ import
    with h.section("import: RSA from PEM, EC from JWK, encrypted PEM; openssl verifies"):
        rsa_pem = tmpfile("imp-rsa.pem")
        mhtest.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                       "-out", rsa_pem)
        f = mhtest.openssl_key_fields(rsa_pem)
        r = node.cli("key", "import", "--name", "imp-rsa", "--pem-file", rsa_pem)
        h.expect_ok(r, "import RSA PEM")
        k = mhtest.key_of(r)
        if r.rc == 0:
            alive["imp-rsa"] = k["kid"]
        h.check(k.get("kty") == "RSA-HSM" and unb64u(k.get("n", "")) ==
                f["modulus"].lstrip(b"\x00") and "d" not in k,
                "imported RSA: kty RSA-HSM, n equals the PEM's modulus, no d", k)
        dg = os.urandom(32)
        s = sig_of(sign("imp-rsa", "RS256", dg))
        pub_show = mhtest.public_pem_from_jwk(mhtest.key_of(node.cli("key", "show", "--name",
                                                                "imp-rsa")))
        h.check(openssl_verify(pub_show, dg, s, "RS256"),
                "openssl verifies RS256 by the imported key with the public key from show")
        pub_orig = mhtest.openssl("pkey", "-in", rsa_pem, "-pubout").decode()
        h.check(pub_show == pub_orig, "public key from show equals openssl's -pubout")

        ec_pem = tmpfile("imp-ec.pem")
        mhtest.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                       "-out", ec_pem)
        f = mhtest.openssl_key_fields(ec_pem)
        d = f["priv"].rjust(32, b"\x00")[-32:]
        jwk = {"kty": "EC", "crv": "P-256", "x": b64u(f["pub"][1:33]),
               "y": b64u(f["pub"][33:65]), "d": b64u(d)}
        jf = tmpfile("imp-ec.jwk", json.dumps(jwk))
        r = node.cli("key", "import", "--name", "imp-ec", "--jwk-file", jf, "--ops", "sign",
                     "verify", "--tags", "src=jwk")
        h.expect_ok(r, "import EC JWK")
        k = mhtest.key_of(r)
        if r.rc == 0:
            alive["imp-ec"] = k["kid"]
        h.check(k.get("kty") == "EC-HSM" and k.get("crv") == "P-256" and k.get("x") == jwk["x"]
                and k.get("y") == jwk["y"] and "d" not in k
                and sorted(k.get("key_ops", [])) == ["sign", "verify"]
                and r.json.get("tags") == {"src": "jwk"},
                "imported EC: EC-HSM, same x/y, no d, key_ops and tags", r.describe())
        dg = os.urandom(32)
        s = sig_of(sign("imp-ec", "ES256", dg))
        pub_show = mhtest.public_pem_from_jwk(mhtest.key_of(node.cli("key", "show", "--name",
                                                                "imp-ec")))
        h.check(openssl_verify(pub_show, dg, s, "ES256"),
                "openssl verifies ES256 by the JWK-imported key with the public key from show")
        # Signing by openssl with the original key verifies on the server (same material).
        dgf = tmpfile("imp-ec-digest.bin", dg)
        der = mhtest.openssl("pkeyutl", "-sign", "-inkey", ec_pem, "-in", dgf)
        # DER -> raw r||s (32 bytes each)
        rlen = der[3]
        rr = der[4:4 + rlen]
        sl = der[5 + rlen]
        ss = der[6 + rlen:6 + rlen + sl]
        raw = rr.lstrip(b"\x00").rjust(32, b"\x00") + ss.lstrip(b"\x00").rjust(32, b"\x00")
        h.check(is_valid(verify("imp-ec", "ES256", dg, raw)),
                "server verifies an ES256 signature made by openssl with the imported key")

        enc_pem = tmpfile("imp-enc.pem")
        mhtest.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384",
                       "-aes-256-cbc", "-pass", "pass:s3cret!", "-out", enc_pem)
        r = node.cli("key", "import", "--name", "imp-enc", "--pem-file", enc_pem,
                     "--pem-password", "wrong")
        h.expect_err(r, "INVALID_ARGUMENT", "import of an encrypted PEM with a wrong password")
        r = node.cli("key", "import", "--name", "imp-enc", "--pem-file", enc_pem,
                     "--pem-password", "s3cret!")
        h.check(r.rc == 0 and mhtest.key_of(r).get("crv") == "P-384",
                "import of an encrypted PEM with its password", r.describe())
        if r.rc == 0:
            alive["imp-enc"] = mhtest.key_of(r)["kid"]
        junk = tmpfile("junk.jwk", '{"kty":"RSA","n":"AQAB"}')
        r = node.cli("key", "import", "--name", "imp-junk", "--jwk-file", junk)
        h.expect_err(r, "INVALID_ARGUMENT", "import of a public-only / malformed JWK refused")
        junk = tmpfile("junk.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        r = node.cli("key", "import", "--name", "imp-junk", "--pem-file", junk)
        h.expect_err(r, "INVALID_ARGUMENT", "import of a malformed PEM refused")

    # ------------------------------------------------------------------ rotate
    with h.section("rotate"):
        before = alive["ec256"]
        r = node.cli("key", "rotate", "--name", "ec256")
        k = mhtest.key_of(r)
        h.check(r.rc == 0 and k.get("kid", "").startswith("https://mhsm-test/keys/ec256/")
                and k.get("kid") != before and k.get("kty") == "EC-HSM" and k.get("crv") == "P-256",
                "rotate: a new version with the same kty and curve", r.describe())
        if r.rc == 0:
            alive["ec256"] = k["kid"]
        r = node.cli("key", "show", "--name", "ec256")
        h.check(r.rc == 0 and mhtest.key_of(r).get("kid") == alive["ec256"], "show returns the rotated",
                r.describe())
        r = node.cli("key", "list-versions", "--name", "ec256")
        h.check(isinstance(r.json, list) and sorted(it["kid"] for it in r.json) ==
                sorted([before, alive["ec256"]]), "list-versions: both versions", r.describe())
        r = node.cli("key", "rotate", "--name", "oct1")
        h.check(r.rc == 0 and mhtest.key_of(r).get("kty") == "oct-HSM", "rotate oct1", r.describe())
        if r.rc == 0:
            st["oct1_v1"] = alive["oct1"]
            alive["oct1"] = mhtest.key_of(r)["kid"]
        r = node.cli("key", "rotate", "--name", "no-such-key")
        h.expect_err(r, "NOT_FOUND", "rotate an unknown key: NOT_FOUND")

    # --------------------------------------------- backup/delete/recover/purge/restore
    with h.section("backup, delete, recover, purge, restore"):
        backup = tmpfile("ec256.backup")
        r = node.cli("key", "backup", "--name", "ec256", "--file", backup)
        h.expect_ok(r, "backup ec256 (2 versions)")
        blob = open(backup, "rb").read() if os.path.exists(backup) else b""
        h.check(len(blob) > 64, "backup file written (%d bytes)" % len(blob))
        r = node.cli("key", "backup", "--name", "ec256", "--file", backup)
        h.check(r.rc == 2 and open(backup, "rb").read() == blob,
                "backup refuses to overwrite its file (exit 2)", r.describe())
        old_sigs = [x for x in st.get("sigs", []) if x[0] == "ec256"]
        versions = sorted(it["kid"] for it in node.cli("key", "list-versions", "--name",
                                                        "ec256").json or [])
        r = node.cli("key", "delete", "--name", "ec256")
        j = r.json or {}
        ok = (r.rc == 0 and j.get("recoveryId") and isinstance(j.get("deletedDate"), int)
              and isinstance(j.get("scheduledPurgeDate"), int)
              and j["scheduledPurgeDate"] - j["deletedDate"] == 90 * 86400)
        h.check(ok, "delete: DeletedKeyBundle with recoveryId and purge date 90 days later",
                r.describe())
        if r.rc == 0:
            alive.pop("ec256")
        h.expect_err(node.cli("key", "show", "--name", "ec256"), "NOT_FOUND",
                     "show of a deleted key: NOT_FOUND")
        h.expect_err(sign("ec256", "ES256", os.urandom(32)), "NOT_FOUND",
                     "sign with a deleted key: NOT_FOUND")
        r = node.cli("key", "show-deleted", "--name", "ec256")
        h.check(r.rc == 0 and r.json.get("recoveryId") == j.get("recoveryId")
                and r.json.get("scheduledPurgeDate") == j.get("scheduledPurgeDate"),
                "show-deleted: same recoveryId and purge date", r.describe())
        r = node.cli("key", "list-deleted")
        dn = [it["kid"].split("/keys/", 1)[1].split("/")[0] for it in r.json] \
            if r.rc == 0 and isinstance(r.json, list) else None
        h.check(dn == ["ec256"] and all("scheduledPurgeDate" in it for it in r.json),
                "list-deleted: exactly ec256, with purge dates", r.describe())
        r = node.cli("key", "list")
        h.check(list_names(r) is not None and "ec256" not in list_names(r),
                "list no longer shows ec256", r.describe())
        r = create("ec256", "--kty", "EC-HSM", "--curve", "P-256", record=False)
        h.expect_err(r, "FAILED_PRECONDITION", "create on a deleted name refused",
                     contains=r"recover.*purge|purge.*recover")
        r = node.cli("key", "import", "--name", "ec256", "--jwk-file",
                     tmpfile("imp-ec.jwk"))
        h.expect_err(r, "FAILED_PRECONDITION", "import on a deleted name refused",
                     contains=r"recover|purge")
        r = node.cli("key", "restore", "--file", backup)
        h.check(r.rc == 1 and r.status in ("FAILED_PRECONDITION", "ALREADY_EXISTS")
                and ("recover" in r.err or "purge" in r.err or "deleted" in r.err),
                "restore onto a deleted name refused", r.describe())
        r = node.cli("key", "recover", "--name", "ec256")
        h.check(r.rc == 0 and mhtest.key_of(r).get("kid") in versions,
                "recover returns the key bundle", r.describe())
        if r.rc == 0:
            alive["ec256"] = mhtest.key_of(r)["kid"]
        r = node.cli("key", "list-versions", "--name", "ec256")
        h.check(isinstance(r.json, list) and sorted(it["kid"] for it in r.json) == versions,
                "recovered key has all its versions", r.describe())
        h.expect_err(node.cli("key", "show-deleted", "--name", "ec256"), "NOT_FOUND",
                     "show-deleted after recover: NOT_FOUND")
        h.expect_err(node.cli("key", "recover", "--name", "ec256"),
                     ("NOT_FOUND", "FAILED_PRECONDITION"),
                     "recover of a key that is not deleted refused", contains="not deleted")
        h.expect_err(node.cli("key", "purge", "--name", "ec256"),
                     ("NOT_FOUND", "FAILED_PRECONDITION"),
                     "purge of a key that is not deleted refused", contains="not deleted")
        h.expect_ok(sign("ec256", "ES256", os.urandom(32)), "sign after recover")
        r = node.cli("key", "delete", "--name", "ec256")
        h.expect_ok(r, "delete again")
        if r.rc == 0:
            alive.pop("ec256")
        r = node.cli("key", "purge", "--name", "ec256")
        h.expect_ok(r, "purge")
        h.expect_err(node.cli("key", "show-deleted", "--name", "ec256"), "NOT_FOUND",
                     "show-deleted after purge: NOT_FOUND")
        r = node.cli("key", "list-deleted")
        h.check(r.rc == 0 and r.json == [], "list-deleted empty after purge", r.describe())
        r = node.cli("key", "restore", "--file", backup)
        h.expect_ok(r, "restore from the backup after purge")
        if r.rc == 0:
            alive["ec256"] = mhtest.key_of(r)["kid"]
        r = node.cli("key", "list-versions", "--name", "ec256")
        h.check(isinstance(r.json, list) and sorted(it["kid"] for it in r.json) == versions,
                "restore brings back every version with its version id", r.describe())
        for (_, alg, dg, s, kid) in old_sigs:
            h.check(is_valid(verify("ec256", alg, dg, s, version=version_of(kid))),
                    "a signature made before backup verifies with the restored version")
        dg = os.urandom(32)
        for kid in versions:
            s = sig_of(sign("ec256", "ES256", dg, version=version_of(kid)))
            h.check(is_valid(verify("ec256", "ES256", dg, s, version=version_of(kid))),
                    "restored version %s signs and verifies" % version_of(kid)[:8])
        r = node.cli("key", "restore", "--file", backup)
        h.expect_err(r, "ALREADY_EXISTS", "restore onto an existing name: ALREADY_EXISTS")
        st["backup"] = backup
        for label, mutate in (("a flipped byte in the middle", lambda b: b[:len(b) // 2] +
                               bytes([b[len(b) // 2] ^ 0x01]) + b[len(b) // 2 + 1:]),
                              ("a flipped last byte", lambda b: b[:-1] + bytes([b[-1] ^ 0x80])),
                              ("truncated", lambda b: b[:len(b) - 17]),
                              ("random bytes", lambda b: os.urandom(len(b)))):
            p = tmpfile("corrupt-%d.backup" % len(label), mutate(blob))
            node.cli("key", "delete", "--name", "ec256")
            node.cli("key", "purge", "--name", "ec256")
            r = node.cli("key", "restore", "--file", p)
            h.expect_err(r, "INVALID_ARGUMENT", "restore of a corrupted backup (%s)" % label)
            r = node.cli("key", "restore", "--file", backup)
            h.expect_ok(r, "the intact backup still restores")
        r = node.cli("key", "backup", "--name", "no-such-key", "--file", tmpfile("x.backup"))
        h.expect_err(r, "NOT_FOUND", "backup of an unknown key: NOT_FOUND")
        h.expect_err(node.cli("key", "delete", "--name", "no-such-key"), "NOT_FOUND",
                     "delete of an unknown key: NOT_FOUND")
        h.expect_err(node.cli("key", "purge", "--name", "no-such-key"), "NOT_FOUND",
                     "purge of an unknown key: NOT_FOUND")

    # ------------------------------------------------------------------ random
    with h.section("random"):
        r = node.cli("random", "--count", "32")
        v1 = unb64u(r.json["value"]) if r.rc == 0 else b""
        h.check(len(v1) == 32, "random --count 32 gives 32 bytes", r.describe())
        r = node.cli("random", "--count", "32")
        v2 = unb64u(r.json["value"]) if r.rc == 0 else b""
        h.check(len(v2) == 32 and v1 != v2, "two draws differ")
        r = node.cli("random", "--count", "128")
        h.check(r.rc == 0 and len(unb64u(r.json["value"])) == 128, "random --count 128",
                r.describe())
        h.expect_err(node.cli("random", "--count", "0"), "INVALID_ARGUMENT",
                     "random --count 0: INVALID_ARGUMENT")
        h.expect_err(node.cli("random", "--count", "129"), "INVALID_ARGUMENT",
                     "random --count 129: INVALID_ARGUMENT")

    # ------------------------------------------------------------ rule failures
    with h.section("rules: algorithm, disabled, exp, nbf, key_ops, unknown key"):
        h.expect_err(sign("rsa1", "ES256", os.urandom(32)), "INVALID_ARGUMENT",
                     "ES256 on an RSA key refused", contains=r"algorithm|fit")
        h.expect_err(sign("ec384", "ES256", os.urandom(32)), "INVALID_ARGUMENT",
                     "ES256 on a P-384 key refused")
        r = node.cli("key", "encrypt", "--name", "ec384", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(b"x"))
        # The algorithm is checked before key_ops and attributes: INVALID_ARGUMENT.
        h.expect_err(r, "INVALID_ARGUMENT", "RSA-OAEP-256 on an EC key refused",
                     contains=r"algorithm|fit")
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "RSA-OAEP-256",
                     "--value", b64u(b"x"))
        h.expect_err(r, "INVALID_ARGUMENT", "RSA-OAEP-256 on an AES key refused",
                     contains=r"algorithm|fit")
        r = node.cli("key", "wrap", "--name", "rsa1", "--algorithm", "A256KW", "--value",
                     b64u(os.urandom(32)))
        h.expect_err(r, "INVALID_ARGUMENT", "A256KW on an RSA key refused",
                     contains=r"algorithm|fit")
        r = node.cli("key", "encrypt", "--name", "rsa1", "--algorithm", "A256GCM", "--value",
                     b64u(b"x"))
        h.expect_err(r, "INVALID_ARGUMENT", "A256GCM on an RSA key refused")
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "BOGUS", "--value",
                     b64u(b"x"))
        h.check(r.rc in (1, 2) and (r.rc == 2 or r.status == "INVALID_ARGUMENT"),
                "unknown algorithm refused", r.describe())

        create("dis", "--kty", "EC-HSM", "--curve", "P-256", "--disabled",
               what="create --disabled")
        r = node.cli("key", "show", "--name", "dis")
        h.check(r.rc == 0 and r.json["attributes"]["enabled"] is False, "created disabled",
                r.describe())
        h.expect_err(sign("dis", "ES256", os.urandom(32)), "FAILED_PRECONDITION",
                     "sign with a disabled key", contains="disabled")

        past = int(time.time()) - 3600
        create("expired", "--kty", "oct-HSM", "--size", "256", "--expires", str(past),
               what="create with --expires in the past")
        r = node.cli("key", "show", "--name", "expired")
        h.check(r.rc == 0 and r.json["attributes"].get("exp") == past, "exp recorded",
                r.describe())
        r = node.cli("key", "encrypt", "--name", "expired", "--algorithm", "A256GCM", "--value",
                     b64u(b"x"))
        h.expect_err(r, "FAILED_PRECONDITION", "encrypt with an expired key", contains="expired")

        future = int(time.time()) + 86400 * 2
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(future))
        create("notyet", "--kty", "EC-HSM", "--curve", "P-256", "--not-before", iso,
               what="create with --not-before in the future (ISO form)")
        r = node.cli("key", "show", "--name", "notyet")
        h.check(r.rc == 0 and r.json["attributes"].get("nbf") == future,
                "nbf recorded from the ISO time", r.describe())
        h.expect_err(sign("notyet", "ES256", os.urandom(32)), "FAILED_PRECONDITION",
                     "sign with a not-yet-valid key", contains=r"not yet valid|nbf")
        r = node.cli("key", "set-attributes", "--name", "notyet", "--not-before",
                     str(int(time.time()) - 60))
        h.expect_ok(r, "set-attributes --not-before in the past")
        h.expect_ok(sign("notyet", "ES256", os.urandom(32)), "now the key signs")
        r = node.cli("key", "set-attributes", "--name", "notyet", "--expires",
                     str(int(time.time()) - 10))
        h.expect_ok(r, "set-attributes --expires in the past")
        h.expect_err(sign("notyet", "ES256", os.urandom(32)), "FAILED_PRECONDITION",
                     "sign after exp set in the past", contains="expired")

        create("enc-only", "--kty", "oct-HSM", "--size", "256", "--ops", "encrypt",
               what="create oct with --ops encrypt")
        r = node.cli("key", "encrypt", "--name", "enc-only", "--algorithm", "A256GCM", "--value",
                     b64u(b"hello"))
        h.expect_ok(r, "encrypt allowed by key_ops")
        if r.rc == 0:
            g = r.json
            r = node.cli("key", "decrypt", "--name", "enc-only", "--algorithm", "A256GCM",
                         "--value", g["result"], "--iv", g["iv"], "--tag", g["tag"])
            h.expect_err(r, "FAILED_PRECONDITION", "decrypt refused: not in key_ops",
                         contains="key_ops")
        r = node.cli("key", "wrap", "--name", "enc-only", "--algorithm", "A256KW", "--value",
                     b64u(os.urandom(32)))
        h.expect_err(r, "FAILED_PRECONDITION", "wrapKey refused: not in key_ops",
                     contains="key_ops")
        r = create("ops-bad", "--kty", "EC-HSM", "--curve", "P-256", "--ops", "encrypt")
        h.expect_err(r, "INVALID_ARGUMENT", "key_ops the key type cannot do (encrypt on EC)")

        for what, args in (("show", ["key", "show", "--name", "ghost"]),
                           ("sign", ["key", "sign", "--name", "ghost", "--algorithm", "ES256",
                                     "--digest", b64u(os.urandom(32))]),
                           ("encrypt", ["key", "encrypt", "--name", "ghost", "--algorithm",
                                        "A256GCM", "--value", b64u(b"x")]),
                           ("rotate", ["key", "rotate", "--name", "ghost"]),
                           ("show-deleted", ["key", "show-deleted", "--name", "ghost"]),
                           ("recover", ["key", "recover", "--name", "ghost"])):
            h.expect_err(node.cli(*args), "NOT_FOUND", "%s of an unknown key: NOT_FOUND" % what)
        r = node.cli("key", "show", "--name", "rsa1", "--version", "0" * 32)
        h.expect_err(r, "NOT_FOUND", "show of an unknown version: NOT_FOUND")

    with h.section("rules: names and tags"):
        for label, name in (("empty", ""), ("128 characters", "a" * 128),
                            ("underscore", "a_b"), ("dot", "a.b"), ("slash", "a/b"),
                            ("space", "a b"), ("non-ASCII", "cl\u00e9")):
            r = create(name, "--kty", "oct-HSM", "--size", "128", record=False)
            h.expect_err(r, "INVALID_ARGUMENT", "name %s refused" % label,
                         contains="name")
        create("A" * 127, "--kty", "oct-HSM", "--size", "128",
               what="a 127-character name is accepted")
        create("Mixed-Case-0", "--kty", "oct-HSM", "--size", "128",
               what="letters, digits and '-' are accepted")
        tags15 = ["t%02d=v" % i for i in range(15)]
        r = create("tags15", "--kty", "oct-HSM", "--size", "128", "--tags", *tags15)
        h.check(r.rc == 0 and len(r.json.get("tags", {})) == 15, "15 tags accepted",
                r.describe())
        r = create("tags16", "--kty", "oct-HSM", "--size", "128", "--tags",
                   *(tags15 + ["t15=v"]), record=False)
        h.expect_err(r, "INVALID_ARGUMENT", "16 tags refused", contains="tag")
        r = node.cli("key", "set-attributes", "--name", "tags15", "--tags", *(tags15 +
                                                                           ["t15=v"]))
        h.expect_err(r, "INVALID_ARGUMENT", "set-attributes with 16 tags refused",
                     contains="tag")
        r = create("tag256", "--kty", "oct-HSM", "--size", "128", "--tags",
                   "k=" + "v" * 256)
        h.check(r.rc == 0, "a 256-character tag value accepted", r.describe())
        r = create("tag257", "--kty", "oct-HSM", "--size", "128", "--tags",
                   "k=" + "v" * 257, record=False)
        h.expect_err(r, "INVALID_ARGUMENT", "a 257-character tag value refused", contains="tag")
        r = create("tagname257", "--kty", "oct-HSM", "--size", "128", "--tags",
                   "k" * 257 + "=v", record=False)
        h.expect_err(r, "INVALID_ARGUMENT", "a 257-character tag name refused", contains="tag")

    with h.section("rules: message size limit (max_message_bytes=%d)" % MAX_MESSAGE):
        small = os.urandom(MAX_MESSAGE - 4096)
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                     b64u(small))
        h.check(r.rc == 0 and len(unb64u(r.json["result"])) == len(small),
                "a %d-byte value under the limit is served" % len(small), r.describe())
        big = os.urandom(MAX_MESSAGE + 4096)
        r = node.cli("key", "encrypt", "--name", "oct1", "--algorithm", "A256GCM", "--value",
                     b64u(big))
        h.expect_err(r, "RESOURCE_EXHAUSTED", "a %d-byte value over the limit: RESOURCE_EXHAUSTED"
                     % len(big))
        h.expect_ok(node.cli("health"), "the node still serves after the oversized message")

    # --------------------------------------------------------- handshake checks
    with h.section("TLS: client certificate required, other CA refused"):
        r = node.cli("key", "list", env=node.env(cert=None))
        h.check(r.rc == 3 and r.status == "UNAVAILABLE",
                "CLI without a client certificate: exit 3, UNAVAILABLE", r.describe())
        r = node.cli("key", "list", cert="foreign")
        h.check(r.rc == 3 and r.status == "UNAVAILABLE",
                "CLI with a certificate from another CA: exit 3, UNAVAILABLE", r.describe())
        r = node.cli("health", env=node.env(MHSM_CA=cert("foreign-ca")))
        h.check(r.rc == 3 and r.status == "UNAVAILABLE",
                "CLI that does not trust the server's CA: exit 3", r.describe())
        # app holds no role: the server answers (the handshake passed) and RBAC refuses.
        r = node.cli("key", "show", "--name", "rsa1", cert="app")
        h.expect_err(r, "PERMISSION_DENIED",
                     "another certificate of the cluster CA (app) reaches the server "
                     "(no role: PERMISSION_DENIED)", contains=r"keys/read/action")

        def raw_tls(client_cert):
            """Handshake with Python's ssl and read what the server sends first.
            Returns (alpn, tls version, first bytes or None, error text)."""
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cert("ca"))
            ctx.set_alpn_protocols(["h2"])
            if client_cert:
                ctx.load_cert_chain(cert(client_cert), os.path.join(certs, client_cert + ".key"))
            s = socket.create_connection(("127.0.0.1", node.port), timeout=20)
            try:
                t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
                alpn, ver = t.selected_alpn_protocol(), t.version()
                t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                data = t.recv(9)
                return alpn, ver, data, ""
            except (ssl.SSLError, OSError) as e:
                return None, None, None, str(e)
            finally:
                s.close()

        alpn, ver, data, err = raw_tls("admin")
        h.check(alpn == "h2" and ver == "TLSv1.3" and data and len(data) == 9 and data[3] == 4,
                "raw TLS with the admin cert: TLS 1.3, ALPN h2, server sends SETTINGS",
                (alpn, ver, data, err))
        for cc in (None, "foreign"):
            alpn, ver, data, err = raw_tls(cc)
            h.check(not data, "raw TLS with %s: refused, no HTTP/2 byte (%s)" %
                    (cc or "no client certificate", err or "closed"), (alpn, ver, data))

    # ------------------------------------------------------ another security domain
    with h.section("restore into a node with another security domain"):
        node2 = h.node("node2", hsm_name="mhsm-other")
        node2.start()
        r = node2.cli("key", "restore", "--file", st["backup"])
        h.expect_err(r, "FAILED_PRECONDITION", "restore into a not activated node refused",
                     contains=r"security-domain download")
        h.expect_ok(node2.activate(), "activate node2 (its own security domain)")
        r = node2.cli("key", "restore", "--file", st["backup"])
        h.check(r.rc == 1 and r.status in ("FAILED_PRECONDITION", "INVALID_ARGUMENT")
                and "domain" in r.err.lower(),
                "restore of node1's backup into node2 refused, naming the security domain",
                r.describe())
        r = node2.cli("key", "show", "--name", "ec256")
        h.expect_err(r, "NOT_FOUND", "nothing was restored on node2")
        rc = node2.stop()
        h.check(rc == 0, "node2 SIGTERM -> exit 0", rc)

    # ---------------------------------------------------- SIGTERM and restart
    with h.section("SIGTERM, restart on the same data dir, every key kept"):
        before = node.cli("key", "list")
        before_names = sorted(list_names(before) or [])
        h.check(before_names == sorted(alive), "list matches every key this test made",
                "want %s got %s" % (sorted(alive), before_names))
        rc = node.stop()
        h.check(rc == 0, "SIGTERM -> exit 0", "exit status %s" % rc)
        node.start()
        r = node.cli("security-domain", "show")
        h.check(r.rc == 0 and r.json.get("activationStatus") == "Active",
                "still Active after restart (no custodian involved)", r.describe())
        r = node.cli("key", "list")
        h.check(sorted(list_names(r) or []) == before_names, "every key listed after restart",
                r.describe())
        for name, kid in sorted(alive.items()):
            r = node.cli("key", "show", "--name", name, quiet=True)
            if not (r.rc == 0 and mhtest.key_of(r).get("kid") == kid):
                h.fail("show %s after restart" % name, r.describe())
                break
        else:
            h.ok("show of every key after restart returns its latest kid")
        for (name, alg, dg, s, kid) in st.get("sigs", []):
            if name in alive:
                h.check(is_valid(verify(name, alg, dg, s, version=version_of(kid))),
                        "%s signature from before the restart still verifies" % alg)
        if "gcm" in st:
            res, iv, tag, aad, msg = st["gcm"]
            r = node.cli("key", "decrypt", "--name", "oct1", "--version",
                         version_of(st.get("oct1_v1", alive["oct1"])), "--algorithm", "A256GCM",
                         "--value", res, "--iv", iv, "--tag", tag, "--aad", b64u(aad))
            h.check(r.rc == 0 and unb64u(r.json["result"]) == msg,
                    "A256GCM ciphertext from before the restart decrypts", r.describe())
        dg = os.urandom(32)
        s = sig_of(sign("rsa1", "PS256", dg))
        h.check(is_valid(verify("rsa1", "PS256", dg, s)), "rsa1 signs after restart")
        create("after-restart", "--kty", "EC-HSM", "--curve", "P-256",
               what="create after restart")
        r = node.activate(tmpfile("sd-after-restart.json"))
        h.expect_err(r, "ALREADY_EXISTS", "download still refused after restart")
        rc = node.stop()
        h.check(rc == 0, "second SIGTERM -> exit 0", "exit status %s" % rc)
except Exception as e:  # noqa: BLE001 -- outside a section: still a failure
    import traceback
    traceback.print_exc(file=sys.stdout)
    h.fail("unexpected exception", "%s: %s" % (type(e).__name__, e))
finally:
    h.finish()
