#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/fsm.h"
#include "consensus/rbac.h"
#include "consensus/store.h"

/* The store is populated through the FSM (the only writer the design allows). */
struct env {
    struct mh_store *st;
    struct mh_fsm *fsm;
    uint64_t index;
};

static void env_open(struct env *e, const char *name)
{
    char dir[PATH_MAX];
    tu_path(dir, sizeof dir, name);
    memset(e, 0, sizeof *e);
    assert_int_equal(mh_store_open(dir, 64u << 20, &e->st), 0);
    assert_int_equal(mh_fsm_new(e->st, &e->fsm), 0);
}

static void env_close(struct env *e)
{
    mh_fsm_free(e->fsm);
    mh_store_close(e->st);
}

static int apply(struct env *e, Mhsm__Internal__Command *cmd, struct mh_fsm_result *res)
{
    cmd->format = 1;
    size_t n = mhsm__internal__command__get_packed_size(cmd);
    uint8_t *b = malloc(n + 1);
    assert_non_null(b);
    mhsm__internal__command__pack(cmd, b);
    int rv = mh_fsm_apply(e->fsm, ++e->index, b, n, res);
    free(b);
    assert_int_equal(rv, 0);
    return res->rc;
}

static void activate(struct env *e)
{
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    Mhsm__Internal__DomainRecord d = MHSM__INTERNAL__DOMAIN_RECORD__INIT;
    d.retention_days = 7;
    act.domain = &d;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    cmd.time = 1000;
    struct mh_fsm_result res;
    assert_int_equal(apply(e, &cmd, &res), 0);
}

static void add_version(struct env *e, const char *name, const char *version)
{
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__AddKeyVersion a = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    Mhsm__Internal__KeyVersionRecord r = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    r.name = (char *)name;
    r.version = (char *)version;
    r.enabled = true;
    a.record = &r;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &a;
    cmd.time = 2000;
    struct mh_fsm_result res;
    assert_int_equal(apply(e, &cmd, &res), 0);
}

static void delete_key(struct env *e, const char *name)
{
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__KeyName kn = MHSM__INTERNAL__KEY_NAME__INIT;
    kn.name = (char *)name;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY;
    cmd.delete_key = &kn;
    cmd.time = 3000;
    struct mh_fsm_result res;
    assert_int_equal(apply(e, &cmd, &res), 0);
}

