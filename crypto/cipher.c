#include "crypto/cipher.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rsa.h>

#include "crypto/rand.h"

/* OpenSSL wants a valid pointer even for zero-length input. */
static const uint8_t EMPTY[1];
static const struct mh_cipher_params NO_PARAMS;

enum aes_mode {
    MODE_GCM,
    MODE_CBC,
    MODE_CBCPAD,
};

/* ---- one cached EVP_CIPHER_CTX per thread ---- */

struct tctx {
    EVP_CIPHER_CTX *ctx;
    const EVP_CIPHER *cipher; /* cipher the provider context is set up for, or NULL */
};

static pthread_once_t tkey_once = PTHREAD_ONCE_INIT;
static pthread_key_t tkey;
static int tkey_rv = MH_ECRYPTO;
/* Fast path; tkey only exists so the context is freed at thread exit. */
static _Thread_local struct tctx *tcache;

static void tctx_destroy(void *p)
{
    struct tctx *t = p;
    EVP_CIPHER_CTX_free(t->ctx);
    free(t);
}

static void tkey_init(void)
{
    if (pthread_key_create(&tkey, tctx_destroy) == 0)
        tkey_rv = 0;
}

static int tctx_get(struct tctx **out)
{
    if (tcache != NULL) {
        *out = tcache;
        return 0;
    }
    if (pthread_once(&tkey_once, tkey_init) != 0 || tkey_rv < 0)
        return MH_ECRYPTO;
    struct tctx *t = calloc(1, sizeof *t);
    if (t == NULL)
        return MH_ENOMEM;
    t->ctx = EVP_CIPHER_CTX_new();
    if (t->ctx == NULL)
        goto err_after_t;
    if (pthread_setspecific(tkey, t) != 0)
        goto err_after_ctx;
    tcache = t;
    *out = t;
    return 0;

err_after_ctx:
    EVP_CIPHER_CTX_free(t->ctx);
err_after_t:
    free(t);
    return MH_ENOMEM;
}

static void tctx_forget(struct tctx *t)
{
    EVP_CIPHER_CTX_reset(t->ctx);
    t->cipher = NULL;
    ERR_clear_error();
}

/* Keys the cached context. Passing the cipher again would make OpenSSL free
 * and reallocate its provider context, so it is passed only when it changes. */
static int tctx_init(struct tctx *t, const EVP_CIPHER *cipher, const uint8_t *key,
                     const uint8_t *iv, int enc)
{
    const EVP_CIPHER *c = t->cipher == cipher ? NULL : cipher;
    if (EVP_CipherInit_ex2(t->ctx, c, key, iv, enc, NULL) != 1) {
        tctx_forget(t);
        return MH_ECRYPTO;
    }
    t->cipher = cipher;
    return 0;
}

/* Replaces the caller's key schedule (and GCM's hash key) with one derived
 * from an all-zero key, so it does not linger until the thread's next call. */
static void tctx_scrub(struct tctx *t)
{
    static const uint8_t zero[32];
    if (t->cipher == NULL)
        return;
    if (EVP_CipherInit_ex2(t->ctx, NULL, zero, NULL, 1, NULL) != 1)
        tctx_forget(t);
}

/* ---- argument checks ---- */

static int check_key_alg(const struct mh_key *key, enum mh_alg alg)
{
    if (key == NULL)
        return MH_EINVAL;
    switch (mh_alg_class(alg)) {
    case MH_ALG_CLASS_RSA_ENC:
        return mh_key_kty(key) == MH_KTY_RSA ? 0 : MH_EALGKEY;
    case MH_ALG_CLASS_AES_ENC:
        return mh_key_kty(key) == MH_KTY_OCT && mh_key_bits(key) == mh_alg_aes_bits(alg)
                   ? 0
                   : MH_EALGKEY;
    case MH_ALG_CLASS_NONE:
    case MH_ALG_CLASS_SIGN:
    case MH_ALG_CLASS_AES_WRAP:
    default:
        return MH_EALGKEY;
    }
}

