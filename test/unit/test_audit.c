#include "testutil.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "crypto/auditlog.h"
#include "node/audit.h"

static uv_loop_t loop;

static void seed(struct mh_secret *s)
{
    assert_int_equal(mh_secret_alloc(s, 32), 0);
    for (size_t i = 0; i < 32; i++)
        s->data[i] = (uint8_t)(7 * i + 1);
}

static void subdir(char *out, const char *name)
{
    tu_path(out, PATH_MAX, name);
}

static struct mh_audit *open_log(const char *dir, uint64_t max_bytes)
{
    struct mh_audit_config cfg = {
        .dir = dir,
        .node_id = 2,
        .hsm_name = "hsm\"x",
        .max_file_bytes = max_bytes,
        .checkpoint_interval_ms = 100,
    };
    struct mh_audit *a = NULL;
    assert_int_equal(mh_audit_open(&loop, &cfg, &a), 0);
    assert_non_null(a);
    return a;
}

static void close_log(struct mh_audit *a)
{
    mh_audit_close(a);
    /* The thread-pool fdatasyncs and the timer closes finish here. */
    for (int i = 0; i < 1000 && uv_run(&loop, UV_RUN_ONCE) != 0; i++)
        ;
}

static int record(struct mh_audit *a, int grpc, const char *method, bool known)
{
    struct mh_rpc_note note = {.action = 16, .decision = grpc == 7 ? -1 : 1};
    strcpy(note.key, "k1");
    strcpy(note.version, "0123456789abcdef0123456789abcdef");
    strcpy(note.scope, "/keys/k1");
    strcpy(note.request_id, "req-1");
    struct mh_rpc_done d = {
        .call_id = 42,
        .method = method,
        .known_method = known,
        .principal = "spiffe://mhsm/app",
        .peer = "127.0.0.1:5555",
        .start_unix_ms = 1714557600123,
        .duration_us = 2500,
        .grpc_status = grpc,
        .http_status = 200,
        .message = grpc != 0 ? "missing action keys/sign/action at /keys/k1" : NULL,
        .note = &note,
    };
    return mh_audit_request(a, &d);
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The audit files of |dir|, sorted (names sort by first seq). */
static size_t list_files(const char *dir, char **paths, size_t cap)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        if (strncmp(de->d_name, "audit-", 6) != 0)
            continue;
        assert_true(n < cap);
        paths[n] = malloc(PATH_MAX);
        assert_non_null(paths[n]);
        snprintf(paths[n], PATH_MAX, "%s/%s", dir, de->d_name);
        n++;
    }
    closedir(dp);
    qsort(paths, n, sizeof *paths, cmp_str);
    return n;
}

static int verify_dir(const char *dir, const uint8_t *pub, struct mh_auditlog_report *r,
                      size_t *nfiles)
{
    char *paths[512];
    size_t n = list_files(dir, paths, 512);
    int rv = mh_auditlog_verify_files((const char *const *)paths, n, pub, r);
    if (rv != 0)
        print_error("verify: %s line %lu: %s\n", r->bad_file ? r->bad_file : "-",
                    (unsigned long)r->bad_line, r->reason);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    if (nfiles != NULL)
        *nfiles = n;
    return rv;
}

/* All lines of all files, parsed. */
static json_t *lines_of(const char *dir)
{
    char *paths[512];
    size_t n = list_files(dir, paths, 512);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "r");
        assert_non_null(f);
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        while ((got = getline(&line, &cap, f)) > 0) {
            if (line[got - 1] != '\n')
                continue; /* a torn line */
            json_error_t e;
            json_t *j = json_loads(line, 0, &e);
            assert_non_null(j);
            json_array_append_new(arr, j);
        }
        free(line);
        fclose(f);
        free(paths[i]);
    }
    return arr;
}

static const char *op_of(json_t *j)
{
    return json_string_value(json_object_get(j, "operationName"));
}

