#include "node/rpc.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/secret.h"
#include "grpc/health/v1/health.pb-c.h"

#define COMP "rpc"

/* Stop asking nghttp2 for more output while this many bytes wait in uv_write
 * (libevent-server's OUTPUT_WOULDBLOCK_THRESHOLD). */
#define OUT_HIGH_WATER (64 * 1024)
/* Stop reading from a peer that does not read its responses. */
#define READ_PAUSE_BYTES     (256 * 1024)
#define MAX_HEADER_LIST      8192
#define GRPC_MESSAGE_MAX     512
#define DEFAULT_STREAMS      100
#define DEFAULT_CONNECTIONS  1024
#define HANDSHAKE_TIMEOUT_MS 10000
/* A connection we decided to close gets this long to flush (alert, GOAWAY). */
#define CLOSE_FLUSH_MS 2000
/* Between the shutdown notice and the final GOAWAY (about one round trip). */
#define FINAL_GOAWAY_MS 100
/* Flow-control windows: requests are consumed (copied out) as they arrive, so
 * larger windows cost no memory beyond max_message per stream and save round trips. */
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW   (4 << 20)
#define ARENA_CHUNK   4096
#define ARENA_SLACK   (64 * 1024)
#define PRINCIPAL_MAX 1024
/* The audit record names an unrouted :path, cut at this many bytes. */
#define AUDIT_PATH_MAX 200

/* ---- zeroizing allocator for nghttp2 ------------------------------------
 * Decrypted request bytes (which may be key material being imported) pass
 * through nghttp2's buffers; every block is wiped before it is released. */

struct zhdr {
    size_t size;
    size_t pad_; /* keeps the payload 16-byte aligned */
};

static void *zmalloc(size_t size, void *ud)
{
    (void)ud;
    size_t total;
    if (mh_size_add(size, sizeof(struct zhdr), &total) < 0)
        return NULL;
    struct zhdr *h = malloc(total);
    if (h == NULL)
        return NULL;
    h->size = size;
    return h + 1;
}

static void zfree(void *p, void *ud)
{
    (void)ud;
    if (p == NULL)
        return;
    struct zhdr *h = (struct zhdr *)p - 1;
    mh_wipe(p, h->size);
    free(h);
}

static void *zcalloc(size_t n, size_t size, void *ud)
{
    size_t total;
    if (mh_size_mul(n, size, &total) < 0)
        return NULL;
    void *p = zmalloc(total, ud);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

static void *zrealloc(void *p, size_t size, void *ud)
{
    if (p == NULL)
        return zmalloc(size, ud);
    if (size == 0) {
        zfree(p, ud);
        return NULL;
    }
    void *n = zmalloc(size, ud);
    if (n == NULL)
        return NULL;
    size_t old = ((struct zhdr *)p - 1)->size;
    memcpy(n, p, old < size ? old : size);
    zfree(p, ud);
    return n;
}

/* ---- per-call arena ------------------------------------------------------
 * protobuf-c copies bytes fields (key material in ImportKey) into allocator
 * memory and has no size limit of its own: a budgeted bump arena bounds the
 * amplification and makes the wipe at the end of the call one loop. */

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap;
    size_t used;
    _Alignas(16) unsigned char data[];
};

struct arena {
    struct arena_chunk *head;
    size_t budget; /* bytes of chunks allowed in total */
    size_t spent;
};

static void *arena_alloc(struct arena *a, size_t size)
{
    size_t rounded;
    if (size == 0)
        size = 1;
    if (mh_size_add(size, 15, &rounded) < 0)
        return NULL;
    rounded &= ~(size_t)15;
    struct arena_chunk *c = a->head;
    if (c == NULL || c->cap - c->used < rounded) {
        size_t cap = rounded > ARENA_CHUNK ? rounded : ARENA_CHUNK, total;
        if (mh_size_add(sizeof *c, cap, &total) < 0)
            return NULL;
        if (a->spent > a->budget || total > a->budget - a->spent)
            return NULL;
        c = malloc(total);
        if (c == NULL)
            return NULL;
        c->cap = cap;
        c->used = 0;
        /* A big block goes behind the head so the head's free tail stays usable. */
        if (a->head != NULL && rounded > ARENA_CHUNK) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        a->spent += total;
    }
    void *p = c->data + c->used;
    c->used += rounded;
    memset(p, 0, size);
    return p;
}

static void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c != NULL) {
        struct arena_chunk *next = c->next;
        mh_wipe(c->data, c->used);
        free(c);
        c = next;
    }
    a->head = NULL;
    a->spent = 0;
}

static void *pb_alloc(void *data, size_t size)
{
    return arena_alloc(data, size);
}

static void pb_free(void *data, void *p)
{
    /* Released with the whole arena when the call ends. */
    (void)data;
    (void)p;
}

/* ---- types -------------------------------------------------------------- */

struct route {
    char *path; /* "/pkg.Service/Method" */
    const ProtobufCMethodDescriptor *method;
    mh_rpc_handler_fn handler;
    void *data;
};

struct conn;

struct stream {
    struct conn *conn;
    struct stream *prev, *next;
    int32_t id;
    const struct route *route; /* NULL: unknown path */
    size_t header_bytes;
    bool is_post, ct_ok, bad_timeout, has_timeout;
    uint64_t timeout_ms;
    uint64_t deadline; /* uv_now ms; 0: none */
    /* request reassembly */
    uint8_t prefix[5];
    size_t prefix_len;
    size_t msg_len;
    bool msg_done;
    struct mh_buf msg;
    bool req_done; /* END_STREAM received */
    /* response */
    bool answered;
    uint8_t *out;
    size_t out_len, out_off;
    struct mh_rpc_call *call;
    /* audit: exactly one record per stream */
    bool audited;
    uint64_t call_id;
    int64_t start_unix_ms;
    uint64_t start_hr; /* uv_hrtime at the headers */
    struct mh_rpc_note note;
    char path[AUDIT_PATH_MAX + 1]; /* the requested :path when unrouted */
};

/* The record of a request the transport ended while its handler still had the
 * call: made when the handler finishes, with the real outcome. */
struct deferred_audit {
    bool pending;
    struct mh_rpc_server *srv;
    int client_status; /* what the client got; -1: nothing */
    int64_t start_unix_ms;
    uint64_t start_hr;
    struct mh_rpc_note note;
};

struct mh_rpc_call {
    struct stream *stream; /* NULL once finished by the transport */
    struct deferred_audit audit;
    const ProtobufCMessageDescriptor *output;
    struct arena arena;
    ProtobufCAllocator pa;
    ProtobufCMessage *request;
    uint64_t id;
    uint64_t deadline;
    bool cancelled;
    const char *principal, *method, *peer; /* stored behind the struct */
};

