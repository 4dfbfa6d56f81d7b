/* test_peer: consensus/peer.c over real sockets on 127.0.0.1: requests between
 * two peers, refused peers driven by raw OpenSSL clients on threads, and three
 * real raft instances replicating over the TLS transport, all on one loop. */
#define _GNU_SOURCE
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "common/log.h"
#include "consensus/peer.h"

#define MAX_FRAME (1u << 20)

static char certdir[PATH_MAX];
static uv_loop_t loop;

/* ---- fixtures ----------------------------------------------------------- */

static void source_dir(char *out, size_t cap)
{
    const char *env = getenv("MH_SOURCE_DIR");
    if (env != NULL && *env != '\0') {
        snprintf(out, cap, "%s", env);
        return;
    }
    /* __FILE__ is absolute under CMake: strip "test/unit/test_peer.c". */
    snprintf(out, cap, "%s", __FILE__);
    char *cut = strstr(out, "/test/unit/test_peer.c");
    if (cut != NULL)
        *cut = '\0';
}

static int gen_certs(void **state)
{
    (void)state;
    char src[PATH_MAX];
    source_dir(src, sizeof src);
    tu_path(certdir, sizeof certdir, "certs");
    if (tu_sh("bash '%s/deploy/gen-certs.sh' '%s' >/dev/null", src, certdir) != 0)
        return -1;
    return 0;
}

static void cert_file(char *out, size_t cap, const char *name, const char *ext)
{
    int n = snprintf(out, cap, "%s/%s.%s", certdir, name, ext);
    assert_true(n > 0 && (size_t)n < cap);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t sl = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int new_peer(uint64_t id, const char *certname, char *addr, size_t cap, struct mh_peer **out)
{
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    cert_file(cert, sizeof cert, certname, "pem");
    cert_file(key, sizeof key, certname, "key");
    cert_file(ca, sizeof ca, "ca", "pem");
    if (addr[0] == '\0') /* else: restart on the same address */
        snprintf(addr, cap, "127.0.0.1:%u", (unsigned)free_port());
    struct mh_peer_config cfg = {.id = id,
                                 .listen = addr,
                                 .cert_file = cert,
                                 .key_file = key,
                                 .ca_file = ca,
                                 .max_frame = MAX_FRAME};
    return mh_peer_new(&loop, &cfg, out);
}

static bool run_until(bool (*pred)(void *), void *arg, uint64_t ms)
{
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + ms;
    while (!pred(arg)) {
        if (uv_now(&loop) >= end)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
        uv_update_time(&loop);
    }
    return true;
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

static void set_flag(void *arg)
{
    *(bool *)arg = true;
}

static void close_peer(struct mh_peer *p)
{
    bool done = false;
    mh_peer_close(p, set_flag, &done);
    assert_true(run_until(flag_set, &done, 10000));
    mh_peer_free(p);
}

static void loop_init(void)
{
    assert_int_equal(uv_loop_init(&loop), 0);
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leftover handle type=%s\n", uv_handle_type_name(uv_handle_get_type(h)));
}

static void loop_done(void)
{
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    int rv = uv_loop_close(&loop);
    if (rv != 0)
        uv_walk(&loop, walk_cb, NULL);
    assert_int_equal(rv, 0);
}

/* stderr to a file while a test looks for log lines */
static int saved_stderr = -1;

static void log_begin(void)
{
    char path[PATH_MAX];
    tu_path(path, sizeof path, "peer.log");
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && saved_stderr >= 0);
    dup2(fd, 2);
    close(fd);
}

static char *log_end(void)
{
    char path[PATH_MAX];
    tu_path(path, sizeof path, "peer.log");
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    struct mh_buf b = {0};
    tu_read_file(path, &b);
    assert_int_equal(mh_buf_append_u8(&b, 0), 0);
    fputs((const char *)b.data, stderr);
    size_t len;
    return (char *)mh_buf_steal(&b, &len);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *s = strstr(hay, needle); s != NULL; s = strstr(s + 1, needle))
        n++;
    return n;
}

/* ---- certificate identity ------------------------------------------------- */

