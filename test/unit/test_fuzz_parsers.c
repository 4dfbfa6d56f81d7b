/* Robustness of every parser of untrusted input, driven by deterministic
 * mutations of valid inputs (test/unit/testutil.h tu_mutate). Runs in both
 * build configurations; under ASan+UBSan any overflow, leak or UB aborts it.
 *
 * Beyond "no crash", the integrity-protected formats must never turn a
 * mutation into a different secret: a mutated JWE, SD file, restore blob or
 * sealed blob either fails or yields exactly the original plaintext (a
 * mutation may be a no-op, e.g. a JSON member order change the JWE does not
 * cover). Iterations scale with MH_FUZZ_SCALE (default 1). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/b64.h"
#include "crypto/cert.h"
#include "crypto/jwe.h"
#include "crypto/jwk.h"
#include "crypto/key.h"
#include "crypto/seal.h"
#include "crypto/sd.h"
#include "mhsm/v1/keys.pb-c.h"

static int scale(int n)
{
    const char *s = getenv("MH_FUZZ_SCALE");
    int k = s != NULL ? atoi(s) : 1;
    return n * (k > 0 ? k : 1);
}

/* Runs |iters| mutations of |seed| through |fn|; returns how many parsed. */
typedef int (*parse_fn)(const uint8_t *p, size_t len, void *ctx);

static int fuzz(const char *what, const uint8_t *seed, size_t len, int iters, parse_fn fn,
                void *ctx, uint64_t rng_seed)
{
    struct tu_rng r = {rng_seed};
    struct mh_buf m = {0};
    int ok = 0;
    assert_int_equal(fn(seed, len, ctx), 0); /* the seed itself is valid */
    for (int i = 0; i < iters; i++) {
        tu_mutate(&r, seed, len, &m);
        int rv = fn(m.data, m.len, ctx);
        assert_true(rv <= 0);
        if (rv == 0)
            ok++;
    }
    mh_buf_free(&m);
    print_message("%-22s %6d mutations, %5d still valid\n", what, iters, ok);
    return ok;
}

/* ---------------------------------------------------------------- base64url */

static int parse_b64(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_buf out = {0};
    int rv = mh_b64url_decode((const char *)p, len, &out);
    if (rv == 0) {
        /* canonical: re-encoding gives the input back */
        struct mh_buf again = {0};
        assert_int_equal(mh_b64url_encode(out.data, out.len, &again), 0);
        assert_int_equal(again.len, len);
        if (len > 0)
            assert_memory_equal(again.data, p, len);
        mh_buf_free(&again);
    }
    mh_buf_free(&out);
    return rv;
}

static void test_b64(void **state)
{
    (void)state;
    static const char seed[] = "eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2Q0JDLUhTNTEyIn0";
    fuzz("base64url", (const uint8_t *)seed, strlen(seed), scale(20000), parse_b64, NULL, 1);
}

/* ---------------------------------------------------------------- JWK, PEM, DER */

static int parse_jwk(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_key *k = NULL;
    int rv = mh_jwk_import_private((const char *)p, len, &k);
    if (rv == 0) {
        assert_non_null(k);
        assert_true(mh_key_has_private(k));
    }
    mh_key_free(k);
    return rv;
}

static int parse_pem(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_key *k = NULL;
    int rv = mh_pem_import_private((const char *)p, len, NULL, &k);
    mh_key_free(k);
    return rv;
}

static int parse_der(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_key *k = NULL;
    int rv = mh_der_import_private(p, len, NULL, &k);
    mh_key_free(k);
    return rv;
}

static int parse_p8(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_key *k = NULL;
    int rv = mh_key_import_private(MH_KTY_EC, p, len, &k);
    mh_key_free(k);
    return rv;
}

static void add_b64_member(struct mh_buf *j, const char *name, const uint8_t *p, size_t n)
{
    assert_int_equal(mh_buf_append_str(j, ",\""), 0);
    assert_int_equal(mh_buf_append_str(j, name), 0);
    assert_int_equal(mh_buf_append_str(j, "\":\""), 0);
    assert_int_equal(mh_b64url_encode(p, n, j), 0);
    assert_int_equal(mh_buf_append_str(j, "\""), 0);
}

