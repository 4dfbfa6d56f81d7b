#include "consensus/fsm.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/log.h"
#include "consensus/peer.h"
#include "consensus/rbac.h"

struct mh_fsm {
    struct mh_store *st;
    mh_fsm_hook hook;
    void *hook_arg;
};

#define SNAP_MAGIC    "MHSMSNAP"
#define SNAP_VERSION  2u /* 5 databases; version 1 had 4 (no rbac) */
#define SNAP_V1_NDB   4u
#define SNAP_HASH_LEN 32u
#define SECS_PER_DAY  86400

typedef Mhsm__Internal__Command Command;
typedef Mhsm__Internal__KeyRecord KeyRecord;
typedef Mhsm__Internal__KeyVersionRecord VersionRecord;
typedef Mhsm__Internal__DomainRecord DomainRecord;
typedef Mhsm__Internal__RequestRecord RequestRecord;
typedef Mhsm__Internal__RoleDefinitionRecord RoleDef;
typedef Mhsm__Internal__RoleAssignmentRecord RoleAssignment;

int mh_fsm_new(struct mh_store *store, struct mh_fsm **out)
{
    *out = NULL;
    struct mh_fsm *fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL)
        return MH_ENOMEM;
    fsm->st = store;
    *out = fsm;
    return 0;
}

void mh_fsm_free(struct mh_fsm *fsm)
{
    free(fsm);
}

void mh_fsm_set_hook(struct mh_fsm *fsm, mh_fsm_hook hook, void *arg)
{
    fsm->hook = hook;
    fsm->hook_arg = arg;
}

/* ---- unpacking under a budget ------------------------------------------- */

/* protobuf-c allocates far more than the wire size for empty repeated messages;
 * the budget turns such an entry into a deterministic MH_EPROTO. A real malloc
 * failure is node-local, so it is reported separately and stops the node instead. */
struct budget {
    size_t used, limit;
    bool oom;
};

static void *budget_alloc(void *data, size_t size)
{
    struct budget *b = data;
    if (size > b->limit - b->used)
        return NULL;
    b->used += size;
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        b->oom = true;
    return p;
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

/* ---- validation ------------------------------------------------------- */

static bool valid_id(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n] != 0; n++) {
        char c = s[n];
        if (n >= max || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') || c == '-'))
            return false;
    }
    return n > 0;
}

static bool valid_name(const char *s)
{
    return valid_id(s, MH_STORE_NAME_MAX);
}

static bool valid_version(const char *s)
{
    return valid_id(s, MH_STORE_VERSION_MAX);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void set_result(struct mh_fsm_result *res, int rc, const char *name, const char *version)
{
    res->rc = rc;
    copy_str(res->name, sizeof res->name, name ? name : "");
    copy_str(res->version, sizeof res->version, version ? version : "");
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* ---- record access inside a transaction ------------------------------- */

static int get_key(struct mh_fsm *fsm, MDB_txn *txn, const char *name, KeyRecord **out)
{
    return mh_store_txn_get(fsm->st, txn, MH_STORE_KEYS, name, strlen(name),
                            &mhsm__internal__key_record__descriptor, (void **)out);
}

static int put_key(struct mh_fsm *fsm, MDB_txn *txn, const KeyRecord *key)
{
    return mh_store_txn_put(fsm->st, txn, MH_STORE_KEYS, key->name, strlen(key->name), &key->base);
}

static int get_version(struct mh_fsm *fsm, MDB_txn *txn, const char *name, const char *version,
                       VersionRecord **out)
{
    uint8_t k[MH_STORE_VERSION_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_version_key(name, version, k, &kl));
    return mh_store_txn_get(fsm->st, txn, MH_STORE_VERSIONS, k, kl,
                            &mhsm__internal__key_version_record__descriptor, (void **)out);
}

static int version_exists(struct mh_fsm *fsm, MDB_txn *txn, const char *name, const char *version)
{
    uint8_t k[MH_STORE_VERSION_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_version_key(name, version, k, &kl));
    MDB_val kv = {kl, k}, v;
    int rc = mdb_get(txn, mh_store_dbi(fsm->st, MH_STORE_VERSIONS), &kv, &v);
    if (rc == 0)
        return 1;
    if (rc == MDB_NOTFOUND)
        return 0;
    MH_ERROR("fsm", "op=get err=\"%s\"", mdb_strerror(rc));
    return MH_ESTORE;
}

static int put_version(struct mh_fsm *fsm, MDB_txn *txn, const VersionRecord *v)
{
    uint8_t k[MH_STORE_VERSION_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_version_key(v->name, v->version, k, &kl));
    return mh_store_txn_put(fsm->st, txn, MH_STORE_VERSIONS, k, kl, &v->base);
}

/* Removes every version of |name|: name "\0" is a prefix of exactly its keys. */
static int delete_versions(struct mh_fsm *fsm, MDB_txn *txn, const char *name)
{
    uint8_t prefix[MH_STORE_NAME_MAX + 1];
    size_t pl = strlen(name) + 1;
    memcpy(prefix, name, pl); /* includes the NUL separator */
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, mh_store_dbi(fsm->st, MH_STORE_VERSIONS), &cur);
    if (rc != 0)
        goto fail;
    for (;;) {
        MDB_val k = {pl, prefix}, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND || (rc == 0 && (k.mv_size < pl || memcmp(k.mv_data, prefix, pl))))
            break;
        if (rc != 0)
            goto fail_cursor;
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0)
            goto fail_cursor;
    }
    mdb_cursor_close(cur);
    return 0;
fail_cursor:
    mdb_cursor_close(cur);
fail:
    MH_ERROR("fsm", "op=delete_versions err=\"%s\"", mdb_strerror(rc));
    return MH_ESTORE;
}

/* The domain record, or MH_ENOTACTIVE. Other negative values are store errors. */
static int get_domain(struct mh_fsm *fsm, MDB_txn *txn, DomainRecord **out)
{
    static const char k[] = MH_STORE_META_DOMAIN;
    int rv = mh_store_txn_get(fsm->st, txn, MH_STORE_META, k, sizeof k - 1,
                              &mhsm__internal__domain_record__descriptor, (void **)out);
    if (rv == MH_ENOTFOUND || (rv == 0 && !(*out)->activated)) {
        mh_store_free(*out);
        *out = NULL;
        return MH_ENOTACTIVE;
    }
    return rv;
}

/* ---- command bodies ----------------------------------------------------
 *
 * Each returns 0 with res->rc set to the command's outcome, or a negative store
 * error. Effects are written into |txn|, a child transaction the caller aborts
 * when res->rc < 0. */

/* Maps a lookup result to an outcome: store errors propagate (return value),
 * "not found" becomes a deterministic rule failure. */
