/* svc_sd: mhsm.v1.SecurityDomain: activation by download of the security domain, and status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/b64.h"
#include "crypto/cert.h"
#include "crypto/rand.h"
#include "crypto/sd.h"
#include "mhsm/v1/security_domain.pb-c.h"
#include "node/authz.h"
#include "node/node.h"
#include "node/status.h"

#define DEFAULT_QUORUM_MSG "quorum must be 2..10 and at most the number of certificates"

struct download {
    struct mh_work work;
    struct mh_proposal prop;
    struct mh_node *n;
    struct mh_rpc_call *call;
    const Mhsm__V1__DownloadRequest *req; /* owned by the call */
    unsigned retention_days;
    /* worker results */
    int rc;
    const char *what;
    struct mh_domain *domain;
    struct mh_buf sd_json;
    Mhsm__Internal__DomainRecord rec;
    ProtobufCBinaryData cert_hashes[MH_SD_MAX_CERTS];
    uint8_t hash_bytes[MH_SD_MAX_CERTS][32];
    /* Activate.initial_assignments: Administrator at "/" per [rbac] administrators */
    Mhsm__Internal__RoleAssignmentRecord admins[MH_CONFIG_MAX_ADMINS];
    Mhsm__Internal__RoleAssignmentRecord *admin_ptrs[MH_CONFIG_MAX_ADMINS];
    char admin_names[MH_CONFIG_MAX_ADMINS][MH_RBAC_GUID_LEN + 1];
};

/* The proposer names the initial administrators' assignments (apply is
 * deterministic: no randomness there). |now| is the command's time. */
static int fill_initial_assignments(struct download *d, Mhsm__Internal__Activate *act, int64_t now)
{
    const struct mh_config *cfg = d->n->cfg;
    size_t n =
        cfg->n_administrators < MH_CONFIG_MAX_ADMINS ? cfg->n_administrators : MH_CONFIG_MAX_ADMINS;
    for (size_t i = 0; i < n; i++) {
        MH_TRY(mh_rand_guid(d->admin_names[i]));
        Mhsm__Internal__RoleAssignmentRecord *a = &d->admins[i];
        mhsm__internal__role_assignment_record__init(a);
        a->name = d->admin_names[i];
        a->scope = (char *)"/";
        a->role_id = (char *)MH_RBAC_ROLE_ADMIN;
        a->principal_id = (char *)cfg->administrators[i];
        a->created = now;
        d->admin_ptrs[i] = a;
    }
    act->n_initial_assignments = n;
    act->initial_assignments = d->admin_ptrs;
    return 0;
}

static void download_free(struct download *d)
{
    mh_domain_free(d->domain);
    mh_buf_free(&d->sd_json);
    free(d);
}

/* Worker: parse the custodians' certificates, make the root secret, build the SD
 * file, and seal the root under this node's key before anything is proposed. */
static void download_work(struct mh_work *w)
{
    struct download *d = mh_container_of(w, struct download, work);
    const Mhsm__V1__DownloadRequest *req = d->req;
    struct mh_cert *certs[MH_SD_MAX_CERTS] = {0};
    size_t n_certs = req->n_certificates_pem;
    d->what = "certificates";
    for (size_t i = 0; i < n_certs; i++) {
        const char *pem = req->certificates_pem[i];
        d->rc = mh_cert_from_pem((const uint8_t *)pem, strlen(pem), &certs[i]);
        if (d->rc < 0) {
            d->what = "a custodian certificate is not an RSA (>= 2048 bit) PEM certificate";
            goto out;
        }
        /* DomainRecord keeps the raw SHA-256 that x5t#S256 encodes. */
        struct mh_buf h = {0};
        const char *x5t = mh_cert_x5t_s256(certs[i]);
        d->rc = mh_b64url_decode(x5t, strlen(x5t), &h);
        if (d->rc == 0 && h.len != sizeof d->hash_bytes[i])
            d->rc = MH_ECRYPTO;
        if (d->rc == 0)
            memcpy(d->hash_bytes[i], h.data, h.len);
        mh_buf_free(&h);
        if (d->rc < 0)
            goto out;
        d->cert_hashes[i].data = d->hash_bytes[i];
        d->cert_hashes[i].len = 32;
    }
    d->rc = mh_domain_generate(&d->domain);
    if (d->rc < 0) {
        d->what = "generating the domain";
        goto out;
    }
    struct mh_sd_item item = {
        .tag = MH_DOMAIN_SD_TAG, .tag_len = strlen(MH_DOMAIN_SD_TAG), .value = &d->domain->root};
    d->rc = mh_sd_build(&item, 1, (const struct mh_cert *const *)certs, n_certs, req->quorum,
                        &d->sd_json);
    if (d->rc < 0) {
        d->what = d->rc == MH_EQUORUM ? DEFAULT_QUORUM_MSG ", each certificate once"
                                      : "building the security domain";
        goto out;
    }
    d->rc = mh_domain_save(d->domain, &d->n->node_key, d->n->domain_path);
    if (d->rc < 0)
        d->what = "sealing the domain secret on this node";
out:
    for (size_t i = 0; i < n_certs; i++)
        mh_cert_free(certs[i]);
}

