/* svc_rbac: mhsm.v1.AccessControl: role definitions, role assignments, WhoAmI.
 *
 * Every handler passes mh_node_gate and then mh_authz_check before it reads or
 * changes anything (the check needs the scope, so a malformed scope is refused
 * first). Reads run on the loop thread (short LMDB read transactions). Changes are
 * Commands proposed to the cluster; the FSM enforces the rules (built-ins are
 * immutable, names unique, limits, no lockout) deterministically, and the reply is
 * built from the store after the command applied, like node/svc_keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/b64.h"
#include "common/buf.h"
#include "common/log.h"
#include "crypto/rand.h"
#include "mhsm/v1/rbac.pb-c.h"
#include "node/authz.h"
#include "node/node.h"
#include "node/status.h"

#define DEF_TYPE          "Microsoft.Authorization/roleDefinitions"
#define RA_TYPE           "Microsoft.Authorization/roleAssignments"
#define RA_ID_INFIX       "providers/Microsoft.Authorization/roleAssignments/"
#define ROLE_TYPE_BUILTIN "AKVBuiltInRole"
#define ROLE_TYPE_CUSTOM  "CustomRole"
#define RA_PAGE_MAX       100
#define RA_ID_MAX         (MH_RBAC_SCOPE_MAX + 1 + sizeof RA_ID_INFIX + MH_RBAC_GUID_LEN)
#define DEF_ID_MAX        (sizeof MH_RBAC_DEF_ID_PREFIX + MH_RBAC_GUID_LEN)
#define MSG_DATA_ONLY                                                                              \
    "Managed HSM roles use data actions only: actions and not_actions must be empty"
#define MSG_REQUEST_ID   "request_id must be 1..64 printable characters"
#define MSG_DEF_SCOPE    "role definitions exist only at scope \"/\""
#define MSG_ASSIGN_SCOPE "invalid scope: use \"/\", \"/keys\" or \"/keys/<key name>\""
#define MSG_ASSIGN_NAME  "invalid role assignment name: a GUID (or the assignment's full id)"
#define MSG_DEF_NAME     "invalid role definition name: a GUID (or the definition's full id)"
#define MSG_PRINCIPAL    "invalid principal_id: 1..256 printable ASCII characters without spaces"
#define MSG_PAGE_TOKEN   "invalid page_token"

static size_t count_strs(const char *const *v)
{
    size_t n = 0;
    while (v[n] != NULL)
        n++;
    return n;
}

static bool def_scope_ok(struct mh_rpc_call *call, const char *scope)
{
    if (scope[0] == '\0' || strcmp(scope, "/") == 0)
        return true;
    mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_DEF_SCOPE);
    return false;
}

/* Accepts a bare GUID or an assignment's full id ("<scope>/providers/...
 * roleAssignments/<guid>") and writes the lower-case GUID. */
static int parse_assignment_name(const char *s, char out[MH_RBAC_GUID_LEN + 1])
{
    const char *slash = strrchr(s, '/');
    if (slash != NULL) {
        size_t infix = strlen(RA_ID_INFIX);
        size_t head = (size_t)(slash + 1 - s);
        if (head < infix || strncasecmp(slash + 1 - infix, RA_ID_INFIX, infix) != 0)
            return MH_EINVAL;
        s = slash + 1;
    }
    return mh_rbac_guid_normalize(s, out);
}

/* ---- responses ---------------------------------------------------------------- */

/* A role definition as the API shows it, with its own storage. */
struct def_view {
    Mhsm__V1__RoleDefinition d;
    Mhsm__V1__Permission p;
    Mhsm__V1__Permission *pp[1];
    char *scopes[1];
    char id[DEF_ID_MAX];
};

static void view_common(struct def_view *v, const char *guid)
{
    mhsm__v1__role_definition__init(&v->d);
    mhsm__v1__permission__init(&v->p);
    snprintf(v->id, sizeof v->id, "%s%s", MH_RBAC_DEF_ID_PREFIX, guid);
    v->d.id = v->id;
    v->d.type = (char *)DEF_TYPE;
    v->pp[0] = &v->p;
    v->d.n_permissions = 1;
    v->d.permissions = v->pp;
    v->scopes[0] = (char *)"/";
    v->d.n_assignable_scopes = 1;
    v->d.assignable_scopes = v->scopes;
}

static void view_builtin(struct def_view *v, const struct mh_rbac_builtin *b)
{
    view_common(v, b->id);
    v->d.name = (char *)b->id;
    v->d.role_name = (char *)b->name;
    v->d.description = (char *)b->description;
    v->d.role_type = (char *)ROLE_TYPE_BUILTIN;
    v->p.n_data_actions = count_strs(b->data_actions);
    v->p.data_actions = (char **)b->data_actions;
}

