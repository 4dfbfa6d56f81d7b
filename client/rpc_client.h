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

#include <protobuf-c/protobuf-c.h>
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

#endif
