#include "testutil.h"

#include <string.h>

#include "common/b64.h"

struct vec {
    const char *raw;
    const char *url;
    const char *std;
};

/* RFC 4648 section 10 test vectors */
static const struct vec VECS[] = {
    {"", "", ""},
    {"f", "Zg", "Zg=="},
    {"fo", "Zm8", "Zm8="},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg", "Zm9vYg=="},
    {"fooba", "Zm9vYmE", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof VECS / sizeof VECS[0]; i++) {
        struct mh_buf b = {0};
        size_t n = strlen(VECS[i].raw);
        assert_int_equal(mh_b64url_encode((const uint8_t *)VECS[i].raw, n, &b), 0);
        assert_int_equal(b.len, strlen(VECS[i].url));
        assert_int_equal(mh_b64url_encoded_len(n), b.len);
        if (b.len > 0)
            assert_memory_equal(b.data, VECS[i].url, b.len);
        mh_buf_free(&b);
        assert_int_equal(mh_b64std_encode((const uint8_t *)VECS[i].raw, n, &b), 0);
        assert_int_equal(b.len, strlen(VECS[i].std));
        mh_buf_free(&b);
        assert_int_equal(mh_b64url_decode(VECS[i].url, strlen(VECS[i].url), &b), 0);
        assert_int_equal(b.len, n);
        if (n > 0)
            assert_memory_equal(b.data, VECS[i].raw, n);
        mh_buf_free(&b);
        assert_int_equal(mh_b64std_decode(VECS[i].std, strlen(VECS[i].std), &b), 0);
        assert_int_equal(b.len, n);
        mh_buf_free(&b);
    }
}

static void test_url_alphabet_and_roundtrip(void **state)
{
    (void)state;
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    for (size_t n = 0; n <= sizeof all; n++) {
        struct mh_buf e = {0}, d = {0};
        assert_int_equal(mh_b64url_encode(all, n, &e), 0);
        for (size_t i = 0; i < e.len; i++)
            assert_null(strchr("+/=", e.data[i]));
        assert_int_equal(mh_b64url_decode((const char *)e.data, e.len, &d), 0);
        assert_int_equal(d.len, n);
        if (n)
            assert_memory_equal(d.data, all, n);
        mh_buf_free(&e);
        mh_buf_free(&d);
    }
    struct mh_buf d = {0};
    assert_int_equal(mh_b64url_decode("-_8", 3, &d), 0);
    assert_int_equal(d.len, 2);
    assert_int_equal(d.data[0], 0xfb);
    assert_int_equal(d.data[1], 0xff);
    mh_buf_free(&d);
}

static void test_strict_rejections(void **state)
{
    (void)state;
    static const char *const bad_url[] = {
        "Zg==",   /* padding */
        "Zm8=",   /* padding */
        "Z",      /* 1 mod 4 */
        "Zm9vY",  /* 1 mod 4 */
        "Zh",     /* non-zero trailing bits */
        "Zm9",    /* non-zero trailing bits */
        "Zm+v",   /* std alphabet */
        "Zm/v",   /* std alphabet */
        "Zm 9v",  /* whitespace */
        "Zm9v\n", /* newline */
        "Zm\x80v",
    };
    for (size_t i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++) {
        struct mh_buf d = {0};
        assert_int_equal(mh_buf_append_str(&d, "keep"), 0);
        assert_int_equal(mh_b64url_decode(bad_url[i], strlen(bad_url[i]), &d), MH_EBASE64);
        /* the buffer is left as it was */
        assert_int_equal(d.len, 4);
        assert_memory_equal(d.data, "keep", 4);
        mh_buf_free(&d);
        struct mh_secret s = {0};
        assert_int_equal(mh_b64url_decode_secret(bad_url[i], strlen(bad_url[i]), &s), MH_EBASE64);
        assert_null(s.data);
    }
    /* embedded NUL is outside the alphabet */
    struct mh_buf d = {0};
    assert_int_equal(mh_b64url_decode("Zm\0v", 4, &d), MH_EBASE64);
    static const char *const bad_std[] = {"Zg", "Zg=", "Z===", "Zm9v=", "Zm-v", "Zh=="};
    for (size_t i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++)
        assert_int_equal(mh_b64std_decode(bad_std[i], strlen(bad_std[i]), &d), MH_EBASE64);
    mh_buf_free(&d);
}

static void test_decode_secret(void **state)
{
    (void)state;
    struct mh_secret s = {0};
    assert_int_equal(mh_b64url_decode_secret("Zm9vYmFy", 8, &s), 0);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.data, "foobar", 6);
    mh_secret_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_url_alphabet_and_roundtrip),
        cmocka_unit_test(test_strict_rejections),
        cmocka_unit_test(test_decode_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
