/* sp108: NIST SP 800-108 counter-mode key derivation with HMAC-SHA-512, as the security-domain file
 * uses it.
 *
 * K(i) = HMAC-SHA-512(KI, [i]_32be || Label || 0x00 || Context || [L]_32be),
 * i = 1.. ceil(L / 512), output = the leftmost L bits. This is the textbook
 * construction (SP 800-108r1 section 4.1). The Azure CLI's sp800_108.py
 * matches it for L <= 512, the only length the security domain uses (its
 * loop mishandles longer outputs); longer outputs here follow the standard.
 * Known answer (from sp800_108.py): KI = 32 x 0x41, "label", "context",
 * L = 256 -> f0ca51f6...399575 (test/unit/test_sp108.c).
 *
 * Also exposes the HMAC-SHA-512 primitive for crypto/jwe.c.
 *
 * Thread-safety: thread-safe; the only shared state is an HMAC template
 * context set up once (pthread_once) and only read afterwards. */
#ifndef MH_CRYPTO_SP108_H
#define MH_CRYPTO_SP108_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"

#define MH_HMAC_SHA512_LEN 64u
/* Upper bound of out_len: L in bits must fit the 32-bit length field. */
#define MH_SP108_MAX_OUT (UINT32_MAX / 8u)

/* mh_sp108_derive derives |out_len| (1..MH_SP108_MAX_OUT) bytes into |out|
 * (empty on entry) from |key_len| (>= 1) key bytes, a label and a context
 * (either may be empty, with a NULL pointer when its length is 0).
 * Errors: MH_EINVAL, MH_ENOMEM, MH_ECRYPTO. On error |out| is empty. */
MH_MUST_USE int mh_sp108_derive(const uint8_t *key, size_t key_len, const uint8_t *label,
                                size_t label_len, const uint8_t *ctx, size_t ctx_len,
                                size_t out_len, struct mh_secret *out);

/* mh_hmac_sha512 computes HMAC-SHA-512 under |key| over the concatenation of
 * |nparts| borrowed slices into |mac| (64 bytes; the caller decides whether
 * that output is secret and wipes it). Errors: MH_EINVAL, MH_ECRYPTO. */
MH_MUST_USE int mh_hmac_sha512(const uint8_t *key, size_t key_len, const struct mh_slice *parts,
                               size_t nparts, uint8_t mac[MH_HMAC_SHA512_LEN]);

#endif
