#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "consensus/cluster.h"
#include "consensus/fsm.h"
#include "consensus/rbac.h"
#include "consensus/store.h"

typedef Mhsm__Internal__Command Command;

/* protobuf-c string fields are char *; tests point them at literals. */
#define S(lit) ((char *)(lit))

struct env {
    struct mh_store *st;
    struct mh_fsm *fsm;
    uint64_t index;
    int64_t time;
};

static int env_seq;

static void env_open(struct env *e)
{
    char name[32], dir[PATH_MAX];
    snprintf(name, sizeof name, "fsm%d", env_seq++);
    tu_path(dir, sizeof dir, name);
    memset(e, 0, sizeof *e);
    e->time = 1700000000;
    assert_int_equal(mh_store_open(dir, 256u << 20, &e->st), 0);
    assert_int_equal(mh_fsm_new(e->st, &e->fsm), 0);
}

static void env_close(struct env *e)
{
    mh_fsm_free(e->fsm);
    mh_store_close(e->st);
}

static int apply_raw(struct env *e, const uint8_t *b, size_t n, struct mh_fsm_result *res)
{
    int rv = mh_fsm_apply(e->fsm, ++e->index, b, n, res);
    assert_int_equal(rv, 0);
    return res->rc;
}

/* Packs and applies |cmd| (format 1, time = e->time, request id |rid|). */
static int run(struct env *e, Command *cmd, const char *rid, struct mh_fsm_result *res)
{
    struct mh_fsm_result local;
    if (res == NULL)
        res = &local;
    cmd->format = 1;
    cmd->time = e->time;
    cmd->request_id = (char *)(rid ? rid : "");
    size_t n = mhsm__internal__command__get_packed_size(cmd);
    uint8_t *b = malloc(n + 1);
    assert_non_null(b);
    mhsm__internal__command__pack(cmd, b);
    int rc = apply_raw(e, b, n, res);
    free(b);
    return rc;
}

typedef Mhsm__Internal__RoleAssignmentRecord RoleAssignment;
typedef Mhsm__Internal__RoleDefinitionRecord RoleDef;

/* A test GUID: "00000000-0000-0000-0000-" followed by |n| in 12 digits. */
static const char *guid(char buf[37], unsigned n)
{
    snprintf(buf, 37, "00000000-0000-4000-8000-%012u", n);
    return buf;
}

/* Activates with one initial assignment per |admins| entry, named guid(1000 + i),
 * at "/" with Managed HSM Administrator. */
static int activate_admins(struct env *e, uint32_t retention, const char *const *admins, size_t n,
                           struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    Mhsm__Internal__DomainRecord d = MHSM__INTERNAL__DOMAIN_RECORD__INIT;
    uint8_t id[16] = {1, 2, 3};
    RoleAssignment ras[4], *rp[4];
    char names[4][37];
    assert_true(n <= 4);
    for (size_t i = 0; i < n; i++) {
        mhsm__internal__role_assignment_record__init(&ras[i]);
        ras[i].name = (char *)guid(names[i], (unsigned)(1000 + i));
        ras[i].scope = S("/");
        ras[i].role_id = S(MH_RBAC_ROLE_ADMIN);
        ras[i].principal_id = (char *)admins[i];
        ras[i].created = 1; /* the FSM sets the command time */
        rp[i] = &ras[i];
    }
    d.retention_days = retention;
    d.quorum = 2;
    d.domain_id.data = id;
    d.domain_id.len = sizeof id;
    act.domain = &d;
    act.initial_assignments = rp;
    act.n_initial_assignments = n;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    return run(e, &cmd, NULL, res);
}

static int activate(struct env *e, uint32_t retention)
{
    return activate_admins(e, retention, NULL, 0, NULL);
}

struct addopt {
    bool must_exist;
    uint32_t max;
    const char *rid;
};

static int add(struct env *e, const char *name, const char *version, struct addopt o,
               struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__AddKeyVersion a = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    Mhsm__Internal__KeyVersionRecord r = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    Mhsm__Internal__KeyVersionRecord__TagsEntry t =
        MHSM__INTERNAL__KEY_VERSION_RECORD__TAGS_ENTRY__INIT;
    Mhsm__Internal__KeyVersionRecord__TagsEntry *tp = &t;
    char *ops[] = {S("sign"), S("verify")};
    uint8_t sealed[48];
    memset(sealed, 0x5a, sizeof sealed);
    t.key = S("env");
    t.value = S("prod");
    r.name = (char *)name;
    r.version = (char *)version;
    r.kty = 1;
    r.bits = 2048;
    r.enabled = true;
    r.n_key_ops = 2;
    r.key_ops = ops;
    r.n_tags = 1;
    r.tags = &tp;
    r.sealed_material.data = sealed;
    r.sealed_material.len = sizeof sealed;
    r.created = 5; /* the FSM overrides both with the command time */
    r.updated = 6;
    a.record = &r;
    a.must_exist = o.must_exist;
    a.max_versions = o.max;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &a;
    return run(e, &cmd, o.rid, res);
}

static int name_op(struct env *e, int body, const char *name, const char *rid,
                   struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__KeyName kn = MHSM__INTERNAL__KEY_NAME__INIT;
    kn.name = (char *)name;
    cmd.body_case = (Mhsm__Internal__Command__BodyCase)body;
    switch (body) {
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY:
        cmd.delete_key = &kn;
        break;
    case MHSM__INTERNAL__COMMAND__BODY_RECOVER_KEY:
        cmd.recover_key = &kn;
        break;
    default:
        cmd.purge_key = &kn;
        break;
    }
    return run(e, &cmd, rid, res);
}

#define DEL     MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY
#define RECOVER MHSM__INTERNAL__COMMAND__BODY_RECOVER_KEY
#define PURGE   MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY

static int update(struct env *e, Mhsm__Internal__UpdateKeyVersion *u, struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_UPDATE_VERSION;
    cmd.update_version = u;
    return run(e, &cmd, NULL, res);
}

static int restore(struct env *e, Mhsm__Internal__KeyRecord *k,
                   Mhsm__Internal__KeyVersionRecord **vs, size_t n, struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__RestoreKey r = MHSM__INTERNAL__RESTORE_KEY__INIT;
    r.key = k;
    r.versions = vs;
    r.n_versions = n;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_RESTORE_KEY;
    cmd.restore_key = &r;
    return run(e, &cmd, NULL, res);
}

static void snapshot(struct env *e, struct mh_buf *out)
{
    uint8_t *p;
    size_t n;
    assert_int_equal(mh_fsm_snapshot(e->fsm, &p, &n), 0);
    mh_buf_free(out);
    assert_int_equal(mh_buf_append(out, p, n), 0);
    free(p);
}

static Mhsm__Internal__KeyRecord *getkey(struct env *e, const char *name)
{
    Mhsm__Internal__KeyRecord *k = NULL;
    assert_int_equal(mh_store_get_key(e->st, name, &k), 0);
    return k;
}

static Mhsm__Internal__KeyVersionRecord *getver(struct env *e, const char *name, const char *v)
{
    Mhsm__Internal__KeyVersionRecord *r = NULL;
    assert_int_equal(mh_store_get_version(e->st, name, v, true, NULL, &r), 0);
    return r;
}

static const struct addopt NONE = {false, 0, NULL};

/* ---- tests --------------------------------------------------------------- */

static void test_activation(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    struct mh_fsm_result res;
    /* every key command is refused before activation */
    assert_int_equal(add(&e, "k", "v1", NONE, &res), MH_ENOTACTIVE);
    Mhsm__Internal__UpdateKeyVersion u = MHSM__INTERNAL__UPDATE_KEY_VERSION__INIT;
    u.name = S("k");
    assert_int_equal(update(&e, &u, &res), MH_ENOTACTIVE);
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), MH_ENOTACTIVE);
    assert_int_equal(name_op(&e, RECOVER, "k", NULL, &res), MH_ENOTACTIVE);
    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), MH_ENOTACTIVE);
    Mhsm__Internal__KeyRecord k = MHSM__INTERNAL__KEY_RECORD__INIT;
    Mhsm__Internal__KeyVersionRecord v = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    Mhsm__Internal__KeyVersionRecord *vp = &v;
    k.name = v.name = S("k");
    k.latest_version = v.version = S("v1");
    assert_int_equal(restore(&e, &k, &vp, 1, &res), MH_ENOTACTIVE);
    Mhsm__Internal__KeyRecord *kr = NULL;
    assert_int_equal(mh_store_get_key(e.st, "k", &kr), MH_ENOTFOUND);

    e.time = 1234;
    assert_int_equal(activate(&e, 30), 0);
    Mhsm__Internal__DomainRecord *d = NULL;
    assert_int_equal(mh_store_get_domain(e.st, &d), 0);
    assert_true(d->activated);
    assert_int_equal(d->activated_at, 1234);
    assert_int_equal(d->retention_days, 30);
    assert_int_equal(d->quorum, 2);
    assert_int_equal(d->domain_id.len, 16);
    mh_store_free(d);
    e.time = 9999;
    assert_int_equal(activate(&e, 7), MH_EACTIVE);
    assert_int_equal(mh_store_get_domain(e.st, &d), 0);
    assert_int_equal(d->activated_at, 1234);
    assert_int_equal(d->retention_days, 30);
    mh_store_free(d);
    /* Activate without its record is malformed */
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    assert_int_equal(run(&e, &cmd, NULL, &res), MH_EPROTO);
    uint64_t idx;
    assert_int_equal(mh_store_applied_index(e.st, &idx), 0);
    assert_int_equal(idx, e.index);
    env_close(&e);
}

