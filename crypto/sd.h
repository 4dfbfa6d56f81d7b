/* sd: the security-domain file and restore blob, byte-compatible with Azure Managed HSM's tooling
 * (az keyvault security-domain).
 *
 * SD file (what download returns; custodians keep it offline):
 *   {"EncData":{"data":[{"compact_jwe":"<JWE>","tag":"<tag>"},...],"kdf":"sp108_kdf"},
 *    "SharedKeys":{"enc_shares":[{"enc_key":"<JWE>","x5t_256":"<thumbprint>"},...],
 *                  "required":M,"key_algorithm":"shamir_share"}}
 * A random 32-byte master key is Shamir-split (crypto/shamir.h) into one
 * share per certificate, threshold M; each share is a compact JWE
 * RSA-OAEP-256/A256CBC-HS512 to its certificate, next to that certificate's
 * x5t#S256. Each data item is a compact JWE dir/A256CBC-HS512 with kid = tag
 * under SP 800-108(master, label = tag, context = "", L = 512).
 *
 * Restore blob (what upload takes, made offline from the SD file and M
 * custodian keys for a new HSM's exchange certificate; Azure CLI
 * custom.py _security_domain_gen_blob):
 *   {"EncData":{...same items re-encrypted under a fresh master key...},
 *    "WrappedKey":{"enc_key":"<JWE RSA-OAEP-256 to the exchange cert>","x5t_256":"..."}}
 * JWE strings are stored as they are (the current CLI's security_domain.py;
 * one old revision base64url-encoded them a second time, which the rest of
 * that CLI could not read back). We write compact JSON; the CLI writes
 * Python's json.dumps spacing; both parse identically.
 *
 * Bounds: 3..10 certificates, quorum 2..10 and <= certificates (Azure's
 * limits; MH_EQUORUM otherwise), 1..MH_SD_MAX_ITEMS items, tags of
 * 1..MH_SD_MAX_TAG bytes of UTF-8, files up to MH_SD_MAX_FILE bytes.
 * Parsing is strict about every field the format defines (type, value,
 * bounds: MH_ESDFILE; unparseable JSON: MH_EJSON) and ignores members it
 * does not know, so a newer file with extra metadata still opens.
 *
 * Thread-safety: all functions are thread-safe; they take a few RSA
 * operations each (a 10-share build is ~10 RSA encryptions, recovery ~M RSA
 * decryptions): keep them off event-loop threads. */
#ifndef MH_CRYPTO_SD_H
#define MH_CRYPTO_SD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secret.h"
#include "crypto/cert.h"

#define MH_SD_MIN_CERTS  3u
#define MH_SD_MAX_CERTS  10u
#define MH_SD_MIN_QUORUM 2u
#define MH_SD_MAX_QUORUM 10u
#define MH_SD_MAX_ITEMS  64u
#define MH_SD_MAX_TAG    256u
#define MH_SD_MAX_FILE   (8u << 20)
#define MH_SD_MASTER_LEN 32u

/* One item to protect (borrowed). */
struct mh_sd_item {
    const char *tag; /* UTF-8, tag_len bytes, not necessarily NUL-terminated */
    size_t tag_len;
    const struct mh_secret *value;
};

/* Items recovered from a file (owned; free with mh_sd_items_free). */
struct mh_sd_out_item {
    char *tag; /* NUL-terminated copy; tag_len excludes the NUL */
    size_t tag_len;
    struct mh_secret value;
};
struct mh_sd_items {
    struct mh_sd_out_item *v;
    size_t n;
};

/* A custodian's key pair: the certificate the share was made for (its
 * x5t#S256 picks the share, as the CLI does with <key>.cer next to each
 * <key>.pem) and the RSA private key (cert.h mh_cert_private_key_from_pem). */
struct mh_sd_wrapping_key {
    const struct mh_cert *cert;
    EVP_PKEY *priv;
};

/* mh_sd_build makes an SD file protecting |n_items| items for |n_certs|
 * certificates with threshold |quorum|, appended to |json_out|.
 * Errors: MH_EQUORUM (n_certs outside 3..10, quorum outside 2..10 or above
 * n_certs, or the same certificate twice: one custodian holding two shares
 * would silently lower the quorum), MH_EINVAL (no items, too many, a tag
 * empty/too long/not UTF-8, duplicate tags, NULL), MH_ETOOBIG, MH_ENOMEM,
 * MH_ECRYPTO. |json_out| is unchanged on error. */
MH_MUST_USE int mh_sd_build(const struct mh_sd_item *items, size_t n_items,
                            const struct mh_cert *const *certs, size_t n_certs, unsigned quorum,
                            struct mh_buf *json_out);

/* mh_sd_recover opens an SD file with |n_keys| custodian keys. Every key
 * must be a matching (certificate, private key) pair (MH_EINVAL otherwise)
 * and must match some share by x5t_256 (MH_ENOKEYMATCH otherwise; a key given
 * twice counts once). Each matching share is decrypted (a tampered share
 * fails with its JWE error, MH_EAUTH / MH_EDECRYPT / MH_EJWE, never yields a
 * wrong secret); fewer than "required" shares gives MH_ESHARES. The master
 * key is combined from the shares and every item decrypted into |out|
 * (empty on entry). |master_out|, if not NULL, receives the master key.
 * On error |out| and |master_out| are empty. */
MH_MUST_USE int mh_sd_recover(const char *json, size_t len, const struct mh_sd_wrapping_key *keys,
                              size_t n_keys, struct mh_sd_items *out, struct mh_secret *master_out);

/* mh_sd_restore_blob does what `az keyvault security-domain restore-blob`
 * does: recovers the items as mh_sd_recover does, re-encrypts them under a
 * fresh random master key (same KDF, same tags) and wraps that key as a
 * compact JWE RSA-OAEP-256 (kid "not used") to |exchange|, appending the blob
 * JSON to |blob_out|. Errors: those of mh_sd_recover, MH_EINVAL. */
MH_MUST_USE int mh_sd_restore_blob(const char *json, size_t len,
                                   const struct mh_sd_wrapping_key *keys, size_t n_keys,
                                   const struct mh_cert *exchange, struct mh_buf *blob_out);

/* mh_sd_open_restore_blob is the server side of upload: |exchange| must be
 * the certificate whose thumbprint the blob names (MH_ENOKEYMATCH otherwise)
 * and |exchange_priv| its private key (MH_EINVAL otherwise). Unwraps the
 * master key (16..64 bytes, MH_ESDFILE otherwise) and decrypts every item
 * into |out| (empty on entry; empty again on error). */
MH_MUST_USE int mh_sd_open_restore_blob(const char *json, size_t len,
                                        const struct mh_cert *exchange, EVP_PKEY *exchange_priv,
                                        struct mh_sd_items *out);

/* mh_sd_items_free wipes and frees every item; |items| is empty afterwards. */
void mh_sd_items_free(struct mh_sd_items *items);

#endif
