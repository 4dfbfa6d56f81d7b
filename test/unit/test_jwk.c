#include "testutil.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "common/b64.h"
#include "crypto/jwk.h"
#include "crypto/key.h"

/* RFC 7517 Appendix A.2: example private keys (kid/use as printed there). */
static const char RFC_EC_X[] = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
static const char RFC_EC_Y[] = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
static const char RFC_EC_D[] = "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE";

static const char RFC_RSA_N[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
static const char RFC_RSA_E[] = "AQAB";
static const char RFC_RSA_D[] =
    "X4cTteJY_gn4FYPsXB8rdXix5vwsg1FLN5E3EaG6RJoVH-HLLKD9M7dx5oo7GURknchnrRweUkC7hT5fJLM0WbFAKNLW"
    "Y2vv7B6NqXSzUvxT0_YSfqijwp3RTzlBaCxWp4doFk5N2o8Gy_nHNKroADIkJ46pRUohsXywbReAdYaMwFs9tv8d_cPV"
    "Y3i07a3t8MN6TNwm0dSawm9v47UiCl3Sk5ZiG7xojPLu4sbg1U2jx4IBTNBznbJSzFHK66jT8bgkuqsk0GjskDJk19Z4"
    "qwjwbsnn4j2WBii3RL-Us2lGVkY8fkFzme1z0HbIkfz0Y6mqnOYtqc0X4jfcKoAC8Q";
static const char RFC_RSA_P[] =
    "83i-7IvMGXoMXCskv73TKr8637FiO7Z27zv8oj6pbWUQyLPQBQxtPVnwD20R-60eTDmD2ujnMt5PoqMrm8RfmNhVWDtj"
    "jMmCMjOpSXicFHj7XOuVIYQyqVWlWEh6dN36GVZYk93N8Bc9vY41xy8B9RzzOGVQzXvNEvn7O0nVbfs";
static const char RFC_RSA_Q[] =
    "3dfOR9cuYq-0S-mkFLzgItgMEfFzB2q3hWehMuG0oCuqnb3vobLyumqjVZQO1dIrdwgTnCdpYzBcOfW5r370AFXjiWft"
    "_NGEiovonizhKpo9VVS78TzFgxkIdrecRezsZ-1kYd_s1qDbxtkDEgfAITAG9LUnADun4vIcb6yelxk";
static const char RFC_RSA_DP[] =
    "G4sPXkc6Ya9y8oJW9_ILj4xuppu0lzi_H7VTkS8xj5SdX3coE0oimYwxIi2emTAue0UOa5dpgFGyBJ4c8tQ2VF402XRu"
    "gKDTP8akYhFo5tAA77Qe_NmtuYZc3C3m3I24G2GvR5sSDxUyAN2zq8Lfn9EUms6rY3Ob8YeiKkTiBj0";
static const char RFC_RSA_DQ[] =
    "s9lAH9fggBsoFR8Oac2R_E2gw282rT2kGOAhvIllETE1efrA6huUUvMfBcMpn8lqeW6vzznYY5SSQF7pMdC_agI3nG8I"
    "bp1BUb0JUiraRNqUfLhcQb_d9GF4Dh7e74WbRsobRonujTYN1xCaP6TO61jvWrX-L18txXw494Q_cgk";
static const char RFC_RSA_QI[] =
    "GyM_p6JrXySiz1toFgKbWV-JdI3jQ4ypu9rbMWx3rQJBfmt0FoYzgUIZEVFEcOqwemRN81zoDAaa-Bk0KWNGDjJHZDdD"
    "mFhW3AN7lI-puxk_mHZGJ11rxyR8O55XLSe3SPmRfKwZI6yU24ZxvQKFYItdldUKGzO6Ia6zTKhAVRU";

static json_t *rfc_rsa(void)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA",
                          "n", RFC_RSA_N, "e", RFC_RSA_E, "d", RFC_RSA_D, "p", RFC_RSA_P, "q",
                          RFC_RSA_Q, "dp", RFC_RSA_DP, "dq", RFC_RSA_DQ, "qi", RFC_RSA_QI, "alg",
                          "RS256", "kid", "2011-04-29");
    assert_non_null(j);
    return j;
}

static json_t *rfc_ec(void)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x",
                          RFC_EC_X, "y", RFC_EC_Y, "d", RFC_EC_D, "use", "enc", "kid", "1");
    assert_non_null(j);
    return j;
}

/* Serializes |j| (compact) and imports it; returns the result, frees the key. */
static int import_json(const json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(text);
    struct mh_key *k = NULL;
    int rv = mh_jwk_import_private(text, strlen(text), &k);
    if (rv == 0)
        assert_non_null(k);
    mh_key_free(k);
    free(text);
    return rv;
}

static int import_text(const char *text)
{
    struct mh_key *k = NULL;
    int rv = mh_jwk_import_private(text, strlen(text), &k);
    mh_key_free(k);
    return rv;
}

static void set_str(json_t *j, const char *name, const char *v)
{
    assert_int_equal(json_object_set_new(j, name, json_string(v)), 0);
}

static void set_b64(json_t *j, const char *name, const uint8_t *p, size_t len)
{
    struct mh_buf b = {0};
    assert_int_equal(mh_b64url_encode(p, len, &b), 0);
    assert_int_equal(json_object_set_new(j, name, json_stringn((const char *)b.data, b.len)), 0);
    mh_buf_free(&b);
}

static void get_b64(const json_t *j, const char *name, struct mh_buf *out)
{
    const json_t *v = json_object_get(j, name);
    assert_true(json_is_string(v));
    assert_int_equal(mh_b64url_decode(json_string_value(v), json_string_length(v), out), 0);
}

