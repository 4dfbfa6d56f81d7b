/* test_rpc: node/rpc.c against independent clients (python3-grpcio, nghttp, raw
 * sockets) spawned while the server runs on this test's libuv loop. */
#define _GNU_SOURCE
#include "testutil.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "mhsm/v1/keys.pb-c.h"
#include "node/rpc.h"

#define FAIL_MSG "key 'x' not found: 100% \xc3\xbc\x6e\xc3\xaf\n\tend"

struct pending {
    uv_timer_t timer;
    struct mh_rpc_call *call;
    const char *name;
};

static struct fx {
    uv_loop_t loop;
    uv_timer_t watchdog;
    struct mh_rpc_server *srv;
    uint16_t port;
    int random_calls, whoami_calls, getkey_calls;
    int async_fired, async_cancelled;
    uint64_t last_deadline;
    uint64_t last_call_id;
    char last_principal[512];
    char last_method[128];
    char last_peer[64];
    bool drain_in_getkey;
    uint64_t drain_grace;
    bool drained;
    /* child process */
    bool child_done;
    int64_t child_status;
    /* audit hook */
    bool audit_fail;
    const char *refuse;
    size_t nrecs;
    struct {
        int grpc, http;
        bool cancelled, known;
        int client_status;
        uint64_t call_id;
        char method[256];
    } recs[32];
} F;

static char ca[PATH_MAX], srv_cert[PATH_MAX], srv_key[PATH_MAX];
static char alice_cert[PATH_MAX], alice_key[PATH_MAX], bob_cert[PATH_MAX], bob_key[PATH_MAX];
static char eve_cert[PATH_MAX], eve_key[PATH_MAX], bob_spki[80];

/* ---- the test service --------------------------------------------------- */

static void h_random(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    (void)data;
    const Mhsm__V1__GetRandomBytesRequest *r = (const void *)request;
    F.random_calls++;
    if (r->count > 65536) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "count too large");
        return;
    }
    uint8_t *v = mh_rpc_call_alloc(call, r->count);
    if (v == NULL) {
        mh_rpc_fail(call, MH_GRPC_RESOURCE_EXHAUSTED, "arena");
        return;
    }
    for (uint32_t i = 0; i < r->count; i++)
        v[i] = (uint8_t)(i * 7 + 3);
    Mhsm__V1__GetRandomBytesResponse resp = MHSM__V1__GET_RANDOM_BYTES_RESPONSE__INIT;
    resp.value.data = v;
    resp.value.len = r->count;
    mh_rpc_reply(call, &resp.base);
}

static void h_whoami(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    (void)request;
    (void)data;
    F.whoami_calls++;
    const char *p = mh_rpc_call_principal(call);
    snprintf(F.last_principal, sizeof F.last_principal, "%s", p);
    snprintf(F.last_method, sizeof F.last_method, "%s", mh_rpc_call_method(call));
    snprintf(F.last_peer, sizeof F.last_peer, "%s", mh_rpc_call_peer(call));
    assert_true(mh_rpc_call_id(call) > F.last_call_id);
    F.last_call_id = mh_rpc_call_id(call);
    Mhsm__V1__BackupKeyResponse resp = MHSM__V1__BACKUP_KEY_RESPONSE__INIT;
    resp.value.data = (uint8_t *)(uintptr_t)p;
    resp.value.len = strlen(p);
    mh_rpc_reply(call, &resp.base);
}

static void on_pending_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_pending(uv_timer_t *t)
{
    struct pending *p = t->data;
    F.async_fired++;
    if (mh_rpc_call_cancelled(p->call))
        F.async_cancelled++;
    Mhsm__V1__JsonWebKey jwk = MHSM__V1__JSON_WEB_KEY__INIT;
    Mhsm__V1__KeyBundle kb = MHSM__V1__KEY_BUNDLE__INIT;
    jwk.kid = (char *)(uintptr_t)p->name;
    kb.key = &jwk;
    mh_rpc_reply(p->call, &kb.base);
    uv_close((uv_handle_t *)t, on_pending_closed);
}

static void on_drained(void *arg)
{
    (void)arg;
    F.drained = true;
}

static void h_getkey_async(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    (void)data;
    const Mhsm__V1__GetKeyRequest *r = (const void *)request;
    F.getkey_calls++;
    F.last_deadline = mh_rpc_call_deadline(call);
    struct pending *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->call = call;
    p->name = r->name; /* in the call's arena, valid until the reply */
    p->timer.data = p;
    assert_int_equal(uv_timer_init(&F.loop, &p->timer), 0);
    assert_int_equal(uv_timer_start(&p->timer, on_pending, strtoull(r->version, NULL, 10), 0), 0);
    if (F.drain_in_getkey) {
        F.drain_in_getkey = false;
        mh_rpc_server_drain(F.srv, F.drain_grace, on_drained, NULL);
    }
}

