/* audit: this node's audit log: one JSON line per request, hash-chained, checkpoints signed.
 *
 * The rpc transport reports every finished request (mh_rpc_done) and mh_audit_request
 * appends one record to the current file with write(2) on the loop thread before
 * the answer is sent (an answer whose record cannot be written becomes
 * UNAVAILABLE). The format is crypto/auditlog's; a request record has, in order:
 *   seq, prevHash, nodeId, time (ISO 8601 UTC with milliseconds, when the request
 *   arrived), category ("AuditEvent"), operationName (Azure's, e.g. "KeySign",
 *   "KeyCreate", "RoleAssignmentCreate", "SecurityDomainDownload"; "UnknownMethod"
 *   for unrouted paths), operationVersion ("mhsm.v1"), resultType ("Success" or
 *   "Failure"), resultSignature (HTTP reason phrase of httpStatusCode, e.g. "OK",
 *   "Forbidden"), resultDescription (the status message, cut at 256 bytes),
 *   httpStatusCode (gRPC status mapped the way Key Vault answers: OK 200,
 *   INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND
 *   404, ALREADY_EXISTS / FAILED_PRECONDITION 409, RESOURCE_EXHAUSTED 429,
 *   CANCELLED 499, INTERNAL/UNKNOWN/DATA_LOSS 500, UNIMPLEMENTED 501, UNAVAILABLE
 *   503, DEADLINE_EXCEEDED 504; a bare HTTP answer keeps its own), grpcStatus,
 *   durationMs, callerIpAddress (without port), identity ({"claim":{"oid":
 *   principal}}), requestUri (the gRPC path), resource (the HSM name),
 *   correlationId (the write's request id, omitted when none), callId,
 *   clientGone (true when the client reset, disconnected, or got a deadline or
 *   drain answer before the handler finished; resultType etc. are then still the
 *   handler's outcome on this node) with clientStatus (the gRPC status the client
 *   got, absent when none reached it), and
 *   properties {dataAction, scope, decision ("allow"/"deny"), keyName, keyVersion}
 *   with only the members known.
 * Never plaintext, digests, signatures, key material or request bodies.
 *
 * Files: <dir>/audit-<20-digit first seq>.jsonl, mode 0600, O_APPEND; dir 0700.
 * At open the newest file's last complete line is read to continue the chain (a
 * new file is started at every start, with an "AuditStart" record). A file is
 * rotated when it reaches max_file_bytes: a checkpoint ends it (when a signing key
 * is set), it is fsynced, and the next record starts the next file. Checkpoints
 * ("AuditCheckpoint", see crypto/auditlog.h) are written every
 * checkpoint_interval_ms when records were added since the last one, at rotation,
 * when the signing key becomes available, and at close; each is followed by
 * fdatasync of the file.
 *
 * Fail closed: when a write, rotation or fsync fails (read-only directory, full
 * disk, I/O error) the log enters the failed state: mh_audit_refusal returns the
 * reason, the rpc admission hook refuses every request with UNAVAILABLE, and the
 * log retries every second to start a new file (chained to the last line it
 * wrote), writing an "AuditResumed" record naming the failure when it succeeds.
 *
 * Loop thread only. */
#ifndef MH_NODE_AUDIT_H
#define MH_NODE_AUDIT_H

#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "common/secret.h"
#include "crypto/auditlog.h"
#include "node/rpc.h"

struct mh_audit_config {
    const char *dir; /* created (0700) when missing */
    uint64_t node_id;
    const char *hsm_name;    /* the "resource" field */
    uint64_t max_file_bytes; /* rotate at this size */
    unsigned checkpoint_interval_ms;
};

struct mh_audit;

/* mh_audit_open starts the log on |loop|. A directory or file that cannot be
 * written does NOT fail the open: the log starts in the failed state (refusing)
 * and keeps retrying. Errors: MH_ENOMEM, MH_EINVAL (bad config), MH_ECORRUPT (the
 * newest existing file's last line is not a record this module wrote: the chain
 * cannot be continued safely; the message names the file). */
MH_MUST_USE int mh_audit_open(uv_loop_t *loop, const struct mh_audit_config *cfg,
                              struct mh_audit **out);

/* mh_audit_set_signer installs the checkpoint signing key derived from |seed| (the
 * domain's MH_PURPOSE_AUDIT_SIGN key, 32 bytes; copied) and writes a checkpoint
 * when records are unsigned. Errors: MH_ECRYPTO, MH_EAUDIT (checkpoint not
 * written: the log is now failed). */
MH_MUST_USE int mh_audit_set_signer(struct mh_audit *a, const struct mh_secret *seed);

/* The signer's raw public key. MH_ENOTACTIVE before mh_audit_set_signer. */
MH_MUST_USE int mh_audit_public_key(const struct mh_audit *a, uint8_t out[MH_AUDITLOG_PUBKEY_LEN]);

/* mh_audit_request writes the record of |d|. 0, or MH_EAUDIT (the log is failed). */
MH_MUST_USE int mh_audit_request(struct mh_audit *a, const struct mh_rpc_done *d);

/* NULL while records can be written; else why not (static or owned by |a|). */
const char *mh_audit_refusal(const struct mh_audit *a);

/* Writes a checkpoint now (if a signer is set and records are unsigned) and
 * fsyncs. 0 or MH_EAUDIT. */
MH_MUST_USE int mh_audit_checkpoint(struct mh_audit *a);

/* The directory (for GetAuditKey). */
const char *mh_audit_dir(const struct mh_audit *a);

/* mh_audit_close writes the final checkpoint, fsyncs, closes the file, and frees
 * |a| after its timers closed (|a| must not be used after this call; the loop must
 * run once more). NULL is fine. */
void mh_audit_close(struct mh_audit *a);

/* The rpc hooks (data = the struct mh_audit). */
int mh_audit_rpc_hook(void *data, const struct mh_rpc_done *d);
const char *mh_audit_rpc_admit(void *data);

#endif
