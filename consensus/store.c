#include "consensus/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fsutil.h"
#include "common/log.h"

#define STORE_MAX_READERS 512

struct mh_store {
    MDB_env *env;
    MDB_dbi dbi[MH_STORE_NDB];
    int lock_fd;
};

static const char *const db_names[MH_STORE_NDB] = {"meta", "keys", "versions", "requests", "rbac"};
static const char applied_key[] = "applied_index";
static const char domain_key[] = MH_STORE_META_DOMAIN;

static int lmdb_err(const char *op, int rc)
{
    if (rc == MDB_NOTFOUND)
        return MH_ENOTFOUND;
    if (rc == ENOMEM)
        return MH_ENOMEM;
    MH_ERROR("store", "op=%s err=\"%s\"", op, mdb_strerror(rc));
    return MH_ESTORE;
}

static int remove_env_files(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; i < 2; i++) {
        char path[4200];
        int n = snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (n < 0 || (size_t)n >= sizeof path)
            return MH_EINVAL;
        if (unlink(path) != 0 && errno != ENOENT)
            return -errno;
    }
    return 0;
}

int mh_store_open(const char *dir, size_t map_size, struct mh_store **out)
{
    *out = NULL;
    if (dir == NULL)
        return MH_EINVAL;
    MH_TRY(mh_fs_mkdirs(dir));
    struct mh_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return MH_ENOMEM;
    int rv = mh_fs_lock_dir(dir, "store", &st->lock_fd);
    if (rv < 0)
        goto err_after_alloc;
    /* Boot policy (a): raft replays snapshot + log into an empty store. */
    rv = remove_env_files(dir);
    if (rv < 0)
        goto err_after_lock;
    int rc = mdb_env_create(&st->env);
    if (rc != 0) {
        rv = lmdb_err("env_create", rc);
        goto err_after_lock;
    }
    if ((rc = mdb_env_set_maxdbs(st->env, MH_STORE_NDB)) != 0 ||
        (rc = mdb_env_set_mapsize(st->env, map_size ? map_size : MH_STORE_DEFAULT_MAP)) != 0 ||
        (rc = mdb_env_set_maxreaders(st->env, STORE_MAX_READERS)) != 0) {
        rv = lmdb_err("env_set", rc);
        goto err_after_env;
    }
    /* NOSYNC: raft's log is the durability source. NOTLS: read transactions of
     * worker threads and snapshots must not be tied to one thread. No NOMEMINIT:
     * LMDB then zeroes page buffers, so heap garbage never reaches the file. */
    rc = mdb_env_open(st->env, dir, MDB_NOSYNC | MDB_NOTLS, 0600);
    if (rc != 0) {
        rv = lmdb_err("env_open", rc);
        goto err_after_env;
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc != 0) {
        rv = lmdb_err("txn_begin", rc);
        goto err_after_env;
    }
    for (int i = 0; i < MH_STORE_NDB; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &st->dbi[i]);
        if (rc != 0) {
            mdb_txn_abort(txn);
            rv = lmdb_err("dbi_open", rc);
            goto err_after_env;
        }
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = lmdb_err("txn_commit", rc);
        goto err_after_env;
    }
    *out = st;
    return 0;

err_after_env:
    mdb_env_close(st->env);
err_after_lock:
    close(st->lock_fd);
err_after_alloc:
    free(st);
    return rv;
}

void mh_store_close(struct mh_store *st)
{
    if (st == NULL)
        return;
    mdb_env_close(st->env);
    close(st->lock_fd);
    free(st);
}

MDB_env *mh_store_env(struct mh_store *st)
{
    return st->env;
}

MDB_dbi mh_store_dbi(const struct mh_store *st, enum mh_store_db db)
{
    return st->dbi[db];
}

/* ---- transaction-level helpers ----------------------------------------- */

int mh_store_version_key(const char *name, const char *version, uint8_t *out, size_t *len)
{
    size_t nl = strlen(name), vl = strlen(version);
    if (nl > MH_STORE_NAME_MAX || vl > MH_STORE_VERSION_MAX)
        return MH_EINVAL;
    memcpy(out, name, nl);
    out[nl] = 0;
    memcpy(out + nl + 1, version, vl);
    *len = nl + 1 + vl;
    return 0;
}