#define OUTCOME(res, rc, name, version)                                                            \
    do {                                                                                           \
        set_result((res), (rc), (name), (version));                                                \
        return 0;                                                                                  \
    } while (0)

static bool is_store_error(int rv)
{
    return rv < 0 && rv != MH_ENOTFOUND;
}

/* ---- RBAC records ------------------------------------------------------
 *
 * Layout (consensus/store.h): "d" 0 id, "a" 0 name, and the index entries
 * "p" 0 principal 0 name, "s" 0 scope 0 name, "r" 0 role id 0 name with empty
 * values. Every string in a key is validated first, so keys stay under 511 bytes
 * and never contain a NUL of their own. */

static bool lower_guid(const char *s)
{
    if (!mh_rbac_is_guid(s))
        return false;
    for (; *s != 0; s++)
        if (*s >= 'A' && *s <= 'F')
            return false;
    return true;
}

static bool valid_patterns(char *const *p, size_t n)
{
    if (n > MH_RBAC_MAX_ACTIONS)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] == NULL || strnlen(p[i], 257) > 256)
            return false;
    return true;
}

/* The rules on a definition's own fields; |*mask| receives its action set. */
static bool valid_definition(const RoleDef *d, uint64_t *mask)
{
    size_t nl = strnlen(d->role_name, MH_RBAC_ROLE_NAME_MAX + 1);
    if (!lower_guid(d->id) || nl == 0 || nl > MH_RBAC_ROLE_NAME_MAX ||
        strnlen(d->description, MH_RBAC_DESC_MAX + 1) > MH_RBAC_DESC_MAX ||
        d->n_data_actions == 0 || !valid_patterns(d->data_actions, d->n_data_actions) ||
        !valid_patterns(d->not_data_actions, d->n_not_data_actions))
        return false;
    return mh_rbac_role_mask(d->data_actions, d->n_data_actions, d->not_data_actions,
                             d->n_not_data_actions, mask, NULL) == 0;
}

static bool valid_assignment(const RoleAssignment *a)
{
    const char *key;
    return a != NULL && lower_guid(a->name) && lower_guid(a->role_id) &&
           mh_rbac_valid_principal(a->principal_id) && a->scope[0] != 0 &&
           mh_rbac_parse_scope(a->scope, &key) == 0;
}

static int rbac_get(struct mh_fsm *fsm, MDB_txn *txn, char tag, const char *id,
                    const ProtobufCMessageDescriptor *desc, void **out)
{
    *out = NULL;
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    if (mh_store_rbac_key(tag, id, NULL, k, &kl) < 0)
        return MH_ENOTFOUND;
    return mh_store_txn_get(fsm->st, txn, MH_STORE_RBAC, k, kl, desc, out);
}

static int get_def(struct mh_fsm *fsm, MDB_txn *txn, const char *id, RoleDef **out)
{
    return rbac_get(fsm, txn, 'd', id, &mhsm__internal__role_definition_record__descriptor,
                    (void **)out);
}

static int get_assignment(struct mh_fsm *fsm, MDB_txn *txn, const char *name, RoleAssignment **out)
{
    return rbac_get(fsm, txn, 'a', name, &mhsm__internal__role_assignment_record__descriptor,
                    (void **)out);
}

static int rbac_put_raw(struct mh_fsm *fsm, MDB_txn *txn, const uint8_t *k, size_t kl)
{
    MDB_val kv = {kl, (void *)(uintptr_t)k}, v = {0, NULL};
    int rc = mdb_put(txn, mh_store_dbi(fsm->st, MH_STORE_RBAC), &kv, &v, 0);
    if (rc != 0) {
        MH_ERROR("fsm", "op=put_index err=\"%s\"", mdb_strerror(rc));
        return MH_ESTORE;
    }
    return 0;
}

static int rbac_del_raw(struct mh_fsm *fsm, MDB_txn *txn, const uint8_t *k, size_t kl)
{
    MDB_val kv = {kl, (void *)(uintptr_t)k};
    int rc = mdb_del(txn, mh_store_dbi(fsm->st, MH_STORE_RBAC), &kv, NULL);
    if (rc != 0) {
        /* The indexes are written with the record: a missing one is corruption. */
        MH_ERROR("fsm", "op=del_rbac err=\"%s\"", mdb_strerror(rc));
        return rc == MDB_NOTFOUND ? MH_ECORRUPT : MH_ESTORE;
    }
    return 0;
}

/* Stores |a| and its three index entries (|a| already validated). */
static int put_assignment(struct mh_fsm *fsm, MDB_txn *txn, const RoleAssignment *a)
{
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_rbac_key('a', a->name, NULL, k, &kl));
    MH_TRY(mh_store_txn_put(fsm->st, txn, MH_STORE_RBAC, k, kl, &a->base));
    MH_TRY(mh_store_rbac_key('p', a->principal_id, a->name, k, &kl));
    MH_TRY(rbac_put_raw(fsm, txn, k, kl));
    MH_TRY(mh_store_rbac_key('s', a->scope, a->name, k, &kl));
    MH_TRY(rbac_put_raw(fsm, txn, k, kl));
    MH_TRY(mh_store_rbac_key('r', a->role_id, a->name, k, &kl));
    return rbac_put_raw(fsm, txn, k, kl);
}

static int del_assignment(struct mh_fsm *fsm, MDB_txn *txn, const RoleAssignment *a)
{
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_rbac_key('a', a->name, NULL, k, &kl));
    MH_TRY(rbac_del_raw(fsm, txn, k, kl));
    MH_TRY(mh_store_rbac_key('p', a->principal_id, a->name, k, &kl));
    MH_TRY(rbac_del_raw(fsm, txn, k, kl));
    MH_TRY(mh_store_rbac_key('s', a->scope, a->name, k, &kl));
    MH_TRY(rbac_del_raw(fsm, txn, k, kl));
    MH_TRY(mh_store_rbac_key('r', a->role_id, a->name, k, &kl));
    return rbac_del_raw(fsm, txn, k, kl);
}

/* Calls |fn| for every key under |prefix| in key order with the part after the
 * prefix and the value, until |fn| returns non-zero (returned) or the range ends (0). */
typedef int (*walk_fn)(struct mh_fsm *fsm, MDB_txn *txn, const MDB_val *rest, const MDB_val *val,
                       void *arg);

static int walk_prefix(struct mh_fsm *fsm, MDB_txn *txn, const uint8_t *prefix, size_t pl,
                       walk_fn fn, void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, mh_store_dbi(fsm->st, MH_STORE_RBAC), &cur);
    if (rc != 0) {
        MH_ERROR("fsm", "op=cursor_open err=\"%s\"", mdb_strerror(rc));
        return MH_ESTORE;
    }
    int rv = 0;
    MDB_val k = {pl, (void *)(uintptr_t)prefix}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < pl || memcmp(k.mv_data, prefix, pl) != 0)
            break;
        MDB_val rest = {k.mv_size - pl, (uint8_t *)k.mv_data + pl};
        rv = fn(fsm, txn, &rest, &v, arg);
        if (rv != 0)
            break;
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        MH_ERROR("fsm", "op=cursor_get err=\"%s\"", mdb_strerror(rc));
        rv = MH_ESTORE;
    }
    mdb_cursor_close(cur);
    return rv;
}

