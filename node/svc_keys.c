/* svc_keys: mhsm.v1.Keys: key lifecycle (create, import, read, list, update, delete,
 * recover, purge, backup, restore, rotate) and random bytes.
 *
 * Reads run on the loop thread (short LMDB read transactions). Key generation,
 * import parsing and sealing run on the worker pool. Every state change is a
 * Command proposed to the cluster carrying everything non-deterministic (version
 * id, sealed material, time, request id); the reply is built from the store after
 * the command is applied, so a retried request id answers like the first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "common/log.h"
#include "crypto/jwk.h"
#include "crypto/key.h"
#include "crypto/rand.h"
#include "crypto/seal.h"
#include "node/authz.h"
#include "node/keyrec.h"
#include "node/node.h"
#include "node/status.h"

#define PAGE_MAX               25
#define BACKUP_MAGIC           "MHB1"
#define BACKUP_FORMAT          1
#define MAX_VERSIONS_IN_BACKUP 10000
static const char backup_aad_label[] = "mhsm v1 key backup";

/* ---- small helpers --------------------------------------------------------- */

static bool check_name(struct mh_rpc_call *call, const char *name)
{
    if (mh_keyrec_name_ok(name))
        return true;
    mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                "invalid key name: use 1..127 characters 0-9, a-z, A-Z and '-'");
    return false;
}

static bool check_version(struct mh_rpc_call *call, const char *version)
{
    if (version[0] == '\0' || mh_keyrec_version_ok(version))
        return true;
    mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                "invalid key version: 32 lower-case hexadecimal characters");
    return false;
}

static void fail_key(struct mh_rpc_call *call, int rv, const char *name)
{
    char what[200];
    if (rv == MH_ENOTFOUND)
        snprintf(what, sizeof what, "key '%s'", name);
    else if (rv == MH_EDELETED)
        snprintf(what, sizeof what, "key '%s' is deleted", name);
    else
        snprintf(what, sizeof what, "key '%s'", name);
    mh_rpc_fail_err(call, rv, what);
}

static void reply_bundle(struct mh_node *n, struct mh_rpc_call *call,
                         const Mhsm__Internal__KeyVersionRecord *rec)
{
    Mhsm__V1__KeyBundle b;
    int rv = mh_keyrec_bundle(n->cfg->name, n->retention_days, rec, &b);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "building the response");
        return;
    }
    mh_rpc_reply(call, &b.base);
    mh_keyrec_bundle_clear(&b);
}

/* Reads |name|/|version| after a commit and replies with its bundle. */
static void reply_version(struct mh_node *n, struct mh_rpc_call *call, const char *name,
                          const char *version)
{
    Mhsm__Internal__KeyVersionRecord *rec = NULL;
    int rv = mh_store_get_version(n->store, name, version, false, NULL, &rec);
    if (rv < 0) {
        fail_key(call, rv, name);
        return;
    }
    reply_bundle(n, call, rec);
    mh_store_free(rec);
}

static void reply_deleted(struct mh_node *n, struct mh_rpc_call *call, const char *name)
{
    Mhsm__Internal__KeyRecord *key = NULL;
    Mhsm__Internal__KeyVersionRecord *rec = NULL;
    int rv = mh_store_get_version(n->store, name, NULL, true, &key, &rec);
    if (rv == 0 && !key->deleted)
        rv = MH_ENOTDELETED;
    if (rv < 0) {
        if (rv == MH_ENOTDELETED)
            rv = MH_ENOTFOUND; /* no deleted key by that name */
        char what[200];
        snprintf(what, sizeof what, "deleted key '%s'", name);
        mh_rpc_fail_err(call, rv, what);
        goto out;
    }
    Mhsm__V1__KeyBundle b;
    rv = mh_keyrec_bundle(n->cfg->name, n->retention_days, rec, &b);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "building the response");
        goto out;
    }
    char rid[300];
    snprintf(rid, sizeof rid, "https://%s/deletedkeys/%s", n->cfg->name, name);
    Mhsm__V1__DeletedKeyBundle d = MHSM__V1__DELETED_KEY_BUNDLE__INIT;
    d.key = &b;
    d.recovery_id = rid;
    d.deleted_date = key->deleted_date;
    d.scheduled_purge_date = key->scheduled_purge_date;
    mh_rpc_reply(call, &d.base);
    mh_keyrec_bundle_clear(&b);
out:
    mh_store_free(key);
    mh_store_free(rec);
}

/* Validates attributes of a request; fills enabled/nbf/exp. */
static bool parse_attributes(struct mh_rpc_call *call, const Mhsm__V1__KeyAttributes *a,
                             bool *enabled, int64_t *nbf, int64_t *exp)
{
    if (a == NULL)
        return true;
    if (a->enabled != NULL)
        *enabled = a->enabled->value;
    if (a->not_before != NULL)
        *nbf = a->not_before->value;
    if (a->expires != NULL)
        *exp = a->expires->value;
    if (a->exportable != NULL && a->exportable->value) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "keys in mhsm are never exportable");
        return false;
    }
    if (*nbf < 0 || *exp < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "nbf and exp must be unix seconds >= 0");
        return false;
    }
    if (*nbf != 0 && *exp != 0 && *exp <= *nbf) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "exp must be later than nbf");
        return false;
    }
    return true;
}

static bool check_tags(struct mh_rpc_call *call, size_t n, void *const *entries)
{
    char *keys[MH_MAX_TAGS], *values[MH_MAX_TAGS];
    const char *why = "tags";
    if (n > MH_MAX_TAGS) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "at most 15 tags per key");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const Mhsm__V1__KeyBundle__TagsEntry *e = entries[i];
        keys[i] = e->key;
        values[i] = e->value;
    }
    int rv = mh_keyrec_check_tags(n, keys, values, &why);
    if (rv < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, why);
        return false;
    }
    return true;
}

