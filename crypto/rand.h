/* rand: random bytes from the OpenSSL DRBG (seeded from the kernel).
 * Thread-safe. */
#ifndef MH_CRYPTO_RAND_H
#define MH_CRYPTO_RAND_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/secret.h"

/* mh_rand_bytes fills |n| bytes at |p| from the public DRBG (IVs, ids, nonces).
 * MH_ECRYPTO if the DRBG fails (it never returns predictable bytes). */
MH_MUST_USE int mh_rand_bytes(void *p, size_t n);

/* mh_rand_hex writes a random id of |n| bytes as 2n lower-case hex digits and a
 * NUL into |out| (room for 2n + 1): version ids, request ids. MH_ECRYPTO, or
 * MH_ETOOBIG above 64 bytes. */
MH_MUST_USE int mh_rand_hex(char *out, size_t n);

/* mh_rand_guid writes a random version-4 GUID (RFC 9562), lower case, 36 characters
 * and a NUL, into |out| (role definition and assignment names). */
#define MH_RAND_GUID_LEN 36
MH_MUST_USE int mh_rand_guid(char out[MH_RAND_GUID_LEN + 1]);

/* mh_rand_secret makes a fresh secret of |n| bytes from the private DRBG
 * (key material, the security-domain root secret). */
MH_MUST_USE int mh_rand_secret(struct mh_secret *out, size_t n);

#endif
