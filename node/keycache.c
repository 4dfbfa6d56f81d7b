#include "node/keycache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "crypto/seal.h"
#include "node/keyrec.h"

struct entry {
    struct entry *hnext;               /* hash chain */
    struct entry *lru_prev, *lru_next; /* most recent at head */
    struct mh_key *key;
    uint64_t hash;
    char id[MH_KEY_NAME_MAX + 1 + MH_VERSION_LEN + 1]; /* "name/version" */
};

struct mh_keycache {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t n_buckets, size, capacity;
    struct entry *lru_head, *lru_tail;
    uint64_t epoch;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

int mh_keycache_new(size_t capacity, struct mh_keycache **out)
{
    struct mh_keycache *kc = calloc(1, sizeof *kc);
    if (kc == NULL)
        return MH_ENOMEM;
    kc->capacity = capacity > 0 ? capacity : 1;
    kc->n_buckets = 64;
    while (kc->n_buckets < kc->capacity)
        kc->n_buckets *= 2;
    kc->buckets = calloc(kc->n_buckets, sizeof *kc->buckets);
    if (kc->buckets == NULL) {
        free(kc);
        return MH_ENOMEM;
    }
    pthread_mutex_init(&kc->mu, NULL);
    *out = kc;
    return 0;
}

static void lru_unlink(struct mh_keycache *kc, struct entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        kc->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        kc->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push(struct mh_keycache *kc, struct entry *e)
{
    e->lru_next = kc->lru_head;
    e->lru_prev = NULL;
    if (kc->lru_head)
        kc->lru_head->lru_prev = e;
    kc->lru_head = e;
    if (kc->lru_tail == NULL)
        kc->lru_tail = e;
}

/* Unlinks |e| from its bucket and the LRU; returns its key for the caller to
 * release outside the lock. */
static struct mh_key *remove_entry(struct mh_keycache *kc, struct entry *e)
{
    struct entry **pp = &kc->buckets[e->hash & (kc->n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(kc, e);
    kc->size--;
    struct mh_key *k = e->key;
    free(e);
    return k;
}

static struct entry *find(struct mh_keycache *kc, const char *id, uint64_t h)
{
    for (struct entry *e = kc->buckets[h & (kc->n_buckets - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

uint64_t mh_keycache_epoch(struct mh_keycache *kc)
{
    pthread_mutex_lock(&kc->mu);
    uint64_t e = kc->epoch;
    pthread_mutex_unlock(&kc->mu);
    return e;
}

/* "name/version" of |rec| into |id| (sized like entry.id) and its hash. */
static int make_id(const Mhsm__Internal__KeyVersionRecord *rec, char *id, uint64_t *h)
{
    size_t nl = strlen(rec->name), vl = strlen(rec->version);
    if (nl > MH_KEY_NAME_MAX || vl > MH_VERSION_LEN)
        return MH_EINVAL;
    memcpy(id, rec->name, nl);
    id[nl] = '/';
    memcpy(id + nl + 1, rec->version, vl + 1);
    *h = fnv1a(id);
    return 0;
}

/* A new reference to the cached key of |id|, or NULL. */
static struct mh_key *lookup(struct mh_keycache *kc, const char *id, uint64_t h)
{
    struct mh_key *k = NULL;
    pthread_mutex_lock(&kc->mu);
    struct entry *e = find(kc, id, h);
    if (e != NULL) {
        lru_unlink(kc, e);
        lru_push(kc, e);
        k = mh_key_ref(e->key);
    }
    pthread_mutex_unlock(&kc->mu);
    return k;
}

int mh_keycache_peek(struct mh_keycache *kc, const Mhsm__Internal__KeyVersionRecord *rec,
                     struct mh_key **out)
{
    char id[sizeof(((struct entry *)0)->id)];
    uint64_t h;
    MH_TRY(make_id(rec, id, &h));
    *out = lookup(kc, id, h);
    return *out != NULL ? 0 : MH_ENOTFOUND;
}

int mh_keycache_get(struct mh_keycache *kc, const struct mh_domain *d,
                    const Mhsm__Internal__KeyVersionRecord *rec, struct mh_key **out,
                    uint64_t epoch)
{
    char id[sizeof(((struct entry *)0)->id)];
    uint64_t h;
    MH_TRY(make_id(rec, id, &h));
    *out = lookup(kc, id, h);
    if (*out != NULL)
        return 0;

    /* Miss: unseal outside the lock (RSA import takes a while). Two threads may
     * race to unseal the same version; the loser's copy is dropped below. */
    struct mh_buf aad = {0};
    MH_TRY(mh_keyrec_aad(rec->name, rec->version, (enum mh_kty)rec->kty, &aad));
    struct mh_key *key = NULL;
    int rv = mh_unseal_key(&d->kwk, (enum mh_kty)rec->kty, aad.data, aad.len,
                           rec->sealed_material.data, rec->sealed_material.len, &key);
    mh_buf_free(&aad);
    /* Records are ours: material that does not open for its name, version and kty
     * under this domain is corrupt state, never the caller's input. */
    if (rv == MH_EAUTH || rv == MH_EBADKEY || rv == MH_ETRUNC || rv == MH_EUNSUPPORTED)
        rv = MH_ECORRUPT;
    if (rv < 0)
        return rv;

    struct entry *ne = calloc(1, sizeof *ne);
    if (ne == NULL) {
        *out = key; /* usable, just not cached */
        return 0;
    }
    memcpy(ne->id, id, sizeof id);
    ne->hash = h;
    struct mh_key *evicted = NULL;
    pthread_mutex_lock(&kc->mu);
    struct entry *e = find(kc, id, h);
    if (kc->epoch != epoch) { /* an eviction ran since the caller read |rec| */
        pthread_mutex_unlock(&kc->mu);
        free(ne);
        *out = key;
        return 0;
    }
    if (e != NULL) { /* lost the race */
        *out = mh_key_ref(e->key);
        pthread_mutex_unlock(&kc->mu);
        free(ne);
        mh_key_free(key);
        return 0;
    }
    if (kc->size >= kc->capacity && kc->lru_tail != NULL)
        evicted = remove_entry(kc, kc->lru_tail);
    ne->key = key;
    size_t b = h & (kc->n_buckets - 1);
    ne->hnext = kc->buckets[b];
    kc->buckets[b] = ne;
    lru_push(kc, ne);
    kc->size++;
    *out = mh_key_ref(key);
    pthread_mutex_unlock(&kc->mu);
    mh_key_free(evicted);
    return 0;
}

static void evict_matching(struct mh_keycache *kc, const char *name)
{
    size_t nl = name != NULL ? strlen(name) : 0;
    struct mh_key *victims[64];
    for (;;) {
        size_t nv = 0;
        pthread_mutex_lock(&kc->mu);
        kc->epoch++;
        for (struct entry *e = kc->lru_head, *next; e != NULL && nv < 64; e = next) {
            next = e->lru_next;
            if (name == NULL || (strncmp(e->id, name, nl) == 0 && e->id[nl] == '/'))
                victims[nv++] = remove_entry(kc, e);
        }
        pthread_mutex_unlock(&kc->mu);
        for (size_t i = 0; i < nv; i++)
            mh_key_free(victims[i]);
        if (nv < 64)
            return;
    }
}

void mh_keycache_evict_name(struct mh_keycache *kc, const char *name)
{
    evict_matching(kc, name);
}

void mh_keycache_evict_all(struct mh_keycache *kc)
{
    evict_matching(kc, NULL);
}

size_t mh_keycache_size(struct mh_keycache *kc)
{
    pthread_mutex_lock(&kc->mu);
    size_t n = kc->size;
    pthread_mutex_unlock(&kc->mu);
    return n;
}

void mh_keycache_free(struct mh_keycache *kc)
{
    if (kc == NULL)
        return;
    while (kc->lru_head != NULL)
        mh_key_free(remove_entry(kc, kc->lru_head));
    free(kc->buckets);
    pthread_mutex_destroy(&kc->mu);
    free(kc);
}
