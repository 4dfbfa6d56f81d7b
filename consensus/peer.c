/* peer: the node-to-node mutual-TLS channel (raft socketpair proxy and framed
 * requests). See peer.h for the wire and the contracts. */
#include "consensus/peer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/secret.h"

#define COMP              "peer"
#define TICK_MS           50u
#define HIGH_WATER        (1u << 20) /* pause the other side's reads past this */
#define DEFAULT_MAX_FRAME (8u << 20)
#define DEFAULT_CALL_MS   10000u
#define DIAL_MS           MH_PEER_HELLO_MS /* connect + handshake of our own dials */
#define FLUSH_MS          1000u            /* last bytes (alert, tail) before close */
#define HELLO_LEN         16u
#define FRAME_HDR         12u
#define KIND_RAFT         1u
#define KIND_REQ          2u
#define ADDR_MAX          64u
#define KEEPALIVE_S       5
#define KEEPALIVE_PROBES  3
#define USER_TIMEOUT_MS   15000u

enum cstate { CS_CONNECTING, CS_HANDSHAKE, CS_HELLO, CS_OPEN };

struct mh_peer;
struct outp;

struct conn {
    struct mh_peer *p;
    struct conn *prev, *next;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_pipe_t pipe; /* our end of the raft socketpair */
    int handles;    /* open uv handles; the conn is freed when the last closes */
    bool pipe_open, closing, want_close, logged, dialer, tcp_reading, pipe_reading;
    enum cstate st;
    uint32_t kind;
    uint64_t want_id; /* dialer: the node we meant to reach */
    uint64_t peer_id; /* verified from the certificate */
    uint64_t deadline;
    SSL *ssl;
    BIO *rbio, *wbio;
    EVP_PKEY *key; /* the peer certificate's public key (requests) */
    char addr[ADDR_MAX];
    struct mh_buf in; /* plaintext not consumed yet: hello, partial frames */
    size_t in_off;
    size_t tcp_pending, pipe_pending;
    struct raft_uv_connect *rreq; /* pending raft connect */
    raft_uv_connect_cb rcb;
    struct outp *op; /* dialer of a request connection */
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    bool to_pipe;
    size_t len;
    uint8_t data[];
};

/* What mh_peer_call keeps in its private_ area. */
struct cpriv {
    struct mh_peer_call *next;
    struct outp *op;
    struct conn *c;
    uint8_t *frame; /* until written */
    size_t frame_len;
    uint64_t seq;
    uint64_t deadline;
    bool sent;
};
_Static_assert(sizeof(struct cpriv) <= sizeof(((struct mh_peer_call *)0)->private_),
               "mh_peer_call private_ too small");

struct outp {
    struct outp *next;
    uint64_t id;
    char address[ADDR_MAX];
    struct conn *c;
    struct mh_peer_call *calls; /* in order of submission */
    uint64_t next_seq;
};

struct mh_peer_req {
    struct mh_peer *p;
    struct conn *c; /* NULL once the connection went away */
    struct mh_peer_req *prev, *next;
    uint64_t seq;
    EVP_PKEY *key;
};

struct mh_peer {
    uv_loop_t *loop;
    uint64_t id;
    size_t max_frame;
    SSL_CTX *ctx;
    uv_tcp_t listener;
    uv_timer_t timer;
    int handles;
    struct conn *conns;
    struct outp *outs;
    struct mh_peer_req *reqs;
    mh_peer_handler handler;
    void *harg;
    struct raft_uv_transport *rt;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb rclose_cb;
    bool raft_closing;
    unsigned raft_dialing;
    struct {
        uint64_t id, last;
    } contact[MH_PEER_MAX_PEERS];
    struct {
        uint64_t id;
        char addr[ADDR_MAX];
    } addrs[MH_PEER_MAX_PEERS];
    char self_addr[ADDR_MAX]; /* our raft address, sent after a raft hello */
    bool closing, done_called;
    void (*done)(void *arg);
    void *done_arg;
    uint8_t plain[16384];
};

static void conn_close(struct conn *c);
static void conn_update(struct conn *c);
static void kick(struct mh_peer *p);

/* ---- small helpers ------------------------------------------------------ */

static struct cpriv *cp(struct mh_peer_call *c)
{
    return (struct cpriv *)(void *)c->private_;
}

static void put32(uint8_t *b, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

static void put64(uint8_t *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | b[i];
    return v;
}

/* "a.b.c.d:port" or "[v6]:port", numeric only. */
static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char host[ADDR_MAX];
    const char *colon, *h = s;
    size_t hl;
    if (s == NULL || *s == '\0')
        return MH_EINVAL;
    if (*s == '[') {
        const char *e = strchr(s, ']');
        if (e == NULL || e[1] != ':')
            return MH_EINVAL;
        h = s + 1;
        hl = (size_t)(e - h);
        colon = e + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return MH_EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= sizeof host)
        return MH_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    const char *ps = colon + 1;
    if (*ps == '\0' || strlen(ps) > 5)
        return MH_EINVAL;
    unsigned long port = 0;
    for (const char *q = ps; *q != '\0'; q++) {
        if (*q < '0' || *q > '9')
            return MH_EINVAL;
        port = port * 10 + (unsigned long)(*q - '0');
    }
    if (port == 0 || port > 65535)
        return MH_EINVAL;
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return MH_EINVAL;
}

static void stamp(struct mh_peer *p, uint64_t id)
{
    size_t free_slot = MH_PEER_MAX_PEERS;
    for (size_t i = 0; i < MH_PEER_MAX_PEERS; i++) {
        if (p->contact[i].id == id) {
            p->contact[i].last = uv_now(p->loop);
            return;
        }
        if (p->contact[i].id == 0 && free_slot == MH_PEER_MAX_PEERS)
            free_slot = i;
    }
    if (free_slot < MH_PEER_MAX_PEERS) {
        p->contact[free_slot].id = id;
        p->contact[free_slot].last = uv_now(p->loop);
    }
}

