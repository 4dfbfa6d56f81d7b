/* jwe: compact JWE (RFC 7516) with enc A256CBC-HS512 and alg dir, RSA-OAEP-256 (and RSA-OAEP to
 * decrypt), as the security-domain file uses it.
 *
 * Content encryption is RFC 7518 section 5.2.5: a 64-byte CEK, MAC key =
 * bytes 0..31, AES-256-CBC key = bytes 32..63, PKCS#7 padding, a random
 * 16-byte IV, AAD = the ASCII of the base64url protected header, and tag =
 * the first 32 bytes of HMAC-SHA-512(AAD || IV || CT || uint64be(bits(AAD))).
 * Decryption checks the tag in constant time before it decrypts anything.
 *
 * Headers are written the way the Azure CLI writes them (security_domain/
 * jwe.py JWEHeader.to_json_str: fields in the order alg, enc, kid; compact
 * separators; kid is the only optional field it sets):
 *   dir:          {"alg":"dir","enc":"A256CBC-HS512","kid":"<tag>"}
 *   RSA-OAEP-256: {"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"not used"}
 * (the CLI's encrypt_using_cert always sets kid "not used"; no x5t#S256 in the
 * header, the SD file carries the thumbprint next to the JWE instead). The
 * kid string is escaped as JSON with non-ASCII as \uXXXX, like Python's
 * json.dumps (jansson writes the hex digits in upper case where Python uses
 * lower case); for ASCII tags without quotes or backslashes, the only kind
 * the server makes, the bytes are identical. The header only has to be
 * valid JSON anyway, because it travels verbatim as the AAD.
 *
 * Parsing is strict: exactly five base64url parts (strict decoder, no
 * padding), total length <= MH_JWE_MAX_LEN, header <= MH_JWE_MAX_HEADER
 * bytes and a JSON object without duplicate members whose alg and enc are
 * strings, kid (if present) a string, no "zip" and no "crit"; enc must be
 * A256CBC-HS512; dir requires an empty encrypted-key part, RSA a non-empty
 * one; IV 16 bytes, tag 32 bytes, ciphertext a non-zero multiple of 16.
 * Structure errors give MH_EJWE (or MH_EBASE64 for bad base64url), a wrong
 * tag MH_EAUTH, a failed RSA unwrap (any cause, one code: no padding oracle)
 * MH_EDECRYPT, bad PKCS#7 padding under a valid tag MH_EDECRYPT.
 *
 * Thread-safety: all functions are thread-safe; an EVP_PKEY may be shared
 * read-only between threads. */
#ifndef MH_CRYPTO_JWE_H
#define MH_CRYPTO_JWE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"

#define MH_JWE_CEK_LEN       64u
#define MH_JWE_IV_LEN        16u
#define MH_JWE_TAG_LEN       32u
#define MH_JWE_MAX_LEN       (4u << 20) /* whole compact serialization */
#define MH_JWE_MAX_HEADER    4096u      /* decoded protected header */
#define MH_JWE_MAX_PLAINTEXT (2u << 20)

/* The RFC 7518 5.2 primitive, public for the Appendix B.3 vector test.
 * |cek| is 64 bytes, |iv| 16; ciphertext is appended to |ct| and the 32-byte
 * tag written to |tag|. pt_len <= MH_JWE_MAX_PLAINTEXT.
 * Errors: MH_EINVAL, MH_ETOOBIG, MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_jwe_a256cbc_hs512_encrypt(const struct mh_secret *cek, const uint8_t iv[16],
                                             const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                                             size_t pt_len, struct mh_buf *ct, uint8_t tag[32]);

/* Inverse of the above: verifies |tag| first (MH_EAUTH), then decrypts into
 * |pt| (empty on entry). MH_EINPUTLEN if ct_len is not a non-zero multiple
 * of 16, MH_EDECRYPT for bad padding. */
MH_MUST_USE int mh_jwe_a256cbc_hs512_decrypt(const struct mh_secret *cek, const uint8_t iv[16],
                                             const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                             size_t ct_len, const uint8_t tag[32],
                                             struct mh_secret *pt);

/* mh_jwe_encrypt_dir appends a compact JWE {"alg":"dir","enc":"A256CBC-HS512",
 * "kid":kid} of |pt_len| bytes at |pt| under |cek| (64 bytes) to |out|.
 * |kid| (kid_len bytes, 1..256, valid UTF-8) is required: the SD format
 * always names the item. Errors: MH_EINVAL, MH_ETOOBIG, MH_ENOMEM,
 * MH_ECRYPTO. */
MH_MUST_USE int mh_jwe_encrypt_dir(const struct mh_secret *cek, const char *kid, size_t kid_len,
                                   const uint8_t *pt, size_t pt_len, struct mh_buf *out);

/* mh_jwe_encrypt_rsa draws a random 64-byte CEK, wraps it with RSA-OAEP-256
 * (SHA-256, MGF1-SHA-256, no label) to the RSA public key |pub| and appends
 * the compact JWE {"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"not used"}
 * to |out|. Errors: MH_EINVAL (NULL, not RSA), MH_ETOOBIG, MH_ENOMEM,
 * MH_ECRYPTO. */
MH_MUST_USE int mh_jwe_encrypt_rsa(EVP_PKEY *pub, const uint8_t *pt, size_t pt_len,
                                   struct mh_buf *out);

/* mh_jwe_decrypt_dir parses |len| bytes of compact JWE at |jwe|, requires
 * alg "dir", and decrypts with |cek| (64 bytes) into |pt| (empty on entry).
 * Errors: see the header comment; |pt| is empty on error. */
MH_MUST_USE int mh_jwe_decrypt_dir(const char *jwe, size_t len, const struct mh_secret *cek,
                                   struct mh_secret *pt);

/* mh_jwe_decrypt_rsa parses a compact JWE with alg RSA-OAEP-256 or RSA-OAEP,
 * unwraps the CEK with the RSA private key |priv| (a CEK that is not 64
 * bytes counts as an unwrap failure) and decrypts into |pt| (empty on entry).
 * RSA1_5 is refused (MH_EJWE): OpenSSL 3.0 has no implicit rejection. */
MH_MUST_USE int mh_jwe_decrypt_rsa(const char *jwe, size_t len, EVP_PKEY *priv,
                                   struct mh_secret *pt);

#endif
