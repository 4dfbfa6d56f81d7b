/* json_out: renders mhsm.v1 responses as the CLI's JSON (Azure Key Vault shapes) and tables.
 *
 * Shapes (the CLI contract): KeyBundle {"key":{"kid","kty","key_ops","n","e","crv","x",
 * "y"}, "attributes":{"enabled","nbf","exp","created","updated","recoverableDays",
 * "recoveryLevel","exportable"}, "tags":{}} with only the members that are present;
 * DeletedKeyBundle adds "recoveryId", "deletedDate", "scheduledPurgeDate"; KeyItem
 * {"kid","attributes","tags"}, DeletedKeyItem adds the same three. Bytes are
 * base64url without padding, times Unix seconds.
 *
 * Strings from the server are checked for UTF-8 (jansson refuses anything else):
 * such a response gives MH_EPROTO, never a mangled document.
 *
 * Thread safety: pure functions; the returned json_t belongs to the caller. */
#ifndef MH_CLIENT_JSON_OUT_H
#define MH_CLIENT_JSON_OUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/err.h"
#include "mhsm/v1/audit.pb-c.h"
#include "mhsm/v1/cluster.pb-c.h"
#include "mhsm/v1/keys.pb-c.h"
#include "mhsm/v1/rbac.pb-c.h"

/* Each of these builds a new object into *out. Errors: MH_EPROTO (invalid UTF-8 or a
 * missing required sub-message), MH_ENOMEM. */
MH_MUST_USE int mh_json_out_key_bundle(const Mhsm__V1__KeyBundle *kb, json_t **out);
MH_MUST_USE int mh_json_out_deleted_key_bundle(const Mhsm__V1__DeletedKeyBundle *d, json_t **out);
MH_MUST_USE int mh_json_out_key_item(const Mhsm__V1__KeyItem *it, json_t **out);
MH_MUST_USE int mh_json_out_deleted_key_item(const Mhsm__V1__DeletedKeyItem *it, json_t **out);

/* mh_json_out_cluster_status builds the `mhsm cluster status` document: {"nodeId",
 * "state","leaderId","leaderAddress","term","commitIndex","appliedIndex","lastIndex",
 * "serving","servingReason","leaderContactMs","members":[{"id","address","role",
 * "leader","lastContactMs"}]}. Errors: MH_EPROTO (invalid UTF-8, a counter beyond
 * 2^63), MH_ENOMEM. */
MH_MUST_USE int mh_json_out_cluster_status(const Mhsm__V1__ClusterStatusResponse *r, json_t **out);

/* mh_json_out_print_cluster_table writes that document as a summary line and one
 * aligned row per member (ID ADDRESS ROLE LEADER LAST-CONTACT), with control
 * characters from the server replaced by '?'. Errors: MH_EPROTO (not such a
 * document), -EIO. */
MH_MUST_USE int mh_json_out_print_cluster_table(const json_t *status, FILE *f);

/* ---- RBAC and audit (camelCase, the az CLI's shapes) ------------------------------
 * RoleDefinition {"id","name","type","roleName","description","roleType",
 * "permissions":[{"actions","notActions","dataActions","notDataActions"}],
 * "assignableScopes"}; RoleAssignment {"id","name","type","scope","roleDefinitionId",
 * "principalId","roleName"}; WhoAmI {"principalId","nodeId","dataActions","keyScopes"};
 * audit key {"publicKey" (lower-case hex),"nodeId","directory"}. Every member is always
 * present (arrays possibly empty). Errors: MH_EPROTO (invalid UTF-8, a NULL item, a
 * counter beyond 2^63; for the audit key a public key that is not 32 bytes or whose
 * hex form disagrees with the bytes), MH_ENOMEM. */
MH_MUST_USE int mh_json_out_role_definition(const Mhsm__V1__RoleDefinition *d, json_t **out);
MH_MUST_USE int mh_json_out_role_assignment(const Mhsm__V1__RoleAssignment *a, json_t **out);
MH_MUST_USE int mh_json_out_whoami(const Mhsm__V1__WhoAmIResponse *w, json_t **out);
MH_MUST_USE int mh_json_out_audit_key(const Mhsm__V1__GetAuditKeyResponse *k, json_t **out);

/* A table column: |header| over the string member |member| of each row. */
struct mh_json_out_column {
    const char *header;
    const char *member;
};

/* mh_json_out_print_columns writes the array of objects |rows| as a header line and one
 * aligned row per element, the columns given (a missing or non-string member prints
 * empty), control characters from the server replaced by '?'. Errors: MH_EPROTO (not
 * an array), -EIO. */
MH_MUST_USE int mh_json_out_print_columns(const json_t *rows, const struct mh_json_out_column *cols,
                                          size_t n_cols, FILE *f);

/* mh_json_out_print_whoami_table writes a WhoAmI document as the principal id alone on
 * the first line, then one data action per line (cleaned as above). Errors: MH_EPROTO
 * (not such a document), -EIO. */
MH_MUST_USE int mh_json_out_print_whoami_table(const json_t *who, FILE *f);

/* Sets obj[name] to the string |s| (MH_EPROTO if not UTF-8) / to the base64url of
 * |len| bytes at |p|. */
MH_MUST_USE int mh_json_out_set_str(json_t *obj, const char *name, const char *s);
MH_MUST_USE int mh_json_out_set_b64url(json_t *obj, const char *name, const uint8_t *p, size_t len);

/* mh_json_out_print writes |j| to |f|: JSON (2-space indent, sorted keys, newline) or,
 * with |table|, aligned "name  value" lines for an object (nested members flattened
 * as "a.b") or one aligned row per element for an array of objects. Errors: MH_ENOMEM,
 * -EIO when writing fails. */
MH_MUST_USE int mh_json_out_print(const json_t *j, bool table, FILE *f);

#endif
