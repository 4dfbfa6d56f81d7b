/* rpc_client: a small blocking gRPC client: unary calls over HTTP/2 (nghttp2) over TLS 1.3.
 *
 * One client = one TCP connection to one endpoint, opened lazily by the first call
 * and re-opened by a later call when the server closed it (GOAWAY, EOF). The server
 * is verified against the CA file and the endpoint's host name or IP address; the
 * client presents its certificate when one is configured. Calls are unary and
 * sequential: one stream at a time. Every wait (connect, handshake, read, write) is
 * bounded by the call's deadline.
 *
 * Outcomes of mh_client_call:
 *  - 0: the call completed at the gRPC level. *grpc_status tells how: 0 with a
 *    decoded response, or a gRPC status (from trailers, a reset stream, an HTTP
 *    error, the local deadline, the response cap (RESOURCE_EXHAUSTED), or an
 *    undecodable response (INTERNAL)) with a percent-decoded *grpc_message.
 *  - negative: the transport failed (connect, TLS, connection lost, HTTP/2 protocol
 *    error); mh_client_errmsg() names the reason. -ECONNRESET means the connection
 *    dropped after the request may have been sent (a caller may retry an idempotent
 *    request once).
 *
 * Secrets: request and response bytes (which may carry key material or plaintext)
 * live in wiping buffers, and nghttp2 allocates through a wiping allocator.
 *
 * Signals: TLS writes use write(2) on the socket, so a process using this client must
 * ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)); a dropped connection then gives -EPIPE,
 * reported as -ECONNRESET.
 *
 * Thread safety: a client belongs to one thread at a time. */
#ifndef MH_CLIENT_RPC_CLIENT_H
#define MH_CLIENT_RPC_CLIENT_H

#include <nghttp2/nghttp2.h>
#include <openssl/types.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* Canonical gRPC status codes (grpc/grpc doc/statuscodes.md). */
enum mh_client_status {
    MH_CLIENT_OK = 0,
    MH_CLIENT_CANCELLED = 1,
    MH_CLIENT_UNKNOWN = 2,
    MH_CLIENT_INVALID_ARGUMENT = 3,
    MH_CLIENT_DEADLINE_EXCEEDED = 4,
    MH_CLIENT_NOT_FOUND = 5,
    MH_CLIENT_ALREADY_EXISTS = 6,
    MH_CLIENT_PERMISSION_DENIED = 7,
    MH_CLIENT_RESOURCE_EXHAUSTED = 8,
    MH_CLIENT_FAILED_PRECONDITION = 9,
    MH_CLIENT_ABORTED = 10,
    MH_CLIENT_OUT_OF_RANGE = 11,
    MH_CLIENT_UNIMPLEMENTED = 12,
    MH_CLIENT_INTERNAL = 13,
    MH_CLIENT_UNAVAILABLE = 14,
    MH_CLIENT_DATA_LOSS = 15,
    MH_CLIENT_UNAUTHENTICATED = 16,
};

struct mh_client_config {
    const char *endpoint;  /* "host:port", "[v6addr]:port" */
    const char *ca_file;   /* PEM bundle the server must chain to; NULL: system default */
    const char *cert_file; /* client certificate chain, PEM; NULL: present none */
    const char *key_file;  /* its private key, PEM; needed iff cert_file is set */
    size_t max_response;   /* largest accepted response message; 0: 4 MiB */
};

struct mh_client;

/* mh_client_new parses the endpoint and loads the CA, certificate and key into a TLS
 * 1.3 context (ALPN "h2"); it does not connect. On failure *out is NULL and, when
 * |errbuf| is not NULL, a reason (file names, OpenSSL's reason; never key bytes) is
 * written there. Errors: MH_EINVAL (bad endpoint, key without certificate),
 * MH_ECERT (unreadable or mismatched certificate, key or CA), MH_ENOMEM. */
MH_MUST_USE int mh_client_new(const struct mh_client_config *cfg, struct mh_client **out,
                              char *errbuf, size_t errlen);

