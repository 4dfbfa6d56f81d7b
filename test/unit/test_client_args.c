#include "testutil.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/args.h"
#include "client/json_out.h"
#include "client/logverify.h"
#include "client/rpc_client.h"
#include "common/b64.h"
#include "common/secret.h"
#include "crypto/auditlog.h"

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

/* ---- operands: `audit verify FILE...` keeps every word ------------------------------ */

static void test_operands(void **state)
{
    (void)state;
    const char *argv[] = {"mhsm", "audit", "verify", "--public-key", "ab", "f1",
                          "f2",   "f3",    "f4",     "f5",           "f6", NULL};
    static const struct mh_args_flag F[] = {{"public-key", MH_ARGS_VALUE}, {NULL, MH_ARGS_BOOL}};
    struct mh_args a;
    char err[128];
    assert_int_equal(mh_args_parse(11, (char *const *)argv, F, &a, err, sizeof err), 0);
    assert_int_equal(a.n_words, 8);
    assert_string_equal(a.words[2], "f1");
    assert_string_equal(a.words[7], "f6");
    assert_string_equal(mh_args_get(&a, "public-key"), "ab");
    mh_args_free(&a);
}

/* ---- the mhsm binary (built next to this test): usage, help, connection ------------ */

/* Runs mhsm with |args| (NULL-terminated), stdout and stderr captured (NUL-terminated).
 * Returns its exit status. */
static int run_mhsm(const char *const *args, struct mh_buf *out, struct mh_buf *err)
{
    static char exe[PATH_MAX];
    if (exe[0] == 0) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 16);
        assert_true(n > 0);
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        assert_non_null(slash);
        strcpy(slash + 1, "mhsm");
        assert_int_equal(access(exe, X_OK), 0);
    }
    const char *argv[64];
    size_t n = 0;
    argv[n++] = exe;
    for (size_t i = 0; args[i] != NULL; i++) {
        assert_true(n < 62);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    char po[PATH_MAX], pe[PATH_MAX];
    tu_path(po, sizeof po, "cli.out");
    tu_path(pe, sizeof pe, "cli.err");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        /* no MHSM_* from the environment: the arguments say everything */
        unsetenv("MHSM_ENDPOINT");
        unsetenv("MHSM_CA");
        unsetenv("MHSM_CERT");
        unsetenv("MHSM_KEY");
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    mh_buf_truncate(out, 0);
    mh_buf_truncate(err, 0);
    tu_read_file(po, out);
    tu_read_file(pe, err);
    assert_int_equal(mh_buf_append_u8(out, 0), 0);
    assert_int_equal(mh_buf_append_u8(err, 0), 0);
    return WEXITSTATUS(st);
}

struct cli_case {
    const char *args[12];
    int rc;
    const char *needle; /* in stderr */
};

#define DEAD "--endpoint", "127.0.0.1:1"

