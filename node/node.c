#include "node/node.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "crypto/rand.h"
#include "node/audit.h"
#include "node/authz.h"
#include "node/status.h"

bool mh_node_gate(struct mh_node *n, struct mh_rpc_call *call, bool need_domain)
{
    if (n->stopping) {
        mh_rpc_fail(call, MH_GRPC_UNAVAILABLE, "the node is shutting down; retry on another node");
        return false;
    }
    if (!n->ready) {
        mh_rpc_fail(call, MH_GRPC_UNAVAILABLE, "the node is starting; retry shortly");
        return false;
    }
    if (!mh_cluster_ready(n->cluster)) {
        char msg[256];
        snprintf(msg, sizeof msg, "this node cannot serve now: %s; retry, or ask another node",
                 mh_cluster_unready_reason(n->cluster));
        mh_rpc_fail(call, MH_GRPC_UNAVAILABLE, msg);
        return false;
    }
    if (need_domain && n->domain == NULL) {
        Mhsm__Internal__DomainRecord *dom = NULL;
        int rv = mh_store_get_domain(n->store, &dom);
        mh_store_free(dom);
        if (rv == 0) {
            mh_rpc_fail(call, MH_GRPC_UNAVAILABLE,
                        "the HSM is activated, but this node is still waiting for the security "
                        "domain from the other members; retry shortly or ask another node");
            return false;
        }
        mh_rpc_fail(call, MH_GRPC_FAILED_PRECONDITION,
                    "the HSM is not activated: download the security domain first "
                    "(mhsm security-domain download --sd-wrapping-keys c1.pem c2.pem c3.pem "
                    "--sd-quorum 2 --security-domain-file sd.json)");
        return false;
    }
    return true;
}

void mh_node_domain_loaded(struct mh_node *n)
{
    /* Role state may have been read before the domain arrived; nothing in it
     * depends on the domain, but a fresh start is cheap and obviously right. */
    mh_authz_invalidate(n);
    if (n->audit == NULL || n->domain == NULL)
        return;
    int rv = mh_audit_set_signer(n->audit, &n->domain->audit);
    if (rv < 0)
        MH_ERROR("audit", "audit signing key not installed: %s", mh_strerror(rv));
}

int64_t mh_node_now(void)
{
    return (int64_t)time(NULL);
}

int mh_node_request_id(const char *client, char out[65])
{
    size_t n = strlen(client);
    if (n == 0)
        return mh_rand_hex(out, 16);
    if (n > 64)
        return MH_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (client[i] < 0x21 || client[i] > 0x7e)
            return MH_EINVAL;
    memcpy(out, client, n + 1);
    return 0;
}
