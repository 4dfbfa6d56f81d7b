#!/usr/bin/python3
"""bench.py: mhsm's benchmark command -- every figure of issue 6 in one run on one machine.

Measures, in this order (each stage on an otherwise idle set of processes):
  1. the machine: CPU, cores, kernel, RAM, OpenSSL, fsync (write + fdatasync) p50 of the
     filesystem that holds the data directories;
  2. ceilings: `openssl speed -multi T` for RSA-2048 and P-256 sign/verify and
     `openssl speed -multi T -evp aes-256-gcm -bytes 32`, T = the number of cores;
  3. mhsm, one node, then the three-node cluster (load spread over every endpoint), through
     mhsm-bench, for the crypto and read operations;
  4. replicated writes on the cluster: create (AES-256, P-256, RSA-2048) and attribute
     update at 1, 16 and 64 in flight;
  5. peers: SoftHSM2 through PKCS#11 (p11-bench) and a 3-member etcd cluster driven by the
     same mhsm-bench (--target etcd --op etcd-put) at 1 and 64 in flight.
Then prints one table (every figure, its reference and the ratio, and the issue's five
targets met/missed), writes docs/PERFORMANCE.md and the raw JSON of every run.

Servers are stood up with test/cluster/mhtest.py (the project's harness). Every wait is
bounded; every process started here is stopped at the end, also on failure or Ctrl-C.
Speed is reported, never asserted: the exit status is 0 when every measurement produced a
number, 1 otherwise.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.path.join(HERE, ".."))

# Shapes of the load (connections x streams per connection).
SINGLE_SHAPE = (4, 16)     # one node: 64 in flight
CLUSTER_SHAPE = (6, 16)    # three nodes: two connections per node, 96 in flight
WRITE_LEVELS = {1: (1, 1), 16: (4, 4), 64: (4, 16)}
CRYPTO_OPS = ["sign-rs256-2048", "sign-es256", "verify-es256", "encrypt-a256gcm",
              "decrypt-a256gcm", "encrypt-rsa-oaep-256-2048", "decrypt-rsa-oaep-256-2048",
              "wrap-a256kw", "unwrap-a256kw", "get-key"]
WRITE_OPS = ["create-aes256", "create-p256", "create-rsa2048", "update-attributes"]
P11_OPS = ["sign-rs256-2048", "sign-es256"]
# The openssl ceiling each op is compared with (RSA-OAEP encrypt is a public-key operation
# like verify, decrypt a private-key one like sign).
CEILING_OF = {"sign-rs256-2048": "rsa2048-sign", "sign-es256": "ecdsap256-sign",
              "verify-es256": "ecdsap256-verify", "encrypt-a256gcm": "aes256gcm-32",
              "decrypt-a256gcm": "aes256gcm-32", "encrypt-rsa-oaep-256-2048": "rsa2048-verify",
              "decrypt-rsa-oaep-256-2048": "rsa2048-sign"}
CEILING_NAMES = {"rsa2048-sign": "openssl rsa2048 sign", "rsa2048-verify": "openssl rsa2048 verify",
                 "ecdsap256-sign": "openssl ecdsap256 sign",
                 "ecdsap256-verify": "openssl ecdsap256 verify",
                 "aes256gcm-32": "openssl aes-256-gcm 32 B"}


class BenchError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------- processes

_children = []


def run_child(argv, timeout, env=None, stdout=subprocess.PIPE):
    """Runs argv (killed after |timeout| s, and at exit); returns (rc, stdout, stderr)."""
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    _children.append(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
        raise BenchError("timeout after %ss: %s" % (timeout, " ".join(argv)))
    finally:
        if p.poll() is None:  # interrupted (Ctrl-C): the child goes with us
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        _children.remove(p)
    return p.returncode, (out or b"").decode(errors="replace"), err.decode(errors="replace")


def kill_children():
    for p in list(_children):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


# ------------------------------------------------------------------- machine

def machine_info(data_dir, fsync_iters):
    info = {"cores": os.cpu_count(), "kernel": platform.release(), "cpu": "unknown",
            "ram_gib": None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    rc, out, _ = run_child(["openssl", "version"], 30)
    info["openssl"] = out.strip()
    info["fsync_p50_us"], info["fsync_p99_us"] = fsync_latency(data_dir, fsync_iters)
    info["fsync_dir"] = data_dir
    rc, out, _ = run_child(["git", "-C", SOURCE_DIR, "rev-parse", "--short", "HEAD"], 30)
    commit = out.strip() if rc == 0 else "unknown"
    rc, out, _ = run_child(["git", "-C", SOURCE_DIR, "status", "--porcelain",
                            "--untracked-files=no"], 30)
    if rc == 0 and out.strip():
        commit += " (with uncommitted changes)"
    info["commit"] = commit
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def fsync_latency(directory, iters):
    """p50 and p99 (us) of a 4 KiB overwrite + fdatasync, the cost of one durable append."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    lat = []
    try:
        block = b"\0" * 4096
        for i in range(iters):
            os.pwrite(fd, block, (i % 16) * 4096)
            t0 = time.perf_counter_ns()
            os.fdatasync(fd)
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return round(statistics.median(lat), 1), round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)


