#define _GNU_SOURCE
#include "client/rpc_async.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/rpc_client.h"
#include "common/buf.h"
#include "common/secret.h"

#define GRPC_PREFIX  5u
#define MAX_RESPONSE (4u * 1024u * 1024u)
#define READ_CHUNK   65536u
/* Gather at most this much nghttp2 output before writing it. */
#define WRITE_BATCH    (256u * 1024u)
#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 2000u
/* Deadlines and reconnects are checked this often (a call may overrun by this much). */
#define TICK_MS    10u
#define MAX_EVENTS 64

enum conn_state {
    CS_WAIT,      /* disconnected; reconnect at retry_at */
    CS_CONNECT,   /* TCP connect in progress */
    CS_HANDSHAKE, /* TLS handshake in progress */
    CS_READY,     /* HTTP/2 session up */
};

struct acall {
    struct acall *prev, *next; /* in the connection's pending or active list, or done list */
    struct mh_async_conn *conn;
    int32_t stream_id; /* 0 while pending */
    const char *path;
    const ProtobufCMessageDescriptor *desc;
    mh_async_cb cb;
    void *ud;
    uint64_t deadline; /* ms, monotonic */
    uint64_t timeout_ms;
    /* outcome */
    struct mh_client_resp_headers hdr;
    bool too_big;
    bool transport;
    int local_status; /* set when we end the call ourselves; -1 otherwise */
    const char *local_msg;
    uint32_t rst_code;
    struct mh_buf body;
    /* framed request follows */
    size_t req_len, req_off;
    uint8_t req[];
};

struct list {
    struct acall *head, *tail;
    size_t n;
};

struct mh_async_tls {
    SSL_CTX *ctx;
};

struct mh_async_conn {
    struct mh_async_conn *next; /* in the loop */
    struct mh_async_loop *loop;
    struct mh_async_tls *tls;
    char host[256];
    char port[8];
    char authority[300];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    enum conn_state state;
    int fd;
    uint32_t ev; /* events registered with epoll (0: not registered) */
    SSL *ssl;
    nghttp2_session *h2;
    bool goaway;
    struct mh_buf out; /* gathered output not yet written */
    size_t out_off;
    uint64_t retry_at;
    uint64_t backoff;
    uint64_t failures;
    struct list pending; /* waiting for the connection */
    struct list active;  /* submitted to nghttp2 */
    char err[256];
};

struct mh_async_loop {
    int ep;
    struct mh_async_conn *conns;
    struct list done; /* finished, callbacks not run yet */
    size_t inflight;
    uint64_t next_tick;
    uint8_t rbuf[READ_CHUNK];
};

/* ---- small helpers -------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void list_push(struct list *l, struct acall *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_remove(struct list *l, struct acall *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

static void set_err(struct mh_async_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_err(struct mh_async_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

/* ---- TLS context ------------------------------------------------------------ */

int mh_async_tls_new(const struct mh_async_config *cfg, struct mh_async_tls **out, char *errbuf,
                     size_t errlen)
{
    *out = NULL;
    SSL_CTX *ctx;
    MH_TRY(
        mh_client_tls_ctx_new(cfg->ca_file, cfg->cert_file, cfg->key_file, &ctx, errbuf, errlen));
    struct mh_async_tls *t = calloc(1, sizeof *t);
    if (t == NULL) {
        SSL_CTX_free(ctx);
        return MH_ENOMEM;
    }
    t->ctx = ctx;
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    /* Without read-ahead OpenSSL reads each record's 5-byte header and its body with two
     * read(2)s: that alone was most of the client's system time. */
    SSL_CTX_set_read_ahead(t->ctx, 1);
    SSL_CTX_set_default_read_buffer_len(t->ctx, READ_CHUNK);
    *out = t;
    return 0;
}

void mh_async_tls_free(struct mh_async_tls *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

/* ---- loop ------------------------------------------------------------------- */

int mh_async_loop_new(struct mh_async_loop **out)
{
    *out = NULL;
    struct mh_async_loop *l = calloc(1, sizeof *l);
    if (l == NULL)
        return MH_ENOMEM;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        int e = -errno;
        free(l);
        return e;
    }
    *out = l;
    return 0;
}

size_t mh_async_loop_inflight(const struct mh_async_loop *l)
{
    return l->inflight;
}