static void test_cli_usage_errors(void **state)
{
    (void)state;
    static const struct cli_case CASES[] = {
        {{"role", "definition", "list", "--name", "x"}, 2, "does not apply"},
        {{"role", "definition", "list", "--custom-role-only=yes"}, 2, "takes no value"},
        {{"role", "definition", "show"}, 2, "exactly one of --name GUID and --role-name"},
        {{"role", "definition", "show", "--name", "a", "--role-name", "b"}, 2, "exactly one"},
        {{"role", "definition", "delete"}, 2, "exactly one of --name"},
        {{"role", "definition", "delete", "--role-name", ""}, 2, "--role-name needs"},
        {{"role", "definition", "create"}, 2, "missing --role-definition"},
        {{"role", "definition", "create", "--role-definition", "{"},
         2,
         "--role-definition: invalid JSON at line 1"},
        {{"role", "definition", "create", "--role-definition",
          "{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"notDataAction\":[\"b\"]}"},
         2,
         "--role-definition: unknown member \"notDataAction\""},
        {{"role", "definition", "create", "--role-definition", "@/nonexistent/rd.json"},
         2,
         "cannot open /nonexistent/rd.json"},
        {{"role", "definition", "update", "--role-definition",
          "{\"roleName\":\"r\",\"dataActions\":[\"a\"]}"},
         2,
         "\"name\" (the role's GUID) is required"},
        {{"role", "assignment", "create", "--assignee", "p"}, 2, "missing --role"},
        {{"role", "assignment", "create", "--role", "r"}, 2, "missing --assignee"},
        {{"role", "assignment", "create", "--role", "r", "--assignee", "p", "--name", "x"},
         2,
         "--name takes a GUID"},
        {{"role", "assignment", "create", "--role", "r", "--assignee", "p", "--ids", "x"},
         2,
         "does not apply"},
        {{"role", "assignment", "list", "--name", "x"}, 2, "does not apply"},
        {{"role", "assignment", "show"}, 2, "missing --name"},
        {{"role", "assignment", "delete"}, 2, "give one of --name GUID, --ids"},
        {{"role", "assignment", "delete", "--name", "a", "--ids", "b"}, 2, "give one of"},
        {{"role", "assignment", "delete", "--name", "a", "--role", "r"}, 2, "give one of"},
        {{"role", "assignment", "delete", "--role", "r", "--scope", "/"},
         2,
         "needs --role and --assignee"},
        {{"role", "assignment", "delete", "--assignee", "p"}, 2, "needs --role and --assignee"},
        {{"role", "assignment", "delete", "--ids"}, 2, "needs at least one value"},
        {{"role", "assignment", "frob"}, 2, "unknown command 'role assignment frob'"},
        {{"role", "definitions", "list"}, 2, "unknown command 'role definitions list'"},
        {{"whoami", "extra"}, 2, "unexpected argument 'extra'"},
        {{"whoami", "--scope", "/"}, 2, "does not apply"},
        {{"audit", "key", "--public-key", "00"}, 2, "does not apply"},
        {{"audit", "key", "extra"}, 2, "unexpected argument 'extra'"},
        {{"audit", "verify"}, 2, "at least one audit log FILE"},
        {{"audit", "verify", "--public-key", "12", "f"}, 2, "64 hex digits or @FILE"},
        {{"audit", "verify", "--public-key", "@/nonexistent/key", "f"},
         2,
         "cannot read /nonexistent/key"},
        {{"role"}, 2, "usage: mhsm role COMMAND"},
        {{"role", "definition"}, 2, "usage: mhsm role definition COMMAND"},
        {{"audit"}, 2, "usage: mhsm audit COMMAND"},
        /* past the argument checks: no server there */
        {{"whoami", DEAD}, 3, "error: UNAVAILABLE: "},
        {{"role", "definition", "list", DEAD}, 3, "error: UNAVAILABLE: "},
        {{"role", "definition", "show", "--role-name", "x", DEAD}, 3, "error: UNAVAILABLE: "},
        {{"role", "assignment", "list", "--role", "r", DEAD}, 3, "error: UNAVAILABLE: "},
        {{"role", "assignment", "delete", "--role", "r", "--assignee", "p", DEAD},
         3,
         "error: UNAVAILABLE: "},
        {{"audit", "key", DEAD}, 3, "error: UNAVAILABLE: "},
        {{"audit", "verify", "f", DEAD}, 3, "--public-key HEX|@FILE"},
    };
    struct mh_buf out = {0}, err = {0};
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const struct cli_case *c = &CASES[i];
        int rc = run_mhsm(c->args, &out, &err);
        if (rc != c->rc || strstr((const char *)err.data, c->needle) == NULL)
            fail_msg("mhsm %s %s %s ...: exit %d, stderr '%s'; want exit %d and '%s'", c->args[0],
                     c->args[1] ? c->args[1] : "", c->args[1] && c->args[2] ? c->args[2] : "", rc,
                     (const char *)err.data, c->rc, c->needle);
        if (c->rc != 0)
            assert_int_equal(out.len, 1); /* nothing on stdout (just our NUL) */
    }
    mh_buf_free(&out);
    mh_buf_free(&err);
}

