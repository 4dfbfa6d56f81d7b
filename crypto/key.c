#include "crypto/key.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "crypto/alg.h"
#include "crypto/rand.h"

struct mh_key {
    _Atomic long refs;
    uint64_t id;
    enum mh_kty kty;
    enum mh_curve curve;
    unsigned bits;
    bool has_private;
    EVP_PKEY *pkey;       /* RSA, EC */
    struct mh_secret oct; /* AES */
};

static _Atomic uint64_t next_id = 1;

static const struct {
    enum mh_curve curve;
    const char *jwk;
    const char *ossl;  /* OpenSSL group name */
    const char *alias; /* NIST / other spelling OpenSSL may report */
    unsigned bits;
    size_t field_len;
} CURVES[] = {
    {MH_CURVE_P256, "P-256", "prime256v1", "P-256", 256, 32},
    {MH_CURVE_P256K, "P-256K", "secp256k1", "secp256k1", 256, 32},
    {MH_CURVE_P384, "P-384", "secp384r1", "P-384", 384, 48},
    {MH_CURVE_P521, "P-521", "secp521r1", "P-521", 521, 66},
};
#define NCURVES (sizeof CURVES / sizeof CURVES[0])

const char *mh_kty_name(enum mh_kty kty)
{
    switch (kty) {
    case MH_KTY_RSA:
        return "RSA";
    case MH_KTY_EC:
        return "EC";
    case MH_KTY_OCT:
        return "oct";
    case MH_KTY_NONE:
    default:
        return "";
    }
}

enum mh_kty mh_kty_from_name(const char *name)
{
    if (name == NULL)
        return MH_KTY_NONE;
    if (strcmp(name, "RSA") == 0)
        return MH_KTY_RSA;
    if (strcmp(name, "EC") == 0)
        return MH_KTY_EC;
    if (strcmp(name, "oct") == 0)
        return MH_KTY_OCT;
    return MH_KTY_NONE;
}

static int curve_index(enum mh_curve c)
{
    for (size_t i = 0; i < NCURVES; i++)
        if (CURVES[i].curve == c)
            return (int)i;
    return -1;
}

const char *mh_curve_name(enum mh_curve curve)
{
    int i = curve_index(curve);
    return i < 0 ? "" : CURVES[i].jwk;
}

enum mh_curve mh_curve_from_name(const char *name)
{
    if (name == NULL)
        return MH_CURVE_NONE;
    for (size_t i = 0; i < NCURVES; i++)
        if (strcmp(name, CURVES[i].jwk) == 0)
            return CURVES[i].curve;
    if (strcmp(name, "secp256k1") == 0)
        return MH_CURVE_P256K;
    return MH_CURVE_NONE;
}

const char *mh_curve_ossl_name(enum mh_curve curve)
{
    int i = curve_index(curve);
    return i < 0 ? NULL : CURVES[i].ossl;
}

size_t mh_curve_field_len(enum mh_curve curve)
{
    int i = curve_index(curve);
    return i < 0 ? 0 : CURVES[i].field_len;
}

static int key_new(enum mh_kty kty, struct mh_key **out)
{
    struct mh_key *k = calloc(1, sizeof *k);
    if (k == NULL)
        return MH_ENOMEM;
    atomic_init(&k->refs, 1);
    k->id = atomic_fetch_add(&next_id, 1);
    k->kty = kty;
    *out = k;
    return 0;
}

struct mh_key *mh_key_ref(struct mh_key *key)
{
    if (key != NULL)
        atomic_fetch_add(&key->refs, 1);
    return key;
}

void mh_key_free(struct mh_key *key)
{
    if (key == NULL)
        return;
    if (atomic_fetch_sub(&key->refs, 1) != 1)
        return;
    EVP_PKEY_free(key->pkey);
    mh_secret_free(&key->oct);
    free(key);
}

enum mh_kty mh_key_kty(const struct mh_key *key)
{
    return key->kty;
}

unsigned mh_key_bits(const struct mh_key *key)
{
    return key->bits;
}

enum mh_curve mh_key_curve(const struct mh_key *key)
{
    return key->curve;
}

bool mh_key_has_private(const struct mh_key *key)
{
    return key->has_private;
}

uint64_t mh_key_id(const struct mh_key *key)
{
    return key->id;
}