/* ---- adding a version: create, import, rotate ------------------------------ */

enum add_kind { ADD_CREATE, ADD_IMPORT, ADD_ROTATE };

struct add_op {
    struct mh_work work;
    struct mh_proposal prop;
    struct mh_node *n;
    struct mh_rpc_call *call;
    enum add_kind kind;
    const struct mh_domain *domain;
    /* inputs */
    enum mh_kty kty;
    unsigned bits;
    enum mh_curve curve;
    unsigned ops;        /* 0 for import until the key type is known */
    char *const *ops_in; /* import: the request's key_ops, checked on the worker */
    size_t n_ops_in;
    const char *jwk, *pem, *pem_password;
    Mhsm__Internal__KeyVersionRecord *source; /* rotate: the latest version */
    /* the record proposed */
    Mhsm__Internal__KeyVersionRecord rec;
    char name[MH_KEY_NAME_MAX + 1];
    char version[MH_VERSION_LEN + 1];
    char rid[65];
    char *op_strs[8];
    Mhsm__Internal__KeyVersionRecord__TagsEntry tag_storage[MH_MAX_TAGS];
    Mhsm__Internal__KeyVersionRecord__TagsEntry *tag_ptrs[MH_MAX_TAGS];
    struct mh_buf sealed, pub;
    int rc;
    const char *what;
};

static void add_free(struct add_op *op)
{
    mh_buf_free(&op->sealed);
    mh_buf_free(&op->pub);
    mh_store_free(op->source);
    free(op);
}

static void set_ops(struct add_op *op, unsigned bits)
{
    op->rec.n_key_ops = 0;
    op->rec.key_ops = op->op_strs;
    for (unsigned b = 1; b <= MH_OP_EXPORT; b <<= 1)
        if (bits & b)
            op->op_strs[op->rec.n_key_ops++] = (char *)mh_keyrec_op_name(b);
}

static void add_work(struct mh_work *w)
{
    struct add_op *op = mh_container_of(w, struct add_op, work);
    struct mh_key *key = NULL;
    struct mh_buf aad = {0};
    if (op->kind == ADD_IMPORT) {
        if (op->jwk != NULL)
            op->rc = mh_jwk_import_private(op->jwk, strlen(op->jwk), &key);
        else
            op->rc = mh_pem_import_private(op->pem, strlen(op->pem), op->pem_password, &key);
        if (op->rc < 0) {
            op->what = op->jwk != NULL ? "importing the JWK" : "importing the PEM key";
            goto out;
        }
        if (!mh_key_has_private(key)) {
            op->rc = MH_ENOPRIVATE;
            op->what = "importing a key needs its private part";
            goto out;
        }
        op->kty = mh_key_kty(key);
        op->curve = mh_key_curve(key);
        op->bits = op->kty == MH_KTY_EC ? 0 : mh_key_bits(key);
        const char *why = "key_ops";
        unsigned bits = mh_keyrec_default_ops(op->kty);
        if (op->n_ops_in > 0) {
            op->rc = mh_keyrec_parse_ops(op->kty, op->n_ops_in, op->ops_in, &bits, &why);
            if (op->rc < 0) {
                op->what = why;
                goto out;
            }
        }
        op->ops = bits;
        op->rec.imported = true;
    } else {
        op->rc = mh_key_generate(op->kty, op->bits, op->curve, &key);
        if (op->rc < 0) {
            op->what = "generating the key";
            goto out;
        }
    }
    op->rec.kty = (uint32_t)op->kty;
    op->rec.bits = op->bits;
    op->rec.curve = (uint32_t)op->curve;
    set_ops(op, op->ops);
    op->rc = mh_keyrec_aad(op->name, op->version, op->kty, &aad);
    if (op->rc == 0)
        op->rc = mh_seal_key(&op->domain->kwk, key, aad.data, aad.len, &op->sealed);
    if (op->rc == 0 && op->kty != MH_KTY_OCT)
        op->rc = mh_key_public_der(key, &op->pub);
    if (op->rc < 0)
        op->what = "sealing the key";
out:
    mh_buf_free(&aad);
    mh_key_free(key);
}

static void add_committed(struct mh_proposal *p, int rc, const struct mh_fsm_result *res)
{
    struct add_op *op = p->data;
    if (rc == 0)
        rc = res->rc;
    if (rc < 0) {
        if (rc == MH_ELIMIT)
            mh_rpc_fail(op->call, MH_GRPC_RESOURCE_EXHAUSTED,
                        "the key has reached the maximum number of versions");
        else if (rc == MH_EDELETED)
            mh_rpc_fail(op->call, MH_GRPC_FAILED_PRECONDITION,
                        "a deleted key has this name: recover or purge it before reusing the "
                        "name");
        else
            fail_key(op->call, rc, op->name);
    } else {
        MH_INFO("keys", "call=%llu key=%s version=%s %s",
                (unsigned long long)mh_rpc_call_id(op->call), res->name, res->version,
                op->kind == ADD_CREATE   ? "created"
                : op->kind == ADD_IMPORT ? "imported"
                                         : "rotated");
        reply_version(op->n, op->call, res->name, res->version);
    }
    add_free(op);
}

static void add_done(struct mh_work *w)
{
    struct add_op *op = mh_container_of(w, struct add_op, work);
    struct mh_node *n = op->n;
    if (op->rc < 0) {
        mh_rpc_fail_err(op->call, op->rc, op->what);
        add_free(op);
        return;
    }
    op->rec.sealed_material.data = op->sealed.data;
    op->rec.sealed_material.len = op->sealed.len;
    op->rec.public_der.data = op->pub.data;
    op->rec.public_der.len = op->pub.len;
    Mhsm__Internal__AddKeyVersion add = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    add.record = &op->rec;
    add.must_exist = op->kind == ADD_ROTATE;
    add.max_versions = n->cfg->max_versions_per_key;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.format = 1;
    cmd.request_id = op->rid;
    cmd.time = mh_node_now();
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &add;
    op->prop.data = op;
    int rv = mh_cluster_propose(n->cluster, &cmd, &op->prop, add_committed);
    if (rv < 0) {
        mh_rpc_fail_err(op->call, rv, "proposing the new version");
        add_free(op);
    }
}

