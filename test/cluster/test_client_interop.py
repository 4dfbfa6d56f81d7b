"""Interop: our gRPC client (the `mhsm` CLI) against the reference gRPC server.

A Python grpcio server (Debian's python3-grpcio, i.e. gRPC C-core) with mutual TLS
implements a few mhsm.v1 methods from protoc-generated message classes. The real
`mhsm` binary is run against it; the test checks what the CLI prints (JSON shapes,
the exact error line), its exit statuses (0, 1, 2, 3), what the server received
(every request field, grpc-timeout, request ids and the retry), TLS verification of
the server (wrong CA, wrong host name) and of the client (no certificate), the
client's deadline, and its response size cap. Every wait is bounded; the servers are
stopped at the end. Prints `N passed, N failed`; exits non-zero on any failure.
"""

import base64
import calendar
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import grpc

SOURCE_DIR = os.environ.get(
    "MH_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("MH_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
TMP_PARENT = os.environ.get("MH_TEST_TMPDIR", "/tmp")
MHSM = os.path.join(BUILD_DIR, "mhsm")
CLI_TIMEOUT = 120  # seconds per CLI process (ASan builds are slow)

os.makedirs(TMP_PARENT, exist_ok=True)
TMP = tempfile.mkdtemp(prefix="client_interop_", dir=TMP_PARENT)

passed = 0
failed = 0


def check(cond, what, detail=None):
    global passed, failed
    if os.environ.get("MH_VERBOSE"):
        print("%s: %s %s" % ("ok" if cond else "FAIL", what, detail if detail is not None else ""))
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL: %s%s" % (what, "" if detail is None else "\n      %r" % (detail,)), flush=True)


def sh(*argv):
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(argv), p.stderr.decode(errors="replace")))
    return p.stdout


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------- certificates

def make_ca(name):
    key = os.path.join(TMP, name + ".key")
    crt = os.path.join(TMP, name + ".pem")
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + name,
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    return key, crt


