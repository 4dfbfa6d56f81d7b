/* logverify: `mhsm audit verify`: checks audit log files against a trusted public key.
 *
 * The chain and signature rules are crypto/auditlog.h's; this module orders the files
 * (by file name: audit-<20-digit first seq>.jsonl sorts in chain order), makes sure each
 * one can be read (so a missing file is named as such, not as a broken chain), and turns
 * the outcome into the CLI's output and exit status.
 *
 * Thread safety: pure functions over caller-owned data (and the files they read). */
#ifndef MH_CLIENT_LOGVERIFY_H
#define MH_CLIENT_LOGVERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "crypto/auditlog.h"

/* mh_logverify_parse_key reads a raw Ed25519 public key given as 64 hex digits (either
 * case) or as "@FILE" holding them (surrounding whitespace allowed). On error a reason
 * is written to |err|. Errors: MH_EINVAL (not such a key), -errno (FILE unreadable). */
MH_MUST_USE int mh_logverify_parse_key(const char *arg, uint8_t pub[MH_AUDITLOG_PUBKEY_LEN],
                                       char *err, size_t errlen);

/* mh_logverify_sort orders |paths| (|n| borrowed strings, sorted in place) by file
 * name, then by the whole path. */
void mh_logverify_sort(const char **paths, size_t n);

/* mh_logverify_run sorts |paths| (in place) and verifies them as one chain. It writes
 * to |out| the JSON document (2-space indent, or with |table| "name value" lines):
 *   success: {"ok":true,"files","records","checkpoints","firstSeq","lastSeq",
 *             "lastCheckpointSeq","unsignedTail","nodeId"}, plus a warning on |errf|
 *             when records follow the last signed checkpoint;
 *   failure: {"ok":false,"file","line","reason"} and on |errf|
 *             "error: audit log does not verify: FILE:LINE: reason".
 * A file that cannot be read is named on |errf| ("error: cannot read FILE: why").
 * Returns the exit status: 0 verified, 1 not verified or not readable. */
int mh_logverify_run(const char **paths, size_t n, const uint8_t pub[MH_AUDITLOG_PUBKEY_LEN],
                     bool table, FILE *out, FILE *errf);

#endif
