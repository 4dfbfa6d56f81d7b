#include "consensus/cluster.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "common/fsutil.h"
#include "common/log.h"

#define POLL_MS            20
#define FORWARD_TIMEOUT_MS 10000u
#define CHANGE_TIMEOUT_MS  120000u /* promotion to voter runs raft's catch-up rounds */
#define FETCH_TIMEOUT_MS   5000u
#define MAX_PEER_MESSAGE   (MH_FSM_MAX_COMMAND + 4096u)
#define MAX_ACK_SERVERS    16 /* members tracked for apply acknowledgements */

/* A forwarded proposal waiting until this node's FSM applied the leader's index. */
struct prop_priv {
    struct raft_apply apply; /* leader path */
    struct mh_cluster *c;
    uint64_t index;      /* the entry's raft index, once known */
    uint64_t deadline;   /* uv_now() bound for the local apply */
    uint64_t release_at; /* fenced: not answered before this uv_now() */
    bool fence;
    struct mh_peer_call call; /* follower path: the call to the leader */
    struct mh_fsm_result res;
    struct prop_priv *next; /* waiters list */
};
_Static_assert(sizeof(struct prop_priv) <= sizeof(((struct mh_proposal *)0)->private_),
               "mh_proposal.private_ too small");

/* raft 0.15 keeps using a transfer's embedded send request after the transfer's
 * callback (the TimeoutNow message may still sit in a connecting client's queue), so
 * the cluster owns each one until raft is closed. */
struct xfer {
    struct raft_transfer t;
    struct change_priv *cp; /* NULL once answered */
    struct xfer *next;
};

/* The leader's view of what a member has applied (AppliedWait answers). */
struct ack_state {
    uint64_t id;
    uint64_t term;  /* the leader term the figures below belong to */
    uint64_t acked; /* highest applied index the member reported */
    uint64_t asked; /* the index the outstanding request asked for */
    uint64_t want;  /* highest index a waiting write needs */
    bool busy;      /* one request outstanding at a time */
};

/* An AppliedWait this node answers once its FSM applied |index|. */
struct applied_wait {
    struct mh_peer_req *req;
    uint64_t index;
    uint64_t deadline;
    struct applied_wait *next;
};

struct change_priv {
    struct raft_change change;
    struct mh_peer_call call;
    struct mh_cluster *c;
    uint64_t id;
    int op;
};
_Static_assert(sizeof(struct change_priv) <= sizeof(((struct mh_cluster_change *)0)->private_),
               "mh_cluster_change.private_ too small");

struct fetch_priv {
    struct mh_peer_call call;
    struct mh_cluster *c;
    uint64_t last_id; /* the member asked last; members are asked in id order */
    int last_rc;
    uint8_t domain_id[32];
    size_t id_len;
};
_Static_assert(sizeof(struct fetch_priv) <= sizeof(((struct mh_cluster_fetch *)0)->private_),
               "mh_cluster_fetch.private_ too small");

struct mh_cluster {
    uv_loop_t *loop;
    struct mh_fsm *fsm;
    struct mh_peer *peer;
    uint64_t id;
    unsigned election_timeout_ms;
    unsigned forward_timeout_ms;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct raft_fsm rfsm;
    uv_timer_t poll;  /* barrier, follower catch-up, waiter deadlines */
    uv_timer_t wake;  /* completes waiters on the loop turn after an apply */
    uv_idle_t tdefer; /* never started: closing it defers the socketless transport's close cb */
    raft_uv_transport_close_cb tclose_cb;
    struct raft_barrier barrier;
    /* Commit push: raft 0.15 tells followers a new commit index only with the next
     * AppendEntries (new entries or the heartbeat), so a follower waiting to apply a
     * forwarded write, and a leader waiting for apply acknowledgements, would wait
     * up to a heartbeat. After applying commands, the leader appends an empty barrier
     * entry when no entry was proposed since: its AppendEntries carries the commit. */
    uv_timer_t push;
    struct raft_barrier push_barrier;
    bool push_pending, push_wanted;
    uint64_t n_appends, push_seen;
    /* Apply acknowledgements (restricting writes). */
    struct ack_state acks[MAX_ACK_SERVERS];
    struct applied_wait *applied_waits; /* inbound, parked */
    uint64_t removed_at;                /* uv_now() of the last member removal; 0: none */
    struct mh_fsm_result result;        /* fsm apply -> raft apply cb (same loop turn) */
    /* the snapshot being taken (fsm version 3) */
    struct mh_fsm_snap *snap;
    struct raft_buffer snap_buf;
    uint64_t snap_index, snap_started;
    int snap_rc;
    unsigned async_jobs; /* io_async_work jobs running */
    bool close_deferred; /* raft_close waits for them */
    struct prop_priv *waiters;
    struct xfer *xfers; /* every transfer ever started, freed at close */
    mh_cluster_domain_fn domain_fn;
    void *domain_arg;
    /* serving state */
    uint64_t barrier_term; /* term in which this node's leader barrier was applied */
    uint64_t follow_term, follow_leader, catchup_target;
    bool caught_up;
    bool target_known;    /* the leader answered the read-index request */
    uint64_t follow_gen;  /* bumped on every reset: late read-index answers are ignored */
    uint64_t ri_gen;      /* the generation a read-index request was sent for */
    uint64_t lease_start; /* raft's election_timer_start when last looked at */
    uint64_t fence_index; /* not serving below this applied index (a lagging member) */
    bool was_serving;
    char reason[160];
    int lock_fd;
    int handles; /* open uv handles of ours */
    bool barrier_pending, stopping, failed, free_on_close;
    void (*done)(void *arg);
    void *done_arg;
};

static int map_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
    case RAFT_NOCONNECTION:
        return MH_EUNAVAILABLE;
    case RAFT_NOMEM:
        return MH_ENOMEM;
    case RAFT_TOOBIG:
        return MH_ETOOBIG;
    case RAFT_CORRUPT:
        return MH_ECORRUPT;
    case RAFT_CANTCHANGE:
        return MH_EBUSY;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return MH_EEXIST;
    case RAFT_BADID:
    case RAFT_NOTFOUND:
        return MH_ENOTFOUND;
    case RAFT_BADROLE:
    case RAFT_INVALID:
        return MH_EINVAL;
    default:
        return MH_ESTORE;
    }
}

static uint64_t now_ms(const struct mh_cluster *c)
{
    return uv_now(c->loop);
}

/* ---- the socketless transport (single voter without a peer endpoint) ------- */

/* Used when no peer endpoint is given (unit tests of one voter): listen accepts
 * nothing and connect fails. raft's own TCP transport is never used: it listens
 * unauthenticated and its decoder trusts peers. */
static int tr_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    (void)t;
    (void)id;
    (void)address;
    return 0;
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    (void)t;
    (void)cb;
    return 0;
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    (void)req;
    (void)cb;
    (void)address;
    snprintf(t->errmsg, sizeof t->errmsg, "no peer transport (id %llu)", (unsigned long long)id);
    return RAFT_NOCONNECTION;
}

static void finish_handle(struct mh_cluster *c)
{
    if (--c->handles > 0)
        return;
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    c->lock_fd = -1;
    MH_INFO("raft", "msg=\"stopped\"");
    void (*done)(void *) = c->done;
    void *arg = c->done_arg;
    if (c->free_on_close)
        free(c);
    if (done != NULL)
        done(arg);
}

static void handle_closed(uv_handle_t *h)
{
    finish_handle(h->data);
}

static void tdefer_closed(uv_handle_t *h)
{
    struct mh_cluster *c = h->data;
    raft_uv_transport_close_cb cb = c->tclose_cb;
    c->tclose_cb = NULL;
    /* raft_uv requires the callback to come after close() returned: uvClose may
     * otherwise fire its own close callback twice. */
    if (cb != NULL)
        cb(&c->transport);
    finish_handle(c);
}

static void tr_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct mh_cluster *c = t->impl;
    c->tclose_cb = cb;
    uv_close((uv_handle_t *)&c->tdefer, tdefer_closed);
}

/* ---- waiters: forwarded proposals until the local FSM caught up ------------ */

static bool members_applied(struct mh_cluster *c, uint64_t index);
static void answer_applied_waits(struct mh_cluster *c, bool all);
static void ask_applied(struct mh_cluster *c, uint64_t index);

/* Forwarded proposals, fenced writes or members' AppliedWaits wait on the FSM. */
static bool has_waiting(const struct mh_cluster *c)
{
    return c->waiters != NULL || c->applied_waits != NULL;
}

static void complete_waiters(struct mh_cluster *c, int fail_rc)
{
    uint64_t applied = raft_last_applied(&c->raft);
    uint64_t now = now_ms(c);
    if (c->applied_waits != NULL)
        answer_applied_waits(c, fail_rc != 0);
    struct prop_priv **pp = &c->waiters;
    while (*pp != NULL) {
        struct prop_priv *w = *pp;
        int rc = 1;
        if (fail_rc != 0)
            rc = fail_rc;
        else if (applied >= w->index)
            rc = now >= w->release_at || (w->fence && members_applied(c, w->index)) ? 0 : 1;
        else if (now >= w->deadline) {
            MH_WARN("raft",
                    "msg=\"forwarded entry committed but not applied here in time\" index=%llu "
                    "applied=%llu",
                    (unsigned long long)w->index, (unsigned long long)applied);
            rc = MH_EUNAVAILABLE;
        }
        if (rc == 1) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        struct mh_proposal *p = mh_container_of(w, struct mh_proposal, private_);
        if (rc == 0)
            p->cb(p, 0, &w->res);
        else
            p->cb(p, rc, NULL);
    }
}

static void wake_cb(uv_timer_t *t)
{
    complete_waiters(t->data, 0);
}

/* ---- commit push ------------------------------------------------------------ */