static int count_fn(struct mh_fsm *fsm, MDB_txn *txn, const MDB_val *rest, const MDB_val *val,
                    void *arg)
{
    (void)fsm, (void)txn, (void)rest, (void)val;
    ++*(size_t *)arg;
    return 0;
}

/* Number of entries under tag 0 a 0 (tag 0 when |a| is NULL). */
static int count_under(struct mh_fsm *fsm, MDB_txn *txn, char tag, const char *a, size_t *n)
{
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    *n = 0;
    if (a == NULL) {
        k[0] = (uint8_t)tag;
        k[1] = 0;
        kl = 2;
    } else {
        MH_TRY(mh_store_rbac_key(tag, a, "", k, &kl));
    }
    return walk_prefix(fsm, txn, k, kl, count_fn, n);
}

/* The action set of role |id|: built-in or stored custom. MH_ENOTFOUND when the
 * role does not exist. */
static int role_mask(struct mh_fsm *fsm, MDB_txn *txn, const char *id, uint64_t *mask)
{
    *mask = 0;
    const struct mh_rbac_builtin *b = mh_rbac_builtin_by_id(id);
    if (b != NULL) {
        *mask = b->mask;
        return 0;
    }
    RoleDef *d = NULL;
    MH_TRY(get_def(fsm, txn, id, &d));
    /* Stored records were validated on the way in; one that no longer computes
     * grants nothing. */
    if (mh_rbac_role_mask(d->data_actions, d->n_data_actions, d->not_data_actions,
                          d->n_not_data_actions, mask, NULL) < 0)
        *mask = 0;
    mh_store_free(d);
    return 0;
}

/* The assignment an index entry names (|rest|: the key after the index prefix,
 * which is the assignment's name). An index entry without its record is corrupt. */
static int indexed_assignment(struct mh_fsm *fsm, MDB_txn *txn, const MDB_val *rest,
                              RoleAssignment **out)
{
    char name[MH_RBAC_GUID_LEN + 1];
    if (rest->mv_size != MH_RBAC_GUID_LEN)
        return MH_ECORRUPT;
    memcpy(name, rest->mv_data, MH_RBAC_GUID_LEN);
    name[MH_RBAC_GUID_LEN] = 0;
    int rv = get_assignment(fsm, txn, name, out);
    return rv == MH_ENOTFOUND ? MH_ECORRUPT : rv;
}

/* Stops the walk (1) at the first assignment whose role grants roleAssignments/write. */
static int admin_fn(struct mh_fsm *fsm, MDB_txn *txn, const MDB_val *rest, const MDB_val *val,
                    void *arg)
{
    (void)val, (void)arg;
    RoleAssignment *a = NULL;
    int rv = indexed_assignment(fsm, txn, rest, &a);
    if (rv < 0)
        return rv;
    /* authz never lets a node certificate act on the data plane, so its grant
     * cannot keep role management possible. */
    bool node = strncmp(a->principal_id, MH_PEER_URI_PREFIX, strlen(MH_PEER_URI_PREFIX)) == 0;
    uint64_t mask = 0;
    rv = node ? 0 : role_mask(fsm, txn, a->role_id, &mask);
    mh_store_free(a);
    if (rv < 0 && rv != MH_ENOTFOUND)
        return rv;
    return (mask & MH_RBAC_BIT(MH_ACT_RA_WRITE)) != 0 ? 1 : 0;
}

/* 0 when some assignment at "/" or "/keys" still grants roleAssignments/write,
 * MH_ELOCKOUT when none does, or a store error. */
static int lockout_check(struct mh_fsm *fsm, MDB_txn *txn)
{
    static const char *const scopes[] = {"/", "/keys"};
    for (size_t i = 0; i < 2; i++) {
        uint8_t k[MH_STORE_RBAC_KEY_MAX];
        size_t kl;
        MH_TRY(mh_store_rbac_key('s', scopes[i], "", k, &kl));
        int rv = walk_prefix(fsm, txn, k, kl, admin_fn, NULL);
        if (rv != 0)
            return rv > 0 ? 0 : rv;
    }
    return MH_ELOCKOUT;
}

struct name_clash {
    const char *id, *name;
    bool found;
};

static int name_fn(struct mh_fsm *fsm, MDB_txn *txn, const MDB_val *rest, const MDB_val *val,
                   void *arg)
{
    (void)fsm, (void)txn, (void)rest;
    struct name_clash *c = arg;
    RoleDef *d = mhsm__internal__role_definition_record__unpack(NULL, val->mv_size, val->mv_data);
    if (d == NULL)
        return MH_ECORRUPT;
    bool clash = strcmp(d->id, c->id) != 0 && strcasecmp(d->role_name, c->name) == 0;
    mh_store_free(d);
    if (clash)
        c->found = true;
    return clash ? 1 : 0;
}

static int do_put_role_definition(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd,
                                  struct mh_fsm_result *res)
{
    Mhsm__Internal__PutRoleDefinition *p = cmd->put_role_definition;
    RoleDef *d = p->record;
    uint64_t mask;
    if (d == NULL || !valid_definition(d, &mask))
        OUTCOME(res, MH_EPROTO, "", "");
    if (mh_rbac_builtin_by_id(d->id) != NULL)
        OUTCOME(res, MH_EBUILTIN, d->id, "");
    struct name_clash clash = {d->id, d->role_name, false};
    if (mh_rbac_builtin_by_name(d->role_name) != NULL)
        OUTCOME(res, MH_EEXIST, d->id, "");
    static const uint8_t dprefix[2] = {'d', 0};
    int rv = walk_prefix(fsm, txn, dprefix, sizeof dprefix, name_fn, &clash);
    if (rv < 0)
        return rv;
    if (clash.found)
        OUTCOME(res, MH_EEXIST, d->id, "");
    RoleDef *old = NULL;
    rv = get_def(fsm, txn, d->id, &old);
    if (is_store_error(rv))
        return rv;
    bool had_write = false;
    if (old == NULL) {
        size_t n;
        MH_TRY(count_under(fsm, txn, 'd', NULL, &n));
        if (p->max_custom_roles > 0 && n >= p->max_custom_roles)
            OUTCOME(res, MH_ELIMIT, d->id, "");
        d->created = cmd->time;
    } else {
        uint64_t old_mask = 0;
        if (mh_rbac_role_mask(old->data_actions, old->n_data_actions, old->not_data_actions,
                              old->n_not_data_actions, &old_mask, NULL) == 0)
            had_write = (old_mask & MH_RBAC_BIT(MH_ACT_RA_WRITE)) != 0;
        d->created = old->created;
        mh_store_free(old);
    }
    d->updated = cmd->time;
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_rbac_key('d', d->id, NULL, k, &kl));
    MH_TRY(mh_store_txn_put(fsm->st, txn, MH_STORE_RBAC, k, kl, &d->base));
    /* Only a replacement that drops roleAssignments/write can lock everyone out. */
    if (had_write && (mask & MH_RBAC_BIT(MH_ACT_RA_WRITE)) == 0) {
        rv = lockout_check(fsm, txn);
        if (rv == MH_ELOCKOUT)
            OUTCOME(res, MH_ELOCKOUT, d->id, "");
        if (rv < 0)
            return rv;
    }
    OUTCOME(res, 0, d->id, "");
}

