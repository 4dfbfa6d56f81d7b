/* test_authz: node/authz's decision (mh_authz_mask) over a real store and FSM:
 * deny by default, built-in and custom roles, key scopes, invalidation, the
 * pre-activation rule, node certificates, and a cache overflowing its bound. */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/fsm.h"
#include "consensus/rbac.h"
#include "consensus/store.h"
#include "node/authz.h"
#include "node/config.h"
#include "node/node.h"

typedef Mhsm__Internal__Command Command;

#define S(lit)  ((char *)(lit))
#define ADMIN   "spiffe://mhsm/admin"
#define APP     "spiffe://mhsm/app"
#define OTHER   "spiffe://mhsm/other"
#define NODE1   "spiffe://mhsm/node/1"
#define BIT(a)  MH_RBAC_BIT(a)
#define CUSTOM1 "0000c0de-0000-4000-8000-000000000001"

struct env {
    struct mh_store *st;
    struct mh_fsm *fsm;
    struct mh_config cfg;
    struct mh_node node;
    uint64_t index;
    unsigned seq;
};

static int env_seq;

static struct env *env_open(void)
{
    char name[32], dir[PATH_MAX];
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    snprintf(name, sizeof name, "authz%d", env_seq++);
    tu_path(dir, sizeof dir, name);
    assert_int_equal(mh_store_open(dir, 64u << 20, &e->st), 0);
    assert_int_equal(mh_fsm_new(e->st, &e->fsm), 0);
    snprintf(e->cfg.administrators[0], sizeof e->cfg.administrators[0], "%s", ADMIN);
    e->cfg.n_administrators = 1;
    e->node.cfg = &e->cfg;
    e->node.store = e->st;
    e->node.fsm = e->fsm;
    return e;
}

static void env_close(struct env *e)
{
    mh_authz_free(&e->node);
    assert_null(e->node.authz);
    mh_fsm_free(e->fsm);
    mh_store_close(e->st);
    free(e);
}

/* Packs and applies |cmd|; returns the FSM's outcome. Like mhsmd's FSM hook, every
 * applied command invalidates the cache unless |keep_cache|. */
static int run_cmd(struct env *e, Command *cmd, bool keep_cache)
{
    struct mh_fsm_result res;
    cmd->format = 1;
    cmd->time = 1700000000;
    cmd->request_id = S("");
    size_t n = mhsm__internal__command__get_packed_size(cmd);
    uint8_t *b = malloc(n + 1);
    assert_non_null(b);
    mhsm__internal__command__pack(cmd, b);
    assert_int_equal(mh_fsm_apply(e->fsm, ++e->index, b, n, &res), 0);
    free(b);
    if (!keep_cache)
        mh_authz_invalidate(&e->node);
    return res.rc;
}

static const char *guid(struct env *e, char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012u", ++e->seq);
    return out;
}

/* Activates with Managed HSM Administrator at "/" for ADMIN (|with_admin|), or
 * without any assignment, as state activated before local RBAC existed. */
static void activate_as(struct env *e, bool with_admin);

static void activate(struct env *e)
{
    activate_as(e, true);
}

static void activate_as(struct env *e, bool with_admin)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    Mhsm__Internal__DomainRecord d = MHSM__INTERNAL__DOMAIN_RECORD__INIT;
    Mhsm__Internal__RoleAssignmentRecord ra = MHSM__INTERNAL__ROLE_ASSIGNMENT_RECORD__INIT;
    Mhsm__Internal__RoleAssignmentRecord *rp = &ra;
    uint8_t id[16] = {7};
    char name[37];
    ra.name = (char *)guid(e, name);
    ra.scope = S("/");
    ra.role_id = S(MH_RBAC_ROLE_ADMIN);
    ra.principal_id = S(ADMIN);
    d.retention_days = 7;
    d.quorum = 2;
    d.domain_id.data = id;
    d.domain_id.len = sizeof id;
    act.domain = &d;
    act.initial_assignments = &rp;
    act.n_initial_assignments = with_admin ? 1 : 0;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    assert_int_equal(run_cmd(e, &cmd, false), 0);
}