static void call_free(struct acall *a)
{
    mh_buf_free(&a->hdr.gmsg);
    mh_buf_free(&a->body);
    mh_wipe(a->req, a->req_len);
    free(a);
}

/* Moves |a| (already out of its connection's lists) to the done list. */
static void call_done(struct mh_async_loop *l, struct acall *a)
{
    list_push(&l->done, a);
}

static void end_local(struct mh_async_loop *l, struct acall *a, int status, const char *msg,
                      bool transport)
{
    a->local_status = status;
    a->local_msg = msg;
    a->transport = transport;
    call_done(l, a);
}

/* ---- outcome ------------------------------------------------------------------ */

/* Runs the callback of one finished call and frees it. */
static void complete(struct acall *a)
{
    struct mh_async_result r = {.status = MH_CLIENT_INTERNAL, .message = ""};
    ProtobufCMessage *m = NULL;
    struct mh_buf msg = {0};
    char detail[96];
    r.transport = a->transport;
    if (a->local_status >= 0) {
        r.status = a->local_status;
        r.message = a->local_msg != NULL ? a->local_msg : "";
    } else if (a->too_big) {
        r.status = MH_CLIENT_RESOURCE_EXHAUSTED;
        r.message = "response too large";
    } else if (a->hdr.grpc_status >= 0) {
        r.status = a->hdr.grpc_status;
        if (r.status != 0 && a->hdr.gmsg.len > 0 &&
            mh_client_percent_decode((const char *)a->hdr.gmsg.data, a->hdr.gmsg.len, &msg) == 0 &&
            mh_buf_append_u8(&msg, 0) == 0)
            r.message = (const char *)msg.data;
    } else if (a->hdr.http_status != 0 && a->hdr.http_status != 200) {
        r.status = mh_client_status_of_http(a->hdr.http_status);
        snprintf(detail, sizeof detail, "HTTP status %d", a->hdr.http_status);
        r.message = detail;
    } else if (a->rst_code != NGHTTP2_NO_ERROR) {
        r.status = mh_client_status_of_rst(a->rst_code);
        snprintf(detail, sizeof detail, "stream reset by the server (%s)",
                 nghttp2_http2_strerror(a->rst_code));
        r.message = detail;
    } else {
        r.status = MH_CLIENT_INTERNAL;
        r.message = "server sent no grpc-status";
    }
    if (r.status == MH_CLIENT_OK && a->local_status < 0) {
        if (!a->hdr.grpc_ct) {
            r.status = MH_CLIENT_INTERNAL;
            r.message = "response content-type is not application/grpc";
        } else if (a->desc != NULL &&
                   mh_client_decode_body(a->body.data, a->body.len, a->desc, &m) < 0) {
            r.status = MH_CLIENT_INTERNAL;
            r.message = "malformed response message";
        }
        r.resp = m;
    }
    a->cb(&r, a->ud);
    mh_client_response_free(m);
    mh_buf_free(&msg);
    call_free(a);
}

static void run_done(struct mh_async_loop *l)
{
    struct acall *a;
    while ((a = l->done.head) != NULL) {
        list_remove(&l->done, a);
        l->inflight--;
        complete(a);
    }
}

/* ---- nghttp2 callbacks ---------------------------------------------------------- */