static int unpack_val(const MDB_val *v, const ProtobufCMessageDescriptor *desc, void **out)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, v->mv_size, v->mv_data);
    if (m == NULL) {
        MH_ERROR("store", "msg=\"stored record does not unpack\" type=%s", desc->short_name);
        return MH_ECORRUPT;
    }
    *out = m;
    return 0;
}

int mh_store_txn_get(struct mh_store *st, MDB_txn *txn, enum mh_store_db db, const void *key,
                     size_t klen, const ProtobufCMessageDescriptor *desc, void **out)
{
    *out = NULL;
    if (klen == 0 || klen > 511)
        return MH_ENOTFOUND;
    MDB_val k = {klen, (void *)(uintptr_t)key}, v;
    int rc = mdb_get(txn, st->dbi[db], &k, &v);
    if (rc != 0)
        return lmdb_err("get", rc);
    return unpack_val(&v, desc, out);
}

int mh_store_txn_put(struct mh_store *st, MDB_txn *txn, enum mh_store_db db, const void *key,
                     size_t klen, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    /* Reserve the value inside the map and pack straight into it: no copy. */
    MDB_val k = {klen, (void *)(uintptr_t)key}, v = {n, NULL};
    int rc = mdb_put(txn, st->dbi[db], &k, &v, MDB_RESERVE);
    if (rc != 0)
        return lmdb_err("put", rc);
    if (n > 0)
        protobuf_c_message_pack(msg, v.mv_data);
    return 0;
}

