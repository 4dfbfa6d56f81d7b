#include "testutil.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "crypto/alg.h"
#include "crypto/key.h"

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(mh_kty_from_name("RSA"), MH_KTY_RSA);
    assert_int_equal(mh_kty_from_name("EC"), MH_KTY_EC);
    assert_int_equal(mh_kty_from_name("oct"), MH_KTY_OCT);
    assert_int_equal(mh_kty_from_name("rsa"), MH_KTY_NONE);
    assert_int_equal(mh_kty_from_name(NULL), MH_KTY_NONE);
    static const enum mh_curve curves[] = {MH_CURVE_P256, MH_CURVE_P256K, MH_CURVE_P384,
                                           MH_CURVE_P521};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(mh_curve_from_name(mh_curve_name(curves[i])), curves[i]);
    assert_int_equal(mh_curve_from_name("secp256k1"), MH_CURVE_P256K);
    assert_int_equal(mh_curve_from_name("P-224"), MH_CURVE_NONE);
    assert_int_equal(mh_curve_field_len(MH_CURVE_P521), 66);
    assert_int_equal(mh_alg_from_name("RSA-OAEP-256", 12), MH_ALG_RSA_OAEP_256);
    assert_int_equal(mh_alg_from_name("RSA-OAEP-25", 11), MH_ALG_NONE);
    assert_int_equal(mh_alg_from_name("rs256", 5), MH_ALG_NONE);
    for (int a = MH_ALG_NONE + 1; a < MH_ALG_COUNT_; a++) {
        const char *n = mh_alg_name((enum mh_alg)a);
        assert_true(n[0] != 0);
        assert_int_equal(mh_alg_from_name(n, strlen(n)), a);
        assert_int_not_equal(mh_alg_class((enum mh_alg)a), MH_ALG_CLASS_NONE);
    }
    assert_int_equal(mh_alg_init(), 0);
    for (int m = 0; m < MH_MD_COUNT_; m++)
        assert_non_null(mh_alg_md((enum mh_md)m));
    for (int c = 0; c < MH_CIPHER_COUNT_; c++)
        assert_non_null(mh_alg_cipher((enum mh_cipher_id)c));
}

static void roundtrip(struct mh_key *k)
{
    struct mh_secret der = {0};
    assert_int_equal(mh_key_export_private(k, &der), 0);
    struct mh_key *k2 = NULL;
    assert_int_equal(mh_key_import_private(mh_key_kty(k), der.data, der.len, &k2), 0);
    assert_int_equal(mh_key_kty(k2), mh_key_kty(k));
    assert_int_equal(mh_key_bits(k2), mh_key_bits(k));
    assert_int_equal(mh_key_curve(k2), mh_key_curve(k));
    assert_true(mh_key_has_private(k2));
    assert_true(mh_key_id(k2) != mh_key_id(k));
    if (mh_key_kty(k) == MH_KTY_OCT) {
        assert_int_equal(mh_key_oct(k2)->len, mh_key_oct(k)->len);
        assert_memory_equal(mh_key_oct(k2)->data, mh_key_oct(k)->data, mh_key_oct(k)->len);
        assert_null(mh_key_pkey(k2));
    } else {
        assert_int_equal(EVP_PKEY_eq(mh_key_pkey(k), mh_key_pkey(k2)), 1);
        struct mh_buf a = {0}, b = {0};
        assert_int_equal(mh_key_public_der(k, &a), 0);
        assert_int_equal(mh_key_public_der(k2, &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
        mh_buf_free(&a);
        mh_buf_free(&b);
        /* a PKCS#8 blob of one type refused as the other */
        struct mh_key *k3 = NULL;
        enum mh_kty other = mh_key_kty(k) == MH_KTY_RSA ? MH_KTY_EC : MH_KTY_RSA;
        assert_int_equal(mh_key_import_private(other, der.data, der.len, &k3), MH_EBADKEY);
        /* truncated at several lengths and with trailing garbage */
        for (size_t cut = 0; cut < der.len; cut += 1 + der.len / 17)
            assert_int_equal(mh_key_import_private(mh_key_kty(k), der.data, cut, &k3), MH_EBADKEY);
        struct mh_secret longer = {0};
        assert_int_equal(mh_secret_alloc(&longer, der.len + 1), 0);
        memcpy(longer.data, der.data, der.len);
        assert_int_equal(mh_key_import_private(mh_key_kty(k), longer.data, longer.len, &k3),
                         MH_EBADKEY);
        mh_secret_free(&longer);
    }
    mh_secret_free(&der);
    mh_key_free(k2);
}

static void test_generate_each_kind(void **state)
{
    (void)state;
    struct mh_key *k = NULL;
    static const unsigned rsa_bits[] = {2048, 3072};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(mh_key_generate(MH_KTY_RSA, rsa_bits[i], MH_CURVE_NONE, &k), 0);
        assert_int_equal(mh_key_kty(k), MH_KTY_RSA);
        assert_int_equal(mh_key_bits(k), rsa_bits[i]);
        assert_true(mh_key_has_private(k));
        BIGNUM *e = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(mh_key_pkey(k), OSSL_PKEY_PARAM_RSA_E, &e), 1);
        assert_true(BN_is_word(e, 65537));
        BN_free(e);
        roundtrip(k);
        mh_key_free(k);
    }
    static const struct {
        enum mh_curve c;
        unsigned bits;
    } ec[] = {
        {MH_CURVE_P256, 256}, {MH_CURVE_P256K, 256}, {MH_CURVE_P384, 384}, {MH_CURVE_P521, 521}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(mh_key_generate(MH_KTY_EC, 0, ec[i].c, &k), 0);
        assert_int_equal(mh_key_curve(k), ec[i].c);
        assert_int_equal(mh_key_bits(k), ec[i].bits);
        roundtrip(k);
        mh_key_free(k);
    }
    static const unsigned aes[] = {128, 192, 256};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(mh_key_generate(MH_KTY_OCT, aes[i], MH_CURVE_NONE, &k), 0);
        assert_int_equal(mh_key_bits(k), aes[i]);
        assert_int_equal(mh_key_oct(k)->len, aes[i] / 8);
        roundtrip(k);
        struct mh_buf der = {0};
        assert_int_equal(mh_key_public_der(k, &der), MH_EINVAL);
        mh_key_free(k);
    }
}