/* Common start of create/import/rotate: the op with name, version id, request id. */
static struct add_op *add_new(struct mh_node *n, struct mh_rpc_call *call, enum add_kind kind,
                              const char *name, const char *client_rid)
{
    struct add_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        return NULL;
    }
    if (mh_node_request_id(client_rid, op->rid) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "request_id must be 1..64 printable characters");
        free(op);
        return NULL;
    }
    mh_rpc_call_note_request_id(call, op->rid);
    if (mh_keyrec_new_version(op->version) < 0) {
        mh_rpc_fail_err(call, MH_ECRYPTO, "making a version id");
        free(op);
        return NULL;
    }
    op->n = n;
    op->call = call;
    op->kind = kind;
    op->domain = n->domain;
    snprintf(op->name, sizeof op->name, "%s", name);
    mhsm__internal__key_version_record__init(&op->rec);
    op->rec.name = op->name;
    op->rec.version = op->version;
    op->rec.enabled = true;
    op->work.work = add_work;
    op->work.done = add_done;
    return op;
}

static void copy_tags(struct add_op *op, size_t n, void *const *entries)
{
    for (size_t i = 0; i < n && i < MH_MAX_TAGS; i++) {
        const Mhsm__V1__KeyBundle__TagsEntry *e = entries[i];
        mhsm__internal__key_version_record__tags_entry__init(&op->tag_storage[i]);
        op->tag_storage[i].key = e->key;
        op->tag_storage[i].value = e->value;
        op->tag_ptrs[i] = &op->tag_storage[i];
    }
    op->rec.n_tags = n;
    op->rec.tags = op->tag_ptrs;
}

/* add_new for create and import: checks the request's attributes and tags first
 * (finishing the call and returning NULL when they are invalid) and copies them. */
static struct add_op *add_new_attributed(struct mh_node *n, struct mh_rpc_call *call,
                                         enum add_kind kind, const char *name,
                                         const char *client_rid, const Mhsm__V1__KeyAttributes *a,
                                         size_t n_tags, void *const *tags)
{
    bool enabled = true;
    int64_t nbf = 0, exp = 0;
    if (!parse_attributes(call, a, &enabled, &nbf, &exp) || !check_tags(call, n_tags, tags))
        return NULL;
    struct add_op *op = add_new(n, call, kind, name, client_rid);
    if (op == NULL)
        return NULL;
    op->rec.enabled = enabled;
    op->rec.not_before = nbf;
    op->rec.expires = exp;
    copy_tags(op, n_tags, tags);
    return op;
}

static void handle_create(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__CreateKeyRequest *req = (const Mhsm__V1__CreateKeyRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, MH_ACT_KEY_CREATE, req->name))
        return;
    enum mh_kty kty = mh_keyrec_kty_from_name(req->kty);
    unsigned bits = req->key_size;
    enum mh_curve curve = MH_CURVE_NONE;
    switch (kty) {
    case MH_KTY_RSA:
        if (bits == 0)
            bits = 2048;
        if (bits != 2048 && bits != 3072 && bits != 4096) {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "RSA key_size must be 2048, 3072 or 4096");
            return;
        }
        if (req->crv[0] != '\0') {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "crv is only for EC keys");
            return;
        }
        break;
    case MH_KTY_EC:
        curve = req->crv[0] == '\0' ? MH_CURVE_P256 : mh_curve_from_name(req->crv);
        if (curve == MH_CURVE_NONE) {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                        "crv must be P-256, P-256K, P-384 or P-521");
            return;
        }
        if (bits != 0) {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                        "key_size is not used for EC keys; give crv");
            return;
        }
        break;
    case MH_KTY_OCT:
        if (bits == 0)
            bits = 256;
        if (bits != 128 && bits != 192 && bits != 256) {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "oct key_size must be 128, 192 or 256");
            return;
        }
        if (req->crv[0] != '\0') {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "crv is only for EC keys");
            return;
        }
        break;
    default:
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "kty must be RSA-HSM, EC-HSM or oct-HSM");
        return;
    }
    unsigned ops = mh_keyrec_default_ops(kty);
    const char *why = "key_ops";
    if (req->n_key_ops > 0) {
        int rv = mh_keyrec_parse_ops(kty, req->n_key_ops, req->key_ops, &ops, &why);
        if (rv < 0) {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, why);
            return;
        }
    }
    struct add_op *op = add_new_attributed(n, call, ADD_CREATE, req->name, req->request_id,
                                           req->attributes, req->n_tags, (void *const *)req->tags);
    if (op == NULL)
        return;
    op->kty = kty;
    op->bits = kty == MH_KTY_EC ? 0 : bits;
    op->curve = curve;
    op->ops = ops;
    mh_worker_submit(n->workers, &op->work);
}

