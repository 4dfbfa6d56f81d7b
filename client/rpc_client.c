#define _GNU_SOURCE
#include "client/rpc_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/crypto.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/secret.h"

#define DEFAULT_MAX_RESPONSE (4u * 1024u * 1024u)
#define GRPC_PREFIX          5u
/* Headers the server may send us; more is abuse (nghttp2 enforces it per block). */
#define MAX_HEADER_LIST 16384u
/* A grpc-message longer than this is cut: it is for people, not for bulk data. */
#define MAX_GRPC_MESSAGE 4096u

struct call_state {
    int32_t stream_id;
    bool closed;       /* on_stream_close ran */
    uint32_t rst_code; /* error code of on_stream_close */
    struct mh_client_resp_headers hdr;
    struct mh_buf body; /* reassembled DATA */
    size_t body_cap;    /* GRPC_PREFIX + max_response */
    bool too_big;       /* body over the cap: stream reset by us */
    const uint8_t *req; /* request bytes being sent (owned by the caller) */
    size_t req_len;
    size_t req_off;
};

struct mh_client {
    char host[256];
    char port[8];
    char authority[300];
    size_t max_response;
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    nghttp2_session *h2;
    bool goaway;           /* the server will take no new streams on this connection */
    bool peer_spoke;       /* an HTTP/2 frame arrived on this connection */
    bool has_cert;         /* we present a client certificate */
    struct call_state *cs; /* the call in flight, NULL between calls */
    char err[512];
};

/* ---- pure helpers ------------------------------------------------------ */

static const char *const STATUS_NAMES[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *mh_client_status_name(int status)
{
    if (status < 0 || (size_t)status >= sizeof STATUS_NAMES / sizeof STATUS_NAMES[0])
        return "UNKNOWN";
    return STATUS_NAMES[status];
}

int mh_client_split_endpoint(const char *endpoint, char *host, size_t host_cap, char *port,
                             size_t port_cap)
{
    if (endpoint == NULL || host_cap == 0 || port_cap == 0)
        return MH_EINVAL;
    const char *colon;
    const char *h;
    size_t hlen;
    if (endpoint[0] == '[') {
        const char *close = strchr(endpoint, ']');
        if (close == NULL || close[1] != ':')
            return MH_EINVAL;
        h = endpoint + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(endpoint, ':');
        if (colon == NULL || memchr(endpoint, ':', (size_t)(colon - endpoint)) != NULL)
            return MH_EINVAL; /* a bare IPv6 address needs brackets */
        h = endpoint;
        hlen = (size_t)(colon - endpoint);
    }
    if (hlen == 0 || hlen >= host_cap)
        return MH_EINVAL;
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '[' || ch == ']')
            return MH_EINVAL;
    }
    const char *p = colon + 1;
    size_t plen = strlen(p);
    if (plen == 0 || plen > 5 || plen >= port_cap)
        return MH_EINVAL;
    unsigned long v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9')
            return MH_EINVAL;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (v == 0 || v > 65535 || p[0] == '0')
        return MH_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = 0;
    memcpy(port, p, plen + 1);
    return 0;
}

int mh_client_percent_decode(const char *s, size_t len, struct mh_buf *out)
{
    MH_TRY(mh_buf_reserve(out, len));
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len) {
            int hi = OPENSSL_hexchar2int((unsigned char)s[i + 1]);
            int lo = OPENSSL_hexchar2int((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                MH_TRY(mh_buf_append_u8(out, (uint8_t)(hi << 4 | lo)));
                i += 2;
                continue;
            }
        }
        MH_TRY(mh_buf_append_u8(out, (uint8_t)s[i]));
    }
    return 0;
}

void mh_client_format_timeout(uint64_t ms, char out[16])
{
    /* grpc-timeout allows at most 8 digits: use the finest unit that fits. */
    if (ms == 0)
        ms = 1;
    if (ms <= 99999999u) {
        snprintf(out, 16, "%llum", (unsigned long long)ms);
        return;
    }
    uint64_t s = ms / 1000 + (ms % 1000 != 0); /* no overflow near UINT64_MAX */
    if (s <= 99999999u) {
        snprintf(out, 16, "%lluS", (unsigned long long)s);
        return;
    }
    uint64_t h = s / 3600 + (s % 3600 != 0);
    if (h > 99999999u)
        h = 99999999u;
    snprintf(out, 16, "%lluH", (unsigned long long)h);
}

