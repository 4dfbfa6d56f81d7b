/* shamir: byte-wise Shamir secret sharing over GF(257), in the share layout of Azure's
 * security-domain tooling.
 *
 * Every secret byte gets its own random polynomial of degree m-1 over GF(257)
 * whose constant term is the byte; share number x (1..n) holds the values of
 * all those polynomials at x. A share is stored the way the Azure CLI stores
 * it (security_domain/byte_shares.py, shared_secret.py): one little-endian
 * uint16 per secret byte, packed as (x << 9) | v with v in 0..256 (9 bits),
 * so a share of a 32-byte secret is 64 bytes and every element carries x.
 *
 * Bounds: m in 2..MH_SHAMIR_MAX_SHARES, n in m..MH_SHAMIR_MAX_SHARES (126, the
 * CLI's max_shares; x needs 7 bits). The security-domain layer narrows this to
 * 3..10 certificates and a quorum of 2..10 (crypto/sd.h).
 *
 * Randomness: coefficients must be uniform in 0..256. A 16-bit draw reduced
 * mod 257 (what the CLI does) is biased, because 65536 = 255 * 257 + 1 gives
 * one residue an extra preimage; we draw 16 bits and reject the single value
 * 65535 before reducing, which is exactly uniform.
 *
 * Combining cannot tell a wrong share from a right one (plain Shamir has no
 * integrity): callers authenticate shares first (the SD file wraps each in an
 * authenticated JWE). Combining fewer than the real threshold yields an
 * unrelated value, not an error; the one check possible is that every
 * interpolated value is a byte (<= 255), which catches most such mistakes.
 *
 * Thread-safety: pure functions; safe from any thread. */
#ifndef MH_CRYPTO_SHAMIR_H
#define MH_CRYPTO_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"

#define MH_SHAMIR_MAX_SHARES 126u
#define MH_SHAMIR_MAX_SECRET 4096u /* bytes; shares are twice that */

/* mh_shamir_split splits |len| bytes (1..MH_SHAMIR_MAX_SECRET) at |secret|
 * into |n| shares, any |m| of which recover it. shares[i] (i = 0..n-1, each
 * empty on entry) receives the packed share with x = i + 1, 2 * len bytes.
 * Shares are secret-equivalent once m of them are together, so they live in
 * mh_secret. On error every shares[i] is left empty.
 * Errors: MH_EINVAL (bad m, n, len or NULL), MH_ENOMEM, MH_ECRYPTO (DRBG). */
MH_MUST_USE int mh_shamir_split(const uint8_t *secret, size_t len, unsigned m, unsigned n,
                                struct mh_secret *shares);

/* mh_shamir_combine recovers the secret from |count| packed shares (borrowed)
 * with threshold |m|. Every share must have the same even, non-zero length
 * (<= 2 * MH_SHAMIR_MAX_SECRET), one x in 1..126 throughout the share, x
 * distinct across shares, and every v <= 256: otherwise MH_ESHARES. The first
 * |m| shares are interpolated (all are validated). |out| (empty on entry)
 * receives len / 2 bytes.
 * Errors: MH_EINVAL (m out of 2..126, NULL), MH_ESHARES (count < m, malformed
 * or inconsistent shares, or an interpolated value above 255), MH_ENOMEM. */
MH_MUST_USE int mh_shamir_combine(const struct mh_slice *shares, size_t count, unsigned m,
                                  struct mh_secret *out);

#endif
