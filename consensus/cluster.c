#include "consensus/cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "common/fsutil.h"
#include "common/log.h"

#define POLL_MS 20

struct mh_cluster {
    uv_loop_t *loop;
    struct mh_fsm *fsm;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct raft_fsm rfsm;
    uv_timer_t poll;  /* watches for leadership, then proposes the barrier */
    uv_idle_t tdefer; /* never started: closing it defers the transport close cb */
    raft_uv_transport_close_cb tclose_cb;
    struct raft_barrier barrier;
    struct mh_fsm_result result; /* fsm apply -> raft apply cb (same loop turn) */
    int lock_fd;
    int handles; /* open uv handles of ours */
    bool barrier_pending, ready, stopping, failed, free_on_close;
    void (*done)(void *arg);
    void *done_arg;
};

/* The proposal's private area holds raft's request. */
_Static_assert(sizeof(struct raft_apply) <= sizeof(((struct mh_proposal *)0)->private_),
               "mh_proposal.private_ too small for struct raft_apply");

static int map_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return MH_EUNAVAILABLE;
    case RAFT_NOMEM:
        return MH_ENOMEM;
    case RAFT_TOOBIG:
        return MH_ETOOBIG;
    case RAFT_CORRUPT:
        return MH_ECORRUPT;
    default:
        return MH_ESTORE;
    }
}

/* ---- the transport: issue 3 runs one voter, which never talks to a peer ---- */

/* A raft_uv_transport that opens no socket: listen accepts nothing and connect
 * fails. raft's own TCP transport would listen unauthenticated (and its decoder
 * trusts peers), so it is never used. Issue 4 replaces this with the mutual-TLS
 * transport (socketpair proxy, tech-notes 1.6 option A). */
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
    snprintf(t->errmsg, sizeof t->errmsg, "no transport to peers yet (id %llu)",
             (unsigned long long)id);
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

static void poll_closed(uv_handle_t *h)
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
        c->ready = false;
        return RAFT_IOERR;
    }
    *result = &c->result;
    return 0;
}

/* Version 1: serialized on the loop thread, copied into raft's heap (raft frees the
 * buffer and the array after writing). The cost is one pass over the state every
 * snapshot_threshold entries; version 3 (serialize on the thread pool from a read
 * transaction taken here) is the upgrade when states grow large. */
static int rfsm_snapshot(struct raft_fsm *f, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct mh_cluster *c = f->data;
    uint8_t *data;
    size_t len;
    int rv = mh_fsm_snapshot(c->fsm, &data, &len);
    if (rv < 0) {
        MH_ERROR("raft", "msg=\"snapshot failed\" err=%s", mh_errname(rv));
        return rv == MH_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    struct raft_buffer *b = raft_malloc(sizeof *b);
    void *base = raft_malloc(len);
    if (b == NULL || base == NULL) {
        raft_free(b);
        raft_free(base);
        free(data);
        return RAFT_NOMEM;
    }
    memcpy(base, data, len);
    free(data);
    b->base = base;
    b->len = len;
    *bufs = b;
    *n_bufs = 1;
    MH_INFO("raft", "msg=\"snapshot taken\" bytes=%zu last_applied=%llu", len,
            (unsigned long long)raft_last_applied(&c->raft));
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
    raft_free(buf->base); /* ours on success */
    return 0;
}

/* ---- readiness ------------------------------------------------------------ */

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
    c->ready = true;
    MH_INFO("raft", "msg=\"ready\" last_applied=%llu",
            (unsigned long long)raft_last_applied(&c->raft));
}