/* Members that may serve: every server of the configuration but this one and the
 * spares (a spare never serves: see unready). */
static bool needs_ack(const struct mh_cluster *c, const struct raft_server *s)
{
    return s->id != c->id && s->role != RAFT_SPARE;
}

static bool has_followers(struct mh_cluster *c)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++)
        if (needs_ack(c, &conf->servers[i]))
            return true;
    return false;
}

static void push_cb(uv_timer_t *t);

static void push_barrier_cb(struct raft_barrier *req, int status)
{
    struct mh_cluster *c = req->data;
    (void)status; /* a failed push only means followers learn the commit at the heartbeat */
    c->push_pending = false;
    if (c->push_wanted && !c->stopping)
        uv_timer_start(&c->push, push_cb, 0, 0);
}

/* Runs on the loop turn after commands were applied here as leader. An entry
 * proposed since then already carried the new commit index to the followers; if
 * none was, an empty barrier entry does. A barrier is not applied to the FSM, so it
 * never asks for another push. */
static void push_cb(uv_timer_t *t)
{
    struct mh_cluster *c = t->data;
    if (!c->push_wanted || c->push_pending || c->stopping || c->failed)
        return;
    c->push_wanted = false;
    if (c->n_appends != c->push_seen || raft_state(&c->raft) != RAFT_LEADER || !has_followers(c))
        return;
    c->push_barrier.data = c;
    if (raft_barrier(&c->raft, &c->push_barrier, push_barrier_cb) == 0)
        c->push_pending = true;
}

/* ---- the FSM under raft (struct raft_fsm version 1) ----------------------- */

static int rfsm_apply(struct raft_fsm *f, const struct raft_buffer *buf, void **result)
{
    struct mh_cluster *c = f->data;
    /* raft applies entry last_applied + 1 and advances last_applied after we return */
    uint64_t index = raft_last_applied(&c->raft) + 1;
    int rv = mh_fsm_apply(c->fsm, index, buf->base, buf->len, &c->result);
    if (rv < 0) {
        /* The state can no longer follow the log: refuse everything from now on.
         * raft keeps the entry unapplied and retries; the node must stop. */
        MH_ERROR("raft", "msg=\"apply failed; node must stop\" index=%llu err=%s",
                 (unsigned long long)index, mh_errname(rv));
        c->failed = true;
        return RAFT_IOERR;
    }
    *result = &c->result;
    if (has_waiting(c) && !c->stopping)
        uv_timer_start(&c->wake, wake_cb, 0, 0);
    if (raft_state(&c->raft) == RAFT_LEADER && c->peer != NULL && !c->stopping) {
        c->push_wanted = true;
        c->push_seen = c->n_appends;
        if (!c->push_pending)
            uv_timer_start(&c->push, push_cb, 0, 0);
    }
    return 0;
}

/* raft_fsm version 3: snapshot() takes the FSM's read view on the loop, at
 * last_applied (raft records that index at the same moment); snapshot_async()
 * serializes it on libuv's thread pool while applies go on; snapshot_finalize() runs
 * on the loop once raft wrote the snapshot (or failed to) and releases everything.
 * The buffer and its one-element array are ours (versions >= 2). Debian's raft_uv
 * 0.15 has no io->async_work, which version 3 needs: io_async_work below is ours. */
static int rfsm_snapshot(struct raft_fsm *f, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct mh_cluster *c = f->data;
    if (c->snap != NULL)
        return RAFT_BUSY; /* raft takes one at a time; never expected */
    int rv = mh_fsm_snapshot_begin(c->fsm, &c->snap);
    if (rv < 0) {
        MH_ERROR("raft", "msg=\"snapshot failed\" err=%s", mh_errname(rv));
        return rv == MH_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    c->snap_buf.base = NULL;
    c->snap_buf.len = 0;
    c->snap_rc = 0;
    c->snap_index = raft_last_applied(&c->raft);
    c->snap_started = now_ms(c);
    *bufs = &c->snap_buf;
    *n_bufs = 1;
    return 0;
}

/* Thread pool: touches only the read view and snap_buf, which the loop leaves alone
 * until finalize. */
static int rfsm_snapshot_async(struct raft_fsm *f, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct mh_cluster *c = f->data;
    uint8_t *data;
    size_t len;
    c->snap_rc = mh_fsm_snapshot_write(c->snap, &data, &len);
    if (c->snap_rc < 0)
        return c->snap_rc == MH_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    c->snap_buf.base = data;
    c->snap_buf.len = len;
    *bufs = &c->snap_buf;
    *n_bufs = 1;
    return 0;
}

static void snap_release(struct mh_cluster *c)
{
    free(c->snap_buf.base);
    c->snap_buf.base = NULL;
    c->snap_buf.len = 0;
    mh_fsm_snapshot_end(c->snap);
    c->snap = NULL;
}

static int rfsm_snapshot_finalize(struct raft_fsm *f, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct mh_cluster *c = f->data;
    if (c->snap_rc < 0)
        MH_ERROR("raft", "msg=\"snapshot failed\" err=%s", mh_errname(c->snap_rc));
    else
        MH_INFO("raft", "msg=\"snapshot taken\" bytes=%zu index=%llu ms=%llu", c->snap_buf.len,
                (unsigned long long)c->snap_index,
                (unsigned long long)(now_ms(c) - c->snap_started));
    snap_release(c);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

/* io->async_work on libuv's thread pool. raft_close is deferred while a job runs
 * (mh_cluster_stop), so raft is alive when the job's callback comes back. */
struct async_job {
    uv_work_t w;
    struct mh_cluster *c;
    struct raft_io_async_work *req;
    raft_io_async_work_cb cb;
    int status;
};

static void async_run(uv_work_t *w)
{
    struct async_job *j = w->data;
    j->status = j->req->work(j->req);
}

static void raft_closed(struct raft *r);

static void async_after(uv_work_t *w, int status)
{
    struct async_job *j = w->data;
    struct mh_cluster *c = j->c;
    c->async_jobs--;
    j->cb(j->req, status == UV_ECANCELED ? RAFT_CANCELED : j->status);
    free(j);
    if (c->close_deferred && c->async_jobs == 0) {
        c->close_deferred = false;
        raft_close(&c->raft, raft_closed);
    }
}

static int io_async_work(struct raft_io *io, struct raft_io_async_work *req,
                         raft_io_async_work_cb cb)
{
    struct mh_cluster *c = mh_container_of(io, struct mh_cluster, io);
    struct async_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return RAFT_NOMEM;
    j->w.data = j;
    j->c = c;
    j->req = req;
    j->cb = cb;
    if (uv_queue_work(c->loop, &j->w, async_run, async_after) != 0) {
        free(j);
        return RAFT_IOERR;
    }
    c->async_jobs++;
    return 0;
}

static int rfsm_restore(struct raft_fsm *f, struct raft_buffer *buf)
{
    struct mh_cluster *c = f->data;
    int rv = mh_fsm_restore(c->fsm, buf->base, buf->len);
    if (rv < 0) {
        MH_ERROR("raft", "msg=\"snapshot restore failed\" err=%s", mh_errname(rv));
        return rv == MH_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    MH_INFO("raft", "msg=\"snapshot restored\" bytes=%zu", buf->len);
    raft_free(buf->base); /* ours on success */
    if (has_waiting(c) && !c->stopping)
        uv_timer_start(&c->wake, wake_cb, 0, 0);
    return 0;
}

/* ---- membership view -------------------------------------------------------- */

static const struct raft_server *find_server(struct mh_cluster *c, uint64_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return &conf->servers[i];
    return NULL;
}

bool mh_cluster_is_member(struct mh_cluster *c, uint64_t id)
{
    return !c->stopping && find_server(c, id) != NULL;
}

static bool contact_fresh(struct mh_cluster *c, uint64_t id)
{
    if (c->peer == NULL)
        return true;
    uint64_t last = mh_peer_last_recv(c->peer, id);
    return last != 0 && now_ms(c) - last < c->election_timeout_ms;
}

/* The leader's configured raft address: the one raft reports is whatever the
 * leader's stream was accepted with, while the configuration has the address its
 * peer channel listens on. */
/* A follower's lease: raft resets election_timer_start only on valid AppendEntries
 * from the current leader (not on any byte from that node, which may meanwhile
 * have been deposed). */
static bool leader_fresh(struct mh_cluster *c)
{
    return now_ms(c) - c->raft.election_timer_start < c->election_timeout_ms;
}

static void leader_of(struct mh_cluster *c, uint64_t *id, const char **address)
{
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&c->raft, &lid, &addr);
    *id = lid;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; lid != 0 && i < conf->n; i++)
        if (conf->servers[i].id == lid)
            addr = conf->servers[i].address;
    *address = addr != NULL ? addr : "";
}

/* NULL when serving; otherwise why not, in c->reason. */
static const char *unready(struct mh_cluster *c)
{
    if (c->stopping)
        return "the node is shutting down";
    if (c->failed)
        return "the state machine failed to apply the log; the node must be restarted";
    int state = raft_state(&c->raft);
    uint64_t lid;
    const char *laddr;
    leader_of(c, &lid, &laddr);
    if (state == RAFT_LEADER) {
        if (c->barrier_term != c->raft.current_term)
            return "newly elected leader, applying the log";
        const struct raft_configuration *conf = &c->raft.configuration;
        unsigned voters = 0, reached = 0;
        for (unsigned i = 0; i < conf->n; i++) {
            if (conf->servers[i].role != RAFT_VOTER)
                continue;
            voters++;
            if (conf->servers[i].id == c->id || contact_fresh(c, conf->servers[i].id))
                reached++;
        }
        if (reached * 2 <= voters) {
            snprintf(c->reason, sizeof c->reason,
                     "leader without a majority: %u of %u voters heard from within %u ms", reached,
                     voters, c->election_timeout_ms);
            return c->reason;
        }
        return NULL;
    }
    if (state != RAFT_FOLLOWER || lid == 0) {
        snprintf(c->reason, sizeof c->reason,
                 "no raft leader known (this node is %s); a majority of the members must be "
                 "reachable",
                 state == RAFT_CANDIDATE ? "a candidate" : "not following");
        return c->reason;
    }
    /* raft resets election_timer_start on every AppendEntries of the leader; two
     * observations more than an election timeout apart mean the lease may have run
     * out in between (a paused process, a stalled loop), and the leader may have
     * answered a restricting write counting on it: catch up again before serving. */
    uint64_t start = c->raft.election_timer_start;
    if (c->lease_start != 0 && start > c->lease_start + c->election_timeout_ms) {
        c->caught_up = false;
        c->follow_term = 0;
        c->follow_gen++;
    }
    c->lease_start = start;
    if (find_server(c, c->id) == NULL) {
        /* A joining node: until the log (or a snapshot) brings the configuration
         * that names it, its state is not the cluster's. */
        snprintf(c->reason, sizeof c->reason,
                 "joining: not yet a member in the replicated configuration (the operator adds "
                 "it with `mhsm cluster add`), or still receiving the state");
        return c->reason;
    }
    if (find_server(c, c->id)->role == RAFT_SPARE) {
        /* raft replicates to a spare while promoting it, which keeps its lease fresh,
         * but the leader asks only members that may serve to acknowledge restricting
         * writes: a spare does not serve. */
        snprintf(c->reason, sizeof c->reason,
                 "a spare (being added or promoted): not serving until it is a voter");
        return c->reason;
    }
    if (raft_last_applied(&c->raft) < c->fence_index) {
        snprintf(c->reason, sizeof c->reason,
                 "lagging behind the leader: applied %llu, a restricting write at %llu was "
                 "answered meanwhile",
                 (unsigned long long)raft_last_applied(&c->raft),
                 (unsigned long long)c->fence_index);
        return c->reason;
    }
    if (!leader_fresh(c)) {
        uint64_t last = c->raft.election_timer_start;
        if (last == 0)
            snprintf(c->reason, sizeof c->reason, "no contact with the leader (node %llu) yet",
                     (unsigned long long)lid);
        else
            snprintf(c->reason, sizeof c->reason,
                     "no contact with the leader (node %llu) for %llu ms (limit %u ms): this "
                     "node may be cut off from the majority",
                     (unsigned long long)lid, (unsigned long long)(now_ms(c) - last),
                     c->election_timeout_ms);
        return c->reason;
    }
    if (!c->caught_up || c->follow_term != c->raft.current_term || c->follow_leader != lid) {
        if (c->follow_term == c->raft.current_term && c->follow_leader == lid && c->target_known &&
            raft_last_applied(&c->raft) < c->catchup_target)
            snprintf(c->reason, sizeof c->reason,
                     "catching up with the leader (node %llu): applied %llu of %llu",
                     (unsigned long long)lid, (unsigned long long)raft_last_applied(&c->raft),
                     (unsigned long long)c->catchup_target);
        else
            snprintf(c->reason, sizeof c->reason,
                     "following a new leader (node %llu); serving in a moment",
                     (unsigned long long)lid);
        return c->reason;
    }
    return NULL;
}

bool mh_cluster_ready(const struct mh_cluster *c)
{
    return unready((struct mh_cluster *)c) == NULL;
}

bool mh_cluster_failed(const struct mh_cluster *c)
{
    return c->failed;
}

const char *mh_cluster_unready_reason(struct mh_cluster *c)
{
    const char *r = unready(c);
    return r != NULL ? r : "";
}

/* ---- readiness: leader barrier, follower catch-up ---------------------------- */

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct mh_cluster *c = req->data;
    c->barrier_pending = false;
    if (c->stopping || c->failed)
        return;
    if (status != 0) {
        MH_WARN("raft", "msg=\"barrier failed\" err=\"%s\"", raft_strerror(status));
        return;
    }
    if (raft_state(&c->raft) != RAFT_LEADER)
        return;
    /* The barrier committed in the current term, so every earlier entry (the whole
     * log replay at start, the previous leader's tail) is applied. */
    c->barrier_term = c->raft.current_term;
    c->removed_at = now_ms(c); /* see members_applied */
    MH_INFO("raft", "msg=\"leader ready\" term=%llu last_applied=%llu",
            (unsigned long long)c->raft.current_term,
            (unsigned long long)raft_last_applied(&c->raft));
}

