#include "crypto/rand.h"

#include <limits.h>
#include <stdio.h>

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

int mh_rand_guid(char out[MH_RAND_GUID_LEN + 1])
{
    uint8_t b[16];
    MH_TRY(mh_rand_bytes(b, sizeof b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC variant */
    snprintf(out, MH_RAND_GUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}
