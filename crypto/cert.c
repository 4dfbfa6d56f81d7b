#include "crypto/cert.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/b64.h"
#include "crypto/alg.h"
#include "crypto/jwk.h"

struct mh_cert {
    X509 *x509;
    EVP_PKEY *pkey; /* borrowed from x509 */
    struct mh_buf der;
    unsigned bits;
    char x5t[MH_CERT_X5T_LEN + 1];
};

void mh_cert_free(struct mh_cert *cert)
{
    if (cert == NULL)
        return;
    X509_free(cert->x509);
    mh_buf_free(&cert->der);
    free(cert);
}

int mh_cert_from_der(const uint8_t *der, size_t len, struct mh_cert **out)
{
    int rv;
    if (der == NULL || out == NULL)
        return MH_EINVAL;
    if (len > MH_CERT_MAX_LEN)
        return MH_ETOOBIG;
    if (len == 0)
        return MH_ECERT;
    MH_TRY(mh_alg_init());
    struct mh_cert *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MH_ENOMEM;
    const unsigned char *p = der;
    rv = MH_ECERT;
    c->x509 = d2i_X509(NULL, &p, (long)len);
    if (c->x509 == NULL || p != der + len)
        goto err_after_c;
    /* Only canonical DER: the thumbprint must be of the bytes we were given,
     * and a BER variant would give one certificate two thumbprints. */
    unsigned char *re = NULL;
    int relen = i2d_X509(c->x509, &re);
    int canonical = relen > 0 && (size_t)relen == len && memcmp(re, der, len) == 0;
    OPENSSL_free(re);
    if (!canonical)
        goto err_after_c;
    c->pkey = X509_get0_pubkey(c->x509);
    if (c->pkey == NULL || !EVP_PKEY_is_a(c->pkey, "RSA"))
        goto err_after_c;
    int bits = EVP_PKEY_get_bits(c->pkey);
    if (bits < MH_CERT_MIN_RSA_BITS) {
        rv = MH_EWEAKKEY;
        goto err_after_c;
    }
    c->bits = (unsigned)bits;
    if ((rv = mh_buf_append(&c->der, der, len)) < 0)
        goto err_after_c;
    uint8_t md[32];
    unsigned mdlen = 0;
    rv = MH_ECRYPTO;
    if (EVP_Digest(der, len, md, &mdlen, mh_alg_md(MH_MD_SHA256), NULL) != 1 || mdlen != 32)
        goto err_after_c;
    struct mh_buf t = {0};
    if ((rv = mh_b64url_encode(md, sizeof md, &t)) < 0)
        goto err_after_c;
    if (t.len != MH_CERT_X5T_LEN) {
        mh_buf_free(&t);
        rv = MH_ECRYPTO;
        goto err_after_c;
    }
    memcpy(c->x5t, t.data, MH_CERT_X5T_LEN);
    c->x5t[MH_CERT_X5T_LEN] = 0;
    mh_buf_free(&t);
    *out = c;
    return 0;

err_after_c:
    ERR_clear_error();
    mh_cert_free(c);
    return rv;
}

/* Counts PEM blocks; the first one's name and body are returned when asked. */
static int read_pem_blocks(const uint8_t *pem, size_t len, char **name0, unsigned char **data0,
                           long *len0, int *count)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return MH_ENOMEM;
    *count = 0;
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        if (PEM_read_bio(bio, &name, &header, &data, &dlen) != 1)
            break;
        if (*count == 0 && name0 != NULL && header[0] == 0) {
            *name0 = name;
            *data0 = data;
            *len0 = dlen;
        } else {
            OPENSSL_free(name);
            OPENSSL_clear_free(data, dlen > 0 ? (size_t)dlen : 0);
        }
        OPENSSL_free(header);
        (*count)++;
    }
    ERR_clear_error(); /* the loop always ends on "no start line" */
    BIO_free(bio);
    return 0;
}

int mh_cert_from_pem(const uint8_t *pem, size_t len, struct mh_cert **out)
{
    if (pem == NULL || out == NULL)
        return MH_EINVAL;
    if (len > MH_CERT_MAX_LEN)
        return MH_ETOOBIG;
    char *name = NULL;
    unsigned char *data = NULL;
    long dlen = 0;
    int count = 0;
    MH_TRY(read_pem_blocks(pem, len, &name, &data, &dlen, &count));
    int rv = MH_ECERT;
    if (count == 1 && name != NULL && strcmp(name, PEM_STRING_X509) == 0 && dlen > 0)
        rv = mh_cert_from_der(data, (size_t)dlen, out);
    OPENSSL_free(name);
    OPENSSL_free(data);
    return rv;
}

EVP_PKEY *mh_cert_pkey(const struct mh_cert *cert)
{
    return cert->pkey;
}

struct mh_slice mh_cert_der(const struct mh_cert *cert)
{
    return mh_buf_slice(&cert->der);
}

const char *mh_cert_x5t_s256(const struct mh_cert *cert)
{
    return cert->x5t;
}

unsigned mh_cert_bits(const struct mh_cert *cert)
{
    return cert->bits;
}

bool mh_cert_matches_key(const struct mh_cert *cert, const EVP_PKEY *priv)
{
    return cert != NULL && priv != NULL && EVP_PKEY_eq(cert->pkey, priv) == 1;
}

int mh_cert_private_key_from_pem(const uint8_t *pem, size_t len, const struct mh_secret *password,
                                 EVP_PKEY **out)
{
    if (pem == NULL || out == NULL)
        return MH_EINVAL;
    if (len > MH_CERT_MAX_LEN)
        return MH_ETOOBIG;
    int count = 0;
    MH_TRY(read_pem_blocks(pem, len, NULL, NULL, NULL, &count));
    if (count != 1)
        return MH_EPEM;
    EVP_PKEY *pk = NULL;
    MH_TRY(mh_pem_decode_private(pem, len, password, &pk));
    int rv = 0;
    BIGNUM *d = NULL;
    if (!EVP_PKEY_is_a(pk, "RSA"))
        rv = MH_EUNSUPPORTED;
    else if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_D, &d) != 1)
        rv = MH_EPEM; /* a public key where the custodian's private key belongs */
    else if (EVP_PKEY_get_bits(pk) < MH_CERT_MIN_RSA_BITS)
        rv = MH_EWEAKKEY;
    BN_clear_free(d);
    if (rv < 0) {
        EVP_PKEY_free(pk);
        return rv;
    }
    *out = pk;
    return 0;
}