static void handle_import(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__ImportKeyRequest *req = (const Mhsm__V1__ImportKeyRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, MH_ACT_KEY_IMPORT, req->name))
        return;
    const char *jwk = NULL, *pem = NULL;
    if (req->material_case == MHSM__V1__IMPORT_KEY_REQUEST__MATERIAL_JWK)
        jwk = req->jwk;
    else if (req->material_case == MHSM__V1__IMPORT_KEY_REQUEST__MATERIAL_PEM)
        pem = req->pem;
    if ((jwk == NULL || jwk[0] == '\0') && (pem == NULL || pem[0] == '\0')) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "give the private key as jwk or pem");
        return;
    }
    struct add_op *op = add_new_attributed(n, call, ADD_IMPORT, req->name, req->request_id,
                                           req->attributes, req->n_tags, (void *const *)req->tags);
    if (op == NULL)
        return;
    op->jwk = jwk;
    op->pem = pem;
    op->pem_password = req->pem_password[0] != '\0' ? req->pem_password : NULL;
    op->ops_in = req->key_ops;
    op->n_ops_in = req->n_key_ops;
    mh_worker_submit(n->workers, &op->work);
}

static void handle_rotate(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__KeyNameRequest *req = (const Mhsm__V1__KeyNameRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, MH_ACT_ROTATE, req->name))
        return;
    Mhsm__Internal__KeyVersionRecord *latest = NULL;
    int rv = mh_store_get_version(n->store, req->name, NULL, false, NULL, &latest);
    if (rv < 0) {
        fail_key(call, rv, req->name);
        return;
    }
    struct add_op *op = add_new(n, call, ADD_ROTATE, req->name, req->request_id);
    if (op == NULL) {
        mh_store_free(latest);
        return;
    }
    op->source = latest;
    op->kty = (enum mh_kty)latest->kty;
    op->bits = latest->bits;
    op->curve = (enum mh_curve)latest->curve;
    op->ops = mh_keyrec_ops_of(latest);
    /* The new version keeps the key's tags; attributes start fresh (enabled, no
     * nbf/exp), as Key Vault's rotate does without a policy. */
    size_t nt = latest->n_tags < MH_MAX_TAGS ? latest->n_tags : MH_MAX_TAGS;
    for (size_t i = 0; i < nt; i++)
        op->tag_ptrs[i] = latest->tags[i];
    op->rec.n_tags = nt;
    op->rec.tags = op->tag_ptrs;
    mh_worker_submit(n->workers, &op->work);
}

/* ---- reads ------------------------------------------------------------------ */

static void handle_get(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__GetKeyRequest *req = (const Mhsm__V1__GetKeyRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !check_version(call, req->version) || !mh_authz_check(n, call, MH_ACT_KEY_READ, req->name))
        return;
    reply_version(n, call, req->name, req->version);
}

/* Page tokens are opaque to clients: base64url of "<kind>:<last name or version>". */
static int decode_token(const char *token, char kind, char *after, size_t cap)
{
    after[0] = '\0';
    if (token[0] == '\0')
        return 0;
    struct mh_buf b = {0};
    int rv = mh_b64url_decode(token, strlen(token), &b);
    if (rv == 0 &&
        (b.len < 3 || b.len - 2 >= cap || b.data[0] != (uint8_t)kind || b.data[1] != ':'))
        rv = MH_EINVAL;
    if (rv == 0) {
        memcpy(after, b.data + 2, b.len - 2);
        after[b.len - 2] = '\0';
        if (!(kind == 'v' ? mh_keyrec_version_ok(after) : mh_keyrec_name_ok(after)))
            rv = MH_EINVAL;
    }
    mh_buf_free(&b);
    return rv;
}

static char *encode_token(char kind, const char *last)
{
    struct mh_buf raw = {0}, out = {0};
    char prefix[2] = {kind, ':'};
    if (mh_buf_append(&raw, prefix, 2) < 0 || mh_buf_append_str(&raw, last) < 0 ||
        mh_b64url_encode(raw.data, raw.len, &out) < 0) {
        mh_buf_free(&raw);
        mh_buf_free(&out);
        return NULL;
    }
    mh_buf_free(&raw);
    return (char *)mh_buf_steal(&out, NULL);
}

static bool page_args(struct mh_rpc_call *call, uint32_t max_results, const char *token, char kind,
                      char *after, size_t cap, size_t *max)
{
    if (max_results > PAGE_MAX) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "max_results must be 1..25");
        return false;
    }
    *max = max_results == 0 ? PAGE_MAX : max_results;
    if (decode_token(token, kind, after, cap) < 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "invalid page_token");
        return false;
    }
    return true;
}

/* Sends one page of |count| items (as deleted items when |dptrs| is not NULL) with a
 * token after |last| when more follow, or fails with |rv|; clears the |built| items. */
static void reply_page(struct mh_rpc_call *call, int rv, const char *what, char kind, bool more,
                       const char *last, Mhsm__V1__KeyItem *items, Mhsm__V1__KeyItem **ptrs,
                       Mhsm__V1__DeletedKeyItem **dptrs, size_t count, size_t built)
{
    char *token = NULL;
    if (rv == 0 && more && count > 0) {
        token = encode_token(kind, last);
        if (token == NULL)
            rv = MH_ENOMEM;
    }
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, what);
    } else if (dptrs != NULL) {
        Mhsm__V1__ListDeletedKeysResponse resp = MHSM__V1__LIST_DELETED_KEYS_RESPONSE__INIT;
        resp.n_items = count;
        resp.items = dptrs;
        resp.next_page_token = token != NULL ? token : (char *)"";
        mh_rpc_reply(call, &resp.base);
    } else {
        Mhsm__V1__ListKeysResponse resp = MHSM__V1__LIST_KEYS_RESPONSE__INIT;
        resp.n_items = count;
        resp.items = ptrs;
        resp.next_page_token = token != NULL ? token : (char *)"";
        mh_rpc_reply(call, &resp.base);
    }
    free(token);
    for (size_t i = 0; i < built; i++)
        mh_keyrec_item_clear(&items[i]);
}

