/* secret: the one zeroizing buffer type for key material and plaintext.
 *
 * A secret's bytes live in anonymous pages that are mlock'ed (never swapped,
 * best effort: a failing mlock under RLIMIT_MEMLOCK is counted, not fatal)
 * and marked MADV_DONTDUMP (never in a core dump). Secrets up to 2 KiB share
 * such pages through size-class slabs (the hot path: one plaintext per
 * decrypt); larger ones get pages of their own. mh_secret_free wipes
 * them with OPENSSL_cleanse before unmapping. Under AddressSanitizer the bytes
 * come from malloc instead, so ASan can see overflows; they are still wiped.
 *
 * Rules: never memcpy a secret into an mh_buf or a stack array that outlives
 * the operation; compare MACs and tags with mh_ct_eq; a zero-initialised
 * struct mh_secret ({0}) is a valid empty secret.
 *
 * Thread safety: a secret belongs to one thread at a time; the allocator
 * itself is thread-safe. */
#ifndef MH_COMMON_SECRET_H
#define MH_COMMON_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct mh_secret {
    uint8_t *data;
    size_t len;
    size_t map_len; /* bytes actually allocated; 0 when empty */
};

/* mh_secret_alloc allocates |len| zeroed bytes into |s| (which must be empty).
 * len 0 gives an empty secret. MH_ENOMEM on failure. */
MH_MUST_USE int mh_secret_alloc(struct mh_secret *s, size_t len);

/* mh_secret_dup copies |len| bytes from |p| into a fresh secret |s|. */
MH_MUST_USE int mh_secret_dup(struct mh_secret *s, const void *p, size_t len);

/* mh_secret_shrink drops the tail so len becomes |len| (<= current len), wiping it. */
void mh_secret_shrink(struct mh_secret *s, size_t len);

/* mh_secret_free wipes and releases |s| and leaves it empty. NULL is a no-op. */
void mh_secret_free(struct mh_secret *s);

/* mh_secret_mlock_failures counts allocations whose pages could not be locked
 * (RLIMIT_MEMLOCK too low). Operators see it in status; tests read it. */
uint64_t mh_secret_mlock_failures(void);

/* mh_ct_eq compares |n| bytes in time that depends only on n: 1 if equal, else 0. */
int mh_ct_eq(const void *a, const void *b, size_t n);

/* mh_wipe zeroes |n| bytes at |p| in a way the compiler cannot elide. */
void mh_wipe(void *p, size_t n);

/* mh_process_harden disables core dumps and ptrace attach for this process
 * (PR_SET_DUMPABLE 0, RLIMIT_CORE 0). Servers call it first thing in main. */
MH_MUST_USE int mh_process_harden(void);

#endif
