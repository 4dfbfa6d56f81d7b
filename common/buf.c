#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

int mh_size_add(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r))
        return MH_EOVERFLOW;
    *out = r;
    return 0;
}

int mh_size_mul(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return MH_EOVERFLOW;
    *out = r;
    return 0;
}

int mh_buf_reserve(struct mh_buf *b, size_t extra)
{
    size_t need;
    MH_TRY(mh_size_add(b->len, extra, &need));
    MH_TRY(mh_size_add(need, 1, &need)); /* terminator */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return MH_EOVERFLOW;
        cap *= 2;
    }
    /* Not realloc: the old block is wiped before it goes back to the heap. */
    uint8_t *n = malloc(cap);
    if (n == NULL)
        return MH_ENOMEM;
    if (b->data != NULL) {
        memcpy(n, b->data, b->len + 1);
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    } else {
        n[0] = 0;
    }
    b->data = n;
    b->cap = cap;
    return 0;
}

int mh_buf_append(struct mh_buf *b, const void *p, size_t len)
{
    MH_TRY(mh_buf_reserve(b, len));
    if (len > 0)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = 0;
    return 0;
}

int mh_buf_append_str(struct mh_buf *b, const char *s)
{
    return mh_buf_append(b, s, strlen(s));
}

int mh_buf_append_u8(struct mh_buf *b, uint8_t v)
{
    return mh_buf_append(b, &v, 1);
}

int mh_buf_append_u16le(struct mh_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v & 0xff), (uint8_t)(v >> 8)};
    return mh_buf_append(b, x, sizeof x);
}

int mh_buf_append_u32be(struct mh_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return mh_buf_append(b, x, sizeof x);
}

int mh_buf_append_u64be(struct mh_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (56 - 8 * i));
    return mh_buf_append(b, x, sizeof x);
}

int mh_buf_extend(struct mh_buf *b, size_t len, uint8_t **out)
{
    MH_TRY(mh_buf_reserve(b, len));
    *out = b->data + b->len;
    memset(*out, 0, len);
    b->len += len;
    b->data[b->len] = 0;
    return 0;
}

void mh_buf_truncate(struct mh_buf *b, size_t len)
{
    if (b->data == NULL || len >= b->len)
        return;
    OPENSSL_cleanse(b->data + len, b->len - len);
    b->len = len;
}

void mh_buf_free(struct mh_buf *b)
{
    if (b == NULL)
        return;
    if (b->data != NULL) {
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

uint8_t *mh_buf_steal(struct mh_buf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

static int take(struct mh_cursor *c, size_t n, const uint8_t **out)
{
    if (n > c->len - c->pos)
        return MH_ETRUNC;
    *out = c->p + c->pos;
    c->pos += n;
    return 0;
}

int mh_cursor_read_u8(struct mh_cursor *c, uint8_t *v)
{
    const uint8_t *p;
    MH_TRY(take(c, 1, &p));
    *v = p[0];
    return 0;
}

int mh_cursor_read_u16le(struct mh_cursor *c, uint16_t *v)
{
    const uint8_t *p;
    MH_TRY(take(c, 2, &p));
    *v = (uint16_t)(p[0] | (p[1] << 8));
    return 0;
}

int mh_cursor_read_u16be(struct mh_cursor *c, uint16_t *v)
{
    const uint8_t *p;
    MH_TRY(take(c, 2, &p));
    *v = (uint16_t)((p[0] << 8) | p[1]);
    return 0;
}

int mh_cursor_read_u32be(struct mh_cursor *c, uint32_t *v)
{
    const uint8_t *p;
    MH_TRY(take(c, 4, &p));
    *v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return 0;
}

int mh_cursor_read_u64be(struct mh_cursor *c, uint64_t *v)
{
    const uint8_t *p;
    MH_TRY(take(c, 8, &p));
    uint64_t r = 0;
    for (int i = 0; i < 8; i++)
        r = (r << 8) | p[i];
    *v = r;
    return 0;
}

int mh_cursor_read_bytes(struct mh_cursor *c, size_t n, const uint8_t **out)
{
    return take(c, n, out);
}

int mh_cursor_copy(struct mh_cursor *c, void *dst, size_t n)
{
    const uint8_t *p;
    MH_TRY(take(c, n, &p));
    if (n > 0)
        memcpy(dst, p, n);
    return 0;
}

int mh_cursor_skip(struct mh_cursor *c, size_t n)
{
    const uint8_t *p;
    return take(c, n, &p);
}

void mh_hex_encode(const void *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}