/* ---- wiping allocator for nghttp2 (decrypted frames pass through it) ----- */

struct alloc_hdr {
    size_t len;
    size_t pad; /* keeps the payload 16-byte aligned */
};

static void *w_malloc(size_t size, void *ud)
{
    (void)ud;
    size_t total;
    if (mh_size_add(size, sizeof(struct alloc_hdr), &total) < 0)
        return NULL;
    struct alloc_hdr *h = malloc(total);
    if (h == NULL)
        return NULL;
    h->len = size;
    return h + 1;
}

static void w_free(void *p, void *ud)
{
    (void)ud;
    if (p == NULL)
        return;
    struct alloc_hdr *h = (struct alloc_hdr *)p - 1;
    mh_wipe(p, h->len);
    free(h);
}

static void *w_calloc(size_t n, size_t size, void *ud)
{
    size_t total;
    if (mh_size_mul(n, size, &total) < 0)
        return NULL;
    void *p = w_malloc(total, ud);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

static void *w_realloc(void *p, size_t size, void *ud)
{
    if (p == NULL)
        return w_malloc(size, ud);
    if (size == 0) {
        w_free(p, ud);
        return NULL;
    }
    void *n = w_malloc(size, ud);
    if (n == NULL)
        return NULL;
    struct alloc_hdr *h = (struct alloc_hdr *)p - 1;
    memcpy(n, p, h->len < size ? h->len : size);
    w_free(p, ud);
    return n;
}

static nghttp2_mem WIPING_MEM = {NULL, w_malloc, w_free, w_calloc, w_realloc};

/* Responses (decrypt, unwrap) may carry plaintext: decode them into wiping memory too. */
static void *pb_alloc(void *ud, size_t size)
{
    return w_malloc(size, ud);
}

static void pb_free(void *ud, void *p)
{
    w_free(p, ud);
}

static ProtobufCAllocator WIPING_PB = {pb_alloc, pb_free, NULL};

void mh_client_response_free(ProtobufCMessage *resp)
{
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, &WIPING_PB);
}

int mh_client_decode_body(const uint8_t *body, size_t len, const ProtobufCMessageDescriptor *desc,
                          ProtobufCMessage **out)
{
    struct mh_cursor cur = mh_cursor_of(body, len);
    uint8_t flag;
    uint32_t mlen;
    if (mh_cursor_read_u8(&cur, &flag) < 0 || mh_cursor_read_u32be(&cur, &mlen) < 0)
        return MH_EPROTO;
    /* Exactly one message: unary responses carry one, and trailing bytes mean framing
     * went wrong somewhere. Compression was never offered, so a set flag is a violation. */
    if (flag != 0 || mh_cursor_remaining(&cur) != mlen)
        return MH_EPROTO;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &WIPING_PB, mlen, body + GRPC_PREFIX);
    if (m == NULL)
        return MH_EPROTO;
    *out = m;
    return 0;
}

/* ---- errors ------------------------------------------------------------ */

static void set_err(struct mh_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_err(struct mh_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

void mh_client_tls_reason(char *out, size_t cap)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (last == 0) {
        snprintf(out, cap, "unknown TLS error");
        return;
    }
    const char *r = ERR_reason_error_string(last);
    if (r != NULL)
        snprintf(out, cap, "%s", r);
    else
        ERR_error_string_n(last, out, cap);
}

/* ---- time -------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Milliseconds left until |deadline| as a poll timeout; 0 when passed. */
static int remaining(uint64_t deadline)
{
    uint64_t now = now_ms();
    if (now >= deadline)
        return 0;
    uint64_t left = deadline - now;
    return left > 1000000u ? 1000000 : (int)left;
}

/* Waits for |events| on fd. 0 ready, MH_ETIMEDOUT, or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        int ms = remaining(deadline);
        if (ms == 0)
            return MH_ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n == 0)
            continue; /* re-check the clock */
        if (errno != EINTR)
            return -errno;
    }
}

/* ---- TLS shared with rpc_async ------------------------------------------- */

