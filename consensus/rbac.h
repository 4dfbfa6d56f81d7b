/* rbac: local RBAC's vocabulary and rules: data actions, built-in roles, scopes, masks.
 *
 * Pure functions and constant tables, no I/O: the FSM uses them to check role
 * commands deterministically, node/authz to decide calls. Semantics follow Azure
 * Managed HSM (reference/azure-managed-hsm.md §3):
 *   - a role's permission is a set of data actions: the union of what its
 *     dataActions match, minus what its notDataActions match (an exclusion, not a
 *     deny: another role may still grant the action);
 *   - a principal may perform action A on key K when some assignment to it at
 *     scope "/", "/keys" or "/keys/K" names a role whose set contains A (for
 *     HSM-wide calls, K is none and only "/" and "/keys" count);
 *   - nothing else allows anything (deny by default).
 * Action names compare without regard to case; a pattern ending in "*" matches
 * every action with that prefix. A set is a uint64_t bit mask over enum mh_action.
 *
 * Thread-safe (constant data only). */
#ifndef MH_CONSENSUS_RBAC_H
#define MH_CONSENSUS_RBAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define MH_RBAC_PREFIX "Microsoft.KeyVault/managedHsm/"

/* Every data action Managed HSM knows (the 34 of the REST spec's DataAction enum,
 * plus keys/rotate/action and keys/derive/action that the service uses). The
 * order is the bit order of masks; never reorder (masks are not persisted, but
 * tests and logs name bits). */
enum mh_action {
    MH_ACT_KEY_READ = 0,   /* keys/read/action */
    MH_ACT_KEY_WRITE,      /* keys/write/action */
    MH_ACT_DELETED_READ,   /* keys/deletedKeys/read/action */
    MH_ACT_RECOVER,        /* keys/deletedKeys/recover/action */
    MH_ACT_BACKUP,         /* keys/backup/action */
    MH_ACT_RESTORE,        /* keys/restore/action */
    MH_ACT_RA_DELETE,      /* roleAssignments/delete/action */
    MH_ACT_RA_READ,        /* roleAssignments/read/action */
    MH_ACT_RA_WRITE,       /* roleAssignments/write/action */
    MH_ACT_RD_READ,        /* roleDefinitions/read/action */
    MH_ACT_RD_WRITE,       /* roleDefinitions/write/action */
    MH_ACT_RD_DELETE,      /* roleDefinitions/delete/action */
    MH_ACT_ENCRYPT,        /* keys/encrypt/action */
    MH_ACT_DECRYPT,        /* keys/decrypt/action */
    MH_ACT_WRAP,           /* keys/wrap/action */
    MH_ACT_UNWRAP,         /* keys/unwrap/action */
    MH_ACT_SIGN,           /* keys/sign/action */
    MH_ACT_VERIFY,         /* keys/verify/action */
    MH_ACT_KEY_CREATE,     /* keys/create */
    MH_ACT_KEY_DELETE,     /* keys/delete */
    MH_ACT_EXPORT,         /* keys/export/action */
    MH_ACT_RELEASE,        /* keys/release/action */
    MH_ACT_KEY_IMPORT,     /* keys/import/action */
    MH_ACT_PURGE,          /* keys/deletedKeys/delete */
    MH_ACT_SD_DOWNLOAD,    /* securitydomain/download/action */
    MH_ACT_SD_READ,        /* securitydomain/download/read */
    MH_ACT_SD_UPLOAD,      /* securitydomain/upload/action */
    MH_ACT_SD_UPLOAD_READ, /* securitydomain/upload/read */
    MH_ACT_SD_TRANSFERKEY, /* securitydomain/transferkey/read */
    MH_ACT_BACKUP_START,   /* backup/start/action */
    MH_ACT_RESTORE_START,  /* restore/start/action */
    MH_ACT_BACKUP_STATUS,  /* backup/status/action */
    MH_ACT_RESTORE_STATUS, /* restore/status/action */
    MH_ACT_RNG,            /* rng/action */
    MH_ACT_ROTATE,         /* keys/rotate/action */
    MH_ACT_DERIVE,         /* keys/derive/action */
    MH_ACT_COUNT
};
_Static_assert(MH_ACT_COUNT <= 64, "an action set is a 64-bit mask");

#define MH_RBAC_BIT(a)   ((uint64_t)1 << (unsigned)(a))
#define MH_RBAC_ALL_MASK ((MH_RBAC_BIT(MH_ACT_COUNT - 1) << 1) - 1)

/* The full name of |a| ("Microsoft.KeyVault/managedHsm/keys/sign/action"); NULL when
 * |a| is out of range. */
const char *mh_rbac_action_name(enum mh_action a);

