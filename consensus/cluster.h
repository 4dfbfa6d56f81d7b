/* cluster: canonical/raft glue: the replicated log under the FSM, proposals from any
 * node, membership, and who may serve.
 *
 * Members. Every member bootstraps with the same configuration (cfg->members, which
 * must contain this node's id and address): RAFT_CANTBOOTSTRAP on later starts is
 * expected and ignored, so a node restarted later rejoins from its data directory. A
 * node started with cfg->join never bootstraps: it waits, with an empty
 * configuration, until the leader adds it (mh_cluster_change ADD). With cfg->peer
 * NULL the cluster is a single voter on a transport that opens no socket (unit
 * tests); otherwise raft's streams and the peer requests run over consensus/peer's
 * mutual TLS.
 *
 * Writes from any node. mh_cluster_propose on the leader raft_applies the command;
 * on a follower it forwards the packed command to the leader over the peer channel,
 * the leader raft_applies it and answers with the entry's index and the FSM's
 * outcome, and the follower calls back only once its own FSM has applied that
 * index (a client reads its own writes on the node it asked). Outcome unknown
 * (leadership lost, leader unreachable, no leader, timed out) is MH_EUNAVAILABLE:
 * retry with the same request id, which the FSM applies at most once.
 *
 * Serving. A node serves reads and cryptographic operations (mh_cluster_ready) only
 * while: a leader is known; this node has applied everything committed when it
 * first saw that leader in this term; and, on a follower, something arrived from
 * the leader within one election timeout, on the leader, something arrived from a
 * majority of voters (itself included) within one election timeout. A node cut off
 * from the majority therefore refuses within one election timeout, before a new
 * leader elsewhere (which needs at least that long) can commit a change it would
 * not see.
 *
 * Details that raft 0.15 imposes (see the report of issue 3 and tech-notes 1):
 * - FSM: struct raft_fsm version 2. Snapshots are serialized on the loop thread
 *   (mh_fsm_snapshot) every snapshot_threshold entries into a buffer the cluster
 *   owns; restore uses mh_fsm_restore. (Version 3, serializing on the thread pool,
 *   needs io->async_work, which Debian's raft_uv 0.15 lacks.) The FSM's apply index is
 * raft_last_applied() + 1.
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
 * - raft_transfer is best effort on 0.15: the result reports the leader after it.
 *
 * Loop thread only. */
#ifndef MH_CONSENSUS_CLUSTER_H
#define MH_CONSENSUS_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "consensus/fsm.h"
#include "consensus/peer.h"
#include "internal/peer.pb-c.h"

/* Entry padding: protobuf field 1000, length-delimited (tag varint 0xc2 0x3e), never
 * declared in Command (state.proto should reserve it). */
#define MH_CLUSTER_PAD_FIELD 1000
#define MH_CLUSTER_PAD_TAG0  0xc2
#define MH_CLUSTER_PAD_TAG1  0x3e

#define MH_CLUSTER_MAX_MEMBERS 16

struct mh_cluster_member {
    uint64_t id;
    char address[128]; /* raft address "host:port" */
};

struct mh_cluster_config {
    const char *dir;                         /* raft data directory (created if missing) */
    uint64_t id;                             /* this node's raft id, >= 1 */
    const char *address;                     /* this node's raft address "host:port" */
    const struct mh_cluster_member *members; /* bootstrap configuration (all voters) */
    size_t n_members;                        /* 0: this node alone (unless join) */
    bool join;                               /* never bootstrap: wait to be added */
    struct mh_peer *peer;                    /* NULL: single voter without sockets (tests) */
    unsigned election_timeout_ms;            /* 0: 1000 */
    unsigned heartbeat_ms;                   /* 0: 100 */
    unsigned snapshot_threshold;             /* 0: 8192 entries */
    unsigned snapshot_trailing;              /* 0: 8192 entries */
    unsigned forward_timeout_ms;             /* a forwarded proposal's limit; 0: 10000 */
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
    void *data;            /* for the caller */
    uint8_t private_[512]; /* raft request, forwarding, bookkeeping; do not touch */
};

/* mh_cluster_start opens raft in cfg->dir with |fsm| as its state machine,
 * bootstraps cfg->members on first start (unless join; RAFT_CANTBOOTSTRAP on later
 * starts is expected and ignored), and starts it; readiness follows on the loop.
 * |fsm|'s store must be freshly opened (empty): raft restores its last snapshot
 * and replays the log into it. Errors: MH_ECONFIG (missing dir/address, id 0),
 * members without this node, duplicate ids), MH_ELOCKED, -errno, MH_ESTORE,
 * MH_ECORRUPT (damaged log), MH_ENOMEM. After a failure past
 * raft_init the memory is released by close callbacks, so the loop must run once more. */
MH_MUST_USE int mh_cluster_start(uv_loop_t *loop, const struct mh_cluster_config *cfg,
                                 struct mh_fsm *fsm, struct mh_cluster **out);

/* Ready to serve reads and crypto (see "Serving" above). */
bool mh_cluster_ready(const struct mh_cluster *c);

/* True once the FSM failed to apply an entry: the node must stop (exit non-zero);
 * its state can no longer follow the log. */