static void test_add_version(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res;
    /* malformed records */
    assert_int_equal(add(&e, "", "v1", NONE, &res), MH_EPROTO);
    assert_int_equal(add(&e, "k", "", NONE, &res), MH_EPROTO);
    assert_int_equal(add(&e, "bad name", "v1", NONE, &res), MH_EPROTO);
    assert_int_equal(add(&e, "k", "v/1", NONE, &res), MH_EPROTO);
    char longname[MH_STORE_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(add(&e, longname, "v1", NONE, &res), MH_EPROTO);
    longname[MH_STORE_NAME_MAX] = 0; /* exactly the maximum is fine */
    assert_int_equal(add(&e, longname, "v1", NONE, &res), 0);
    assert_int_equal(add(&e, "k", "0123456789abcdef0123456789abcdef0", NONE, &res), MH_EPROTO);
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__AddKeyVersion a = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &a; /* no record */
    assert_int_equal(run(&e, &cmd, NULL, &res), MH_EPROTO);

    /* rotate of an unknown key */
    struct addopt rot = {true, 0, NULL};
    assert_int_equal(add(&e, "k", "v1", rot, &res), MH_ENOTFOUND);
    assert_string_equal(res.name, "k");
    /* create */
    e.time = 100;
    assert_int_equal(add(&e, "k", "0123456789abcdef0123456789abcdef", NONE, &res), 0);
    assert_string_equal(res.name, "k");
    assert_string_equal(res.version, "0123456789abcdef0123456789abcdef");
    Mhsm__Internal__KeyRecord *k = getkey(&e, "k");
    assert_int_equal(k->version_count, 1);
    assert_int_equal(k->created, 100);
    assert_false(k->deleted);
    assert_string_equal(k->latest_version, "0123456789abcdef0123456789abcdef");
    mh_store_free(k);
    Mhsm__Internal__KeyVersionRecord *v = getver(&e, "k", "");
    assert_int_equal(v->created, 100);
    assert_int_equal(v->updated, 100);
    assert_int_equal(v->bits, 2048);
    assert_int_equal(v->n_key_ops, 2);
    assert_int_equal(v->n_tags, 1);
    assert_int_equal(v->sealed_material.len, 48);
    mh_store_free(v);
    /* rotate / add a second version: created of the key stays */
    e.time = 200;
    assert_int_equal(add(&e, "k", "v2", rot, &res), 0);
    assert_string_equal(res.version, "v2");
    k = getkey(&e, "k");
    assert_int_equal(k->version_count, 2);
    assert_int_equal(k->created, 100);
    assert_string_equal(k->latest_version, "v2");
    mh_store_free(k);
    /* existing version id */
    assert_int_equal(add(&e, "k", "v2", NONE, &res), MH_EEXIST);
    assert_string_equal(res.version, "v2");
    /* limit: 2 versions exist; max 2 refuses, max 3 accepts, max 0 = unlimited */
    struct addopt lim2 = {false, 2, NULL}, lim3 = {false, 3, NULL};
    assert_int_equal(add(&e, "k", "v3", lim2, &res), MH_ELIMIT);
    assert_int_equal(add(&e, "k", "v3", lim3, &res), 0);
    assert_int_equal(add(&e, "k", "v4", lim3, &res), MH_ELIMIT);
    assert_int_equal(add(&e, "k", "v4", NONE, &res), 0);
    k = getkey(&e, "k");
    assert_int_equal(k->version_count, 4);
    assert_string_equal(k->latest_version, "v4");
    mh_store_free(k);
    /* the failed ones left nothing behind */
    Mhsm__Internal__KeyVersionRecord *r = NULL;
    assert_int_equal(mh_store_get_version(e.st, "k", "v1", true, NULL, &r), MH_ENOTFOUND);
    /* deleted name */
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), 0);
    assert_int_equal(add(&e, "k", "v9", NONE, &res), MH_EDELETED);
    assert_int_equal(add(&e, "k", "v9", rot, &res), MH_EDELETED);
    k = getkey(&e, "k");
    assert_int_equal(k->version_count, 4);
    mh_store_free(k);
    env_close(&e);
}

static void test_update_version(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res;
    Mhsm__Internal__UpdateKeyVersion u = MHSM__INTERNAL__UPDATE_KEY_VERSION__INIT;
    u.name = S("k");
    assert_int_equal(update(&e, &u, &res), MH_ENOTFOUND);
    e.time = 10;
    assert_int_equal(add(&e, "k", "v1", NONE, &res), 0);
    assert_int_equal(add(&e, "k", "v2", NONE, &res), 0);
    u.version = S("v3");
    assert_int_equal(update(&e, &u, &res), MH_ENOTFOUND);
    u.version = S("bad/version");
    assert_int_equal(update(&e, &u, &res), MH_EPROTO);
    u.name = S("");
    u.version = S("");
    assert_int_equal(update(&e, &u, &res), MH_EPROTO);

    /* latest by default: only the set_* fields change */
    u.name = S("k");
    u.version = S("");
    u.set_enabled = true;
    u.enabled = false;
    u.set_expires = true;
    u.expires = 4000000000;
    e.time = 20;
    assert_int_equal(update(&e, &u, &res), 0);
    assert_string_equal(res.name, "k");
    assert_string_equal(res.version, "v2");
    Mhsm__Internal__KeyVersionRecord *v = getver(&e, "k", "v2");
    assert_false(v->enabled);
    assert_int_equal(v->expires, 4000000000);
    assert_int_equal(v->not_before, 0);
    assert_int_equal(v->created, 10);
    assert_int_equal(v->updated, 20);
    assert_int_equal(v->n_tags, 1);
    assert_int_equal(v->n_key_ops, 2);
    assert_int_equal(v->sealed_material.len, 48);
    mh_store_free(v);
    v = getver(&e, "k", "v1"); /* the other version is untouched */
    assert_true(v->enabled);
    assert_int_equal(v->updated, 10);
    mh_store_free(v);

    /* replace tags and key_ops of v1; clear tags of v2 */
    Mhsm__Internal__UpdateKeyVersion u2 = MHSM__INTERNAL__UPDATE_KEY_VERSION__INIT;
    Mhsm__Internal__UpdateKeyVersion__TagsEntry
        t1 = MHSM__INTERNAL__UPDATE_KEY_VERSION__TAGS_ENTRY__INIT,
        t2 = MHSM__INTERNAL__UPDATE_KEY_VERSION__TAGS_ENTRY__INIT;
    Mhsm__Internal__UpdateKeyVersion__TagsEntry *tags[] = {&t1, &t2};
    t1.key = S("a");
    t1.value = S("1");
    t2.key = S("b");
    t2.value = S("2");
    char *ops[] = {S("encrypt")};
    u2.name = S("k");
    u2.version = S("v1");
    u2.set_tags = true;
    u2.n_tags = 2;
    u2.tags = tags;
    u2.set_key_ops = true;
    u2.n_key_ops = 1;
    u2.key_ops = ops;
    u2.set_not_before = true;
    u2.not_before = 50;
    e.time = 30;
    assert_int_equal(update(&e, &u2, &res), 0);
    assert_string_equal(res.version, "v1");
    v = getver(&e, "k", "v1");
    assert_int_equal(v->n_tags, 2);
    assert_string_equal(v->tags[1]->key, "b");
    assert_string_equal(v->tags[1]->value, "2");
    assert_int_equal(v->n_key_ops, 1);
    assert_string_equal(v->key_ops[0], "encrypt");
    assert_int_equal(v->not_before, 50);
    assert_true(v->enabled);
    assert_int_equal(v->updated, 30);
    mh_store_free(v);
    Mhsm__Internal__UpdateKeyVersion u3 = MHSM__INTERNAL__UPDATE_KEY_VERSION__INIT;
    u3.name = S("k");
    u3.version = S("v2");
    u3.set_tags = true;
    assert_int_equal(update(&e, &u3, &res), 0);
    v = getver(&e, "k", "v2");
    assert_int_equal(v->n_tags, 0);
    assert_int_equal(v->n_key_ops, 2);
    mh_store_free(v);

    /* deleted keys cannot be updated */
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), 0);
    assert_int_equal(update(&e, &u, &res), MH_ENOTFOUND);
    env_close(&e);
}

static void test_delete_recover_purge(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res;
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), MH_ENOTFOUND);
    assert_int_equal(name_op(&e, RECOVER, "k", NULL, &res), MH_ENOTFOUND);
    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), MH_ENOTFOUND);
    assert_int_equal(name_op(&e, DEL, "", NULL, &res), MH_EPROTO);
    assert_int_equal(add(&e, "k", "v1", NONE, &res), 0);
    assert_int_equal(add(&e, "k", "v2", NONE, &res), 0);
    assert_int_equal(add(&e, "k-other", "v1", NONE, &res), 0);
    assert_int_equal(name_op(&e, RECOVER, "k", NULL, &res), MH_ENOTDELETED);
    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), MH_ENOTDELETED);

    e.time = 1000;
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), 0);
    assert_string_equal(res.name, "k");
    assert_string_equal(res.version, "v2");
    Mhsm__Internal__KeyRecord *k = getkey(&e, "k");
    assert_true(k->deleted);
    assert_int_equal(k->deleted_date, 1000);
    assert_int_equal(k->scheduled_purge_date, 1000 + 7 * 86400);
    mh_store_free(k);
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), MH_ENOTFOUND);

    assert_int_equal(name_op(&e, RECOVER, "k", NULL, &res), 0);
    assert_string_equal(res.version, "v2");
    k = getkey(&e, "k");
    assert_false(k->deleted);
    assert_int_equal(k->deleted_date, 0);
    assert_int_equal(k->scheduled_purge_date, 0);
    assert_int_equal(k->version_count, 2);
    mh_store_free(k);

    /* a time near the end of int64 saturates instead of overflowing */
    e.time = INT64_MAX - 5;
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), 0);
    k = getkey(&e, "k");
    assert_int_equal(k->scheduled_purge_date, INT64_MAX);
    mh_store_free(k);

    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), 0);
    assert_string_equal(res.name, "k");
    Mhsm__Internal__KeyRecord *gone = NULL;
    assert_int_equal(mh_store_get_key(e.st, "k", &gone), MH_ENOTFOUND);
    Mhsm__Internal__KeyVersionRecord *v = NULL;
    assert_int_equal(mh_store_get_version(e.st, "k", "v1", true, NULL, &v), MH_ENOTFOUND);
    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), MH_ENOTFOUND);
    /* the neighbour sharing the prefix keeps its versions */
    v = getver(&e, "k-other", "v1");
    mh_store_free(v);
    /* the purged name is free again */
    assert_int_equal(add(&e, "k", "v1", NONE, &res), 0);
    k = getkey(&e, "k");
    assert_int_equal(k->version_count, 1);
    mh_store_free(k);
    env_close(&e);
}

