/* jwk: keys in and out of the process: JWK (RFC 7517/7518) and PEM/DER import, public export.
 *
 * Import is the path for untrusted key material (ImportKey requests, the CLI
 * reading an operator's file). Every imported key goes through
 * mh_key_from_pkey / mh_key_from_oct, so it meets crypto/key.h's acceptance
 * rules and, for RSA/EC, passes OpenSSL's full consistency check (primes, CRT
 * parts, point on the curve, public part matching the private one).
 *
 * Export is public-only: keys are non-exportable, and symmetric keys have no
 * public material (DESIGN.md section 4).
 *
 * Secret hygiene on import: private members (d, p, q, dp, dq, qi, k) are
 * decoded straight into struct mh_secret, the BIGNUMs made from them are
 * secure-heap BIGNUMs freed with BN_clear_free, and the base64url text of those
 * members inside jansson's parsed tree is wiped before the tree is freed.
 * Jansson's lexer keeps a transient token buffer that is freed without wiping;
 * only a process-wide json_set_alloc_funcs with a wiping free can close that,
 * which is the server's decision, not this module's.
 *
 * Cost: importing RSA runs OpenSSL's full key check, including primality
 * tests of p and q (tens of milliseconds for RSA-4096): call the import
 * functions from a worker thread, never from an event loop.
 *
 * Thread safety: every function is thread-safe (no shared state besides the
 * handles of crypto/alg.h). */
#ifndef MH_CRYPTO_JWK_H
#define MH_CRYPTO_JWK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/err.h"
#include "crypto/key.h"

/* Largest JWK text mh_jwk_import_private accepts (an RSA-4096 private JWK is
 * about 3.2 KiB; the rest is room for kid, key_ops and other members). */
#define MH_JWK_MAX_LEN ((size_t)64 * 1024)
/* Largest PEM / DER input mh_pem_import_private / mh_der_import_private accept. */
#define MH_PEM_MAX_LEN ((size_t)64 * 1024)

/* mh_jwk_export_public makes a new JSON object with the public part of |key|:
 *   RSA: {"kty":"RSA","n":...,"e":...} (unsigned big-endian, no leading zeros);
 *   EC:  {"kty":"EC","crv":"P-256|P-256K|P-384|P-521","x":...,"y":...}, with x and
 *        y left-padded to the field length (32/32/48/66 bytes), as RFC 7518
 *        section 6.2.1.2 requires.
 * No other members (the caller adds kid, key_ops). On success the caller owns
 * *out (json_decref). Errors: MH_EINVAL for an oct key (symmetric keys return no
 * material), MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_jwk_export_public(const struct mh_key *key, json_t **out);

/* mh_jwk_export_public_str appends the same object, serialized as compact JSON
 * text (members in the order above), to |out|. Errors as above; |out| is left
 * as it was on error. */
MH_MUST_USE int mh_jwk_export_public_str(const struct mh_key *key, struct mh_buf *out);

/* mh_jwk_import_private parses |len| bytes of JSON text holding one private
 * JWK and makes a key from it (one reference in *out on success).
 *
 * Accepted:
 *   kty "RSA" or "RSA-HSM": n, e, d, p, q, dp, dq, qi, all required (a JWK
 *       without the CRT parts is refused: MH_EJSON); "oth" (multi-prime) is
 *       MH_EUNSUPPORTED. No private member may be longer than n.
 *   kty "EC" or "EC-HSM": crv, x, y, d; x, y and d exactly the field length
 *       of crv (MH_EBADKEY otherwise).
 *   kty "oct" or "oct-HSM": k of 16, 24 or 32 bytes (else MH_EUNSUPPORTED).
 * Other members (kid, key_ops, alg, use, ...) are ignored.
 *
 * Errors:
 *   MH_ETOOBIG       |len| > MH_JWK_MAX_LEN (checked before parsing);
 *   MH_EJSON         not one JSON object (truncated, garbage, trailing data),
 *                    a duplicate member, a missing member, or a member of the
 *                    wrong JSON type;
 *   MH_EBASE64       a member is not strict unpadded base64url;
 *   MH_EUNSUPPORTED  unknown kty or crv, unsupported RSA size, AES length;
 *   MH_EWEAKKEY      RSA below 2048 bits;
 *   MH_EBADKEY       empty or wrongly sized members, or material OpenSSL refuses or
 *                    finds inconsistent (CRT parts, point not on the curve,
 *                    d not matching the public key);
 *   MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_jwk_import_private(const char *json, size_t len, struct mh_key **out);

/* mh_jwk_import_private_json does the same from an already parsed object (for
 * a JWK nested in a larger request). |jwk| is not modified, so the caller is
 * responsible for wiping the private members' text in its own tree. Errors as
 * above except MH_ETOOBIG. */
MH_MUST_USE int mh_jwk_import_private_json(const json_t *jwk, struct mh_key **out);

/* mh_pem_import_private reads one PEM private key of |len| bytes: PKCS#8
 * "PRIVATE KEY", encrypted PKCS#8 "ENCRYPTED PRIVATE KEY" (needs |password|),
 * or the traditional "RSA PRIVATE KEY" / "EC PRIVATE KEY" (optionally with
 * legacy PEM encryption). |password| is a NUL-terminated string or NULL; it is
 * never prompted for: NULL on an encrypted key fails with MH_EPEM. Text before
 * the BEGIN line is ignored (RFC 7468 explanatory text); anything but
 * whitespace after the first key's END line is refused, so a file with two
 * keys is not silently half-read.
 * Errors: MH_ETOOBIG (len > MH_PEM_MAX_LEN), MH_EPEM (not a PEM private key,
 * wrong or missing password, trailing data, a public key or a certificate),
 * then mh_key_from_pkey's MH_EWEAKKEY, MH_EUNSUPPORTED, MH_EBADKEY. */
MH_MUST_USE int mh_pem_import_private(const char *pem, size_t len, const char *password,
                                      struct mh_key **out);

/* mh_pem_decode_private is the decoder under mh_pem_import_private, for
 * callers with acceptance rules of their own (custodian keys of the security
 * domain, crypto/cert.h): the same parsing (one key, trailing data refused,
 * never a prompt; |password| NULL for none, a zero-length secret for the
 * empty password) but none of key.h's rules, and the key may turn out to be
 * public only: the caller checks. On success the caller owns *out
 * (EVP_PKEY_free). Errors: MH_EINVAL, MH_ETOOBIG, MH_EPEM, MH_ENOMEM. */
MH_MUST_USE int mh_pem_decode_private(const uint8_t *pem, size_t len,
                                      const struct mh_secret *password, EVP_PKEY **out);

/* mh_der_import_private is the DER twin: PKCS#8 PrivateKeyInfo, or
 * EncryptedPrivateKeyInfo with |password|, or a traditional RSAPrivateKey /
 * ECPrivateKey. No trailing bytes allowed. Errors as mh_pem_import_private. */
MH_MUST_USE int mh_der_import_private(const uint8_t *der, size_t len, const char *password,
                                      struct mh_key **out);

/* mh_pem_export_public appends the SubjectPublicKeyInfo of an RSA/EC key as
 * PEM ("-----BEGIN PUBLIC KEY-----", 64-column lines) to |out|.
 * MH_EINVAL for an oct key; MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_pem_export_public(const struct mh_key *key, struct mh_buf *out);

#endif
