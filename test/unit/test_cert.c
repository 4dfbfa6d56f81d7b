#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "common/b64.h"
#include "crypto/cert.h"

static void gen(const char *name, const char *newkey)
{
    assert_int_equal(tu_sh("cd %s && openssl req -x509 -newkey %s -nodes -subj /CN=%s -days 30 "
                           "-keyout %s.key -out %s.pem",
                           tu_tmpdir(), newkey, name, name, name),
                     0);
}

static int setup(void **state)
{
    (void)state;
    gen("r2048", "rsa:2048");
    gen("r1024", "rsa:1024");
    gen("ec", "ec -pkeyopt ec_paramgen_curve:P-256");
    /* the same RSA key, encrypted PKCS#8 and traditional forms */
    if (tu_sh("cd %s && openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:pw -in r2048.key -out "
              "enc.key && "
              "openssl rsa -traditional -in r2048.key -out trad.key 2>/dev/null && "
              "openssl x509 -in r2048.pem -outform DER -out r2048.der && "
              "openssl dgst -sha256 -binary -out r2048.sha r2048.der && "
              "openssl pkey -in r2048.key -pubout -out r2048.pub",
              tu_tmpdir()) != 0)
        return -1;
    return 0;
}

static void test_rsa_cert(void **state)
{
    (void)state;
    struct mh_buf pem = {0}, der = {0}, sha = {0}, want = {0};
    tu_read_tmp("r2048.pem", &pem);
    tu_read_tmp("r2048.der", &der);
    tu_read_tmp("r2048.sha", &sha);
    assert_int_equal(mh_b64url_encode(sha.data, sha.len, &want), 0);
    struct mh_cert *c = NULL, *c2 = NULL;
    assert_int_equal(mh_cert_from_pem(pem.data, pem.len, &c), 0);
    assert_int_equal(mh_cert_bits(c), 2048);
    assert_int_equal(strlen(mh_cert_x5t_s256(c)), MH_CERT_X5T_LEN);
    assert_string_equal(mh_cert_x5t_s256(c), (const char *)want.data);
    struct mh_slice d = mh_cert_der(c);
    assert_int_equal(d.len, der.len);
    assert_memory_equal(d.p, der.data, der.len);
    assert_true(EVP_PKEY_is_a(mh_cert_pkey(c), "RSA"));
    assert_int_equal(mh_cert_from_der(der.data, der.len, &c2), 0);
    assert_string_equal(mh_cert_x5t_s256(c2), mh_cert_x5t_s256(c));
    mh_cert_free(c2);

    /* DER with a trailing byte, truncated DER */
    assert_int_equal(mh_buf_append_u8(&der, 0), 0);
    assert_int_equal(mh_cert_from_der(der.data, der.len, &c2), MH_ECERT);
    assert_int_equal(mh_cert_from_der(der.data, der.len - 2, &c2), MH_ECERT);
    assert_int_equal(mh_cert_from_der(der.data, 0, &c2), MH_ECERT);

    /* private key: plain, traditional, encrypted with and without password */
    struct mh_buf k = {0};
    EVP_PKEY *pk = NULL;
    tu_read_tmp("r2048.key", &k);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), 0);
    assert_true(mh_cert_matches_key(c, pk));
    EVP_PKEY_free(pk);
    mh_buf_free(&k);
    tu_read_tmp("trad.key", &k);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), 0);
    assert_true(mh_cert_matches_key(c, pk));
    EVP_PKEY_free(pk);
    mh_buf_free(&k);
    tu_read_tmp("enc.key", &k);
    assert_non_null(strstr((const char *)k.data, "ENCRYPTED PRIVATE KEY"));
    struct mh_secret pw = {0}, wrong = {0};
    assert_int_equal(mh_secret_dup(&pw, "pw", 2), 0);
    assert_int_equal(mh_secret_dup(&wrong, "px", 2), 0);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), MH_EPEM);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, &wrong, &pk), MH_EPEM);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, &pw, &pk), 0);
    assert_true(mh_cert_matches_key(c, pk));
    EVP_PKEY_free(pk);
    mh_secret_free(&pw);
    mh_secret_free(&wrong);
    mh_buf_free(&k);

    /* a key that is not the certificate's */
    tu_read_tmp("ec.key", &k);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), MH_EUNSUPPORTED);
    mh_buf_free(&k);
    tu_read_tmp("r1024.key", &k);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), MH_EWEAKKEY);
    mh_buf_free(&k);
    /* certificate PEM is not a private key, nor is a public key */
    assert_int_equal(mh_cert_private_key_from_pem(pem.data, pem.len, NULL, &pk), MH_EPEM);
    tu_read_tmp("r2048.pub", &k);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), MH_EPEM);
    /* a key followed by other text: refused, not half-read */
    mh_buf_free(&k);
    tu_read_tmp("r2048.key", &k);
    assert_int_equal(mh_buf_append_str(&k, "trailing text\n"), 0);
    assert_int_equal(mh_cert_private_key_from_pem(k.data, k.len, NULL, &pk), MH_EPEM);
    mh_buf_free(&k);

    mh_cert_free(c);
    mh_buf_free(&pem);
    mh_buf_free(&der);
    mh_buf_free(&sha);
    mh_buf_free(&want);
}