static void test_restore_key(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res;
    Mhsm__Internal__KeyRecord k = MHSM__INTERNAL__KEY_RECORD__INIT;
    Mhsm__Internal__KeyVersionRecord v1 = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT,
                                     v2 = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    Mhsm__Internal__KeyVersionRecord *vs[] = {&v1, &v2};
    k.name = v1.name = v2.name = S("r");
    k.latest_version = S("b2");
    k.version_count = 77; /* recomputed */
    k.created = 42;
    k.deleted = true; /* cleared */
    k.deleted_date = 5;
    v1.version = S("a1");
    v1.created = 40;
    v2.version = S("b2");
    v2.created = 41;
    v2.enabled = true;

    /* malformed restores */
    assert_int_equal(restore(&e, NULL, vs, 2, &res), MH_EPROTO);
    assert_int_equal(restore(&e, &k, vs, 0, &res), MH_EPROTO);
    k.latest_version = S("c3");
    assert_int_equal(restore(&e, &k, vs, 2, &res), MH_EPROTO);
    k.latest_version = S("b2");
    v1.name = S("other");
    assert_int_equal(restore(&e, &k, vs, 2, &res), MH_EPROTO);
    v1.name = S("r");
    v1.version = S("b2"); /* duplicate ids */
    assert_int_equal(restore(&e, &k, vs, 2, &res), MH_EPROTO);
    v1.version = S("a1");
    Mhsm__Internal__KeyRecord *got = NULL;
    assert_int_equal(mh_store_get_key(e.st, "r", &got), MH_ENOTFOUND);
    Mhsm__Internal__KeyVersionRecord *gv = NULL;
    assert_int_equal(mh_store_get_version(e.st, "r", "a1", true, NULL, &gv), MH_ENOTFOUND);

    assert_int_equal(restore(&e, &k, vs, 2, &res), 0);
    assert_string_equal(res.name, "r");
    assert_string_equal(res.version, "b2");
    got = getkey(&e, "r");
    assert_false(got->deleted);
    assert_int_equal(got->deleted_date, 0);
    assert_int_equal(got->version_count, 2);
    assert_int_equal(got->created, 42);
    mh_store_free(got);
    gv = getver(&e, "r", "a1");
    assert_int_equal(gv->created, 40);
    mh_store_free(gv);
    gv = getver(&e, "r", "");
    assert_string_equal(gv->version, "b2");
    assert_true(gv->enabled);
    mh_store_free(gv);

    /* onto an existing name, then onto a deleted one */
    assert_int_equal(restore(&e, &k, vs, 2, &res), MH_EEXIST);
    assert_int_equal(name_op(&e, DEL, "r", NULL, &res), 0);
    assert_int_equal(restore(&e, &k, vs, 2, &res), MH_EDELETED);
    env_close(&e);
}

static void test_request_ids(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res, res2;
    struct addopt o = {false, 0, "req-1"};
    e.time = 500;
    assert_int_equal(add(&e, "k", "v1", o, &res), 0);
    uint64_t first_index = e.index;
    /* the retry carries the same id (and here a different version): applied once */
    e.time = 600;
    assert_int_equal(add(&e, "k", "v2", o, &res2), 0);
    assert_string_equal(res2.name, "k");
    assert_string_equal(res2.version, "v1");
    Mhsm__Internal__KeyRecord *k = getkey(&e, "k");
    assert_int_equal(k->version_count, 1);
    mh_store_free(k);
    Mhsm__Internal__RequestRecord *r = NULL;
    assert_int_equal(mh_store_get_request(e.st, "req-1", &r), 0);
    assert_int_equal(r->index, first_index);
    assert_int_equal(r->result, 0);
    assert_string_equal(r->name, "k");
    assert_string_equal(r->version, "v1");
    assert_int_equal(r->time, 500);
    mh_store_free(r);
    uint64_t idx;
    assert_int_equal(mh_store_applied_index(e.st, &idx), 0);
    assert_int_equal(idx, e.index); /* the duplicate still advances the index */

    /* failures are recorded too: the retry sees the first failure even after
     * the cause went away */
    assert_int_equal(name_op(&e, RECOVER, "k", "req-2", &res), MH_ENOTDELETED);
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), 0);
    assert_int_equal(name_op(&e, RECOVER, "k", "req-2", &res), MH_ENOTDELETED);
    k = getkey(&e, "k");
    assert_true(k->deleted);
    mh_store_free(k);
    assert_int_equal(mh_store_get_request(e.st, "req-2", &r), 0);
    assert_int_equal(r->result, MH_ENOTDELETED);
    mh_store_free(r);
    /* ids are per request, not per command kind */
    assert_int_equal(name_op(&e, RECOVER, "k", "req-3", &res), 0);
    /* an id reused for another request (other key, or other kind) is refused and
     * reveals nothing of the first request */
    struct addopt reuse = {false, 0, "req-1"};
    assert_int_equal(add(&e, "other", "v9", reuse, &res), MH_EREQUESTID);
    assert_string_equal(res.name, "");
    assert_string_equal(res.version, "");
    assert_int_equal(mh_store_get_key(e.st, "other", &k), MH_ENOTFOUND);
    assert_int_equal(name_op(&e, DEL, "k", "req-1", &res), MH_EREQUESTID);
    k = getkey(&e, "k");
    assert_false(k->deleted);
    mh_store_free(k);
    /* the first request's record is kept: its genuine retry still answers */
    assert_int_equal(add(&e, "k", "v3", o, &res), 0);
    assert_string_equal(res.version, "v1");

    /* an id at the maximum is fine; one byte more is malformed and not recorded */
    char rid[MH_STORE_REQUEST_ID_MAX + 2];
    memset(rid, 'r', sizeof rid - 1);
    rid[sizeof rid - 1] = 0;
    struct addopt longid = {false, 0, rid};
    assert_int_equal(add(&e, "k2", "v1", longid, &res), MH_EPROTO);
    assert_int_equal(mh_store_get_key(e.st, "k2", &k), MH_ENOTFOUND);
    rid[MH_STORE_REQUEST_ID_MAX] = 0;
    assert_int_equal(add(&e, "k2", "v1", longid, &res), 0);
    assert_int_equal(add(&e, "k2", "v1", longid, &res), 0); /* not EEXIST: deduplicated */
    env_close(&e);
}

static void test_skip_old_index(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res;
    e.index = 9; /* next apply is index 10 */
    assert_int_equal(add(&e, "k", "v1", NONE, &res), 0);
    struct mh_buf before = {0}, after = {0};
    snapshot(&e, &before);
    /* an entry at or below the applied index changes nothing, whatever it says */
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__KeyName kn = MHSM__INTERNAL__KEY_NAME__INIT;
    kn.name = S("k");
    cmd.format = 1;
    cmd.body_case = DEL;
    cmd.delete_key = &kn;
    uint8_t b[64];
    size_t n = mhsm__internal__command__pack(&cmd, b);
    for (uint64_t i = 0; i <= 10; i++) {
        memset(&res, 0x7f, sizeof res);
        assert_int_equal(mh_fsm_apply(e.fsm, i, b, n, &res), 0);
        assert_int_equal(res.rc, 0);
        assert_string_equal(res.name, "");
    }
    static const uint8_t junk[] = {0xff, 0xff};
    assert_int_equal(mh_fsm_apply(e.fsm, 3, junk, sizeof junk, &res), 0);
    assert_int_equal(res.rc, 0);
    snapshot(&e, &after);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    /* index 11 applies */
    assert_int_equal(mh_fsm_apply(e.fsm, 11, b, n, &res), 0);
    assert_int_equal(res.rc, 0);
    Mhsm__Internal__KeyRecord *k = getkey(&e, "k");
    assert_true(k->deleted);
    mh_store_free(k);
    mh_buf_free(&before);
    mh_buf_free(&after);
    env_close(&e);
}

/* Applies |b| as a malformed entry and checks: MH_EPROTO, index recorded, and no
 * other change (snapshot equal to |ref| but for the index). */
static void expect_proto(struct env *e, const uint8_t *b, size_t n)
{
    struct mh_buf s1 = {0}, s2 = {0};
    snapshot(e, &s1);
    struct mh_fsm_result res;
    assert_int_equal(apply_raw(e, b, n, &res), MH_EPROTO);
    assert_string_equal(res.name, "");
    uint64_t idx;
    assert_int_equal(mh_store_applied_index(e->st, &idx), 0);
    assert_int_equal(idx, e->index);
    snapshot(e, &s2);
    /* only the 8 bytes of the applied index (and the digest) differ */
    assert_int_equal(s1.len, s2.len);
    size_t diff = 0;
    for (size_t i = 0; i < s1.len - 32; i++)
        diff += s1.data[i] != s2.data[i];
    assert_true(diff <= 8);
    mh_buf_free(&s1);
    mh_buf_free(&s2);
}

/* A packed Command{format 1, update_version{name "amp", set_tags, |count| empty
 * tags}} written by hand into |out|. Returns its length. */
