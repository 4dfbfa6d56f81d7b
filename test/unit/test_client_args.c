#include "testutil.h"

#include <string.h>

#include "client/args.h"
#include "common/b64.h"

static const struct mh_args_flag FLAGS[] = {
    {"endpoint", MH_ARGS_VALUE}, {"name", MH_ARGS_VALUE}, {"value", MH_ARGS_VALUE},
    {"ops", MH_ARGS_MULTI},      {"tags", MH_ARGS_MULTI}, {"disabled", MH_ARGS_BOOL},
    {"count", MH_ARGS_VALUE},    {NULL, MH_ARGS_BOOL},
};

static int parse(struct mh_args *a, char *err, size_t n, const char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return mh_args_parse(argc, (char *const *)argv, FLAGS, a, err, n);
}

static void test_words_and_flags_anywhere(void **state)
{
    (void)state;
    const char *argv[] = {"mhsm",       "--endpoint", "h:1",  "key",     "create", "--name",
                          "k",          "--ops",      "sign", "verify",  "--tags", "a=b",
                          "--disabled", "--tags",     "c=d",  "--value", "-_x",    NULL};
    struct mh_args a;
    char err[128];
    assert_int_equal(parse(&a, err, sizeof err, argv), 0);
    assert_int_equal(a.n_words, 2);
    assert_string_equal(a.words[0], "key");
    assert_string_equal(a.words[1], "create");
    assert_string_equal(mh_args_get(&a, "endpoint"), "h:1");
    assert_string_equal(mh_args_get(&a, "name"), "k");
    assert_int_equal(mh_args_count(&a, "ops"), 2);
    assert_string_equal(mh_args_nth(&a, "ops", 1), "verify");
    assert_null(mh_args_nth(&a, "ops", 2));
    assert_int_equal(mh_args_count(&a, "tags"), 2);
    assert_string_equal(mh_args_nth(&a, "tags", 1), "c=d");
    assert_true(mh_args_has(&a, "disabled"));
    assert_null(mh_args_get(&a, "disabled"));
    /* a value flag takes the next word even when it starts with '-' */
    assert_string_equal(mh_args_get(&a, "value"), "-_x");
    assert_false(mh_args_has(&a, "count"));
    assert_false(a.help);
    mh_args_free(&a);
}

static void test_equals_form_and_help(void **state)
{
    (void)state;
    const char *argv[] = {"mhsm", "random", "--count=5", "-h", NULL};
    struct mh_args a;
    char err[128];
    assert_int_equal(parse(&a, err, sizeof err, argv), 0);
    assert_string_equal(mh_args_get(&a, "count"), "5");
    assert_true(a.help);
    mh_args_free(&a);
    /* a multi flag stops at -h */
    const char *argv2[] = {"mhsm", "--ops", "sign", "-h", NULL};
    assert_int_equal(parse(&a, err, sizeof err, argv2), 0);
    assert_int_equal(mh_args_count(&a, "ops"), 1);
    assert_true(a.help);
    mh_args_free(&a);
}

static void expect_parse_error(const char **argv, const char *needle)
{
    struct mh_args a;
    char err[128];
    assert_int_equal(parse(&a, err, sizeof err, argv), MH_EINVAL);
    assert_non_null(strstr(err, needle));
    mh_args_free(&a);
}

static void test_parse_errors(void **state)
{
    (void)state;
    const char *unknown[] = {"mhsm", "--nope", "x", NULL};
    expect_parse_error(unknown, "unknown option '--nope'");
    const char *unknown_eq[] = {"mhsm", "--nope=1", NULL};
    expect_parse_error(unknown_eq, "unknown option '--nope'");
    const char *single_dash[] = {"mhsm", "-x", NULL};
    expect_parse_error(single_dash, "unknown option '-x'");
    const char *missing[] = {"mhsm", "--name", NULL};
    expect_parse_error(missing, "needs a value");
    const char *twice[] = {"mhsm", "--name", "a", "--name", "b", NULL};
    expect_parse_error(twice, "more than once");
    const char *empty_multi[] = {"mhsm", "--ops", "--name", "a", NULL};
    expect_parse_error(empty_multi, "at least one value");
    const char *bool_value[] = {"mhsm", "--disabled=yes", NULL};
    expect_parse_error(bool_value, "takes no value");
    const char *words[] = {"mhsm", "a", "b", "c", "d", "e", NULL};
    expect_parse_error(words, "unexpected argument 'e'");
    /* "--" alone is not a flag word: it is an unknown single-dash option */
    const char *dashdash[] = {"mhsm", "--", NULL};
    expect_parse_error(dashdash, "unknown option '--'");
}