static ssize_t read_request(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    (void)ud;
    /* Through the stream's user data, not src: a call we ended (deadline) is gone. */
    struct acall *a = nghttp2_session_get_stream_user_data(s, stream_id);
    if (a == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t left = a->req_len - a->req_off;
    size_t n = left < length ? left : length;
    if (n > 0)
        memcpy(buf, a->req + a->req_off, n);
    a->req_off += n;
    if (a->req_off == a->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct acall *a = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (a == NULL)
        return 0;
    if (mh_client_take_header(&a->hdr, name, namelen, value, valuelen) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                   size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct acall *a = nghttp2_session_get_stream_user_data(s, stream_id);
    if (a == NULL || a->too_big)
        return 0;
    size_t total;
    if (mh_size_add(a->body.len, len, &total) < 0 || total > MAX_RESPONSE + GRPC_PREFIX) {
        /* Refuse before growing: a hostile server must not make us buffer unboundedly. */
        a->too_big = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
    }
    if (mh_buf_append(&a->body, data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    (void)s;
    struct mh_async_conn *c = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        c->goaway = true;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct mh_async_conn *c = ud;
    struct acall *a = nghttp2_session_get_stream_user_data(s, stream_id);
    if (a == NULL)
        return 0;
    (void)nghttp2_session_set_stream_user_data(s, stream_id, NULL);
    a->rst_code = error_code;
    list_remove(&c->active, a);
    /* Callbacks run after the input is consumed, never inside nghttp2. */
    call_done(c->loop, a);
    return 0;
}

/* The connection window (stream 0) is raised to 16 MiB: under load many streams'
 * responses share it, and the 64 KiB default would stall them. */
static int h2_session_new(struct mh_async_conn *c)
{
    MH_TRY(mh_client_h2_new(&c->h2, on_header, on_data, on_frame_recv, on_stream_close, c, NULL));
    if (nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 1 << 24) != 0)
        return MH_ENOMEM;
    return 0;
}

/* ---- connection ------------------------------------------------------------------ */

static int set_events(struct mh_async_conn *c, uint32_t ev)
{
    if (c->fd < 0 || ev == c->ev)
        return 0;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    int op = c->ev == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(c->loop->ep, op, c->fd, &e) != 0)
        return -errno;
    c->ev = ev;
    return 0;
}

/* Closes the transport, fails the streams that were on it, and schedules a reconnect
 * (at once after a graceful GOAWAY, else after the backoff). */
static void conn_lost(struct mh_async_conn *c, bool graceful)
{
    struct acall *a;
    while ((a = c->active.head) != NULL) {
        list_remove(&c->active, a);
        if (c->h2 != NULL && a->stream_id > 0)
            (void)nghttp2_session_set_stream_user_data(c->h2, a->stream_id, NULL);
        end_local(c->loop, a, MH_CLIENT_UNAVAILABLE, c->err[0] ? c->err : "connection lost", true);
    }
    if (!graceful) {
        /* The calls waiting for this connection learn now that it failed, so the
         * caller sees (and counts) the outage instead of a silent stall. */
        while ((a = c->pending.head) != NULL) {
            list_remove(&c->pending, a);
            end_local(c->loop, a, MH_CLIENT_UNAVAILABLE, c->err[0] ? c->err : "connection failed",
                      true);
        }
    }
    mh_client_transport_close(&c->h2, &c->ssl, &c->fd); /* closing fd leaves epoll too */
    c->ev = 0;
    mh_buf_free(&c->out);
    c->out_off = 0;
    c->goaway = false;
    c->state = CS_WAIT;
    if (graceful) {
        c->retry_at = now_ms();
    } else {
        c->failures++;
        c->retry_at = now_ms() + c->backoff;
        c->backoff = c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
    }
}

static void conn_start(struct mh_async_conn *c)
{
    c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        set_err(c, "socket: %s", strerror(errno));
        conn_lost(c, false);
        return;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&c->addr, c->addrlen) != 0 && errno != EINPROGRESS) {
        set_err(c, "connect to %s: %s", c->authority, strerror(errno));
        conn_lost(c, false);
        return;
    }
    c->state = CS_CONNECT;
    if (set_events(c, EPOLLOUT | EPOLLIN) < 0) {
        set_err(c, "epoll: %s", strerror(errno));
        conn_lost(c, false);
    }
}

/* Submits |a| on the live session. False when nghttp2 refused it (left to the caller). */
static bool submit(struct mh_async_conn *c, struct acall *a)
{
    char tmo[16];
    mh_client_format_timeout(a->timeout_ms, tmo);
#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {
        NV(":method", "POST", 4),
        NV(":scheme", "https", 5),
        NV(":path", a->path, strlen(a->path)),
        NV(":authority", c->authority, strlen(c->authority)),
        NV("te", "trailers", 8),
        NV("content-type", "application/grpc", 16),
        NV("grpc-timeout", tmo, strlen(tmo)),
        NV("user-agent", "mhsm-bench/0.1", 14),
    };
#undef NV
    nghttp2_data_provider prd = {.source = {.ptr = NULL}, .read_callback = read_request};
    int32_t sid = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &prd, a);
    if (sid < 0)
        return false;
    a->stream_id = sid;
    list_push(&c->active, a);
    return true;
}

