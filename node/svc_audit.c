/* svc_audit: mhsm.v1.Audit: the public half of the audit signing key, for `mhsm audit verify`.
 *
 * Any authenticated client may ask (MH_ACT_ANY_CLIENT); the node must be ready and
 * hold the security domain, since the key is derived from it. Loop thread only. */
#include <string.h>

#include "mhsm/v1/audit.pb-c.h"
#include "node/audit.h"
#include "node/authz.h"
#include "node/node.h"
#include "node/status.h"

static void handle_get_audit_key(struct mh_rpc_call *call, const ProtobufCMessage *request,
                                 void *data)
{
    (void)request;
    struct mh_node *n = data;
    if (!mh_node_gate(n, call, true) || !mh_authz_check(n, call, MH_ACT_ANY_CLIENT, NULL))
        return;
    uint8_t pub[MH_AUDITLOG_PUBKEY_LEN];
    char hex[MH_AUDITLOG_PUBKEY_LEN * 2 + 1];
    int rv = n->audit != NULL ? mh_audit_public_key(n->audit, pub) : MH_ENOTACTIVE;
    if (rv < 0) {
        mh_rpc_fail_err(call, rv, "audit signing key");
        return;
    }
    mh_hex_encode(pub, sizeof pub, hex);
    Mhsm__V1__GetAuditKeyResponse resp = MHSM__V1__GET_AUDIT_KEY_RESPONSE__INIT;
    resp.public_key.data = pub;
    resp.public_key.len = sizeof pub;
    resp.public_key_hex = hex;
    resp.node_id = n->cfg->raft_id;
    resp.directory = (char *)mh_audit_dir(n->audit);
    mh_rpc_reply(call, &resp.base);
}

/* Same order as service Audit in proto/mhsm/v1/audit.proto. */
static const mh_rpc_handler_fn audit_handlers[] = {handle_get_audit_key};

int mh_svc_audit_register(struct mh_node *n)
{
    if (mhsm__v1__audit__descriptor.n_methods != sizeof audit_handlers / sizeof audit_handlers[0])
        return MH_EINVAL;
    return mh_rpc_server_add_service(n->rpc, &mhsm__v1__audit__descriptor, audit_handlers, n);
}