static int do_delete_role_definition(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd,
                                     struct mh_fsm_result *res)
{
    const char *id = cmd->delete_role_definition->id;
    if (!lower_guid(id))
        OUTCOME(res, MH_EPROTO, "", "");
    if (mh_rbac_builtin_by_id(id) != NULL)
        OUTCOME(res, MH_EBUILTIN, id, "");
    RoleDef *old = NULL;
    int rv = get_def(fsm, txn, id, &old);
    if (rv == MH_ENOTFOUND)
        OUTCOME(res, MH_ENOTFOUND, id, "");
    if (rv < 0)
        return rv;
    mh_store_free(old);
    size_t users;
    MH_TRY(count_under(fsm, txn, 'r', id, &users));
    if (users > 0)
        OUTCOME(res, MH_EINUSE, id, "");
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    MH_TRY(mh_store_rbac_key('d', id, NULL, k, &kl));
    MH_TRY(rbac_del_raw(fsm, txn, k, kl));
    OUTCOME(res, 0, id, "");
}

struct triple {
    const RoleAssignment *want;
    bool found;
};

/* Stops at an assignment of the same principal with the same role and scope. */
static int triple_fn(struct mh_fsm *fsm, MDB_txn *txn, const MDB_val *rest, const MDB_val *val,
                     void *arg)
{
    (void)val;
    struct triple *t = arg;
    RoleAssignment *a = NULL;
    int rv = indexed_assignment(fsm, txn, rest, &a);
    if (rv < 0)
        return rv;
    bool same = strcmp(a->role_id, t->want->role_id) == 0 && strcmp(a->scope, t->want->scope) == 0;
    mh_store_free(a);
    if (same)
        t->found = true;
    return same ? 1 : 0;
}

static int find_triple(struct mh_fsm *fsm, MDB_txn *txn, const RoleAssignment *a, bool *found)
{
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    struct triple t = {a, false};
    MH_TRY(mh_store_rbac_key('p', a->principal_id, "", k, &kl));
    int rv = walk_prefix(fsm, txn, k, kl, triple_fn, &t);
    *found = t.found;
    return rv < 0 ? rv : 0;
}

static int do_put_role_assignment(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd,
                                  struct mh_fsm_result *res)
{
    Mhsm__Internal__PutRoleAssignment *p = cmd->put_role_assignment;
    RoleAssignment *a = p->record;
    if (!valid_assignment(a))
        OUTCOME(res, MH_EPROTO, "", "");
    uint64_t mask;
    int rv = role_mask(fsm, txn, a->role_id, &mask);
    if (rv == MH_ENOTFOUND)
        OUTCOME(res, MH_ENOTFOUND, a->name, "");
    if (rv < 0)
        return rv;
    RoleAssignment *old = NULL;
    rv = get_assignment(fsm, txn, a->name, &old);
    if (is_store_error(rv))
        return rv;
    if (old != NULL) {
        /* Azure answers a repeated identical PUT with the existing assignment. */
        bool same = strcmp(old->scope, a->scope) == 0 && strcmp(old->role_id, a->role_id) == 0 &&
                    strcmp(old->principal_id, a->principal_id) == 0;
        mh_store_free(old);
        OUTCOME(res, same ? 0 : MH_EEXIST, a->name, "");
    }
    bool dup;
    MH_TRY(find_triple(fsm, txn, a, &dup));
    if (dup)
        OUTCOME(res, MH_EEXIST, a->name, "");
    size_t n = 0;
    uint32_t limit;
    if (mh_rbac_scope_is_hsm(a->scope)) {
        size_t n2;
        MH_TRY(count_under(fsm, txn, 's', "/", &n));
        MH_TRY(count_under(fsm, txn, 's', "/keys", &n2));
        n += n2;
        limit = p->max_hsm_scope;
    } else {
        MH_TRY(count_under(fsm, txn, 's', a->scope, &n));
        limit = p->max_per_key;
    }
    if (limit > 0 && n >= limit)
        OUTCOME(res, MH_ELIMIT, a->name, "");
    a->created = cmd->time;
    MH_TRY(put_assignment(fsm, txn, a));
    /* Normally someone already manages roles and this holds at once. It matters
     * for an HSM activated before local RBAC (no assignment at all, the configured
     * administrators act as Administrator until the first one exists): its first
     * assignment must leave someone able to manage roles at the HSM scope. */
    DomainRecord *dom = NULL;
    rv = get_domain(fsm, txn, &dom);
    mh_store_free(dom);
    if (rv == 0) {
        rv = lockout_check(fsm, txn);
        if (rv == MH_ELOCKOUT)
            OUTCOME(res, MH_ELOCKOUT, a->name, "");
    }
    if (rv < 0 && rv != MH_ENOTACTIVE)
        return rv;
    OUTCOME(res, 0, a->name, "");
}

static int do_delete_role_assignment(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd,
                                     struct mh_fsm_result *res)
{
    const char *name = cmd->delete_role_assignment->name;
    if (!lower_guid(name))
        OUTCOME(res, MH_EPROTO, "", "");
    RoleAssignment *old = NULL;
    int rv = get_assignment(fsm, txn, name, &old);
    if (rv == MH_ENOTFOUND)
        OUTCOME(res, MH_ENOTFOUND, name, "");
    if (rv < 0)
        return rv;
    uint64_t mask = 0;
    bool hsm = mh_rbac_scope_is_hsm(old->scope);
    rv = role_mask(fsm, txn, old->role_id, &mask);
    if (rv == 0 || rv == MH_ENOTFOUND)
        rv = del_assignment(fsm, txn, old);
    mh_store_free(old);
    if (rv < 0)
        return rv;
    /* Only removing an HSM-scope roleAssignments/write grant can lock everyone out. */
    if (hsm && (mask & MH_RBAC_BIT(MH_ACT_RA_WRITE)) != 0) {
        rv = lockout_check(fsm, txn);
        if (rv == MH_ELOCKOUT)
            OUTCOME(res, MH_ELOCKOUT, name, "");
        if (rv < 0)
            return rv;
    }
    OUTCOME(res, 0, name, "");
}

