#include "crypto/wrap.h"

#include <limits.h>
#include <stdbool.h>

#include <openssl/err.h>

#include "crypto/cipher.h"

static const uint8_t EMPTY[1];

/* Resolves |alg| on an AES KEK to its OpenSSL cipher; |pad| tells RFC 5649. */
static int aes_wrap_cipher(const struct mh_key *kek, enum mh_alg alg, const EVP_CIPHER **cipher,
                           bool *pad)
{
    if (mh_key_kty(kek) != MH_KTY_OCT)
        return MH_EALGKEY;
    unsigned bits = mh_key_bits(kek);
    unsigned want = mh_alg_aes_bits(alg);
    if (want != 0 && want != bits)
        return MH_EALGKEY;
    *pad = alg == MH_ALG_CKM_AES_KEY_WRAP_PAD;
    int base = *pad ? MH_CIPHER_AES_128_WRAP_PAD : MH_CIPHER_AES_128_WRAP;
    *cipher = mh_alg_cipher((enum mh_cipher_id)(base + (int)(bits - 128) / 64));
    return *cipher == NULL ? MH_ECRYPTO : 0;
}

/* Runs one wrap or unwrap of |len| bytes into |w|; *n gets the output length.
 * Returns 1 on success, 0 when OpenSSL refused (for unwrap: the integrity
 * check failed), or a negative error. A fresh context per call: wrapping is
 * rare, and the context is freed (and wiped by OpenSSL) at once. */
static int run(const EVP_CIPHER *cipher, const struct mh_secret *k, int enc, const uint8_t *in,
               size_t len, uint8_t *w, size_t *n)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return MH_ENOMEM;
    /* Needed before 3.0 to allow wrap modes through EVP; harmless now. */
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    int rv = MH_ECRYPTO;
    if (EVP_CipherInit_ex2(ctx, cipher, k->data, NULL, enc, NULL) != 1)
        goto err_after_ctx;
    int outl = 0;
    int fin = 0;
    rv = EVP_CipherUpdate(ctx, w, &outl, in, (int)len) == 1 && outl >= 0 &&
         EVP_CipherFinal_ex(ctx, w + outl, &fin) == 1 && fin == 0;
    if (rv == 1)
        *n = (size_t)outl;

err_after_ctx:
    EVP_CIPHER_CTX_free(ctx);
    ERR_clear_error();
    return rv;
}

int mh_wrap(const struct mh_key *kek, enum mh_alg alg, const uint8_t *key_bytes, size_t len,
            struct mh_buf *out)
{
    if (kek == NULL || out == NULL || (key_bytes == NULL && len > 0))
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    if (key_bytes == NULL)
        key_bytes = EMPTY;
    switch (mh_alg_class(alg)) {
    case MH_ALG_CLASS_RSA_ENC: {
        struct mh_cipher_result res;
        return mh_encrypt(kek, alg, NULL, key_bytes, len, out, &res);
    }
    case MH_ALG_CLASS_AES_WRAP:
        break;
    case MH_ALG_CLASS_NONE:
    case MH_ALG_CLASS_SIGN:
    case MH_ALG_CLASS_AES_ENC:
    default:
        return MH_EALGKEY;
    }
    const EVP_CIPHER *cipher;
    bool pad;
    MH_TRY(aes_wrap_cipher(kek, alg, &cipher, &pad));
    if (len > MH_CIPHER_MAX_INPUT)
        return MH_ETOOBIG;
    if (pad ? len == 0 : (len < 16 || len % 8 != 0))
        return MH_EINPUTLEN;
    size_t wlen = (len + 7) / 8 * 8 + 8;
    size_t before = out->len;
    uint8_t *w;
    MH_TRY(mh_buf_extend(out, wlen, &w));
    size_t n = 0;
    int rv = run(cipher, mh_key_oct(kek), 1, key_bytes, len, w, &n);
    if (rv != 1 || n != wlen) {
        mh_buf_truncate(out, before);
        return rv < 0 ? rv : MH_ECRYPTO;
    }
    return 0;
}

int mh_unwrap(const struct mh_key *kek, enum mh_alg alg, const uint8_t *wrapped, size_t len,
              struct mh_secret *out)
{
    if (kek == NULL || out == NULL || out->data != NULL || (wrapped == NULL && len > 0))
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    if (wrapped == NULL)
        wrapped = EMPTY;
    switch (mh_alg_class(alg)) {
    case MH_ALG_CLASS_RSA_ENC:
        return mh_decrypt(kek, alg, NULL, wrapped, len, out);
    case MH_ALG_CLASS_AES_WRAP:
        break;
    case MH_ALG_CLASS_NONE:
    case MH_ALG_CLASS_SIGN:
    case MH_ALG_CLASS_AES_ENC:
    default:
        return MH_EALGKEY;
    }
    const EVP_CIPHER *cipher;
    bool pad;
    MH_TRY(aes_wrap_cipher(kek, alg, &cipher, &pad));
    if (len > MH_CIPHER_MAX_INPUT + 16)
        return MH_ETOOBIG;
    if (len % 8 != 0 || len < (pad ? 16u : 24u))
        return MH_EINPUTLEN;
    /* OpenSSL unwraps into the output buffer (padding included) before it
     * checks integrity, so the buffer is a secret of the full input size. */
    MH_TRY(mh_secret_alloc(out, len));
    size_t n = 0;
    int rv = run(cipher, mh_key_oct(kek), 0, wrapped, len, out->data, &n);
    if (rv != 1 || n == 0 || n > len - 8) {
        mh_secret_free(out);
        return rv < 0 ? rv : MH_EAUTH;
    }
    mh_secret_shrink(out, n);
    return 0;
}
