/* buf: growable byte buffers, borrowed slices, and a bounds-checked read cursor.
 *
 * Bytes in mhsm move through these types, never through char * + strlen.
 * Every length that comes from outside goes through mh_size_add/mh_size_mul,
 * which report overflow instead of wrapping. A cursor read past the end
 * returns MH_ETRUNC and leaves the cursor where it was.
 *
 * mh_buf is for public data (ciphertext, signatures, JSON). Secrets use
 * mh_secret (common/secret.h). mh_buf_free still wipes the bytes it frees,
 * because "public" buffers sometimes hold things (JWE plaintext of shares,
 * DER) a caller did not think of as secret; the cost is small.
 *
 * Thread safety: none; a buffer or cursor belongs to one thread at a time. */
#ifndef MH_COMMON_BUF_H
#define MH_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Overflow-checked size arithmetic: *out = a + b (a * b); MH_EOVERFLOW on wrap,
 * *out untouched then. */
MH_MUST_USE int mh_size_add(size_t a, size_t b, size_t *out);

/* mh_hex_encode writes |n| bytes at |p| as 2n lower-case hex digits and a NUL to
 * |out| (room for 2n + 1). */
void mh_hex_encode(const void *p, size_t n, char *out);
MH_MUST_USE int mh_size_mul(size_t a, size_t b, size_t *out);

/* A borrowed, read-only view of bytes. Never owns |p|. */
struct mh_slice {
    const uint8_t *p;
    size_t len;
};

static inline struct mh_slice mh_slice_of(const void *p, size_t len)
{
    struct mh_slice s = {(const uint8_t *)p, len};
    return s;
}

/* An owned, growable byte buffer. Zero-initialise ({0}) before first use.
 * data is always NUL-terminated past len (data[len] == 0) once anything was
 * appended, so text built in a buffer can be handed to C string APIs. */
struct mh_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* mh_buf_reserve ensures room for |extra| more bytes (plus the terminator).
 * MH_EOVERFLOW or MH_ENOMEM on failure; the buffer is unchanged then. */
MH_MUST_USE int mh_buf_reserve(struct mh_buf *b, size_t extra);
/* Appends |len| bytes from |p| (p may be NULL when len is 0). */
MH_MUST_USE int mh_buf_append(struct mh_buf *b, const void *p, size_t len);
/* Appends the NUL-terminated string |s| (without its NUL). */
MH_MUST_USE int mh_buf_append_str(struct mh_buf *b, const char *s);
MH_MUST_USE int mh_buf_append_u8(struct mh_buf *b, uint8_t v);
MH_MUST_USE int mh_buf_append_u16le(struct mh_buf *b, uint16_t v);
MH_MUST_USE int mh_buf_append_u32be(struct mh_buf *b, uint32_t v);
MH_MUST_USE int mh_buf_append_u64be(struct mh_buf *b, uint64_t v);
/* Makes room for |len| bytes at the end and returns a pointer to them in *out;
 * the bytes count as appended (zeroed). For APIs that write into a buffer. */
MH_MUST_USE int mh_buf_extend(struct mh_buf *b, size_t len, uint8_t **out);
/* Sets len to |len| <= current len (drops the tail, wiping it). */
void mh_buf_truncate(struct mh_buf *b, size_t len);
/* Wipes and frees the contents; |b| is empty and reusable afterwards.
 * NULL is a no-op. */
void mh_buf_free(struct mh_buf *b);
/* Hands the bytes to the caller (who frees them with free()) and empties |b|. */
uint8_t *mh_buf_steal(struct mh_buf *b, size_t *len);

static inline struct mh_slice mh_buf_slice(const struct mh_buf *b)
{
    return mh_slice_of(b->data, b->len);
}

/* A read cursor over borrowed bytes. */
struct mh_cursor {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

static inline struct mh_cursor mh_cursor_of(const void *p, size_t len)
{
    struct mh_cursor c = {(const uint8_t *)p, len, 0};
    return c;
}

static inline size_t mh_cursor_remaining(const struct mh_cursor *c)
{
    return c->len - c->pos;
}

MH_MUST_USE int mh_cursor_read_u8(struct mh_cursor *c, uint8_t *v);
MH_MUST_USE int mh_cursor_read_u16le(struct mh_cursor *c, uint16_t *v);
MH_MUST_USE int mh_cursor_read_u16be(struct mh_cursor *c, uint16_t *v);
MH_MUST_USE int mh_cursor_read_u32be(struct mh_cursor *c, uint32_t *v);
MH_MUST_USE int mh_cursor_read_u64be(struct mh_cursor *c, uint64_t *v);
/* Borrows |n| bytes: *out points into the cursor's memory. */
MH_MUST_USE int mh_cursor_read_bytes(struct mh_cursor *c, size_t n, const uint8_t **out);
/* Copies |n| bytes into |dst|. */
MH_MUST_USE int mh_cursor_copy(struct mh_cursor *c, void *dst, size_t n);
MH_MUST_USE int mh_cursor_skip(struct mh_cursor *c, size_t n);

#endif
