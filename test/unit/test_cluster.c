#include "testutil.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/cluster.h"
#include "consensus/fsm.h"
#include "consensus/store.h"

#define S(lit) ((char *)(lit))

/* One node: store + fsm + cluster on |loop|, in <tmp>/<name>/{state,raft}. */
struct node {
    uv_loop_t *loop;
    char state_dir[PATH_MAX], raft_dir[PATH_MAX];
    struct mh_store *st;
    struct mh_fsm *fsm;
    struct mh_cluster *c;
    struct mh_cluster_config cfg;
    bool stopped;
};

struct prop {
    struct mh_proposal p;
    int calls;
    int rc;
    struct mh_fsm_result res;
};

static void prop_cb(struct mh_proposal *p, int rc, const struct mh_fsm_result *res)
{
    struct prop *pr = p->data;
    pr->calls++;
    pr->rc = rc;
    if (rc == 0) {
        assert_non_null(res);
        pr->res = *res;
    } else {
        assert_null(res);
    }
}

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs |loop| until pred(arg) or |ms| elapse (a bound, not an expectation). */
static bool run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg, unsigned ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (!pred(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return pred(arg);
}

static bool is_ready(void *arg)
{
    return mh_cluster_ready(((struct node *)arg)->c);
}

static bool is_stopped(void *arg)
{
    return ((struct node *)arg)->stopped;
}

static void node_init(struct node *n, uv_loop_t *loop, const char *name, unsigned threshold,
                      unsigned trailing)
{
    memset(n, 0, sizeof *n);
    n->loop = loop;
    char rel[64];
    snprintf(rel, sizeof rel, "%s/state", name);
    tu_path(n->state_dir, sizeof n->state_dir, rel);
    snprintf(rel, sizeof rel, "%s/raft", name);
    tu_path(n->raft_dir, sizeof n->raft_dir, rel);
    n->cfg.dir = n->raft_dir;
    n->cfg.id = 1;
    n->cfg.address = "127.0.0.1:9443";
    n->cfg.election_timeout_ms = 200;
    n->cfg.heartbeat_ms = 20;
    n->cfg.snapshot_threshold = threshold;
    n->cfg.snapshot_trailing = trailing;
}

/* Opens a freshly wiped store and starts raft over the existing log. */
static void node_start(struct node *n)
{
    n->stopped = false;
    assert_int_equal(mh_store_open(n->state_dir, 64u << 20, &n->st), 0);
    assert_int_equal(mh_fsm_new(n->st, &n->fsm), 0);
    assert_int_equal(mh_cluster_start(n->loop, &n->cfg, n->fsm, &n->c), 0);
    assert_non_null(n->c);
    assert_true(run_until(n->loop, is_ready, n, 20000));
}

static void on_stopped(void *arg)
{
    ((struct node *)arg)->stopped = true;
}

static void node_stop(struct node *n)
{
    mh_cluster_stop(n->c, on_stopped, n);
    assert_true(run_until(n->loop, is_stopped, n, 20000));
    mh_cluster_free(n->c);
    n->c = NULL;
    mh_fsm_free(n->fsm);
    mh_store_close(n->st);
}

static bool prop_done(void *arg)
{
    return ((struct prop *)arg)->calls > 0;
}

static void propose(struct node *n, Mhsm__Internal__Command *cmd, struct prop *pr)
{
    memset(pr, 0, sizeof *pr);
    pr->p.data = pr;
    cmd->format = 1;
    assert_int_equal(mh_cluster_propose(n->c, cmd, &pr->p, prop_cb), 0);
    assert_int_equal(pr->calls, 0); /* never called from inside propose */
}

static void propose_activate(struct node *n, struct prop *pr)
{
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    Mhsm__Internal__DomainRecord d = MHSM__INTERNAL__DOMAIN_RECORD__INIT;
    d.retention_days = 90;
    act.domain = &d;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    cmd.request_id = S("activate-1");
    cmd.time = 1000;
    propose(n, &cmd, pr);
}

static void propose_add(struct node *n, int i, struct prop *pr)
{
    char name[32], ver[32], rid[32];
    snprintf(name, sizeof name, "key-%03d", i);
    snprintf(ver, sizeof ver, "v%03d", i);
    snprintf(rid, sizeof rid, "rid-%03d", i);
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    Mhsm__Internal__AddKeyVersion a = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    Mhsm__Internal__KeyVersionRecord r = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    uint8_t sealed[64];
    memset(sealed, i & 0xff, sizeof sealed);
    r.name = name;
    r.version = ver;
    r.enabled = true;
    r.sealed_material.data = sealed;
    r.sealed_material.len = sizeof sealed;
    a.record = &r;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &a;
    cmd.request_id = rid;
    cmd.time = 2000 + i;
    propose(n, &cmd, pr);
}

struct all_done {
    struct prop *props;
    int n;
};

static bool props_done(void *arg)
{
    struct all_done *a = arg;
    for (int i = 0; i < a->n; i++)
        if (a->props[i].calls == 0)
            return false;
    return true;
}

/* Proposes activate + |count| add_version commands (all in flight together) and
 * checks every acknowledgement. */
static void write_keys(struct node *n, int first, int count, bool with_activate)
{
    struct prop *props = calloc((size_t)count + 1, sizeof *props);
    assert_non_null(props);
    int k = 0;
    if (with_activate)
        propose_activate(n, &props[k++]);
    for (int i = first; i < first + count; i++)
        propose_add(n, i, &props[k++]);
    struct all_done ad = {props, k};
    assert_true(run_until(n->loop, props_done, &ad, 30000));
    for (int j = 0; j < k; j++) {
        assert_int_equal(props[j].calls, 1);
        assert_int_equal(props[j].rc, 0);
        assert_int_equal(props[j].res.rc, 0);
    }
    if (count > 0) {
        char want[32];
        snprintf(want, sizeof want, "v%03d", first + count - 1);
        assert_string_equal(props[k - 1].res.version, want);
    }
    free(props);
}

/* Every acknowledged command is in the store (and, if |exact|, nothing more). */
static void check_keys_ex(struct node *n, int count, bool exact)
{
    Mhsm__Internal__DomainRecord *d = NULL;
    assert_int_equal(mh_store_get_domain(n->st, &d), 0);
    assert_true(d->activated);
    assert_int_equal(d->retention_days, 90);
    mh_store_free(d);
    for (int i = 0; i < count; i++) {
        char name[32], ver[32], rid[32];
        snprintf(name, sizeof name, "key-%03d", i);
        snprintf(ver, sizeof ver, "v%03d", i);
        snprintf(rid, sizeof rid, "rid-%03d", i);
        Mhsm__Internal__KeyVersionRecord *v = NULL;
        assert_int_equal(mh_store_get_version(n->st, name, NULL, false, NULL, &v), 0);
        assert_string_equal(v->version, ver);
        assert_int_equal(v->created, 2000 + i);
        assert_int_equal(v->sealed_material.len, 64);
        assert_int_equal(v->sealed_material.data[0], i & 0xff);
        mh_store_free(v);
        Mhsm__Internal__RequestRecord *r = NULL;
        assert_int_equal(mh_store_get_request(n->st, rid, &r), 0);
        assert_int_equal(r->result, 0);
        mh_store_free(r);
    }
    if (!exact)
        return;
    char name[32];
    snprintf(name, sizeof name, "key-%03d", count);
    Mhsm__Internal__KeyRecord *k = NULL;
    assert_int_equal(mh_store_get_key(n->st, name, &k), MH_ENOTFOUND);
}

static void check_keys(struct node *n, int count)
{
    check_keys_ex(n, count, true);
}

static int count_snapshots(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "snapshot-", 9) == 0 && l > 5 &&
            strcmp(e->d_name + l - 5, ".meta") != 0)
            n++;
    }
    closedir(d);
    return n;
}