EVP_PKEY *mh_key_pkey(const struct mh_key *key)
{
    return key->pkey;
}

const struct mh_secret *mh_key_oct(const struct mh_key *key)
{
    return key->kty == MH_KTY_OCT ? &key->oct : NULL;
}

static bool pkey_has_bn(const EVP_PKEY *pkey, const char *param)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        return false;
    BN_clear_free(bn);
    return true;
}

/* Classifies |pkey| into kty/curve/bits and checks the acceptance rules
 * shared by every path that makes a key. */
static int classify(EVP_PKEY *pkey, enum mh_kty *kty, enum mh_curve *curve, unsigned *bits,
                    bool *has_private)
{
    int id = EVP_PKEY_get_base_id(pkey);
    if (id == EVP_PKEY_RSA) {
        int b = EVP_PKEY_get_bits(pkey);
        if (b < 2048)
            return MH_EWEAKKEY;
        if (b != 2048 && b != 3072 && b != 4096)
            return MH_EUNSUPPORTED;
        BIGNUM *e = NULL;
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
            return MH_EBADKEY;
        int ok = BN_is_odd(e) && BN_num_bits(e) >= 2 && BN_num_bits(e) <= 256;
        BN_free(e);
        if (!ok)
            return MH_EBADKEY;
        *kty = MH_KTY_RSA;
        *curve = MH_CURVE_NONE;
        *bits = (unsigned)b;
        *has_private = pkey_has_bn(pkey, OSSL_PKEY_PARAM_RSA_D);
        return 0;
    }
    if (id == EVP_PKEY_EC) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           &glen) != 1)
            return MH_EUNSUPPORTED; /* explicit parameters, no named group */
        for (size_t i = 0; i < NCURVES; i++) {
            if (strcmp(group, CURVES[i].ossl) == 0 || strcmp(group, CURVES[i].alias) == 0) {
                *kty = MH_KTY_EC;
                *curve = CURVES[i].curve;
                *bits = CURVES[i].bits;
                *has_private = pkey_has_bn(pkey, OSSL_PKEY_PARAM_PRIV_KEY);
                return 0;
            }
        }
        return MH_EUNSUPPORTED;
    }
    return MH_EUNSUPPORTED;
}

static int adopt(EVP_PKEY *pkey, bool full_check, struct mh_key **out)
{
    enum mh_kty kty;
    enum mh_curve curve;
    unsigned bits;
    bool has_private;
    MH_TRY(classify(pkey, &kty, &curve, &bits, &has_private));
    if (full_check) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (ctx == NULL)
            return MH_ENOMEM;
        int ok = has_private ? EVP_PKEY_check(ctx) : EVP_PKEY_public_check(ctx);
        EVP_PKEY_CTX_free(ctx);
        if (ok != 1)
            return MH_EBADKEY;
    }
    struct mh_key *k;
    MH_TRY(key_new(kty, &k));
    k->curve = curve;
    k->bits = bits;
    k->has_private = has_private;
    k->pkey = pkey;
    *out = k;
    return 0;
}

int mh_key_from_pkey(EVP_PKEY *pkey, struct mh_key **out)
{
    if (pkey == NULL)
        return MH_EINVAL;
    return adopt(pkey, true, out);
}

int mh_key_from_oct(const uint8_t *k, size_t len, struct mh_key **out)
{
    if (len != 16 && len != 24 && len != 32)
        return MH_EUNSUPPORTED;
    struct mh_key *key;
    MH_TRY(key_new(MH_KTY_OCT, &key));
    int rv = mh_secret_dup(&key->oct, k, len);
    if (rv < 0) {
        mh_key_free(key);
        return rv;
    }
    key->bits = (unsigned)(len * 8);
    key->has_private = true;
    *out = key;
    return 0;
}

