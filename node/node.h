/* node: the state of one mhsmd process, shared by its services (loop thread). */
#ifndef MH_NODE_NODE_H
#define MH_NODE_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/secret.h"
#include "consensus/cluster.h"
#include "consensus/store.h"
#include "node/config.h"
#include "node/domain.h"
#include "node/keycache.h"
#include "node/rpc.h"
#include "node/worker.h"

struct mh_node {
    uv_loop_t *loop;
    const struct mh_config *cfg;
    struct mh_rpc_server *rpc;
    struct mh_worker_pool *workers;
    struct mh_store *store;
    struct mh_fsm *fsm;
    struct mh_cluster *cluster;
    struct mh_keycache *keys;
    struct mh_secret node_key;
    /* The domain, once activated and unsealed here. Set on the loop thread only and
     * never freed before shutdown, so workers may use a pointer taken at submit. */
    struct mh_domain *domain;
    char domain_path[600];
    unsigned retention_days; /* from the DomainRecord, once activated */
    bool ready;              /* raft ready and the domain (if any) loaded */
    bool activating;         /* a Download is in flight */
    bool stopping;
};

/* Service registration (each in its own file). */
MH_MUST_USE int mh_svc_sd_register(struct mh_node *n);
MH_MUST_USE int mh_svc_keys_register(struct mh_node *n);
MH_MUST_USE int mh_svc_crypto_register(struct mh_node *n);

/* mh_node_gate checks the node may serve a call that needs an active security
 * domain (|need_domain|) or just a ready node; on refusal it finishes |call| with
 * UNAVAILABLE (starting or stopping) or FAILED_PRECONDITION (not activated, with
 * how to activate) and returns false. Loop thread. */
bool mh_node_gate(struct mh_node *n, struct mh_rpc_call *call, bool need_domain);

/* Wall-clock seconds for command timestamps and nbf/exp checks. */
int64_t mh_node_now(void);

/* mh_node_request_id copies the client's request id if it is 1..64 printable ASCII
 * characters, else makes a random one, into |out| (65 bytes). MH_EINVAL for a
 * client id that is present but malformed. */
MH_MUST_USE int mh_node_request_id(const char *client, char out[65]);

#endif
