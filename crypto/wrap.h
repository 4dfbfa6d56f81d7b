/* wrap: Key Vault wrapKey/unwrapKey: RSA-OAEP(-256)/RSA1_5, AES KW (RFC 3394) and KWP (RFC 5649).
 *
 * Algorithms:
 *   RSA-OAEP, RSA-OAEP-256, RSA1_5  exactly mh_encrypt / mh_decrypt
 *     (crypto/cipher.h): same limits, same single MH_EDECRYPT for every
 *     unwrap failure, and the same Bleichenbacher caveat for RSA1_5.
 *   A128KW, A192KW, A256KW  RFC 3394 with the default IV; the KEK must have
 *     exactly that size (MH_EALGKEY otherwise).
 *   CKM_AES_KEY_WRAP      RFC 3394 with whatever size the AES KEK has.
 *   CKM_AES_KEY_WRAP_PAD  RFC 5649 with whatever size the AES KEK has.
 * RFC 3394 wraps a multiple of 8 bytes, at least 16; RFC 5649 wraps 1 byte or
 * more. Other lengths, and wrapped inputs whose length no wrap could produce,
 * give MH_EINPUTLEN. Inputs are bounded by MH_CIPHER_MAX_INPUT (MH_ETOOBIG).
 *
 * Thread safety: all functions are thread-safe. */
#ifndef MH_CRYPTO_WRAP_H
#define MH_CRYPTO_WRAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"
#include "crypto/alg.h"
#include "crypto/key.h"

/* mh_wrap wraps the |len| key bytes at |key_bytes| under |kek| with |alg| and
 * appends the result to |out|; on error |out| is back to its previous length.
 * Errors: MH_EALGKEY (alg not a wrap/RSA-encryption algorithm, or wrong key
 * type or size), MH_EINPUTLEN, MH_ETOOBIG, MH_EINVAL, MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_wrap(const struct mh_key *kek, enum mh_alg alg, const uint8_t *key_bytes,
                        size_t len, struct mh_buf *out);

/* mh_unwrap reverses mh_wrap into the fresh secret |out| (which must be
 * empty, else MH_EINVAL; it stays empty on error). An AES integrity-check
 * failure gives MH_EAUTH; any RSA failure gives MH_EDECRYPT; an RSA KEK
 * without its private part gives MH_ENOPRIVATE. Other errors as for mh_wrap. */
MH_MUST_USE int mh_unwrap(const struct mh_key *kek, enum mh_alg alg, const uint8_t *wrapped,
                          size_t len, struct mh_secret *out);

#endif
