/* auditlog: the audit log's tamper-evident format: hash chain, signed checkpoints, verify.
 *
 * An audit log is a sequence of files of JSON lines (one JSON object per line,
 * UTF-8, terminated by "\n", at most MH_AUDITLOG_LINE_MAX bytes). One node writes
 * one chain; every line carries:
 *   "seq":      integer, 1 for the chain's first record, then +1 per line, across
 *               files (a file is named audit-<20-digit seq of its first line>.jsonl);
 *   "prevHash": lower-case hex SHA-256 of the previous line's bytes (without its
 *               "\n"); 64 zeros for the chain's first line;
 *   "nodeId":   the writing node's raft id (the same on every line of a chain).
 * Request records use Azure's AuditEvent field names (node/audit.h lists them).
 * A checkpoint is a line with "operationName":"AuditCheckpoint" and
 *   "signature": base64url (no padding) Ed25519 signature, by the audit signing key
 *                (HKDF purpose MH_PURPOSE_AUDIT_SIGN of the security domain root, the
 *                same key on every node), over mh_auditlog_checkpoint_message(
 *                nodeId, seq, prevHash) of that same line;
 *   "publicKey": lower-case hex of the raw public key (informational; verification
 *                uses the key the verifier trusts).
 * Because each line names the hash of the one before, a checkpoint's signature
 * covers every line before it: editing, removing, inserting or reordering a line
 * breaks the chain or a signature, and verify names the first bad line. Lines after
 * the last checkpoint are chained but not yet signed (reported as such).
 *
 * Thread-safe; pure functions over OpenSSL. */
#ifndef MH_CRYPTO_AUDITLOG_H
#define MH_CRYPTO_AUDITLOG_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/secret.h"

#define MH_AUDITLOG_LINE_MAX   65536
#define MH_AUDITLOG_HASH_HEX   64
#define MH_AUDITLOG_PUBKEY_LEN 32
#define MH_AUDITLOG_SIG_LEN    64
#define MH_AUDITLOG_CHECKPOINT "AuditCheckpoint"

/* mh_auditlog_line_hash writes the lower-case hex SHA-256 of |line| (|len| bytes,
 * without the newline) and a NUL into |hex| (65 bytes). MH_ECRYPTO on failure. */
MH_MUST_USE int mh_auditlog_line_hash(const char *line, size_t len,
                                      char hex[MH_AUDITLOG_HASH_HEX + 1]);

/* The bytes a checkpoint signs:
 * "mhsm-audit-checkpoint-v1\n" <node id decimal> "\n" <seq decimal> "\n" <prevHash hex>.
 * Writes a NUL-terminated string into |out| (|cap| >= 128). MH_EINVAL if too small. */
MH_MUST_USE int mh_auditlog_checkpoint_message(uint64_t node_id, uint64_t seq,
                                               const char *prev_hash_hex, char *out, size_t cap);

/* mh_auditlog_checkpoint_line renders the one accepted form of a checkpoint line
 * (without newline) into |out|: {"seq","prevHash","nodeId","category":"AuditEvent",
 * "operationName":"AuditCheckpoint","signature","publicKey"} in that order, no
 * spaces. Every byte is either fixed or covered by the signature, so verify
 * compares the line byte for byte with this rendering. MH_ENOSPACE if |cap| is
 * too small (256 bytes always suffice). */
MH_MUST_USE int mh_auditlog_checkpoint_line(uint64_t seq, const char *prev_hash_hex,
                                            uint64_t node_id, const char *sig_b64url,
                                            const char *pub_hex, char *out, size_t cap);

/* mh_auditlog_signer_new derives the Ed25519 signing key from |seed| (32 bytes: the
 * domain's MH_PURPOSE_AUDIT_SIGN key). Free with EVP_PKEY_free. MH_ECRYPTO. */
MH_MUST_USE int mh_auditlog_signer_new(const struct mh_secret *seed, EVP_PKEY **out);

/* The raw public key of |key| (a signer or verifier). MH_ECRYPTO. */
MH_MUST_USE int mh_auditlog_public_key(EVP_PKEY *key, uint8_t out[MH_AUDITLOG_PUBKEY_LEN]);

/* Signs / verifies |msg| (Ed25519). Verify returns 0, or MH_EAUTH when the signature
 * does not verify. MH_ECRYPTO on library failure. */
MH_MUST_USE int mh_auditlog_sign(EVP_PKEY *key, const char *msg, uint8_t sig[MH_AUDITLOG_SIG_LEN]);
MH_MUST_USE int mh_auditlog_verify_sig(const uint8_t pub[MH_AUDITLOG_PUBKEY_LEN], const char *msg,
                                       const uint8_t *sig, size_t sig_len);

/* mh_auditlog_json_string appends |s| as a JSON string literal (quotes included;
 * control characters, '"' and '\\' escaped, bytes >= 0x80 that are not valid
 * UTF-8 written as \ufffd) to |out|, at most |cap| - 1 bytes plus NUL, and returns
 * the bytes written, or MH_ENOSPACE when it does not fit (out is then unspecified). */
MH_MUST_USE long mh_auditlog_json_string(const char *s, char *out, size_t cap);

/* ---- verification --------------------------------------------------------- */

struct mh_auditlog_report {
    uint64_t records;     /* lines checked */
    uint64_t checkpoints; /* signed checkpoints that verified */
    uint64_t first_seq;   /* seq of the first line (the chain may start mid-way
                             when older files were archived) */
    uint64_t last_seq;
    uint64_t last_checkpoint_seq; /* 0: none */
    uint64_t unsigned_tail;       /* lines after the last checkpoint */
    uint64_t node_id;
    /* Incomplete last lines of earlier files (a crash mid-write; the writer cuts
     * a partial write it sees fail, so a fragment means a crash or an edit): not
     * records, accepted, reported. The first one's place: */
    uint64_t torn;
    const char *torn_file;
    uint64_t torn_line;
    /* On failure: where and why. |bad_file| points into the caller's paths. */
    const char *bad_file;
    uint64_t bad_line; /* 1-based line number within bad_file */
    char reason[256];
};

/* mh_auditlog_verify_files checks |n| files (in chain order; the caller sorts
 * them, file names sort by their first seq) against the trusted public key |pub|:
 * every line parses and has seq/prevHash/nodeId; seqs are consecutive; every
 * prevHash is the hash of the line before (across files; the very first line is
 * taken as the anchor); one nodeId throughout; every checkpoint's signature
 * verifies. A last line without "\n" (torn by a crash) is accepted only as the
 * last line of a file whose successor chains to the line before it.
 * Returns 0 (report filled), MH_EAUTH (chain or signature broken: report says
 * where: an altered line is named as itself, a missing/moved line by the position
 * where the seq breaks), MH_EPROTO (a line is not a valid record), -errno (a file
 * cannot be read). */
MH_MUST_USE int mh_auditlog_verify_files(const char *const *paths, size_t n,
                                         const uint8_t pub[MH_AUDITLOG_PUBKEY_LEN],
                                         struct mh_auditlog_report *report);

#endif