/* |r| must outlive the view (its strings are borrowed). */
static void view_custom(struct def_view *v, const Mhsm__Internal__RoleDefinitionRecord *r)
{
    view_common(v, r->id);
    v->d.name = r->id;
    v->d.role_name = r->role_name;
    v->d.description = r->description;
    v->d.role_type = (char *)ROLE_TYPE_CUSTOM;
    v->p.n_data_actions = r->n_data_actions;
    v->p.data_actions = r->data_actions;
    v->p.n_not_data_actions = r->n_not_data_actions;
    v->p.not_data_actions = r->not_data_actions;
}

/* The role named by |guid|'s role name (built-in or custom), "" when unknown. */
static int role_name_of(struct mh_node *n, const char *guid, char *out, size_t cap)
{
    out[0] = '\0';
    const struct mh_rbac_builtin *b = mh_rbac_builtin_by_id(guid);
    if (b != NULL) {
        snprintf(out, cap, "%s", b->name);
        return 0;
    }
    Mhsm__Internal__RoleDefinitionRecord *r = NULL;
    int rv = mh_store_get_role_definition(n->store, guid, &r);
    if (rv == MH_ENOTFOUND)
        return 0;
    if (rv < 0)
        return rv;
    snprintf(out, cap, "%s", r->role_name);
    mh_store_free(r);
    return 0;
}

/* A role assignment as the API shows it, with its own storage. */
struct ra_view {
    Mhsm__V1__RoleAssignment a;
    char id[RA_ID_MAX];
    char def_id[DEF_ID_MAX];
    char role_name[MH_RBAC_ROLE_NAME_MAX + 1];
};

/* |r| must outlive the view. */
static int view_assignment(struct mh_node *n, struct ra_view *v,
                           const Mhsm__Internal__RoleAssignmentRecord *r)
{
    mhsm__v1__role_assignment__init(&v->a);
    size_t sl = strlen(r->scope);
    bool slash_end = sl > 0 && r->scope[sl - 1] == '/';
    snprintf(v->id, sizeof v->id, "%s%s%s%s", r->scope, slash_end ? "" : "/", RA_ID_INFIX, r->name);
    snprintf(v->def_id, sizeof v->def_id, "%s%s", MH_RBAC_DEF_ID_PREFIX, r->role_id);
    v->a.id = v->id;
    v->a.name = r->name;
    v->a.type = (char *)RA_TYPE;
    v->a.scope = r->scope;
    v->a.role_definition_id = v->def_id;
    v->a.principal_id = r->principal_id;
    v->a.role_name = v->role_name;
    return role_name_of(n, r->role_id, v->role_name, sizeof v->role_name);
}

static void reply_assignment(struct mh_node *n, struct mh_rpc_call *call,
                             const Mhsm__Internal__RoleAssignmentRecord *r)
{
    struct ra_view v;
    int rv = view_assignment(n, &v, r);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "reading the role definition");
        return;
    }
    mh_rpc_reply(call, &v.a.base);
}

static void fail_def(struct mh_rpc_call *call, int rv, const char *guid)
{
    char what[120];
    snprintf(what, sizeof what, "role definition '%s'", guid);
    mh_rpc_fail_err(call, rv, what);
}

static void fail_assignment(struct mh_rpc_call *call, int rv, const char *guid)
{
    char what[120];
    snprintf(what, sizeof what, "role assignment '%s'", guid);
    mh_rpc_fail_err(call, rv, what);
}

/* ---- writes ------------------------------------------------------------------ */

enum op_kind { OP_PUT_DEF, OP_DELETE_DEF, OP_PUT_RA, OP_DELETE_RA };

struct rbac_op {
    struct mh_proposal prop;
    struct mh_node *n;
    struct mh_rpc_call *call;
    enum op_kind kind;
    char guid[MH_RBAC_GUID_LEN + 1];
    char scope[MH_RBAC_SCOPE_MAX + 1]; /* put assignment: for the limit message */
    /* delete: what was deleted, read before proposing (the answer) */
    Mhsm__Internal__RoleDefinitionRecord *old_def;
    Mhsm__Internal__RoleAssignmentRecord *old_ra;
};

static void op_free(struct rbac_op *op)
{
    mh_store_free(op->old_def);
    mh_store_free(op->old_ra);
    free(op);
}