static void test_cli_help(void **state)
{
    (void)state;
    static const char *const CMDS[][4] = {
        {"role", "definition", "list"},
        {"role", "definition", "show"},
        {"role", "definition", "create"},
        {"role", "definition", "update"},
        {"role", "definition", "delete"},
        {"role", "assignment", "create"},
        {"role", "assignment", "list"},
        {"role", "assignment", "show"},
        {"role", "assignment", "delete"},
        {"whoami"},
        {"audit", "key"},
        {"audit", "verify"},
    };
    struct mh_buf out = {0}, err = {0};
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++) {
        const char *args[6] = {0};
        char want[96] = "usage: mhsm";
        size_t n = 0;
        for (; n < 4 && CMDS[i][n] != NULL; n++) {
            args[n] = CMDS[i][n];
            strcat(want, " ");
            strcat(want, CMDS[i][n]);
        }
        strcat(want, " ");
        args[n] = "--help";
        assert_int_equal(run_mhsm(args, &out, &err), 0);
        if (strncmp((const char *)out.data, want, strlen(want)) != 0)
            fail_msg("help of %s: '%.80s'", want, (const char *)out.data);
        assert_non_null(strstr((const char *)out.data, "--endpoint HOST:PORT"));
    }
    /* the group help lists the group's commands */
    const char *role_help[] = {"role", "--help", NULL};
    assert_int_equal(run_mhsm(role_help, &out, &err), 0);
    assert_non_null(strstr((const char *)out.data, "role definition create"));
    assert_non_null(strstr((const char *)out.data, "role assignment delete"));
    assert_null(strstr((const char *)out.data, "key create"));
    const char *top[] = {"--help", NULL};
    assert_int_equal(run_mhsm(top, &out, &err), 0);
    assert_non_null(strstr((const char *)out.data, "whoami"));
    assert_non_null(strstr((const char *)out.data, "audit verify"));
    assert_non_null(strstr((const char *)out.data, "key create"));
    mh_buf_free(&out);
    mh_buf_free(&err);
}

/* ---- audit verify: small logs built with crypto/auditlog ----------------------------- */

#define LOG_NODE 7

struct logb {
    EVP_PKEY *key;
    char pub_hex[2 * MH_AUDITLOG_PUBKEY_LEN + 1];
    char prev[MH_AUDITLOG_HASH_HEX + 1];
    uint64_t seq;
};

static EVP_PKEY *signer(uint8_t fill)
{
    struct mh_secret seed = {0};
    assert_int_equal(mh_secret_alloc(&seed, 32), 0);
    memset(seed.data, fill, 32);
    EVP_PKEY *k = NULL;
    assert_int_equal(mh_auditlog_signer_new(&seed, &k), 0);
    mh_secret_free(&seed);
    return k;
}

static void logb_init(struct logb *b, uint8_t fill)
{
    memset(b, 0, sizeof *b);
    b->key = signer(fill);
    uint8_t pub[MH_AUDITLOG_PUBKEY_LEN];
    assert_int_equal(mh_auditlog_public_key(b->key, pub), 0);
    mh_hex_encode(pub, sizeof pub, b->pub_hex);
    memset(b->prev, '0', MH_AUDITLOG_HASH_HEX);
}

static void logb_line(struct logb *b, struct mh_buf *file, const char *line)
{
    assert_int_equal(mh_auditlog_line_hash(line, strlen(line), b->prev), 0);
    assert_int_equal(mh_buf_append_str(file, line), 0);
    assert_int_equal(mh_buf_append_str(file, "\n"), 0);
}

static void logb_record(struct logb *b, struct mh_buf *file, const char *op)
{
    char line[512];
    b->seq++;
    snprintf(line, sizeof line,
             "{\"seq\":%llu,\"prevHash\":\"%s\",\"nodeId\":%d,\"category\":\"AuditEvent\","
             "\"operationName\":\"%s\",\"resultType\":\"Success\",\"identity\":"
             "\"spiffe://mhsm/app\"}",
             (unsigned long long)b->seq, b->prev, LOG_NODE, op);
    logb_line(b, file, line);
}

static void logb_checkpoint(struct logb *b, struct mh_buf *file)
{
    char msg[160], line[512];
    b->seq++;
    assert_int_equal(mh_auditlog_checkpoint_message(LOG_NODE, b->seq, b->prev, msg, sizeof msg), 0);
    uint8_t sig[MH_AUDITLOG_SIG_LEN];
    assert_int_equal(mh_auditlog_sign(b->key, msg, sig), 0);
    struct mh_buf s64 = {0};
    assert_int_equal(mh_b64url_encode(sig, sizeof sig, &s64), 0);
    assert_int_equal(mh_buf_append_u8(&s64, 0), 0);
    snprintf(line, sizeof line,
             "{\"seq\":%llu,\"prevHash\":\"%s\",\"nodeId\":%d,\"category\":\"AuditEvent\","
             "\"operationName\":\"" MH_AUDITLOG_CHECKPOINT "\",\"signature\":\"%s\","
             "\"publicKey\":\"%s\"}",
             (unsigned long long)b->seq, b->prev, LOG_NODE, (const char *)s64.data, b->pub_hex);
    mh_buf_free(&s64);
    logb_line(b, file, line);
}