static void test_check_allowed(void **state)
{
    (void)state;
    const char *argv[] = {"mhsm", "key", "show", "--name", "k", "--endpoint", "h:1", NULL};
    struct mh_args a;
    char err[128];
    assert_int_equal(parse(&a, err, sizeof err, argv), 0);
    const char *const allowed[] = {"name", NULL};
    const char *const global[] = {"endpoint", NULL};
    assert_int_equal(mh_args_check(&a, allowed, global, err, sizeof err), 0);
    const char *const none[] = {NULL};
    assert_int_equal(mh_args_check(&a, none, global, err, sizeof err), MH_EINVAL);
    assert_non_null(strstr(err, "--name"));
    mh_args_free(&a);
}

static void test_time(void **state)
{
    (void)state;
    int64_t t = -1;
    assert_int_equal(mh_args_parse_time("0", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(mh_args_parse_time("1700000000", &t), 0);
    assert_int_equal(t, 1700000000);
    assert_int_equal(mh_args_parse_time("999999999999", &t), 0);
    assert_int_equal(t, 999999999999LL);
    assert_int_equal(mh_args_parse_time("1970-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, 0);
    /* date -u -d 2030-01-02T03:04:05Z +%s */
    assert_int_equal(mh_args_parse_time("2030-01-02T03:04:05Z", &t), 0);
    assert_int_equal(t, 1893553445);
    assert_int_equal(mh_args_parse_time("2024-02-29T23:59:59Z", &t), 0);
    assert_int_equal(t, 1709251199);
    assert_int_equal(mh_args_parse_time("2000-02-29T00:00:00Z", &t), 0);
    static const char *const BAD[] = {
        "",
        "-1",
        "+5",
        "1e9",
        "1234567890123", /* 13 digits */
        " 1",
        "1 ",
        "2023-02-29T00:00:00Z", /* not a leap year */
        "1900-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-01T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-01T00:00:60Z",
        "1969-12-31T23:59:59Z",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00+00:00",
        "2024-1-01T00:00:00Z",
        "2024-01-01T00:00:0aZ",
        "tomorrow",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        t = 42;
        assert_int_equal(mh_args_parse_time(BAD[i], &t), MH_EINVAL);
        assert_int_equal(t, 42);
    }
}

static void test_u32_and_bool(void **state)
{
    (void)state;
    uint32_t v;
    assert_int_equal(mh_args_parse_u32("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(mh_args_parse_u32("4294967295", 0, UINT32_MAX, &v), 0);
    assert_int_equal(v, UINT32_MAX);
    assert_int_equal(mh_args_parse_u32("4294967296", 0, UINT32_MAX, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("99999999999", 0, UINT32_MAX, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("11", 0, 10, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("0", 1, 10, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("007", 0, 10, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("-1", 0, 10, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("", 0, 10, &v), MH_EINVAL);
    assert_int_equal(mh_args_parse_u32("1x", 0, 10, &v), MH_EINVAL);
    bool b = false;
    assert_int_equal(mh_args_parse_bool("TRUE", &b), 0);
    assert_true(b);
    assert_int_equal(mh_args_parse_bool("false", &b), 0);
    assert_false(b);
    assert_int_equal(mh_args_parse_bool("1", &b), MH_EINVAL);
    assert_int_equal(mh_args_parse_bool("yes", &b), MH_EINVAL);
    assert_int_equal(mh_args_parse_bool("", &b), MH_EINVAL);
}

static void expect_bytes(const char *in, const void *want, size_t n)
{
    struct mh_buf b = {0};
    assert_int_equal(mh_args_decode_bytes(in, &b), 0);
    assert_int_equal(b.len, n);
    if (n > 0)
        assert_memory_equal(b.data, want, n);
    mh_buf_free(&b);
}

static void test_decode_bytes(void **state)
{
    (void)state;
    static const uint8_t FB[] = {0xfb, 0xff, 0xbf};
    expect_bytes("", "", 0);
    expect_bytes("-_-_", FB, 3); /* url alphabet */
    expect_bytes("+/+/", FB, 3); /* standard alphabet */
    expect_bytes("Zg", "f", 1);
    expect_bytes("Zg==", "f", 1);
    expect_bytes("Zm8", "fo", 2);
    expect_bytes("Zm8=", "fo", 2);
    expect_bytes("Zm9vYmFy", "foobar", 6);
    static const char *const BAD[] = {
        "Z",     "Zg=",      "Zg===", "Z===",  "Zm9v====", "=",
        "==",    "Zg==Zg==", "Zm 8",  "Zm8\n", "Zm8.",     "Zh", /* non-zero trailing bits */
        "Zm9=v", "Zg=a",     "*Zg",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        struct mh_buf b = {0};
        assert_int_equal(mh_buf_append(&b, "keep", 4), 0);
        assert_int_equal(mh_args_decode_bytes(BAD[i], &b), MH_EBASE64);
        assert_int_equal(b.len, 4); /* unchanged on error */
        mh_buf_free(&b);
    }
    /* every byte string round-trips through both alphabets, padded or not */
    uint8_t all[64];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)(i * 37 + 250);
    for (size_t n = 0; n <= sizeof all; n++) {
        struct mh_buf e = {0};
        assert_int_equal(mh_b64std_encode(all, n, &e), 0);
        char std[128];
        memcpy(std, e.data != NULL ? (const char *)e.data : "", e.len);
        std[e.len] = 0;
        expect_bytes(std, all, n);
        size_t l = strlen(std);
        while (l > 0 && std[l - 1] == '=')
            std[--l] = 0;
        expect_bytes(std, all, n);
        mh_buf_free(&e);
    }
}

static void test_tags(void **state)
{
    (void)state;
    size_t kl;
    const char *v;
    assert_int_equal(mh_args_split_tag("env=prod", &kl, &v), 0);
    assert_int_equal(kl, 3);
    assert_string_equal(v, "prod");
    assert_int_equal(mh_args_split_tag("a=b=c", &kl, &v), 0);
    assert_int_equal(kl, 1);
    assert_string_equal(v, "b=c");
    assert_int_equal(mh_args_split_tag("x=", &kl, &v), 0);
    assert_string_equal(v, "");
    assert_int_equal(mh_args_split_tag("=v", &kl, &v), MH_EINVAL);
    assert_int_equal(mh_args_split_tag("novalue", &kl, &v), MH_EINVAL);
    assert_int_equal(mh_args_split_tag("", &kl, &v), MH_EINVAL);
}

/* Mutated command lines never crash the parser, and what it accepts is consistent. */
static void test_parse_mutations(void **state)
{
    (void)state;
    static const char *const POOL[] = {
        "--name", "--ops",    "--tags", "--disabled", "-h",      "key",    "create", "--",
        "-",      "--count=", "=",      "a=b",        "--value", "--nope", ""};
    struct tu_rng r = {0x1234};
    for (int round = 0; round < 2000; round++) {
        const char *argv[12];
        argv[0] = "mhsm";
        int argc = 1 + (int)(tu_rng_next(&r) % 10);
        for (int i = 1; i < argc; i++)
            argv[i] = POOL[tu_rng_next(&r) % (sizeof POOL / sizeof POOL[0])];
        argv[argc] = NULL;
        struct mh_args a;
        char err[128];
        int rv = mh_args_parse(argc, (char *const *)argv, FLAGS, &a, err, sizeof err);
        if (rv == 0) {
            assert_true(a.n_words <= MH_ARGS_MAX_WORDS);
            assert_true(a.n_items <= (size_t)argc);
            assert_true(mh_args_count(&a, "name") <= 1);
        } else {
            assert_int_equal(rv, MH_EINVAL);
            assert_true(err[0] != 0);
        }
        mh_args_free(&a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words_and_flags_anywhere),
        cmocka_unit_test(test_equals_form_and_help),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_check_allowed),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_u32_and_bool),
        cmocka_unit_test(test_decode_bytes),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_parse_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