static void op_failed(struct rbac_op *op, int rc)
{
    struct mh_node *n = op->n;
    char what[200];
    switch (op->kind) {
    case OP_PUT_DEF:
        if (rc == MH_ELIMIT) {
            snprintf(what, sizeof what, "custom role definitions (at most %u)",
                     n->cfg->max_custom_roles);
            mh_rpc_fail_err(op->call, rc, what);
        } else if (rc == MH_EEXIST) {
            mh_rpc_fail_err(op->call, rc, "a role definition with this role_name");
        } else {
            fail_def(op->call, rc, op->guid);
        }
        break;
    case OP_PUT_RA:
        if (rc == MH_ELIMIT) {
            bool hsm = mh_rbac_scope_is_hsm(op->scope);
            snprintf(what, sizeof what, "role assignments at %s (at most %u)",
                     hsm ? "the HSM scope (\"/\" and \"/keys\")" : op->scope,
                     hsm ? n->cfg->max_assignments_hsm : n->cfg->max_assignments_per_key);
            mh_rpc_fail_err(op->call, rc, what);
        } else if (rc == MH_ENOTFOUND) {
            mh_rpc_fail_err(op->call, rc, "the role definition");
        } else if (rc == MH_EEXIST) {
            snprintf(what, sizeof what,
                     "role assignment '%s' (with other contents), or this role for this "
                     "principal at this scope",
                     op->guid);
            mh_rpc_fail_err(op->call, rc, what);
        } else {
            fail_assignment(op->call, rc, op->guid);
        }
        break;
    case OP_DELETE_DEF:
        fail_def(op->call, rc, op->guid);
        break;
    case OP_DELETE_RA:
    default:
        fail_assignment(op->call, rc, op->guid);
        break;
    }
}

static void op_committed(struct mh_proposal *p, int rc, const struct mh_fsm_result *res)
{
    struct rbac_op *op = p->data;
    struct mh_node *n = op->n;
    if (rc == 0)
        rc = res->rc;
    if (rc < 0) {
        op_failed(op, rc);
        op_free(op);
        return;
    }
    static const char *const verbs[] = {"role definition set", "role definition deleted",
                                        "role assignment created", "role assignment deleted"};
    MH_INFO("rbac", "call=%llu principal=%s %s name=%s",
            (unsigned long long)mh_rpc_call_id(op->call), mh_rpc_call_principal(op->call),
            verbs[op->kind], op->guid);
    switch (op->kind) {
    case OP_PUT_DEF: {
        Mhsm__Internal__RoleDefinitionRecord *r = NULL;
        rc = mh_store_get_role_definition(n->store, op->guid, &r);
        if (rc < 0) {
            fail_def(op->call, rc, op->guid);
            break;
        }
        struct def_view v;
        view_custom(&v, r);
        mh_rpc_reply(op->call, &v.d.base);
        mh_store_free(r);
        break;
    }
    case OP_PUT_RA: {
        Mhsm__Internal__RoleAssignmentRecord *r = NULL;
        rc = mh_store_get_role_assignment(n->store, op->guid, &r);
        if (rc < 0) {
            fail_assignment(op->call, rc, op->guid);
            break;
        }
        reply_assignment(n, op->call, r);
        mh_store_free(r);
        break;
    }
    case OP_DELETE_DEF: {
        struct def_view v;
        view_custom(&v, op->old_def);
        mh_rpc_reply(op->call, &v.d.base);
        break;
    }
    case OP_DELETE_RA:
    default:
        reply_assignment(n, op->call, op->old_ra);
        break;
    }
    op_free(op);
}

static struct rbac_op *op_new(struct mh_node *n, struct mh_rpc_call *call, enum op_kind kind,
                              const char *guid)
{
    struct rbac_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        return NULL;
    }
    op->n = n;
    op->call = call;
    op->kind = kind;
    snprintf(op->guid, sizeof op->guid, "%s", guid);
    op->prop.data = op;
    return op;
}

/* Fills the command's envelope and proposes it; on failure finishes the call and
 * frees |op|. */
static void op_propose(struct rbac_op *op, Mhsm__Internal__Command *cmd, const char *client_rid)
{
    char rid[65];
    if (mh_node_request_id(client_rid, rid) < 0) {
        mh_rpc_fail(op->call, MH_GRPC_INVALID_ARGUMENT, MSG_REQUEST_ID);
        op_free(op);
        return;
    }
    mh_rpc_call_note_request_id(op->call, rid);
    cmd->format = 1;
    cmd->request_id = rid;
    cmd->time = mh_node_now();
    int rv = mh_cluster_propose(op->n->cluster, cmd, &op->prop, op_committed);
    if (rv < 0) {
        mh_rpc_fail_err(op->call, rv, "proposing the change");
        op_free(op);
    }
}

/* ---- role definitions -------------------------------------------------------- */