int mh_key_generate(enum mh_kty kty, unsigned bits, enum mh_curve curve, struct mh_key **out)
{
    MH_TRY(mh_alg_init());
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    int rv = MH_ECRYPTO;

    switch (kty) {
    case MH_KTY_OCT: {
        if (bits != 128 && bits != 192 && bits != 256)
            return MH_EUNSUPPORTED;
        struct mh_key *k;
        MH_TRY(key_new(MH_KTY_OCT, &k));
        rv = mh_rand_secret(&k->oct, bits / 8);
        if (rv < 0) {
            mh_key_free(k);
            return rv;
        }
        k->bits = bits;
        k->has_private = true;
        *out = k;
        return 0;
    }
    case MH_KTY_RSA:
        if (bits != 2048 && bits != 3072 && bits != 4096)
            return MH_EUNSUPPORTED;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 ||
            EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) != 1)
            goto err_after_ctx;
        break;
    case MH_KTY_EC: {
        int i = curve_index(curve);
        if (i < 0)
            return MH_EUNSUPPORTED;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 ||
            EVP_PKEY_CTX_set_group_name(ctx, CURVES[i].ossl) != 1)
            goto err_after_ctx;
        break;
    }
    case MH_KTY_NONE:
    default:
        return MH_EUNSUPPORTED;
    }
    if (EVP_PKEY_generate(ctx, &pkey) != 1)
        goto err_after_ctx;
    EVP_PKEY_CTX_free(ctx);
    rv = adopt(pkey, false, out);
    if (rv < 0)
        EVP_PKEY_free(pkey);
    return rv;

err_after_ctx:
    EVP_PKEY_CTX_free(ctx);
    return rv;
}

int mh_key_export_private(const struct mh_key *key, struct mh_secret *out)
{
    if (!key->has_private)
        return MH_ENOPRIVATE;
    if (key->kty == MH_KTY_OCT)
        return mh_secret_dup(out, key->oct.data, key->oct.len);

    /* i2d_PrivateKey into OpenSSL's buffer would leave a copy behind in plain
     * heap; size first, then encode straight into the secret. */
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key->pkey);
    if (p8 == NULL)
        return MH_ECRYPTO;
    int rv = MH_ECRYPTO;
    int n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
    if (n <= 0)
        goto err_after_p8;
    rv = mh_secret_alloc(out, (size_t)n);
    if (rv < 0)
        goto err_after_p8;
    unsigned char *w = out->data;
    if (i2d_PKCS8_PRIV_KEY_INFO(p8, &w) != n) {
        mh_secret_free(out);
        rv = MH_ECRYPTO;
        goto err_after_p8;
    }
    rv = 0;
err_after_p8:
    PKCS8_PRIV_KEY_INFO_free(p8);
    return rv;
}

int mh_key_import_private(enum mh_kty kty, const uint8_t *p, size_t len, struct mh_key **out)
{
    MH_TRY(mh_alg_init());
    if (kty == MH_KTY_OCT)
        return mh_key_from_oct(p, len, out);
    if (kty != MH_KTY_RSA && kty != MH_KTY_EC)
        return MH_EUNSUPPORTED;
    if (len == 0 || len > LONG_MAX)
        return MH_EBADKEY;
    const unsigned char *r = p;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &r, (long)len);
    if (p8 == NULL)
        return MH_EBADKEY;
    int rv = MH_EBADKEY;
    if (r != p + len) /* trailing bytes */
        goto err_after_p8;
    EVP_PKEY *pkey = EVP_PKCS82PKEY(p8);
    if (pkey == NULL)
        goto err_after_p8;
    if ((kty == MH_KTY_RSA && EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) ||
        (kty == MH_KTY_EC && EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)) {
        EVP_PKEY_free(pkey);
        goto err_after_p8;
    }
    rv = adopt(pkey, false, out);
    if (rv < 0)
        EVP_PKEY_free(pkey);
    else if (!(*out)->has_private) {
        mh_key_free(*out);
        rv = MH_EBADKEY;
    }
err_after_p8:
    PKCS8_PRIV_KEY_INFO_free(p8);
    return rv;
}

int mh_key_public_der(const struct mh_key *key, struct mh_buf *out)
{
    if (key->pkey == NULL)
        return MH_EINVAL;
    int n = i2d_PUBKEY(key->pkey, NULL);
    if (n <= 0)
        return MH_ECRYPTO;
    size_t before = out->len;
    uint8_t *w;
    MH_TRY(mh_buf_extend(out, (size_t)n, &w));
    if (i2d_PUBKEY(key->pkey, &w) != n) {
        mh_buf_truncate(out, before);
        return MH_ECRYPTO;
    }
    return 0;
}
