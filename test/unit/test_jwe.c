#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "common/b64.h"
#include "crypto/jwe.h"

static EVP_PKEY *rsa_key;

static int setup(void **state)
{
    (void)state;
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    return rsa_key == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa_key);
    return 0;
}

static void cek_of(struct mh_secret *cek, uint8_t seed)
{
    assert_int_equal(mh_secret_alloc(cek, 64), 0);
    for (int i = 0; i < 64; i++)
        cek->data[i] = (uint8_t)(seed + i);
}

/* RFC 7518 Appendix B.3, AES_256_CBC_HMAC_SHA_512. */
static void test_rfc7518_b3(void **state)
{
    (void)state;
    static const char P[] = "A cipher system must not be required to be secret, and it must be "
                            "able to fall into the hands of the enemy without inconvenience";
    static const char A[] = "The second principle of Auguste Kerckhoffs";
    uint8_t iv[16], E[144], T[32];
    tu_unhex("1af38c2dc2b96ffdd86694092341bc04", iv, sizeof iv);
    tu_unhex("4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd"
             "822c301dd67c373bccb584ad3e9279c2e6d12a1374b77f077553df829410446b"
             "36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3"
             "a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950b"
             "be2638d09dd7a4930930806d0703b1f6",
             E, sizeof E);
    tu_unhex("4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5", T, sizeof T);
    struct mh_secret k = {0};
    cek_of(&k, 0); /* 00 01 .. 3f */
    struct mh_buf ct = {0};
    uint8_t tag[32];
    assert_int_equal(mh_jwe_a256cbc_hs512_encrypt(&k, iv, (const uint8_t *)A, strlen(A),
                                                  (const uint8_t *)P, strlen(P), &ct, tag),
                     0);
    assert_int_equal(ct.len, sizeof E);
    assert_memory_equal(ct.data, E, sizeof E);
    assert_memory_equal(tag, T, 32);

    struct mh_secret pt = {0};
    assert_int_equal(
        mh_jwe_a256cbc_hs512_decrypt(&k, iv, (const uint8_t *)A, strlen(A), E, sizeof E, T, &pt),
        0);
    assert_int_equal(pt.len, strlen(P));
    assert_memory_equal(pt.data, P, pt.len);
    mh_secret_free(&pt);
    /* AAD, IV, CT and tag each take part in the tag */
    uint8_t bad[144];
    memcpy(bad, E, sizeof E);
    bad[143] ^= 1;
    assert_int_equal(mh_jwe_a256cbc_hs512_decrypt(&k, iv, (const uint8_t *)A, strlen(A), bad,
                                                  sizeof bad, T, &pt),
                     MH_EAUTH);
    assert_int_equal(mh_jwe_a256cbc_hs512_decrypt(&k, iv, (const uint8_t *)A, strlen(A) - 1, E,
                                                  sizeof E, T, &pt),
                     MH_EAUTH);
    iv[0] ^= 0x80;
    assert_int_equal(
        mh_jwe_a256cbc_hs512_decrypt(&k, iv, (const uint8_t *)A, strlen(A), E, sizeof E, T, &pt),
        MH_EAUTH);
    iv[0] ^= 0x80;
    T[31] ^= 1;
    assert_int_equal(
        mh_jwe_a256cbc_hs512_decrypt(&k, iv, (const uint8_t *)A, strlen(A), E, sizeof E, T, &pt),
        MH_EAUTH);
    assert_null(pt.data);
    assert_int_equal(mh_jwe_a256cbc_hs512_decrypt(&k, iv, NULL, 0, E, 17, T, &pt), MH_EINPUTLEN);
    mh_buf_free(&ct);
    mh_secret_free(&k);
}