static int cmp_def_name(const void *a, const void *b)
{
    const Mhsm__Internal__RoleDefinitionRecord *x =
        *(Mhsm__Internal__RoleDefinitionRecord *const *)a;
    const Mhsm__Internal__RoleDefinitionRecord *y =
        *(Mhsm__Internal__RoleDefinitionRecord *const *)b;
    int c = strcasecmp(x->role_name, y->role_name);
    return c != 0 ? c : strcmp(x->id, y->id);
}

static void handle_list_defs(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__ListRoleDefinitionsRequest *req =
        (const Mhsm__V1__ListRoleDefinitionsRequest *)m;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_RD_READ, NULL) ||
        !def_scope_ok(call, req->scope))
        return;
    size_t n_builtin = 0, n_custom = 0, count = 0;
    const struct mh_rbac_builtin *builtins = mh_rbac_builtins(&n_builtin);
    Mhsm__Internal__RoleDefinitionRecord **custom = NULL;
    int rv = mh_store_list_role_definitions(n->store, &custom, &n_custom);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "listing role definitions");
        return;
    }
    if (n_custom > 1)
        qsort(custom, n_custom, sizeof *custom, cmp_def_name);
    size_t total = n_builtin + n_custom;
    struct def_view *views = calloc(total, sizeof *views);
    Mhsm__V1__RoleDefinition **ptrs = calloc(total, sizeof *ptrs);
    if (views == NULL || ptrs == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        goto out;
    }
    const char *filter = req->role_name;
    for (size_t i = 0; i < n_builtin; i++) {
        if (filter[0] != '\0' && strcasecmp(filter, builtins[i].name) != 0)
            continue;
        view_builtin(&views[count], &builtins[i]);
        ptrs[count] = &views[count].d;
        count++;
    }
    for (size_t i = 0; i < n_custom; i++) {
        if (filter[0] != '\0' && strcasecmp(filter, custom[i]->role_name) != 0)
            continue;
        view_custom(&views[count], custom[i]);
        ptrs[count] = &views[count].d;
        count++;
    }
    Mhsm__V1__ListRoleDefinitionsResponse resp = MHSM__V1__LIST_ROLE_DEFINITIONS_RESPONSE__INIT;
    resp.n_items = count;
    resp.items = ptrs;
    mh_rpc_reply(call, &resp.base);
out:
    free(views);
    free(ptrs);
    mh_store_records_free(custom, n_custom);
}

static void handle_get_def(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__RoleDefinitionRequest *req = (const Mhsm__V1__RoleDefinitionRequest *)m;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_RD_READ, NULL) ||
        !def_scope_ok(call, req->scope))
        return;
    char guid[MH_RBAC_GUID_LEN + 1];
    if (mh_rbac_parse_definition_id(req->name, guid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_DEF_NAME);
        return;
    }
    struct def_view v;
    const struct mh_rbac_builtin *b = mh_rbac_builtin_by_id(guid);
    if (b != NULL) {
        view_builtin(&v, b);
        mh_rpc_reply(call, &v.d.base);
        return;
    }
    Mhsm__Internal__RoleDefinitionRecord *r = NULL;
    int rv = mh_store_get_role_definition(n->store, guid, &r);
    if (rv < 0) {
        fail_def(call, rv, guid);
        return;
    }
    view_custom(&v, r);
    mh_rpc_reply(call, &v.d.base);
    mh_store_free(r);
}

/* Counts characters (UTF-8 sequences) and refuses control characters. */
static bool text_ok(const char *s, size_t min, size_t max)
{
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return false;
        if ((*p & 0xc0) != 0x80)
            chars++;
        if (chars > max)
            return false;
    }
    return chars >= min;
}

static bool check_patterns(struct mh_rpc_call *call, char *const *v, size_t n, const char *field)
{
    char msg[400];
    if (n > MH_RBAC_MAX_ACTIONS) {
        snprintf(msg, sizeof msg, "%s: at most %d patterns", field, MH_RBAC_MAX_ACTIONS);
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, msg);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t mask;
        if (mh_rbac_pattern_mask(v[i], &mask) < 0) {
            snprintf(msg, sizeof msg,
                     "%s: '%.256s' is not a Managed HSM data action (a full name such as "
                     "'" MH_RBAC_PREFIX "keys/sign/action', or a prefix ending in '*')",
                     field, v[i]);
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, msg);
            return false;
        }
    }
    return true;
}