static void test_replay_after_restart(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node n;
    node_init(&n, &loop, "replay", 0, 0);
    assert_int_equal(mh_store_open(n.state_dir, 64u << 20, &n.st), 0);
    assert_int_equal(mh_fsm_new(n.st, &n.fsm), 0);
    assert_int_equal(mh_cluster_start(&loop, &n.cfg, n.fsm, &n.c), 0);
    /* not ready before the loop ran: proposals are refused, cb never called */
    assert_false(mh_cluster_ready(n.c));
    struct prop early;
    memset(&early, 0, sizeof early);
    early.p.data = &early;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    assert_int_equal(mh_cluster_propose(n.c, &cmd, &early.p, prop_cb), MH_EUNAVAILABLE);
    assert_true(run_until(&loop, is_ready, &n, 20000));
    assert_int_equal(early.calls, 0);

    write_keys(&n, 0, 20, true);
    check_keys(&n, 20);
    /* a retried request id gives the first outcome again through raft */
    struct prop again;
    propose_add(&n, 3, &again);
    assert_true(run_until(&loop, prop_done, &again, 20000));
    assert_int_equal(again.rc, 0);
    assert_int_equal(again.res.rc, 0);
    assert_string_equal(again.res.version, "v003");
    /* an oversized command is refused before it reaches the log */
    Mhsm__Internal__AddKeyVersion a = MHSM__INTERNAL__ADD_KEY_VERSION__INIT;
    Mhsm__Internal__KeyVersionRecord r = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    uint8_t *big = calloc(1, MH_FSM_MAX_COMMAND);
    assert_non_null(big);
    r.name = S("big");
    r.version = S("v1");
    r.public_der.data = big;
    r.public_der.len = MH_FSM_MAX_COMMAND;
    a.record = &r;
    cmd.format = 1;
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ADD_VERSION;
    cmd.add_version = &a;
    struct prop toobig;
    memset(&toobig, 0, sizeof toobig);
    toobig.p.data = &toobig;
    assert_int_equal(mh_cluster_propose(n.c, &cmd, &toobig.p, prop_cb), MH_ETOOBIG);
    free(big);
    node_stop(&n);
    assert_int_equal(toobig.calls, 0);

    /* restart: the store is wiped at open and raft replays the log into it */
    node_start(&n);
    check_keys(&n, 20);
    uint64_t idx = 0;
    assert_int_equal(mh_store_applied_index(n.st, &idx), 0);
    assert_true(idx >= 22); /* bootstrap entry + activate + 20 adds */
    write_keys(&n, 20, 5, false);
    node_stop(&n);
    node_start(&n);
    check_keys(&n, 25);
    node_stop(&n);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle was closed */
}

