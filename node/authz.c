#include "node/authz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "consensus/peer.h"
#include "node/status.h"

/* At most this many principals are cached; the table has twice as many slots so
 * linear probing stays short. Over the bound everything is dropped: recomputing
 * is one short read transaction per principal, and a node with more distinct
 * callers than this between two role changes is not the common case. */
#define CACHE_MAX   1024
#define CACHE_SLOTS (2 * CACHE_MAX)
#define PAGE        256 /* assignments read per store call when compiling */

struct key_mask {
    char name[MH_STORE_NAME_MAX + 1];
    uint64_t mask; /* key-scoped assignments only; the HSM mask is added on use */
};

struct entry {
    char principal[MH_RBAC_PRINCIPAL_MAX + 1];
    bool used;
    uint64_t epoch; /* the cache epoch it was compiled in; 0: never */
    uint64_t hsm;
    struct key_mask *keys; /* sorted by name; malloc'd */
    size_t n_keys;
};

struct mh_authz_cache {
    uint64_t epoch; /* >= 1; bumped by mh_authz_invalidate */
    uint64_t activated_epoch;
    bool activated; /* valid when activated_epoch == epoch */
    /* Activated, but no role assignment exists at all: state activated before
     * local RBAC existed (activation now always creates the administrators'
     * assignments, and the last HSM-scope grant of roleAssignments/write cannot be
     * removed, so no other state gets here). The configured administrators then
     * hold Managed HSM Administrator, so such an HSM can be administered. */
    bool unassigned;
    size_t used; /* occupied slots */
    struct entry slots[CACHE_SLOTS];
};

static bool is_node_principal(const char *p)
{
    return strncmp(p, MH_PEER_URI_PREFIX, strlen(MH_PEER_URI_PREFIX)) == 0;
}