static bool check_definition(struct mh_rpc_call *call,
                             const Mhsm__V1__SetRoleDefinitionRequest *req)
{
    if (!text_ok(req->role_name, 1, MH_RBAC_ROLE_NAME_MAX)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "role_name must be 1..512 characters without control characters");
        return false;
    }
    if (!text_ok(req->description, 0, MH_RBAC_DESC_MAX)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "description must be at most 1024 characters without control characters");
        return false;
    }
    if (req->n_assignable_scopes > 1 ||
        (req->n_assignable_scopes == 1 && strcmp(req->assignable_scopes[0], "/") != 0)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "assignable_scopes must be empty or [\"/\"]: Managed HSM roles are assignable "
                    "at \"/\" only");
        return false;
    }
    if (req->n_permissions != 1) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "permissions must hold exactly one block");
        return false;
    }
    const Mhsm__V1__Permission *p = req->permissions[0];
    if (p->n_actions != 0 || p->n_not_actions != 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_DATA_ONLY);
        return false;
    }
    if (p->n_data_actions == 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "permissions: data_actions must name at least one data action");
        return false;
    }
    return check_patterns(call, p->data_actions, p->n_data_actions, "data_actions") &&
           check_patterns(call, p->not_data_actions, p->n_not_data_actions, "not_data_actions");
}

static void handle_set_def(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__SetRoleDefinitionRequest *req = (const Mhsm__V1__SetRoleDefinitionRequest *)m;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_RD_WRITE, NULL) ||
        !def_scope_ok(call, req->scope))
        return;
    char guid[MH_RBAC_GUID_LEN + 1];
    if (req->name[0] == '\0') {
        int rv = mh_rand_guid(guid);
        if (rv < 0) {
            mh_rpc_fail_err(call, rv, "making a role definition name");
            return;
        }
    } else if (mh_rbac_parse_definition_id(req->name, guid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_DEF_NAME);
        return;
    }
    if (!check_definition(call, req))
        return;
    if (mh_rbac_builtin_by_id(guid) != NULL) {
        fail_def(call, MH_EBUILTIN, guid);
        return;
    }
    if (mh_rbac_builtin_by_name(req->role_name) != NULL) {
        mh_rpc_fail(call, MH_GRPC_ALREADY_EXISTS,
                    "role_name: a built-in role has this name; role names are unique");
        return;
    }
    struct rbac_op *op = op_new(n, call, OP_PUT_DEF, guid);
    if (op == NULL)
        return;
    const Mhsm__V1__Permission *p = req->permissions[0];
    Mhsm__Internal__RoleDefinitionRecord rec = MHSM__INTERNAL__ROLE_DEFINITION_RECORD__INIT;
    rec.id = op->guid;
    rec.role_name = req->role_name;
    rec.description = req->description;
    rec.n_data_actions = p->n_data_actions;
    rec.data_actions = p->data_actions;
    rec.n_not_data_actions = p->n_not_data_actions;
    rec.not_data_actions = p->not_data_actions;
    rec.created = rec.updated = mh_node_now(); /* on replace the FSM keeps the first created */
    Mhsm__Internal__PutRoleDefinition put = MHSM__INTERNAL__PUT_ROLE_DEFINITION__INIT;
    put.record = &rec;
    put.max_custom_roles = n->cfg->max_custom_roles;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION;
    cmd.put_role_definition = &put;
    op_propose(op, &cmd, req->request_id);
}

static void handle_delete_def(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__RoleDefinitionRequest *req = (const Mhsm__V1__RoleDefinitionRequest *)m;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_RD_DELETE, NULL) ||
        !def_scope_ok(call, req->scope))
        return;
    char guid[MH_RBAC_GUID_LEN + 1];
    if (mh_rbac_parse_definition_id(req->name, guid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_DEF_NAME);
        return;
    }
    if (mh_rbac_builtin_by_id(guid) != NULL) {
        fail_def(call, MH_EBUILTIN, guid);
        return;
    }
    struct rbac_op *op = op_new(n, call, OP_DELETE_DEF, guid);
    if (op == NULL)
        return;
    int rv = mh_store_get_role_definition(n->store, guid, &op->old_def);
    if (rv < 0) {
        fail_def(call, rv, guid);
        op_free(op);
        return;
    }
    Mhsm__Internal__DeleteRoleDefinition del = MHSM__INTERNAL__DELETE_ROLE_DEFINITION__INIT;
    del.id = op->guid;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_DEFINITION;
    cmd.delete_role_definition = &del;
    op_propose(op, &cmd, req->request_id);
}

/* ---- role assignments -------------------------------------------------------- */