/* Assigns |role| to |principal| at |scope|; the assignment's name goes to |name|. */
static int assign(struct env *e, const char *principal, const char *role, const char *scope,
                  char name[37])
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__PutRoleAssignment put = MHSM__INTERNAL__PUT_ROLE_ASSIGNMENT__INIT;
    Mhsm__Internal__RoleAssignmentRecord ra = MHSM__INTERNAL__ROLE_ASSIGNMENT_RECORD__INIT;
    char local[37];
    ra.name = (char *)guid(e, name != NULL ? name : local);
    ra.scope = (char *)scope;
    ra.role_id = (char *)role;
    ra.principal_id = (char *)principal;
    put.record = &ra;
    put.max_hsm_scope = 50;
    put.max_per_key = 10;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT;
    cmd.put_role_assignment = &put;
    return run_cmd(e, &cmd, false);
}

static int unassign(struct env *e, const char *name, bool keep_cache)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__DeleteRoleAssignment del = MHSM__INTERNAL__DELETE_ROLE_ASSIGNMENT__INIT;
    del.name = (char *)name;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT;
    cmd.delete_role_assignment = &del;
    return run_cmd(e, &cmd, keep_cache);
}

static void masks(struct env *e, const char *principal, const char *key, uint64_t *hsm,
                  uint64_t *at_key)
{
    assert_int_equal(mh_authz_mask(&e->node, principal, key, hsm, at_key), 0);
}

static void test_deny_by_default(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    uint64_t hsm = 1, key = 1;
    masks(e, APP, NULL, &hsm, &key);
    assert_int_equal(hsm, 0);
    assert_int_equal(key, 0);
    masks(e, APP, "k1", &hsm, &key);
    assert_int_equal(hsm, 0);
    assert_int_equal(key, 0);
    /* A principal that only differs in case or by a prefix is another principal. */
    masks(e, "SPIFFE://mhsm/admin", NULL, &hsm, &key);
    assert_int_equal(hsm, 0);
    masks(e, "spiffe://mhsm/admi", NULL, &hsm, &key);
    assert_int_equal(hsm, 0);
    /* Longer than any assignable principal: holds nothing, no error. */
    char longp[400];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    masks(e, longp, "k1", &hsm, &key);
    assert_int_equal(hsm | key, 0);
    char **names = NULL;
    size_t n = 1;
    assert_int_equal(mh_authz_key_scopes(&e->node, APP, &names, &n), 0);
    assert_null(names);
    assert_int_equal(n, 0);
    env_close(e);
}

static void test_builtin_at_root(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    uint64_t hsm, key;
    /* The administrator from activation: role management and the domain, no keys. */
    masks(e, ADMIN, "k1", &hsm, &key);
    const struct mh_rbac_builtin *admin = mh_rbac_builtin_by_id(MH_RBAC_ROLE_ADMIN);
    assert_non_null(admin);
    assert_int_equal(hsm, admin->mask);
    assert_int_equal(key, admin->mask);
    assert_true(hsm & BIT(MH_ACT_RA_WRITE));
    assert_false(hsm & BIT(MH_ACT_SIGN));
    assert_false(key & BIT(MH_ACT_KEY_READ));

    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/", NULL), 0);
    masks(e, APP, "anykey", &hsm, &key);
    assert_true(hsm & BIT(MH_ACT_SIGN));
    assert_true(key & BIT(MH_ACT_SIGN));
    assert_true(hsm & BIT(MH_ACT_KEY_CREATE));
    assert_false(hsm & BIT(MH_ACT_PURGE));
    assert_false(hsm & BIT(MH_ACT_RA_WRITE));
    /* "/keys" is the whole HSM too. */
    assert_int_equal(assign(e, OTHER, MH_RBAC_ROLE_AUDITOR, "/keys", NULL), 0);
    masks(e, OTHER, NULL, &hsm, &key);
    assert_true(hsm & BIT(MH_ACT_KEY_READ));
    assert_true(hsm & BIT(MH_ACT_DELETED_READ));
    assert_false(hsm & BIT(MH_ACT_SIGN));
    assert_int_equal(key, hsm);
    /* Roles add up. */
    assert_int_equal(assign(e, OTHER, MH_RBAC_ROLE_CRYPTO_OFFICER, "/", NULL), 0);
    masks(e, OTHER, NULL, &hsm, &key);
    assert_true(hsm & BIT(MH_ACT_PURGE));
    assert_true(hsm & BIT(MH_ACT_KEY_READ));
    assert_false(hsm & BIT(MH_ACT_SIGN));
    env_close(e);
}