static void test_rejected_certs(void **state)
{
    (void)state;
    struct mh_buf pem = {0}, b = {0}, two = {0}, k = {0};
    struct mh_cert *c = NULL;
    tu_read_tmp("r1024.pem", &b);
    assert_int_equal(mh_cert_from_pem(b.data, b.len, &c), MH_EWEAKKEY);
    mh_buf_free(&b);
    tu_read_tmp("ec.pem", &b);
    assert_int_equal(mh_cert_from_pem(b.data, b.len, &c), MH_ECERT);
    mh_buf_free(&b);

    tu_read_tmp("r2048.pem", &pem);
    /* two certificates; certificate followed by a key */
    assert_int_equal(mh_buf_append(&two, pem.data, pem.len), 0);
    assert_int_equal(mh_buf_append(&two, pem.data, pem.len), 0);
    assert_int_equal(mh_cert_from_pem(two.data, two.len, &c), MH_ECERT);
    mh_buf_free(&two);
    tu_read_tmp("r2048.key", &k);
    assert_int_equal(mh_buf_append(&two, pem.data, pem.len), 0);
    assert_int_equal(mh_buf_append(&two, k.data, k.len), 0);
    assert_int_equal(mh_cert_from_pem(two.data, two.len, &c), MH_ECERT);
    /* a key alone, and two keys for the private-key reader */
    assert_int_equal(mh_cert_from_pem(k.data, k.len, &c), MH_ECERT);
    mh_buf_free(&two);
    assert_int_equal(mh_buf_append(&two, k.data, k.len), 0);
    assert_int_equal(mh_buf_append(&two, k.data, k.len), 0);
    EVP_PKEY *pk = NULL;
    assert_int_equal(mh_cert_private_key_from_pem(two.data, two.len, NULL, &pk), MH_EPEM);
    mh_buf_free(&two);
    mh_buf_free(&k);

    /* text around the block is fine */
    assert_int_equal(mh_buf_append_str(&two, "subject=CN = r2048\n"), 0);
    assert_int_equal(mh_buf_append(&two, pem.data, pem.len), 0);
    assert_int_equal(mh_cert_from_pem(two.data, two.len, &c), 0);
    mh_cert_free(c);
    mh_buf_free(&two);

    /* every truncation fails cleanly */
    for (size_t n = 0; n < pem.len; n += 7)
        assert_int_not_equal(mh_cert_from_pem(pem.data, n, &c), 0);
    /* a flipped body character: base64 still decodes, DER breaks or the
     * signature bytes change; either way no crash, and the thumbprint
     * differs if it parses */
    assert_int_equal(mh_buf_append(&b, pem.data, pem.len), 0);
    b.data[100] = b.data[100] == 'A' ? 'B' : 'A';
    int rv = mh_cert_from_pem(b.data, b.len, &c);
    if (rv == 0) {
        struct mh_cert *orig = NULL;
        assert_int_equal(mh_cert_from_pem(pem.data, pem.len, &orig), 0);
        assert_string_not_equal(mh_cert_x5t_s256(c), mh_cert_x5t_s256(orig));
        mh_cert_free(orig);
        mh_cert_free(c);
    }
    mh_buf_free(&b);
    /* garbage, empty, oversized */
    assert_int_equal(mh_cert_from_pem((const uint8_t *)"garbage\x01\xff", 9, &c), MH_ECERT);
    assert_int_equal(mh_cert_from_pem((const uint8_t *)"", 0, &c), MH_ECERT);
    static uint8_t big[MH_CERT_MAX_LEN + 1];
    assert_int_equal(mh_cert_from_pem(big, sizeof big, &c), MH_ETOOBIG);
    assert_int_equal(mh_cert_private_key_from_pem(big, sizeof big, NULL, &pk), MH_ETOOBIG);
    /* a CERTIFICATE block whose body is not a certificate */
    const char *fake = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_int_equal(mh_cert_from_pem((const uint8_t *)fake, strlen(fake), &c), MH_ECERT);
    mh_buf_free(&pem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_cert),
        cmocka_unit_test(test_rejected_certs),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