static void list_keys(struct mh_node *n, struct mh_rpc_call *call,
                      const Mhsm__V1__ListKeysRequest *req, bool deleted)
{
    char after[MH_KEY_NAME_MAX + 1];
    size_t max, count = 0;
    bool more = false;
    if (!page_args(call, req->max_results, req->page_token, deleted ? 'd' : 'k', after,
                   sizeof after, &max))
        return;
    struct mh_store_key_entry entries[PAGE_MAX];
    int rv = mh_store_list_keys(n->store, deleted, after, max, entries, &count, &more);
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "listing keys");
        return;
    }
    Mhsm__V1__KeyItem items[PAGE_MAX];
    Mhsm__V1__KeyItem *item_ptrs[PAGE_MAX];
    Mhsm__V1__DeletedKeyItem ditems[PAGE_MAX];
    Mhsm__V1__DeletedKeyItem *ditem_ptrs[PAGE_MAX];
    char rids[PAGE_MAX][300];
    size_t built = 0;
    for (; built < count; built++) {
        rv = mh_keyrec_item(n->cfg->name, n->retention_days, entries[built].latest, false,
                            &items[built]);
        if (rv < 0)
            break;
        item_ptrs[built] = &items[built];
        if (deleted) {
            mhsm__v1__deleted_key_item__init(&ditems[built]);
            snprintf(rids[built], sizeof rids[built], "https://%s/deletedkeys/%s", n->cfg->name,
                     entries[built].key->name);
            ditems[built].key = &items[built];
            ditems[built].recovery_id = rids[built];
            ditems[built].deleted_date = entries[built].key->deleted_date;
            ditems[built].scheduled_purge_date = entries[built].key->scheduled_purge_date;
            ditem_ptrs[built] = &ditems[built];
        }
    }
    reply_page(call, rv, "listing keys", deleted ? 'd' : 'k', more,
               count > 0 ? entries[count - 1].key->name : "", items, item_ptrs,
               deleted ? ditem_ptrs : NULL, count, built);
    mh_store_key_entries_free(entries, count);
}

static void handle_list(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_KEY_READ, NULL))
        return;
    list_keys(n, call, (const Mhsm__V1__ListKeysRequest *)m, false);
}

static void handle_list_deleted(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_DELETED_READ, NULL))
        return;
    list_keys(n, call, (const Mhsm__V1__ListKeysRequest *)m, true);
}

static void handle_list_versions(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__ListKeyVersionsRequest *req = (const Mhsm__V1__ListKeyVersionsRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, MH_ACT_KEY_READ, req->name))
        return;
    char after[MH_VERSION_LEN + 1];
    size_t max, count = 0;
    bool more = false;
    if (!page_args(call, req->max_results, req->page_token, 'v', after, sizeof after, &max))
        return;
    Mhsm__Internal__KeyVersionRecord *recs[PAGE_MAX];
    int rv = mh_store_list_versions(n->store, req->name, false, after, max, recs, &count, &more);
    if (rv < 0) {
        fail_key(call, rv, req->name);
        return;
    }
    Mhsm__V1__KeyItem items[PAGE_MAX];
    Mhsm__V1__KeyItem *ptrs[PAGE_MAX];
    size_t built = 0;
    for (; built < count; built++) {
        rv = mh_keyrec_item(n->cfg->name, n->retention_days, recs[built], true, &items[built]);
        if (rv < 0)
            break;
        ptrs[built] = &items[built];
    }
    reply_page(call, rv, "listing versions", 'v', more, count > 0 ? recs[count - 1]->version : "",
               items, ptrs, NULL, count, built);
    mh_store_versions_free(recs, count);
}

static void handle_get_deleted(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__KeyNameRequest *req = (const Mhsm__V1__KeyNameRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, MH_ACT_DELETED_READ, req->name))
        return;
    reply_deleted(n, call, req->name);
}

/* ---- simple writes: update, delete, recover, purge, restore ------------------ */

enum simple_kind { W_UPDATE, W_DELETE, W_RECOVER, W_PURGE, W_RESTORE };

struct simple_op {
    struct mh_proposal prop;
    struct mh_node *n;
    struct mh_rpc_call *call;
    enum simple_kind kind;
    char name[MH_KEY_NAME_MAX + 1];
    Mhsm__Internal__BackupPayload *payload; /* restore */
    struct mh_secret plain;                 /* restore: the unsealed payload bytes */
};

static void simple_free(struct simple_op *op)
{
    if (op->payload != NULL)
        protobuf_c_message_free_unpacked(&op->payload->base, NULL);
    mh_secret_free(&op->plain);
    free(op);
}

static void simple_committed(struct mh_proposal *p, int rc, const struct mh_fsm_result *res)
{
    struct simple_op *op = p->data;
    struct mh_node *n = op->n;
    if (rc == 0)
        rc = res->rc;
    if (rc < 0) {
        if (op->kind == W_RESTORE && rc == MH_EEXIST)
            mh_rpc_fail(op->call, MH_GRPC_ALREADY_EXISTS,
                        "a key with the backup's name exists: restore needs an unused name");
        else if (op->kind == W_RESTORE && rc == MH_EDELETED)
            mh_rpc_fail(op->call, MH_GRPC_FAILED_PRECONDITION,
                        "a deleted key has the backup's name: purge or recover it first");
        else if ((op->kind == W_RECOVER || op->kind == W_PURGE) &&
                 (rc == MH_ENOTDELETED || rc == MH_ENOTFOUND)) {
            /* Key Vault answers 404 "deleted key not found" for a live key too. */
            char msg[256];
            snprintf(msg, sizeof msg, "no deleted key named '%s'%s", op->name,
                     rc == MH_ENOTDELETED ? " (the key exists and is not deleted)" : "");
            mh_rpc_fail(op->call, MH_GRPC_NOT_FOUND, msg);
        } else
            fail_key(op->call, rc, op->name);
        simple_free(op);
        return;
    }
    MH_INFO("keys", "call=%llu key=%s %s", (unsigned long long)mh_rpc_call_id(op->call), op->name,
            op->kind == W_UPDATE    ? "updated"
            : op->kind == W_DELETE  ? "deleted"
            : op->kind == W_RECOVER ? "recovered"
            : op->kind == W_PURGE   ? "purged"
                                    : "restored");
    switch (op->kind) {
    case W_UPDATE:
        reply_version(n, op->call, op->name, res->version);
        break;
    case W_DELETE:
        reply_deleted(n, op->call, op->name);
        break;
    case W_PURGE: {
        Mhsm__V1__PurgeDeletedKeyResponse resp = MHSM__V1__PURGE_DELETED_KEY_RESPONSE__INIT;
        mh_rpc_reply(op->call, &resp.base);
        break;
    }
    case W_RECOVER:
    case W_RESTORE:
    default:
        reply_version(n, op->call, op->name, NULL);
        break;
    }
    simple_free(op);
}