int mh_client_tls_ctx_new(const char *ca_file, const char *cert_file, const char *key_file,
                          SSL_CTX **out, char *errbuf, size_t errlen)
{
    char dummy[8];
    if (errbuf == NULL || errlen == 0) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    errbuf[0] = 0;
    *out = NULL;
    if ((cert_file == NULL) != (key_file == NULL)) {
        snprintf(errbuf, errlen, "a client certificate needs its key and the other way round");
        return MH_EINVAL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return MH_ENOMEM;
    int rv = MH_ECERT;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1)
        goto err_after_ctx;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = {2, 'h', '2'};
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn) != 0)
        goto err_after_ctx;
    char why[256];
    if (ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            mh_client_tls_reason(why, sizeof why);
            snprintf(errbuf, errlen, "cannot load CA file %s: %s", ca_file, why);
            goto err_after_ctx;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        mh_client_tls_reason(why, sizeof why);
        snprintf(errbuf, errlen, "cannot load the system CA store: %s", why);
        goto err_after_ctx;
    }
    if (cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            mh_client_tls_reason(why, sizeof why);
            snprintf(errbuf, errlen, "cannot load certificate %s: %s", cert_file, why);
            goto err_after_ctx;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
            mh_client_tls_reason(why, sizeof why);
            snprintf(errbuf, errlen, "cannot load key %s: %s", key_file, why);
            goto err_after_ctx;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ERR_clear_error();
            snprintf(errbuf, errlen, "key %s does not match certificate %s", key_file, cert_file);
            goto err_after_ctx;
        }
    }
    *out = ctx;
    return 0;

err_after_ctx:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rv;
}

int mh_client_tls_attach(SSL *ssl, int fd, const char *host)
{
    if (SSL_set_fd(ssl, fd) != 1)
        return MH_ENOMEM;
    /* An address literal is checked against IP SANs (and is no valid SNI name). */
    unsigned char ipbuf[16];
    if (inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
            return MH_ENOMEM;
        return 0;
    }
    if (SSL_set1_host(ssl, host) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1)
        return MH_ENOMEM;
    return 0;
}

/* ---- setup ------------------------------------------------------------- */

int mh_client_new(const struct mh_client_config *cfg, struct mh_client **out, char *errbuf,
                  size_t errlen)
{
    char dummy[8];
    if (errbuf == NULL || errlen == 0) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    errbuf[0] = 0;
    *out = NULL;
    struct mh_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MH_ENOMEM;
    c->fd = -1;
    c->max_response = cfg->max_response != 0 ? cfg->max_response : DEFAULT_MAX_RESPONSE;
    int rv = MH_EINVAL;
    if (cfg->endpoint == NULL || mh_client_split_endpoint(cfg->endpoint, c->host, sizeof c->host,
                                                          c->port, sizeof c->port) < 0) {
        snprintf(errbuf, errlen, "invalid endpoint '%s': want HOST:PORT",
                 cfg->endpoint != NULL ? cfg->endpoint : "");
        goto err_after_alloc;
    }
    if (strchr(c->host, ':') != NULL)
        snprintf(c->authority, sizeof c->authority, "[%s]:%s", c->host, c->port);
    else
        snprintf(c->authority, sizeof c->authority, "%s:%s", c->host, c->port);
    rv =
        mh_client_tls_ctx_new(cfg->ca_file, cfg->cert_file, cfg->key_file, &c->ctx, errbuf, errlen);
    if (rv < 0)
        goto err_after_alloc;
    c->has_cert = cfg->cert_file != NULL;
    *out = c;
    return 0;

err_after_alloc:
    free(c);
    return rv;
}

void mh_client_transport_close(nghttp2_session **h2, SSL **ssl, int *fd)
{
    if (*h2 != NULL) {
        nghttp2_session_del(*h2);
        *h2 = NULL;
    }
    if (*ssl != NULL) {
        SSL_free(*ssl);
        *ssl = NULL;
    }
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    ERR_clear_error();
}

static void disconnect(struct mh_client *c)
{
    mh_client_transport_close(&c->h2, &c->ssl, &c->fd);
    c->goaway = false;
    c->peer_spoke = false;
}

/* ---- socket and TLS I/O ------------------------------------------------- */

