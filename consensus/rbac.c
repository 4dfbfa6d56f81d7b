#include "consensus/rbac.h"

#include <string.h>
#include <strings.h>

/* Names after MH_RBAC_PREFIX, in enum mh_action order. */
static const char *const action_names[MH_ACT_COUNT] = {
    [MH_ACT_KEY_READ] = MH_RBAC_PREFIX "keys/read/action",
    [MH_ACT_KEY_WRITE] = MH_RBAC_PREFIX "keys/write/action",
    [MH_ACT_DELETED_READ] = MH_RBAC_PREFIX "keys/deletedKeys/read/action",
    [MH_ACT_RECOVER] = MH_RBAC_PREFIX "keys/deletedKeys/recover/action",
    [MH_ACT_BACKUP] = MH_RBAC_PREFIX "keys/backup/action",
    [MH_ACT_RESTORE] = MH_RBAC_PREFIX "keys/restore/action",
    [MH_ACT_RA_DELETE] = MH_RBAC_PREFIX "roleAssignments/delete/action",
    [MH_ACT_RA_READ] = MH_RBAC_PREFIX "roleAssignments/read/action",
    [MH_ACT_RA_WRITE] = MH_RBAC_PREFIX "roleAssignments/write/action",
    [MH_ACT_RD_READ] = MH_RBAC_PREFIX "roleDefinitions/read/action",
    [MH_ACT_RD_WRITE] = MH_RBAC_PREFIX "roleDefinitions/write/action",
    [MH_ACT_RD_DELETE] = MH_RBAC_PREFIX "roleDefinitions/delete/action",
    [MH_ACT_ENCRYPT] = MH_RBAC_PREFIX "keys/encrypt/action",
    [MH_ACT_DECRYPT] = MH_RBAC_PREFIX "keys/decrypt/action",
    [MH_ACT_WRAP] = MH_RBAC_PREFIX "keys/wrap/action",
    [MH_ACT_UNWRAP] = MH_RBAC_PREFIX "keys/unwrap/action",
    [MH_ACT_SIGN] = MH_RBAC_PREFIX "keys/sign/action",
    [MH_ACT_VERIFY] = MH_RBAC_PREFIX "keys/verify/action",
    [MH_ACT_KEY_CREATE] = MH_RBAC_PREFIX "keys/create",
    [MH_ACT_KEY_DELETE] = MH_RBAC_PREFIX "keys/delete",
    [MH_ACT_EXPORT] = MH_RBAC_PREFIX "keys/export/action",
    [MH_ACT_RELEASE] = MH_RBAC_PREFIX "keys/release/action",
    [MH_ACT_KEY_IMPORT] = MH_RBAC_PREFIX "keys/import/action",
    [MH_ACT_PURGE] = MH_RBAC_PREFIX "keys/deletedKeys/delete",
    [MH_ACT_SD_DOWNLOAD] = MH_RBAC_PREFIX "securitydomain/download/action",
    [MH_ACT_SD_READ] = MH_RBAC_PREFIX "securitydomain/download/read",
    [MH_ACT_SD_UPLOAD] = MH_RBAC_PREFIX "securitydomain/upload/action",
    [MH_ACT_SD_UPLOAD_READ] = MH_RBAC_PREFIX "securitydomain/upload/read",
    [MH_ACT_SD_TRANSFERKEY] = MH_RBAC_PREFIX "securitydomain/transferkey/read",
    [MH_ACT_BACKUP_START] = MH_RBAC_PREFIX "backup/start/action",
    [MH_ACT_RESTORE_START] = MH_RBAC_PREFIX "restore/start/action",
    [MH_ACT_BACKUP_STATUS] = MH_RBAC_PREFIX "backup/status/action",
    [MH_ACT_RESTORE_STATUS] = MH_RBAC_PREFIX "restore/status/action",
    [MH_ACT_RNG] = MH_RBAC_PREFIX "rng/action",
    [MH_ACT_ROTATE] = MH_RBAC_PREFIX "keys/rotate/action",
    [MH_ACT_DERIVE] = MH_RBAC_PREFIX "keys/derive/action",
};

const char *mh_rbac_action_name(enum mh_action a)
{
    if ((int)a < 0 || a >= MH_ACT_COUNT)
        return NULL;
    return action_names[a];
}

int mh_rbac_pattern_mask(const char *pattern, uint64_t *mask)
{
    *mask = 0;
    size_t len = strnlen(pattern, 257);
    if (len == 0 || len > 256)
        return MH_EINVAL;
    const char *star = strchr(pattern, '*');
    if (star != NULL && star != pattern + len - 1)
        return MH_EINVAL;
    size_t cmp = star != NULL ? len - 1 : len;
    for (int a = 0; a < MH_ACT_COUNT; a++) {
        const char *name = action_names[a];
        bool match = star != NULL ? strncasecmp(name, pattern, cmp) == 0
                                  : strlen(name) == cmp && strcasecmp(name, pattern) == 0;
        if (match)
            *mask |= MH_RBAC_BIT(a);
    }
    return *mask != 0 ? 0 : MH_EINVAL;
}

