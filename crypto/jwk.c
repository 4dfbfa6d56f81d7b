#include "crypto/jwk.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "common/b64.h"
#include "common/secret.h"
#include "crypto/alg.h"

/* RSA-4096 is the largest modulus crypto/key.h accepts. */
#define RSA_MAX_MODULUS_BYTES 512

/* ---------------------------------------------------------------- export */

/* Adds |name| = base64url(|bn|) to |obj|, left-padded with zeros to |pad|
 * bytes when pad > 0, minimal otherwise. */
static int set_bn_member(json_t *obj, const char *name, const BIGNUM *bn, size_t pad)
{
    int nbytes = BN_num_bytes(bn);
    if (nbytes < 0)
        return MH_ECRYPTO;
    size_t len = pad > 0 ? pad : (size_t)nbytes;
    if (len == 0 || (size_t)nbytes > len || len > INT_MAX)
        return MH_ECRYPTO;
    struct mh_buf raw = {0}, text = {0};
    uint8_t *w;
    int rv = mh_buf_extend(&raw, len, &w);
    if (rv < 0)
        return rv;
    rv = MH_ECRYPTO;
    if (BN_bn2binpad(bn, w, (int)len) != (int)len)
        goto err_after_raw;
    rv = mh_b64url_encode(raw.data, raw.len, &text);
    if (rv < 0)
        goto err_after_raw;
    rv = json_object_set_new(obj, name, json_stringn((const char *)text.data, text.len)) == 0
             ? 0
             : MH_ENOMEM;
    mh_buf_free(&text);
err_after_raw:
    mh_buf_free(&raw);
    return rv;
}

static int set_pkey_bn_member(json_t *obj, const char *name, const EVP_PKEY *pkey,
                              const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        return MH_ECRYPTO;
    int rv = set_bn_member(obj, name, bn, pad);
    BN_free(bn);
    return rv;
}

int mh_jwk_export_public(const struct mh_key *key, json_t **out)
{
    if (key == NULL || out == NULL)
        return MH_EINVAL;
    const EVP_PKEY *pkey = mh_key_pkey(key);
    enum mh_kty kty = mh_key_kty(key);
    if ((kty != MH_KTY_RSA && kty != MH_KTY_EC) || pkey == NULL)
        return MH_EINVAL; /* oct keys have no public material to show */
    json_t *obj = json_object();
    if (obj == NULL)
        return MH_ENOMEM;
    int rv = json_object_set_new(obj, "kty", json_string(mh_kty_name(kty))) == 0 ? 0 : MH_ENOMEM;
    if (rv < 0)
        goto err_after_obj;

    switch (kty) {
    case MH_KTY_RSA:
        rv = set_pkey_bn_member(obj, "n", pkey, OSSL_PKEY_PARAM_RSA_N, 0);
        if (rv < 0)
            goto err_after_obj;
        rv = set_pkey_bn_member(obj, "e", pkey, OSSL_PKEY_PARAM_RSA_E, 0);
        if (rv < 0)
            goto err_after_obj;
        break;
    case MH_KTY_EC: {
        enum mh_curve curve = mh_key_curve(key);
        size_t flen = mh_curve_field_len(curve);
        rv =
            json_object_set_new(obj, "crv", json_string(mh_curve_name(curve))) == 0 ? 0 : MH_ENOMEM;
        if (rv < 0)
            goto err_after_obj;
        rv = set_pkey_bn_member(obj, "x", pkey, OSSL_PKEY_PARAM_EC_PUB_X, flen);
        if (rv < 0)
            goto err_after_obj;
        rv = set_pkey_bn_member(obj, "y", pkey, OSSL_PKEY_PARAM_EC_PUB_Y, flen);
        if (rv < 0)
            goto err_after_obj;
        break;
    }
    case MH_KTY_OCT:
    case MH_KTY_NONE:
    default:
        rv = MH_EINVAL;
        goto err_after_obj;
    }
    *out = obj;
    return 0;

err_after_obj:
    json_decref(obj);
    ERR_clear_error();
    return rv;
}

