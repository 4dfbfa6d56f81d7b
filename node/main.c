/* mhsmd: one mhsm node: the gRPC API over mutual TLS, the replicated key state, the workers. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/log.h"
#include "common/secret.h"
#include "consensus/cluster.h"
#include "consensus/fsm.h"
#include "consensus/store.h"
#include "crypto/alg.h"
#include "node/audit.h"
#include "node/authz.h"
#include "node/config.h"
#include "node/domain.h"
#include "node/keycache.h"
#include "node/node.h"
#include "node/rpc.h"
#include "node/worker.h"

#define KEYCACHE_ENTRIES 4096
#define DRAIN_GRACE_MS   5000

static struct mh_config cfg;
static struct mh_node node;
static uv_signal_t sig_term, sig_int;
static uv_timer_t ready_timer;
static int exit_code;

/* jansson parses private JWKs: give it a free that wipes (size-prefixed blocks). */
static void *json_wiping_malloc(size_t n)
{
    if (n > SIZE_MAX - 16)
        return NULL;
    uint8_t *p = malloc(n + 16);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    return p + 16;
}

static void json_wiping_free(void *q)
{
    if (q == NULL)
        return;
    uint8_t *p = (uint8_t *)q - 16;
    size_t n;
    memcpy(&n, p, sizeof n);
    OPENSSL_cleanse(p, n + 16);
    free(p);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mhsmd --config FILE\n"
               "       mhsmd --check-config FILE\n\n"
               "Runs one mhsm node (see deploy/mhsmd.example.ini for every option).\n"
               "SIGTERM or SIGINT drains in-flight calls and exits 0.\n");
}

static void on_fsm_applied(void *arg, const Mhsm__Internal__Command *cmd,
                           const struct mh_fsm_result *res)
{
    struct mh_node *n = arg;
    if (cmd == NULL) { /* a snapshot replaced the whole state */
        mh_keycache_evict_all(n->keys);
        mh_authz_invalidate(n);
        return;
    }
    if (res->rc != 0)
        return;
    switch (cmd->body_case) {
    case MHSM__INTERNAL__COMMAND__BODY_ACTIVATE:
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_DEFINITION:
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_DEFINITION:
    case MHSM__INTERNAL__COMMAND__BODY_PUT_ROLE_ASSIGNMENT:
    case MHSM__INTERNAL__COMMAND__BODY_DELETE_ROLE_ASSIGNMENT:
        mh_authz_invalidate(n);
        break;
    default:
        break;
    }
    if (cmd->body_case == MHSM__INTERNAL__COMMAND__BODY_DELETE_KEY ||
        cmd->body_case == MHSM__INTERNAL__COMMAND__BODY_PURGE_KEY)
        mh_keycache_evict_name(n->keys, res->name);
}

static void begin_shutdown(struct mh_node *n);

/* Brings this node's copy of the domain in line with the replicated state. */
static int boot_domain(struct mh_node *n)
{
    Mhsm__Internal__DomainRecord *dom = NULL;
    int rv = mh_store_get_domain(n->store, &dom);
    if (rv == MH_ENOTFOUND) {
        /* Not activated. A sealed copy can only be left over from an activation that
         * crashed before it committed: it protects nothing, drop it. */
        if (unlink(n->domain_path) == 0)
            MH_WARN("node", "removed a sealed domain left by an activation that never committed");
        MH_INFO("node", "not activated: download the security domain to activate");
        return 0;
    }
    if (rv < 0)
        return rv;
    struct mh_domain *d = NULL;
    rv = mh_domain_load(&n->node_key, n->domain_path, &d);
    if (rv == 0 && (dom->domain_id.len != MH_DOMAIN_ID_LEN ||
                    memcmp(dom->domain_id.data, d->id, MH_DOMAIN_ID_LEN) != 0)) {
        mh_domain_free(d);
        d = NULL;
        rv = MH_EDOMAIN;
    }
    if (rv == MH_ENOTFOUND || rv == MH_EDOMAIN) {
        /* A new or re-seeded member, or a stale copy from another domain: the other
         * members hand the domain over (node/domsync.c). */
        MH_INFO("node", "activated; this node has no (current) sealed copy of the security "
                        "domain and will receive it from the other members");
    } else if (rv < 0) {
        MH_ERROR("node",
                 "activated, but this node cannot load its sealed copy of the security domain "
                 "(%s: %s); it asks the other members for the domain",
                 n->domain_path, mh_strerror(rv));
    } else {
        n->domain = d;
        n->retention_days = dom->retention_days;
        mh_node_domain_loaded(n);
        MH_INFO("node", "security domain loaded (retention %u days)", dom->retention_days);
    }
    mh_store_free(dom);
    return 0;
}