/* raft's accept_cb must name the peer's raft address: raft sends its replies
 * there and asserts one address per id. Prefer what raft itself dialed (its
 * configuration), else what the peer's raft hello says. */
static void learn_addr(struct mh_peer *p, uint64_t id, const char *addr)
{
    if (addr == NULL || strlen(addr) >= ADDR_MAX)
        return;
    size_t slot = MH_PEER_MAX_PEERS;
    for (size_t i = 0; i < MH_PEER_MAX_PEERS; i++) {
        if (p->addrs[i].id == id) {
            slot = i;
            break;
        }
        if (p->addrs[i].id == 0 && slot == MH_PEER_MAX_PEERS)
            slot = i;
    }
    if (slot == MH_PEER_MAX_PEERS)
        return;
    p->addrs[slot].id = id;
    snprintf(p->addrs[slot].addr, ADDR_MAX, "%s", addr);
}

static const char *known_addr(struct mh_peer *p, uint64_t id, const char *fallback)
{
    for (size_t i = 0; i < MH_PEER_MAX_PEERS; i++)
        if (p->addrs[i].id == id)
            return p->addrs[i].addr;
    return fallback;
}

/* ---- identity ----------------------------------------------------------- */

int mh_peer_cert_id(X509 *cert, uint64_t *id)
{
    if (cert == NULL || id == NULL)
        return MH_EINVAL;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    const size_t plen = strlen(MH_PEER_URI_PREFIX);
    int found = 0;
    uint64_t v = 0;
    bool ok = true;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        const unsigned char *s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        if (len < 0 || (size_t)len < plen || memcmp(s, MH_PEER_URI_PREFIX, plen) != 0)
            continue;
        found++;
        size_t n = (size_t)len - plen;
        const unsigned char *d = s + plen;
        /* 1 .. 2^63, decimal, no sign, no leading zero */
        if (n == 0 || n > 19 || d[0] == '0') {
            ok = false;
            continue;
        }
        uint64_t x = 0;
        for (size_t k = 0; k < n; k++) {
            if (d[k] < '0' || d[k] > '9') {
                ok = false;
                break;
            }
            x = x * 10 + (uint64_t)(d[k] - '0'); /* 19 digits fit in u64 */
        }
        if (x == 0 || x > ((uint64_t)1 << 63))
            ok = false;
        v = x;
    }
    GENERAL_NAMES_free(names);
    if (found != 1 || !ok)
        return MH_ECERT;
    *id = v;
    return 0;
}

/* ---- connection lifetime -------------------------------------------------- */

static void refuse(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail_calls(struct mh_peer *p, struct outp *op, struct conn *c)
{
    /* Detach first: a callback may submit new calls or close the peer. */
    struct mh_peer_call *failed = NULL, **tail = &failed;
    struct mh_peer_call **pp = &op->calls;
    while (*pp != NULL) {
        struct mh_peer_call *k = *pp;
        if (cp(k)->c == c) {
            *pp = cp(k)->next;
            cp(k)->next = NULL;
            *tail = k;
            tail = &cp(k)->next;
        } else {
            pp = &cp(k)->next;
        }
    }
    (void)p;
    while (failed != NULL) {
        struct mh_peer_call *k = failed;
        failed = cp(k)->next;
        free(cp(k)->frame);
        cp(k)->frame = NULL;
        k->cb(k, MH_EUNAVAILABLE, NULL, 0);
    }
}

static void raft_close_check(struct mh_peer *p)
{
    if (p->raft_closing && p->raft_dialing == 0 && p->rclose_cb != NULL) {
        raft_uv_transport_close_cb cb = p->rclose_cb;
        p->rclose_cb = NULL;
        cb(p->rt);
    }
}

static void peer_close_check(struct mh_peer *p)
{
    if (!p->closing || p->done_called || p->handles > 0 || p->conns != NULL)
        return;
    raft_close_check(p);
    p->done_called = true;
    if (p->done != NULL)
        p->done(p->done_arg);
}

static void conn_free(struct conn *c)
{
    struct mh_peer *p = c->p;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    for (struct mh_peer_req *r = p->reqs; r != NULL; r = r->next)
        if (r->c == c)
            r->c = NULL;
    EVP_PKEY_free(c->key);
    mh_buf_free(&c->in);
    struct raft_uv_connect *rreq = c->rreq;
    raft_uv_connect_cb rcb = c->rcb;
    struct outp *op = c->op;
    free(c);
    if (rreq != NULL) {
        /* raft asserts CANCELED only once it is closing, NOCONNECTION otherwise. */
        p->raft_dialing--;
        rcb(rreq, NULL, p->raft_closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        raft_close_check(p);
    }
    if (op != NULL) {
        if (op->c == c)
            op->c = NULL;
        fail_calls(p, op, c);
    }
    peer_close_check(p);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles == 0)
        conn_free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->ssl != NULL)
        SSL_free(c->ssl); /* frees both BIOs */
    c->ssl = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    if (c->pipe_open)
        uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;
    if (w->to_pipe)
        c->pipe_pending -= w->len;
    else
        c->tcp_pending -= w->len;
    mh_wipe(w->data, w->len);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        MH_DEBUG(COMP, "msg=\"write failed\" peer=%s err=%s", c->addr, uv_err_name(status));
        conn_close(c);
        return;
    }
    conn_update(c);
}

static int stream_write(struct conn *c, bool to_pipe, const void *data, size_t len)
{
    struct wreq *w = malloc(sizeof *w + len);
    if (w == NULL)
        return MH_ENOMEM;
    memcpy(w->data, data, len);
    w->c = c;
    w->to_pipe = to_pipe;
    w->len = len;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
    uv_stream_t *s = to_pipe ? (uv_stream_t *)&c->pipe : (uv_stream_t *)&c->tcp;
    int rv = uv_write(&w->req, s, &b, 1, on_write);
    if (rv < 0) {
        free(w);
        return rv;
    }
    if (to_pipe)
        c->pipe_pending += len;
    else
        c->tcp_pending += len;
    return 0;
}