static void poll_cb(uv_timer_t *t)
{
    struct mh_cluster *c = t->data;
    if (c->stopping || c->failed)
        return;
    if (raft_state(&c->raft) != RAFT_LEADER) {
        if (c->ready)
            MH_WARN("raft", "msg=\"leadership lost\"");
        c->ready = false;
        return;
    }
    if (c->ready || c->barrier_pending)
        return;
    /* The barrier commits in the current term, which commits and applies every
     * earlier entry (the whole log replay at start) before its callback runs. */
    c->barrier.data = c;
    int rv = raft_barrier(&c->raft, &c->barrier, barrier_cb);
    if (rv != 0) {
        MH_WARN("raft", "msg=\"barrier refused\" err=\"%s\"", raft_strerror(rv));
        return;
    }
    c->barrier_pending = true;
}

bool mh_cluster_ready(const struct mh_cluster *c)
{
    struct mh_cluster *m = (struct mh_cluster *)c; /* raft_state takes no const */
    return c->ready && !c->stopping && !c->failed && raft_state(&m->raft) == RAFT_LEADER;
}

/* ---- start / stop ----------------------------------------------------------- */

/* raft_uv does not lock its directory; two processes appending to one log would
 * destroy it. The flock lives as long as the cluster. */

static void raft_closed(struct raft *r)
{
    struct mh_cluster *c = r->data;
    raft_uv_close(&c->io);
    if (!uv_is_closing((uv_handle_t *)&c->tdefer)) /* raft_uv never closed the transport */
        uv_close((uv_handle_t *)&c->tdefer, tdefer_closed);
    uv_close((uv_handle_t *)&c->poll, poll_closed);
}

int mh_cluster_start(uv_loop_t *loop, const struct mh_cluster_config *cfg, struct mh_fsm *fsm,
                     struct mh_cluster **out)
{
    *out = NULL;
    if (cfg == NULL || cfg->dir == NULL || cfg->address == NULL || cfg->address[0] == 0 ||
        cfg->id == 0 || fsm == NULL)
        return MH_ECONFIG;
    MH_TRY(mh_fs_mkdirs(cfg->dir));
    struct mh_cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MH_ENOMEM;
    c->loop = loop;
    c->fsm = fsm;
    c->lock_fd = -1;
    /* raft_uv does not lock its directory; two processes appending to one log would
     * destroy it. The flock lives as long as the cluster. */
    int rv = mh_fs_lock_dir(cfg->dir, "raft", &c->lock_fd);
    if (rv < 0)
        goto err_after_alloc;

    c->transport.impl = c;
    c->transport.init = tr_init;
    c->transport.listen = tr_listen;
    c->transport.connect = tr_connect;
    c->transport.close = tr_close;
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
    c->rfsm.version = 1;
    c->rfsm.data = c;
    c->rfsm.apply = rfsm_apply;
    c->rfsm.snapshot = rfsm_snapshot;
    c->rfsm.restore = rfsm_restore;
    rrv = raft_init(&c->raft, &c->io, &c->rfsm, cfg->id, cfg->address);
    if (rrv != 0) {
        MH_ERROR("raft", "msg=\"raft_init failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
                 raft_errmsg(&c->raft));
        rv = rrv == RAFT_NOMEM ? MH_ENOMEM : MH_ESTORE;
        goto err_after_io;
    }
    c->raft.data = c;
    raft_set_election_timeout(&c->raft, cfg->election_timeout_ms ? cfg->election_timeout_ms : 1000);
    raft_set_heartbeat_timeout(&c->raft, cfg->heartbeat_ms ? cfg->heartbeat_ms : 100);
    raft_set_snapshot_threshold(&c->raft, cfg->snapshot_threshold ? cfg->snapshot_threshold : 1024);
    raft_set_snapshot_trailing(&c->raft, cfg->snapshot_trailing ? cfg->snapshot_trailing : 8192);
    raft_set_pre_vote(&c->raft, true);