/* Packs |pr| and sends it to node |id| at |address| (mh_peer_call's contract). */
static int send_request(struct mh_cluster *c, uint64_t id, const char *address,
                        const Mhsm__Internal__PeerRequest *pr, uint64_t timeout_ms,
                        struct mh_peer_call *call, mh_peer_call_cb cb)
{
    size_t n = mhsm__internal__peer_request__get_packed_size(pr);
    uint8_t *msg = malloc(n > 0 ? n : 1);
    if (msg == NULL)
        return MH_ENOMEM;
    mhsm__internal__peer_request__pack(pr, msg);
    int rv = mh_peer_call(c->peer, id, address, msg, n, timeout_ms, call, cb);
    free(msg);
    return rv;
}

struct read_index {
    struct mh_peer_call call;
    struct mh_cluster *c;
    uint64_t gen;
};

static void read_index_done(struct mh_peer_call *call, int rc, const uint8_t *msg, size_t len)
{
    struct read_index *ri = call->data;
    struct mh_cluster *c = ri->c;
    bool current = ri->gen == c->follow_gen && !c->stopping;
    free(ri);
    if (!current)
        return; /* asked before a contact gap or leader change: the answer may be stale */
    Mhsm__Internal__PeerResponse *r =
        rc == 0 ? mhsm__internal__peer_response__unpack(NULL, len, msg) : NULL;
    if (r != NULL && r->rc == 0 && r->leader_id == c->follow_leader &&
        c->follow_term == c->raft.current_term) {
        c->catchup_target = r->index;
        c->target_known = true;
    } else {
        c->ri_gen = 0; /* ask again at the next poll */
    }
    if (r != NULL)
        mhsm__internal__peer_response__free_unpacked(r, NULL);
}

static void ask_read_index(struct mh_cluster *c, uint64_t lid, const char *laddr)
{
    c->ri_gen = c->follow_gen;
    if (c->peer == NULL) {
        c->catchup_target = c->raft.commit_index;
        c->target_known = true;
        return;
    }
    struct read_index *ri = calloc(1, sizeof *ri);
    if (ri == NULL) {
        c->ri_gen = 0;
        return;
    }
    ri->c = c;
    ri->gen = c->follow_gen;
    ri->call.data = ri;
    Mhsm__Internal__ReadIndex rq = MHSM__INTERNAL__READ_INDEX__INIT;
    Mhsm__Internal__PeerRequest pr = MHSM__INTERNAL__PEER_REQUEST__INIT;
    pr.body_case = MHSM__INTERNAL__PEER_REQUEST__BODY_READ_INDEX;
    pr.read_index = &rq;
    if (send_request(c, lid, laddr, &pr, c->election_timeout_ms, &ri->call, read_index_done) != 0) {
        free(ri);
        c->ri_gen = 0;
    }
}

static void poll_cb(uv_timer_t *t)
{
    struct mh_cluster *c = t->data;
    if (c->stopping)
        return;
    if (c->failed) {
        if (has_waiting(c))
            complete_waiters(c, MH_ESTORE);
        return;
    }
    int state = raft_state(&c->raft);
    if (state == RAFT_LEADER) {
        if (c->barrier_term != c->raft.current_term && !c->barrier_pending) {
            c->barrier.data = c;
            int rv = raft_barrier(&c->raft, &c->barrier, barrier_cb);
            if (rv != 0)
                MH_WARN("raft", "msg=\"barrier refused\" err=\"%s\"", raft_strerror(rv));
            else
                c->barrier_pending = true;
        }
        c->caught_up = false;
        c->follow_term = 0;
    } else {
        uint64_t lid;
        const char *laddr;
        leader_of(c, &lid, &laddr);
        if (state == RAFT_FOLLOWER && lid != 0 && leader_fresh(c)) {
            if (c->follow_term != c->raft.current_term || c->follow_leader != lid) {
                /* A new leader (or contact regained): serve once everything the
                 * leader had committed when we asked it is applied here. Our own
                 * commit index is no guide: a follower whose log is behind learns
                 * the leader's commit only as entries arrive. */
                c->follow_term = c->raft.current_term;
                c->follow_leader = lid;
                c->catchup_target = 0;
                c->target_known = false;
                c->caught_up = false;
                c->follow_gen++;
            }
            if (!c->target_known && c->ri_gen != c->follow_gen)
                ask_read_index(c, lid, laddr);
            if (!c->caught_up && c->target_known &&
                raft_last_applied(&c->raft) >= c->catchup_target)
                c->caught_up = true;
        } else {
            if (c->follow_term != 0)
                c->follow_gen++;
            c->caught_up = false;
            c->follow_term = 0;
        }
    }
    if (has_waiting(c))
        complete_waiters(c, 0);
    const char *why = unready(c);
    if (why == NULL && !c->was_serving) {
        MH_INFO("raft", "msg=\"serving\" state=%s term=%llu applied=%llu",
                state == RAFT_LEADER ? "leader" : "follower",
                (unsigned long long)c->raft.current_term,
                (unsigned long long)raft_last_applied(&c->raft));
        c->was_serving = true;
    } else if (why != NULL && c->was_serving) {
        MH_WARN("raft", "msg=\"not serving\" reason=\"%s\"", why);
        c->was_serving = false;
    }
}

/* ---- proposals ---------------------------------------------------------------- */

static struct prop_priv *prop_priv(struct mh_proposal *p)
{
    return (struct prop_priv *)(void *)p->private_;
}