int mh_jwk_export_public_str(const struct mh_key *key, struct mh_buf *out)
{
    json_t *obj;
    MH_TRY(mh_jwk_export_public(key, &obj));
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL)
        return MH_ENOMEM;
    int rv = mh_buf_append_str(out, text);
    free(text);
    return rv;
}

/* ---------------------------------------------------------------- import */

/* Private members whose base64url text is wiped from a tree we parsed. */
static const char *const PRIVATE_MEMBERS[] = {"d", "p", "q", "dp", "dq", "qi", "k"};

static void wipe_private_members(json_t *jwk)
{
    if (!json_is_object(jwk))
        return;
    for (size_t i = 0; i < sizeof PRIVATE_MEMBERS / sizeof PRIVATE_MEMBERS[0]; i++) {
        json_t *v = json_object_get(jwk, PRIVATE_MEMBERS[i]);
        if (json_is_string(v))
            mh_wipe((void *)json_string_value(v), json_string_length(v));
    }
}

/* Borrows the string member |name|: MH_EJSON when missing or not a string,
 * MH_ETOOBIG when longer than any acceptable JWK (a json_t from elsewhere was
 * not size-checked). */
static int get_string(const json_t *obj, const char *name, const char **s, size_t *len)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || !json_is_string(v))
        return MH_EJSON;
    *s = json_string_value(v);
    *len = json_string_length(v);
    if (*len > MH_JWK_MAX_LEN)
        return MH_ETOOBIG;
    return 0;
}

/* A public base64url member, decoded; empty values are bad key material. */
static int get_public(const json_t *obj, const char *name, struct mh_buf *out)
{
    const char *s;
    size_t len;
    MH_TRY(get_string(obj, name, &s, &len));
    MH_TRY(mh_b64url_decode(s, len, out));
    MH_ENSURE(out->len > 0, MH_EBADKEY);
    return 0;
}

/* A private base64url member, decoded straight into a secret. */
static int get_private(const json_t *obj, const char *name, struct mh_secret *out)
{
    const char *s;
    size_t len;
    MH_TRY(get_string(obj, name, &s, &len));
    MH_TRY(mh_b64url_decode_secret(s, len, out));
    if (out->len == 0) {
        mh_secret_free(out);
        return MH_EBADKEY;
    }
    return 0;
}

/* OSSL_PARAM_BLD_push_BN keeps a pointer, not a copy, until
 * OSSL_PARAM_BLD_to_param: the numbers live here until the key is made. */
#define MAX_BNS 8
struct bn_list {
    BIGNUM *bn[MAX_BNS];
    size_t n;
};

static void bn_list_free(struct bn_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        BN_clear_free(l->bn[i]);
    l->n = 0;
}

/* Pushes |len| big-endian bytes as a BIGNUM parameter. |secure| keeps the
 * number (and OSSL_PARAM_BLD's copy of it) in secure, wiped memory. */
static int push_bn(OSSL_PARAM_BLD *bld, struct bn_list *l, const char *param, const uint8_t *p,
                   size_t len, bool secure)
{
    if (len > INT_MAX)
        return MH_ETOOBIG;
    if (l->n >= MAX_BNS)
        return MH_EINVAL;
    BIGNUM *bn = secure ? BN_secure_new() : BN_new();
    if (bn == NULL)
        return MH_ENOMEM;
    l->bn[l->n++] = bn;
    if (BN_bin2bn(p, (int)len, bn) == NULL || OSSL_PARAM_BLD_push_BN(bld, param, bn) != 1)
        return MH_ENOMEM;
    return 0;
}

/* Makes an EVP_PKEY of |type| from the parameters in |bld| and hands it to
 * mh_key_from_pkey. OpenSSL refusing the numbers (a point off the curve, say)
 * is bad key material, not an internal failure. */
static int pkey_from_bld(const char *type, OSSL_PARAM_BLD *bld, struct mh_key **out)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL)
        return MH_ENOMEM;
    int rv = MH_ENOMEM;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (ctx == NULL)
        goto err_after_params;
    rv = MH_ECRYPTO;
    if (EVP_PKEY_fromdata_init(ctx) != 1)
        goto err_after_ctx;
    EVP_PKEY *pkey = NULL;
    rv = MH_EBADKEY;
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1 || pkey == NULL)
        goto err_after_ctx;
    rv = mh_key_from_pkey(pkey, out);
    if (rv < 0)
        EVP_PKEY_free(pkey);