struct conn {
    struct mh_rpc_server *srv;
    struct conn *prev, *next;
    uv_tcp_t tcp;
    SSL *ssl;
    BIO *rbio, *wbio;
    nghttp2_session *h2;
    struct stream *streams;
    char peer[64];
    char *principal;
    uint64_t hs_deadline;    /* handshake must finish by then; 0 once done */
    uint64_t close_deadline; /* want_close: hard close at */
    size_t out_pending;      /* bytes handed to uv_write, not yet written */
    bool handshake_done, closing, want_close, in_recv, reading, goaway_sent;
    bool tls_fatal, tls_shutdown;
    bool pump_due; /* answered since the last pump: the flush handle pumps it */
};

enum drain_stage { DRAIN_NONE, DRAIN_NOTICE, DRAIN_GOAWAY, DRAIN_GRACE };

struct mh_rpc_server {
    uv_loop_t *loop;
    SSL_CTX *ctx;
    char *host;
    uint16_t port;
    size_t max_message;
    uint32_t max_streams, max_connections;
    struct route *routes;
    size_t n_routes;
    bool serving;
    mh_rpc_audit_fn audit;
    mh_rpc_admit_fn admit;
    void *audit_data;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_mem mem;
    /* libuv state */
    uv_tcp_t listener;
    uv_timer_t timer;
    bool started, listener_open, timer_open, timer_closing;
    /* Answers made during one loop iteration leave together: the check handle
     * pumps every connection with pump_due once the iteration's callbacks ran (so
     * a batch of worker completions costs one write per connection, not one per
     * answer); the idle handle only keeps the loop from blocking in poll when an
     * answer was made before it (timers), and both stop once flushed. */
    uv_check_t flush;
    uv_idle_t flush_idle;
    bool flush_open, flush_active;
    uint64_t timer_due; /* 0: idle */
    struct conn *conns;
    size_t n_conns;
    /* drain */
    enum drain_stage stage;
    uint64_t goaway_at, grace_at;
    void (*done)(void *);
    void *done_arg;
    uint8_t plain[16384]; /* SSL_read output, wiped after each use */
    /* conn_pump gathers HTTP/2 frames here so that one TLS record and one write(2)
     * carry many of them (a response is 2-3 frames); wiped after each use. */
    uint8_t obuf[16384];
};

static uint64_t next_call_id;

static void conn_pump(struct conn *c);
static void conn_close(struct conn *c);
static void timer_want(struct mh_rpc_server *srv, uint64_t due);
static void drain_check(struct mh_rpc_server *srv);
static void conn_pump_soon(struct conn *c);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static size_t sat_size_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t sat_size_mul(size_t a, size_t b)
{
    return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

static bool hdr_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

/* grpc-timeout: 1..8 ASCII digits and a unit (H M S m u n). Rounded up to
 * whole milliseconds so that a tiny positive timeout never means "none". */
static int parse_timeout(const uint8_t *v, size_t len, uint64_t *ms)
{
    if (len < 2 || len > 9)
        return MH_EPROTO;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return MH_EPROTO;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        *ms = n * 3600000u;
        break;
    case 'M':
        *ms = n * 60000u;
        break;
    case 'S':
        *ms = n * 1000u;
        break;
    case 'm':
        *ms = n;
        break;
    case 'u':
        *ms = (n + 999u) / 1000u;
        break;
    case 'n':
        *ms = (n + 999999u) / 1000000u;
        break;
    default:
        return MH_EPROTO;
    }
    return 0;
}

/* grpc-message: percent-encode everything outside space..~ and '%' itself,
 * after cutting the text at GRPC_MESSAGE_MAX bytes on a UTF-8 boundary. */
static void percent_encode(const char *msg, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(msg), o = 0;
    if (len > GRPC_MESSAGE_MAX) {
        len = GRPC_MESSAGE_MAX;
        while (len > 0 && ((unsigned char)msg[len] & 0xC0) == 0x80)
            len--;
    }
    for (size_t i = 0; i < len && o + 4 <= cap; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch >= 0x20 && ch <= 0x7E && ch != '%') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

#define NV(n, v, vl)                                                                               \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE                  \
    }

/* ---- calls -------------------------------------------------------------- */

static struct mh_rpc_call *call_new(struct conn *c, struct stream *s)
{
    const char *principal = c->principal, *method = s->route->path, *peer = c->peer;
    size_t lp = strlen(principal) + 1, lm = strlen(method) + 1, lr = strlen(peer) + 1;
    struct mh_rpc_call *call = calloc(1, sizeof *call + lp + lm + lr);
    if (call == NULL)
        return NULL;
    char *p = (char *)(call + 1);
    memcpy(p, principal, lp);
    call->principal = p;
    memcpy(p + lp, method, lm);
    call->method = p + lp;
    memcpy(p + lp + lm, peer, lr);
    call->peer = p + lp + lm;
    call->output = s->route->method->output;
    call->id = __atomic_add_fetch(&next_call_id, 1, __ATOMIC_RELAXED);
    call->deadline = s->deadline;
    call->pa.alloc = pb_alloc;
    call->pa.free = pb_free;
    call->pa.allocator_data = &call->arena;
    return call;
}

static void call_free(struct mh_rpc_call *call)
{
    arena_free(&call->arena);
    free(call);
}

/* The transport finished the call (cancel, deadline, close, drain): the
 * handler still owns it and frees it through its reply. */
static void stream_detach_call(struct stream *s)
{
    if (s->call == NULL)
        return;
    s->call->stream = NULL;
    s->call->cancelled = true;
    s->call = NULL;
}

/* ---- audit ---------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reports the end of |s| to the audit hook, once per stream. < 0: the record
 * could not be written and the caller must not serve the answer it meant to. */
static int stream_audit(struct stream *s, int grpc_status, int http_status, const char *msg,
                        bool cancelled)
{
    struct mh_rpc_server *srv = s->conn->srv;
    if (s->audited)
        return 0;
    s->audited = true;
    if (s->call != NULL) {
        /* The transport ends the request under a running handler (reset, close,
         * deadline, drain): what the handler did is not known yet (a write may
         * still commit), so the record waits for its finish. */
        struct deferred_audit *da = &s->call->audit;
        da->pending = true;
        da->srv = srv;
        da->client_status = cancelled ? -1 : grpc_status;
        da->start_unix_ms = s->start_unix_ms;
        da->start_hr = s->start_hr;
        da->note = s->note;
        return 0;
    }
    if (srv->audit == NULL)
        return 0;
    struct mh_rpc_done d = {
        .call_id = s->call_id,
        .method = s->route != NULL ? s->route->path : s->path,
        .known_method = s->route != NULL,
        .principal = s->conn->principal != NULL ? s->conn->principal : "",
        .peer = s->conn->peer,
        .start_unix_ms = s->start_unix_ms,
        .duration_us = (uv_hrtime() - s->start_hr) / 1000u,
        .grpc_status = grpc_status,
        .http_status = http_status,
        .message = msg,
        .cancelled = cancelled,
        .client_status = cancelled ? -1 : grpc_status,
        .note = &s->note,
    };
    return srv->audit(srv->audit_data, &d);
}

