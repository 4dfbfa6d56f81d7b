"""Rejected peers: a running, activated three-node cluster; then a fourth mhsmd (raft
id 4, join = true) with (a) a client certificate as its node certificate, (c) node 2's
certificate while configured as raft id 4, (b) a node-4 certificate from a foreign CA
that the operator tries to add. None of them may become a voter; the cluster keeps
serving. Then raw TLS at a node's raft port with Python's ssl module: a client
certificate claiming id 2, no client certificate, and node 2's certificate claiming
id 4 are each closed without effect (a valid node certificate with its own id, the
control, gets an answer).

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_cluster_peers.py
"""

import os
import re
import socket
import ssl
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
from mhtest import b64u  # noqa: E402

h = mhtest.Harness("test_cluster_peers")
cl = h.cluster(3, election_timeout_ms=1000, heartbeat_ms=100)
N = cl.nodes
st = {}
START_WAIT_S = 30  # bound for "exits or becomes ready"
ADD_TIMEOUT_S = 20  # --timeout of `mhsm cluster add` for a node that can never catch up
CERT_PROBLEM = r"spiffe://mhsm/node/|raft id|names (no|another) node|not a node certificate"


def members(s):
    return {int(m["id"]): m.get("role") for m in (s or {}).get("members", [])}


def serves_everywhere(what):
    for i in range(3):
        cl.wait_serving(i, timeout=60)
        dg = os.urandom(32)
        r = N[i].cli("key", "sign", "--name", "k1", "--algorithm", "ES256", "--digest", b64u(dg))
        h.check(r.rc == 0 and r.json.get("kid") == st["kid"],
                "%s: node%d still signs with k1" % (what, i + 1), r.describe())
    s = cl.status(cl.leader())
    h.check(s is not None and sorted(k for k, v in members(s).items() if v == "voter")
            == [1, 2, 3], "%s: voters are still exactly 1, 2, 3" % what, members(s))


def start_outcome(node):
    """Starts |node| and waits (bounded) until it exits or logs ready. Returns
    "exited" or "running"."""
    node.start(wait=False)
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            return "exited"
        if re.search(r"comp=node.*\bready\b", node.log_text(since_start=True)):
            return "running"
        time.sleep(0.1)
    return "running"


def try_add_and_check(node, what, expect_leader_log=False):
    """The operator adds raft id 4 at |node|'s address; node 4 must not become a
    voter; any membership entry for 4 is removed afterwards."""
    li = cl.leader()
    leader = N[li]
    log_mark = len(leader.log_text())
    r = leader.cli("--timeout", ADD_TIMEOUT_S, "cluster", "add", "--id", 4, "--address",
                   node.raft_address, cert="operator", timeout=ADD_TIMEOUT_S + 30)
    h.say("%s: cluster add -> rc %s %s" % (what, r.rc, (r.err.strip() or r.out)[:300]))
    h.check(r.rc != 0, "%s: cluster add --id 4 is not reported as a success" % what,
            r.describe())
    sts = [cl.status(i) for i in range(3)]
    h.check(all(sts) and all(members(s).get(4) != "voter" for s in sts),
            "%s: no node lists 4 as a voter" % what, [members(s) for s in sts])
    if expect_leader_log:
        deadline = time.monotonic() + 15
        pat = re.compile(r"(refus|reject|drop|denied|verif|untrusted|unknown ca|certificate)",
                         re.IGNORECASE)
        hit = []
        while time.monotonic() < deadline:
            hit = [ln for ln in leader.log_text()[log_mark:].splitlines()
                   if pat.search(ln) and ("peer" in ln or "4" in ln)]
            if hit:
                break
            time.sleep(0.2)
        h.check(bool(hit), "%s: the leader's log mentions the refused peer" % what,
                "no matching line since the add in %s" % leader.log_path)
        if hit:
            h.say("leader log: %s" % hit[0][:300])
    if any(4 in members(s) for s in sts if s):
        deadline = time.monotonic() + 40
        while True:  # a change still in progress answers FAILED_PRECONDITION (busy)
            r = cl.nodes[cl.leader()].cli("cluster", "remove", "--id", 4, cert="operator")
            if r.rc == 0 or r.status != "FAILED_PRECONDITION" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        h.expect_ok(r, "%s: cluster remove --id 4 (it was listed as %s)" %
                    (what, [members(s).get(4) for s in sts]))
        s = cl.status(cl.leader())
        h.check(s is not None and 4 not in members(s), "%s: 4 no longer listed" % what,
                members(s))


