/* svc_crypto: mhsm.v1.Crypto: encrypt, decrypt, wrap, unwrap, sign, verify.
 *
 * The loop thread validates the request's shape, authorizes, reads the key version
 * record (an LMDB read, as GetKey does) and checks the algorithm and attributes.
 * AES operations on small inputs whose key is already unsealed in the key cache
 * then run right there (see inline_ok); the rest (asymmetric operations, large
 * AES inputs, any key needing an unseal) run on a worker. Both paths share the
 * same code, so statuses, messages and audit notes are the same either way.
 * Plaintext results (decrypt, unwrap) stay in struct mh_secret until packed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "crypto/alg.h"
#include "crypto/cipher.h"
#include "crypto/sign.h"
#include "crypto/wrap.h"
#include "mhsm/v1/crypto.pb-c.h"
#include "node/authz.h"
#include "node/keyrec.h"
#include "node/node.h"
#include "node/status.h"

enum cop { C_ENCRYPT, C_DECRYPT, C_WRAP, C_UNWRAP, C_SIGN, C_VERIFY };

static const struct {
    enum mh_action action;
    unsigned op;
    const char *verb;
} cop_info[] = {
    [C_ENCRYPT] = {MH_ACT_ENCRYPT, MH_OP_ENCRYPT, "encrypt"},
    [C_DECRYPT] = {MH_ACT_DECRYPT, MH_OP_DECRYPT, "decrypt"},
    [C_WRAP] = {MH_ACT_WRAP, MH_OP_WRAP, "wrapKey"},
    [C_UNWRAP] = {MH_ACT_UNWRAP, MH_OP_UNWRAP, "unwrapKey"},
    [C_SIGN] = {MH_ACT_SIGN, MH_OP_SIGN, "sign"},
    [C_VERIFY] = {MH_ACT_VERIFY, MH_OP_VERIFY, "verify"},
};

struct crypto_op {
    struct mh_work work;
    struct mh_node *n;
    struct mh_rpc_call *call;
    const struct mh_domain *domain;
    enum cop kind;
    enum mh_alg alg;
    int64_t now;
    /* request fields, owned by the call */
    const char *name, *version;
    ProtobufCBinaryData value, iv, aad, tag, sig;
    Mhsm__Internal__KeyVersionRecord *rec; /* read on the loop thread */
    uint64_t epoch;                        /* key cache epoch taken before that read */
    /* results */
    int rc;
    char what[200];
    struct mh_buf kid;
    struct mh_buf out;       /* ciphertext, wrapped key or signature */
    struct mh_secret secret; /* plaintext or unwrapped key */
    struct mh_cipher_result cres;
    bool valid;
};

static void op_free(struct crypto_op *op)
{
    mh_buf_free(&op->kid);
    mh_buf_free(&op->out);
    mh_secret_free(&op->secret);
    mh_store_free(op->rec);
    free(op);
}

/* Whether |alg| can run on the key of |rec| at all (type, curve, AES size). */
static bool alg_fits(enum mh_alg alg, const Mhsm__Internal__KeyVersionRecord *rec)
{
    switch (alg) {
    case MH_ALG_ES256:
        return rec->kty == MH_KTY_EC && rec->curve == MH_CURVE_P256;
    case MH_ALG_ES256K:
        return rec->kty == MH_KTY_EC && rec->curve == MH_CURVE_P256K;
    case MH_ALG_ES384:
        return rec->kty == MH_KTY_EC && rec->curve == MH_CURVE_P384;
    case MH_ALG_ES512:
        return rec->kty == MH_KTY_EC && rec->curve == MH_CURVE_P521;
    default:
        break;
    }
    switch (mh_alg_class(alg)) {
    case MH_ALG_CLASS_SIGN: /* RS* and PS* */
    case MH_ALG_CLASS_RSA_ENC:
        return rec->kty == MH_KTY_RSA;
    case MH_ALG_CLASS_AES_ENC:
    case MH_ALG_CLASS_AES_WRAP:
        return rec->kty == MH_KTY_OCT &&
               (mh_alg_aes_bits(alg) == 0 || mh_alg_aes_bits(alg) == rec->bits);
    default:
        return false;
    }
}

