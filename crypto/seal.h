/* seal: the key hierarchy's derivations (HKDF-SHA-256) and AES-256-GCM sealing of secrets at rest.
 *
 * DESIGN.md section 4: the security domain's 32-byte root secret yields, by
 * HKDF-SHA-256 with fixed versioned labels, one key per purpose; key versions'
 * private material is sealed under the key-wrapping key before it is written
 * anywhere (raft log, snapshots, LMDB, backups).
 *
 * Sealed format, version 1 (all lengths in bytes):
 *
 *     offset 0        1            13                  len-16
 *            | 0x01   | IV (12)    | ciphertext (n)    | tag (16) |
 *
 *   AES-256-GCM with the random 96-bit IV; the authenticated data is the
 *   version byte followed by the caller's AAD (0x01 || aad), so neither the
 *   version nor the AAD can be changed without the tag failing. n equals the
 *   plaintext length; a sealed blob is always plaintext + 29 bytes.
 *
 * AAD convention: whoever seals a key version must bind what the blob is for
 * (key name, version, kty) into the AAD, so a sealed blob cannot be replayed
 * as another key or another version; the server builds that AAD.
 *
 * IV: random per seal. With a 96-bit random IV one wrapping key must not seal
 * more than 2^32 blobs (NIST SP 800-38D 8.3); a vault writes far fewer.
 *
 * Thread safety: every function is thread-safe; the HKDF implementation is
 * fetched once per process (pthread_once). */
#ifndef MH_CRYPTO_SEAL_H
#define MH_CRYPTO_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"
#include "crypto/key.h"

#define MH_SEAL_VERSION  0x01
#define MH_SEAL_KEY_LEN  32
#define MH_SEAL_IV_LEN   12
#define MH_SEAL_TAG_LEN  16
#define MH_SEAL_OVERHEAD (1 + MH_SEAL_IV_LEN + MH_SEAL_TAG_LEN)
/* Bounds that keep every length inside OpenSSL's int parameters. */
#define MH_SEAL_MAX_PLAINTEXT ((size_t)1 << 30)
#define MH_SEAL_MAX_AAD       ((size_t)64 * 1024)
#define MH_HKDF_MAX_OUT       ((size_t)255 * 32) /* RFC 5869: L <= 255 * HashLen */

/* What a derived key is for. The numbering is persistent (never reorder). */
enum mh_seal_purpose {
    MH_PURPOSE_KEY_WRAP = 0,      /* "mhsm v1 key-wrapping key" */
    MH_PURPOSE_BACKUP = 1,        /* "mhsm v1 backup key" */
    MH_PURPOSE_AUDIT_SIGN = 2,    /* "mhsm v1 audit-signing key" */
    MH_PURPOSE_NODE_TRANSFER = 3, /* "mhsm v1 node-transfer key" */
};

/* mh_hkdf_sha256 runs HKDF-SHA-256 (RFC 5869, extract then expand) and puts
 * |out_len| bytes into the fresh secret |out| (empty on entry). |salt| and
 * |info| may be NULL when their length is 0 (an empty salt means HashLen zero
 * bytes, as the RFC says). |ikm| must not be empty.
 * Errors: MH_EINVAL (empty ikm, out_len 0 or above MH_HKDF_MAX_OUT),
 * MH_ETOOBIG (an input above 64 KiB), MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt,
                               size_t salt_len, const uint8_t *info, size_t info_len,
                               size_t out_len, struct mh_secret *out);

/* mh_seal_derive derives the 32-byte key for |purpose| from the security
 * domain's root secret |root| (exactly 32 bytes): HKDF-SHA-256 with an empty
 * salt (the root is uniformly random, so extract needs none) and the purpose's
 * label above as info. |out| must be empty on entry.
 * Errors: MH_EINVAL (root not 32 bytes, unknown purpose), as mh_hkdf_sha256. */
MH_MUST_USE int mh_seal_derive(const struct mh_secret *root, enum mh_seal_purpose purpose,
                               struct mh_secret *out);

/* mh_seal encrypts |pt_len| bytes at |pt| under |wrapping_key| (exactly 32
 * bytes) and appends the version-1 blob described above to |out| (left as it
 * was on error). |aad| / |pt| may be NULL when their length is 0.
 * Errors: MH_EINVAL (key length), MH_ETOOBIG (pt above MH_SEAL_MAX_PLAINTEXT
 * or aad above MH_SEAL_MAX_AAD), MH_ENOMEM, MH_ECRYPTO (including a DRBG
 * failure: no blob is ever made with a predictable IV). */
MH_MUST_USE int mh_seal(const struct mh_secret *wrapping_key, const uint8_t *aad, size_t aad_len,
                        const uint8_t *pt, size_t pt_len, struct mh_buf *out);

/* mh_unseal checks and decrypts a blob made by mh_seal with the same key and
 * AAD, into the fresh secret |pt_out| (empty on entry; left empty on error, no
 * unauthenticated plaintext is ever released).
 * Errors, in the order they are checked:
 *   MH_EINVAL        key not 32 bytes;
 *   MH_ETOOBIG       aad above MH_SEAL_MAX_AAD or blob above the largest seal;
 *   MH_ETRUNC        fewer than MH_SEAL_OVERHEAD (29) bytes;
 *   MH_EUNSUPPORTED  first byte is not MH_SEAL_VERSION;
 *   MH_EAUTH         anything else wrong: wrong key, wrong AAD, a changed or
 *                    missing byte (a blob truncated to 29 bytes or more is
 *                    indistinguishable from a tampered one);
 *   MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_unseal(const struct mh_secret *wrapping_key, const uint8_t *aad, size_t aad_len,
                          const uint8_t *sealed, size_t len, struct mh_secret *pt_out);

/* mh_seal_key seals the private material of |key| (mh_key_export_private:
 * PKCS#8 DER for RSA/EC, raw bytes for AES) and appends the blob to |out|.
 * The AAD must bind the key's name, version and kty (see above).
 * Errors: MH_ENOPRIVATE, then as mh_seal. */
MH_MUST_USE int mh_seal_key(const struct mh_secret *wrapping_key, const struct mh_key *key,
                            const uint8_t *aad, size_t aad_len, struct mh_buf *out);

/* mh_unseal_key reverses mh_seal_key: unseals, then rebuilds a key of type
 * |kty| with mh_key_import_private (one reference in *out on success).
 * Errors: as mh_unseal; MH_EBADKEY if authenticated contents are not a key of
 * |kty| (only possible if the sealer used a different kty than the AAD says);
 * MH_EUNSUPPORTED for an unknown kty. */
MH_MUST_USE int mh_unseal_key(const struct mh_secret *wrapping_key, enum mh_kty kty,
                              const uint8_t *aad, size_t aad_len, const uint8_t *sealed, size_t len,
                              struct mh_key **out);

#endif
