/* keycache: decoded key versions in memory, so a hot key is unsealed once, not per request.
 *
 * Keyed by (name, version). Material only ever enters through mh_unseal_key from
 * the record's sealed bytes; entries hold a reference to an immutable struct
 * mh_key (crypto/key.h), so a caller keeps using its key even if the entry is
 * evicted meanwhile. Bounded: the least recently used entry goes when full.
 * Deleting or purging a key evicts all its versions (mh_keycache_evict_name).
 *
 * Thread-safe (one mutex; lookups are short). */
#ifndef MH_NODE_KEYCACHE_H
#define MH_NODE_KEYCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/key.h"
#include "internal/state.pb-c.h"
#include "node/domain.h"

struct mh_keycache;

MH_MUST_USE int mh_keycache_new(size_t capacity, struct mh_keycache **out);
void mh_keycache_free(struct mh_keycache *kc);

/* mh_keycache_get returns in *out a new reference to the key of |rec|, unsealing it
 * under |d|'s key-wrapping key on a miss (slow for RSA: call from a worker thread).
 * Errors: MH_ECORRUPT when the record's material does not open for its name,
 * version and kty under |d| (the state is corrupt, or from another domain),
 * MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_keycache_get(struct mh_keycache *kc, const struct mh_domain *d,
                                const Mhsm__Internal__KeyVersionRecord *rec, struct mh_key **out,
                                uint64_t epoch);

/* mh_keycache_peek is mh_keycache_get without the miss path: a new reference in
 * *out when the version of |rec| is cached, else MH_ENOTFOUND (nothing unsealed,
 * so it is cheap enough for the loop thread). Errors: MH_EINVAL (over-long name
 * or version: never cached). */
MH_MUST_USE int mh_keycache_peek(struct mh_keycache *kc,
                                 const Mhsm__Internal__KeyVersionRecord *rec, struct mh_key **out);

/* The eviction epoch: bumped by every mh_keycache_evict_name. A caller takes it
 * before reading |rec| from the store and passes it to mh_keycache_get, which then
 * does not cache a key unsealed after an eviction that may concern it (a purge
 * racing the read); the key is still returned for the request in flight. */
uint64_t mh_keycache_epoch(struct mh_keycache *kc);

/* Drop every cached version of |name|. */
void mh_keycache_evict_name(struct mh_keycache *kc, const char *name);

/* Drop every cached key (a snapshot replaced the whole state). */
void mh_keycache_evict_all(struct mh_keycache *kc);

/* Number of cached entries (for tests and metrics). */
size_t mh_keycache_size(struct mh_keycache *kc);

#endif