static void test_dir_roundtrip_and_header(void **state)
{
    (void)state;
    struct mh_secret cek = {0}, other = {0}, pt = {0};
    cek_of(&cek, 7);
    cek_of(&other, 8);
    for (size_t n = 0; n <= 33; n += 11) {
        uint8_t msg[40];
        memset(msg, 0x5a, sizeof msg);
        struct mh_buf j = {0};
        assert_int_equal(mh_jwe_encrypt_dir(&cek, "item-1", 6, msg, n, &j), 0);
        /* header exactly as the Azure CLI writes it */
        const char *dot = memchr(j.data, '.', j.len);
        assert_non_null(dot);
        struct mh_buf h = {0};
        assert_int_equal(
            mh_b64url_decode((const char *)j.data, (size_t)(dot - (const char *)j.data), &h), 0);
        const char *want = "{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\",\"kid\":\"item-1\"}";
        assert_int_equal(h.len, strlen(want));
        assert_memory_equal(h.data, want, h.len);
        assert_int_equal(dot[1], '.'); /* empty encrypted key */
        mh_buf_free(&h);
        assert_int_equal(mh_jwe_decrypt_dir((const char *)j.data, j.len, &cek, &pt), 0);
        assert_int_equal(pt.len, n);
        if (n)
            assert_memory_equal(pt.data, msg, n);
        mh_secret_free(&pt);
        assert_int_equal(mh_jwe_decrypt_dir((const char *)j.data, j.len, &other, &pt), MH_EAUTH);
        /* a dir JWE is not an RSA JWE */
        assert_int_equal(mh_jwe_decrypt_rsa((const char *)j.data, j.len, rsa_key, &pt), MH_EJWE);
        mh_buf_free(&j);
    }
    /* non-ASCII kid is escaped, not emitted raw */
    struct mh_buf j = {0}, h = {0};
    assert_int_equal(mh_jwe_encrypt_dir(&cek, "t\xc3\xa9\"", 4, (const uint8_t *)"x", 1, &j), 0);
    const char *dot = memchr(j.data, '.', j.len);
    assert_int_equal(
        mh_b64url_decode((const char *)j.data, (size_t)(dot - (const char *)j.data), &h), 0);
    const char *want =
        "{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\",\"kid\":\"t\\u00E9\\\"\"}"; /* jansson:
                                                                                   upper-case hex */
    assert_int_equal(h.len, strlen(want));
    assert_memory_equal(h.data, want, h.len);
    mh_buf_free(&h);
    mh_buf_free(&j);
    assert_int_equal(mh_jwe_encrypt_dir(&cek, "\xff", 1, (const uint8_t *)"x", 1, &j), MH_EINVAL);
    assert_int_equal(mh_jwe_encrypt_dir(&cek, "", 0, (const uint8_t *)"x", 1, &j), MH_EINVAL);
    mh_secret_free(&cek);
    mh_secret_free(&other);
}

static void make_rsa_jwe(struct mh_buf *j, const char *msg)
{
    assert_int_equal(mh_jwe_encrypt_rsa(rsa_key, (const uint8_t *)msg, strlen(msg), j), 0);
}

static void test_rsa_roundtrip_and_header(void **state)
{
    (void)state;
    struct mh_buf j = {0}, h = {0};
    make_rsa_jwe(&j, "share bytes");
    const char *dot = memchr(j.data, '.', j.len);
    assert_int_equal(
        mh_b64url_decode((const char *)j.data, (size_t)(dot - (const char *)j.data), &h), 0);
    const char *want = "{\"alg\":\"RSA-OAEP-256\",\"enc\":\"A256CBC-HS512\",\"kid\":\"not used\"}";
    assert_int_equal(h.len, strlen(want));
    assert_memory_equal(h.data, want, h.len);
    mh_buf_free(&h);
    struct mh_secret pt = {0};
    assert_int_equal(mh_jwe_decrypt_rsa((const char *)j.data, j.len, rsa_key, &pt), 0);
    assert_int_equal(pt.len, 11);
    assert_memory_equal(pt.data, "share bytes", 11);
    mh_secret_free(&pt);
    /* another key cannot unwrap */
    EVP_PKEY *k2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(k2);
    assert_int_equal(mh_jwe_decrypt_rsa((const char *)j.data, j.len, k2, &pt), MH_EDECRYPT);
    EVP_PKEY_free(k2);
    /* an RSA JWE is not a dir JWE */
    struct mh_secret cek = {0};
    cek_of(&cek, 1);
    assert_int_equal(mh_jwe_decrypt_dir((const char *)j.data, j.len, &cek, &pt), MH_EJWE);
    mh_secret_free(&cek);
    mh_buf_free(&j);
    /* non-RSA keys refused */
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_int_equal(mh_jwe_encrypt_rsa(ec, (const uint8_t *)"x", 1, &j), MH_EINVAL);
    EVP_PKEY_free(ec);
}

