#include "crypto/sp108.h"

#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/params.h>

#include "crypto/alg.h"

/* Setting the digest on an HMAC context fetches it again; a template context
 * with SHA-512 already set is duplicated per call instead (dup shares the
 * digest by reference, no fetch). */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MAC_CTX *hmac_template;

static void init_once(void)
{
    if (mh_alg_init() < 0)
        return;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL)
        return;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (ctx == NULL)
        return;
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA512", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(ctx, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return;
    }
    hmac_template = ctx;
}

int mh_hmac_sha512(const uint8_t *key, size_t key_len, const struct mh_slice *parts, size_t nparts,
                   uint8_t mac[MH_HMAC_SHA512_LEN])
{
    int rv = MH_ECRYPTO;
    if (key == NULL || key_len == 0 || mac == NULL || (parts == NULL && nparts > 0))
        return MH_EINVAL;
    if (pthread_once(&once, init_once) != 0 || hmac_template == NULL)
        return MH_ECRYPTO;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(hmac_template);
    if (ctx == NULL)
        return MH_ECRYPTO;
    if (EVP_MAC_init(ctx, key, key_len, NULL) != 1)
        goto err_after_ctx;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len > 0 && EVP_MAC_update(ctx, parts[i].p, parts[i].len) != 1)
            goto err_after_ctx;
    }
    size_t outl = 0;
    if (EVP_MAC_final(ctx, mac, &outl, MH_HMAC_SHA512_LEN) != 1 || outl != MH_HMAC_SHA512_LEN)
        goto err_after_ctx;
    rv = 0;
err_after_ctx:
    EVP_MAC_CTX_free(ctx);
    if (rv < 0)
        mh_wipe(mac, MH_HMAC_SHA512_LEN);
    return rv;
}

static void be32(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

int mh_sp108_derive(const uint8_t *key, size_t key_len, const uint8_t *label, size_t label_len,
                    const uint8_t *ctx, size_t ctx_len, size_t out_len, struct mh_secret *out)
{
    int rv;
    if (out == NULL)
        return MH_EINVAL;
    *out = (struct mh_secret){0};
    if (key == NULL || key_len == 0 || out_len == 0 || out_len > MH_SP108_MAX_OUT ||
        (label == NULL && label_len > 0) || (ctx == NULL && ctx_len > 0))
        return MH_EINVAL;

    struct mh_secret block = {0};
    MH_TRY(mh_secret_alloc(&block, MH_HMAC_SHA512_LEN));
    rv = mh_secret_alloc(out, out_len);
    if (rv < 0)
        goto err_after_block;

    static const uint8_t zero = 0;
    uint8_t counter[4], bits[4];
    be32(bits, (uint32_t)(out_len * 8u));
    size_t done = 0;
    for (uint32_t i = 1; done < out_len; i++) {
        be32(counter, i);
        struct mh_slice parts[5] = {
            mh_slice_of(counter, 4),   mh_slice_of(label, label_len), mh_slice_of(&zero, 1),
            mh_slice_of(ctx, ctx_len), mh_slice_of(bits, 4),
        };
        rv = mh_hmac_sha512(key, key_len, parts, 5, block.data);
        if (rv < 0)
            goto err_after_out;
        size_t take = out_len - done < MH_HMAC_SHA512_LEN ? out_len - done : MH_HMAC_SHA512_LEN;
        memcpy(out->data + done, block.data, take);
        done += take;
    }
    mh_secret_free(&block);
    return 0;

err_after_out:
    mh_secret_free(out);
err_after_block:
    mh_secret_free(&block);
    return rv;
}
