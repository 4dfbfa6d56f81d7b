/* key: the in-memory key object every crypto/ operation takes: RSA, EC or AES
 * ("oct"), generated here or built from imported material, with private-key
 * serialization for sealing.
 *
 * A struct mh_key is immutable once made and reference-counted, so a key cache
 * can hand the same object to several worker threads and drop its own
 * reference while they still use it. Private material lives in OpenSSL's
 * EVP_PKEY (RSA/EC) or in an mh_secret (AES); it leaves the object only
 * through mh_key_export_private, into an mh_secret, for sealing.
 *
 * Accepted keys (everything else is refused when made or imported):
 *   RSA: 2048, 3072 or 4096 bits, odd public exponent >= 3 (generation uses
 *        65537). Below 2048 bits: MH_EWEAKKEY; other sizes: MH_EUNSUPPORTED.
 *   EC:  P-256, P-256K (secp256k1), P-384, P-521, named curves only.
 *   oct: AES 128, 192, 256 bits.
 *
 * Thread safety: all functions are thread-safe; a key may be used by many
 * threads at once (read-only). */
#ifndef MH_CRYPTO_KEY_H
#define MH_CRYPTO_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"

enum mh_kty {
    MH_KTY_NONE = 0,
    MH_KTY_RSA,
    MH_KTY_EC,
    MH_KTY_OCT,
};

enum mh_curve {
    MH_CURVE_NONE = 0,
    MH_CURVE_P256,
    MH_CURVE_P256K,
    MH_CURVE_P384,
    MH_CURVE_P521,
};

struct mh_key;

/* Names as JWK writes them: "RSA", "EC", "oct"; "P-256", "P-256K", "P-384",
 * "P-521". mh_curve_from_name also accepts "secp256k1" (RFC 8812) for P-256K.
 * Unknown names give MH_KTY_NONE / MH_CURVE_NONE. */
const char *mh_kty_name(enum mh_kty kty);
enum mh_kty mh_kty_from_name(const char *name);
const char *mh_curve_name(enum mh_curve curve);
enum mh_curve mh_curve_from_name(const char *name);
/* OpenSSL's group name of |curve| ("prime256v1", "secp256k1", "secp384r1",
 * "secp521r1"); NULL for NONE. */
const char *mh_curve_ossl_name(enum mh_curve curve);
/* Bytes of one coordinate / scalar of |curve| (32, 32, 48, 66); 0 for NONE. */
size_t mh_curve_field_len(enum mh_curve curve);

/* mh_key_generate makes a fresh key with material from the OpenSSL DRBG.
 *   RSA: |bits| in {2048, 3072, 4096}, |curve| ignored.
 *   EC:  |curve| required, |bits| ignored.
 *   oct: |bits| in {128, 192, 256}.
 * MH_EUNSUPPORTED for any other combination. RSA-4096 takes up to seconds:
 * never call it on an event-loop thread. On success *out holds one reference. */
MH_MUST_USE int mh_key_generate(enum mh_kty kty, unsigned bits, enum mh_curve curve,
                                struct mh_key **out);

/* mh_key_from_pkey adopts |pkey| (ownership passes in on success only) after
 * checking it is an acceptable RSA or EC key; a key with a private part gets a
 * full consistency check (RSA: primes, CRT parts, d; EC: point on the curve and
 * matching the scalar). Errors: MH_EWEAKKEY, MH_EUNSUPPORTED, MH_EBADKEY. */
MH_MUST_USE int mh_key_from_pkey(EVP_PKEY *pkey, struct mh_key **out);

/* mh_key_from_oct makes an AES key from |len| bytes (16, 24 or 32), copied
 * into a secret. */
MH_MUST_USE int mh_key_from_oct(const uint8_t *k, size_t len, struct mh_key **out);

/* mh_key_ref adds a reference; mh_key_free drops one and frees the key (wiping
 * AES material) with the last. mh_key_free(NULL) is a no-op. */
struct mh_key *mh_key_ref(struct mh_key *key);
void mh_key_free(struct mh_key *key);

enum mh_kty mh_key_kty(const struct mh_key *key);
/* RSA modulus bits, EC field bits (256, 256, 384, 521), AES key bits. */
unsigned mh_key_bits(const struct mh_key *key);
enum mh_curve mh_key_curve(const struct mh_key *key);
bool mh_key_has_private(const struct mh_key *key);
/* A process-unique, never reused id of this key object, for per-thread
 * caches keyed by key (a freed key's address may be reused; its id is not). */
uint64_t mh_key_id(const struct mh_key *key);

/* Borrowed OpenSSL handle of an RSA/EC key (NULL for oct), valid while the
 * caller holds a reference. Callers must not modify it. */
EVP_PKEY *mh_key_pkey(const struct mh_key *key);
/* Borrowed AES material of an oct key (NULL otherwise). */
const struct mh_secret *mh_key_oct(const struct mh_key *key);

/* mh_key_export_private serializes the private key into a fresh secret |out|:
 * PKCS#8 PrivateKeyInfo DER for RSA/EC, the raw bytes for AES. MH_ENOPRIVATE
 * for a public-only key. The only way private material leaves a key; the
 * result is meant for mh_seal (crypto/seal.h) and nothing else. */
MH_MUST_USE int mh_key_export_private(const struct mh_key *key, struct mh_secret *out);

/* mh_key_import_private parses what mh_key_export_private produced: PKCS#8 DER
 * whose algorithm must match |kty| (RSA or EC), or raw AES bytes for
 * MH_KTY_OCT. It checks type, size and curve but skips the expensive
 * consistency check of mh_key_from_pkey: its input comes out of an
 * authenticated seal that only this code wrote. Untrusted material goes
 * through crypto/jwk.h instead. */
MH_MUST_USE int mh_key_import_private(enum mh_kty kty, const uint8_t *p, size_t len,
                                      struct mh_key **out);

/* mh_key_public_der appends the SubjectPublicKeyInfo DER of an RSA/EC key to
 * |out|. MH_EINVAL for oct keys. */
MH_MUST_USE int mh_key_public_der(const struct mh_key *key, struct mh_buf *out);

#endif