static X509 *load_cert(const char *name)
{
    char path[PATH_MAX];
    cert_file(path, sizeof path, name, "pem");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static void test_cert_id(void **state)
{
    (void)state;
    uint64_t id = 0;
    X509 *x = load_cert("node2");
    assert_int_equal(mh_peer_cert_id(x, &id), 0);
    assert_int_equal(id, 2);
    X509_free(x);
    x = load_cert("foreign-node"); /* names node 4; its issuer is checked at the handshake */
    assert_int_equal(mh_peer_cert_id(x, &id), 0);
    assert_int_equal(id, 4);
    X509_free(x);
    const char *not_nodes[] = {"app", "admin", "operator", "ca"};
    for (size_t i = 0; i < sizeof not_nodes / sizeof *not_nodes; i++) {
        x = load_cert(not_nodes[i]);
        assert_int_equal(mh_peer_cert_id(x, &id), MH_ECERT);
        X509_free(x);
    }

    loop_init();
    struct mh_peer *p = NULL;
    char addr[64] = "";
    assert_int_equal(new_peer(4, "node2", addr, sizeof addr, &p), MH_ECONFIG);
    assert_null(p);
    assert_int_equal(new_peer(1, "app", addr, sizeof addr, &p), MH_ECONFIG);
    /* a busy port fails before any handle exists */
    assert_int_equal(new_peer(2, "node2", addr, sizeof addr, &p), 0);
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    cert_file(cert, sizeof cert, "node2", "pem");
    cert_file(key, sizeof key, "node2", "key");
    cert_file(ca, sizeof ca, "ca", "pem");
    struct mh_peer *q = NULL;
    struct mh_peer_config cfg = {
        .id = 2, .listen = addr, .cert_file = cert, .key_file = key, .ca_file = ca};
    assert_int_equal(mh_peer_new(&loop, &cfg, &q), -EADDRINUSE);
    cfg.listen = "localhost:1";
    assert_int_equal(mh_peer_new(&loop, &cfg, &q), MH_ECONFIG);
    assert_null(q);
    uint8_t m = 'E';
    struct mh_peer_call call;
    assert_int_equal(mh_peer_call(p, 2, "127.0.0.1:1", &m, 1, 0, &call, NULL), MH_EINVAL);
    close_peer(p);
    loop_done();
}

/* ---- requests ----------------------------------------------------------- */

struct srv {
    int calls;
    uint64_t last_from;
    bool key_ok;
    struct mh_peer_req *held[8];
    int nheld;
};

static void handler(void *arg, struct mh_peer_req *req, uint64_t from, const uint8_t *msg,
                    size_t len)
{
    struct srv *s = arg;
    s->calls++;
    s->last_from = from;
    EVP_PKEY *k = mh_peer_req_key(req);
    s->key_ok = k != NULL && EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA;
    char c = len > 0 ? (char)msg[0] : 'E';
    if ((c == 'L' || c == 'N') && s->nheld < 8) {
        s->held[s->nheld++] = req;
        return;
    }
    if (c == 'X') { /* a response over the frame limit is dropped: the caller times out */
        uint8_t *big = calloc(1, MAX_FRAME + 1);
        assert_non_null(big);
        mh_peer_respond(req, big, MAX_FRAME + 1);
        free(big);
        return;
    }
    mh_peer_respond(req, msg, len);
}

static bool in_call;
static int order_counter;

struct res {
    struct mh_peer_call call;
    bool done;
    int rc;
    int order;
    struct mh_buf resp;
};

static void call_cb(struct mh_peer_call *c, int rc, const uint8_t *msg, size_t len)
{
    struct res *r = c->data;
    assert_false(in_call); /* never inside mh_peer_call */
    assert_false(r->done); /* exactly once */
    r->done = true;
    r->rc = rc;
    r->order = order_counter++;
    if (rc == 0)
        assert_int_equal(mh_buf_append(&r->resp, msg, len), 0);
    else
        assert_null(msg);
}

static int do_call(struct mh_peer *p, uint64_t id, const char *addr, const void *msg, size_t len,
                   uint64_t timeout, struct res *r)
{
    memset(r, 0, sizeof *r);
    r->call.data = r;
    in_call = true;
    int rv = mh_peer_call(p, id, addr, msg, len, timeout, &r->call, call_cb);
    in_call = false;
    return rv;
}

static bool res_done(void *arg)
{
    return ((struct res *)arg)->done;
}

struct many {
    struct res *r;
    size_t n;
};

static bool all_done(void *arg)
{
    struct many *m = arg;
    for (size_t i = 0; i < m->n; i++)
        if (!m->r[i].done)
            return false;
    return true;
}

static bool has_held(void *arg)
{
    return ((struct srv *)arg)->nheld > 0;
}

static void test_requests(void **state)
{
    (void)state;
    loop_init();
    struct mh_peer *a = NULL, *b = NULL;
    char aaddr[64] = "", baddr[64] = "";
    assert_int_equal(new_peer(1, "node1", aaddr, sizeof aaddr, &a), 0);
    assert_int_equal(new_peer(2, "node2", baddr, sizeof baddr, &b), 0);
    struct srv sa = {0}, sb = {0};
    mh_peer_set_handler(a, handler, &sa);
    mh_peer_set_handler(b, handler, &sb);
    assert_int_equal(mh_peer_last_recv(a, 2), 0);

    /* one call each way */
    struct res r;
    assert_int_equal(do_call(a, 2, baddr, "Ehello", 6, 0, &r), 0);
    assert_false(r.done);
    assert_true(run_until(res_done, &r, 10000));
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.resp.len, 6);
    assert_memory_equal(r.resp.data, "Ehello", 6);
    assert_int_equal(sb.last_from, 1);
    assert_true(sb.key_ok);
    mh_buf_free(&r.resp);
    assert_true(mh_peer_last_recv(a, 2) > 0);
    assert_int_equal(do_call(b, 1, aaddr, "Eback", 5, 0, &r), 0);
    assert_true(run_until(res_done, &r, 10000));
    assert_int_equal(r.rc, 0);
    assert_memory_equal(r.resp.data, "Eback", 5);
    assert_int_equal(sa.last_from, 2);
    mh_buf_free(&r.resp);
    assert_true(mh_peer_last_recv(b, 1) > 0);
    assert_int_equal(mh_peer_last_recv(b, 3), 0);

    /* many in flight, answered in order, each with its own response */
    enum { N = 200 };
    struct res *rs = calloc(N, sizeof *rs);
    assert_non_null(rs);
    order_counter = 0;
    for (int i = 0; i < N; i++) {
        char m[32];
        int ml = snprintf(m, sizeof m, "E%d", i);
        assert_int_equal(do_call(a, 2, baddr, m, (size_t)ml, 0, &rs[i]), 0);
    }
    struct many mm = {rs, N};
    assert_true(run_until(all_done, &mm, 20000));
    for (int i = 0; i < N; i++) {
        char m[32];
        int ml = snprintf(m, sizeof m, "E%d", i);
        assert_int_equal(rs[i].rc, 0);
        assert_int_equal(rs[i].order, i);
        assert_int_equal(rs[i].resp.len, (size_t)ml);
        assert_memory_equal(rs[i].resp.data, m, (size_t)ml);
        mh_buf_free(&rs[i].resp);
    }
    free(rs);

    /* a frame of exactly max_frame both ways; one byte more is refused up front */
    uint8_t *big = malloc(MAX_FRAME + 1);
    assert_non_null(big);
    for (size_t i = 0; i < MAX_FRAME + 1; i++)
        big[i] = (uint8_t)(i * 7);
    big[0] = 'E';
    assert_int_equal(do_call(b, 1, aaddr, big, MAX_FRAME, 0, &r), 0);
    assert_true(run_until(res_done, &r, 20000));
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.resp.len, MAX_FRAME);
    assert_memory_equal(r.resp.data, big, MAX_FRAME);
    mh_buf_free(&r.resp);
    assert_int_equal(do_call(b, 1, aaddr, big, MAX_FRAME + 1, 0, &r), MH_ETOOBIG);
    free(big);

    /* errors returned directly */
    assert_int_equal(do_call(a, 1, baddr, "E", 1, 0, &r), MH_EINVAL);
    assert_int_equal(do_call(a, 0, baddr, "E", 1, 0, &r), MH_EINVAL);
    assert_int_equal(do_call(a, 2, "", "E", 1, 0, &r), MH_EINVAL);

    /* a handler answering later, one never answering, one answering too big */
    struct res late, never, toobig;
    assert_int_equal(do_call(a, 2, baddr, "Llater", 6, 0, &late), 0);
    assert_int_equal(do_call(a, 2, baddr, "Nnever", 6, 300, &never), 0);
    assert_int_equal(do_call(a, 2, baddr, "X", 1, 300, &toobig), 0);
    assert_true(run_until(res_done, &never, 10000));
    assert_int_equal(never.rc, MH_ETIMEDOUT);
    assert_true(run_until(res_done, &toobig, 10000));
    assert_int_equal(toobig.rc, MH_ETIMEDOUT);
    assert_false(late.done);
    assert_int_equal(sb.nheld, 2);
    mh_peer_respond(sb.held[0], (const uint8_t *)"answer", 6);
    assert_true(run_until(res_done, &late, 10000));
    assert_int_equal(late.rc, 0);
    assert_memory_equal(late.resp.data, "answer", 6);
    mh_buf_free(&late.resp);
    /* the answer to a call that timed out is dropped */
    mh_peer_respond(sb.held[1], (const uint8_t *)"tardy", 5);
    sb.nheld = 0;
    assert_int_equal(do_call(a, 2, baddr, "Eafter", 6, 0, &r), 0);
    assert_true(run_until(res_done, &r, 10000));
    assert_int_equal(r.rc, 0);
    assert_memory_equal(r.resp.data, "Eafter", 6);
    mh_buf_free(&r.resp);

    /* nothing listening */
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%u", (unsigned)free_port());
    assert_int_equal(do_call(a, 3, dead, "E", 1, 0, &r), 0);
    assert_true(run_until(res_done, &r, 10000));
    assert_int_equal(r.rc, MH_EUNAVAILABLE);

    /* node 3 expected, node 2 answers: refused and logged once */
    int before = sb.calls;
    log_begin();
    assert_int_equal(do_call(a, 3, baddr, "E", 1, 0, &r), 0);
    bool ok = run_until(res_done, &r, 10000);
    char *log = log_end();
    assert_true(ok);
    assert_int_equal(r.rc, MH_EUNAVAILABLE);
    assert_int_equal(count_of(log, "reason=\"certificate names node 2, expected node 3\""), 1);
    free(log);
    assert_int_equal(sb.calls, before);

    /* a request held while its caller goes away: the late answer is dropped safely */
    assert_int_equal(do_call(a, 2, baddr, "Lorphan", 7, 0, &late), 0);
    assert_true(run_until(has_held, &sb, 10000));
    bool adone = false;
    mh_peer_close(a, set_flag, &adone);
    assert_int_equal(do_call(a, 2, baddr, "E", 1, 0, &r), MH_EUNAVAILABLE);
    assert_true(run_until(flag_set, &adone, 10000));
    assert_true(late.done);
    assert_int_equal(late.rc, MH_EUNAVAILABLE);
    mh_peer_free(a);
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    mh_peer_respond(sb.held[0], (const uint8_t *)"gone", 4);
    sb.nheld = 0;
    /* an inbound request still unanswered at close is freed by mh_peer_free */
    close_peer(b);
    loop_done();
}

