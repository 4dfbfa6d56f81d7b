#include "testutil.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "crypto/key.h"
#include "crypto/rand.h"
#include "crypto/sign.h"

/* Keys are generated once per program: RSA-4096 keygen is the slow part. */
static const unsigned RSA_BITS[] = {2048, 3072, 4096};
static const enum mh_curve CURVES[] = {MH_CURVE_P256, MH_CURVE_P256K, MH_CURVE_P384, MH_CURVE_P521};
static const enum mh_alg CURVE_ALG[] = {MH_ALG_ES256, MH_ALG_ES256K, MH_ALG_ES384, MH_ALG_ES512};
static const enum mh_alg RSA_ALGS[] = {MH_ALG_RS256, MH_ALG_RS384, MH_ALG_RS512,
                                       MH_ALG_PS256, MH_ALG_PS384, MH_ALG_PS512};
static const enum mh_alg ALL_SIG_ALGS[] = {MH_ALG_RS256, MH_ALG_RS384, MH_ALG_RS512, MH_ALG_PS256,
                                           MH_ALG_PS384, MH_ALG_PS512, MH_ALG_ES256, MH_ALG_ES256K,
                                           MH_ALG_ES384, MH_ALG_ES512};
#define N_RSA     3
#define N_EC      4
#define N_ALL_SIG (sizeof ALL_SIG_ALGS / sizeof ALL_SIG_ALGS[0])

static struct mh_key *rsa_keys[N_RSA];
static struct mh_key *ec_keys[N_EC];
static struct mh_key *oct_key;

/* Every (key, algorithm) pair that must work: 3 RSA sizes x 6 algorithms + 4 curves. */
struct combo {
    struct mh_key *key;
    enum mh_alg alg;
};
static struct combo combos[N_RSA * 6 + N_EC];
static size_t n_combos;

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RSA; i++) {
        if (mh_key_generate(MH_KTY_RSA, RSA_BITS[i], MH_CURVE_NONE, &rsa_keys[i]) != 0)
            return -1;
        for (size_t a = 0; a < 6; a++)
            combos[n_combos++] = (struct combo){rsa_keys[i], RSA_ALGS[a]};
    }
    for (size_t i = 0; i < N_EC; i++) {
        if (mh_key_generate(MH_KTY_EC, 0, CURVES[i], &ec_keys[i]) != 0)
            return -1;
        combos[n_combos++] = (struct combo){ec_keys[i], CURVE_ALG[i]};
    }
    return mh_key_generate(MH_KTY_OCT, 256, MH_CURVE_NONE, &oct_key) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RSA; i++)
        mh_key_free(rsa_keys[i]);
    for (size_t i = 0; i < N_EC; i++)
        mh_key_free(ec_keys[i]);
    mh_key_free(oct_key);
    mh_sign_thread_cleanup();
    return 0;
}

static size_t dlen_of(enum mh_alg alg)
{
    return mh_md_len((enum mh_md)mh_alg_digest(alg));
}

static const char *md_name(enum mh_alg alg)
{
    switch (dlen_of(alg)) {
    case 32:
        return "sha256";
    case 48:
        return "sha384";
    case 64:
        return "sha512";
    default:
        fail();
        return "";
    }
}

static bool is_pss(enum mh_alg alg)
{
    return alg == MH_ALG_PS256 || alg == MH_ALG_PS384 || alg == MH_ALG_PS512;
}

static bool is_ec(enum mh_alg alg)
{
    return alg == MH_ALG_ES256 || alg == MH_ALG_ES256K || alg == MH_ALG_ES384 ||
           alg == MH_ALG_ES512;
}

static void random_digest(uint8_t *d, size_t n)
{
    assert_int_equal(mh_rand_bytes(d, n), 0);
}

static struct mh_key *public_only(const struct mh_key *key)
{
    struct mh_buf der = {0};
    assert_int_equal(mh_key_public_der(key, &der), 0);
    const unsigned char *p = der.data;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)der.len);
    assert_non_null(pub);
    mh_buf_free(&der);
    struct mh_key *k;
    assert_int_equal(mh_key_from_pkey(pub, &k), 0);
    assert_false(mh_key_has_private(k));
    return k;
}

