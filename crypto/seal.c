#include "crypto/seal.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>

#include "crypto/alg.h"
#include "crypto/rand.h"

/* Largest input mh_hkdf_sha256 takes for ikm, salt or info: far above any
 * real use, low enough that no length gets near an int. */
#define HKDF_MAX_IN ((size_t)64 * 1024)

static EVP_KDF *hkdf_kdf;
static pthread_once_t hkdf_once = PTHREAD_ONCE_INIT;

static void hkdf_fetch(void)
{
    hkdf_kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
}

int mh_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                   const uint8_t *info, size_t info_len, size_t out_len, struct mh_secret *out)
{
    if (out == NULL || ikm == NULL || ikm_len == 0 || out_len == 0 || out_len > MH_HKDF_MAX_OUT ||
        (salt == NULL && salt_len > 0) || (info == NULL && info_len > 0))
        return MH_EINVAL;
    MH_ENSURE(ikm_len <= HKDF_MAX_IN && salt_len <= HKDF_MAX_IN && info_len <= HKDF_MAX_IN,
              MH_ETOOBIG);
    MH_ENSURE(pthread_once(&hkdf_once, hkdf_fetch) == 0 && hkdf_kdf != NULL, MH_ECRYPTO);

    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(hkdf_kdf);
    if (ctx == NULL)
        return MH_ENOMEM;
    /* OSSL_PARAM wants non-const pointers; the KDF copies and never writes. */
    OSSL_PARAM params[5];
    size_t np = 0;
    /* HKDF's 3.0 implementation has no dupctx, so a template context cannot
     * carry a prefetched digest; by name it is a cached lookup, and
     * derivations happen at activation and start-up, not per request. */
    params[np++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    if (salt_len > 0)
        params[np++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    if (info_len > 0)
        params[np++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    params[np] = OSSL_PARAM_construct_end();

    int rv = mh_secret_alloc(out, out_len);
    if (rv < 0)
        goto err_after_ctx;
    if (EVP_KDF_derive(ctx, out->data, out_len, params) != 1) {
        mh_secret_free(out);
        rv = MH_ECRYPTO;
        ERR_clear_error();
    }
err_after_ctx:
    EVP_KDF_CTX_free(ctx); /* the provider wipes its copy of the key */
    return rv;
}

static const char *purpose_label(enum mh_seal_purpose purpose)
{
    switch (purpose) {
    case MH_PURPOSE_KEY_WRAP:
        return "mhsm v1 key-wrapping key";
    case MH_PURPOSE_BACKUP:
        return "mhsm v1 backup key";
    case MH_PURPOSE_AUDIT_SIGN:
        return "mhsm v1 audit-signing key";
    case MH_PURPOSE_NODE_TRANSFER:
        return "mhsm v1 node-transfer key";
    default:
        return NULL;
    }
}

int mh_seal_derive(const struct mh_secret *root, enum mh_seal_purpose purpose,
                   struct mh_secret *out)
{
    if (root == NULL || root->len != MH_SEAL_KEY_LEN || root->data == NULL)
        return MH_EINVAL;
    const char *label = purpose_label(purpose);
    if (label == NULL)
        return MH_EINVAL;
    return mh_hkdf_sha256(root->data, root->len, NULL, 0, (const uint8_t *)label, strlen(label),
                          MH_SEAL_KEY_LEN, out);
}

static int check_key(const struct mh_secret *wk)
{
    if (wk == NULL || wk->data == NULL || wk->len != MH_SEAL_KEY_LEN)
        return MH_EINVAL;
    return 0;
}

/* Feeds the authenticated data (version byte, then the caller's AAD) into an
 * initialised GCM context. */
static int feed_aad(EVP_CIPHER_CTX *ctx, bool enc, const uint8_t *aad, size_t aad_len)
{
    static const uint8_t version = MH_SEAL_VERSION;
    int n;
    int ok = enc ? EVP_EncryptUpdate(ctx, NULL, &n, &version, 1)
                 : EVP_DecryptUpdate(ctx, NULL, &n, &version, 1);
    if (ok != 1)
        return MH_ECRYPTO;
    if (aad_len == 0)
        return 0;
    ok = enc ? EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len)
             : EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len);
    return ok == 1 ? 0 : MH_ECRYPTO;
}

int mh_seal(const struct mh_secret *wrapping_key, const uint8_t *aad, size_t aad_len,
            const uint8_t *pt, size_t pt_len, struct mh_buf *out)
{
    MH_TRY(check_key(wrapping_key));
    if (out == NULL || (aad == NULL && aad_len > 0) || (pt == NULL && pt_len > 0))
        return MH_EINVAL;
    MH_ENSURE(pt_len <= MH_SEAL_MAX_PLAINTEXT && aad_len <= MH_SEAL_MAX_AAD, MH_ETOOBIG);
    MH_TRY(mh_alg_init());

    size_t total;
    MH_TRY(mh_size_add(pt_len, MH_SEAL_OVERHEAD, &total));
    size_t before = out->len;
    uint8_t *w;
    MH_TRY(mh_buf_extend(out, total, &w));
    uint8_t *iv = w + 1, *ct = iv + MH_SEAL_IV_LEN, *tag = ct + pt_len;
    w[0] = MH_SEAL_VERSION;
    int rv = mh_rand_bytes(iv, MH_SEAL_IV_LEN);
    if (rv < 0)
        goto err_after_extend;

    rv = MH_ENOMEM;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        goto err_after_extend;
    rv = MH_ECRYPTO;
    if (EVP_EncryptInit_ex2(ctx, mh_alg_cipher(MH_CIPHER_AES_256_GCM), wrapping_key->data, iv,
                            NULL) != 1)
        goto err_after_ctx;
    rv = feed_aad(ctx, true, aad, aad_len);
    if (rv < 0)
        goto err_after_ctx;
    rv = MH_ECRYPTO;
    int n = 0;
    if (pt_len > 0 && (EVP_EncryptUpdate(ctx, ct, &n, pt, (int)pt_len) != 1 || (size_t)n != pt_len))
        goto err_after_ctx;
    if (EVP_EncryptFinal_ex(ctx, ct + pt_len, &n) != 1 || n != 0)
        goto err_after_ctx;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, MH_SEAL_TAG_LEN, tag) != 1)
        goto err_after_ctx;
    EVP_CIPHER_CTX_free(ctx);
    return 0;