/* ---- refused peers ------------------------------------------------------ */

struct raw {
    const char *cert;
    uint8_t out[64];
    size_t out_len;
    size_t want; /* stop after this many bytes */
    uint16_t port;
    int hs;
    bool closed, timed_out;
    size_t got;
    atomic_int done;
};

static void *raw_thread(void *arg)
{
    struct raw *r = arg;
    char cert[PATH_MAX], key[PATH_MAX];
    cert_file(cert, sizeof cert, r->cert, "pem");
    cert_file(key, sizeof key, r->cert, "key");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    (void)SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    (void)SSL_CTX_use_certificate_chain_file(ctx, cert);
    (void)SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {10, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(r->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    SSL *ssl = NULL;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        goto out;
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    r->hs = SSL_connect(ssl);
    if (r->hs == 1 && r->out_len > 0)
        (void)SSL_write(ssl, r->out, (int)r->out_len);
    if (r->hs == 1) {
        for (;;) {
            char buf[4096];
            errno = 0;
            int n = SSL_read(ssl, buf, sizeof buf);
            if (n <= 0) {
                int e = SSL_get_error(ssl, n);
                r->timed_out = e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK);
                r->closed = !r->timed_out;
                break;
            }
            r->got += (size_t)n;
            if (r->want > 0 && r->got >= r->want)
                break;
        }
    } else {
        r->closed = true;
    }
out:
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    atomic_store(&r->done, 1);
    return NULL;
}

static size_t make_hello(uint8_t *o, const char *magic, uint32_t kind, uint64_t id)
{
    memcpy(o, magic, 4);
    for (int i = 0; i < 4; i++)
        o[4 + i] = (uint8_t)(kind >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        o[8 + i] = (uint8_t)(id >> (56 - 8 * i));
    return 16;
}

static size_t make_addr(uint8_t *o, const char *addr)
{
    size_t n = strlen(addr);
    o[0] = (uint8_t)(n >> 8);
    o[1] = (uint8_t)n;
    memcpy(o + 2, addr, n);
    return 2 + n;
}

static size_t make_frame(uint8_t *o, uint32_t len, const char *msg)
{
    for (int i = 0; i < 4; i++)
        o[i] = (uint8_t)(len >> (24 - 8 * i));
    memset(o + 4, 0, 7);
    o[11] = 1; /* sequence 1 */
    size_t ml = strlen(msg);
    memcpy(o + 12, msg, ml);
    return 12 + ml;
}

struct raws {
    struct raw *r;
    size_t n;
};

static bool raws_done(void *arg)
{
    struct raws *rs = arg;
    for (size_t i = 0; i < rs->n; i++)
        if (!atomic_load(&rs->r[i].done))
            return false;
    return true;
}

static int fake_accepts;
static uint64_t fake_accept_id;
static char fake_accept_addr[64];

static void free_raft_handle(uv_handle_t *h)
{
    raft_free(h);
}

static void fake_accept(struct raft_uv_transport *t, raft_id id, const char *address,
                        struct uv_stream_s *s)
{
    (void)t;
    fake_accepts++;
    fake_accept_id = id;
    snprintf(fake_accept_addr, sizeof fake_accept_addr, "%s", address);
    uv_close((uv_handle_t *)s, free_raft_handle);
}

static bool fake_closed;

static bool has_accept(void *arg)
{
    (void)arg;
    return fake_accepts > 0;
}
static void fake_close_cb(struct raft_uv_transport *t)
{
    (void)t;
    fake_closed = true;
}

enum {
    R_GOOD_REQ,
    R_GOOD_RAFT,
    R_APP,
    R_FOREIGN,
    R_CLAIMS4,
    R_CLAIMS3,
    R_MAGIC,
    R_SELF,
    R_BIGFRAME,
    R_SILENT,
    R_COUNT
};

static void test_refused(void **state)
{
    (void)state;
    loop_init();
    struct mh_peer *p = NULL;
    char addr[64] = "";
    assert_int_equal(new_peer(1, "node1", addr, sizeof addr, &p), 0);
    struct srv s = {0};
    mh_peer_set_handler(p, handler, &s);
    struct raft_uv_transport t;
    mh_peer_raft_transport(p, &t);
    assert_int_equal(t.init(&t, 1, addr), 0);
    assert_int_equal(t.listen(&t, fake_accept), 0);
    fake_accepts = 0;
    uint16_t port = (uint16_t)atoi(strchr(addr, ':') + 1);

    struct raw r[R_COUNT];
    memset(r, 0, sizeof r);
    for (int i = 0; i < R_COUNT; i++) {
        r[i].port = port;
        r[i].cert = "node2";
        atomic_init(&r[i].done, 0);
    }
    /* positive controls: the same raw client is accepted when everything fits */
    r[R_GOOD_REQ].out_len = make_hello(r[R_GOOD_REQ].out, "MHP1", 2, 2);
    r[R_GOOD_REQ].out_len += make_frame(r[R_GOOD_REQ].out + 16, 4, "Eabc");
    r[R_GOOD_REQ].want = 16;
    r[R_GOOD_RAFT].out_len = make_hello(r[R_GOOD_RAFT].out, "MHP1", 1, 2);
    r[R_GOOD_RAFT].out_len += make_addr(r[R_GOOD_RAFT].out + 16, "127.0.0.1:9999");
    /* a client certificate (from the cluster CA) with a well-formed hello */
    r[R_APP].cert = "app";
    r[R_APP].out_len = make_hello(r[R_APP].out, "MHP1", 2, 2);
    r[R_APP].out_len += make_frame(r[R_APP].out + 16, 4, "Eabc");
    /* node 4 from a foreign CA */
    r[R_FOREIGN].cert = "foreign-node";
    r[R_FOREIGN].out_len = make_hello(r[R_FOREIGN].out, "MHP1", 1, 4);
    /* node 2's certificate claiming to be node 4 (raft) */
    r[R_CLAIMS4].out_len = make_hello(r[R_CLAIMS4].out, "MHP1", 1, 4);
    r[R_CLAIMS4].out_len += make_addr(r[R_CLAIMS4].out + 16, "127.0.0.1:9999");
    /* the same lie on the request channel */
    r[R_CLAIMS3].out_len = make_hello(r[R_CLAIMS3].out, "MHP1", 2, 3);
    r[R_CLAIMS3].out_len += make_frame(r[R_CLAIMS3].out + 16, 4, "Eabc");
    r[R_MAGIC].out_len = make_hello(r[R_MAGIC].out, "MHPX", 2, 2);
    /* node 1's own certificate dialing node 1 */
    r[R_SELF].cert = "node1";
    r[R_SELF].out_len = make_hello(r[R_SELF].out, "MHP1", 2, 1);
    r[R_BIGFRAME].out_len = make_hello(r[R_BIGFRAME].out, "MHP1", 2, 2);
    r[R_BIGFRAME].out_len += make_frame(r[R_BIGFRAME].out + 16, MAX_FRAME + 1, "Eabc");
    /* R_SILENT: handshake, then no hello */

    log_begin();
    pthread_t th[R_COUNT];
    for (int i = 0; i < R_COUNT; i++)
        assert_int_equal(pthread_create(&th[i], NULL, raw_thread, &r[i]), 0);
    struct raws rs = {r, R_COUNT};
    bool ok = run_until(raws_done, &rs, 20000);
    for (int i = 0; i < R_COUNT; i++)
        pthread_join(th[i], NULL);
    char *log = log_end();
    assert_true(ok);

    /* positive controls */
    assert_int_equal(r[R_GOOD_REQ].hs, 1);
    assert_true(r[R_GOOD_REQ].got >= 16);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.last_from, 2);
    assert_int_equal(fake_accepts, 1);
    assert_int_equal(fake_accept_id, 2);
    assert_string_equal(fake_accept_addr, "127.0.0.1:9999");
    /* every refused one: closed by the server, nothing received, logged once */
    const int refused[] = {R_APP,   R_FOREIGN, R_CLAIMS4,  R_CLAIMS3,
                           R_MAGIC, R_SELF,    R_BIGFRAME, R_SILENT};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        struct raw *x = &r[refused[i]];
        if (!x->closed || x->timed_out || x->got != 0)
            fail_msg("raw client %d: closed=%d timed_out=%d got=%zu", refused[i], x->closed,
                     x->timed_out, x->got);
    }
    assert_int_equal(count_of(log, "reason=\"certificate names no node"), 1);
    assert_int_equal(count_of(log, "reason=\"TLS: "), 1);
    assert_int_equal(count_of(log, "reason=\"certificate names node 2, hello claims 4\""), 1);
    assert_int_equal(count_of(log, "reason=\"bad hello magic\""), 1);
    assert_int_equal(count_of(log, "reason=\"hello claims this node's own id 1\""), 1);
    assert_int_equal(count_of(log, "reason=\"frame of 1048577 bytes over the limit"), 1);
    assert_int_equal(count_of(log, "reason=\"no hello within 5000 ms\""), 1);
    assert_int_equal(count_of(log, "reason=\"certificate names node 2, hello claims 3\""), 1);
    assert_int_equal(count_of(log, "msg=\"refused\""), 8);
    free(log);

    fake_closed = false;
    t.close(&t, fake_close_cb);
    assert_false(fake_closed); /* never inside close() */
    assert_true(run_until(flag_set, &fake_closed, 10000));
    close_peer(p);
    loop_done();
}