static void test_rsa4096(void **state)
{
    (void)state;
    struct mh_key *k = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_RSA, 4096, MH_CURVE_NONE, &k), 0);
    assert_int_equal(mh_key_bits(k), 4096);
    roundtrip(k);
    mh_key_free(k);
}

static void test_unsupported_parameters(void **state)
{
    (void)state;
    struct mh_key *k = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_RSA, 1024, MH_CURVE_NONE, &k), MH_EUNSUPPORTED);
    assert_int_equal(mh_key_generate(MH_KTY_RSA, 2049, MH_CURVE_NONE, &k), MH_EUNSUPPORTED);
    assert_int_equal(mh_key_generate(MH_KTY_EC, 256, MH_CURVE_NONE, &k), MH_EUNSUPPORTED);
    assert_int_equal(mh_key_generate(MH_KTY_OCT, 512, MH_CURVE_NONE, &k), MH_EUNSUPPORTED);
    assert_int_equal(mh_key_generate(MH_KTY_NONE, 256, MH_CURVE_NONE, &k), MH_EUNSUPPORTED);
    static const uint8_t fifteen[15] = {0};
    assert_int_equal(mh_key_from_oct(fifteen, sizeof fifteen, &k), MH_EUNSUPPORTED);
    assert_int_equal(mh_key_import_private(MH_KTY_OCT, fifteen, sizeof fifteen, &k),
                     MH_EUNSUPPORTED);
    assert_int_equal(mh_key_import_private(MH_KTY_RSA, fifteen, 0, &k), MH_EBADKEY);
    assert_int_equal(mh_key_import_private(MH_KTY_RSA, fifteen, sizeof fifteen, &k), MH_EBADKEY);
    assert_null(k);
}

static void test_from_pkey_rules(void **state)
{
    (void)state;
    struct mh_key *k = NULL;
    /* RSA-1024: weak */
    EVP_PKEY *weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    assert_non_null(weak);
    assert_int_equal(mh_key_from_pkey(weak, &k), MH_EWEAKKEY);
    EVP_PKEY_free(weak);
    /* P-224: unsupported curve */
    EVP_PKEY *p224 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-224");
    assert_non_null(p224);
    assert_int_equal(mh_key_from_pkey(p224, &k), MH_EUNSUPPORTED);
    EVP_PKEY_free(p224);
    /* Ed25519: unsupported type */
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(ed);
    assert_int_equal(mh_key_from_pkey(ed, &k), MH_EUNSUPPORTED);
    EVP_PKEY_free(ed);
    assert_int_equal(mh_key_from_pkey(NULL, &k), MH_EINVAL);
    /* public-only key adopted, no private part */
    EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(p, &der);
    assert_true(n > 0);
    const unsigned char *r = der;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &r, n);
    assert_non_null(pub);
    assert_int_equal(mh_key_from_pkey(pub, &k), 0);
    assert_false(mh_key_has_private(k));
    struct mh_secret s = {0};
    assert_int_equal(mh_key_export_private(k, &s), MH_ENOPRIVATE);
    mh_key_free(k);
    OPENSSL_free(der);
    /* the private one is accepted whole and checked */
    assert_int_equal(mh_key_from_pkey(p, &k), 0);
    assert_true(mh_key_has_private(k));
    mh_key_free(k);
}

static void test_refcount(void **state)
{
    (void)state;
    struct mh_key *k = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_OCT, 256, MH_CURVE_NONE, &k), 0);
    struct mh_key *k2 = mh_key_ref(k);
    assert_ptr_equal(k, k2);
    mh_key_free(k);
    /* still usable through the second reference (ASan catches a use after free) */
    assert_int_equal(mh_key_bits(k2), 256);
    mh_key_free(k2);
    mh_key_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),           cmocka_unit_test(test_generate_each_kind),
        cmocka_unit_test(test_rsa4096),         cmocka_unit_test(test_unsupported_parameters),
        cmocka_unit_test(test_from_pkey_rules), cmocka_unit_test(test_refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