static void submit_pending(struct mh_async_conn *c)
{
    struct acall *a;
    while (c->state == CS_READY && !c->goaway && (a = c->pending.head) != NULL) {
        list_remove(&c->pending, a);
        if (!submit(c, a)) {
            /* Stream ids exhausted or the session is closing: go round again. */
            list_push(&c->pending, a);
            c->goaway = true;
            break;
        }
    }
}

static void handshake_step(struct mh_async_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        const unsigned char *proto = NULL;
        unsigned int plen = 0;
        SSL_get0_alpn_selected(c->ssl, &proto, &plen);
        if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
            set_err(c, "TLS handshake with %s: no ALPN h2", c->authority);
            conn_lost(c, false);
            return;
        }
        if (h2_session_new(c) < 0) {
            set_err(c, "out of memory");
            conn_lost(c, false);
            return;
        }
        c->state = CS_READY;
        c->backoff = BACKOFF_MIN_MS;
        (void)set_events(c, EPOLLIN);
        submit_pending(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        (void)set_events(c, EPOLLIN);
        return;
    case SSL_ERROR_WANT_WRITE:
        (void)set_events(c, EPOLLIN | EPOLLOUT);
        return;
    default: {
        char why[200];
        long vr = SSL_get_verify_result(c->ssl);
        mh_client_tls_reason(why, sizeof why);
        if (vr != X509_V_OK)
            set_err(c, "TLS handshake with %s: server certificate refused: %s", c->authority,
                    X509_verify_cert_error_string(vr));
        else
            set_err(c, "TLS handshake with %s: %s", c->authority, why);
        conn_lost(c, false);
        return;
    }
    }
}

static void connect_done(struct mh_async_conn *c)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr != 0) {
        set_err(c, "connect to %s: %s", c->authority, strerror(soerr));
        conn_lost(c, false);
        return;
    }
    c->ssl = SSL_new(c->tls->ctx);
    if (c->ssl == NULL || mh_client_tls_attach(c->ssl, c->fd, c->host) < 0)
        goto err_nomem;
    SSL_set_connect_state(c->ssl);
    c->state = CS_HANDSHAKE;
    handshake_step(c);
    return;

err_nomem:
    set_err(c, "out of memory");
    conn_lost(c, false);
}

/* Reads everything available and feeds it to nghttp2. */
static void conn_read(struct mh_async_conn *c)
{
    uint8_t *buf = c->loop->rbuf;
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        int r = SSL_read_ex(c->ssl, buf, READ_CHUNK, &n);
        if (r == 1) {
            ssize_t m = nghttp2_session_mem_recv(c->h2, buf, n);
            mh_wipe(buf, n);
            if (m < 0) {
                set_err(c, "HTTP/2 from %s: %s", c->authority, nghttp2_strerror((int)m));
                conn_lost(c, false);
                return;
            }
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        switch (e) {
        case SSL_ERROR_WANT_READ:
            return;
        case SSL_ERROR_WANT_WRITE:
            (void)set_events(c, EPOLLIN | EPOLLOUT);
            return;
        case SSL_ERROR_ZERO_RETURN:
            set_err(c, "%s closed the connection", c->authority);
            conn_lost(c, false);
            return;
        case SSL_ERROR_SYSCALL:
            set_err(c, "connection to %s lost (%s)", c->authority,
                    errno != 0 ? strerror(errno) : "EOF");
            conn_lost(c, false);
            return;
        default: {
            char why[200];
            mh_client_tls_reason(why, sizeof why);
            set_err(c, "TLS with %s: %s", c->authority, why);
            conn_lost(c, false);
            return;
        }
        }
    }
}