/* Moves the ciphertext OpenSSL produced to the socket. */
static int flush_wbio(struct conn *c)
{
    if (c->ssl == NULL)
        return 0;
    while (BIO_ctrl_pending(c->wbio) > 0) {
        size_t pending = BIO_ctrl_pending(c->wbio);
        if (pending > 65536)
            pending = 65536;
        struct wreq *w = malloc(sizeof *w + pending);
        if (w == NULL)
            return MH_ENOMEM;
        int n = BIO_read(c->wbio, w->data, (int)pending);
        if (n <= 0) {
            free(w);
            return MH_ECRYPTO;
        }
        w->c = c;
        w->to_pipe = false;
        w->len = (size_t)n;
        uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
        int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (rv < 0) {
            free(w);
            return rv;
        }
        c->tcp_pending += (size_t)n;
    }
    if (c->tcp_pending > MH_PEER_MAX_BUFFER)
        return MH_ELIMIT;
    return 0;
}

/* Encrypts |len| plaintext bytes and queues them; closes the connection on failure. */
static int tls_send(struct conn *c, const void *data, size_t len)
{
    if (c->closing || c->want_close || c->ssl == NULL)
        return MH_EUNAVAILABLE;
    const uint8_t *d = data;
    while (len > 0) {
        int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        ERR_clear_error();
        int n = SSL_write(c->ssl, d, chunk);
        if (n <= 0) {
            ERR_clear_error();
            conn_close(c);
            return MH_ECRYPTO;
        }
        d += n;
        len -= (size_t)n;
    }
    int rv = flush_wbio(c);
    if (rv < 0) {
        if (rv == MH_ELIMIT)
            refuse(c, "send buffer over %u bytes", MH_PEER_MAX_BUFFER);
        conn_close(c);
        return rv;
    }
    return 0;
}

/* Closes once the queued ciphertext (an alert, the last bytes) is written. */
static void conn_finish(struct conn *c)
{
    if (c->closing)
        return;
    (void)flush_wbio(c);
    c->want_close = true;
    c->deadline = uv_now(c->p->loop) + FLUSH_MS;
    conn_update(c);
}

static void refuse(struct conn *c, const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (!c->logged) {
        c->logged = true;
        if (c->dialer)
            MH_WARN(COMP, "msg=\"refused\" peer=%s id=%llu reason=\"%s\"", c->addr,
                    (unsigned long long)c->want_id, reason);
        else
            MH_WARN(COMP, "msg=\"refused\" peer=%s reason=\"%s\"", c->addr, reason);
    }
    conn_finish(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = malloc(65536);
    buf->len = buf->base != NULL ? 65536 : 0;
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Reading on each side follows the other side's backlog. */
static void conn_update(struct conn *c)
{
    if (c->closing)
        return;
    if (c->want_close && c->tcp_pending == 0) {
        conn_close(c);
        return;
    }
    bool tcp_on = !c->want_close && c->st != CS_CONNECTING && c->pipe_pending < HIGH_WATER &&
                  c->tcp_pending < MH_PEER_MAX_BUFFER;
    if (tcp_on != c->tcp_reading) {
        if (tcp_on)
            tcp_on = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read) == 0;
        else
            (void)uv_read_stop((uv_stream_t *)&c->tcp);
        c->tcp_reading = tcp_on;
    }
    if (c->pipe_open) {
        bool pipe_on = !c->want_close && c->tcp_pending < HIGH_WATER;
        if (pipe_on != c->pipe_reading) {
            if (pipe_on)
                pipe_on = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_pipe_read) == 0;
            else
                (void)uv_read_stop((uv_stream_t *)&c->pipe);
            c->pipe_reading = pipe_on;
        }
    }
}

static struct conn *conn_new(struct mh_peer *p, bool dialer)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    if (uv_tcp_init(p->loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->p = p;
    c->dialer = dialer;
    c->tcp.data = c;
    c->handles = 1;
    c->next = p->conns;
    if (p->conns != NULL)
        p->conns->prev = c;
    p->conns = c;
    return c;
}

/* A peer that vanished without a reset (power loss, partition) must not hold a
 * connection forever: probe idle ones, and give up on unacknowledged data. */
static void tune_tcp(struct conn *c)
{
    (void)uv_tcp_nodelay(&c->tcp, 1);
    (void)uv_tcp_keepalive(&c->tcp, 1, KEEPALIVE_S);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        unsigned int ms = USER_TIMEOUT_MS;
        int n = KEEPALIVE_PROBES;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &n, sizeof n);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &n, sizeof n);
    }
}

static int conn_tls(struct conn *c)
{
    c->ssl = SSL_new(c->p->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        c->ssl = NULL;
        return MH_ENOMEM;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    if (c->dialer)
        SSL_set_connect_state(c->ssl);
    else
        SSL_set_accept_state(c->ssl);
    c->st = CS_HANDSHAKE;
    return 0;
}

/* ---- raft socketpair ---------------------------------------------------- */

static void free_raft_handle(uv_handle_t *h)
{
    raft_free(h);
}

/* Makes the socketpair: our end is pumped, the other becomes raft's stream. */
static int make_pair(struct conn *c, uv_stream_t **raft_stream)
{
    uv_os_sock_t fds[2];
    int rv = uv_socketpair(SOCK_STREAM, 0, fds, 0, 0);
    if (rv != 0)
        return rv;
    uv_pipe_t *rp = raft_malloc(sizeof *rp);
    if (rp == NULL) {
        close(fds[0]);
        close(fds[1]);
        return MH_ENOMEM;
    }
    rv = uv_pipe_init(c->p->loop, rp, 0);
    if (rv != 0) {
        raft_free(rp);
        close(fds[0]);
        close(fds[1]);
        return rv;
    }
    rv = uv_pipe_open(rp, fds[0]);
    if (rv != 0) {
        close(fds[0]);
        close(fds[1]);
        uv_close((uv_handle_t *)rp, free_raft_handle);
        return rv;
    }
    rv = uv_pipe_init(c->p->loop, &c->pipe, 0);
    if (rv != 0) {
        close(fds[1]);
        uv_close((uv_handle_t *)rp, free_raft_handle);
        return rv;
    }
    c->pipe.data = c;
    c->pipe_open = true;
    c->handles++;
    rv = uv_pipe_open(&c->pipe, fds[1]);
    if (rv != 0) {
        close(fds[1]);
        uv_close((uv_handle_t *)rp, free_raft_handle);
        return rv;
    }
    *raft_stream = (uv_stream_t *)rp;
    return 0;
}

static void on_pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread < 0) {
        free(buf->base);
        /* raft closed its end: deliver what it wrote, then close. */
        conn_finish(c);
        return;
    }
    if (nread > 0 && !c->closing)
        (void)tls_send(c, buf->base, (size_t)nread);
    if (buf->base != NULL)
        mh_wipe(buf->base, (size_t)nread);
    free(buf->base);
    conn_update(c);
}

