#include "common/tls.h"

#include <openssl/err.h>

#include "common/log.h"

/* An encrypted key must not make OpenSSL prompt on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

static int config_error(const char *comp, const char *role, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    MH_ERROR(comp, "msg=\"%s %s\" file=%s reason=\"%s\"", role, what,
             file != NULL ? file : "(none)", r != NULL ? r : "unknown");
    ERR_clear_error();
    return MH_ECONFIG;
}

int mh_tls_ctx_new(const SSL_METHOD *method, const char *cert_file, const char *key_file,
                   const char *ca_file, const char *role, const char *comp, SSL_CTX **out)
{
    int rv;
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx == NULL)
        return MH_ENOMEM;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
        rv = MH_ECRYPTO;
        goto err_after_ctx;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_NO_TICKET);
    (void)SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    if (cert_file == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        rv = config_error(comp, role, "certificate cannot be loaded", cert_file);
        goto err_after_ctx;
    }
    if (key_file == NULL || SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        rv = config_error(comp, role, "key cannot be loaded", key_file);
        goto err_after_ctx;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rv = config_error(comp, role, "key does not match its certificate", key_file);
        goto err_after_ctx;
    }
    if (ca_file == NULL || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        rv = config_error(comp, role, "CA cannot be loaded", ca_file);
        goto err_after_ctx;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    if (names == NULL) {
        rv = config_error(comp, role, "CA file holds no certificate", ca_file);
        goto err_after_ctx;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 8);
    *out = ctx;
    return 0;
err_after_ctx:
    SSL_CTX_free(ctx);
    return rv;
}