def rejected_node(what, cert, try_add):
    node = cl.new_node(4, join=True, cert=cert)
    out = start_outcome(node)
    if out == "exited":
        rc = node.proc.returncode
        log = node.log_text(since_start=True)
        h.check(rc != 0, "%s: mhsmd refuses to start (exit %s)" % (what, rc))
        h.check(re.search(CERT_PROBLEM, log, re.IGNORECASE) is not None,
                "%s: the startup error names the certificate problem" % what, log[-600:])
        h.say("%s: %s" % (what, (log.strip().splitlines() or ["(empty log)"])[-1][:300]))
    else:
        h.say("%s: mhsmd started; it must never join" % what)
        if try_add:
            try_add_and_check(node, what)
        else:
            sts = [cl.status(i) for i in range(3)]
            h.check(all(4 not in members(s) for s in sts if s), "%s: never joins" % what)
        node.kill9()
    serves_everywhere("after " + what)
    return out


with h.section("three nodes, activated, one key"):
    cl.start_all()
    cl.leader()
    h.expect_ok(cl.activate(via=0), "activate")
    r = N[1].cli("key", "create", "--name", "k1", "--kty", "EC-HSM", "--curve", "P-256")
    h.expect_ok(r, "create k1")
    st["kid"] = (r.json or {}).get("key", {}).get("kid")
    for i in (0, 2):  # other nodes learn the commit with the next heartbeat
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if N[i].cli("key", "show", "--name", "k1", quiet=True).rc == 0:
                break
            time.sleep(0.1)
    serves_everywhere("start")

if h.failed:  # no point in the rest without a serving, activated cluster
    h.say("setup failed: the remaining sections are skipped")
    h.finish()

with h.section("(a) a client certificate as node 4's certificate"):
    rejected_node("(a) app.pem as node cert", "app", try_add=True)

with h.section("(c) node2.pem in a process configured as raft id 4"):
    rejected_node("(c) node2.pem as raft id 4", "node2", try_add=True)

with h.section("(b) a node-4 certificate from a foreign CA"):
    node = cl.new_node(4, join=True, cert="foreign-node")
    out = start_outcome(node)
    h.say("(b) foreign-node: mhsmd %s" % out)
    if out == "exited":
        log = node.log_text(since_start=True)
        h.say("(b) it refused to start: %s" %
              (log.strip().splitlines() or ["(empty log)"])[-1][:300])
    try_add_and_check(node, "(b) foreign-CA node 4", expect_leader_log=(out == "running"))
    node.kill9()
    serves_everywhere("after (b)")

# ------------------------------------------------------------- raw TLS probes