static void raft_plain(struct conn *c, const uint8_t *d, size_t n)
{
    if (n == 0)
        return;
    if (stream_write(c, true, d, n) < 0) {
        conn_close(c);
        return;
    }
    if (c->pipe_pending > MH_PEER_MAX_BUFFER)
        refuse(c, "raft buffer over %u bytes", MH_PEER_MAX_BUFFER);
}

/* ---- requests ----------------------------------------------------------- */

static int frame_build(uint64_t seq, const uint8_t *msg, size_t len, uint8_t **out, size_t *olen)
{
    size_t total;
    if (len > UINT32_MAX || mh_size_add(len, FRAME_HDR, &total) < 0)
        return MH_ETOOBIG;
    uint8_t *f = malloc(total);
    if (f == NULL)
        return MH_ENOMEM;
    put32(f, (uint32_t)len);
    put64(f + 4, seq);
    if (len > 0)
        memcpy(f + FRAME_HDR, msg, len);
    *out = f;
    *olen = total;
    return 0;
}

static void send_queued(struct outp *op)
{
    struct conn *c = op->c;
    for (struct mh_peer_call *k = op->calls; k != NULL && c != NULL; k = cp(k)->next) {
        if (cp(k)->sent || cp(k)->c != c)
            continue;
        cp(k)->sent = true;
        int rv = tls_send(c, cp(k)->frame, cp(k)->frame_len);
        mh_wipe(cp(k)->frame, cp(k)->frame_len);
        free(cp(k)->frame);
        cp(k)->frame = NULL;
        if (rv < 0)
            return; /* the connection is closing; its calls fail when it is freed */
        c = op->c;
    }
}

static void on_response(struct conn *c, uint64_t seq, const uint8_t *msg, size_t len)
{
    struct outp *op = c->op;
    if (op == NULL)
        return;
    for (struct mh_peer_call **pp = &op->calls; *pp != NULL; pp = &cp(*pp)->next) {
        struct mh_peer_call *k = *pp;
        if (cp(k)->seq != seq || cp(k)->c != c)
            continue;
        *pp = cp(k)->next;
        cp(k)->next = NULL;
        k->cb(k, 0, msg, len);
        return;
    }
    /* timed out meanwhile: dropped */
}

static void on_request(struct conn *c, uint64_t seq, const uint8_t *msg, size_t len)
{
    struct mh_peer *p = c->p;
    if (p->handler == NULL) {
        MH_DEBUG(COMP, "msg=\"request dropped: no handler\" peer=%s", c->addr);
        return;
    }
    struct mh_peer_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return; /* the caller times out */
    r->p = p;
    r->c = c;
    r->seq = seq;
    if (c->key != NULL && EVP_PKEY_up_ref(c->key) == 1)
        r->key = c->key;
    r->next = p->reqs;
    if (p->reqs != NULL)
        p->reqs->prev = r;
    p->reqs = r;
    p->handler(p->harg, r, c->peer_id, msg, len);
}

static void req_plain(struct conn *c, const uint8_t *d, size_t n)
{
    if (mh_buf_append(&c->in, d, n) < 0) {
        conn_close(c);
        return;
    }
    while (!c->closing && !c->want_close) {
        size_t avail = c->in.len - c->in_off;
        const uint8_t *f = c->in.data + c->in_off;
        if (avail < FRAME_HDR)
            break;
        uint64_t len = get_be(f, 4);
        if (len > c->p->max_frame) {
            refuse(c, "frame of %llu bytes over the limit of %zu", (unsigned long long)len,
                   c->p->max_frame);
            return;
        }
        if (avail - FRAME_HDR < len)
            break;
        uint64_t seq = get_be(f + 4, 8);
        c->in_off += FRAME_HDR + (size_t)len;
        if (c->dialer)
            on_response(c, seq, f + FRAME_HDR, (size_t)len);
        else
            on_request(c, seq, f + FRAME_HDR, (size_t)len);
    }
    if (c->closing)
        return;
    if (c->in_off == c->in.len) {
        mh_buf_truncate(&c->in, 0);
        c->in_off = 0;
    } else if (c->in_off > 65536) {
        size_t rest = c->in.len - c->in_off;
        memmove(c->in.data, c->in.data + c->in_off, rest);
        mh_buf_truncate(&c->in, rest);
        c->in_off = 0;
    }
}

/* ---- handshake, hello ----------------------------------------------------- */

static void tls_reason(struct conn *c, char *out, size_t cap)
{
    long vr = c->ssl != NULL ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    unsigned long e = ERR_peek_error();
    if (vr != X509_V_OK)
        snprintf(out, cap, "TLS: %s", X509_verify_cert_error_string(vr));
    else if (e != 0 && ERR_reason_error_string(e) != NULL)
        snprintf(out, cap, "TLS: %s", ERR_reason_error_string(e));
    else
        snprintf(out, cap, "TLS handshake failed");
    ERR_clear_error();
}