err_after_ctx:
    EVP_PKEY_CTX_free(ctx);
err_after_params:
    OSSL_PARAM_free(params); /* clears the secure block holding the private numbers */
    return rv;
}

static size_t leading_zeros(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len && p[i] == 0)
        i++;
    return i;
}

enum { RSA_D, RSA_P, RSA_Q, RSA_DP, RSA_DQ, RSA_QI, RSA_NPRIV };

static int import_rsa(const json_t *jwk, struct mh_key **out)
{
    static const char *const names[RSA_NPRIV] = {"d", "p", "q", "dp", "dq", "qi"};
    static const char *const params[RSA_NPRIV] = {
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    if (json_object_get(jwk, "oth") != NULL)
        return MH_EUNSUPPORTED; /* multi-prime RSA */

    struct mh_buf n = {0}, e = {0};
    struct mh_secret priv[RSA_NPRIV] = {{0}};
    int rv = get_public(jwk, "n", &n);
    if (rv < 0)
        goto err_after_bufs;
    rv = get_public(jwk, "e", &e);
    if (rv < 0)
        goto err_after_bufs;
    for (size_t i = 0; i < RSA_NPRIV; i++) {
        rv = get_private(jwk, names[i], &priv[i]);
        if (rv < 0)
            goto err_after_bufs;
    }
    /* Bound the numbers before OpenSSL does arithmetic on them: nothing in a
     * valid key is longer than the modulus. */
    size_t nlen = n.len - leading_zeros(n.data, n.len);
    rv = MH_EUNSUPPORTED;
    if (nlen > RSA_MAX_MODULUS_BYTES)
        goto err_after_bufs;
    rv = MH_EBADKEY;
    if (e.len > n.len)
        goto err_after_bufs;
    for (size_t i = 0; i < RSA_NPRIV; i++)
        if (priv[i].len > n.len)
            goto err_after_bufs;

    rv = MH_ENOMEM;
    struct bn_list bns = {{NULL}, 0};
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld == NULL)
        goto err_after_bufs;
    rv = push_bn(bld, &bns, OSSL_PKEY_PARAM_RSA_N, n.data, n.len, false);
    if (rv < 0)
        goto err_after_bld;
    rv = push_bn(bld, &bns, OSSL_PKEY_PARAM_RSA_E, e.data, e.len, false);
    if (rv < 0)
        goto err_after_bld;
    for (size_t i = 0; i < RSA_NPRIV; i++) {
        rv = push_bn(bld, &bns, params[i], priv[i].data, priv[i].len, true);
        if (rv < 0)
            goto err_after_bld;
    }
    rv = pkey_from_bld("RSA", bld, out);
err_after_bld:
    OSSL_PARAM_BLD_free(bld);
    bn_list_free(&bns);
err_after_bufs:
    for (size_t i = 0; i < RSA_NPRIV; i++)
        mh_secret_free(&priv[i]);
    mh_buf_free(&e);
    mh_buf_free(&n);
    return rv;
}

