#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "crypto/alg.h"
#include "crypto/key.h"
#include "crypto/seal.h"

static void fixed_key(struct mh_secret *k, uint8_t seed)
{
    assert_int_equal(mh_secret_alloc(k, MH_SEAL_KEY_LEN), 0);
    for (size_t i = 0; i < k->len; i++)
        k->data[i] = (uint8_t)(seed + i * 3);
}

/* RFC 5869 Appendix A.1 (test case 1) and A.3 (test case 3: empty salt and
 * info, the form mh_seal_derive uses). */
static void test_hkdf_rfc5869(void **state)
{
    (void)state;
    uint8_t ikm[22], salt[13], info[10], okm[42];
    memset(ikm, 0x0b, sizeof ikm);
    for (size_t i = 0; i < sizeof salt; i++)
        salt[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof info; i++)
        info[i] = (uint8_t)(0xf0 + i);
    struct mh_secret out = {0};
    assert_int_equal(
        mh_hkdf_sha256(ikm, sizeof ikm, salt, sizeof salt, info, sizeof info, 42, &out), 0);
    tu_unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
             okm, sizeof okm);
    assert_int_equal(out.len, 42);
    assert_memory_equal(out.data, okm, 42);
    mh_secret_free(&out);

    assert_int_equal(mh_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, 42, &out), 0);
    tu_unhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
             okm, sizeof okm);
    assert_int_equal(out.len, 42);
    assert_memory_equal(out.data, okm, 42);
    mh_secret_free(&out);

    /* A shorter output is a prefix (HKDF-Expand's T(1) || T(2) ...). */
    assert_int_equal(mh_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, 7, &out), 0);
    assert_memory_equal(out.data, okm, 7);
    mh_secret_free(&out);

    /* Bounds. */
    assert_int_equal(mh_hkdf_sha256(ikm, 0, NULL, 0, NULL, 0, 32, &out), MH_EINVAL);
    assert_int_equal(mh_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, 0, &out), MH_EINVAL);
    assert_int_equal(mh_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, 255 * 32 + 1, &out),
                     MH_EINVAL);
    assert_int_equal(mh_hkdf_sha256(ikm, sizeof ikm, NULL, 3, NULL, 0, 32, &out), MH_EINVAL);
    assert_int_equal(mh_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, 255 * 32, &out), 0);
    assert_int_equal(out.len, 255 * 32);
    mh_secret_free(&out);
}

/* The purpose labels are persistent (changing one would orphan every sealed
 * key): pin each derived key against the openssl command line's HKDF with the
 * label written out here, independently of seal.c. */