static void on_ready_poll(uv_timer_t *t)
{
    struct mh_node *n = t->data;
    if (n->stopping)
        return;
    if (mh_cluster_failed(n->cluster)) {
        MH_ERROR("node", "the replicated state can no longer be applied here: stopping");
        exit_code = 1;
        begin_shutdown(n);
        return;
    }
    if (n->ready || !mh_cluster_ready(n->cluster))
        return;
    /* keeps running (every 10 ms until ready, then every 250 ms) to watch for failure */
    uv_timer_set_repeat(t, 250);
    int rv = boot_domain(n);
    if (rv < 0) {
        MH_ERROR("node", "reading the domain failed: %s", mh_strerror(rv));
        exit_code = 1;
        begin_shutdown(n);
        return;
    }
    n->ready = true;
    mh_rpc_server_set_serving(n->rpc, true);
    MH_INFO("node", "ready name=%s api=%s:%u", n->cfg->name, n->cfg->api_host,
            mh_rpc_server_port(n->rpc));
}

static void on_closed_handle(uv_handle_t *h)
{
    (void)h;
}

static void on_workers_stopped(void *arg)
{
    struct mh_node *n = arg;
    /* Last: handlers of requests whose clients went away finish as raft and the
     * workers stop, and their records are written then. The final checkpoint ends
     * the log; the hooks go first so nothing reaches a closed log. */
    mh_rpc_server_set_audit(n->rpc, NULL, NULL, NULL);
    mh_audit_close(n->audit);
    n->audit = NULL;
    MH_INFO("node", "stopped");
}

static void on_peer_closed(void *arg)
{
    struct mh_node *n = arg;
    mh_worker_pool_stop(n->workers, on_workers_stopped, n);
}

/* raft first (it closes its transport: the raft streams), then the peer endpoint
 * (listener and request connections; forwarded calls still pending end here), then
 * the workers. */
static void on_cluster_stopped(void *arg)
{
    struct mh_node *n = arg;
    mh_peer_close(n->peer, on_peer_closed, n);
}

static void on_drained(void *arg)
{
    struct mh_node *n = arg;
    mh_domsync_stop(n);
    mh_cluster_stop(n->cluster, on_cluster_stopped, n);
}

static void begin_shutdown(struct mh_node *n)
{
    if (n->stopping)
        return;
    n->stopping = true;
    n->ready = false;
    mh_rpc_server_set_serving(n->rpc, false);
    uv_timer_stop(&ready_timer);
    uv_close((uv_handle_t *)&ready_timer, on_closed_handle);
    uv_close((uv_handle_t *)&sig_term, on_closed_handle);
    uv_close((uv_handle_t *)&sig_int, on_closed_handle);
    mh_rpc_server_drain(n->rpc, DRAIN_GRACE_MS, on_drained, n);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct mh_node *n = s->data;
    if (n->stopping)
        return;
    MH_INFO("node", "signal %d: draining", signum);
    begin_shutdown(n);
}