/* Reads the record and checks everything that does not need the key itself. Sets
 * op->rc (and op->what on failure). Loop thread. */
static void prepare(struct crypto_op *op)
{
    const char *alg_name = mh_alg_name(op->alg);
    /* Taken before the read: a delete or purge committing after it makes the cache
     * skip inserting what a worker unseals for this request. */
    op->epoch = mh_keycache_epoch(op->n->keys);
    op->rc = mh_store_get_version(op->n->store, op->name, op->version, false, NULL, &op->rec);
    if (op->rc < 0) {
        snprintf(op->what, sizeof op->what, "key '%s'", op->name);
        return;
    }
    const Mhsm__Internal__KeyVersionRecord *rec = op->rec;
    /* A wrong algorithm for the key is the caller's mistake whatever the key's
     * attributes say: report it first, as Key Vault does. */
    if (!alg_fits(op->alg, rec)) {
        op->rc = MH_EALGKEY;
        snprintf(op->what, sizeof op->what, "algorithm %s with key '%s' (%s%s%s)", alg_name,
                 op->name, mh_keyrec_kty_name((enum mh_kty)rec->kty),
                 rec->kty == MH_KTY_EC ? " " : "",
                 rec->kty == MH_KTY_EC ? mh_curve_name((enum mh_curve)rec->curve) : "");
        return;
    }
    op->rc = mh_keyrec_usable(rec, cop_info[op->kind].op, op->now);
    if (op->rc < 0) {
        snprintf(op->what, sizeof op->what, "%s with key '%s' version %s", cop_info[op->kind].verb,
                 op->name, rec->version);
        return;
    }
    op->rc = mh_keyrec_kid(op->n->cfg->name, rec->name, rec->version, &op->kid);
    if (op->rc == 0)
        op->rc = mh_buf_append_u8(&op->kid, 0);
    if (op->rc < 0)
        snprintf(op->what, sizeof op->what, "loading key '%s'", op->name);
}

/* Runs the operation itself with |key| (borrowed). Any thread. */
static void execute(struct crypto_op *op, const struct mh_key *key)
{
    struct mh_cipher_params params = {
        .iv = op->iv.data,
        .iv_len = op->iv.len,
        .aad = op->aad.data,
        .aad_len = op->aad.len,
        .tag = op->tag.data,
        .tag_len = op->tag.len,
    };
    switch (op->kind) {
    case C_ENCRYPT:
        op->rc =
            mh_encrypt(key, op->alg, &params, op->value.data, op->value.len, &op->out, &op->cres);
        break;
    case C_DECRYPT:
        op->rc = mh_decrypt(key, op->alg, &params, op->value.data, op->value.len, &op->secret);
        break;
    case C_WRAP:
        op->rc = mh_wrap(key, op->alg, op->value.data, op->value.len, &op->out);
        break;
    case C_UNWRAP:
        op->rc = mh_unwrap(key, op->alg, op->value.data, op->value.len, &op->secret);
        break;
    case C_SIGN:
        op->rc = mh_sign(key, op->alg, op->value.data, op->value.len, &op->out);
        break;
    case C_VERIFY:
    default:
        op->rc = mh_verify(key, op->alg, op->value.data, op->value.len, op->sig.data, op->sig.len);
        op->valid = op->rc == 0;
        if (op->rc == MH_EBADSIG)
            op->rc = 0;
        break;
    }
    if (op->rc < 0)
        snprintf(op->what, sizeof op->what, "%s %s with key '%s' (%s%s%s)", cop_info[op->kind].verb,
                 mh_alg_name(op->alg), op->name, mh_keyrec_kty_name(mh_key_kty(key)),
                 mh_key_kty(key) == MH_KTY_EC ? " " : "",
                 mh_key_kty(key) == MH_KTY_EC ? mh_curve_name(mh_key_curve(key)) : "");
}