/* XORs |mask| into byte |idx| of the decoded member |name|. */
static void flip_member(json_t *j, const char *name, size_t idx, uint8_t mask)
{
    struct mh_buf b = {0};
    get_b64(j, name, &b);
    assert_true(idx < b.len);
    b.data[idx] ^= mask;
    set_b64(j, name, b.data, b.len);
    mh_buf_free(&b);
}

static void set_bn(json_t *j, const char *name, const BIGNUM *bn, size_t pad)
{
    size_t len = pad ? pad : (size_t)BN_num_bytes(bn);
    uint8_t buf[1024];
    assert_true(len <= sizeof buf);
    assert_int_equal(BN_bn2binpad(bn, buf, (int)len), (int)len);
    set_b64(j, name, buf, len);
}

static void set_pkey_bn(json_t *j, const char *name, const EVP_PKEY *pk, const char *param,
                        size_t pad)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, param, &bn), 1);
    set_bn(j, name, bn, pad);
    BN_clear_free(bn);
}

/* Test-only: a private JWK built straight from OpenSSL's parameters, so the
 * import path is checked against an independent serialization. */
static json_t *private_jwk_of_pkey(const EVP_PKEY *pk, enum mh_curve curve)
{
    json_t *j = json_object();
    assert_non_null(j);
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA) {
        set_str(j, "kty", "RSA");
        set_pkey_bn(j, "n", pk, OSSL_PKEY_PARAM_RSA_N, 0);
        set_pkey_bn(j, "e", pk, OSSL_PKEY_PARAM_RSA_E, 0);
        set_pkey_bn(j, "d", pk, OSSL_PKEY_PARAM_RSA_D, 0);
        set_pkey_bn(j, "p", pk, OSSL_PKEY_PARAM_RSA_FACTOR1, 0);
        set_pkey_bn(j, "q", pk, OSSL_PKEY_PARAM_RSA_FACTOR2, 0);
        set_pkey_bn(j, "dp", pk, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0);
        set_pkey_bn(j, "dq", pk, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0);
        set_pkey_bn(j, "qi", pk, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0);
    } else {
        size_t flen = mh_curve_field_len(curve);
        set_str(j, "kty", "EC");
        set_str(j, "crv", mh_curve_name(curve));
        set_pkey_bn(j, "x", pk, OSSL_PKEY_PARAM_EC_PUB_X, flen);
        set_pkey_bn(j, "y", pk, OSSL_PKEY_PARAM_EC_PUB_Y, flen);
        set_pkey_bn(j, "d", pk, OSSL_PKEY_PARAM_PRIV_KEY, flen);
    }
    return j;
}

static json_t *private_jwk_of_key(const struct mh_key *k)
{
    if (mh_key_kty(k) == MH_KTY_OCT) {
        json_t *j = json_object();
        set_str(j, "kty", "oct");
        set_b64(j, "k", mh_key_oct(k)->data, mh_key_oct(k)->len);
        return j;
    }
    return private_jwk_of_pkey(mh_key_pkey(k), mh_key_curve(k));
}

static struct mh_key *import_ok(const json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(text);
    struct mh_key *k = NULL;
    assert_int_equal(mh_jwk_import_private(text, strlen(text), &k), 0);
    free(text);
    assert_non_null(k);
    assert_true(mh_key_has_private(k));
    return k;
}

static void assert_member(const json_t *j, const char *name, const char *want)
{
    const json_t *v = json_object_get(j, name);
    assert_true(json_is_string(v));
    assert_string_equal(json_string_value(v), want);
}

/* RFC 7517 A.2 RSA: imports (so OpenSSL's full check accepted every CRT part),
 * and the public export gives back n and e exactly. */
static void test_rfc7517_rsa(void **state)
{
    (void)state;
    json_t *j = rfc_rsa();
    struct mh_key *k = import_ok(j);
    assert_int_equal(mh_key_kty(k), MH_KTY_RSA);
    assert_int_equal(mh_key_bits(k), 2048);
    json_t *pub = NULL;
    assert_int_equal(mh_jwk_export_public(k, &pub), 0);
    assert_int_equal(json_object_size(pub), 3);
    assert_member(pub, "kty", "RSA");
    assert_member(pub, "n", RFC_RSA_N);
    assert_member(pub, "e", RFC_RSA_E);
    json_decref(pub);

    struct mh_buf text = {0};
    assert_int_equal(mh_jwk_export_public_str(k, &text), 0);
    char want[1024];
    snprintf(want, sizeof want, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}", RFC_RSA_N);
    assert_string_equal((const char *)text.data, want);
    mh_buf_free(&text);

    /* Cross-check with the openssl command line: the modulus of our SPKI PEM
     * is the RFC's n. */
    struct mh_buf pem = {0}, mod = {0}, n = {0};
    assert_int_equal(mh_pem_export_public(k, &pem), 0);
    char path[4096], out[4096];
    tu_path(path, sizeof path, "rfc_rsa_pub.pem");
    tu_path(out, sizeof out, "rfc_rsa_mod.txt");
    tu_write_file(path, pem.data, pem.len);
    assert_int_equal(tu_sh("openssl rsa -pubin -in '%s' -noout -modulus > '%s'", path, out), 0);
    tu_read_file(out, &mod);
    assert_int_equal(mh_b64url_decode(RFC_RSA_N, strlen(RFC_RSA_N), &n), 0);
    assert_int_equal(n.len, 256);
    char hex[600] = "Modulus=";
    for (size_t i = 0; i < n.len; i++)
        snprintf(hex + 8 + 2 * i, 3, "%02X", n.data[i]);
    assert_true(mod.len >= strlen(hex));
    assert_memory_equal(mod.data, hex, strlen(hex));
    mh_buf_free(&pem);
    mh_buf_free(&mod);
    mh_buf_free(&n);

    /* "RSA-HSM" is accepted as a spelling of RSA. */
    set_str(j, "kty", "RSA-HSM");
    assert_int_equal(import_json(j), 0);
    mh_key_free(k);
    json_decref(j);
}

