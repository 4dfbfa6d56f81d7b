/* authz: the one authorization decision every handler goes through (local RBAC).
 *
 * Each handler calls mh_authz_check (after mh_node_gate, before it reads or
 * changes anything) with the Azure data action of the call and the key it is
 * about (NULL: an HSM-wide call, scope "/"). The decision:
 *   - node certificates (spiffe://mhsm/node/...) are refused on the data plane;
 *   - before activation, the only thing allowed is the security domain's download
 *     and status, and only to the initial administrators ([rbac] administrators);
 *   - after activation, the caller's role assignments (replicated state: scope "/",
 *     "/keys", or "/keys/<key>") are evaluated with consensus/rbac; deny by default.
 * A refusal finishes the call with PERMISSION_DENIED and a message naming the
 * missing data action and the scope, never whether the key exists. Every decision
 * is noted on the call (mh_rpc_call_note_authz) for the audit record.
 *
 * Decisions are served from a per-principal cache of compiled action masks,
 * rebuilt from the store when mh_authz_invalidate was called since (the FSM hook
 * calls it after every role command, activation and snapshot restore). Loop thread. */
#ifndef MH_NODE_AUTHZ_H
#define MH_NODE_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "consensus/rbac.h"
#include "node/node.h"

/* An action that any authenticated client principal (not a node certificate) may
 * perform: WhoAmI, the audit key. Still noted and audited. */
#define MH_ACT_ANY_CLIENT ((enum mh_action) - 1)

/* mh_authz_check decides whether the caller of |call| may perform |action| on
 * |key_name| (NULL: the whole HSM). On refusal it finishes the call with
 * PERMISSION_DENIED and returns false. A store error finishes the call with
 * UNAVAILABLE/INTERNAL (fail closed) and returns false. */
bool mh_authz_check(struct mh_node *n, struct mh_rpc_call *call, enum mh_action action,
                    const char *key_name);

/* mh_authz_mask computes what |principal| may do at the HSM scope (|*hsm|) and on
 * |key_name| (|*key|, including the HSM-scope actions; NULL name: |*key| = |*hsm|).
 * Used by WhoAmI. Errors: MH_ESTORE, MH_ECORRUPT, MH_ENOMEM. */
MH_MUST_USE int mh_authz_mask(struct mh_node *n, const char *principal, const char *key_name,
                              uint64_t *hsm, uint64_t *key);

/* mh_authz_key_scopes lists (malloc'd array of malloc'd names, free with
 * mh_authz_key_scopes_free) the keys |principal| holds a key-scoped assignment on. */
MH_MUST_USE int mh_authz_key_scopes(struct mh_node *n, const char *principal, char ***names,
                                    size_t *count);
void mh_authz_key_scopes_free(char **names, size_t count);

/* Drops every cached decision (role state changed). Cheap: bumps an epoch. */
void mh_authz_invalidate(struct mh_node *n);

/* Frees the cache (shutdown). */
void mh_authz_free(struct mh_node *n);

#endif
