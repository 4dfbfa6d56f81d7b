"""mhsm-bench against one real mhsmd: --setup then a short --count of every mhsm operation
over 2 connections x 4 streams (exit 0, no error, the JSON of the contract, counts that
add up), its usage errors (exit 2, naming the culprit), and a run as a principal with no
role (every call PERMISSION_DENIED, counted, exit 1). No timing is asserted.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_mhsm_bench.py
"""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402

h = mhtest.Harness("test_mhsm_bench")
BENCH = os.path.join(mhtest.BUILD_DIR, "mhsm-bench")
if not os.access(BENCH, os.X_OK):
    h.fail("mhsm-bench present", "missing %s (build the mhsm-bench target)" % BENCH)
    h.finish()

SIGN = ["sign-rs256-2048", "sign-rs256-3072", "sign-rs256-4096", "sign-ps256-2048",
        "sign-es256", "sign-es384", "sign-es256k"]
OPS = SIGN + ["verify-" + s[len("sign-"):] for s in SIGN] + [
    "encrypt-rsa-oaep-256-2048", "decrypt-rsa-oaep-256-2048",
    "encrypt-a256gcm", "decrypt-a256gcm", "encrypt-a128gcm", "decrypt-a128gcm",
    "encrypt-a256cbcpad", "decrypt-a256cbcpad",
    "wrap-a256kw", "unwrap-a256kw", "wrap-rsa-oaep-256-2048", "unwrap-rsa-oaep-256-2048",
    "get-key", "create-aes256", "create-p256", "update-attributes"]
LATENCY = ("p50", "p90", "p99", "p999", "max", "mean")
TOP = ("tool", "version", "label", "target", "endpoints", "connections", "streams", "threads",
       "in_flight", "duration_s", "warmup_s", "ops", "errors", "errors_by_status", "ops_per_s",
       "latency_us", "per_op")

node = h.node("node1")
node.start()
h.expect_ok(node.activate(), "node activated (admin holds Crypto User + Officer)")


def bench(*args, cert="admin", timeout=240):
    c = os.path.join(h.certs, cert)
    argv = [BENCH, "--endpoints", node.endpoint, "--ca", os.path.join(h.certs, "ca.pem"),
            "--cert", c + ".pem", "--key", c + ".key"] + [str(a) for a in args]
    rc, out, err = mhtest.run(argv, timeout=timeout)
    out = out.decode(errors="replace")
    print("    $ mhsm-bench %s -> %d" % (" ".join(str(a) for a in args)[:150], rc), flush=True)
    return rc, out, err


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        h.fail("JSON readable: %s" % path, e)
        return None


def check_shape(j, what):
    missing = [k for k in TOP if k not in j]
    h.check(not missing, "%s: JSON has the contract's fields" % what, "missing %s" % missing)
    h.check(j.get("tool") == "mhsm-bench" and j.get("version") == 1 and j.get("target") == "mhsm",
            "%s: tool/version/target" % what, str({k: j.get(k) for k in ("tool", "version")}))
    lat = j.get("latency_us", {})
    h.check(all(isinstance(lat.get(k), (int, float)) for k in LATENCY),
            "%s: latency_us has %s" % (what, "/".join(LATENCY)), str(lat))
    per = j.get("per_op", {})
    h.check(sum(p.get("ops", 0) for p in per.values()) == j.get("ops")
            and sum(p.get("errors", 0) for p in per.values()) == j.get("errors")
            and sum(j.get("errors_by_status", {}).values()) == j.get("errors"),
            "%s: per-op and per-status counts add up to the totals" % what)


with h.section("every mhsm op, 2 connections x 4 streams"):
    out = os.path.join(h.tmp, "all.json")
    count = 600
    rc, so, se = bench("--setup", "--mix", ",".join("%s:1" % o for o in OPS), "--count", count,
                       "--warmup", 0, "--connections", 2, "--streams", 4, "--label", "smoke",
                       "--json", out)
    h.check(rc == 0, "mixed run exits 0", "rc=%d %s" % (rc, se[-600:]))
    j = load(out)
    if j is not None:
        check_shape(j, "mixed run")
        h.check(j["errors"] == 0, "mixed run: no error", str(j.get("errors_by_status")))
        h.check(j["ops"] + j["errors"] == count, "mixed run: ops + errors == --count",
                "ops %s errors %s" % (j["ops"], j["errors"]))
        h.check(j["connections"] == 2 and j["streams"] == 4 and j["in_flight"] == 8
                and j["label"] == "smoke" and j["endpoints"] == [node.endpoint],
                "mixed run: the run's parameters are in the JSON")
        missing = [o for o in OPS if j["per_op"].get(o, {}).get("ops", 0) < 1]
        h.check(not missing, "mixed run: every op ran and succeeded", "none for %s" % missing)
        lat = j["latency_us"]
        h.check(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
                "mixed run: quantiles are ordered", str(lat))
    h.check("update-attributes" in so and "ops/s" in so, "text summary on stdout", so[-300:])