/* RotateKey: how many GetKey calls arrived (lets a client synchronise). */
static void h_count(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    (void)request;
    (void)data;
    char n[16];
    snprintf(n, sizeof n, "%d", F.getkey_calls);
    Mhsm__V1__JsonWebKey jwk = MHSM__V1__JSON_WEB_KEY__INIT;
    Mhsm__V1__KeyBundle kb = MHSM__V1__KEY_BUNDLE__INIT;
    jwk.kid = n;
    kb.key = &jwk;
    mh_rpc_reply(call, &kb.base);
}

static void h_fail(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    (void)data;
    const Mhsm__V1__KeyNameRequest *r = (const void *)request;
    if (strcmp(r->name, "wrongtype") == 0) {
        Mhsm__V1__GetRandomBytesResponse resp = MHSM__V1__GET_RANDOM_BYTES_RESPONSE__INIT;
        mh_rpc_reply(call, &resp.base);
        return;
    }
    mh_rpc_fail(call, MH_GRPC_NOT_FOUND, FAIL_MSG);
}

static int audit_hook(void *data, const struct mh_rpc_done *d)
{
    assert_ptr_equal(data, &F);
    assert_non_null(d->note);
    assert_non_null(d->principal);
    assert_true(d->start_unix_ms > 1600000000000);
    if (F.nrecs < sizeof F.recs / sizeof F.recs[0]) {
        F.recs[F.nrecs].grpc = d->grpc_status;
        F.recs[F.nrecs].http = d->http_status;
        F.recs[F.nrecs].cancelled = d->cancelled;
        F.recs[F.nrecs].client_status = d->client_status;
        F.recs[F.nrecs].known = d->known_method;
        F.recs[F.nrecs].call_id = d->call_id;
        snprintf(F.recs[F.nrecs].method, sizeof F.recs[F.nrecs].method, "%s", d->method);
    }
    F.nrecs++;
    return F.audit_fail ? MH_EAUDIT : 0;
}

static const char *audit_admit(void *data)
{
    assert_ptr_equal(data, &F);
    return F.refuse;
}

/* ---- fixture ------------------------------------------------------------ */

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "test_rpc: watchdog expired\n");
    abort();
}

static void server_start(size_t max_message, uint32_t max_connections)
{
    memset(&F, 0, sizeof F);
    assert_int_equal(uv_loop_init(&F.loop), 0);
    assert_int_equal(uv_timer_init(&F.loop, &F.watchdog), 0);
    assert_int_equal(uv_timer_start(&F.watchdog, on_watchdog, 120000, 0), 0);
    uv_unref((uv_handle_t *)&F.watchdog);
    struct mh_rpc_config cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .cert_file = srv_cert,
        .key_file = srv_key,
        .ca_file = ca,
        .max_message = max_message,
        .max_streams = 32,
        .max_connections = max_connections,
    };
    assert_int_equal(mh_rpc_server_new(&F.loop, &cfg, &F.srv), 0);
    static mh_rpc_handler_fn handlers[15];
    assert_int_equal(mhsm__v1__keys__descriptor.n_methods, 15);
    memset(handlers, 0, sizeof handlers);
    handlers[2] = h_getkey_async; /* GetKey */
    handlers[6] = h_fail;         /* DeleteKey */
    handlers[11] = h_whoami;      /* BackupKey */
    handlers[13] = h_count;       /* RotateKey */
    handlers[14] = h_random;      /* GetRandomBytes */
    assert_string_equal(mhsm__v1__keys__descriptor.methods[14].name, "GetRandomBytes");
    assert_string_equal(mhsm__v1__keys__descriptor.methods[11].name, "BackupKey");
    assert_string_equal(mhsm__v1__keys__descriptor.methods[6].name, "DeleteKey");
    assert_string_equal(mhsm__v1__keys__descriptor.methods[2].name, "GetKey");
    assert_string_equal(mhsm__v1__keys__descriptor.methods[13].name, "RotateKey");
    assert_int_equal(mh_rpc_server_add_service(F.srv, &mhsm__v1__keys__descriptor, handlers, &F),
                     0);
    assert_int_equal(mh_rpc_server_listen(F.srv), 0);
    F.port = mh_rpc_server_port(F.srv);
    assert_true(F.port != 0);
}

static void run_until(bool *flag)
{
    while (!*flag)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
}

/* Drains (unless the test did), runs the loop to completion, closes it. */
static void server_stop(void)
{
    mh_rpc_server_drain(F.srv, 1000, on_drained, NULL);
    run_until(&F.drained);
    uv_close((uv_handle_t *)&F.watchdog, NULL);
    assert_int_equal(uv_run(&F.loop, UV_RUN_DEFAULT), 0);
    mh_rpc_server_free(F.srv);
    F.srv = NULL;
    assert_int_equal(uv_loop_close(&F.loop), 0);
}

static void expect_in(const struct mh_buf *out, const char *s)
{
    assert_non_null(out->data);
    if (strstr((const char *)out->data, s) == NULL)
        fail_msg("expected \"%s\" in:\n%s", s, (const char *)out->data);
}