static void add_bn_member(struct mh_buf *j, EVP_PKEY *pk, const char *name, const char *param,
                          int pad)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, param, &bn), 1);
    uint8_t b[600];
    int n = pad > 0 ? BN_bn2binpad(bn, b, pad) : BN_bn2bin(bn, b);
    assert_true(n > 0);
    add_b64_member(j, name, b, (size_t)n);
    BN_clear_free(bn);
}

static void test_jwk(void **state)
{
    (void)state;
    /* oct */
    struct mh_buf j = {0};
    static const uint8_t k32[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(mh_buf_append_str(&j, "{\"kty\":\"oct-HSM\""), 0);
    add_b64_member(&j, "k", k32, sizeof k32);
    assert_int_equal(mh_buf_append_str(&j, "}"), 0);
    fuzz("jwk oct", j.data, j.len, scale(4000), parse_jwk, NULL, 2);
    mh_buf_free(&j);

    /* EC P-256, built from a generated key */
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(ec);
    assert_int_equal(mh_buf_append_str(&j, "{\"kty\":\"EC\",\"crv\":\"P-256\""), 0);
    add_bn_member(&j, ec, "x", OSSL_PKEY_PARAM_EC_PUB_X, 32);
    add_bn_member(&j, ec, "y", OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    add_bn_member(&j, ec, "d", OSSL_PKEY_PARAM_PRIV_KEY, 32);
    assert_int_equal(mh_buf_append_str(&j, ",\"key_ops\":[\"sign\"]}"), 0);
    fuzz("jwk ec", j.data, j.len, scale(3000), parse_jwk, NULL, 3);
    mh_buf_free(&j);

    /* PEM (PKCS#8) and DER of the same key */
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(bio, ec, NULL, NULL, 0, NULL, NULL), 1);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    struct mh_buf pb = {0};
    assert_int_equal(mh_buf_append(&pb, pem, (size_t)pem_len), 0);
    BIO_free(bio);
    fuzz("pem pkcs8", pb.data, pb.len, scale(3000), parse_pem, NULL, 4);
    mh_buf_free(&pb);

    unsigned char *der = NULL;
    int der_len = i2d_PrivateKey(ec, &der);
    assert_true(der_len > 0);
    fuzz("der private key", der, (size_t)der_len, scale(3000), parse_der, NULL, 5);
    OPENSSL_clear_free(der, (size_t)der_len);

    /* our own sealed-key serialization (PKCS#8 inside a seal) */
    struct mh_key *k = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P384, &k), 0);
    struct mh_secret p8 = {0};
    assert_int_equal(mh_key_export_private(k, &p8), 0);
    fuzz("pkcs8 import_private", p8.data, p8.len, scale(3000), parse_p8, NULL, 6);
    mh_secret_free(&p8);
    mh_key_free(k);
    EVP_PKEY_free(ec);
}

/* ---------------------------------------------------------------- certificates */

struct certs {
    struct mh_cert *c[4];
    EVP_PKEY *priv[4];
    struct mh_buf pem[4];
};
static struct certs C;

static void load_certs(void)
{
    if (C.c[0] != NULL)
        return;
    for (int i = 0; i < 4; i++) {
        char key[4096], crt[4096];
        char kn[16], cn[16];
        snprintf(kn, sizeof kn, "k%d.pem", i);
        snprintf(cn, sizeof cn, "c%d.pem", i);
        tu_path(key, sizeof key, kn);
        tu_path(crt, sizeof crt, cn);
        assert_int_equal(tu_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' "
                               "-subj /CN=custodian%d -days 30",
                               key, crt, i),
                         0);
        tu_read_file(crt, &C.pem[i]);
        assert_int_equal(mh_cert_from_pem(C.pem[i].data, C.pem[i].len, &C.c[i]), 0);
        struct mh_buf kb = {0};
        tu_read_file(key, &kb);
        assert_int_equal(mh_cert_private_key_from_pem(kb.data, kb.len, NULL, &C.priv[i]), 0);
        mh_buf_free(&kb);
    }
}

static int parse_cert(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_cert *c = NULL;
    int rv = mh_cert_from_pem(p, len, &c);
    if (rv == 0)
        assert_true(mh_cert_bits(c) >= 2048);
    mh_cert_free(c);
    return rv;
}