static void dial_open(struct conn *c)
{
    struct mh_peer *p = c->p;
    if (c->kind == KIND_RAFT) {
        uv_stream_t *rs = NULL;
        int rv = make_pair(c, &rs);
        if (rv < 0) {
            MH_WARN(COMP, "msg=\"socketpair failed\" err=%s", mh_errname(rv));
            conn_close(c);
            return;
        }
        struct raft_uv_connect *rreq = c->rreq;
        raft_uv_connect_cb rcb = c->rcb;
        c->rreq = NULL;
        p->raft_dialing--;
        rcb(rreq, rs, 0);
        conn_update(c);
        return;
    }
    if (c->op != NULL && c->op->c == c)
        send_queued(c->op);
}

static void hello_check(struct conn *c)
{
    struct mh_peer *p = c->p;
    if (c->in.len < HELLO_LEN)
        return;
    const uint8_t *h = c->in.data;
    if (memcmp(h, "MHP1", 4) != 0) {
        refuse(c, "bad hello magic");
        return;
    }
    uint64_t kind = get_be(h + 4, 4);
    uint64_t claimed = get_be(h + 8, 8);
    if (claimed != c->peer_id) {
        refuse(c, "certificate names node %llu, hello claims %llu", (unsigned long long)c->peer_id,
               (unsigned long long)claimed);
        return;
    }
    if (claimed == p->id) {
        refuse(c, "hello claims this node's own id %llu", (unsigned long long)claimed);
        return;
    }
    if (kind != KIND_RAFT && kind != KIND_REQ) {
        refuse(c, "unknown hello kind %llu", (unsigned long long)kind);
        return;
    }
    if (kind == KIND_RAFT && p->accept_cb == NULL) {
        /* Not an identity problem (raft starts later or is closing): no warning. */
        MH_DEBUG(COMP, "msg=\"raft not listening\" peer=%s id=%llu", c->addr,
                 (unsigned long long)c->peer_id);
        c->logged = true;
        conn_finish(c);
        return;
    }
    size_t used = HELLO_LEN;
    char claimed_addr[ADDR_MAX] = "";
    if (kind == KIND_RAFT) {
        /* raft answers to the address its accept_cb names: the dialer's raft address */
        if (c->in.len < HELLO_LEN + 2)
            return;
        size_t alen = (size_t)get_be(h + HELLO_LEN, 2);
        if (alen == 0 || alen >= ADDR_MAX) {
            refuse(c, "bad raft address length %zu in hello", alen);
            return;
        }
        if (c->in.len < HELLO_LEN + 2 + alen)
            return;
        for (size_t i = 0; i < alen; i++) {
            uint8_t ch = h[HELLO_LEN + 2 + i];
            if (ch < 0x21 || ch > 0x7e) {
                refuse(c, "bad raft address in hello");
                return;
            }
            claimed_addr[i] = (char)ch;
        }
        claimed_addr[alen] = '\0';
        used += 2 + alen;
    }
    c->kind = (uint32_t)kind;
    c->st = CS_OPEN;
    c->deadline = 0;
    c->in_off = used;
    stamp(p, c->peer_id);
    MH_DEBUG(COMP, "msg=\"accepted\" peer=%s id=%llu kind=%u", c->addr,
             (unsigned long long)c->peer_id, c->kind);
    if (kind == KIND_RAFT) {
        uv_stream_t *rs = NULL;
        int rv = make_pair(c, &rs);
        if (rv < 0) {
            MH_WARN(COMP, "msg=\"socketpair failed\" err=%s", mh_errname(rv));
            conn_close(c);
            return;
        }
        /* What raft itself dialed wins: it asserts one address per id. */
        p->accept_cb(p->rt, c->peer_id, known_addr(p, c->peer_id, claimed_addr), rs);
        size_t rest = c->in.len - c->in_off;
        uint8_t *tmp = NULL;
        if (rest > 0) {
            tmp = malloc(rest);
            if (tmp == NULL) {
                conn_close(c);
                return;
            }
            memcpy(tmp, c->in.data + c->in_off, rest);
        }
        mh_buf_free(&c->in);
        c->in_off = 0;
        raft_plain(c, tmp, rest);
        free(tmp);
        return;
    }
    /* requests: whatever followed the hello is the first frames */
    size_t rest = c->in.len - c->in_off;
    if (rest > 0) {
        struct mh_buf tail = {0};
        if (mh_buf_append(&tail, c->in.data + c->in_off, rest) < 0) {
            conn_close(c);
            return;
        }
        mh_buf_free(&c->in);
        c->in_off = 0;
        req_plain(c, tail.data, tail.len);
        mh_buf_free(&tail);
    } else {
        mh_buf_free(&c->in);
        c->in_off = 0;
    }
}

/* 1: handshake done and identity verified; 0: more bytes needed; <0: refused. */
static int conn_handshake(struct conn *c)
{
    struct mh_peer *p = c->p;
    ERR_clear_error();
    int rv = SSL_do_handshake(c->ssl);
    if (rv != 1) {
        int e = SSL_get_error(c->ssl, rv);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (flush_wbio(c) < 0) {
                conn_close(c);
                return MH_ENOMEM;
            }
            return 0;
        }
        char reason[200];
        tls_reason(c, reason, sizeof reason);
        refuse(c, "%s", reason);
        return MH_EPEER;
    }
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    uint64_t id = 0;
    if (cert == NULL || mh_peer_cert_id(cert, &id) < 0) {
        refuse(c, "certificate names no node (not a %s<id> certificate)", MH_PEER_URI_PREFIX);
        return MH_EPEER;
    }
    c->peer_id = id;
    if (c->dialer) {
        if (id != c->want_id) {
            refuse(c, "certificate names node %llu, expected node %llu", (unsigned long long)id,
                   (unsigned long long)c->want_id);
            return MH_EPEER;
        }
        uint8_t hello[HELLO_LEN + 2 + ADDR_MAX];
        size_t hlen = HELLO_LEN;
        memcpy(hello, "MHP1", 4);
        put32(hello + 4, c->kind);
        put64(hello + 8, p->id);
        if (c->kind == KIND_RAFT) {
            size_t alen = strlen(p->self_addr);
            hello[HELLO_LEN] = (uint8_t)(alen >> 8);
            hello[HELLO_LEN + 1] = (uint8_t)alen;
            memcpy(hello + HELLO_LEN + 2, p->self_addr, alen);
            hlen += 2 + alen;
        }
        if (tls_send(c, hello, hlen) < 0)
            return MH_EUNAVAILABLE;
        c->st = CS_OPEN;
        c->deadline = 0;
        dial_open(c);
        return c->closing ? MH_EUNAVAILABLE : 1;
    }
    EVP_PKEY *k = X509_get0_pubkey(cert);
    if (k != NULL && EVP_PKEY_up_ref(k) == 1)
        c->key = k;
    c->st = CS_HELLO;
    if (flush_wbio(c) < 0) {
        conn_close(c);
        return MH_ENOMEM;
    }
    return 1;
}