/* The handler finished a call the transport had ended: the deferred record, with
 * the handler's outcome. Nothing can be refused any more (the client has its
 * answer or is gone), so a failing hook only leaves the log failed. */
static void call_audit_late(struct mh_rpc_call *call, int grpc_status, const char *msg)
{
    struct deferred_audit *da = &call->audit;
    if (!da->pending)
        return;
    da->pending = false;
    struct mh_rpc_server *srv = da->srv;
    if (srv->audit == NULL)
        return;
    struct mh_rpc_done d = {
        .call_id = call->id,
        .method = call->method,
        .known_method = true,
        .principal = call->principal,
        .peer = call->peer,
        .start_unix_ms = da->start_unix_ms,
        .duration_us = (uv_hrtime() - da->start_hr) / 1000u,
        .grpc_status = grpc_status,
        .http_status = 200,
        .message = msg,
        .cancelled = true,
        .client_status = da->client_status,
        .note = &da->note,
    };
    (void)srv->audit(srv->audit_data, &d);
}

/* The requested :path for the record of an unrouted request: printable ASCII
 * (anything else becomes '?'), at most AUDIT_PATH_MAX bytes. */
static void stream_keep_path(struct stream *s, const uint8_t *v, size_t len)
{
    if (len > AUDIT_PATH_MAX)
        len = AUDIT_PATH_MAX;
    for (size_t i = 0; i < len; i++)
        s->path[i] = v[i] >= 0x20 && v[i] <= 0x7E ? (char)v[i] : '?';
    s->path[len] = 0;
}

static bool is_health_check(const struct route *r)
{
    return r != NULL && r->method == &grpc__health__v1__health__descriptor.methods[0];
}

/* ---- responses ---------------------------------------------------------- */

static void stream_free_out(struct stream *s)
{
    if (s->out != NULL) {
        mh_wipe(s->out, s->out_len);
        free(s->out);
        s->out = NULL;
    }
}

static void stream_http_error(struct stream *s, const char *status)
{
    if (s->answered)
        return;
    /* A bare HTTP refusal serves nothing: it stands even when unaudited. */
    (void)stream_audit(s, -1, atoi(status), NULL, false);
    s->answered = true;
    stream_detach_call(s);
    nghttp2_nv nva[] = {NV(":status", status, strlen(status))};
    if (nghttp2_submit_response(s->conn->h2, s->id, nva, 1, NULL) != 0)
        (void)nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id,
                                        NGHTTP2_INTERNAL_ERROR);
}

/* Trailers-Only: one HEADERS frame with END_STREAM. */
static void stream_fail(struct stream *s, enum mh_grpc_status status, const char *msg)
{
    if (s->answered)
        return;
    if (status <= MH_GRPC_OK || status > MH_GRPC_UNAUTHENTICATED)
        status = MH_GRPC_UNKNOWN;
    if (stream_audit(s, (int)status, 200, msg, false) < 0 && status != MH_GRPC_UNAVAILABLE) {
        status = MH_GRPC_UNAVAILABLE;
        msg = mh_strerror(MH_EAUDIT);
    }
    s->answered = true;
    stream_detach_call(s);
    char code[4], text[GRPC_MESSAGE_MAX * 3 + 1];
    snprintf(code, sizeof code, "%d", (int)status);
    nghttp2_nv nva[4] = {
        NV(":status", "200", 3),
        NV("content-type", "application/grpc", 16),
        NV("grpc-status", code, strlen(code)),
    };
    size_t n = 3;
    if (msg != NULL && msg[0] != 0) {
        percent_encode(msg, text, sizeof text);
        nghttp2_nv m = NV("grpc-message", text, strlen(text));
        nva[n++] = m;
    }
    if (nghttp2_submit_response(s->conn->h2, s->id, nva, n, NULL) != 0)
        (void)nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id,
                                        NGHTTP2_INTERNAL_ERROR);
}

static ssize_t data_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)user_data;
    struct stream *s = source->ptr;
    size_t n = s->out_len - s->out_off;
    if (n > length)
        n = length;
    if (n > 0)
        memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    if (s->out_off == s->out_len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv tr[] = {NV("grpc-status", "0", 1)};
        if (nghttp2_submit_trailer(session, id, tr, 1) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        stream_free_out(s);
    }
    return (ssize_t)n;
}

static void stream_send(struct stream *s, uint8_t *out, size_t len)
{
    s->answered = true;
    s->out = out;
    s->out_len = len;
    s->out_off = 0;
    nghttp2_nv nva[] = {
        NV(":status", "200", 3),
        NV("content-type", "application/grpc", 16),
    };
    nghttp2_data_provider prd;
    prd.source.ptr = s;
    prd.read_callback = data_read;
    if (nghttp2_submit_response(s->conn->h2, s->id, nva, 2, &prd) != 0) {
        stream_free_out(s);
        (void)nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id,
                                        NGHTTP2_INTERNAL_ERROR);
    }
}

/* ---- public per-call API ------------------------------------------------- */

