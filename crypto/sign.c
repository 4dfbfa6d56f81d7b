#include "crypto/sign.h"

#include <pthread.h>
#include <stdlib.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

/* Largest DER ECDSA-Sig-Value we handle: P-521 gives at most 3 + 2 * (2 + 67). */
#define ECDSA_DER_MAX 160

enum op { OP_SIGN = 0, OP_VERIFY = 1 };

struct alg_info {
    enum mh_kty kty;
    enum mh_curve curve; /* EC only */
    int padding;         /* RSA only */
    enum mh_md md;
};

struct slot {
    EVP_PKEY_CTX *ctx; /* NULL: empty */
    uint64_t key_id;
    uint64_t used; /* LRU stamp */
    enum mh_alg alg;
    enum op op;
};

struct cache {
    uint64_t clock;
    struct slot slots[MH_SIGN_CACHE_SLOTS];
};

static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key;
static int cache_key_rv = MH_ENOMEM;
/* The pthread key exists only for its destructor; lookups go through this
 * pointer, which costs no call. */
static _Thread_local struct cache *tls_cache;

static void cache_free(struct cache *c)
{
    for (size_t i = 0; i < MH_SIGN_CACHE_SLOTS; i++)
        EVP_PKEY_CTX_free(c->slots[i].ctx);
    free(c);
}

static void cache_destroy(void *p)
{
    tls_cache = NULL;
    cache_free(p);
}

static void cache_key_init(void)
{
    if (pthread_key_create(&cache_key, cache_destroy) == 0)
        cache_key_rv = 0;
}

static int cache_get(struct cache **out)
{
    if (tls_cache != NULL) {
        *out = tls_cache;
        return 0;
    }
    if (pthread_once(&cache_once, cache_key_init) != 0)
        return MH_ENOMEM;
    MH_TRY(cache_key_rv);
    struct cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MH_ENOMEM;
    if (pthread_setspecific(cache_key, c) != 0) {
        free(c);
        return MH_ENOMEM;
    }
    tls_cache = c;
    *out = c;
    return 0;
}

void mh_sign_thread_cleanup(void)
{
    struct cache *c = tls_cache;
    if (c == NULL)
        return;
    tls_cache = NULL;
    (void)pthread_setspecific(cache_key, NULL);
    cache_free(c);
}

static int alg_info(enum mh_alg alg, struct alg_info *ai)
{
    ai->kty = MH_KTY_RSA;
    ai->curve = MH_CURVE_NONE;
    ai->padding = RSA_PKCS1_PADDING;
    switch (alg) {
    case MH_ALG_RS256:
    case MH_ALG_RS384:
    case MH_ALG_RS512:
        break;
    case MH_ALG_PS256:
    case MH_ALG_PS384:
    case MH_ALG_PS512:
        ai->padding = RSA_PKCS1_PSS_PADDING;
        break;
    case MH_ALG_ES256:
        ai->kty = MH_KTY_EC;
        ai->curve = MH_CURVE_P256;
        break;
    case MH_ALG_ES256K:
        ai->kty = MH_KTY_EC;
        ai->curve = MH_CURVE_P256K;
        break;
    case MH_ALG_ES384:
        ai->kty = MH_KTY_EC;
        ai->curve = MH_CURVE_P384;
        break;
    case MH_ALG_ES512:
        ai->kty = MH_KTY_EC;
        ai->curve = MH_CURVE_P521;
        break;
    default:
        return MH_EALGKEY;
    }
    int md = mh_alg_digest(alg);
    if (md < 0 || md >= MH_MD_COUNT_)
        return MH_EALGKEY;
    ai->md = (enum mh_md)md;
    return 0;
}

static int check(const struct mh_key *key, enum mh_alg alg, const uint8_t *digest,
                 size_t digest_len, struct alg_info *ai)
{
    if (key == NULL || (digest == NULL && digest_len > 0))
        return MH_EINVAL;
    MH_TRY(alg_info(alg, ai));
    if (mh_key_kty(key) != ai->kty)
        return MH_EALGKEY;
    if (ai->kty == MH_KTY_EC && mh_key_curve(key) != ai->curve)
        return MH_EALGKEY;
    if (digest_len != mh_md_len(ai->md))
        return MH_EDIGESTLEN;
    return 0;
}