/* Copies |n| packed Command bytes into a raft buffer padded to a multiple of 8 with
 * the unknown field MH_CLUSTER_PAD_FIELD (raft 0.15's segment writer needs it). */
static int padded_buffer(const uint8_t *packed, size_t n, struct raft_buffer *buf)
{
    size_t k = (8 - n % 8) % 8;
    size_t pad = n == 0 ? 8 : k == 0 ? 0 : k < 3 ? k + 8 : k;
    if (n > MH_FSM_MAX_COMMAND - pad)
        return MH_ETOOBIG;
    buf->len = n + pad;
    buf->base = raft_malloc(buf->len);
    if (buf->base == NULL)
        return MH_ENOMEM;
    uint8_t *b = buf->base;
    if (n > 0)
        memcpy(b, packed, n);
    if (pad > 0) {
        b[n] = MH_CLUSTER_PAD_TAG0;
        b[n + 1] = MH_CLUSTER_PAD_TAG1;
        b[n + 2] = (uint8_t)(pad - 3);
        memset(b + n + 3, 0, pad - 3);
    }
    return 0;
}

static void hold(struct mh_cluster *c, struct prop_priv *pv);

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct mh_proposal *p = req->data;
    struct prop_priv *pv = prop_priv(p);
    pv->index = req->index;
    if (status != 0) {
        p->cb(p, map_raft(status), NULL);
        return;
    }
    if (pv->fence) {
        if (pv->c->stopping) {
            /* Applied, but no member was asked to apply it (raft may still run while a
             * snapshot job ends): the outcome is reported unknown, never success. */
            p->cb(p, MH_EUNAVAILABLE, NULL);
            return;
        }
        pv->res = *(const struct mh_fsm_result *)result;
        hold(pv->c, pv);
        return;
    }
    p->cb(p, 0, result);
}

/* Restricting commands (update, delete, purge) are answered by the leader only
 * once no node serves the old state: when every member that may serve has reported
 * (AppliedWait) that it applied them, or else one election timeout after they were
 * applied here, when every member that did not apply them has gone that long
 * without hearing from the leader and stopped serving. */
static bool restricting(const Mhsm__Internal__Command *cmd)
{
    return cmd->body_case == MHSM__INTERNAL__COMMAND__BODY_UPDATE_VERSION ||
           cmd->body_case == MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY ||
           cmd->body_case == MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY;
}

static void hold(struct mh_cluster *c, struct prop_priv *pv)
{
    uint64_t now = now_ms(c);
    pv->release_at = pv->fence ? now + c->election_timeout_ms : 0;
    pv->deadline = (pv->fence ? pv->release_at : now) + c->forward_timeout_ms;
    pv->next = c->waiters;
    c->waiters = pv;
    uv_timer_start(&c->wake, wake_cb, pv->fence ? c->election_timeout_ms : 0, 0);
    if (pv->fence)
        ask_applied(c, pv->index);
}

/* Leader: append |packed| (n bytes). */
static int leader_apply(struct mh_cluster *c, const uint8_t *packed, size_t n,
                        struct mh_proposal *p)
{
    struct raft_buffer buf;
    MH_TRY(padded_buffer(packed, n, &buf));
    struct prop_priv *pv = prop_priv(p);
    memset(&pv->apply, 0, sizeof pv->apply);
    pv->apply.data = p;
    pv->c = c;
    pv->index = 0;
    int rrv = raft_apply(&c->raft, &pv->apply, &buf, 1, apply_cb);
    if (rrv != 0) {
        raft_free(buf.base); /* ownership passes to raft only on success */
        MH_WARN("raft", "msg=\"apply refused\" err=\"%s\"", raft_strerror(rrv));
        return map_raft(rrv);
    }
    c->n_appends++;
    return 0;
}

static int pack_response(const Mhsm__Internal__PeerResponse *r, uint8_t **out, size_t *len)
{
    size_t n = mhsm__internal__peer_response__get_packed_size(r);
    uint8_t *b = malloc(n > 0 ? n : 1);
    if (b == NULL)
        return MH_ENOMEM;
    mhsm__internal__peer_response__pack(r, b);
    *out = b;
    *len = n;
    return 0;
}

static void respond(struct mh_peer_req *req, const Mhsm__Internal__PeerResponse *r)
{
    uint8_t *b = NULL;
    size_t n = 0;
    if (pack_response(r, &b, &n) < 0) {
        /* Out of memory: an empty response decodes as rc 0 with nothing; send a
         * minimal hand-packed failure instead (field 1, zigzag MH_ENOMEM). */
        Mhsm__Internal__PeerResponse f = MHSM__INTERNAL__PEER_RESPONSE__INIT;
        f.rc = MH_ENOMEM;
        uint8_t tmp[16];
        size_t k = mhsm__internal__peer_response__pack(&f, tmp);
        mh_peer_respond(req, tmp, k);
        return;
    }
    mh_peer_respond(req, b, n);
    free(b);
}

static void respond_rc(struct mh_cluster *c, struct mh_peer_req *req, int rc, const char *msg)
{
    Mhsm__Internal__PeerResponse r = MHSM__INTERNAL__PEER_RESPONSE__INIT;
    uint64_t lid;
    const char *laddr;
    leader_of(c, &lid, &laddr);
    r.rc = rc;
    r.message = (char *)(msg != NULL ? msg : mh_strerror(rc));
    r.leader_id = lid;
    respond(req, &r);
}

/* Follower: the leader answered a forwarded proposal. */
static void forward_done(struct mh_peer_call *call, int rc, const uint8_t *msg, size_t len)
{
    struct prop_priv *pv = call->data;
    struct mh_cluster *c = pv->c;
    struct mh_proposal *p = mh_container_of(pv, struct mh_proposal, private_);
    if (rc < 0) {
        MH_WARN("raft", "msg=\"forwarding to the leader failed\" err=%s", mh_errname(rc));
        p->cb(p, MH_EUNAVAILABLE, NULL);
        return;
    }
    Mhsm__Internal__PeerResponse *r = mhsm__internal__peer_response__unpack(NULL, len, msg);
    if (r == NULL) {
        MH_WARN("raft", "msg=\"malformed response from the leader\"");
        p->cb(p, MH_EUNAVAILABLE, NULL);
        return;
    }
    if (r->rc != 0) {
        int frc = r->rc;
        MH_INFO("raft", "msg=\"leader refused a forwarded proposal\" err=%s detail=\"%s\"",
                mh_errname(frc), r->message);
        mhsm__internal__peer_response__free_unpacked(r, NULL);
        p->cb(p, frc == MH_ETOOBIG || frc == MH_ENOMEM ? frc : MH_EUNAVAILABLE, NULL);
        return;
    }
    pv->index = r->index;
    memset(&pv->res, 0, sizeof pv->res);
    pv->res.rc = r->result_rc;
    snprintf(pv->res.name, sizeof pv->res.name, "%s", r->name);
    snprintf(pv->res.version, sizeof pv->res.version, "%s", r->version);
    mhsm__internal__peer_response__free_unpacked(r, NULL);
    if (c->stopping) {
        p->cb(p, MH_EUNAVAILABLE, NULL);
        return;
    }
    /* Answer once this node's own FSM has applied the entry (read your writes). A
     * restricting command was fenced by the leader before it answered. */
    hold(c, pv);
}

int mh_cluster_propose(struct mh_cluster *c, const Mhsm__Internal__Command *cmd,
                       struct mh_proposal *p, mh_propose_cb cb)
{
    if (!mh_cluster_ready(c))
        return MH_EUNAVAILABLE;
    size_t n = mhsm__internal__command__get_packed_size(cmd);
    if (n > MH_FSM_MAX_COMMAND - 16)
        return MH_ETOOBIG;
    uint8_t *packed = malloc(n > 0 ? n : 1);
    if (packed == NULL)
        return MH_ENOMEM;
    if (mhsm__internal__command__pack(cmd, packed) != n) {
        free(packed);
        return MH_EINVAL;
    }
    p->cb = cb;
    struct prop_priv *pv = prop_priv(p);
    pv->c = c;
    pv->release_at = 0;
    pv->fence = false; /* the leader decides (leader_apply's callers) */
    int rv;
    if (raft_state(&c->raft) == RAFT_LEADER) {
        pv->fence = restricting(cmd) && has_followers(c);
        rv = leader_apply(c, packed, n, p);
    } else {
        uint64_t lid;
        const char *laddr;
        leader_of(c, &lid, &laddr);
        Mhsm__Internal__PeerRequest req = MHSM__INTERNAL__PEER_REQUEST__INIT;
        req.body_case = MHSM__INTERNAL__PEER_REQUEST__BODY_PROPOSE;
        req.propose.data = packed;
        req.propose.len = n;
        pv->call.data = pv;
        rv = send_request(c, lid, laddr, &req, c->forward_timeout_ms, &pv->call, forward_done);
    }
    free(packed);
    return rv;
}

/* Leader: a follower forwarded a proposal. */
struct fwd_in {
    struct mh_proposal p;
    struct mh_cluster *c;
    struct mh_peer_req *req;
};

static void fwd_in_done(struct mh_proposal *p, int rc, const struct mh_fsm_result *res)
{
    struct fwd_in *f = p->data;
    if (rc < 0) {
        respond_rc(f->c, f->req, rc, NULL);
    } else {
        Mhsm__Internal__PeerResponse r = MHSM__INTERNAL__PEER_RESPONSE__INIT;
        r.rc = 0;
        r.message = (char *)"";
        r.leader_id = f->c->id;
        r.index = prop_priv(p)->index;
        r.result_rc = res->rc;
        r.name = (char *)res->name;
        r.version = (char *)res->version;
        respond(f->req, &r);
    }
    free(f);
}