static int path_join(char *out, size_t cap, const char *dir, const char *leaf)
{
    int n = snprintf(out, cap, "%s/%s", dir, leaf);
    return n < 0 || (size_t)n >= cap ? MH_EINVAL : 0;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--check-config") == 0) &&
            i + 1 < argc) {
            check_only = strcmp(argv[i], "--check-config") == 0;
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    int rv = mh_config_load(config_path, &cfg, err, sizeof err);
    if (rv < 0) {
        fprintf(stderr, "mhsmd: %s\n", err);
        return 2;
    }
    if (check_only) {
        printf("mhsmd: %s is valid\n", config_path);
        return 0;
    }
    mh_log_set_level((enum mh_log_level)cfg.log_level);
    rv = mh_process_harden();
    if (rv < 0)
        MH_WARN("node", "could not harden the process: %s", mh_strerror(rv));
    json_set_alloc_funcs(json_wiping_malloc, json_wiping_free);
    signal(SIGPIPE, SIG_IGN);
    if (mh_alg_init() < 0) {
        MH_ERROR("node", "OpenSSL algorithms unavailable");
        return 1;
    }

    struct mh_node *n = &node;
    n->cfg = &cfg;
    n->loop = uv_default_loop();
    char state_dir[600], raft_dir[600];
    if (path_join(state_dir, sizeof state_dir, cfg.data_dir, "state") < 0 ||
        path_join(raft_dir, sizeof raft_dir, cfg.data_dir, "raft") < 0 ||
        path_join(n->domain_path, sizeof n->domain_path, cfg.data_dir, "domain.sealed") < 0) {
        MH_ERROR("node", "data_dir too long");
        return 2;
    }
    if (mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
        MH_ERROR("node", "cannot create data_dir %s: %s", cfg.data_dir, strerror(errno));
        return 1;
    }
    rv = mh_domain_node_key(cfg.seal_key_file, &n->node_key);
    if (rv < 0) {
        MH_ERROR("node", "node sealing key %s: %s", cfg.seal_key_file, mh_strerror(rv));
        return 1;
    }
    rv = mh_store_open(state_dir, cfg.lmdb_map_size, &n->store);
    if (rv < 0) {
        MH_ERROR("node", "opening the store in %s: %s", state_dir, mh_strerror(rv));
        return 1;
    }
    rv = mh_fsm_new(n->store, &n->fsm);
    if (rv == 0)
        rv = mh_keycache_new(KEYCACHE_ENTRIES, &n->keys);
    if (rv < 0) {
        MH_ERROR("node", "initialising: %s", mh_strerror(rv));
        return 1;
    }
    mh_fsm_set_hook(n->fsm, on_fsm_applied, n);
    struct mh_peer_config pcfg = {
        .id = cfg.raft_id,
        .listen = cfg.raft_address,
        .cert_file = cfg.raft_cert,
        .key_file = cfg.raft_key,
        .ca_file = cfg.raft_ca,
        .max_frame = MH_FSM_MAX_COMMAND + 65536,
    };
    rv = mh_peer_new(n->loop, &pcfg, &n->peer);
    if (rv < 0) {
        MH_ERROR("node", "starting the peer channel on %s: %s", cfg.raft_address, mh_strerror(rv));
        return 1;
    }
    struct mh_cluster_config ccfg = {
        .dir = raft_dir,
        .id = cfg.raft_id,
        .address = cfg.raft_address,
        .members = cfg.members,
        .n_members = cfg.n_members,
        .join = cfg.join,
        .peer = n->peer,
        .election_timeout_ms = cfg.election_timeout_ms,
        .heartbeat_ms = cfg.heartbeat_ms,
        .snapshot_threshold = cfg.snapshot_threshold,
        .snapshot_trailing = cfg.snapshot_trailing,
    };
    rv = mh_cluster_start(n->loop, &ccfg, n->fsm, &n->cluster);
    if (rv < 0) {
        MH_ERROR("node", "starting raft in %s: %s", raft_dir, mh_strerror(rv));
        return 1;
    }
    rv = mh_worker_pool_new(n->loop, cfg.threads, &n->workers);
    if (rv < 0) {
        MH_ERROR("node", "starting workers: %s", mh_strerror(rv));
        return 1;
    }
    struct mh_rpc_config rcfg = {
        .host = cfg.api_host,
        .port = cfg.api_port,
        .cert_file = cfg.cert,
        .key_file = cfg.key,
        .ca_file = cfg.client_ca,
        .max_message = cfg.max_message,
        .max_streams = cfg.max_streams,
        .max_connections = cfg.max_connections,
    };
    rv = mh_rpc_server_new(n->loop, &rcfg, &n->rpc);
    if (rv == 0)
        rv = mh_svc_sd_register(n);
    if (rv == 0)
        rv = mh_svc_keys_register(n);
    if (rv == 0)
        rv = mh_svc_crypto_register(n);
    if (rv == 0)
        rv = mh_svc_cluster_register(n);
    if (rv == 0)
        rv = mh_svc_rbac_register(n);
    if (rv == 0)
        rv = mh_svc_audit_register(n);
    if (rv == 0) {
        struct mh_audit_config acfg = {
            .dir = cfg.audit_dir,
            .node_id = cfg.raft_id,
            .hsm_name = cfg.name,
            .max_file_bytes = cfg.audit_max_file_bytes,
            .checkpoint_interval_ms = cfg.audit_checkpoint_ms,
        };
        rv = mh_audit_open(n->loop, &acfg, &n->audit);
        if (rv == 0)
            mh_rpc_server_set_audit(n->rpc, mh_audit_rpc_hook, mh_audit_rpc_admit, n->audit);
    }
    if (rv < 0) {
        MH_ERROR("node", "setting up the API: %s", mh_strerror(rv));
        return 1;
    }
    rv = mh_domsync_start(n);
    if (rv < 0) {
        MH_ERROR("node", "node key %s: %s", cfg.raft_key, mh_strerror(rv));
        return 1;
    }
    mh_rpc_server_set_serving(n->rpc, false);
    rv = mh_rpc_server_listen(n->rpc);
    if (rv < 0) {
        MH_ERROR("node", "listening on %s:%u: %s", cfg.api_host, cfg.api_port, mh_strerror(rv));
        return 1;
    }
    uv_signal_init(n->loop, &sig_term);
    uv_signal_init(n->loop, &sig_int);
    sig_term.data = sig_int.data = n;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_timer_init(n->loop, &ready_timer);
    ready_timer.data = n;
    uv_timer_start(&ready_timer, on_ready_poll, 5, 10);

    uv_run(n->loop, UV_RUN_DEFAULT);

    mh_rpc_server_free(n->rpc);
    mh_worker_pool_free(n->workers);
    mh_cluster_free(n->cluster);
    mh_peer_free(n->peer);
    EVP_PKEY_free(n->node_pkey);
    mh_fsm_free(n->fsm);
    mh_store_close(n->store);
    mh_keycache_free(n->keys);
    mh_authz_free(n);
    mh_domain_free(n->domain);
    mh_secret_free(&n->node_key);
    if (uv_loop_close(n->loop) != 0)
        MH_WARN("node", "event loop closed with open handles");
    return exit_code;
}