static void test_records_chain_and_verify(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    subdir(dir, "chain");
    struct mh_audit *a = open_log(dir, 1 << 20);
    assert_null(mh_audit_refusal(a));
    uint8_t pub[32];
    assert_int_equal(mh_audit_public_key(a, pub), MH_ENOTACTIVE);
    assert_int_equal(record(a, 0, "/mhsm.v1.Crypto/Sign", true), 0);
    struct mh_secret s = {0};
    seed(&s);
    assert_int_equal(mh_audit_set_signer(a, &s), 0); /* checkpoints the 2 lines */
    mh_secret_free(&s);
    assert_int_equal(mh_audit_public_key(a, pub), 0);
    assert_int_equal(record(a, 7, "/mhsm.v1.Crypto/Sign", true), 0);
    assert_int_equal(record(a, 12, "/no.such/Method\x01", false), 0);
    assert_int_equal(record(a, 0, "/mhsm.v1.AccessControl/CreateRoleAssignment", true), 0);
    assert_int_equal(mh_audit_checkpoint(a), 0);
    assert_int_equal(record(a, 0, "/grpc.health.v1.Health/Check", true), 0);
    assert_string_equal(mh_audit_dir(a), dir);
    close_log(a);

    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    struct mh_auditlog_report r;
    size_t nf = 0;
    assert_int_equal(verify_dir(dir, pub, &r, &nf), 0);
    assert_int_equal(nf, 1);
    /* start, sign, cp, deny, unknown, create, cp, health, final cp */
    assert_int_equal(r.records, 9);
    assert_int_equal(r.checkpoints, 3);
    assert_int_equal(r.unsigned_tail, 0);
    assert_int_equal(r.node_id, 2);

    json_t *l = lines_of(dir);
    assert_int_equal(json_array_size(l), 9);
    assert_string_equal(op_of(json_array_get(l, 0)), "AuditStart");
    json_t *sign = json_array_get(l, 1);
    assert_string_equal(op_of(sign), "KeySign");
    assert_string_equal(json_string_value(json_object_get(sign, "time")),
                        "2024-05-01T10:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(sign, "resultType")), "Success");
    assert_string_equal(json_string_value(json_object_get(sign, "resultSignature")), "OK");
    assert_int_equal(json_integer_value(json_object_get(sign, "httpStatusCode")), 200);
    assert_int_equal(json_integer_value(json_object_get(sign, "durationMs")), 2);
    assert_string_equal(json_string_value(json_object_get(sign, "callerIpAddress")), "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(sign, "identity"), "claim"), "oid")),
                        "spiffe://mhsm/app");
    assert_string_equal(json_string_value(json_object_get(sign, "resource")), "hsm\"x");
    assert_string_equal(json_string_value(json_object_get(sign, "correlationId")), "req-1");
    json_t *props = json_object_get(sign, "properties");
    assert_string_equal(json_string_value(json_object_get(props, "dataAction")),
                        "Microsoft.KeyVault/managedHsm/keys/sign/action");
    assert_string_equal(json_string_value(json_object_get(props, "decision")), "allow");
    assert_string_equal(json_string_value(json_object_get(props, "keyName")), "k1");
    assert_string_equal(op_of(json_array_get(l, 2)), MH_AUDITLOG_CHECKPOINT);
    json_t *deny = json_array_get(l, 3);
    assert_string_equal(json_string_value(json_object_get(deny, "resultType")), "Failure");
    assert_string_equal(json_string_value(json_object_get(deny, "resultSignature")), "Forbidden");
    assert_int_equal(json_integer_value(json_object_get(deny, "httpStatusCode")), 403);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(deny, "properties"), "decision")),
        "deny");
    json_t *unk = json_array_get(l, 4);
    assert_string_equal(op_of(unk), "UnknownMethod");
    assert_int_equal(json_integer_value(json_object_get(unk, "httpStatusCode")), 501);
    assert_string_equal(op_of(json_array_get(l, 5)), "RoleAssignmentCreate");
    assert_string_equal(op_of(json_array_get(l, 7)), "HealthCheck");
    assert_string_equal(op_of(json_array_get(l, 8)), MH_AUDITLOG_CHECKPOINT);
    json_decref(l);

    /* Another key does not verify the log. */
    pub[0] ^= 1;
    assert_int_equal(verify_dir(dir, pub, &r, NULL), MH_EAUTH);
}