/* Activate's initial assignments: validated and indexed like PutRoleAssignment,
 * without limits. A repeated (principal, role, scope) is stored once. */
static int put_initial_assignments(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd,
                                   struct mh_fsm_result *res)
{
    Mhsm__Internal__Activate *act = cmd->activate;
    for (size_t i = 0; i < act->n_initial_assignments; i++) {
        RoleAssignment *a = act->initial_assignments[i];
        if (!valid_assignment(a) || mh_rbac_builtin_by_id(a->role_id) == NULL)
            OUTCOME(res, MH_EPROTO, "", "");
        RoleAssignment *old = NULL;
        int rv = get_assignment(fsm, txn, a->name, &old);
        mh_store_free(old);
        if (rv == 0)
            OUTCOME(res, MH_EPROTO, "", "");
        if (rv != MH_ENOTFOUND)
            return rv;
        bool dup;
        MH_TRY(find_triple(fsm, txn, a, &dup));
        if (dup)
            continue;
        a->created = cmd->time;
        MH_TRY(put_assignment(fsm, txn, a));
    }
    OUTCOME(res, 0, "", "");
}

static int do_activate(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd, struct mh_fsm_result *res)
{
    DomainRecord *d = cmd->activate->domain;
    if (d == NULL)
        OUTCOME(res, MH_EPROTO, "", "");
    DomainRecord *old = NULL;
    int rv = get_domain(fsm, txn, &old);
    mh_store_free(old);
    if (rv == 0)
        OUTCOME(res, MH_EACTIVE, "", "");
    if (rv != MH_ENOTACTIVE)
        return rv;
    d->activated = true;
    d->activated_at = cmd->time;
    static const char k[] = MH_STORE_META_DOMAIN;
    MH_TRY(mh_store_txn_put(fsm->st, txn, MH_STORE_META, k, sizeof k - 1, &d->base));
    return put_initial_assignments(fsm, txn, cmd, res);
}

static int do_add_version(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd, struct mh_fsm_result *res)
{
    Mhsm__Internal__AddKeyVersion *a = cmd->add_version;
    VersionRecord *rec = a->record;
    if (rec == NULL || !valid_name(rec->name) || !valid_version(rec->version))
        OUTCOME(res, MH_EPROTO, "", "");
    KeyRecord *key = NULL;
    int rv = get_key(fsm, txn, rec->name, &key);
    if (is_store_error(rv))
        return rv;
    rv = 0;
    int outcome = 0;
    if (key != NULL && key->deleted) {
        outcome = MH_EDELETED;
    } else if (key == NULL && a->must_exist) {
        outcome = MH_ENOTFOUND;
    } else if (key != NULL && a->max_versions > 0 && key->version_count >= a->max_versions) {
        outcome = MH_ELIMIT;
    } else {
        rv = version_exists(fsm, txn, rec->name, rec->version);
        if (rv < 0)
            goto out;
        outcome = rv == 1 ? MH_EEXIST : 0;
        rv = 0;
    }
    if (outcome < 0) {
        set_result(res, outcome, rec->name, rec->version);
        goto out;
    }
    rec->created = cmd->time;
    rec->updated = cmd->time;
    rv = put_version(fsm, txn, rec);
    if (rv < 0)
        goto out;
    KeyRecord fresh = MHSM__INTERNAL__KEY_RECORD__INIT;
    KeyRecord *k = key;
    if (k == NULL) {
        k = &fresh;
        k->name = rec->name;
        k->created = cmd->time;
    }
    /* latest_version may point into |rec|: the record outlives this put. */
    char *saved_latest = k->latest_version;
    k->latest_version = rec->version;
    k->version_count++;
    rv = put_key(fsm, txn, k);
    k->latest_version = saved_latest;
    if (rv < 0)
        goto out;
    set_result(res, 0, rec->name, rec->version);
out:
    mh_store_free(key);
    return rv;
}

static int do_update_version(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd,
                             struct mh_fsm_result *res)
{
    Mhsm__Internal__UpdateKeyVersion *u = cmd->update_version;
    if (!valid_name(u->name) || (u->version[0] != 0 && !valid_version(u->version)))
        OUTCOME(res, MH_EPROTO, "", "");
    KeyRecord *key = NULL;
    VersionRecord *v = NULL;
    int rv = get_key(fsm, txn, u->name, &key);
    if (is_store_error(rv))
        return rv;
    if (key == NULL || key->deleted) {
        set_result(res, MH_ENOTFOUND, u->name, u->version);
        rv = 0;
        goto out;
    }
    const char *version = u->version[0] != 0 ? u->version : key->latest_version;
    rv = get_version(fsm, txn, u->name, version, &v);
    if (is_store_error(rv))
        goto out;
    if (v == NULL) {
        set_result(res, MH_ENOTFOUND, u->name, version);
        rv = 0;
        goto out;
    }
    if (u->set_enabled)
        v->enabled = u->enabled;
    if (u->set_not_before)
        v->not_before = u->not_before;
    if (u->set_expires)
        v->expires = u->expires;
    v->updated = cmd->time;
    /* Tags and key_ops are borrowed from the command for the put, then put back so
     * the stored record frees its own arrays. */
    size_t saved_n_tags = v->n_tags, saved_n_ops = v->n_key_ops;
    Mhsm__Internal__KeyVersionRecord__TagsEntry **saved_tags = v->tags;
    char **saved_ops = v->key_ops;
    Mhsm__Internal__KeyVersionRecord__TagsEntry *entries = NULL, **ptrs = NULL;
    if (u->set_tags && u->n_tags > 0) {
        entries = calloc(u->n_tags, sizeof *entries);
        ptrs = calloc(u->n_tags, sizeof *ptrs);
        if (entries == NULL || ptrs == NULL) {
            rv = MH_ENOMEM;
            goto out_tags;
        }
        for (size_t i = 0; i < u->n_tags; i++) {
            mhsm__internal__key_version_record__tags_entry__init(&entries[i]);
            entries[i].key = u->tags[i]->key;
            entries[i].value = u->tags[i]->value;
            ptrs[i] = &entries[i];
        }
    }
    if (u->set_tags) {
        v->n_tags = u->n_tags;
        v->tags = ptrs;
    }
    if (u->set_key_ops) {
        v->n_key_ops = u->n_key_ops;
        v->key_ops = u->key_ops;
    }
    rv = put_version(fsm, txn, v);
    v->n_tags = saved_n_tags;
    v->tags = saved_tags;
    v->n_key_ops = saved_n_ops;
    v->key_ops = saved_ops;
out_tags:
    free(ptrs);
    free(entries);
    if (rv < 0)
        goto out;
    set_result(res, 0, u->name, version);
out:
    mh_store_free(v);
    mh_store_free(key);
    return rv;
}