static void test_key_scope(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/keys/k1", NULL), 0);
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_SERVICE_REL, "/keys/a-first", NULL), 0);
    uint64_t hsm, key;
    masks(e, APP, "k1", &hsm, &key);
    assert_int_equal(hsm, 0);
    assert_true(key & BIT(MH_ACT_SIGN));
    masks(e, APP, "k2", &hsm, &key);
    assert_int_equal(hsm | key, 0);
    masks(e, APP, "K1", &hsm, &key); /* another key name */
    assert_int_equal(key, 0);
    masks(e, APP, "k", &hsm, &key);
    assert_int_equal(key, 0);
    masks(e, APP, "k10", &hsm, &key);
    assert_int_equal(key, 0);
    masks(e, APP, NULL, &hsm, &key); /* an HSM-wide call */
    assert_int_equal(hsm | key, 0);
    masks(e, APP, "a-first", &hsm, &key);
    assert_int_equal(key, BIT(MH_ACT_RELEASE));
    /* Someone else's key assignment grants APP nothing. */
    assert_int_equal(assign(e, OTHER, MH_RBAC_ROLE_CRYPTO_USER, "/keys/k2", NULL), 0);
    masks(e, APP, "k2", &hsm, &key);
    assert_int_equal(key, 0);
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(mh_authz_key_scopes(&e->node, APP, &names, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "a-first");
    assert_string_equal(names[1], "k1");
    mh_authz_key_scopes_free(names, n);
    env_close(e);
}

static int put_custom(struct env *e, const char *id, const char *name, char **actions, size_t n,
                      char **not_actions, size_t n_not)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__PutRoleDefinition put = MHSM__INTERNAL__PUT_ROLE_DEFINITION__INIT;
    Mhsm__Internal__RoleDefinitionRecord d = MHSM__INTERNAL__ROLE_DEFINITION_RECORD__INIT;
    d.id = (char *)id;
    d.role_name = (char *)name;
    d.data_actions = actions;
    d.n_data_actions = n;
    d.not_data_actions = not_actions;
    d.n_not_data_actions = n_not;
    put.record = &d;
    put.max_custom_roles = 50;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION;
    cmd.put_role_definition = &put;
    return run_cmd(e, &cmd, false);
}