static size_t amp_update(uint8_t *out, size_t count)
{
    size_t inner = 5 + 2 + 2 * count; /* name, set_tags, tags */
    size_t p = 0;
    out[p++] = 0x08; /* format = 1 */
    out[p++] = 0x01;
    out[p++] = 0x62; /* field 12 (update_version), length-delimited */
    for (size_t v = inner;; v >>= 7) {
        out[p++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    size_t start = p;
    out[p++] = 0x0a; /* name */
    out[p++] = 0x03;
    memcpy(out + p, "amp", 3);
    p += 3;
    out[p++] = 0x48; /* set_tags = true */
    out[p++] = 0x01;
    for (size_t i = 0; i < count; i++) {
        out[p++] = 0x52; /* tags entry, empty */
        out[p++] = 0x00;
    }
    assert_int_equal(p - start, inner);
    return p;
}

static void test_malformed_entries(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    assert_int_equal(activate(&e, 7), 0);
    struct mh_fsm_result res;
    assert_int_equal(add(&e, "k", "v1", NONE, &res), 0);

    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    expect_proto(&e, garbage, sizeof garbage);
    expect_proto(&e, NULL, 0); /* empty: format 0, no body */

    /* a valid command, truncated at every length */
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__KeyName kn = MHSM__INTERNAL__KEY_NAME__INIT;
    kn.name = S("k");
    cmd.format = 1;
    cmd.request_id = S("trunc");
    cmd.time = 77;
    cmd.body_case = DEL;
    cmd.delete_key = &kn;
    uint8_t b[128];
    size_t n = mhsm__internal__command__pack(&cmd, b);
    /* (the body is the last field, so every cut either fails to parse or
     * loses the body) */
    for (size_t cut = 0; cut < n; cut++)
        expect_proto(&e, b, cut);
    Mhsm__Internal__KeyRecord *k = getkey(&e, "k");
    assert_false(k->deleted);
    mh_store_free(k);
    Mhsm__Internal__RequestRecord *r = NULL;
    assert_int_equal(mh_store_get_request(e.st, "trunc", &r), MH_ENOTFOUND);

    /* wrong format, no body, unknown body field (tag 20) */
    cmd.format = 2;
    n = mhsm__internal__command__pack(&cmd, b);
    expect_proto(&e, b, n);
    static const uint8_t nobody[] = {0x08, 0x01, 0x18, 0x05};
    expect_proto(&e, nobody, sizeof nobody);
    static const uint8_t unknown_body[] = {0x08, 0x01, 0xa2, 0x01, 0x02, 0x0a, 0x00};
    expect_proto(&e, unknown_body, sizeof unknown_body);

    /* oversized: refused before unpacking, even when the bytes would parse */
    size_t big = MH_FSM_MAX_COMMAND + 1;
    uint8_t *huge = calloc(1, big);
    assert_non_null(huge);
    cmd.format = 1;
    n = mhsm__internal__command__pack(&cmd, huge);
    /* pad with an unknown bytes field (tag 30) that swallows the rest */
    size_t pad = big - n;
    huge[n] = 0xf2;
    huge[n + 1] = 0x01;
    size_t len = pad - 2 - 4;
    huge[n + 2] = (uint8_t)(0x80 | (len & 0x7f));
    huge[n + 3] = (uint8_t)(0x80 | ((len >> 7) & 0x7f));
    huge[n + 4] = (uint8_t)(0x80 | ((len >> 14) & 0x7f));
    huge[n + 5] = (uint8_t)(len >> 21);
    expect_proto(&e, huge, big);
    k = getkey(&e, "k");
    assert_false(k->deleted);
    mh_store_free(k);
    /* the same bytes one under the limit do apply (the unknown field is ignored) */
    len--;
    huge[n + 2] = (uint8_t)(0x80 | (len & 0x7f));
    huge[n + 3] = (uint8_t)(0x80 | ((len >> 7) & 0x7f));
    huge[n + 4] = (uint8_t)(0x80 | ((len >> 14) & 0x7f));
    huge[n + 5] = (uint8_t)(len >> 21);
    assert_int_equal(apply_raw(&e, huge, big - 1, &res), 0);
    k = getkey(&e, "k");
    assert_true(k->deleted);
    mh_store_free(k);
    free(huge);

    /* allocation amplification: an UpdateKeyVersion with empty tag entries costs
     * 2 wire bytes and ~48 bytes of memory each. 100 apply; 200k exceed the
     * unpack budget and are refused deterministically. */
    assert_int_equal(add(&e, "amp", "v1", NONE, &res), 0);
    uint8_t *amp = malloc(400100);
    assert_non_null(amp);
    size_t len_small = amp_update(amp, 100);
    assert_int_equal(apply_raw(&e, amp, len_small, &res), 0);
    Mhsm__Internal__KeyVersionRecord *av = getver(&e, "amp", "v1");
    assert_int_equal(av->n_tags, 100);
    mh_store_free(av);
    size_t len_big = amp_update(amp, 200000);
    expect_proto(&e, amp, len_big);
    free(amp);
    env_close(&e);
}

/* Mutated commands never make apply fail and give the same result and state on
 * two stores. */
static void test_mutations_deterministic(void **state)
{
    (void)state;
    struct env a, b;
    env_open(&a);
    env_open(&b);
    assert_int_equal(activate(&a, 7), 0);
    assert_int_equal(activate(&b, 7), 0);
    struct mh_fsm_result ra, rb;
    assert_int_equal(add(&a, "k", "v1", NONE, &ra), 0);
    assert_int_equal(add(&b, "k", "v1", NONE, &rb), 0);

    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__AddKeyVersion add_body = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    Mhsm__Internal__KeyVersionRecord r = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    r.name = S("k");
    r.version = S("v2");
    r.enabled = true;
    add_body.record = &r;
    add_body.max_versions = 5;
    cmd.format = 1;
    cmd.request_id = S("m");
    cmd.time = 5;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &add_body;
    uint8_t seed[256];
    size_t n = mhsm__internal__command__pack(&cmd, seed);
    struct tu_rng rng = {0x1234};
    struct mh_buf m = {0};
    for (int i = 0; i < 2000; i++) {
        tu_mutate(&rng, seed, n, &m);
        assert_int_equal(mh_fsm_apply(a.fsm, ++a.index, m.data, m.len, &ra), 0);
        assert_int_equal(mh_fsm_apply(b.fsm, ++b.index, m.data, m.len, &rb), 0);
        assert_int_equal(ra.rc, rb.rc);
        assert_string_equal(ra.name, rb.name);
        assert_string_equal(ra.version, rb.version);
    }
    mh_buf_free(&m);
    struct mh_buf sa = {0}, sb = {0};
    snapshot(&a, &sa);
    snapshot(&b, &sb);
    assert_int_equal(sa.len, sb.len);
    assert_memory_equal(sa.data, sb.data, sa.len);
    mh_buf_free(&sa);
    mh_buf_free(&sb);
    env_close(&a);
    env_close(&b);
}

/* A mixed history, successes and failures, with request ids. */
static void rbac_history(struct env *e);
static void compare_rbac(struct env *a, struct env *b);

static void history(struct env *e)
{
    struct mh_fsm_result res;
    const char *admins[] = {"spiffe://mhsm/admin", "spiffe://mhsm/admin2"};
    assert_int_equal(activate_admins(e, 7, admins, 2, &res), 0);
    rbac_history(e);
    for (int i = 0; i < 30; i++) {
        char name[16], rid[16];
        snprintf(name, sizeof name, "key-%02d", i % 11);
        snprintf(rid, sizeof rid, "rid-%d", i % 13);
        struct addopt o = {i % 4 == 0, (uint32_t)(i % 5), rid};
        char ver[8];
        snprintf(ver, sizeof ver, "v%d", i);
        e->time = 1000 + i;
        (void)add(e, name, ver, o, &res);
        if (i % 6 == 0)
            (void)name_op(e, DEL, name, NULL, &res);
        if (i % 9 == 0)
            (void)name_op(e, PURGE, name, NULL, &res);
        if (i % 7 == 0)
            (void)name_op(e, RECOVER, name, NULL, &res);
    }
    Mhsm__Internal__UpdateKeyVersion u = MHSM__INTERNAL__UPDATE_KEY_VERSION__INIT;
    u.name = S("key-05");
    u.set_enabled = true;
    (void)update(e, &u, &res);
}

static void test_determinism(void **state)
{
    (void)state;
    struct env a, b;
    env_open(&a);
    env_open(&b);
    history(&a);
    history(&b);
    struct mh_buf sa = {0}, sb = {0};
    compare_rbac(&a, &b);
    snapshot(&a, &sa);
    snapshot(&b, &sb);
    assert_true(sa.len > 1000);
    assert_int_equal(sa.len, sb.len);
    assert_memory_equal(sa.data, sb.data, sa.len);
    mh_buf_free(&sa);
    mh_buf_free(&sb);
    env_close(&a);
    env_close(&b);
}

static void compare_reads(struct env *a, struct env *b)
{
    uint64_t ia, ib;
    assert_int_equal(mh_store_applied_index(a->st, &ia), 0);
    assert_int_equal(mh_store_applied_index(b->st, &ib), 0);
    assert_int_equal(ia, ib);
    Mhsm__Internal__DomainRecord *da, *db;
    assert_int_equal(mh_store_get_domain(a->st, &da), 0);
    assert_int_equal(mh_store_get_domain(b->st, &db), 0);
    assert_int_equal(da->activated_at, db->activated_at);
    assert_int_equal(da->retention_days, db->retention_days);
    mh_store_free(da);
    mh_store_free(db);
    for (int del = 0; del < 2; del++) {
        struct mh_store_key_entry ea[32], eb[32];
        size_t na, nb;
        bool ma, mb;
        assert_int_equal(mh_store_list_keys(a->st, del, NULL, 32, ea, &na, &ma), 0);
        assert_int_equal(mh_store_list_keys(b->st, del, NULL, 32, eb, &nb, &mb), 0);
        assert_int_equal(na, nb);
        assert_int_equal(ma, mb);
        for (size_t i = 0; i < na; i++) {
            assert_string_equal(ea[i].key->name, eb[i].key->name);
            assert_string_equal(ea[i].key->latest_version, eb[i].key->latest_version);
            assert_int_equal(ea[i].key->version_count, eb[i].key->version_count);
            assert_int_equal(ea[i].key->deleted_date, eb[i].key->deleted_date);
            assert_int_equal(ea[i].latest->created, eb[i].latest->created);
            Mhsm__Internal__KeyVersionRecord *va[64], *vb[64];
            size_t nva, nvb;
            assert_int_equal(
                mh_store_list_versions(a->st, ea[i].key->name, true, NULL, 64, va, &nva, &ma), 0);
            assert_int_equal(
                mh_store_list_versions(b->st, ea[i].key->name, true, NULL, 64, vb, &nvb, &mb), 0);
            assert_int_equal(nva, nvb);
            for (size_t j = 0; j < nva; j++) {
                assert_string_equal(va[j]->version, vb[j]->version);
                assert_int_equal(va[j]->enabled, vb[j]->enabled);
            }
            mh_store_versions_free(va, nva);
            mh_store_versions_free(vb, nvb);
        }
        mh_store_key_entries_free(ea, na);
        mh_store_key_entries_free(eb, nb);
    }
    for (int i = 0; i < 13; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "rid-%d", i);
        Mhsm__Internal__RequestRecord *ra, *rb;
        assert_int_equal(mh_store_get_request(a->st, rid, &ra), 0);
        assert_int_equal(mh_store_get_request(b->st, rid, &rb), 0);
        assert_int_equal(ra->index, rb->index);
        assert_int_equal(ra->result, rb->result);
        mh_store_free(ra);
        mh_store_free(rb);
    }
}

static void test_snapshot_restore(void **state)
{
    (void)state;
    struct env a, b;
    env_open(&a);
    env_open(&b);
    history(&a);
    /* |b| holds unrelated state that the restore must replace entirely */
    struct mh_fsm_result res;
    assert_int_equal(activate(&b, 90), 0);
    assert_int_equal(add(&b, "only-in-b", "v1", NONE, &res), 0);

    struct mh_buf s = {0}, s2 = {0};
    snapshot(&a, &s);
    /* corrupt snapshots are refused and leave the target as it was */
    struct mh_buf bad = {0};
    assert_int_equal(mh_buf_append(&bad, s.data, s.len), 0);
    for (size_t i = 0; i < bad.len; i += 97) {
        bad.data[i] ^= 0x20;
        assert_int_equal(mh_fsm_restore(b.fsm, bad.data, bad.len), MH_ECORRUPT);
        bad.data[i] ^= 0x20;
    }
    for (size_t cut = 0; cut < s.len; cut += 61)
        assert_int_equal(mh_fsm_restore(b.fsm, s.data, cut), MH_ECORRUPT);
    mh_buf_free(&bad);
    Mhsm__Internal__KeyRecord *k = getkey(&b, "only-in-b");
    mh_store_free(k);

    assert_int_equal(mh_fsm_restore(b.fsm, s.data, s.len), 0);
    assert_int_equal(mh_store_get_key(b.st, "only-in-b", &k), MH_ENOTFOUND);
    compare_reads(&a, &b);
    compare_rbac(&a, &b);
    snapshot(&b, &s2);
    assert_int_equal(s.len, s2.len);
    assert_memory_equal(s.data, s2.data, s.len);
    /* both continue identically */
    a.index = b.index = 1000;
    b.time = a.time;
    assert_int_equal(add(&a, "after", "v1", NONE, &res), 0);
    assert_int_equal(add(&b, "after", "v1", NONE, &res), 0);
    snapshot(&a, &s);
    snapshot(&b, &s2);
    assert_int_equal(s.len, s2.len);
    assert_memory_equal(s.data, s2.data, s.len);
    mh_buf_free(&s);
    mh_buf_free(&s2);
    env_close(&a);
    env_close(&b);
}

struct hook_seen {
    int calls;
    int last_rc;
    int last_body;
};

static void hook(void *arg, const Command *cmd, const struct mh_fsm_result *res)
{
    struct hook_seen *h = arg;
    h->calls++;
    h->last_rc = res->rc;
    h->last_body = (int)cmd->body_case;
}

static void test_hook(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    struct hook_seen h = {0, 0, 0};
    mh_fsm_set_hook(e.fsm, hook, &h);
    assert_int_equal(activate(&e, 7), 0);
    assert_int_equal(h.calls, 1);
    struct mh_fsm_result res;
    assert_int_equal(add(&e, "k", "v1", NONE, &res), 0);
    assert_int_equal(name_op(&e, DEL, "k", NULL, &res), 0);
    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), 0);
    assert_int_equal(h.calls, 4);
    assert_int_equal(h.last_body, PURGE);
    assert_int_equal(name_op(&e, PURGE, "k", NULL, &res), MH_ENOTFOUND);
    assert_int_equal(h.calls, 5);
    assert_int_equal(h.last_rc, MH_ENOTFOUND);
    static const uint8_t junk[] = {0xff};
    assert_int_equal(apply_raw(&e, junk, 1, &res), MH_EPROTO);
    assert_int_equal(h.calls, 5);
    env_close(&e);
}