/* Positions of the four dots. */
static void dots(const struct mh_buf *j, size_t d[4])
{
    size_t k = 0;
    for (size_t i = 0; i < j->len; i++)
        if (j->data[i] == '.') {
            assert_true(k < 4);
            d[k++] = i;
        }
    assert_int_equal(k, 4);
}

static int decrypt_str(const char *s, size_t n)
{
    struct mh_secret pt = {0};
    int rv = mh_jwe_decrypt_rsa(s, n, rsa_key, &pt);
    if (rv == 0)
        mh_secret_free(&pt);
    assert_null(pt.data);
    return rv;
}

/* Swap one base64url character in the middle of part |p| for another. */
static int tamper_part(const struct mh_buf *j, int p)
{
    size_t d[4];
    dots(j, d);
    size_t start = p == 0 ? 0 : d[p - 1] + 1, end = p == 4 ? j->len : d[p];
    size_t at = start + (end - start) / 2;
    char *c = malloc(j->len);
    memcpy(c, j->data, j->len);
    c[at] = c[at] == 'A' ? 'B' : 'A';
    int rv = decrypt_str(c, j->len);
    free(c);
    return rv;
}

static void test_tamper_each_part(void **state)
{
    (void)state;
    struct mh_buf j = {0};
    make_rsa_jwe(&j, "0123456789abcdef0123456789abcdef");
    /* header: either no longer JSON or a different AAD */
    int rv = tamper_part(&j, 0);
    assert_true(rv == MH_EJWE || rv == MH_EAUTH);
    assert_int_equal(tamper_part(&j, 1), MH_EDECRYPT);
    assert_int_equal(tamper_part(&j, 2), MH_EAUTH);
    assert_int_equal(tamper_part(&j, 3), MH_EAUTH);
    assert_int_equal(tamper_part(&j, 4), MH_EAUTH);

    /* same header JSON, different encoding (re-serialized with a space):
     * the AAD is the encoded header, so the tag must fail */
    size_t d[4];
    dots(&j, d);
    struct mh_buf h2 = {0}, c = {0};
    const char *hj = "{\"alg\":\"RSA-OAEP-256\", \"enc\":\"A256CBC-HS512\",\"kid\":\"not used\"}";
    assert_int_equal(mh_b64url_encode((const uint8_t *)hj, strlen(hj), &h2), 0);
    assert_int_equal(mh_buf_append(&c, h2.data, h2.len), 0);
    assert_int_equal(mh_buf_append(&c, j.data + d[0], j.len - d[0]), 0);
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EAUTH);
    mh_buf_free(&c);
    mh_buf_free(&h2);
    mh_buf_free(&j);
}

static void test_structure(void **state)
{
    (void)state;
    struct mh_buf j = {0};
    make_rsa_jwe(&j, "payload");
    /* every truncation fails, none crashes */
    for (size_t n = 0; n < j.len; n++)
        assert_int_not_equal(decrypt_str((const char *)j.data, n), 0);
    /* extra dot / part, missing part */
    struct mh_buf c = {0};
    assert_int_equal(mh_buf_append(&c, j.data, j.len), 0);
    assert_int_equal(mh_buf_append_str(&c, ".AAAA"), 0);
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EJWE);
    mh_buf_free(&c);
    assert_int_equal(mh_buf_append(&c, j.data, j.len), 0);
    assert_int_equal(mh_buf_append_str(&c, "."), 0);
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EJWE);
    mh_buf_free(&c);
    size_t d[4];
    dots(&j, d);
    assert_int_equal(decrypt_str((const char *)j.data, d[3]), MH_EJWE); /* four parts */
    /* bad base64url in the ciphertext part: '+' and padding */
    assert_int_equal(mh_buf_append(&c, j.data, j.len), 0);
    c.data[d[2] + 2] = '+';
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EBASE64);
    mh_buf_free(&c);
    assert_int_equal(mh_buf_append(&c, j.data, d[3]), 0);
    assert_int_equal(mh_buf_append_str(&c, "=="), 0);
    assert_int_equal(mh_buf_append(&c, j.data + d[3], j.len - d[3]), 0);
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EBASE64);
    mh_buf_free(&c);
    /* RSA with an empty encrypted key */
    assert_int_equal(mh_buf_append(&c, j.data, d[0] + 1), 0);
    assert_int_equal(mh_buf_append(&c, j.data + d[1], j.len - d[1]), 0);
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EJWE);
    mh_buf_free(&c);
    /* garbage and an empty string */
    assert_int_equal(decrypt_str("....", 4), MH_EJWE);
    assert_int_equal(decrypt_str("", 0), MH_EJWE);
    assert_int_equal(decrypt_str("\x01\x02.\xff...", 7), MH_EBASE64);
    mh_buf_free(&j);
}