static void test_derive_labels(void **state)
{
    (void)state;
    static const struct {
        enum mh_seal_purpose purpose;
        const char *label;
    } P[] = {
        {MH_PURPOSE_KEY_WRAP, "mhsm v1 key-wrapping key"},
        {MH_PURPOSE_BACKUP, "mhsm v1 backup key"},
        {MH_PURPOSE_AUDIT_SIGN, "mhsm v1 audit-signing key"},
        {MH_PURPOSE_NODE_TRANSFER, "mhsm v1 node-transfer key"},
    };
    struct mh_secret root = {0};
    fixed_key(&root, 0x42);
    char hex[65];
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", root.data[i]);
    struct mh_secret keys[4] = {{0}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(mh_seal_derive(&root, P[i].purpose, &keys[i]), 0);
        assert_int_equal(keys[i].len, 32);
        char path[4096];
        tu_path(path, sizeof path, "okm.bin");
        assert_int_equal(tu_sh("openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexkey:%s "
                               "-kdfopt 'info:%s' -binary -out '%s' HKDF",
                               hex, P[i].label, path),
                         0);
        struct mh_buf want = {0};
        tu_read_file(path, &want);
        assert_int_equal(want.len, 32);
        assert_memory_equal(keys[i].data, want.data, 32);
        mh_buf_free(&want);
        /* Deterministic. */
        struct mh_secret again = {0};
        assert_int_equal(mh_seal_derive(&root, P[i].purpose, &again), 0);
        assert_memory_equal(again.data, keys[i].data, 32);
        mh_secret_free(&again);
    }
    /* Pairwise distinct. */
    for (size_t i = 0; i < 4; i++)
        for (size_t j = i + 1; j < 4; j++)
            assert_memory_not_equal(keys[i].data, keys[j].data, 32);
    /* Another root gives other keys. */
    struct mh_secret root2 = {0}, k2 = {0};
    fixed_key(&root2, 0x43);
    assert_int_equal(mh_seal_derive(&root2, MH_PURPOSE_KEY_WRAP, &k2), 0);
    assert_memory_not_equal(k2.data, keys[0].data, 32);
    mh_secret_free(&k2);
    mh_secret_free(&root2);
    for (size_t i = 0; i < 4; i++)
        mh_secret_free(&keys[i]);

    /* Bad arguments. */
    struct mh_secret out = {0};
    assert_int_equal(mh_seal_derive(&root, (enum mh_seal_purpose)4, &out), MH_EINVAL);
    assert_int_equal(mh_seal_derive(&root, (enum mh_seal_purpose) - 1, &out), MH_EINVAL);
    mh_secret_shrink(&root, 31);
    assert_int_equal(mh_seal_derive(&root, MH_PURPOSE_KEY_WRAP, &out), MH_EINVAL);
    struct mh_secret empty = {0};
    assert_int_equal(mh_seal_derive(&empty, MH_PURPOSE_KEY_WRAP, &out), MH_EINVAL);
    assert_null(out.data);
    mh_secret_free(&root);
}

/* Decrypts a blob with raw EVP calls following the layout documented in
 * seal.h, independently of mh_unseal. */
static void open_by_hand(const struct mh_secret *key, const uint8_t *aad, size_t aad_len,
                         const uint8_t *blob, size_t len, const uint8_t *want, size_t want_len)
{
    assert_int_equal(len, want_len + 29);
    assert_int_equal(blob[0], 0x01);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    assert_non_null(ctx);
    uint8_t *pt = malloc(want_len + 16);
    assert_non_null(pt);
    int n = 0;
    uint8_t tag[16];
    memcpy(tag, blob + len - 16, 16);
    assert_int_equal(EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), key->data, blob + 1, NULL), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag), 1);
    uint8_t ad[1 + 64];
    assert_true(aad_len <= 64);
    ad[0] = 0x01;
    if (aad_len)
        memcpy(ad + 1, aad, aad_len);
    assert_int_equal(EVP_DecryptUpdate(ctx, NULL, &n, ad, (int)(1 + aad_len)), 1);
    if (want_len)
        assert_int_equal(EVP_DecryptUpdate(ctx, pt, &n, blob + 13, (int)want_len), 1);
    assert_int_equal(EVP_DecryptFinal_ex(ctx, pt + want_len, &n), 1);
    if (want_len)
        assert_memory_equal(pt, want, want_len);
    free(pt);
    EVP_CIPHER_CTX_free(ctx);
}

