/* peer: the node-to-node channel: one mutual-TLS 1.3 listener that carries raft's
 * streams (through a socketpair proxy) and framed peer requests.
 *
 * Identity. Every node has a certificate from the cluster CA whose SAN URI is
 * MH_PEER_URI_PREFIX "<raft id>" (e.g. "spiffe://mhsm/node/2"). Both sides verify
 * the other's chain against ca_file and read the raft id from that URI; a
 * certificate without exactly one such URI is not a node (client and operator
 * certificates are refused here, whatever CA issued them).
 *
 * Wire. The dialer completes the TLS handshake, checks that the acceptor's
 * certificate names the raft id it meant to reach, then sends a 16-byte hello
 * inside TLS: "MHP1", u32be kind (1 raft, 2 requests), u64be its raft id; for
 * kind 1 followed by u16be length and the dialer's raft address (raft answers to
 * the address its accept_cb names, as in raft's own TCP handshake). The
 * acceptor checks that id against the dialer's certificate and that it is not its
 * own id. Any failure closes the connection before a byte reaches raft or a
 * request handler, and is logged once (peer address, reason). Hello must arrive
 * within MH_PEER_HELLO_MS of accept.
 *
 * Raft (kind 1). mh_peer_raft_transport fills a struct raft_uv_transport whose
 * connect dials as above, then makes a socketpair: one end becomes a uv_pipe_t
 * allocated with raft_malloc and handed to raft, the other is pumped to and from
 * TLS on the loop. On the accepting side the same happens and raft's accept_cb
 * gets the pipe. Either side closing (raft closes its pipe, TCP EOF/error, TLS
 * alert) closes the whole chain. Plaintext buffered towards one side is bounded
 * (MH_PEER_MAX_BUFFER); past it the connection is dropped (raft reconnects).
 *
 * Requests (kind 2). A request is one frame: u32be length, u64be sequence, then
 * the message bytes (opaque here: consensus/cluster packs PeerRequest and
 * PeerResponse). Frames longer than max_frame close the connection. The dialer
 * keeps one connection per peer for its calls and matches responses by sequence;
 * the acceptor hands each request to the handler and writes the response on the
 * connection it came in on. A call finishes exactly once: with the response, or
 * with MH_EUNAVAILABLE (cannot connect, identity refused, connection lost, closed)
 * or MH_ETIMEDOUT (no response within its timeout).
 *
 * Contact. Every byte read from a verified peer (raft or requests, either
 * direction of dialing) stamps that peer's last-contact time (uv_now).
 *
 * Threads: everything on the loop thread. */
#ifndef MH_CONSENSUS_PEER_H
#define MH_CONSENSUS_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "common/err.h"

#define MH_PEER_URI_PREFIX "spiffe://mhsm/node/"
#define MH_PEER_HELLO_MS   5000u
#define MH_PEER_MAX_BUFFER (64u << 20)
#define MH_PEER_MAX_PEERS  16u /* distinct peer ids tracked for contact */

struct mh_peer_config {
    uint64_t id;           /* this node's raft id, >= 1 */
    const char *listen;    /* "host:port" (numeric host) to accept peers on */
    const char *cert_file; /* this node's certificate chain, PEM (names MH_PEER_URI_PREFIX id) */
    const char *key_file;  /* its private key, PEM */
    const char *ca_file;   /* the cluster CA bundle peers must chain to, PEM */
    size_t max_frame;      /* largest request/response message; 0: 8 MiB */
};

struct mh_peer;

/* mh_peer_new loads the certificate, key and CA, checks that the certificate names
 * cfg->id (MH_ECONFIG otherwise, logged with the reason), binds and listens.
 * Errors: MH_ECONFIG, MH_ENOMEM, -errno from libuv (EADDRINUSE...). */
MH_MUST_USE int mh_peer_new(uv_loop_t *loop, const struct mh_peer_config *cfg,
                            struct mh_peer **out);

/* mh_peer_cert_id reads the raft id from a certificate's MH_PEER_URI_PREFIX SAN URI.
 * MH_ECERT when it has none, more than one, or a malformed id (not 1..2^63). Public
 * for config checks and tests. */
MH_MUST_USE int mh_peer_cert_id(X509 *cert, uint64_t *id);

/* mh_peer_raft_transport fills |t| (all function pointers and impl) so that
 * raft_uv_init can use it. |t| must stay valid and owned by the caller until raft
 * has called its close callback. One transport per peer endpoint. */
void mh_peer_raft_transport(struct mh_peer *p, struct raft_uv_transport *t);

/* ---- requests ----------------------------------------------------------- */

struct mh_peer_req; /* an inbound request, answered exactly once */

/* The handler gets each inbound request: |from| is the verified raft id of the
 * sender, |msg|/|len| valid only during the call. The handler (now or later, on
 * the loop) calls mh_peer_respond exactly once. */
typedef void (*mh_peer_handler)(void *arg, struct mh_peer_req *req, uint64_t from,
                                const uint8_t *msg, size_t len);
void mh_peer_set_handler(struct mh_peer *p, mh_peer_handler fn, void *arg);

/* The sender's certificate public key (for wrapping a secret to it). Borrowed,
 * valid until mh_peer_respond. */
EVP_PKEY *mh_peer_req_key(struct mh_peer_req *req);

/* mh_peer_respond sends |msg| (copied) back and frees |req|. If the connection went
 * away meanwhile the response is dropped silently. */
void mh_peer_respond(struct mh_peer_req *req, const uint8_t *msg, size_t len);

/* An outbound call: caller-owned, valid until |cb| runs (exactly once, on the loop,
 * never before mh_peer_call returns). rc 0: |msg|/|len| is the response (valid
 * only during cb). Otherwise MH_EUNAVAILABLE or MH_ETIMEDOUT, msg NULL. */
struct mh_peer_call;
typedef void (*mh_peer_call_cb)(struct mh_peer_call *c, int rc, const uint8_t *msg, size_t len);
struct mh_peer_call {
    void *data; /* for the caller */
    mh_peer_call_cb cb;
    uint8_t private_[128]; /* queue links, sequence, deadline; do not touch */
};

/* mh_peer_call sends |msg| (copied) to node |id| at |address|, connecting first if
 * there is no request connection to it. Calls to one peer are sent in order.
 * |timeout_ms| 0 means 10 s. Errors returned directly (cb not called): MH_EINVAL
 * (id 0 or our own id, empty address), MH_ETOOBIG (over max_frame), MH_ENOMEM,
 * MH_EUNAVAILABLE (closing). */
MH_MUST_USE int mh_peer_call(struct mh_peer *p, uint64_t id, const char *address,
                             const uint8_t *msg, size_t len, uint64_t timeout_ms,
                             struct mh_peer_call *c, mh_peer_call_cb cb);

/* ---- contact ------------------------------------------------------------ */

/* uv_now() (ms) of the last byte received from peer |id|, 0 when never. */
uint64_t mh_peer_last_recv(const struct mh_peer *p, uint64_t id);

/* ---- lifetime ----------------------------------------------------------- */

/* mh_peer_close stops listening, closes every connection (pending calls finish
 * with MH_EUNAVAILABLE; unanswered inbound requests are dropped: mh_peer_respond
 * on them stays safe until |done|) and calls |done| when every handle is closed.
 * The raft transport must have been closed by raft first (raft_close). Then
 * mh_peer_free. */
void mh_peer_close(struct mh_peer *p, void (*done)(void *arg), void *arg);
void mh_peer_free(struct mh_peer *p);

#endif
