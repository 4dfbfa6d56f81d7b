/* domsync: the security domain's root secret travels from member to member, wrapped to
 * the receiving node's certificate key, never through the raft log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "common/log.h"
#include "crypto/jwe.h"
#include "node/node.h"

#define DOMSYNC_PERIOD_MS 500
#define WAIT_LOG_MS       10000

struct unwrap {
    struct mh_work work;
    struct mh_node *n;
    char *jwe;
    uint64_t from;
    uint8_t want_id[MH_DOMAIN_ID_LEN];
    unsigned retention_days;
    int rc;
    struct mh_domain *domain;
};

/* Worker: RSA-OAEP unwrap, derive, check the id, seal to disk (fsync). */
static void unwrap_work(struct mh_work *w)
{
    struct unwrap *u = mh_container_of(w, struct unwrap, work);
    struct mh_secret root = {0};
    u->rc = mh_jwe_decrypt_rsa(u->jwe, strlen(u->jwe), u->n->node_pkey, &root);
    if (u->rc == 0 && root.len != 32)
        u->rc = MH_EPROTO;
    if (u->rc == 0)
        u->rc = mh_domain_from_root(&root, &u->domain);
    mh_secret_free(&root);
    if (u->rc == 0 && memcmp(u->domain->id, u->want_id, MH_DOMAIN_ID_LEN) != 0)
        u->rc = MH_EDOMAIN;
    if (u->rc == 0)
        u->rc = mh_domain_save(u->domain, &u->n->node_key, u->n->domain_path);
}

static void unwrap_done(struct mh_work *w)
{
    struct unwrap *u = mh_container_of(w, struct unwrap, work);
    struct mh_node *n = u->n;
    n->fetching = false;
    if (u->rc < 0) {
        MH_ERROR("domsync",
                 "msg=\"the security domain received from node %llu is unusable\" err=%s",
                 (unsigned long long)u->from, mh_errname(u->rc));
    } else if (n->domain == NULL && !n->stopping) {
        n->domain = u->domain;
        n->retention_days = u->retention_days;
        u->domain = NULL;
        mh_node_domain_loaded(n);
        MH_INFO("domsync",
                "msg=\"security domain received from node %llu, sealed locally; serving keys\"",
                (unsigned long long)u->from);
    }
    mh_domain_free(u->domain);
    memset(u->jwe, 0, strlen(u->jwe));
    free(u->jwe);
    free(u);
}

static void fetched(struct mh_cluster_fetch *f, int rc, uint64_t from, const char *jwe)
{
    struct mh_node *n = f->data;
    if (rc < 0 || n->stopping) {
        n->fetching = false;
        uint64_t now = uv_now(n->loop);
        if (!n->stopping &&
            (n->domsync_last_log == 0 || now - n->domsync_last_log >= WAIT_LOG_MS)) {
            n->domsync_last_log = now;
            MH_WARN("domsync",
                    "msg=\"activated, waiting for the security domain from the other members\" "
                    "last_err=%s",
                    mh_errname(rc));
        }
        return;
    }
    struct unwrap *u = calloc(1, sizeof *u);
    if (u == NULL || (u->jwe = strdup(jwe)) == NULL) {
        n->fetching = false;
        free(u);
        return;
    }
    memcpy(u->want_id, n->fetch_id, MH_DOMAIN_ID_LEN);
    u->retention_days = n->fetch_retention;
    u->n = n;
    u->from = from;
    u->work.work = unwrap_work;
    u->work.done = unwrap_done;
    mh_worker_submit(n->workers, &u->work);
}