/* Page tokens: base64url of "a:<last assignment name>". */
static int decode_token(const char *token, char after[MH_RBAC_GUID_LEN + 1])
{
    after[0] = '\0';
    if (token[0] == '\0')
        return 0;
    if (strlen(token) > 64)
        return MH_EINVAL;
    struct mh_buf b = {0};
    int rv = mh_b64url_decode(token, strlen(token), &b);
    if (rv == 0 && (b.len != 2 + MH_RBAC_GUID_LEN || b.data[0] != 'a' || b.data[1] != ':'))
        rv = MH_EINVAL;
    if (rv == 0) {
        char tmp[MH_RBAC_GUID_LEN + 1];
        memcpy(tmp, b.data + 2, MH_RBAC_GUID_LEN);
        tmp[MH_RBAC_GUID_LEN] = '\0';
        rv = mh_rbac_guid_normalize(tmp, after);
    }
    mh_buf_free(&b);
    return rv;
}

static int encode_token(const char *last, struct mh_buf *out)
{
    struct mh_buf raw = {0};
    int rv = mh_buf_append_str(&raw, "a:");
    if (rv == 0)
        rv = mh_buf_append_str(&raw, last);
    if (rv == 0)
        rv = mh_b64url_encode(raw.data, raw.len, out); /* NUL-terminated */
    mh_buf_free(&raw);
    return rv;
}

/* Checks |scope| and points |*key| at its key name (NULL for the HSM scopes). */
static bool assign_scope_ok(struct mh_rpc_call *call, const char *scope, const char **key)
{
    if (mh_rbac_parse_scope(scope, key) == 0)
        return true;
    mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_ASSIGN_SCOPE);
    return false;
}

/* Scope "" or "/": every assignment ("/" with at_scope_only: those at "/"); "/keys":
 * every assignment (the whole HSM), with at_scope_only those at exactly "/keys";
 * "/keys/<k>": those at exactly that scope (a key-scoped list is what its
 * readers may see; the HSM-wide assignments that also apply are listed at "/"). */
static void handle_list_ras(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__ListRoleAssignmentsRequest *req =
        (const Mhsm__V1__ListRoleAssignmentsRequest *)m;
    const char *key = NULL;
    if (!mh_node_gate(n, call, true) || !assign_scope_ok(call, req->scope, &key) ||
        !mh_authz_check(n, call, MH_ACT_RA_READ, key))
        return;
    if (req->max_results > RA_PAGE_MAX) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "max_results must be 1..100");
        return;
    }
    size_t max = req->max_results == 0 ? RA_PAGE_MAX : req->max_results;
    char after[MH_RBAC_GUID_LEN + 1];
    if (decode_token(req->page_token, after) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_PAGE_TOKEN);
        return;
    }
    if (req->principal_id[0] != '\0' && !mh_rbac_valid_principal(req->principal_id)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_PRINCIPAL);
        return;
    }
    struct mh_store_ra_filter f = {
        .principal = req->principal_id[0] != '\0' ? req->principal_id : NULL,
        .scope = NULL,
    };
    if (key != NULL)
        f.scope = req->scope;
    else if (req->at_scope_only)
        f.scope = req->scope[0] == '\0' ? "/" : req->scope;
    Mhsm__Internal__RoleAssignmentRecord **recs = NULL;
    size_t count = 0;
    bool more = false;
    int rv = mh_store_list_role_assignments(n->store, &f, after, max, &recs, &count, &more);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "listing role assignments");
        return;
    }
    struct ra_view *views = calloc(count > 0 ? count : 1, sizeof *views);
    Mhsm__V1__RoleAssignment **ptrs = calloc(count > 0 ? count : 1, sizeof *ptrs);
    struct mh_buf token = {0};
    if (views == NULL || ptrs == NULL)
        rv = MH_ENOMEM;
    for (size_t i = 0; rv == 0 && i < count; i++) {
        rv = view_assignment(n, &views[i], recs[i]);
        ptrs[i] = &views[i].a;
    }
    if (rv == 0 && more && count > 0)
        rv = encode_token(recs[count - 1]->name, &token);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "listing role assignments");
    } else {
        Mhsm__V1__ListRoleAssignmentsResponse resp = MHSM__V1__LIST_ROLE_ASSIGNMENTS_RESPONSE__INIT;
        resp.n_items = count;
        resp.items = ptrs;
        resp.next_page_token = token.len > 0 ? (char *)token.data : (char *)"";
        mh_rpc_reply(call, &resp.base);
    }
    mh_buf_free(&token);
    free(views);
    free(ptrs);
    mh_store_records_free(recs, count);
}

/* Get needs roleAssignments/read/action at "/": which scope an assignment has is
 * only known after reading it, and a key-scoped reader must not learn by probing
 * names which assignments exist elsewhere. Key-scoped readers list their key's
 * assignments instead (ListRoleAssignments with scope "/keys/<name>"). */