static int check_params(const struct mh_cipher_params *p)
{
    if ((p->iv_len > 0 && p->iv == NULL) || (p->aad_len > 0 && p->aad == NULL) ||
        (p->tag_len > 0 && p->tag == NULL))
        return MH_EINVAL;
    if (p->aad_len > MH_CIPHER_MAX_INPUT)
        return MH_ETOOBIG;
    return 0;
}

static enum aes_mode aes_mode_of(enum mh_alg alg)
{
    switch (alg) {
    case MH_ALG_A128GCM:
    case MH_ALG_A192GCM:
    case MH_ALG_A256GCM:
        return MODE_GCM;
    case MH_ALG_A128CBC:
    case MH_ALG_A192CBC:
    case MH_ALG_A256CBC:
        return MODE_CBC;
    default:
        return MODE_CBCPAD;
    }
}

static const EVP_CIPHER *aes_cipher(enum aes_mode mode, unsigned bits)
{
    int base = mode == MODE_GCM ? MH_CIPHER_AES_128_GCM : MH_CIPHER_AES_128_CBC;
    return mh_alg_cipher((enum mh_cipher_id)(base + (int)(bits - 128) / 64));
}

/* ---- RSA ---- */

static int rsa_ctx(const struct mh_key *key, enum mh_alg alg, bool enc, EVP_PKEY_CTX **out)
{
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, mh_key_pkey(key), NULL);
    if (pctx == NULL)
        return MH_ENOMEM;
    if ((enc ? EVP_PKEY_encrypt_init(pctx) : EVP_PKEY_decrypt_init(pctx)) != 1)
        goto err_after_pctx;
    if (alg == MH_ALG_RSA1_5) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
            goto err_after_pctx;
    } else {
        /* Key Vault's OAEP uses the same digest for MGF1 and no label. */
        const EVP_MD *md = mh_alg_md((enum mh_md)mh_alg_digest(alg));
        if (md == NULL || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_oaep_md(pctx, md) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1)
            goto err_after_pctx;
    }
    *out = pctx;
    return 0;

err_after_pctx:
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return MH_ECRYPTO;
}

static size_t rsa_max_pt(const struct mh_key *key, enum mh_alg alg)
{
    size_t k = mh_key_bits(key) / 8;
    if (alg == MH_ALG_RSA1_5)
        return k - 11;
    return k - 2 * mh_md_len((enum mh_md)mh_alg_digest(alg)) - 2;
}

static int rsa_encrypt(const struct mh_key *key, enum mh_alg alg, const uint8_t *pt, size_t pt_len,
                       struct mh_buf *ct_out)
{
    if (pt_len > rsa_max_pt(key, alg))
        return MH_EINPUTLEN;
    EVP_PKEY_CTX *pctx;
    MH_TRY(rsa_ctx(key, alg, true, &pctx));
    size_t k = mh_key_bits(key) / 8;
    size_t before = ct_out->len;
    uint8_t *w;
    int rv = mh_buf_extend(ct_out, k, &w);
    if (rv < 0)
        goto err_after_pctx;
    size_t outlen = k;
    if (EVP_PKEY_encrypt(pctx, w, &outlen, pt, pt_len) != 1 || outlen > k) {
        rv = MH_ECRYPTO;
        mh_buf_truncate(ct_out, before);
        goto err_after_pctx;
    }
    mh_buf_truncate(ct_out, before + outlen);
    rv = 0;

err_after_pctx:
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return rv;
}

/* Every failure after the context is set up is MH_EDECRYPT, whatever its
 * cause, and OpenSSL's reason is dropped from the error queue: the caller
 * must not learn which padding check failed. */
static int rsa_decrypt(const struct mh_key *key, enum mh_alg alg, const uint8_t *ct, size_t ct_len,
                       struct mh_secret *pt_out)
{
    if (!mh_key_has_private(key))
        return MH_ENOPRIVATE;
    EVP_PKEY_CTX *pctx;
    MH_TRY(rsa_ctx(key, alg, false, &pctx));
    size_t k = mh_key_bits(key) / 8;
    int rv = mh_secret_alloc(pt_out, k);
    if (rv < 0)
        goto err_after_pctx;
    size_t outlen = k;
    int ok = ct_len == k && EVP_PKEY_decrypt(pctx, pt_out->data, &outlen, ct, ct_len) == 1 &&
             outlen <= k;
    if (!ok) {
        mh_secret_free(pt_out);
        rv = MH_EDECRYPT;
        goto err_after_pctx;
    }
    mh_secret_shrink(pt_out, outlen);
    rv = 0;

err_after_pctx:
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return rv;
}

