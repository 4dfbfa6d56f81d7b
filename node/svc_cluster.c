/* svc_cluster: mhsm.v1.Cluster: the operators' control plane (status, leadership, membership).
 *
 * Only the principals in [cluster] operators may call it. Status answers even while
 * the node does not serve keys (that is when operators need it); changes are handed
 * to consensus/cluster, which runs them on the leader, and are answered with this
 * node's status once done. Loop thread only; nothing here blocks. */
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal/peer.pb-c.h"
#include "mhsm/v1/cluster.pb-c.h"
#include "node/node.h"
#include "node/status.h"

/* Until node/node.h declares it (the lead's file), -Wmissing-prototypes needs one here. */
MH_MUST_USE int mh_svc_cluster_register(struct mh_node *n);

#define MAX_NODE_ID 1000000u
/* After a transfer the old leader steps down before anyone is elected: the reply
 * waits (polling, never blocking) for a leader so it can name it. */
#define LEADER_POLL_MS 50u

static bool is_operator(const struct mh_node *n, const char *principal)
{
    for (size_t i = 0; i < n->cfg->n_operators; i++)
        if (strcmp(n->cfg->operators[i], principal) == 0)
            return true;
    return false;
}

/* The caller first, then whether this node can answer at all. */
static bool admit(struct mh_node *n, struct mh_rpc_call *call)
{
    const char *who = mh_rpc_call_principal(call);
    if (!is_operator(n, who)) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "the cluster control plane is only for operators ([cluster] operators in "
                 "mhsmd's config); %s is not one",
                 who);
        MH_INFO("cluster", "call=%llu principal=%s method=%s decision=deny",
                (unsigned long long)mh_rpc_call_id(call), who, mh_rpc_call_method(call));
        mh_rpc_fail(call, MH_GRPC_PERMISSION_DENIED, msg);
        return false;
    }
    if (n->stopping || n->cluster == NULL) {
        mh_rpc_fail(call, MH_GRPC_UNAVAILABLE, "the node is shutting down; ask another node");
        return false;
    }
    return true;
}

static const char *role_name(int role)
{
    switch (role) {
    case RAFT_VOTER:
        return "voter";
    case RAFT_STANDBY:
        return "standby";
    case RAFT_SPARE:
        return "spare";
    default:
        return "unknown";
    }
}

static const char *state_name(int state)
{
    switch (state) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_UNAVAILABLE:
        return "unavailable";
    default:
        return "unavailable";
    }
}

/* Answers |call| with this node's view of the cluster. */
static void reply_status(struct mh_node *n, struct mh_rpc_call *call)
{
    struct mh_cluster_status *st = calloc(1, sizeof *st);
    if (st == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, "cluster status");
        return;
    }
    mh_cluster_status(n->cluster, st);
    Mhsm__V1__ClusterMember members[MH_CLUSTER_MAX_MEMBERS];
    Mhsm__V1__ClusterMember *ptrs[MH_CLUSTER_MAX_MEMBERS];
    size_t nm = st->n_members < MH_CLUSTER_MAX_MEMBERS ? st->n_members : MH_CLUSTER_MAX_MEMBERS;
    for (size_t i = 0; i < nm; i++) {
        const struct mh_cluster_member_status *m = &st->members[i];
        mhsm__v1__cluster_member__init(&members[i]);
        members[i].id = m->id;
        members[i].address = (char *)m->address;
        members[i].role = (char *)role_name(m->role);
        members[i].leader = st->leader_id != 0 && m->id == st->leader_id;
        members[i].last_contact_ms = m->last_contact_ms;
        ptrs[i] = &members[i];
    }
    Mhsm__V1__ClusterStatusResponse resp = MHSM__V1__CLUSTER_STATUS_RESPONSE__INIT;
    resp.node_id = st->id;
    resp.state = (char *)state_name(st->state);
    resp.leader_id = st->leader_id;
    resp.leader_address = st->leader_address;
    resp.term = st->term;
    resp.commit_index = st->commit_index;
    resp.applied_index = st->applied_index;
    resp.last_index = st->last_index;
    resp.serving = st->serving;
    resp.serving_reason = st->reason;
    resp.leader_contact_ms = st->leader_contact_ms;
    resp.n_members = nm;
    resp.members = ptrs;
    mh_rpc_reply(call, &resp.base);
    free(st);
}