static void test_rotation_and_restart(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    subdir(dir, "rot");
    uint8_t pub[32];
    struct mh_secret s = {0};
    seed(&s);
    for (int run = 0; run < 3; run++) {
        struct mh_audit *a = open_log(dir, 4096);
        assert_int_equal(mh_audit_set_signer(a, &s), 0);
        assert_int_equal(mh_audit_public_key(a, pub), 0);
        for (int i = 0; i < 40; i++)
            assert_int_equal(record(a, i % 3 == 0 ? 5 : 0, "/mhsm.v1.Keys/GetKey", true), 0);
        if (run == 1) {
            /* A crash mid-write: the next start continues from the last complete line. */
            mh_audit_close(a);
            close_log(NULL);
            char *paths[512];
            size_t n = list_files(dir, paths, 512);
            FILE *f = fopen(paths[n - 1], "a");
            assert_non_null(f);
            fputs("{\"seq\":99999,\"prevH", f);
            fclose(f);
            for (size_t i = 0; i < n; i++)
                free(paths[i]);
            continue;
        }
        close_log(a);
    }
    mh_secret_free(&s);
    struct mh_auditlog_report r;
    size_t nf = 0;
    assert_int_equal(verify_dir(dir, pub, &r, &nf), 0);
    assert_true(nf > 6);
    assert_int_equal(r.first_seq, 1);
    assert_int_equal(r.unsigned_tail, 0);
    /* 3 x (start + 40) plus the checkpoints */
    assert_int_equal(r.records, 3 * 41 + r.checkpoints);
    json_t *l = lines_of(dir);
    size_t starts = 0;
    for (size_t i = 0; i < json_array_size(l); i++)
        if (op_of(json_array_get(l, i)) != NULL &&
            strcmp(op_of(json_array_get(l, i)), "AuditStart") == 0)
            starts++;
    assert_int_equal(starts, 3);
    json_decref(l);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void test_fail_closed_and_resume(void **state)
{
    (void)state;
    char base[PATH_MAX], dir[PATH_MAX + 16];
    subdir(base, "afile");
    /* A path under a regular file fails with ENOTDIR even for root. */
    tu_write_file(base, "x", 1);
    snprintf(dir, sizeof dir, "%s/audit", base);
    struct mh_audit *a = open_log(dir, 1 << 20);
    assert_non_null(mh_audit_refusal(a));
    assert_non_null(strstr(mh_audit_refusal(a), "audit log"));
    assert_non_null(mh_audit_rpc_admit(a));
    assert_int_equal(record(a, 0, "/mhsm.v1.Crypto/Sign", true), MH_EAUDIT);
    struct mh_secret s = {0};
    seed(&s);
    assert_int_equal(mh_audit_set_signer(a, &s), 0);
    mh_secret_free(&s);
    uint8_t pub[32];
    assert_int_equal(mh_audit_public_key(a, pub), 0);

    /* Repair: the retry (every second) resumes with an AuditResumed record. */
    assert_int_equal(unlink(base), 0);
    assert_int_equal(mkdir(base, 0700), 0);
    uv_timer_t tick;
    assert_int_equal(uv_timer_init(&loop, &tick), 0);
    assert_int_equal(uv_timer_start(&tick, on_tick, 50, 50), 0);
    for (int i = 0; i < 200 && mh_audit_refusal(a) != NULL; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_null(mh_audit_refusal(a));
    assert_int_equal(record(a, 0, "/mhsm.v1.Crypto/Sign", true), 0);
    uv_close((uv_handle_t *)&tick, NULL);
    close_log(a);
    struct mh_auditlog_report r;
    assert_int_equal(verify_dir(dir, pub, &r, NULL), 0);
    json_t *l = lines_of(dir);
    assert_string_equal(op_of(json_array_get(l, 0)), "AuditResumed");
    assert_string_equal(op_of(json_array_get(l, 1)), MH_AUDITLOG_CHECKPOINT);
    assert_string_equal(op_of(json_array_get(l, 2)), "KeySign");
    json_decref(l);

    /* A read-only directory (only meaningful without root's override). */
    if (geteuid() != 0) {
        char ro[PATH_MAX];
        subdir(ro, "ro");
        assert_int_equal(mkdir(ro, 0500), 0);
        a = open_log(ro, 1 << 20);
        assert_non_null(mh_audit_refusal(a));
        assert_int_equal(record(a, 0, "/mhsm.v1.Crypto/Sign", true), MH_EAUDIT);
        close_log(a);
        assert_int_equal(chmod(ro, 0700), 0);
    }
}

static void test_bad_config_and_corrupt_tail(void **state)
{
    (void)state;
    struct mh_audit *a = NULL;
    struct mh_audit_config cfg = {.dir = "", .max_file_bytes = 4096, .checkpoint_interval_ms = 100};
    assert_int_equal(mh_audit_open(&loop, &cfg, &a), MH_EINVAL);
    char dir[PATH_MAX];
    subdir(dir, "corrupt");
    cfg.dir = dir;
    cfg.max_file_bytes = 100;
    assert_int_equal(mh_audit_open(&loop, &cfg, &a), MH_EINVAL);
    cfg.max_file_bytes = 4096;
    cfg.checkpoint_interval_ms = 10;
    assert_int_equal(mh_audit_open(&loop, &cfg, &a), MH_EINVAL);
    cfg.checkpoint_interval_ms = 100;
    /* A newest file whose last line is not ours: the chain cannot go on. */
    assert_int_equal(mkdir(dir, 0700), 0);
    char f[PATH_MAX + 64];
    snprintf(f, sizeof f, "%s/audit-00000000000000000001.jsonl", dir);
    tu_write_file(f, "not json\n", 9);
    assert_int_equal(mh_audit_open(&loop, &cfg, &a), MH_ECORRUPT);
    close_log(NULL);
    /* Another node's chain. */
    static const char other[] =
        "{\"seq\":1,\"prevHash\":\"0000000000000000000000000000000000000000000000000000"
        "000000000000\",\"nodeId\":9,\"operationName\":\"AuditStart\"}\n";
    tu_write_file(f, other, strlen(other));
    assert_int_equal(mh_audit_open(&loop, &cfg, &a), MH_ECORRUPT);
    close_log(NULL);
}

int main(void)
{
    assert_int_equal(uv_loop_init(&loop), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_chain_and_verify),
        cmocka_unit_test(test_rotation_and_restart),
        cmocka_unit_test(test_fail_closed_and_resume),
        cmocka_unit_test(test_bad_config_and_corrupt_tail),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&loop);
    return rv;
}