static int union_of(char *const *patterns, size_t n, uint64_t *mask, const char **bad)
{
    *mask = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t m;
        if (mh_rbac_pattern_mask(patterns[i], &m) < 0) {
            if (bad != NULL)
                *bad = patterns[i];
            return MH_EINVAL;
        }
        *mask |= m;
    }
    return 0;
}

int mh_rbac_role_mask(char *const *data_actions, size_t n_data, char *const *not_data_actions,
                      size_t n_not, uint64_t *mask, const char **bad)
{
    uint64_t allow, deny;
    *mask = 0;
    MH_TRY(union_of(data_actions, n_data, &allow, bad));
    MH_TRY(union_of(not_data_actions, n_not, &deny, bad));
    *mask = allow & ~deny;
    return 0;
}

/* ---- built-in roles (reference/azure-managed-hsm.md §3.1) ------------------ */

#define P MH_RBAC_PREFIX
static const char *const admin_actions[] = {P "roleAssignments/read/action",
                                            P "roleAssignments/write/action",
                                            P "roleAssignments/delete/action",
                                            P "roleDefinitions/read/action",
                                            P "roleDefinitions/write/action",
                                            P "roleDefinitions/delete/action",
                                            P "securitydomain/download/action",
                                            P "securitydomain/download/read",
                                            P "securitydomain/upload/action",
                                            P "securitydomain/upload/read",
                                            P "securitydomain/transferkey/read",
                                            P "backup/start/action",
                                            P "backup/status/action",
                                            P "restore/start/action",
                                            P "restore/status/action",
                                            NULL};
static const char *const officer_actions[] = {P "roleAssignments/read/action",
                                              P "roleAssignments/write/action",
                                              P "roleAssignments/delete/action",
                                              P "roleDefinitions/read/action",
                                              P "roleDefinitions/write/action",
                                              P "roleDefinitions/delete/action",
                                              P "keys/deletedKeys/read/action",
                                              P "keys/deletedKeys/delete",
                                              P "keys/deletedKeys/recover/action",
                                              P "keys/export/action",
                                              NULL};
static const char *const user_actions[] = {P "roleDefinitions/read/action",
                                           P "roleAssignments/read/action",
                                           P "keys/read/action",
                                           P "keys/write/action",
                                           P "keys/delete",
                                           P "keys/create",
                                           P "keys/rotate/action",
                                           P "keys/import/action",
                                           P "keys/release/action",
                                           P "keys/backup/action",
                                           P "keys/restore/action",
                                           P "keys/encrypt/action",
                                           P "keys/decrypt/action",
                                           P "keys/wrap/action",
                                           P "keys/unwrap/action",
                                           P "keys/sign/action",
                                           P "keys/verify/action",
                                           P "keys/derive/action",
                                           P "rng/action",
                                           NULL};
static const char *const policy_actions[] = {P "roleDefinitions/read/action",
                                             P "roleDefinitions/write/action",
                                             P "roleDefinitions/delete/action",
                                             P "roleAssignments/read/action",
                                             P "roleAssignments/write/action",
                                             P "roleAssignments/delete/action",
                                             NULL};
static const char *const auditor_actions[] = {P "roleAssignments/read/action",
                                              P "roleDefinitions/read/action", P "keys/read/action",
                                              P "keys/deletedKeys/read/action", NULL};
static const char *const service_enc_actions[] = {P "keys/read/action", P "keys/wrap/action",
                                                  P "keys/unwrap/action", NULL};
static const char *const service_rel_actions[] = {P "keys/release/action", NULL};
static const char *const backup_actions[] = {P "backup/start/action", P "backup/status/action",
                                             P "keys/backup/action", NULL};
static const char *const restore_actions[] = {P "keys/restore/action", P "restore/start/action",
                                              P "restore/status/action", NULL};
#undef P