static void expect_not_in(const struct mh_buf *out, const char *s)
{
    assert_non_null(out->data);
    if (strstr((const char *)out->data, s) != NULL)
        fail_msg("did not expect \"%s\" in:\n%s", s, (const char *)out->data);
}

static void on_child_exit(uv_process_t *p, int64_t status, int sig)
{
    F.child_status = sig != 0 ? 128 + sig : status;
    F.child_done = true;
    uv_close((uv_handle_t *)p, NULL);
}

/* Runs argv (NULL-terminated) while the loop serves; returns the exit status,
 * the child's stdout in |out|. */
static int64_t spawn(const char **argv, struct mh_buf *out)
{
    char path[PATH_MAX];
    tu_path(path, sizeof path, "child.out");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    uv_process_t proc;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = fd},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t opt = {.file = argv[0],
                                .args = (char **)(uintptr_t)argv,
                                .exit_cb = on_child_exit,
                                .stdio_count = 3,
                                .stdio = stdio};
    F.child_done = false;
    int rv = uv_spawn(&F.loop, &proc, &opt);
    close(fd);
    assert_int_equal(rv, 0);
    run_until(&F.child_done);
    mh_buf_free(out);
    tu_read_file(path, out);
    if (F.child_status != 0)
        fprintf(stderr, "%s exited with %d:\n%s\n", argv[0], (int)F.child_status,
                out->data != NULL ? (char *)out->data : "");
    return F.child_status;
}

static char *client_script(void)
{
    static char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", __FILE__);
    char *slash = strrchr(p, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof p - (size_t)(slash - p), "/rpc/rpc_client.py");
    return p;
}

/* python client with |cert|/|key| (NULL: none) running |ops| (NULL-terminated). */
static void py(const char *cert, const char *key, const char **ops, struct mh_buf *out)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)F.port);
    const char *argv[64];
    size_t n = 0;
    argv[n++] = "/usr/bin/python3";
    argv[n++] = client_script();
    argv[n++] = "--target";
    argv[n++] = target;
    argv[n++] = "--ca";
    argv[n++] = ca;
    if (cert != NULL) {
        argv[n++] = "--cert";
        argv[n++] = (char *)(uintptr_t)cert;
        argv[n++] = "--key";
        argv[n++] = (char *)(uintptr_t)key;
    }
    for (size_t i = 0; ops[i] != NULL; i++) {
        assert_true(n < 62);
        argv[n++] = (char *)(uintptr_t)ops[i];
    }
    argv[n] = NULL;
    assert_int_equal(spawn(argv, out), 0);
}

static void expect_lines(const struct mh_buf *out, const char **lines)
{
    struct mh_buf want = {0};
    for (size_t i = 0; lines[i] != NULL; i++) {
        assert_int_equal(mh_buf_append_str(&want, lines[i]), 0);
        assert_int_equal(mh_buf_append_str(&want, "\n"), 0);
    }
    assert_non_null(out->data);
    assert_string_equal((const char *)out->data, (const char *)want.data);
    mh_buf_free(&want);
}

static char *hexstr(const char *s)
{
    static char out[512];
    size_t n = strlen(s);
    assert_true(2 * n < sizeof out);
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned char)s[i]);
    out[2 * n] = 0;
    return out;
}

/* ---- certificates ------------------------------------------------------- */

