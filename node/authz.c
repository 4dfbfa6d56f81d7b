#include "node/authz.h"

#include "common/log.h"

bool mh_authz_check(struct mh_node *n, struct mh_rpc_call *call, const char *action,
                    const char *key_name)
{
    (void)n;
    /* Allow-all until issue 5: the handshake already proved a certificate from the
     * configured CA. The decision is logged so every request leaves a trace. */
    MH_DEBUG("authz", "call=%llu principal=%s action=%s scope=/keys%s%s decision=allow",
             (unsigned long long)mh_rpc_call_id(call), mh_rpc_call_principal(call), action,
             key_name != NULL ? "/" : "", key_name != NULL ? key_name : "");
    return true;
}