/* Two files: A = seq 1..3 (record, record, checkpoint), B = seq 4..6 (record,
 * checkpoint, record: one unsigned record at the end). Paths into |a| and |bpath|. */
static void make_log(const char *sub, struct logb *b, char *a, char *bpath)
{
    char dir[PATH_MAX - 64];
    tu_path(dir, sizeof dir, sub);
    assert_int_equal(mkdir(dir, 0700), 0);
    struct mh_buf fa = {0}, fb = {0};
    logb_record(b, &fa, "GetKey");
    logb_record(b, &fa, "Sign");
    logb_checkpoint(b, &fa);
    logb_record(b, &fb, "CreateKey");
    logb_checkpoint(b, &fb);
    logb_record(b, &fb, "WhoAmI");
    snprintf(a, PATH_MAX, "%s/audit-00000000000000000001.jsonl", dir);
    snprintf(bpath, PATH_MAX, "%s/audit-00000000000000000004.jsonl", dir);
    tu_write_file(a, fa.data, fa.len);
    tu_write_file(bpath, fb.data, fb.len);
    mh_buf_free(&fa);
    mh_buf_free(&fb);
}

/* mh_logverify_run with its output captured; returns the exit status. */
static int verify(const char *const *paths, size_t n, const uint8_t *pub, json_t **doc,
                  char **errtext)
{
    const char *p[8];
    for (size_t i = 0; i < n; i++)
        p[i] = paths[i];
    char *out = NULL;
    size_t olen = 0, elen = 0;
    FILE *fo = open_memstream(&out, &olen);
    FILE *fe = open_memstream(errtext, &elen);
    int rc = mh_logverify_run(p, n, pub, false, fo, fe);
    fclose(fo);
    fclose(fe);
    json_error_t je;
    *doc = olen > 0 ? json_loads(out, 0, &je) : NULL;
    free(out);
    return rc;
}

static uint64_t num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    assert_true(json_is_integer(v));
    return (uint64_t)json_integer_value(v);
}

/* Rewrites |path| with line |lineno| (1-based) replaced by |repl|, or removed when
 * |repl| is NULL, or swapped with the next line when |repl| is "SWAP". */
static void edit_line(const char *path, size_t lineno, const char *repl)
{
    struct mh_buf in = {0}, out = {0};
    tu_read_file(path, &in);
    assert_int_equal(mh_buf_append_u8(&in, 0), 0);
    char *lines[16];
    size_t n = 0;
    for (char *s = (char *)in.data, *save = NULL; (s = strtok_r(s, "\n", &save)) != NULL; s = NULL)
        lines[n++] = s;
    assert_true(lineno >= 1 && lineno <= n);
    if (repl != NULL && strcmp(repl, "SWAP") == 0) {
        char *t = lines[lineno - 1];
        lines[lineno - 1] = lines[lineno];
        lines[lineno] = t;
    }
    for (size_t i = 0; i < n; i++) {
        const char *l = lines[i];
        if (i + 1 == lineno && repl == NULL)
            continue;
        if (i + 1 == lineno && strcmp(repl, "SWAP") != 0)
            l = repl;
        assert_int_equal(mh_buf_append_str(&out, l), 0);
        assert_int_equal(mh_buf_append_str(&out, "\n"), 0);
    }
    tu_write_file(path, out.data, out.len);
    mh_buf_free(&in);
    mh_buf_free(&out);
}