static void test_rfc7517_ec(void **state)
{
    (void)state;
    json_t *j = rfc_ec();
    struct mh_key *k = import_ok(j);
    assert_int_equal(mh_key_kty(k), MH_KTY_EC);
    assert_int_equal(mh_key_curve(k), MH_CURVE_P256);
    json_t *pub = NULL;
    assert_int_equal(mh_jwk_export_public(k, &pub), 0);
    assert_int_equal(json_object_size(pub), 4);
    assert_member(pub, "kty", "EC");
    assert_member(pub, "crv", "P-256");
    assert_member(pub, "x", RFC_EC_X);
    assert_member(pub, "y", RFC_EC_Y);
    assert_null(json_object_get(pub, "d"));
    json_decref(pub);

    /* openssl agrees on the public point: 04 || x || y. */
    struct mh_buf pem = {0}, txt = {0}, x = {0}, y = {0};
    assert_int_equal(mh_pem_export_public(k, &pem), 0);
    char path[4096], out[4096];
    tu_path(path, sizeof path, "rfc_ec_pub.pem");
    tu_path(out, sizeof out, "rfc_ec_pub.txt");
    tu_write_file(path, pem.data, pem.len);
    assert_int_equal(
        tu_sh("openssl pkey -pubin -in '%s' -noout -text | tr -d ' :\\n' > '%s'", path, out), 0);
    tu_read_file(out, &txt);
    assert_int_equal(mh_b64url_decode(RFC_EC_X, strlen(RFC_EC_X), &x), 0);
    assert_int_equal(mh_b64url_decode(RFC_EC_Y, strlen(RFC_EC_Y), &y), 0);
    char hex[300] = "pub04";
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 5 + 2 * i, 3, "%02x", x.data[i]);
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 69 + 2 * i, 3, "%02x", y.data[i]);
    assert_non_null(strstr((const char *)txt.data, hex));
    assert_non_null(strstr((const char *)txt.data, "prime256v1"));
    mh_buf_free(&pem);
    mh_buf_free(&txt);
    mh_buf_free(&x);
    mh_buf_free(&y);

    set_str(j, "kty", "EC-HSM");
    assert_int_equal(import_json(j), 0);
    mh_key_free(k);
    json_decref(j);
}

static void assert_same_key(const struct mh_key *a, const struct mh_key *b)
{
    assert_int_equal(mh_key_kty(a), mh_key_kty(b));
    assert_int_equal(mh_key_bits(a), mh_key_bits(b));
    assert_int_equal(mh_key_curve(a), mh_key_curve(b));
    struct mh_secret sa = {0}, sb = {0};
    assert_int_equal(mh_key_export_private(a, &sa), 0);
    assert_int_equal(mh_key_export_private(b, &sb), 0);
    assert_int_equal(sa.len, sb.len);
    assert_memory_equal(sa.data, sb.data, sa.len);
    mh_secret_free(&sa);
    mh_secret_free(&sb);
    if (mh_key_kty(a) != MH_KTY_OCT) {
        struct mh_buf da = {0}, db = {0};
        assert_int_equal(mh_key_public_der(a, &da), 0);
        assert_int_equal(mh_key_public_der(b, &db), 0);
        assert_int_equal(da.len, db.len);
        assert_memory_equal(da.data, db.data, da.len);
        mh_buf_free(&da);
        mh_buf_free(&db);
    }
}

/* Generated keys of every supported curve, RSA-2048 and every AES size:
 * a JWK built from OpenSSL's own parameters imports to the same key, and the
 * public export agrees with the generated key's parameters. */
