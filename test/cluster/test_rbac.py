"""Local RBAC on a three-node cluster (real mhsmd processes, real mutual TLS, the real
`mhsm` CLI; one client certificate per identity, spiffe://mhsm/<name>).

Before activation a non-administrator cannot download the security domain. The admin
activates and stays a bare Managed HSM Administrator (no key role). Then separation of
duties, each identity through a different node:
  - a Crypto User signs but cannot assign roles or purge;
  - a Crypto Officer purges and manages roles but cannot sign;
  - an Administrator manages roles and the security domain but cannot use keys;
  - a Crypto Auditor reads but cannot use;
  - a per-key assignment grants that key and no other;
  - operator and app certificates (no role) can neither read nor use keys;
  - a custom role with notDataActions excludes exactly those actions.
PERMISSION_DENIED names the missing action and says the same for an existing and a
non-existing key. A grant through node 2 works on nodes 1 and 3 and a revoke through
node 3 is refused on every node (asked on each, bounded waits). Built-in roles are
immutable, role names unique, an assigned custom role cannot be deleted, nor the last
administrator assignment; the configured limits (small here) hold; whoami.

Run: MH_BUILD_DIR=build /usr/bin/python3 test/cluster/test_rbac.py
"""

import json
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mhtest  # noqa: E402
from mhtest import b64u  # noqa: E402

P = "Microsoft.KeyVault/managedHsm/"
A_SIGN = P + "keys/sign/action"
A_VERIFY = P + "keys/verify/action"
A_READ = P + "keys/read/action"
A_CREATE = P + "keys/create"
A_DELETE = P + "keys/delete"
A_PURGE = P + "keys/deletedKeys/delete"
A_DELETED_READ = P + "keys/deletedKeys/read/action"
A_RA_WRITE = P + "roleAssignments/write/action"
A_RA_READ = P + "roleAssignments/read/action"
A_RD_WRITE = P + "roleDefinitions/write/action"
A_SD_READ = P + "securitydomain/download/read"
A_SD_DOWNLOAD = P + "securitydomain/download/action"
# Every data action (consensus/rbac.c's vocabulary): a custom role's "keys/*" expands
# to the ones under keys/.
ALL_ACTIONS = [P + a for a in (
    "keys/read/action", "keys/write/action", "keys/deletedKeys/read/action",
    "keys/deletedKeys/recover/action", "keys/backup/action", "keys/restore/action",
    "roleAssignments/delete/action", "roleAssignments/read/action",
    "roleAssignments/write/action", "roleDefinitions/read/action",
    "roleDefinitions/write/action", "roleDefinitions/delete/action", "keys/encrypt/action",
    "keys/decrypt/action", "keys/wrap/action", "keys/unwrap/action", "keys/sign/action",
    "keys/verify/action", "keys/create", "keys/delete", "keys/export/action",
    "keys/release/action", "keys/import/action", "keys/deletedKeys/delete",
    "securitydomain/download/action", "securitydomain/download/read",
    "securitydomain/upload/action", "securitydomain/upload/read",
    "securitydomain/transferkey/read", "backup/start/action", "restore/start/action",
    "backup/status/action", "restore/status/action", "rng/action", "keys/rotate/action",
    "keys/derive/action")]
BUILTINS = {
    "a290e904-7015-4bba-90c8-60543313cdb4": "Managed HSM Administrator",
    "515eb02d-2335-4d2d-92f2-b1cbdf9c3778": "Managed HSM Crypto Officer",
    "21dbd100-6940-42c2-9190-5d6cb909625b": "Managed HSM Crypto User",
    "4bd23610-cdcf-4971-bdee-bdc562cc28e4": "Managed HSM Policy Administrator",
    "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3": "Managed HSM Crypto Auditor",
    "33413926-3206-4cdd-b39a-83574fe37a17": "Managed HSM Crypto Service Encryption User",
    "21dbd100-6940-42c2-9190-5d6cb909625c": "Managed HSM Crypto Service Release User",
    "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8": "Managed HSM Backup User",
    "6efe6056-5259-49d2-8b3d-d3d73544b20b": "Managed HSM Restore",
}
CUSTOM = "Signless Key User"
PER_KEY_LIMIT = 2
CUSTOM_LIMIT = 3
HSM_LIMIT = 12
PROPAGATION_S = 20  # bound for a committed role change to reach every node (ASan)