/* ---- the raft transport alone ------------------------------------------- */

static int event_seq;
static bool in_transport;

struct rconn {
    struct raft_uv_connect req;
    bool done;
    int status;
    int seq;
    uv_stream_t *stream;
};

static void rconn_cb(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    struct rconn *c = (struct rconn *)req;
    assert_false(in_transport);
    assert_false(c->done);
    c->done = true;
    c->status = status;
    c->seq = ++event_seq;
    c->stream = stream;
    if (status != 0)
        assert_null(stream);
}

static bool rconn_done(void *arg)
{
    return ((struct rconn *)arg)->done;
}

static int close_seq;
static void seq_close_cb(struct raft_uv_transport *t)
{
    (void)t;
    fake_closed = true;
    close_seq = ++event_seq;
}

static int tconnect(struct raft_uv_transport *t, struct rconn *c, raft_id id, const char *addr)
{
    memset(c, 0, sizeof *c);
    in_transport = true;
    int rv = t->connect(t, &c->req, id, addr, rconn_cb);
    in_transport = false;
    return rv;
}

static void test_transport(void **state)
{
    (void)state;
    loop_init();
    struct mh_peer *a = NULL, *b = NULL;
    char aaddr[64] = "", baddr[64] = "", dead[64];
    assert_int_equal(new_peer(1, "node1", aaddr, sizeof aaddr, &a), 0);
    assert_int_equal(new_peer(2, "node2", baddr, sizeof baddr, &b), 0);
    struct raft_uv_transport ta, tb;
    mh_peer_raft_transport(a, &ta);
    mh_peer_raft_transport(b, &tb);
    assert_int_equal(ta.init(&ta, 2, aaddr), RAFT_INVALID); /* not the certificate's id */
    assert_int_equal(ta.init(&ta, 1, aaddr), 0);
    assert_int_equal(tb.init(&tb, 2, baddr), 0);
    assert_int_equal(ta.listen(&ta, fake_accept), 0);
    assert_int_equal(tb.listen(&tb, fake_accept), 0);
    fake_accepts = 0;

    struct rconn c;
    snprintf(dead, sizeof dead, "127.0.0.1:%u", (unsigned)free_port());
    assert_int_equal(tconnect(&ta, &c, 3, dead), 0);
    assert_false(c.done);
    assert_true(run_until(rconn_done, &c, 10000));
    assert_int_equal(c.status, RAFT_NOCONNECTION);
    assert_int_equal(tconnect(&ta, &c, 3, "not an address"), 0);
    assert_true(run_until(rconn_done, &c, 10000));
    assert_int_equal(c.status, RAFT_NOCONNECTION);

    log_begin();
    assert_int_equal(tconnect(&ta, &c, 3, baddr), 0);
    bool ok = run_until(rconn_done, &c, 10000);
    char *log = log_end();
    assert_true(ok);
    assert_int_equal(c.status, RAFT_NOCONNECTION);
    assert_int_equal(count_of(log, "reason=\"certificate names node 2, expected node 3\""), 1);
    free(log);

    /* success: the acceptor's raft gets node 1 and its raft address */
    assert_int_equal(tconnect(&ta, &c, 2, baddr), 0);
    assert_true(run_until(rconn_done, &c, 10000));
    assert_int_equal(c.status, 0);
    assert_non_null(c.stream);
    uv_close((uv_handle_t *)c.stream, free_raft_handle);
    assert_true(run_until(has_accept, NULL, 10000));
    assert_int_equal(fake_accept_id, 1);
    assert_string_equal(fake_accept_addr, aaddr);

    /* close cancels a pending connect, whose callback runs before close's */
    struct rconn pend;
    assert_int_equal(tconnect(&ta, &pend, 2, baddr), 0);
    fake_closed = false;
    in_transport = true;
    ta.close(&ta, seq_close_cb);
    in_transport = false;
    assert_false(fake_closed);
    assert_true(run_until(flag_set, &fake_closed, 10000));
    assert_true(pend.done);
    assert_int_equal(pend.status, RAFT_CANCELED);
    assert_true(pend.seq < close_seq);
    assert_int_equal(tconnect(&ta, &c, 2, baddr), RAFT_CANCELED); /* closed */
    fake_closed = false;
    tb.close(&tb, seq_close_cb);
    assert_true(run_until(flag_set, &fake_closed, 10000));
    close_peer(a);
    close_peer(b);
    loop_done();
}