static int tcp_connect(struct mh_client *c, uint64_t deadline)
{
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0) {
        set_err(c, "cannot resolve %s: %s", c->host, gai_strerror(g));
        return -EHOSTUNREACH;
    }
    int rv = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            rv = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            c->fd = fd;
            rv = 0;
            break;
        }
        rv = -errno;
        if (errno == EINPROGRESS) {
            rv = wait_fd(fd, POLLOUT, deadline);
            if (rv == 0) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
                    soerr = errno;
                if (soerr == 0) {
                    c->fd = fd;
                    break;
                }
                rv = -soerr;
            }
        }
        close(fd);
        if (rv == MH_ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (rv == MH_ETIMEDOUT)
        set_err(c, "connect to %s: timed out", c->authority);
    else if (rv < 0)
        set_err(c, "connect to %s: %s", c->authority, strerror(-rv));
    return rv;
}

/* Drives one SSL call that reported |ssl_rv| <= 0: waits when OpenSSL wants I/O.
 * Returns 1 to retry, or a negative error with c->err set. */
static int ssl_wait(struct mh_client *c, int ssl_rv, uint64_t deadline, const char *what)
{
    int e = SSL_get_error(c->ssl, ssl_rv);
    int rv;
    char why[256];
    switch (e) {
    case SSL_ERROR_WANT_READ:
        rv = wait_fd(c->fd, POLLIN, deadline);
        break;
    case SSL_ERROR_WANT_WRITE:
        rv = wait_fd(c->fd, POLLOUT, deadline);
        break;
    case SSL_ERROR_ZERO_RETURN:
        set_err(c, "%s: connection closed by the server", what);
        return -ECONNRESET;
    case SSL_ERROR_SYSCALL:
        /* EOF or a socket error: either way the connection is gone. */
        rv = errno != 0 ? errno : ECONNRESET;
        ERR_clear_error();
        set_err(c, "%s: connection lost (%s)", what, strerror(rv));
        return -ECONNRESET;
    case SSL_ERROR_SSL:
    default: {
        long vr = SSL_get_verify_result(c->ssl);
        mh_client_tls_reason(why, sizeof why);
        if (vr != X509_V_OK) {
            set_err(c, "%s: server certificate refused: %s", what,
                    X509_verify_cert_error_string(vr));
            return MH_ECERT;
        }
        set_err(c, "%s: TLS failure: %s", what, why);
        return MH_ECRYPTO;
    }
    }
    if (rv == MH_ETIMEDOUT) {
        set_err(c, "%s: timed out", what);
        return MH_ETIMEDOUT;
    }
    if (rv < 0) {
        set_err(c, "%s: %s", what, strerror(-rv));
        return rv;
    }
    return 1;
}

static int tls_connect(struct mh_client *c, uint64_t deadline)
{
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || mh_client_tls_attach(c->ssl, c->fd, c->host) < 0) {
        set_err(c, "out of memory");
        return MH_ENOMEM;
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1)
            break;
        int w = ssl_wait(c, r, deadline, "TLS handshake");
        if (w < 0)
            return w;
    }
    const unsigned char *proto = NULL;
    unsigned int plen = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
        set_err(c, "TLS handshake: the server did not negotiate ALPN h2");
        return MH_EPROTO;
    }
    return 0;
}

static int ssl_write_all(struct mh_client *c, const uint8_t *p, size_t len, uint64_t deadline)
{
    while (len > 0) {
        size_t n = 0;
        ERR_clear_error();
        int r = SSL_write_ex(c->ssl, p, len, &n);
        if (r == 1) {
            p += n;
            len -= n;
            continue;
        }
        int w = ssl_wait(c, r, deadline, "send");
        if (w < 0)
            return w;
    }
    return 0;
}

/* Sends everything nghttp2 has queued. */
static int pump_send(struct mh_client *c, uint64_t deadline)
{
    for (;;) {
        const uint8_t *data = NULL;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            set_err(c, "HTTP/2: %s", nghttp2_strerror((int)n));
            return MH_EPROTO;
        }
        if (n == 0)
            return 0;
        MH_TRY(ssl_write_all(c, data, (size_t)n, deadline));
    }
}