# ------------------------------------------------------------------- ceilings

def openssl_ceilings(threads, seconds):
    """{name: ops/s} from `openssl speed -multi threads -seconds S` (aggregate of all
    processes), plus the raw outputs."""
    raw = {}
    rc, out, err = run_child(["openssl", "speed", "-multi", str(threads), "-seconds", str(seconds),
                              "rsa2048", "ecdsap256"], 8 * seconds + 60)
    raw["rsa_ecdsa"] = out
    if rc != 0:
        raise BenchError("openssl speed rsa2048 ecdsap256 failed (%d): %s" % (rc, err[-300:]))
    res = {}
    m = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)\s*$", out, re.M)
    if m:
        res["rsa2048-sign"], res["rsa2048-verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"\(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)\s*$", out, re.M)
    if m:
        res["ecdsap256-sign"], res["ecdsap256-verify"] = float(m.group(1)), float(m.group(2))
    rc, out, err = run_child(["openssl", "speed", "-multi", str(threads), "-seconds", str(seconds),
                              "-evp", "aes-256-gcm", "-bytes", "32"], 2 * seconds + 60)
    raw["aes"] = out
    if rc != 0:
        raise BenchError("openssl speed -evp aes-256-gcm failed (%d): %s" % (rc, err[-300:]))
    m = re.search(r"^AES-256-GCM\s+([\d.]+)k\s*$", out, re.M | re.I)
    if m:
        # openssl prints thousands of bytes per second of 32-byte blocks.
        res["aes256gcm-32"] = float(m.group(1)) * 1000.0 / 32.0
    missing = [k for k in CEILING_NAMES if k not in res]
    if missing:
        raise BenchError("could not parse openssl speed output for %s" % ", ".join(missing))
    return res, raw


# ------------------------------------------------------------------- load generators

class Runner:
    """Runs mhsm-bench and p11-bench, collecting every JSON result in self.runs."""

    def __init__(self, build_dir, tmp, seconds, warmup):
        self.mhsm_bench = os.path.join(build_dir, "mhsm-bench")
        self.p11_bench = os.path.join(build_dir, "p11-bench")
        self.tmp = tmp
        self.seconds = seconds
        self.warmup = warmup
        self.runs = []
        self.errors = []  # failed measurements; the others go on
        self.n = 0

    def measure(self, kind, *a, **kw):
        """self.mhsm / self.p11 (|kind|), but a failure is recorded in self.errors and
        gives {} so one broken measurement does not cost the rest of the run."""
        try:
            return getattr(self, kind)(*a, **kw)
        except BenchError as e:
            self.errors.append(str(e))
            log("ERROR %s" % e)
            return {}

    def _json_path(self):
        self.n += 1
        return os.path.join(self.tmp, "run-%03d.json" % self.n)

    def _finish(self, label, argv, rc, out, err, path):
        try:
            with open(path) as f:
                res = json.load(f)
        except (OSError, ValueError) as e:
            raise BenchError("%s: no JSON result (rc %d, %s): %s" % (
                label, rc, e, (err.strip() or out.strip())[-400:]))
        res["argv"] = argv
        self.runs.append(res)
        lat = res.get("latency_us") or {}
        errs = res.get("errors", 0)
        log("  %-44s %10.1f ops/s  p50 %8.1f us  p99 %8.1f us%s" % (
            label, res.get("ops_per_s", 0.0), lat.get("p50", 0.0), lat.get("p99", 0.0),
            ("  errors %d %s" % (errs, json.dumps(res.get("errors_by_status", {}))))
            if errs else ""))
        if rc != 0:
            raise BenchError("%s: exit %d: %s" % (label, rc, err.strip()[-400:]))
        return res

    def mhsm(self, label, endpoints, certs, op, shape, threads, target="mhsm", setup=False,
             duration=None, count=None):
        conns, streams = shape
        path = self._json_path()
        duration = duration or self.seconds
        argv = [self.mhsm_bench, "--endpoints", ",".join(endpoints),
                "--ca", os.path.join(certs, "ca.pem"), "--cert", os.path.join(certs, "admin.pem"),
                "--key", os.path.join(certs, "admin.key"), "--target", target,
                "--connections", str(conns), "--streams", str(streams), "--threads", str(threads),
                "--op", op, "--json", path, "--label", label, "--quiet"]
        if count:  # a fixed number of calls, no warm-up: for ops too slow for a duration
            argv += ["--count", str(count), "--warmup", "0"]
        else:
            argv += ["--duration", fmt_s(duration), "--warmup", fmt_s(self.warmup)]
        if setup:
            argv.append("--setup")
        if not os.access(self.mhsm_bench, os.X_OK):
            raise BenchError("%s is missing (build the mhsm-bench target)" % self.mhsm_bench)
        rc, out, err = run_child(argv, duration + self.warmup + (300 if count else 180))
        return self._finish(label, argv, rc, out, err, path)

    def p11(self, label, env, op, threads):
        path = self._json_path()
        argv = [self.p11_bench, "--module", softhsm_module(), "--token-label", "mhsm-bench",
                "--pin", "1234", "--op", op, "--threads", str(threads), "--duration",
                fmt_s(self.seconds), "--warmup", fmt_s(self.warmup), "--json", path,
                "--label", label]
        if not os.access(self.p11_bench, os.X_OK):
            raise BenchError("%s is missing (build the p11-bench target)" % self.p11_bench)
        rc, out, err = run_child(argv, self.seconds + self.warmup + 120, env=env)
        return self._finish(label, argv, rc, out, err, path)


def fmt_s(s):
    return ("%d" % s) if float(s).is_integer() else ("%g" % s)


def softhsm_module():
    import glob
    for p in ["/usr/lib/softhsm/libsofthsm2.so"] + sorted(glob.glob(
            "/usr/lib/*/softhsm/libsofthsm2.so")):
        if os.path.exists(p):
            return p
    raise BenchError("libsofthsm2.so not found (apt-get install softhsm2)")


# ------------------------------------------------------------------- stages

def figure(res):
    lat = res.get("latency_us") or {}
    return {"ops_per_s": res.get("ops_per_s"), "p50_us": lat.get("p50"),
            "p99_us": lat.get("p99"), "errors": res.get("errors", 0)}


def stage_mhsm_single(h, mhtest, runner, threads_choice, results):
    log("== mhsm, one node (%d connections x %d streams)" % SINGLE_SHAPE)
    node = h.node("single")
    node.start()
    r = node.activate()
    if r.rc != 0:
        raise BenchError("activation of the single node failed: %s" % r.describe())
    try:
        threads = threads_choice(lambda t: runner.measure("mhsm",
            "single threads=%d sign-es256" % t, [node.endpoint], h.certs, "sign-es256",
            SINGLE_SHAPE, t, setup=True))
        results["client_threads"] = threads
        for op in CRYPTO_OPS:
            res = runner.measure("mhsm", "single %s" % op, [node.endpoint], h.certs, op, SINGLE_SHAPE,
                              threads, setup=True)
            results["single"][op] = figure(res)
    finally:
        node.stop()


def stage_mhsm_cluster(h, runner, threads, results):
    log("== mhsm, three-node cluster (%d connections x %d streams over all nodes)"
        % CLUSTER_SHAPE)
    cl = h.cluster(3)
    cl.start_all()
    r = cl.activate()
    if r.rc != 0:
        raise BenchError("activation of the cluster failed: %s" % r.describe())
    li = cl.leader()
    # The leader first: one connection (1 in flight) then talks to it, as etcd's does below.
    eps = [cl.nodes[li].endpoint] + [n.endpoint for i, n in enumerate(cl.nodes) if i != li]
    results["cluster_endpoints"] = eps
    try:
        for op in CRYPTO_OPS:
            res = runner.measure("mhsm", "cluster %s" % op, eps, h.certs, op, CLUSTER_SHAPE, threads,
                              setup=True)
            results["cluster"][op] = figure(res)
        log("== replicated writes on the cluster (1, 16, 64 in flight)")
        for op in WRITE_OPS:
            for level, shape in WRITE_LEVELS.items():
                # RSA key generation is slow (seconds per call at 64 in flight): a fixed
                # count, at least one full window, instead of a duration that may see
                # no create complete.
                cnt = None
                if op == "create-rsa2048":
                    cnt = max(4, level) if runner.seconds < 5 else max(8, 2 * level)
                res = runner.measure("mhsm", "cluster %s @%d" % (op, level), eps, h.certs, op,
                                     shape, threads, setup=True, count=cnt)
                results["writes"]["%s@%d" % (op, level)] = figure(res)
    finally:
        for n in cl.nodes:
            n.stop()


def stage_softhsm(tmp, runner, threads, results):
    log("== SoftHSM2 through PKCS#11 (%d threads, one session each)" % threads)
    d = os.path.join(tmp, "softhsm")
    os.makedirs(os.path.join(d, "tokens"), exist_ok=True)
    conf = os.path.join(d, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
                % os.path.join(d, "tokens"))
    env = dict(os.environ, SOFTHSM2_CONF=conf)
    rc, out, err = run_child(["softhsm2-util", "--init-token", "--free", "--label", "mhsm-bench",
                              "--pin", "1234", "--so-pin", "12345678"], 60, env=env)
    if rc != 0:
        raise BenchError("softhsm2-util --init-token failed: %s" % err.strip())
    for op in P11_OPS:
        res = runner.measure("p11", "softhsm2 %s" % op, env, op, threads)
        results["softhsm2"][op] = figure(res)


def stage_etcd(h, runner, threads, results):
    log("== etcd 3-member cluster (TLS, fsync on), etcd-put through mhsm-bench")
    d = os.path.join(h.tmp, "etcd")
    script = os.path.join(HERE, "etcd-cluster.sh")
    try:
        # Inside the try: a start that times out (or Ctrl-C) has already launched members
        # in their own sessions; stop finds them through their pid files.
        rc, out, err = run_child(["bash", script, "start", d, os.path.join(h.certs, "ca.pem"),
                                  os.path.join(h.certs, "ca.key")], 120)
        if rc != 0:
            raise BenchError("etcd-cluster.sh start failed: %s" % err.strip()[-600:])
        eps = out.strip().split(",")
        eps = etcd_leader_first(eps, h.certs)
        results["etcd_endpoints"] = eps
        for level in (1, 64):
            res = runner.measure("mhsm", "etcd put @%d" % level, eps, h.certs, "etcd-put",
                              WRITE_LEVELS[level], threads, target="etcd")
            results["etcd"]["put@%d" % level] = figure(res)
    finally:
        run_child(["bash", script, "stop", d], 60)


def etcd_leader_first(eps, certs):
    argv = ["etcdctl", "--endpoints", ",".join("https://" + e for e in eps), "--cacert",
            os.path.join(certs, "ca.pem"), "--cert", os.path.join(certs, "admin.pem"), "--key",
            os.path.join(certs, "admin.key"), "endpoint", "status", "-w", "json"]
    rc, out, _ = run_child(argv, 30, env=dict(os.environ, ETCDCTL_API="3"))
    if rc != 0:
        return eps
    try:
        for st in json.loads(out):
            if st["Status"]["leader"] == st["Status"]["header"]["member_id"]:
                lead = st["Endpoint"].replace("https://", "")
                return [lead] + [e for e in eps if e != lead]
    except (ValueError, KeyError, TypeError):
        pass
    return eps


# ------------------------------------------------------------------- the table

def num(v, digits=0):
    if v is None:
        return "n/a"
    return ("{:,.%df}" % digits).format(v)


def ratio(a, b, pct=True):
    if a is None or not b:
        return None
    return a / b


def fmt_ratio(r, pct=True):
    if r is None:
        return "n/a"
    return ("%.0f%%" % (r * 100)) if pct else ("%.2fx" % r)


def build_rows(res):
    """[(section, measurement, ops, p50, p99, reference text, ratio text)]"""
    ce = res["ceilings"]
    rows = []
    th = res["machine"]["cores"]
    for k, name in CEILING_NAMES.items():
        rows.append(("ceiling", "%s (%d procs)" % (name, th), ce.get(k), None, None, "", ""))
    rows.append(("machine", "fsync (4 KiB write + fdatasync)", None,
                 res["machine"].get("fsync_p50_us"), res["machine"].get("fsync_p99_us"), "",
                 ""))
    for where in ("single", "cluster"):
        for op in CRYPTO_OPS:
            f = res[where].get(op, {})
            ck = CEILING_OF.get(op)
            ref, rt = "", ""
            if ck:
                ref = "%s %s/s" % (CEILING_NAMES[ck], num(ce.get(ck)))
                rt = fmt_ratio(ratio(f.get("ops_per_s"), ce.get(ck)))
            peer = res["softhsm2"].get(op) if where == "cluster" else None
            if peer:
                ref += "; SoftHSM2 %s/s" % num(peer.get("ops_per_s"))
                rt += "; %s" % fmt_ratio(ratio(f.get("ops_per_s"), peer.get("ops_per_s")),
                                         pct=False)
            rows.append((where, "%s %s" % ("1 node" if where == "single" else "3 nodes", op),
                         f.get("ops_per_s"), f.get("p50_us"), f.get("p99_us"), ref or "-",
                         rt or "-"))
    for op in WRITE_OPS:
        for level in WRITE_LEVELS:
            f = res["writes"].get("%s@%d" % (op, level), {})
            ref, rt = "-", "-"
            peer = res["etcd"].get("put@%d" % level)
            if peer:
                ref = "etcd put @%d: %s/s, p50 %s us" % (level, num(peer.get("ops_per_s")),
                                                         num(peer.get("p50_us"), 1))
                rt = "ops %s, p50 %s" % (
                    fmt_ratio(ratio(f.get("ops_per_s"), peer.get("ops_per_s")), pct=False),
                    fmt_ratio(ratio(f.get("p50_us"), peer.get("p50_us")), pct=False))
            rows.append(("writes", "3 nodes %s @%d in flight" % (op, level), f.get("ops_per_s"),
                         f.get("p50_us"), f.get("p99_us"), ref, rt))
    for op in P11_OPS:
        f = res["softhsm2"].get(op, {})
        ck = CEILING_OF[op]
        rows.append(("peer", "SoftHSM2 %s (%d threads)" % (op, th), f.get("ops_per_s"),
                     f.get("p50_us"), f.get("p99_us"),
                     "%s %s/s" % (CEILING_NAMES[ck], num(ce.get(ck))),
                     fmt_ratio(ratio(f.get("ops_per_s"), ce.get(ck)))))
    for level in (1, 64):
        f = res["etcd"].get("put@%d" % level, {})
        rows.append(("peer", "etcd put @%d in flight (3 members)" % level, f.get("ops_per_s"),
                     f.get("p50_us"), f.get("p99_us"), "-", "-"))
    return rows


def targets(res):
    """[(target, measured, required, met)] for the issue's five targets."""
    ce, cl, wr, et = res["ceilings"], res["cluster"], res["writes"], res["etcd"]
    out = []
    rs = cl.get("sign-rs256-2048", {}).get("ops_per_s")
    r = ratio(rs, ce.get("rsa2048-sign"))
    out.append(("RSA-2048 sign, cluster >= 85% of openssl ceiling", fmt_ratio(r), ">= 85%",
                r is not None and r >= 0.85))
    es = cl.get("sign-es256", {}).get("ops_per_s")
    out.append(("P-256 sign, cluster >= 40,000 ops/s", num(es), ">= 40,000",
                es is not None and es >= 40000))
    gcm = cl.get("encrypt-a256gcm", {}).get("ops_per_s")
    out.append(("AES-256-GCM encrypt 32 B, cluster >= 40,000 ops/s", num(gcm), ">= 40,000",
                gcm is not None and gcm >= 40000))
    u1 = wr.get("update-attributes@1", {}).get("p50_us")
    e1 = et.get("put@1", {}).get("p50_us")
    u64 = wr.get("update-attributes@64", {}).get("ops_per_s")
    e64 = et.get("put@64", {}).get("ops_per_s")
    ok = None not in (u1, e1, u64, e64) and u1 < e1 and u64 > e64
    out.append(("Attribute update: p50 @1 below etcd's, ops @64 above etcd's",
                "p50 %s vs %s us; %s vs %s ops/s" % (num(u1, 1), num(e1, 1), num(u64), num(e64)),
                "both", ok))
    ca = max([wr.get("create-aes256@%d" % lv, {}).get("ops_per_s") or 0 for lv in WRITE_LEVELS]
             or [0])
    out.append(("Replicated create AES-256 >= 5,000/s (fsync on; best of 1/16/64)", num(ca),
                ">= 5,000", ca >= 5000))
    return out


def render_table(res):
    rows = build_rows(res)
    lines = ["| Measurement | ops/s | p50 us | p99 us | Reference | Ratio |",
             "|---|---:|---:|---:|---|---|"]
    for sec, name, ops, p50, p99, ref, rt in rows:
        if sec == "ceiling":  # throughput only
            cells = (num(ops), "-", "-", "-", "-")
        elif sec == "machine":  # latency only
            cells = ("-", num(p50, 1), num(p99, 1), "-", "-")
        else:
            cells = (num(ops), num(p50, 1), num(p99, 1), ref, rt)
        lines.append("| %s | %s | %s | %s | %s | %s |" % ((name,) + cells))
    lines += ["", "| Target | Measured | Required | Result |", "|---|---|---|---|"]
    for name, meas, req, met in targets(res):
        lines.append("| %s | %s | %s | %s |" % (name, meas, req, "met" if met else "MISSED"))
    return "\n".join(lines) + "\n", rows


def render_markdown(res, table, args):
    m = res["machine"]
    return """# mhsm performance

Generated by `scripts/bench.sh%s` on %s at commit %s. Do not edit by hand: run the
command again to refresh it.

## Method

One command measures everything on the same machine, one stage after the other, so the
figures share the hardware, kernel, OpenSSL build and background load:

1. **Ceilings**: `openssl speed -multi %d -seconds %s rsa2048 ecdsap256` and
   `openssl speed -multi %d -seconds %s -evp aes-256-gcm -bytes 32` (one process per core):
   the most this machine's OpenSSL can do for the same work with every core busy.
2. **mhsm**: `mhsm-bench` (C, on the project's client library, HTTP/2 + TLS with client
   certificates) against one node (%d connections x %d concurrent streams) and against the
   three-node cluster (%d connections x %d streams, spread round-robin over the three nodes,
   the leader first), %s s per operation after %s s of warm-up, with %s client event-loop
   thread(s) (chosen by measuring 1 and 2 on P-256 sign and keeping the faster). The client
   runs on the same %d cores as the servers, so every mhsm figure also pays for its client.
3. **Replicated writes** on the cluster at 1 (one connection, to the leader), 16 (4 x 4) and
   64 (4 x 16) calls in flight: CreateKey of fresh AES-256, P-256 and RSA-2048 keys, and
   UpdateKey of tags on a pool of keys. Every write is a raft entry committed on a majority
   with fsync on.
4. **Peers**: SoftHSM2 (Debian `softhsm2`) through PKCS#11 with `p11-bench` (%d threads, one
   session each, the same SHA-256 digest signing), and a three-member etcd cluster (Debian
   `etcd-server` 3.4, TLS with client certificates, default fsync) driven by the same
   `mhsm-bench` (`--target etcd --op etcd-put`, 256-byte values) at 1 and 64 in flight.

Latencies are per successful call, submit to decoded answer, from an HDR-style histogram
(<= 1%% error). Ratios: ops/s of the figure over ops/s of its reference (for writes also
p50 over p50). Speed is never asserted by tests; the targets below are reported, not enforced.

## Machine

- CPU: %s, %d cores
- RAM: %s GiB; kernel %s
- %s
- fsync (4 KiB write + fdatasync in the data directory's filesystem): p50 %s us, p99 %s us

## How to run

    ./scripts/bench.sh                 # full run, about 10 minutes
    ./scripts/bench.sh --quick         # smoke run, short measurements
    ./scripts/bench.sh --seconds 10 --json /tmp/runs.json

`scripts/bench.sh` installs the dependencies, builds the release configuration in
`build-bench/` and runs `bench/bench.py`, which rewrites this file and stores the raw JSON
of every run (`--json`, default: next to this file).

## Results

%s
Raw results: `%s`.
""" % (" --quick" if args.quick else "", m["date"], m["commit"], m["cores"], fmt_s(args.ceiling_seconds),
       m["cores"], fmt_s(args.ceiling_seconds), SINGLE_SHAPE[0], SINGLE_SHAPE[1],
       CLUSTER_SHAPE[0], CLUSTER_SHAPE[1], fmt_s(args.seconds), fmt_s(args.warmup),
       res.get("client_threads", "?"), m["cores"], m["cores"], m["cpu"], m["cores"],
       m["ram_gib"], m["kernel"], m["openssl"], num(m["fsync_p50_us"], 1),
       num(m["fsync_p99_us"], 1), table, os.path.relpath(args.json, SOURCE_DIR)
       if args.json.startswith(SOURCE_DIR) else args.json)


# ------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--seconds", type=float, default=None,
                    help="seconds per measurement (default 5, --quick 1)")
    ap.add_argument("--out", default=os.path.join(SOURCE_DIR, "docs", "PERFORMANCE.md"))
    ap.add_argument("--json", default=None, help="raw results (default: --out with .json)")
    ap.add_argument("--build-dir", default=os.path.join(SOURCE_DIR, "build-bench"))
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 5.0
    if not 0 < args.seconds <= 600:
        ap.error("--seconds must be in (0, 600]")
    args.warmup = 0.5 if args.quick else 1.0
    args.ceiling_seconds = 1 if args.quick else max(1, min(5, int(args.seconds)))
    args.out = os.path.abspath(args.out)
    args.json = os.path.abspath(args.json or os.path.splitext(args.out)[0] + ".json")
    args.build_dir = os.path.abspath(args.build_dir)

    # The harness reads these at import; its CLI traces would drown the figures.
    os.environ["MH_BUILD_DIR"] = args.build_dir
    os.environ["MH_VERBOSE"] = "0"
    sys.path.insert(0, os.path.join(SOURCE_DIR, "test", "cluster"))
    import mhtest  # noqa: E402 -- needs the environment above

    t_start = time.monotonic()
    h = mhtest.Harness("bench")
    tmp = tempfile.mkdtemp(prefix="runs.", dir=h.tmp)
    runner = Runner(args.build_dir, tmp, args.seconds, args.warmup)
    res = {"machine": {}, "ceilings": {}, "single": {}, "cluster": {}, "writes": {},
           "softhsm2": {}, "etcd": {}, "errors": []}
    cores = os.cpu_count() or 1

    def threads_choice(measure):
        best, best_ops = 1, -1.0
        for t in (1, 2):
            ops = measure(t).get("ops_per_s") or 0.0
            if ops > best_ops:
                best, best_ops = t, ops
        log("  client threads: %d (the faster on sign-es256)" % best)
        return best

    def stage(name, fn, *a):
        try:
            fn(*a)
        except BenchError as e:
            res["errors"].append("%s: %s" % (name, e))
            log("ERROR %s: %s" % (name, e))
        except RuntimeError as e:  # the harness's bounded waits
            res["errors"].append("%s: %s" % (name, e))
            log("ERROR %s: %s" % (name, e))

    ok = False
    try:
        log("== machine")
        res["machine"] = machine_info(h.tmp, 50 if args.quick else 300)
        m = res["machine"]
        log("  %s, %d cores, %s GiB, kernel %s, %s, fsync p50 %.1f us" % (
            m["cpu"], m["cores"], m["ram_gib"], m["kernel"], m["openssl"], m["fsync_p50_us"]))
        log("== ceilings: openssl speed -multi %d" % cores)

        def ceil():
            res["ceilings"], res["openssl_raw"] = openssl_ceilings(cores, args.ceiling_seconds)
            for k, v in res["ceilings"].items():
                log("  %-44s %10.1f ops/s" % (CEILING_NAMES[k], v))
        stage("ceilings", ceil)
        stage("mhsm single node", stage_mhsm_single, h, mhtest, runner, threads_choice, res)
        threads = res.get("client_threads", 1)
        stage("mhsm cluster", stage_mhsm_cluster, h, runner, threads, res)
        stage("softhsm2", stage_softhsm, h.tmp, runner, cores, res)
        stage("etcd", stage_etcd, h, runner, threads, res)

        res["errors"] += runner.errors
        table, rows = render_table(res)
        res["runs"] = runner.runs
        res["elapsed_s"] = round(time.monotonic() - t_start, 1)
        log("")
        log(table)
        missing = [r[1] for r in rows if r[2] is None and r[3] is None]
        if missing:
            res["errors"].append("rows without a figure: %s" % ", ".join(missing))
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(render_markdown(res, table, args))
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
            f.write("\n")
        log("wrote %s and %s (%.0f s)" % (args.out, args.json, res["elapsed_s"]))
        for e in res["errors"]:
            log("ERROR %s" % e)
        ok = not res["errors"]
    finally:
        kill_children()
        for n in h.nodes:
            if n.running():
                n.kill9()
        mhtest._kill_live()
        if ok and os.environ.get("MH_KEEP_TMP") != "1":
            shutil.rmtree(h.tmp, ignore_errors=True)
        else:
            log("temp dir kept: %s" % h.tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