/* ---- raft over the transport ---------------------------------------------- */

struct rnode {
    uint64_t id;
    struct mh_peer *p;
    struct raft_uv_transport t;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    char addr[64];
    char dir[PATH_MAX];
    uint64_t sum, count;
    bool raft_closed, peer_closed;
};

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct rnode *n = fsm->data;
    if (buf->len != 8)
        return RAFT_MALFORMED;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | ((const uint8_t *)buf->base)[i];
    n->sum += v;
    n->count++;
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct rnode *n = fsm->data;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL)
        return RAFT_NOMEM;
    (*bufs)[0].base = raft_malloc(16);
    if ((*bufs)[0].base == NULL) {
        raft_free(*bufs);
        return RAFT_NOMEM;
    }
    (*bufs)[0].len = 16;
    memcpy((*bufs)[0].base, &n->sum, 8);
    memcpy((uint8_t *)(*bufs)[0].base + 8, &n->count, 8);
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct rnode *n = fsm->data;
    if (buf->len != 16)
        return RAFT_MALFORMED;
    memcpy(&n->sum, buf->base, 8);
    memcpy(&n->count, (uint8_t *)buf->base + 8, 8);
    raft_free(buf->base);
    return 0;
}

static struct rnode nodes[3];
static int applied_ok, applied_err;