static struct mh_rbac_builtin builtins[] = {
    {MH_RBAC_ROLE_ADMIN, "Managed HSM Administrator",
     "Grants permissions to manage the HSM's security domain, full backup and restore, and "
     "role-based access; no key operations.",
     admin_actions, 0},
    {MH_RBAC_ROLE_CRYPTO_OFFICER, "Managed HSM Crypto Officer",
     "Grants permissions to manage role-based access and to read, recover and purge deleted "
     "keys; no key usage.",
     officer_actions, 0},
    {MH_RBAC_ROLE_CRYPTO_USER, "Managed HSM Crypto User",
     "Grants permissions to create, manage and use keys; cannot purge keys or manage access.",
     user_actions, 0},
    {MH_RBAC_ROLE_POLICY_ADMIN, "Managed HSM Policy Administrator",
     "Grants permission to create and delete role assignments and role definitions.",
     policy_actions, 0},
    {MH_RBAC_ROLE_AUDITOR, "Managed HSM Crypto Auditor",
     "Grants read permissions to read (but not use) key attributes and role-based access.",
     auditor_actions, 0},
    {MH_RBAC_ROLE_SERVICE_ENC, "Managed HSM Crypto Service Encryption User",
     "Grants permissions to use a key for service encryption (read, wrap, unwrap).",
     service_enc_actions, 0},
    {MH_RBAC_ROLE_SERVICE_REL, "Managed HSM Crypto Service Release User",
     "Grants permissions to release a key to a trusted execution environment.", service_rel_actions,
     0},
    {MH_RBAC_ROLE_BACKUP, "Managed HSM Backup User",
     "Grants permissions to perform a full HSM or single key backup.", backup_actions, 0},
    {MH_RBAC_ROLE_RESTORE, "Managed HSM Restore",
     "Grants permissions to perform a full HSM or single key restore.", restore_actions, 0},
};
#define N_BUILTINS (sizeof builtins / sizeof builtins[0])

/* Masks are computed from the name lists once; the lists are the source of truth
 * (they are what the API shows). Idempotent, so a race only repeats the same stores. */
static void builtins_init(void)
{
    static int done;
    if (__atomic_load_n(&done, __ATOMIC_ACQUIRE))
        return;
    for (size_t i = 0; i < N_BUILTINS; i++) {
        uint64_t m = 0;
        for (const char *const *a = builtins[i].data_actions; *a != NULL; a++) {
            uint64_t one = 0;
            if (mh_rbac_pattern_mask(*a, &one) == 0)
                m |= one;
        }
        __atomic_store_n(&builtins[i].mask, m, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

const struct mh_rbac_builtin *mh_rbac_builtins(size_t *n)
{
    builtins_init();
    *n = N_BUILTINS;
    return builtins;
}

const struct mh_rbac_builtin *mh_rbac_builtin_by_id(const char *id)
{
    builtins_init();
    for (size_t i = 0; i < N_BUILTINS; i++)
        if (strcasecmp(builtins[i].id, id) == 0)
            return &builtins[i];
    return NULL;
}

const struct mh_rbac_builtin *mh_rbac_builtin_by_name(const char *name)
{
    builtins_init();
    for (size_t i = 0; i < N_BUILTINS; i++)
        if (strcasecmp(builtins[i].name, name) == 0)
            return &builtins[i];
    return NULL;
}

/* ---- identifiers and scopes ------------------------------------------------- */

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool mh_rbac_is_guid(const char *s)
{
    for (size_t i = 0; i < MH_RBAC_GUID_LEN; i++) {
        if (s[i] == '\0')
            return false;
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return s[MH_RBAC_GUID_LEN] == '\0';
}

int mh_rbac_guid_normalize(const char *s, char out[MH_RBAC_GUID_LEN + 1])
{
    if (!mh_rbac_is_guid(s))
        return MH_EINVAL;
    for (size_t i = 0; i <= MH_RBAC_GUID_LEN; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'F') ? (char)(s[i] - 'A' + 'a') : s[i];
    return 0;
}

int mh_rbac_parse_definition_id(const char *s, char out[MH_RBAC_GUID_LEN + 1])
{
    size_t plen = strlen(MH_RBAC_DEF_ID_PREFIX);
    if (strncasecmp(s, MH_RBAC_DEF_ID_PREFIX, plen) == 0)
        s += plen;
    return mh_rbac_guid_normalize(s, out);
}

bool mh_rbac_valid_principal(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (n >= MH_RBAC_PRINCIPAL_MAX || s[n] < 0x21 || s[n] > 0x7e)
            return false;
    return n > 0;
}

bool mh_rbac_scope_is_hsm(const char *scope)
{
    return strcmp(scope, "/") == 0 || strcmp(scope, "/keys") == 0;
}

int mh_rbac_parse_scope(const char *scope, const char **key)
{
    *key = NULL;
    if (scope[0] == '\0' || mh_rbac_scope_is_hsm(scope))
        return 0;
    if (strncmp(scope, "/keys/", 6) != 0)
        return MH_EINVAL;
    const char *name = scope + 6;
    size_t n = 0;
    for (; name[n] != '\0'; n++) {
        char c = name[n];
        if (n >= 127 || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') || c == '-'))
            return MH_EINVAL;
    }
    if (n == 0)
        return MH_EINVAL;
    *key = name;
    return 0;
}
