#include "node/status.h"

#include <errno.h>
#include <stdio.h>

#include "common/log.h"

enum mh_grpc_status mh_status_from_err(int err)
{
    switch (err) {
    case 0:
        return MH_GRPC_OK;
    case MH_EINVAL:
    case MH_EOVERFLOW:
    case MH_ETRUNC:
    case MH_EBASE64:
    case MH_EJSON:
    case MH_EUNSUPPORTED:
    case MH_EALGKEY:
    case MH_EDIGESTLEN:
    case MH_EBADKEY:
    case MH_EWEAKKEY:
    case MH_EIVLEN:
    case MH_EINPUTLEN:
    case MH_ECERT:
    case MH_EPEM:
    case MH_EJWE:
    case MH_ESDFILE:
    case MH_EQUORUM:
    case MH_EBACKUP:
    case MH_EPROTO:
    case MH_EREQUESTID:
    case MH_EAUTH:    /* a GCM tag that does not match the caller's inputs */
    case MH_EDECRYPT: /* the caller's ciphertext does not decrypt */
    case MH_EBADSIG:
        return MH_GRPC_INVALID_ARGUMENT;
    case MH_ENOTFOUND:
        return MH_GRPC_NOT_FOUND;
    case MH_EEXIST:
    case MH_EACTIVE:
        return MH_GRPC_ALREADY_EXISTS;
    case MH_ENOTACTIVE:
    case MH_EDELETED:
    case MH_ENOTDELETED:
    case MH_EDISABLED:
    case MH_ENOTYET:
    case MH_EEXPIRED:
    case MH_EKEYOPS:
    case MH_ENOPRIVATE:
    case MH_EDOMAIN:
    case MH_EBUSY:
    case MH_EBUILTIN:
    case MH_EINUSE:
    case MH_ELOCKOUT:
        return MH_GRPC_FAILED_PRECONDITION;
    case MH_ETOOBIG:
    case MH_ELIMIT:
    case MH_ENOSPACE:
        return MH_GRPC_RESOURCE_EXHAUSTED;
    case MH_EPERM:
        return MH_GRPC_PERMISSION_DENIED;
    case MH_EUNAVAILABLE:
    case MH_EPEER:
    case MH_EAUDIT:
        return MH_GRPC_UNAVAILABLE;
    case MH_ECANCELLED:
        return MH_GRPC_CANCELLED;
    case MH_ETIMEDOUT:
        return MH_GRPC_DEADLINE_EXCEEDED;
    case MH_EUNIMPLEMENTED:
        return MH_GRPC_UNIMPLEMENTED;
    case MH_ECORRUPT:
        return MH_GRPC_DATA_LOSS;
    case MH_ENOMEM:
        return MH_GRPC_RESOURCE_EXHAUSTED;
    default:
        return MH_GRPC_INTERNAL;
    }
}

void mh_rpc_fail_err(struct mh_rpc_call *call, int err, const char *what)
{
    enum mh_grpc_status st = mh_status_from_err(err);
    char msg[512];
    if (st == MH_GRPC_INTERNAL || st == MH_GRPC_DATA_LOSS) {
        MH_ERROR("node", "call=%llu method=%s internal error %s (%s)",
                 (unsigned long long)mh_rpc_call_id(call), mh_rpc_call_method(call),
                 mh_errname(err), what != NULL ? what : "-");
        snprintf(msg, sizeof msg, "internal error (call %llu; see the server log)",
                 (unsigned long long)mh_rpc_call_id(call));
    } else if (what != NULL) {
        snprintf(msg, sizeof msg, "%s: %s", what, mh_strerror(err));
    } else {
        snprintf(msg, sizeof msg, "%s", mh_strerror(err));
    }
    mh_rpc_fail(call, st, msg);
}
