/* cert: the X.509 certificates and PEM private keys of security-domain custodians and of the SD
 * exchange key.
 *
 * A certificate is accepted only as exactly one PEM "CERTIFICATE" block (or
 * DER), at most MH_CERT_MAX_LEN bytes, whose DER re-encodes to itself, with
 * an RSA public key of at least 2048 bits (what Azure's download endpoint
 * and CLI accept). Nothing else is checked: validity dates, issuer and key
 * usage play no part in the SD format, and the Azure CLI checks none.
 * The thumbprint is x5t#S256 = base64url(SHA-256(DER)), the value the SD
 * file's "x5t_256" fields carry.
 *
 * Private keys (custodian wrapping keys, the exchange key) are read from PEM
 * (PKCS#8, encrypted PKCS#8, or traditional RSA), with an optional password
 * and never a terminal prompt.
 *
 * Thread-safety: a struct mh_cert is immutable after mh_cert_from_pem/der and
 * may be shared read-only between threads; functions are thread-safe. */
#ifndef MH_CRYPTO_CERT_H
#define MH_CRYPTO_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"

#define MH_CERT_MAX_LEN      (64u * 1024u)
#define MH_CERT_X5T_LEN      43u /* base64url of 32 bytes */
#define MH_CERT_MIN_RSA_BITS 2048

struct mh_cert;

/* mh_cert_from_pem parses |len| bytes at |pem|: exactly one CERTIFICATE
 * block (text outside PEM blocks is ignored, a second PEM block of any kind
 * is refused). Errors: MH_ETOOBIG (len > MH_CERT_MAX_LEN), MH_ECERT
 * (malformed, not exactly one certificate, non-RSA key), MH_EWEAKKEY (RSA
 * below 2048 bits), MH_ENOMEM. On success *out owns the certificate. */
MH_MUST_USE int mh_cert_from_pem(const uint8_t *pem, size_t len, struct mh_cert **out);

/* mh_cert_from_der: the same from DER bytes (e.g. a JWK x5c entry, already
 * base64-decoded); trailing bytes are refused (MH_ECERT). */
MH_MUST_USE int mh_cert_from_der(const uint8_t *der, size_t len, struct mh_cert **out);

/* mh_cert_free releases |cert|; NULL is a no-op. */
void mh_cert_free(struct mh_cert *cert);

/* Borrowed views, valid while |cert| lives. */
EVP_PKEY *mh_cert_pkey(const struct mh_cert *cert); /* public RSA key */
struct mh_slice mh_cert_der(const struct mh_cert *cert);
/* The NUL-terminated x5t#S256 thumbprint (MH_CERT_X5T_LEN characters). */
const char *mh_cert_x5t_s256(const struct mh_cert *cert);
unsigned mh_cert_bits(const struct mh_cert *cert);

/* mh_cert_matches_key: true if |priv| holds the private half of |cert|'s key. */
bool mh_cert_matches_key(const struct mh_cert *cert, const EVP_PKEY *priv);

/* mh_cert_private_key_from_pem parses an RSA private key PEM of |len| bytes
 * (<= MH_CERT_MAX_LEN). |password| (NULL for none) decrypts an encrypted
 * key; without it an encrypted key fails with MH_EPEM instead of prompting.
 * The key must be RSA >= 2048 bits. On success *out is a new EVP_PKEY the
 * caller frees with EVP_PKEY_free.
 * Errors: MH_ETOOBIG, MH_EPEM (malformed, wrong or missing password, not
 * exactly one private key block), MH_EUNSUPPORTED (not RSA), MH_EWEAKKEY. */
MH_MUST_USE int mh_cert_private_key_from_pem(const uint8_t *pem, size_t len,
                                             const struct mh_secret *password, EVP_PKEY **out);

#endif