/* consensus/cluster pads entries to a multiple of 8 with an unknown field
 * MH_CLUSTER_PAD_FIELD: the FSM must treat padded and bare commands alike. */
static void test_padded_entries(void **state)
{
    (void)state;
    struct env a, b;
    env_open(&a);
    env_open(&b);
    assert_int_equal(activate(&a, 7), 0);
    assert_int_equal(activate(&b, 7), 0);
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__AddKeyVersion add_body = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    Mhsm__Internal__KeyVersionRecord r = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    add_body.record = &r;
    cmd.format = 1;
    cmd.time = 99;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &add_body;
    for (size_t pad = 3; pad <= 10; pad++) {
        char name[16];
        snprintf(name, sizeof name, "pad%zu", pad);
        r.name = name;
        r.version = S("v1");
        uint8_t buf[128];
        size_t n = mhsm__internal__command__pack(&cmd, buf);
        struct mh_fsm_result ra, rb;
        assert_int_equal(apply_raw(&a, buf, n, &ra), 0);
        buf[n] = MH_CLUSTER_PAD_TAG0;
        buf[n + 1] = MH_CLUSTER_PAD_TAG1;
        buf[n + 2] = (uint8_t)(pad - 3);
        memset(buf + n + 3, 0, pad - 3);
        assert_int_equal(apply_raw(&b, buf, n + pad, &rb), 0);
        assert_string_equal(ra.name, rb.name);
    }
    struct mh_buf sa = {0}, sb = {0};
    snapshot(&a, &sa);
    snapshot(&b, &sb);
    assert_int_equal(sa.len, sb.len);
    assert_memory_equal(sa.data, sb.data, sa.len);
    mh_buf_free(&sa);
    mh_buf_free(&sb);
    env_close(&a);
    env_close(&b);
}

/* ---- RBAC ------------------------------------------------------------------ */

#define A(s) MH_RBAC_PREFIX s

struct defopt {
    const char *name;
    const char *desc;
    char **data;
    size_t n_data;
    char **not_data;
    size_t n_not;
    uint32_t max;
    const char *rid;
};

static int put_def(struct env *e, const char *id, struct defopt o, struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__PutRoleDefinition p = MHSM__INTERNAL__PUT_ROLE_DEFINITION__INIT;
    RoleDef d = MHSM__INTERNAL__ROLE_DEFINITION_RECORD__INIT;
    static char *one[] = {S(A("keys/read/action"))};
    d.id = (char *)id;
    d.role_name = (char *)(o.name ? o.name : "custom");
    d.description = (char *)(o.desc ? o.desc : "");
    d.data_actions = o.data ? o.data : one;
    d.n_data_actions = o.data ? o.n_data : 1;
    d.not_data_actions = o.not_data;
    d.n_not_data_actions = o.n_not;
    d.created = d.updated = 3; /* overridden by the FSM */
    p.record = &d;
    p.max_custom_roles = o.max;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION;
    cmd.put_role_definition = &p;
    return run(e, &cmd, o.rid, res);
}

static int del_def(struct env *e, const char *id, struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__DeleteRoleDefinition d = MHSM__INTERNAL__DELETE_ROLE_DEFINITION__INIT;
    d.id = (char *)id;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_DEFINITION;
    cmd.delete_role_definition = &d;
    return run(e, &cmd, NULL, res);
}

struct raopt {
    uint32_t max_hsm, max_key;
    const char *rid;
};

static const struct raopt RA50 = {50, 10, NULL};

static int put_ra(struct env *e, const char *name, const char *scope, const char *role,
                  const char *principal, struct raopt o, struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__PutRoleAssignment p = MHSM__INTERNAL__PUT_ROLE_ASSIGNMENT__INIT;
    RoleAssignment r = MHSM__INTERNAL__ROLE_ASSIGNMENT_RECORD__INIT;
    r.name = (char *)name;
    r.scope = (char *)scope;
    r.role_id = (char *)role;
    r.principal_id = (char *)principal;
    p.record = &r;
    p.max_hsm_scope = o.max_hsm;
    p.max_per_key = o.max_key;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT;
    cmd.put_role_assignment = &p;
    return run(e, &cmd, o.rid, res);
}

static int del_ra(struct env *e, const char *name, struct mh_fsm_result *res)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__DeleteRoleAssignment d = MHSM__INTERNAL__DELETE_ROLE_ASSIGNMENT__INIT;
    d.name = (char *)name;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT;
    cmd.delete_role_assignment = &d;
    return run(e, &cmd, NULL, res);
}

/* The names listed for |principal| / |scope| (NULL: any), joined with ",". */
static void ra_names(struct env *e, const char *principal, const char *scope, char *out, size_t cap)
{
    struct mh_store_ra_filter f = {principal, scope};
    RoleAssignment **ra = NULL;
    size_t n;
    bool more;
    assert_int_equal(mh_store_list_role_assignments(e->st, &f, NULL, 100, &ra, &n, &more), 0);
    assert_false(more);
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (principal != NULL)
            assert_string_equal(ra[i]->principal_id, principal);
        if (scope != NULL)
            assert_string_equal(ra[i]->scope, scope);
        /* only the last 4 digits: the test GUIDs differ there */
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%s", l ? "," : "", ra[i]->name + 32);
    }
    mh_store_records_free(ra, n);
}

static bool ra_exists(struct env *e, const char *name)
{
    RoleAssignment *r = NULL;
    int rv = mh_store_get_role_assignment(e->st, name, &r);
    assert_true(rv == 0 || rv == MH_ENOTFOUND);
    mh_store_free(r);
    return rv == 0;
}

static void test_rbac_activation(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    struct mh_fsm_result res;
    char g[37], g2[37];
    /* role commands need an activated HSM */
    assert_int_equal(put_def(&e, guid(g, 1), (struct defopt){0}, &res), MH_ENOTACTIVE);
    assert_int_equal(put_ra(&e, guid(g, 1), "/", MH_RBAC_ROLE_ADMIN, "p", RA50, &res),
                     MH_ENOTACTIVE);
    assert_int_equal(del_ra(&e, guid(g, 1), &res), MH_ENOTACTIVE);
    assert_int_equal(del_def(&e, guid(g, 1), &res), MH_ENOTACTIVE);

    /* a malformed initial assignment refuses the whole activation */
    const char *bad[] = {"spiffe://mhsm/admin", "has space"};
    assert_int_equal(activate_admins(&e, 7, bad, 2, &res), MH_EPROTO);
    Mhsm__Internal__DomainRecord *d = NULL;
    assert_int_equal(mh_store_get_domain(e.st, &d), MH_ENOTFOUND);
    assert_false(ra_exists(&e, guid(g, 1000)));

    e.time = 4242;
    const char *admins[] = {"spiffe://mhsm/admin", "spiffe://mhsm/admin2", "spiffe://mhsm/admin"};
    assert_int_equal(activate_admins(&e, 7, admins, 3, &res), 0);
    assert_int_equal(mh_store_get_domain(e.st, &d), 0);
    mh_store_free(d);
    RoleAssignment *r = NULL;
    assert_int_equal(mh_store_get_role_assignment(e.st, guid(g, 1000), &r), 0);
    assert_string_equal(r->scope, "/");
    assert_string_equal(r->role_id, MH_RBAC_ROLE_ADMIN);
    assert_string_equal(r->principal_id, "spiffe://mhsm/admin");
    assert_int_equal(r->created, 4242);
    mh_store_free(r);
    /* the repeated principal is stored once */
    assert_false(ra_exists(&e, guid(g, 1002)));
    char names[256];
    ra_names(&e, "spiffe://mhsm/admin", NULL, names, sizeof names);
    assert_string_equal(names, "1000");
    ra_names(&e, NULL, "/", names, sizeof names);
    assert_string_equal(names, "1000,1001");
    /* an initial assignment must name a built-in role with lower-case GUIDs */
    struct env e2;
    env_open(&e2);
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    Mhsm__Internal__DomainRecord dom = MHSM__INTERNAL__DOMAIN_RECORD__INIT;
    RoleAssignment ra = MHSM__INTERNAL__ROLE_ASSIGNMENT_RECORD__INIT, *rap = &ra;
    ra.name = (char *)guid(g2, 5);
    ra.scope = S("/");
    ra.role_id = S(MH_RBAC_ROLE_ADMIN);
    ra.principal_id = S("p");
    act.domain = &dom;
    act.initial_assignments = &rap;
    act.n_initial_assignments = 1;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    ra.role_id = S("A290E904-7015-4BBA-90C8-60543313CDB4");
    assert_int_equal(run(&e2, &cmd, NULL, &res), MH_EPROTO);
    ra.role_id = (char *)guid(g, 77); /* not a built-in */
    assert_int_equal(run(&e2, &cmd, NULL, &res), MH_EPROTO);
    ra.role_id = S(MH_RBAC_ROLE_ADMIN);
    ra.scope = S("");
    assert_int_equal(run(&e2, &cmd, NULL, &res), MH_EPROTO);
    ra.scope = S("/");
    assert_int_equal(run(&e2, &cmd, NULL, &res), 0);
    assert_true(ra_exists(&e2, g2));
    env_close(&e2);
    env_close(&e);
}

