#include "common/b64.h"

#include <string.h>

static const char URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of |c| in |alphabet| or -1; not constant time: used on key material
 * only while decoding JWK input that already arrived over the wire. */
static int val(const char *alphabet, char c)
{
    unsigned char u = (unsigned char)c;
    if (u >= 'A' && u <= 'Z')
        return u - 'A';
    if (u >= 'a' && u <= 'z')
        return u - 'a' + 26;
    if (u >= '0' && u <= '9')
        return u - '0' + 52;
    if (c == alphabet[62])
        return 62;
    if (c == alphabet[63])
        return 63;
    return -1;
}

size_t mh_b64url_encoded_len(size_t n)
{
    return (n / 3) * 4 + ((n % 3) == 0 ? 0 : (n % 3) + 1);
}

static int encode(const char *alphabet, int pad, const uint8_t *p, size_t len, struct mh_buf *out)
{
    size_t olen = (len / 3) * 4;
    if (len % 3 != 0)
        olen += pad ? 4 : (len % 3) + 1;
    if (len / 3 > SIZE_MAX / 4 - 1)
        return MH_EOVERFLOW;
    uint8_t *o;
    MH_TRY(mh_buf_extend(out, olen, &o));
    size_t i = 0, j = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        o[j++] = (uint8_t)alphabet[(v >> 18) & 63];
        o[j++] = (uint8_t)alphabet[(v >> 12) & 63];
        o[j++] = (uint8_t)alphabet[(v >> 6) & 63];
        o[j++] = (uint8_t)alphabet[v & 63];
    }
    size_t rest = len - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (rest == 2)
            v |= (uint32_t)p[i + 1] << 8;
        o[j++] = (uint8_t)alphabet[(v >> 18) & 63];
        o[j++] = (uint8_t)alphabet[(v >> 12) & 63];
        if (rest == 2)
            o[j++] = (uint8_t)alphabet[(v >> 6) & 63];
        if (pad) {
            if (rest == 1)
                o[j++] = '=';
            o[j++] = '=';
        }
    }
    return 0;
}

/* Decodes |len| unpadded characters into |dst| (room for len*3/4 bytes). */
static int decode_core(const char *alphabet, const char *s, size_t len, uint8_t *dst, size_t *dlen)
{
    if (len % 4 == 1)
        return MH_EBASE64;
    size_t i = 0, j = 0;
    for (; i + 4 <= len; i += 4) {
        int a = val(alphabet, s[i]), b = val(alphabet, s[i + 1]);
        int c = val(alphabet, s[i + 2]), d = val(alphabet, s[i + 3]);
        if ((a | b | c | d) < 0)
            return MH_EBASE64;
        uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | (uint32_t)d;
        dst[j++] = (uint8_t)(v >> 16);
        dst[j++] = (uint8_t)(v >> 8);
        dst[j++] = (uint8_t)v;
    }
    size_t rest = len - i;
    if (rest >= 2) {
        int a = val(alphabet, s[i]), b = val(alphabet, s[i + 1]);
        int c = rest == 3 ? val(alphabet, s[i + 2]) : 0;
        if ((a | b | c) < 0)
            return MH_EBASE64;
        uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6);
        /* Unused low bits must be zero: one canonical encoding per value. */
        if (rest == 2 && (v & 0xffff) != 0)
            return MH_EBASE64;
        if (rest == 3 && (v & 0xff) != 0)
            return MH_EBASE64;
        dst[j++] = (uint8_t)(v >> 16);
        if (rest == 3)
            dst[j++] = (uint8_t)(v >> 8);
    }
    *dlen = j;
    return 0;
}

int mh_b64url_encode(const uint8_t *p, size_t len, struct mh_buf *out)
{
    return encode(URL, 0, p, len, out);
}

int mh_b64std_encode(const uint8_t *p, size_t len, struct mh_buf *out)
{
    return encode(STD, 1, p, len, out);
}

static int decode_into_buf(const char *alphabet, const char *s, size_t len, struct mh_buf *out)
{
    size_t before = out->len, dlen = 0;
    uint8_t *dst;
    MH_TRY(mh_buf_extend(out, (len / 4) * 3 + 3, &dst));
    int rv = decode_core(alphabet, s, len, dst, &dlen);
    if (rv < 0) {
        mh_buf_truncate(out, before);
        return rv;
    }
    mh_buf_truncate(out, before + dlen);
    out->data[out->len] = 0;
    return 0;
}

int mh_b64url_decode(const char *s, size_t len, struct mh_buf *out)
{
    return decode_into_buf(URL, s, len, out);
}

int mh_b64std_decode(const char *s, size_t len, struct mh_buf *out)
{
    if (len % 4 != 0)
        return MH_EBASE64;
    size_t n = len;
    if (n >= 1 && s[n - 1] == '=')
        n--;
    if (n >= 1 && s[n - 1] == '=')
        n--;
    return decode_into_buf(STD, s, n, out);
}

int mh_b64url_decode_secret(const char *s, size_t len, struct mh_secret *out)
{
    size_t dlen = 0;
    MH_TRY(mh_secret_alloc(out, (len / 4) * 3 + 3));
    int rv = decode_core(URL, s, len, out->data, &dlen);
    if (rv < 0) {
        mh_secret_free(out);
        return rv;
    }
    mh_secret_shrink(out, dlen);
    return 0;
}
