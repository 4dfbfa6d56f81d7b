/* rpc_async: an event-driven gRPC client: many concurrent unary calls per connection.
 *
 * Built for load generation (mhsm-bench): one epoll loop per thread drives any number
 * of connections; each connection is non-blocking TCP + TLS 1.3 (ALPN h2, optional
 * client certificate, the server verified against the CA and the endpoint's host name
 * or IP by rpc_client's own code: mh_client_tls_ctx_new, mh_client_tls_attach) + one
 * nghttp2 client session carrying many streams.
 * Output that nghttp2 produces during one loop iteration is gathered and written with
 * one SSL_write; input is read in 64 KiB chunks.
 *
 * Calls: mh_async_call frames a packed request and submits it; the completion callback
 * runs later on the loop's thread (never inside mh_async_call) with the gRPC status,
 * the percent-decoded grpc-message and the decoded response. nghttp2 holds streams
 * beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS until a slot frees, so the
 * server's limit is respected whatever the caller submits.
 *
 * Connection loss (EOF, TLS or HTTP/2 error, GOAWAY) fails the streams open on it with
 * UNAVAILABLE (transport = true); the connection then reconnects by itself with a
 * bounded exponential backoff (50 ms .. 2 s). Calls submitted while a connection is
 * not up wait in a queue until it is (or until their deadline: DEADLINE_EXCEEDED).
 *
 * Secrets: the TLS read buffer is wiped after use, responses are decoded into wiping
 * memory (mh_client_decode_body) and bodies live in wiping mh_bufs. nghttp2's own
 * allocations (headers) use the default allocator: DATA payloads are handed to us
 * without being copied there.
 *
 * Signals: a process using this must ignore SIGPIPE.
 *
 * Thread safety: an mh_async_tls may be shared by all threads (read-only after
 * creation). A loop, its connections and its calls belong to the one thread that
 * runs the loop. */
#ifndef MH_CLIENT_RPC_ASYNC_H
#define MH_CLIENT_RPC_ASYNC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct mh_async_tls;
struct mh_async_loop;
struct mh_async_conn;

struct mh_async_config {
    const char *ca_file;   /* PEM bundle the server must chain to; NULL: system default */
    const char *cert_file; /* client certificate chain, PEM; NULL: present none */
    const char *key_file;  /* its private key; needed iff cert_file is set */
};

/* The outcome of one call, valid only during the completion callback. */
struct mh_async_result {
    int status;          /* gRPC status (enum mh_client_status) */
    bool transport;      /* the connection failed under the call (status UNAVAILABLE) */
    const char *message; /* NUL-terminated, never NULL ("" when none) */
    /* Status 0 with a descriptor given: the decoded response, freed after the
     * callback returns (steal it by setting it to NULL is not supported: copy out). */
    const ProtobufCMessage *resp;
};

typedef void (*mh_async_cb)(const struct mh_async_result *r, void *ud);

/* mh_async_tls_new builds the shared TLS 1.3 client context (ALPN "h2";
 * mh_client_tls_ctx_new, plus partial writes and read-ahead). On failure
 * *out is NULL and a reason (file names and OpenSSL's reason) is written to |errbuf|.
 * Errors: MH_EINVAL (key without certificate), MH_ECERT (unreadable or mismatched
 * certificate, key or CA), MH_ENOMEM. */
MH_MUST_USE int mh_async_tls_new(const struct mh_async_config *cfg, struct mh_async_tls **out,
                                 char *errbuf, size_t errlen);

/* Frees the context; every connection using it must be freed first. NULL is a no-op. */
void mh_async_tls_free(struct mh_async_tls *t);

/* mh_async_loop_new creates an epoll loop. Errors: MH_ENOMEM, -errno. */
MH_MUST_USE int mh_async_loop_new(struct mh_async_loop **out);

/* mh_async_loop_run_once waits up to |timeout_ms| (0: poll) for I/O, handles it, runs
 * the completions it produced, expires calls past their deadline, starts due
 * reconnects and flushes every connection's output. Returns 0 or -errno (epoll). */
MH_MUST_USE int mh_async_loop_run_once(struct mh_async_loop *l, int timeout_ms);

/* Calls submitted on the loop's connections and not yet completed. */
size_t mh_async_loop_inflight(const struct mh_async_loop *l);

/* mh_async_loop_free frees every connection of the loop (their calls are dropped
 * without callbacks) and the loop. NULL is a no-op. */
void mh_async_loop_free(struct mh_async_loop *l);

/* mh_async_conn_new creates a connection of |l| to |endpoint| ("host:port",
 * "[v6]:port"; the host is resolved now) using |tls|, and starts connecting. It is
 * owned by the loop (freed with it). Errors: MH_EINVAL (bad endpoint, with a reason in
 * |errbuf|), -EHOSTUNREACH (cannot resolve), MH_ENOMEM. */
MH_MUST_USE int mh_async_conn_new(struct mh_async_loop *l, struct mh_async_tls *tls,
                                  const char *endpoint, struct mh_async_conn **out, char *errbuf,
                                  size_t errlen);

/* True while the connection is established (handshake done, not draining). */
bool mh_async_conn_ready(const struct mh_async_conn *c);

/* The server's SETTINGS_MAX_CONCURRENT_STREAMS (UINT32_MAX until it said otherwise). */
uint32_t mh_async_conn_max_streams(const struct mh_async_conn *c);

/* How often the connection was lost or failed to connect. */
uint64_t mh_async_conn_failures(const struct mh_async_conn *c);

/* The reason of the last connection failure ("" if none). */
const char *mh_async_conn_errmsg(const struct mh_async_conn *c);

/* mh_async_call submits the unary call |path| (a string that outlives the call, e.g. a
 * literal) with the packed protobuf |msg| (|len| bytes, copied), to complete within
 * |timeout_ms| (> 0; also sent as grpc-timeout). When |desc| is not NULL, a successful
 * response is decoded as |desc| (an undecodable one completes as INTERNAL). |cb| runs
 * exactly once, later, on the loop thread (unless the loop is freed first). Errors
 * (nothing submitted, |cb| never runs): MH_ETOOBIG (message > 4 GiB), MH_ENOMEM. */
MH_MUST_USE int mh_async_call(struct mh_async_conn *c, const char *path, const uint8_t *msg,
                              size_t len, const ProtobufCMessageDescriptor *desc,
                              uint64_t timeout_ms, mh_async_cb cb, void *ud);

/* mh_async_pack packs |m| into a malloc'ed buffer (*out, *len; free() it) for
 * mh_async_call. Errors: MH_ENOMEM. */
MH_MUST_USE int mh_async_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len);

#endif
