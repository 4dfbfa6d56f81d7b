/* alg: the JOSE / Key Vault algorithm identifiers mhsm implements, their names,
 * and the OpenSSL handles they need, fetched once per process.
 *
 * OpenSSL 3.0 pays a lock-protected fetch for every EVP_sha256()-style call;
 * under threads that contention is the main cost of short operations
 * (openssl/openssl#20286). mh_alg_init fetches every digest and cipher once;
 * mh_alg_md / mh_alg_cipher hand out those handles without locking.
 *
 * Thread safety: mh_alg_init is idempotent and thread-safe (pthread_once);
 * every other function is a pure lookup. */
#ifndef MH_CRYPTO_ALG_H
#define MH_CRYPTO_ALG_H

#include <stddef.h>

#include <openssl/evp.h>

#include "common/err.h"

enum mh_alg {
    MH_ALG_NONE = 0,
    /* signatures over a caller-supplied digest */
    MH_ALG_RS256,
    MH_ALG_RS384,
    MH_ALG_RS512,
    MH_ALG_PS256,
    MH_ALG_PS384,
    MH_ALG_PS512,
    MH_ALG_ES256,
    MH_ALG_ES256K,
    MH_ALG_ES384,
    MH_ALG_ES512,
    /* RSA encryption and key wrapping */
    MH_ALG_RSA1_5,
    MH_ALG_RSA_OAEP,
    MH_ALG_RSA_OAEP_256,
    /* AES encryption */
    MH_ALG_A128GCM,
    MH_ALG_A192GCM,
    MH_ALG_A256GCM,
    MH_ALG_A128CBC,
    MH_ALG_A192CBC,
    MH_ALG_A256CBC,
    MH_ALG_A128CBCPAD,
    MH_ALG_A192CBCPAD,
    MH_ALG_A256CBCPAD,
    /* AES key wrapping */
    MH_ALG_A128KW,
    MH_ALG_A192KW,
    MH_ALG_A256KW,
    MH_ALG_CKM_AES_KEY_WRAP,     /* RFC 3394 with the key's own size */
    MH_ALG_CKM_AES_KEY_WRAP_PAD, /* RFC 5649 with the key's own size */
    MH_ALG_COUNT_
};

/* What an algorithm is for. */
enum mh_alg_class {
    MH_ALG_CLASS_NONE = 0,
    MH_ALG_CLASS_SIGN,
    MH_ALG_CLASS_RSA_ENC, /* RSA encrypt/decrypt and wrap/unwrap */
    MH_ALG_CLASS_AES_ENC, /* GCM / CBC / CBCPAD */
    MH_ALG_CLASS_AES_WRAP /* KW / KWP */
};

enum mh_md { MH_MD_SHA1 = 0, MH_MD_SHA256, MH_MD_SHA384, MH_MD_SHA512, MH_MD_COUNT_ };

enum mh_cipher_id {
    MH_CIPHER_AES_128_GCM = 0,
    MH_CIPHER_AES_192_GCM,
    MH_CIPHER_AES_256_GCM,
    MH_CIPHER_AES_128_CBC,
    MH_CIPHER_AES_192_CBC,
    MH_CIPHER_AES_256_CBC,
    MH_CIPHER_AES_128_WRAP,
    MH_CIPHER_AES_192_WRAP,
    MH_CIPHER_AES_256_WRAP,
    MH_CIPHER_AES_128_WRAP_PAD,
    MH_CIPHER_AES_192_WRAP_PAD,
    MH_CIPHER_AES_256_WRAP_PAD,
    MH_CIPHER_COUNT_
};

/* mh_alg_init fetches every handle. Returns MH_ECRYPTO if OpenSSL lacks one.
 * Every other crypto/ entry point calls it, so explicit calls are optional;
 * servers call it at start-up so the first request pays nothing. */
MH_MUST_USE int mh_alg_init(void);

/* JOSE name ("RS256", "RSA-OAEP-256", "A256GCM", "CKM_AES_KEY_WRAP_PAD") <->
 * enum. mh_alg_from_name returns MH_ALG_NONE for an unknown name; the match is
 * exact and case-sensitive, as JOSE requires. |len| is the name's length. */
enum mh_alg mh_alg_from_name(const char *name, size_t len);
const char *mh_alg_name(enum mh_alg alg); /* "" for NONE or out of range */

enum mh_alg_class mh_alg_class(enum mh_alg alg);

/* Digest of a signature algorithm or of an OAEP variant: MH_MD_SHA256 for
 * RS256/PS256/ES256/ES256K/RSA-OAEP-256, SHA1 for RSA-OAEP, ... ;
 * -1 for algorithms without one. */
int mh_alg_digest(enum mh_alg alg);

/* Digest length in bytes of |md|. */
size_t mh_md_len(enum mh_md md);

/* AES key size in bits an AES algorithm demands (128/192/256); 0 when the
 * algorithm takes any AES size (CKM_*) or is not AES. */
unsigned mh_alg_aes_bits(enum mh_alg alg);

/* Prefetched handles; valid after mh_alg_init succeeded, never freed. */
const EVP_MD *mh_alg_md(enum mh_md md);
const EVP_CIPHER *mh_alg_cipher(enum mh_cipher_id id);

#endif