/* r||s -> DER, as openssl pkeyutl wants it. */
static void raw_to_der(const uint8_t *raw, size_t len, struct mh_buf *out)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    assert_non_null(es);
    BIGNUM *r = BN_bin2bn(raw, (int)(len / 2), NULL);
    BIGNUM *s = BN_bin2bn(raw + len / 2, (int)(len / 2), NULL);
    assert_true(r != NULL && s != NULL);
    assert_int_equal(ECDSA_SIG_set0(es, r, s), 1);
    unsigned char *der = NULL;
    int n = i2d_ECDSA_SIG(es, &der);
    assert_true(n > 0);
    assert_int_equal(mh_buf_append(out, der, (size_t)n), 0);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
}

/* DER -> r||s with each half padded to |flen|, as mh_verify wants it. */
static void der_to_raw(const uint8_t *der, size_t len, size_t flen, struct mh_buf *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    assert_non_null(es);
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    uint8_t *w;
    assert_int_equal(mh_buf_extend(out, 2 * flen, &w), 0);
    assert_int_equal(BN_bn2binpad(r, w, (int)flen), (int)flen);
    assert_int_equal(BN_bn2binpad(s, w + flen, (int)flen), (int)flen);
    ECDSA_SIG_free(es);
}

static void write_pub_pem(const struct mh_key *key, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, mh_key_pkey(key)), 1);
    assert_int_equal(fclose(f), 0);
}

static void write_priv_pem(const struct mh_key *key, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, mh_key_pkey(key), NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(f), 0);
}

/* "-pkeyopt ..." options for openssl pkeyutl; |saltlen| is the PSS salt option. */
static void pkeyopts(enum mh_alg alg, const char *saltlen, char *out, size_t cap)
{
    int n;
    if (is_pss(alg))
        n = snprintf(out, cap,
                     "-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:%s "
                     "-pkeyopt digest:%s",
                     saltlen, md_name(alg));
    else if (is_ec(alg))
        n = snprintf(out, cap, "-pkeyopt digest:%s", md_name(alg));
    else
        n = snprintf(out, cap, "-pkeyopt rsa_padding_mode:pkcs1 -pkeyopt digest:%s", md_name(alg));
    assert_true(n > 0 && (size_t)n < cap);
}

/* Runs a command expected to fail, without tu_sh's failure report. */
static int sh_quiet(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh_quiet(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 16, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof cmd - 16);
    strcat(cmd, " >/dev/null 2>&1");
    int st = system(cmd);
    return (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
}

static void test_sign_len(void **state)
{
    (void)state;
    assert_int_equal(mh_sign_len(rsa_keys[0]), 256);
    assert_int_equal(mh_sign_len(rsa_keys[1]), 384);
    assert_int_equal(mh_sign_len(rsa_keys[2]), 512);
    assert_int_equal(mh_sign_len(ec_keys[0]), 64);
    assert_int_equal(mh_sign_len(ec_keys[1]), 64);
    assert_int_equal(mh_sign_len(ec_keys[2]), 96);
    assert_int_equal(mh_sign_len(ec_keys[3]), 132);
    assert_int_equal(mh_sign_len(oct_key), 0);
}

/* Every algorithm on every size/curve: sign appends exactly mh_sign_len bytes,
 * the signature verifies, and does not verify over another digest. */
static void test_roundtrip_all(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_combos; i++) {
        const struct combo *c = &combos[i];
        uint8_t d[64], d2[64];
        size_t dl = dlen_of(c->alg);
        random_digest(d, dl);
        memcpy(d2, d, dl);
        d2[dl - 1] ^= 1;
        struct mh_buf sig = {0};
        assert_int_equal(mh_buf_append_str(&sig, "pre"), 0);
        assert_int_equal(mh_sign(c->key, c->alg, d, dl, &sig), 0);
        size_t sl = mh_sign_len(c->key);
        assert_int_equal(sig.len, 3 + sl);
        assert_memory_equal(sig.data, "pre", 3);
        const uint8_t *s = sig.data + 3;
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, s, sl), 0);
        assert_int_equal(mh_verify(c->key, c->alg, d2, dl, s, sl), MH_EBADSIG);
        /* a public-only copy verifies too */
        struct mh_key *pub = public_only(c->key);
        assert_int_equal(mh_verify(pub, c->alg, d, dl, s, sl), 0);
        mh_key_free(pub);
        /* randomised padding / nonces: a second signature differs for PSS and
         * ECDSA, and is identical for PKCS#1 v1.5 */
        struct mh_buf sig2 = {0};
        assert_int_equal(mh_sign(c->key, c->alg, d, dl, &sig2), 0);
        assert_int_equal(sig2.len, sl);
        assert_int_equal(memcmp(sig2.data, s, sl) == 0, !is_pss(c->alg) && !is_ec(c->alg));
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig2.data, sl), 0);
        mh_buf_free(&sig);
        mh_buf_free(&sig2);
    }
}

