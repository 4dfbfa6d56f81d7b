/* store: the replicated key state in LMDB (schema, reads for services, writes for the FSM).
 *
 * One LMDB environment per node in <data_dir>/state/, opened once per process.
 * Named databases:
 *   meta      "applied_index" -> u64 big-endian; "domain" -> DomainRecord
 *   keys      name -> KeyRecord
 *   versions  name "\0" version -> KeyVersionRecord
 *   requests  request_id -> RequestRecord
 *   rbac      "d" 0 id                    -> RoleDefinitionRecord (custom roles)
 *             "a" 0 name                  -> RoleAssignmentRecord
 *             "p" 0 principal 0 name      -> "" (assignments by principal)
 *             "s" 0 scope 0 name          -> "" (assignments by scope)
 *             "r" 0 role id 0 name        -> "" (assignments by role)
 * Values are packed protobufs from proto/internal/state.proto. Key material is only
 * ever stored sealed (KeyVersionRecord.sealed_material); the store never sees
 * plaintext. Boot policy: the state is rebuilt from raft's snapshot + log at every
 * start (tech-notes §5 option (a)), so the environment runs with MDB_NOSYNC and
 * mh_store_open wipes it first; raft's log is the durability source.
 *
 * Read functions open their own short read transaction (MDB_NOTLS), copy what they
 * return out of the map (callers free with the matching free function), and are
 * safe on any thread, concurrently with the single writer. Names and versions passed
 * in must already be validated by the caller (node/ validates every client string).
 * Write functions are for consensus/fsm only and run on the loop thread.
 *
 * Every read function fails with MH_ESTORE on an LMDB error (logged) and
 * MH_ECORRUPT when a stored value does not unpack; MH_ENOMEM when out of memory. */
#ifndef MH_CONSENSUS_STORE_H
#define MH_CONSENSUS_STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "internal/state.pb-c.h"

struct mh_store;

/* Bounds the FSM enforces on what it stores (LMDB keys are at most 511 bytes). Reads
 * of longer names/versions/request ids simply find nothing. */
#define MH_STORE_NAME_MAX       127 /* key names: [0-9a-zA-Z-]{1,127} */
#define MH_STORE_VERSION_MAX    32  /* version ids: [0-9a-zA-Z-]{1,32} */
#define MH_STORE_REQUEST_ID_MAX 128 /* request ids: 1..128 bytes, any value */
#define MH_STORE_DEFAULT_MAP    ((size_t)1 << 30)

/* mh_store_open creates <dir> (and missing parents) if needed, takes an exclusive
 * flock on <dir> (held until mh_store_close, so a second process cannot wipe a live
 * store: MH_ELOCKED), removes any previous environment files in it, and opens a
 * fresh environment with |map_size| bytes of address space (0: MH_STORE_DEFAULT_MAP;
 * a full map makes the next apply fail with MH_ESTORE, so size it generously: it is
 * only address space). Errors: MH_ELOCKED, -errno, MH_ESTORE (LMDB error, logged). */
MH_MUST_USE int mh_store_open(const char *dir, size_t map_size, struct mh_store **out);
void mh_store_close(struct mh_store *st);

/* The LMDB environment and database handles, for consensus/fsm and snapshots. */
MDB_env *mh_store_env(struct mh_store *st);

enum mh_store_db {
    MH_STORE_META = 0,
    MH_STORE_KEYS,
    MH_STORE_VERSIONS,
    MH_STORE_REQUESTS,
    MH_STORE_RBAC
};
#define MH_STORE_NDB         5
#define MH_STORE_META_DOMAIN "domain" /* meta key of the DomainRecord */
MDB_dbi mh_store_dbi(const struct mh_store *st, enum mh_store_db db);

/* ---- transaction-level helpers (consensus/fsm only, loop thread) ---------- */

/* Builds the versions-database key name "\0" version into |out| (room for
 * MH_STORE_VERSION_KEY_MAX bytes). MH_EINVAL when either part is too long. */
#define MH_STORE_VERSION_KEY_MAX (MH_STORE_NAME_MAX + 1 + MH_STORE_VERSION_MAX)
MH_MUST_USE int mh_store_version_key(const char *name, const char *version, uint8_t *out,
                                     size_t *len);

/* Reads |key| from |db| inside |txn| and unpacks it as |desc| (system allocator;
 * free with mh_store_free). MH_ENOTFOUND when absent, MH_ECORRUPT when the value
 * does not unpack, MH_ESTORE on LMDB errors. */
MH_MUST_USE int mh_store_txn_get(struct mh_store *st, MDB_txn *txn, enum mh_store_db db,
                                 const void *key, size_t klen,
                                 const ProtobufCMessageDescriptor *desc, void **out);

/* mh_store_rbac_key builds an rbac-database key, |tag| 0 |a| [0 |b|] (|b| NULL: no
 * second part; "" gives the index prefix "tag 0 a 0"), into |out|. MH_EINVAL when it
 * would exceed LMDB's 511-byte key limit. */
#define MH_STORE_RBAC_KEY_MAX 512
MH_MUST_USE int mh_store_rbac_key(char tag, const char *a, const char *b,
                                  uint8_t out[MH_STORE_RBAC_KEY_MAX], size_t *len);