static int import_ec(const json_t *jwk, struct mh_key **out)
{
    const char *crv;
    size_t crv_len;
    MH_TRY(get_string(jwk, "crv", &crv, &crv_len));
    /* A NUL inside the name would make the C-string lookup below see a prefix. */
    MH_ENSURE(strlen(crv) == crv_len, MH_EUNSUPPORTED);
    enum mh_curve curve = mh_curve_from_name(crv);
    const char *group = mh_curve_ossl_name(curve);
    MH_ENSURE(group != NULL, MH_EUNSUPPORTED);
    size_t flen = mh_curve_field_len(curve);

    struct mh_buf x = {0}, y = {0}, pub = {0};
    struct mh_secret d = {0};
    int rv = get_public(jwk, "x", &x);
    if (rv < 0)
        goto err_after_bufs;
    rv = get_public(jwk, "y", &y);
    if (rv < 0)
        goto err_after_bufs;
    rv = get_private(jwk, "d", &d);
    if (rv < 0)
        goto err_after_bufs;
    /* RFC 7518 6.2.1.2 / 6.2.2.1: each is exactly the field length. */
    rv = MH_EBADKEY;
    if (x.len != flen || y.len != flen || d.len != flen)
        goto err_after_bufs;
    rv = mh_buf_append_u8(&pub, 0x04); /* SEC 1 uncompressed point */
    if (rv < 0)
        goto err_after_bufs;
    rv = mh_buf_append(&pub, x.data, x.len);
    if (rv < 0)
        goto err_after_bufs;
    rv = mh_buf_append(&pub, y.data, y.len);
    if (rv < 0)
        goto err_after_bufs;

    rv = MH_ENOMEM;
    struct bn_list bns = {{NULL}, 0};
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld == NULL)
        goto err_after_bufs;
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub.data, pub.len) != 1)
        goto err_after_bld;
    rv = push_bn(bld, &bns, OSSL_PKEY_PARAM_PRIV_KEY, d.data, d.len, true);
    if (rv < 0)
        goto err_after_bld;
    rv = pkey_from_bld("EC", bld, out);
err_after_bld:
    OSSL_PARAM_BLD_free(bld);
    bn_list_free(&bns);
err_after_bufs:
    mh_secret_free(&d);
    mh_buf_free(&pub);
    mh_buf_free(&y);
    mh_buf_free(&x);
    return rv;
}

static int import_oct(const json_t *jwk, struct mh_key **out)
{
    struct mh_secret k = {0};
    MH_TRY(get_private(jwk, "k", &k));
    int rv = mh_key_from_oct(k.data, k.len, out);
    mh_secret_free(&k);
    return rv;
}

int mh_jwk_import_private_json(const json_t *jwk, struct mh_key **out)
{
    if (out == NULL)
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    MH_ENSURE(json_is_object(jwk), MH_EJSON);
    const char *kty;
    size_t kty_len;
    MH_TRY(get_string(jwk, "kty", &kty, &kty_len));
    /* Compare with the length: a "RSA\u0000x" must not pass as "RSA". */
#define KTY_IS(lit) (kty_len == sizeof(lit) - 1 && memcmp(kty, lit, kty_len) == 0)
    int rv;
    if (KTY_IS("RSA") || KTY_IS("RSA-HSM"))
        rv = import_rsa(jwk, out);
    else if (KTY_IS("EC") || KTY_IS("EC-HSM"))
        rv = import_ec(jwk, out);
    else if (KTY_IS("oct") || KTY_IS("oct-HSM"))
        rv = import_oct(jwk, out);
    else
        rv = MH_EUNSUPPORTED;
#undef KTY_IS
    if (rv < 0)
        ERR_clear_error();
    return rv;
}

int mh_jwk_import_private(const char *json, size_t len, struct mh_key **out)
{
    if (json == NULL || out == NULL)
        return MH_EINVAL;
    MH_ENSURE(len <= MH_JWK_MAX_LEN, MH_ETOOBIG);
    json_error_t jerr;
    /* json_loadb refuses trailing data unless JSON_DISABLE_EOF_CHECK is given. */
    json_t *jwk = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    mh_wipe(&jerr, sizeof jerr); /* its "text" may quote part of the input */
    if (jwk == NULL)
        return MH_EJSON;
    int rv = mh_jwk_import_private_json(jwk, out);
    wipe_private_members(jwk);
    json_decref(jwk);
    return rv;
}

/* ---------------------------------------------------------------- PEM / DER */

/* Stands in for OpenSSL's default when the caller gave no password: decoding
 * an encrypted key must fail, never read a terminal. */
static int no_passphrase(char *pass, size_t pass_size, size_t *pass_len, const OSSL_PARAM params[],
                         void *arg)
{
    (void)pass;
    (void)pass_size;
    (void)params;
    (void)arg;
    *pass_len = 0;
    return 0;
}

static bool only_whitespace(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return false;
    return true;
}