/* Builds a dir JWE with an arbitrary header and a *valid* tag, so header
 * checks are shown to run on their own, not by the tag failing. */
static void make_custom(const char *hjson, const struct mh_secret *cek, size_t iv_len,
                        const char *ek, struct mh_buf *out)
{
    struct mh_buf h = {0}, ct = {0};
    uint8_t iv[16] = {1, 2, 3}, tag[32];
    assert_int_equal(mh_b64url_encode((const uint8_t *)hjson, strlen(hjson), &h), 0);
    assert_int_equal(
        mh_jwe_a256cbc_hs512_encrypt(cek, iv, h.data, h.len, (const uint8_t *)"hi", 2, &ct, tag),
        0);
    assert_int_equal(mh_buf_append(out, h.data, h.len), 0);
    assert_int_equal(mh_buf_append_str(out, "."), 0);
    assert_int_equal(mh_buf_append_str(out, ek), 0);
    assert_int_equal(mh_buf_append_str(out, "."), 0);
    assert_int_equal(mh_b64url_encode(iv, iv_len, out), 0);
    assert_int_equal(mh_buf_append_str(out, "."), 0);
    assert_int_equal(mh_b64url_encode(ct.data, ct.len, out), 0);
    assert_int_equal(mh_buf_append_str(out, "."), 0);
    assert_int_equal(mh_b64url_encode(tag, 32, out), 0);
    mh_buf_free(&h);
    mh_buf_free(&ct);
}

static int dir_custom(const char *hjson, size_t iv_len, const char *ek)
{
    struct mh_secret cek = {0}, pt = {0};
    cek_of(&cek, 3);
    struct mh_buf j = {0};
    make_custom(hjson, &cek, iv_len, ek, &j);
    int rv = mh_jwe_decrypt_dir((const char *)j.data, j.len, &cek, &pt);
    if (rv == 0) {
        assert_int_equal(pt.len, 2);
        assert_memory_equal(pt.data, "hi", 2);
    }
    mh_secret_free(&pt);
    mh_secret_free(&cek);
    mh_buf_free(&j);
    return rv;
}

static void test_header_validation(void **state)
{
    (void)state;
    /* accepted: minimal header, kid optional, unknown members ignored */
    assert_int_equal(dir_custom("{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\"}", 16, ""), 0);
    assert_int_equal(dir_custom("{\"enc\":\"A256CBC-HS512\",\"alg\":\"dir\",\"x\":[1]}", 16, ""),
                     0);
    /* refused */
    static const char *const bad[] = {
        "not json",
        "[\"alg\",\"dir\"]",
        "\"dir\"",
        "{}",
        "{\"alg\":\"dir\"}",
        "{\"enc\":\"A256CBC-HS512\"}",
        "{\"alg\":1,\"enc\":\"A256CBC-HS512\"}",
        "{\"alg\":\"dir\",\"enc\":null}",
        "{\"alg\":\"dir\",\"enc\":[\"A256CBC-HS512\"]}",
        "{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\",\"kid\":5}",
        "{\"alg\":\"dir\",\"enc\":\"A128CBC-HS256\"}",
        "{\"alg\":\"dir\",\"enc\":\"A256GCM\"}",
        "{\"alg\":\"DIR\",\"enc\":\"A256CBC-HS512\"}",
        "{\"alg\":\"A256KW\",\"enc\":\"A256CBC-HS512\"}",
        "{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\",\"zip\":\"DEF\"}",
        "{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\",\"crit\":[\"exp\"]}",
        "{\"alg\":\"dir\",\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\"}",
        "{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rv = dir_custom(bad[i], 16, "");
        if (rv != MH_EJWE)
            fail_msg("header %s: got %s", bad[i], mh_errname(rv));
    }
    /* RSA alg in a JWE given to the dir decrypter; RSA1_5 refused outright */
    assert_int_equal(dir_custom("{\"alg\":\"RSA-OAEP-256\",\"enc\":\"A256CBC-HS512\"}", 16, "AAAA"),
                     MH_EJWE);
    assert_int_equal(dir_custom("{\"alg\":\"RSA1_5\",\"enc\":\"A256CBC-HS512\"}", 16, "AAAA"),
                     MH_EJWE);
    /* dir with a non-empty encrypted key, short IV */
    assert_int_equal(dir_custom("{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\"}", 16, "AAAA"),
                     MH_EJWE);
    assert_int_equal(dir_custom("{\"alg\":\"dir\",\"enc\":\"A256CBC-HS512\"}", 12, ""), MH_EJWE);
}