static void download_committed(struct mh_proposal *p, int rc, const struct mh_fsm_result *res)
{
    struct download *d = p->data;
    struct mh_node *n = d->n;
    n->activating = false;
    if (rc < 0) {
        /* Outcome unknown (leadership lost, shutting down): the Activate may still
         * commit and replay at the next start, and this sealed copy would then be the
         * only one. Keep it; boot_domain drops it if the command never committed. */
        MH_ERROR("sd", "activation outcome unknown (%s); the sealed domain is kept",
                 mh_strerror(rc));
        mh_rpc_fail_err(d->call, rc, "activation (outcome unknown; check the status)");
        download_free(d);
        return;
    }
    rc = res->rc;
    if (rc < 0) {
        /* Refused by the state machine: nothing was activated, drop the copy. */
        unlink(n->domain_path);
        mh_rpc_fail_err(d->call, rc, "activation");
        download_free(d);
        return;
    }
    n->domain = d->domain;
    n->retention_days = d->retention_days;
    d->domain = NULL;
    mh_node_domain_loaded(n);
    MH_INFO("sd",
            "activated: security domain downloaded by %s (quorum %u of %zu, retention %u "
            "days)",
            mh_rpc_call_principal(d->call), d->req->quorum, d->req->n_certificates_pem,
            d->retention_days);
    Mhsm__V1__DownloadResponse resp = MHSM__V1__DOWNLOAD_RESPONSE__INIT;
    resp.security_domain = (char *)d->sd_json.data;
    mh_rpc_reply(d->call, &resp.base);
    download_free(d);
}

static void download_done(struct mh_work *w)
{
    struct download *d = mh_container_of(w, struct download, work);
    struct mh_node *n = d->n;
    if (d->rc < 0 || n->stopping) {
        n->activating = false;
        if (d->rc == 0) {
            unlink(n->domain_path);
            d->rc = MH_EUNAVAILABLE;
        }
        mh_rpc_fail_err(d->call, d->rc, d->what);
        download_free(d);
        return;
    }
    mhsm__internal__domain_record__init(&d->rec);
    d->rec.activated = true;
    d->rec.retention_days = d->retention_days;
    d->rec.domain_id.data = d->domain->id;
    d->rec.domain_id.len = MH_DOMAIN_ID_LEN;
    d->rec.quorum = d->req->quorum;
    d->rec.n_cert_sha256 = d->req->n_certificates_pem;
    d->rec.cert_sha256 = d->cert_hashes;
    Mhsm__Internal__Activate act = MHSM__INTERNAL__ACTIVATE__INIT;
    act.domain = &d->rec;
    Mhsm__Internal__Command cmd = MHSM__INTERNAL__COMMAND__INIT;
    char rid[65];
    if (mh_node_request_id("", rid) < 0)
        rid[0] = '\0';
    cmd.format = 1;
    cmd.request_id = rid;
    cmd.time = mh_node_now();
    cmd.body_case = MHSM__INTERNAL__COMMAND__BODY_ACTIVATE;
    cmd.activate = &act;
    d->prop.data = d;
    int rv = fill_initial_assignments(d, &act, cmd.time);
    if (rv == 0)
        rv = mh_cluster_propose(n->cluster, &cmd, &d->prop, download_committed);
    if (rv < 0) {
        n->activating = false;
        unlink(n->domain_path);
        mh_rpc_fail_err(d->call, rv, "activation");
        download_free(d);
    }
}