static bool has_leader(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        if (raft_state(&nodes[i].raft) == RAFT_LEADER)
            return true;
    return false;
}

static uint64_t want_count;
static bool all_applied(void *arg)
{
    (void)arg;
    if (applied_ok + applied_err < (int)want_count)
        return false;
    for (int i = 0; i < 3; i++)
        if (nodes[i].count < want_count)
            return false;
    return true;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    if (status == 0)
        applied_ok++;
    else
        applied_err++;
    free(req);
}

static void raft_closed_cb(struct raft *r)
{
    struct rnode *n = r->data;
    n->raft_closed = true;
}

static bool all_raft_closed(void *arg)
{
    (void)arg;
    return nodes[0].raft_closed && nodes[1].raft_closed && nodes[2].raft_closed;
}

static bool all_peers_closed(void *arg)
{
    (void)arg;
    return nodes[0].peer_closed && nodes[1].peer_closed && nodes[2].peer_closed;
}

static void peer_closed_cb(void *arg)
{
    ((struct rnode *)arg)->peer_closed = true;
}

static void rnode_init(struct rnode *n)
{
    char cert[16];
    snprintf(cert, sizeof cert, "node%llu", (unsigned long long)n->id);
    n->sum = n->count = 0;
    n->raft_closed = n->peer_closed = false;
    assert_int_equal(new_peer(n->id, cert, n->addr, sizeof n->addr, &n->p), 0);
    mh_peer_raft_transport(n->p, &n->t);
    assert_int_equal(raft_uv_init(&n->io, &loop, n->dir, &n->t), 0);
    memset(&n->fsm, 0, sizeof n->fsm);
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsm_apply;
    n->fsm.snapshot = fsm_snapshot;
    n->fsm.restore = fsm_restore;
    assert_int_equal(raft_init(&n->raft, &n->io, &n->fsm, n->id, n->addr), 0);
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, 300);
    raft_set_heartbeat_timeout(&n->raft, 50);
    raft_set_pre_vote(&n->raft, true);
}