/* Gathers nghttp2's output and writes it with as few SSL_writes as possible. */
static void conn_flush(struct mh_async_conn *c)
{
    if (c->state != CS_READY)
        return;
    for (;;) {
        if (c->out_off == c->out.len) {
            mh_buf_truncate(&c->out, 0);
            c->out_off = 0;
            while (c->out.len < WRITE_BATCH) {
                const uint8_t *data = NULL;
                ssize_t n = nghttp2_session_mem_send(c->h2, &data);
                if (n < 0) {
                    set_err(c, "HTTP/2 to %s: %s", c->authority, nghttp2_strerror((int)n));
                    conn_lost(c, false);
                    return;
                }
                if (n == 0)
                    break;
                if (mh_buf_append(&c->out, data, (size_t)n) < 0) {
                    set_err(c, "out of memory");
                    conn_lost(c, false);
                    return;
                }
            }
            if (c->out.len == 0)
                break;
        }
        size_t w = 0;
        ERR_clear_error();
        int r = SSL_write_ex(c->ssl, c->out.data + c->out_off, c->out.len - c->out_off, &w);
        if (r == 1) {
            c->out_off += w;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            (void)set_events(c, EPOLLIN | EPOLLOUT);
            return;
        }
        set_err(c, "send to %s failed (%s)", c->authority,
                e == SSL_ERROR_SYSCALL && errno != 0 ? strerror(errno) : "TLS error");
        conn_lost(c, false);
        return;
    }
    (void)set_events(c, EPOLLIN);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        set_err(c, "%s ended the HTTP/2 session", c->authority);
        conn_lost(c, c->goaway);
        return;
    }
    if (c->goaway && c->active.n == 0) {
        /* Drained after GOAWAY: reconnect for the calls still waiting. */
        set_err(c, "%s sent GOAWAY", c->authority);
        conn_lost(c, true);
    }
}

static void conn_event(struct mh_async_conn *c, uint32_t ev)
{
    switch (c->state) {
    case CS_CONNECT:
        connect_done(c);
        return;
    case CS_HANDSHAKE:
        handshake_step(c);
        return;
    case CS_READY:
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_read(c);
        /* EPOLLOUT: the flush at the end of the iteration writes. */
        return;
    case CS_WAIT:
    default:
        return;
    }
}

int mh_async_conn_new(struct mh_async_loop *l, struct mh_async_tls *tls, const char *endpoint,
                      struct mh_async_conn **out, char *errbuf, size_t errlen)
{
    char dummy[8];
    if (errbuf == NULL || errlen == 0) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    errbuf[0] = 0;
    *out = NULL;
    struct mh_async_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MH_ENOMEM;
    c->loop = l;
    c->tls = tls;
    c->fd = -1;
    c->backoff = BACKOFF_MIN_MS;
    int rv = mh_client_split_endpoint(endpoint, c->host, sizeof c->host, c->port, sizeof c->port);
    if (rv < 0) {
        snprintf(errbuf, errlen, "invalid endpoint '%s': want HOST:PORT", endpoint);
        free(c);
        return rv;
    }
    unsigned char ipbuf[16];
    bool v6 = inet_pton(AF_INET6, c->host, ipbuf) == 1;
    snprintf(c->authority, sizeof c->authority, v6 ? "[%s]:%s" : "%s:%s", c->host, c->port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0 || res == NULL || res->ai_addrlen > sizeof c->addr) {
        snprintf(errbuf, errlen, "cannot resolve %s: %s", c->host,
                 g != 0 ? gai_strerror(g) : "no address");
        if (res != NULL)
            freeaddrinfo(res);
        free(c);
        return -EHOSTUNREACH;
    }
    memcpy(&c->addr, res->ai_addr, res->ai_addrlen);
    c->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    c->next = l->conns;
    l->conns = c;
    conn_start(c);
    *out = c;
    return 0;
}

bool mh_async_conn_ready(const struct mh_async_conn *c)
{
    return c->state == CS_READY && !c->goaway;
}