static void test_seal_roundtrip(void **state)
{
    (void)state;
    struct mh_secret key = {0};
    fixed_key(&key, 7);
    uint8_t pt[1000];
    for (size_t i = 0; i < sizeof pt; i++)
        pt[i] = (uint8_t)(i ^ 0x5a);
    static const uint8_t aad[] = "key=k1;version=0123456789abcdef;kty=RSA";
    size_t lens[] = {0, 1, 15, 16, 17, 32, 999, 1000};
    for (size_t a = 0; a < 2; a++) {
        size_t aad_len = a ? sizeof aad - 1 : 0;
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            struct mh_buf blob = {0};
            assert_int_equal(mh_buf_append_str(&blob, "prefix"), 0);
            assert_int_equal(mh_seal(&key, a ? aad : NULL, aad_len, pt, lens[i], &blob), 0);
            /* Appends after what the buffer held. */
            assert_memory_equal(blob.data, "prefix", 6);
            const uint8_t *b = blob.data + 6;
            size_t blen = blob.len - 6;
            assert_int_equal(blen, lens[i] + MH_SEAL_OVERHEAD);
            open_by_hand(&key, aad, aad_len, b, blen, pt, lens[i]);
            struct mh_secret out = {0};
            assert_int_equal(mh_unseal(&key, aad, aad_len, b, blen, &out), 0);
            assert_int_equal(out.len, lens[i]);
            if (lens[i])
                assert_memory_equal(out.data, pt, lens[i]);
            mh_secret_free(&out);
            mh_buf_free(&blob);
        }
    }
    /* Two seals of the same input differ (fresh IV) and both open. */
    struct mh_buf b1 = {0}, b2 = {0};
    assert_int_equal(mh_seal(&key, aad, 5, pt, 32, &b1), 0);
    assert_int_equal(mh_seal(&key, aad, 5, pt, 32, &b2), 0);
    assert_memory_not_equal(b1.data + 1, b2.data + 1, 12);
    assert_memory_not_equal(b1.data + 13, b2.data + 13, 32);
    mh_buf_free(&b1);
    mh_buf_free(&b2);
    mh_secret_free(&key);
}

static void assert_unseal_fails(const struct mh_secret *key, const uint8_t *aad, size_t aad_len,
                                const uint8_t *blob, size_t len, int want)
{
    struct mh_secret out = {0};
    assert_int_equal(mh_unseal(key, aad, aad_len, blob, len, &out), want);
    assert_null(out.data);
    assert_int_equal(out.len, 0);
}