static void test_role_definitions(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    const char *admins[] = {"spiffe://mhsm/admin"};
    struct mh_fsm_result res;
    assert_int_equal(activate_admins(&e, 7, admins, 1, &res), 0);
    char g1[37], g2[37], g3[37], g4[37];
    guid(g1, 1), guid(g2, 2), guid(g3, 3), guid(g4, 4);

    /* malformed records */
    char up[37];
    strcpy(up, g1);
    up[0] = 'A';
    strcpy(up, "ABCDEF00-0000-4000-8000-000000000001");
    assert_int_equal(put_def(&e, up, (struct defopt){0}, &res), MH_EPROTO);
    assert_string_equal(res.name, "");
    assert_int_equal(put_def(&e, "not-a-guid", (struct defopt){0}, &res), MH_EPROTO);
    assert_int_equal(put_def(&e, g1, (struct defopt){.name = ""}, &res), MH_EPROTO);
    char longname[MH_RBAC_ROLE_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(put_def(&e, g1, (struct defopt){.name = longname}, &res), MH_EPROTO);
    longname[MH_RBAC_ROLE_NAME_MAX] = 0; /* exactly 512 */
    char longdesc[MH_RBAC_DESC_MAX + 2];
    memset(longdesc, 'd', sizeof longdesc - 1);
    longdesc[sizeof longdesc - 1] = 0;
    assert_int_equal(put_def(&e, g1, (struct defopt){.desc = longdesc}, &res), MH_EPROTO);
    char *none[1] = {NULL};
    assert_int_equal(put_def(&e, g1, (struct defopt){.data = none, .n_data = 0}, &res), MH_EPROTO);
    char *badpat[] = {S(A("keys/nosuch/action"))};
    assert_int_equal(put_def(&e, g1, (struct defopt){.data = badpat, .n_data = 1}, &res),
                     MH_EPROTO);
    char *badstar[] = {S(A("keys/*/action"))};
    assert_int_equal(put_def(&e, g1, (struct defopt){.data = badstar, .n_data = 1}, &res),
                     MH_EPROTO);
    char *okpat[] = {S(A("keys/read/action"))};
    assert_int_equal(
        put_def(&e, g1, (struct defopt){.data = okpat, .n_data = 1, .not_data = badpat, .n_not = 1},
                &res),
        MH_EPROTO);
    char *many[MH_RBAC_MAX_ACTIONS + 1];
    for (size_t i = 0; i <= MH_RBAC_MAX_ACTIONS; i++)
        many[i] = S(A("keys/read/action"));
    assert_int_equal(
        put_def(&e, g1, (struct defopt){.data = many, .n_data = MH_RBAC_MAX_ACTIONS + 1}, &res),
        MH_EPROTO);
    assert_int_equal(
        put_def(&e, g1,
                (struct defopt){
                    .data = okpat, .n_data = 1, .not_data = many, .n_not = MH_RBAC_MAX_ACTIONS + 1},
                &res),
        MH_EPROTO);
    RoleDef **defs = NULL;
    size_t n;
    assert_int_equal(mh_store_list_role_definitions(e.st, &defs, &n), 0);
    assert_int_equal(n, 0);
    assert_null(defs);

    /* the boundaries themselves are fine */
    longdesc[MH_RBAC_DESC_MAX] = 0;
    e.time = 100;
    assert_int_equal(put_def(&e, g1,
                             (struct defopt){.name = longname,
                                             .desc = longdesc,
                                             .data = many,
                                             .n_data = MH_RBAC_MAX_ACTIONS},
                             &res),
                     0);
    assert_string_equal(res.name, g1);
    RoleDef *d = NULL;
    assert_int_equal(mh_store_get_role_definition(e.st, g1, &d), 0);
    assert_int_equal(d->created, 100);
    assert_int_equal(d->updated, 100);
    assert_int_equal(strlen(d->role_name), MH_RBAC_ROLE_NAME_MAX);
    mh_store_free(d);

    /* built-ins: id immutable, names reserved in any case */
    assert_int_equal(put_def(&e, MH_RBAC_ROLE_CRYPTO_USER, (struct defopt){.name = "x"}, &res),
                     MH_EBUILTIN);
    assert_int_equal(put_def(&e, g2, (struct defopt){.name = "managed hsm CRYPTO user"}, &res),
                     MH_EEXIST);
    assert_int_equal(put_def(&e, g2, (struct defopt){.name = "Keys Reader"}, &res), 0);
    assert_int_equal(put_def(&e, g3, (struct defopt){.name = "KEYS READER"}, &res), MH_EEXIST);
    assert_int_equal(mh_store_get_role_definition(e.st, g3, &d), MH_ENOTFOUND);

    /* replace keeps created, moves updated; renaming to its own name in another case */
    e.time = 200;
    char *two[] = {S(A("keys/read/action")), S(A("keys/sign/action"))};
    assert_int_equal(
        put_def(&e, g2, (struct defopt){.name = "keys reader", .data = two, .n_data = 2}, &res), 0);
    assert_int_equal(mh_store_get_role_definition(e.st, g2, &d), 0);
    assert_int_equal(d->created, 100);
    assert_int_equal(d->updated, 200);
    assert_string_equal(d->role_name, "keys reader");
    assert_int_equal(d->n_data_actions, 2);
    mh_store_free(d);

    /* the custom-role limit counts creations only; 0 is no limit */
    assert_int_equal(put_def(&e, g3, (struct defopt){.name = "third", .max = 2}, &res), MH_ELIMIT);
    assert_string_equal(res.name, g3);
    assert_int_equal(put_def(&e, g2, (struct defopt){.name = "keys reader", .max = 2}, &res), 0);
    assert_int_equal(put_def(&e, g3, (struct defopt){.name = "third", .max = 3}, &res), 0);
    assert_int_equal(put_def(&e, g4, (struct defopt){.name = "fourth", .max = 0}, &res), 0);
    assert_int_equal(mh_store_list_role_definitions(e.st, &defs, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        char want[37];
        assert_string_equal(defs[i]->id, guid(want, (unsigned)i + 1));
    }
    mh_store_records_free(defs, n);

    /* delete: built-in, unknown, malformed, in use */
    assert_int_equal(del_def(&e, MH_RBAC_ROLE_ADMIN, &res), MH_EBUILTIN);
    char g9[37];
    assert_int_equal(del_def(&e, guid(g9, 9), &res), MH_ENOTFOUND);
    assert_string_equal(res.name, g9);
    assert_int_equal(del_def(&e, "ABCDEF00-0000-4000-8000-000000000001", &res), MH_EPROTO);
    char a1[37], a2[37];
    guid(a1, 501), guid(a2, 502);
    assert_int_equal(put_ra(&e, a1, "/keys/k1", g3, "spiffe://mhsm/app", RA50, &res), 0);
    assert_int_equal(put_ra(&e, a2, "/", g3, "spiffe://mhsm/other", RA50, &res), 0);
    assert_int_equal(del_def(&e, g3, &res), MH_EINUSE);
    assert_int_equal(del_ra(&e, a1, &res), 0);
    assert_int_equal(del_def(&e, g3, &res), MH_EINUSE);
    assert_int_equal(del_ra(&e, a2, &res), 0);
    assert_int_equal(del_def(&e, g3, &res), 0);
    assert_string_equal(res.name, g3);
    assert_int_equal(mh_store_get_role_definition(e.st, g3, &d), MH_ENOTFOUND);
    assert_int_equal(del_def(&e, g3, &res), MH_ENOTFOUND);
    /* a deleted role can no longer be assigned; its name is free again */
    assert_int_equal(put_ra(&e, a1, "/", g3, "spiffe://mhsm/app", RA50, &res), MH_ENOTFOUND);
    assert_int_equal(put_def(&e, g9, (struct defopt){.name = "Third"}, &res), 0);
    env_close(&e);
}

static void test_role_assignments(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    const char *admins[] = {"spiffe://mhsm/admin"};
    struct mh_fsm_result res;
    assert_int_equal(activate_admins(&e, 7, admins, 1, &res), 0);
    char g1[37], g2[37], g3[37], g4[37], role[37];
    guid(g1, 1), guid(g2, 2), guid(g3, 3), guid(g4, 4), guid(role, 77);
    const char *app = "spiffe://mhsm/app";

    /* malformed */
    assert_int_equal(put_ra(&e, "ABCDEF00-0000-4000-8000-000000000001", "/",
                            MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res),
                     MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "/", "21DBD100-6940-42C2-9190-5D6CB909625B", app, RA50, &res),
                     MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "", MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res), MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "/keys/", MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res),
                     MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "/secrets", MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res),
                     MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "/keys/a/b", MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res),
                     MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "/", MH_RBAC_ROLE_CRYPTO_USER, "two words", RA50, &res),
                     MH_EPROTO);
    assert_int_equal(put_ra(&e, g1, "/", MH_RBAC_ROLE_CRYPTO_USER, "", RA50, &res), MH_EPROTO);
    char longp[MH_RBAC_PRINCIPAL_MAX + 2];
    memset(longp, 'p', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_int_equal(put_ra(&e, g1, "/", MH_RBAC_ROLE_CRYPTO_USER, longp, RA50, &res), MH_EPROTO);
    char longscope[200];
    memset(longscope, 'k', sizeof longscope - 1);
    longscope[sizeof longscope - 1] = 0;
    memcpy(longscope, "/keys/", 6);
    assert_int_equal(put_ra(&e, g1, longscope, MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res),
                     MH_EPROTO);
    assert_false(ra_exists(&e, g1));
    /* unknown role */
    assert_int_equal(put_ra(&e, g1, "/", role, app, RA50, &res), MH_ENOTFOUND);
    assert_string_equal(res.name, g1);

    /* the longest principal and scope fit the index keys */
    longp[MH_RBAC_PRINCIPAL_MAX] = 0;
    longscope[MH_RBAC_SCOPE_MAX] = 0;
    e.time = 500;
    assert_int_equal(put_ra(&e, g1, longscope, MH_RBAC_ROLE_CRYPTO_USER, longp, RA50, &res), 0);
    assert_string_equal(res.name, g1);
    char names[512];
    ra_names(&e, longp, NULL, names, sizeof names);
    assert_string_equal(names, "0001");
    ra_names(&e, NULL, longscope, names, sizeof names);
    assert_string_equal(names, "0001");
    RoleAssignment *r = NULL;
    assert_int_equal(mh_store_get_role_assignment(e.st, g1, &r), 0);
    assert_int_equal(r->created, 500);
    mh_store_free(r);

    /* idempotent re-put; a different assignment under the name; a second name for
     * the same (principal, role, scope) */
    e.time = 600;
    assert_int_equal(put_ra(&e, g1, longscope, MH_RBAC_ROLE_CRYPTO_USER, longp, RA50, &res), 0);
    assert_int_equal(mh_store_get_role_assignment(e.st, g1, &r), 0);
    assert_int_equal(r->created, 500);
    mh_store_free(r);
    assert_int_equal(put_ra(&e, g1, longscope, MH_RBAC_ROLE_AUDITOR, longp, RA50, &res), MH_EEXIST);
    assert_int_equal(put_ra(&e, g1, "/", MH_RBAC_ROLE_CRYPTO_USER, longp, RA50, &res), MH_EEXIST);
    assert_int_equal(put_ra(&e, g1, longscope, MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res),
                     MH_EEXIST);
    assert_int_equal(put_ra(&e, g2, longscope, MH_RBAC_ROLE_CRYPTO_USER, longp, RA50, &res),
                     MH_EEXIST);
    assert_false(ra_exists(&e, g2));
    /* any one of the three differing makes a new assignment */
    assert_int_equal(put_ra(&e, g2, longscope, MH_RBAC_ROLE_AUDITOR, longp, RA50, &res), 0);
    assert_int_equal(put_ra(&e, g3, "/keys", MH_RBAC_ROLE_CRYPTO_USER, longp, RA50, &res), 0);
    assert_int_equal(put_ra(&e, g4, longscope, MH_RBAC_ROLE_CRYPTO_USER, app, RA50, &res), 0);
    ra_names(&e, longp, NULL, names, sizeof names);
    assert_string_equal(names, "0001,0002,0003");
    ra_names(&e, NULL, longscope, names, sizeof names);
    assert_string_equal(names, "0001,0002,0004");
    ra_names(&e, longp, longscope, names, sizeof names);
    assert_string_equal(names, "0001,0002");
    ra_names(&e, NULL, NULL, names, sizeof names);
    assert_string_equal(names, "0001,0002,0003,0004,1000");

    /* index consistency after deletes */
    assert_int_equal(del_ra(&e, g2, &res), 0);
    assert_string_equal(res.name, g2);
    assert_int_equal(del_ra(&e, g2, &res), MH_ENOTFOUND);
    assert_int_equal(del_ra(&e, "nope", &res), MH_EPROTO);
    ra_names(&e, longp, NULL, names, sizeof names);
    assert_string_equal(names, "0001,0003");
    ra_names(&e, NULL, longscope, names, sizeof names);
    assert_string_equal(names, "0001,0004");
    ra_names(&e, NULL, "/keys", names, sizeof names);
    assert_string_equal(names, "0003");
    ra_names(&e, NULL, "/", names, sizeof names);
    assert_string_equal(names, "1000");
    ra_names(&e, app, NULL, names, sizeof names);
    assert_string_equal(names, "0004");
    ra_names(&e, "spiffe://mhsm/nobody", NULL, names, sizeof names);
    assert_string_equal(names, "");
    /* the "r" index follows too: an unused custom role deletes */
    assert_int_equal(put_def(&e, role, (struct defopt){.name = "r"}, &res), 0);
    assert_int_equal(put_ra(&e, g2, "/keys/x", role, app, RA50, &res), 0);
    assert_int_equal(del_def(&e, role, &res), MH_EINUSE);
    assert_int_equal(del_ra(&e, g2, &res), 0);
    assert_int_equal(del_def(&e, role, &res), 0);
    env_close(&e);
}

