#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "crypto/cipher.h"
#include "crypto/key.h"
#include "crypto/wrap.h"

struct kw_vec {
    const char *kek;
    const char *key;
    const char *wrapped;
    enum mh_alg alg;
};

static const char KEK128[] = "000102030405060708090A0B0C0D0E0F";
static const char KEK192[] = "000102030405060708090A0B0C0D0E0F1011121314151617";
static const char KEK256[] = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
static const char DATA128[] = "00112233445566778899AABBCCDDEEFF";
static const char DATA192[] = "00112233445566778899AABBCCDDEEFF0001020304050607";
static const char DATA256[] = "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F";

/* RFC 3394 section 4.1 .. 4.6 */
static const struct kw_vec RFC3394[] = {
    {KEK128, DATA128, "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5", MH_ALG_A128KW},
    {KEK192, DATA128, "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D", MH_ALG_A192KW},
    {KEK256, DATA128, "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7", MH_ALG_A256KW},
    {KEK192, DATA192, "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2",
     MH_ALG_A192KW},
    {KEK256, DATA192, "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1",
     MH_ALG_A256KW},
    {KEK256, DATA256,
     "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
     MH_ALG_A256KW},
};

/* RFC 5649 section 6 */
static const char KWP_KEK[] = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8";
static const struct kw_vec RFC5649[] = {
    {KWP_KEK, "c37b7e6492584340bed12207808941155068f738",
     "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
     MH_ALG_CKM_AES_KEY_WRAP_PAD},
    {KWP_KEK, "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f", MH_ALG_CKM_AES_KEY_WRAP_PAD},
};

static void check_vector(const struct kw_vec *v, enum mh_alg alg)
{
    struct mh_key *kek = tu_oct_key(v->kek);
    uint8_t data[64], wrapped[72];
    size_t dn = tu_unhex(v->key, data, sizeof data);
    size_t wn = tu_unhex(v->wrapped, wrapped, sizeof wrapped);

    struct mh_buf out = {0};
    assert_int_equal(mh_wrap(kek, alg, data, dn, &out), 0);
    assert_int_equal(out.len, wn);
    assert_memory_equal(out.data, wrapped, wn);
    mh_buf_free(&out);

    struct mh_secret pt = {0};
    assert_int_equal(mh_unwrap(kek, alg, wrapped, wn, &pt), 0);
    assert_int_equal(pt.len, dn);
    assert_memory_equal(pt.data, data, dn);
    mh_secret_free(&pt);

    /* Any single flipped bit breaks the integrity check. */
    for (size_t i = 0; i < wn; i++) {
        wrapped[i] ^= (uint8_t)(1u << (i % 8));
        assert_int_equal(mh_unwrap(kek, alg, wrapped, wn, &pt), MH_EAUTH);
        assert_null(pt.data);
        assert_int_equal(pt.len, 0);
        wrapped[i] ^= (uint8_t)(1u << (i % 8));
    }
    mh_key_free(kek);
}

static void test_rfc3394_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof RFC3394 / sizeof RFC3394[0]; i++) {
        check_vector(&RFC3394[i], RFC3394[i].alg);
        /* CKM_AES_KEY_WRAP is the same RFC 3394 wrap at the KEK's own size. */
        check_vector(&RFC3394[i], MH_ALG_CKM_AES_KEY_WRAP);
    }
}

static void test_rfc5649_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof RFC5649 / sizeof RFC5649[0]; i++)
        check_vector(&RFC5649[i], RFC5649[i].alg);
}

static void test_kwp_roundtrip_lengths(void **state)
{
    (void)state;
    uint8_t data[70];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    static const unsigned bits[] = {128, 192, 256};
    for (size_t b = 0; b < 3; b++) {
        struct mh_key *kek = NULL;
        assert_int_equal(mh_key_generate(MH_KTY_OCT, bits[b], MH_CURVE_NONE, &kek), 0);
        for (size_t n = 1; n <= sizeof data; n++) {
            struct mh_buf out = {0};
            assert_int_equal(mh_wrap(kek, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, n, &out), 0);
            assert_int_equal(out.len, (n + 7) / 8 * 8 + 8);
            struct mh_secret pt = {0};
            assert_int_equal(mh_unwrap(kek, MH_ALG_CKM_AES_KEY_WRAP_PAD, out.data, out.len, &pt),
                             0);
            assert_int_equal(pt.len, n);
            assert_memory_equal(pt.data, data, n);
            mh_secret_free(&pt);
            /* A KWP blob is not a KW blob, even when lengths allow it. */
            if (out.len >= 24)
                assert_int_equal(mh_unwrap(kek, MH_ALG_CKM_AES_KEY_WRAP, out.data, out.len, &pt),
                                 MH_EAUTH);
            mh_buf_free(&out);
        }
        mh_key_free(kek);
    }
}

