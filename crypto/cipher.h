/* cipher: Key Vault encrypt/decrypt: RSA1_5, RSA-OAEP, RSA-OAEP-256, AES-GCM, AES-CBC, AES-CBCPAD.
 *
 * Semantics follow Azure Key Vault / Managed HSM:
 *   RSA1_5        PKCS#1 v1.5 encryption padding.
 *   RSA-OAEP      OAEP with SHA-1 and MGF1-SHA-1, empty label.
 *   RSA-OAEP-256  OAEP with SHA-256 and MGF1-SHA-256, empty label.
 *     Encrypt needs only the public key; decrypt needs the private key
 *     (MH_ENOPRIVATE otherwise). Plaintext longer than the padding allows
 *     (k-11 bytes for RSA1_5, k-2*hLen-2 for OAEP) gives MH_EINPUTLEN.
 *   A128GCM/A192GCM/A256GCM  96-bit IV generated here (a caller IV on encrypt
 *     is refused with MH_EINVAL, as Azure's SDKs refuse it), 128-bit tag,
 *     optional AAD. Decrypt takes the 12-byte IV (else MH_EIVLEN), the 16-byte
 *     tag (else MH_EINVAL) and the AAD; any mismatch gives MH_EAUTH.
 *   A128CBC/A192CBC/A256CBC  no padding; caller IV of 16 bytes (else
 *     MH_EIVLEN); input a non-zero multiple of 16 bytes (else MH_EINPUTLEN).
 *   A128CBCPAD/A192CBCPAD/A256CBCPAD  PKCS#7 padding; caller IV of 16 bytes;
 *     any plaintext length (including 0); ciphertext a non-zero multiple of 16.
 * The AES key must have exactly the algorithm's size, and the algorithm must
 * be an encryption algorithm for the key's type: MH_EALGKEY otherwise.
 * CBC and CBCPAD are unauthenticated: Key Vault offers them, so do we, but
 * callers should prefer GCM.
 *
 * Oracles. Every RSA decryption failure (bad padding, wrong length, value
 * above the modulus) and every CBCPAD padding failure returns the same
 * MH_EDECRYPT, the OpenSSL error queue is cleared, and the CBCPAD padding
 * check runs in constant time. That removes distinguishable error paths, but
 * success versus failure is itself observable: RSA1_5 decryption in OpenSSL
 * 3.0 has no implicit rejection (it arrived in 3.2), so RSA1_5 decrypt remains
 * a Bleichenbacher oracle towards anyone who may submit ciphertexts. It is
 * offered only for compatibility with Key Vault clients; prefer RSA-OAEP-256.
 *
 * Limits. Plaintext, ciphertext and AAD are bounded by MH_CIPHER_MAX_INPUT
 * (16 MiB); larger inputs give MH_ETOOBIG before any work is done.
 *
 * Performance and state. AES runs on one cached EVP_CIPHER_CTX per thread
 * (freed when the thread exits), re-keyed per call without reallocation.
 * After every call the context is re-keyed with an all-zero key, so the
 * caller's key schedule does not outlive the call; the last call's GHASH and
 * keystream block do stay in that context until the next AES call on the
 * thread. RSA builds an EVP_PKEY_CTX per call.
 *
 * Thread safety: all functions are thread-safe; a key may be used by many
 * threads at once. */
#ifndef MH_CRYPTO_CIPHER_H
#define MH_CRYPTO_CIPHER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"
#include "crypto/alg.h"
#include "crypto/key.h"

/* Largest plaintext, ciphertext or AAD accepted, in bytes. */
#define MH_CIPHER_MAX_INPUT ((size_t)16 * 1024 * 1024)

#define MH_GCM_IV_LEN  12
#define MH_GCM_TAG_LEN 16
#define MH_CBC_IV_LEN  16

/* Optional inputs of an operation; all borrowed. A field counts as given when
 * its length is non-zero (its pointer must then be non-NULL, else MH_EINVAL).
 * A NULL params pointer means nothing given. Fields an algorithm does not take
 * (AAD or tag for CBC, any of them for RSA, a tag on encrypt) give MH_EINVAL. */
struct mh_cipher_params {
    const uint8_t *iv;
    size_t iv_len;
    const uint8_t *aad;
    size_t aad_len;
    const uint8_t *tag;
    size_t tag_len;
};

/* What encryption returns besides the ciphertext, as Key Vault's response
 * carries it: the IV (the generated one for GCM, the caller's for CBC/CBCPAD,
 * none for RSA) and the GCM tag. Lengths are 0 when absent. */
struct mh_cipher_result {
    uint8_t iv[16];
    size_t iv_len;
    uint8_t tag[16];
    size_t tag_len;
};

/* mh_encrypt encrypts |pt_len| bytes at |pt| (NULL allowed when 0) under
 * |key| with |alg|, appending the ciphertext to |ct_out| and filling |res|.
 * On error |ct_out| is back to its previous length and |res| is zeroed.
 * Errors: MH_EALGKEY, MH_EINVAL, MH_EIVLEN, MH_EINPUTLEN, MH_ETOOBIG,
 * MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_encrypt(const struct mh_key *key, enum mh_alg alg,
                           const struct mh_cipher_params *in, const uint8_t *pt, size_t pt_len,
                           struct mh_buf *ct_out, struct mh_cipher_result *res);

/* mh_decrypt decrypts |ct_len| bytes at |ct| under |key| with |alg| into the
 * fresh secret |pt_out| (which must be empty, else MH_EINVAL; it stays empty
 * on error).
 * GCM needs in->iv and in->tag (and in->aad if encryption had one); CBC and
 * CBCPAD need in->iv.
 * Errors: MH_EALGKEY, MH_ENOPRIVATE, MH_EINVAL, MH_EIVLEN, MH_EINPUTLEN,
 * MH_ETOOBIG, MH_EAUTH (GCM), MH_EDECRYPT (RSA, CBCPAD), MH_ENOMEM,
 * MH_ECRYPTO. */
MH_MUST_USE int mh_decrypt(const struct mh_key *key, enum mh_alg alg,
                           const struct mh_cipher_params *in, const uint8_t *ct, size_t ct_len,
                           struct mh_secret *pt_out);

#endif