int mh_store_txn_applied_index(struct mh_store *st, MDB_txn *txn, uint64_t *out)
{
    *out = 0;
    MDB_val k = {sizeof applied_key - 1, (void *)(uintptr_t)applied_key}, v;
    int rc = mdb_get(txn, st->dbi[MH_STORE_META], &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return lmdb_err("get", rc);
    if (v.mv_size != 8)
        return MH_ECORRUPT;
    const uint8_t *p = v.mv_data;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | p[i];
    *out = x;
    return 0;
}

int mh_store_txn_set_applied_index(struct mh_store *st, MDB_txn *txn, uint64_t index)
{
    uint8_t b[8];
    for (int i = 7; i >= 0; i--, index >>= 8)
        b[i] = (uint8_t)index;
    MDB_val k = {sizeof applied_key - 1, (void *)(uintptr_t)applied_key}, v = {8, b};
    int rc = mdb_put(txn, st->dbi[MH_STORE_META], &k, &v, 0);
    return rc != 0 ? lmdb_err("put", rc) : 0;
}

/* ---- reads ------------------------------------------------------------- */

static int read_begin(struct mh_store *st, MDB_txn **txn)
{
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    return rc != 0 ? lmdb_err("txn_begin_ro", rc) : 0;
}

int mh_store_applied_index(struct mh_store *st, uint64_t *out)
{
    *out = 0;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    int rv = mh_store_txn_applied_index(st, txn, out);
    mdb_txn_abort(txn);
    return rv;
}

int mh_store_get_domain(struct mh_store *st, Mhsm__Internal__DomainRecord **out)
{
    *out = NULL;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    int rv = mh_store_txn_get(st, txn, MH_STORE_META, domain_key, sizeof domain_key - 1,
                              &mhsm__internal__domain_record__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rv;
}

int mh_store_get_key(struct mh_store *st, const char *name, Mhsm__Internal__KeyRecord **out)
{
    *out = NULL;
    size_t nl = strlen(name);
    if (nl > MH_STORE_NAME_MAX)
        return MH_ENOTFOUND;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    int rv = mh_store_txn_get(st, txn, MH_STORE_KEYS, name, nl,
                              &mhsm__internal__key_record__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rv;
}

static int get_version_txn(struct mh_store *st, MDB_txn *txn, const char *name, const char *version,
                           Mhsm__Internal__KeyVersionRecord **out)
{
    uint8_t k[MH_STORE_VERSION_KEY_MAX];
    size_t kl;
    if (mh_store_version_key(name, version, k, &kl) < 0)
        return MH_ENOTFOUND;
    return mh_store_txn_get(st, txn, MH_STORE_VERSIONS, k, kl,
                            &mhsm__internal__key_version_record__descriptor, (void **)out);
}

int mh_store_get_version(struct mh_store *st, const char *name, const char *version,
                         bool deleted_ok, Mhsm__Internal__KeyRecord **key_out,
                         Mhsm__Internal__KeyVersionRecord **out)
{
    *out = NULL;
    if (key_out != NULL)
        *key_out = NULL;
    size_t nl = strlen(name);
    if (nl > MH_STORE_NAME_MAX)
        return MH_ENOTFOUND;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    Mhsm__Internal__KeyRecord *key = NULL;
    int rv = mh_store_txn_get(st, txn, MH_STORE_KEYS, name, nl,
                              &mhsm__internal__key_record__descriptor, (void **)&key);
    if (rv < 0)
        goto done;
    if (key->deleted && !deleted_ok) {
        rv = MH_ENOTFOUND;
        goto done;
    }
    if (version == NULL || version[0] == 0)
        version = key->latest_version;
    rv = get_version_txn(st, txn, name, version, out);
done:
    mdb_txn_abort(txn);
    if (rv == 0 && key_out != NULL) {
        *key_out = key;
        key = NULL;
    }
    mh_store_free(key);
    return rv;
}

int mh_store_list_keys(struct mh_store *st, bool deleted, const char *after, size_t max,
                       struct mh_store_key_entry *out, size_t *n, bool *more)
{
    *n = 0;
    *more = false;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->dbi[MH_STORE_KEYS], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return lmdb_err("cursor_open", rc);
    }
    MDB_val k, v;
    size_t al = after != NULL ? strlen(after) : 0;
    if (al > 0 && al <= 511) {
        k.mv_size = al;
        k.mv_data = (void *)(uintptr_t)after;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == al && memcmp(k.mv_data, after, al) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else if (al > 511) {
        rc = MDB_NOTFOUND; /* no stored name sorts after an over-long one we cannot seek */
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    int rv = 0;
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Mhsm__Internal__KeyRecord *key;
        rv = unpack_val(&v, &mhsm__internal__key_record__descriptor, (void **)&key);
        if (rv < 0)
            break;
        if (key->deleted != deleted) {
            mh_store_free(key);
            continue;
        }
        if (*n == max) {
            *more = true;
            mh_store_free(key);
            break;
        }
        Mhsm__Internal__KeyVersionRecord *latest;
        rv = get_version_txn(st, txn, key->name, key->latest_version, &latest);
        if (rv < 0) {
            if (rv == MH_ENOTFOUND)
                rv = MH_ECORRUPT;
            mh_store_free(key);
            break;
        }
        out[*n].key = key;
        out[*n].latest = latest;
        (*n)++;
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND)
        rv = lmdb_err("cursor_get", rc);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rv < 0) {
        mh_store_key_entries_free(out, *n);
        *n = 0;
        *more = false;
    }
    return rv;
}

void mh_store_key_entries_free(struct mh_store_key_entry *entries, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mh_store_free(entries[i].key);
        mh_store_free(entries[i].latest);
        entries[i].key = NULL;
        entries[i].latest = NULL;
    }
}

int mh_store_list_versions(struct mh_store *st, const char *name, bool deleted_ok,
                           const char *after, size_t max, Mhsm__Internal__KeyVersionRecord **out,
                           size_t *n, bool *more)
{
    *n = 0;
    *more = false;
    size_t nl = strlen(name);
    if (nl > MH_STORE_NAME_MAX)
        return MH_ENOTFOUND;
    if (after == NULL)
        after = "";
    if (strlen(after) > MH_STORE_VERSION_MAX)
        return 0; /* no version id sorts after one longer than any we store */
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    Mhsm__Internal__KeyRecord *key = NULL;
    int rv = mh_store_txn_get(st, txn, MH_STORE_KEYS, name, nl,
                              &mhsm__internal__key_record__descriptor, (void **)&key);
    if (rv < 0) {
        mdb_txn_abort(txn);
        return rv;
    }
    bool deleted = key->deleted;
    mh_store_free(key);
    if (deleted && !deleted_ok) {
        mdb_txn_abort(txn);
        return MH_ENOTFOUND;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->dbi[MH_STORE_VERSIONS], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return lmdb_err("cursor_open", rc);
    }
    uint8_t seek[MH_STORE_VERSION_KEY_MAX];
    size_t sl;
    rv = mh_store_version_key(name, after, seek, &sl);
    if (rv < 0)
        goto done;
    MDB_val k = {sl, seek}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after[0] != 0 && k.mv_size == sl && memcmp(k.mv_data, seek, sl) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    /* Names never contain NUL, so name "\0" is a prefix of exactly this name's keys. */
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= nl + 1 || memcmp(k.mv_data, seek, nl + 1) != 0)
            break;
        if (*n == max) {
            *more = true;
            break;
        }
        rv = unpack_val(&v, &mhsm__internal__key_version_record__descriptor, (void **)&out[*n]);
        if (rv < 0)
            break;
        (*n)++;
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND)
        rv = lmdb_err("cursor_get", rc);