static void test_unseal_rejections(void **state)
{
    (void)state;
    struct mh_secret key = {0}, other = {0};
    fixed_key(&key, 1);
    fixed_key(&other, 2);
    static const uint8_t aad[] = "name=k;version=1;kty=EC";
    static const uint8_t pt[] = "a private key, in PKCS#8 form, say";
    size_t aad_len = sizeof aad - 1, pt_len = sizeof pt - 1;
    struct mh_buf blob = {0};
    assert_int_equal(mh_seal(&key, aad, aad_len, pt, pt_len, &blob), 0);
    struct mh_secret ok = {0};
    assert_int_equal(mh_unseal(&key, aad, aad_len, blob.data, blob.len, &ok), 0);
    mh_secret_free(&ok);

    /* Wrong key, wrong AAD (changed, shorter, longer, empty). */
    assert_unseal_fails(&other, aad, aad_len, blob.data, blob.len, MH_EAUTH);
    uint8_t aad2[sizeof aad];
    memcpy(aad2, aad, sizeof aad);
    aad2[aad_len - 1] ^= 1; /* kty=ED */
    assert_unseal_fails(&key, aad2, aad_len, blob.data, blob.len, MH_EAUTH);
    assert_unseal_fails(&key, aad, aad_len - 1, blob.data, blob.len, MH_EAUTH);
    assert_unseal_fails(&key, aad, aad_len + 1, blob.data, blob.len, MH_EAUTH);
    assert_unseal_fails(&key, NULL, 0, blob.data, blob.len, MH_EAUTH);

    /* Every bit of every byte flipped: the version byte is unsupported, any
     * other change fails authentication. */
    for (size_t i = 0; i < blob.len; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            blob.data[i] ^= (uint8_t)(1u << bit);
            assert_unseal_fails(&key, aad, aad_len, blob.data, blob.len,
                                i == 0 ? MH_EUNSUPPORTED : MH_EAUTH);
            blob.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Truncated at every length. */
    for (size_t n = 0; n < blob.len; n++)
        assert_unseal_fails(&key, aad, aad_len, blob.data, n,
                            n < MH_SEAL_OVERHEAD ? MH_ETRUNC : MH_EAUTH);
    /* A byte appended. */
    assert_int_equal(mh_buf_append_u8(&blob, 0), 0);
    assert_unseal_fails(&key, aad, aad_len, blob.data, blob.len, MH_EAUTH);
    mh_buf_truncate(&blob, blob.len - 1);
    /* Version 0 and 2 are not version 1, even with the rest intact. */
    blob.data[0] = 0x02;
    assert_unseal_fails(&key, aad, aad_len, blob.data, blob.len, MH_EUNSUPPORTED);
    blob.data[0] = 0x00;
    assert_unseal_fails(&key, aad, aad_len, blob.data, blob.len, MH_EUNSUPPORTED);
    blob.data[0] = 0x01;
    /* A swapped IV/tag from another seal of the same plaintext. */
    struct mh_buf blob2 = {0};
    assert_int_equal(mh_seal(&key, aad, aad_len, pt, pt_len, &blob2), 0);
    memcpy(blob2.data + 1, blob.data + 1, 12);
    assert_unseal_fails(&key, aad, aad_len, blob2.data, blob2.len, MH_EAUTH);
    mh_buf_free(&blob2);

    /* Key length and size bounds. */
    struct mh_secret short_key = {0};
    assert_int_equal(mh_secret_dup(&short_key, key.data, 31), 0);
    struct mh_buf out = {0};
    assert_int_equal(mh_seal(&short_key, aad, aad_len, pt, pt_len, &out), MH_EINVAL);
    assert_unseal_fails(&short_key, aad, aad_len, blob.data, blob.len, MH_EINVAL);
    mh_secret_free(&short_key);
    uint8_t *big = calloc(1, MH_SEAL_MAX_AAD + 1);
    assert_non_null(big);
    assert_int_equal(mh_seal(&key, big, MH_SEAL_MAX_AAD + 1, pt, pt_len, &out), MH_ETOOBIG);
    assert_unseal_fails(&key, big, MH_SEAL_MAX_AAD + 1, blob.data, blob.len, MH_ETOOBIG);
    assert_int_equal(mh_seal(&key, big, MH_SEAL_MAX_AAD, pt, pt_len, &out), 0);
    struct mh_secret got = {0};
    assert_int_equal(mh_unseal(&key, big, MH_SEAL_MAX_AAD, out.data, out.len, &got), 0);
    mh_secret_free(&got);
    free(big);
    mh_buf_free(&out);
    assert_int_equal(mh_seal(&key, NULL, 0, pt, MH_SEAL_MAX_PLAINTEXT + 1, &out), MH_ETOOBIG);
    assert_int_equal(out.len, 0);

    mh_buf_free(&blob);
    mh_secret_free(&key);
    mh_secret_free(&other);
}

static void assert_same_public(const struct mh_key *a, const struct mh_key *b)
{
    struct mh_buf da = {0}, db = {0};
    assert_int_equal(mh_key_public_der(a, &da), 0);
    assert_int_equal(mh_key_public_der(b, &db), 0);
    assert_int_equal(da.len, db.len);
    assert_memory_equal(da.data, db.data, da.len);
    mh_buf_free(&da);
    mh_buf_free(&db);
}

/* Signs a fixed digest with |signer| and verifies with |verifier| through raw
 * EVP calls: the unsealed key still works as the original key. */
static void assert_signs_for(const struct mh_key *signer, const struct mh_key *verifier)
{
    uint8_t digest[32], sig[600];
    memset(digest, 0x3c, sizeof digest);
    size_t sig_len = sizeof sig;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, mh_key_pkey(signer), NULL);
    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_sign_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
    assert_int_equal(EVP_PKEY_sign(ctx, sig, &sig_len, digest, sizeof digest), 1);
    EVP_PKEY_CTX_free(ctx);
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, mh_key_pkey(verifier), NULL);
    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
    assert_int_equal(EVP_PKEY_verify(ctx, sig, sig_len, digest, sizeof digest), 1);
    EVP_PKEY_CTX_free(ctx);
}