static void tick(uv_timer_t *t)
{
    struct mh_node *n = t->data;
    if (n->stopping || !n->ready || n->domain != NULL || n->fetching || n->activating ||
        n->node_pkey == NULL || !mh_cluster_ready(n->cluster))
        return;
    Mhsm__Internal__DomainRecord *dom = NULL;
    if (mh_store_get_domain(n->store, &dom) < 0)
        return; /* not activated (or unreadable: the gate reports it) */
    if (dom->domain_id.len != MH_DOMAIN_ID_LEN) {
        mh_store_free(dom);
        return;
    }
    memcpy(n->fetch_id, dom->domain_id.data, MH_DOMAIN_ID_LEN);
    n->fetch_retention = dom->retention_days;
    n->fetch.data = n;
    n->fetching = true; /* before the call: its callback may already have run on return */
    mh_store_free(dom);
    int rv = mh_cluster_fetch_domain(n->cluster, n->fetch_id, MH_DOMAIN_ID_LEN, &n->fetch, fetched);
    if (rv < 0)
        n->fetching = false;
}

/* Provider: a member asks for the domain; wrap the root to its certificate key. */
static void provide(void *arg, uint64_t from, const ProtobufCBinaryData *domain_id,
                    EVP_PKEY *requester, Mhsm__Internal__PeerResponse *resp)
{
    struct mh_node *n = arg;
    const char *why = NULL;
    if (n->domain == NULL) {
        resp->rc = MH_ENOTFOUND;
        why = "this node does not hold the security domain";
    } else if (domain_id->len != MH_DOMAIN_ID_LEN ||
               memcmp(domain_id->data, n->domain->id, MH_DOMAIN_ID_LEN) != 0) {
        resp->rc = MH_EDOMAIN;
        why = "a different security domain was asked for";
    } else if (requester == NULL || EVP_PKEY_get_base_id(requester) != EVP_PKEY_RSA) {
        resp->rc = MH_ECERT;
        why = "the requester's node certificate must hold an RSA key to receive the domain";
    } else {
        struct mh_buf jwe = {0};
        int rv = mh_jwe_encrypt_rsa(requester, n->domain->root.data, n->domain->root.len, &jwe);
        char *s = rv == 0 ? malloc(jwe.len + 1) : NULL;
        if (s == NULL) {
            resp->rc = rv < 0 ? rv : MH_ENOMEM;
            why = "wrapping the domain failed";
        } else {
            memcpy(s, jwe.data, jwe.len);
            s[jwe.len] = '\0';
            resp->rc = 0;
            resp->wrapped_root = s;
            MH_INFO("domsync",
                    "msg=\"security domain sent to node %llu, wrapped to its certificate key\"",
                    (unsigned long long)from);
        }
        mh_buf_free(&jwe);
    }
    if (why != NULL) {
        MH_INFO("domsync", "msg=\"domain request refused\" from=%llu reason=\"%s\"",
                (unsigned long long)from, why);
        resp->message = strdup(why);
    }
}

int mh_domsync_start(struct mh_node *n)
{
    BIO *bio = BIO_new_file(n->cfg->raft_key, "r");
    n->node_pkey = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (n->node_pkey == NULL) {
        MH_ERROR("domsync", "msg=\"the node key is not a readable PEM private key\" file=%s",
                 n->cfg->raft_key);
        return MH_ECONFIG;
    }
    if (EVP_PKEY_get_base_id(n->node_pkey) != EVP_PKEY_RSA)
        MH_WARN("domsync",
                "msg=\"the node key is not RSA: this node can never receive the "
                "security domain from the other members\" file=%s",
                n->cfg->raft_key);
    mh_cluster_set_domain_provider(n->cluster, provide, n);
    uv_timer_init(n->loop, &n->domsync_timer);
    n->domsync_timer.data = n;
    uv_timer_start(&n->domsync_timer, tick, DOMSYNC_PERIOD_MS, DOMSYNC_PERIOD_MS);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    (void)h;
}

void mh_domsync_stop(struct mh_node *n)
{
    if (n->domsync_timer.data == NULL || uv_is_closing((uv_handle_t *)&n->domsync_timer))
        return;
    uv_timer_stop(&n->domsync_timer);
    uv_close((uv_handle_t *)&n->domsync_timer, timer_closed);
}