static int gen_certs(void **state)
{
    (void)state;
    const char *d = tu_tmpdir();
    tu_path(ca, sizeof ca, "ca.pem");
    tu_path(srv_cert, sizeof srv_cert, "server.pem");
    tu_path(srv_key, sizeof srv_key, "server.key");
    tu_path(alice_cert, sizeof alice_cert, "alice.pem");
    tu_path(alice_key, sizeof alice_key, "alice.key");
    tu_path(bob_cert, sizeof bob_cert, "bob.pem");
    tu_path(bob_key, sizeof bob_key, "bob.key");
    tu_path(eve_cert, sizeof eve_cert, "eve.pem");
    tu_path(eve_key, sizeof eve_key, "eve.key");
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    const char *ca_ext =
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
    if (tu_sh("cd '%s' && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 "
              "-subj /CN=test-ca %s && openssl req -x509 %s -keyout other.key -out other.pem "
              "-days 2 -subj /CN=other-ca %s",
              d, ec, ca_ext, ec, ca_ext) != 0)
        return -1;
    if (tu_sh("cd '%s' && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
              "extendedKeyUsage=serverAuth\\n' > server.ext && "
              "printf 'subjectAltName=URI:spiffe://test/alice\\nextendedKeyUsage=clientAuth\\n' "
              "> alice.ext && printf 'extendedKeyUsage=clientAuth\\n' > bob.ext && "
              "printf 'subjectAltName=URI:spiffe://test/eve\\n' > eve.ext",
              d) != 0)
        return -1;
    static const char *const certs[][3] = {
        {"server", "ca", "localhost"},
        {"alice", "ca", "alice"},
        {"bob", "ca", "bob"},
        {"eve", "other", "eve"},
    };
    for (size_t i = 0; i < 4; i++) {
        if (tu_sh("cd '%s' && openssl req %s -keyout %s.key -out %s.csr -subj /CN=%s && "
                  "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -set_serial 0x%zx1 "
                  "-days 2 -extfile %s.ext -out %s.pem",
                  d, ec, certs[i][0], certs[i][0], certs[i][2], certs[i][0], certs[i][1],
                  certs[i][1], i + 1, certs[i][0], certs[i][0]) != 0)
            return -1;
    }
    /* Bob's expected principal, computed independently by the openssl CLI. */
    if (tu_sh("cd '%s' && openssl x509 -in bob.pem -pubkey -noout | openssl pkey -pubin "
              "-outform DER | openssl dgst -sha256 -r | cut -c1-64 > bob.spki",
              d) != 0)
        return -1;
    struct mh_buf b = {0};
    tu_read_tmp("bob.spki", &b);
    if (b.len < 64)
        return -1;
    snprintf(bob_spki, sizeof bob_spki, "spki:%.64s", (const char *)b.data);
    mh_buf_free(&b);
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_config_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mh_rpc_server *srv = NULL;
    char missing[PATH_MAX];
    tu_path(missing, sizeof missing, "missing.pem");
    struct mh_rpc_config cfg = {.host = "127.0.0.1",
                                .cert_file = srv_cert,
                                .key_file = srv_key,
                                .ca_file = ca,
                                .max_message = 4096};
    cfg.cert_file = missing;
    assert_int_equal(mh_rpc_server_new(&loop, &cfg, &srv), MH_ECONFIG);
    cfg.cert_file = srv_cert;
    cfg.key_file = alice_key; /* does not match */
    assert_int_equal(mh_rpc_server_new(&loop, &cfg, &srv), MH_ECONFIG);
    cfg.key_file = srv_key;
    cfg.ca_file = missing;
    assert_int_equal(mh_rpc_server_new(&loop, &cfg, &srv), MH_ECONFIG);
    cfg.ca_file = ca;
    cfg.max_message = 100;
    assert_int_equal(mh_rpc_server_new(&loop, &cfg, &srv), MH_ECONFIG);
    cfg.max_message = 4096;
    assert_int_equal(mh_rpc_server_new(&loop, &cfg, &srv), 0);
    static const mh_rpc_handler_fn none[15];
    assert_int_equal(mh_rpc_server_add_service(srv, &mhsm__v1__keys__descriptor, none, NULL), 0);
    assert_int_equal(mh_rpc_server_add_service(srv, &mhsm__v1__keys__descriptor, none, NULL),
                     MH_EEXIST);
    /* Never started: drain finishes at once. */
    F.drained = false;
    mh_rpc_server_drain(srv, 10, on_drained, NULL);
    assert_true(F.drained);
    mh_rpc_server_free(srv);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_unary_and_principal(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    /* amplify: 60 KB of empty unknown fields decode to far more than the
     * arena budget (4x + 64 KiB): INTERNAL, and the server lives on. */
    char amp[160];
    snprintf(amp, sizeof amp, "amplify ERR INTERNAL %s",
             hexstr("request message could not be parsed"));
    /* 40000 and 65536: responses over several DATA frames and TLS records, each
     * frame bigger than the buffer the transport gathers frames in. */
    const char *ops[] = {"random:16",   "random:0",      "random:4096",  "whoami",       "pad:100",
                         "amplify:100", "amplify:30000", "random:40000", "random:65536", NULL};
    py(alice_cert, alice_key, ops, &out);
    const char *want[] = {"random OK 16",
                          "random OK 0",
                          "random OK 4096",
                          "whoami OK spiffe://test/alice",
                          "pad OK",
                          "amplify OK",
                          amp,
                          "random OK 40000",
                          "random OK 65536",
                          NULL};
    expect_lines(&out, want);
    assert_string_equal(F.last_principal, "spiffe://test/alice");
    assert_string_equal(F.last_method, "/mhsm.v1.Keys/BackupKey");
    assert_true(strncmp(F.last_peer, "127.0.0.1:", 10) == 0);
    assert_int_equal(F.random_calls, 7);

    /* No SAN: the principal is the SPKI hash, as the openssl CLI computes it. */
    const char *ops2[] = {"whoami", NULL};
    py(bob_cert, bob_key, ops2, &out);
    char line[128];
    snprintf(line, sizeof line, "whoami OK %s", bob_spki);
    const char *want2[] = {line, NULL};
    expect_lines(&out, want2);
    assert_string_equal(F.last_principal, bob_spki);
    mh_buf_free(&out);
    server_stop();
}

static void test_async_errors_health(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    mh_rpc_server_set_serving(F.srv, true);
    char failed[600];
    snprintf(failed, sizeof failed, "fail ERR NOT_FOUND %s", hexstr(FAIL_MSG));
    const char *ops[] = {"getkey:k1:200",
                         "getkey:k2:0",
                         "call:/mhsm.v1.Keys/CreateKey",
                         "call:/mhsm.v1.Nope/Foo",
                         "call:/mhsm.v1.Keys",
                         "fail:x",
                         "fail:wrongtype",
                         "health:-",
                         "health:mhsm.v1.Keys",
                         "watch",
                         NULL};
    py(alice_cert, alice_key, ops, &out);
    char unimpl[128], unknown[128], wrong[128];
    snprintf(unimpl, sizeof unimpl, "call ERR UNIMPLEMENTED %s", hexstr("method not implemented"));
    snprintf(unknown, sizeof unknown, "call ERR UNIMPLEMENTED %s", hexstr("unknown method"));
    snprintf(wrong, sizeof wrong, "fail ERR INTERNAL %s",
             hexstr("internal error: bad response type"));
    char notfound[128];
    snprintf(notfound, sizeof notfound, "health ERR NOT_FOUND %s", hexstr("unknown service"));
    const char *want[] = {"getkey OK k1", "getkey OK k2", unimpl,        unknown,  unknown,
                          failed,         wrong,          "health OK 1", notfound, NULL};
    /* watch: grpcio reports the status name; compare the prefix only. */
    const char *lastline = strstr((const char *)out.data, "watch ERR UNIMPLEMENTED");
    assert_non_null(lastline);
    size_t keep = (size_t)(lastline - (const char *)out.data);
    mh_buf_truncate(&out, keep);
    expect_lines(&out, want);
    assert_int_equal(F.async_fired, 2);
    assert_int_equal(F.async_cancelled, 0);

    mh_rpc_server_set_serving(F.srv, false);
    const char *ops2[] = {"health:-", NULL};
    py(alice_cert, alice_key, ops2, &out);
    const char *want2[] = {"health OK 2", NULL};
    expect_lines(&out, want2);
    mh_buf_free(&out);
    server_stop();
}

/* One hook call per request stream, whatever ended it; a failing hook turns the
 * answer into UNAVAILABLE; a refusing admission keeps handlers from running. */
static void test_audit_hook(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    mh_rpc_server_set_serving(F.srv, true);
    mh_rpc_server_set_audit(F.srv, audit_hook, audit_admit, &F);
    const char *ops[] = {"random:16", "fail:x", "call:/mhsm.v1.Nope/Foo", "amplify:30000", NULL};
    py(alice_cert, alice_key, ops, &out);
    expect_in(&out, "random OK 16");
    expect_in(&out, "fail ERR NOT_FOUND");
    expect_in(&out, "call ERR UNIMPLEMENTED");
    expect_in(&out, "amplify ERR INTERNAL");
    assert_int_equal(F.nrecs, 4);
    assert_int_equal(F.recs[0].grpc, 0);
    assert_true(F.recs[0].known);
    assert_true(F.recs[0].call_id > 0);
    assert_string_equal(F.recs[0].method, "/mhsm.v1.Keys/GetRandomBytes");
    assert_int_equal(F.recs[1].grpc, MH_GRPC_NOT_FOUND);
    assert_int_equal(F.recs[2].grpc, MH_GRPC_UNIMPLEMENTED);
    assert_false(F.recs[2].known);
    assert_int_equal(F.recs[2].call_id, 0);
    assert_string_equal(F.recs[2].method, "/mhsm.v1.Nope/Foo");
    assert_int_equal(F.recs[3].grpc, MH_GRPC_INTERNAL);
    assert_false(F.recs[3].cancelled);

    /* The client goes away with a call in flight: one record, made when the
     * handler finishes, with the handler's outcome (OK) and the client gone. */
    const char *ops2[] = {"abandon:1500", NULL};
    py(alice_cert, alice_key, ops2, &out);
    while (F.async_fired < 1)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
    /* (abandon polls RotateKey to know the server has the call) */
    int getkeys = 0;
    for (size_t i = 4; i < F.nrecs; i++) {
        if (strcmp(F.recs[i].method, "/mhsm.v1.Keys/GetKey") != 0) {
            assert_string_equal(F.recs[i].method, "/mhsm.v1.Keys/RotateKey");
            continue;
        }
        getkeys++;
        assert_true(F.recs[i].cancelled);
        assert_int_equal(F.recs[i].grpc, MH_GRPC_OK);
        assert_int_equal(F.recs[i].client_status, -1);
    }
    assert_int_equal(getkeys, 1);
    size_t base = F.nrecs;

    /* The record cannot be written: the reply becomes UNAVAILABLE. */
    F.audit_fail = true;
    const char *ops3[] = {"random:16", "fail:x", NULL};
    py(alice_cert, alice_key, ops3, &out);
    char want[600];
    snprintf(want, sizeof want, "random ERR UNAVAILABLE %s", hexstr(mh_strerror(MH_EAUDIT)));
    expect_in(&out, want);
    snprintf(want, sizeof want, "fail ERR UNAVAILABLE %s", hexstr(mh_strerror(MH_EAUDIT)));
    expect_in(&out, want);
    assert_int_equal(F.nrecs, base + 2);
    F.audit_fail = false;

    /* Admission refused: no handler runs; health says NOT_SERVING. */
    int before = F.random_calls;
    F.refuse = "audit log down";
    const char *ops4[] = {"random:16", "health:-", NULL};
    py(alice_cert, alice_key, ops4, &out);
    snprintf(want, sizeof want, "random ERR UNAVAILABLE %s", hexstr("audit log down"));
    expect_in(&out, want);
    expect_in(&out, "health OK 2");
    assert_int_equal(F.random_calls, before);
    assert_int_equal(F.nrecs, base + 4);
    assert_int_equal(F.recs[base + 2].grpc, MH_GRPC_UNAVAILABLE);
    F.refuse = NULL;
    mh_buf_free(&out);
    server_stop();
}

static void test_limits(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(1024, 64);
    char big[128];
    snprintf(big, sizeof big, "pad ERR RESOURCE_EXHAUSTED %s",
             hexstr("request message larger than 1024 bytes"));
    const char *ops[] = {"pad:900", "pad:2000", "pad:5000000", "random:8", NULL};
    py(alice_cert, alice_key, ops, &out);
    const char *want[] = {"pad OK", big, big, "random OK 8", NULL};
    expect_lines(&out, want);
    mh_buf_free(&out);
    server_stop();
}

static void test_refused_handshakes(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    const char *ops[] = {"random:4", NULL};
    py(NULL, NULL, ops, &out); /* no client certificate */
    expect_in(&out, "random ERR UNAVAILABLE");
    py(eve_cert, eve_key, ops, &out); /* another CA */
    expect_in(&out, "random ERR UNAVAILABLE");
    assert_int_equal(F.random_calls, 0);
    /* ALPN: none or not h2 is refused; h2 is served. Garbage does not hurt. */
    const char *ops2[] = {"rawtls:none", "rawtls:http/1.1", "rawtls:h2",
                          "garbage",     "random:4",        NULL};
    py(alice_cert, alice_key, ops2, &out);
    const char *want2[] = {"rawtls CLOSED",  "rawtls CLOSED", "rawtls OPEN",
                           "garbage CLOSED", "random OK 4",   NULL};
    expect_lines(&out, want2);
    assert_int_equal(F.random_calls, 1);
    mh_buf_free(&out);
    server_stop();
}

static void test_max_connections(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 1);
    /* The channel holds the only slot; a second connection is closed at once. */
    const char *ops[] = {"random:4", "rawtls:h2", "random:5", NULL};
    py(alice_cert, alice_key, ops, &out);
    const char *want[] = {"random OK 4", "rawtls CLOSED", "random OK 5", NULL};
    expect_lines(&out, want);
    mh_buf_free(&out);
    server_stop();
}