/* Reads what arrived (waiting at most until |deadline|) and feeds it to nghttp2. */
static int pump_recv(struct mh_client *c, uint64_t deadline)
{
    uint8_t buf[16384];
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        int r = SSL_read_ex(c->ssl, buf, sizeof buf, &n);
        if (r == 1) {
            ssize_t m = nghttp2_session_mem_recv(c->h2, buf, n);
            mh_wipe(buf, n);
            if (m < 0) {
                set_err(c, "HTTP/2: %s", nghttp2_strerror((int)m));
                return MH_EPROTO;
            }
            return 0;
        }
        int w = ssl_wait(c, r, deadline, "receive");
        if (w < 0)
            return w;
    }
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static ssize_t read_request(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)stream_id;
    (void)src;
    struct mh_client *c = ud;
    struct call_state *cs = c->cs;
    if (cs == NULL) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t left = cs->req_len - cs->req_off;
    size_t n = left < length ? left : length;
    if (n > 0)
        memcpy(buf, cs->req + cs->req_off, n);
    cs->req_off += n;
    if (cs->req_off == cs->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    struct mh_client *c = ud;
    struct call_state *cs = c->cs;
    if (cs == NULL || frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != cs->stream_id)
        return 0;
    if (mh_client_take_header(&cs->hdr, name, namelen, value, valuelen) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                   size_t len, void *ud)
{
    (void)flags;
    struct mh_client *c = ud;
    struct call_state *cs = c->cs;
    if (cs == NULL || stream_id != cs->stream_id || cs->too_big)
        return 0;
    size_t total;
    if (mh_size_add(cs->body.len, len, &total) < 0 || total > cs->body_cap) {
        /* Refuse before growing: a hostile server must not make us buffer unboundedly. */
        cs->too_big = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
    }
    if (mh_buf_append(&cs->body, data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    (void)s;
    struct mh_client *c = ud;
    c->peer_spoke = true;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        c->goaway = true;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
    (void)s;
    struct mh_client *c = ud;
    struct call_state *cs = c->cs;
    if (cs != NULL && stream_id == cs->stream_id) {
        cs->closed = true;
        cs->rst_code = error_code;
    }
    return 0; /* never fail here (see tech-notes 3.2) */
}

int mh_client_h2_new(nghttp2_session **out, nghttp2_on_header_callback header_cb,
                     nghttp2_on_data_chunk_recv_callback data_cb,
                     nghttp2_on_frame_recv_callback frame_cb,
                     nghttp2_on_stream_close_callback close_cb, void *ud, nghttp2_mem *mem)
{
    *out = NULL;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return MH_ENOMEM;
    nghttp2_session_callbacks_set_on_header_callback(cb, header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, data_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, frame_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, close_cb);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return MH_ENOMEM;
    }
    nghttp2_option_set_max_send_header_block_length(opt, 65536);
    nghttp2_session *h2;
    int r = nghttp2_session_client_new3(&h2, cb, ud, opt, mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (r != 0)
        return MH_ENOMEM;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20},
    };
    if (nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) {
        nghttp2_session_del(h2);
        return MH_ENOMEM;
    }
    *out = h2;
    return 0;
}

static int ensure_connected(struct mh_client *c, uint64_t deadline)
{
    if (c->h2 != NULL && !c->goaway && nghttp2_session_want_read(c->h2))
        return 0;
    disconnect(c);
    int rv = tcp_connect(c, deadline);
    if (rv < 0)
        return rv;
    rv = tls_connect(c, deadline);
    if (rv == 0) {
        rv = mh_client_h2_new(&c->h2, on_header, on_data, on_frame_recv, on_stream_close, c,
                              &WIPING_MEM);
        if (rv < 0)
            set_err(c, "out of memory");
    }
    if (rv < 0)
        disconnect(c);
    return rv;
}

/* ---- the call ------------------------------------------------------------ */

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t l = strlen(lit);
    return len == l && memcmp(name, lit, l) == 0;
}