err_after_ctx:
    EVP_CIPHER_CTX_free(ctx);
    ERR_clear_error();
err_after_extend:
    mh_buf_truncate(out, before);
    return rv;
}

int mh_unseal(const struct mh_secret *wrapping_key, const uint8_t *aad, size_t aad_len,
              const uint8_t *sealed, size_t len, struct mh_secret *pt_out)
{
    MH_TRY(check_key(wrapping_key));
    if (pt_out == NULL || (aad == NULL && aad_len > 0) || (sealed == NULL && len > 0))
        return MH_EINVAL;
    MH_ENSURE(aad_len <= MH_SEAL_MAX_AAD && len <= MH_SEAL_MAX_PLAINTEXT + MH_SEAL_OVERHEAD,
              MH_ETOOBIG);
    MH_ENSURE(len >= MH_SEAL_OVERHEAD, MH_ETRUNC);
    MH_ENSURE(sealed[0] == MH_SEAL_VERSION, MH_EUNSUPPORTED);
    MH_TRY(mh_alg_init());

    const uint8_t *iv = sealed + 1, *ct = iv + MH_SEAL_IV_LEN;
    size_t ct_len = len - MH_SEAL_OVERHEAD;
    const uint8_t *tag = ct + ct_len;
    /* GCM_SET_TAG takes a non-const pointer; OpenSSL copies the tag. A stack
     * copy keeps the caller's bytes formally untouched. */
    uint8_t tag_copy[MH_SEAL_TAG_LEN];
    memcpy(tag_copy, tag, sizeof tag_copy);

    int rv = mh_secret_alloc(pt_out, ct_len);
    if (rv < 0)
        return rv;
    rv = MH_ENOMEM;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        goto err_after_pt;
    rv = MH_ECRYPTO;
    if (EVP_DecryptInit_ex2(ctx, mh_alg_cipher(MH_CIPHER_AES_256_GCM), wrapping_key->data, iv,
                            NULL) != 1)
        goto err_after_ctx;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, MH_SEAL_TAG_LEN, tag_copy) != 1)
        goto err_after_ctx;
    rv = feed_aad(ctx, false, aad, aad_len);
    if (rv < 0)
        goto err_after_ctx;
    rv = MH_ECRYPTO;
    int n = 0;
    if (ct_len > 0 &&
        (EVP_DecryptUpdate(ctx, pt_out->data, &n, ct, (int)ct_len) != 1 || (size_t)n != ct_len))
        goto err_after_ctx;
    /* Final is where GCM compares the tag (in constant time). */
    uint8_t final_block[16];
    rv = MH_EAUTH;
    if (EVP_DecryptFinal_ex(ctx, final_block, &n) != 1 || n != 0)
        goto err_after_ctx;
    EVP_CIPHER_CTX_free(ctx);
    return 0;

err_after_ctx:
    EVP_CIPHER_CTX_free(ctx);
    ERR_clear_error();
err_after_pt:
    mh_secret_free(pt_out); /* wipes whatever unauthenticated plaintext was written */
    return rv;
}

int mh_seal_key(const struct mh_secret *wrapping_key, const struct mh_key *key, const uint8_t *aad,
                size_t aad_len, struct mh_buf *out)
{
    if (key == NULL)
        return MH_EINVAL;
    MH_TRY(check_key(wrapping_key));
    struct mh_secret material = {0};
    MH_TRY(mh_key_export_private(key, &material));
    int rv = mh_seal(wrapping_key, aad, aad_len, material.data, material.len, out);
    mh_secret_free(&material);
    return rv;
}

int mh_unseal_key(const struct mh_secret *wrapping_key, enum mh_kty kty, const uint8_t *aad,
                  size_t aad_len, const uint8_t *sealed, size_t len, struct mh_key **out)
{
    if (out == NULL)
        return MH_EINVAL;
    MH_ENSURE(kty == MH_KTY_RSA || kty == MH_KTY_EC || kty == MH_KTY_OCT, MH_EUNSUPPORTED);
    struct mh_secret material = {0};
    MH_TRY(mh_unseal(wrapping_key, aad, aad_len, sealed, len, &material));
    int rv = mh_key_import_private(kty, material.data, material.len, out);
    mh_secret_free(&material);
    /* The blob was authentic, so any refusal means its contents are not a
     * key of |kty|: report it as such rather than as the parser's detail. */
    if (rv < 0 && rv != MH_ENOMEM)
        rv = MH_EBADKEY;
    return rv;
}