static void test_client_vanishes(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    /* The client process exits with a call in flight: the connection closes
     * under the call, which is marked cancelled; the late reply is dropped. */
    const char *ops[] = {"abandon:2000", NULL};
    py(alice_cert, alice_key, ops, &out);
    const char *want[] = {"abandon OK", NULL};
    expect_lines(&out, want);
    while (F.async_fired < 1)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
    assert_int_equal(F.getkey_calls, 1);
    assert_int_equal(F.async_cancelled, 1);
    mh_buf_free(&out);
    server_stop();
}

static void test_deadline(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    const char *ops[] = {"getkey:slow:1500:0.3", "getkey:fast:10:5", NULL};
    py(alice_cert, alice_key, ops, &out);
    expect_in(&out, "getkey ERR DEADLINE_EXCEEDED");
    expect_in(&out, "getkey OK fast\n");
    assert_true(F.last_deadline > 0);
    /* The slow handler's timer is still pending: its reply must be dropped. */
    while (F.async_fired < 2)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
    assert_int_equal(F.async_cancelled, 1);
    mh_buf_free(&out);
    server_stop();
}

/* With the audit hook: a request whose deadline passed under its handler gets one
 * record, made when the handler finishes: the handler's outcome, the client gone
 * (with the server's DEADLINE_EXCEEDED, or nothing when the client's own deadline
 * reset the stream first). */