/* ---- AES ---- */

static int gcm_encrypt(struct tctx *t, const EVP_CIPHER *cipher, const struct mh_secret *k,
                       const struct mh_cipher_params *in, const uint8_t *pt, size_t pt_len,
                       uint8_t *w, struct mh_cipher_result *res)
{
    MH_TRY(mh_rand_bytes(res->iv, MH_GCM_IV_LEN));
    MH_TRY(tctx_init(t, cipher, k->data, res->iv, 1));
    int n = 0;
    uint8_t fin[16];
    if (in->aad_len > 0 && EVP_EncryptUpdate(t->ctx, NULL, &n, in->aad, (int)in->aad_len) != 1)
        goto err;
    if (pt_len > 0 &&
        (EVP_EncryptUpdate(t->ctx, w, &n, pt, (int)pt_len) != 1 || (size_t)n != pt_len))
        goto err;
    if (EVP_EncryptFinal_ex(t->ctx, fin, &n) != 1 || n != 0 ||
        EVP_CIPHER_CTX_ctrl(t->ctx, EVP_CTRL_AEAD_GET_TAG, MH_GCM_TAG_LEN, res->tag) != 1)
        goto err;
    res->iv_len = MH_GCM_IV_LEN;
    res->tag_len = MH_GCM_TAG_LEN;
    return 0;

err:
    tctx_forget(t);
    return MH_ECRYPTO;
}

static int gcm_decrypt(struct tctx *t, const EVP_CIPHER *cipher, const struct mh_secret *k,
                       const struct mh_cipher_params *in, const uint8_t *ct, size_t ct_len,
                       uint8_t *w)
{
    MH_TRY(tctx_init(t, cipher, k->data, in->iv, 0));
    int n = 0;
    uint8_t fin[16];
    /* OpenSSL only reads the tag here, despite the non-const parameter. */
    if (EVP_CIPHER_CTX_ctrl(t->ctx, EVP_CTRL_AEAD_SET_TAG, MH_GCM_TAG_LEN, (void *)in->tag) != 1)
        goto err_crypto;
    if (in->aad_len > 0 && EVP_DecryptUpdate(t->ctx, NULL, &n, in->aad, (int)in->aad_len) != 1)
        goto err_crypto;
    if (ct_len > 0 &&
        (EVP_DecryptUpdate(t->ctx, w, &n, ct, (int)ct_len) != 1 || (size_t)n != ct_len))
        goto err_crypto;
    if (EVP_DecryptFinal_ex(t->ctx, fin, &n) != 1) {
        ERR_clear_error();
        return MH_EAUTH;
    }
    return 0;

err_crypto:
    tctx_forget(t);
    return MH_ECRYPTO;
}

/* Returns an all-ones mask when a < b, else 0 (a, b < 2^31). */
static uint32_t ct_lt(uint32_t a, uint32_t b)
{
    return (uint32_t)0 - ((a - b) >> 31);
}

/* Checks the PKCS#7 padding of the last block of |p| (len a non-zero
 * multiple of 16) without branching on its bytes. Returns the padding length,
 * or 0 when the padding is invalid. */
static size_t pkcs7_pad_len(const uint8_t *p, size_t len)
{
    uint32_t pad = p[len - 1];
    uint32_t good = ct_lt(0, pad) & ct_lt(pad, 17);
    for (uint32_t i = 0; i < 16; i++) {
        uint32_t diff = (uint32_t)p[len - 1 - i] ^ pad;
        good &= ~(ct_lt(i, pad) & ct_lt(0, diff));
    }
    return (size_t)(pad & good);
}

/* CBC runs with OpenSSL's padding off: CBCPAD pads here (so the plaintext
 * tail does not stay in the cached context's block buffer) and unpads here
 * (in constant time, which OpenSSL 3.0's unpadding is not). */
