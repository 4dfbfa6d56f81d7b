/* keyrec: rules and conversions for key records: names, tags, key_ops, AAD, kid, KeyBundle.
 *
 * The validation functions are the single place where client strings are checked
 * (protobuf-c does not validate UTF-8 or embedded NULs). Thread-safe, pure. */
#ifndef MH_NODE_KEYREC_H
#define MH_NODE_KEYREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "crypto/key.h"
#include "internal/state.pb-c.h"
#include "mhsm/v1/keys.pb-c.h"
#include "mhsm/v1/types.pb-c.h"

#define MH_KEY_NAME_MAX  127
#define MH_MAX_TAGS      15
#define MH_TAG_MAX_CHARS 256
#define MH_VERSION_LEN   32

/* Key operation bits, JOSE names "encrypt" "decrypt" "sign" "verify" "wrapKey" "unwrapKey"
 * "import" "export". */
enum mh_keyop {
    MH_OP_ENCRYPT = 1 << 0,
    MH_OP_DECRYPT = 1 << 1,
    MH_OP_SIGN = 1 << 2,
    MH_OP_VERIFY = 1 << 3,
    MH_OP_WRAP = 1 << 4,
    MH_OP_UNWRAP = 1 << 5,
    MH_OP_IMPORT = 1 << 6,
    MH_OP_EXPORT = 1 << 7,
};

/* ^[0-9a-zA-Z-]{1,127}$ */
bool mh_keyrec_name_ok(const char *name);
/* 32 lower-case hex characters */
bool mh_keyrec_version_ok(const char *version);

/* mh_keyrec_check_tags: at most 15 tags, names 1..256 and values 0..256 characters of
 * valid UTF-8 without control characters. Writes a reason into |why|. MH_EINVAL /
 * MH_ELIMIT (too many). */
MH_MUST_USE int mh_keyrec_check_tags(size_t n, char *const *keys, char *const *values,
                                     const char **why);

/* mh_keyrec_parse_ops turns JOSE names into bits; unknown or duplicate names: MH_EINVAL.
 * Operations the key type cannot do (sign on AES, encrypt on EC, ...): MH_EALGKEY;
 * "export" is refused (keys are non-exportable): MH_EUNSUPPORTED; "import" is only
 * for BYOK key-exchange keys, not supported yet: MH_EUNSUPPORTED. */
MH_MUST_USE int mh_keyrec_parse_ops(enum mh_kty kty, size_t n, char *const *ops, unsigned *bits,
                                    const char **why);
/* Every operation |kty| can do. */
unsigned mh_keyrec_default_ops(enum mh_kty kty);
/* JOSE name of one op bit. */
const char *mh_keyrec_op_name(unsigned bit);
/* Bits of a record's key_ops strings (unknown strings ignored: records are trusted). */
unsigned mh_keyrec_ops_of(const Mhsm__Internal__KeyVersionRecord *rec);

/* The AAD that binds sealed material to its key: "name\0version\0kty-digit". */
MH_MUST_USE int mh_keyrec_aad(const char *name, const char *version, enum mh_kty kty,
                              struct mh_buf *out);

/* A fresh random version id (32 lower-case hex) into |out| (33 bytes). */
MH_MUST_USE int mh_keyrec_new_version(char out[MH_VERSION_LEN + 1]);

/* "https://<hsm>/keys/<name>[/<version>]" */
MH_MUST_USE int mh_keyrec_kid(const char *hsm, const char *name, const char *version,
                              struct mh_buf *out);

/* "RSA-HSM", "EC-HSM", "oct-HSM" */
const char *mh_keyrec_kty_name(enum mh_kty kty);
/* Accepts "RSA-HSM"/"RSA", "EC-HSM"/"EC", "oct-HSM"/"oct"; MH_KTY_NONE otherwise. */
enum mh_kty mh_keyrec_kty_from_name(const char *name);

/* Azure's recoveryLevel for a retention: 90 -> "Recoverable+Purgeable", else
 * "CustomizedRecoverable+Purgeable". */
const char *mh_keyrec_recovery_level(unsigned retention_days);

/* Builders of response messages. All allocate with malloc into the given
 * message; free with mh_keyrec_bundle_clear / _item_clear. */
MH_MUST_USE int mh_keyrec_bundle(const char *hsm, unsigned retention_days,
                                 const Mhsm__Internal__KeyVersionRecord *rec,
                                 Mhsm__V1__KeyBundle *out);
void mh_keyrec_bundle_clear(Mhsm__V1__KeyBundle *b);
MH_MUST_USE int mh_keyrec_item(const char *hsm, unsigned retention_days,
                               const Mhsm__Internal__KeyVersionRecord *rec, bool with_version,
                               Mhsm__V1__KeyItem *out);
void mh_keyrec_item_clear(Mhsm__V1__KeyItem *it);

/* Key usability at |now| for an operation |op|: MH_EDISABLED, MH_ENOTYET, MH_EEXPIRED,
 * MH_EKEYOPS, or 0. */
MH_MUST_USE int mh_keyrec_usable(const Mhsm__Internal__KeyVersionRecord *rec, unsigned op,
                                 int64_t now);

#endif