static void conn_plain(struct conn *c, const uint8_t *d, size_t n)
{
    switch (c->st) {
    case CS_HELLO:
        if (mh_buf_append(&c->in, d, n) < 0) {
            conn_close(c);
            return;
        }
        hello_check(c);
        return;
    case CS_OPEN:
        stamp(c->p, c->peer_id);
        if (c->kind == KIND_RAFT)
            raft_plain(c, d, n);
        else
            req_plain(c, d, n);
        return;
    case CS_CONNECTING:
    case CS_HANDSHAKE:
    default:
        conn_close(c);
        return;
    }
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread <= 0) {
        free(buf->base);
        if (nread < 0) {
            if (c->st != CS_OPEN && !c->want_close && !c->logged) /* restarts, not identity */
                MH_INFO(COMP, "msg=\"closed by the peer during %s\" peer=%s",
                        c->st == CS_HELLO ? "hello" : "handshake", c->addr);
            conn_close(c);
        }
        return;
    }
    if (c->closing || c->want_close || c->ssl == NULL) {
        free(buf->base);
        return;
    }
    int w = BIO_write(c->rbio, buf->base, (int)nread);
    free(buf->base); /* ciphertext */
    if (w != (int)nread) {
        conn_close(c);
        return;
    }
    if (c->st == CS_HANDSHAKE && conn_handshake(c) <= 0)
        return;
    struct mh_peer *p = c->p;
    while (!c->closing && !c->want_close) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, p->plain, (int)sizeof p->plain);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_ZERO_RETURN) {
                conn_finish(c);
            } else {
                char reason[200];
                tls_reason(c, reason, sizeof reason);
                if (c->st != CS_OPEN)
                    refuse(c, "%s", reason);
                else
                    MH_INFO(COMP, "msg=\"connection lost\" peer=%s id=%llu reason=\"%s\"", c->addr,
                            (unsigned long long)c->peer_id, reason);
                conn_close(c);
            }
            break;
        }
        conn_plain(c, p->plain, (size_t)n);
        mh_wipe(p->plain, (size_t)n);
    }
    if (c->closing)
        return;
    if (flush_wbio(c) < 0) {
        conn_close(c);
        return;
    }
    conn_update(c);
}

/* ---- dialing, accepting --------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        MH_DEBUG(COMP, "msg=\"connect failed\" peer=%s id=%llu err=%s", c->addr,
                 (unsigned long long)c->want_id, uv_err_name(status));
        conn_close(c);
        return;
    }
    tune_tcp(c);
    if (conn_tls(c) < 0) {
        conn_close(c);
        return;
    }
    if (conn_handshake(c) < 0)
        return;
    conn_update(c);
}

static struct conn *dial(struct mh_peer *p, uint32_t kind, uint64_t id, const char *address)
{
    struct sockaddr_storage ss;
    bool ok = parse_addr(address, &ss) == 0;
    struct conn *c = conn_new(p, true);
    if (c == NULL)
        return NULL;
    c->kind = kind;
    c->want_id = id;
    c->st = CS_CONNECTING;
    c->deadline = uv_now(p->loop) + DIAL_MS;
    c->creq.data = c;
    snprintf(c->addr, sizeof c->addr, "%s", address != NULL ? address : "?");
    /* Failures surface through the close callback, never synchronously. */
    if (!ok || uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&ss, on_connect) != 0)
        conn_close(c);
    return c;
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct mh_peer *p = listener->data;
    if (status < 0) {
        MH_WARN(COMP, "msg=\"accept failed\" err=%s", uv_err_name(status));
        return;
    }
    struct conn *c = conn_new(p, false);
    if (c == NULL)
        return;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    tune_tcp(c);
    struct sockaddr_storage ss;
    int sl = (int)sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
        mh_net_format(&ss, c->addr, sizeof c->addr);
    else
        snprintf(c->addr, sizeof c->addr, "?");
    if (p->closing || conn_tls(c) < 0) {
        conn_close(c);
        return;
    }
    c->deadline = uv_now(p->loop) + MH_PEER_HELLO_MS;
    conn_update(c);
}

/* ---- timer -------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct mh_peer *p = t->data;
    uint64_t now = uv_now(p->loop);
    for (struct conn *c = p->conns; c != NULL; c = c->next) {
        if (c->closing || c->deadline == 0 || now < c->deadline)
            continue;
        if (c->want_close) {
            conn_close(c);
        } else if (c->dialer) {
            refuse(c, "no handshake within %u ms", DIAL_MS);
            conn_close(c);
        } else {
            refuse(c, "no hello within %u ms", MH_PEER_HELLO_MS);
            conn_close(c);
        }
    }
    /* Expired calls: detach all first, the callbacks may do anything. */
    struct mh_peer_call *expired = NULL, **tail = &expired;
    for (struct outp *op = p->outs; op != NULL; op = op->next) {
        struct mh_peer_call **pp = &op->calls;
        while (*pp != NULL) {
            struct mh_peer_call *k = *pp;
            if (now >= cp(k)->deadline) {
                *pp = cp(k)->next;
                cp(k)->next = NULL;
                *tail = k;
                tail = &cp(k)->next;
            } else {
                pp = &cp(k)->next;
            }
        }
    }
    while (expired != NULL) {
        struct mh_peer_call *k = expired;
        expired = cp(k)->next;
        free(cp(k)->frame);
        cp(k)->frame = NULL;
        k->cb(k, MH_ETIMEDOUT, NULL, 0);
    }
    raft_close_check(p);
}