/* Largest AES input run on the loop thread: tens of microseconds at the slowest
 * mode (CBC encrypt, ~1 GB/s with AES-NI). Larger inputs go to a worker. */
#define INLINE_AES_MAX (64u * 1024u)

/* Whether |op| (prepared, its key cached) runs on the loop thread: AES on at most
 * INLINE_AES_MAX bytes (~1 us at 32 bytes, tens of us at the limit: far below the
 * loop's ~1 ms budget), which costs less than the handoff to a worker. Asymmetric
 * operations stay on the workers even when cheap enough for the loop (P-256 sign
 * ~25 us, RSA-2048 verify ~20 us): under load the workers run them in parallel
 * with the loop's TLS and HTTP/2 work, which inline execution serializes
 * (measured with 64 in flight on 2 cores: P-256 sign 30-34k/s on the workers,
 * 20-24k/s inline, at the same CPU per operation; running them inline only while
 * the pool is idle degenerates to inline, since a whole read's worth of requests
 * is started before any reaches the pool). */
static bool inline_ok(const struct crypto_op *op)
{
    enum mh_alg_class cls = mh_alg_class(op->alg);
    return (cls == MH_ALG_CLASS_AES_ENC || cls == MH_ALG_CLASS_AES_WRAP) &&
           op->value.len <= INLINE_AES_MAX;
}

/* Worker: unseals through the key cache when needed, then runs the operation. */
static void crypto_work(struct mh_work *w)
{
    struct crypto_op *op = mh_container_of(w, struct crypto_op, work);
    struct mh_key *key = NULL;
    op->rc = mh_keycache_get(op->n->keys, op->domain, op->rec, &key, op->epoch);
    if (op->rc < 0) {
        snprintf(op->what, sizeof op->what, "loading key '%s'", op->name);
        return;
    }
    execute(op, key);
    mh_key_free(key);
}

static void crypto_done(struct mh_work *w)
{
    struct crypto_op *op = mh_container_of(w, struct crypto_op, work);
    mh_rpc_call_note_key(op->call, op->name,
                         op->rc == 0 && op->kid.len > 0
                             ? strrchr((const char *)op->kid.data, '/') + 1
                             : op->version);
    if (op->rc < 0) {
        mh_rpc_fail_err(op->call, op->rc, op->what);
        op_free(op);
        return;
    }
    char *kid = (char *)op->kid.data;
    switch (op->kind) {
    case C_SIGN: {
        Mhsm__V1__SignResponse resp = MHSM__V1__SIGN_RESPONSE__INIT;
        resp.kid = kid;
        resp.signature.data = op->out.data;
        resp.signature.len = op->out.len;
        mh_rpc_reply(op->call, &resp.base);
        break;
    }
    case C_VERIFY: {
        Mhsm__V1__VerifyResponse resp = MHSM__V1__VERIFY_RESPONSE__INIT;
        resp.valid = op->valid;
        mh_rpc_reply(op->call, &resp.base);
        break;
    }
    default: {
        Mhsm__V1__KeyOperationResponse resp = MHSM__V1__KEY_OPERATION_RESPONSE__INIT;
        resp.kid = kid;
        if (op->kind == C_DECRYPT || op->kind == C_UNWRAP) {
            resp.value.data = op->secret.data;
            resp.value.len = op->secret.len;
        } else {
            resp.value.data = op->out.data;
            resp.value.len = op->out.len;
        }
        if (op->kind == C_ENCRYPT) {
            resp.iv.data = op->cres.iv;
            resp.iv.len = op->cres.iv_len;
            resp.tag.data = op->cres.tag;
            resp.tag.len = op->cres.tag_len;
            resp.aad = op->aad;
        }
        mh_rpc_reply(op->call, &resp.base);
        break;
    }
    }
    op_free(op);
}