static struct simple_op *simple_new(struct mh_node *n, struct mh_rpc_call *call,
                                    enum simple_kind kind, const char *name)
{
    struct simple_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        return NULL;
    }
    op->n = n;
    op->call = call;
    op->kind = kind;
    snprintf(op->name, sizeof op->name, "%s", name);
    op->prop.data = op;
    return op;
}

static void simple_propose(struct simple_op *op, Mhsm__Internal__Command *cmd,
                           const char *client_rid)
{
    char rid[65];
    if (mh_node_request_id(client_rid, rid) < 0) {
        mh_rpc_fail(op->call, MH_GRPC_INVALID_ARGUMENT,
                    "request_id must be 1..64 printable characters");
        simple_free(op);
        return;
    }
    mh_rpc_call_note_request_id(op->call, rid);
    cmd->format = 1;
    cmd->request_id = rid;
    cmd->time = mh_node_now();
    int rv = mh_cluster_propose(op->n->cluster, cmd, &op->prop, simple_committed);
    if (rv < 0) {
        mh_rpc_fail_err(op->call, rv, "proposing the change");
        simple_free(op);
    }
}

static void handle_update(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__UpdateKeyRequest *req = (const Mhsm__V1__UpdateKeyRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !check_version(call, req->version) || !mh_authz_check(n, call, MH_ACT_KEY_WRITE, req->name))
        return;
    Mhsm__Internal__KeyVersionRecord *cur = NULL;
    int rv = mh_store_get_version(n->store, req->name, req->version, false, NULL, &cur);
    if (rv < 0) {
        fail_key(call, rv, req->name);
        return;
    }
    Mhsm__Internal__UpdateKeyVersion up = MHSM__INTERNAL__UPDATE_KEY_VERSION__INIT;
    up.name = req->name;
    up.version = cur->version;
    const Mhsm__V1__KeyAttributes *a = req->attributes;
    bool enabled = cur->enabled;
    int64_t nbf = cur->not_before, exp = cur->expires;
    if (!parse_attributes(call, a, &enabled, &nbf, &exp))
        goto out;
    if (a != NULL) {
        up.set_enabled = a->enabled != NULL;
        up.enabled = enabled;
        up.set_not_before = a->not_before != NULL;
        up.not_before = nbf;
        up.set_expires = a->expires != NULL;
        up.expires = exp;
    }
    Mhsm__Internal__UpdateKeyVersion__TagsEntry tag_storage[MH_MAX_TAGS];
    Mhsm__Internal__UpdateKeyVersion__TagsEntry *tag_ptrs[MH_MAX_TAGS];
    if (req->replace_tags) {
        if (!check_tags(call, req->n_tags, (void *const *)req->tags))
            goto out;
        for (size_t i = 0; i < req->n_tags; i++) {
            mhsm__internal__update_key_version__tags_entry__init(&tag_storage[i]);
            tag_storage[i].key = req->tags[i]->key;
            tag_storage[i].value = req->tags[i]->value;
            tag_ptrs[i] = &tag_storage[i];
        }
        up.set_tags = true;
        up.n_tags = req->n_tags;
        up.tags = tag_ptrs;
    }
    char *op_strs[8];
    if (req->replace_key_ops) {
        unsigned bits = 0;
        const char *why = "key_ops";
        rv = mh_keyrec_parse_ops((enum mh_kty)cur->kty, req->n_key_ops, req->key_ops, &bits, &why);
        if (rv < 0) {
            mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, why);
            goto out;
        }
        up.set_key_ops = true;
        up.key_ops = op_strs;
        for (unsigned b = 1; b <= MH_OP_EXPORT; b <<= 1)
            if (bits & b)
                op_strs[up.n_key_ops++] = (char *)mh_keyrec_op_name(b);
    }
    struct simple_op *op = simple_new(n, call, W_UPDATE, req->name);
    if (op == NULL)
        goto out;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_UPDATE_VERSION;
    cmd.update_version = &up;
    simple_propose(op, &cmd, req->request_id);
out:
    mh_store_free(cur);
}

static void name_command(struct mh_node *n, struct mh_rpc_call *call, const ProtobufCMessage *m,
                         enum simple_kind kind, enum mh_action action)
{
    const Mhsm__V1__KeyNameRequest *req = (const Mhsm__V1__KeyNameRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, action, req->name))
        return;
    struct simple_op *op = simple_new(n, call, kind, req->name);
    if (op == NULL)
        return;
    Mhsm__Internal__KeyName kn = MHSM__INTERNAL__KEY_NAME__INIT;
    kn.name = op->name;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    switch (kind) {
    case W_DELETE:
        cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY;
        cmd.delete_key = &kn;
        break;
    case W_RECOVER:
        cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_RECOVER_KEY;
        cmd.recover_key = &kn;
        break;
    case W_PURGE:
    default:
        cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY;
        cmd.purge_key = &kn;
        break;
    }
    simple_propose(op, &cmd, req->request_id);
}