/* mh_client_call performs one unary call of |path| ("/pkg.Service/Method") with the
 * packed |req|, and waits at most |timeout_ms| (> 0; sent as grpc-timeout) for the
 * whole call including connecting. On return 0, *grpc_status is set; if it is 0,
 * *resp is the decoded response (type |resp_desc|; the caller frees it with
 * mh_client_response_free), else *resp is NULL and
 * *grpc_message is a malloc'ed NUL-terminated message (possibly empty; the caller
 * frees it). On a negative return nothing is allocated. Errors: -errno from
 * connect/poll, -ECONNRESET (connection lost mid-call), MH_EPROTO (HTTP/2 protocol
 * violation, no ALPN h2), MH_ETIMEDOUT (deadline passed while connecting), MH_ECERT (server
 * certificate refused), MH_ECRYPTO (TLS failure, e.g. handshake alert), MH_ENOMEM. */
MH_MUST_USE int mh_client_call(struct mh_client *c, const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, uint64_t timeout_ms,
                               ProtobufCMessage **resp, int *grpc_status, char **grpc_message);

/* mh_client_response_free wipes and frees a response of mh_client_call. NULL is a no-op. */
void mh_client_response_free(ProtobufCMessage *resp);

/* The reason of the last negative return of mh_client_call (never NULL; "" if none). */
const char *mh_client_errmsg(const struct mh_client *c);

/* mh_client_free closes the connection (GOAWAY, TLS close_notify, best effort) and
 * frees everything. NULL is a no-op. */
void mh_client_free(struct mh_client *c);

/* ---- pure helpers (exposed for tests and the CLI) -------------------------- */

/* Canonical name of a gRPC status ("NOT_FOUND"); "UNKNOWN" for values out of range. */
const char *mh_client_status_name(int status);

/* mh_client_split_endpoint splits "host:port" or "[v6]:port" into |host| and |port|
 * (NUL-terminated, capacities given). The port must be 1..65535 in decimal.
 * Errors: MH_EINVAL. */
MH_MUST_USE int mh_client_split_endpoint(const char *endpoint, char *host, size_t host_cap,
                                         char *port, size_t port_cap);

/* mh_client_percent_decode decodes a grpc-message value: "%XX" (hex, either case)
 * becomes the byte; anything else, including a '%' not followed by two hex digits,
 * is kept as is (the gRPC spec asks receivers to be lenient). Appends to |out|. */
MH_MUST_USE int mh_client_percent_decode(const char *s, size_t len, struct mh_buf *out);

/* mh_client_decode_body decodes a unary response body: exactly one uncompressed
 * length-prefixed message (5-byte prefix), unpacked as |desc| into wiping memory
 * (free with mh_client_response_free). Errors: MH_EPROTO (short prefix, compressed
 * flag, length not matching the bytes that follow, undecodable protobuf). */
MH_MUST_USE int mh_client_decode_body(const uint8_t *body, size_t len,
                                      const ProtobufCMessageDescriptor *desc,
                                      ProtobufCMessage **out);

/* mh_client_format_timeout writes the grpc-timeout value for |ms| (> 0) into |out|:
 * at most 8 digits and a unit, rounding up so the server never sees a shorter
 * deadline than the client's. */
void mh_client_format_timeout(uint64_t ms, char out[16]);

/* ---- transport pieces shared with rpc_async ---------------------------------
 * Both clients build their TLS contexts, verify servers, read response headers and
 * map transport outcomes to gRPC statuses through these, so the two cannot drift. */

/* mh_client_tls_ctx_new builds the client TLS context of every mhsm client: TLS 1.3
 * only, no compression or renegotiation, ALPN "h2", the server's chain verified
 * (SSL_VERIFY_PEER) against |ca_file| (PEM bundle; NULL: the system default store),
 * and |cert_file| (certificate chain, PEM) with |key_file| (its private key, PEM)
 * presented when given: both or neither, and the key must match the certificate.
 * The server's name is checked per connection (mh_client_tls_attach). On success the
 * caller owns *out (SSL_CTX_free) and may add its own modes or buffer settings. On
 * failure *out is NULL, OpenSSL's error queue is cleared and, when |errbuf| is not
 * NULL, a reason (file names and OpenSSL's reason, never key bytes) is written there.
 * Errors: MH_EINVAL (certificate without key or the other way round), MH_ECERT
 * (unreadable or mismatched certificate, key or CA; TLS 1.3 or ALPN refused by
 * OpenSSL), MH_ENOMEM. Thread: any; the finished context may be shared read-only. */