static void test_roundtrips(void **state)
{
    (void)state;
    struct {
        enum mh_kty kty;
        unsigned bits;
        enum mh_curve curve;
    } cases[] = {
        {MH_KTY_RSA, 2048, MH_CURVE_NONE}, {MH_KTY_EC, 0, MH_CURVE_P256},
        {MH_KTY_EC, 0, MH_CURVE_P256K},    {MH_KTY_EC, 0, MH_CURVE_P384},
        {MH_KTY_EC, 0, MH_CURVE_P521},     {MH_KTY_OCT, 128, MH_CURVE_NONE},
        {MH_KTY_OCT, 192, MH_CURVE_NONE},  {MH_KTY_OCT, 256, MH_CURVE_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mh_key *k = NULL;
        assert_int_equal(mh_key_generate(cases[i].kty, cases[i].bits, cases[i].curve, &k), 0);
        json_t *j = private_jwk_of_key(k);
        struct mh_key *k2 = import_ok(j);
        assert_same_key(k, k2);
        if (cases[i].kty == MH_KTY_OCT) {
            json_t *pub = NULL;
            assert_int_equal(mh_jwk_export_public(k2, &pub), MH_EINVAL);
            struct mh_buf b = {0};
            assert_int_equal(mh_jwk_export_public_str(k2, &b), MH_EINVAL);
            assert_int_equal(b.len, 0);
            assert_int_equal(mh_pem_export_public(k2, &b), MH_EINVAL);
        } else {
            /* The public export is the private JWK minus the private members. */
            json_t *pub = NULL;
            assert_int_equal(mh_jwk_export_public(k2, &pub), 0);
            const char *name;
            json_t *v;
            json_object_foreach(pub, name, v) assert_true(json_equal(v, json_object_get(j, name)));
            assert_int_equal(json_object_size(pub),
                             json_object_size(j) - (cases[i].kty == MH_KTY_RSA ? 6 : 1));
            json_decref(pub);
        }
        json_decref(j);
        mh_key_free(k);
        mh_key_free(k2);
    }
}

/* P-521 coordinates are 66 bytes with a top byte of 0 or 1: about half the
 * keys have a coordinate that needs padding; export must pad it. */
static void test_ec_export_pads(void **state)
{
    (void)state;
    bool seen_short = false;
    for (int tries = 0; tries < 64 && !seen_short; tries++) {
        struct mh_key *k = NULL;
        assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P521, &k), 0);
        json_t *pub = NULL;
        assert_int_equal(mh_jwk_export_public(k, &pub), 0);
        struct mh_buf x = {0}, y = {0};
        get_b64(pub, "x", &x);
        get_b64(pub, "y", &y);
        assert_int_equal(x.len, 66);
        assert_int_equal(y.len, 66);
        seen_short = x.data[0] == 0 || y.data[0] == 0;
        mh_buf_free(&x);
        mh_buf_free(&y);
        json_decref(pub);
        mh_key_free(k);
    }
    assert_true(seen_short);
}

static void test_rsa_rejections(void **state)
{
    (void)state;
    /* RSA-1024, otherwise perfectly consistent. */
    EVP_PKEY *weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    assert_non_null(weak);
    json_t *j = private_jwk_of_pkey(weak, MH_CURVE_NONE);
    assert_int_equal(import_json(j), MH_EWEAKKEY);
    json_decref(j);
    EVP_PKEY_free(weak);

    /* Each CRT part, d, p or q altered: inconsistent. */
    static const char *const parts[] = {"dp", "dq", "qi", "d", "p", "q"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        j = rfc_rsa();
        flip_member(j, parts[i], 10, 0x01);
        assert_int_equal(import_json(j), MH_EBADKEY);
        json_decref(j);
    }
    /* n altered: no longer p*q. */
    j = rfc_rsa();
    flip_member(j, "n", 100, 0x10);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);
    /* Swapped CRT exponents. */
    j = rfc_rsa();
    set_str(j, "dp", RFC_RSA_DQ);
    set_str(j, "dq", RFC_RSA_DP);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);

    /* Every member is required, including the CRT parts. */
    static const char *const members[] = {"kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        j = rfc_rsa();
        assert_int_equal(json_object_del(j, members[i]), 0);
        assert_int_equal(import_json(j), MH_EJSON);
        /* ... and must be a string. */
        assert_int_equal(json_object_set_new(j, members[i], json_integer(65537)), 0);
        assert_int_equal(import_json(j), MH_EJSON);
        assert_int_equal(json_object_set_new(j, members[i], json_null()), 0);
        assert_int_equal(import_json(j), MH_EJSON);
        json_decref(j);
    }
    j = rfc_rsa();
    assert_int_equal(json_object_set_new(j, "kty", json_pack("[s]", "RSA")), 0);
    assert_int_equal(import_json(j), MH_EJSON);
    json_decref(j);

    /* Strict base64url: padding, '+', '/', whitespace. */
    j = rfc_rsa();
    set_str(j, "e", "AQAB=");
    assert_int_equal(import_json(j), MH_EBASE64);
    set_str(j, "e", "AQAB");
    char bad[sizeof RFC_RSA_N];
    memcpy(bad, RFC_RSA_N, sizeof bad);
    char *dash = strchr(bad, '-');
    assert_non_null(dash);
    *dash = '+';
    set_str(j, "n", bad);
    assert_int_equal(import_json(j), MH_EBASE64);
    set_str(j, "n", RFC_RSA_N);
    memcpy(bad, RFC_RSA_D, strlen(RFC_RSA_D) + 1);
    *strchr(bad, '_') = '/';
    set_str(j, "d", bad);
    assert_int_equal(import_json(j), MH_EBASE64);
    set_str(j, "d", " X4cT");
    assert_int_equal(import_json(j), MH_EBASE64);
    set_str(j, "d", "");
    assert_int_equal(import_json(j), MH_EBADKEY);
    set_str(j, "d", RFC_RSA_D);
    assert_int_equal(import_json(j), 0);

    /* Multi-prime keys are not supported. */
    assert_int_equal(json_object_set_new(j, "oth", json_array()), 0);
    assert_int_equal(import_json(j), MH_EUNSUPPORTED);
    json_decref(j);

    /* A modulus far beyond RSA-4096 is refused before any arithmetic. */
    j = rfc_rsa();
    uint8_t big[600];
    memset(big, 0xc3, sizeof big);
    set_b64(j, "n", big, sizeof big);
    assert_int_equal(import_json(j), MH_EUNSUPPORTED);
    json_decref(j);

    /* A private member longer than n. */
    j = rfc_rsa();
    set_b64(j, "d", big, 257);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);

    /* Unknown / misspelled kty. */
    static const char *const ktys[] = {"OKP", "rsa", "RSA ", "", "oct-hsm"};
    for (size_t i = 0; i < sizeof ktys / sizeof ktys[0]; i++) {
        j = rfc_rsa();
        set_str(j, "kty", ktys[i]);
        assert_int_equal(import_json(j), MH_EUNSUPPORTED);
        json_decref(j);
    }
    /* A NUL inside kty must not pass as "RSA": the text parser refuses
     * \u0000 outright, the json_t entry point compares with the length. */
    j = rfc_rsa();
    assert_int_equal(json_object_set_new(j, "kty", json_stringn("RSA\0x", 5)), 0);
    assert_int_equal(import_json(j), MH_EJSON);
    struct mh_key *k = NULL;
    assert_int_equal(mh_jwk_import_private_json(j, &k), MH_EUNSUPPORTED);
    assert_null(k);
    json_decref(j);
}