size_t mh_sign_len(const struct mh_key *key)
{
    switch (mh_key_kty(key)) {
    case MH_KTY_RSA:
        return (mh_key_bits(key) + 7) / 8;
    case MH_KTY_EC:
        return 2 * mh_curve_field_len(mh_key_curve(key));
    case MH_KTY_OCT:
    case MH_KTY_NONE:
    default:
        return 0;
    }
}

static int ctx_new(const struct mh_key *key, const struct alg_info *ai, enum op op,
                   EVP_PKEY_CTX **out)
{
    EVP_PKEY *pkey = mh_key_pkey(key);
    /* The context takes its own reference to pkey. No per-thread
     * EVP_PKEY_dup for RSA: measured, it bought nothing measurable over
     * the shared blinding lock, and it would copy private keys. */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL) {
        ERR_clear_error();
        return MH_ENOMEM;
    }
    const EVP_MD *md = mh_alg_md(ai->md);
    if ((op == OP_SIGN ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) != 1)
        goto err_after_ctx;
    if (ai->kty == MH_KTY_RSA && EVP_PKEY_CTX_set_rsa_padding(ctx, ai->padding) != 1)
        goto err_after_ctx;
    if (EVP_PKEY_CTX_set_signature_md(ctx, md) != 1)
        goto err_after_ctx;
    if (ai->kty == MH_KTY_RSA && ai->padding == RSA_PKCS1_PSS_PADDING) {
        /* Explicit on both sides: 3.0 signs with the maximum salt by default,
         * and on verify DIGEST demands exactly the digest length. */
        if (EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) != 1)
            goto err_after_ctx;
    }
    *out = ctx;
    return 0;

err_after_ctx:
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return MH_ECRYPTO;
}

/* Finds or makes this thread's context for (key, alg, op). The returned slot
 * stays valid until the next ctx_get or cache cleanup on this thread. */
static int ctx_get(const struct mh_key *key, enum mh_alg alg, const struct alg_info *ai, enum op op,
                   struct slot **out)
{
    struct cache *c;
    MH_TRY(cache_get(&c));
    uint64_t id = mh_key_id(key);
    struct slot *victim = &c->slots[0];
    for (size_t i = 0; i < MH_SIGN_CACHE_SLOTS; i++) {
        struct slot *s = &c->slots[i];
        if (s->ctx != NULL && s->key_id == id && s->alg == alg && s->op == op) {
            s->used = ++c->clock;
            *out = s;
            return 0;
        }
        if (s->used < victim->used)
            victim = s;
    }
    EVP_PKEY_CTX *ctx;
    MH_TRY(ctx_new(key, ai, op, &ctx));
    EVP_PKEY_CTX_free(victim->ctx);
    victim->ctx = ctx;
    victim->key_id = id;
    victim->alg = alg;
    victim->op = op;
    victim->used = ++c->clock;
    *out = victim;
    return 0;
}

/* A context whose operation failed for an internal reason is not trusted again. */
static void ctx_put(struct slot *s, bool failed)
{
    if (!failed)
        return;
    EVP_PKEY_CTX_free(s->ctx);
    s->ctx = NULL;
    s->used = 0;
}

/* DER ECDSA-Sig-Value -> r||s, each half left-padded to |flen| bytes. */
static int der_to_raw(const uint8_t *der, size_t der_len, size_t flen, struct mh_buf *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (es == NULL)
        return MH_ECRYPTO;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    size_t before = out->len;
    uint8_t *w;
    int rv = mh_buf_extend(out, 2 * flen, &w);
    if (rv < 0)
        goto err_after_sig;
    if (BN_bn2binpad(r, w, (int)flen) != (int)flen ||
        BN_bn2binpad(s, w + flen, (int)flen) != (int)flen) {
        mh_buf_truncate(out, before);
        rv = MH_ECRYPTO;
    }
err_after_sig:
    ECDSA_SIG_free(es);
    return rv;
}

