/* rpc: the gRPC server: TLS 1.3 over OpenSSL memory BIOs, HTTP/2 via nghttp2, on a libuv loop.
 *
 * Unary gRPC only (Health/Watch and other streaming methods answer UNIMPLEMENTED).
 * Every connection must present a client certificate that chains to the configured
 * CA; the principal of a call is derived from that certificate (SAN URI if present,
 * else "spki:" + lower-case hex SHA-256 of the SubjectPublicKeyInfo DER).
 *
 * A request is reassembled per stream (5-byte gRPC prefix; the declared length is
 * checked against max_message BEFORE any allocation: larger gives
 * RESOURCE_EXHAUSTED), decoded with protobuf-c into a per-call arena that is wiped
 * and freed when the call ends, and handed to the method's handler on the loop
 * thread. The handler must finish the call exactly once with mh_rpc_reply() or
 * mh_rpc_fail(), possibly later (after a worker or a raft commit). A call object
 * stays valid until then even if the client cancels, the deadline passes or the
 * connection closes: those mark it finished-by-transport and the later reply is
 * dropped silently. So handlers never look up a stream again; they keep the call.
 *
 * Threads: every function here must be called on the loop thread. */
#ifndef MH_NODE_RPC_H
#define MH_NODE_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"

/* Canonical gRPC status codes (grpc/grpc doc/statuscodes.md). */
enum mh_grpc_status {
    MH_GRPC_OK = 0,
    MH_GRPC_CANCELLED = 1,
    MH_GRPC_UNKNOWN = 2,
    MH_GRPC_INVALID_ARGUMENT = 3,
    MH_GRPC_DEADLINE_EXCEEDED = 4,
    MH_GRPC_NOT_FOUND = 5,
    MH_GRPC_ALREADY_EXISTS = 6,
    MH_GRPC_PERMISSION_DENIED = 7,
    MH_GRPC_RESOURCE_EXHAUSTED = 8,
    MH_GRPC_FAILED_PRECONDITION = 9,
    MH_GRPC_ABORTED = 10,
    MH_GRPC_OUT_OF_RANGE = 11,
    MH_GRPC_UNIMPLEMENTED = 12,
    MH_GRPC_INTERNAL = 13,
    MH_GRPC_UNAVAILABLE = 14,
    MH_GRPC_DATA_LOSS = 15,
    MH_GRPC_UNAUTHENTICATED = 16,
};

struct mh_rpc_config {
    const char *host;         /* numeric listen address: "127.0.0.1", "::" */
    uint16_t port;            /* 0: pick a free port (see mh_rpc_server_port) */
    const char *cert_file;    /* server certificate chain, PEM */
    const char *key_file;     /* server private key, PEM */
    const char *ca_file;      /* CA bundle that client certificates must chain to, PEM */
    size_t max_message;       /* largest request message accepted, 1 KiB .. 4 GiB */
    uint32_t max_streams;     /* per connection; 0: 100 */
    uint32_t max_connections; /* more are closed at accept; 0: 1024 */
};

struct mh_rpc_server;
struct mh_rpc_call;

/* A method handler. |request| is the decoded request message (type = the method's
 * input descriptor), owned by the call and valid until the call is finished. */
typedef void (*mh_rpc_handler_fn)(struct mh_rpc_call *call, const ProtobufCMessage *request,
                                  void *data);

/* mh_rpc_server_new creates a server on |loop|: loads certificates and key, builds the
 * SSL_CTX (TLS 1.3 only, ALPN "h2" required, client certificate required and verified
 * against ca_file). Does not listen yet. Errors: MH_ECONFIG (unreadable or mismatched
 * certificate/key/CA; the reason is logged), MH_ENOMEM. */
MH_MUST_USE int mh_rpc_server_new(uv_loop_t *loop, const struct mh_rpc_config *cfg,
                                  struct mh_rpc_server **out);

/* mh_rpc_server_add_service routes "/<svc->name>/<method>" for every method of |svc|
 * to handlers[i] (same order as svc->methods). A NULL handler answers UNIMPLEMENTED.
 * |handlers| and |data| must outlive the server. Errors: MH_ENOMEM, MH_EEXIST. */
MH_MUST_USE int mh_rpc_server_add_service(struct mh_rpc_server *srv,
                                          const ProtobufCServiceDescriptor *svc,
                                          const mh_rpc_handler_fn *handlers, void *data);

/* Health status of the whole server ("" service) for grpc.health.v1.Health/Check,
 * which the server implements itself. Unknown service names get NOT_FOUND. */
void mh_rpc_server_set_serving(struct mh_rpc_server *srv, bool serving);

/* ---- audit hook ------------------------------------------------------------ */

/* What a handler learned about its call, for the audit record. Kept by the
 * transport with the stream (fixed buffers, no allocation); set through the
 * mh_rpc_call_note_* functions, empty strings when unknown. */
struct mh_rpc_note {
    int action;           /* enum mh_action, or -1 (none checked), -2 (any client) */
    int decision;         /* 0 none, 1 allowed, -1 denied */
    char key[128];        /* key name the call is about */
    char version[33];     /* key version, when known */
    char scope[140];      /* RBAC scope checked ("/", "/keys/<name>") */
    char request_id[129]; /* the write's request id (correlationId) */
};

/* One finished request, exactly once per HTTP/2 request stream: answered (reply,
 * failure, HTTP error, deadline), or ended by the client or the connection before
 * an answer (|cancelled|). Strings are valid only during the callback. A record
 * deferred to the handler's finish is made even after the server drained, until
 * mh_rpc_server_set_audit removes the hook. */