int mh_client_take_header(struct mh_client_resp_headers *h, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen)
{
    if (name_is(name, namelen, ":status")) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            v = v * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        h->http_status = v;
    } else if (name_is(name, namelen, "content-type")) {
        h->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                     (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (name_is(name, namelen, "grpc-status")) {
        int v = 0;
        bool ok = valuelen > 0 && valuelen <= 3;
        for (size_t i = 0; ok && i < valuelen; i++) {
            if (value[i] < '0' || value[i] > '9')
                ok = false;
            else
                v = v * 10 + (value[i] - '0');
        }
        h->grpc_status = ok ? v : MH_CLIENT_UNKNOWN;
    } else if (name_is(name, namelen, "grpc-message")) {
        mh_buf_truncate(&h->gmsg, 0);
        size_t n = valuelen < MAX_GRPC_MESSAGE ? valuelen : MAX_GRPC_MESSAGE;
        MH_TRY(mh_buf_append(&h->gmsg, value, n));
    }
    return 0;
}

/* gRPC status for an HTTP status without grpc-status (grpc doc/http-grpc-status-mapping.md). */
int mh_client_status_of_http(int http)
{
    switch (http) {
    case 400:
        return MH_CLIENT_INTERNAL;
    case 401:
        return MH_CLIENT_UNAUTHENTICATED;
    case 403:
        return MH_CLIENT_PERMISSION_DENIED;
    case 404:
        return MH_CLIENT_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return MH_CLIENT_UNAVAILABLE;
    default:
        return MH_CLIENT_UNKNOWN;
    }
}

int mh_client_status_of_rst(uint32_t code)
{
    switch (code) {
    case NGHTTP2_REFUSED_STREAM:
        return MH_CLIENT_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return MH_CLIENT_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return MH_CLIENT_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return MH_CLIENT_PERMISSION_DENIED;
    default:
        return MH_CLIENT_INTERNAL;
    }
}

static int set_message(char **out, const char *text, size_t len, bool percent_encoded)
{
    struct mh_buf b = {0};
    int rv =
        percent_encoded ? mh_client_percent_decode(text, len, &b) : mh_buf_append(&b, text, len);
    if (rv == 0)
        rv = mh_buf_append_u8(&b, 0);
    if (rv < 0) {
        mh_buf_free(&b);
        return rv;
    }
    size_t n;
    *out = (char *)mh_buf_steal(&b, &n);
    return 0;
}

/* Turns the finished stream into the call's outcome. */
static int finish(struct mh_client *c, struct call_state *cs,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  int *grpc_status, char **grpc_message)
{
    char detail[128];
    int status;
    const char *msg = NULL;
    bool from_wire = false;
    if (cs->too_big) {
        status = MH_CLIENT_RESOURCE_EXHAUSTED;
        snprintf(detail, sizeof detail, "response larger than %zu bytes", c->max_response);
        msg = detail;
    } else if (cs->hdr.grpc_status >= 0) {
        status = cs->hdr.grpc_status;
        from_wire = true;
    } else if (cs->hdr.http_status != 0 && cs->hdr.http_status != 200) {
        status = mh_client_status_of_http(cs->hdr.http_status);
        snprintf(detail, sizeof detail, "HTTP status %d", cs->hdr.http_status);
        msg = detail;
    } else if (cs->rst_code != NGHTTP2_NO_ERROR) {
        status = mh_client_status_of_rst(cs->rst_code);
        snprintf(detail, sizeof detail, "stream reset by the server (%s)",
                 nghttp2_http2_strerror(cs->rst_code));
        msg = detail;
    } else {
        status = MH_CLIENT_INTERNAL;
        msg = "server sent no grpc-status";
    }
    if (status == MH_CLIENT_OK) {
        /* A response we cannot use is the server's fault: INTERNAL, as gRPC reports it. */
        ProtobufCMessage *m = NULL;
        if (!cs->hdr.grpc_ct)
            msg = "response content-type is not application/grpc";
        else if (mh_client_decode_body(cs->body.data, cs->body.len, resp_desc, &m) < 0)
            msg = "malformed response message";
        if (m == NULL) {
            *grpc_status = MH_CLIENT_INTERNAL;
            return set_message(grpc_message, msg, strlen(msg), false);
        }
        *resp = m;
        *grpc_status = 0;
        return 0;
    }
    *grpc_status = status;
    if (from_wire)
        return set_message(grpc_message, (const char *)cs->hdr.gmsg.data, cs->hdr.gmsg.len, true);
    return set_message(grpc_message, msg, strlen(msg), false);
}

int mh_client_call(struct mh_client *c, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, uint64_t timeout_ms,
                   ProtobufCMessage **resp, int *grpc_status, char **grpc_message)
{
    *resp = NULL;
    *grpc_message = NULL;
    *grpc_status = MH_CLIENT_UNKNOWN;
    c->err[0] = 0;
    if (timeout_ms == 0)
        timeout_ms = 1;
    uint64_t deadline = now_ms() + timeout_ms;

    /* Pack first: nothing goes on the wire for a request we cannot encode. */
    struct mh_buf reqbuf = {0};
    size_t plen = protobuf_c_message_get_packed_size(req);
    size_t total;
    uint8_t *p;
    int rv = mh_size_add(plen, GRPC_PREFIX, &total);
    if (rv == 0 && plen > UINT32_MAX)
        rv = MH_ETOOBIG;
    if (rv == 0)
        rv = mh_buf_extend(&reqbuf, total, &p);
    if (rv < 0) {
        set_err(c, "cannot encode the request: %s", mh_strerror(rv));
        return rv;
    }
    p[0] = 0;
    p[1] = (uint8_t)(plen >> 24);
    p[2] = (uint8_t)(plen >> 16);
    p[3] = (uint8_t)(plen >> 8);
    p[4] = (uint8_t)plen;
    protobuf_c_message_pack(req, p + GRPC_PREFIX);

    struct call_state cs = {0};
    cs.hdr.grpc_status = -1;
    cs.req = reqbuf.data;
    cs.req_len = reqbuf.len;
    cs.body_cap = c->max_response + GRPC_PREFIX;

    rv = ensure_connected(c, deadline);
    if (rv < 0)
        goto out;

    char tmo[16];
    mh_client_format_timeout(timeout_ms, tmo);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),   NV(":scheme", "https"),
        NV(":path", path),       NV(":authority", c->authority),
        NV("te", "trailers"),    NV("content-type", "application/grpc"),
        NV("grpc-timeout", tmo), NV("user-agent", "mhsm-cli/0.1"),
    };