/* The one private-key decoder of the project: exactly one key of
 * |input_type| ("PEM" or "DER"), never a passphrase prompt. |has_pw| tells
 * whether |pw| (|pw_len| bytes, possibly empty) was given. No acceptance
 * rules beyond "it decodes": callers apply their own. */
static int decode_pkey(const char *input_type, const uint8_t *p, size_t len, bool has_pw,
                       const uint8_t *pw, size_t pw_len, EVP_PKEY **out)
{
    if (p == NULL || out == NULL)
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    MH_ENSURE(len <= MH_PEM_MAX_LEN, MH_ETOOBIG);
    MH_ENSURE(len > 0, MH_EPEM);

    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, input_type, NULL, NULL, EVP_PKEY_KEYPAIR, NULL, NULL);
    if (dctx == NULL)
        return MH_ENOMEM;
    int rv = MH_ECRYPTO;
    static const unsigned char empty[1] = {0};
    int ok = has_pw ? OSSL_DECODER_CTX_set_passphrase(dctx, pw_len > 0 ? pw : empty, pw_len)
                    : OSSL_DECODER_CTX_set_passphrase_cb(dctx, no_passphrase, NULL);
    if (ok != 1)
        goto err_after_dctx;
    const unsigned char *rest = p;
    size_t rest_len = len;
    rv = MH_EPEM;
    if (OSSL_DECODER_from_data(dctx, &rest, &rest_len) != 1 || pkey == NULL)
        goto err_after_dctx;
    /* One key per input: trailing bytes could be a second key the caller
     * believes was imported too. PEM tolerates line-ending whitespace. */
    if (strcmp(input_type, "PEM") == 0 ? !only_whitespace(rest, rest_len) : rest_len != 0)
        goto err_after_pkey;
    OSSL_DECODER_CTX_free(dctx);
    *out = pkey;
    return 0;

err_after_pkey:
    EVP_PKEY_free(pkey);
err_after_dctx:
    OSSL_DECODER_CTX_free(dctx);
    ERR_clear_error();
    return rv;
}

static int decode_private(const char *input_type, const uint8_t *p, size_t len,
                          const char *password, struct mh_key **out)
{
    if (out == NULL)
        return MH_EINVAL;
    EVP_PKEY *pkey = NULL;
    MH_TRY(decode_pkey(input_type, p, len, password != NULL, (const uint8_t *)password,
                       password != NULL ? strlen(password) : 0, &pkey));
    int rv = mh_key_from_pkey(pkey, out);
    if (rv < 0) {
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        return rv;
    }
    if (!mh_key_has_private(*out)) {
        mh_key_free(*out);
        *out = NULL;
        return MH_EPEM; /* a public key where a private one was asked for */
    }
    return 0;
}

int mh_pem_decode_private(const uint8_t *pem, size_t len, const struct mh_secret *password,
                          EVP_PKEY **out)
{
    return decode_pkey("PEM", pem, len, password != NULL, password != NULL ? password->data : NULL,
                       password != NULL ? password->len : 0, out);
}

int mh_pem_import_private(const char *pem, size_t len, const char *password, struct mh_key **out)
{
    return decode_private("PEM", (const uint8_t *)pem, len, password, out);
}

int mh_der_import_private(const uint8_t *der, size_t len, const char *password, struct mh_key **out)
{
    return decode_private("DER", der, len, password, out);
}

int mh_pem_export_public(const struct mh_key *key, struct mh_buf *out)
{
    if (key == NULL || out == NULL)
        return MH_EINVAL;
    const EVP_PKEY *pkey = mh_key_pkey(key);
    if (pkey == NULL)
        return MH_EINVAL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return MH_ENOMEM;
    int rv = MH_ECRYPTO;
    if (PEM_write_bio_PUBKEY(bio, pkey) != 1)
        goto err_after_bio;
    char *text;
    long n = BIO_get_mem_data(bio, &text);
    if (n <= 0)
        goto err_after_bio;
    rv = mh_buf_append(out, text, (size_t)n);
err_after_bio:
    BIO_free(bio);
    if (rv < 0)
        ERR_clear_error();
    return rv;
}