static void handle_delete(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    name_command(data, call, m, W_DELETE, MH_ACT_KEY_DELETE);
}

static void handle_recover(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    name_command(data, call, m, W_RECOVER, MH_ACT_RECOVER);
}

static void handle_purge(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    name_command(data, call, m, W_PURGE, MH_ACT_PURGE);
}

/* ---- backup and restore -------------------------------------------------------
 * Blob: "MHB1" || domain id (16) || mh_seal(backup key, AAD = label || domain id,
 * BackupPayload). The domain id in clear lets a restore into another domain fail
 * with a precise message; the seal makes the rest confidential and tamper-evident.
 * The versions inside keep their material sealed under the key-wrapping key (bound
 * to name and version), so a blob is as safe at rest as the store itself. */

static int backup_aad(const uint8_t *domain_id, struct mh_buf *aad)
{
    MH_TRY(mh_buf_append(aad, backup_aad_label, sizeof backup_aad_label - 1));
    return mh_buf_append(aad, domain_id, MH_DOMAIN_ID_LEN);
}

/* Backup runs on a worker: up to max_versions records are read, packed and sealed. */
struct backup_op {
    struct mh_work work;
    struct mh_node *n;
    struct mh_rpc_call *call;
    const struct mh_domain *domain;
    const char *name; /* owned by the call */
    int64_t now;
    int rc;
    struct mh_buf blob;
};

static void backup_work(struct mh_work *w)
{
    struct backup_op *op = mh_container_of(w, struct backup_op, work);
    Mhsm__Internal__KeyRecord *key = NULL;
    Mhsm__Internal__KeyVersionRecord *latest = NULL;
    Mhsm__Internal__KeyVersionRecord **versions = NULL;
    size_t nv = 0;
    bool more = false;
    struct mh_buf plain = {0}, aad = {0};
    int rv = mh_store_get_version(op->n->store, op->name, NULL, false, &key, &latest);
    if (rv < 0)
        goto out;
    size_t cap = key->version_count > 0 ? key->version_count : 1;
    if (cap > MAX_VERSIONS_IN_BACKUP)
        cap = MAX_VERSIONS_IN_BACKUP;
    versions = calloc(cap, sizeof *versions);
    rv = versions == NULL ? MH_ENOMEM : 0;
    if (rv == 0)
        rv = mh_store_list_versions(op->n->store, op->name, false, NULL, cap, versions, &nv, &more);
    if (rv == 0 && more)
        rv = MH_ELIMIT;
    Mhsm__Internal__BackupPayload payload = MHSM__INTERNAL__BACKUP_PAYLOAD__INIT;
    payload.format = BACKUP_FORMAT;
    payload.key = key;
    payload.n_versions = nv;
    payload.versions = versions;
    payload.created = op->now;
    if (rv == 0) {
        size_t len = protobuf_c_message_get_packed_size(&payload.base);
        uint8_t *p = NULL;
        rv = mh_buf_extend(&plain, len, &p);
        if (rv == 0)
            protobuf_c_message_pack(&payload.base, p);
    }
    if (rv == 0)
        rv = mh_buf_append(&op->blob, BACKUP_MAGIC, 4);
    if (rv == 0)
        rv = mh_buf_append(&op->blob, op->domain->id, MH_DOMAIN_ID_LEN);
    if (rv == 0)
        rv = backup_aad(op->domain->id, &aad);
    if (rv == 0)
        rv = mh_seal(&op->domain->backup, aad.data, aad.len, plain.data, plain.len, &op->blob);
out:
    op->rc = rv;
    mh_buf_free(&plain);
    mh_buf_free(&aad);
    if (versions != NULL)
        mh_store_versions_free(versions, nv);
    free(versions);
    mh_store_free(key);
    mh_store_free(latest);
}

static void backup_done(struct mh_work *w)
{
    struct backup_op *op = mh_container_of(w, struct backup_op, work);
    if (op->rc == MH_ENOTFOUND) {
        fail_key(op->call, op->rc, op->name);
    } else if (op->rc < 0) {
        mh_rpc_fail_err(op->call, op->rc, "making the backup");
    } else {
        Mhsm__V1__BackupKeyResponse resp = MHSM__V1__BACKUP_KEY_RESPONSE__INIT;
        resp.value.data = op->blob.data;
        resp.value.len = op->blob.len;
        mh_rpc_reply(op->call, &resp.base);
    }
    mh_buf_free(&op->blob);
    free(op);
}

static void handle_backup(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__KeyNameRequest *req = (const Mhsm__V1__KeyNameRequest *)m;
    if (!mh_node_gate(n, call, true) || !check_name(call, req->name) ||
        !mh_authz_check(n, call, MH_ACT_BACKUP, req->name))
        return;
    struct backup_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        return;
    }
    op->n = n;
    op->call = call;
    op->domain = n->domain;
    op->name = req->name;
    op->now = mh_node_now();
    op->work.work = backup_work;
    op->work.done = backup_done;
    mh_worker_submit(n->workers, &op->work);
}

/* Checks that an unsealed payload is a coherent key: one name everywhere, valid
 * versions, latest among them, sane counts. The seal proves we made it; this
 * guards against our own older formats and keeps the FSM's input clean. */
static int check_payload(const Mhsm__Internal__BackupPayload *p)
{
    if (p->format != BACKUP_FORMAT || p->key == NULL || p->n_versions == 0 ||
        p->n_versions > MAX_VERSIONS_IN_BACKUP || !mh_keyrec_name_ok(p->key->name) ||
        !mh_keyrec_version_ok(p->key->latest_version))
        return MH_EBACKUP;
    bool latest_found = false;
    for (size_t i = 0; i < p->n_versions; i++) {
        const Mhsm__Internal__KeyVersionRecord *v = p->versions[i];
        if (strcmp(v->name, p->key->name) != 0 || !mh_keyrec_version_ok(v->version))
            return MH_EBACKUP;
        if (strcmp(v->version, p->key->latest_version) == 0)
            latest_found = true;
    }
    return latest_found ? 0 : MH_EBACKUP;
}