static void test_ec_rejections(void **state)
{
    (void)state;
    /* Point not on the curve: one bit of y. */
    json_t *j = rfc_ec();
    flip_member(j, "y", 31, 0x01);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);
    j = rfc_ec();
    flip_member(j, "x", 0, 0x80);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);

    /* A valid point, but d belongs to another key. */
    struct mh_key *other = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P256, &other), 0);
    json_t *oj = private_jwk_of_key(other);
    j = rfc_ec();
    assert_int_equal(json_object_set(j, "d", json_object_get(oj, "d")), 0);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);
    json_decref(oj);
    mh_key_free(other);

    /* d = 0 and d = all ones (above the group order). */
    uint8_t buf[67];
    j = rfc_ec();
    memset(buf, 0, sizeof buf);
    set_b64(j, "d", buf, 32);
    assert_int_equal(import_json(j), MH_EBADKEY);
    memset(buf, 0xff, sizeof buf);
    set_b64(j, "d", buf, 32);
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);

    /* Wrong lengths: x, y or d one byte short or long (a leading zero added). */
    static const char *const coords[] = {"x", "y", "d"};
    for (size_t i = 0; i < 3; i++) {
        j = rfc_ec();
        struct mh_buf b = {0};
        get_b64(j, coords[i], &b);
        set_b64(j, coords[i], b.data + 1, b.len - 1);
        assert_int_equal(import_json(j), MH_EBADKEY);
        memset(buf, 0, sizeof buf);
        memcpy(buf + 1, b.data, b.len);
        set_b64(j, coords[i], buf, b.len + 1);
        assert_int_equal(import_json(j), MH_EBADKEY);
        mh_buf_free(&b);
        json_decref(j);
    }
    /* A P-256 key labelled as P-384 has the wrong lengths. */
    j = rfc_ec();
    set_str(j, "crv", "P-384");
    assert_int_equal(import_json(j), MH_EBADKEY);
    json_decref(j);

    /* Missing members (a public-only JWK is not a private key), wrong types. */
    static const char *const members[] = {"crv", "x", "y", "d"};
    for (size_t i = 0; i < 4; i++) {
        j = rfc_ec();
        assert_int_equal(json_object_del(j, members[i]), 0);
        assert_int_equal(import_json(j), MH_EJSON);
        assert_int_equal(json_object_set_new(j, members[i], json_true()), 0);
        assert_int_equal(import_json(j), MH_EJSON);
        assert_int_equal(json_object_set_new(j, members[i], json_object()), 0);
        assert_int_equal(import_json(j), MH_EJSON);
        json_decref(j);
    }

    /* Unknown curves. */
    static const char *const crvs[] = {"P-192", "P-224", "p-256", "Ed25519", "", "P-256 "};
    for (size_t i = 0; i < sizeof crvs / sizeof crvs[0]; i++) {
        j = rfc_ec();
        set_str(j, "crv", crvs[i]);
        assert_int_equal(import_json(j), MH_EUNSUPPORTED);
        json_decref(j);
    }
    j = rfc_ec();
    assert_int_equal(json_object_set_new(j, "crv", json_stringn("P-256\0", 6)), 0);
    assert_int_equal(import_json(j), MH_EJSON);
    struct mh_key *k = NULL;
    assert_int_equal(mh_jwk_import_private_json(j, &k), MH_EUNSUPPORTED);
    assert_null(k);
    json_decref(j);
}

static void test_oct(void **state)
{
    (void)state;
    uint8_t k[33];
    for (size_t i = 0; i < sizeof k; i++)
        k[i] = (uint8_t)(i * 7 + 1);
    for (size_t len = 0; len <= 33; len++) {
        json_t *j = json_object();
        set_str(j, "kty", (len & 1) ? "oct-HSM" : "oct");
        set_b64(j, "k", k, len);
        int want = (len == 16 || len == 24 || len == 32) ? 0
                   : len == 0                            ? MH_EBADKEY
                                                         : MH_EUNSUPPORTED;
        assert_int_equal(import_json(j), want);
        if (want == 0) {
            struct mh_key *key = import_ok(j);
            assert_int_equal(mh_key_kty(key), MH_KTY_OCT);
            assert_int_equal(mh_key_bits(key), len * 8);
            assert_memory_equal(mh_key_oct(key)->data, k, len);
            mh_key_free(key);
        }
        json_decref(j);
    }
    assert_int_equal(import_text("{\"kty\":\"oct\"}"), MH_EJSON);
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":16}"), MH_EJSON);
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":[\"AAAAAAAAAAAAAAAAAAAAAA\"]}"), MH_EJSON);
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAA==\"}"),
                     MH_EBASE64);
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAA\"}"), 0);
    /* The last character carries unused bits that must be zero. */
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAB\"}"), MH_EBASE64);
}