static int cbc_encrypt(struct tctx *t, const EVP_CIPHER *cipher, const struct mh_secret *k,
                       enum aes_mode mode, const struct mh_cipher_params *in, const uint8_t *pt,
                       size_t pt_len, uint8_t *w, struct mh_cipher_result *res)
{
    size_t full = pt_len - pt_len % 16;
    MH_TRY(tctx_init(t, cipher, k->data, in->iv, 1));
    int n = 0;
    uint8_t last[16];
    if (EVP_CIPHER_CTX_set_padding(t->ctx, 0) != 1)
        goto err;
    if (full > 0 && (EVP_EncryptUpdate(t->ctx, w, &n, pt, (int)full) != 1 || (size_t)n != full))
        goto err;
    if (mode == MODE_CBCPAD) {
        size_t rem = pt_len - full;
        uint8_t pad = (uint8_t)(16 - rem);
        if (rem > 0)
            memcpy(last, pt + full, rem);
        memset(last + rem, pad, pad);
        int ok = EVP_EncryptUpdate(t->ctx, w + full, &n, last, 16);
        mh_wipe(last, sizeof last);
        if (ok != 1 || n != 16)
            goto err;
    }
    if (EVP_EncryptFinal_ex(t->ctx, last, &n) != 1 || n != 0)
        goto err;
    memcpy(res->iv, in->iv, MH_CBC_IV_LEN);
    res->iv_len = MH_CBC_IV_LEN;
    return 0;

err:
    tctx_forget(t);
    return MH_ECRYPTO;
}

static int cbc_decrypt(struct tctx *t, const EVP_CIPHER *cipher, const struct mh_secret *k,
                       const struct mh_cipher_params *in, const uint8_t *ct, size_t ct_len,
                       uint8_t *w)
{
    MH_TRY(tctx_init(t, cipher, k->data, in->iv, 0));
    int n = 0;
    uint8_t fin[16];
    if (EVP_CIPHER_CTX_set_padding(t->ctx, 0) != 1 ||
        EVP_DecryptUpdate(t->ctx, w, &n, ct, (int)ct_len) != 1 || (size_t)n != ct_len ||
        EVP_DecryptFinal_ex(t->ctx, fin, &n) != 1 || n != 0) {
        tctx_forget(t);
        return MH_ECRYPTO;
    }
    return 0;
}

/* IV, tag, AAD and length fit the mode and direction; checked before any
 * output is allocated. */
static int aes_check(enum aes_mode mode, const struct mh_cipher_params *in, size_t len, bool enc)
{
    if (mode == MODE_GCM && enc)
        return in->iv_len > 0 || in->tag_len > 0 ? MH_EINVAL : 0;
    if (mode == MODE_GCM) {
        if (in->iv_len != MH_GCM_IV_LEN)
            return MH_EIVLEN;
        return in->tag_len != MH_GCM_TAG_LEN ? MH_EINVAL : 0;
    }
    if (in->aad_len > 0 || in->tag_len > 0)
        return MH_EINVAL;
    if (in->iv_len != MH_CBC_IV_LEN)
        return MH_EIVLEN;
    if (mode == MODE_CBCPAD && enc)
        return 0;
    if (len == 0 || len % 16 != 0)
        return MH_EINPUTLEN;
    return 0;
}

static int aes_encrypt(const struct mh_key *key, enum mh_alg alg, const struct mh_cipher_params *in,
                       const uint8_t *pt, size_t pt_len, struct mh_buf *ct_out,
                       struct mh_cipher_result *res)
{
    enum aes_mode mode = aes_mode_of(alg);
    MH_TRY(aes_check(mode, in, pt_len, true));
    const EVP_CIPHER *cipher = aes_cipher(mode, mh_key_bits(key));
    size_t out_len = pt_len;
    if (mode == MODE_CBCPAD)
        out_len = pt_len - pt_len % 16 + 16;
    struct tctx *t;
    MH_TRY(tctx_get(&t));
    size_t before = ct_out->len;
    uint8_t *w;
    MH_TRY(mh_buf_extend(ct_out, out_len, &w));
    int rv;
    if (mode == MODE_GCM)
        rv = gcm_encrypt(t, cipher, mh_key_oct(key), in, pt, pt_len, w, res);
    else
        rv = cbc_encrypt(t, cipher, mh_key_oct(key), mode, in, pt, pt_len, w, res);
    tctx_scrub(t);
    if (rv < 0)
        mh_buf_truncate(ct_out, before);
    return rv;
}