/* A raft id an operator may name: 1..MAX_NODE_ID. */
static bool valid_id(uint64_t id)
{
    return id >= 1 && id <= MAX_NODE_ID;
}

/* "host:port": a non-empty host of printable characters without spaces, a decimal
 * port 1..65535, and short enough for struct mh_cluster_member. */
static bool valid_address(const char *a)
{
    size_t len = strlen(a);
    const char *colon = strrchr(a, ':');
    if (len == 0 || len >= sizeof(((struct mh_cluster_member *)0)->address) || colon == NULL ||
        colon == a)
        return false;
    for (const char *p = a; p < colon; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    const char *port = colon + 1;
    size_t plen = strlen(port);
    if (plen == 0 || plen > 5 || port[0] == '0')
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (port[i] < '0' || port[i] > '9')
            return false;
        v = v * 10u + (unsigned)(port[i] - '0');
    }
    return v <= 65535u;
}

static bool check_id(struct mh_rpc_call *call, const char *field, uint64_t id)
{
    if (valid_id(id))
        return true;
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a raft id in 1..%u, not %llu", field, MAX_NODE_ID,
             (unsigned long long)id);
    mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, msg);
    return false;
}

static bool check_address(struct mh_rpc_call *call, const char *field, const char *address)
{
    if (valid_address(address))
        return true;
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be the new node's raft address HOST:PORT (port 1..65535)",
             field);
    mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, msg);
    return false;
}

/* ---- changes ------------------------------------------------------------------ */

/* One operator request in flight: a single change, or replace's add then remove. */
struct op {
    struct mh_cluster_change req;
    struct mh_node *n;
    struct mh_rpc_call *call;
    Mhsm__Internal__MemberChange chg;
    char address[128];
    uint64_t remove_id; /* replace: the node removed once the new one is a voter */
    unsigned step;      /* replace: 1 (add) or 2 (remove) */
    char describe[256]; /* the step, for the operator when it fails */
    /* Transfer: polls for the next leader. Replace: starts the removal from the loop
     * rather than from inside the add's raft callback. */
    uv_timer_t timer;
    bool timer_used; /* initialized: |o| is freed by its close callback */
    uint64_t wait_until;
};

static void op_done(struct mh_cluster_change *req, int rc, const char *message);

static void op_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Frees |o| once its call is finished (now, or when the timer is closed). */
static void op_free(struct op *o)
{
    if (o->timer_used)
        uv_close((uv_handle_t *)&o->timer, op_timer_closed);
    else
        free(o);
}

/* Runs |cb| on the loop after |delay_ms| (every LEADER_POLL_MS if |repeat|). */
static int op_timer(struct op *o, uv_timer_cb cb, uint64_t delay_ms, bool repeat)
{
    if (!o->timer_used) {
        int rc = uv_timer_init(o->n->loop, &o->timer);
        if (rc < 0)
            return rc;
        o->timer.data = o;
        o->timer_used = true;
    }
    return uv_timer_start(&o->timer, cb, delay_ms, repeat ? LEADER_POLL_MS : 0);
}

static bool leader_known(struct mh_node *n)
{
    struct mh_cluster_status *st = calloc(1, sizeof *st);
    if (st == NULL)
        return true; /* reply_status reports the shortage */
    mh_cluster_status(n->cluster, st);
    bool known = st->leader_id != 0;
    free(st);
    return known;
}

static void op_poll_leader(uv_timer_t *t)
{
    struct op *o = t->data;
    struct mh_node *n = o->n;
    if (!n->stopping && n->cluster != NULL && !mh_rpc_call_cancelled(o->call) &&
        uv_now(n->loop) < o->wait_until && !leader_known(n))
        return;
    uv_timer_stop(t);
    if (n->stopping || n->cluster == NULL)
        mh_rpc_fail(o->call, MH_GRPC_UNAVAILABLE,
                    "the transfer is done but the node is shutting down; ask another node for "
                    "the status");
    else
        reply_status(n, o->call);
    op_free(o);
}