uint32_t mh_async_conn_max_streams(const struct mh_async_conn *c)
{
    if (c->h2 == NULL)
        return UINT32_MAX;
    return nghttp2_session_get_remote_settings(c->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

uint64_t mh_async_conn_failures(const struct mh_async_conn *c)
{
    return c->failures;
}

const char *mh_async_conn_errmsg(const struct mh_async_conn *c)
{
    return c->err;
}

int mh_async_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        return MH_ENOMEM;
    protobuf_c_message_pack(m, p);
    *out = p;
    *len = n;
    return 0;
}

int mh_async_call(struct mh_async_conn *c, const char *path, const uint8_t *msg, size_t len,
                  const ProtobufCMessageDescriptor *desc, uint64_t timeout_ms, mh_async_cb cb,
                  void *ud)
{
    if (len > UINT32_MAX)
        return MH_ETOOBIG;
    size_t total;
    MH_TRY(mh_size_add(sizeof(struct acall), GRPC_PREFIX, &total));
    MH_TRY(mh_size_add(total, len, &total));
    struct acall *a = malloc(total);
    if (a == NULL)
        return MH_ENOMEM;
    memset(a, 0, sizeof *a);
    a->conn = c;
    a->path = path;
    a->desc = desc;
    a->cb = cb;
    a->ud = ud;
    a->timeout_ms = timeout_ms != 0 ? timeout_ms : 1;
    a->deadline = now_ms() + a->timeout_ms;
    a->hdr.grpc_status = -1;
    a->local_status = -1;
    a->req_len = GRPC_PREFIX + len;
    a->req[0] = 0;
    a->req[1] = (uint8_t)(len >> 24);
    a->req[2] = (uint8_t)(len >> 16);
    a->req[3] = (uint8_t)(len >> 8);
    a->req[4] = (uint8_t)len;
    if (len > 0)
        memcpy(a->req + GRPC_PREFIX, msg, len);
    c->loop->inflight++;
    if (c->state == CS_READY && !c->goaway && c->pending.n == 0 && submit(c, a))
        return 0;
    list_push(&c->pending, a);
    return 0;
}

/* ---- loop iteration ------------------------------------------------------------------ */

static void expire(struct mh_async_loop *l, uint64_t now)
{
    for (struct mh_async_conn *c = l->conns; c != NULL; c = c->next) {
        struct acall *a, *nx;
        for (a = c->pending.head; a != NULL; a = nx) {
            nx = a->next;
            if (a->deadline <= now) {
                list_remove(&c->pending, a);
                end_local(l, a, MH_CLIENT_DEADLINE_EXCEEDED,
                          c->state == CS_READY ? "deadline exceeded"
                                               : "deadline exceeded waiting for the connection",
                          c->state != CS_READY);
            }
        }
        for (a = c->active.head; a != NULL; a = nx) {
            nx = a->next;
            if (a->deadline <= now) {
                list_remove(&c->active, a);
                (void)nghttp2_session_set_stream_user_data(c->h2, a->stream_id, NULL);
                (void)nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, a->stream_id,
                                                NGHTTP2_CANCEL);
                end_local(l, a, MH_CLIENT_DEADLINE_EXCEEDED, "deadline exceeded", false);
            }
        }
        if (c->state == CS_WAIT && c->retry_at <= now)
            conn_start(c);
    }
}

int mh_async_loop_run_once(struct mh_async_loop *l, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t now = now_ms();
    /* Never sleep past the next deadline / reconnect check. */
    if (timeout_ms < 0 || (uint64_t)timeout_ms > TICK_MS)
        timeout_ms = (int)TICK_MS;
    int n = epoll_wait(l->ep, evs, MAX_EVENTS, l->done.n > 0 ? 0 : timeout_ms);
    if (n < 0 && errno != EINTR)
        return -errno;
    for (int i = 0; i < n; i++)
        conn_event(evs[i].data.ptr, evs[i].events);
    run_done(l);
    now = now_ms();
    if (now >= l->next_tick) {
        l->next_tick = now + TICK_MS;
        expire(l, now);
        run_done(l);
    }
    for (struct mh_async_conn *c = l->conns; c != NULL; c = c->next) {
        if (c->state == CS_READY)
            submit_pending(c);
        conn_flush(c);
    }
    /* Connections lost while flushing failed their calls: report them now. */
    run_done(l);
    return 0;
}

static void drop_list(struct mh_async_loop *l, struct list *li)
{
    struct acall *a;
    while ((a = li->head) != NULL) {
        list_remove(li, a);
        l->inflight--;
        call_free(a);
    }
}

void mh_async_loop_free(struct mh_async_loop *l)
{
    if (l == NULL)
        return;
    struct mh_async_conn *c = l->conns;
    while (c != NULL) {
        struct mh_async_conn *nx = c->next;
        drop_list(l, &c->pending);
        drop_list(l, &c->active);
        mh_client_transport_close(&c->h2, &c->ssl, &c->fd);
        mh_buf_free(&c->out);
        free(c);
        c = nx;
    }
    drop_list(l, &l->done);
    close(l->ep);
    mh_wipe(l->rbuf, sizeof l->rbuf);
    free(l);
}