static void handle_download(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct mh_node *n = data;
    const Mhsm__V1__DownloadRequest *req = (const Mhsm__V1__DownloadRequest *)m;
    if (!mh_node_gate(n, call, false) || !mh_authz_check(n, call, MH_ACT_SD_DOWNLOAD, NULL))
        return;
    if (n->domain != NULL || n->activating) {
        mh_rpc_fail(call, MH_GRPC_ALREADY_EXISTS,
                    "the security domain was already downloaded; it can be downloaded once");
        return;
    }
    Mhsm__Internal__DomainRecord *dom = NULL;
    int rv = mh_store_get_domain(n->store, &dom);
    mh_store_free(dom);
    if (rv == 0) {
        mh_rpc_fail(call, MH_GRPC_ALREADY_EXISTS,
                    "the security domain was already downloaded; it can be downloaded once");
        return;
    }
    if (req->n_certificates_pem < MH_SD_MIN_CERTS || req->n_certificates_pem > MH_SD_MAX_CERTS) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT,
                    "the security domain needs 3..10 custodian certificates");
        return;
    }
    if (req->quorum < MH_SD_MIN_QUORUM || req->quorum > MH_SD_MAX_QUORUM ||
        req->quorum > req->n_certificates_pem) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, DEFAULT_QUORUM_MSG);
        return;
    }
    unsigned retention = req->retention_days;
    if (retention == 0)
        retention = n->cfg->retention_days_default;
    if (retention < 7 || retention > 90) {
        mh_rpc_fail(call, MH_GRPC_INVALID_ARGUMENT, "retention_days must be 7..90");
        return;
    }
    struct download *d = calloc(1, sizeof *d);
    if (d == NULL) {
        mh_rpc_fail_err(call, MH_ENOMEM, NULL);
        return;
    }
    d->n = n;
    d->call = call;
    d->req = req;
    d->retention_days = retention;
    d->work.work = download_work;
    d->work.done = download_done;
    n->activating = true;
    mh_worker_submit(n->workers, &d->work);
}

static void handle_status(struct mh_rpc_call *call, const ProtobufCMessage *m, void *data)
{
    (void)m;
    struct mh_node *n = data;
    if (!mh_node_gate(n, call, false) || !mh_authz_check(n, call, MH_ACT_SD_READ, NULL))
        return;
    Mhsm__V1__GetStatusResponse resp = MHSM__V1__GET_STATUS_RESPONSE__INIT;
    Mhsm__Internal__DomainRecord *dom = NULL;
    int rv = mh_store_get_domain(n->store, &dom);
    if (rv == MH_ENOTFOUND) {
        resp.activation_status = (char *)"NotActivated";
        resp.message = (char *)"download the security domain to activate the HSM";
    } else if (rv < 0) {
        mh_rpc_fail_err(call, rv, "reading the domain");
        return;
    } else if (n->domain == NULL) {
        resp.activation_status = (char *)"Active";
        resp.message = (char *)"activated; this node is waiting for the security domain from "
                               "the other members";
        resp.retention_days = dom->retention_days;
    } else {
        resp.activation_status = (char *)"Active";
        resp.message = (char *)"";
        resp.retention_days = dom->retention_days;
    }
    mh_rpc_reply(call, &resp.base);
    mh_store_free(dom);
}

static const mh_rpc_handler_fn sd_handlers[] = {handle_download, handle_status};

int mh_svc_sd_register(struct mh_node *n)
{
    _Static_assert(sizeof sd_handlers / sizeof sd_handlers[0] == 2, "one handler per method");
    return mh_rpc_server_add_service(n->rpc, &mhsm__v1__security_domain__descriptor, sd_handlers,
                                     n);
}
