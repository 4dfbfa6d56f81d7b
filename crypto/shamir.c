#include "crypto/shamir.h"

#include <string.h>

#include <openssl/rand.h>

#define P 257u

/* Products of two field elements are below 257^2 < 2^17; the constant divisor
 * compiles to multiply-and-shift, so the reduction takes constant time. */
static uint32_t mod_p(uint32_t x)
{
    return x % P;
}

static uint32_t mul_p(uint32_t a, uint32_t b)
{
    return mod_p(a * b);
}

/* Fermat: a^(p-2) = a^255. Only ever applied to public x differences. */
static uint32_t inv_p(uint32_t a)
{
    uint32_t r = 1, base = a;
    for (unsigned e = 255; e != 0; e >>= 1) {
        if (e & 1u)
            r = mul_p(r, base);
        base = mul_p(base, base);
    }
    return r;
}

/* A buffer of private-DRBG bytes, refilled as coefficients consume it. */
struct pool {
    struct mh_secret bytes;
    size_t pos;
};

static int pool_refill(struct pool *pl)
{
    if (RAND_priv_bytes(pl->bytes.data, (int)pl->bytes.len) != 1)
        return MH_ECRYPTO;
    pl->pos = 0;
    return 0;
}

/* A uniform element of 0..256: reject 65535 so the 65535 accepted 16-bit
 * values split into exactly 255 per residue. */
static int draw_coef(struct pool *pl, uint16_t *out)
{
    for (;;) {
        if (pl->pos + 2 > pl->bytes.len)
            MH_TRY(pool_refill(pl));
        uint32_t w =
            (uint32_t)pl->bytes.data[pl->pos] | ((uint32_t)pl->bytes.data[pl->pos + 1] << 8);
        mh_wipe(pl->bytes.data + pl->pos, 2);
        pl->pos += 2;
        if (w != 0xffffu) {
            *out = (uint16_t)mod_p(w);
            return 0;
        }
    }
}

int mh_shamir_split(const uint8_t *secret, size_t len, unsigned m, unsigned n,
                    struct mh_secret *shares)
{
    int rv;
    if (secret == NULL || shares == NULL || len == 0 || len > MH_SHAMIR_MAX_SECRET || m < 2 ||
        n < m || n > MH_SHAMIR_MAX_SHARES)
        return MH_EINVAL;
    for (unsigned i = 0; i < n; i++)
        shares[i] = (struct mh_secret){0};

    struct pool pl = {{0}, 0};
    rv = mh_secret_alloc(&pl.bytes, 512);
    if (rv < 0)
        return rv;
    rv = pool_refill(&pl);
    if (rv < 0)
        goto err_after_pool;

    /* coefs[k] is the coefficient of x^(k+1) for the current byte. */
    struct mh_secret coefs = {0};
    rv = mh_secret_alloc(&coefs, (size_t)(m - 1) * sizeof(uint16_t));
    if (rv < 0)
        goto err_after_pool;

    unsigned made = 0;
    for (; made < n; made++) {
        rv = mh_secret_alloc(&shares[made], 2 * len);
        if (rv < 0)
            goto err_after_shares;
    }

    uint16_t *c = (uint16_t *)(void *)coefs.data;
    for (size_t b = 0; b < len; b++) {
        for (unsigned k = 0; k + 1 < m; k++) {
            rv = draw_coef(&pl, &c[k]);
            if (rv < 0)
                goto err_after_shares;
        }
        for (unsigned i = 0; i < n; i++) {
            uint32_t x = i + 1;
            uint32_t v = c[m - 2];
            for (unsigned k = m - 2; k-- > 0;)
                v = mod_p(mul_p(v, x) + c[k]);
            v = mod_p(mul_p(v, x) + secret[b]);
            uint16_t w = (uint16_t)((x << 9) | v);
            shares[i].data[2 * b] = (uint8_t)(w & 0xffu);
            shares[i].data[2 * b + 1] = (uint8_t)(w >> 8);
        }
    }
    mh_secret_free(&coefs);
    mh_secret_free(&pl.bytes);
    return 0;

err_after_shares:
    for (unsigned i = 0; i < made; i++)
        mh_secret_free(&shares[i]);
    mh_secret_free(&coefs);
err_after_pool:
    mh_secret_free(&pl.bytes);
    return rv;
}

static uint16_t elem(const struct mh_slice *s, size_t j)
{
    return (uint16_t)(s->p[2 * j] | (s->p[2 * j + 1] << 8));
}

int mh_shamir_combine(const struct mh_slice *shares, size_t count, unsigned m,
                      struct mh_secret *out)
{
    if (shares == NULL || out == NULL || m < 2 || m > MH_SHAMIR_MAX_SHARES)
        return MH_EINVAL;
    *out = (struct mh_secret){0};
    if (count < m)
        return MH_ESHARES;
    size_t slen = shares[0].len;
    if (slen == 0 || slen % 2 != 0 || slen > 2 * MH_SHAMIR_MAX_SECRET)
        return MH_ESHARES;
    size_t len = slen / 2;

    /* x of each share; x fits 7 bits so 128 flags cover every value. */
    uint8_t seen[128] = {0};
    uint32_t xs[MH_SHAMIR_MAX_SHARES];
    for (size_t i = 0; i < count; i++) {
        if (shares[i].p == NULL || shares[i].len != slen)
            return MH_ESHARES;
        uint32_t x = (uint32_t)(elem(&shares[i], 0) >> 9);
        if (x == 0 || x > MH_SHAMIR_MAX_SHARES || seen[x])
            return MH_ESHARES;
        seen[x] = 1;
        for (size_t j = 0; j < len; j++) {
            uint16_t w = elem(&shares[i], j);
            if ((uint32_t)(w >> 9) != x || (w & 0x1ffu) > 256u)
                return MH_ESHARES;
        }
        if (i < m)
            xs[i] = x;
    }

    /* Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i). Depends
     * only on the public x values. */
    uint32_t l[MH_SHAMIR_MAX_SHARES];
    for (unsigned i = 0; i < m; i++) {
        uint32_t num = 1, den = 1;
        for (unsigned j = 0; j < m; j++) {
            if (j == i)
                continue;
            num = mul_p(num, xs[j]);
            den = mul_p(den, mod_p(xs[j] + P - xs[i]));
        }
        l[i] = mul_p(num, inv_p(den));
    }

    MH_TRY(mh_secret_alloc(out, len));
    uint32_t bad = 0;
    for (size_t j = 0; j < len; j++) {
        uint32_t s = 0;
        for (unsigned i = 0; i < m; i++)
            s = mod_p(s + mul_p(l[i], elem(&shares[i], j) & 0x1ffu));
        bad |= s >> 8;
        out->data[j] = (uint8_t)s;
    }
    if (bad != 0) {
        mh_secret_free(out);
        return MH_ESHARES;
    }
    return 0;
}