static int parse_cert_der(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    struct mh_cert *c = NULL;
    int rv = mh_cert_from_der(p, len, &c);
    mh_cert_free(c);
    return rv;
}

static void test_cert(void **state)
{
    (void)state;
    load_certs();
    fuzz("cert pem", C.pem[0].data, C.pem[0].len, scale(2000), parse_cert, NULL, 7);
    struct mh_slice der = mh_cert_der(C.c[0]);
    fuzz("cert der", der.p, der.len, scale(2000), parse_cert_der, NULL, 8);
}

/* ---------------------------------------------------------------- JWE */

struct jwe_ctx {
    const struct mh_secret *cek;
    EVP_PKEY *priv;
    const uint8_t *pt;
    size_t pt_len;
};

static int check_same(int rv, struct mh_secret *out, const struct jwe_ctx *j)
{
    if (rv == 0) {
        /* integrity: a mutation that still decrypts yields the original */
        assert_int_equal(out->len, j->pt_len);
        assert_memory_equal(out->data, j->pt, j->pt_len);
    }
    mh_secret_free(out);
    return rv;
}

static int parse_jwe_dir(const uint8_t *p, size_t len, void *ctx)
{
    struct jwe_ctx *j = ctx;
    struct mh_secret out = {0};
    return check_same(mh_jwe_decrypt_dir((const char *)p, len, j->cek, &out), &out, j);
}

static int parse_jwe_rsa(const uint8_t *p, size_t len, void *ctx)
{
    struct jwe_ctx *j = ctx;
    struct mh_secret out = {0};
    return check_same(mh_jwe_decrypt_rsa((const char *)p, len, j->priv, &out), &out, j);
}

static void test_jwe(void **state)
{
    (void)state;
    load_certs();
    static const uint8_t pt[] = "domain root secret: 32 bytes...";
    struct mh_secret cek = {0};
    assert_int_equal(mh_secret_alloc(&cek, 64), 0);
    memset(cek.data, 0x42, 64);
    struct jwe_ctx j = {&cek, C.priv[0], pt, sizeof pt};
    struct mh_buf jwe = {0};
    assert_int_equal(mh_jwe_encrypt_dir(&cek, "mhsm-domain", 11, pt, sizeof pt, &jwe), 0);
    fuzz("jwe dir", jwe.data, jwe.len, scale(5000), parse_jwe_dir, &j, 9);
    mh_buf_free(&jwe);
    assert_int_equal(mh_jwe_encrypt_rsa(mh_cert_pkey(C.c[0]), pt, sizeof pt, &jwe), 0);
    fuzz("jwe rsa-oaep-256", jwe.data, jwe.len, scale(400), parse_jwe_rsa, &j, 10);
    mh_buf_free(&jwe);
    mh_secret_free(&cek);
}

/* ---------------------------------------------------------------- SD file, restore blob */

struct sd_ctx {
    const struct mh_sd_wrapping_key *keys;
    size_t n_keys;
    const struct mh_secret *value;
};

static int check_items(int rv, struct mh_sd_items *items, const struct sd_ctx *s)
{
    if (rv == 0) {
        assert_int_equal(items->n, 1);
        assert_string_equal(items->v[0].tag, "mhsm-domain-v1");
        assert_int_equal(items->v[0].value.len, s->value->len);
        assert_memory_equal(items->v[0].value.data, s->value->data, s->value->len);
    }
    mh_sd_items_free(items);
    return rv;
}

static int parse_sd(const uint8_t *p, size_t len, void *ctx)
{
    struct sd_ctx *s = ctx;
    struct mh_sd_items items = {0};
    return check_items(mh_sd_recover((const char *)p, len, s->keys, s->n_keys, &items, NULL),
                       &items, s);
}

static int parse_blob(const uint8_t *p, size_t len, void *ctx)
{
    struct sd_ctx *s = ctx;
    struct mh_sd_items items = {0};
    return check_items(mh_sd_open_restore_blob((const char *)p, len, C.c[3], C.priv[3], &items),
                       &items, s);
}