static void test_oversized(void **state)
{
    (void)state;
    size_t n = (size_t)MH_JWE_MAX_LEN + 1;
    char *big = malloc(n);
    memset(big, 'A', n);
    big[10] = big[20] = big[30] = big[40] = '.';
    assert_int_equal(decrypt_str(big, n), MH_EJWE);
    free(big);
    /* a header above the bound */
    struct mh_buf c = {0};
    for (int i = 0; i < 6000; i++)
        assert_int_equal(mh_buf_append_str(&c, "A"), 0);
    assert_int_equal(
        mh_buf_append_str(&c, ".AAAA.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.AAAA"), 0);
    assert_int_equal(decrypt_str((const char *)c.data, c.len), MH_EJWE);
    mh_buf_free(&c);
}

/* Decrypt one of our RSA JWEs step by step with the openssl command line:
 * pkeyutl for the CEK, dgst HMAC for the tag, enc for the content. */
static void test_openssl_cli_interop(void **state)
{
    (void)state;
    const char *msg = "interop check: security domain share";
    struct mh_buf j = {0};
    make_rsa_jwe(&j, msg);
    size_t d[4];
    dots(&j, d);
    char path[4096];
    struct mh_buf ek = {0}, iv = {0}, ct = {0}, tag = {0};
    assert_int_equal(mh_b64url_decode((const char *)j.data + d[0] + 1, d[1] - d[0] - 1, &ek), 0);
    assert_int_equal(mh_b64url_decode((const char *)j.data + d[1] + 1, d[2] - d[1] - 1, &iv), 0);
    assert_int_equal(mh_b64url_decode((const char *)j.data + d[2] + 1, d[3] - d[2] - 1, &ct), 0);
    assert_int_equal(mh_b64url_decode((const char *)j.data + d[3] + 1, j.len - d[3] - 1, &tag), 0);
    tu_path(path, sizeof path, "k.pem");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, rsa_key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    tu_path(path, sizeof path, "ek.bin");
    tu_write_file(path, ek.data, ek.len);
    tu_path(path, sizeof path, "ct.bin");
    tu_write_file(path, ct.data, ct.len);
    /* mac input: AAD || IV || CT || AL */
    struct mh_buf macin = {0};
    assert_int_equal(mh_buf_append(&macin, j.data, d[0]), 0);
    assert_int_equal(mh_buf_append(&macin, iv.data, iv.len), 0);
    assert_int_equal(mh_buf_append(&macin, ct.data, ct.len), 0);
    assert_int_equal(mh_buf_append_u64be(&macin, (uint64_t)d[0] * 8), 0);
    tu_path(path, sizeof path, "macin.bin");
    tu_write_file(path, macin.data, macin.len);
    const char *t = tu_tmpdir();
    assert_int_equal(
        tu_sh("cd %s && openssl pkeyutl -decrypt -inkey k.pem -pkeyopt rsa_padding_mode:oaep "
              "-pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in ek.bin -out cek.bin",
              t),
        0);
    struct mh_buf cek = {0};
    tu_path(path, sizeof path, "cek.bin");
    tu_read_file(path, &cek);
    assert_int_equal(cek.len, 64);
    char mac_hex[65], enc_hex[65], iv_hex[33];
    for (int i = 0; i < 32; i++) {
        snprintf(mac_hex + 2 * i, 3, "%02x", cek.data[i]);
        snprintf(enc_hex + 2 * i, 3, "%02x", cek.data[32 + i]);
    }
    for (int i = 0; i < 16; i++)
        snprintf(iv_hex + 2 * i, 3, "%02x", iv.data[i]);
    assert_int_equal(tu_sh("cd %s && openssl dgst -sha512 -mac HMAC -macopt hexkey:%s -binary -out "
                           "mac.bin macin.bin",
                           t, mac_hex),
                     0);
    assert_int_equal(
        tu_sh("cd %s && openssl enc -d -aes-256-cbc -K %s -iv %s -in ct.bin -out pt.bin", t,
              enc_hex, iv_hex),
        0);
    struct mh_buf mac = {0}, pt = {0};
    tu_path(path, sizeof path, "mac.bin");
    tu_read_file(path, &mac);
    tu_path(path, sizeof path, "pt.bin");
    tu_read_file(path, &pt);
    assert_int_equal(mac.len, 64);
    assert_memory_equal(mac.data, tag.data, 32);
    assert_int_equal(pt.len, strlen(msg));
    assert_memory_equal(pt.data, msg, pt.len);
    mh_buf_free(&ek);
    mh_buf_free(&iv);
    mh_buf_free(&ct);
    mh_buf_free(&tag);
    mh_buf_free(&macin);
    mh_buf_free(&cek);
    mh_buf_free(&mac);
    mh_buf_free(&pt);
    mh_buf_free(&j);
}