static void handle_get_ra(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__RoleAssignmentRequest *req = (const Mhsm__V1__RoleAssignmentRequest *)m;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_RA_READ, NULL))
        return;
    char guid[MH_RBAC_GUID_LEN + 1];
    if (parse_assignment_name(req->name, guid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_ASSIGN_NAME);
        return;
    }
    Mhsm__Internal__RoleAssignmentRecord *r = NULL;
    int rv = mh_store_get_role_assignment(n->store, guid, &r);
    if (rv < 0) {
        fail_assignment(call, rv, guid);
        return;
    }
    reply_assignment(n, call, r);
    mh_store_free(r);
}

/* Resolves CreateRoleAssignment's role: a full id or bare GUID (built-in or an
 * existing custom role), else a role name (built-in first, then custom, without
 * regard to case). */
static int resolve_role(struct mh_node *n, const char *s, char out[MH_RBAC_GUID_LEN + 1])
{
    if (mh_rbac_parse_definition_id(s, out) == 0) {
        if (mh_rbac_builtin_by_id(out) != NULL)
            return 0;
        Mhsm__Internal__RoleDefinitionRecord *r = NULL;
        int rv = mh_store_get_role_definition(n->store, out, &r);
        mh_store_free(r);
        return rv;
    }
    const struct mh_rbac_builtin *b = mh_rbac_builtin_by_name(s);
    if (b != NULL) {
        snprintf(out, MH_RBAC_GUID_LEN + 1, "%s", b->id);
        return 0;
    }
    Mhsm__Internal__RoleDefinitionRecord **defs = NULL;
    size_t count = 0;
    int rv = mh_store_list_role_definitions(n->store, &defs, &count);
    if (rv < 0)
        return rv;
    rv = MH_ENOTFOUND;
    for (size_t i = 0; i < count; i++) {
        if (strcasecmp(defs[i]->role_name, s) == 0) {
            snprintf(out, MH_RBAC_GUID_LEN + 1, "%s", defs[i]->id);
            rv = 0;
            break;
        }
    }
    mh_store_records_free(defs, count);
    return rv;
}

static void handle_create_ra(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__CreateRoleAssignmentRequest *req =
        (const Mhsm__V1__CreateRoleAssignmentRequest *)m;
    const char *key = NULL;
    if (!mh_node_gate(n, call, true) || !assign_scope_ok(call, req->scope, &key) ||
        !mh_authz_check(n, call, MH_ACT_RA_WRITE, key))
        return;
    char guid[MH_RBAC_GUID_LEN + 1];
    if (req->name[0] == '\0') {
        int rv = mh_rand_guid(guid);
        if (rv < 0) {
            mh_rpc_fail_err(call, rv, "making a role assignment name");
            return;
        }
    } else if (mh_rbac_guid_normalize(req->name, guid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "invalid role assignment name: a GUID");
        return;
    }
    if (!mh_rbac_valid_principal(req->principal_id)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_PRINCIPAL);
        return;
    }
    if (req->role_definition_id[0] == '\0' ||
        strlen(req->role_definition_id) > DEF_ID_MAX + MH_RBAC_ROLE_NAME_MAX * 4) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "role_definition_id: give the role's id, GUID or name");
        return;
    }
    char role[MH_RBAC_GUID_LEN + 1];
    int rv = resolve_role(n, req->role_definition_id, role);
    if (rv == MH_ENOTFOUND) {
        char msg[700];
        snprintf(msg, sizeof msg, "role definition '%.600s' not found", req->role_definition_id);
        mh_rpc_fail(call, MH_GRPC_NOT_FOUND, msg);
        return;
    }
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "reading role definitions");
        return;
    }
    struct rbac_op *op = op_new(n, call, OP_PUT_RA, guid);
    if (op == NULL)
        return;
    snprintf(op->scope, sizeof op->scope, "%s", req->scope[0] == '\0' ? "/" : req->scope);
    Mhsm__Internal__RoleAssignmentRecord rec = MHSM__INTERNAL__ROLE_ASSIGNMENT_RECORD__INIT;
    rec.name = op->guid;
    rec.scope = op->scope;
    rec.role_id = role;
    rec.principal_id = req->principal_id;
    rec.created = mh_node_now();
    Mhsm__Internal__PutRoleAssignment put = MHSM__INTERNAL__PUT_ROLE_ASSIGNMENT__INIT;
    put.record = &rec;
    put.max_hsm_scope = n->cfg->max_assignments_hsm;
    put.max_per_key = n->cfg->max_assignments_per_key;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT;
    cmd.put_role_assignment = &put;
    op_propose(op, &cmd, req->request_id);
}