static void test_role_assignment_limits(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    const char *admins[] = {"spiffe://mhsm/admin"};
    struct mh_fsm_result res;
    assert_int_equal(activate_admins(&e, 7, admins, 1, &res), 0);
    char g[37];
    struct raopt lim = {3, 2, NULL};
    /* HSM scope: "/" and "/keys" together (the initial admin counts) */
    assert_int_equal(put_ra(&e, guid(g, 1), "/keys", MH_RBAC_ROLE_AUDITOR, "a", lim, &res), 0);
    assert_int_equal(put_ra(&e, guid(g, 2), "/", MH_RBAC_ROLE_AUDITOR, "b", lim, &res), 0);
    assert_int_equal(put_ra(&e, guid(g, 3), "/", MH_RBAC_ROLE_AUDITOR, "c", lim, &res), MH_ELIMIT);
    assert_string_equal(res.name, g);
    assert_int_equal(put_ra(&e, guid(g, 3), "/keys", MH_RBAC_ROLE_AUDITOR, "c", lim, &res),
                     MH_ELIMIT);
    assert_false(ra_exists(&e, g));
    /* an identical re-put at the limit is still a success */
    assert_int_equal(put_ra(&e, guid(g, 2), "/", MH_RBAC_ROLE_AUDITOR, "b", lim, &res), 0);
    /* per key: each key on its own, unaffected by the HSM-scope count */
    assert_int_equal(put_ra(&e, guid(g, 10), "/keys/k1", MH_RBAC_ROLE_AUDITOR, "a", lim, &res), 0);
    assert_int_equal(put_ra(&e, guid(g, 11), "/keys/k1", MH_RBAC_ROLE_AUDITOR, "b", lim, &res), 0);
    assert_int_equal(put_ra(&e, guid(g, 12), "/keys/k1", MH_RBAC_ROLE_AUDITOR, "c", lim, &res),
                     MH_ELIMIT);
    assert_int_equal(put_ra(&e, guid(g, 12), "/keys/k2", MH_RBAC_ROLE_AUDITOR, "c", lim, &res), 0);
    /* a key name that extends another is a different scope */
    assert_int_equal(put_ra(&e, guid(g, 13), "/keys/k1x", MH_RBAC_ROLE_AUDITOR, "c", lim, &res), 0);
    /* freeing a slot allows one more; 0 means no limit */
    assert_int_equal(del_ra(&e, guid(g, 10), &res), 0);
    assert_int_equal(put_ra(&e, guid(g, 14), "/keys/k1", MH_RBAC_ROLE_AUDITOR, "c", lim, &res), 0);
    struct raopt unlimited = {0, 0, NULL};
    assert_int_equal(put_ra(&e, guid(g, 3), "/", MH_RBAC_ROLE_AUDITOR, "c", unlimited, &res), 0);
    assert_int_equal(
        put_ra(&e, guid(g, 15), "/keys/k1", MH_RBAC_ROLE_AUDITOR, "d", unlimited, &res), 0);
    env_close(&e);
}

static void test_rbac_lockout(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    const char *admins[] = {"spiffe://mhsm/admin"};
    struct mh_fsm_result res;
    assert_int_equal(activate_admins(&e, 7, admins, 1, &res), 0);
    char first[37], g[37], role[37];
    guid(first, 1000);
    guid(role, 77);
    /* the last admin assignment cannot go */
    assert_int_equal(del_ra(&e, first, &res), MH_ELOCKOUT);
    assert_string_equal(res.name, first);
    assert_true(ra_exists(&e, first));
    /* grants that do not count: per-key admin, HSM-scope roles without
     * roleAssignments/write, a custom role whose notDataActions remove it */
    assert_int_equal(
        put_ra(&e, guid(g, 1), "/keys/k", MH_RBAC_ROLE_ADMIN, "spiffe://x", RA50, &res), 0);
    assert_int_equal(
        put_ra(&e, guid(g, 2), "/", MH_RBAC_ROLE_CRYPTO_USER, "spiffe://x", RA50, &res), 0);
    char *all[] = {S(MH_RBAC_PREFIX "*")};
    char *no_ra_write[] = {S(A("roleAssignments/WRITE/action"))};
    assert_int_equal(put_def(&e, role,
                             (struct defopt){.name = "almost admin",
                                             .data = all,
                                             .n_data = 1,
                                             .not_data = no_ra_write,
                                             .n_not = 1},
                             &res),
                     0);
    assert_int_equal(put_ra(&e, guid(g, 3), "/", role, "spiffe://x", RA50, &res), 0);
    assert_int_equal(del_ra(&e, first, &res), MH_ELOCKOUT);
    /* deleting grants that never counted is fine */
    assert_int_equal(del_ra(&e, guid(g, 1), &res), 0);
    assert_int_equal(del_ra(&e, guid(g, 2), &res), 0);

    /* with a second admin ("/keys" counts as HSM scope) the first delete works */
    char second[37];
    guid(second, 4);
    assert_int_equal(
        put_ra(&e, second, "/keys", MH_RBAC_ROLE_POLICY_ADMIN, "spiffe://y", RA50, &res), 0);
    assert_int_equal(del_ra(&e, first, &res), 0);
    assert_false(ra_exists(&e, first));
    assert_int_equal(del_ra(&e, second, &res), MH_ELOCKOUT);
    assert_true(ra_exists(&e, second));

    /* a custom role holding the last grant: replacing it to drop roleAssignments/write
     * is refused (dropped directly or through notDataActions), keeping it is not */
    char admin_role[37], third[37];
    guid(admin_role, 78);
    guid(third, 5);
    char *ra_write[] = {S(A("roleAssignments/write/action")), S(A("roleAssignments/read/action"))};
    assert_int_equal(
        put_def(&e, admin_role, (struct defopt){.name = "ra", .data = ra_write, .n_data = 2}, &res),
        0);
    assert_int_equal(put_ra(&e, third, "/", admin_role, "spiffe://z", RA50, &res), 0);
    assert_int_equal(del_ra(&e, second, &res), 0);
    e.time = 777;
    assert_int_equal(put_def(&e, admin_role,
                             (struct defopt){.name = "ra", .data = ra_write + 1, .n_data = 1},
                             &res),
                     MH_ELOCKOUT);
    assert_string_equal(res.name, admin_role);
    assert_int_equal(
        put_def(
            &e, admin_role,
            (struct defopt){
                .name = "ra", .data = ra_write, .n_data = 2, .not_data = no_ra_write, .n_not = 1},
            &res),
        MH_ELOCKOUT);
    RoleDef *d = NULL;
    assert_int_equal(mh_store_get_role_definition(e.st, admin_role, &d), 0);
    assert_int_equal(d->n_data_actions, 2);
    assert_int_equal(d->n_not_data_actions, 0);
    assert_true(d->updated != 777);
    mh_store_free(d);
    assert_int_equal(put_def(&e, admin_role,
                             (struct defopt){.name = "ra renamed", .data = all, .n_data = 1}, &res),
                     0);
    assert_int_equal(del_ra(&e, third, &res), MH_ELOCKOUT);
    /* a role that never granted roleAssignments/write is replaced freely */
    assert_int_equal(put_def(&e, role,
                             (struct defopt){.name = "almost admin",
                                             .data = all,
                                             .n_data = 1,
                                             .not_data = no_ra_write,
                                             .n_not = 1},
                             &res),
                     0);
    env_close(&e);
}