def sp(name):
    return "spiffe://mhsm/" + name


h = mhtest.Harness("test_rbac")
cl = h.cluster(3, rbac={"max_assignments_per_key": PER_KEY_LIMIT,
                        "max_custom_roles": CUSTOM_LIMIT,
                        "max_assignments_hsm": HSM_LIMIT})
N = cl.nodes
st = {"assign": {}}  # what the steps made, for later steps


def cli(i, *args, cert="admin", quiet=False):
    return N[i].cli(*args, cert=cert, quiet=quiet)


def sign(i, cert, name, digest=None):
    return cli(i, "key", "sign", "--name", name, "--algorithm", "ES256", "--digest",
               b64u(digest or os.urandom(32)), cert=cert)


def denied(r, action, what):
    """PERMISSION_DENIED whose message names |action|."""
    return h.expect_err(r, "PERMISSION_DENIED", what, contains=re.escape(action))


def same_denial(i, cert, args_for, what):
    """The refusal for an existing key (k2) and a key that never existed read the same
    (up to the key name itself)."""
    a = cli(i, *args_for("k2"), cert=cert)
    b = cli(i, *args_for("never-existed-7"), cert=cert)
    ma = a.err.replace("k2", "<name>")
    mb = b.err.replace("never-existed-7", "<name>")
    h.check(a.status == "PERMISSION_DENIED" and b.status == "PERMISSION_DENIED" and ma == mb,
            what, "existing: %s / missing: %s" % (a.describe(), b.describe()))


def assign(i, role, who, scope="/", cert="admin"):
    r = cli(i, "role", "assignment", "create", "--role", role, "--assignee", who, "--scope",
            scope, cert=cert)
    if r.rc == 0 and isinstance(r.json, dict):
        st["assign"][(role, who, scope)] = r.json.get("name")
    return r


def assignments(i, *extra, cert="admin"):
    r = cli(i, "role", "assignment", "list", *extra, cert=cert, quiet=True)
    return r.json if r.rc == 0 and isinstance(r.json, list) else None


def wait_assignments_everywhere(names, present=True, timeout=PROPAGATION_S):
    """Bounded: every node lists (or no longer lists) every assignment in |names|."""
    for i in range(3):
        cl.wait_until(i, ("role", "assignment", "list"),
                      lambda r: r.rc == 0 and isinstance(r.json, list)
                      and (set(names) <= {a.get("name") for a in r.json}) == present
                      and (present or not set(names) & {a.get("name") for a in r.json}),
                      timeout=timeout, what="assignments %s %s" % (
                          names, "listed" if present else "gone"))


def eventually(i, args, pred, cert, timeout=PROPAGATION_S):
    deadline = time.monotonic() + timeout
    while True:
        r = cli(i, *args, cert=cert, quiet=True)
        if pred(r) or time.monotonic() >= deadline:
            h.trace(r)
            return r
        time.sleep(0.1)


def whoami(i, cert):
    r = cli(i, "whoami", cert=cert)
    return r.json if r.rc == 0 and isinstance(r.json, dict) else {}