static void test_deadline_audit(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    mh_rpc_server_set_audit(F.srv, audit_hook, audit_admit, &F);
    const char *ops[] = {"getkey:slow:1500:0.3", NULL};
    py(alice_cert, alice_key, ops, &out);
    expect_in(&out, "getkey ERR DEADLINE_EXCEEDED");
    size_t before = F.nrecs;
    while (F.async_fired < 1)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
    assert_int_equal(F.async_cancelled, 1);
    size_t getkeys = 0;
    for (size_t i = 0; i < F.nrecs; i++) {
        if (strcmp(F.recs[i].method, "/mhsm.v1.Keys/GetKey") != 0)
            continue;
        getkeys++;
        assert_true(i >= before); /* not before the handler finished */
        assert_true(F.recs[i].cancelled);
        assert_int_equal(F.recs[i].grpc, MH_GRPC_OK);
        assert_true(F.recs[i].client_status == MH_GRPC_DEADLINE_EXCEEDED ||
                    F.recs[i].client_status == -1);
    }
    assert_int_equal(getkeys, 1);
    mh_buf_free(&out);
    server_stop();
}

/* Raw HTTP/2 with nghttp: status codes a gRPC client library would hide. */
static void nghttp(const char *path, const char *body, size_t body_len, const char **headers,
                   struct mh_buf *out)
{
    char url[256], data[PATH_MAX], cert[PATH_MAX + 8], key[PATH_MAX + 8];
    snprintf(url, sizeof url, "https://127.0.0.1:%u%s", (unsigned)F.port, path);
    tu_path(data, sizeof data, "body.bin");
    if (body != NULL)
        tu_write_file(data, body, body_len);
    snprintf(cert, sizeof cert, "--cert=%s", alice_cert);
    snprintf(key, sizeof key, "--key=%s", alice_key);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = "/usr/bin/nghttp";
    argv[n++] = "-v";
    argv[n++] = "-n";
    argv[n++] = "-y";
    argv[n++] = "-t";
    argv[n++] = "20";
    argv[n++] = cert;
    argv[n++] = key;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        argv[n++] = "-H";
        argv[n++] = (char *)(uintptr_t)headers[i];
    }
    if (body != NULL) {
        argv[n++] = "-d";
        argv[n++] = data;
    }
    argv[n++] = url;
    argv[n] = NULL;
    (void)spawn(argv, out);
}