static void test_open_wipe_reopen_lock(void **state)
{
    (void)state;
    struct env e;
    /* a missing parent directory is created */
    env_open(&e, "wipe/deeper/state");
    uint64_t idx = 99;
    assert_int_equal(mh_store_applied_index(e.st, &idx), 0);
    assert_int_equal(idx, 0);
    activate(&e);
    add_version(&e, "k1", "v1");
    assert_int_equal(mh_store_applied_index(e.st, &idx), 0);
    assert_int_equal(idx, 2);
    Mhsm__Internal__KeyRecord *key = NULL;
    assert_int_equal(mh_store_get_key(e.st, "k1", &key), 0);
    assert_string_equal(key->latest_version, "v1");
    mh_store_free(key);

    /* a second open of a live directory fails cleanly and leaves it intact */
    char dir[PATH_MAX];
    tu_path(dir, sizeof dir, "wipe/deeper/state");
    struct mh_store *other = (struct mh_store *)&e;
    assert_int_equal(mh_store_open(dir, 0, &other), MH_ELOCKED);
    assert_null(other);
    assert_int_equal(mh_store_get_key(e.st, "k1", &key), 0);
    mh_store_free(key);
    env_close(&e);

    /* boot policy (a): reopening starts empty (raft replays into it) */
    env_open(&e, "wipe/deeper/state");
    assert_int_equal(mh_store_applied_index(e.st, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(mh_store_get_key(e.st, "k1", &key), MH_ENOTFOUND);
    assert_null(key);
    Mhsm__Internal__DomainRecord *d = NULL;
    assert_int_equal(mh_store_get_domain(e.st, &d), MH_ENOTFOUND);
    env_close(&e);

    /* a file where the directory should be: -errno, not a crash */
    char file[PATH_MAX];
    tu_path(file, sizeof file, "plainfile");
    tu_write_file(file, "x", 1);
    struct mh_store *st = NULL;
    assert_true(mh_store_open(file, 0, &st) < 0);
    assert_null(st);
}

static void test_missing_reads(void **state)
{
    (void)state;
    struct env e;
    env_open(&e, "missing");
    Mhsm__Internal__DomainRecord *d = NULL;
    assert_int_equal(mh_store_get_domain(e.st, &d), MH_ENOTFOUND);
    activate(&e);
    assert_int_equal(mh_store_get_domain(e.st, &d), 0);
    assert_true(d->activated);
    assert_int_equal(d->retention_days, 7);
    mh_store_free(d);
    add_version(&e, "present", "v1");
    delete_key(&e, "present");

    Mhsm__Internal__KeyRecord *key = (void *)&e;
    Mhsm__Internal__KeyVersionRecord *v = (void *)&e;
    assert_int_equal(mh_store_get_key(e.st, "absent", &key), MH_ENOTFOUND);
    assert_null(key);
    assert_int_equal(mh_store_get_version(e.st, "absent", NULL, true, &key, &v), MH_ENOTFOUND);
    assert_null(key);
    assert_null(v);
    /* deleted: only visible with deleted_ok */
    assert_int_equal(mh_store_get_version(e.st, "present", "", false, &key, &v), MH_ENOTFOUND);
    assert_int_equal(mh_store_get_version(e.st, "present", "", true, &key, &v), 0);
    assert_true(key->deleted);
    assert_string_equal(v->version, "v1");
    mh_store_free(key);
    mh_store_free(v);
    assert_int_equal(mh_store_get_version(e.st, "present", "nope", true, NULL, &v), MH_ENOTFOUND);
    /* names/versions/request ids longer than anything stored find nothing */
    char longname[600];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(mh_store_get_key(e.st, longname, &key), MH_ENOTFOUND);
    assert_int_equal(mh_store_get_version(e.st, "present", longname, true, NULL, &v), MH_ENOTFOUND);
    Mhsm__Internal__RequestRecord *r = (void *)&e;
    assert_int_equal(mh_store_get_request(e.st, longname, &r), MH_ENOTFOUND);
    assert_null(r);
    assert_int_equal(mh_store_get_request(e.st, "", &r), MH_ENOTFOUND);
    assert_int_equal(mh_store_get_request(e.st, "never", &r), MH_ENOTFOUND);
    Mhsm__Internal__KeyVersionRecord *vs[4];
    size_t n = 9;
    bool more = true;
    assert_int_equal(mh_store_list_versions(e.st, "absent", true, NULL, 4, vs, &n, &more),
                     MH_ENOTFOUND);
    assert_int_equal(n, 0);
    assert_false(more);
    assert_int_equal(mh_store_list_versions(e.st, "present", false, NULL, 4, vs, &n, &more),
                     MH_ENOTFOUND);
    assert_int_equal(mh_store_list_versions(e.st, "present", true, NULL, 4, vs, &n, &more), 0);
    assert_int_equal(n, 1);
    mh_store_versions_free(vs, n);
    mh_store_free(NULL);
    env_close(&e);
}

/* Pages through every key with |deleted| in pages of |page| and checks order,
 * count and the more flag. Returns the number of keys seen. */
static size_t list_all(struct env *e, bool deleted, size_t page, char names[][16])
{
    struct mh_store_key_entry ents[16];
    char after[16] = "";
    size_t total = 0;
    for (int guard = 0; guard < 1000; guard++) {
        size_t n = 99;
        bool more = false;
        assert_int_equal(mh_store_list_keys(e->st, deleted, after, page, ents, &n, &more), 0);
        assert_true(n <= page);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(ents[i].key->deleted, deleted);
            assert_string_equal(ents[i].latest->name, ents[i].key->name);
            assert_string_equal(ents[i].latest->version, ents[i].key->latest_version);
            assert_true(strcmp(ents[i].key->name, after) > 0);
            snprintf(names[total], 16, "%s", ents[i].key->name);
            snprintf(after, sizeof after, "%s", ents[i].key->name);
            total++;
        }
        mh_store_key_entries_free(ents, n);
        if (!more)
            return total;
        assert_int_equal(n, page); /* a short page is always the last */
    }
    fail_msg("paging did not terminate");
    return 0;
}

static void test_list_keys_paging(void **state)
{
    (void)state;
    struct env e;
    env_open(&e, "paging");
    activate(&e);
    char name[16];
    for (int i = 59; i >= 0; i--) { /* inserted out of order on purpose */
        snprintf(name, sizeof name, "k%03d", i);
        add_version(&e, name, "v1");
        if (i % 7 == 0)
            add_version(&e, name, "v2");
        if (i % 3 == 0)
            delete_key(&e, name);
    }
    static char names[64][16];
    size_t pages[] = {1, 7, 16};
    for (size_t p = 0; p < 3; p++) {
        size_t n = list_all(&e, false, pages[p], names);
        assert_int_equal(n, 40);
        for (size_t i = 1; i < n; i++)
            assert_true(strcmp(names[i - 1], names[i]) < 0);
        n = list_all(&e, true, pages[p], names);
        assert_int_equal(n, 20);
        assert_string_equal(names[0], "k000");
        assert_string_equal(names[19], "k057");
    }
    /* latest version follows the last add */
    struct mh_store_key_entry ents[2];
    size_t n;
    bool more;
    assert_int_equal(mh_store_list_keys(e.st, false, "k006", 1, ents, &n, &more), 0);
    assert_int_equal(n, 1);
    assert_true(more);
    assert_string_equal(ents[0].key->name, "k007");
    assert_string_equal(ents[0].latest->version, "v2");
    assert_int_equal(ents[0].key->version_count, 2);
    mh_store_key_entries_free(ents, n);
    /* |after| need not exist; past the end gives nothing */
    assert_int_equal(mh_store_list_keys(e.st, false, "k0065", 2, ents, &n, &more), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ents[0].key->name, "k007");
    assert_string_equal(ents[1].key->name, "k008");
    mh_store_key_entries_free(ents, n);
    assert_int_equal(mh_store_list_keys(e.st, false, "zzz", 2, ents, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_false(more);
    /* max 0 only answers "is there any" */
    assert_int_equal(mh_store_list_keys(e.st, true, NULL, 0, ents, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_true(more);
    env_close(&e);
}

static void test_list_versions(void **state)
{
    (void)state;
    struct env e;
    env_open(&e, "versions");
    activate(&e);
    const char *vers[] = {"v3", "v1", "v5", "v2", "v4"};
    for (int i = 0; i < 5; i++)
        add_version(&e, "key", vers[i]);
    /* a name that is a prefix of another must not see the other's versions */
    add_version(&e, "ke", "x1");
    add_version(&e, "key-2", "y1");
    Mhsm__Internal__KeyVersionRecord *vs[8];
    size_t n;
    bool more;
    char after[8] = "";
    char seen[8][4];
    size_t total = 0;
    for (int guard = 0; guard < 10; guard++) {
        assert_int_equal(mh_store_list_versions(e.st, "key", false, after, 2, vs, &n, &more), 0);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(vs[i]->name, "key");
            snprintf(seen[total++], 4, "%s", vs[i]->version);
            snprintf(after, sizeof after, "%s", vs[i]->version);
        }
        mh_store_versions_free(vs, n);
        if (!more)
            break;
    }
    assert_int_equal(total, 5);
    for (int i = 0; i < 5; i++) {
        char want[4];
        snprintf(want, sizeof want, "v%d", i + 1);
        assert_string_equal(seen[i], want);
    }
    assert_int_equal(mh_store_list_versions(e.st, "ke", false, NULL, 8, vs, &n, &more), 0);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_string_equal(vs[0]->version, "x1");
    mh_store_versions_free(vs, n);
    /* get_version: NULL and "" mean latest */
    Mhsm__Internal__KeyVersionRecord *v;
    assert_int_equal(mh_store_get_version(e.st, "key", NULL, false, NULL, &v), 0);
    assert_string_equal(v->version, "v4");
    mh_store_free(v);
    assert_int_equal(mh_store_get_version(e.st, "key", "v2", false, NULL, &v), 0);
    assert_string_equal(v->version, "v2");
    assert_true(v->enabled);
    mh_store_free(v);
    env_close(&e);
}

/* ---- RBAC reads ------------------------------------------------------------- */

static void put_role_assignment(struct env *e, unsigned n, const char *scope, const char *principal)
{
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__PutRoleAssignment p = MHSM__INTERNAL__PUT_ROLE_ASSIGNMENT__INIT;
    Mhsm__Internal__RoleAssignmentRecord r = MHSM__INTERNAL__ROLE_ASSIGNMENT_RECORD__INIT;
    char name[37];
    snprintf(name, sizeof name, "00000000-0000-4000-8000-%012u", n);
    /* Administrator: an activated HSM needs someone able to manage roles first. */
    r.name = name;
    r.scope = (char *)scope;
    r.role_id = (char *)MH_RBAC_ROLE_ADMIN;
    r.principal_id = (char *)principal;
    p.record = &r;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT;
    cmd.put_role_assignment = &p;
    cmd.time = 4000;
    struct mh_fsm_result res;
    assert_int_equal(apply(e, &cmd, &res), 0);
}

static void put_role_definition(struct env *e, const char *id, const char *name)
{
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__PutRoleDefinition p = MHSM__INTERNAL__PUT_ROLE_DEFINITION__INIT;
    Mhsm__Internal__RoleDefinitionRecord d = MHSM__INTERNAL__ROLE_DEFINITION_RECORD__INIT;
    char *acts[] = {(char *)MH_RBAC_PREFIX "keys/read/action"};
    d.id = (char *)id;
    d.role_name = (char *)name;
    d.data_actions = acts;
    d.n_data_actions = 1;
    p.record = &d;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION;
    cmd.put_role_definition = &p;
    cmd.time = 5000;
    struct mh_fsm_result res;
    assert_int_equal(apply(e, &cmd, &res), 0);
}

/* Lists with |f| in pages of |page| and returns the names' last 4 digits joined. */
static void list_paged(struct env *e, const struct mh_store_ra_filter *f, size_t page, char *out,
                       size_t cap)
{
    char after[37] = "";
    out[0] = 0;
    for (int guard = 0; guard < 100; guard++) {
        Mhsm__Internal__RoleAssignmentRecord **ra = NULL;
        size_t n;
        bool more;
        assert_int_equal(mh_store_list_role_assignments(e->st, f, after, page, &ra, &n, &more), 0);
        assert_true(n <= page);
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(out);
            snprintf(out + l, cap - l, "%s%s", l ? "," : "", ra[i]->name + 32);
            snprintf(after, sizeof after, "%s", ra[i]->name);
        }
        mh_store_records_free(ra, n);
        if (!more)
            return;
        assert_int_equal(n, page);
    }
    fail_msg("paging did not end");
}

static void test_rbac_reads(void **state)
{
    (void)state;
    struct env e;
    env_open(&e, "rbac");
    /* before anything is stored */
    Mhsm__Internal__RoleDefinitionRecord *d = NULL, **defs = NULL;
    Mhsm__Internal__RoleAssignmentRecord *a = NULL, **ras = NULL;
    size_t n = 7;
    bool more = true;
    assert_int_equal(mh_store_list_role_definitions(e.st, &defs, &n), 0);
    assert_int_equal(n, 0);
    assert_null(defs);
    assert_int_equal(mh_store_list_role_assignments(e.st, NULL, NULL, 10, &ras, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_false(more);
    assert_null(ras);
    mh_store_records_free(NULL, 0);

    activate(&e);
    /* keys and rbac records share no namespace */
    add_version(&e, "d", "v1");
    put_role_definition(&e, "00000000-0000-4000-8000-0000000000b2", "second");
    put_role_definition(&e, "00000000-0000-4000-8000-0000000000a1", "first");
    put_role_assignment(&e, 5, "/", "spiffe://mhsm/app");
    put_role_assignment(&e, 3, "/keys/k1", "spiffe://mhsm/app");
    put_role_assignment(&e, 9, "/keys/k1", "spiffe://mhsm/ops");
    put_role_assignment(&e, 1, "/keys", "spiffe://mhsm/ops");
    put_role_assignment(&e, 7, "/keys/k10", "spiffe://mhsm/app");
    put_role_assignment(&e, 2, "/keys/k1", "spiffe://mhsm/app2");

    assert_int_equal(mh_store_list_role_definitions(e.st, &defs, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(defs[0]->role_name, "first");
    assert_string_equal(defs[1]->role_name, "second");
    mh_store_records_free(defs, n);
    assert_int_equal(mh_store_get_role_definition(e.st, "00000000-0000-4000-8000-0000000000a1", &d),
                     0);
    assert_int_equal(d->created, 5000);
    mh_store_free(d);
    /* not found: absent, built-in (never stored), upper case, over-long */
    assert_int_equal(mh_store_get_role_definition(e.st, "00000000-0000-4000-8000-0000000000a2", &d),
                     MH_ENOTFOUND);
    assert_int_equal(mh_store_get_role_definition(e.st, MH_RBAC_ROLE_ADMIN, &d), MH_ENOTFOUND);
    assert_int_equal(mh_store_get_role_definition(e.st, "00000000-0000-4000-8000-0000000000A1", &d),
                     MH_ENOTFOUND);
    char huge[600];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    assert_int_equal(mh_store_get_role_definition(e.st, huge, &d), MH_ENOTFOUND);
    assert_int_equal(mh_store_get_role_definition(e.st, "", &d), MH_ENOTFOUND);
    assert_null(d);
    assert_int_equal(mh_store_get_role_assignment(e.st, "00000000-0000-4000-8000-000000000005", &a),
                     0);
    assert_string_equal(a->scope, "/");
    assert_string_equal(a->principal_id, "spiffe://mhsm/app");
    mh_store_free(a);
    assert_int_equal(mh_store_get_role_assignment(e.st, "00000000-0000-4000-8000-000000000004", &a),
                     MH_ENOTFOUND);
    assert_int_equal(mh_store_get_role_assignment(e.st, huge, &a), MH_ENOTFOUND);
    assert_null(a);

    char got[256];
    for (size_t page = 1; page <= 7; page++) {
        list_paged(&e, NULL, page, got, sizeof got);
        assert_string_equal(got, "0001,0002,0003,0005,0007,0009");
        struct mh_store_ra_filter app = {"spiffe://mhsm/app", NULL};
        list_paged(&e, &app, page, got, sizeof got);
        assert_string_equal(got, "0003,0005,0007");
        struct mh_store_ra_filter k1 = {NULL, "/keys/k1"};
        list_paged(&e, &k1, page, got, sizeof got);
        assert_string_equal(got, "0002,0003,0009");
        struct mh_store_ra_filter both = {"spiffe://mhsm/app", "/keys/k1"};
        list_paged(&e, &both, page, got, sizeof got);
        assert_string_equal(got, "0003");
    }
    /* prefixes of stored strings match nothing */
    struct mh_store_ra_filter f = {"spiffe://mhsm/ap", NULL};
    list_paged(&e, &f, 10, got, sizeof got);
    assert_string_equal(got, "");
    f = (struct mh_store_ra_filter){NULL, "/keys/k"};
    list_paged(&e, &f, 10, got, sizeof got);
    assert_string_equal(got, "");
    f = (struct mh_store_ra_filter){NULL, "/"};
    list_paged(&e, &f, 10, got, sizeof got);
    assert_string_equal(got, "0005");
    /* over-long filter values and |after| find nothing instead of failing */
    f = (struct mh_store_ra_filter){huge, NULL};
    list_paged(&e, &f, 10, got, sizeof got);
    assert_string_equal(got, "");
    f = (struct mh_store_ra_filter){NULL, huge};
    list_paged(&e, &f, 10, got, sizeof got);
    assert_string_equal(got, "");
    assert_int_equal(mh_store_list_role_assignments(e.st, NULL, huge, 10, &ras, &n, &more), 0);
    assert_int_equal(n, 0);
    /* |after| need not be a stored name; max 0 only says whether there is more */
    assert_int_equal(mh_store_list_role_assignments(
                         e.st, NULL, "00000000-0000-4000-8000-000000000004", 10, &ras, &n, &more),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(ras[0]->name + 32, "0005");
    mh_store_records_free(ras, n);
    assert_int_equal(mh_store_list_role_assignments(e.st, NULL, NULL, 0, &ras, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_true(more);
    mh_store_records_free(ras, n);
    /* the key is still there */
    Mhsm__Internal__KeyRecord *key = NULL;
    assert_int_equal(mh_store_get_key(e.st, "d", &key), 0);
    mh_store_free(key);
    env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_wipe_reopen_lock),
        cmocka_unit_test(test_missing_reads),
        cmocka_unit_test(test_list_keys_paging),
        cmocka_unit_test(test_list_versions),
        cmocka_unit_test(test_rbac_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