/* Restore opens the blob on a worker (up to max_message bytes to unseal and
 * decode), then proposes from the loop thread. */
struct restore_op {
    struct mh_work work;
    struct simple_op *op;
    const struct mh_domain *domain;
    ProtobufCBinaryData blob; /* owned by the call */
    const char *request_id;   /* owned by the call */
    int rc;
};

static void restore_work(struct mh_work *w)
{
    struct restore_op *r = mh_container_of(w, struct restore_op, work);
    struct mh_buf aad = {0};
    int rv = backup_aad(r->domain->id, &aad);
    if (rv == 0)
        rv = mh_unseal(&r->domain->backup, aad.data, aad.len, r->blob.data + 4 + MH_DOMAIN_ID_LEN,
                       r->blob.len - 4 - MH_DOMAIN_ID_LEN, &r->op->plain);
    mh_buf_free(&aad);
    if (rv == 0) {
        r->op->payload =
            mhsm__internal__backup_payload__unpack(NULL, r->op->plain.len, r->op->plain.data);
        rv = r->op->payload == NULL ? MH_EBACKUP : check_payload(r->op->payload);
    }
    if (rv == MH_EAUTH || rv == MH_ETRUNC || rv == MH_EUNSUPPORTED || rv == MH_ETOOBIG)
        rv = MH_EBACKUP;
    r->rc = rv;
}

static void restore_done(struct mh_work *w)
{
    struct restore_op *r = mh_container_of(w, struct restore_op, work);
    struct simple_op *op = r->op;
    struct mh_node *n = op->n;
    if (r->rc == MH_EBACKUP) {
        mh_rpc_fail(op->call, MH_GRPC_INVALID_ARGUMENT,
                    "the backup is corrupted or was altered (integrity check failed)");
        simple_free(op);
    } else if (r->rc < 0) {
        mh_rpc_fail_err(op->call, r->rc, "opening the backup");
        simple_free(op);
    } else if (op->payload->n_versions > n->cfg->max_versions_per_key) {
        mh_rpc_fail(op->call, MH_GRPC_RESOURCE_EXHAUSTED,
                    "the backup holds more versions than max_versions_per_key allows");
        simple_free(op);
    } else {
        snprintf(op->name, sizeof op->name, "%s", op->payload->key->name);
        Mhsm__Internal__RestoreKey rk = MHSM__INTERNAL__RESTORE_KEY__INIT;
        rk.key = op->payload->key;
        rk.n_versions = op->payload->n_versions;
        rk.versions = op->payload->versions;
        Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
        cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_RESTORE_KEY;
        cmd.restore_key = &rk;
        simple_propose(op, &cmd, r->request_id);
    }
    free(r);
}

static void handle_restore(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__RestoreKeyRequest *req = (const Mhsm__V1__RestoreKeyRequest *)m;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_RESTORE, NULL))
        return;
    const uint8_t *b = req->value.data;
    size_t len = req->value.len;
    if (len < 4 + MH_DOMAIN_ID_LEN || memcmp(b, BACKUP_MAGIC, 4) != 0) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "not an mhsm key backup");
        return;
    }
    if (memcmp(b + 4, n->domain->id, MH_DOMAIN_ID_LEN) != 0) {
        mh_rpc_fail(call, MH_GRPC_FAILED_PRECONDITION,
                    "the backup was made by an HSM with a different security domain; keys "
                    "restore only within the same security domain");
        return;
    }
    struct simple_op *op = simple_new(n, call, W_RESTORE, "");
    if (op == NULL)
        return;
    struct restore_op *r = calloc(1, sizeof *r);
    if (r == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        simple_free(op);
        return;
    }
    r->op = op;
    r->domain = n->domain;
    r->blob = req->value;
    r->request_id = req->request_id;
    r->work.work = restore_work;
    r->work.done = restore_done;
    mh_worker_submit(n->workers, &r->work);
}

/* ---- random ------------------------------------------------------------------ */

static void handle_random(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__GetRandomBytesRequest *req = (const Mhsm__V1__GetRandomBytesRequest *)m;
    if (!mh_node_gate(n, call, false) || !mh_authz_check(n, call, MH_ACT_RNG, NULL))
        return;
    if (req->count < 1 || req->count > 128) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "count must be 1..128");
        return;
    }
    uint8_t buf[128];
    if (mh_rand_bytes(buf, req->count) < 0) {
        mh_rpc_fail_err(call, MH_ECRYPTO, "random generator");
        return;
    }
    Mhsm__V1__GetRandomBytesResponse resp = MHSM__V1__GET_RANDOM_BYTES_RESPONSE__INIT;
    resp.value.data = buf;
    resp.value.len = req->count;
    mh_rpc_reply(call, &resp.base);
    mh_wipe(buf, sizeof buf);
}

/* Same order as service Keys in proto/mhsm/v1/keys.proto. */
static const mh_rpc_handler_fn keys_handlers[] = {
    handle_create, handle_import, handle_get,         handle_list,         handle_list_versions,
    handle_update, handle_delete, handle_get_deleted, handle_list_deleted, handle_recover,
    handle_purge,  handle_backup, handle_restore,     handle_rotate,       handle_random,
};

int mh_svc_keys_register(struct mh_node *n)
{
    if (mhsm__v1__keys__descriptor.n_methods != sizeof keys_handlers / sizeof keys_handlers[0])
        return MH_EINVAL;
    return mh_rpc_server_add_service(n->rpc, &mhsm__v1__keys__descriptor, keys_handlers, n);
}