static bool is_administrator(const struct mh_node *n, const char *p)
{
    for (size_t i = 0; i < n->cfg->n_administrators; i++)
        if (strcmp(n->cfg->administrators[i], p) == 0)
            return true;
    return false;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void entry_clear(struct entry *e)
{
    free(e->keys);
    memset(e, 0, sizeof *e);
}

static void cache_clear(struct mh_authz_cache *c)
{
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (c->slots[i].used)
            entry_clear(&c->slots[i]);
    c->used = 0;
}

static int get_cache(struct mh_node *n, struct mh_authz_cache **out)
{
    if (n->authz == NULL) {
        n->authz = calloc(1, sizeof *n->authz);
        if (n->authz == NULL)
            return MH_ENOMEM;
        n->authz->epoch = 1;
    }
    *out = n->authz;
    return 0;
}

static int is_activated(struct mh_node *n, struct mh_authz_cache *c, bool *activated)
{
    if (c->activated_epoch != c->epoch) {
        Mhsm__Internal__DomainRecord *dom = NULL;
        int rv = mh_store_get_domain(n->store, &dom);
        mh_store_free(dom);
        if (rv < 0 && rv != MH_ENOTFOUND)
            return rv;
        c->activated = rv == 0;
        c->unassigned = false;
        if (c->activated) {
            Mhsm__Internal__RoleAssignmentRecord **recs = NULL;
            size_t count = 0;
            bool more = false;
            rv = mh_store_list_role_assignments(n->store, NULL, NULL, 1, &recs, &count, &more);
            if (rv < 0)
                return rv;
            mh_store_records_free(recs, count);
            c->unassigned = count == 0;
        }
        c->activated_epoch = c->epoch;
    }
    *activated = c->activated;
    return 0;
}

static int cmp_key_mask(const void *a, const void *b)
{
    return strcmp(((const struct key_mask *)a)->name, ((const struct key_mask *)b)->name);
}

/* The set of the role |role_id|: built-in from the table, custom from the store. A
 * role missing from the store (the FSM refuses to delete an assigned role, so only
 * a damaged state has one) grants nothing. */
static int role_mask(struct mh_node *n, const char *role_id, uint64_t *mask)
{
    const struct mh_rbac_builtin *b = mh_rbac_builtin_by_id(role_id);
    if (b != NULL) {
        *mask = b->mask;
        return 0;
    }
    Mhsm__Internal__RoleDefinitionRecord *def = NULL;
    int rv = mh_store_get_role_definition(n->store, role_id, &def);
    if (rv == MH_ENOTFOUND) {
        MH_WARN("authz", "role assignment names unknown role definition %s: ignored", role_id);
        *mask = 0;
        return 0;
    }
    if (rv < 0)
        return rv;
    rv = mh_rbac_role_mask(def->data_actions, def->n_data_actions, def->not_data_actions,
                           def->n_not_data_actions, mask, NULL);
    if (rv < 0) {
        /* The FSM only stores validated patterns. */
        MH_ERROR("authz", "stored role definition %s has an invalid pattern", role_id);
        rv = MH_ECORRUPT;
    }
    mh_store_free(def);
    return rv;
}

static int add_key_mask(struct entry *e, size_t *cap, const char *key, uint64_t mask)
{
    for (size_t i = 0; i < e->n_keys; i++) {
        if (strcmp(e->keys[i].name, key) == 0) {
            e->keys[i].mask |= mask;
            return 0;
        }
    }
    if (strlen(key) > MH_STORE_NAME_MAX)
        return MH_ECORRUPT;
    if (e->n_keys == *cap) {
        size_t ncap = *cap == 0 ? 4 : *cap * 2;
        struct key_mask *k = realloc(e->keys, ncap * sizeof *k);
        if (k == NULL)
            return MH_ENOMEM;
        e->keys = k;
        *cap = ncap;
    }
    snprintf(e->keys[e->n_keys].name, sizeof e->keys[e->n_keys].name, "%s", key);
    e->keys[e->n_keys].mask = mask;
    e->n_keys++;
    return 0;
}

/* Compiles |e|'s masks from its role assignments (miss path: reads, allocates). */
static int compile(struct mh_node *n, struct entry *e)
{
    struct mh_store_ra_filter f = {.principal = e->principal, .scope = NULL};
    char after[MH_RBAC_GUID_LEN + 1] = "";
    size_t cap = 0;
    bool more = true;
    int rv = 0;
    free(e->keys);
    e->keys = NULL;
    e->n_keys = 0;
    e->hsm = 0;
    while (more && rv == 0) {
        Mhsm__Internal__RoleAssignmentRecord **recs = NULL;
        size_t count = 0;
        rv = mh_store_list_role_assignments(n->store, &f, after, PAGE, &recs, &count, &more);
        if (rv < 0)
            break;
        for (size_t i = 0; i < count && rv == 0; i++) {
            const Mhsm__Internal__RoleAssignmentRecord *r = recs[i];
            uint64_t mask = 0;
            const char *key = NULL;
            rv = role_mask(n, r->role_id, &mask);
            if (rv < 0)
                break;
            if (mh_rbac_parse_scope(r->scope, &key) < 0) {
                MH_ERROR("authz", "role assignment %s has an invalid scope", r->name);
                rv = MH_ECORRUPT;
            } else if (key == NULL) {
                e->hsm |= mask;
            } else {
                rv = add_key_mask(e, &cap, key, mask);
            }
        }
        if (rv == 0 && count > 0)
            snprintf(after, sizeof after, "%s", recs[count - 1]->name);
        if (count == 0)
            more = false;
        mh_store_records_free(recs, count);
    }
    if (rv < 0) {
        free(e->keys);
        e->keys = NULL;
        e->n_keys = 0;
        e->hsm = 0;
        return rv;
    }
    if (e->n_keys > 1)
        qsort(e->keys, e->n_keys, sizeof *e->keys, cmp_key_mask);
    return 0;
}

/* The up-to-date entry of |principal| (a hit allocates nothing). */
static int lookup(struct mh_node *n, const char *principal, struct entry **out)
{
    struct mh_authz_cache *c = NULL;
    int rv = get_cache(n, &c);
    if (rv < 0)
        return rv;
    size_t i = (size_t)(hash_str(principal) % CACHE_SLOTS);
    struct entry *e = NULL;
    for (size_t probe = 0; probe < CACHE_SLOTS; probe++, i = (i + 1) % CACHE_SLOTS) {
        struct entry *s = &c->slots[i];
        if (!s->used || strcmp(s->principal, principal) == 0) {
            e = s;
            break;
        }
    }
    if (e != NULL && e->used && e->epoch == c->epoch) {
        *out = e;
        return 0;
    }
    if (e == NULL || (!e->used && c->used >= CACHE_MAX)) {
        cache_clear(c);
        e = &c->slots[hash_str(principal) % CACHE_SLOTS];
    }
    if (!e->used) {
        snprintf(e->principal, sizeof e->principal, "%s", principal);
        e->used = true;
        e->epoch = 0;
        c->used++;
    }
    rv = compile(n, e);
    if (rv < 0) {
        e->epoch = 0; /* compile again next time */
        return rv;
    }
    e->epoch = c->epoch;
    *out = e;
    return 0;
}

static uint64_t key_part(const struct entry *e, const char *key_name)
{
    /* Linear: a principal holds few key-scoped assignments (max_assignments_per_key
     * bounds each key, and a principal is usually granted a handful of keys). */
    for (size_t i = 0; i < e->n_keys; i++)
        if (strcmp(e->keys[i].name, key_name) == 0)
            return e->keys[i].mask;
    return 0;
}

int mh_authz_mask(struct mh_node *n, const char *principal, const char *key_name, uint64_t *hsm,
                  uint64_t *key)
{
    *hsm = 0;
    *key = 0;
    /* Assignments name principals of at most MH_RBAC_PRINCIPAL_MAX bytes, so a
     * longer one holds nothing (and is no configured administrator either). */
    if (is_node_principal(principal) || strlen(principal) > MH_RBAC_PRINCIPAL_MAX)
        return 0;
    struct mh_authz_cache *c = NULL;
    bool activated = false;
    int rv = get_cache(n, &c);
    if (rv == 0)
        rv = is_activated(n, c, &activated);
    if (rv < 0)
        return rv;
    if (!activated) {
        if (is_administrator(n, principal))
            *hsm = *key = MH_RBAC_BIT(MH_ACT_SD_DOWNLOAD) | MH_RBAC_BIT(MH_ACT_SD_READ);
        return 0;
    }
    if (c->unassigned) {
        if (is_administrator(n, principal))
            *hsm = *key = mh_rbac_builtin_by_id(MH_RBAC_ROLE_ADMIN)->mask;
        return 0;
    }
    struct entry *e = NULL;
    rv = lookup(n, principal, &e);
    if (rv < 0)
        return rv;
    *hsm = e->hsm;
    *key = e->hsm | (key_name != NULL ? key_part(e, key_name) : 0);
    return 0;
}

int mh_authz_key_scopes(struct mh_node *n, const char *principal, char ***names, size_t *count)
{
    *names = NULL;
    *count = 0;
    if (is_node_principal(principal) || strlen(principal) > MH_RBAC_PRINCIPAL_MAX)
        return 0;
    struct mh_authz_cache *c = NULL;
    bool activated = false;
    int rv = get_cache(n, &c);
    if (rv == 0)
        rv = is_activated(n, c, &activated);
    if (rv < 0 || !activated)
        return rv;
    struct entry *e = NULL;
    rv = lookup(n, principal, &e);
    if (rv < 0 || e->n_keys == 0)
        return rv;
    char **out = calloc(e->n_keys, sizeof *out);
    if (out == NULL)
        return MH_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < e->n_keys; i++) {
        if (e->keys[i].mask == 0) /* e.g. a custom role that excludes everything */
            continue;
        out[k] = strdup(e->keys[i].name);
        if (out[k] == NULL) {
            mh_authz_key_scopes_free(out, k);
            return MH_ENOMEM;
        }
        k++;
    }
    if (k == 0) {
        free(out);
        return 0;
    }
    *names = out;
    *count = k;
    return 0;
}