static void handle_forward(struct mh_cluster *c, struct mh_peer_req *req, uint64_t from,
                           const ProtobufCBinaryData *cmd)
{
    if (raft_state(&c->raft) != RAFT_LEADER || unready(c) != NULL) {
        respond_rc(c, req, MH_EUNAVAILABLE, "not the leader (or not ready); retry");
        return;
    }
    struct fwd_in *f = calloc(1, sizeof *f);
    if (f == NULL) {
        respond_rc(c, req, MH_ENOMEM, NULL);
        return;
    }
    f->c = c;
    f->req = req;
    f->p.data = f;
    f->p.cb = fwd_in_done;
    /* The leader fences by the command's content, whoever forwarded it. */
    Mhsm__Internal__Command *m = mhsm__internal__command__unpack(NULL, cmd->len, cmd->data);
    prop_priv(&f->p)->fence = m != NULL && restricting(m) && has_followers(c);
    if (m != NULL)
        mhsm__internal__command__free_unpacked(m, NULL);
    int rv = leader_apply(c, cmd->data, cmd->len, &f->p);
    if (rv < 0) {
        MH_WARN("raft", "msg=\"forwarded proposal refused\" from=%llu err=%s",
                (unsigned long long)from, mh_errname(rv));
        respond_rc(c, req, rv, NULL);
        free(f);
    }
}

/* ---- membership changes --------------------------------------------------------- */

static struct change_priv *change_priv(struct mh_cluster_change *r)
{
    return (struct change_priv *)(void *)r->private_;
}

static struct mh_cluster_change *change_of(struct change_priv *cp)
{
    return mh_container_of(cp, struct mh_cluster_change, private_);
}

static void change_finish(struct change_priv *cp, int rc, const char *msg)
{
    struct mh_cluster_change *r = change_of(cp);
    r->cb(r, rc, msg);
}

static void assign_cb(struct raft_change *req, int status)
{
    struct change_priv *cp = req->data;
    char msg[256];
    if (status != 0) {
        snprintf(msg, sizeof msg,
                 "node %llu was added as a spare but its promotion to voter failed: %s (check "
                 "that it runs with join = true and is reachable, then remove and add it again)",
                 (unsigned long long)cp->id, raft_strerror(status));
        MH_WARN("raft", "msg=\"promotion failed\" id=%llu err=\"%s\"", (unsigned long long)cp->id,
                raft_strerror(status));
        change_finish(cp, map_raft(status), msg);
        return;
    }
    snprintf(msg, sizeof msg, "node %llu added, caught up and promoted to voter",
             (unsigned long long)cp->id);
    MH_INFO("raft", "msg=\"member added\" id=%llu", (unsigned long long)cp->id);
    change_finish(cp, 0, msg);
}

static void add_cb(struct raft_change *req, int status)
{
    struct change_priv *cp = req->data;
    struct mh_cluster *c = cp->c;
    char msg[256];
    if (status != 0) {
        snprintf(msg, sizeof msg, "adding node %llu failed: %s", (unsigned long long)cp->id,
                 raft_strerror(status));
        change_finish(cp, map_raft(status), msg);
        return;
    }
    if (c->stopping || raft_state(&c->raft) != RAFT_LEADER) {
        snprintf(msg, sizeof msg,
                 "node %llu was added as a spare, then leadership was lost before its promotion",
                 (unsigned long long)cp->id);
        change_finish(cp, MH_EUNAVAILABLE, msg);
        return;
    }
    memset(&cp->change, 0, sizeof cp->change);
    cp->change.data = cp;
    int rv = raft_assign(&c->raft, &cp->change, cp->id, RAFT_VOTER, assign_cb);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "node %llu was added as a spare but promotion was refused: %s",
                 (unsigned long long)cp->id, raft_strerror(rv));
        change_finish(cp, map_raft(rv), msg);
    }
}

static void remove_cb(struct raft_change *req, int status)
{
    struct change_priv *cp = req->data;
    char msg[256];
    if (status != 0) {
        snprintf(msg, sizeof msg, "removing node %llu failed: %s", (unsigned long long)cp->id,
                 raft_strerror(status));
        change_finish(cp, map_raft(status), msg);
        return;
    }
    cp->c->removed_at = now_ms(cp->c); /* see members_applied */
    snprintf(msg, sizeof msg, "node %llu removed", (unsigned long long)cp->id);
    MH_INFO("raft", "msg=\"member removed\" id=%llu", (unsigned long long)cp->id);
    change_finish(cp, 0, msg);
}

static void transfer_cb(struct raft_transfer *req)
{
    struct xfer *x = req->data;
    struct change_priv *cp = x->cp;
    x->cp = NULL;
    if (cp == NULL)
        return;
    struct mh_cluster *c = cp->c;
    uint64_t lid;
    const char *laddr;
    leader_of(c, &lid, &laddr);
    char msg[256];
    if (lid != 0 && lid != c->id)
        snprintf(msg, sizeof msg, "leadership transferred to node %llu", (unsigned long long)lid);
    else
        snprintf(msg, sizeof msg,
                 "leadership was not transferred (raft 0.15 transfers are best effort); the "
                 "leader is %s%llu",
                 lid == 0 ? "unknown " : "node ", (unsigned long long)lid);
    MH_INFO("raft", "msg=\"transfer finished\" leader=%llu", (unsigned long long)lid);
    change_finish(cp, 0, msg);
}

/* Runs on the leader. Returns <0 without calling back on immediate refusal. */
static int leader_change(struct mh_cluster *c, struct change_priv *cp, const char *address,
                         char *why, size_t why_len)
{
    int rv;
    const struct raft_server *s = find_server(c, cp->id);
    memset(&cp->change, 0, sizeof cp->change);
    switch (cp->op) {
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__ADD:
        if (s != NULL) {
            snprintf(why, why_len, "node %llu is already a member (%s)", (unsigned long long)cp->id,
                     s->address);
            return MH_EEXIST;
        }
        cp->change.data = cp;
        rv = raft_add(&c->raft, &cp->change, cp->id, address, add_cb);
        break;
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__REMOVE:
        if (s == NULL) {
            snprintf(why, why_len, "node %llu is not a member", (unsigned long long)cp->id);
            return MH_ENOTFOUND;
        }
        if (cp->id == c->id) {
            snprintf(why, why_len,
                     "node %llu is the leader: transfer leadership first (mhsm cluster transfer)",
                     (unsigned long long)cp->id);
            return MH_EBUSY;
        }
        cp->change.data = cp;
        rv = raft_remove(&c->raft, &cp->change, cp->id, remove_cb);
        if (rv == 0)
            c->removed_at = now_ms(c); /* raft stops replicating to it at once */
        break;
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__TRANSFER:
        if (cp->id != 0 && (s == NULL || s->role != RAFT_VOTER)) {
            snprintf(why, why_len, "node %llu is not a voter", (unsigned long long)cp->id);
            return MH_ENOTFOUND;
        }
        if (cp->id == c->id) {
            snprintf(why, why_len, "node %llu is already the leader", (unsigned long long)cp->id);
            return MH_EINVAL;
        }
        struct xfer *x = calloc(1, sizeof *x);
        if (x == NULL) {
            snprintf(why, why_len, "out of memory");
            return MH_ENOMEM;
        }
        x->t.data = x;
        x->cp = cp;
        rv = raft_transfer(&c->raft, &x->t, cp->id, transfer_cb);
        if (rv != 0) {
            free(x);
            if (rv == RAFT_NOTLEADER && raft_state(&c->raft) == RAFT_LEADER) {
                snprintf(why, why_len, "a leadership transfer is already in progress");
                return MH_EBUSY;
            }
            break;
        }
        x->next = c->xfers;
        c->xfers = x;
        break;
    default:
        snprintf(why, why_len, "unknown membership operation");
        return MH_EINVAL;
    }
    if (rv != 0) {
        snprintf(why, why_len, "%s",
                 raft_errmsg(&c->raft)[0] ? raft_errmsg(&c->raft) : raft_strerror(rv));
        return map_raft(rv);
    }
    return 0;
}

struct change_deferred {
    uv_timer_t timer;
    struct change_priv *cp;
    int rc;
    char msg[256];
};

static void deferred_closed(uv_handle_t *h)
{
    free(h->data);
}

static void deferred_fire(uv_timer_t *t)
{
    struct change_deferred *d = t->data;
    change_finish(d->cp, d->rc, d->msg);
    uv_close((uv_handle_t *)&d->timer, deferred_closed);
}

/* Calls back later (the contract says never from inside mh_cluster_change). */
static int change_later(struct mh_cluster *c, struct change_priv *cp, int rc, const char *msg)
{
    struct change_deferred *d = calloc(1, sizeof *d);
    if (d == NULL)
        return MH_ENOMEM;
    d->cp = cp;
    d->rc = rc;
    snprintf(d->msg, sizeof d->msg, "%s", msg);
    uv_timer_init(c->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, deferred_fire, 0, 0);
    return 0;
}

static void change_forward_done(struct mh_peer_call *call, int rc, const uint8_t *msg, size_t len)
{
    struct change_priv *cp = call->data;
    if (rc < 0) {
        change_finish(cp, MH_EUNAVAILABLE,
                      rc == MH_ETIMEDOUT ? "the leader did not answer in time; check the status"
                                         : "the leader could not be reached");
        return;
    }
    Mhsm__Internal__PeerResponse *r = mhsm__internal__peer_response__unpack(NULL, len, msg);
    if (r == NULL) {
        change_finish(cp, MH_EUNAVAILABLE, "malformed answer from the leader");
        return;
    }
    char m[256];
    snprintf(m, sizeof m, "%s", r->message);
    int rrc = r->rc;
    mhsm__internal__peer_response__free_unpacked(r, NULL);
    change_finish(cp, rrc, m);
}