static void expect_bad(const char *const *paths, size_t n, const uint8_t *pub, const char *file,
                       uint64_t line)
{
    json_t *doc = NULL;
    char *err = NULL;
    assert_int_equal(verify(paths, n, pub, &doc, &err), 1);
    assert_non_null(doc);
    assert_true(json_is_false(json_object_get(doc, "ok")));
    const char *f = json_string_value(json_object_get(doc, "file"));
    assert_non_null(f);
    assert_string_equal(f, file);
    if (line != 0)
        assert_int_equal(num(doc, "line"), line);
    assert_true(json_string_length(json_object_get(doc, "reason")) > 0);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "error: audit log does not verify: %s:%llu: ", f,
             (unsigned long long)num(doc, "line"));
    if (strstr(err, want) == NULL)
        fail_msg("stderr '%s' lacks '%s'", err, want);
    free(err);
    json_decref(doc);
}

static void test_verify(void **state)
{
    (void)state;
    struct logb b;
    logb_init(&b, 0x11);
    uint8_t pub[MH_AUDITLOG_PUBKEY_LEN];
    assert_int_equal(mh_auditlog_public_key(b.key, pub), 0);
    char a[PATH_MAX], bp[PATH_MAX];
    make_log("v1", &b, a, bp);

    /* given out of order: sorted by name, verified, one unsigned record reported */
    const char *const rev[] = {bp, a};
    json_t *doc = NULL;
    char *err = NULL;
    assert_int_equal(verify(rev, 2, pub, &doc, &err), 0);
    assert_non_null(doc);
    assert_true(json_is_true(json_object_get(doc, "ok")));
    assert_int_equal(num(doc, "files"), 2);
    assert_int_equal(num(doc, "records"), 6);
    assert_int_equal(num(doc, "checkpoints"), 2);
    assert_int_equal(num(doc, "firstSeq"), 1);
    assert_int_equal(num(doc, "lastSeq"), 6);
    assert_int_equal(num(doc, "lastCheckpointSeq"), 5);
    assert_int_equal(num(doc, "unsignedTail"), 1);
    assert_int_equal(num(doc, "nodeId"), LOG_NODE);
    assert_int_equal(num(doc, "tornLines"), 0);
    assert_int_equal(json_object_size(doc), 10);
    assert_non_null(strstr(err, "warning: the last 1 record(s) (after seq 5)"));
    free(err);
    json_decref(doc);

    /* the first file alone ends on a checkpoint: no warning */
    const char *const only_a[] = {a};
    assert_int_equal(verify(only_a, 1, pub, &doc, &err), 0);
    assert_int_equal(num(doc, "unsignedTail"), 0);
    assert_string_equal(err, "");
    free(err);
    json_decref(doc);

    /* another key: the first checkpoint fails */
    struct logb other;
    logb_init(&other, 0x22);
    uint8_t wrong[MH_AUDITLOG_PUBKEY_LEN];
    assert_int_equal(mh_auditlog_public_key(other.key, wrong), 0);
    expect_bad(rev, 2, wrong, a, 3);

    /* a missing file is named as such */
    char missing[PATH_MAX];
    tu_path(missing, sizeof missing, "v1/audit-00000000000000000009.jsonl");
    const char *const with_missing[] = {a, bp, missing};
    assert_int_equal(verify(with_missing, 3, pub, &doc, &err), 1);
    assert_null(doc);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "error: cannot read %s: ", missing);
    assert_non_null(strstr(err, want));
    free(err);
    /* and so is a directory */
    char dir[PATH_MAX];
    tu_path(dir, sizeof dir, "v1");
    const char *const with_dir[] = {a, dir};
    assert_int_equal(verify(with_dir, 2, pub, &doc, &err), 1);
    assert_non_null(strstr(err, "not a regular file"));
    free(err);

    /* an edited record is named */
    edit_line(a, 2,
              "{\"seq\":2,\"prevHash\":\"0000000000000000000000000000000000000000000000000000000"
              "000000000\",\"nodeId\":7,\"operationName\":\"Sign\"}");
    expect_bad(rev, 2, pub, a, 0);
    EVP_PKEY_free(other.key);

    /* a removed record: the chain breaks where B starts */
    struct logb c;
    logb_init(&c, 0x11);
    char a2[PATH_MAX], b2[PATH_MAX];
    make_log("v2", &c, a2, b2);
    edit_line(b2, 1, NULL);
    const char *const v2[] = {a2, b2};
    expect_bad(v2, 2, pub, b2, 1);
    EVP_PKEY_free(c.key);

    /* reordered records */
    struct logb d;
    logb_init(&d, 0x11);
    char a3[PATH_MAX], b3[PATH_MAX];
    make_log("v3", &d, a3, b3);
    edit_line(a3, 1, "SWAP");
    const char *const v3[] = {a3, b3};
    expect_bad(v3, 2, pub, a3, 0);
    EVP_PKEY_free(d.key);

    EVP_PKEY_free(b.key);
}