done:
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rv < 0) {
        mh_store_versions_free(out, *n);
        *n = 0;
        *more = false;
    }
    return rv;
}

void mh_store_versions_free(Mhsm__Internal__KeyVersionRecord **versions, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mh_store_free(versions[i]);
        versions[i] = NULL;
    }
}

int mh_store_get_request(struct mh_store *st, const char *request_id,
                         Mhsm__Internal__RequestRecord **out)
{
    *out = NULL;
    size_t l = strlen(request_id);
    if (l == 0 || l > MH_STORE_REQUEST_ID_MAX)
        return MH_ENOTFOUND;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    int rv = mh_store_txn_get(st, txn, MH_STORE_REQUESTS, request_id, l,
                              &mhsm__internal__request_record__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rv;
}

/* ---- RBAC reads ---------------------------------------------------------- */

/* Longest rbac key: "p" 0 principal 0 name (295 bytes), under LMDB's 511. */
/* Builds tag 0 a [0 b] (the rbac database's key forms, see store.h). */
int mh_store_rbac_key(char tag, const char *a, const char *b, uint8_t out[MH_STORE_RBAC_KEY_MAX],
                      size_t *len)
{
    size_t al = strlen(a), bl = b != NULL ? strlen(b) : 0;
    size_t n = 2 + al + (b != NULL ? 1 + bl : 0);
    if (n > 511)
        return MH_EINVAL;
    out[0] = (uint8_t)tag;
    out[1] = 0;
    memcpy(out + 2, a, al);
    if (b != NULL) {
        out[2 + al] = 0;
        memcpy(out + 3 + al, b, bl);
    }
    *len = n;
    return 0;
}

/* False when the key would not fit an LMDB key: such a key can never have been
 * stored, so callers treat it as "not found". */
static bool rbac_key(char tag, const char *a, const char *b, uint8_t out[MH_STORE_RBAC_KEY_MAX],
                     size_t *len)
{
    return mh_store_rbac_key(tag, a, b, out, len) == 0;
}

int mh_store_get_role_definition(struct mh_store *st, const char *id,
                                 Mhsm__Internal__RoleDefinitionRecord **out)
{
    *out = NULL;
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    if (!rbac_key('d', id, NULL, k, &kl))
        return MH_ENOTFOUND;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    int rv = mh_store_txn_get(st, txn, MH_STORE_RBAC, k, kl,
                              &mhsm__internal__role_definition_record__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rv;
}

int mh_store_get_role_assignment(struct mh_store *st, const char *name,
                                 Mhsm__Internal__RoleAssignmentRecord **out)
{
    *out = NULL;
    uint8_t k[MH_STORE_RBAC_KEY_MAX];
    size_t kl;
    if (!rbac_key('a', name, NULL, k, &kl))
        return MH_ENOTFOUND;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    int rv = mh_store_txn_get(st, txn, MH_STORE_RBAC, k, kl,
                              &mhsm__internal__role_assignment_record__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rv;
}

/* A growing array of unpacked records. */
struct recs {
    void **v;
    size_t n, cap;
};

static int recs_push(struct recs *r, void *rec)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8, bytes;
        if (mh_size_mul(cap, sizeof *r->v, &bytes) < 0)
            return MH_ENOMEM;
        void **v = realloc(r->v, bytes);
        if (v == NULL)
            return MH_ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = rec;
    return 0;
}

int mh_store_list_role_definitions(struct mh_store *st, Mhsm__Internal__RoleDefinitionRecord ***out,
                                   size_t *n)
{
    *out = NULL;
    *n = 0;
    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->dbi[MH_STORE_RBAC], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return lmdb_err("cursor_open", rc);
    }
    static const uint8_t prefix[2] = {'d', 0};
    struct recs r = {0};
    int rv = 0;
    MDB_val k = {sizeof prefix, (void *)(uintptr_t)prefix}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < sizeof prefix || memcmp(k.mv_data, prefix, sizeof prefix) != 0)
            break;
        void *rec;
        rv = unpack_val(&v, &mhsm__internal__role_definition_record__descriptor, &rec);
        if (rv < 0)
            break;
        rv = recs_push(&r, rec);
        if (rv < 0) {
            mh_store_free(rec);
            break;
        }
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND)
        rv = lmdb_err("cursor_get", rc);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rv < 0) {
        mh_store_records_free(r.v, r.n);
        return rv;
    }
    *out = (Mhsm__Internal__RoleDefinitionRecord **)r.v;
    *n = r.n;
    return 0;
}