/* Our signatures verify with `openssl pkeyutl -verify`, and openssl's verify with us. */
static void test_openssl_interop(void **state)
{
    (void)state;
    char pub[PATH_MAX], priv[PATH_MAX], dg[PATH_MAX], sg[PATH_MAX], opts[256];
    tu_path(pub, sizeof pub, "pub.pem");
    tu_path(priv, sizeof priv, "priv.pem");
    tu_path(dg, sizeof dg, "digest.bin");
    tu_path(sg, sizeof sg, "sig.bin");
    for (size_t i = 0; i < n_combos; i++) {
        const struct combo *c = &combos[i];
        uint8_t d[64];
        size_t dl = dlen_of(c->alg);
        random_digest(d, dl);
        tu_write_file(dg, d, dl);
        write_pub_pem(c->key, pub);
        write_priv_pem(c->key, priv);
        pkeyopts(c->alg, "digest", opts, sizeof opts);

        /* crypto/ signs, openssl verifies */
        struct mh_buf sig = {0}, der = {0};
        assert_int_equal(mh_sign(c->key, c->alg, d, dl, &sig), 0);
        if (is_ec(c->alg)) {
            raw_to_der(sig.data, sig.len, &der);
            tu_write_file(sg, der.data, der.len);
        } else {
            tu_write_file(sg, sig.data, sig.len);
        }
        assert_int_equal(
            tu_sh("openssl pkeyutl -verify -pubin -inkey '%s' -in '%s' -sigfile '%s' %s", pub, dg,
                  sg, opts),
            0);
        /* and openssl rejects it over another digest (the check can fail) */
        d[0] ^= 0x80;
        tu_write_file(dg, d, dl);
        assert_int_not_equal(sh_quiet("openssl pkeyutl -verify -pubin -inkey '%s' -in '%s' "
                                      "-sigfile '%s' %s",
                                      pub, dg, sg, opts),
                             0);
        d[0] ^= 0x80;
        tu_write_file(dg, d, dl);
        mh_buf_free(&sig);
        mh_buf_free(&der);

        /* openssl signs, crypto/ verifies */
        assert_int_equal(
            tu_sh("openssl pkeyutl -sign -inkey '%s' -in '%s' -out '%s' %s", priv, dg, sg, opts),
            0);
        struct mh_buf osig = {0};
        tu_read_file(sg, &osig);
        if (is_ec(c->alg)) {
            der_to_raw(osig.data, osig.len, mh_curve_field_len(mh_key_curve(c->key)), &sig);
        } else {
            assert_int_equal(mh_buf_append(&sig, osig.data, osig.len), 0);
        }
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, sig.len), 0);
        mh_buf_free(&sig);
        mh_buf_free(&osig);

        /* PSS with any salt other than the digest length is refused */
        if (is_pss(c->alg)) {
            static const char *const other_salts[] = {"max", "0"};
            for (size_t k = 0; k < 2; k++) {
                pkeyopts(c->alg, other_salts[k], opts, sizeof opts);
                assert_int_equal(tu_sh("openssl pkeyutl -sign -inkey '%s' -in '%s' -out '%s' %s",
                                       priv, dg, sg, opts),
                                 0);
                tu_read_file(sg, &osig);
                assert_int_equal(mh_verify(c->key, c->alg, d, dl, osig.data, osig.len), MH_EBADSIG);
                mh_buf_free(&osig);
            }
        }
    }
}

