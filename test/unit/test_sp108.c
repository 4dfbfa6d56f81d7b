#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "crypto/sp108.h"

/* Known answer from the Azure CLI's security_domain/sp800_108.py. */
static void test_kat_cli(void **state)
{
    (void)state;
    uint8_t key[32], want[32];
    memset(key, 0x41, sizeof key);
    tu_unhex("f0ca51f6308791404bf68b56024ee7c64d6c737716f81d47e1e68b5c4e399575", want, sizeof want);
    struct mh_secret out = {0};
    assert_int_equal(mh_sp108_derive(key, 32, (const uint8_t *)"label", 5,
                                     (const uint8_t *)"context", 7, 32, &out),
                     0);
    assert_int_equal(out.len, 32);
    assert_memory_equal(out.data, want, 32);
    mh_secret_free(&out);
}

/* The SD's use (L = 512) is one HMAC block: compare against the openssl
 * command line computing HMAC-SHA-512 over [1] || label || 0 || "" || [512]. */
static void test_l512_against_openssl(void **state)
{
    (void)state;
    uint8_t key[32];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(i * 7 + 1);
    char msgpath[4096], outpath[4096];
    tu_path(msgpath, sizeof msgpath, "sp108.msg");
    tu_path(outpath, sizeof outpath, "sp108.out");
    static const uint8_t msg[] = {0, 0, 0, 1, 't', 'a', 'g', '1', 0, 0, 0, 0x02, 0x00};
    tu_write_file(msgpath, msg, sizeof msg);
    char hexkey[65];
    for (int i = 0; i < 32; i++)
        snprintf(hexkey + 2 * i, 3, "%02x", key[i]);
    assert_int_equal(tu_sh("openssl dgst -sha512 -mac HMAC -macopt hexkey:%s -binary -out %s %s",
                           hexkey, outpath, msgpath),
                     0);
    struct mh_buf ref = {0};
    tu_read_file(outpath, &ref);
    assert_int_equal(ref.len, 64);
    struct mh_secret out = {0};
    assert_int_equal(mh_sp108_derive(key, 32, (const uint8_t *)"tag1", 4, NULL, 0, 64, &out), 0);
    assert_memory_equal(out.data, ref.data, 64);
    mh_secret_free(&out);
    mh_buf_free(&ref);
}

/* Multi-block output: block i uses counter i and the same L; prefix property
 * does not hold across different L (L is an input), which is checked too. */
static void test_multiblock(void **state)
{
    (void)state;
    uint8_t key[16] = {1, 2, 3};
    struct mh_secret a = {0}, b = {0};
    assert_int_equal(
        mh_sp108_derive(key, 16, (const uint8_t *)"L", 1, (const uint8_t *)"C", 1, 150, &a), 0);
    assert_int_equal(a.len, 150);
    uint8_t bits[4] = {0, 0, 0x04, 0xb0}; /* 1200 */
    for (uint8_t i = 1; i <= 3; i++) {
        uint8_t ctr[4] = {0, 0, 0, i};
        uint8_t z = 0, mac[64];
        struct mh_slice parts[5] = {mh_slice_of(ctr, 4), mh_slice_of("L", 1), mh_slice_of(&z, 1),
                                    mh_slice_of("C", 1), mh_slice_of(bits, 4)};
        assert_int_equal(mh_hmac_sha512(key, 16, parts, 5, mac), 0);
        size_t off = (size_t)(i - 1) * 64, n = i == 3 ? 22 : 64;
        assert_memory_equal(a.data + off, mac, n);
    }
    assert_int_equal(
        mh_sp108_derive(key, 16, (const uint8_t *)"L", 1, (const uint8_t *)"C", 1, 64, &b), 0);
    assert_memory_not_equal(a.data, b.data, 64);
    mh_secret_free(&a);
    mh_secret_free(&b);
}

static void test_invalid(void **state)
{
    (void)state;
    uint8_t key[8] = {0};
    struct mh_secret out = {0};
    assert_int_equal(mh_sp108_derive(key, 8, NULL, 0, NULL, 0, 0, &out), MH_EINVAL);
    assert_int_equal(mh_sp108_derive(NULL, 0, NULL, 0, NULL, 0, 32, &out), MH_EINVAL);
    assert_int_equal(mh_sp108_derive(key, 8, NULL, 3, NULL, 0, 32, &out), MH_EINVAL);
    assert_int_equal(mh_sp108_derive(key, 8, NULL, 0, NULL, 0, (size_t)MH_SP108_MAX_OUT + 1, &out),
                     MH_EINVAL);
    assert_null(out.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kat_cli),
        cmocka_unit_test(test_l512_against_openssl),
        cmocka_unit_test(test_multiblock),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