try:
    with h.section("three nodes; before activation only an administrator downloads"):
        cl.start_all(wait=True)
        cl.leader(timeout=30)
        certs = [os.path.join(h.certs, "sd%d.pem" % k) for k in (1, 2, 3)]
        for who in ("app", "operator", "user2"):
            sd = os.path.join(h.tmp, "sd-%s.json" % who)
            r = cli(0, "security-domain", "download", "--sd-wrapping-keys", *certs,
                    "--sd-quorum", 2, "--security-domain-file", sd, cert=who)
            denied(r, A_SD_DOWNLOAD, "before activation: %s cannot download the security "
                   "domain" % who)
            h.check(not os.path.exists(sd), "no SD file written for %s" % who)
        r = cli(1, "security-domain", "show")
        h.check(r.rc == 0 and (r.json or {}).get("activationStatus") == "NotActivated",
                "still NotActivated", r.describe())

    with h.section("activation by the administrator (no key roles for it)"):
        h.expect_ok(cl.activate(via=1, grant_admin_keys=False), "admin activates through node 2")
        la = assignments(0, "--assignee", mhtest.ADMIN)
        h.check(la is not None and [(a.get("roleName"), a.get("scope")) for a in la]
                == [(mhtest.ROLE_ADMIN, "/")],
                "activation gave the admin exactly Managed HSM Administrator at /", la)
        if la:
            a = la[0]
            h.check(a.get("type") == "Microsoft.Authorization/roleAssignments"
                    and a.get("principalId") == mhtest.ADMIN
                    and a.get("roleDefinitionId", "").endswith(
                        "a290e904-7015-4bba-90c8-60543313cdb4")
                    and a.get("id") == "/providers/Microsoft.Authorization/roleAssignments/"
                    + a.get("name", ""), "assignment JSON: id, type, principalId, "
                    "roleDefinitionId", a)
            st["admin_assignment"] = a.get("name")

    with h.section("role definitions: the nine built-ins"):
        r = cli(2, "role", "definition", "list")
        defs = r.json if r.rc == 0 and isinstance(r.json, list) else []
        got = {d.get("name"): d.get("roleName") for d in defs if d.get("roleType")
               == "AKVBuiltInRole"}
        h.check(got == BUILTINS, "definition list: Azure's nine built-ins, names and ids",
                r.describe())
        r = cli(0, "role", "definition", "show", "--role-name", "Managed HSM Crypto User")
        d = r.json or {}
        acts = set((d.get("permissions") or [{}])[0].get("dataActions") or [])
        h.check(r.rc == 0 and d.get("name") == "21dbd100-6940-42c2-9190-5d6cb909625b"
                and A_SIGN in acts and A_PURGE not in acts and A_RA_WRITE not in acts
                and d.get("assignableScopes") == ["/"],
                "show Crypto User: sign, no purge, no role writes, scope /", r.describe())

    with h.section("setup: Crypto User for user2 (/) and keyuser (/keys/k1), Officer for "
                   "officer; keys k1, k2, kdel"):
        for i, role, who, scope in ((0, mhtest.ROLE_USER, sp("user2"), "/"),
                                    (1, mhtest.ROLE_OFFICER, sp("officer"), "/"),
                                    (2, mhtest.ROLE_USER, sp("keyuser"), "/keys/k1")):
            r = assign(i, role, who, scope)
            j = h.expect_ok(r, "admin assigns %s to %s at %s (node %d)" % (role, who, scope,
                                                                          i + 1)) or {}
            h.check(j.get("roleName") == role and j.get("principalId") == who
                    and j.get("scope") == scope, "assignment JSON names role, principal, "
                    "scope", j)
        wait_assignments_everywhere([v for v in st["assign"].values() if v])
        # user2 makes the keys.
        for k in ("k1", "k2", "kdel"):
            h.expect_ok(cli(0, "key", "create", "--name", k, "--kty", "EC-HSM", "--curve",
                            "P-256", cert="user2"), "Crypto User creates %s" % k)
        for i in range(3):
            r = eventually(i, ("key", "show", "--name", "kdel"), lambda x: x.rc == 0, "user2")
            h.expect_ok(r, "node %d shows the new keys to user2" % (i + 1))

    with h.section("Crypto User: signs, cannot assign roles or purge"):
        dg = os.urandom(32)
        r = sign(1, "user2", "k1", dg)
        h.expect_ok(r, "Crypto User signs with k1 (node 2)")
        st["sig"] = (dg, (r.json or {}).get("signature"))
        r = assign(2, mhtest.ROLE_AUDITOR, sp("app"), cert="user2")
        denied(r, A_RA_WRITE, "Crypto User cannot assign a role")
        r = cli(0, "role", "definition", "create", "--role-definition", json.dumps(
            {"roleName": "user2 role", "dataActions": [A_SIGN]}), cert="user2")
        denied(r, A_RD_WRITE, "Crypto User cannot create a role definition")
        h.expect_ok(cli(2, "key", "delete", "--name", "kdel", cert="user2"),
                    "Crypto User deletes kdel (soft)")
        r = cli(2, "key", "purge", "--name", "kdel", cert="user2")
        denied(r, A_PURGE, "Crypto User cannot purge")

    with h.section("Crypto Officer: purges and manages roles, cannot sign"):
        r = eventually(0, ("key", "show-deleted", "--name", "kdel"), lambda x: x.rc == 0,
                       "officer")
        h.expect_ok(r, "Crypto Officer reads the deleted key")
        h.expect_ok(cli(0, "key", "purge", "--name", "kdel", cert="officer"),
                    "Crypto Officer purges kdel")
        r = assign(0, mhtest.ROLE_AUDITOR, sp("auditor"), cert="officer")
        h.expect_ok(r, "Crypto Officer assigns Crypto Auditor to auditor")
        denied(sign(1, "officer", "k1"), A_SIGN, "Crypto Officer cannot sign")
        denied(cli(2, "key", "create", "--name", "off1", "--kty", "EC-HSM", cert="officer"),
               A_CREATE, "Crypto Officer cannot create keys")
        same_denial(2, "officer", lambda k: ("key", "sign", "--name", k, "--algorithm",
                                             "ES256", "--digest", b64u(b"\x01" * 32)),
                    "Officer's sign refusal is the same for an existing and a missing key")

    with h.section("Administrator: manages roles and the security domain, cannot use keys"):
        r = cli(2, "security-domain", "show")
        h.check(r.rc == 0 and (r.json or {}).get("activationStatus") == "Active",
                "Administrator reads the security domain status", r.describe())
        r = cli(0, "security-domain", "download", "--sd-wrapping-keys", *certs, "--sd-quorum",
                2, "--security-domain-file", os.path.join(h.tmp, "sd-again.json"))
        h.expect_err(r, "ALREADY_EXISTS", "a second download by the Administrator: allowed, "
                     "already active")
        denied(cli(1, "security-domain", "show", cert="user2"), A_SD_READ,
               "Crypto User cannot read the security domain status")
        denied(sign(0, "admin", "k1"), A_SIGN, "Administrator cannot sign")
        denied(cli(1, "key", "show", "--name", "k1"), A_READ, "Administrator cannot read a key")
        denied(cli(2, "key", "list"), A_READ, "Administrator cannot list keys")
        denied(cli(0, "key", "create", "--name", "adm1", "--kty", "EC-HSM"), A_CREATE,
               "Administrator cannot create keys")

    with h.section("Crypto Auditor: reads, cannot use"):
        wait_assignments_everywhere([st["assign"].get((mhtest.ROLE_AUDITOR, sp("auditor"),
                                                       "/"))])
        h.expect_ok(cli(1, "key", "show", "--name", "k1", cert="auditor"),
                    "Auditor shows k1")
        r = cli(2, "key", "list", cert="auditor")
        h.check(r.rc == 0 and set(mhtest.listed_kids(r) or {}) >= {"k1", "k2"},
                "Auditor lists the keys", r.describe())
        h.expect_ok(cli(0, "key", "list-deleted", cert="auditor"), "Auditor lists deleted keys")
        h.expect_ok(cli(0, "role", "assignment", "list", cert="auditor"),
                    "Auditor lists role assignments")
        denied(sign(0, "auditor", "k1"), A_SIGN, "Auditor cannot sign")
        dg, sig = st.get("sig", (b"", ""))
        denied(cli(1, "key", "verify", "--name", "k1", "--algorithm", "ES256", "--digest",
                   b64u(dg), "--signature", sig or "AA", cert="auditor"), A_VERIFY,
               "Auditor cannot verify (a use)")
        denied(cli(2, "key", "delete", "--name", "k2", cert="auditor"), A_DELETE,
               "Auditor cannot delete")
        denied(assign(2, mhtest.ROLE_USER, sp("auditor"), cert="auditor"), A_RA_WRITE,
               "Auditor cannot grant itself a role")

    with h.section("per-key assignment: k1 and no other key"):
        h.expect_ok(cli(0, "key", "show", "--name", "k1", cert="keyuser"), "keyuser shows k1")
        h.expect_ok(sign(1, "keyuser", "k1"), "keyuser signs with k1")
        denied(sign(2, "keyuser", "k2"), A_SIGN, "keyuser cannot sign with k2")
        denied(cli(0, "key", "show", "--name", "k2", cert="keyuser"), A_READ,
               "keyuser cannot read k2")
        denied(cli(1, "key", "list", cert="keyuser"), A_READ,
               "keyuser cannot list keys (HSM scope)")
        denied(cli(2, "key", "create", "--name", "k9", "--kty", "EC-HSM", cert="keyuser"),
               A_CREATE, "keyuser cannot create another key")
        same_denial(0, "keyuser", lambda k: ("key", "show", "--name", k),
                    "keyuser's read refusal is the same for an existing and a missing key")

    with h.section("operator and app certificates: no read, no use"):
        for who in ("operator", "app"):
            denied(cli(0, "key", "list", cert=who), A_READ, "%s cannot list keys" % who)
            denied(cli(1, "key", "show", "--name", "k1", cert=who), A_READ,
                   "%s cannot read k1" % who)
            denied(sign(2, who, "k1"), A_SIGN, "%s cannot sign" % who)
            same_denial(1, who, lambda k: ("key", "show", "--name", k),
                        "%s: same refusal for an existing and a missing key" % who)
        h.expect_ok(cli(0, "cluster", "status", cert="operator"),
                    "operator keeps the control plane")

    with h.section("custom role with notDataActions excludes exactly those"):
        body = {"roleName": CUSTOM, "description": "keys without sign and purge",
                "dataActions": [P + "keys/*"], "notDataActions": [A_SIGN, A_PURGE]}
        r = cli(1, "role", "definition", "create", "--role-definition", json.dumps(body))
        d = h.expect_ok(r, "Administrator creates the custom role") or {}
        perm = (d.get("permissions") or [{}])[0]
        h.check(d.get("roleType") == "CustomRole" and d.get("roleName") == CUSTOM
                and sorted(perm.get("notDataActions") or []) == sorted([A_SIGN, A_PURGE])
                and re.match(r"^[0-9a-f-]{36}$", d.get("name", "")),
                "custom role JSON: CustomRole, GUID name, notDataActions", d)
        st["custom_id"] = d.get("name")
        # Assigned by name through another node: wait (bounded) until it knows the role.
        cl.wait_until(2, ("role", "definition", "show", "--role-name", CUSTOM),
                      lambda x: x.rc == 0, what="the custom role on node 3")
        r = assign(2, CUSTOM, sp("custom"))
        h.expect_ok(r, "assign the custom role to custom (by its name)")
        wait_assignments_everywhere([st["assign"].get((CUSTOM, sp("custom"), "/"))])
        want = sorted(a for a in ALL_ACTIONS if a.startswith(P + "keys/")
                      and a not in (A_SIGN, A_PURGE))
        for i in range(3):
            w = whoami(i, "custom")
            h.check(sorted(w.get("dataActions") or []) == want,
                    "node %d: whoami of custom: every keys/ action but sign and purge"
                    % (i + 1), w)
        h.expect_ok(cli(0, "key", "create", "--name", "ck1", "--kty", "EC-HSM", "--curve",
                        "P-256", cert="custom"), "custom creates a key")
        h.expect_ok(cli(1, "key", "show", "--name", "k1", cert="custom"), "custom reads k1")
        dg, sig = st.get("sig", (b"", ""))
        r = cli(2, "key", "verify", "--name", "k1", "--algorithm", "ES256", "--digest",
                b64u(dg), "--signature", sig or "AA", cert="custom")
        h.check(r.rc == 0 and (r.json or {}).get("isValid") is True,
                "custom verifies user2's signature", r.describe())
        denied(sign(0, "custom", "k1"), A_SIGN, "custom cannot sign (notDataActions)")
        h.expect_ok(cli(1, "key", "delete", "--name", "ck1", cert="custom"),
                    "custom deletes its key")
        r = eventually(2, ("key", "show-deleted", "--name", "ck1"), lambda x: x.rc == 0,
                       "custom")
        h.expect_ok(r, "custom reads the deleted key")
        denied(cli(2, "key", "purge", "--name", "ck1", cert="custom"), A_PURGE,
               "custom cannot purge (notDataActions)")
        denied(assign(0, mhtest.ROLE_USER, sp("custom"), cert="custom"), A_RA_WRITE,
               "custom cannot assign roles (keys/* only)")

    with h.section("a grant through node 2 works on nodes 1 and 3; a revoke through node 3 "
                   "is refused on every node"):
        denied(sign(0, "app", "k2"), A_SIGN, "before: app cannot sign with k2")
        r = assign(1, mhtest.ROLE_USER, sp("app"), scope="/keys/k2")
        h.expect_ok(r, "grant app Crypto User on /keys/k2 through node 2")
        name = (r.json or {}).get("name")
        for i in (0, 2):
            r = eventually(i, ("key", "sign", "--name", "k2", "--algorithm", "ES256",
                               "--digest", b64u(os.urandom(32))), lambda x: x.rc == 0, "app")
            h.expect_ok(r, "node %d: app signs with k2 (asked on that node)" % (i + 1))
            w = whoami(i, "app")
            h.check(w.get("principalId") == sp("app") and w.get("keyScopes") == ["k2"]
                    and int(w.get("nodeId") or 0) == i + 1,
                    "node %d: whoami of app: keyScopes [k2], nodeId %d" % (i + 1, i + 1), w)
        r = cli(2, "role", "assignment", "delete", "--name", name or "none")
        j = h.expect_ok(r, "revoke through node 3")
        st["assign"].pop((mhtest.ROLE_USER, sp("app"), "/keys/k2"), None)
        h.check(isinstance(j, list) and [a.get("name") for a in j] == [name],
                "delete prints the deleted assignment", j)
        for i in (0, 1, 2):
            r = eventually(i, ("key", "sign", "--name", "k2", "--algorithm", "ES256",
                               "--digest", b64u(os.urandom(32))),
                           lambda x: x.status == "PERMISSION_DENIED", "app")
            denied(r, A_SIGN, "node %d: app refused after the revoke (asked on that node)"
                   % (i + 1))

    with h.section("built-ins immutable, names unique, assigned custom role kept"):
        for sel in (("--name", "21dbd100-6940-42c2-9190-5d6cb909625b"),
                    ("--role-name", mhtest.ROLE_ADMIN)):
            r = cli(0, "role", "definition", "delete", *sel)
            h.expect_err(r, "FAILED_PRECONDITION", "built-in role delete refused (%s)" % sel[0])
        r = cli(1, "role", "definition", "update", "--role-definition", json.dumps(
            {"name": "21dbd100-6940-42c2-9190-5d6cb909625b", "roleName":
             "Managed HSM Crypto User", "description": "more", "dataActions": [P + "*"]}))
        h.expect_err(r, "FAILED_PRECONDITION", "built-in role update refused")
        r = cli(2, "role", "definition", "show", "--name", "21dbd100-6940-42c2-9190-5d6cb909625b")
        acts = set(((r.json or {}).get("permissions") or [{}])[0].get("dataActions") or [])
        h.check(r.rc == 0 and A_PURGE not in acts and A_SIGN in acts,
                "Crypto User unchanged", r.describe())
        for nm in (mhtest.ROLE_USER, CUSTOM, CUSTOM.upper()):
            r = cli(0, "role", "definition", "create", "--role-definition", json.dumps(
                {"roleName": nm, "dataActions": [A_READ]}))
            h.expect_err(r, "ALREADY_EXISTS", "a new role named %r refused (names unique)" % nm)
        r = cli(1, "role", "definition", "delete", "--name", st.get("custom_id") or "none")
        h.expect_err(r, "FAILED_PRECONDITION", "deleting the assigned custom role refused")
        r = cli(2, "role", "definition", "show", "--role-name", CUSTOM)
        h.expect_ok(r, "the custom role is still there")
        r = cli(0, "role", "definition", "update", "--role-definition", json.dumps(
            {"name": st.get("custom_id"), "roleName": CUSTOM, "description": "updated",
             "dataActions": [P + "keys/*"], "notDataActions": [A_SIGN, A_PURGE]}))
        h.check(r.rc == 0 and (r.json or {}).get("description") == "updated",
                "a custom role can be updated", r.describe())

    with h.section("limits: %d assignments per key, %d custom roles, %d at HSM scope"
                   % (PER_KEY_LIMIT, CUSTOM_LIMIT, HSM_LIMIT)):
        made = []
        for k in range(PER_KEY_LIMIT):
            r = assign(k % 3, mhtest.ROLE_AUDITOR, sp("fill-k%d" % k), scope="/keys/k2")
            h.expect_ok(r, "per-key assignment %d of %d" % (k + 1, PER_KEY_LIMIT))
            made.append((r.json or {}).get("name"))
        r = assign(2, mhtest.ROLE_AUDITOR, sp("fill-kx"), scope="/keys/k2")
        h.expect_err(r, "RESOURCE_EXHAUSTED", "one more on /keys/k2 refused")
        h.expect_ok(assign(0, mhtest.ROLE_AUDITOR, sp("fill-kx"), scope="/keys/k1"),
                    "the limit is per key: /keys/k1 still takes one (with keyuser's: 2)")
        roles = []
        for k in range(CUSTOM_LIMIT - 1):
            r = cli(k % 3, "role", "definition", "create", "--role-definition", json.dumps(
                {"roleName": "extra %d" % k, "dataActions": [A_READ]}))
            h.expect_ok(r, "custom role %d of %d" % (k + 2, CUSTOM_LIMIT))
            roles.append((k % 3, (r.json or {}).get("name")))
        r = cli(2, "role", "definition", "create", "--role-definition", json.dumps(
            {"roleName": "one too many", "dataActions": [A_READ]}))
        h.expect_err(r, "RESOURCE_EXHAUSTED", "custom role %d refused" % (CUSTOM_LIMIT + 1))
        for i, rid in roles:  # through the node that made it (read-your-writes)
            h.expect_ok(cli(i, "role", "definition", "delete", "--name", rid or "none"),
                        "an unassigned custom role is deleted")
        wait_assignments_everywhere([v for v in st["assign"].values() if v])
        at_hsm = [a for a in assignments(1) or [] if a.get("scope") in ("/", "/keys")]
        n0 = len(at_hsm)
        created, refused = 0, None
        for k in range(HSM_LIMIT + 2):  # bounded
            r = assign(k % 3, mhtest.ROLE_AUDITOR, sp("fill-h%d" % k),
                       scope="/keys" if k % 2 else "/")
            if r.rc != 0:
                refused = r
                break
            created += 1
        h.check(n0 > 0 and created == HSM_LIMIT - n0 and refused is not None
                and refused.status == "RESOURCE_EXHAUSTED",
                "HSM scope ('/' and '/keys' together) takes exactly %d assignments" % HSM_LIMIT,
                "had %d, created %d more, then %s" % (n0, created,
                                                     refused.describe() if refused else None))

    with h.section("whoami for several identities"):
        w = whoami(0, "admin")
        acts = set(w.get("dataActions") or [])
        h.check(w.get("principalId") == mhtest.ADMIN and int(w.get("nodeId") or 0) == 1
                and A_RA_WRITE in acts and A_SD_DOWNLOAD in acts and A_SIGN not in acts
                and A_READ not in acts, "admin: role and domain actions, no key action", w)
        w = whoami(1, "user2")
        acts = set(w.get("dataActions") or [])
        h.check(w.get("principalId") == sp("user2") and A_SIGN in acts and A_PURGE not in acts
                and A_RA_WRITE not in acts, "user2: sign, no purge, no role writes", w)
        w = whoami(2, "officer")
        acts = set(w.get("dataActions") or [])
        h.check(A_PURGE in acts and A_RA_WRITE in acts and A_SIGN not in acts,
                "officer: purge and role writes, no sign", w)
        w = whoami(0, "auditor")
        acts = set(w.get("dataActions") or [])
        h.check(A_READ in acts and A_DELETED_READ in acts and A_SIGN not in acts
                and A_RA_READ in acts, "auditor: reads only", w)
        w = whoami(1, "keyuser")
        h.check(w.get("principalId") == sp("keyuser") and A_SIGN not in (
            w.get("dataActions") or []) and w.get("keyScopes") == ["k1"],
            "keyuser: nothing at /, keyScopes [k1]", w)
        for who in ("operator", "app"):
            w = whoami(2, who)
            h.check(w.get("principalId") == sp(who) and not w.get("dataActions")
                    and not w.get("keyScopes"), "%s: no data action at all" % who, w)
        r = cli(0, "whoami", cert="node2")
        h.expect_err(r, "PERMISSION_DENIED", "a node certificate is refused even whoami")
    with h.section("the last assignment that can manage roles cannot be deleted"):
        # The rule (FSM): removing an HSM-scope grant of roleAssignments/write is refused
        # when no other HSM-scope assignment grants it. The officer's role grants it too:
        # remove that first, so the admin's Administrator assignment is the last one.
        off = st["assign"].get((mhtest.ROLE_OFFICER, sp("officer"), "/"))
        h.expect_ok(cli(0, "role", "assignment", "delete", "--name", off or "none"),
                    "the officer's assignment is deleted (the admin still manages roles)")
        holders = [a for a in assignments(0) or [] if a.get("scope") in ("/", "/keys")
                   and a.get("roleName") in (mhtest.ROLE_ADMIN, mhtest.ROLE_OFFICER,
                                             "Managed HSM Policy Administrator")]
        h.check([a.get("name") for a in holders] == [st.get("admin_assignment")],
                "only the admin's Administrator assignment can still manage roles", holders)
        r = cli(1, "role", "assignment", "delete", "--name", st.get("admin_assignment") or "x")
        h.expect_err(r, "FAILED_PRECONDITION", "deleting the last Administrator assignment "
                     "refused")
        r = cli(2, "role", "assignment", "delete", "--role", mhtest.ROLE_ADMIN, "--assignee",
                mhtest.ADMIN, "--scope", "/")
        h.expect_err(r, "FAILED_PRECONDITION", "... also by role, assignee and scope")
        la = assignments(0, "--assignee", mhtest.ADMIN)
        h.check(la and [a.get("name") for a in la] == [st.get("admin_assignment")],
                "the admin keeps its assignment", la)
        h.expect_ok(cli(0, "role", "assignment", "list"), "and still manages roles")
except Exception as e:  # noqa: BLE001 -- outside a section: still a failure
    import traceback
    traceback.print_exc(file=sys.stdout)
    h.fail("unexpected exception", "%s: %s" % (type(e).__name__, e))
finally:
    h.finish()