/* Parser-level adversarial inputs. */
static void test_malformed_text(void **state)
{
    (void)state;
    json_t *j = rfc_rsa();
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t len = strlen(text);
    struct mh_key *k = NULL;

    /* Every strict prefix is truncated JSON. */
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(mh_jwk_import_private(text, n, &k), MH_EJSON);
        assert_null(k);
    }
    assert_int_equal(mh_jwk_import_private(text, len, &k), 0);
    mh_key_free(k);
    k = NULL;

    /* Trailing data: a second object, garbage, a NUL. */
    struct mh_buf b = {0};
    assert_int_equal(mh_buf_append(&b, text, len), 0);
    assert_int_equal(mh_buf_append_str(&b, "{}"), 0);
    assert_int_equal(mh_jwk_import_private((const char *)b.data, b.len, &k), MH_EJSON);
    mh_buf_truncate(&b, len);
    assert_int_equal(mh_buf_append(&b, "\0", 1), 0);
    assert_int_equal(mh_jwk_import_private((const char *)b.data, b.len, &k), MH_EJSON);
    mh_buf_truncate(&b, len);
    assert_int_equal(mh_buf_append_str(&b, " x"), 0);
    assert_int_equal(mh_jwk_import_private((const char *)b.data, b.len, &k), MH_EJSON);

    /* Size bound: padded with whitespace to exactly the limit it is accepted,
     * one byte more is refused before parsing. */
    mh_buf_truncate(&b, len);
    while (b.len < MH_JWK_MAX_LEN)
        assert_int_equal(mh_buf_append_u8(&b, ' '), 0);
    assert_int_equal(mh_jwk_import_private((const char *)b.data, b.len, &k), 0);
    mh_key_free(k);
    k = NULL;
    assert_int_equal(mh_buf_append_u8(&b, ' '), 0);
    assert_int_equal(mh_jwk_import_private((const char *)b.data, b.len, &k), MH_ETOOBIG);
    mh_buf_free(&b);
    free(text);

    /* Not an object / not JSON at all. */
    static const char *const notobj[] = {
        "",
        " ",
        "null",
        "[]",
        "[{\"kty\":\"oct\"}]",
        "\"oct\"",
        "42",
        "{",
        "{\"kty\"",
        "{'kty':'oct'}",
        "{\"kty\":\"oct\",}",
        "\xff\xfe{}",
        "{\"kty\":\"o\xc3\x28\"}",
    };
    for (size_t i = 0; i < sizeof notobj / sizeof notobj[0]; i++)
        assert_int_equal(import_text(notobj[i]), MH_EJSON);
    uint8_t garbage[512];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)((i * 131u + 17u) ^ (i >> 3));
    assert_int_equal(mh_jwk_import_private((const char *)garbage, sizeof garbage, &k), MH_EJSON);
    assert_int_equal(mh_jwk_import_private("{\"kty\":\"oct\"}\0", 14, &k), MH_EJSON);

    /* Duplicate members. */
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAA\","
                                 "\"k\":\"AAAAAAAAAAAAAAAAAAAAAA\"}"),
                     MH_EJSON);
    assert_int_equal(
        import_text("{\"kty\":\"oct\",\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAA\"}"),
        MH_EJSON);

    /* Extra, unrelated members are ignored. */
    assert_int_equal(import_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAA\",\"kid\":\"x\","
                                 "\"key_ops\":[\"encrypt\"],\"n\":5}"),
                     0);

    /* The json_t entry point refuses non-objects and NULL. */
    assert_int_equal(mh_jwk_import_private_json(NULL, &k), MH_EJSON);
    json_t *arr = json_array();
    assert_int_equal(mh_jwk_import_private_json(arr, &k), MH_EJSON);
    json_decref(arr);
    assert_null(k);
}

/* Files written by the openssl command line. */
struct pem_files {
    char rsa[4096], rsa_enc[4096], rsa_trad[4096], rsa_trad_enc[4096], rsa_der[4096],
        rsa_enc_der[4096], rsa_trad_der[4096], rsa_pub_der[4096], rsa_pub_pem[4096], ec[4096],
        ec_trad[4096], ec_pub_der[4096], cert[4096], weak[4096];
};

static struct pem_files F;

static int make_pem_files(void **state)
{
    (void)state;
    tu_path(F.rsa, sizeof F.rsa, "rsa.pem");
    tu_path(F.rsa_enc, sizeof F.rsa_enc, "rsa_enc.pem");
    tu_path(F.rsa_trad, sizeof F.rsa_trad, "rsa_trad.pem");
    tu_path(F.rsa_trad_enc, sizeof F.rsa_trad_enc, "rsa_trad_enc.pem");
    tu_path(F.rsa_der, sizeof F.rsa_der, "rsa.der");
    tu_path(F.rsa_enc_der, sizeof F.rsa_enc_der, "rsa_enc.der");
    tu_path(F.rsa_pub_der, sizeof F.rsa_pub_der, "rsa_pub.der");
    tu_path(F.rsa_trad_der, sizeof F.rsa_trad_der, "rsa_trad.der");
    tu_path(F.rsa_pub_pem, sizeof F.rsa_pub_pem, "rsa_pub.pem");
    tu_path(F.ec, sizeof F.ec, "ec.pem");
    tu_path(F.ec_trad, sizeof F.ec_trad, "ec_trad.pem");
    tu_path(F.ec_pub_der, sizeof F.ec_pub_der, "ec_pub.der");
    tu_path(F.cert, sizeof F.cert, "cert.pem");
    tu_path(F.weak, sizeof F.weak, "weak.pem");
    int rc =
        tu_sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s' && "
              "openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:s3cret -in '%s' -out '%s' && "
              "openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:s3cret -in '%s' "
              "-outform DER -out '%s' && "
              "openssl rsa -in '%s' -traditional -out '%s' && "
              "openssl rsa -in '%s' -traditional -aes256 -passout pass:s3cret -out '%s' && "
              "openssl pkey -in '%s' -outform DER -out '%s' && "
              "openssl pkey -in '%s' -pubout -outform DER -out '%s' && "
              "openssl pkey -in '%s' -pubout -out '%s' && "
              "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out '%s' && "
              "openssl ec -in '%s' -out '%s' && "
              "openssl pkey -in '%s' -pubout -outform DER -out '%s' && "
              "openssl req -x509 -new -key '%s' -subj /CN=t -days 1 -out '%s' && "
              "openssl rsa -in '%s' -traditional -outform DER -out '%s' && "
              "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out '%s'",
              F.rsa, F.rsa, F.rsa_enc, F.rsa, F.rsa_enc_der, F.rsa, F.rsa_trad, F.rsa,
              F.rsa_trad_enc, F.rsa, F.rsa_der, F.rsa, F.rsa_pub_der, F.rsa, F.rsa_pub_pem, F.ec,
              F.ec, F.ec_trad, F.ec, F.ec_pub_der, F.ec, F.cert, F.rsa, F.rsa_trad_der, F.weak);
    return rc == 0 ? 0 : -1;
}