static void test_wrong_kek(void **state)
{
    (void)state;
    struct mh_key *a = tu_oct_key(KEK256), *b = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_OCT, 256, MH_CURVE_NONE, &b), 0);
    uint8_t data[32] = {1, 2, 3};
    struct mh_buf out = {0};
    struct mh_secret pt = {0};
    assert_int_equal(mh_wrap(a, MH_ALG_A256KW, data, sizeof data, &out), 0);
    assert_int_equal(mh_unwrap(b, MH_ALG_A256KW, out.data, out.len, &pt), MH_EAUTH);
    mh_buf_free(&out);
    assert_int_equal(mh_wrap(a, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, 5, &out), 0);
    assert_int_equal(mh_unwrap(b, MH_ALG_CKM_AES_KEY_WRAP_PAD, out.data, out.len, &pt), MH_EAUTH);
    assert_null(pt.data);
    mh_buf_free(&out);
    mh_key_free(a);
    mh_key_free(b);
}

static void test_alg_key_mismatch(void **state)
{
    (void)state;
    struct mh_key *k128 = tu_oct_key(KEK128);
    struct mh_key *rsa = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_RSA, 2048, MH_CURVE_NONE, &rsa), 0);
    uint8_t data[32] = {0};
    struct mh_buf out = {0};
    struct mh_secret pt = {0};

    assert_int_equal(mh_wrap(k128, MH_ALG_A256KW, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_wrap(k128, MH_ALG_A192KW, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_unwrap(k128, MH_ALG_A256KW, data, 24, &pt), MH_EALGKEY);
    assert_int_equal(mh_wrap(k128, MH_ALG_A128GCM, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_wrap(k128, MH_ALG_RS256, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_wrap(k128, MH_ALG_NONE, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_wrap(k128, (enum mh_alg)9999, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_wrap(k128, MH_ALG_RSA_OAEP_256, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_unwrap(k128, MH_ALG_RSA_OAEP_256, data, 16, &pt), MH_EALGKEY);
    assert_int_equal(mh_wrap(rsa, MH_ALG_A128KW, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_wrap(rsa, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, 16, &out), MH_EALGKEY);
    assert_int_equal(mh_unwrap(rsa, MH_ALG_CKM_AES_KEY_WRAP, data, 24, &pt), MH_EALGKEY);
    assert_int_equal(out.len, 0);
    assert_null(pt.data);
    mh_key_free(k128);
    mh_key_free(rsa);
}

static void test_lengths(void **state)
{
    (void)state;
    struct mh_key *k = tu_oct_key(KEK128);
    uint8_t data[40] = {0};
    struct mh_buf out = {0};
    struct mh_secret pt = {0};
    /* RFC 3394: a multiple of 8, at least 16 */
    static const size_t bad_kw[] = {0, 1, 7, 8, 15, 17, 23, 33};
    for (size_t i = 0; i < sizeof bad_kw / sizeof bad_kw[0]; i++) {
        assert_int_equal(mh_wrap(k, MH_ALG_A128KW, data, bad_kw[i], &out), MH_EINPUTLEN);
        assert_int_equal(mh_wrap(k, MH_ALG_CKM_AES_KEY_WRAP, data, bad_kw[i], &out), MH_EINPUTLEN);
    }
    assert_int_equal(mh_wrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, 0, &out), MH_EINPUTLEN);
    assert_int_equal(mh_wrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, NULL, 0, &out), MH_EINPUTLEN);
    assert_int_equal(mh_wrap(k, MH_ALG_A128KW, NULL, 16, &out), MH_EINVAL);
    assert_int_equal(out.len, 0);
    /* wrapped: KW needs >= 24, KWP >= 16, both multiples of 8 */
    static const size_t bad_kw_unwrap[] = {0, 8, 16, 23, 25, 31};
    for (size_t i = 0; i < sizeof bad_kw_unwrap / sizeof bad_kw_unwrap[0]; i++)
        assert_int_equal(mh_unwrap(k, MH_ALG_A128KW, data, bad_kw_unwrap[i], &pt), MH_EINPUTLEN);
    static const size_t bad_kwp_unwrap[] = {0, 1, 8, 15, 17, 39};
    for (size_t i = 0; i < sizeof bad_kwp_unwrap / sizeof bad_kwp_unwrap[0]; i++)
        assert_int_equal(mh_unwrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, bad_kwp_unwrap[i], &pt),
                         MH_EINPUTLEN);
    assert_null(pt.data);
    struct mh_secret full = {0};
    assert_int_equal(mh_secret_dup(&full, "x", 1), 0);
    assert_int_equal(mh_unwrap(k, MH_ALG_A128KW, data, 24, &full), MH_EINVAL);
    assert_int_equal(mh_unwrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, 16, &full), MH_EINVAL);
    assert_int_equal(full.len, 1);
    mh_secret_free(&full);
    /* Garbage of a valid length fails integrity, never "succeeds". */
    assert_int_equal(mh_unwrap(k, MH_ALG_A128KW, data, 24, &pt), MH_EAUTH);
    assert_int_equal(mh_unwrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, 16, &pt), MH_EAUTH);
    assert_int_equal(mh_unwrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, data, 40, &pt), MH_EAUTH);

    /* Oversized input is refused before it is read. */
    size_t big = MH_CIPHER_MAX_INPUT + 32;
    uint8_t *huge = calloc(1, big);
    assert_non_null(huge);
    assert_int_equal(mh_wrap(k, MH_ALG_CKM_AES_KEY_WRAP_PAD, huge, MH_CIPHER_MAX_INPUT + 1, &out),
                     MH_ETOOBIG);
    assert_int_equal(mh_wrap(k, MH_ALG_A128KW, huge, MH_CIPHER_MAX_INPUT + 8, &out), MH_ETOOBIG);
    assert_int_equal(mh_unwrap(k, MH_ALG_A128KW, huge, big, &pt), MH_ETOOBIG);
    free(huge);
    mh_key_free(k);
}

static void test_output_preserved_on_error(void **state)
{
    (void)state;
    struct mh_key *k = tu_oct_key(KEK256);
    uint8_t data[32] = {9};
    struct mh_buf out = {0};
    assert_int_equal(mh_buf_append(&out, "hdr", 3), 0);
    assert_int_equal(mh_wrap(k, MH_ALG_A256KW, data, 12, &out), MH_EINPUTLEN);
    assert_int_equal(out.len, 3);
    assert_int_equal(mh_wrap(k, MH_ALG_A256KW, data, 32, &out), 0);
    assert_int_equal(out.len, 3 + 40);
    assert_memory_equal(out.data, "hdr", 3);
    struct mh_secret pt = {0};
    assert_int_equal(mh_unwrap(k, MH_ALG_A256KW, out.data + 3, 40, &pt), 0);
    assert_int_equal(pt.len, 32);
    assert_memory_equal(pt.data, data, 32);
    mh_secret_free(&pt);
    mh_buf_free(&out);
    mh_key_free(k);
}

static void test_rsa_wrap(void **state)
{
    (void)state;
    struct mh_key *rsa = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_RSA, 2048, MH_CURVE_NONE, &rsa), 0);
    struct mh_buf der = {0};
    assert_int_equal(mh_key_public_der(rsa, &der), 0);
    const unsigned char *p = der.data;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)der.len);
    assert_non_null(pub);
    struct mh_key *pubkey = NULL;
    assert_int_equal(mh_key_from_pkey(pub, &pubkey), 0);
    mh_buf_free(&der);

    uint8_t cek[32];
    for (size_t i = 0; i < sizeof cek; i++)
        cek[i] = (uint8_t)(0xa0 + i);
    static const enum mh_alg algs[] = {MH_ALG_RSA_OAEP_256, MH_ALG_RSA_OAEP, MH_ALG_RSA1_5};
    for (size_t a = 0; a < 3; a++) {
        struct mh_buf out = {0};
        struct mh_secret pt = {0};
        /* Wrapping needs only the public key. */
        assert_int_equal(mh_wrap(pubkey, algs[a], cek, sizeof cek, &out), 0);
        assert_int_equal(out.len, 256);
        assert_int_equal(mh_unwrap(rsa, algs[a], out.data, out.len, &pt), 0);
        assert_int_equal(pt.len, sizeof cek);
        assert_memory_equal(pt.data, cek, sizeof cek);
        mh_secret_free(&pt);
        assert_int_equal(mh_unwrap(pubkey, algs[a], out.data, out.len, &pt), MH_ENOPRIVATE);
        out.data[100] ^= 0x40;
        int rv = mh_unwrap(rsa, algs[a], out.data, out.len, &pt);
        if (algs[a] == MH_ALG_RSA1_5 && rv == 0) {
            /* PKCS#1 v1.5 has no integrity check: a tampered block passes the
             * format check with probability ~2^-16, as garbage. */
            assert_false(pt.len == sizeof cek && memcmp(pt.data, cek, sizeof cek) == 0);
            mh_secret_free(&pt);
        } else {
            assert_int_equal(rv, MH_EDECRYPT);
        }
        assert_int_equal(mh_unwrap(rsa, algs[a], out.data, 255, &pt), MH_EDECRYPT);
        assert_null(pt.data);
        mh_buf_free(&out);
    }
    /* OAEP-256 on 2048 bits carries at most 256 - 66 = 190 bytes. */
    uint8_t big[191] = {0};
    struct mh_buf out = {0};
    assert_int_equal(mh_wrap(rsa, MH_ALG_RSA_OAEP_256, big, 191, &out), MH_EINPUTLEN);
    assert_int_equal(mh_wrap(rsa, MH_ALG_RSA_OAEP_256, big, 190, &out), 0);
    mh_buf_free(&out);
    mh_key_free(pubkey);
    mh_key_free(rsa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3394_vectors),           cmocka_unit_test(test_rfc5649_vectors),
        cmocka_unit_test(test_kwp_roundtrip_lengths),     cmocka_unit_test(test_wrong_kek),
        cmocka_unit_test(test_alg_key_mismatch),          cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_output_preserved_on_error), cmocka_unit_test(test_rsa_wrap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