/* Negative cases, for every algorithm on every size/curve. */
static void test_bad_signatures(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_combos; i++) {
        const struct combo *c = &combos[i];
        uint8_t d[64];
        size_t dl = dlen_of(c->alg);
        random_digest(d, dl);
        struct mh_buf sig = {0};
        assert_int_equal(mh_sign(c->key, c->alg, d, dl, &sig), 0);
        size_t sl = sig.len;

        /* one flipped bit anywhere (first, middle, last byte; several bits) */
        const size_t where[] = {0, 1, sl / 4, sl / 2 - 1, sl / 2, sl - 2, sl - 1};
        for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
            for (unsigned bit = 0; bit < 8; bit += 3) {
                sig.data[where[w]] ^= (uint8_t)(1u << bit);
                assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, sl), MH_EBADSIG);
                sig.data[where[w]] ^= (uint8_t)(1u << bit);
            }
        }
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, sl), 0);

        /* truncated, empty, oversized */
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, sl - 1), MH_EBADSIG);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data + 1, sl - 1), MH_EBADSIG);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, sl / 2), MH_EBADSIG);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, 0), MH_EBADSIG);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, NULL, 0), MH_EBADSIG);
        assert_int_equal(mh_buf_append_u8(&sig, 0), 0);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, sig.data, sl + 1), MH_EBADSIG);
        mh_buf_truncate(&sig, sl);

        /* out-of-range values: all zero (r = s = 0), all 0xff (>= modulus / order) */
        uint8_t junk[512];
        memset(junk, 0, sl);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, junk, sl), MH_EBADSIG);
        memset(junk, 0xff, sl);
        assert_int_equal(mh_verify(c->key, c->alg, d, dl, junk, sl), MH_EBADSIG);
        if (is_ec(c->alg)) {
            /* valid r with s = 0, and r = 0 with the valid s */
            memcpy(junk, sig.data, sl);
            memset(junk + sl / 2, 0, sl / 2);
            assert_int_equal(mh_verify(c->key, c->alg, d, dl, junk, sl), MH_EBADSIG);
            memcpy(junk, sig.data, sl);
            memset(junk, 0, sl / 2);
            assert_int_equal(mh_verify(c->key, c->alg, d, dl, junk, sl), MH_EBADSIG);
            /* r and s swapped */
            memcpy(junk, sig.data + sl / 2, sl / 2);
            memcpy(junk + sl / 2, sig.data, sl / 2);
            assert_int_equal(mh_verify(c->key, c->alg, d, dl, junk, sl), MH_EBADSIG);
        }

        /* wrong digest length, on both sides; sig_out untouched on failure */
        const size_t bad_len[] = {0, 1, 20, 28, 31, 33, 47, 49, 63, 65};
        for (size_t b = 0; b < sizeof bad_len / sizeof bad_len[0]; b++) {
            size_t bl = bad_len[b];
            uint8_t big[65] = {0};
            struct mh_buf out = {0};
            assert_int_equal(mh_sign(c->key, c->alg, big, bl, &out), MH_EDIGESTLEN);
            assert_int_equal(out.len, 0);
            assert_int_equal(mh_verify(c->key, c->alg, big, bl, sig.data, sl), MH_EDIGESTLEN);
        }
        /* the other algorithms' digest lengths too */
        for (size_t b = 0; b < 3; b++) {
            size_t bl = (size_t[]){32, 48, 64}[b];
            if (bl == dl)
                continue;
            uint8_t big[64] = {0};
            struct mh_buf out = {0};
            assert_int_equal(mh_sign(c->key, c->alg, big, bl, &out), MH_EDIGESTLEN);
            assert_int_equal(mh_verify(c->key, c->alg, big, bl, sig.data, sl), MH_EDIGESTLEN);
        }
        assert_int_equal(mh_sign(c->key, c->alg, NULL, 0, &sig), MH_EDIGESTLEN);

        /* public-only key: MH_ENOPRIVATE on sign, verify still works */
        struct mh_key *pub = public_only(c->key);
        struct mh_buf out = {0};
        assert_int_equal(mh_sign(pub, c->alg, d, dl, &out), MH_ENOPRIVATE);
        assert_int_equal(out.len, 0);
        assert_int_equal(mh_verify(pub, c->alg, d, dl, sig.data, sl), 0);
        /* order: fit before digest length before private */
        assert_int_equal(mh_sign(pub, c->alg, d, dl - 1, &out), MH_EDIGESTLEN);
        enum mh_alg wrong = is_ec(c->alg) ? MH_ALG_RS256 : MH_ALG_ES256;
        assert_int_equal(mh_sign(pub, wrong, d, dl - 1, &out), MH_EALGKEY);
        mh_key_free(pub);

        /* the same signature under the sibling padding (RS <-> PS) is invalid */
        if (!is_ec(c->alg)) {
            enum mh_alg sib =
                is_pss(c->alg) ? (enum mh_alg)(c->alg - 3) : (enum mh_alg)(c->alg + 3);
            assert_int_equal(mh_verify(c->key, sib, d, dl, sig.data, sl), MH_EBADSIG);
        }
        mh_buf_free(&sig);
    }
}