MH_MUST_USE int mh_client_tls_ctx_new(const char *ca_file, const char *cert_file,
                                      const char *key_file, SSL_CTX **out, char *errbuf,
                                      size_t errlen);

/* mh_client_tls_attach binds |ssl| (not yet connected; the caller keeps owning it)
 * to the connected socket |fd| (not taken over: SSL_free leaves it open) and makes
 * the handshake verify |host| (as it appears in the endpoint, without brackets): an
 * IPv4/IPv6 literal must be an IP SAN of the server's certificate, a name must match
 * its DNS SANs and is also sent as SNI. Errors: MH_ENOMEM (OpenSSL allocation).
 * Thread: the thread owning |ssl|. */
MH_MUST_USE int mh_client_tls_attach(SSL *ssl, int fd, const char *host);

/* mh_client_tls_reason drains this thread's OpenSSL error queue and writes the reason
 * of its last entry into |out| (|cap| > 0; "unknown TLS error" when the queue was
 * empty). Reasons name no key bytes. Thread: any (the queue is per thread). */
void mh_client_tls_reason(char *out, size_t cap);

/* mh_client_h2_new creates the nghttp2 client session of one gRPC connection: the
 * four callbacks given (|ud| is their user data), our send header-block cap (64 KiB),
 * and the client SETTINGS queued (no server push, 16 KiB header list, 1 MiB initial
 * stream window). |mem| is nghttp2's allocator (NULL: the default one; it must
 * outlive the session). The caller owns *out (nghttp2_session_del) and sends the
 * queued SETTINGS. On failure *out is NULL. Errors: MH_ENOMEM. Thread: any; the
 * session then belongs to the caller's thread. */
MH_MUST_USE int mh_client_h2_new(nghttp2_session **out, nghttp2_on_header_callback header_cb,
                                 nghttp2_on_data_chunk_recv_callback data_cb,
                                 nghttp2_on_frame_recv_callback frame_cb,
                                 nghttp2_on_stream_close_callback close_cb, void *ud,
                                 nghttp2_mem *mem);

/* mh_client_transport_close frees the HTTP/2 session *h2 and the TLS object *ssl
 * without sending anything (no GOAWAY, no close_notify), closes the socket *fd, and
 * leaves NULL, NULL and -1 behind; each may already be in that state. OpenSSL's error
 * queue of this thread is cleared so a later reason is not an old one. Thread: the
 * owner of the connection. */
void mh_client_transport_close(nghttp2_session **h2, SSL **ssl, int *fd);

/* Response headers of one call, filled by mh_client_take_header. Start zeroed with
 * grpc_status = -1; the owner frees |gmsg| (mh_buf_free). */
struct mh_client_resp_headers {
    int http_status;    /* :status, 0 until seen */
    bool grpc_ct;       /* content-type application/grpc, +suffix or ;params allowed */
    int grpc_status;    /* -1 until seen; UNKNOWN when not 1..3 decimal digits */
    struct mh_buf gmsg; /* raw (still percent-encoded) grpc-message, cut at 4096 bytes */
};

/* mh_client_take_header records one response header or trailer field (nghttp2's
 * on_header arguments) in |h|; fields other than the four above are ignored. Values
 * come from the wire and are parsed defensively (bounded, never trusted as lengths).
 * Errors: MH_ENOMEM (grpc-message copy). Thread: the owner of |h|. */
MH_MUST_USE int mh_client_take_header(struct mh_client_resp_headers *h, const uint8_t *name,
                                      size_t namelen, const uint8_t *value, size_t valuelen);

/* gRPC status of a response that ended with HTTP status |http| (not 200) and no
 * grpc-status (grpc doc/http-grpc-status-mapping.md); UNKNOWN for unlisted codes.
 * Pure; any thread. */
int mh_client_status_of_http(int http);

/* gRPC status of a stream the server reset with HTTP/2 error |code| before sending a
 * grpc-status; INTERNAL for codes without a better match. Pure; any thread. */
int mh_client_status_of_rst(uint32_t code);

#endif