static int aes_decrypt(const struct mh_key *key, enum mh_alg alg, const struct mh_cipher_params *in,
                       const uint8_t *ct, size_t ct_len, struct mh_secret *pt_out)
{
    enum aes_mode mode = aes_mode_of(alg);
    MH_TRY(aes_check(mode, in, ct_len, false));
    const EVP_CIPHER *cipher = aes_cipher(mode, mh_key_bits(key));
    struct tctx *t;
    MH_TRY(tctx_get(&t));
    MH_TRY(mh_secret_alloc(pt_out, ct_len));
    int rv;
    if (mode == MODE_GCM)
        rv = gcm_decrypt(t, cipher, mh_key_oct(key), in, ct, ct_len, pt_out->data);
    else
        rv = cbc_decrypt(t, cipher, mh_key_oct(key), in, ct, ct_len, pt_out->data);
    tctx_scrub(t);
    if (rv < 0)
        goto err_after_secret;
    if (mode == MODE_CBCPAD) {
        size_t pad = pkcs7_pad_len(pt_out->data, ct_len);
        if (pad == 0) {
            rv = MH_EDECRYPT;
            goto err_after_secret;
        }
        mh_secret_shrink(pt_out, ct_len - pad);
    }
    return 0;

err_after_secret:
    mh_secret_free(pt_out);
    return rv;
}

/* ---- public API ---- */

int mh_encrypt(const struct mh_key *key, enum mh_alg alg, const struct mh_cipher_params *in,
               const uint8_t *pt, size_t pt_len, struct mh_buf *ct_out,
               struct mh_cipher_result *res)
{
    if (ct_out == NULL || res == NULL || (pt == NULL && pt_len > 0))
        return MH_EINVAL;
    memset(res, 0, sizeof *res);
    MH_TRY(mh_alg_init());
    MH_TRY(check_key_alg(key, alg));
    if (pt_len > MH_CIPHER_MAX_INPUT)
        return MH_ETOOBIG;
    if (in == NULL)
        in = &NO_PARAMS;
    MH_TRY(check_params(in));
    if (pt == NULL)
        pt = EMPTY;
    int rv;
    if (mh_alg_class(alg) == MH_ALG_CLASS_RSA_ENC) {
        if (in->iv_len > 0 || in->aad_len > 0 || in->tag_len > 0)
            return MH_EINVAL;
        rv = rsa_encrypt(key, alg, pt, pt_len, ct_out);
    } else {
        rv = aes_encrypt(key, alg, in, pt, pt_len, ct_out, res);
    }
    if (rv < 0)
        memset(res, 0, sizeof *res);
    return rv;
}

int mh_decrypt(const struct mh_key *key, enum mh_alg alg, const struct mh_cipher_params *in,
               const uint8_t *ct, size_t ct_len, struct mh_secret *pt_out)
{
    /* A non-empty |pt_out| would be overwritten and its secret leaked. */
    if (pt_out == NULL || pt_out->data != NULL || (ct == NULL && ct_len > 0))
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    MH_TRY(check_key_alg(key, alg));
    if (ct_len > MH_CIPHER_MAX_INPUT)
        return MH_ETOOBIG;
    if (in == NULL)
        in = &NO_PARAMS;
    MH_TRY(check_params(in));
    if (ct == NULL)
        ct = EMPTY;
    if (mh_alg_class(alg) == MH_ALG_CLASS_RSA_ENC) {
        if (in->iv_len > 0 || in->aad_len > 0 || in->tag_len > 0)
            return MH_EINVAL;
        return rsa_decrypt(key, alg, ct, ct_len, pt_out);
    }
    return aes_decrypt(key, alg, in, ct, ct_len, pt_out);
}