    /* From here on teardown goes through raft_close, which is asynchronous. */
    uv_timer_init(loop, &c->poll);
    c->poll.data = c;
    uv_idle_init(loop, &c->tdefer);
    c->tdefer.data = c;
    c->handles = 2;

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    rrv = raft_configuration_add(&conf, cfg->id, cfg->address, RAFT_VOTER);
    if (rrv == 0)
        rrv = raft_bootstrap(&c->raft, &conf);
    raft_configuration_close(&conf);
    if (rrv == 0) {
        MH_INFO("raft", "msg=\"bootstrapped one-voter cluster\" id=%llu",
                (unsigned long long)cfg->id);
    } else if (rrv != RAFT_CANTBOOTSTRAP) { /* CANTBOOTSTRAP: not the first start */
        MH_ERROR("raft", "msg=\"bootstrap failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
                 raft_errmsg(&c->raft));
        rv = map_raft(rrv);
        goto err_async;
    }
    rrv = raft_start(&c->raft);
    if (rrv != 0) {
        MH_ERROR("raft", "msg=\"start failed\" err=\"%s\" detail=\"%s\"", raft_strerror(rrv),
                 raft_errmsg(&c->raft));
        rv = map_raft(rrv);
        goto err_async;
    }
    uv_timer_start(&c->poll, poll_cb, 0, POLL_MS);
    MH_INFO("raft", "msg=\"started\" id=%llu last_index=%llu", (unsigned long long)cfg->id,
            (unsigned long long)raft_last_index(&c->raft));
    *out = c;
    return 0;

err_async:
    /* Memory is released by the close callbacks once the loop runs. */
    c->stopping = true;
    c->free_on_close = true;
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

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct mh_proposal *p = req->data;
    if (status != 0) {
        p->cb(p, map_raft(status), NULL);
        return;
    }
    p->cb(p, 0, result);
}

int mh_cluster_propose(struct mh_cluster *c, const Mhsm__Internal__Command *cmd,
                       struct mh_proposal *p, mh_propose_cb cb)
{
    if (!mh_cluster_ready(c))
        return MH_EUNAVAILABLE;
    /* raft 0.15's segment writer requires entry lengths that are multiples of 8
     * (an assert compiled out in Debian's build: odd lengths silently corrupt the
     * log on disk). Pad with an unknown length-delimited field 1000 of zero bytes,
     * which protobuf parsers skip: 3 bytes at least (2 tag, 1 length). */
    size_t n = mhsm__internal__command__get_packed_size(cmd);
    size_t k = (8 - n % 8) % 8;
    size_t pad = n == 0 ? 8 : k == 0 ? 0 : k < 3 ? k + 8 : k;
    if (n > MH_FSM_MAX_COMMAND - pad)
        return MH_ETOOBIG;
    struct raft_buffer buf;
    buf.len = n + pad;
    buf.base = raft_malloc(buf.len);
    if (buf.base == NULL)
        return MH_ENOMEM;
    uint8_t *b = buf.base;
    if (mhsm__internal__command__pack(cmd, b) != n) {
        raft_free(buf.base);
        return MH_EINVAL;
    }
    if (pad > 0) {
        b[n] = MH_CLUSTER_PAD_TAG0;
        b[n + 1] = MH_CLUSTER_PAD_TAG1;
        b[n + 2] = (uint8_t)(pad - 3);
        memset(b + n + 3, 0, pad - 3);
    }
    struct raft_apply *req = (struct raft_apply *)(void *)p->private_;
    memset(req, 0, sizeof *req);
    req->data = p;
    p->cb = cb;
    int rrv = raft_apply(&c->raft, req, &buf, 1, apply_cb);
    if (rrv != 0) {
        raft_free(buf.base); /* ownership passes to raft only on success */
        MH_WARN("raft", "msg=\"apply refused\" err=\"%s\"", raft_strerror(rrv));
        return map_raft(rrv);
    }
    return 0;
}

void mh_cluster_stop(struct mh_cluster *c, void (*done)(void *arg), void *arg)
{
    if (c->stopping)
        return;
    c->stopping = true;
    c->ready = false;
    c->done = done;
    c->done_arg = arg;
    uv_timer_stop(&c->poll);
    raft_close(&c->raft, raft_closed);
}

void mh_cluster_free(struct mh_cluster *c)
{
    free(c);
}