int mh_cluster_change(struct mh_cluster *c, const Mhsm__Internal__MemberChange *chg,
                      struct mh_cluster_change *req, mh_cluster_change_cb cb)
{
    if (c->stopping)
        return MH_EUNAVAILABLE;
    if (chg->op == MHSM__INTERNAL__MEMBER_CHANGE__OP__ADD &&
        (chg->id == 0 || chg->address == NULL || chg->address[0] == '\0' ||
         strlen(chg->address) >= sizeof(((struct mh_cluster_member *)0)->address)))
        return MH_EINVAL;
    if ((chg->op == MHSM__INTERNAL__MEMBER_CHANGE__OP__REMOVE && chg->id == 0) ||
        (chg->op != MHSM__INTERNAL__MEMBER_CHANGE__OP__ADD &&
         chg->op != MHSM__INTERNAL__MEMBER_CHANGE__OP__REMOVE &&
         chg->op != MHSM__INTERNAL__MEMBER_CHANGE__OP__TRANSFER))
        return MH_EINVAL;
    req->cb = cb;
    struct change_priv *cp = change_priv(req);
    memset(cp, 0, sizeof *cp);
    cp->c = c;
    cp->id = chg->id;
    cp->op = chg->op;
    if (raft_state(&c->raft) == RAFT_LEADER) {
        char why[256];
        int rv = leader_change(c, cp, chg->address, why, sizeof why);
        if (rv < 0)
            return change_later(c, cp, rv, why);
        return 0;
    }
    uint64_t lid;
    const char *laddr;
    leader_of(c, &lid, &laddr);
    if (lid == 0 || c->peer == NULL)
        return MH_EUNAVAILABLE;
    Mhsm__Internal__PeerRequest pr = MHSM__INTERNAL__PEER_REQUEST__INIT;
    pr.body_case = MHSM__INTERNAL__PEER_REQUEST__BODY_CHANGE;
    pr.change = (Mhsm__Internal__MemberChange *)chg;
    cp->call.data = cp;
    return send_request(c, lid, laddr, &pr, CHANGE_TIMEOUT_MS, &cp->call, change_forward_done);
}

/* Leader: a follower forwarded an operator's change. */
struct change_in {
    struct mh_cluster_change ch;
    struct mh_cluster *c;
    struct mh_peer_req *req;
};

static void change_in_done(struct mh_cluster_change *ch, int rc, const char *message)
{
    struct change_in *ci = ch->data;
    respond_rc(ci->c, ci->req, rc, message);
    free(ci);
}

static void handle_change(struct mh_cluster *c, struct mh_peer_req *req,
                          const Mhsm__Internal__MemberChange *chg)
{
    if (raft_state(&c->raft) != RAFT_LEADER) {
        respond_rc(c, req, MH_EUNAVAILABLE, "not the leader; retry");
        return;
    }
    struct change_in *ci = calloc(1, sizeof *ci);
    if (ci == NULL) {
        respond_rc(c, req, MH_ENOMEM, NULL);
        return;
    }
    ci->c = c;
    ci->req = req;
    ci->ch.data = ci;
    int rv = mh_cluster_change(c, chg, &ci->ch, change_in_done);
    if (rv < 0) {
        respond_rc(c, req, rv, NULL);
        free(ci);
    }
}

/* ---- the domain secret between members -------------------------------------------- */

void mh_cluster_set_domain_provider(struct mh_cluster *c, mh_cluster_domain_fn fn, void *arg)
{
    c->domain_fn = fn;
    c->domain_arg = arg;
}

static void handle_domain_fetch(struct mh_cluster *c, struct mh_peer_req *req, uint64_t from,
                                const Mhsm__Internal__DomainFetch *df)
{
    Mhsm__Internal__PeerResponse r = MHSM__INTERNAL__PEER_RESPONSE__INIT;
    if (c->domain_fn == NULL) {
        respond_rc(c, req, MH_ENOTFOUND, "this node holds no security domain");
        return;
    }
    c->domain_fn(c->domain_arg, from, &df->domain_id, mh_peer_req_key(req), &r);
    if (r.message == NULL)
        r.message = (char *)"";
    respond(req, &r);
    if (r.message[0] != '\0')
        free(r.message);
    if (r.wrapped_root != NULL && r.wrapped_root[0] != '\0') {
        /* the JWE is ciphertext, but wipe it anyway: it is the domain secret's wrap */
        memset(r.wrapped_root, 0, strlen(r.wrapped_root));
        free(r.wrapped_root);
    }
}

static struct fetch_priv *fetch_priv(struct mh_cluster_fetch *f)
{
    return (struct fetch_priv *)(void *)f->private_;
}

static void fetch_next(struct fetch_priv *fp);

static void fetch_finish(struct fetch_priv *fp, int rc, uint64_t from, const char *jwe)
{
    struct mh_cluster_fetch *f = mh_container_of(fp, struct mh_cluster_fetch, private_);
    f->cb(f, rc, from, jwe);
}

static void fetch_done(struct mh_peer_call *call, int rc, const uint8_t *msg, size_t len)
{
    struct fetch_priv *fp = call->data;
    if (rc < 0) {
        fp->last_rc = MH_EUNAVAILABLE;
        fetch_next(fp);
        return;
    }
    Mhsm__Internal__PeerResponse *r = mhsm__internal__peer_response__unpack(NULL, len, msg);
    if (r == NULL) {
        fp->last_rc = MH_EPROTO;
        fetch_next(fp);
        return;
    }
    if (r->rc != 0 || r->wrapped_root == NULL || r->wrapped_root[0] == '\0') {
        MH_DEBUG("raft", "msg=\"domain fetch refused\" from=%llu err=%s detail=\"%s\"",
                 (unsigned long long)fp->last_id, mh_errname(r->rc), r->message);
        fp->last_rc = r->rc != 0 ? r->rc : MH_EPROTO;
        mhsm__internal__peer_response__free_unpacked(r, NULL);
        fetch_next(fp);
        return;
    }
    fetch_finish(fp, 0, fp->last_id, r->wrapped_root);
    memset(r->wrapped_root, 0, strlen(r->wrapped_root));
    mhsm__internal__peer_response__free_unpacked(r, NULL);
}

static void fetch_next(struct fetch_priv *fp)
{
    struct mh_cluster *c = fp->c;
    for (;;) {
        if (c->stopping) {
            fetch_finish(fp, MH_EUNAVAILABLE, 0, NULL);
            return;
        }
        /* the smallest member id above the last one asked, not ourselves */
        const struct raft_configuration *conf = &c->raft.configuration;
        const struct raft_server *next = NULL;
        for (unsigned i = 0; i < conf->n; i++) {
            const struct raft_server *s = &conf->servers[i];
            if (s->id == c->id || s->id <= fp->last_id)
                continue;
            if (next == NULL || s->id < next->id)
                next = s;
        }
        if (next == NULL) {
            fetch_finish(fp, fp->last_rc, 0, NULL);
            return;
        }
        fp->last_id = next->id;
        Mhsm__Internal__DomainFetch df = MHSM__INTERNAL__DOMAIN_FETCH__INIT;
        df.domain_id.data = fp->domain_id;
        df.domain_id.len = fp->id_len;
        Mhsm__Internal__PeerRequest pr = MHSM__INTERNAL__PEER_REQUEST__INIT;
        pr.body_case = MHSM__INTERNAL__PEER_REQUEST__BODY_DOMAIN_FETCH;
        pr.domain_fetch = &df;
        fp->call.data = fp;
        int rv =
            send_request(c, next->id, next->address, &pr, FETCH_TIMEOUT_MS, &fp->call, fetch_done);
        if (rv == 0)
            return;
        fp->last_rc = rv;
    }
}

int mh_cluster_fetch_domain(struct mh_cluster *c, const uint8_t *domain_id, size_t id_len,
                            struct mh_cluster_fetch *f, mh_cluster_fetch_cb cb)
{
    if (c->peer == NULL || c->stopping)
        return MH_EUNAVAILABLE;
    if (id_len == 0 || id_len > sizeof fetch_priv(f)->domain_id)
        return MH_EINVAL;
    f->cb = cb;
    struct fetch_priv *fp = fetch_priv(f);
    memset(fp, 0, sizeof *fp);
    fp->c = c;
    fp->last_rc = MH_ENOTFOUND;
    memcpy(fp->domain_id, domain_id, id_len);
    fp->id_len = id_len;
    const struct raft_configuration *conf = &c->raft.configuration;
    bool any = false;
    for (unsigned i = 0; i < conf->n; i++)
        any = any || conf->servers[i].id != c->id;
    if (!any)
        return MH_ENOTFOUND;
    fetch_next(fp); /* the first call is asynchronous, so cb comes later */
    return 0;
}

/* Leader: its commit index, once it is a ready leader (its barrier applied, so the
 * commit index covers every entry of earlier terms) with a majority in contact. */
static void handle_read_index(struct mh_cluster *c, struct mh_peer_req *req)
{
    if (raft_state(&c->raft) != RAFT_LEADER || unready(c) != NULL) {
        respond_rc(c, req, MH_EUNAVAILABLE, "not a ready leader");
        return;
    }
    Mhsm__Internal__PeerResponse r = MHSM__INTERNAL__PEER_RESPONSE__INIT;
    r.rc = 0;
    r.message = (char *)"";
    r.leader_id = c->id;
    r.index = c->raft.commit_index;
    respond(req, &r);
}

/* ---- apply acknowledgements (restricting writes) ------------------------------------ */

/* The leader's record of member |id| in the current term (figures of an earlier
 * term start over); NULL when untracked and !create, or when no slot is free. */