def make_leaf(name, ca, san, usage):
    key = os.path.join(TMP, name + ".key")
    csr = os.path.join(TMP, name + ".csr")
    crt = os.path.join(TMP, name + ".pem")
    ext = os.path.join(TMP, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n" % usage)
        if san:
            f.write("subjectAltName=%s\n" % san)
    sh("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
    sh("openssl", "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial",
       "-out", crt, "-days", "2", "-extfile", ext)
    return key, crt


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- protobuf modules

def gen_protos():
    out = os.path.join(TMP, "py")
    os.makedirs(out)
    proto = os.path.join(SOURCE_DIR, "proto")
    files = [os.path.join(proto, "mhsm", "v1", n)
             for n in ("types.proto", "keys.proto", "crypto.proto", "security_domain.proto")]
    sh("protoc", "--python_out=" + out, "-I" + proto, *files)
    # The health proto is compiled flat: a "grpc" package directory would shadow grpcio.
    hdir = os.path.join(proto, "grpc", "health", "v1")
    sh("protoc", "--python_out=" + out, "-I" + hdir, os.path.join(hdir, "health.proto"))
    sys.path.insert(0, out)


# ---------------------------------------------------------------- the fake server

class Fake:
    """State shared between the handlers and the checks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (method, request message, time_remaining or None)
        self.flaky_seen = {}

    def record(self, method, req, ctx):
        with self.lock:
            self.calls.append((method, req, ctx.time_remaining()))

    def last(self, method):
        with self.lock:
            for m, req, tr in reversed(self.calls):
                if m == method:
                    return req, tr
        return None, None

    def count(self, method):
        with self.lock:
            return sum(1 for m, _, _ in self.calls if m == method)


NASTY = "key 'missing' not found: 100% gone, 50%% sure \u00fcml\u00e4ut \u2713 caf\u00e9\x01end"
RSA_N = bytes(range(1, 256)) + b"\x07"
SD_JSON = '{"EncData":{"data":[],"kdf":"sp108_kdf"},"SharedKeys":{"required":2}}'
BACKUP_BLOB = bytes((i * 7) & 0xFF for i in range(700))


def build_server(fake, pb, server_key, server_crt, ca_crt):
    types, keys, crypto, sdp, health = pb

    def bundle(name, kty="RSA-HSM", tags=None, ops=None, enabled=True):
        kb = types.KeyBundle()
        kb.key.kid = "https://mhsm-test/keys/%s/0123456789abcdef" % name
        kb.key.kty = kty
        kb.key.key_ops.extend(ops or ["sign", "verify"])
        if kty.startswith("RSA"):
            kb.key.n = RSA_N
            kb.key.e = b"\x01\x00\x01"
        elif kty.startswith("EC"):
            kb.key.crv = "P-256"
            kb.key.x = b"\x11" * 32
            kb.key.y = b"\x22" * 32
        kb.attributes.enabled.value = enabled
        kb.attributes.created = 1700000000
        kb.attributes.updated = 1700000001
        kb.attributes.recoverable_days = 90
        kb.attributes.recovery_level = "Recoverable+Purgeable"
        kb.attributes.exportable.value = False
        for k, v in (tags or {}).items():
            kb.tags[k] = v
        return kb

    def get_random_bytes(req, ctx):
        fake.record("GetRandomBytes", req, ctx)
        if req.count == 0 or (128 < req.count < 1000):
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "count must be 1..128")
        # A huge count asks for a response over the client's 4 MiB cap.
        n = req.count if req.count <= 128 else 5 * 1024 * 1024
        return keys.GetRandomBytesResponse(value=bytes((i * 31 + 7) & 0xFF for i in range(n))
                                           if n <= 128 else b"\xab" * n)

    def create_key(req, ctx):
        fake.record("CreateKey", req, ctx)
        if req.name == "flaky":
            with fake.lock:
                seen = fake.flaky_seen.get(req.request_id, 0)
                fake.flaky_seen[req.request_id] = seen + 1
            if seen == 0:
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "no leader yet")
        if req.name == "always-down":
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "still no leader")
        return bundle(req.name, req.kty, dict(req.tags), list(req.key_ops) or None,
                      not (req.attributes.HasField("enabled") and not req.attributes.enabled.value))

    def import_key(req, ctx):
        fake.record("ImportKey", req, ctx)
        return bundle(req.name, "EC-HSM")

    def get_key(req, ctx):
        fake.record("GetKey", req, ctx)
        if req.name == "missing":
            ctx.abort(grpc.StatusCode.NOT_FOUND, NASTY)
        if req.name == "badutf8":
            kb = bundle("x")
            kb.key.kty = "oct-HSM"
            return kb
        return bundle(req.name, "EC-HSM")

    def list_keys(req, ctx):
        fake.record("ListKeys", req, ctx)
        pages = {"": ("p2", [0, 1]), "p2": ("p3", [2, 3]), "p3": ("", [4])}
        if req.page_token not in pages:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page token")
        nxt, idx = pages[req.page_token]
        resp = keys.ListKeysResponse(next_page_token=nxt)
        for i in idx:
            it = resp.items.add()
            it.kid = "https://mhsm-test/keys/k%d" % i
            it.attributes.enabled.value = True
            it.attributes.created = 1700000000 + i
            it.tags["n"] = str(i)
        return resp

    def delete_key(req, ctx):
        fake.record("DeleteKey", req, ctx)
        d = types.DeletedKeyBundle()
        d.key.CopyFrom(bundle(req.name))
        d.recovery_id = "https://mhsm-test/deletedkeys/" + req.name
        d.deleted_date = 1700000100
        d.scheduled_purge_date = 1700000100 + 90 * 86400
        return d

    def list_deleted(req, ctx):
        fake.record("ListDeletedKeys", req, ctx)
        resp = keys.ListDeletedKeysResponse()
        it = resp.items.add()
        it.key.kid = "https://mhsm-test/keys/gone"
        it.recovery_id = "https://mhsm-test/deletedkeys/gone"
        it.deleted_date = 5
        it.scheduled_purge_date = 6
        return resp

    def purge(req, ctx):
        fake.record("PurgeDeletedKey", req, ctx)
        return keys.PurgeDeletedKeyResponse()

    def backup(req, ctx):
        fake.record("BackupKey", req, ctx)
        return keys.BackupKeyResponse(value=BACKUP_BLOB)

    def restore(req, ctx):
        fake.record("RestoreKey", req, ctx)
        if req.value != BACKUP_BLOB:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "not our backup")
        return bundle("restored")

    def sign(req, ctx):
        fake.record("Sign", req, ctx)
        if req.name == "slow":
            time.sleep(4)
        return crypto.SignResponse(kid="https://mhsm-test/keys/%s/v1" % req.name,
                                   signature=b"sig:" + req.digest)

    def verify(req, ctx):
        fake.record("Verify", req, ctx)
        return crypto.VerifyResponse(valid=req.signature == b"sig:" + req.digest)

    def encrypt(req, ctx):
        fake.record("Encrypt", req, ctx)
        return crypto.KeyOperationResponse(kid="https://mhsm-test/keys/%s/v1" % req.name,
                                           value=req.value[::-1], iv=b"\x01" * 12,
                                           tag=b"\x02" * 16, aad=req.aad)

    def decrypt(req, ctx):
        fake.record("Decrypt", req, ctx)
        return crypto.KeyOperationResponse(kid="https://mhsm-test/keys/%s/v1" % req.name,
                                           value=req.value[::-1])

    def sd_download(req, ctx):
        fake.record("Download", req, ctx)
        return sdp.DownloadResponse(security_domain=SD_JSON)

    def sd_status(req, ctx):
        fake.record("GetStatus", req, ctx)
        return sdp.GetStatusResponse(activation_status="NotActivated",
                                     message="download the security domain to activate",
                                     retention_days=0)

    def health_check(req, ctx):
        fake.record("Check", req, ctx)
        return health.HealthCheckResponse(status=health.HealthCheckResponse.SERVING)

    def h(fn, req_cls, resp_cls):
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=req_cls.FromString,
            response_serializer=resp_cls.SerializeToString)

    keys_h = grpc.method_handlers_generic_handler("mhsm.v1.Keys", {
        "GetRandomBytes": h(get_random_bytes, keys.GetRandomBytesRequest,
                            keys.GetRandomBytesResponse),
        "CreateKey": h(create_key, keys.CreateKeyRequest, types.KeyBundle),
        "ImportKey": h(import_key, keys.ImportKeyRequest, types.KeyBundle),
        "GetKey": h(get_key, keys.GetKeyRequest, types.KeyBundle),
        "ListKeys": h(list_keys, keys.ListKeysRequest, keys.ListKeysResponse),
        "DeleteKey": h(delete_key, keys.KeyNameRequest, types.DeletedKeyBundle),
        "ListDeletedKeys": h(list_deleted, keys.ListKeysRequest, keys.ListDeletedKeysResponse),
        "PurgeDeletedKey": h(purge, keys.KeyNameRequest, keys.PurgeDeletedKeyResponse),
        "BackupKey": h(backup, keys.KeyNameRequest, keys.BackupKeyResponse),
        "RestoreKey": h(restore, keys.RestoreKeyRequest, types.KeyBundle),
    })
    crypto_h = grpc.method_handlers_generic_handler("mhsm.v1.Crypto", {
        "Sign": h(sign, crypto.SignRequest, crypto.SignResponse),
        "Verify": h(verify, crypto.VerifyRequest, crypto.VerifyResponse),
        "Encrypt": h(encrypt, crypto.KeyOperationRequest, crypto.KeyOperationResponse),
        "Decrypt": h(decrypt, crypto.KeyOperationRequest, crypto.KeyOperationResponse),
    })
    sd_h = grpc.method_handlers_generic_handler("mhsm.v1.SecurityDomain", {
        "Download": h(sd_download, sdp.DownloadRequest, sdp.DownloadResponse),
        "GetStatus": h(sd_status, sdp.GetStatusRequest, sdp.GetStatusResponse),
    })
    health_h = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": h(health_check, health.HealthCheckRequest, health.HealthCheckResponse),
    })
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                         handlers=[keys_h, crypto_h, sd_h, health_h])
    creds = grpc.ssl_server_credentials([(read(server_key), read(server_crt))],
                                        root_certificates=read(ca_crt),
                                        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    if port == 0:
        raise RuntimeError("cannot bind the grpcio server")
    server.start()
    return server, port


# ---------------------------------------------------------------- running the CLI

class Run:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err
        try:
            self.json = json.loads(out) if out.strip() else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "rc=%d argv=%s\nstdout=%s\nstderr=%s" % (self.rc, " ".join(self.argv[1:]),
                                                         self.out[:2000], self.err[:2000])


def cli(*args, env=None, timeout=CLI_TIMEOUT):
    argv = [MHSM] + [str(a) for a in args]
    e = dict(os.environ)
    for k in ("MHSM_ENDPOINT", "MHSM_CA", "MHSM_CERT", "MHSM_KEY"):
        e.pop(k, None)
    e.update(env or {})
    try:
        p = subprocess.run(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return Run(argv, -999, "", "timed out")
    return Run(argv, p.returncode, p.stdout.decode("utf-8", errors="replace"),
               p.stderr.decode("utf-8", errors="replace"))


def main():
    if not os.access(MHSM, os.X_OK):
        print("FAIL: %s is not built" % MHSM)
        print("0 passed, 1 failed")
        return 1
    gen_protos()
    from mhsm.v1 import crypto_pb2, keys_pb2, security_domain_pb2, types_pb2 as t_pb2
    import health_pb2
    pb = (t_pb2, keys_pb2, crypto_pb2, security_domain_pb2, health_pb2)

    ca = make_ca("ca")
    other_ca = make_ca("other-ca")
    # IP SAN only: connecting as "localhost" must fail host verification.
    srv = make_leaf("server", ca, "IP:127.0.0.1", "serverAuth")
    cl = make_leaf("client", ca, "URI:spiffe://mhsm/admin", "clientAuth")
    rogue_srv = make_leaf("rogue-server", other_ca, "IP:127.0.0.1", "serverAuth")
    foreign_cl = make_leaf("foreign-client", other_ca, None, "clientAuth")

    fake = Fake()
    server, port = build_server(fake, pb, srv[0], srv[1], ca[1])
    rogue, rogue_port = build_server(Fake(), pb, rogue_srv[0], rogue_srv[1], ca[1])
    try:
        run_checks(fake, port, rogue_port, ca, cl, foreign_cl)
    finally:
        server.stop(0).wait(10)
        rogue.stop(0).wait(10)
    return 0


def run_checks(fake, port, rogue_port, ca, cl, foreign_cl):
    ep = "127.0.0.1:%d" % port
    conn = ["--endpoint", ep, "--ca", ca[1], "--cert", cl[1], "--key", cl[0]]

    def ok(r, what):
        check(r.rc == 0, what + ": exit 0", r)
        return r.json

    # -- random: shape and bytes, global options after the command words
    r = cli("random", "--count", 16, *conn)
    j = ok(r, "random")
    expect = bytes((i * 31 + 7) & 0xFF for i in range(16))
    check(j == {"value": b64u(expect)}, "random prints {value: b64url of the bytes}", r)
    req, tr = fake.last("GetRandomBytes")
    check(req is not None and req.count == 16, "random sends count", req)
    check(tr is not None and 0 < tr <= 30.5, "grpc-timeout sent (default 30 s)", tr)

    # -- env vars instead of flags; options before the command words
    env = {"MHSM_ENDPOINT": ep, "MHSM_CA": ca[1], "MHSM_CERT": cl[1], "MHSM_KEY": cl[0]}
    r = cli("--timeout", 7, "random", "--count", 3, env=env)
    check(r.rc == 0 and r.json == {"value": b64u(expect[:3])}, "env MHSM_* configure the client",
          r)
    _, tr = fake.last("GetRandomBytes")
    check(tr is not None and 0 < tr <= 7.5, "--timeout 7 sent as grpc-timeout", tr)

    # -- server errors: exit 1, exact line; non-ASCII and percent signs survive the trip
    r = cli("random", "--count", 0, *conn)
    check(r.rc == 1 and r.err == "error: INVALID_ARGUMENT: count must be 1..128\n",
          "INVALID_ARGUMENT line", r)
    r = cli("key", "show", "--name", "missing", *conn)
    want = "error: NOT_FOUND: " + NASTY.replace("\x01", "?") + "\n"
    check(r.rc == 1 and r.err == want and r.out == "",
          "NOT_FOUND with %, spaces and UTF-8 percent-decoded; control chars masked", r)

    # -- create: every request field, request id, KeyBundle JSON
    nbf = calendar.timegm((2030, 1, 2, 3, 4, 5))
    r = cli("key", "create", "--name", "rsa1", "--kty", "RSA-HSM", "--size", 3072, "--ops", "sign",
            "verify", "--disabled", "--not-before", "2030-01-02T03:04:05Z", "--expires",
            "1999999999", "--tags", "env=prod", "team=a=b", "--tags", "x=", *conn)
    j = ok(r, "key create")
    req, _ = fake.last("CreateKey")
    check(req is not None and req.name == "rsa1" and req.kty == "RSA-HSM"
          and req.key_size == 3072 and list(req.key_ops) == ["sign", "verify"] and req.crv == "",
          "create sends name/kty/size/ops", req)
    check(req is not None and req.attributes.HasField("enabled")
          and req.attributes.enabled.value is False
          and req.attributes.not_before.value == nbf
          and req.attributes.expires.value == 1999999999,
          "create sends --disabled, nbf (ISO time via timegm), exp (unix)", req)
    check(req is not None and dict(req.tags) == {"env": "prod", "team": "a=b", "x": ""},
          "create sends repeated --tags k=v", req)
    check(req is not None and re.fullmatch(r"[0-9a-f]{32}", req.request_id) is not None,
          "create sends a 32-hex request id", req)
    check(j == {
        "key": {"kid": "https://mhsm-test/keys/rsa1/0123456789abcdef", "kty": "RSA-HSM",
                "key_ops": ["sign", "verify"], "n": b64u(RSA_N), "e": "AQAB"},
        "attributes": {"enabled": False, "created": 1700000000, "updated": 1700000001,
                       "recoverableDays": 90, "recoveryLevel": "Recoverable+Purgeable",
                       "exportable": False},
        "tags": {"env": "prod", "team": "a=b", "x": ""}}, "KeyBundle JSON shape", r)
    check(r.out.startswith("{\n  \"attributes\""), "JSON is indented with sorted keys", r.out)
    r = cli("key", "create", "--name", "ec1", "--kty", "EC-HSM", "--curve", "P-384", *conn)
    req, _ = fake.last("CreateKey")
    check(r.rc == 0 and req.crv == "P-384" and not req.HasField("attributes")
          and req.key_size == 0 and len(req.key_ops) == 0,
          "create without options sends no attributes", (r, req))

    # -- retry: UNAVAILABLE once, the second attempt carries the same request id
    before = fake.count("CreateKey")
    r = cli("key", "create", "--name", "flaky", "--kty", "oct-HSM", *conn)
    ok(r, "create retried after UNAVAILABLE")
    with fake.lock:
        ids = [q.request_id for m, q, _ in fake.calls[-2:] if m == "CreateKey"]
    check(fake.count("CreateKey") - before == 2 and len(set(ids)) == 1,
          "the retry reuses the request id", ids)
    before = fake.count("CreateKey")
    r = cli("key", "create", "--name", "always-down", "--kty", "oct-HSM", *conn)
    check(r.rc == 1 and r.err == "error: UNAVAILABLE: still no leader\n"
          and fake.count("CreateKey") - before == 2, "retried once only, then exit 1", r)
    before = fake.count("GetKey")
    r = cli("key", "show", "--name", "missing", *conn)
    check(fake.count("GetKey") - before == 1, "reads are not retried")

    # -- show: EC shape, --version, table output
    r = cli("key", "show", "--name", "ec1", "--version", "abc", *conn)
    j = ok(r, "key show")
    req, _ = fake.last("GetKey")
    check(req.version == "abc", "show sends --version", req)
    check(j is not None and j["key"].get("crv") == "P-256" and j["key"].get("x") == b64u(
        b"\x11" * 32) and "n" not in j["key"], "EC KeyBundle has crv/x/y, no n/e", j)
    r = cli("key", "show", "--name", "ec1", "--output", "table", *conn)
    check(r.rc == 0 and r.json is None and re.search(r"^key\.kid\s+https://mhsm-test/keys/ec1/",
                                                      r.out, re.M) is not None,
          "--output table prints aligned name/value lines", r)

    # -- list follows pages; --maxresults limits
    r = cli("key", "list", *conn)
    j = ok(r, "key list")
    check(isinstance(j, list) and [i["kid"] for i in j] == [
        "https://mhsm-test/keys/k%d" % i for i in range(5)], "list follows 3 pages", j)
    check(isinstance(j, list) and j and j[0] == {
        "kid": "https://mhsm-test/keys/k0", "attributes": {"enabled": True,
                                                         "created": 1700000000},
        "tags": {"n": "0"}}, "KeyItem shape", j)
    r = cli("key", "list", "--maxresults", 3, *conn)
    j = ok(r, "key list --maxresults")
    req, _ = fake.last("ListKeys")
    check(isinstance(j, list) and len(j) == 3, "--maxresults 3 gives 3 items", j)
    r = cli("key", "list", "--output", "table", *conn)
    lines = r.out.splitlines()
    check(r.rc == 0 and len(lines) == 6 and lines[0].split()[0] == "attributes.created",
          "list --output table: header and one row per item", r)

    # -- delete, list-deleted, purge
    r = cli("key", "delete", "--name", "rsa1", *conn)
    j = ok(r, "key delete")
    check(j is not None and j.get("recoveryId") == "https://mhsm-test/deletedkeys/rsa1"
          and j.get("deletedDate") == 1700000100
          and j.get("scheduledPurgeDate") == 1700000100 + 90 * 86400 and "key" in j,
          "DeletedKeyBundle shape", j)
    req, _ = fake.last("DeleteKey")
    check(re.fullmatch(r"[0-9a-f]{32}", req.request_id or "") is not None,
          "delete sends a request id", req)
    r = cli("key", "list-deleted", *conn)
    j = ok(r, "list-deleted")
    check(j == [{"kid": "https://mhsm-test/keys/gone", "attributes": {}, "tags": {},
                 "recoveryId": "https://mhsm-test/deletedkeys/gone", "deletedDate": 5,
                 "scheduledPurgeDate": 6}], "DeletedKeyItem shape", j)
    r = cli("key", "purge", "--name", "rsa1", *conn)
    check(r.rc == 0 and r.out == "", "purge: exit 0, prints nothing", r)

    # -- backup writes raw bytes 0600 and refuses to overwrite; restore reads them back
    bfile = os.path.join(TMP, "rsa1.backup")
    r = cli("key", "backup", "--name", "rsa1", "--file", bfile, *conn)
    check(r.rc == 0 and os.path.exists(bfile) and read(bfile) == BACKUP_BLOB
          and (os.stat(bfile).st_mode & 0o777) == 0o600, "backup writes the blob, mode 0600", r)
    before = fake.count("BackupKey")
    r = cli("key", "backup", "--name", "rsa1", "--file", bfile, *conn)
    check(r.rc == 2 and read(bfile) == BACKUP_BLOB and fake.count("BackupKey") == before,
          "backup refuses an existing file before calling (exit 2)", r)
    r = cli("key", "restore", "--file", bfile, *conn)
    j = ok(r, "restore")
    check(j is not None and j["key"]["kid"].startswith("https://mhsm-test/keys/restored/"),
          "restore sends the file's bytes", r)

    # -- crypto: standard base64 with padding and base64url both accepted
    digest = bytes(range(32))
    r = cli("key", "sign", "--name", "ec1", "--algorithm", "ES256", "--digest",
            base64.b64encode(digest).decode(), *conn)
    j = ok(r, "sign")
    check(j == {"kid": "https://mhsm-test/keys/ec1/v1", "signature": b64u(b"sig:" + digest)},
          "sign shape", j)
    req, _ = fake.last("Sign")
    check(req.alg == "ES256" and req.digest == digest, "sign sends alg and digest bytes", req)
    r = cli("key", "verify", "--name", "ec1", "--algorithm", "ES256", "--digest", b64u(digest),
            "--signature", j["signature"] if j else "", *conn)
    check(r.rc == 0 and r.json == {"isValid": True}, "verify true", r)
    r = cli("key", "verify", "--name", "ec1", "--algorithm", "ES256", "--digest", b64u(digest),
            "--signature", b64u(b"nope"), *conn)
    check(r.rc == 0 and r.json == {"isValid": False}, "verify false is exit 0", r)
    pt = b"\xff\xfe hello"  # standard base64 of this has '/' and '+'
    r = cli("key", "encrypt", "--name", "aes", "--algorithm", "A256GCM", "--value",
            base64.b64encode(pt).decode(), "--aad", b64u(b"hdr"), *conn)
    j = ok(r, "encrypt")
    check(j == {"kid": "https://mhsm-test/keys/aes/v1", "result": b64u(pt[::-1]),
                "iv": b64u(b"\x01" * 12), "tag": b64u(b"\x02" * 16), "aad": b64u(b"hdr")},
          "encrypt shape with iv/tag/aad", j)
    r = cli("key", "decrypt", "--name", "aes", "--algorithm", "A256GCM", "--value", "-_8",
            "--iv", "AQEBAQEBAQEBAQEB", "--tag", "AgICAgICAgICAgICAgICAg==", *conn)
    req, _ = fake.last("Decrypt")
    check(r.rc == 0 and req.value == b"\xfb\xff" and req.iv == b"\x01" * 12
          and req.tag == b"\x02" * 16 and r.json == {"kid": "https://mhsm-test/keys/aes/v1",
                                                    "result": b64u(b"\xff\xfb")},
          "decrypt: a value starting with '-' is a value; iv/tag decoded", (r, req))

    # -- import: the PEM file's text goes in the request
    pem = os.path.join(TMP, "import.pem")
    shutil.copy(cl[0], pem)
    r = cli("key", "import", "--name", "imp", "--pem-file", pem, "--ops", "sign", *conn)
    req, _ = fake.last("ImportKey")
    check(r.rc == 0 and req is not None and req.WhichOneof("material") == "pem"
          and req.pem == read(pem).decode() and list(req.key_ops) == ["sign"]
          and len(req.request_id) == 32, "import sends the PEM text", (r, req))
    r = cli("key", "import", "--name", "imp", "--jwk-file", pem, "--pem-file", pem, *conn)
    check(r.rc == 2, "import with both files is a usage error", r)

    # -- security domain: certificates sent, file written 0600, never overwritten
    sdf = os.path.join(TMP, "sd.json")
    certs = [cl[1], ca[1], foreign_cl[1]]
    r = cli("security-domain", "download", "--sd-wrapping-keys", *certs, "--sd-quorum", 2,
            "--security-domain-file", sdf, "--retention-days", 30, *conn)
    req, _ = fake.last("Download")
    check(r.rc == 0 and r.json == {"status": "Active"}, "sd download prints status Active", r)
    check(req is not None and list(req.certificates_pem) == [read(c).decode() for c in certs]
          and req.quorum == 2 and req.retention_days == 30, "sd download sends PEMs", req)
    check(os.path.exists(sdf) and read(sdf).decode() == SD_JSON
          and (os.stat(sdf).st_mode & 0o777) == 0o600, "sd file written 0600")
    before = fake.count("Download")
    r = cli("security-domain", "download", "--sd-wrapping-keys", *certs, "--sd-quorum", 2,
            "--security-domain-file", sdf, *conn)
    check(r.rc == 2 and fake.count("Download") == before and read(sdf).decode() == SD_JSON,
          "sd download refuses an existing file before activating (exit 2)", r)
    r = cli("security-domain", "show", *conn)
    check(r.rc == 0 and r.json == {"activationStatus": "NotActivated", "retentionDays": 0,
                                   "message": "download the security domain to activate"},
          "sd show shape", r)

    # -- health
    r = cli("health", *conn)
    check(r.rc == 0 and r.json == {"status": "SERVING"}, "health", r)

    # -- deadline: the server sleeps 4 s, --timeout 1 -> DEADLINE_EXCEEDED, exit 1
    t0 = time.monotonic()
    r = cli("key", "sign", "--name", "slow", "--algorithm", "ES256", "--digest", b64u(digest),
            "--timeout", 1, *conn)
    check(r.rc == 1 and r.err.startswith("error: DEADLINE_EXCEEDED: "), "deadline exceeded", r)
    _, tr = fake.last("Sign")
    check(tr is not None and tr <= 1.05, "grpc-timeout 1 s reached the server", tr)
    check(time.monotonic() - t0 < CLI_TIMEOUT, "deadline bounded the call")

    # -- response cap: a 5 MiB answer is refused
    r = cli("random", "--count", 99999, *conn)
    check(r.rc == 1 and r.err.startswith("error: RESOURCE_EXHAUSTED: "),
          "a response over 4 MiB is refused", r)

    # -- connection and TLS failures: exit 3 with an UNAVAILABLE line
    r = cli("random", "--count", 1, "--endpoint", "127.0.0.1:%d" % rogue_port, "--ca", ca[1],
            "--cert", cl[1], "--key", cl[0])
    check(r.rc == 3 and r.err.startswith("error: UNAVAILABLE: ") and "certificate" in r.err,
          "server certificate from an untrusted CA: exit 3", r)
    r = cli("random", "--count", 1, "--endpoint", "localhost:%d" % port, "--ca", ca[1],
            "--cert", cl[1], "--key", cl[0])
    check(r.rc == 3 and r.err.startswith("error: UNAVAILABLE: "),
          "server certificate for another host name: exit 3", r)
    r = cli("random", "--count", 1, "--endpoint", ep, "--ca", ca[1])
    check(r.rc == 3 and r.err.startswith("error: UNAVAILABLE: "),
          "no client certificate: refused at the handshake, exit 3", r)
    r = cli("random", "--count", 1, "--endpoint", ep, "--ca", ca[1], "--cert", foreign_cl[1],
            "--key", foreign_cl[0])
    check(r.rc == 3 and r.err.startswith("error: UNAVAILABLE: "),
          "client certificate from another CA: exit 3", r)
    r = cli("random", "--count", 1, "--endpoint", "127.0.0.1:1", "--ca", ca[1], "--cert", cl[1],
            "--key", cl[0])
    check(r.rc == 3 and r.err.startswith("error: UNAVAILABLE: connect"),
          "connection refused: exit 3", r)

    # -- usage errors: exit 2, nothing sent
    before = len(fake.calls)
    for args in (["key", "frobnicate"], ["key", "create", "--name", "x"],
                 ["key", "create", "--name", "x", "--kty", "EC-HSM", "--expires", "tomorrow"],
                 ["key", "create", "--name", "x", "--kty", "EC-HSM", "--expires",
                  "2023-02-29T00:00:00Z"],
                 ["key", "sign", "--name", "x", "--algorithm", "ES256", "--digest", "a b"],
                 ["key", "sign", "--name", "x", "--algorithm", "ES256", "--digest", "AB=C"],
                 ["key", "show", "--name", "x", "--kty", "RSA"], ["key", "show", "extra"],
                 ["random", "--count", "-1"], ["random", "--count", 1, "--output", "xml"],
                 ["random", "--count", 1, "--timeout", 0], ["random", "--count"],
                 ["key", "create", "--name", "x", "--kty", "oct-HSM", "--tags", "novalue"],
                 ["key", "set-attributes", "--name", "x", "--enabled", "maybe"],
                 ["random", "--count", 1, "--endpoint", "nohost"], ["key", "--bogus"], []):
        r = cli(*(list(args) + (conn if args else [])))
        check(r.rc == 2 and r.err.startswith(("error: ", "usage: ")) and r.out == "",
              "usage error: %s" % " ".join(map(str, args)), r)
    check(len(fake.calls) == before, "usage errors send nothing", len(fake.calls) - before)

    # -- help everywhere
    r = cli("--help")
    check(r.rc == 0 and "key create" in r.out and "security-domain download" in r.out
          and "random" in r.out and "health" in r.out, "mhsm --help lists the commands", r)
    for words in (["key"], ["security-domain"], ["key", "create"], ["key", "encrypt"],
                  ["security-domain", "download"], ["random"], ["health"], ["key", "restore"]):
        r = cli(*words, "--help")
        check(r.rc == 0 and r.out.startswith("usage: mhsm " + " ".join(words)),
              "%s --help" % " ".join(words), r)
    r = cli("key", "sign", "-h")
    check(r.rc == 0 and "--digest" in r.out, "-h works too", r)


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except Exception:
        traceback.print_exc()
        failed += 1
    print("%d passed, %d failed" % (passed, failed))
    if failed == 0 and rc == 0 and passed > 0:
        shutil.rmtree(TMP, ignore_errors=True)
        sys.exit(0)
    print("kept %s" % TMP)
    sys.exit(1)