static void test_custom_not_data_actions(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    char *all_keys[] = {S(MH_RBAC_PREFIX "keys/*")};
    char *not_sign[] = {S(MH_RBAC_PREFIX "keys/sign/action"),
                        S(MH_RBAC_PREFIX "KEYS/deletedKeys/*")};
    assert_int_equal(put_custom(e, CUSTOM1, "No signing", all_keys, 1, not_sign, 2), 0);
    assert_int_equal(assign(e, APP, CUSTOM1, "/", NULL), 0);
    uint64_t hsm, key;
    masks(e, APP, "k1", &hsm, &key);
    assert_false(hsm & BIT(MH_ACT_SIGN));
    assert_false(hsm & BIT(MH_ACT_PURGE));
    assert_false(hsm & BIT(MH_ACT_DELETED_READ));
    assert_false(hsm & BIT(MH_ACT_RECOVER));
    assert_true(hsm & BIT(MH_ACT_VERIFY));
    assert_true(hsm & BIT(MH_ACT_ENCRYPT));
    assert_true(hsm & BIT(MH_ACT_KEY_CREATE));
    assert_true(hsm & BIT(MH_ACT_ROTATE));
    assert_false(hsm & BIT(MH_ACT_RA_READ)); /* not a keys/ action */
    /* An exclusion is not a deny: another role may still grant the action. */
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/keys/k1", NULL), 0);
    masks(e, APP, "k1", &hsm, &key);
    assert_true(key & BIT(MH_ACT_SIGN));
    assert_false(hsm & BIT(MH_ACT_SIGN));
    /* Replacing the definition changes what the assignment grants. */
    char *only_read[] = {S(MH_RBAC_PREFIX "keys/read/action")};
    assert_int_equal(put_custom(e, CUSTOM1, "No signing", only_read, 1, NULL, 0), 0);
    masks(e, APP, "k2", &hsm, &key);
    assert_int_equal(hsm, BIT(MH_ACT_KEY_READ));
    assert_int_equal(key, BIT(MH_ACT_KEY_READ));
    env_close(e);
}

static void test_invalidation(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    char name[37];
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/keys/k1", name), 0);
    uint64_t hsm, key;
    masks(e, APP, "k1", &hsm, &key);
    assert_true(key & BIT(MH_ACT_SIGN));
    /* Revoked without telling authz: the compiled mask is what answers, which is
     * why mhsmd's FSM hook invalidates after every role command. */
    assert_int_equal(unassign(e, name, true), 0);
    masks(e, APP, "k1", &hsm, &key);
    assert_true(key & BIT(MH_ACT_SIGN));
    mh_authz_invalidate(&e->node);
    masks(e, APP, "k1", &hsm, &key);
    assert_int_equal(hsm | key, 0);
    /* And a grant takes effect at the next decision. */
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/", name), 0);
    masks(e, APP, "k1", &hsm, &key);
    assert_true(hsm & BIT(MH_ACT_SIGN));
    assert_int_equal(unassign(e, name, false), 0);
    masks(e, APP, "k1", &hsm, &key);
    assert_int_equal(hsm | key, 0);
    /* Invalidating with no cache yet, and twice, is harmless. */
    mh_authz_free(&e->node);
    mh_authz_invalidate(&e->node);
    mh_authz_invalidate(&e->node);
    masks(e, ADMIN, NULL, &hsm, &key);
    assert_true(hsm & BIT(MH_ACT_RA_WRITE));
    env_close(e);
}

static void test_pre_activation(void **state)
{
    (void)state;
    struct env *e = env_open();
    uint64_t hsm, key;
    const uint64_t sd = BIT(MH_ACT_SD_DOWNLOAD) | BIT(MH_ACT_SD_READ);
    masks(e, ADMIN, NULL, &hsm, &key);
    assert_int_equal(hsm, sd);
    assert_int_equal(key, sd);
    masks(e, APP, NULL, &hsm, &key);
    assert_int_equal(hsm | key, 0);
    masks(e, "spiffe://mhsm/admin2", NULL, &hsm, &key);
    assert_int_equal(hsm | key, 0);
    masks(e, NODE1, NULL, &hsm, &key);
    assert_int_equal(hsm | key, 0);
    /* Only the assignments count once activated: the configured list no longer
     * grants anything by itself (ADMIN keeps the download through its role). */
    activate(e);
    masks(e, ADMIN, NULL, &hsm, &key);
    assert_int_equal(hsm, mh_rbac_builtin_by_id(MH_RBAC_ROLE_ADMIN)->mask);
    snprintf(e->cfg.administrators[1], sizeof e->cfg.administrators[1], "%s", APP);
    e->cfg.n_administrators = 2;
    masks(e, APP, NULL, &hsm, &key);
    assert_int_equal(hsm | key, 0);
    env_close(e);
}