static struct ack_state *ack_of(struct mh_cluster *c, uint64_t id, bool create)
{
    struct ack_state *slot = NULL;
    for (unsigned i = 0; i < MAX_ACK_SERVERS; i++) {
        struct ack_state *a = &c->acks[i];
        if (a->id == id) {
            slot = a;
            break;
        }
        if (slot == NULL && (a->id == 0 || find_server(c, a->id) == NULL))
            slot = a; /* free, or of a server no longer configured */
    }
    if (slot == NULL || (slot->id != id && !create))
        return NULL;
    if (slot->id != id || slot->term != c->raft.current_term) {
        slot->id = id;
        slot->term = c->raft.current_term;
        slot->acked = 0;
        slot->asked = 0;
        slot->want = 0;
        slot->busy = false; /* an older request's answer is ignored (term) */
    }
    return slot;
}

/* True when every member that may serve reported applying |index|. For one election
 * timeout after this node became leader, or after a member was removed, a member
 * this node does not know of may still hold a lease: then only the timeout counts. */
static bool members_applied(struct mh_cluster *c, uint64_t index)
{
    if (c->peer == NULL || raft_state(&c->raft) != RAFT_LEADER)
        return false;
    if (c->removed_at != 0 && now_ms(c) - c->removed_at < c->election_timeout_ms)
        return false;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (!needs_ack(c, &conf->servers[i]))
            continue;
        struct ack_state *a = ack_of(c, conf->servers[i].id, false);
        if (a == NULL || a->acked < index)
            return false;
    }
    return true;
}

static void send_applied_wait(struct mh_cluster *c, struct ack_state *a);

struct aw_call {
    struct mh_peer_call call;
    struct mh_cluster *c;
    uint64_t id, index, term;
};

static void applied_wait_done(struct mh_peer_call *call, int rc, const uint8_t *msg, size_t len)
{
    struct aw_call *w = call->data;
    struct mh_cluster *c = w->c;
    uint64_t id = w->id, index = w->index, term = w->term;
    free(w);
    if (c->stopping || term != c->raft.current_term)
        return;
    struct ack_state *a = ack_of(c, id, false);
    if (a == NULL)
        return;
    Mhsm__Internal__PeerResponse *r =
        rc == 0 ? mhsm__internal__peer_response__unpack(NULL, len, msg) : NULL;
    bool answered = r != NULL && r->rc == 0;
    if (answered && r->index > a->acked)
        a->acked = r->index;
    if (r != NULL)
        mhsm__internal__peer_response__free_unpacked(r, NULL);
    if (a->busy && a->asked == index) {
        a->busy = false;
        /* Writes that came meanwhile need a later index: ask again at once. After a
         * failure the next write asks; its timeout covers the wait. */
        if (answered && a->acked >= index && a->want > a->acked)
            send_applied_wait(c, a);
    }
    if (c->waiters != NULL)
        complete_waiters(c, 0);
}

/* Sends member |a| one AppliedWait for the highest index a waiting write needs. */
static void send_applied_wait(struct mh_cluster *c, struct ack_state *a)
{
    const struct raft_server *s = find_server(c, a->id);
    if (s == NULL || c->peer == NULL)
        return;
    struct aw_call *w = calloc(1, sizeof *w);
    if (w == NULL)
        return; /* the election-timeout fallback still holds */
    w->c = c;
    w->id = a->id;
    w->index = a->want;
    w->term = c->raft.current_term;
    w->call.data = w;
    Mhsm__Internal__AppliedWait aw = MHSM__INTERNAL__APPLIED_WAIT__INIT;
    aw.index = a->want;
    Mhsm__Internal__PeerRequest pr = MHSM__INTERNAL__PEER_REQUEST__INIT;
    pr.body_case = MHSM__INTERNAL__PEER_REQUEST__BODY_APPLIED_WAIT;
    pr.applied_wait = &aw;
    if (send_request(c, a->id, s->address, &pr, c->election_timeout_ms, &w->call,
                     applied_wait_done) != 0) {
        free(w);
        return;
    }
    a->asked = a->want;
    a->busy = true;
}

/* Leader: every member that may serve, and has not yet reported |index|, is asked to
 * answer once it has applied it. One request per member is outstanding at a time;
 * writes that come meanwhile are covered by the next one (the answer names the
 * member's applied index, which covers every write up to it). */
static void ask_applied(struct mh_cluster *c, uint64_t index)
{
    if (c->peer == NULL || raft_state(&c->raft) != RAFT_LEADER)
        return;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        if (!needs_ack(c, s))
            continue;
        struct ack_state *a = ack_of(c, s->id, true);
        if (a == NULL || a->acked >= index)
            continue;
        if (index > a->want)
            a->want = index;
        if (!a->busy)
            send_applied_wait(c, a);
    }
}

/* Answers an AppliedWait: this node serves no state older than |index|. */
static void respond_index(struct mh_cluster *c, struct mh_peer_req *req, uint64_t index)
{
    Mhsm__Internal__PeerResponse r = MHSM__INTERNAL__PEER_RESPONSE__INIT;
    uint64_t lid;
    const char *laddr;
    leader_of(c, &lid, &laddr);
    r.rc = 0;
    r.message = (char *)"";
    r.leader_id = lid;
    r.index = index;
    respond(req, &r);
}

static void respond_applied(struct mh_cluster *c, struct mh_peer_req *req)
{
    uint64_t applied = raft_last_applied(&c->raft);
    respond_index(c, req, applied > c->fence_index ? applied : c->fence_index);
}

/* Member: answers now if |index| is applied, else parks the request until it is or
 * half an election timeout passed (answer_applied_waits: then this node stops
 * serving until applied that far, and answers so). */
static void handle_applied_wait(struct mh_cluster *c, struct mh_peer_req *req,
                                const Mhsm__Internal__AppliedWait *m)
{
    if (m == NULL) {
        respond_rc(c, req, MH_EPROTO, "malformed applied-wait request");
        return;
    }
    if (c->failed || raft_last_applied(&c->raft) >= m->index) {
        respond_applied(c, req);
        return;
    }
    struct applied_wait *w = malloc(sizeof *w);
    if (w == NULL) {
        respond_applied(c, req);
        return;
    }
    w->req = req;
    w->index = m->index;
    w->deadline = now_ms(c) + c->election_timeout_ms / 2;
    w->next = c->applied_waits;
    c->applied_waits = w;
}

static void answer_applied_waits(struct mh_cluster *c, bool all)
{
    uint64_t applied = raft_last_applied(&c->raft);
    uint64_t now = now_ms(c);
    struct applied_wait **pp = &c->applied_waits;
    while (*pp != NULL) {
        struct applied_wait *w = *pp;
        if (!all && applied < w->index && now < w->deadline) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (c->stopping) {
            respond_rc(c, w->req, MH_EUNAVAILABLE, "shutting down");
        } else if (!all && applied < w->index) {
            /* Still behind after half an election timeout while in contact: stop
             * serving until applied that far, and say so; the leader counts that as
             * the acknowledgement (this node will not serve the older state). */
            if (w->index > c->fence_index)
                c->fence_index = w->index;
            MH_WARN("raft", "msg=\"lagging: not serving until applied\" applied=%llu index=%llu",
                    (unsigned long long)applied, (unsigned long long)w->index);
            respond_index(c, w->req, w->index);
        } else {
            respond_applied(c, w->req);
        }
        free(w);
    }
}

/* ---- inbound peer requests ---------------------------------------------------------- */

static void on_peer_request(void *arg, struct mh_peer_req *req, uint64_t from, const uint8_t *msg,
                            size_t len)
{
    struct mh_cluster *c = arg;
    if (c->stopping) {
        respond_rc(c, req, MH_EUNAVAILABLE, "shutting down");
        return;
    }
    if (!mh_cluster_is_member(c, from)) {
        MH_WARN("raft", "msg=\"request from a node that is not a member\" from=%llu",
                (unsigned long long)from);
        respond_rc(c, req, MH_EPEER, "you are not a member of this cluster");
        return;
    }
    Mhsm__Internal__PeerRequest *m = mhsm__internal__peer_request__unpack(NULL, len, msg);
    if (m == NULL) {
        respond_rc(c, req, MH_EPROTO, "malformed peer request");
        return;
    }
    switch (m->body_case) {
    case MHSM__INTERNAL__PEER_REQUEST__BODY_PROPOSE:
        handle_forward(c, req, from, &m->propose);
        break;
    case MHSM__INTERNAL__PEER_REQUEST__BODY_CHANGE:
        handle_change(c, req, m->change);
        break;
    case MHSM__INTERNAL__PEER_REQUEST__BODY_DOMAIN_FETCH:
        handle_domain_fetch(c, req, from, m->domain_fetch);
        break;
    case MHSM__INTERNAL__PEER_REQUEST__BODY_READ_INDEX:
        handle_read_index(c, req);
        break;
    case MHSM__INTERNAL__PEER_REQUEST__BODY_APPLIED_WAIT:
        handle_applied_wait(c, req, m->applied_wait);
        break;
    default:
        respond_rc(c, req, MH_EPROTO, "unknown peer request");
        break;
    }
    mhsm__internal__peer_request__free_unpacked(m, NULL);
}

/* ---- status ------------------------------------------------------------------------ */

