#include "node/authz.h"

#include <string.h>

#include "common/log.h"
#include "consensus/peer.h"

bool mh_authz_check(struct mh_node *n, struct mh_rpc_call *call, enum mh_action a,
                    const char *key_name)
{
    const char *action = a == MH_ACT_ANY_CLIENT ? "(any client)" : mh_rbac_action_name(a);
    (void)n;
    const char *who = mh_rpc_call_principal(call);
    /* Node certificates come from the same CA as clients' and unlock the peer
     * channel; a stolen or misused one must not also reach the keys. */
    if (strncmp(who, MH_PEER_URI_PREFIX, strlen(MH_PEER_URI_PREFIX)) == 0) {
        MH_INFO("authz", "call=%llu principal=%s action=%s scope=/keys%s%s decision=deny",
                (unsigned long long)mh_rpc_call_id(call), who, action, key_name != NULL ? "/" : "",
                key_name != NULL ? key_name : "");
        mh_rpc_fail(call, MH_GRPC_PERMISSION_DENIED,
                    "node certificates cannot call the data plane");
        return false;
    }
    /* Allow-all until issue 5: the handshake already proved a certificate from the
     * configured CA. The decision is logged so every request leaves a trace. */
    MH_DEBUG("authz", "call=%llu principal=%s action=%s scope=/keys%s%s decision=allow",
             (unsigned long long)mh_rpc_call_id(call), who, action, key_name != NULL ? "/" : "",
             key_name != NULL ? key_name : "");
    return true;
}

void mh_authz_invalidate(struct mh_node *n)
{
    (void)n; /* no cache yet: every decision is made afresh */
}