static void test_seal_key(void **state)
{
    (void)state;
    struct mh_secret root = {0}, wk = {0}, wrong = {0};
    fixed_key(&root, 9);
    assert_int_equal(mh_seal_derive(&root, MH_PURPOSE_KEY_WRAP, &wk), 0);
    assert_int_equal(mh_seal_derive(&root, MH_PURPOSE_BACKUP, &wrong), 0);
    struct {
        enum mh_kty kty;
        unsigned bits;
        enum mh_curve curve;
    } cases[] = {
        {MH_KTY_RSA, 2048, MH_CURVE_NONE}, {MH_KTY_EC, 0, MH_CURVE_P256},
        {MH_KTY_EC, 0, MH_CURVE_P256K},    {MH_KTY_EC, 0, MH_CURVE_P521},
        {MH_KTY_OCT, 128, MH_CURVE_NONE},  {MH_KTY_OCT, 256, MH_CURVE_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mh_key *k = NULL, *k2 = NULL;
        assert_int_equal(mh_key_generate(cases[i].kty, cases[i].bits, cases[i].curve, &k), 0);
        char aad[64];
        int n =
            snprintf(aad, sizeof aad, "name=k%zu;version=1;kty=%s", i, mh_kty_name(cases[i].kty));
        assert_true(n > 0);
        struct mh_buf blob = {0};
        assert_int_equal(mh_seal_key(&wk, k, (const uint8_t *)aad, (size_t)n, &blob), 0);
        assert_int_equal(mh_unseal_key(&wk, cases[i].kty, (const uint8_t *)aad, (size_t)n,
                                       blob.data, blob.len, &k2),
                         0);
        assert_int_equal(mh_key_kty(k2), cases[i].kty);
        assert_int_equal(mh_key_bits(k2), mh_key_bits(k));
        assert_int_equal(mh_key_curve(k2), mh_key_curve(k));
        assert_true(mh_key_has_private(k2));
        if (cases[i].kty == MH_KTY_OCT) {
            assert_int_equal(mh_key_oct(k2)->len, mh_key_oct(k)->len);
            assert_memory_equal(mh_key_oct(k2)->data, mh_key_oct(k)->data, mh_key_oct(k)->len);
        } else {
            assert_same_public(k, k2);
            assert_signs_for(k2, k);
        }
        mh_key_free(k2);
        k2 = NULL;

        /* Wrong wrapping key, wrong AAD, wrong kty. */
        assert_int_equal(mh_unseal_key(&wrong, cases[i].kty, (const uint8_t *)aad, (size_t)n,
                                       blob.data, blob.len, &k2),
                         MH_EAUTH);
        assert_int_equal(mh_unseal_key(&wk, cases[i].kty, (const uint8_t *)aad, (size_t)n - 1,
                                       blob.data, blob.len, &k2),
                         MH_EAUTH);
        enum mh_kty other = cases[i].kty == MH_KTY_RSA ? MH_KTY_EC : MH_KTY_RSA;
        assert_int_equal(
            mh_unseal_key(&wk, other, (const uint8_t *)aad, (size_t)n, blob.data, blob.len, &k2),
            MH_EBADKEY);
        assert_int_equal(mh_unseal_key(&wk, MH_KTY_NONE, (const uint8_t *)aad, (size_t)n, blob.data,
                                       blob.len, &k2),
                         MH_EUNSUPPORTED);
        assert_null(k2);
        mh_buf_free(&blob);
        mh_key_free(k);
    }

    /* A public-only key has nothing to seal. */
    struct mh_key *k = NULL, *pub = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P384, &k), 0);
    struct mh_buf der = {0};
    assert_int_equal(mh_key_public_der(k, &der), 0);
    const unsigned char *p = der.data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)der.len);
    assert_non_null(pk);
    assert_int_equal(mh_key_from_pkey(pk, &pub), 0);
    struct mh_buf blob = {0};
    assert_int_equal(mh_seal_key(&wk, pub, NULL, 0, &blob), MH_ENOPRIVATE);
    assert_int_equal(blob.len, 0);
    mh_key_free(pub);
    mh_key_free(k);
    mh_buf_free(&der);

    mh_secret_free(&wk);
    mh_secret_free(&wrong);
    mh_secret_free(&root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hkdf_rfc5869),   cmocka_unit_test(test_derive_labels),
        cmocka_unit_test(test_seal_roundtrip), cmocka_unit_test(test_unseal_rejections),
        cmocka_unit_test(test_seal_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