static int pem_file(const char *path, const char *password, struct mh_key **out)
{
    struct mh_buf b = {0};
    tu_read_file(path, &b);
    *out = NULL;
    int rv = mh_pem_import_private((const char *)b.data, b.len, password, out);
    mh_buf_free(&b);
    return rv;
}

static void assert_pub_der_is(const struct mh_key *k, const char *der_path)
{
    struct mh_buf want = {0}, got = {0};
    tu_read_file(der_path, &want);
    assert_int_equal(mh_key_public_der(k, &got), 0);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, got.len);
    mh_buf_free(&want);
    mh_buf_free(&got);
}

static void assert_contains(const char *path, const char *needle)
{
    struct mh_buf b = {0};
    tu_read_file(path, &b);
    assert_non_null(strstr((const char *)b.data, needle));
    mh_buf_free(&b);
}

static void test_pem_import(void **state)
{
    (void)state;
    /* The inputs are the forms the test means them to be. */
    assert_contains(F.rsa, "-----BEGIN PRIVATE KEY-----");
    assert_contains(F.rsa_enc, "-----BEGIN ENCRYPTED PRIVATE KEY-----");
    assert_contains(F.rsa_trad, "-----BEGIN RSA PRIVATE KEY-----");
    assert_contains(F.rsa_trad_enc, "Proc-Type: 4,ENCRYPTED");
    assert_contains(F.ec_trad, "-----BEGIN EC PRIVATE KEY-----");

    struct mh_key *k;
    const char *rsa_ok[][2] = {
        {F.rsa, NULL},      {F.rsa, "ignored"},         {F.rsa_enc, "s3cret"},
        {F.rsa_trad, NULL}, {F.rsa_trad_enc, "s3cret"},
    };
    for (size_t i = 0; i < sizeof rsa_ok / sizeof rsa_ok[0]; i++) {
        assert_int_equal(pem_file(rsa_ok[i][0], rsa_ok[i][1], &k), 0);
        assert_int_equal(mh_key_kty(k), MH_KTY_RSA);
        assert_int_equal(mh_key_bits(k), 2048);
        assert_true(mh_key_has_private(k));
        assert_pub_der_is(k, F.rsa_pub_der);
        mh_key_free(k);
    }
    const char *ec_ok[] = {F.ec, F.ec_trad};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(pem_file(ec_ok[i], NULL, &k), 0);
        assert_int_equal(mh_key_curve(k), MH_CURVE_P384);
        assert_pub_der_is(k, F.ec_pub_der);
        mh_key_free(k);
    }

    /* Passwords: wrong, empty, missing (never prompts: stdin is /dev/null and
     * the test would hang or fail otherwise). */
    const char *enc[] = {F.rsa_enc, F.rsa_trad_enc};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(pem_file(enc[i], "wrong", &k), MH_EPEM);
        assert_null(k);
        assert_int_equal(pem_file(enc[i], "", &k), MH_EPEM);
        assert_int_equal(pem_file(enc[i], NULL, &k), MH_EPEM);
        assert_null(k);
    }

    /* Not private keys. */
    assert_int_equal(pem_file(F.cert, NULL, &k), MH_EPEM);
    assert_int_equal(pem_file(F.rsa_pub_pem, NULL, &k), MH_EPEM);
    assert_null(k);
    /* Weak. */
    assert_int_equal(pem_file(F.weak, NULL, &k), MH_EWEAKKEY);

    /* The exported SPKI PEM is byte-identical to openssl's. */
    assert_int_equal(pem_file(F.rsa, NULL, &k), 0);
    struct mh_buf mine = {0}, theirs = {0};
    assert_int_equal(mh_pem_export_public(k, &mine), 0);
    tu_read_file(F.rsa_pub_pem, &theirs);
    assert_int_equal(mine.len, theirs.len);
    assert_memory_equal(mine.data, theirs.data, mine.len);
    mh_buf_free(&mine);
    mh_buf_free(&theirs);
    mh_key_free(k);
}