/* State activated before local RBAC: no assignment at all. The configured
 * administrators hold Managed HSM Administrator until the first assignment exists;
 * then only assignments count. */
static void test_unassigned_state(void **state)
{
    (void)state;
    struct env *e = env_open();
    uint64_t hsm, key;
    const uint64_t admin = mh_rbac_builtin_by_id(MH_RBAC_ROLE_ADMIN)->mask;
    activate_as(e, false);
    masks(e, ADMIN, NULL, &hsm, &key);
    assert_int_equal(hsm, admin);
    assert_int_equal(key, admin);
    masks(e, APP, "k1", &hsm, &key);
    assert_int_equal(hsm | key, 0);
    /* The first assignment must leave someone able to manage roles. */
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/", NULL), MH_ELOCKOUT);
    assert_int_equal(assign(e, NODE1, MH_RBAC_ROLE_ADMIN, "/", NULL), MH_ELOCKOUT);
    assert_int_equal(assign(e, ADMIN, MH_RBAC_ROLE_ADMIN, "/", NULL), 0);
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/", NULL), 0);
    mh_authz_invalidate(&e->node);
    masks(e, ADMIN, NULL, &hsm, &key);
    assert_int_equal(hsm, admin);
    masks(e, APP, NULL, &hsm, &key);
    assert_int_equal(hsm, mh_rbac_builtin_by_id(MH_RBAC_ROLE_CRYPTO_USER)->mask);
    env_close(e);
}

static void test_node_certificates(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    assert_int_equal(assign(e, NODE1, MH_RBAC_ROLE_CRYPTO_USER, "/", NULL), 0);
    assert_int_equal(assign(e, NODE1, MH_RBAC_ROLE_CRYPTO_USER, "/keys/k1", NULL), 0);
    uint64_t hsm, key;
    masks(e, NODE1, "k1", &hsm, &key);
    assert_int_equal(hsm | key, 0);
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(mh_authz_key_scopes(&e->node, NODE1, &names, &n), 0);
    assert_int_equal(n, 0);
    /* The prefix is what makes a node certificate, not the whole string. */
    assert_int_equal(assign(e, "spiffe://mhsm/nodes", MH_RBAC_ROLE_CRYPTO_USER, "/", NULL), 0);
    masks(e, "spiffe://mhsm/nodes", NULL, &hsm, &key);
    assert_true(hsm & BIT(MH_ACT_SIGN));
    env_close(e);
}

/* More principals than the cache holds: every answer stays right across the
 * eviction, and principals compiled before it are compiled again. */
static void test_cache_overflow(void **state)
{
    (void)state;
    struct env *e = env_open();
    activate(e);
    assert_int_equal(assign(e, APP, MH_RBAC_ROLE_CRYPTO_USER, "/keys/k1", NULL), 0);
    uint64_t hsm, key;
    masks(e, APP, "k1", &hsm, &key);
    assert_true(key & BIT(MH_ACT_SIGN));
    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = 0; i < 2500; i++) {
            char p[64];
            snprintf(p, sizeof p, "spiffe://mhsm/client/%u", i);
            masks(e, p, "k1", &hsm, &key);
            assert_int_equal(hsm | key, 0);
            if (i % 500 == 0) {
                masks(e, APP, "k1", &hsm, &key);
                assert_true(key & BIT(MH_ACT_SIGN));
                masks(e, ADMIN, NULL, &hsm, &key);
                assert_true(hsm & BIT(MH_ACT_RA_WRITE));
            }
        }
    }
    env_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deny_by_default),  cmocka_unit_test(test_builtin_at_root),
        cmocka_unit_test(test_key_scope),        cmocka_unit_test(test_custom_not_data_actions),
        cmocka_unit_test(test_invalidation),     cmocka_unit_test(test_pre_activation),
        cmocka_unit_test(test_unassigned_state), cmocka_unit_test(test_node_certificates),
        cmocka_unit_test(test_cache_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