/* r||s (2 * |flen| bytes) -> DER into |der| (ECDSA_DER_MAX bytes). */
static int raw_to_der(const uint8_t *raw, size_t flen, uint8_t *der, size_t *der_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    if (es == NULL)
        return MH_ENOMEM;
    int rv = MH_ENOMEM;
    BIGNUM *r = BN_bin2bn(raw, (int)flen, NULL);
    BIGNUM *s = BN_bin2bn(raw + flen, (int)flen, NULL);
    if (r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto err_after_sig;
    }
    rv = MH_ECRYPTO;
    int n = i2d_ECDSA_SIG(es, NULL);
    if (n <= 0 || n > ECDSA_DER_MAX)
        goto err_after_sig;
    unsigned char *w = der;
    if (i2d_ECDSA_SIG(es, &w) != n)
        goto err_after_sig;
    *der_len = (size_t)n;
    rv = 0;
err_after_sig:
    ECDSA_SIG_free(es);
    return rv;
}

int mh_sign(const struct mh_key *key, enum mh_alg alg, const uint8_t *digest, size_t digest_len,
            struct mh_buf *sig_out)
{
    struct alg_info ai;
    MH_TRY(check(key, alg, digest, digest_len, &ai));
    if (!mh_key_has_private(key))
        return MH_ENOPRIVATE;
    MH_TRY(mh_alg_init());
    struct slot *s;
    MH_TRY(ctx_get(key, alg, &ai, OP_SIGN, &s));

    int rv = MH_ECRYPTO;
    if (ai.kty == MH_KTY_RSA) {
        size_t k = mh_sign_len(key), n = k, before = sig_out->len;
        uint8_t *w;
        rv = mh_buf_extend(sig_out, k, &w);
        if (rv < 0)
            goto err_after_ctx;
        if (EVP_PKEY_sign(s->ctx, w, &n, digest, digest_len) != 1 || n != k) {
            mh_buf_truncate(sig_out, before);
            rv = MH_ECRYPTO;
            goto err_after_ctx;
        }
    } else {
        uint8_t der[ECDSA_DER_MAX];
        size_t n = sizeof der;
        if (EVP_PKEY_sign(s->ctx, der, &n, digest, digest_len) != 1)
            goto err_after_ctx;
        rv = der_to_raw(der, n, mh_curve_field_len(ai.curve), sig_out);
        if (rv < 0)
            goto err_after_ctx;
    }
    ctx_put(s, false);
    return 0;

err_after_ctx:
    ctx_put(s, true);
    ERR_clear_error();
    return rv;
}

int mh_verify(const struct mh_key *key, enum mh_alg alg, const uint8_t *digest, size_t digest_len,
              const uint8_t *sig, size_t sig_len)
{
    struct alg_info ai;
    MH_TRY(check(key, alg, digest, digest_len, &ai));
    if (sig == NULL && sig_len > 0)
        return MH_EINVAL;
    /* JOSE fixes the length; OpenSSL would accept a short RSA signature. */
    if (sig_len != mh_sign_len(key))
        return MH_EBADSIG;
    MH_TRY(mh_alg_init());

    uint8_t der[ECDSA_DER_MAX];
    const uint8_t *p = sig;
    size_t n = sig_len;
    if (ai.kty == MH_KTY_EC) {
        MH_TRY(raw_to_der(sig, sig_len / 2, der, &n));
        p = der;
    }
    struct slot *s;
    MH_TRY(ctx_get(key, alg, &ai, OP_VERIFY, &s));
    /* 0 and negative both mean "not valid" for a well-formed context: the
     * RSA provider reports a malformed signature as an error, not as 0. */
    int ok = EVP_PKEY_verify(s->ctx, p, n, digest, digest_len);
    ctx_put(s, false);
    if (ok != 1) {
        ERR_clear_error();
        return MH_EBADSIG;
    }
    return 0;
}