static bool node_raft_closed(void *arg)
{
    return ((struct rnode *)arg)->raft_closed;
}

static bool node_peer_closed(void *arg)
{
    return ((struct rnode *)arg)->peer_closed;
}

static void apply_n(struct rnode *leader, uint64_t from, uint64_t to, uint64_t *expect)
{
    for (uint64_t i = from; i <= to; i++) {
        struct raft_apply *req = calloc(1, sizeof *req);
        assert_non_null(req);
        struct raft_buffer b = {raft_malloc(8), 8}; /* raft wants multiples of 8 */
        assert_non_null(b.base);
        for (int k = 0; k < 8; k++)
            ((uint8_t *)b.base)[k] = (uint8_t)(i >> (56 - 8 * k));
        *expect += i;
        assert_int_equal(raft_apply(&leader->raft, req, &b, 1, apply_cb), 0);
    }
}

static struct rnode *contact_leader;
static bool leader_contact(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        struct rnode *n = &nodes[i];
        if (n == contact_leader)
            continue;
        if (mh_peer_last_recv(n->p, contact_leader->id) == 0 ||
            mh_peer_last_recv(contact_leader->p, n->id) == 0)
            return false;
    }
    return true;
}

static void test_raft(void **state)
{
    (void)state;
    loop_init();
    memset(nodes, 0, sizeof nodes);
    if (getenv("PEER_DEBUG"))
        mh_log_set_level(MH_LOG_DEBUG);
    applied_ok = applied_err = 0;
    for (int i = 0; i < 3; i++) {
        struct rnode *n = &nodes[i];
        n->id = (uint64_t)i + 1;
        char name[32];
        snprintf(name, sizeof name, "raft%d", i + 1);
        tu_path(n->dir, sizeof n->dir, name);
        assert_int_equal(mkdir(n->dir, 0700), 0);
        rnode_init(n);
    }
    for (int i = 0; i < 3; i++) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (int j = 0; j < 3; j++)
            assert_int_equal(raft_configuration_add(&conf, nodes[j].id, nodes[j].addr, RAFT_VOTER),
                             0);
        assert_int_equal(raft_bootstrap(&nodes[i].raft, &conf), 0);
        raft_configuration_close(&conf);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(raft_start(&nodes[i].raft), 0);

    assert_true(run_until(has_leader, NULL, 20000));
    struct rnode *leader = NULL;
    for (int i = 0; i < 3; i++)
        if (raft_state(&nodes[i].raft) == RAFT_LEADER)
            leader = &nodes[i];
    assert_non_null(leader);

    enum { N = 50 };
    uint64_t expect = 0;
    apply_n(leader, 1, N, &expect);
    want_count = N;
    assert_true(run_until(all_applied, NULL, 20000));
    assert_int_equal(applied_err, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(nodes[i].count, N);
        assert_int_equal(nodes[i].sum, expect);
    }
    /* the leader and each follower hear from each other (a follower's replies can
     * lag its first applies while its own connection to the leader is set up) */
    contact_leader = leader;
    if (!run_until(leader_contact, NULL, 10000)) {
        for (int i = 0; i < 3; i++)
            fprintf(stderr, "now %llu node %d state %d leader %d contact %llu %llu %llu\n",
                    (unsigned long long)uv_now(&loop), i + 1, raft_state(&nodes[i].raft),
                    &nodes[i] == leader, (unsigned long long)mh_peer_last_recv(nodes[i].p, 1),
                    (unsigned long long)mh_peer_last_recv(nodes[i].p, 2),
                    (unsigned long long)mh_peer_last_recv(nodes[i].p, 3));
        fail();
    }
    /* followers know the leader by its configured raft address */
    for (int i = 0; i < 3; i++) {
        if (&nodes[i] == leader)
            continue;
        raft_id lid = 0;
        const char *laddr = NULL;
        raft_leader(&nodes[i].raft, &lid, &laddr);
        assert_int_equal(lid, leader->id);
        assert_non_null(laddr);
        assert_string_equal(laddr, leader->addr);
    }

    /* a follower stops completely; the majority goes on; it restarts on the same
     * address and directory, reconnects through the channel and catches up */
    struct rnode *f = leader == &nodes[0] ? &nodes[1] : &nodes[0];
    raft_close(&f->raft, raft_closed_cb);
    assert_true(run_until(node_raft_closed, f, 10000));
    raft_uv_close(&f->io);
    mh_peer_close(f->p, peer_closed_cb, f);
    assert_true(run_until(node_peer_closed, f, 10000));
    mh_peer_free(f->p);
    f->p = NULL;
    assert_int_equal(raft_state(&leader->raft), RAFT_LEADER);
    apply_n(leader, N + 1, 2 * N, &expect);
    want_count = 2 * N;
    rnode_init(f);
    assert_int_equal(raft_start(&f->raft), 0);
    assert_true(run_until(all_applied, NULL, 20000));
    assert_int_equal(applied_err, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(nodes[i].count, 2 * N);
        assert_int_equal(nodes[i].sum, expect);
    }

    for (int i = 0; i < 3; i++)
        raft_close(&nodes[i].raft, raft_closed_cb);
    assert_true(run_until(all_raft_closed, NULL, 10000));
    for (int i = 0; i < 3; i++) {
        raft_uv_close(&nodes[i].io);
        mh_peer_close(nodes[i].p, peer_closed_cb, &nodes[i]);
    }
    assert_true(run_until(all_peers_closed, NULL, 10000));
    for (int i = 0; i < 3; i++)
        mh_peer_free(nodes[i].p);
    loop_done();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cert_id), cmocka_unit_test(test_requests),
        cmocka_unit_test(test_refused), cmocka_unit_test(test_transport),
        cmocka_unit_test(test_raft),
    };
    return cmocka_run_group_tests(tests, gen_certs, NULL);
}