/* Signatures by one key do not verify under another key of the same kind. */
static void test_wrong_key_same_kind(void **state)
{
    (void)state;
    struct mh_key *other_rsa, *other_ec;
    assert_int_equal(mh_key_generate(MH_KTY_RSA, 2048, MH_CURVE_NONE, &other_rsa), 0);
    assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P256, &other_ec), 0);
    uint8_t d[32];
    random_digest(d, sizeof d);
    struct mh_buf sig = {0};
    assert_int_equal(mh_sign(rsa_keys[0], MH_ALG_PS256, d, 32, &sig), 0);
    assert_int_equal(mh_verify(other_rsa, MH_ALG_PS256, d, 32, sig.data, sig.len), MH_EBADSIG);
    mh_buf_free(&sig);
    assert_int_equal(mh_sign(ec_keys[0], MH_ALG_ES256, d, 32, &sig), 0);
    assert_int_equal(mh_verify(other_ec, MH_ALG_ES256, d, 32, sig.data, sig.len), MH_EBADSIG);
    mh_buf_free(&sig);
    mh_key_free(other_rsa);
    mh_key_free(other_ec);
}

/* Algorithm / key mismatches: wrong curve, wrong key type, oct keys,
 * non-signature algorithms; fit is checked before the digest length. */
