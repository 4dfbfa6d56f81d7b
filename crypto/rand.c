#include "crypto/rand.h"

#include <limits.h>

#include "common/buf.h"

#include <openssl/rand.h>

int mh_rand_bytes(void *p, size_t n)
{
    if (n > INT_MAX)
        return MH_ETOOBIG;
    if (n == 0)
        return 0;
    return RAND_bytes(p, (int)n) == 1 ? 0 : MH_ECRYPTO;
}

int mh_rand_hex(char *out, size_t n)
{
    uint8_t r[64];
    if (n > sizeof r)
        return MH_ETOOBIG;
    MH_TRY(mh_rand_bytes(r, n));
    mh_hex_encode(r, n, out);
    return 0;
}

int mh_rand_secret(struct mh_secret *out, size_t n)
{
    if (n > INT_MAX)
        return MH_ETOOBIG;
    MH_TRY(mh_secret_alloc(out, n));
    if (n > 0 && RAND_priv_bytes(out->data, (int)n) != 1) {
        mh_secret_free(out);
        return MH_ECRYPTO;
    }
    return 0;
}