/* mh_rbac_pattern_mask sets |*mask| to the actions |pattern| matches: a full action
 * name (any case), or a prefix followed by "*" (e.g. ".../managedHsm/keys/" followed by "*").
 * MH_EINVAL when it matches no known action, is empty, longer than 256 bytes, or
 * has a "*" anywhere but at the end. */
MH_MUST_USE int mh_rbac_pattern_mask(const char *pattern, uint64_t *mask);

/* mh_rbac_role_mask computes a role's set: union of |data_actions| minus union of
 * |not_data_actions|. MH_EINVAL (and |*bad| = the offending pattern) when a pattern
 * is invalid; |bad| may be NULL. */
MH_MUST_USE int mh_rbac_role_mask(char *const *data_actions, size_t n_data,
                                  char *const *not_data_actions, size_t n_not, uint64_t *mask,
                                  const char **bad);

/* ---- built-in roles ---------------------------------------------------- */

struct mh_rbac_builtin {
    const char *id;   /* lower-case GUID */
    const char *name; /* "Managed HSM Crypto User" */
    const char *description;
    const char *const *data_actions; /* full names, NULL-terminated */
    uint64_t mask;                   /* the same as a set */
};

#define MH_RBAC_ROLE_ADMIN          "a290e904-7015-4bba-90c8-60543313cdb4"
#define MH_RBAC_ROLE_CRYPTO_OFFICER "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
#define MH_RBAC_ROLE_CRYPTO_USER    "21dbd100-6940-42c2-9190-5d6cb909625b"
#define MH_RBAC_ROLE_POLICY_ADMIN   "4bd23610-cdcf-4971-bdee-bdc562cc28e4"
#define MH_RBAC_ROLE_AUDITOR        "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"
#define MH_RBAC_ROLE_SERVICE_ENC    "33413926-3206-4cdd-b39a-83574fe37a17"
#define MH_RBAC_ROLE_SERVICE_REL    "21dbd100-6940-42c2-9190-5d6cb909625c"
#define MH_RBAC_ROLE_BACKUP         "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
#define MH_RBAC_ROLE_RESTORE        "6efe6056-5259-49d2-8b3d-d3d73544b20b"

/* The built-in roles, in the order above; |*n| receives the count (9). */
const struct mh_rbac_builtin *mh_rbac_builtins(size_t *n);

/* The built-in role with GUID |id| (any case), or NULL. */
const struct mh_rbac_builtin *mh_rbac_builtin_by_id(const char *id);

/* The built-in role named |name| (any case), or NULL. */
const struct mh_rbac_builtin *mh_rbac_builtin_by_name(const char *name);

/* ---- identifiers and scopes --------------------------------------------- */

#define MH_RBAC_GUID_LEN      36
#define MH_RBAC_ROLE_NAME_MAX 512
#define MH_RBAC_DESC_MAX      1024
#define MH_RBAC_PRINCIPAL_MAX 256
#define MH_RBAC_SCOPE_MAX     (6 + 127) /* "/keys/" + a key name */
#define MH_RBAC_MAX_ACTIONS   64        /* patterns per dataActions / notDataActions list */
#define MH_RBAC_DEF_ID_PREFIX                                                                      \
    "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"

/* True when |s| is a GUID: 8-4-4-4-12 hex digits (either case). */
bool mh_rbac_is_guid(const char *s);

/* Writes |s| lower-cased into |out| (37 bytes). MH_EINVAL when |s| is not a GUID. */
MH_MUST_USE int mh_rbac_guid_normalize(const char *s, char out[MH_RBAC_GUID_LEN + 1]);

/* mh_rbac_parse_definition_id accepts a bare GUID or MH_RBAC_DEF_ID_PREFIX + GUID
 * and writes the lower-case GUID. MH_EINVAL otherwise. */
MH_MUST_USE int mh_rbac_parse_definition_id(const char *s, char out[MH_RBAC_GUID_LEN + 1]);

/* A valid principal id: 1..MH_RBAC_PRINCIPAL_MAX bytes of printable ASCII (0x21..0x7e). */
bool mh_rbac_valid_principal(const char *s);

/* mh_rbac_parse_scope checks |scope| ("" is taken as "/") and, for "/keys/<name>",
 * points |*key| at the name inside |scope| (NULL for "/" and "/keys"). Key names
 * follow the key rules ([0-9a-zA-Z-]{1,127}). MH_EINVAL for anything else. */
MH_MUST_USE int mh_rbac_parse_scope(const char *scope, const char **key);

/* True when |scope| is "/" or "/keys" (the whole HSM). */
bool mh_rbac_scope_is_hsm(const char *scope);

#endif
