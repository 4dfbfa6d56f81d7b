/* status: the one table from mhsm error codes to gRPC status codes, at the server's edge. */
#ifndef MH_NODE_STATUS_H
#define MH_NODE_STATUS_H

#include "node/rpc.h"

/* mh_status_from_err maps 0 or a negative MH_E* / -errno code to a gRPC status. */
enum mh_grpc_status mh_status_from_err(int err);

/* mh_rpc_fail_err ends |call| with the status of |err| and the message
 * "<what>: <mh_strerror(err)>" (or just the latter when |what| is NULL). |what| is
 * for people and must carry no secret. Internal failures (storage, crypto library)
 * are logged with the call id and answered with a generic message. Loop thread. */
void mh_rpc_fail_err(struct mh_rpc_call *call, int err, const char *what);

#endif