/* RSA-OAEP (SHA-1) JWEs, which the CLI can also read, decrypt too: built
 * here with the openssl command line wrapping a known CEK. */
static void test_rsa_oaep_sha1_decrypt(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "k1.pem");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, rsa_key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    struct mh_secret cek = {0};
    cek_of(&cek, 9);
    tu_path(path, sizeof path, "cek1.bin");
    tu_write_file(path, cek.data, 64);
    assert_int_equal(
        tu_sh("cd %s && openssl pkeyutl -encrypt -inkey k1.pem -pkeyopt rsa_padding_mode:oaep "
              "-in cek1.bin -out ek1.bin",
              tu_tmpdir()),
        0);
    struct mh_buf ekraw = {0}, ekb = {0};
    tu_path(path, sizeof path, "ek1.bin");
    tu_read_file(path, &ekraw);
    assert_int_equal(mh_b64url_encode(ekraw.data, ekraw.len, &ekb), 0);
    struct mh_buf j = {0};
    make_custom("{\"alg\":\"RSA-OAEP\",\"enc\":\"A256CBC-HS512\"}", &cek, 16,
                (const char *)ekb.data, &j);
    struct mh_secret pt = {0};
    assert_int_equal(mh_jwe_decrypt_rsa((const char *)j.data, j.len, rsa_key, &pt), 0);
    assert_int_equal(pt.len, 2);
    assert_memory_equal(pt.data, "hi", 2);
    mh_secret_free(&pt);
    mh_buf_free(&j);
    /* the same wrapped key labelled RSA-OAEP-256 must not unwrap */
    make_custom("{\"alg\":\"RSA-OAEP-256\",\"enc\":\"A256CBC-HS512\"}", &cek, 16,
                (const char *)ekb.data, &j);
    assert_int_equal(mh_jwe_decrypt_rsa((const char *)j.data, j.len, rsa_key, &pt), MH_EDECRYPT);
    mh_buf_free(&j);
    mh_buf_free(&ekraw);
    mh_buf_free(&ekb);
    mh_secret_free(&cek);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7518_b3),
        cmocka_unit_test(test_dir_roundtrip_and_header),
        cmocka_unit_test(test_rsa_roundtrip_and_header),
        cmocka_unit_test(test_tamper_each_part),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_header_validation),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_openssl_cli_interop),
        cmocka_unit_test(test_rsa_oaep_sha1_decrypt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
