"""test_bench_command: the benchmark command runs end to end and reports every figure.

Runs `bench/bench.py --quick` against this build (MH_BUILD_DIR), writing PERFORMANCE.md and
the raw JSON to the test's temp dir, and checks: exit 0, every row of the table carries a
number, the JSON parses and holds every stage, and the markdown contains the printed table.
Also drives p11-bench directly: bad arguments are usage errors (exit 2) and a wrong PIN is
a setup failure that names the PKCS#11 return value. Speed is never asserted.
"""

import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402

h = mhtest.Harness("test_bench_command")
bench_py = os.path.join(mhtest.SOURCE_DIR, "bench", "bench.py")
p11 = os.path.join(mhtest.BUILD_DIR, "p11-bench")
out_md = os.path.join(h.tmp, "out", "PERFORMANCE.md")
out_json = os.path.join(h.tmp, "out", "runs.json")

with h.section("p11-bench usage and setup errors"):
    h.check(os.access(p11, os.X_OK), "p11-bench built", p11)
    for args, what in (([], "no arguments"), (["--op", "sign-es512"], "unknown op"),
                       (["--module", "x", "--token-label", "t", "--pin", "1", "--op",
                         "sign-es256", "--threads", "0"], "zero threads"),
                       (["--module", "x", "--token-label", "t", "--pin", "1", "--op",
                         "sign-es256", "--duration", "abc"], "duration not a number")):
        rc, _, err = mhtest.run([p11] + args, timeout=60)
        h.check(rc == 2 and "usage" in err, "p11-bench %s: usage error (exit 2)" % what,
                "rc=%s err=%r" % (rc, err[-300:]))
    sd = os.path.join(h.tmp, "softhsm")
    os.makedirs(os.path.join(sd, "tokens"))
    conf = os.path.join(sd, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write("directories.tokendir = %s\nobjectstore.backend = file\n"
                % os.path.join(sd, "tokens"))
    env = dict(os.environ, SOFTHSM2_CONF=conf)
    rc, _, err = mhtest.run(["softhsm2-util", "--init-token", "--free", "--label", "t1", "--pin",
                             "1234", "--so-pin", "12345678"], env=env, timeout=60)
    h.check(rc == 0, "softhsm2 token initialised", err)
    module = next((m for m in ["/usr/lib/softhsm/libsofthsm2.so"] + sorted(
        glob.glob("/usr/lib/*/softhsm/libsofthsm2.so")) if os.path.exists(m)),
        "/usr/lib/softhsm/libsofthsm2.so")
    rc, _, err = mhtest.run([p11, "--module", module, "--token-label", "t1", "--pin", "9999",
                             "--op", "sign-es256", "--duration", "0.2"], env=env, timeout=60)
    h.check(rc == 1 and "C_Login" in err and "CKR_PIN_INCORRECT" in err,
            "wrong PIN: exit 1 naming C_Login and CKR_PIN_INCORRECT", "rc=%s err=%r" % (rc, err))
    rc, _, err = mhtest.run([p11, "--module", module, "--token-label", "nosuch", "--pin", "1234",
                             "--op", "sign-es256", "--duration", "0.2"], env=env, timeout=60)
    h.check(rc == 1 and "no token labelled" in err, "unknown token label: exit 1", err)
    rc, _, err = mhtest.run([p11, "--module", os.path.join(h.tmp, "none.so"), "--token-label",
                             "t1", "--pin", "1234", "--op", "sign-es256"], env=env, timeout=60)
    h.check(rc == 1 and "dlopen" in err, "missing module: exit 1 naming dlopen", err)
    rc, out, err = mhtest.run([p11, "--module", module, "--token-label", "t1", "--pin", "1234",
                               "--op", "sign-rs256-2048", "--threads", "2", "--duration", "0.5",
                               "--warmup", "0.1", "--json", "-", "--label", "L"], env=env,
                              timeout=120)
    try:
        doc = json.loads(out)
    except ValueError:
        doc = {}
    h.check(rc == 0 and doc.get("tool") == "p11-bench" and doc.get("target") == "softhsm2"
            and doc.get("in_flight") == 2 and doc.get("label") == "L"
            and doc.get("ops", 0) > 0 and doc.get("errors") == 0
            and "sign-rs256-2048" in doc.get("per_op", {})
            and all(k in doc.get("latency_us", {}) for k in ("p50", "p90", "p99", "max")),
            "p11-bench RS256 run: contract JSON on stdout, ops counted, no error",
            "rc=%s out=%r err=%r" % (rc, out[:500], err[-300:]))

with h.section("bench.py --quick"):
    env = dict(os.environ, MH_BUILD_DIR=mhtest.BUILD_DIR, MH_TEST_TMPDIR=h.tmp)
    p = subprocess.run(["/usr/bin/python3", bench_py, "--quick", "--build-dir", mhtest.BUILD_DIR,
                        "--out", out_md, "--json", out_json], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    text = p.stdout.decode(errors="replace")
    print("\n".join("    | " + ln for ln in text.splitlines()[-80:]), flush=True)
    h.check(p.returncode == 0, "bench.py --quick exits 0", "rc=%d" % p.returncode)
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]
    table = [r for r in rows if not r.startswith("| Measurement") and not r.startswith("| Target")]
    meas = [r for r in table if r.count("|") == 7]
    targ = [r for r in table if r.count("|") == 5]
    want = (["1 node " + op for op in ("sign-rs256-2048", "sign-es256", "verify-es256",
                                       "encrypt-a256gcm", "decrypt-a256gcm", "wrap-a256kw",
                                       "unwrap-a256kw", "get-key")]
            + ["3 nodes create-aes256 @%d" % n for n in (1, 16, 64)]
            + ["3 nodes update-attributes @%d" % n for n in (1, 16, 64)]
            + ["SoftHSM2 sign-rs256-2048", "SoftHSM2 sign-es256", "etcd put @1", "etcd put @64",
               "openssl rsa2048 sign", "openssl aes-256-gcm", "fsync"])
    for w in want:
        h.check(any(r.startswith("| " + w) for r in meas), "table row: %s" % w)
    no_number = [r for r in meas if not re.search(r"\|\s*[\d,]+(\.\d+)?\s*\|", r)]
    h.check(len(meas) >= 40 and not no_number, "every measurement row has a number",
            "%d rows; without a number: %s" % (len(meas), no_number[:5]))
    na = [r for r in meas if "n/a" in r]
    h.check(not na, "no n/a in the measurement rows", na[:5])
    h.check(len(targ) == 5 and all(re.search(r"\| (met|MISSED) \|$", r) for r in targ),
            "the five targets, each met or MISSED", targ)
    try:
        with open(out_json) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raw = {}
        h.fail("raw JSON parses", str(e))
    else:
        h.ok("raw JSON parses")
    runs = raw.get("runs", [])
    h.check(len(runs) >= 38 and all(r.get("tool") in ("mhsm-bench", "p11-bench") for r in runs),
            "raw JSON holds every run (mhsm-bench and p11-bench results)", len(runs))
    h.check(all(raw.get(k) for k in ("machine", "ceilings", "single", "cluster", "writes",
                                     "softhsm2", "etcd")) and raw.get("errors") == [],
            "raw JSON has every stage and no error", raw.get("errors"))
    try:
        md = open(out_md).read()
    except OSError as e:
        md = ""
        h.fail("PERFORMANCE.md written", str(e))
    h.check(all(r in md for r in rows) and "## Machine" in md and "## Method" in md,
            "PERFORMANCE.md holds the printed table, the method and the machine")
    left = subprocess.run(["pgrep", "-f", h.tmp], stdout=subprocess.PIPE).stdout.split()
    h.check(not left, "no process left running from the bench's directories", left)

h.finish()
