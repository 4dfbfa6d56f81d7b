"""mhtest: harness for mhsm's multi-process tests (test/cluster/test_*.py).

Starts real mhsmd processes on loopback with certificates made by
deploy/gen-certs.sh, drives them through the real `mhsm` CLI, and records
checks. Every wait is bounded; every process started here is killed at exit.

Environment (set by ctest, defaults for running a test by hand):
  MH_BUILD_DIR    directory holding mhsmd and mhsm (default: <repo>/build)
  MH_SOURCE_DIR   the repository (default: two levels above this file)
  MH_TEST_TMPDIR  parent of the per-test temporary directory (default: /tmp)
  MH_KEEP_TMP=1   keep the temporary directory even when every check passed
  MH_READY_TIMEOUT seconds to wait for a node to become ready (default 60)

RBAC: every node config names spiffe://mhsm/admin as the initial administrator
([rbac] administrators, not for join nodes). By default a successful activation
(Node.activate, Cluster.activate) also assigns that principal the Managed HSM Crypto
User and Crypto Officer roles at "/" through the CLI, so tests can keep using the
admin certificate for key work (grant_admin_keys=False leaves it a bare
Administrator, which cannot use keys). Audit: audit_files / audit_records read a
node's audit log.

A test makes one Harness, runs its steps inside `with h.section(...)`, and
ends with h.finish(), which prints `N passed, N failed` and exits non-zero
when any check failed (or no check ran at all).
"""

import atexit
import base64
import contextlib
import hashlib
import hmac
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

SOURCE_DIR = os.environ.get(
    "MH_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.path.abspath(os.environ.get("MH_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
TMP_PARENT = os.path.abspath(os.environ.get("MH_TEST_TMPDIR", "/tmp"))
READY_TIMEOUT = float(os.environ.get("MH_READY_TIMEOUT", "60"))
CLI_TIMEOUT = 120  # seconds for one CLI process (generous for ASan builds)
STOP_TIMEOUT = 30  # seconds for a SIGTERM'd node to exit
ADMIN = "spiffe://mhsm/admin"
ROLE_USER = "Managed HSM Crypto User"
ROLE_OFFICER = "Managed HSM Crypto Officer"
ROLE_ADMIN = "Managed HSM Administrator"
ROLE_AUDITOR = "Managed HSM Crypto Auditor"
GRANT_TIMEOUT = 60  # bound on granting the admin its key roles after activation

_live_procs = []


def _kill_live():
    for p in list(_live_procs):
        if p.poll() is None:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(timeout=10)


atexit.register(_kill_live)


def _on_signal(signum, _frame):
    _kill_live()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


# ---------------------------------------------------------------- encodings

def b64u(data):
    """base64url without padding, the CLI's output form for bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    """Decodes base64url (or standard base64), padded or not."""
    if not isinstance(text, str):
        raise ValueError("expected a base64 string, got %r" % (text,))
    t = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(t + "=" * (-len(t) % 4), validate=True)


def b64std(data):
    return base64.b64encode(data).decode()


# ------------------------------------------------- public keys for openssl

def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _der(tag, body):
    return bytes([tag]) + _der_len(len(body)) + body


def _der_int(raw):
    raw = raw.lstrip(b"\x00") or b"\x00"
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return _der(0x02, raw)


def _der_oid(dotted):
    parts = [int(x) for x in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


def _pem(label, der):
    b = base64.b64encode(der).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


CURVE_OIDS = {"P-256": "1.2.840.10045.3.1.7", "P-384": "1.3.132.0.34",
              "P-521": "1.3.132.0.35", "P-256K": "1.3.132.0.10"}
CURVE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66, "P-256K": 32}


def public_pem_from_jwk(key):
    """SubjectPublicKeyInfo PEM built from the CLI's public JWK (n,e or crv,x,y)."""
    if "n" in key:
        rsa = _der(0x30, _der_int(unb64u(key["n"])) + _der_int(unb64u(key["e"])))
        alg = _der(0x30, _der_oid("1.2.840.113549.1.1.1") + b"\x05\x00")
        return _pem("PUBLIC KEY", _der(0x30, alg + _der(0x03, b"\x00" + rsa)))
    crv = key["crv"]
    point = b"\x04" + unb64u(key["x"]) + unb64u(key["y"])
    alg = _der(0x30, _der_oid("1.2.840.10045.2.1") + _der_oid(CURVE_OIDS[crv]))
    return _pem("PUBLIC KEY", _der(0x30, alg + _der(0x03, b"\x00" + point)))


def ecdsa_raw_to_der(sig):
    """JOSE r||s -> DER ECDSA-Sig-Value, the form openssl verifies."""
    half = len(sig) // 2
    return _der(0x30, _der_int(sig[:half]) + _der_int(sig[half:]))


def openssl_key_fields(pem_path, passin=None):
    """Fields of a private key as `openssl pkey -text` prints them: name -> bytes
    (RSA: modulus, publicExponent, privateExponent, prime1, ...; EC: priv, pub)."""
    args = ["pkey", "-in", pem_path, "-noout", "-text"]
    if passin:
        args += ["-passin", "pass:" + passin]
    text = openssl(*args).decode()
    fields, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9]+):\s*(.*)$", line)
        if m:
            cur = m.group(1)
            rest = m.group(2).strip()
            if re.match(r"^\d+ \(0x([0-9a-f]+)\)$", rest):  # publicExponent: 65537 (0x10001)
                hx = re.match(r"^\d+ \(0x([0-9a-f]+)\)$", rest).group(1)
                fields[cur] = bytes.fromhex(("0" * (len(hx) % 2)) + hx)
                cur = None
            else:
                fields[cur] = b""
            continue
        if cur and re.match(r"^\s+[0-9a-f]{2}(:[0-9a-f]{2})*:?$", line):
            fields[cur] += bytes.fromhex(line.strip().rstrip(":").replace(":", ""))
        elif cur and line.strip() and not line.startswith(" "):
            cur = None
    return fields