void mh_rpc_reply(struct mh_rpc_call *call, const ProtobufCMessage *response)
{
    if (call == NULL)
        return;
    struct stream *s = call->stream;
    if (s == NULL) {
        call_audit_late(call,
                        response != NULL && response->descriptor == call->output ? MH_GRPC_OK
                                                                                 : MH_GRPC_INTERNAL,
                        NULL);
        call_free(call);
        return;
    }
    s->call = NULL;
    call->stream = NULL;
    struct conn *c = s->conn;
    if (response == NULL || response->descriptor != call->output) {
        MH_ERROR(COMP, "reply with wrong message type method=%s call=%" PRIu64, call->method,
                 call->id);
        stream_fail(s, MH_GRPC_INTERNAL, "internal error: bad response type");
        goto out;
    }
    size_t n = protobuf_c_message_get_packed_size(response), total;
    if (n > UINT32_MAX || mh_size_add(n, 5, &total) < 0) {
        stream_fail(s, MH_GRPC_RESOURCE_EXHAUSTED, "response too large");
        goto out;
    }
    uint8_t *buf = malloc(total);
    if (buf == NULL) {
        stream_fail(s, MH_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    buf[0] = 0;
    buf[1] = (uint8_t)(n >> 24);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    if (protobuf_c_message_pack(response, buf + 5) != n) {
        mh_wipe(buf, total);
        free(buf);
        stream_fail(s, MH_GRPC_INTERNAL, "internal error: pack failed");
        goto out;
    }
    /* The health check answers NOT_SERVING while the log fails: it must get out. */
    if (stream_audit(s, MH_GRPC_OK, 200, NULL, false) < 0 && !is_health_check(s->route)) {
        mh_wipe(buf, total);
        free(buf);
        stream_fail(s, MH_GRPC_UNAVAILABLE, mh_strerror(MH_EAUDIT));
        goto out;
    }
    stream_send(s, buf, total);
out:
    /* After packing: |response| may live in the call's arena. */
    call_free(call);
    conn_pump_soon(c);
}

void mh_rpc_fail(struct mh_rpc_call *call, enum mh_grpc_status status, const char *message)
{
    if (call == NULL)
        return;
    struct stream *s = call->stream;
    if (s == NULL) {
        /* |message| may live in the call's arena. */
        call_audit_late(call, (int)status, message);
        call_free(call);
        return;
    }
    s->call = NULL;
    call->stream = NULL;
    /* |message| may live in the call's arena. */
    stream_fail(s, status, message);
    call_free(call);
    conn_pump_soon(s->conn);
}

bool mh_rpc_call_cancelled(const struct mh_rpc_call *call)
{
    return call->cancelled;
}

const char *mh_rpc_call_principal(const struct mh_rpc_call *call)
{
    return call->principal;
}

const char *mh_rpc_call_method(const struct mh_rpc_call *call)
{
    return call->method;
}

const char *mh_rpc_call_peer(const struct mh_rpc_call *call)
{
    return call->peer;
}

uint64_t mh_rpc_call_id(const struct mh_rpc_call *call)
{
    return call->id;
}

uint64_t mh_rpc_call_deadline(const struct mh_rpc_call *call)
{
    return call->deadline;
}

void *mh_rpc_call_alloc(struct mh_rpc_call *call, size_t size)
{
    return arena_alloc(&call->arena, size);
}

static void note_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* Where a call's notes go: its stream's, or the deferred record's once the
 * transport ended the stream (NULL: nowhere, the record is already made). */
static struct mh_rpc_note *call_note(struct mh_rpc_call *call)
{
    if (call == NULL)
        return NULL;
    if (call->stream != NULL)
        return &call->stream->note;
    return call->audit.pending ? &call->audit.note : NULL;
}

void mh_rpc_call_note_authz(struct mh_rpc_call *call, int action, bool allowed, const char *scope)
{
    struct mh_rpc_note *n = call_note(call);
    if (n == NULL)
        return;
    n->action = action;
    n->decision = allowed ? 1 : -1;
    if (scope != NULL)
        note_copy(n->scope, sizeof n->scope, scope);
}

void mh_rpc_call_note_key(struct mh_rpc_call *call, const char *key, const char *version)
{
    struct mh_rpc_note *n = call_note(call);
    if (n == NULL)
        return;
    if (key != NULL)
        note_copy(n->key, sizeof n->key, key);
    if (version != NULL)
        note_copy(n->version, sizeof n->version, version);
}

void mh_rpc_call_note_request_id(struct mh_rpc_call *call, const char *request_id)
{
    struct mh_rpc_note *n = call_note(call);
    if (n == NULL || request_id == NULL)
        return;
    note_copy(n->request_id, sizeof n->request_id, request_id);
}

/* ---- streams ------------------------------------------------------------ */

static void stream_free(struct stream *s)
{
    struct conn *c = s->conn;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    /* Ended before any answer: reset by the client or the connection went away. */
    (void)stream_audit(s, MH_GRPC_CANCELLED, 0, "cancelled", true);
    stream_detach_call(s);
    mh_buf_free(&s->msg);
    stream_free_out(s);
    free(s);
}

static const struct route *find_route(const struct mh_rpc_server *srv, const uint8_t *path,
                                      size_t len)
{
    for (size_t i = 0; i < srv->n_routes; i++) {
        const char *p = srv->routes[i].path;
        if (strlen(p) == len && memcmp(p, path, len) == 0)
            return &srv->routes[i];
    }
    return NULL;
}

static void stream_headers_done(struct stream *s)
{
    struct mh_rpc_server *srv = s->conn->srv;
    if (!s->is_post) {
        stream_http_error(s, "405");
        return;
    }
    if (!s->ct_ok) {
        stream_http_error(s, "415");
        return;
    }
    if (s->bad_timeout) {
        /* grpc-go answers a malformed grpc-timeout with INTERNAL too. */
        stream_fail(s, MH_GRPC_INTERNAL, "malformed grpc-timeout");
        return;
    }
    if (s->route == NULL) {
        stream_fail(s, MH_GRPC_UNIMPLEMENTED, "unknown method");
        return;
    }
    if (s->route->handler == NULL) {
        stream_fail(s, MH_GRPC_UNIMPLEMENTED, "method not implemented");
        return;
    }
    if (s->has_timeout) {
        s->deadline = sat_add(uv_now(srv->loop), s->timeout_ms);
        if (s->deadline == 0)
            s->deadline = 1;
        timer_want(srv, s->deadline);
    }
}

static void stream_data(struct stream *s, const uint8_t *data, size_t len)
{
    struct mh_rpc_server *srv = s->conn->srv;
    while (len > 0 && !s->answered) {
        if (s->msg_done) {
            stream_fail(s, MH_GRPC_UNIMPLEMENTED,
                        "more than one request message for a unary method");
            return;
        }
        if (s->prefix_len < 5) {
            size_t take = 5 - s->prefix_len;
            if (take > len)
                take = len;
            memcpy(s->prefix + s->prefix_len, data, take);
            s->prefix_len += take;
            data += take;
            len -= take;
            if (s->prefix_len < 5)
                return;
            if (s->prefix[0] == 1) {
                stream_fail(s, MH_GRPC_UNIMPLEMENTED, "compressed messages are not supported");
                return;
            }
            if (s->prefix[0] != 0) {
                stream_fail(s, MH_GRPC_INTERNAL, "invalid message flags");
                return;
            }
            s->msg_len = (size_t)s->prefix[1] << 24 | (size_t)s->prefix[2] << 16 |
                         (size_t)s->prefix[3] << 8 | (size_t)s->prefix[4];
            if (s->msg_len > srv->max_message) {
                char m[96];
                snprintf(m, sizeof m, "request message larger than %zu bytes", srv->max_message);
                stream_fail(s, MH_GRPC_RESOURCE_EXHAUSTED, m);
                return;
            }
            if (s->msg_len == 0)
                s->msg_done = true;
            continue;
        }
        size_t take = s->msg_len - s->msg.len;
        if (take > len)
            take = len;
        if (mh_buf_append(&s->msg, data, take) < 0) {
            stream_fail(s, MH_GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        data += take;
        len -= take;
        if (s->msg.len == s->msg_len)
            s->msg_done = true;
    }
}

static void stream_dispatch(struct stream *s)
{
    struct mh_rpc_server *srv = s->conn->srv;
    const struct route *r = s->route;
    if (srv->admit != NULL && !is_health_check(r)) {
        /* Before the handler: nothing may happen that cannot be recorded. */
        const char *why = srv->admit(srv->audit_data);
        if (why != NULL) {
            stream_fail(s, MH_GRPC_UNAVAILABLE, why);
            return;
        }
    }
    struct mh_rpc_call *call = call_new(s->conn, s);
    if (call == NULL) {
        stream_fail(s, MH_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    s->call_id = call->id;
    /* Budget for decoding: 4x the wire size + slack (see tech notes, protobuf-c). */
    call->arena.budget = sat_size_add(sat_size_mul(s->msg_len, 4), ARENA_SLACK);
    call->request = protobuf_c_message_unpack(r->method->input, &call->pa, s->msg.len, s->msg.data);
    mh_buf_free(&s->msg);
    if (call->request == NULL) {
        call_free(call);
        /* gRPC convention: a request that does not parse is INTERNAL. */
        stream_fail(s, MH_GRPC_INTERNAL, "request message could not be parsed");
        return;
    }
    /* The handler may build its response in the arena: twice the largest
     * message on top of what decoding used. */
    call->arena.budget = sat_size_add(call->arena.spent,
                                      sat_size_add(sat_size_mul(srv->max_message, 2), ARENA_SLACK));
    s->call = call;
    call->stream = s;
    r->handler(call, call->request, r->data);
}

static void stream_end(struct stream *s)
{
    s->req_done = true;
    if (s->answered)
        return;
    if (!s->msg_done) {
        if (s->prefix_len == 0)
            stream_fail(s, MH_GRPC_UNIMPLEMENTED, "no request message for a unary method");
        else
            stream_fail(s, MH_GRPC_INTERNAL, "truncated request message");
        return;
    }
    stream_dispatch(s);
}

static void stream_expire(struct stream *s)
{
    if (s->answered)
        return;
    MH_DEBUG(COMP, "deadline exceeded peer=%s stream=%d", s->conn->peer, (int)s->id);
    stream_fail(s, MH_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->conn = c;
    s->id = frame->hd.stream_id;
    s->start_unix_ms = wall_ms();
    s->start_hr = uv_hrtime();
    s->note.action = -1;
    s->next = c->streams;
    if (c->streams != NULL)
        c->streams->prev = s;
    c->streams = s;
    if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
        stream_free(s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    struct conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    /* SETTINGS_MAX_HEADER_LIST_SIZE is advisory for nghttp2: count like it does. */
    size_t add;
    if (mh_size_add(namelen, valuelen, &add) < 0 || mh_size_add(add, 32, &add) < 0 ||
        mh_size_add(s->header_bytes, add, &s->header_bytes) < 0 ||
        s->header_bytes > MAX_HEADER_LIST)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* request trailers carry nothing we use */
    if (hdr_is(name, namelen, ":path")) {
        s->route = find_route(c->srv, value, valuelen);
        if (s->route == NULL)
            stream_keep_path(s, value, valuelen);
    } else if (hdr_is(name, namelen, ":method")) {
        s->is_post = hdr_is(value, valuelen, "POST");
    } else if (hdr_is(name, namelen, "content-type")) {
        s->ct_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                   (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (hdr_is(name, namelen, "grpc-timeout")) {
        s->bad_timeout = parse_timeout(value, valuelen, &s->timeout_ms) < 0;
        s->has_timeout = !s->bad_timeout;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s != NULL)
        stream_data(s, data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    struct stream *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s == NULL)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            stream_headers_done(s);
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            stream_end(s);
        break;
    case NGHTTP2_DATA:
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            break;
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s != NULL)
            stream_end(s);
        break;
    default:
        break;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    /* We answered before the request ended: tell the client to stop sending. */
    if (s != NULL && !s->req_done)
        (void)nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    /* Never fails: a fatal error here leaks in nghttp2 < 1.55.1. */
    (void)error_code;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s != NULL) {
        (void)nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_free(s);
    }
    return 0;
}

/* ---- TLS and connections ------------------------------------------------ */

struct wreq {
    uv_write_t req;
    struct conn *conn;
    size_t len;
    char data[];
};

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->conn;
    c->out_pending -= w->len;
    free(w); /* ciphertext only */
    if (c->closing)
        return;
    if (status < 0) {
        MH_DEBUG(COMP, "write failed peer=%s err=%s", c->peer, uv_err_name(status));
        conn_close(c);
        return;
    }
    conn_pump(c);
}

static int flush_wbio(struct conn *c)
{
    size_t pending = BIO_ctrl_pending(c->wbio);
    if (pending == 0)
        return 0;
    struct wreq *w = malloc(sizeof *w + pending);
    if (w == NULL)
        return MH_ENOMEM;
    int n = BIO_read(c->wbio, w->data, (int)pending);
    if (n <= 0) {
        free(w);
        return MH_ECRYPTO;
    }
    w->conn = c;
    w->len = (size_t)n;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rv < 0) {
        free(w);
        return rv;
    }
    c->out_pending += (size_t)n;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = malloc(65536);
    buf->len = buf->base != NULL ? 65536 : 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_set_reading(struct conn *c, bool on)
{
    if (on == c->reading)
        return;
    if (on) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    } else {
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void conn_want_close(struct conn *c)
{
    if (c->want_close)
        return;
    c->want_close = true;
    c->close_deadline = uv_now(c->srv->loop) + CLOSE_FLUSH_MS;
    timer_want(c->srv, c->close_deadline);
}

/* Encrypts |len| bytes into the write BIO (one TLS record up to 16 KiB); the
 * caller flushes the BIO once for everything it put. */
static int tls_put(struct conn *c, const uint8_t *data, size_t len)
{
    ERR_clear_error();
    if (SSL_write(c->ssl, data, (int)len) != (int)len)
        return MH_ECRYPTO;
    return 0;
}

/* Moves whatever nghttp2 and OpenSSL want to send to the socket, within the
 * backpressure limit, and closes the connection when it is finished. */
static void conn_pump(struct conn *c)
{
    if (c->closing || c->in_recv)
        return;
    if (c->h2 != NULL) {
        uint8_t *stage = c->srv->obuf;
        size_t staged = 0, used = 0;
        bool failed = false;
        while (c->out_pending + staged + BIO_ctrl_pending(c->wbio) < OUT_HIGH_WATER) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                MH_INFO(COMP, "http2 send failed peer=%s err=%s", c->peer,
                        nghttp2_strerror((int)n));
                mh_wipe(stage, used);
                conn_close(c);
                return;
            }
            if (n == 0)
                break;
            size_t len = (size_t)n;
            if (staged + len > sizeof c->srv->obuf) {
                if (tls_put(c, stage, staged) < 0) {
                    failed = true;
                    break;
                }
                staged = 0;
            }
            if (len > sizeof c->srv->obuf) {
                if (tls_put(c, data, len) < 0) {
                    failed = true;
                    break;
                }
                continue;
            }
            memcpy(stage + staged, data, len);
            staged += len;
            if (staged > used)
                used = staged;
        }
        if (!failed && staged > 0 && tls_put(c, stage, staged) < 0)
            failed = true;
        mh_wipe(stage, used);
        if (failed) {
            c->tls_fatal = true;
            conn_close(c);
            return;
        }
    }
    if (flush_wbio(c) < 0) {
        conn_close(c);
        return;
    }
    if (c->h2 != NULL && !c->want_close && !nghttp2_session_want_read(c->h2) &&
        !nghttp2_session_want_write(c->h2))
        conn_want_close(c);
    if (c->goaway_sent && c->streams == NULL)
        conn_want_close(c);
    if (c->want_close && c->handshake_done && !c->tls_fatal && !c->tls_shutdown &&
        (c->h2 == NULL || !nghttp2_session_want_write(c->h2))) {
        /* close_notify only after the last HTTP/2 bytes: data behind it is lost. */
        c->tls_shutdown = true;
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl);
        ERR_clear_error();
        if (flush_wbio(c) < 0) {
            conn_close(c);
            return;
        }
    }
    if (c->want_close && c->out_pending == 0) {
        conn_close(c);
        return;
    }
    conn_set_reading(c, !c->want_close && c->out_pending < READ_PAUSE_BYTES);
}

static void on_flush(uv_check_t *h)
{
    struct mh_rpc_server *srv = h->data;
    (void)uv_check_stop(&srv->flush);
    (void)uv_idle_stop(&srv->flush_idle);
    srv->flush_active = false;
    /* conn_pump may close a connection; it is only freed in the close phase. */
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->pump_due) {
            c->pump_due = false;
            conn_pump(c);
        }
    }
}

static void on_flush_idle(uv_idle_t *h)
{
    (void)h;
}

/* Pumps |c| at the end of this loop iteration (immediately when the server has
 * no flush handle: not listening). */
static void conn_pump_soon(struct conn *c)
{
    struct mh_rpc_server *srv = c->srv;
    if (!srv->flush_open) {
        conn_pump(c);
        return;
    }
    c->pump_due = true;
    if (srv->flush_active)
        return;
    srv->flush_active = true;
    (void)uv_check_start(&srv->flush, on_flush);
    (void)uv_idle_start(&srv->flush_idle, on_flush_idle);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct mh_rpc_server *srv = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->n_conns--;
    free(c->principal);
    free(c);
    drain_check(srv);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    if (c->in_recv) {
        /* Inside nghttp2's callbacks: the session must outlive them. */
        c->want_close = true;
        c->close_deadline = 1;
        timer_want(c->srv, 1);
        return;
    }
    c->closing = true;
    while (c->streams != NULL)
        stream_free(c->streams);
    if (c->h2 != NULL)
        nghttp2_session_del(c->h2);
    c->h2 = NULL;
    if (c->ssl != NULL)
        SSL_free(c->ssl); /* frees both BIOs */
    c->ssl = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void log_tls_failure(struct conn *c, const char *what)
{
    char reason[160];
    long vr = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_peek_error();
    if (vr != X509_V_OK) {
        snprintf(reason, sizeof reason, "%s", X509_verify_cert_error_string(vr));
    } else if (e != 0 && ERR_reason_error_string(e) != NULL) {
        snprintf(reason, sizeof reason, "%s", ERR_reason_error_string(e));
    } else {
        snprintf(reason, sizeof reason, "unknown");
    }
    ERR_clear_error();
    MH_INFO(COMP, "%s peer=%s reason=\"%s\"", what, c->peer, reason);
}

static bool printable(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7E)
            return false;
    return true;
}

/* The principal: first SAN URI, else "spki:" + hex SHA-256 of the SPKI DER. */
static int cert_principal(X509 *cert, char **out)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        int rv = MH_ECERT;
        if (len > 0 && len <= PRINCIPAL_MAX && printable(p, (size_t)len)) {
            *out = strndup((const char *)p, (size_t)len);
            rv = *out != NULL ? 0 : MH_ENOMEM;
        }
        GENERAL_NAMES_free(names);
        return rv;
    }
    GENERAL_NAMES_free(names);
    unsigned char *der = NULL, md[32];
    int dlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (dlen <= 0)
        return MH_ECERT;
    unsigned int mdlen = 0;
    int ok = EVP_Digest(der, (size_t)dlen, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    if (ok != 1 || mdlen != 32)
        return MH_ECRYPTO;
    char *s = malloc(5 + 64 + 1);
    if (s == NULL)
        return MH_ENOMEM;
    memcpy(s, "spki:", 5);
    mh_hex_encode(md, sizeof md, s + 5);
    *out = s;
    return 0;
}

/* Handshake step. 1: done and h2 ready; 0: needs more bytes; <0: refused
 * (the connection is then closing). */
static int conn_handshake(struct conn *c)
{
    struct mh_rpc_server *srv = c->srv;
    ERR_clear_error();
    int rv = SSL_do_handshake(c->ssl);
    if (rv != 1) {
        int e = SSL_get_error(c->ssl, rv);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return flush_wbio(c) < 0 ? MH_ENOMEM : 0;
        log_tls_failure(c, "handshake failed");
        goto refuse;
    }
    const unsigned char *alpn = NULL;
    unsigned int alen = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
        MH_INFO(COMP, "handshake failed peer=%s reason=\"ALPN h2 not negotiated\"", c->peer);
        goto refuse;
    }
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (cert == NULL || cert_principal(cert, &c->principal) < 0) {
        MH_INFO(COMP, "handshake failed peer=%s reason=\"unusable client certificate\"", c->peer);
        goto refuse;
    }
    if (nghttp2_session_server_new3(&c->h2, srv->cbs, c, srv->opt, &srv->mem) != 0) {
        c->h2 = NULL;
        goto refuse;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
        goto refuse;
    c->handshake_done = true;
    c->hs_deadline = 0;
    MH_DEBUG(COMP, "connection peer=%s principal=%s", c->peer, c->principal);
    if (srv->stage != DRAIN_NONE) {
        (void)nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway_sent = true;
    }
    return 1;
refuse:
    (void)flush_wbio(c); /* the alert, if any */
    conn_want_close(c);
    conn_pump(c);
    return MH_EPERM;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread <= 0) {
        free(buf->base);
        if (nread < 0)
            conn_close(c);
        return;
    }
    int w = BIO_write(c->rbio, buf->base, (int)nread);
    free(buf->base); /* ciphertext */
    if (w != (int)nread) {
        conn_close(c);
        return;
    }
    if (c->want_close)
        return;
    if (!c->handshake_done && conn_handshake(c) <= 0)
        return;
    struct mh_rpc_server *srv = c->srv;
    bool fatal = false;
    c->in_recv = true;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, srv->plain, (int)sizeof srv->plain);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e != SSL_ERROR_WANT_READ) {
                if (e != SSL_ERROR_ZERO_RETURN) {
                    log_tls_failure(c, "tls read failed");
                    c->tls_fatal = true;
                }
                fatal = true;
            }
            break;
        }
        ssize_t r = nghttp2_session_mem_recv(c->h2, srv->plain, (size_t)n);
        mh_wipe(srv->plain, (size_t)n);
        if (r < 0) {
            MH_INFO(COMP, "http2 error peer=%s err=%s", c->peer, nghttp2_strerror((int)r));
            fatal = true;
            break;
        }
        if (c->want_close)
            break;
    }
    c->in_recv = false;
    if (fatal)
        conn_want_close(c);
    conn_pump(c);
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int l = in[i];
        if (l == 0 || l > inlen - i - 1)
            break;
        if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct mh_rpc_server *srv = listener->data;
    if (status < 0) {
        MH_WARN(COMP, "accept failed err=%s", uv_err_name(status));
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL || srv->stage != DRAIN_NONE || srv->n_conns >= srv->max_connections) {
        /* Accept and drop, so the backlog does not fill. */
        free(c);
        uv_tcp_t *t = malloc(sizeof *t);
        if (t == NULL || uv_tcp_init(srv->loop, t) != 0) {
            free(t);
            return;
        }
        (void)uv_accept(listener, (uv_stream_t *)t);
        MH_INFO(COMP, "connection refused reason=\"%s\"",
                srv->stage != DRAIN_NONE ? "draining" : "too many connections");
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    c->srv = srv;
    if (uv_tcp_init(srv->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    (void)uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = (int)sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
        mh_net_format(&ss, c->peer, sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "?");
    c->ssl = SSL_new(srv->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        conn_close(c);
        return;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    c->hs_deadline = uv_now(srv->loop) + HANDSHAKE_TIMEOUT_MS;
    timer_want(srv, c->hs_deadline);
    conn_set_reading(c, true);
    if (!c->reading)
        conn_close(c);
}

/* ---- the server timer: handshakes, deadlines, flushes, drain stages ---- */

static void drain_cancel_all(struct mh_rpc_server *srv)
{
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->closing)
            continue;
        for (struct stream *s = c->streams; s != NULL; s = s->next)
            stream_fail(s, MH_GRPC_UNAVAILABLE, "server shutting down");
        conn_want_close(c);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct mh_rpc_server *srv = t->data;
    uint64_t now = uv_now(srv->loop), next = 0;
    srv->timer_due = 0;
    if (srv->stage == DRAIN_NOTICE && now >= srv->goaway_at) {
        srv->stage = DRAIN_GOAWAY;
        for (struct conn *c = srv->conns; c != NULL; c = c->next) {
            if (c->closing || c->h2 == NULL || c->goaway_sent)
                continue;
            (void)nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                        nghttp2_session_get_last_proc_stream_id(c->h2),
                                        NGHTTP2_NO_ERROR, NULL, 0);
            c->goaway_sent = true;
        }
    }
    if (srv->stage == DRAIN_GOAWAY && now >= srv->grace_at) {
        srv->stage = DRAIN_GRACE;
        drain_cancel_all(srv);
    }
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->closing)
            continue;
        if (!c->handshake_done && c->hs_deadline != 0 && now >= c->hs_deadline) {
            MH_INFO(COMP, "handshake failed peer=%s reason=\"timeout\"", c->peer);
            conn_close(c);
            continue;
        }
        if (c->want_close && now >= c->close_deadline) {
            conn_close(c);
            continue;
        }
        for (struct stream *s = c->streams; s != NULL; s = s->next)
            if (s->deadline != 0 && !s->answered && now >= s->deadline)
                stream_expire(s);
        conn_pump(c);
    }
    /* Re-arm for the earliest remaining deadline. */
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->closing)
            continue;
        uint64_t d = !c->handshake_done ? c->hs_deadline : 0;
        if (c->want_close && (d == 0 || c->close_deadline < d))
            d = c->close_deadline;
        for (struct stream *s = c->streams; s != NULL; s = s->next)
            if (s->deadline != 0 && !s->answered && (d == 0 || s->deadline < d))
                d = s->deadline;
        if (d != 0 && (next == 0 || d < next))
            next = d;
    }
    if (srv->stage == DRAIN_NOTICE && (next == 0 || srv->goaway_at < next))
        next = srv->goaway_at;
    if (srv->stage == DRAIN_GOAWAY && (next == 0 || srv->grace_at < next))
        next = srv->grace_at;
    if (next != 0)
        timer_want(srv, next);
}