bool mh_cluster_failed(const struct mh_cluster *c);

/* Why not ready, as a sentence for a client ("no raft leader known", "no contact
 * with the leader (node 2) for 1532 ms", "catching up: applied 10 of 42", ...);
 * "" when ready. Valid until the next call on the loop. */
const char *mh_cluster_unready_reason(struct mh_cluster *c);

/* mh_cluster_propose packs |cmd| and appends it to the log, on the leader directly,
 * from a follower through the leader (see "Writes from any node"). Errors returned
 * directly (cb not called): MH_EUNAVAILABLE (not ready, no leader), MH_ETOOBIG (over
 * MH_FSM_MAX_COMMAND), MH_ENOMEM. */
MH_MUST_USE int mh_cluster_propose(struct mh_cluster *c, const Mhsm__Internal__Command *cmd,
                                   struct mh_proposal *p, mh_propose_cb cb);

/* ---- membership and status (the control plane) ---------------------------- */

/* A membership or leadership change, run by the leader (forwarded there from a
 * follower). Returns 0 and then cb(rc, message) exactly once, later, on the loop, or
 * an error directly without cb (MH_EINVAL for a malformed change, MH_EUNAVAILABLE
 * with no leader known, MH_ENOMEM). In cb, rc 0 when done;
 * MH_EINVAL (unknown op, id 0, empty address, removing the last voter), MH_EEXIST
 * (ADD of an id already a member), MH_ENOTFOUND (REMOVE/TRANSFER of a non-member),
 * MH_EBUSY (another change is in progress), MH_EUNAVAILABLE (no leader, leadership
 * lost: check the status), MH_ETIMEDOUT. |message| says what happened, e.g.
 * "node 4 added and promoted to voter" or raft's error text. */
struct mh_cluster_change;
typedef void (*mh_cluster_change_cb)(struct mh_cluster_change *req, int rc, const char *message);
struct mh_cluster_change {
    void *data;
    mh_cluster_change_cb cb;
    uint8_t private_[384]; /* raft requests, forwarding; do not touch */
};
MH_MUST_USE int mh_cluster_change(struct mh_cluster *c, const Mhsm__Internal__MemberChange *chg,
                                  struct mh_cluster_change *req, mh_cluster_change_cb cb);

struct mh_cluster_member_status {
    uint64_t id;
    char address[128];
    int role;                /* RAFT_VOTER, RAFT_STANDBY, RAFT_SPARE */
    int64_t last_contact_ms; /* -1: self or never */
};

struct mh_cluster_status {
    uint64_t id;
    int state; /* RAFT_UNAVAILABLE, RAFT_FOLLOWER, RAFT_CANDIDATE, RAFT_LEADER */
    uint64_t leader_id;
    char leader_address[128];
    uint64_t term, commit_index, applied_index, last_index;
    int64_t leader_contact_ms; /* 0 on the leader, -1 when no leader */
    bool serving;
    char reason[160];
    size_t n_members;
    struct mh_cluster_member_status members[MH_CLUSTER_MAX_MEMBERS];
};
void mh_cluster_status(struct mh_cluster *c, struct mh_cluster_status *out);

/* Whether |id| is in the current configuration (any role). */
bool mh_cluster_is_member(struct mh_cluster *c, uint64_t id);

/* ---- peer requests the node answers (the security domain) --------------- */

/* The node answers DomainFetch: given the requested domain id and the requester's
 * certificate key, fill |resp| (rc, message, wrapped_root; strings malloc'd, the
 * cluster frees them after sending). Called only for requesters that are members. */
typedef void (*mh_cluster_domain_fn)(void *arg, uint64_t from, const ProtobufCBinaryData *domain_id,
                                     EVP_PKEY *requester, Mhsm__Internal__PeerResponse *resp);
void mh_cluster_set_domain_provider(struct mh_cluster *c, mh_cluster_domain_fn fn, void *arg);

/* mh_cluster_fetch_domain asks the other members, one at a time in id order, for
 * the domain secret until one answers rc 0. cb exactly once, later: rc 0 and the
 * JWE (valid during cb) from member |from|; else the last failure
 * (MH_ENOTFOUND: nobody has it; MH_EUNAVAILABLE). */
struct mh_cluster_fetch;
typedef void (*mh_cluster_fetch_cb)(struct mh_cluster_fetch *f, int rc, uint64_t from,
                                    const char *jwe);
struct mh_cluster_fetch {
    void *data;
    mh_cluster_fetch_cb cb;
    uint8_t private_[256];
};
MH_MUST_USE int mh_cluster_fetch_domain(struct mh_cluster *c, const uint8_t *domain_id,
                                        size_t id_len, struct mh_cluster_fetch *f,
                                        mh_cluster_fetch_cb cb);

/* mh_cluster_stop closes raft (pending proposals complete with MH_EUNAVAILABLE) and
 * calls |done| when every handle is closed and the directory lock is released;
 * then mh_cluster_free. A second stop is ignored. */
void mh_cluster_stop(struct mh_cluster *c, void (*done)(void *arg), void *arg);
void mh_cluster_free(struct mh_cluster *c);

#endif