static void op_describe(struct op *o)
{
    const Mhsm__Internal__MemberChange *c = &o->chg;
    char what[160];
    switch (c->op) {
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__ADD:
        snprintf(what, sizeof what, "adding node %llu at %s", (unsigned long long)c->id,
                 c->address);
        break;
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__REMOVE:
        snprintf(what, sizeof what, "removing node %llu", (unsigned long long)c->id);
        break;
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__TRANSFER:
        if (c->id == 0)
            snprintf(what, sizeof what, "transferring leadership");
        else
            snprintf(what, sizeof what, "transferring leadership to node %llu",
                     (unsigned long long)c->id);
        break;
    case MHSM__INTERNAL__MEMBER_CHANGE__OP__OP_UNSPECIFIED:
    default:
        snprintf(what, sizeof what, "changing the cluster");
        break;
    }
    if (o->remove_id != 0)
        snprintf(o->describe, sizeof o->describe, "replace step %u of 2 (%s)", o->step, what);
    else
        snprintf(o->describe, sizeof o->describe, "%s", what);
}

/* Starts o->chg; on an immediate refusal finishes the call and frees |o|. */
static void op_start(struct op *o)
{
    op_describe(o);
    MH_INFO("cluster", "call=%llu principal=%s %s", (unsigned long long)mh_rpc_call_id(o->call),
            mh_rpc_call_principal(o->call), o->describe);
    o->req.data = o;
    int rc = mh_cluster_change(o->n->cluster, &o->chg, &o->req, op_done);
    if (rc < 0) {
        MH_WARN("cluster", "call=%llu %s refused: %s", (unsigned long long)mh_rpc_call_id(o->call),
                o->describe, mh_strerror(rc));
        mh_rpc_fail_err(o->call, rc, o->describe);
        op_free(o);
    }
}

static void op_start_remove(uv_timer_t *t)
{
    struct op *o = t->data;
    uv_timer_stop(t);
    if (o->n->stopping || o->n->cluster == NULL) {
        char what[300];
        snprintf(what, sizeof what,
                 "replace: node %llu was added but this node is shutting down before "
                 "removing node %llu; run `mhsm cluster remove --id %llu`",
                 (unsigned long long)o->chg.id, (unsigned long long)o->remove_id,
                 (unsigned long long)o->remove_id);
        mh_rpc_fail(o->call, MH_GRPC_UNAVAILABLE, what);
        op_free(o);
        return;
    }
    o->step = 2;
    mhsm__internal__member_change__init(&o->chg);
    o->chg.op = MHSM__INTERNAL__MEMBER_CHANGE__OP__REMOVE;
    o->chg.id = o->remove_id;
    memset(&o->req, 0, sizeof o->req);
    op_start(o);
}

static void op_done(struct mh_cluster_change *req, int rc, const char *message)
{
    struct op *o = req->data;
    const char *msg = message != NULL ? message : "";
    if (rc < 0) {
        MH_WARN("cluster", "call=%llu %s failed: %s (%s)",
                (unsigned long long)mh_rpc_call_id(o->call), o->describe, mh_strerror(rc), msg);
        char what[512];
        if (msg[0] != 0)
            snprintf(what, sizeof what, "%s failed (%s)", o->describe, msg);
        else
            snprintf(what, sizeof what, "%s failed", o->describe);
        mh_rpc_fail_err(o->call, rc, what);
        op_free(o);
        return;
    }
    MH_INFO("cluster", "call=%llu %s done: %s", (unsigned long long)mh_rpc_call_id(o->call),
            o->describe, msg);
    if (o->remove_id != 0 && o->step == 1) {
        if (op_timer(o, op_start_remove, 0, false) == 0)
            return;
        char what[300];
        snprintf(what, sizeof what,
                 "replace: node %llu was added but removing node %llu could not start; run "
                 "`mhsm cluster remove --id %llu`",
                 (unsigned long long)o->chg.id, (unsigned long long)o->remove_id,
                 (unsigned long long)o->remove_id);
        mh_rpc_fail(o->call, MH_GRPC_INTERNAL, what);
        op_free(o);
        return;
    }
    if (o->chg.op == MHSM__INTERNAL__MEMBER_CHANGE__OP__TRANSFER && !o->n->stopping &&
        o->n->cluster != NULL && !leader_known(o->n)) {
        unsigned et = o->n->cfg->election_timeout_ms != 0 ? o->n->cfg->election_timeout_ms : 1000;
        o->wait_until = uv_now(o->n->loop) + 3u * (uint64_t)et;
        if (op_timer(o, op_poll_leader, LEADER_POLL_MS, true) == 0)
            return;
        /* cannot wait: answer with what is known now */
    }
    if (o->n->stopping || o->n->cluster == NULL) {
        mh_rpc_fail(o->call, MH_GRPC_UNAVAILABLE,
                    "the change is done but the node is shutting down; ask another node for "
                    "the status");
    } else {
        reply_status(o->n, o->call);
    }
    op_free(o);
}