static void test_raw_http2(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    const char *grpc[] = {"content-type: application/grpc", NULL};
    const char *rnd = "/mhsm.v1.Keys/GetRandomBytes";
    /* Sanity: a well-formed request over raw HTTP/2. */
    nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, grpc, &out);
    expect_in(&out, "grpc-status: 0");
    expect_in(&out, "content-type: application/grpc");
    /* Wrong content type: HTTP 415. GET: 405. */
    const char *plain[] = {"content-type: text/plain", NULL};
    nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, plain, &out);
    expect_in(&out, ":status: 415");
    nghttp(rnd, NULL, 0, grpc, &out);
    expect_in(&out, ":status: 405");
    /* Compressed flag: UNIMPLEMENTED. */
    nghttp(rnd, "\1\0\0\0\2\x08\x03", 7, grpc, &out);
    expect_in(&out, "grpc-status: 12");
    expect_in(&out, "grpc-message: compressed messages are not supported");
    /* Two messages on a unary method: UNIMPLEMENTED. */
    nghttp(rnd, "\0\0\0\0\2\x08\x03\0\0\0\0\2\x08\x03", 14, grpc, &out);
    expect_in(&out, "grpc-status: 12");
    expect_in(&out, "grpc-message: more than one request message");
    /* No message at all: UNIMPLEMENTED. */
    nghttp(rnd, "", 0, grpc, &out);
    expect_in(&out, "grpc-status: 12");
    expect_in(&out, "grpc-message: no request message");
    /* Truncated message, truncated prefix, protobuf garbage: INTERNAL. */
    nghttp(rnd, "\0\0\0\0\x0a\x08\x03", 7, grpc, &out);
    expect_in(&out, "grpc-status: 13");
    expect_in(&out, "grpc-message: truncated request message");
    nghttp(rnd, "\0\0\0", 3, grpc, &out);
    expect_in(&out, "grpc-status: 13");
    expect_in(&out, "grpc-message: truncated request message");
    nghttp(rnd, "\0\0\0\0\3\xff\xff\xff", 8, grpc, &out);
    expect_in(&out, "grpc-status: 13");
    expect_in(&out, "grpc-message: request message could not be parsed");
    /* Invalid flag byte: INTERNAL. */
    nghttp(rnd, "\x80\0\0\0\2\x08\x03", 7, grpc, &out);
    expect_in(&out, "grpc-status: 13");
    /* A declared length of 2 GiB with 2 bytes sent: refused before allocation. */
    nghttp(rnd, "\0\x7f\xff\xff\xff\x08\x03", 7, grpc, &out);
    expect_in(&out, "grpc-status: 8");
    expect_in(&out, "grpc-message: request message larger than 65536 bytes");
    /* grpc-timeout: malformed values are INTERNAL; a valid one is enforced. */
    const char *bad_to[][3] = {
        {"content-type: application/grpc", "grpc-timeout: 123456789S", NULL},
        {"content-type: application/grpc", "grpc-timeout: 10x", NULL},
        {"content-type: application/grpc", "grpc-timeout: S", NULL},
        {"content-type: application/grpc", "grpc-timeout: -1m", NULL},
    };
    for (size_t i = 0; i < 4; i++) {
        nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, bad_to[i], &out);
        expect_in(&out, "grpc-status: 13");
        expect_in(&out, "grpc-message: malformed grpc-timeout");
    }
    const char *ok_to[][3] = {
        {"content-type: application/grpc", "grpc-timeout: 99999999H", NULL},
        {"content-type: application/grpc", "grpc-timeout: 5S", NULL},
        {"content-type: application/grpc", "grpc-timeout: 5000000000n", NULL},
    };
    for (size_t i = 0; i < 2; i++) {
        nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, ok_to[i], &out);
        expect_in(&out, "grpc-status: 0");
    }
    nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, ok_to[2], &out); /* 10 digits */
    expect_in(&out, "grpc-status: 13");
    /* GetKey{name:"t", version:"800"} with a 100 ms deadline: DEADLINE_EXCEEDED
     * from the server itself (nghttp has no deadline logic). */
    const char *short_to[] = {"content-type: application/grpc", "grpc-timeout: 100000u", NULL};
    nghttp("/mhsm.v1.Keys/GetKey",
           "\0\0\0\0\x08\x0a\x01t\x12\x03"
           "800",
           13, short_to, &out);
    expect_in(&out, "grpc-status: 4");
    expect_in(&out, "grpc-message: deadline exceeded");
    while (F.async_fired < 1)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
    assert_int_equal(F.async_cancelled, 1);
    /* Unknown path. */
    nghttp("/x", "\0\0\0\0\0", 5, grpc, &out);
    expect_in(&out, "grpc-status: 12");
    /* Header list over 8 KiB: the stream is reset, the server lives on. */
    static char huge[9000];
    memset(huge, 'a', sizeof huge - 1);
    memcpy(huge, "x-big: ", 7);
    const char *big_hdr[] = {"content-type: application/grpc", huge, NULL};
    nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, big_hdr, &out);
    expect_not_in(&out, "grpc-status: 0");
    nghttp(rnd, "\0\0\0\0\2\x08\x03", 7, grpc, &out);
    expect_in(&out, "grpc-status: 0");
    mh_buf_free(&out);
    server_stop();
}