def tls_ctx(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(os.path.join(h.certs, "ca.pem"))
    if cert:
        ctx.load_cert_chain(os.path.join(h.certs, cert + ".pem"),
                            os.path.join(h.certs, cert + ".key"))
    return ctx


def hello(kind, raft_id):
    return b"MHP1" + struct.pack(">I", kind) + struct.pack(">Q", raft_id)


def domain_fetch_frame(seq):
    """A peer request frame: DomainFetch with a domain id no cluster has."""
    bogus = b"\x00" * 16
    inner = b"\x0a" + bytes([len(bogus)]) + bogus  # DomainFetch.domain_id = 1
    msg = b"\x1a" + bytes([len(inner)]) + inner  # PeerRequest.domain_fetch = 3
    return struct.pack(">I", len(msg)) + struct.pack(">Q", seq) + msg


def probe(port, cert, hello_bytes, payload=b"", wait_s=10):
    """Connects with TLS to the raft port, sends hello and payload, and reads until
    close or |wait_s|. Returns (handshake_ok, data, outcome) where outcome is
    "closed" (EOF, reset or TLS alert), "open" (still open after wait_s) or
    "handshake: ..."."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait_s)
    try:
        try:
            t = tls_ctx(cert).wrap_socket(s, server_hostname="127.0.0.1")
        except (ssl.SSLError, OSError) as e:
            return False, b"", "handshake: %s" % e
        data = b""
        try:
            t.sendall(hello_bytes + payload)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                t.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = t.recv(4096)
                if not chunk:
                    return True, data, "closed"
                data += chunk
                if payload and len(data) >= 12:
                    return True, data, "answered"
            return True, data, "open"
        except socket.timeout:
            return True, data, "open"
        except (ssl.SSLError, OSError) as e:
            return True, data, "closed (%s)" % e
    finally:
        s.close()


with h.section("raw TLS at node 2's raft port"):
    port = N[1].raft_port
    ok, data, out = probe(port, "node1", hello(2, 1), domain_fetch_frame(7))
    h.say("control: node1 cert, hello id 1, DomainFetch -> %s, %d bytes" % (out, len(data)))
    h.check(ok and out == "answered" and len(data) >= 12 and
            struct.unpack(">Q", data[4:12])[0] == 7,
            "control: node1's certificate with its own id gets an answer to its request "
            "(sequence 7)", (out, data[:32]))

    for what, cert, hb in (("app cert claiming id 2", "app", hello(2, 2)),
                           ("app cert claiming id 2 (raft)", "app", hello(1, 2)),
                           ("operator cert claiming id 3", "operator", hello(2, 3)),
                           ("node2 cert claiming id 4", "node2", hello(2, 4)),
                           ("node3 cert claiming id 4 (raft)", "node3", hello(1, 4)),
                           ("node2 cert claiming its own acceptor's id 2", "node2",
                            hello(2, 2)),
                           ("node1 cert with a bad magic", "node1",
                            b"MHP2" + hello(2, 1)[4:]),
                           ("node1 cert with an unknown kind", "node1", hello(9, 1))):
        ok, data, out = probe(port, cert, hb, domain_fetch_frame(1))
        h.check(out.startswith("closed") or out.startswith("handshake"),
                "%s: closed without effect (%s)" % (what, out), (ok, data[:32], out))
        h.check(not data, "%s: no byte back" % what, data[:32])
    ok, data, out = probe(port, None, hello(2, 2), domain_fetch_frame(1))
    h.check(out.startswith("handshake") or (out.startswith("closed") and not data),
            "no client certificate: handshake refused (%s)" % out, (ok, data[:32], out))

    fctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    fctx.check_hostname = False
    fctx.verify_mode = ssl.CERT_NONE
    fctx.load_cert_chain(os.path.join(h.certs, "foreign-node.pem"),
                         os.path.join(h.certs, "foreign-node.key"))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    got, why = b"", ""
    try:
        t = fctx.wrap_socket(s)
        t.sendall(hello(2, 4) + domain_fetch_frame(1))
        got = t.recv(4096)
        why = "closed" if not got else "answered"
    except (ssl.SSLError, OSError) as e:
        why = "refused: %s" % e
    finally:
        s.close()
    h.check(not got and not why.startswith("answered"),
            "foreign-CA node 4 certificate at the raft port: refused (%s)" % why, got[:32])
    h.check(N[1].running(), "node2 survived the probes")
    serves_everywhere("after the raw TLS probes")
    r = N[0].cli("key", "create", "--name", "k2", "--kty", "oct-HSM", "--size", "256")
    h.expect_ok(r, "a write after the probes")
    lists = [N[i].cli("key", "list") for i in range(3)]
    h.check(all(r.rc == 0 for r in lists), "every node lists after the probes")

h.finish()