/* Runs the tick on the next loop iteration (deferred callbacks). */
static void kick(struct mh_peer *p)
{
    if (!p->closing)
        (void)uv_timer_start(&p->timer, on_tick, 0, TICK_MS);
}

/* ---- raft transport ----------------------------------------------------- */

static int rt_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct mh_peer *p = t->impl;
    if (address == NULL || *address == '\0' || strlen(address) >= ADDR_MAX) {
        snprintf(t->errmsg, sizeof t->errmsg, "raft address empty or too long");
        return RAFT_INVALID;
    }
    snprintf(p->self_addr, sizeof p->self_addr, "%s", address);
    if (id != p->id) {
        snprintf(t->errmsg, sizeof t->errmsg, "raft id %llu is not the certificate's %llu",
                 (unsigned long long)id, (unsigned long long)p->id);
        return RAFT_INVALID;
    }
    return 0;
}

static int rt_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct mh_peer *p = t->impl;
    if (p->closing || p->raft_closing)
        return RAFT_CANCELED;
    p->rt = t;
    p->accept_cb = cb;
    return 0;
}

static int rt_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    struct mh_peer *p = t->impl;
    if (p->closing || p->raft_closing)
        return RAFT_CANCELED;
    if (id == 0 || id == p->id)
        return RAFT_INVALID;
    p->rt = t;
    learn_addr(p, id, address);
    struct conn *c = dial(p, KIND_RAFT, id, address);
    if (c == NULL)
        return RAFT_NOMEM;
    c->rreq = req;
    c->rcb = cb;
    p->raft_dialing++;
    return 0;
}

static void rt_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct mh_peer *p = t->impl;
    p->rt = t;
    p->accept_cb = NULL;
    p->raft_closing = true;
    p->rclose_cb = cb;
    for (struct conn *c = p->conns; c != NULL; c = c->next)
        if (c->rreq != NULL)
            conn_close(c);
    /* Always after close() returned: from a conn's close callback or the tick. */
    kick(p);
}

void mh_peer_raft_transport(struct mh_peer *p, struct raft_uv_transport *t)
{
    memset(t, 0, sizeof *t);
    t->impl = p;
    t->init = rt_init;
    t->listen = rt_listen;
    t->connect = rt_connect;
    t->close = rt_close;
    p->rt = t;
    if (p->rclose_cb == NULL && p->raft_dialing == 0)
        p->raft_closing = false; /* a new raft instance after the previous one closed */
}

/* ---- requests API ------------------------------------------------------- */

void mh_peer_set_handler(struct mh_peer *p, mh_peer_handler fn, void *arg)
{
    p->handler = fn;
    p->harg = arg;
}

EVP_PKEY *mh_peer_req_key(struct mh_peer_req *req)
{
    return req->key;
}

void mh_peer_respond(struct mh_peer_req *req, const uint8_t *msg, size_t len)
{
    struct mh_peer *p = req->p;
    struct conn *c = req->c;
    if (c != NULL && !c->closing && !c->want_close) {
        uint8_t *f = NULL;
        size_t flen = 0;
        if (len > p->max_frame) {
            MH_WARN(COMP, "msg=\"response over the frame limit dropped\" peer=%s size=%zu", c->addr,
                    len);
        } else if (frame_build(req->seq, msg, len, &f, &flen) == 0) {
            (void)tls_send(c, f, flen);
            mh_wipe(f, flen);
            free(f);
            if (!c->closing)
                conn_update(c);
        }
    }
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        p->reqs = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    EVP_PKEY_free(req->key);
    free(req);
}

int mh_peer_call(struct mh_peer *p, uint64_t id, const char *address, const uint8_t *msg,
                 size_t len, uint64_t timeout_ms, struct mh_peer_call *c, mh_peer_call_cb cb)
{
    if (p == NULL || c == NULL || cb == NULL || id == 0 || id == p->id || address == NULL ||
        *address == '\0' || strlen(address) >= ADDR_MAX || (msg == NULL && len > 0))
        return MH_EINVAL;
    if (p->closing)
        return MH_EUNAVAILABLE;
    if (len > p->max_frame)
        return MH_ETOOBIG;
    struct sockaddr_storage ss;
    if (parse_addr(address, &ss) < 0)
        return MH_EINVAL;
    struct outp *op = p->outs;
    while (op != NULL && op->id != id)
        op = op->next;
    if (op == NULL) {
        op = calloc(1, sizeof *op);
        if (op == NULL)
            return MH_ENOMEM;
        op->id = id;
        op->next = p->outs;
        p->outs = op;
    }
    snprintf(op->address, sizeof op->address, "%s", address);
    memset(c->private_, 0, sizeof c->private_);
    c->cb = cb;
    struct cpriv *k = cp(c);
    k->op = op;
    k->seq = ++op->next_seq;
    k->deadline = uv_now(p->loop) + (timeout_ms != 0 ? timeout_ms : DEFAULT_CALL_MS);
    MH_TRY(frame_build(k->seq, msg, len, &k->frame, &k->frame_len));
    if (op->c != NULL && (op->c->closing || op->c->want_close))
        op->c = NULL; /* its calls fail when it is freed; this one gets a fresh connection */
    if (op->c == NULL) {
        struct conn *nc = dial(p, KIND_REQ, id, op->address);
        if (nc == NULL) {
            free(k->frame);
            k->frame = NULL;
            return MH_ENOMEM;
        }
        nc->op = op;
        op->c = nc;
    }
    k->c = op->c;
    struct mh_peer_call **pp = &op->calls;
    while (*pp != NULL)
        pp = &cp(*pp)->next;
    *pp = c;
    if (op->c->st == CS_OPEN)
        send_queued(op);
    return 0;
}