static void test_alg_key_fit(void **state)
{
    (void)state;
    uint8_t d[64] = {0}, sig[512] = {0};
    struct mh_key *keys[N_RSA + N_EC + 1];
    size_t nk = 0;
    for (size_t i = 0; i < N_RSA; i++)
        keys[nk++] = rsa_keys[i];
    for (size_t i = 0; i < N_EC; i++)
        keys[nk++] = ec_keys[i];
    keys[nk++] = oct_key;
    for (size_t k = 0; k < nk; k++) {
        for (size_t a = 0; a < N_ALL_SIG; a++) {
            enum mh_alg alg = ALL_SIG_ALGS[a];
            bool fits;
            if (mh_key_kty(keys[k]) == MH_KTY_RSA)
                fits = !is_ec(alg);
            else if (mh_key_kty(keys[k]) == MH_KTY_EC)
                fits = is_ec(alg) && CURVE_ALG[mh_key_curve(keys[k]) - MH_CURVE_P256] == alg;
            else
                fits = false;
            if (fits)
                continue;
            size_t dl = dlen_of(alg), sl = mh_sign_len(keys[k]);
            struct mh_buf out = {0};
            assert_int_equal(mh_sign(keys[k], alg, d, dl, &out), MH_EALGKEY);
            assert_int_equal(out.len, 0);
            assert_int_equal(mh_verify(keys[k], alg, d, dl, sig, sl), MH_EALGKEY);
            /* fit first: a wrong digest length does not change the answer */
            assert_int_equal(mh_sign(keys[k], alg, d, 5, &out), MH_EALGKEY);
            assert_int_equal(mh_verify(keys[k], alg, d, 5, sig, sl), MH_EALGKEY);
        }
        const enum mh_alg non_sig[] = {MH_ALG_NONE,
                                       MH_ALG_RSA1_5,
                                       MH_ALG_RSA_OAEP,
                                       MH_ALG_RSA_OAEP_256,
                                       MH_ALG_A256GCM,
                                       MH_ALG_A256KW,
                                       MH_ALG_CKM_AES_KEY_WRAP_PAD,
                                       MH_ALG_COUNT_,
                                       (enum mh_alg)1000};
        for (size_t a = 0; a < sizeof non_sig / sizeof non_sig[0]; a++) {
            struct mh_buf out = {0};
            assert_int_equal(mh_sign(keys[k], non_sig[a], d, 32, &out), MH_EALGKEY);
            assert_int_equal(mh_verify(keys[k], non_sig[a], d, 32, sig, 64), MH_EALGKEY);
        }
    }
    struct mh_buf out = {0};
    assert_int_equal(mh_sign(NULL, MH_ALG_ES256, d, 32, &out), MH_EINVAL);
    assert_int_equal(mh_verify(NULL, MH_ALG_ES256, d, 32, sig, 64), MH_EINVAL);
    assert_int_equal(mh_sign(ec_keys[0], MH_ALG_ES256, NULL, 32, &out), MH_EINVAL);
    assert_int_equal(mh_verify(ec_keys[0], MH_ALG_ES256, d, 32, NULL, 64), MH_EINVAL);
}

/* More keys than cache slots, interleaved, with sign and verify on each: the
 * cache must never hand out another key's or another algorithm's context. */
static void test_cache_many_keys(void **state)
{
    (void)state;
    enum { NK = 2 * MH_SIGN_CACHE_SLOTS + 3 };
    struct mh_key *keys[NK];
    struct mh_buf sigs[NK];
    uint8_t d[32];
    random_digest(d, sizeof d);
    for (size_t i = 0; i < NK; i++) {
        assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P256, &keys[i]), 0);
        sigs[i] = (struct mh_buf){0};
    }
    for (int round = 0; round < 3; round++) {
        for (size_t j = 0; j < NK; j++) {
            /* forwards, backwards, and a stride that revisits recent keys */
            size_t i = round == 0 ? j : round == 1 ? NK - 1 - j : (j * 7) % NK;
            mh_buf_free(&sigs[i]);
            assert_int_equal(mh_sign(keys[i], MH_ALG_ES256, d, 32, &sigs[i]), 0);
            assert_int_equal(mh_verify(keys[i], MH_ALG_ES256, d, 32, sigs[i].data, 64), 0);
            size_t o = (i + 1) % NK;
            assert_int_equal(mh_verify(keys[o], MH_ALG_ES256, d, 32, sigs[i].data, 64), MH_EBADSIG);
        }
        for (size_t i = 0; i < NK; i++)
            assert_int_equal(mh_verify(keys[i], MH_ALG_ES256, d, 32, sigs[i].data, 64), 0);
    }
    /* one RSA key under RS256 and PS256 alternately: two contexts, never mixed */
    for (int k = 0; k < 4; k++) {
        enum mh_alg a = (k & 1) ? MH_ALG_PS256 : MH_ALG_RS256;
        enum mh_alg b = (k & 1) ? MH_ALG_RS256 : MH_ALG_PS256;
        struct mh_buf s = {0};
        assert_int_equal(mh_sign(rsa_keys[0], a, d, 32, &s), 0);
        assert_int_equal(mh_verify(rsa_keys[0], a, d, 32, s.data, s.len), 0);
        assert_int_equal(mh_verify(rsa_keys[0], b, d, 32, s.data, s.len), MH_EBADSIG);
        mh_buf_free(&s);
    }
    for (size_t i = 0; i < NK; i++) {
        mh_key_free(keys[i]);
        mh_buf_free(&sigs[i]);
    }
}

