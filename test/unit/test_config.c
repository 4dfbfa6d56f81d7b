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

#define REQUIRED                                                                                   \
    "[rbac]\nadministrators = spiffe://mhsm/admin\n[node]\ndata_dir = /tmp/x\n[api]\ncert = "      \
    "c.pem\nkey = k.pem\nclient_ca = ca.pem\n"

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
        {REQUIRED "[raft]\nmembers = 1@127.0.0.1:1, 1@127.0.0.1:2\n", "duplicate member id"},
        {REQUIRED "[raft]\nmembers = 1@127.0.0.1:1, 2@127.0.0.1:1\n", "duplicate member address"},
        {REQUIRED "[raft]\nmembers = 1@127.0.0.1:9443,\n", "empty member"},
        {REQUIRED "[raft]\nmembers = 127.0.0.1:9443\n", "ID@HOST:PORT"},
        {REQUIRED "[raft]\nmembers = 0@127.0.0.1:9443\n", "1..1000000"},
        {REQUIRED "[raft]\nmembers = 1@127.0.0.1\n", "HOST:PORT"},
        {REQUIRED "[raft]\nmembers = 2@127.0.0.1:9444, 3@127.0.0.1:9445\n",
         "must include this node (id 1)"},
        {REQUIRED "[raft]\nmembers = 1@127.0.0.1:9999\n", "listed with address 127.0.0.1:9999"},
        {REQUIRED "[raft]\njoin = maybe\n", "true or false"},
        {REQUIRED "[raft]\njoin = true\nmembers = 1@127.0.0.1:9443\n", "exclusive"},
        {REQUIRED "[raft]\nsnapshot_trailing = 2\n", "snapshot_trailing"},
        {REQUIRED "[cluster]\noperators = spiffe://mhsm/node/2\n", "node certificate cannot"},
        {REQUIRED "[cluster]\noperators = a,,b\n", "empty principal"},
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

static void test_cluster_options(void **state)
{
    (void)state;
    struct mh_config c;
    char err[512] = "";
    /* default: this node alone, peer identity = the API's */
    assert_int_equal(load(REQUIRED, &c, err, sizeof err), 0);
    assert_int_equal(c.n_members, 1);
    assert_int_equal(c.members[0].id, 1);
    assert_string_equal(c.members[0].address, "127.0.0.1:9443");
    assert_string_equal(c.raft_cert, "c.pem");
    assert_string_equal(c.raft_key, "k.pem");
    assert_string_equal(c.raft_ca, "ca.pem");
    assert_false(c.join);
    assert_int_equal(c.n_operators, 0);
    assert_int_equal(c.snapshot_trailing, 8192);

    assert_int_equal(load(REQUIRED "[raft]\nid = 2\naddress = 127.0.0.1:9444\n"
                                   "members = 1@127.0.0.1:9443 , 2@127.0.0.1:9444,3@[::1]:9445\n"
                                   "cert = n.pem\nkey = n.key\nca = nca.pem\n"
                                   "snapshot_trailing = 64\n"
                                   "[cluster]\noperators = spiffe://mhsm/operator, spki:ab12\n",
                          &c, err, sizeof err),
                     0);
    assert_int_equal(c.n_members, 3);
    assert_int_equal(c.members[2].id, 3);
    assert_string_equal(c.members[0].address, "127.0.0.1:9443");
    assert_string_equal(c.members[2].address, "[::1]:9445");
    assert_string_equal(c.raft_cert, "n.pem");
    assert_string_equal(c.raft_ca, "nca.pem");
    assert_int_equal(c.snapshot_trailing, 64);
    assert_int_equal(c.n_operators, 2);
    assert_string_equal(c.operators[0], "spiffe://mhsm/operator");
    assert_string_equal(c.operators[1], "spki:ab12");

    /* a joining node lists no members and bootstraps nothing */
    assert_int_equal(load(REQUIRED "[raft]\nid = 4\naddress = 127.0.0.1:9446\njoin = true\n", &c,
                          err, sizeof err),
                     0);
    assert_true(c.join);
    assert_int_equal(c.n_members, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_cluster_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