# ------------------------------------- security-domain file, independently

def sp800_108_hmac_sha512(key, label, context, bits):
    """NIST SP 800-108 counter-mode KDF, PRF HMAC-SHA-512 (the SD file's KDF)."""
    out = b""
    i = 1
    while len(out) * 8 < bits:
        msg = i.to_bytes(4, "big") + label + b"\x00" + context + bits.to_bytes(4, "big")
        out += hmac.new(key, msg, hashlib.sha512).digest()
        i += 1
    return out[:bits // 8]


def jwe_a256cbc_hs512_decrypt(compact, cek):
    """Decrypts a compact JWE with enc A256CBC-HS512 under the 64-byte |cek|
    (RFC 7518 5.2): checks the tag, then AES-256-CBC with the openssl CLI."""
    parts = compact.split(".")
    if len(parts) != 5:
        raise ValueError("compact JWE needs 5 parts, has %d" % len(parts))
    aad = parts[0].encode()
    iv, ct, tag = unb64u(parts[2]), unb64u(parts[3]), unb64u(parts[4])
    al = (len(aad) * 8).to_bytes(8, "big")
    want = hmac.new(cek[:32], aad + iv + ct + al, hashlib.sha512).digest()[:32]
    if not hmac.compare_digest(want, tag):
        raise ValueError("JWE tag mismatch")
    return openssl("enc", "-d", "-aes-256-cbc", "-K", cek[32:].hex(), "-iv", iv.hex(),
                   input_bytes=ct)


def shamir_combine_gf257(shares):
    """Combines packed shares (little-endian uint16 (x << 9) | v per byte)."""
    n = len(shares[0]) // 2
    out = bytearray()
    for i in range(n):
        pts = []
        for s in shares:
            w = int.from_bytes(s[2 * i:2 * i + 2], "little")
            pts.append((w >> 9, w & 0x1FF))
        acc = 0
        for j, (xj, vj) in enumerate(pts):
            num, den = 1, 1
            for m, (xm, _) in enumerate(pts):
                if m != j:
                    num = num * xm % 257
                    den = den * (xm - xj) % 257
            acc = (acc + vj * num * pow(den, 255, 257)) % 257
        if acc > 255:
            raise ValueError("combined value out of byte range")
        out.append(acc)
    return bytes(out)


def sd_recover(sd, custodians):
    """Recovers the SD file's master key and data items with the custodians' RSA keys
    [(cert_pem_path, key_path), ...], using only openssl and the standard library.
    Returns (master_key, {tag: plaintext})."""
    by_thumb = {}
    for cert, key in custodians:
        der = openssl("x509", "-in", cert, "-outform", "DER")
        by_thumb[b64u(hashlib.sha256(der).digest())] = key
    shares = []
    for item in sd["SharedKeys"]["enc_shares"]:
        key = by_thumb.get(item["x5t_256"])
        if key is None:
            continue
        parts = item["enc_key"].split(".")
        header = json.loads(unb64u(parts[0]))
        if header.get("alg") != "RSA-OAEP-256" or header.get("enc") != "A256CBC-HS512":
            raise ValueError("unexpected share JWE header %r" % header)
        cek = openssl("pkeyutl", "-decrypt", "-inkey", key, "-pkeyopt",
                      "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
                      "rsa_mgf1_md:sha256", input_bytes=unb64u(parts[1]))
        shares.append(jwe_a256cbc_hs512_decrypt(item["enc_key"], cek))
    if len(shares) < sd["SharedKeys"]["required"]:
        raise ValueError("only %d shares for quorum %d" % (len(shares),
                                                           sd["SharedKeys"]["required"]))
    master = shamir_combine_gf257(shares)
    items = {}
    for d in sd["EncData"]["data"]:
        cek = sp800_108_hmac_sha512(master, d["tag"].encode(), b"", 512)
        items[d["tag"]] = jwe_a256cbc_hs512_decrypt(d["compact_jwe"], cek)
    return master, items


# ---------------------------------------------------------------- processes

def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def key_of(r):
    """The "key" object of a KeyBundle result (or {})."""
    if isinstance(r.json, dict) and isinstance(r.json.get("key"), dict):
        return r.json["key"]
    return {}


def listed_kids(r):
    """{name: kid} of a `key list` result (JSON array of items with kid), or None."""
    if r.rc != 0 or not isinstance(r.json, list):
        return None
    return {it["kid"].split("/keys/", 1)[1].split("/")[0]: it["kid"] for it in r.json}


class AuditLine:
    """One line of an audit file: path, lineno (1-based), raw bytes (without the
    newline), rec (the parsed JSON object, or None when the line does not parse)."""

    def __init__(self, path, lineno, raw):
        self.path = path
        self.lineno = lineno
        self.raw = raw
        try:
            rec = json.loads(raw.decode())
            self.rec = rec if isinstance(rec, dict) else None
        except ValueError:
            self.rec = None

    def get(self, *path, default=None):
        """rec[path[0]][path[1]]... or |default|."""
        v = self.rec
        for p in path:
            if not isinstance(v, dict) or p not in v:
                return default
            v = v[p]
        return v

    @property
    def op(self):
        return self.get("operationName")

    @property
    def principal(self):
        return self.get("identity", "claim", "oid")

    def __repr__(self):
        return "%s:%d %s" % (os.path.basename(self.path), self.lineno,
                             self.raw[:300].decode(errors="replace"))


def audit_files(directory):
    """The audit-<seq>.jsonl files of |directory|, sorted (chain order); [] if none."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, f) for f in sorted(names)
            if re.match(r"^audit-\d{20}\.jsonl$", f)]


def audit_records(paths):
    """Every line of |paths| (in order) as AuditLine objects."""
    out = []
    for p in paths:
        data = read_bytes(p)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for k, raw in enumerate(lines):
            out.append(AuditLine(p, k + 1, raw))
    return out


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held until all are picked)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def run(argv, env=None, timeout=CLI_TIMEOUT, input_bytes=None, check=False):
    """Runs a command; returns (rc, stdout bytes, stderr text). rc -999 on timeout."""
    try:
        p = subprocess.run(argv, env=env, input=input_bytes, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return -999, e.stdout or b"", "timeout after %ss: %s" % (timeout, " ".join(argv))
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                    p.stderr.decode(errors="replace")))
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def openssl(*args, input_bytes=None):
    """Runs the openssl CLI; raises on failure; returns stdout bytes."""
    rc, out, err = run(["openssl"] + list(args), input_bytes=input_bytes)
    if rc != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(args), rc, err.strip()))
    return out


class Result:
    """Outcome of one CLI run: rc, json (parsed stdout or None), out (text), err (stderr)."""

    def __init__(self, argv, rc, out, err):
        self.argv = argv
        self.rc = rc
        self.out = out.decode(errors="replace")
        self.err = err
        try:
            self.json = json.loads(self.out) if self.out.strip() else None
        except ValueError:
            self.json = None

    @property
    def status(self):
        """The status name from `error: NAME: message` on stderr, or None."""
        m = re.search(r"error: ([A-Z_]+)\b", self.err)
        return m.group(1) if m else None

    def describe(self):
        cmd = " ".join(self.argv[1:])
        if len(cmd) > 300:
            cmd = cmd[:300] + "..."
        return "`mhsm %s` -> rc=%s stdout=%r stderr=%r" % (cmd, self.rc, self.out[:400],
                                                           self.err.strip()[:600])


class Node:
    """One mhsmd process with its own config, data directory and log file.

    Its certificate (API and raft peer channel) is certs/node<raft_id>.pem unless
    |cert| names another pair in the cert directory (peer-rejection tests). Raft
    options left None are not written (mhsmd's defaults apply); |members| is the
    bootstrap line, |join| makes a node that waits for `mhsm cluster add`."""

    def __init__(self, harness, name="node1", hsm_name="mhsm-test", api=None, limits=None,
                 certs=None, raft_id=1, cert=None, members=None, join=False,
                 election_timeout_ms=None, heartbeat_ms=None, snapshot_threshold=None,
                 snapshot_trailing=None, ports=None, rbac=None, audit=None):
        self.h = harness
        self.name = name
        self.hsm_name = hsm_name
        self.certs = certs or harness.certs
        self.dir = os.path.join(harness.tmp, name)
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "mhsmd.log")
        self.config_path = os.path.join(self.dir, "mhsmd.ini")
        os.makedirs(self.dir, exist_ok=True)
        self.port, self.raft_port = ports if ports else free_ports(2)
        self.endpoint = "127.0.0.1:%d" % self.port
        self.raft_address = "127.0.0.1:%d" % self.raft_port
        self.api_extra = dict(api or {})
        self.limits = dict(limits or {})
        self.raft_id = raft_id
        self.cert_name = cert or "node%d" % raft_id
        self.members = members
        self.join = join
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.snapshot_threshold = snapshot_threshold
        self.snapshot_trailing = snapshot_trailing
        self.operators = ["spiffe://mhsm/operator"]
        self.administrators = [ADMIN]
        self.rbac_extra = dict(rbac or {})    # more [rbac] options (limits)
        self.audit_extra = dict(audit or {})  # [audit] options (dir, max_file_bytes, ...)
        self.run_prefix = []                  # argv before mhsmd (e.g. setpriv ...)
        self.paused = False
        self.proc = None
        self._log_offset = 0
        self.write_config()

    def write_config(self):
        """(Re)writes the config file from the attributes; takes effect at the next
        start."""
        c = self.certs
        lines = [
            "; written by test/cluster/mhtest.py",
            "[node]",
            "name = %s" % self.hsm_name,
            "data_dir = %s" % self.data_dir,
            "log_level = info",
            "[api]",
            "listen = %s" % self.endpoint,
            "cert = %s" % os.path.join(c, self.cert_name + ".pem"),
            "key = %s" % os.path.join(c, self.cert_name + ".key"),
            "client_ca = %s" % os.path.join(c, "ca.pem"),
        ]
        lines += ["%s = %s" % kv for kv in self.api_extra.items()]
        lines += ["[raft]", "id = %d" % self.raft_id, "address = %s" % self.raft_address]
        if self.members:
            lines.append("members = %s" % self.members)
        if self.join:
            lines.append("join = true")
        for opt in ("election_timeout_ms", "heartbeat_ms", "snapshot_threshold",
                    "snapshot_trailing"):
            v = getattr(self, opt)
            if v is not None:
                lines.append("%s = %d" % (opt, v))
        lines += ["[cluster]", "operators = %s" % ", ".join(self.operators)]
        rbac = [] if self.join else ["administrators = %s" % ", ".join(self.administrators)]
        rbac += ["%s = %s" % kv for kv in self.rbac_extra.items()]
        if rbac:
            lines += ["[rbac]"] + rbac
        if self.audit_extra:
            lines += ["[audit]"] + ["%s = %s" % kv for kv in self.audit_extra.items()]
        if self.limits:
            lines.append("[limits]")
            lines += ["%s = %s" % kv for kv in self.limits.items()]
        lines += ["[workers]", "threads = 2", ""]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    # -- lifecycle

    def start(self, wait=True):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("%s already running" % self.name)
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        self.h.say("start %s: %s --config %s (log %s)" % (self.name, self.h.mhsmd,
                                                          self.config_path, self.log_path))
        self.proc = subprocess.Popen(self.run_prefix + [self.h.mhsmd, "--config",
                                                        self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     cwd=self.dir)
        log.close()
        _live_procs.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def log_text(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=25):
        return "\n".join(self.log_text(since_start=True).splitlines()[-n:])

    def wait_ready(self, timeout=None):
        """Waits for `comp=node ... ready` in the log (or health SERVING); raises on
        timeout or exit."""
        timeout = READY_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        next_health = time.monotonic() + 2
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s before ready; log:\n%s" %
                                   (self.name, self.proc.returncode, self.log_tail()))
            for line in self.log_text(since_start=True).splitlines():
                if "comp=node" in line and re.search(r"\bready\b", line):
                    self.h.say("%s ready on %s" % (self.name, self.endpoint))
                    return
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + 2
                r = self.cli("health", timeout=10)
                if r.rc == 0 and isinstance(r.json, dict) and r.json.get("status") == "SERVING":
                    self.h.say("%s SERVING on %s (no ready line seen)" % (self.name,
                                                                          self.endpoint))
                    return
            time.sleep(0.1)
        raise RuntimeError("%s not ready after %ss; log:\n%s" % (self.name, timeout,
                                                                  self.log_tail()))

    def running(self):
        """The process exists (a SIGSTOPped one too; see live())."""
        return self.proc is not None and self.proc.poll() is None

    def live(self):
        """Running and not SIGSTOPped: expected to answer."""
        return self.running() and not self.paused

    def sigstop(self):
        if not self.running():
            raise RuntimeError("%s is not running" % self.name)
        self.h.say("SIGSTOP %s (pid %d)" % (self.name, self.proc.pid))
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def sigcont(self):
        if not self.running():
            raise RuntimeError("%s is not running" % self.name)
        self.h.say("SIGCONT %s (pid %d)" % (self.name, self.proc.pid))
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def wipe_data(self):
        """Removes the data directory (raft log, state, seal key, sealed domain);
        the process must be stopped."""
        if self.running():
            raise RuntimeError("%s: wipe_data while running" % self.name)
        self.h.say("wipe %s" % self.data_dir)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop(self):
        """SIGTERM and wait (bounded); returns the exit status (None if it had to be
        killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.h.say("SIGTERM %s (pid %d)" % (self.name, self.proc.pid))
        self.proc.send_signal(signal.SIGTERM)
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.h.say("%s did not exit within %ss of SIGTERM: kill -9" % (self.name,
                                                                          STOP_TIMEOUT))
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.h.say("kill -9 %s (pid %d)" % (self.name, self.proc.pid))
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.paused = False

    # -- client

    def env(self, cert="admin", **overrides):
        """Environment for the CLI. cert: a name in the cert dir, or None for none.
        overrides: MHSM_* = value, or None to remove the variable."""
        e = dict(os.environ)
        for k in ("MHSM_ENDPOINT", "MHSM_CA", "MHSM_CERT", "MHSM_KEY"):
            e.pop(k, None)
        e["MHSM_ENDPOINT"] = self.endpoint
        e["MHSM_CA"] = os.path.join(self.h.certs, "ca.pem")
        if cert is not None:
            e["MHSM_CERT"] = os.path.join(self.h.certs, cert + ".pem")
            e["MHSM_KEY"] = os.path.join(self.h.certs, cert + ".key")
        for k, v in overrides.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def cli(self, *args, cert="admin", env=None, timeout=CLI_TIMEOUT, quiet=False):
        argv = [self.h.mhsm] + [str(a) for a in args]
        e = env if env is not None else self.env(cert=cert)
        rc, out, err = run(argv, env=e, timeout=timeout)
        r = Result(argv, rc, out, err)
        if not quiet:
            self.h.trace(r)
        return r

    def activate(self, sd_file=None, quorum=2, retention_days=None, grant_admin_keys=True):
        """Security-domain download (as admin). When it succeeds and |grant_admin_keys|,
        also grant_admin_keys() through this node. Returns the download's Result, or
        the failed grant's Result (so `expect_ok(node.activate())` covers both)."""
        sd_file = sd_file or os.path.join(self.dir, "sd.json")
        args = ["security-domain", "download", "--sd-wrapping-keys"]
        args += [os.path.join(self.h.certs, "sd%d.pem" % i) for i in (1, 2, 3)]
        args += ["--sd-quorum", quorum, "--security-domain-file", sd_file]
        if retention_days is not None:
            args += ["--retention-days", retention_days]
        r = self.cli(*args)
        if r.rc != 0 or not grant_admin_keys:
            return r
        g = self.grant_admin_keys()
        return r if g is None else g

    def assign(self, role, assignee, scope="/", cert="admin", timeout=GRANT_TIMEOUT):
        """`role assignment create` through this node, retried (bounded, same --name:
        idempotent) while the node answers UNAVAILABLE or the caller's own role has not
        reached it yet (PERMISSION_DENIED right after activation on a follower).
        Returns the last Result (rc 0 on success; ALREADY_EXISTS after a retry whose
        first attempt applied counts as success and is returned as is)."""
        name = str(uuid.uuid4())
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            tries += 1
            r = self.cli("role", "assignment", "create", "--role", role, "--assignee",
                         assignee, "--scope", scope, "--name", name, cert=cert)
            if r.rc == 0 or (tries > 1 and r.status == "ALREADY_EXISTS"):
                return r
            if r.status not in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED") \
                    or time.monotonic() >= deadline:
                return r
            time.sleep(0.3)

    def grant_admin_keys(self):
        """Gives the admin principal Crypto User and Crypto Officer at "/" (through
        this node). None on success, else the failing Result."""
        for role in (ROLE_USER, ROLE_OFFICER):
            r = self.assign(role, ADMIN)
            if not (r.rc == 0 or r.status == "ALREADY_EXISTS"):
                self.h.say("%s: granting %s to the admin failed: %s" % (self.name, role,
                                                                         r.describe()))
                return r
        return None

    # -- audit log

    def audit_dir(self):
        return self.audit_extra.get("dir") or os.path.join(self.data_dir, "audit")

    def audit_files(self):
        """This node's audit files in chain order (names sort by first seq)."""
        return audit_files(self.audit_dir())

    def audit_records(self):
        """Every line of this node's audit files: list of AuditLine."""
        return audit_records(self.audit_files())


class Cluster:
    """n mhsmd nodes bootstrapped together (raft ids 1..n, one members line).

    Every wait is bounded and, when it runs out, prints the last log lines of every
    node and raises RuntimeError (a `with h.section(...)` turns that into a failure).
    A node counts as live when its process runs and is not SIGSTOPped."""

    def __init__(self, harness, n=3, election_timeout_ms=1000, heartbeat_ms=100,
                 snapshot_threshold=None, snapshot_trailing=None, limits=None, rbac=None,
                 audit=None):
        self.h = harness
        self.rbac = rbac
        self.audit = audit
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.snapshot_threshold = snapshot_threshold
        self.snapshot_trailing = snapshot_trailing
        self.limits = limits
        ports = free_ports(2 * n)
        self.members = ", ".join("%d@127.0.0.1:%d" % (i + 1, ports[2 * i + 1])
                                 for i in range(n))
        self.nodes = []
        for i in range(n):
            self.nodes.append(self._make(i + 1, self._free_name("node%d" % (i + 1)),
                                         members=self.members,
                                         ports=(ports[2 * i], ports[2 * i + 1])))
        self.last = None  # the last Result seen by wait_serving / wait_refusing

    def _make(self, raft_id, name, **kw):
        node = Node(self.h, name=name, raft_id=raft_id, limits=self.limits,
                    election_timeout_ms=self.election_timeout_ms,
                    heartbeat_ms=self.heartbeat_ms,
                    snapshot_threshold=self.snapshot_threshold,
                    snapshot_trailing=self.snapshot_trailing, rbac=self.rbac,
                    audit=self.audit, **kw)
        self.h.nodes.append(node)
        return node

    def new_node(self, raft_id, join=True, name=None, cert=None):
        """A node (not started, not in self.nodes) for raft id |raft_id| with a join
        config (no members line); cert defaults to node<raft_id>. The name defaults
        to node<raft_id> (node<raft_id>-2, -3 ... when that directory is taken)."""
        return self._make(raft_id, self._free_name(name or "node%d" % raft_id), join=join,
                          cert=cert, members=None if join else self.members)

    def _free_name(self, base):
        """|base|, or base-2, base-3 ... when a node directory of that name exists
        (a second cluster or node in the same test gets its own directory)."""
        name, k = base, 1
        while os.path.exists(os.path.join(self.h.tmp, name)):
            k += 1
            name = "%s-%d" % (base, k)
        return name

    # -- lifecycle

    def start_all(self, wait=True):
        """Starts every node that is not running, all before waiting (a node is
        ready only once a majority is up), then waits for all of them."""
        started = [n for n in self.nodes if not n.running()]
        for n in started:
            n.start(wait=False)
        if wait:
            for n in started:
                try:
                    n.wait_ready()
                except RuntimeError:
                    self.dump_logs()
                    raise
        return self

    def dump_logs(self, lines=30):
        for n in self.h.nodes:
            print("---- last %d lines of %s (%s, %s):" % (
                lines, n.name, n.log_path,
                "paused" if n.paused else ("running" if n.running() else "stopped")),
                flush=True)
            print("\n".join(n.log_text().splitlines()[-lines:]), flush=True)

    def _deadline_fail(self, what):
        self.h.say("timeout: %s" % what)
        self.dump_logs()
        raise RuntimeError(what)

    # -- activation and status

    def activate(self, via=0, quorum=2, timeout=90, grant_admin_keys=True):
        """Security-domain download through nodes[via] (and, with |grant_admin_keys|,
        the admin's key roles through the same node); then waits (bounded) until every
        live node answers `key list` as admin (members fetch the domain secret from
        each other, and the role assignments must have reached them) -- without the
        grant, until every live node lists the admin's Administrator assignment.
        Returns the download's Result (or the failed grant's; no wait on failure)."""
        r = self.nodes[via].activate(quorum=quorum, grant_admin_keys=grant_admin_keys)
        if r.rc != 0:
            return r
        deadline = time.monotonic() + timeout
        for i, n in enumerate(self.nodes):
            if n.live():
                left = max(1.0, deadline - time.monotonic())
                if grant_admin_keys:
                    self.wait_serving(i, timeout=left)
                else:
                    self.wait_until(i, ("role", "assignment", "list", "--scope", "/"),
                                    lambda x: x.rc == 0 and any(
                                        a.get("principalId") == ADMIN
                                        and a.get("roleName") == ROLE_ADMIN
                                        for a in (x.json or [])), timeout=left)
        return r

    def wait_until(self, i, args, pred, cert="admin", timeout=30, what=None):
        """Runs the CLI |args| on nodes[i] (as |cert|) until pred(Result) holds;
        returns that Result; on timeout fails like the other waits."""
        n = self.nodes[i]
        deadline = time.monotonic() + timeout
        while True:
            r = n.cli("--timeout", 5, *args, cert=cert, timeout=15, quiet=True)
            self.last = r
            if pred(r):
                return r
            if time.monotonic() >= deadline:
                self._deadline_fail("%s: %s not reached within %ss; last: %s" %
                                    (n.name, what or " ".join(str(a) for a in args), timeout,
                                     r.describe()))
            time.sleep(0.2)

    def status(self, i, timeout=10):
        """Parsed `mhsm cluster status` of nodes[i] (operator certificate), or None."""
        n = self.nodes[i]
        r = n.cli("--timeout", max(1, int(timeout) - 2), "cluster", "status", cert="operator",
                  timeout=timeout, quiet=True)
        if r.rc == 0 and isinstance(r.json, dict):
            return r.json
        return None

    def index_of(self, raft_id):
        for i, n in enumerate(self.nodes):
            if n.raft_id == raft_id:
                return i
        return None

    def leader(self, timeout=30):
        """Index (in self.nodes) of the node that every live node names as leader,
        and that itself says it leads; raises on timeout."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            live = [i for i, n in enumerate(self.nodes) if n.live()]
            sts = {i: self.status(i) for i in live}
            seen = {i: (s.get("leaderId"), s.get("state")) if s else None
                    for i, s in sts.items()}
            ids = {int(s.get("leaderId") or 0) for s in sts.values() if s}
            if live and all(sts.values()) and len(ids) == 1:
                lid = ids.pop()
                li = self.index_of(lid) if lid else None
                if li is not None and li in sts and sts[li].get("state") == "leader":
                    return li
            time.sleep(0.2)
        self._deadline_fail("no agreed leader within %ss (node index -> (leaderId, state): %s)"
                            % (timeout, seen))

    def followers(self, timeout=30):
        """Indexes of the live nodes other than the leader."""
        li = self.leader(timeout=timeout)
        return [i for i, n in enumerate(self.nodes) if n.live() and i != li]

    def wait_serving(self, i, timeout=30):
        """Until nodes[i] answers `key list` with rc 0; returns seconds waited."""
        n = self.nodes[i]
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            r = n.cli("--timeout", 5, "key", "list", timeout=15, quiet=True)
            self.last = r
            if r.rc == 0:
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                self._deadline_fail("%s not serving within %ss; last: %s" %
                                    (n.name, timeout, r.describe()))
            time.sleep(0.2)

    def wait_refusing(self, i, timeout, args=None):
        """Until nodes[i] answers a key operation (|args|, default `key list`) with
        UNAVAILABLE; returns seconds waited (the refusing Result is self.last)."""
        n = self.nodes[i]
        args = list(args or ("key", "list"))
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            r = n.cli("--timeout", 5, *args, timeout=15, quiet=True)
            self.last = r
            if r.rc == 1 and r.status == "UNAVAILABLE":
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                self._deadline_fail("%s still not refusing `%s` after %ss; last: %s" %
                                    (n.name, " ".join(args), timeout, r.describe()))
            time.sleep(0.1)


class Harness:
    """Per-test state: temp dir, certificates, binaries, nodes, and the check tally."""

    def __init__(self, test_name):
        self.test_name = test_name
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.nodes = []
        self.verbose = os.environ.get("MH_VERBOSE", "1") != "0"
        os.makedirs(TMP_PARENT, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=test_name + ".", dir=TMP_PARENT)
        self.say("test %s: temp dir %s, build dir %s" % (test_name, self.tmp, BUILD_DIR))
        self.mhsmd = os.path.join(BUILD_DIR, "mhsmd")
        self.mhsm = os.path.join(BUILD_DIR, "mhsm")
        self.certs = os.path.join(self.tmp, "certs")
        missing = [p for p in (self.mhsmd, self.mhsm) if not os.access(p, os.X_OK)]
        if missing:
            self.fail("binaries present", "missing: %s (build the mhsmd and mhsm targets)"
                      % ", ".join(missing))
            self.finish()
        rc, out, err = run(["bash", os.path.join(SOURCE_DIR, "deploy", "gen-certs.sh"),
                            self.certs], timeout=300)
        if rc != 0:
            self.fail("gen-certs.sh", err)
            self.finish()

    # -- output and tally

    def say(self, msg):
        print("  " + msg, flush=True)

    def trace(self, r):
        if self.verbose:
            cmd = " ".join(r.argv[1:])
            if len(cmd) > 160:
                cmd = cmd[:160] + "..."
            extra = ""
            if r.rc != 0:
                extra = "  [%s]" % r.err.strip().splitlines()[-1][:200] if r.err.strip() else ""
            print("    $ mhsm %s -> %s%s" % (cmd, r.rc, extra), flush=True)

    def ok(self, what):
        self.passed += 1
        print("PASS %s" % what, flush=True)
        return True

    def fail(self, what, detail=""):
        self.failed += 1
        self.failures.append(what)
        print("FAIL %s%s" % (what, (": " + str(detail)) if detail else ""), flush=True)
        return False

    def check(self, cond, what, detail=""):
        return self.ok(what) if cond else self.fail(what, detail)

    def expect_ok(self, r, what):
        """rc 0; returns the parsed JSON (or None)."""
        if r.rc == 0:
            self.ok(what)
            return r.json
        self.fail(what, r.describe())
        return None

    def expect_err(self, r, status, what, contains=None, rc=1):
        """The server refused with |status| (exit 1 and `error: STATUS:` on stderr; a
        tuple: any of them); |contains|: a regex (case-insensitive) the message must
        match."""
        statuses = status if isinstance(status, tuple) else (status,)
        good = r.rc == rc and (status is None or r.status in statuses)
        if good and contains is not None:
            good = re.search(contains, r.err, re.IGNORECASE) is not None
        if good:
            return self.ok(what)
        want = "rc=%d status=%s%s" % (rc, status, (" message~/%s/" % contains) if contains else "")
        return self.fail(what, "want %s, got %s" % (want, r.describe()))

    @contextlib.contextmanager
    def section(self, title):
        """A group of steps; an exception inside is a failure, and the test goes on."""
        print("== %s" % title, flush=True)
        try:
            yield
        except Exception as e:  # noqa: BLE001 -- any error in a step is a test failure
            self.fail("%s (exception)" % title, "%s: %s" % (type(e).__name__, e))
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()

    def node(self, name="node1", **kw):
        n = Node(self, name=name, **kw)
        self.nodes.append(n)
        return n

    def cluster(self, n=3, election_timeout_ms=1000, heartbeat_ms=100, snapshot_threshold=None,
                snapshot_trailing=None, limits=None, rbac=None, audit=None):
        """A Cluster of n nodes (not started); its nodes are also in self.nodes.
        |rbac| / |audit|: extra [rbac] / [audit] options for every node."""
        return Cluster(self, n=n, election_timeout_ms=election_timeout_ms,
                       heartbeat_ms=heartbeat_ms, snapshot_threshold=snapshot_threshold,
                       snapshot_trailing=snapshot_trailing, limits=limits, rbac=rbac,
                       audit=audit)

    def proto_modules(self, names=("types", "keys"), health=False):
        """protoc --python_out for proto/mhsm/v1 (and grpc.health.v1 when |health|) into
        the test's temp dir, once; returns {name: module} for mhsm.v1.<name>_pb2 (and
        "health")."""
        out = os.path.join(self.tmp, "py")
        proto = os.path.join(SOURCE_DIR, "proto")
        if not os.path.isdir(out):
            os.makedirs(out)
            v1 = os.path.join(proto, "mhsm", "v1")
            files = [os.path.join(v1, f) for f in sorted(os.listdir(v1)) if f.endswith(".proto")]
            files.append(os.path.join(proto, "grpc", "health", "v1", "health.proto"))
            subprocess.run(["protoc", "-I", proto, "--python_out=" + out] + files, check=True)
            sys.path.insert(0, out)
        mods = {n: importlib.import_module("mhsm.v1.%s_pb2" % n) for n in names}
        if health:
            # grpc/health/v1 would shadow the grpc package itself: load it under another name.
            spec = importlib.util.spec_from_file_location(
                "mhsm_test_health_pb2", os.path.join(out, "grpc", "health", "v1",
                                                     "health_pb2.py"))
            hm = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(hm)
            mods["health"] = hm
        return mods

    def finish(self):
        for n in self.nodes:
            if n.running():
                n.kill9()
        _kill_live()
        for n in self.nodes:
            bad = [ln for ln in n.log_text().splitlines()
                   if "ERROR: AddressSanitizer" in ln or "ERROR: LeakSanitizer" in ln
                   or "runtime error:" in ln]
            self.check(not bad, "%s: no sanitizer report in its log" % n.name, bad[:3])
        if self.passed == 0 and self.failed == 0:
            self.fail("at least one check ran")
        if self.failed:
            print("failed checks:", flush=True)
            for f in self.failures:
                print("  - " + f, flush=True)
            for n in self.nodes:
                print("---- last lines of %s (%s):" % (n.name, n.log_path))
                print("\n".join(n.log_text().splitlines()[-40:]))
        print("%s: %d passed, %d failed" % (self.test_name, self.passed, self.failed),
              flush=True)
        if self.failed == 0 and os.environ.get("MH_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("temp dir kept: %s" % self.tmp, flush=True)
        sys.exit(1 if self.failed else 0)