static void start(struct mh_node *n, struct mh_rpc_call *call, enum cop kind, const char *name,
                  const char *version, const char *alg, ProtobufCBinaryData value,
                  const Mhsm__V1__KeyOperationRequest *kreq, ProtobufCBinaryData sig)
{
    if (!mh_node_gate(n, call, true))
        return;
    if (!mh_keyrec_name_ok(name)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "invalid key name: use 1..127 characters 0-9, a-z, A-Z and '-'");
        return;
    }
    if (version[0] != '\0' && !mh_keyrec_version_ok(version)) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "invalid key version: 32 lower-case hexadecimal characters");
        return;
    }
    if (!mh_authz_check(n, call, cop_info[kind].action, name))
        return;
    enum mh_alg a = mh_alg_from_name(alg, strlen(alg));
    if (a == MH_ALG_NONE) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    alg[0] == '\0' ? "alg is required" : "unknown or unsupported algorithm");
        return;
    }
    enum mh_alg_class cls = mh_alg_class(a);
    bool fits = (kind == C_SIGN || kind == C_VERIFY) ? cls == MH_ALG_CLASS_SIGN
                : (kind == C_ENCRYPT || kind == C_DECRYPT)
                    ? (cls == MH_ALG_CLASS_RSA_ENC || cls == MH_ALG_CLASS_AES_ENC)
                    : (cls == MH_ALG_CLASS_RSA_ENC || cls == MH_ALG_CLASS_AES_WRAP);
    if (!fits) {
        char msg[160];
        snprintf(msg, sizeof msg, "algorithm %s cannot be used to %s", mh_alg_name(a),
                 cop_info[kind].verb);
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    struct crypto_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        return;
    }
    op->n = n;
    op->call = call;
    op->domain = n->domain;
    op->kind = kind;
    op->alg = a;
    op->now = mh_node_now();
    op->name = name;
    op->version = version;
    op->value = value;
    op->sig = sig;
    if (kreq != NULL) {
        op->iv = kreq->iv;
        op->aad = kreq->aad;
        op->tag = kreq->tag;
    }
    op->work.work = crypto_work;
    op->work.done = crypto_done;
    prepare(op);
    struct mh_key *key = NULL;
    if (op->rc == 0 && inline_ok(op) && mh_keycache_peek(n->keys, op->rec, &key) == 0) {
        execute(op, key);
        mh_key_free(key);
    } else if (op->rc == 0) {
        mh_worker_submit(n->workers, &op->work); /* unseal and/or a slow operation */
        return;
    }
    crypto_done(&op->work);
}

static const ProtobufCBinaryData no_bytes = {0, NULL};

#define KEYOP_HANDLER(fn, kind)                                                                    \
    static void fn(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)                \
    {                                                                                              \
        const Mhsm__V1__KeyOperationRequest *r = (const Mhsm__V1__KeyOperationRequest *)m;         \
        start(data, call, kind, r->name, r->version, r->alg, r->value, r, no_bytes);               \
    }
KEYOP_HANDLER(handle_encrypt, C_ENCRYPT)
KEYOP_HANDLER(handle_decrypt, C_DECRYPT)
KEYOP_HANDLER(handle_wrap, C_WRAP)
KEYOP_HANDLER(handle_unwrap, C_UNWRAP)

static void handle_sign(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    const Mhsm__V1__SignRequest *r = (const Mhsm__V1__SignRequest *)m;
    start(data, call, C_SIGN, r->name, r->version, r->alg, r->digest, NULL, no_bytes);
}

static void handle_verify(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    const Mhsm__V1__VerifyRequest *r = (const Mhsm__V1__VerifyRequest *)m;
    start(data, call, C_VERIFY, r->name, r->version, r->alg, r->digest, NULL, r->signature);
}

/* Same order as service Crypto in proto/mhsm/v1/crypto.proto. */
static const mh_rpc_handler_fn crypto_handlers[] = {
    handle_encrypt, handle_decrypt, handle_wrap, handle_unwrap, handle_sign, handle_verify,
};

int mh_svc_crypto_register(struct mh_node *n)
{
    if (mhsm__v1__crypto__descriptor.n_methods !=
        sizeof crypto_handlers / sizeof crypto_handlers[0])
        return MH_EINVAL;
    return mh_rpc_server_add_service(n->rpc, &mhsm__v1__crypto__descriptor, crypto_handlers, n);
}
