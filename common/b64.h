/* b64: base64url without padding (RFC 4648 section 5, RFC 7515 section 2), strict.
 *
 * Decoding rejects, with MH_EBASE64: padding ('='), whitespace, characters
 * outside the URL-safe alphabet (including '+' and '/'), a length of 1 mod 4,
 * and non-zero unused trailing bits (so every byte string has exactly one
 * accepted encoding). Standard base64 (with padding) is offered for the few
 * places formats demand it (JWK x5c, PEM bodies), with the same strictness.
 * Thread-safe: pure functions. */
#ifndef MH_COMMON_B64_H
#define MH_COMMON_B64_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/secret.h"

/* Number of characters the base64url encoding of |n| bytes takes. */
size_t mh_b64url_encoded_len(size_t n);

/* Appends the base64url encoding of |len| bytes at |p| to |out| (NUL-terminated
 * after the appended text). */
MH_MUST_USE int mh_b64url_encode(const uint8_t *p, size_t len, struct mh_buf *out);

/* Decodes |len| characters at |s| and appends the bytes to |out|. On error
 * |out| is left as it was. */
MH_MUST_USE int mh_b64url_decode(const char *s, size_t len, struct mh_buf *out);

/* Decodes into a fresh secret |out| (empty on entry), for key material
 * (JWK d, p, q, k ...). */
MH_MUST_USE int mh_b64url_decode_secret(const char *s, size_t len, struct mh_secret *out);

/* Standard alphabet, with '=' padding required (RFC 4648 section 4). */
MH_MUST_USE int mh_b64std_encode(const uint8_t *p, size_t len, struct mh_buf *out);
MH_MUST_USE int mh_b64std_decode(const char *s, size_t len, struct mh_buf *out);

#endif