static void test_snapshots_restart(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node n;
    node_init(&n, &loop, "snap", 4, 2);
    node_start(&n);
    write_keys(&n, 0, 10, true);
    for (int round = 0; round < 4; round++)
        write_keys(&n, 10 + 5 * round, 5, false);
    check_keys(&n, 30);
    node_stop(&n);
    assert_true(count_snapshots(n.raft_dir) >= 1);

    /* the restart restores the last snapshot and replays only the tail */
    node_start(&n);
    check_keys(&n, 30);
    write_keys(&n, 30, 7, false);
    node_stop(&n);
    node_start(&n);
    check_keys(&n, 37);
    node_stop(&n);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_dir_lock_and_config(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node n;
    node_init(&n, &loop, "lock", 0, 0);
    node_start(&n);

    /* a second cluster on the same raft directory fails cleanly */
    struct mh_store *st2;
    char dir2[PATH_MAX];
    tu_path(dir2, sizeof dir2, "lock/state2");
    assert_int_equal(mh_store_open(dir2, 0, &st2), 0);
    struct mh_fsm *fsm2;
    assert_int_equal(mh_fsm_new(st2, &fsm2), 0);
    struct mh_cluster *c2 = (struct mh_cluster *)&n;
    assert_int_equal(mh_cluster_start(&loop, &n.cfg, fsm2, &c2), MH_ELOCKED);
    assert_null(c2);
    /* and a second store on the live state directory too */
    struct mh_store *st3 = (struct mh_store *)&n;
    assert_int_equal(mh_store_open(n.state_dir, 0, &st3), MH_ELOCKED);
    assert_null(st3);
    /* the first node is unaffected */
    write_keys(&n, 0, 2, true);
    check_keys(&n, 2);

    /* bad configurations */
    struct mh_cluster_config bad = n.cfg;
    bad.id = 0;
    assert_int_equal(mh_cluster_start(&loop, &bad, fsm2, &c2), MH_ECONFIG);
    bad = n.cfg;
    bad.address = "";
    assert_int_equal(mh_cluster_start(&loop, &bad, fsm2, &c2), MH_ECONFIG);
    bad = n.cfg;
    bad.dir = NULL;
    assert_int_equal(mh_cluster_start(&loop, &bad, fsm2, &c2), MH_ECONFIG);

    /* stop with a proposal in flight: its callback runs exactly once */
    struct prop inflight;
    propose_add(&n, 2, &inflight);
    mh_cluster_stop(n.c, on_stopped, &n);
    assert_true(run_until(&loop, is_stopped, &n, 20000));
    assert_int_equal(inflight.calls, 1);
    assert_true(inflight.rc == 0 || inflight.rc == MH_EUNAVAILABLE);
    mh_cluster_free(n.c);
    mh_fsm_free(n.fsm);
    mh_store_close(n.st);

    /* after the first stopped, the directory can be used again */
    n.st = st2;
    n.fsm = fsm2;
    n.stopped = false;
    assert_int_equal(mh_cluster_start(&loop, &n.cfg, n.fsm, &n.c), 0);
    assert_true(run_until(&loop, is_ready, &n, 20000));
    /* EUNAVAILABLE means "outcome unknown" (the entry may have reached the log):
     * the retry with the same request id settles it, applied exactly once */
    check_keys_ex(&n, 2, false);
    struct prop retry;
    propose_add(&n, 2, &retry);
    assert_true(run_until(&loop, prop_done, &retry, 20000));
    assert_int_equal(retry.rc, 0);
    assert_int_equal(retry.res.rc, 0);
    assert_string_equal(retry.res.version, "v002");
    check_keys(&n, 3);
    Mhsm__Internal__KeyRecord *k = NULL;
    assert_int_equal(mh_store_get_key(n.st, "key-002", &k), 0);
    assert_int_equal(k->version_count, 1);
    mh_store_free(k);
    node_stop(&n);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* A damaged log makes start fail loudly (no silent truncation of acknowledged
 * entries); the failed start releases everything once the loop runs, including
 * the directory lock. */
static void test_damaged_log_refuses_start(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node n;
    node_init(&n, &loop, "damaged", 0, 0);
    node_start(&n);
    write_keys(&n, 0, 5, true);
    node_stop(&n);

    int damaged = 0;
    DIR *d = opendir(n.raft_dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        unsigned long long first, last;
        char extra;
        if (sscanf(e->d_name, "%16llu-%16llu%c", &first, &last, &extra) != 2 || first < 2)
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", n.raft_dir, e->d_name);
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        assert_int_equal(fseek(f, 8, SEEK_SET), 0); /* past the format word */
        static const uint8_t junk[64] = {0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff};
        assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
        assert_int_equal(fclose(f), 0);
        damaged++;
    }
    closedir(d);
    assert_true(damaged >= 1);

    for (int attempt = 0; attempt < 2; attempt++) {
        assert_int_equal(mh_store_open(n.state_dir, 64u << 20, &n.st), 0);
        assert_int_equal(mh_fsm_new(n.st, &n.fsm), 0);
        struct mh_cluster *c = (struct mh_cluster *)&n;
        int rv = mh_cluster_start(&loop, &n.cfg, n.fsm, &c);
        assert_int_equal(rv, MH_ECORRUPT); /* the second attempt proves the lock was released */
        assert_null(c);
        (void)run_until(&loop, never, NULL, 200); /* let the close callbacks run */
        mh_fsm_free(n.fsm);
        mh_store_close(n.st);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_after_restart),
        cmocka_unit_test(test_snapshots_restart),
        cmocka_unit_test(test_dir_lock_and_config),
        cmocka_unit_test(test_damaged_log_refuses_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