static void test_many_calls(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    const char *ops[] = {"many:200:4:24", "many:100:1:1", NULL};
    py(alice_cert, alice_key, ops, &out);
    const char *want[] = {"many OK 200", "many OK 100", NULL};
    expect_lines(&out, want);
    assert_int_equal(F.random_calls + F.getkey_calls, 300);
    mh_buf_free(&out);
    server_stop();
}

static void test_drain(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    /* The slow call starts the drain: it still completes; then nothing connects. */
    F.drain_in_getkey = true;
    F.drain_grace = 5000;
    const char *ops[] = {"random:4", "getkey:inflight:300", "newchan", "random:4", NULL};
    py(alice_cert, alice_key, ops, &out);
    expect_in(&out, "random OK 4\ngetkey OK inflight\nnewchan OK\n"
                    "random ERR UNAVAILABLE");
    assert_int_equal(F.async_cancelled, 0);
    run_until(&F.drained);
    uv_close((uv_handle_t *)&F.watchdog, NULL);
    assert_int_equal(uv_run(&F.loop, UV_RUN_DEFAULT), 0);
    mh_rpc_server_free(F.srv);
    assert_int_equal(uv_loop_close(&F.loop), 0);
    mh_buf_free(&out);
}

static void test_drain_grace_expires(void **state)
{
    (void)state;
    struct mh_buf out = {0};
    server_start(64 * 1024, 64);
    /* A handler slower than the grace: the client gets UNAVAILABLE, the late
     * reply is dropped. */
    F.drain_in_getkey = true;
    F.drain_grace = 200;
    const char *ops[] = {"getkey:late:1500", NULL};
    py(alice_cert, alice_key, ops, &out);
    expect_in(&out, "getkey ERR UNAVAILABLE");
    run_until(&F.drained);
    while (F.async_fired < 1)
        assert_int_not_equal(uv_run(&F.loop, UV_RUN_ONCE), -1);
    assert_int_equal(F.async_cancelled, 1);
    uv_close((uv_handle_t *)&F.watchdog, NULL);
    assert_int_equal(uv_run(&F.loop, UV_RUN_DEFAULT), 0);
    mh_rpc_server_free(F.srv);
    assert_int_equal(uv_loop_close(&F.loop), 0);
    mh_buf_free(&out);
}

int main(void)
{
    /* Peers that vanish mid-write must not kill the process (mhsmd does the same). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_unary_and_principal),
        cmocka_unit_test(test_async_errors_health),
        cmocka_unit_test(test_audit_hook),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_refused_handshakes),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_client_vanishes),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_deadline_audit),
        cmocka_unit_test(test_raw_http2),
        cmocka_unit_test(test_many_calls),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_grace_expires),
    };
    return cmocka_run_group_tests(tests, gen_certs, NULL);
}