void mh_authz_key_scopes_free(char **names, size_t count)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

static void deny(struct mh_rpc_call *call, const char *who, int note_action, const char *action,
                 const char *scope, const char *why)
{
    mh_rpc_call_note_authz(call, note_action, false, scope);
    MH_INFO("authz", "call=%llu principal=%s action=%s scope=%s decision=deny",
            (unsigned long long)mh_rpc_call_id(call), who, action, scope);
    char msg[700];
    snprintf(msg, sizeof msg, "%s lacks %s at scope %s%s", who, action, scope, why);
    mh_rpc_fail(call, MH_GRPC_PERMISSION_DENIED, msg);
}

bool mh_authz_check(struct mh_node *n, struct mh_rpc_call *call, enum mh_action a,
                    const char *key_name)
{
    bool any = a == MH_ACT_ANY_CLIENT;
    int note_action = any ? -2 : (int)a;
    const char *action = any ? "(any client)" : mh_rbac_action_name(a);
    const char *who = mh_rpc_call_principal(call);
    char scope[sizeof "/keys/" + MH_STORE_NAME_MAX];
    if (action == NULL) {
        mh_rpc_call_note_authz(call, note_action, false, "/");
        mh_rpc_fail_err(call, MH_EINVAL, "authorization: unknown data action");
        return false;
    }
    if (key_name != NULL) {
        mh_rpc_call_note_key(call, key_name, NULL);
        snprintf(scope, sizeof scope, "/keys/%s", key_name);
    } else {
        snprintf(scope, sizeof scope, "/");
    }
    /* Node certificates come from the same CA as clients' and unlock the peer
     * channel; a stolen or misused one must not also reach the keys. */
    if (is_node_principal(who)) {
        deny(call, who, note_action, action, scope,
             " (node certificates cannot call the data plane)");
        return false;
    }
    if (any) {
        mh_rpc_call_note_authz(call, note_action, true, scope);
        return true;
    }
    uint64_t hsm = 0, mask = 0;
    int rv = mh_authz_mask(n, who, key_name, &hsm, &mask);
    if (rv < 0) {
        mh_rpc_call_note_authz(call, note_action, false, scope);
        MH_ERROR("authz", "call=%llu principal=%s action=%s: role state unreadable: %s",
                 (unsigned long long)mh_rpc_call_id(call), who, action, mh_strerror(rv));
        mh_rpc_fail_err(call, rv, "authorization");
        return false;
    }
    if ((mask & MH_RBAC_BIT(a)) == 0) {
        deny(call, who, note_action, action, scope, "");
        return false;
    }
    mh_rpc_call_note_authz(call, note_action, true, scope);
    MH_DEBUG("authz", "call=%llu principal=%s action=%s scope=%s decision=allow",
             (unsigned long long)mh_rpc_call_id(call), who, action, scope);
    return true;
}

void mh_authz_invalidate(struct mh_node *n)
{
    if (n->authz != NULL)
        n->authz->epoch++;
}

void mh_authz_free(struct mh_node *n)
{
    if (n->authz == NULL)
        return;
    cache_clear(n->authz);
    free(n->authz);
    n->authz = NULL;
}
