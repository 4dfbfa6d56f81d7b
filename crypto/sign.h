/* sign: RSA (PKCS#1 v1.5, PSS) and ECDSA signatures over a digest the caller already computed.
 *
 * Key Vault semantics: the client hashes, mhsm signs the digest as given and
 * never hashes it again. ECDSA signatures travel in the JOSE form r||s, each
 * half left-padded to the curve's field length (64, 64, 96, 132 bytes for
 * P-256, P-256K, P-384, P-521); OpenSSL's DER form never leaves this module.
 * PSS always uses MGF1 with the signature digest and a salt as long as the
 * digest, on both sides: a PSS signature with any other salt length is
 * invalid here.
 *
 * Every operation reuses an EVP_PKEY_CTX already initialised for
 * (key, algorithm, sign|verify) from a small per-thread cache, so the hot
 * path pays neither the provider fetch nor the init of a fresh context
 * (OpenSSL 3.0 takes global locks for both). A cached context holds its own
 * reference to OpenSSL's key, so freeing the mh_key while a thread still has
 * a context for it is safe; the stale entry ages out (LRU) or goes with the
 * thread. Note the consequence: a freed key's private material stays in
 * memory, in each thread that used it, until its entries are evicted or
 * that thread calls mh_sign_thread_cleanup or exits.
 *
 * Checks, in this order: the algorithm is a signature algorithm that fits the
 * key (MH_EALGKEY), the digest has that algorithm's length (MH_EDIGESTLEN),
 * and, for signing, the key holds its private part (MH_ENOPRIVATE).
 *
 * Thread safety: all functions are thread-safe; a key may be used from any
 * number of threads at once. Each thread's cache is its own. */
#ifndef MH_CRYPTO_SIGN_H
#define MH_CRYPTO_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "crypto/alg.h"
#include "crypto/key.h"

/* Contexts each thread keeps; one (key, alg, sign|verify) takes one slot. */
#define MH_SIGN_CACHE_SLOTS 16

/* mh_sign signs |digest| (|digest_len| bytes, the output of the algorithm's
 * hash) with |key| and APPENDS the signature, exactly mh_sign_len(key) bytes,
 * to |sig_out|. On failure |sig_out| is as it was.
 * Errors: MH_EALGKEY (not a signature algorithm, or one that does not fit the
 * key's type or curve: RS and PS need RSA, ES256 P-256, ES256K P-256K, ES384
 * P-384, ES512 P-521), MH_EDIGESTLEN, MH_ENOPRIVATE, MH_ENOMEM, MH_ECRYPTO.
 * ECDSA nonces are hedged (OpenSSL 3.0 mixes the key, fresh randomness and
 * the digest), so two signatures of one digest differ. */
MH_MUST_USE int mh_sign(const struct mh_key *key, enum mh_alg alg, const uint8_t *digest,
                        size_t digest_len, struct mh_buf *sig_out);

/* mh_verify checks |sig| over |digest| with |key| (public or private).
 * Returns 0 for a valid signature and MH_EBADSIG for any invalid one,
 * including a signature of the wrong length (RSA: not exactly the modulus
 * length; ECDSA: not exactly 2 * field length), an r or s out of range, or a
 * PSS salt that is not the digest length. Other errors: MH_EALGKEY,
 * MH_EDIGESTLEN, MH_ENOMEM, MH_ECRYPTO (internal failure only). */
MH_MUST_USE int mh_verify(const struct mh_key *key, enum mh_alg alg, const uint8_t *digest,
                          size_t digest_len, const uint8_t *sig, size_t sig_len);

/* mh_sign_len is the exact length of every signature |key| makes: the
 * modulus length for RSA, twice the field length for EC, 0 for oct keys. */
size_t mh_sign_len(const struct mh_key *key);

/* mh_sign_thread_cleanup frees the calling thread's context cache now.
 * Threads that exit get this automatically (pthread key destructor); call it
 * from the main thread before exit, or when a thread should drop contexts
 * (and the key material they reference) of keys it no longer uses. The next
 * operation on this thread starts a fresh cache. */
void mh_sign_thread_cleanup(void);

#endif
