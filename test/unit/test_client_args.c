#include "testutil.h"

#include <string.h>

#include <stdio.h>
#include <stdlib.h>

#include "client/args.h"
#include "client/json_out.h"
#include "client/rpc_client.h"
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
            assert_true(a.n_words + a.n_items < (size_t)argc);
            assert_true(a.n_items <= (size_t)argc);
            assert_true(mh_args_count(&a, "name") <= 1);
        } else {
            assert_int_equal(rv, MH_EINVAL);
            assert_true(err[0] != 0);
        }
        mh_args_free(&a);
    }
}

/* ---- mhsm cluster: the flags and value checks client/mhsm.c applies ---------- */

static const struct mh_args_flag CLUSTER_FLAGS[] = {
    {"endpoint", MH_ARGS_VALUE}, {"output", MH_ARGS_VALUE}, {"id", MH_ARGS_VALUE},
    {"old-id", MH_ARGS_VALUE},   {"new-id", MH_ARGS_VALUE}, {"address", MH_ARGS_VALUE},
    {NULL, MH_ARGS_BOOL},
};

static int parse_cluster(struct mh_args *a, char *err, size_t n, const char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return mh_args_parse(argc, (char *const *)argv, CLUSTER_FLAGS, a, err, n);
}

static void test_cluster_args(void **state)
{
    (void)state;
    const char *argv[] = {
        "mhsm",       "--endpoint", "127.0.0.1:8444", "cluster",  "replace", "--old-id", "2",
        "--new-id=4", "--address",  "127.0.0.1:9446", "--output", "table",   NULL};
    struct mh_args a;
    char err[128];
    assert_int_equal(parse_cluster(&a, err, sizeof err, argv), 0);
    assert_int_equal(a.n_words, 2);
    assert_string_equal(a.words[0], "cluster");
    assert_string_equal(a.words[1], "replace");
    assert_string_equal(mh_args_get(&a, "old-id"), "2");
    assert_string_equal(mh_args_get(&a, "new-id"), "4");
    assert_string_equal(mh_args_get(&a, "address"), "127.0.0.1:9446");
    const char *const replace[] = {"old-id", "new-id", "address", NULL};
    const char *const remove[] = {"id", NULL};
    const char *const global[] = {"endpoint", "output", NULL};
    assert_int_equal(mh_args_check(&a, replace, global, err, sizeof err), 0);
    /* `cluster remove` takes --id only */
    assert_int_equal(mh_args_check(&a, remove, global, err, sizeof err), MH_EINVAL);
    assert_non_null(strstr(err, "--old-id"));
    mh_args_free(&a);
    const char *twice[] = {"mhsm", "cluster", "remove", "--id", "2", "--id", "3", NULL};
    assert_int_equal(parse_cluster(&a, err, sizeof err, twice), MH_EINVAL);
    assert_non_null(strstr(err, "more than once"));
    mh_args_free(&a);
    const char *novalue[] = {"mhsm", "cluster", "add", "--address", NULL};
    assert_int_equal(parse_cluster(&a, err, sizeof err, novalue), MH_EINVAL);
    mh_args_free(&a);

    /* raft ids: 1..1000000 in plain decimal */
    static const char *const GOOD_IDS[] = {"1", "4", "1000000"};
    static const char *const BAD_IDS[] = {"0",  "1000001", "01", "",    "-1",         "+2",
                                          "4x", " 4",      "4 ", "0x4", "99999999999"};
    uint32_t id;
    for (size_t i = 0; i < sizeof GOOD_IDS / sizeof GOOD_IDS[0]; i++)
        assert_int_equal(mh_args_parse_u32(GOOD_IDS[i], 1, 1000000, &id), 0);
    assert_int_equal(id, 1000000);
    for (size_t i = 0; i < sizeof BAD_IDS / sizeof BAD_IDS[0]; i++)
        assert_int_equal(mh_args_parse_u32(BAD_IDS[i], 1, 1000000, &id), MH_EINVAL);

    /* raft addresses: HOST:PORT */
    static const char *const GOOD_ADDR[] = {"127.0.0.1:9446", "[::1]:9446", "node4.example:1",
                                            "h:65535"};
    static const char *const BAD_ADDR[] = {":9446",      "host",    "host:",     "host:0",
                                           "host:65536", "ho st:1", "::1:9446",  "host:09",
                                           "host:1x",    "",        "[::1]9446", "h/x:1"};
    char host[128], port[8];
    for (size_t i = 0; i < sizeof GOOD_ADDR / sizeof GOOD_ADDR[0]; i++)
        assert_int_equal(
            mh_client_split_endpoint(GOOD_ADDR[i], host, sizeof host, port, sizeof port), 0);
    for (size_t i = 0; i < sizeof BAD_ADDR / sizeof BAD_ADDR[0]; i++)
        assert_int_equal(
            mh_client_split_endpoint(BAD_ADDR[i], host, sizeof host, port, sizeof port), MH_EINVAL);
}