enum name_op { OP_DELETE, OP_RECOVER, OP_PURGE };

static int do_name_op(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd, enum name_op op,
                      const DomainRecord *domain, struct mh_fsm_result *res)
{
    const Mhsm__Internal__KeyName *kn = op == OP_DELETE    ? cmd->delete_key
                                        : op == OP_RECOVER ? cmd->recover_key
                                                           : cmd->purge_key;
    if (!valid_name(kn->name))
        OUTCOME(res, MH_EPROTO, "", "");
    KeyRecord *key = NULL;
    int rv = get_key(fsm, txn, kn->name, &key);
    if (is_store_error(rv))
        return rv;
    rv = 0;
    if (key == NULL) {
        set_result(res, MH_ENOTFOUND, kn->name, "");
        goto out;
    }
    switch (op) {
    case OP_DELETE:
        if (key->deleted) {
            set_result(res, MH_ENOTFOUND, kn->name, "");
            goto out;
        }
        key->deleted = true;
        key->deleted_date = cmd->time;
        key->scheduled_purge_date =
            add_sat(cmd->time, (int64_t)domain->retention_days * SECS_PER_DAY);
        rv = put_key(fsm, txn, key);
        break;
    case OP_RECOVER:
    case OP_PURGE:
        if (!key->deleted) {
            set_result(res, MH_ENOTDELETED, kn->name, "");
            goto out;
        }
        if (op == OP_RECOVER) {
            key->deleted = false;
            key->deleted_date = 0;
            key->scheduled_purge_date = 0;
            rv = put_key(fsm, txn, key);
            break;
        }
        rv = delete_versions(fsm, txn, kn->name);
        if (rv == 0) {
            MDB_val k = {strlen(kn->name), kn->name};
            int rc = mdb_del(txn, mh_store_dbi(fsm->st, MH_STORE_KEYS), &k, NULL);
            if (rc != 0) {
                MH_ERROR("fsm", "op=del err=\"%s\"", mdb_strerror(rc));
                rv = MH_ESTORE;
            }
        }
        break;
    default:
        rv = MH_EINVAL;
        break;
    }
    if (rv == 0)
        set_result(res, 0, kn->name, key->latest_version);
out:
    mh_store_free(key);
    return rv;
}

static int do_restore(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd, struct mh_fsm_result *res)
{
    Mhsm__Internal__RestoreKey *r = cmd->restore_key;
    KeyRecord *k = r->key;
    if (k == NULL || !valid_name(k->name) || !valid_version(k->latest_version) ||
        r->n_versions == 0 || r->n_versions > UINT32_MAX)
        OUTCOME(res, MH_EPROTO, "", "");
    bool has_latest = false;
    for (size_t i = 0; i < r->n_versions; i++) {
        VersionRecord *v = r->versions[i];
        if (v == NULL || strcmp(v->name, k->name) != 0 || !valid_version(v->version))
            OUTCOME(res, MH_EPROTO, "", "");
        if (strcmp(v->version, k->latest_version) == 0)
            has_latest = true;
    }
    if (!has_latest)
        OUTCOME(res, MH_EPROTO, "", "");
    KeyRecord *old = NULL;
    int rv = get_key(fsm, txn, k->name, &old);
    if (is_store_error(rv))
        return rv;
    if (old != NULL) {
        set_result(res, old->deleted ? MH_EDELETED : MH_EEXIST, k->name, "");
        mh_store_free(old);
        return 0;
    }
    for (size_t i = 0; i < r->n_versions; i++) {
        /* Versions of an unknown name can only collide with each other. */
        rv = version_exists(fsm, txn, k->name, r->versions[i]->version);
        if (rv < 0)
            return rv;
        if (rv == 1)
            OUTCOME(res, MH_EPROTO, "", "");
        MH_TRY(put_version(fsm, txn, r->versions[i]));
    }
    k->deleted = false;
    k->deleted_date = 0;
    k->scheduled_purge_date = 0;
    k->version_count = (uint32_t)r->n_versions;
    MH_TRY(put_key(fsm, txn, k));
    OUTCOME(res, 0, k->name, k->latest_version);
}