/* Delete needs roleAssignments/delete/action at "/" or at the assignment's own
 * scope. The second case can only be known after reading the assignment, so the
 * read happens silently first, and a caller that holds the action at neither place
 * gets the very same refusal (at scope "/") whether the assignment exists or not. */
static void handle_delete_ra(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__RoleAssignmentRequest *req = (const Mhsm__V1__RoleAssignmentRequest *)m;
    if (!mh_node_gate(n, call, true))
        return;
    char guid[MH_RBAC_GUID_LEN + 1];
    if (parse_assignment_name(req->name, guid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, MSG_ASSIGN_NAME);
        return;
    }
    const char *who = mh_rpc_call_principal(call);
    uint64_t hsm = 0, at_key = 0;
    const char *key = NULL;
    Mhsm__Internal__RoleAssignmentRecord *r = NULL;
    int rv = mh_authz_mask(n, who, NULL, &hsm, &at_key);
    if (rv == 0 && (hsm & MH_RBAC_BIT(MH_ACT_RA_DELETE)) == 0) {
        /* Not allowed HSM-wide: maybe at the assignment's key scope. */
        rv = mh_store_get_role_assignment(n->store, guid, &r);
        const char *k = NULL;
        if (rv == 0 && mh_rbac_parse_scope(r->scope, &k) == 0 && k != NULL &&
            mh_authz_mask(n, who, k, &hsm, &at_key) == 0 &&
            (at_key & MH_RBAC_BIT(MH_ACT_RA_DELETE)) != 0)
            key = k;
        rv = 0; /* any failure here ends in the "/" check below */
    }
    /* rv < 0 (role state unreadable): the check below fails closed the same way. */
    (void)rv;
    if (!mh_authz_check(n, call, MH_ACT_RA_DELETE, key)) {
        mh_store_free(r);
        return;
    }
    struct rbac_op *op = op_new(n, call, OP_DELETE_RA, guid);
    if (op == NULL) {
        mh_store_free(r);
        return;
    }
    op->old_ra = r;
    if (op->old_ra == NULL) {
        rv = mh_store_get_role_assignment(n->store, guid, &op->old_ra);
        if (rv < 0) {
            fail_assignment(call, rv, guid);
            op_free(op);
            return;
        }
    }
    Mhsm__Internal__DeleteRoleAssignment del = MHSM__INTERNAL__DELETE_ROLE_ASSIGNMENT__INIT;
    del.name = op->guid;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT;
    cmd.delete_role_assignment = &del;
    op_propose(op, &cmd, req->request_id);
}

/* ---- WhoAmI ---------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void handle_whoami(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    (void)m;
    struct mh_node *n = data;
    /* No domain needed: before activation it tells an operator which principal id to
     * put in [rbac] administrators (and shows the download it then may do). */
    if (!mh_node_gate(n, call, false) || !mh_authz_check(n, call, MH_ACT_ANY_CLIENT, NULL))
        return;
    const char *who = mh_rpc_call_principal(call);
    uint64_t hsm = 0, unused = 0;
    char **keys = NULL;
    size_t n_keys = 0;
    int rv = mh_authz_mask(n, who, NULL, &hsm, &unused);
    if (rv == 0)
        rv = mh_authz_key_scopes(n, who, &keys, &n_keys);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "reading the caller's roles");
        return;
    }
    char *actions[MH_ACT_COUNT];
    size_t n_actions = 0;
    for (int a = 0; a < MH_ACT_COUNT; a++)
        if (hsm & MH_RBAC_BIT(a))
            actions[n_actions++] = (char *)mh_rbac_action_name((enum mh_action)a);
    qsort(actions, n_actions, sizeof actions[0], cmp_str);
    Mhsm__V1__WhoAmIResponse resp = MHSM__V1__WHO_AM_IRESPONSE__INIT;
    resp.principal_id = (char *)who;
    resp.node_id = n->cfg->raft_id;
    resp.n_data_actions = n_actions;
    resp.data_actions = actions;
    resp.n_key_scopes = n_keys;
    resp.key_scopes = keys;
    mh_rpc_reply(call, &resp.base);
    mh_authz_key_scopes_free(keys, n_keys);
}

static const mh_rpc_handler_fn rbac_handlers[] = {
    handle_list_defs, handle_get_def,   handle_set_def,   handle_delete_def, handle_list_ras,
    handle_get_ra,    handle_create_ra, handle_delete_ra, handle_whoami,
};

int mh_svc_rbac_register(struct mh_node *n)
{
    _Static_assert(sizeof rbac_handlers / sizeof rbac_handlers[0] == 9, "one handler per method");
    return mh_rpc_server_add_service(n->rpc, &mhsm__v1__access_control__descriptor, rbac_handlers,
                                     n);
}