/* The status document (camelCase, the brief's names) and its table. */
static void test_cluster_status_output(void **state)
{
    (void)state;
    Mhsm__V1__ClusterMember m[2];
    Mhsm__V1__ClusterMember *mp[2] = {&m[0], &m[1]};
    for (int i = 0; i < 2; i++)
        mhsm__v1__cluster_member__init(&m[i]);
    m[0].id = 1;
    m[0].address = (char *)"127.0.0.1:9443";
    m[0].role = (char *)"voter";
    m[0].leader = 1;
    m[0].last_contact_ms = -1;
    m[1].id = 2;
    m[1].address = (char *)"127.0.0.1:9444\x1b[2J"; /* a hostile server's terminal escape */
    m[1].role = (char *)"spare";
    m[1].last_contact_ms = 12;
    Mhsm__V1__ClusterStatusResponse r = MHSM__V1__CLUSTER_STATUS_RESPONSE__INIT;
    r.node_id = 1;
    r.state = (char *)"leader";
    r.leader_id = 1;
    r.leader_address = (char *)"127.0.0.1:9443";
    r.term = 3;
    r.commit_index = 42;
    r.applied_index = 41;
    r.last_index = 43;
    r.serving = 0;
    r.serving_reason = (char *)"catching up: applied 41 of 42";
    r.n_members = 2;
    r.members = mp;
    json_t *o = NULL;
    assert_int_equal(mh_json_out_cluster_status(&r, &o), 0);
    static const char *const KEYS[] = {
        "nodeId",  "state",         "leaderId",        "leaderAddress",
        "term",    "commitIndex",   "appliedIndex",    "lastIndex",
        "serving", "servingReason", "leaderContactMs", "members"};
    assert_int_equal(json_object_size(o), sizeof KEYS / sizeof KEYS[0]);
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
        assert_non_null(json_object_get(o, KEYS[i]));
    assert_int_equal(json_integer_value(json_object_get(o, "appliedIndex")), 41);
    assert_true(json_is_false(json_object_get(o, "serving")));
    json_t *m1 = json_array_get(json_object_get(o, "members"), 1);
    assert_int_equal(json_object_size(m1), 5);
    assert_string_equal(json_string_value(json_object_get(m1, "role")), "spare");
    assert_true(json_is_false(json_object_get(m1, "leader")));
    assert_int_equal(json_integer_value(json_object_get(m1, "lastContactMs")), 12);

    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    assert_non_null(f);
    assert_int_equal(mh_json_out_print_cluster_table(o, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "node 1: leader, term 3, leader 1 (127.0.0.1:9443)"));
    assert_non_null(strstr(text, "not serving: catching up: applied 41 of 42"));
    assert_non_null(strstr(text, "ID  ADDRESS"));
    assert_non_null(strstr(text, "LAST-CONTACT"));
    assert_non_null(strstr(text, "voter  yes"));
    assert_non_null(strstr(text, "12 ms"));
    assert_null(strchr(text, '\x1b'));
    free(text);
    json_decref(o);

    /* a table of something else is refused */
    json_t *arr = json_array();
    f = open_memstream(&text, &text_len);
    assert_int_equal(mh_json_out_print_cluster_table(arr, f), MH_EPROTO);
    fclose(f);
    free(text);
    json_decref(arr);

    /* responses the CLI must not render */
    m[1].address = (char *)"\xff\xfe";
    assert_int_equal(mh_json_out_cluster_status(&r, &o), MH_EPROTO);
    m[1].address = (char *)"127.0.0.1:9444";
    r.term = (uint64_t)INT64_MAX + 1u;
    assert_int_equal(mh_json_out_cluster_status(&r, &o), MH_EPROTO);
    r.term = 3;
    mp[1] = NULL;
    assert_int_equal(mh_json_out_cluster_status(&r, &o), MH_EPROTO);
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
        cmocka_unit_test(test_cluster_args),
        cmocka_unit_test(test_cluster_status_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