/* Packs |msg| and stores it under |key| in |db| inside |txn|. MH_ENOMEM, MH_ESTORE. */
MH_MUST_USE int mh_store_txn_put(struct mh_store *st, MDB_txn *txn, enum mh_store_db db,
                                 const void *key, size_t klen, const ProtobufCMessage *msg);

/* The applied index as stored inside |txn| (0 when absent), and its update. */
MH_MUST_USE int mh_store_txn_applied_index(struct mh_store *st, MDB_txn *txn, uint64_t *out);
MH_MUST_USE int mh_store_txn_set_applied_index(struct mh_store *st, MDB_txn *txn, uint64_t index);

/* ---- reads (any thread) ----------------------------------------------- */

/* The raft index of the last applied command (0 when nothing was applied). */
MH_MUST_USE int mh_store_applied_index(struct mh_store *st, uint64_t *out);

/* The domain record. MH_ENOTFOUND before activation. */
MH_MUST_USE int mh_store_get_domain(struct mh_store *st, Mhsm__Internal__DomainRecord **out);

/* The per-name record, deleted or not. MH_ENOTFOUND when the name is unknown. */
MH_MUST_USE int mh_store_get_key(struct mh_store *st, const char *name,
                                 Mhsm__Internal__KeyRecord **out);

/* One version (|version| NULL or "" = the latest) and, if |key_out| is not NULL, the
 * per-name record, read in one transaction. A deleted key is MH_ENOTFOUND unless
 * |deleted_ok|. Unknown name or version: MH_ENOTFOUND. */
MH_MUST_USE int mh_store_get_version(struct mh_store *st, const char *name, const char *version,
                                     bool deleted_ok, Mhsm__Internal__KeyRecord **key_out,
                                     Mhsm__Internal__KeyVersionRecord **out);

struct mh_store_key_entry {
    Mhsm__Internal__KeyRecord *key;
    Mhsm__Internal__KeyVersionRecord *latest;
};

/* mh_store_list_keys returns up to |max| keys in name order whose name sorts after
 * |after| (NULL or "": from the start) and whose deleted flag equals |deleted|, with
 * their latest version. |*more| is true when further matching keys exist. |out| has
 * room for |max| entries; free with mh_store_key_entries_free. */
MH_MUST_USE int mh_store_list_keys(struct mh_store *st, bool deleted, const char *after, size_t max,
                                   struct mh_store_key_entry *out, size_t *n, bool *more);
void mh_store_key_entries_free(struct mh_store_key_entry *entries, size_t n);

/* mh_store_list_versions returns up to |max| versions of |name| (deleted keys too when
 * |deleted_ok|) in version-id order after |after| (NULL or "": from the first). Unknown
 * name: MH_ENOTFOUND. Free with mh_store_versions_free. */
MH_MUST_USE int mh_store_list_versions(struct mh_store *st, const char *name, bool deleted_ok,
                                       const char *after, size_t max,
                                       Mhsm__Internal__KeyVersionRecord **out, size_t *n,
                                       bool *more);
void mh_store_versions_free(Mhsm__Internal__KeyVersionRecord **versions, size_t n);

/* The outcome recorded for |request_id|. MH_ENOTFOUND when never applied. */
MH_MUST_USE int mh_store_get_request(struct mh_store *st, const char *request_id,
                                     Mhsm__Internal__RequestRecord **out);

/* ---- RBAC reads (any thread) --------------------------------------------- */

/* A custom role definition by lower-case GUID. MH_ENOTFOUND when absent (built-in
 * roles are never stored: see consensus/rbac). */
MH_MUST_USE int mh_store_get_role_definition(struct mh_store *st, const char *id,
                                             Mhsm__Internal__RoleDefinitionRecord **out);

/* Every custom role definition, in id order. |*out| is a malloc'd array of |*n|
 * records (NULL when none); free with mh_store_records_free. */
MH_MUST_USE int mh_store_list_role_definitions(struct mh_store *st,
                                               Mhsm__Internal__RoleDefinitionRecord ***out,
                                               size_t *n);

/* A role assignment by lower-case GUID name. MH_ENOTFOUND when absent. */
MH_MUST_USE int mh_store_get_role_assignment(struct mh_store *st, const char *name,
                                             Mhsm__Internal__RoleAssignmentRecord **out);

struct mh_store_ra_filter {
    const char *principal; /* NULL: any; else exactly this principal id */
    const char *scope;     /* NULL: any; else exactly this scope string */
};

/* mh_store_list_role_assignments returns up to |max| assignments matching |f| (NULL:
 * all) in name order after |after| (NULL or "": from the first), through the
 * principal or scope index when the filter names one. |*out| is a malloc'd array
 * of |*n| records (NULL when none; free with mh_store_records_free); |*more| is true
 * when further matches exist. */
MH_MUST_USE int mh_store_list_role_assignments(struct mh_store *st,
                                               const struct mh_store_ra_filter *f,
                                               const char *after, size_t max,
                                               Mhsm__Internal__RoleAssignmentRecord ***out,
                                               size_t *n, bool *more);

/* Frees an array of |n| records returned by a list function above. */
void mh_store_records_free(void *records, size_t n);

/* Free any record returned above (NULL is fine). */
void mh_store_free(void *protobuf_message);

#endif