struct mh_rpc_done {
    uint64_t call_id;      /* 0 when the request never became a call */
    const char *method;    /* the route's path, or the requested :path (printable
                              ASCII, cut at 200 bytes), "" when none was sent */
    bool known_method;     /* |method| is a registered route */
    const char *principal; /* the authenticated principal */
    const char *peer;      /* "ip:port" */
    int64_t start_unix_ms; /* wall clock when the request's headers arrived */
    uint64_t duration_us;  /* monotonic, headers to answer */
    int grpc_status;       /* 0..16; -1 when answered with a bare HTTP status */
    int http_status;       /* the :status sent (200 for every gRPC answer); 0 when none */
    const char *message;   /* grpc-message as given by the handler (may be NULL) */
    /* The transport ended the request before its handler answered (client reset,
     * connection closed, deadline, drain). When a handler had the call, the record
     * is made when the handler finishes, so |grpc_status| and |message| are its real
     * outcome (a write may have been applied), and |client_status| is what the
     * client got: a gRPC status, or -1 when no answer reached it. Without a handler,
     * |grpc_status| is CANCELLED and |client_status| -1. */
    bool cancelled;
    int client_status;
    const struct mh_rpc_note *note;
};

/* The audit callback: record |done|. Returns 0, or < 0 when the record could not
 * be written; the transport then replaces an answer not yet sent with UNAVAILABLE
 * ("audit log cannot be written") instead of serving unaudited. Loop thread. */
typedef int (*mh_rpc_audit_fn)(void *data, const struct mh_rpc_done *done);

/* The admission callback, asked before every request's handler runs (and by the
 * health check): NULL admits; otherwise the request is refused with UNAVAILABLE
 * and this reason (Health/Check answers NOT_SERVING). Loop thread. */
typedef const char *(*mh_rpc_admit_fn)(void *data);

/* mh_rpc_server_set_audit installs both callbacks (either may be NULL). */
void mh_rpc_server_set_audit(struct mh_rpc_server *srv, mh_rpc_audit_fn audit,
                             mh_rpc_admit_fn admit, void *data);

/* mh_rpc_server_listen binds and listens. Errors: -errno from libuv (e.g. EADDRINUSE). */
MH_MUST_USE int mh_rpc_server_listen(struct mh_rpc_server *srv);

/* The bound port (useful with port 0). */
uint16_t mh_rpc_server_port(const struct mh_rpc_server *srv);

/* The process must ignore SIGPIPE: writes go through plain libuv streams.
 *
 * mh_rpc_server_drain stops accepting, sends GOAWAY on every connection, lets calls
 * in flight finish (each gets at most |grace_ms|, then CANCELLED/UNAVAILABLE), closes
 * every connection and the listener, then calls |done|(|arg|) on the loop thread. */
void mh_rpc_server_drain(struct mh_rpc_server *srv, uint64_t grace_ms, void (*done)(void *arg),
                         void *arg);

/* A second drain is ignored. After a failed listen, drain before free.
 * mh_rpc_server_free frees a drained (or never started) server. */
void mh_rpc_server_free(struct mh_rpc_server *srv);

/* ---- per call ---------------------------------------------------------- */

/* mh_rpc_reply packs |response| (whose descriptor must be the method's output) and
 * sends it with grpc-status 0, then ends the call. The caller keeps ownership of
 * |response|; it is packed before this returns (into a wiping buffer: responses may
 * carry plaintext). */
void mh_rpc_reply(struct mh_rpc_call *call, const ProtobufCMessage *response);

/* mh_rpc_fail ends the call with |status| (not OK) and |message| (may be NULL). The
 * message is for people: the transport percent-encodes it and cuts it at 512 bytes.
 * It must never carry secret data. */
void mh_rpc_fail(struct mh_rpc_call *call, enum mh_grpc_status status, const char *message);

/* True once the client cancelled, the deadline passed or the connection went away:
 * the handler may skip work; it must still finish the call. */
bool mh_rpc_call_cancelled(const struct mh_rpc_call *call);

/* The authenticated principal (never NULL, never empty). Valid until the call ends. */
const char *mh_rpc_call_principal(const struct mh_rpc_call *call);

/* The full method path, e.g. "/mhsm.v1.Keys/CreateKey". */
const char *mh_rpc_call_method(const struct mh_rpc_call *call);

/* The peer address "ip:port". */
const char *mh_rpc_call_peer(const struct mh_rpc_call *call);

/* A process-unique, increasing call id for logs and audit. */
uint64_t mh_rpc_call_id(const struct mh_rpc_call *call);

/* The deadline from grpc-timeout as uv_now() milliseconds, 0 when none. The transport
 * enforces it: when it passes, the client gets DEADLINE_EXCEEDED and the call is
 * marked cancelled. */
uint64_t mh_rpc_call_deadline(const struct mh_rpc_call *call);

/* Notes for the audit record (copied, cut to the buffer; ignored after the
 * transport finished the call). */
void mh_rpc_call_note_authz(struct mh_rpc_call *call, int action, bool allowed, const char *scope);
void mh_rpc_call_note_key(struct mh_rpc_call *call, const char *key, const char *version);
void mh_rpc_call_note_request_id(struct mh_rpc_call *call, const char *request_id);

/* mh_rpc_call_alloc allocates |size| bytes from the call's arena (zeroed; wiped and
 * released when the call ends). For building responses. NULL when out of memory or
 * over the arena budget. */
void *mh_rpc_call_alloc(struct mh_rpc_call *call, size_t size);

#endif
