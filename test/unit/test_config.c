#include "testutil.h"

#include <string.h>

#include "common/log.h"
#include "node/config.h"

static int load(const char *text, struct mh_config *cfg, char *err, size_t cap)
{
    char path[512];
    tu_path(path, sizeof path, "config-test.ini");
    tu_write_file(path, text, strlen(text));
    return mh_config_load(path, cfg, err, cap);
}

#define REQUIRED "[node]\ndata_dir = /tmp/x\n[api]\ncert = c.pem\nkey = k.pem\nclient_ca = ca.pem\n"

static void test_minimal_defaults(void **state)
{
    (void)state;
    struct mh_config c;
    char err[512] = "";
    assert_int_equal(load(REQUIRED, &c, err, sizeof err), 0);
    assert_string_equal(c.name, "mhsm.local");
    assert_string_equal(c.api_host, "127.0.0.1");
    assert_int_equal(c.api_port, 8443);
    assert_int_equal(c.max_message, 4u << 20);
    assert_int_equal(c.retention_days_default, 90);
    assert_int_equal(c.max_versions_per_key, 100);
    assert_string_equal(c.seal_key_file, "/tmp/x/node-seal.key");
    assert_int_equal(c.log_level, MH_LOG_INFO);
}

static void test_full(void **state)
{
    (void)state;
    struct mh_config c;
    char err[512] = "";
    assert_int_equal(load(REQUIRED "listen = [::1]:9000\nmax_message_bytes = 65536\n"
                                   "[node]\nname = hsm-1.example\nlog_level = debug\n"
                                   "[raft]\nid = 3\naddress = 127.0.0.3:9443\n"
                                   "[limits]\nretention_days_default = 7\n"
                                   "[workers]\nthreads = 4\n"
                                   "[seal]\nprovider = file\nkey_file = /k\n",
                          &c, err, sizeof err),
                     0);
    assert_string_equal(c.api_host, "::1");
    assert_int_equal(c.api_port, 9000);
    assert_int_equal(c.max_message, 65536);
    assert_string_equal(c.name, "hsm-1.example");
    assert_int_equal(c.raft_id, 3);
    assert_int_equal(c.retention_days_default, 7);
    assert_int_equal(c.threads, 4);
    assert_string_equal(c.seal_key_file, "/k");
}

static void test_errors(void **state)
{
    (void)state;
    struct mh_config c;
    char err[512];
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"[node]\ndata_dir = /x\n", "[api] cert is required"},
        {REQUIRED "[node]\ndata_dri = /y\n", "unknown option"},
        {REQUIRED "[limits]\nretention_days_default = 6\n", "7..90"},
        {REQUIRED "[limits]\nretention_days_default = 91\n", "7..90"},
        {REQUIRED "[api]\nmax_message_bytes = 12x\n", "max_message_bytes"},
        {REQUIRED "[api]\nmax_message_bytes = -5\n", "max_message_bytes"},
        {REQUIRED "[api]\nlisten = 127.0.0.1\n", "HOST:PORT"},
        {REQUIRED "[api]\nlisten = 127.0.0.1:70000\n", "HOST:PORT"},
        {REQUIRED "[node]\nlog_level = loud\n", "log_level"},
        {REQUIRED "[node]\nname = a/b\n", "name"},
        {REQUIRED "[seal]\nprovider = tpm\n", "only \"file\""},
        {REQUIRED "[raft]\nheartbeat_ms = 600\n", "half of election_timeout_ms"},
        {REQUIRED "[bogus]\nx = 1\n", "[bogus] x"},
        {REQUIRED "this is not ini\n", "syntax error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        assert_int_equal(load(cases[i].text, &c, err, sizeof err), MH_ECONFIG);
        if (strstr(err, cases[i].needle) == NULL)
            fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].needle);
    }
    assert_int_equal(mh_config_load("/nonexistent/mhsmd.ini", &c, err, sizeof err), -2);
    assert_non_null(strstr(err, "/nonexistent/mhsmd.ini"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