uint64_t mh_peer_last_recv(const struct mh_peer *p, uint64_t id)
{
    for (size_t i = 0; i < MH_PEER_MAX_PEERS; i++)
        if (p->contact[i].id == id && id != 0)
            return p->contact[i].last;
    return 0;
}

/* ---- lifetime ----------------------------------------------------------- */

static int build_ctx(const struct mh_peer_config *cfg, SSL_CTX **out)
{
    int rv;
    SSL_CTX *ctx = NULL;
    MH_TRY(mh_tls_ctx_new(TLS_method(), cfg->cert_file, cfg->key_file, cfg->ca_file, "peer", COMP,
                          &ctx));
    uint64_t id = 0;
    X509 *own = SSL_CTX_get0_certificate(ctx);
    if (own == NULL || mh_peer_cert_id(own, &id) < 0) {
        MH_ERROR(COMP,
                 "msg=\"peer certificate names no node\" file=%s reason=\"needs exactly one "
                 "SAN URI %s<id>\"",
                 cfg->cert_file, MH_PEER_URI_PREFIX);
        rv = MH_ECONFIG;
        goto err_after_ctx;
    }
    if (id != cfg->id) {
        MH_ERROR(COMP,
                 "msg=\"peer certificate names another node\" file=%s reason=\"certificate "
                 "names node %llu, raft id is %llu\"",
                 cfg->cert_file, (unsigned long long)id, (unsigned long long)cfg->id);
        rv = MH_ECONFIG;
        goto err_after_ctx;
    }
    *out = ctx;
    return 0;
err_after_ctx:
    SSL_CTX_free(ctx);
    return rv;
}

/* Binds with plain syscalls first so that a busy port fails before any uv handle
 * exists (which could only be released by running the loop). */
static int bind_listen(const struct sockaddr_storage *ss, int *out)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)ss, sl) != 0 || listen(fd, 128) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *out = fd;
    return 0;
}

static void on_new_failed_closed(uv_handle_t *h)
{
    struct mh_peer *p = h->data;
    if (--p->handles == 0) {
        SSL_CTX_free(p->ctx);
        free(p);
    }
}

static void on_peer_handle_closed(uv_handle_t *h)
{
    struct mh_peer *p = h->data;
    p->handles--;
    peer_close_check(p);
}

int mh_peer_new(uv_loop_t *loop, const struct mh_peer_config *cfg, struct mh_peer **out)
{
    int rv, fd = -1;
    if (loop == NULL || cfg == NULL || out == NULL || cfg->id == 0)
        return MH_EINVAL;
    struct sockaddr_storage ss;
    if (parse_addr(cfg->listen, &ss) < 0) {
        MH_ERROR(COMP, "msg=\"bad listen address\" listen=%s",
                 cfg->listen != NULL ? cfg->listen : "(none)");
        return MH_ECONFIG;
    }
    struct mh_peer *p = calloc(1, sizeof *p);
    if (p == NULL)
        return MH_ENOMEM;
    p->loop = loop;
    p->id = cfg->id;
    snprintf(p->self_addr, sizeof p->self_addr, "%s", cfg->listen); /* until raft's init */
    p->max_frame = cfg->max_frame != 0 ? cfg->max_frame : DEFAULT_MAX_FRAME;
    if (p->max_frame > UINT32_MAX)
        p->max_frame = UINT32_MAX;
    rv = build_ctx(cfg, &p->ctx);
    if (rv < 0)
        goto err_after_p;
    rv = bind_listen(&ss, &fd);
    if (rv < 0) {
        MH_ERROR(COMP, "msg=\"cannot listen\" listen=%s err=%s", cfg->listen, mh_errname(rv));
        goto err_after_ctx;
    }
    rv = uv_tcp_init(loop, &p->listener);
    if (rv != 0) {
        close(fd);
        goto err_after_ctx;
    }
    p->listener.data = p;
    (void)uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->handles = 2;
    rv = uv_tcp_open(&p->listener, fd);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&p->listener, 128, on_connection);
    if (rv == 0)
        rv = uv_timer_start(&p->timer, on_tick, TICK_MS, TICK_MS);
    if (rv != 0) {
        /* Practically unreachable; p is released once the loop runs the closes. */
        uv_close((uv_handle_t *)&p->listener, on_new_failed_closed);
        uv_close((uv_handle_t *)&p->timer, on_new_failed_closed);
        return rv;
    }
    MH_INFO(COMP, "msg=\"listening\" listen=%s id=%llu", cfg->listen, (unsigned long long)p->id);
    *out = p;
    return 0;
err_after_ctx:
    SSL_CTX_free(p->ctx);
err_after_p:
    free(p);
    return rv;
}

void mh_peer_close(struct mh_peer *p, void (*done)(void *arg), void *arg)
{
    if (p->closing)
        return;
    p->done = done;
    p->done_arg = arg;
    p->accept_cb = NULL;
    (void)uv_timer_stop(&p->timer);
    p->closing = true;
    uv_close((uv_handle_t *)&p->listener, on_peer_handle_closed);
    uv_close((uv_handle_t *)&p->timer, on_peer_handle_closed);
    for (struct conn *c = p->conns; c != NULL; c = c->next)
        conn_close(c);
}

void mh_peer_free(struct mh_peer *p)
{
    if (p == NULL)
        return;
    while (p->reqs != NULL) {
        struct mh_peer_req *r = p->reqs;
        p->reqs = r->next;
        EVP_PKEY_free(r->key);
        free(r);
    }
    while (p->outs != NULL) {
        struct outp *op = p->outs;
        p->outs = op->next;
        free(op);
    }
    SSL_CTX_free(p->ctx);
    free(p);
}