static void test_rbac_request_ids(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    const char *admins[] = {"spiffe://mhsm/admin"};
    struct mh_fsm_result res;
    assert_int_equal(activate_admins(&e, 7, admins, 1, &res), 0);
    char g1[37], g2[37];
    guid(g1, 1), guid(g2, 2);
    struct raopt o = {50, 10, "rid-ra"};
    assert_int_equal(put_ra(&e, g1, "/", MH_RBAC_ROLE_AUDITOR, "p", o, &res), 0);
    Mhsm__Internal__RequestRecord *rr = NULL;
    assert_int_equal(mh_store_get_request(e.st, "rid-ra", &rr), 0);
    assert_string_equal(rr->target, g1);
    assert_string_equal(rr->name, g1);
    assert_int_equal(rr->body, MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT);
    assert_int_equal(rr->result, 0);
    mh_store_free(rr);
    /* the retry returns the first outcome even after the assignment went away */
    assert_int_equal(del_ra(&e, g1, &res), 0);
    assert_int_equal(put_ra(&e, g1, "/", MH_RBAC_ROLE_AUDITOR, "p", o, &res), 0);
    assert_false(ra_exists(&e, g1));
    /* the id reused for another assignment */
    assert_int_equal(put_ra(&e, g2, "/", MH_RBAC_ROLE_AUDITOR, "p", o, &res), MH_EREQUESTID);
    assert_false(ra_exists(&e, g2));
    /* a recorded failure stays a failure */
    assert_int_equal(put_def(&e, MH_RBAC_ROLE_AUDITOR, (struct defopt){.rid = "rid-def"}, &res),
                     MH_EBUILTIN);
    assert_int_equal(put_def(&e, MH_RBAC_ROLE_AUDITOR, (struct defopt){.rid = "rid-def"}, &res),
                     MH_EBUILTIN);
    assert_int_equal(mh_store_get_request(e.st, "rid-def", &rr), 0);
    assert_string_equal(rr->target, MH_RBAC_ROLE_AUDITOR);
    assert_int_equal(rr->result, MH_EBUILTIN);
    mh_store_free(rr);
    env_close(&e);
}

/* Role commands, successes and failures, for the determinism and snapshot tests. */
static void rbac_history(struct env *e)
{
    struct mh_fsm_result res;
    char *acts[] = {S(A("keys/*")), S(A("roleAssignments/read/action"))};
    char *nots[] = {S(A("keys/sign/action"))};
    for (unsigned i = 0; i < 12; i++) {
        char g[37], r[37], name[16], principal[32], scope[32];
        e->time = 500 + i;
        snprintf(name, sizeof name, "role %u", i % 5);
        (void)put_def(e, guid(r, 200 + i % 4),
                      (struct defopt){.name = name,
                                      .data = acts,
                                      .n_data = 1 + i % 2,
                                      .not_data = nots,
                                      .n_not = i % 3 == 0,
                                      .max = 3,
                                      .rid = i % 2 ? "rbac-rid-1" : NULL},
                      &res);
        snprintf(principal, sizeof principal, "spiffe://mhsm/p%u", i % 3);
        snprintf(scope, sizeof scope, i % 3 ? "/keys/key-%02u" : "/", i % 4);
        const char *role = i % 2 ? r : MH_RBAC_ROLE_CRYPTO_USER;
        (void)put_ra(e, guid(g, 300 + i % 7), scope, role, principal,
                     (struct raopt){4, 2, i % 4 == 0 ? "rbac-rid-2" : NULL}, &res);
        if (i % 5 == 4)
            (void)del_ra(e, guid(g, 300 + i % 3), &res);
        if (i % 6 == 5)
            (void)del_def(e, guid(r, 200 + i % 4), &res);
    }
    (void)del_ra(e, guid((char[37]){0}, 1000), &res);
}

static void compare_rbac(struct env *a, struct env *b)
{
    RoleDef **da, **db;
    size_t na, nb;
    assert_int_equal(mh_store_list_role_definitions(a->st, &da, &na), 0);
    assert_int_equal(mh_store_list_role_definitions(b->st, &db, &nb), 0);
    assert_true(na > 0);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(da[i]->id, db[i]->id);
        assert_string_equal(da[i]->role_name, db[i]->role_name);
        assert_int_equal(da[i]->updated, db[i]->updated);
    }
    mh_store_records_free(da, na);
    mh_store_records_free(db, nb);
    RoleAssignment **ra, **rb;
    bool ma, mb;
    assert_int_equal(mh_store_list_role_assignments(a->st, NULL, NULL, 100, &ra, &na, &ma), 0);
    assert_int_equal(mh_store_list_role_assignments(b->st, NULL, NULL, 100, &rb, &nb, &mb), 0);
    assert_true(na > 2);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(ra[i]->name, rb[i]->name);
        assert_string_equal(ra[i]->scope, rb[i]->scope);
        assert_string_equal(ra[i]->principal_id, rb[i]->principal_id);
        assert_int_equal(ra[i]->created, rb[i]->created);
    }
    mh_store_records_free(ra, na);
    mh_store_records_free(rb, nb);
}

/* Rewrites a version-2 snapshot whose rbac database is empty as version 1. */
static void to_v1(const struct mh_buf *v2, struct mh_buf *v1)
{
    /* the rbac database is last: an empty one is its 8-byte zero count */
    size_t body = v2->len - 32 - 8;
    static const uint8_t zero[8] = {0};
    assert_memory_equal(v2->data + body, zero, 8);
    mh_buf_free(v1);
    assert_int_equal(mh_buf_append(v1, v2->data, body), 0);
    v1->data[11] = 1; /* version */
    v1->data[15] = 4; /* databases */
    uint8_t *h;
    assert_int_equal(mh_buf_extend(v1, 32, &h), 0);
    unsigned int hl = 0;
    assert_int_equal(EVP_Digest(v1->data, body, h, &hl, EVP_sha256(), NULL), 1);
}

static void test_snapshot_versions(void **state)
{
    (void)state;
    struct env a, b;
    env_open(&a);
    env_open(&b);
    struct mh_fsm_result res;
    /* |a|: keys, no rbac records */
    assert_int_equal(activate(&a, 7), 0);
    assert_int_equal(add(&a, "k", "v1", NONE, &res), 0);
    /* |b|: rbac records the v1 restore must clear */
    const char *admins[] = {"spiffe://mhsm/admin"};
    assert_int_equal(activate_admins(&b, 7, admins, 1, &res), 0);
    char g[37];
    assert_int_equal(put_def(&b, guid(g, 1), (struct defopt){0}, &res), 0);

    struct mh_buf s2 = {0}, s1 = {0}, again = {0};
    snapshot(&a, &s2);
    assert_int_equal(s2.data[11], 2);
    assert_int_equal(s2.data[15], 5);
    to_v1(&s2, &s1);
    assert_int_equal(mh_fsm_restore(b.fsm, s1.data, s1.len), 0);
    RoleDef *d = NULL;
    assert_int_equal(mh_store_get_role_definition(b.st, g, &d), MH_ENOTFOUND);
    RoleAssignment **ra = NULL;
    size_t n;
    bool more;
    assert_int_equal(mh_store_list_role_assignments(b.st, NULL, NULL, 10, &ra, &n, &more), 0);
    assert_int_equal(n, 0);
    Mhsm__Internal__KeyRecord *k = getkey(&b, "k");
    mh_store_free(k);
    /* and it snapshots as the same state in version 2 */
    snapshot(&b, &again);
    assert_int_equal(again.len, s2.len);
    assert_memory_equal(again.data, s2.data, s2.len);

    /* mismatched version and database count are refused (digest fixed up) */
    struct mh_buf bad = {0};
    assert_int_equal(mh_buf_append(&bad, s1.data, s1.len), 0);
    bad.data[11] = 2; /* version 2 with 4 databases */
    unsigned int hl = 0;
    assert_int_equal(
        EVP_Digest(bad.data, bad.len - 32, bad.data + bad.len - 32, &hl, EVP_sha256(), NULL), 1);
    assert_int_equal(mh_fsm_restore(b.fsm, bad.data, bad.len), MH_ECORRUPT);
    mh_buf_free(&bad);
    assert_int_equal(mh_buf_append(&bad, s2.data, s2.len), 0);
    bad.data[11] = 1; /* version 1 with 5 databases */
    assert_int_equal(
        EVP_Digest(bad.data, bad.len - 32, bad.data + bad.len - 32, &hl, EVP_sha256(), NULL), 1);
    assert_int_equal(mh_fsm_restore(b.fsm, bad.data, bad.len), MH_ECORRUPT);
    bad.data[11] = 3; /* unknown version */
    bad.data[15] = 5;
    assert_int_equal(
        EVP_Digest(bad.data, bad.len - 32, bad.data + bad.len - 32, &hl, EVP_sha256(), NULL), 1);
    assert_int_equal(mh_fsm_restore(b.fsm, bad.data, bad.len), MH_ECORRUPT);
    mh_buf_free(&bad);
    mh_buf_free(&s1);
    mh_buf_free(&s2);
    mh_buf_free(&again);
    env_close(&a);
    env_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_activation),
        cmocka_unit_test(test_add_version),
        cmocka_unit_test(test_update_version),
        cmocka_unit_test(test_delete_recover_purge),
        cmocka_unit_test(test_restore_key),
        cmocka_unit_test(test_request_ids),
        cmocka_unit_test(test_skip_old_index),
        cmocka_unit_test(test_malformed_entries),
        cmocka_unit_test(test_mutations_deterministic),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_snapshot_restore),
        cmocka_unit_test(test_hook),
        cmocka_unit_test(test_padded_entries),
        cmocka_unit_test(test_rbac_activation),
        cmocka_unit_test(test_role_definitions),
        cmocka_unit_test(test_role_assignments),
        cmocka_unit_test(test_role_assignment_limits),
        cmocka_unit_test(test_rbac_lockout),
        cmocka_unit_test(test_rbac_request_ids),
        cmocka_unit_test(test_snapshot_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
