"""The AccessControl API itself, through python3-grpcio on one node (the CLI-driven
separation-of-duties tests on three nodes are in test_rbac.py): input validation with
precise INVALID_ARGUMENT messages, built-in listing and filtering, full ids and GUIDs,
assignment paging, scope and principal filters, key-scoped role management (a Crypto
Officer at /keys/k1 manages that key's assignments and nothing else, and gets the same
denial for an assignment that exists elsewhere as for one that does not exist), WhoAmI,
node certificates refused, in-use and built-in definitions kept. Written by the RBAC
service helper as its smoke test; adopted as a regression test."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mhtest  # noqa: E402
import grpc  # noqa: E402

h = mhtest.Harness("test_rbac_api")
node = h.node("node1")
node.start()
node.activate(grant_admin_keys=False)
m = h.proto_modules(("rbac",))
R = m["rbac"]
certs = h.certs

def channel(cert):
    kw = {"root_certificates": mhtest.read_bytes(os.path.join(certs, "ca.pem")),
          "private_key": mhtest.read_bytes(os.path.join(certs, cert + ".key")),
          "certificate_chain": mhtest.read_bytes(os.path.join(certs, cert + ".pem"))}
    return grpc.secure_channel(node.endpoint, grpc.ssl_channel_credentials(**kw))

resp = {"ListRoleDefinitions": R.ListRoleDefinitionsResponse, "GetRoleDefinition": R.RoleDefinition,
        "SetRoleDefinition": R.RoleDefinition, "DeleteRoleDefinition": R.RoleDefinition,
        "ListRoleAssignments": R.ListRoleAssignmentsResponse, "GetRoleAssignment": R.RoleAssignment,
        "CreateRoleAssignment": R.RoleAssignment, "DeleteRoleAssignment": R.RoleAssignment,
        "WhoAmI": R.WhoAmIResponse}

class Api:
    def __init__(self, cert):
        ch = channel(cert)
        self.c = {k: ch.unary_unary("/mhsm.v1.AccessControl/" + k, request_serializer=lambda x: x.SerializeToString(),
                                    response_deserializer=v.FromString) for k, v in resp.items()}
    def __getattr__(self, k):
        return lambda req: self.c[k](req, timeout=30)

admin, keyuser, app, node1 = Api("admin"), Api("keyuser"), Api("app"), Api("node1")

def err(what, code, fn, contains=None):
    try:
        fn()
    except grpc.RpcError as e:
        ok = e.code() == code and (contains is None or contains.lower() in (e.details() or "").lower())
        return h.check(ok, what, "%s %r" % (e.code(), e.details()))
    return h.fail(what, "succeeded")

P = "Microsoft.KeyVault/managedHsm/"
defs = admin.ListRoleDefinitions(R.ListRoleDefinitionsRequest())
h.check(len(defs.items) == 9 and all(d.role_type == "AKVBuiltInRole" for d in defs.items), "9 built-ins")
h.check(defs.items[0].id == "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/" + defs.items[0].name, "def id")
f = admin.ListRoleDefinitions(R.ListRoleDefinitionsRequest(role_name="managed hsm crypto user"))
h.check(len(f.items) == 1 and f.items[0].name == "21dbd100-6940-42c2-9190-5d6cb909625b", "filter by role name")
err("defs at /keys", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.ListRoleDefinitions(R.ListRoleDefinitionsRequest(scope="/keys")))
def perm(**kw): return R.Permission(**kw)
base = dict(role_name="r1", permissions=[perm(data_actions=[P + "keys/read/action"])])
err("actions non-empty", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="r1", permissions=[perm(actions=["x"], data_actions=[P + "keys/read/action"])])), "data actions only")
err("bad data action named", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="r1", permissions=[perm(data_actions=[P + "keys/read/action", P + "keys/frob"])])), "keys/frob")
err("bad not data action", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="r1", permissions=[perm(data_actions=[P + "keys/*"], not_data_actions=["*x*"])])), "not_data_actions")
err("two blocks", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="r1", permissions=[perm(data_actions=[P + "keys/*"])] * 2)))
err("no blocks", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="r1")))
err("assignable /keys", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(assignable_scopes=["/keys"], **base)))
err("name not guid", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(name="abc", **base)))
err("empty role name", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="", permissions=base["permissions"])))
err("role name 513", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.SetRoleDefinition(R.SetRoleDefinitionRequest(role_name="x" * 513, permissions=base["permissions"])))
d = admin.SetRoleDefinition(R.SetRoleDefinitionRequest(assignable_scopes=["/"], **base))
h.check(d.role_type == "CustomRole" and len(d.name) == 36 and d.name[14] == "4", "custom created, guid v4")
g = admin.GetRoleDefinition(R.RoleDefinitionRequest(name=d.id))
h.check(g.name == d.name and list(g.permissions[0].data_actions) == [P + "keys/read/action"], "get by full id")
err("get unknown def", grpc.StatusCode.NOT_FOUND, lambda: admin.GetRoleDefinition(R.RoleDefinitionRequest(name="00000000-0000-4000-8000-000000000000")))
# assignments: pagination
names = []
for i in range(5):
    a = admin.CreateRoleAssignment(R.CreateRoleAssignmentRequest(scope="/keys/k1", role_definition_id="R1", principal_id="spiffe://mhsm/p%d" % i))
    names.append(a.name)
h.check(a.role_name == "r1" and a.id == "/keys/k1/providers/Microsoft.Authorization/roleAssignments/" + a.name and a.scope == "/keys/k1", "assignment fields")
seen, tok, pages = [], "", 0
while True:
    r = admin.ListRoleAssignments(R.ListRoleAssignmentsRequest(scope="/keys/k1", max_results=2, page_token=tok))
    seen += [x.name for x in r.items]; pages += 1
    tok = r.next_page_token
    if not tok or pages > 10: break
h.check(sorted(seen) == sorted(names) and seen == sorted(seen) and pages == 3, "paged 5 by 2", (pages, seen))
err("bad token", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.ListRoleAssignments(R.ListRoleAssignmentsRequest(page_token="zzzz")))
err("max_results 101", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.ListRoleAssignments(R.ListRoleAssignmentsRequest(max_results=101)))
allr = admin.ListRoleAssignments(R.ListRoleAssignmentsRequest())
h.check(len(allr.items) == 6, "all: 5 + admin", len(allr.items))
at = admin.ListRoleAssignments(R.ListRoleAssignmentsRequest(scope="/keys", at_scope_only=True))
h.check(len(at.items) == 0, "at /keys only: none")
root = admin.ListRoleAssignments(R.ListRoleAssignmentsRequest(scope="/", at_scope_only=True))
h.check(len(root.items) == 1 and root.items[0].role_name == "Managed HSM Administrator", "at / only: admin")
byp = admin.ListRoleAssignments(R.ListRoleAssignmentsRequest(principal_id="spiffe://mhsm/p3"))
h.check(len(byp.items) == 1 and byp.items[0].name == names[3], "by principal")
err("bad scope", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.CreateRoleAssignment(R.CreateRoleAssignmentRequest(scope="/foo", role_definition_id="r1", principal_id="x")))
err("bad principal", grpc.StatusCode.INVALID_ARGUMENT, lambda: admin.CreateRoleAssignment(R.CreateRoleAssignmentRequest(role_definition_id="r1", principal_id="a b")))
err("unknown role", grpc.StatusCode.NOT_FOUND, lambda: admin.CreateRoleAssignment(R.CreateRoleAssignmentRequest(role_definition_id="nope", principal_id="x")))
err("in use", grpc.StatusCode.FAILED_PRECONDITION, lambda: admin.DeleteRoleDefinition(R.RoleDefinitionRequest(name=d.name)))
# key-scoped role management: keyuser gets Crypto Officer at /keys/k1 only
ko = admin.CreateRoleAssignment(R.CreateRoleAssignmentRequest(scope="/keys/k1", role_definition_id="515eb02d-2335-4d2d-92f2-b1cbdf9c3778", principal_id="spiffe://mhsm/keyuser"))
kl = keyuser.ListRoleAssignments(R.ListRoleAssignmentsRequest(scope="/keys/k1"))
h.check(len(kl.items) == 6, "keyuser lists /keys/k1")
err("keyuser lists /", grpc.StatusCode.PERMISSION_DENIED, lambda: keyuser.ListRoleAssignments(R.ListRoleAssignmentsRequest()))
k2 = admin.CreateRoleAssignment(R.CreateRoleAssignmentRequest(scope="/keys/k2", role_definition_id="r1", principal_id="spiffe://mhsm/q"))
msgs = []
for nm in (k2.name, "00000000-0000-4000-8000-00000000abcd"):
    try:
        keyuser.DeleteRoleAssignment(R.RoleAssignmentRequest(name=nm)); msgs.append("ok")
    except grpc.RpcError as e:
        msgs.append((e.code(), e.details()))
h.check(msgs[0] == msgs[1] and msgs[0][0] == grpc.StatusCode.PERMISSION_DENIED, "same denial existing/missing", msgs)
dd = keyuser.DeleteRoleAssignment(R.RoleAssignmentRequest(name="/keys/k1/providers/Microsoft.Authorization/roleAssignments/" + names[0]))
h.check(dd.name == names[0], "keyuser deletes at its key by full id")
err("deleted get", grpc.StatusCode.NOT_FOUND, lambda: admin.GetRoleAssignment(R.RoleAssignmentRequest(name=names[0])))
err("admin delete missing", grpc.StatusCode.NOT_FOUND, lambda: admin.DeleteRoleAssignment(R.RoleAssignmentRequest(name=names[0])))
w = keyuser.WhoAmI(R.WhoAmIRequest())
h.check(w.principal_id == "spiffe://mhsm/keyuser" and list(w.key_scopes) == ["k1"] and len(w.data_actions) == 0, "whoami keyuser", w)
wa = admin.WhoAmI(R.WhoAmIRequest())
h.check(P + "roleAssignments/write/action" in wa.data_actions and list(wa.data_actions) == sorted(wa.data_actions), "whoami admin sorted")
err("node cert whoami", grpc.StatusCode.PERMISSION_DENIED, lambda: node1.WhoAmI(R.WhoAmIRequest()))
err("app list", grpc.StatusCode.PERMISSION_DENIED, lambda: app.ListRoleDefinitions(R.ListRoleDefinitionsRequest()), "roleDefinitions/read/action at scope /")
# delete custom role after unassigning
for nm in names[1:] + [k2.name]:
    admin.DeleteRoleAssignment(R.RoleAssignmentRequest(name=nm))
dr = admin.DeleteRoleDefinition(R.RoleDefinitionRequest(name=d.name))
h.check(dr.name == d.name and dr.role_name == "r1", "custom role deleted, answered")
err("builtin delete", grpc.StatusCode.FAILED_PRECONDITION, lambda: admin.DeleteRoleDefinition(R.RoleDefinitionRequest(name="21dbd100-6940-42c2-9190-5d6cb909625b")))
h.finish()