static void timer_want(struct mh_rpc_server *srv, uint64_t due)
{
    if (!srv->timer_open || srv->timer_closing)
        return;
    if (srv->timer_due != 0 && srv->timer_due <= due)
        return;
    uint64_t now = uv_now(srv->loop);
    srv->timer_due = due;
    (void)uv_timer_start(&srv->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- server lifecycle --------------------------------------------------- */

static void health_check(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    const struct mh_rpc_server *srv = data;
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)request;
    if (req->service != NULL && req->service[0] != 0) {
        mh_rpc_fail(call, MH_GRPC_NOT_FOUND, "unknown service");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    bool serving = srv->serving && (srv->admit == NULL || srv->admit(srv->audit_data) == NULL);
    resp.status = serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    mh_rpc_reply(call, &resp.base);
}

/* Check, Watch (streaming: UNIMPLEMENTED). */
static const mh_rpc_handler_fn health_handlers[] = {health_check, NULL};

static int build_ctx(const struct mh_rpc_config *cfg, SSL_CTX **out)
{
    SSL_CTX *ctx = NULL;
    MH_TRY(mh_tls_ctx_new(TLS_server_method(), cfg->cert_file, cfg->key_file, cfg->ca_file,
                          "server", COMP, &ctx));
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    *out = ctx;
    return 0;
}

static int add_routes(struct mh_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                      const mh_rpc_handler_fn *handlers, void *data)
{
    size_t n, total;
    MH_TRY(mh_size_add(srv->n_routes, svc->n_methods, &n));
    MH_TRY(mh_size_mul(n, sizeof *srv->routes, &total));
    for (unsigned i = 0; i < svc->n_methods; i++) {
        char path[512];
        int l = snprintf(path, sizeof path, "/%s/%s", svc->name, svc->methods[i].name);
        if (l < 0 || (size_t)l >= sizeof path)
            return MH_EINVAL;
        if (find_route(srv, (const uint8_t *)path, (size_t)l) != NULL)
            return MH_EEXIST;
    }
    struct route *r = realloc(srv->routes, total);
    if (r == NULL)
        return MH_ENOMEM;
    srv->routes = r;
    for (unsigned i = 0; i < svc->n_methods; i++) {
        struct route *rt = &srv->routes[srv->n_routes];
        size_t l = strlen(svc->name) + strlen(svc->methods[i].name) + 3;
        rt->path = malloc(l);
        if (rt->path == NULL)
            return MH_ENOMEM; /* earlier routes stay: they are complete */
        snprintf(rt->path, l, "/%s/%s", svc->name, svc->methods[i].name);
        rt->method = &svc->methods[i];
        rt->handler = handlers != NULL ? handlers[i] : NULL;
        rt->data = data;
        srv->n_routes++;
    }
    return 0;
}

int mh_rpc_server_new(uv_loop_t *loop, const struct mh_rpc_config *cfg, struct mh_rpc_server **out)
{
    int rv;
    if (cfg->max_message < 1024 || cfg->max_message > UINT32_MAX || cfg->host == NULL) {
        MH_ERROR(COMP, "invalid config: max_message must be 1 KiB..4 GiB and host set");
        return MH_ECONFIG;
    }
    struct mh_rpc_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return MH_ENOMEM;
    srv->loop = loop;
    srv->port = cfg->port;
    srv->max_message = cfg->max_message;
    srv->max_streams = cfg->max_streams != 0 ? cfg->max_streams : DEFAULT_STREAMS;
    srv->max_connections = cfg->max_connections != 0 ? cfg->max_connections : DEFAULT_CONNECTIONS;
    srv->serving = true;
    srv->mem.malloc = zmalloc;
    srv->mem.free = zfree;
    srv->mem.calloc = zcalloc;
    srv->mem.realloc = zrealloc;
    srv->host = strdup(cfg->host);
    if (srv->host == NULL) {
        rv = MH_ENOMEM;
        goto err_after_srv;
    }
    rv = build_ctx(cfg, &srv->ctx);
    if (rv < 0)
        goto err_after_srv;
    if (nghttp2_session_callbacks_new(&srv->cbs) != 0 || nghttp2_option_new(&srv->opt) != 0) {
        rv = MH_ENOMEM;
        goto err_after_srv;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(srv->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(srv->cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(srv->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(srv->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(srv->cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(srv->cbs, on_stream_close);
    /* Rapid reset (CVE-2023-44487) and CONTINUATION flood (CVE-2024-28182) limits. */
    nghttp2_option_set_stream_reset_rate_limit(srv->opt, 1000, 33);
    nghttp2_option_set_max_continuations(srv->opt, 8);
    nghttp2_option_set_max_settings(srv->opt, 32);
    rv = add_routes(srv, &grpc__health__v1__health__descriptor, health_handlers, srv);
    if (rv < 0)
        goto err_after_srv;
    *out = srv;
    return 0;
err_after_srv:
    mh_rpc_server_free(srv);
    return rv;
}

int mh_rpc_server_add_service(struct mh_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                              const mh_rpc_handler_fn *handlers, void *data)
{
    return add_routes(srv, svc, handlers, data);
}

void mh_rpc_server_set_serving(struct mh_rpc_server *srv, bool serving)
{
    srv->serving = serving;
}

void mh_rpc_server_set_audit(struct mh_rpc_server *srv, mh_rpc_audit_fn audit,
                             mh_rpc_admit_fn admit, void *data)
{
    srv->audit = audit;
    srv->admit = admit;
    srv->audit_data = data;
}

int mh_rpc_server_listen(struct mh_rpc_server *srv)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rv = uv_ip4_addr(srv->host, srv->port, (struct sockaddr_in *)&ss);
    if (rv != 0)
        rv = uv_ip6_addr(srv->host, srv->port, (struct sockaddr_in6 *)&ss);
    if (rv != 0)
        return rv;
    if (srv->started)
        return MH_EINVAL;
    MH_TRY(uv_timer_init(srv->loop, &srv->timer));
    srv->timer.data = srv;
    srv->timer_open = true;
    srv->started = true;
    if (uv_check_init(srv->loop, &srv->flush) == 0) {
        if (uv_idle_init(srv->loop, &srv->flush_idle) == 0) {
            srv->flush.data = srv;
            srv->flush_idle.data = srv;
            srv->flush_open = true;
        } else {
            uv_close((uv_handle_t *)&srv->flush, NULL); /* pumps stay immediate */
        }
    }
    rv = uv_tcp_init(srv->loop, &srv->listener);
    if (rv != 0)
        return rv; /* drain closes the timer */
    srv->listener.data = srv;
    srv->listener_open = true;
    rv = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (rv != 0)
        return rv;
    struct sockaddr_storage bound;
    int bl = (int)sizeof bound;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &bl) == 0)
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    if (strchr(srv->host, ':') != NULL)
        MH_INFO(COMP, "listening on [%s]:%u", srv->host, (unsigned)srv->port);
    else
        MH_INFO(COMP, "listening on %s:%u", srv->host, (unsigned)srv->port);
    return 0;
}

uint16_t mh_rpc_server_port(const struct mh_rpc_server *srv)
{
    return srv->port;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mh_rpc_server *srv = h->data;
    srv->timer_open = false;
    if (srv->done != NULL) {
        void (*done)(void *) = srv->done;
        srv->done = NULL;
        done(srv->done_arg);
    }
}

/* The flush handles close first; the timer's close callback then reports done. */
static void on_flush_closed(uv_handle_t *h)
{
    struct mh_rpc_server *srv = h->data;
    uv_close((uv_handle_t *)&srv->timer, on_timer_closed);
}

static void on_flush_check_closed(uv_handle_t *h)
{
    struct mh_rpc_server *srv = h->data;
    uv_close((uv_handle_t *)&srv->flush_idle, on_flush_closed);
}

static void drain_check(struct mh_rpc_server *srv)
{
    if (srv->stage == DRAIN_NONE || srv->listener_open || srv->conns != NULL || srv->timer_closing)
        return;
    srv->timer_closing = true;
    if (srv->flush_open) {
        srv->flush_open = false; /* no connection is left to pump */
        uv_close((uv_handle_t *)&srv->flush, on_flush_check_closed);
        return;
    }
    uv_close((uv_handle_t *)&srv->timer, on_timer_closed);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct mh_rpc_server *srv = h->data;
    srv->listener_open = false;
    drain_check(srv);
}

void mh_rpc_server_drain(struct mh_rpc_server *srv, uint64_t grace_ms, void (*done)(void *arg),
                         void *arg)
{
    if (srv->stage != DRAIN_NONE)
        return;
    srv->stage = DRAIN_NOTICE;
    if (!srv->started) {
        if (done != NULL)
            done(arg);
        return;
    }
    srv->done = done;
    srv->done_arg = arg;
    if (srv->listener_open)
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    uint64_t now = uv_now(srv->loop);
    srv->goaway_at = now + (grace_ms < FINAL_GOAWAY_MS ? grace_ms : FINAL_GOAWAY_MS);
    srv->grace_at = sat_add(now, grace_ms);
    MH_INFO(COMP, "draining connections=%zu grace_ms=%" PRIu64, srv->n_conns, grace_ms);
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->closing)
            continue;
        if (!c->handshake_done) {
            conn_close(c);
            continue;
        }
        (void)nghttp2_submit_shutdown_notice(c->h2);
        conn_pump(c);
    }
    timer_want(srv, srv->goaway_at);
    if (srv->listener_open) /* closing: drain_check runs from its callback */
        return;
    drain_check(srv);
}

void mh_rpc_server_free(struct mh_rpc_server *srv)
{
    if (srv == NULL)
        return;
    for (size_t i = 0; i < srv->n_routes; i++)
        free(srv->routes[i].path);
    free(srv->routes);
    if (srv->cbs != NULL)
        nghttp2_session_callbacks_del(srv->cbs);
    if (srv->opt != NULL)
        nghttp2_option_del(srv->opt);
    SSL_CTX_free(srv->ctx);
    free(srv->host);
    mh_wipe(srv->plain, sizeof srv->plain);
    free(srv);
}
