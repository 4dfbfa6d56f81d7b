#define _GNU_SOURCE /* MADV_DONTDUMP */
#include "common/secret.h"

#include <errno.h>
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
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    size_t map_len;
    MH_TRY(mh_size_add(len, pg - 1, &map_len));
    map_len -= map_len % pg;
    uint8_t *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return MH_ENOMEM;
    (void)madvise(p, map_len, MADV_DONTDUMP);
    if (mlock(p, map_len) != 0)
        atomic_fetch_add(&mlock_failures, 1);
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
    OPENSSL_cleanse(s->data, s->map_len);
#ifdef MH_SECRET_USE_MALLOC
    free(s->data);
#else
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