static bool ra_matches(const Mhsm__Internal__RoleAssignmentRecord *ra,
                       const struct mh_store_ra_filter *f)
{
    if (f == NULL)
        return true;
    if (f->principal != NULL && strcmp(ra->principal_id, f->principal) != 0)
        return false;
    return f->scope == NULL || strcmp(ra->scope, f->scope) == 0;
}

int mh_store_list_role_assignments(struct mh_store *st, const struct mh_store_ra_filter *f,
                                   const char *after, size_t max,
                                   Mhsm__Internal__RoleAssignmentRecord ***out, size_t *n,
                                   bool *more)
{
    *out = NULL;
    *n = 0;
    *more = false;
    /* Walk the principal index, else the scope index, else the records: each key
     * in the walked range ends in 0 name (or is "a" 0 name), in name order. */
    uint8_t prefix[MH_STORE_RBAC_KEY_MAX], seek[MH_STORE_RBAC_KEY_MAX];
    size_t pl;
    if (f != NULL && f->principal != NULL) {
        if (!rbac_key('p', f->principal, "", prefix, &pl))
            return 0;
    } else if (f != NULL && f->scope != NULL) {
        if (!rbac_key('s', f->scope, "", prefix, &pl))
            return 0;
    } else {
        pl = 2;
        prefix[0] = 'a';
        prefix[1] = 0;
    }
    size_t al = after != NULL ? strlen(after) : 0;
    if (pl + al > 511)
        return 0; /* nothing sorts after a name longer than any stored one */
    memcpy(seek, prefix, pl);
    if (al > 0)
        memcpy(seek + pl, after, al);
    size_t sl = pl + al;

    MDB_txn *txn;
    MH_TRY(read_begin(st, &txn));
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->dbi[MH_STORE_RBAC], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return lmdb_err("cursor_open", rc);
    }
    struct recs r = {0};
    int rv = 0;
    MDB_val k = {sl, seek}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && al > 0 && k.mv_size == sl && memcmp(k.mv_data, seek, sl) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= pl || memcmp(k.mv_data, prefix, pl) != 0)
            break;
        Mhsm__Internal__RoleAssignmentRecord *ra = NULL;
        if (prefix[0] == 'a') {
            rv = unpack_val(&v, &mhsm__internal__role_assignment_record__descriptor, (void **)&ra);
        } else {
            /* An index entry: the record lives under "a" 0 name. */
            uint8_t ak[MH_STORE_RBAC_KEY_MAX];
            size_t nl = k.mv_size - pl;
            ak[0] = 'a';
            ak[1] = 0;
            memcpy(ak + 2, (const uint8_t *)k.mv_data + pl, nl);
            rv =
                mh_store_txn_get(st, txn, MH_STORE_RBAC, ak, 2 + nl,
                                 &mhsm__internal__role_assignment_record__descriptor, (void **)&ra);
            if (rv == MH_ENOTFOUND) {
                MH_ERROR("store", "msg=\"rbac index names a missing assignment\"");
                rv = MH_ECORRUPT;
            }
        }
        if (rv < 0)
            break;
        if (!ra_matches(ra, f)) {
            mh_store_free(ra);
            continue;
        }
        if (r.n == max) {
            *more = true;
            mh_store_free(ra);
            break;
        }
        rv = recs_push(&r, ra);
        if (rv < 0) {
            mh_store_free(ra);
            break;
        }
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND)
        rv = lmdb_err("cursor_get", rc);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rv < 0) {
        mh_store_records_free(r.v, r.n);
        *more = false;
        return rv;
    }
    *out = (Mhsm__Internal__RoleAssignmentRecord **)r.v;
    *n = r.n;
    return 0;
}

void mh_store_records_free(void *records, size_t n)
{
    void **v = records;
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        mh_store_free(v[i]);
    free(v);
}

void mh_store_free(void *protobuf_message)
{
    if (protobuf_message != NULL)
        protobuf_c_message_free_unpacked(protobuf_message, NULL);
}