/* A key freed while this thread caches its contexts, then a new key: the new
 * key gets its own contexts (ids are not reused, even if the address is), and
 * the stale entry is harmless (ASan would see a use after free). */
static void test_cache_key_freed(void **state)
{
    (void)state;
    uint8_t d[32];
    random_digest(d, sizeof d);
    for (int round = 0; round < 3; round++) {
        struct mh_key *a, *b;
        assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P256, &a), 0);
        struct mh_buf sa = {0}, sb = {0};
        assert_int_equal(mh_sign(a, MH_ALG_ES256, d, 32, &sa), 0);
        assert_int_equal(mh_verify(a, MH_ALG_ES256, d, 32, sa.data, sa.len), 0);
        mh_key_free(a);
        assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P256, &b), 0);
        assert_int_equal(mh_sign(b, MH_ALG_ES256, d, 32, &sb), 0);
        assert_int_equal(mh_verify(b, MH_ALG_ES256, d, 32, sb.data, sb.len), 0);
        assert_int_equal(mh_verify(b, MH_ALG_ES256, d, 32, sa.data, sa.len), MH_EBADSIG);
        mh_key_free(b);
        mh_buf_free(&sa);
        mh_buf_free(&sb);
        if (round == 1)
            mh_sign_thread_cleanup(); /* and the cache restarts cleanly */
    }
    mh_sign_thread_cleanup();
    mh_sign_thread_cleanup(); /* idempotent */
}

struct worker {
    pthread_t th;
    unsigned seed;
    int failures;
    struct mh_buf sigs[4]; /* one per algorithm below, checked by the main thread */
};

static const enum mh_alg THREAD_ALGS[4] = {MH_ALG_RS256, MH_ALG_PS256, MH_ALG_ES256, MH_ALG_ES256K};
static struct mh_key *thread_key(size_t a)
{
    return a < 2 ? rsa_keys[0] : ec_keys[a - 2];
}
static const uint8_t THREAD_DIGEST[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (unsigned it = 0; it < 40; it++) {
        size_t a = (it + w->seed) % 4;
        struct mh_key *key = thread_key(a);
        uint8_t d[32];
        memcpy(d, THREAD_DIGEST, sizeof d);
        d[31] = (uint8_t)(it + w->seed * 64);
        struct mh_buf sig = {0};
        if (mh_sign(key, THREAD_ALGS[a], d, 32, &sig) != 0 ||
            mh_verify(key, THREAD_ALGS[a], d, 32, sig.data, sig.len) != 0)
            w->failures++;
        d[0] ^= 1;
        if (mh_verify(key, THREAD_ALGS[a], d, 32, sig.data, sig.len) != MH_EBADSIG)
            w->failures++;
        mh_buf_free(&sig);
    }
    for (size_t a = 0; a < 4; a++)
        if (mh_sign(thread_key(a), THREAD_ALGS[a], THREAD_DIGEST, 32, &w->sigs[a]) != 0)
            w->failures++;
    return NULL; /* the thread's cache is freed by the pthread key destructor */
}

/* 4 threads sign and verify with shared keys at once; each thread's
 * signatures also verify on the main thread. */
static void test_threads(void **state)
{
    (void)state;
    struct worker w[4];
    memset(w, 0, sizeof w);
    for (unsigned i = 0; i < 4; i++) {
        w[i].seed = i;
        assert_int_equal(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(w[i].th, NULL), 0);
        assert_int_equal(w[i].failures, 0);
        for (size_t a = 0; a < 4; a++) {
            assert_int_equal(mh_verify(thread_key(a), THREAD_ALGS[a], THREAD_DIGEST, 32,
                                       w[i].sigs[a].data, w[i].sigs[a].len),
                             0);
            mh_buf_free(&w[i].sigs[a]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_len),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_openssl_interop),
        cmocka_unit_test(test_bad_signatures),
        cmocka_unit_test(test_wrong_key_same_kind),
        cmocka_unit_test(test_alg_key_fit),
        cmocka_unit_test(test_cache_many_keys),
        cmocka_unit_test(test_cache_key_freed),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
