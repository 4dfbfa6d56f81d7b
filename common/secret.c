#define _GNU_SOURCE /* MADV_DONTDUMP */
#include "common/secret.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/buf.h"

#if defined(__SANITIZE_ADDRESS__)
#define MH_SECRET_USE_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MH_SECRET_USE_MALLOC 1
#endif
#endif

static _Atomic uint64_t mlock_failures;

#ifndef MH_SECRET_USE_MALLOC
/* Small secrets (plaintexts of a few dozen bytes, AES keys, CEKs) are the hot
 * path: a mmap + mlock + munmap per 32-byte plaintext costs more than the AES
 * itself. They come from size-class slabs instead: 64 KiB arenas that are
 * mlock'ed and MADV_DONTDUMP like any secret page, carved into slots that
 * are wiped on free and kept on per-class free lists. Arenas are never
 * returned to the kernel; the pool is bounded by peak use. */
#define SLAB_MAX   2048
#define ARENA_SIZE ((size_t)64 * 1024)
static const size_t CLASS_SIZE[] = {32, 64, 128, 256, 512, 1024, 2048};
#define NCLASSES (sizeof CLASS_SIZE / sizeof CLASS_SIZE[0])

struct slot {
    struct slot *next;
};

static pthread_mutex_t slab_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot *free_list[NCLASSES];

static void lock_pages(void *p, size_t len)
{
    (void)madvise(p, len, MADV_DONTDUMP);
    if (mlock(p, len) != 0)
        atomic_fetch_add(&mlock_failures, 1);
}

/* Called with slab_mu held. */
static int slab_refill(size_t c)
{
    uint8_t *a = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return MH_ENOMEM;
    lock_pages(a, ARENA_SIZE);
    for (size_t off = 0; off + CLASS_SIZE[c] <= ARENA_SIZE; off += CLASS_SIZE[c]) {
        struct slot *sl = (struct slot *)(void *)(a + off);
        sl->next = free_list[c];
        free_list[c] = sl;
    }
    return 0;
}

static int slab_alloc(size_t len, uint8_t **out, size_t *cap)
{
    size_t c = 0;
    while (CLASS_SIZE[c] < len)
        c++;
    pthread_mutex_lock(&slab_mu);
    if (free_list[c] == NULL && slab_refill(c) < 0) {
        pthread_mutex_unlock(&slab_mu);
        return MH_ENOMEM;
    }
    struct slot *sl = free_list[c];
    free_list[c] = sl->next;
    pthread_mutex_unlock(&slab_mu);
    memset(sl, 0, CLASS_SIZE[c]);
    *out = (uint8_t *)sl;
    *cap = CLASS_SIZE[c];
    return 0;
}

static void slab_free(uint8_t *p, size_t cap)
{
    size_t c = 0;
    while (CLASS_SIZE[c] != cap)
        c++;
    OPENSSL_cleanse(p, cap);
    struct slot *sl = (struct slot *)(void *)p;
    pthread_mutex_lock(&slab_mu);
    sl->next = free_list[c];
    free_list[c] = sl;
    pthread_mutex_unlock(&slab_mu);
}
#endif

uint64_t mh_secret_mlock_failures(void)
{
    return atomic_load(&mlock_failures);
}

int mh_secret_alloc(struct mh_secret *s, size_t len)
{
    s->data = NULL;
    s->len = 0;
    s->map_len = 0;
    if (len == 0)
        return 0;
#ifdef MH_SECRET_USE_MALLOC
    uint8_t *p = calloc(1, len);
    if (p == NULL)
        return MH_ENOMEM;
    s->map_len = len;
#else
    uint8_t *p;
    if (len <= SLAB_MAX) {
        MH_TRY(slab_alloc(len, &p, &s->map_len));
        s->data = p;
        s->len = len;
        return 0;
    }
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    size_t map_len;
    MH_TRY(mh_size_add(len, pg - 1, &map_len));
    map_len -= map_len % pg;
    p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return MH_ENOMEM;
    lock_pages(p, map_len);
    s->map_len = map_len;
#endif
    s->data = p;
    s->len = len;
    return 0;
}

int mh_secret_dup(struct mh_secret *s, const void *p, size_t len)
{
    MH_TRY(mh_secret_alloc(s, len));
    if (len > 0)
        memcpy(s->data, p, len);
    return 0;
}

void mh_secret_shrink(struct mh_secret *s, size_t len)
{
    if (s->data == NULL || len >= s->len)
        return;
    OPENSSL_cleanse(s->data + len, s->len - len);
    s->len = len;
}

void mh_secret_free(struct mh_secret *s)
{
    if (s == NULL || s->data == NULL)
        return;
#ifdef MH_SECRET_USE_MALLOC
    OPENSSL_cleanse(s->data, s->map_len);
    free(s->data);
#else
    if (s->map_len <= SLAB_MAX) {
        slab_free(s->data, s->map_len);
        s->data = NULL;
        s->len = 0;
        s->map_len = 0;
        return;
    }
    OPENSSL_cleanse(s->data, s->map_len);
    (void)munlock(s->data, s->map_len);
    (void)munmap(s->data, s->map_len);
#endif
    s->data = NULL;
    s->len = 0;
    s->map_len = 0;
}

int mh_ct_eq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void mh_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

int mh_process_harden(void)
{
    struct rlimit nocore = {0, 0};
    if (setrlimit(RLIMIT_CORE, &nocore) != 0)
        return -errno;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return -errno;
    return 0;
}
