/* authz: the one authorization decision every handler goes through.
 *
 * Until local RBAC lands (issue 5), every principal that completed the mutual-TLS
 * handshake with a certificate from the configured CA may do everything; the
 * decision is still made here, per call, with the Key Vault data action and scope,
 * so RBAC and the audit log slot in without touching the services. Loop thread. */
#ifndef MH_NODE_AUTHZ_H
#define MH_NODE_AUTHZ_H

#include "node/node.h"

/* Data actions, as Azure names them (Microsoft.KeyVault/managedHsm/...). */
#define MH_ACT_KEY_CREATE   "Microsoft.KeyVault/managedHsm/keys/create"
#define MH_ACT_KEY_IMPORT   "Microsoft.KeyVault/managedHsm/keys/import/action"
#define MH_ACT_KEY_READ     "Microsoft.KeyVault/managedHsm/keys/read/action"
#define MH_ACT_KEY_WRITE    "Microsoft.KeyVault/managedHsm/keys/write/action"
#define MH_ACT_KEY_DELETE   "Microsoft.KeyVault/managedHsm/keys/delete"
#define MH_ACT_DELETED_READ "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action"
#define MH_ACT_RECOVER      "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action"
#define MH_ACT_PURGE        "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete"
#define MH_ACT_BACKUP       "Microsoft.KeyVault/managedHsm/keys/backup/action"
#define MH_ACT_RESTORE      "Microsoft.KeyVault/managedHsm/keys/restore/action"
#define MH_ACT_ROTATE       "Microsoft.KeyVault/managedHsm/keys/rotate/action"
#define MH_ACT_ENCRYPT      "Microsoft.KeyVault/managedHsm/keys/encrypt/action"
#define MH_ACT_DECRYPT      "Microsoft.KeyVault/managedHsm/keys/decrypt/action"
#define MH_ACT_WRAP         "Microsoft.KeyVault/managedHsm/keys/wrap/action"
#define MH_ACT_UNWRAP       "Microsoft.KeyVault/managedHsm/keys/unwrap/action"
#define MH_ACT_SIGN         "Microsoft.KeyVault/managedHsm/keys/sign/action"
#define MH_ACT_VERIFY       "Microsoft.KeyVault/managedHsm/keys/verify/action"
#define MH_ACT_RNG          "Microsoft.KeyVault/managedHsm/rng/action"
#define MH_ACT_SD_DOWNLOAD  "Microsoft.KeyVault/managedHsm/securitydomain/download/action"
#define MH_ACT_SD_READ      "Microsoft.KeyVault/managedHsm/securitydomain/download/read"

/* mh_authz_check decides whether the caller of |call| may perform |action| on
 * |key_name| (NULL: the whole HSM, scope "/"). On refusal it finishes the call
 * with PERMISSION_DENIED and returns false. */
bool mh_authz_check(struct mh_node *n, struct mh_rpc_call *call, const char *action,
                    const char *key_name);

#endif