/* The same through the binary: exit codes and --public-key HEX|@FILE. */
static void test_cli_verify(void **state)
{
    (void)state;
    struct logb b;
    logb_init(&b, 0x33);
    char a[PATH_MAX], bp[PATH_MAX];
    make_log("c1", &b, a, bp);
    struct mh_buf out = {0}, err = {0};

    const char *ok[] = {"audit", "verify", "--public-key", b.pub_hex, bp, a, NULL};
    assert_int_equal(run_mhsm(ok, &out, &err), 0);
    json_error_t je;
    json_t *doc = json_loads((const char *)out.data, 0, &je);
    assert_non_null(doc);
    assert_true(json_is_true(json_object_get(doc, "ok")));
    assert_int_equal(num(doc, "records"), 6);
    json_decref(doc);
    assert_non_null(strstr((const char *)err.data, "warning:"));

    char keyfile[PATH_MAX], at[PATH_MAX + 1];
    tu_path(keyfile, sizeof keyfile, "c1.pub");
    char content[160];
    snprintf(content, sizeof content, "  %s\n", b.pub_hex);
    tu_write_file(keyfile, content, strlen(content));
    snprintf(at, sizeof at, "@%s", keyfile);
    const char *ok_file[] = {"audit", "verify", "--public-key", at, a, NULL};
    assert_int_equal(run_mhsm(ok_file, &out, &err), 0);
    assert_string_equal((const char *)err.data, "");

    /* upper-case hex is the same key */
    char upper[2 * MH_AUDITLOG_PUBKEY_LEN + 1];
    for (size_t i = 0; i <= 2 * MH_AUDITLOG_PUBKEY_LEN; i++)
        upper[i] = (char)toupper((unsigned char)b.pub_hex[i]);
    const char *ok_upper[] = {"audit", "verify", "--public-key", upper, a, NULL};
    assert_int_equal(run_mhsm(ok_upper, &out, &err), 0);

    /* the JSON `mhsm audit key` prints works as a key file too */
    snprintf(content, sizeof content, "{\"nodeId\": 1, \"publicKey\": \"%s\"}\n", b.pub_hex);
    tu_write_file(keyfile, content, strlen(content));
    assert_int_equal(run_mhsm(ok_file, &out, &err), 0);
    tu_write_file(keyfile, "{\"publicKey\": 5}", 16);
    assert_int_equal(run_mhsm(ok_file, &out, &err), 2);

    /* a damaged key file is a usage problem, not a verdict on the log */
    tu_write_file(keyfile, "not hex\n", 8);
    assert_int_equal(run_mhsm(ok_file, &out, &err), 2);
    assert_non_null(strstr((const char *)err.data, "does not hold a public key"));

    edit_line(bp, 3, "{\"seq\":6}");
    const char *bad[] = {"audit", "verify", "--public-key", b.pub_hex, a, bp, NULL};
    assert_int_equal(run_mhsm(bad, &out, &err), 1);
    doc = json_loads((const char *)out.data, 0, &je);
    assert_non_null(doc);
    assert_true(json_is_false(json_object_get(doc, "ok")));
    assert_string_equal(json_string_value(json_object_get(doc, "file")), bp);
    assert_int_equal(num(doc, "line"), 3);
    json_decref(doc);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "error: audit log does not verify: %s:3: ", bp);
    assert_non_null(strstr((const char *)err.data, want));

    char missing[PATH_MAX];
    tu_path(missing, sizeof missing, "c1/nope.jsonl");
    const char *gone[] = {"audit", "verify", "--public-key", b.pub_hex, a, missing, NULL};
    assert_int_equal(run_mhsm(gone, &out, &err), 1);
    assert_non_null(strstr((const char *)err.data, missing));

    mh_buf_free(&out);
    mh_buf_free(&err);
    EVP_PKEY_free(b.key);
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
        cmocka_unit_test(test_operands),
        cmocka_unit_test(test_cli_usage_errors),
        cmocka_unit_test(test_cli_help),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_cli_verify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