static void test_pem_malformed(void **state)
{
    (void)state;
    struct mh_buf pem = {0}, b = {0};
    tu_read_file(F.rsa, &pem);
    struct mh_key *k = NULL;

    /* Truncations: mid-body, without the END line, the header only, empty. */
    size_t cuts[] = {0, 10, 27, 28, 100, pem.len / 2, pem.len - 40, pem.len - 26, pem.len - 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(mh_pem_import_private((const char *)pem.data, cuts[i], NULL, &k), MH_EPEM);
        assert_null(k);
    }
    /* One changed character in the base64 body: text offset 200 lies inside
     * the modulus of an RSA-2048 PKCS#8, so the DER still parses and the
     * consistency check is what refuses it. */
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    b.data[200] = b.data[200] == 'A' ? 'B' : 'A';
    assert_int_equal(mh_pem_import_private((const char *)b.data, b.len, NULL, &k), MH_EBADKEY);
    assert_null(k);
    /* A changed character in the DER structure's header is a parse error. */
    mh_buf_truncate(&b, 0);
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    b.data[28] = '_';
    assert_int_equal(mh_pem_import_private((const char *)b.data, b.len, NULL, &k), MH_EPEM);
    mh_buf_free(&b);

    /* Leading explanatory text and trailing whitespace are fine... */
    assert_int_equal(mh_buf_append_str(&b, "Bag Attributes: none\n"), 0);
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    assert_int_equal(mh_buf_append_str(&b, "\n\r\n  \t\n"), 0);
    assert_int_equal(mh_pem_import_private((const char *)b.data, b.len, NULL, &k), 0);
    mh_key_free(k);
    k = NULL;
    /* ...a second key or trailing text is not. */
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    assert_int_equal(mh_pem_import_private((const char *)b.data, b.len, NULL, &k), MH_EPEM);
    mh_buf_free(&b);
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    assert_int_equal(mh_buf_append_str(&b, "junk"), 0);
    assert_int_equal(mh_pem_import_private((const char *)b.data, b.len, NULL, &k), MH_EPEM);
    mh_buf_free(&b);

    /* Garbage, and a JWK where PEM was expected. */
    uint8_t garbage[700];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)(i * 73u + 5u);
    assert_int_equal(mh_pem_import_private((const char *)garbage, sizeof garbage, NULL, &k),
                     MH_EPEM);
    assert_int_equal(mh_pem_import_private("{\"kty\":\"oct\"}", 13, NULL, &k), MH_EPEM);
    assert_int_equal(mh_der_import_private(garbage, sizeof garbage, NULL, &k), MH_EPEM);

    /* Size bound. */
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    while (b.len <= MH_PEM_MAX_LEN)
        assert_int_equal(mh_buf_append_u8(&b, '\n'), 0);
    assert_int_equal(mh_pem_import_private((const char *)b.data, b.len, NULL, &k), MH_ETOOBIG);
    mh_buf_free(&b);
    assert_null(k);
    mh_buf_free(&pem);
}

static void test_der_import(void **state)
{
    (void)state;
    struct mh_buf der = {0};
    struct mh_key *k = NULL;
    tu_read_file(F.rsa_der, &der);
    assert_int_equal(mh_der_import_private(der.data, der.len, NULL, &k), 0);
    assert_pub_der_is(k, F.rsa_pub_der);
    mh_key_free(k);
    k = NULL;
    for (size_t n = 0; n < der.len; n += 97)
        assert_int_equal(mh_der_import_private(der.data, n, NULL, &k), MH_EPEM);
    assert_int_equal(mh_der_import_private(der.data, der.len - 1, NULL, &k), MH_EPEM);
    assert_int_equal(mh_buf_append_u8(&der, 0), 0);
    assert_int_equal(mh_der_import_private(der.data, der.len, NULL, &k), MH_EPEM);
    assert_null(k);
    mh_buf_free(&der);

    tu_read_file(F.rsa_enc_der, &der);
    assert_int_equal(mh_der_import_private(der.data, der.len, "s3cret", &k), 0);
    assert_pub_der_is(k, F.rsa_pub_der);
    mh_key_free(k);
    k = NULL;
    assert_int_equal(mh_der_import_private(der.data, der.len, NULL, &k), MH_EPEM);
    assert_int_equal(mh_der_import_private(der.data, der.len, "nope", &k), MH_EPEM);
    assert_null(k);
    mh_buf_free(&der);

    /* Traditional RSAPrivateKey DER. */
    tu_read_file(F.rsa_trad_der, &der);
    assert_int_equal(mh_der_import_private(der.data, der.len, NULL, &k), 0);
    assert_pub_der_is(k, F.rsa_pub_der);
    mh_key_free(k);
    k = NULL;
    mh_buf_free(&der);

    /* A public key is not a private key. */
    tu_read_file(F.rsa_pub_der, &der);
    assert_int_equal(mh_der_import_private(der.data, der.len, NULL, &k), MH_EPEM);
    mh_buf_free(&der);
}

int main(void)
{
    /* Nothing may ever prompt for a password. */
    if (freopen("/dev/null", "r", stdin) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7517_rsa),
        cmocka_unit_test(test_rfc7517_ec),
        cmocka_unit_test(test_roundtrips),
        cmocka_unit_test(test_ec_export_pads),
        cmocka_unit_test(test_rsa_rejections),
        cmocka_unit_test(test_ec_rejections),
        cmocka_unit_test(test_oct),
        cmocka_unit_test(test_malformed_text),
        cmocka_unit_test(test_pem_import),
        cmocka_unit_test(test_pem_malformed),
        cmocka_unit_test(test_der_import),
    };
    return cmocka_run_group_tests(tests, make_pem_files, NULL);
}
