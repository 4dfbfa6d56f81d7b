/* node: the state of one mhsmd process, shared by its services (loop thread). */
#ifndef MH_NODE_NODE_H
#define MH_NODE_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/secret.h"
#include <openssl/evp.h>

#include "consensus/cluster.h"
#include "consensus/peer.h"
#include "consensus/store.h"
#include "node/config.h"
#include "node/domain.h"
#include "node/keycache.h"
#include "node/rpc.h"
#include "node/worker.h"

struct mh_audit;
struct mh_authz_cache;

struct mh_node {
    uv_loop_t *loop;
    const struct mh_config *cfg;
    struct mh_rpc_server *rpc;
    struct mh_worker_pool *workers;
    struct mh_store *store;
    struct mh_fsm *fsm;
    struct mh_cluster *cluster;
    struct mh_peer *peer;
    struct mh_keycache *keys;
    struct mh_audit *audit;       /* node/audit: the request log (set before listening) */
    struct mh_authz_cache *authz; /* node/authz: compiled role masks, lazily made */
    struct mh_secret node_key;
    /* The domain, once activated and unsealed here. Set on the loop thread only and
     * never freed before shutdown, so workers may use a pointer taken at submit. */
    struct mh_domain *domain;
    char domain_path[600];
    unsigned retention_days; /* from the DomainRecord, once activated */
    bool ready;              /* raft was ready once: the node booted (serving is dynamic) */
    bool activating;         /* a Download is in flight */
    bool stopping;
    /* domain distribution between members (node/domsync.c) */
    EVP_PKEY *node_pkey; /* this node's certificate key: receives the domain wrapped to it */
    uv_timer_t domsync_timer;
    struct mh_cluster_fetch fetch;
    bool fetching;
    uint8_t fetch_id[MH_DOMAIN_ID_LEN]; /* the replicated domain id asked for */
    unsigned fetch_retention;           /* and its retention, from the same record */
    uint64_t domsync_last_log;          /* uv_now of the last "waiting" log line */
};

/* Service registration (each in its own file). */
MH_MUST_USE int mh_svc_sd_register(struct mh_node *n);
MH_MUST_USE int mh_svc_keys_register(struct mh_node *n);
MH_MUST_USE int mh_svc_crypto_register(struct mh_node *n);
MH_MUST_USE int mh_svc_cluster_register(struct mh_node *n);
MH_MUST_USE int mh_svc_rbac_register(struct mh_node *n);  /* mhsm.v1.AccessControl */
MH_MUST_USE int mh_svc_audit_register(struct mh_node *n); /* mhsm.v1.Audit */

/* Domain distribution (node/domsync.c). mh_domsync_start loads this node's private
 * key (cfg raft_key), answers members' DomainFetch requests with the root wrapped to
 * the requester's certificate (RSA-OAEP-256 JWE), and, while the HSM is activated but
 * this node holds no domain, asks the other members for it every 500 ms, unwraps
 * it on a worker, checks it against the replicated domain id and seals it locally.
 * Errors: MH_ECONFIG (unreadable key). mh_domsync_stop stops the timer (loop). */
MH_MUST_USE int mh_domsync_start(struct mh_node *n);
void mh_domsync_stop(struct mh_node *n);

/* mh_node_gate checks the node may serve a call that needs an active security
 * domain (|need_domain|) or just a ready node; on refusal it finishes |call| with
 * UNAVAILABLE (starting, stopping, not serving now: no leader or no contact with
 * the majority, or still waiting for the domain from the other members; the
 * message says which) or FAILED_PRECONDITION (not activated, with how to
 * activate) and returns false. Loop thread. */
bool mh_node_gate(struct mh_node *n, struct mh_rpc_call *call, bool need_domain);

/* mh_node_domain_loaded is called right after n->domain is set (at start from the
 * sealed copy, after activation, after domsync received it): it hands the audit
 * signing key to the audit log. Loop thread. */
void mh_node_domain_loaded(struct mh_node *n);

/* Wall-clock seconds for command timestamps and nbf/exp checks. */
int64_t mh_node_now(void);

/* mh_node_request_id copies the client's request id if it is 1..64 printable ASCII
 * characters, else makes a random one, into |out| (65 bytes). MH_EINVAL for a
 * client id that is present but malformed. */
MH_MUST_USE int mh_node_request_id(const char *client, char out[65]);

#endif