void mh_cluster_status(struct mh_cluster *c, struct mh_cluster_status *out)
{
    memset(out, 0, sizeof *out);
    out->id = c->id;
    if (c->stopping) { /* raft's configuration and log are released at close */
        out->state = RAFT_UNAVAILABLE;
        out->leader_contact_ms = -1;
        snprintf(out->reason, sizeof out->reason, "the node is shutting down");
        return;
    }
    out->state = raft_state(&c->raft);
    const char *laddr;
    leader_of(c, &out->leader_id, &laddr);
    snprintf(out->leader_address, sizeof out->leader_address, "%s", laddr);
    out->term = c->raft.current_term;
    out->commit_index = c->raft.commit_index;
    out->applied_index = raft_last_applied(&c->raft);
    out->last_index = raft_last_index(&c->raft);
    const char *why = unready(c);
    out->serving = why == NULL;
    snprintf(out->reason, sizeof out->reason, "%s", why != NULL ? why : "");
    if (out->leader_id == 0)
        out->leader_contact_ms = -1;
    else if (out->leader_id == c->id)
        out->leader_contact_ms = 0;
    else {
        uint64_t last = c->peer != NULL ? mh_peer_last_recv(c->peer, out->leader_id) : 0;
        out->leader_contact_ms = last == 0 ? -1 : (int64_t)(now_ms(c) - last);
    }
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n && out->n_members < MH_CLUSTER_MAX_MEMBERS; i++) {
        struct mh_cluster_member_status *m = &out->members[out->n_members++];
        m->id = conf->servers[i].id;
        snprintf(m->address, sizeof m->address, "%s", conf->servers[i].address);
        m->role = conf->servers[i].role;
        uint64_t last = c->peer != NULL && m->id != c->id ? mh_peer_last_recv(c->peer, m->id) : 0;
        m->last_contact_ms = last == 0 ? -1 : (int64_t)(now_ms(c) - last);
    }
}

/* ---- start / stop ----------------------------------------------------------------- */

static void raft_closed(struct raft *r)
{
    struct mh_cluster *c = r->data;
    if (c->snap != NULL)
        snap_release(c); /* raft closed before finalizing */
    raft_uv_close(&c->io);
    while (c->xfers != NULL) {
        struct xfer *x = c->xfers;
        c->xfers = x->next;
        free(x);
    }
    if (c->peer == NULL && !uv_is_closing((uv_handle_t *)&c->tdefer))
        uv_close((uv_handle_t *)&c->tdefer, tdefer_closed); /* raft_uv never closed it */
    uv_close((uv_handle_t *)&c->poll, handle_closed);
    uv_close((uv_handle_t *)&c->wake, handle_closed);
    uv_close((uv_handle_t *)&c->push, handle_closed);
}

static int bootstrap(struct mh_cluster *c, const struct mh_cluster_config *cfg)
{
    if (cfg->join) {
        MH_INFO("raft", "msg=\"joining: waiting for the leader to add this node\" id=%llu",
                (unsigned long long)cfg->id);
        return 0;
    }
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rrv = 0;
    if (cfg->n_members == 0) {
        rrv = raft_configuration_add(&conf, cfg->id, cfg->address, RAFT_VOTER);
    } else {
        for (size_t i = 0; i < cfg->n_members && rrv == 0; i++)
            rrv = raft_configuration_add(&conf, cfg->members[i].id, cfg->members[i].address,
                                         RAFT_VOTER);
    }
    if (rrv == 0)
        rrv = raft_bootstrap(&c->raft, &conf);
    raft_configuration_close(&conf);
    if (rrv == 0) {
        MH_INFO("raft", "msg=\"bootstrapped\" id=%llu members=%zu", (unsigned long long)cfg->id,
                cfg->n_members > 0 ? cfg->n_members : (size_t)1);
        return 0;
    }
    if (rrv == RAFT_CANTBOOTSTRAP) /* not the first start */
        return 0;
    MH_ERROR("raft", "msg=\"bootstrap failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
             raft_errmsg(&c->raft));
    return map_raft(rrv);
}

static int check_config(const struct mh_cluster_config *cfg)
{
    if (cfg == NULL || cfg->dir == NULL || cfg->address == NULL || cfg->address[0] == 0 ||
        cfg->id == 0 || cfg->n_members > MH_CLUSTER_MAX_MEMBERS)
        return MH_ECONFIG;
    if (cfg->join && cfg->n_members > 0)
        return MH_ECONFIG;
    if (cfg->n_members > 1 && cfg->peer == NULL)
        return MH_ECONFIG;
    bool self = cfg->n_members == 0;
    for (size_t i = 0; i < cfg->n_members; i++) {
        if (cfg->members[i].id == 0 || cfg->members[i].address[0] == '\0')
            return MH_ECONFIG;
        for (size_t j = 0; j < i; j++)
            if (cfg->members[j].id == cfg->members[i].id)
                return MH_ECONFIG;
        if (cfg->members[i].id == cfg->id)
            self = strcmp(cfg->members[i].address, cfg->address) == 0;
    }
    return self ? 0 : MH_ECONFIG;
}

int mh_cluster_start(uv_loop_t *loop, const struct mh_cluster_config *cfg, struct mh_fsm *fsm,
                     struct mh_cluster **out)
{
    *out = NULL;
    if (fsm == NULL)
        return MH_ECONFIG;
    MH_TRY(check_config(cfg));
    MH_TRY(mh_fs_mkdirs(cfg->dir));
    struct mh_cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MH_ENOMEM;
    c->loop = loop;
    c->fsm = fsm;
    c->peer = cfg->peer;
    c->id = cfg->id;
    c->election_timeout_ms = cfg->election_timeout_ms ? cfg->election_timeout_ms : 1000;
    c->forward_timeout_ms = cfg->forward_timeout_ms ? cfg->forward_timeout_ms : FORWARD_TIMEOUT_MS;
    c->lock_fd = -1;
    c->follow_gen = 1;
    /* raft_uv does not lock its directory; two processes appending to one log would
     * destroy it. The flock lives as long as the cluster. */
    int rv = mh_fs_lock_dir(cfg->dir, "raft", &c->lock_fd);
    if (rv < 0)
        goto err_after_alloc;

    if (c->peer != NULL) {
        mh_peer_raft_transport(c->peer, &c->transport);
    } else {
        c->transport.impl = c;
        c->transport.init = tr_init;
        c->transport.listen = tr_listen;
        c->transport.connect = tr_connect;
        c->transport.close = tr_close;
    }
    int rrv = raft_uv_init(&c->io, loop, cfg->dir, &c->transport);
    if (rrv != 0) {
        MH_ERROR("raft", "msg=\"raft_uv_init failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
                 c->io.errmsg);
        rv = MH_ESTORE;
        goto err_after_lock;
    }
    /* Auto-recovery would truncate a damaged log and silently drop acknowledged
     * commands; a KMS node must refuse to start instead (and be re-seeded). */
    raft_uv_set_auto_recovery(&c->io, false);
    c->io.version = 2; /* with our async_work (rfsm version 3) */
    c->io.async_work = io_async_work;
    c->rfsm.version = 3;
    c->rfsm.data = c;
    c->rfsm.apply = rfsm_apply;
    c->rfsm.snapshot = rfsm_snapshot;
    c->rfsm.restore = rfsm_restore;
    c->rfsm.snapshot_finalize = rfsm_snapshot_finalize;
    c->rfsm.snapshot_async = rfsm_snapshot_async;
    rrv = raft_init(&c->raft, &c->io, &c->rfsm, cfg->id, cfg->address);
    if (rrv != 0) {
        MH_ERROR("raft", "msg=\"raft_init failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
                 raft_errmsg(&c->raft));
        rv = rrv == RAFT_NOMEM ? MH_ENOMEM : MH_ESTORE;
        goto err_after_io;
    }
    c->raft.data = c;
    raft_set_election_timeout(&c->raft, c->election_timeout_ms);
    raft_set_heartbeat_timeout(&c->raft, cfg->heartbeat_ms ? cfg->heartbeat_ms : 100);
    raft_set_snapshot_threshold(&c->raft, cfg->snapshot_threshold ? cfg->snapshot_threshold : 8192);
    raft_set_snapshot_trailing(&c->raft, cfg->snapshot_trailing ? cfg->snapshot_trailing : 8192);
    raft_set_pre_vote(&c->raft, true);
    if (c->peer != NULL)
        mh_peer_set_handler(c->peer, on_peer_request, c);

    /* From here on teardown goes through raft_close, which is asynchronous. */
    uv_timer_init(loop, &c->poll);
    c->poll.data = c;
    uv_timer_init(loop, &c->wake);
    c->wake.data = c;
    uv_timer_init(loop, &c->push);
    c->push.data = c;
    c->handles = 3;
    if (c->peer == NULL) {
        uv_idle_init(loop, &c->tdefer);
        c->tdefer.data = c;
        c->handles++;
    }

    rv = bootstrap(c, cfg);
    if (rv < 0)
        goto err_async;
    rrv = raft_start(&c->raft);
    if (rrv != 0) {
        MH_ERROR("raft", "msg=\"start failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
                 raft_errmsg(&c->raft));
        rv = map_raft(rrv);
        goto err_async;
    }
    uv_timer_start(&c->poll, poll_cb, 0, POLL_MS);
    MH_INFO("raft", "msg=\"started\" id=%llu last_index=%llu members=%u",
            (unsigned long long)cfg->id, (unsigned long long)raft_last_index(&c->raft),
            c->raft.configuration.n);
    *out = c;
    return 0;

err_async:
    /* Memory is released by the close callbacks once the loop runs. */
    c->stopping = true;
    c->free_on_close = true;
    if (c->peer != NULL)
        mh_peer_set_handler(c->peer, NULL, NULL);
    raft_close(&c->raft, raft_closed);
    return rv;
err_after_io:
    raft_uv_close(&c->io);
err_after_lock:
    close(c->lock_fd);
err_after_alloc:
    free(c);
    return rv;
}

void mh_cluster_stop(struct mh_cluster *c, void (*done)(void *arg), void *arg)
{
    if (c->stopping)
        return;
    c->stopping = true;
    c->done = done;
    c->done_arg = arg;
    uv_timer_stop(&c->poll);
    uv_timer_stop(&c->wake);
    uv_timer_stop(&c->push);
    complete_waiters(c, MH_EUNAVAILABLE);
    if (c->async_jobs > 0) {
        c->close_deferred = true; /* async_after closes raft */
        return;
    }
    raft_close(&c->raft, raft_closed);
}

void mh_cluster_free(struct mh_cluster *c)
{
    free(c);
}