with h.section("create-rsa2048 (slow keygen: a count of its own)"):
    out = os.path.join(h.tmp, "rsa.json")
    rc, so, se = bench("--op", "create-rsa2048", "--count", 2, "--warmup", 0, "--json", out)
    j = load(out)
    h.check(rc == 0 and j is not None and j["ops"] == 2 and j["errors"] == 0,
            "create-rsa2048 x2 succeeds", "rc=%d %s" % (rc, se[-400:]))

with h.section("--setup is idempotent; --json - prints the JSON on stdout"):
    rc, so, se = bench("--setup", "--op", "sign-es256", "--count", 20, "--warmup", 0,
                       "--json", "-", "--quiet")
    try:
        j = json.loads(so)
    except ValueError as e:
        j = None
        h.fail("--json - gives JSON on stdout", e)
    h.check(rc == 0 and j is not None and j["ops"] == 20, "second --setup run succeeds",
            "rc=%d %s" % (rc, se[-400:]))
    h.check("sign-es256" in se, "with --json -, the summary goes to stderr", se[-300:])

with h.section("usage errors"):
    rc, so, se = bench("--op", "sign-nope", "--count", 1)
    h.check(rc == 2 and "sign-nope" in se, "unknown op: exit 2, named", "rc=%d %s" % (rc, se))
    rc, so, se = bench("--op", "etcd-put", "--count", 1)
    h.check(rc == 2 and "etcd-put" in se and "etcd" in se, "etcd-put with --target mhsm: exit 2",
            "rc=%d %s" % (rc, se))
    rc, so, se = bench("--target", "etcd", "--op", "sign-es256", "--count", 1)
    h.check(rc == 2 and "sign-es256" in se, "an mhsm op with --target etcd: exit 2",
            "rc=%d %s" % (rc, se))
    rc, so, se = bench("--mix", "sign-es256:0", "--count", 1)
    h.check(rc == 2 and "weight" in se, "weight 0: exit 2", "rc=%d %s" % (rc, se))
    rc, so, se = bench("--op", "sign-es256", "--count", 1, "--duration", 1)
    h.check(rc == 2 and "exclude" in se, "--count with --duration: exit 2", "rc=%d %s" % (rc, se))
    rc, so, se = bench("--op", "sign-es256", "--streams", "x")
    h.check(rc == 2 and "--streams" in se, "bad number: exit 2", "rc=%d %s" % (rc, se))
    rc, so, se = bench("--op", "sign-es256", "--bogus", 1)
    h.check(rc == 2 and "--bogus" in se, "unknown option: exit 2", "rc=%d %s" % (rc, se))
    rc, so, se = bench("--op", "sign-es256", "--key-prefix", "a/b")
    h.check(rc == 2 and "--key-prefix" in se, "bad key prefix: exit 2", "rc=%d %s" % (rc, se))

with h.section("a principal without a role: PERMISSION_DENIED counted, exit 1"):
    out = os.path.join(h.tmp, "denied.json")
    rc, so, se = bench("--op", "sign-es256", "--count", 16, "--warmup", 0, "--connections", 2,
                       "--streams", 4, "--json", out, cert="operator")
    j = load(out)
    h.check(rc == 1, "nothing succeeded: exit 1", "rc=%d %s" % (rc, se[-300:]))
    if j is not None:
        check_shape(j, "denied run")
        h.check(j["ops"] == 0 and j["errors"] == 16
                and j["errors_by_status"] == {"PERMISSION_DENIED": 16},
                "every call counted as PERMISSION_DENIED", str(j.get("errors_by_status")))

with h.section("a node that is down: errors counted, exit 1, bounded"):
    node.stop()
    out = os.path.join(h.tmp, "down.json")
    rc, so, se = bench("--op", "sign-es256", "--duration", 1, "--warmup", 0, "--json", out,
                       "--quiet", timeout=60)
    j = load(out)
    h.check(rc == 1 and j is not None and j["ops"] == 0,
            "no server: the run ends, exit 1, nothing succeeded", "rc=%d %s" % (rc, se[-300:]))
    if j is not None:
        h.check(j["errors"] > 0 and set(j["errors_by_status"]) == {"UNAVAILABLE"},
                "no server: connection failures counted as UNAVAILABLE",
                str(j.get("errors_by_status")))

h.finish()