/* Applies the body of a well-formed envelope inside |txn|. */
static int apply_body(struct mh_fsm *fsm, MDB_txn *txn, Command *cmd, struct mh_fsm_result *res)
{
    if (cmd->body_case == MHSM__INTERNAL__COMMAND__BODY_ACTIVATE)
        return do_activate(fsm, txn, cmd, res);
    DomainRecord *domain = NULL;
    int rv = get_domain(fsm, txn, &domain);
    if (rv == MH_ENOTACTIVE)
        OUTCOME(res, MH_ENOTACTIVE, "", "");
    if (rv < 0)
        return rv;
    switch (cmd->body_case) {
    case MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION:
        rv = do_add_version(fsm, txn, cmd, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_UPDATE_VERSION:
        rv = do_update_version(fsm, txn, cmd, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY:
        rv = do_name_op(fsm, txn, cmd, OP_DELETE, domain, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_RECOVER_KEY:
        rv = do_name_op(fsm, txn, cmd, OP_RECOVER, domain, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY:
        rv = do_name_op(fsm, txn, cmd, OP_PURGE, domain, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_RESTORE_KEY:
        rv = do_restore(fsm, txn, cmd, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION:
        rv = do_put_role_definition(fsm, txn, cmd, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_DEFINITION:
        rv = do_delete_role_definition(fsm, txn, cmd, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT:
        rv = do_put_role_assignment(fsm, txn, cmd, res);
        break;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT:
        rv = do_delete_role_assignment(fsm, txn, cmd, res);
        break;
    default:
        set_result(res, MH_EPROTO, "", "");
        rv = 0;
        break;
    }
    mh_store_free(domain);
    return rv;
}

static bool known_body(const Command *cmd)
{
    switch (cmd->body_case) {
    case MHSM__INTERNAL__COMMAND__BODY_ACTIVATE:
        return cmd->activate != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION:
        return cmd->add_version != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_UPDATE_VERSION:
        return cmd->update_version != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY:
        return cmd->delete_key != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_RECOVER_KEY:
        return cmd->recover_key != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY:
        return cmd->purge_key != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_RESTORE_KEY:
        return cmd->restore_key != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION:
        return cmd->put_role_definition != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_DEFINITION:
        return cmd->delete_role_definition != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT:
        return cmd->put_role_assignment != NULL;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT:
        return cmd->delete_role_assignment != NULL;
    default:
        return false;
    }
}

static int lmdb_fail(const char *op, int rc)
{
    MH_ERROR("fsm", "op=%s err=\"%s\"", op, mdb_strerror(rc));
    return rc == ENOMEM ? MH_ENOMEM : MH_ESTORE;
}

/* Runs the body in a child transaction: a rule failure discards everything the
 * body may have written, so "nothing else changes" holds by construction. */
static int apply_in_child(struct mh_fsm *fsm, MDB_txn *parent, Command *cmd,
                          struct mh_fsm_result *res)
{
    MDB_txn *child;
    int rc = mdb_txn_begin(mh_store_env(fsm->st), parent, 0, &child);
    if (rc != 0)
        return lmdb_fail("txn_begin_child", rc);
    int rv = apply_body(fsm, child, cmd, res);
    if (rv < 0 || res->rc < 0) {
        mdb_txn_abort(child);
        return rv;
    }
    rc = mdb_txn_commit(child);
    return rc != 0 ? lmdb_fail("txn_commit_child", rc) : 0;
}

/* The key name a command is about ("" for activate): with the body case it tells a
 * genuine retry from a request id reused for a different request. */
static const char *command_target(const Command *cmd)
{
    switch (cmd->body_case) {
    case MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION:
        return cmd->add_version->record != NULL ? cmd->add_version->record->name : "";
    case MHSM__INTERNAL__COMMAND__BODY_UPDATE_VERSION:
        return cmd->update_version->name;
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY:
        return cmd->delete_key->name;
    case MHSM__INTERNAL__COMMAND__BODY_RECOVER_KEY:
        return cmd->recover_key->name;
    case MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY:
        return cmd->purge_key->name;
    case MHSM__INTERNAL__COMMAND__BODY_RESTORE_KEY:
        return cmd->restore_key->key != NULL ? cmd->restore_key->key->name : "";
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION:
        return cmd->put_role_definition->record != NULL ? cmd->put_role_definition->record->id : "";
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_DEFINITION:
        return cmd->delete_role_definition->id;
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT:
        return cmd->put_role_assignment->record != NULL ? cmd->put_role_assignment->record->name
                                                        : "";
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT:
        return cmd->delete_role_assignment->name;
    default:
        return "";
    }
}

static int record_request(struct mh_fsm *fsm, MDB_txn *txn, uint64_t index, const Command *cmd,
                          const struct mh_fsm_result *res)
{
    RequestRecord r = MHSM__INTERNAL__REQUEST_RECORD__INIT;
    r.body = (uint32_t)cmd->body_case;
    r.target = (char *)command_target(cmd);
    r.index = index;
    r.result = res->rc;
    r.name = (char *)res->name;
    r.version = (char *)res->version;
    r.time = cmd->time;
    return mh_store_txn_put(fsm->st, txn, MH_STORE_REQUESTS, cmd->request_id,
                            strlen(cmd->request_id), &r.base);
}

int mh_fsm_apply(struct mh_fsm *fsm, uint64_t index, const uint8_t *buf, size_t len,
                 struct mh_fsm_result *result)
{
    set_result(result, 0, "", "");
    MDB_txn *txn;
    int rc = mdb_txn_begin(mh_store_env(fsm->st), NULL, 0, &txn);
    if (rc != 0)
        return lmdb_fail("txn_begin", rc);
    uint64_t applied;
    int rv = mh_store_txn_applied_index(fsm->st, txn, &applied);
    if (rv < 0)
        goto err_after_txn;
    if (index <= applied) {
        mdb_txn_abort(txn);
        return 0;
    }

    struct budget budget = {0, 0, false};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &budget};
    Command *cmd = NULL;
    if (len <= MH_FSM_MAX_COMMAND) {
        budget.limit = 16 * len + 65536;
        cmd = mhsm__internal__command__unpack(&alloc, len, buf);
        if (cmd == NULL && budget.oom) {
            rv = MH_ENOMEM;
            goto err_after_txn;
        }
    }
    bool has_request = false;
    bool well_formed = cmd != NULL && cmd->format == 1 && known_body(cmd) &&
                       strlen(cmd->request_id) <= MH_STORE_REQUEST_ID_MAX;
    if (!well_formed) {
        set_result(result, MH_EPROTO, "", "");
    } else {
        has_request = cmd->request_id[0] != 0;
        RequestRecord *seen = NULL;
        if (has_request) {
            rv = mh_store_txn_get(fsm->st, txn, MH_STORE_REQUESTS, cmd->request_id,
                                  strlen(cmd->request_id),
                                  &mhsm__internal__request_record__descriptor, (void **)&seen);
            if (is_store_error(rv))
                goto err_after_cmd;
        }
        if (seen != NULL && (seen->body != (uint32_t)cmd->body_case ||
                             strcmp(seen->target, command_target(cmd)) != 0)) {
            /* Same id, different request: refuse, and reveal nothing of the first. */
            set_result(result, MH_EREQUESTID, "", "");
            mh_store_free(seen);
            has_request = false;
        } else if (seen != NULL) {
            set_result(result, seen->result, seen->name, seen->version);
            mh_store_free(seen);
            has_request = false; /* keep the first outcome */
        } else {
            rv = apply_in_child(fsm, txn, cmd, result);
            if (rv < 0)
                goto err_after_cmd;
        }
    }
    if (has_request && (rv = record_request(fsm, txn, index, cmd, result)) < 0)
        goto err_after_cmd;
    rv = mh_store_txn_set_applied_index(fsm->st, txn, index);
    if (rv < 0)
        goto err_after_cmd;
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = lmdb_fail("txn_commit", rc);
        goto err_after_abort;
    }
    if (well_formed && fsm->hook != NULL)
        fsm->hook(fsm->hook_arg, cmd, result);
    if (cmd != NULL)
        mhsm__internal__command__free_unpacked(cmd, &alloc);
    return 0;

err_after_cmd:
    mdb_txn_abort(txn);
err_after_abort:
    if (cmd != NULL)
        mhsm__internal__command__free_unpacked(cmd, &alloc);
    set_result(result, rv, "", "");
    return rv;
err_after_txn:
    mdb_txn_abort(txn);
    set_result(result, rv, "", "");
    return rv;
}

/* ---- snapshots ------------------------------------------------------------ */

static int sha256(const uint8_t *p, size_t len, uint8_t out[SNAP_HASH_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(p, len, out, &n, EVP_sha256(), NULL) != 1 || n != SNAP_HASH_LEN)
        return MH_ECRYPTO;
    return 0;
}

static int dump_db(struct mh_fsm *fsm, MDB_txn *txn, enum mh_store_db db, struct mh_buf *b)
{
    MDB_dbi dbi = mh_store_dbi(fsm->st, db);
    MDB_stat stat;
    int rc = mdb_stat(txn, dbi, &stat);
    if (rc != 0)
        return lmdb_fail("stat", rc);
    MH_TRY(mh_buf_append_u64be(b, (uint64_t)stat.ms_entries));
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return lmdb_fail("cursor_open", rc);
    MDB_val k, v;
    size_t count = 0;
    int rv = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size > UINT32_MAX || v.mv_size > UINT32_MAX) {
            rv = MH_ETOOBIG;
            break;
        }
        if ((rv = mh_buf_append_u32be(b, (uint32_t)k.mv_size)) < 0 ||
            (rv = mh_buf_append(b, k.mv_data, k.mv_size)) < 0 ||
            (rv = mh_buf_append_u32be(b, (uint32_t)v.mv_size)) < 0 ||
            (rv = mh_buf_append(b, v.mv_data, v.mv_size)) < 0)
            break;
        count++;
    }
    mdb_cursor_close(cur);
    if (rv < 0)
        return rv;
    if (rc != MDB_NOTFOUND)
        return lmdb_fail("cursor_get", rc);
    return count == stat.ms_entries ? 0 : MH_ESTORE;
}

struct mh_fsm_snap {
    struct mh_fsm *fsm;
    MDB_txn *txn; /* read-only; MDB_NOTLS lets it move to the writing thread */
};

int mh_fsm_snapshot_begin(struct mh_fsm *fsm, struct mh_fsm_snap **out)
{
    *out = NULL;
    struct mh_fsm_snap *s = calloc(1, sizeof *s);
    if (s == NULL)
        return MH_ENOMEM;
    int rc = mdb_txn_begin(mh_store_env(fsm->st), NULL, MDB_RDONLY, &s->txn);
    if (rc != 0) {
        free(s);
        return lmdb_fail("txn_begin_ro", rc);
    }
    s->fsm = fsm;
    *out = s;
    return 0;
}

int mh_fsm_snapshot_write(struct mh_fsm_snap *s, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    struct mh_buf b = {0};
    int rv = mh_buf_append(&b, SNAP_MAGIC, 8);
    if (rv == 0)
        rv = mh_buf_append_u32be(&b, SNAP_VERSION);
    if (rv == 0)
        rv = mh_buf_append_u32be(&b, MH_STORE_NDB);
    for (int db = 0; rv == 0 && db < MH_STORE_NDB; db++)
        rv = dump_db(s->fsm, s->txn, (enum mh_store_db)db, &b);
    uint8_t *h = NULL;
    if (rv == 0)
        rv = mh_buf_extend(&b, SNAP_HASH_LEN, &h);
    if (rv == 0)
        rv = sha256(b.data, b.len - SNAP_HASH_LEN, h);
    if (rv < 0) {
        mh_buf_free(&b);
        return rv;
    }
    *out = mh_buf_steal(&b, len);
    return 0;
}

void mh_fsm_snapshot_end(struct mh_fsm_snap *s)
{
    if (s == NULL)
        return;
    mdb_txn_abort(s->txn);
    free(s);
}

int mh_fsm_snapshot(struct mh_fsm *fsm, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    struct mh_fsm_snap *s;
    MH_TRY(mh_fsm_snapshot_begin(fsm, &s));
    int rv = mh_fsm_snapshot_write(s, out, len);
    mh_fsm_snapshot_end(s);
    return rv;
}

static int load_db(struct mh_fsm *fsm, MDB_txn *txn, enum mh_store_db db, struct mh_cursor *c)
{
    MDB_dbi dbi = mh_store_dbi(fsm->st, db);
    uint64_t count;
    if (mh_cursor_read_u64be(c, &count) < 0)
        return MH_ECORRUPT;
    for (uint64_t i = 0; i < count; i++) {
        uint32_t kl, vl;
        const uint8_t *kp, *vp;
        if (mh_cursor_read_u32be(c, &kl) < 0 || kl == 0 || kl > 511 ||
            mh_cursor_read_bytes(c, kl, &kp) < 0 || mh_cursor_read_u32be(c, &vl) < 0 ||
            mh_cursor_read_bytes(c, vl, &vp) < 0)
            return MH_ECORRUPT;
        MDB_val k = {kl, (void *)(uintptr_t)kp}, v = {vl, (void *)(uintptr_t)vp};
        /* APPEND refuses keys out of order (MDB_KEYEXIST): a snapshot we wrote is
         * always in key order, so anything else is corrupt. */
        int rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND);
        if (rc == MDB_KEYEXIST || rc == MDB_BAD_VALSIZE)
            return MH_ECORRUPT;
        if (rc != 0)
            return lmdb_fail("put", rc);
    }
    return 0;
}

int mh_fsm_restore(struct mh_fsm *fsm, const uint8_t *buf, size_t len)
{
    if (len < 16 + SNAP_HASH_LEN || memcmp(buf, SNAP_MAGIC, 8) != 0)
        return MH_ECORRUPT;
    uint8_t h[SNAP_HASH_LEN];
    MH_TRY(sha256(buf, len - SNAP_HASH_LEN, h));
    if (memcmp(h, buf + len - SNAP_HASH_LEN, SNAP_HASH_LEN) != 0)
        return MH_ECORRUPT;
    struct mh_cursor c = mh_cursor_of(buf, len - SNAP_HASH_LEN);
    uint32_t version, ndb;
    if (mh_cursor_skip(&c, 8) < 0 || mh_cursor_read_u32be(&c, &version) < 0 ||
        mh_cursor_read_u32be(&c, &ndb) < 0)
        return MH_ECORRUPT;
    /* Version 1 (before RBAC) has no rbac database: it restores as empty. */
    if (!(version == SNAP_VERSION && ndb == MH_STORE_NDB) && !(version == 1 && ndb == SNAP_V1_NDB))
        return MH_ECORRUPT;
    MDB_txn *txn;
    int rc = mdb_txn_begin(mh_store_env(fsm->st), NULL, 0, &txn);
    if (rc != 0)
        return lmdb_fail("txn_begin", rc);
    int rv = 0;
    for (int db = 0; rv == 0 && db < MH_STORE_NDB; db++) {
        rc = mdb_drop(txn, mh_store_dbi(fsm->st, (enum mh_store_db)db), 0);
        if (rc != 0)
            rv = lmdb_fail("drop", rc);
    }
    for (int db = 0; rv == 0 && db < (int)ndb; db++)
        rv = load_db(fsm, txn, (enum mh_store_db)db, &c);
    if (rv == 0 && mh_cursor_remaining(&c) != 0)
        rv = MH_ECORRUPT;
    if (rv < 0) {
        mdb_txn_abort(txn);
        return rv;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        return lmdb_fail("txn_commit", rc);
    uint64_t applied = 0;
    rv = mh_store_applied_index(fsm->st, &applied);
    MH_INFO("fsm", "msg=\"snapshot restored\" bytes=%zu applied_index=%llu", len,
            (unsigned long long)applied);
    if (fsm->hook != NULL) /* everything may have changed */
        fsm->hook(fsm->hook_arg, NULL, NULL);
    return rv;
}