static void test_sd(void **state)
{
    (void)state;
    load_certs();
    struct mh_secret root = {0};
    assert_int_equal(mh_secret_alloc(&root, 32), 0);
    memset(root.data, 0x17, 32);
    struct mh_sd_item item = {"mhsm-domain-v1", 14, &root};
    const struct mh_cert *certs[3] = {C.c[0], C.c[1], C.c[2]};
    struct mh_buf sd = {0};
    assert_int_equal(mh_sd_build(&item, 1, certs, 3, 2, &sd), 0);
    struct mh_sd_wrapping_key keys[2] = {{C.c[0], C.priv[0]}, {C.c[2], C.priv[2]}};
    struct sd_ctx s = {keys, 2, &root};
    fuzz("sd file", sd.data, sd.len, scale(300), parse_sd, &s, 11);

    struct mh_buf blob = {0};
    assert_int_equal(mh_sd_restore_blob((const char *)sd.data, sd.len, keys, 2, C.c[3], &blob), 0);
    fuzz("restore blob", blob.data, blob.len, scale(400), parse_blob, &s, 12);
    mh_buf_free(&blob);
    mh_buf_free(&sd);
    mh_secret_free(&root);
}

/* ---------------------------------------------------------------- seal */

struct seal_ctx {
    const struct mh_secret *wk;
    const uint8_t *pt;
    size_t pt_len;
};

static int parse_sealed(const uint8_t *p, size_t len, void *ctx)
{
    struct seal_ctx *c = ctx;
    struct mh_secret out = {0};
    int rv = mh_unseal(c->wk, (const uint8_t *)"aad", 3, p, len, &out);
    if (rv == 0) {
        assert_int_equal(out.len, c->pt_len);
        assert_memory_equal(out.data, c->pt, c->pt_len);
    }
    mh_secret_free(&out);
    return rv;
}

static void test_seal(void **state)
{
    (void)state;
    struct mh_secret wk = {0};
    assert_int_equal(mh_secret_alloc(&wk, 32), 0);
    memset(wk.data, 0x99, 32);
    static const uint8_t pt[] = "sealed key material";
    struct mh_buf sealed = {0};
    assert_int_equal(mh_seal(&wk, (const uint8_t *)"aad", 3, pt, sizeof pt, &sealed), 0);
    struct seal_ctx c = {&wk, pt, sizeof pt};
    int ok = fuzz("sealed blob", sealed.data, sealed.len, scale(5000), parse_sealed, &c, 13);
    /* GCM covers every byte; the only "valid" mutations are no-op mutations */
    (void)ok;
    mh_buf_free(&sealed);
    mh_secret_free(&wk);
}

/* ---------------------------------------------------------------- protobuf */

static int parse_proto(const uint8_t *p, size_t len, void *ctx)
{
    (void)ctx;
    Mhsm__V1__ImportKeyRequest *r = mhsm__v1__import_key_request__unpack(NULL, len, p);
    if (r == NULL)
        return MH_EINVAL;
    mhsm__v1__import_key_request__free_unpacked(r, NULL);
    return 0;
}

static void test_proto(void **state)
{
    (void)state;
    Mhsm__V1__ImportKeyRequest req = MHSM__V1__IMPORT_KEY_REQUEST__INIT;
    char name[] = "imported", jwk[] = "{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAA\"}";
    char t1[] = "env", v1[] = "prod";
    Mhsm__V1__ImportKeyRequest__TagsEntry te = MHSM__V1__IMPORT_KEY_REQUEST__TAGS_ENTRY__INIT;
    Mhsm__V1__ImportKeyRequest__TagsEntry *tags[] = {&te};
    te.key = t1;
    te.value = v1;
    req.name = name;
    req.material_case = MHSM__V1__IMPORT_KEY_REQUEST__MATERIAL_JWK;
    req.jwk = jwk;
    req.n_tags = 1;
    req.tags = tags;
    uint8_t buf[512];
    size_t n = mhsm__v1__import_key_request__pack(&req, buf);
    fuzz("protobuf ImportKey", buf, n, scale(20000), parse_proto, NULL, 14);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64),   cmocka_unit_test(test_jwk), cmocka_unit_test(test_cert),
        cmocka_unit_test(test_jwe),   cmocka_unit_test(test_sd),  cmocka_unit_test(test_seal),
        cmocka_unit_test(test_proto),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        mh_cert_free(C.c[i]);
        EVP_PKEY_free(C.priv[i]);
        mh_buf_free(&C.pem[i]);
    }
    return rv;
}