static struct op *op_new(struct mh_node *n, struct mh_rpc_call *call, const char *name)
{
    struct op *o = calloc(1, sizeof *o);
    if (o == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, name);
        return NULL;
    }
    o->n = n;
    o->call = call;
    o->step = 1;
    mhsm__internal__member_change__init(&o->chg);
    return o;
}

/* ---- handlers ------------------------------------------------------------------ */

static void handle_status(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    (void)request;
    struct mh_node *n = data;
    if (admit(n, call))
        reply_status(n, call);
}

static void handle_transfer(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__TransferLeadershipRequest *req =
        (const Mhsm__V1__TransferLeadershipRequest *)request;
    if (!admit(n, call))
        return;
    if (req->id != 0 && !check_id(call, "id", req->id))
        return;
    struct op *o = op_new(n, call, "transfer");
    if (o == NULL)
        return;
    o->chg.op = MHSM__INTERNAL__MEMBER_CHANGE__OP__TRANSFER;
    o->chg.id = req->id;
    op_start(o);
}

static void handle_add(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__AddNodeRequest *req = (const Mhsm__V1__AddNodeRequest *)request;
    if (!admit(n, call) || !check_id(call, "id", req->id) ||
        !check_address(call, "address", req->address))
        return;
    struct op *o = op_new(n, call, "add");
    if (o == NULL)
        return;
    snprintf(o->address, sizeof o->address, "%s", req->address);
    o->chg.op = MHSM__INTERNAL__MEMBER_CHANGE__OP__ADD;
    o->chg.id = req->id;
    o->chg.address = o->address;
    op_start(o);
}

static void handle_remove(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__RemoveNodeRequest *req = (const Mhsm__V1__RemoveNodeRequest *)request;
    if (!admit(n, call) || !check_id(call, "id", req->id))
        return;
    struct op *o = op_new(n, call, "remove");
    if (o == NULL)
        return;
    o->chg.op = MHSM__INTERNAL__MEMBER_CHANGE__OP__REMOVE;
    o->chg.id = req->id;
    op_start(o);
}

static void handle_replace(struct mh_rpc_call *call, const ProtobufCMessage *request, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__ReplaceNodeRequest *req = (const Mhsm__V1__ReplaceNodeRequest *)request;
    if (!admit(n, call) || !check_id(call, "old_id", req->old_id) ||
        !check_id(call, "new_id", req->new_id) ||
        !check_address(call, "new_address", req->new_address))
        return;
    if (req->old_id == req->new_id) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "old_id and new_id must differ: a replacement gets a raft id never used "
                    "before");
        return;
    }
    /* Checked before adding: a typo in old_id must not leave an extra voter behind. */
    if (!mh_cluster_is_member(n->cluster, req->old_id)) {
        char msg[160];
        snprintf(msg, sizeof msg, "node %llu is not a member; nothing was changed",
                 (unsigned long long)req->old_id);
        mh_rpc_fail(call, MH_GRPC_NOT_FOUND, msg);
        return;
    }
    struct op *o = op_new(n, call, "replace");
    if (o == NULL)
        return;
    snprintf(o->address, sizeof o->address, "%s", req->new_address);
    o->chg.op = MHSM__INTERNAL__MEMBER_CHANGE__OP__ADD;
    o->chg.id = req->new_id;
    o->chg.address = o->address;
    o->remove_id = req->old_id;
    op_start(o);
}

/* Same order as service Cluster in proto/mhsm/v1/cluster.proto. */
static const mh_rpc_handler_fn cluster_handlers[] = {
    handle_status, handle_transfer, handle_add, handle_remove, handle_replace,
};

int mh_svc_cluster_register(struct mh_node *n)
{
    if (mhsm__v1__cluster__descriptor.n_methods !=
        sizeof cluster_handlers / sizeof cluster_handlers[0])
        return MH_EINVAL;
    return mh_rpc_server_add_service(n->rpc, &mhsm__v1__cluster__descriptor, cluster_handlers, n);
}