#undef NV
    nghttp2_data_provider prd = {.source = {.ptr = NULL}, .read_callback = read_request};
    c->cs = &cs;
    int32_t sid =
        nghttp2_submit_request(c->h2, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &prd, NULL);
    if (sid < 0) {
        set_err(c, "HTTP/2: %s", nghttp2_strerror(sid));
        rv = sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -ECONNRESET : MH_EPROTO;
        goto out_disconnect;
    }
    cs.stream_id = sid;
    while (!cs.closed) {
        rv = pump_send(c, deadline);
        if (rv < 0)
            break;
        if (cs.closed)
            break;
        if (!nghttp2_session_want_read(c->h2)) {
            set_err(c, "the server closed the connection");
            rv = -ECONNRESET;
            break;
        }
        rv = pump_recv(c, deadline);
        if (rv < 0)
            break;
    }
    if (rv == MH_ETIMEDOUT) {
        /* Our deadline passed first. Closing the connection cancels the stream (a TLS
         * write may be half done, so no RST_STREAM on it); report it like gRPC does. */
        c->cs = NULL;
        disconnect(c);
        *grpc_status = MH_CLIENT_DEADLINE_EXCEEDED;
        rv = set_message(grpc_message, "deadline exceeded", 17, false);
        goto out;
    }
    if (rv < 0)
        goto out_disconnect;
    c->cs = NULL;
    rv = finish(c, &cs, resp_desc, resp, grpc_status, grpc_message);
    /* Let the server see our window updates / RST without waiting on it. */
    if (rv == 0 && c->h2 != NULL && pump_send(c, now_ms() + 100) < 0)
        disconnect(c);
    goto out;

out_disconnect:
    c->cs = NULL;
    if (!c->peer_spoke && c->ssl != NULL) {
        /* TLS 1.3 ends the client's handshake before the server judges its certificate:
         * a refusal shows up as a lost connection on the first exchange. Say so. */
        size_t l = strlen(c->err);
        snprintf(c->err + l, sizeof c->err - l, "%s",
                 c->has_cert ? " (the server dropped the connection before its first HTTP/2 "
                               "frame: it may refuse our client certificate)"
                             : " (the server dropped the connection before its first HTTP/2 "
                               "frame: it may require a client certificate: --cert, --key)");
    }
    disconnect(c);
out:
    c->cs = NULL;
    mh_buf_free(&cs.hdr.gmsg);
    mh_buf_free(&cs.body);
    mh_buf_free(&reqbuf);
    return rv;
}

const char *mh_client_errmsg(const struct mh_client *c)
{
    return c->err;
}

void mh_client_free(struct mh_client *c)
{
    if (c == NULL)
        return;
    if (c->h2 != NULL && c->ssl != NULL) {
        uint64_t deadline = now_ms() + 200;
        if (nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR) == 0 &&
            pump_send(c, deadline) == 0)
            (void)SSL_shutdown(c->ssl);
    }
    disconnect(c);
    SSL_CTX_free(c->ctx);
    free(c);
}
