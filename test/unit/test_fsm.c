#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/cluster.h"
#include "consensus/fsm.h"
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

static int activate(struct env *e, uint32_t retention)
{
    Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    Mhsm__Internal__DomainRecord d = MHSM__INTERNAL__DOMAIN_RECORD__INIT;
    uint8_t id[16] = {1, 2, 3};
    d.retention_days = retention;
    d.quorum = 2;
    d.domain_id.data = id;
    d.domain_id.len = sizeof id;
    act.domain = &d;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    return run(e, &cmd, NULL, NULL);
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
static void history(struct env *e)
{
    struct mh_fsm_result res;
    assert_int_equal(activate(e, 7), 0);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
