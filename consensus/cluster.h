/* cluster: canonical/raft glue: the replicated log under the FSM, and proposals.
 *
 * This issue runs a cluster of one voter (issue 4 adds peers and the TLS
 * transport). raft keeps its log and snapshots in <data_dir>/raft/ and fsyncs an
 * entry before it commits, so a command acknowledged through mh_cluster_propose is
 * durable. At start raft restores the last snapshot and replays the log into a
 * freshly wiped store; the cluster reports ready once it is leader and a barrier
 * proposed after election has been applied (so reads see everything committed).
 *
 * Details that raft 0.15 imposes (see the report of issue 3 and tech-notes 1):
 * - Transport: this raft_uv_transport opens no socket (listen accepts
 *   nothing, connect fails with RAFT_NOCONNECTION): a one-voter cluster never
 *   talks to a peer, and raft's stock TCP transport would listen unauthenticated.
 *   Issue 4 replaces it with the mutual-TLS transport.
 * - FSM: struct raft_fsm version 1. Snapshots are serialized on the loop thread
 *   (mh_fsm_snapshot) every snapshot_threshold entries; restore uses
 *   mh_fsm_restore. The FSM's apply index is raft_last_applied() + 1.
 * - Entries: raft 0.15's segment writer needs entry lengths that are multiples of
 *   8 (its assert is compiled out in Debian's build, and odd lengths silently
 *   corrupt the log on disk). Proposals are padded with an unknown protobuf field
 *   MH_CLUSTER_PAD_FIELD (bytes, zero-filled) that every parser skips.
 * - raft_uv's auto-recovery is off: a damaged log makes start fail (MH_ECORRUPT,
 *   logged with raft's message) instead of silently dropping acknowledged entries.
 * - The directory is flock'd for the cluster's lifetime: a second process (or a
 *   second cluster in this process) gets MH_ELOCKED.
 * - If the FSM fails to apply (MH_ESTORE/MH_ENOMEM), the cluster stops being
 *   ready for good and logs an error: the node must stop.
 *
 * Loop thread only. */
#ifndef MH_CONSENSUS_CLUSTER_H
#define MH_CONSENSUS_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "consensus/fsm.h"

/* Entry padding: protobuf field 1000, length-delimited (tag varint 0xc2 0x3e), never
 * declared in Command (state.proto should reserve it). */
#define MH_CLUSTER_PAD_FIELD 1000
#define MH_CLUSTER_PAD_TAG0  0xc2
#define MH_CLUSTER_PAD_TAG1  0x3e

struct mh_cluster_config {
    const char *dir;              /* raft data directory (created if missing) */
    uint64_t id;                  /* this node's raft id, >= 1 */
    const char *address;          /* this node's raft address "host:port" */
    unsigned election_timeout_ms; /* 0: 1000 */
    unsigned heartbeat_ms;        /* 0: 100 */
    unsigned snapshot_threshold;  /* 0: 1024 entries */
    unsigned snapshot_trailing;   /* 0: 8192 entries */
};

struct mh_cluster;

/* A proposal: caller-owned, must stay valid until |cb| runs (always exactly once,
 * on the loop thread, possibly before mh_cluster_propose returns is NOT allowed: it
 * is always later). rc: 0 when committed and applied (then |res| is the FSM's
 * outcome, which may itself be a failure), MH_EUNAVAILABLE when not leader or
 * leadership was lost (outcome unknown: retry with the same request id),
 * MH_ESTORE/MH_ENOMEM otherwise. |res| is NULL when rc != 0 and is valid only
 * during the callback (copy what you need). */
struct mh_proposal;
typedef void (*mh_propose_cb)(struct mh_proposal *p, int rc, const struct mh_fsm_result *res);
struct mh_proposal {
    mh_propose_cb cb;
    void *data;           /* for the caller */
    uint8_t private_[96]; /* raft request and bookkeeping; do not touch */
};

/* mh_cluster_start opens raft in cfg->dir with |fsm| as its state machine,
 * bootstraps a one-voter configuration on first start (RAFT_CANTBOOTSTRAP on later
 * starts is expected and ignored), and starts it; readiness follows on the loop.
 * |fsm|'s store must be freshly opened (empty): raft restores its last snapshot
 * and replays the log into it. Errors: MH_ECONFIG (missing dir/address, id 0),
 * MH_ELOCKED, -errno, MH_ESTORE, MH_ECORRUPT (damaged log), MH_ENOMEM. After a failure past
 * raft_init the memory is released by close callbacks, so the loop must run once more. */
MH_MUST_USE int mh_cluster_start(uv_loop_t *loop, const struct mh_cluster_config *cfg,
                                 struct mh_fsm *fsm, struct mh_cluster **out);

/* Ready to serve: leader known and everything committed before the last election
 * applied locally. */
bool mh_cluster_ready(const struct mh_cluster *c);

/* mh_cluster_propose packs |cmd| and appends it to the log. Errors returned directly
 * (cb not called): MH_EUNAVAILABLE (not ready/not leader), MH_ETOOBIG (over
 * MH_FSM_MAX_COMMAND), MH_ENOMEM. */
MH_MUST_USE int mh_cluster_propose(struct mh_cluster *c, const Mhsm__Internal__Command *cmd,
                                   struct mh_proposal *p, mh_propose_cb cb);

/* mh_cluster_stop closes raft (pending proposals complete with MH_EUNAVAILABLE) and
 * calls |done| when every handle is closed and the directory lock is released;
 * then mh_cluster_free. A second stop is ignored. */
void mh_cluster_stop(struct mh_cluster *c, void (*done)(void *arg), void *arg);
void mh_cluster_free(struct mh_cluster *c);

#endif
