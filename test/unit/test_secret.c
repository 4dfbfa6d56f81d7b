#define _GNU_SOURCE
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/secret.h"

static void test_alloc_dup_free(void **state)
{
    (void)state;
    struct mh_secret s = {0};
    assert_int_equal(mh_secret_alloc(&s, 100), 0);
    assert_non_null(s.data);
    assert_int_equal(s.len, 100);
    for (size_t i = 0; i < s.len; i++)
        assert_int_equal(s.data[i], 0);
    mh_secret_free(&s);
    assert_null(s.data);
    assert_int_equal(s.len, 0);
    mh_secret_free(&s);
    mh_secret_free(NULL);

    assert_int_equal(mh_secret_dup(&s, "topsecret", 9), 0);
    assert_memory_equal(s.data, "topsecret", 9);
    mh_secret_shrink(&s, 3);
    assert_int_equal(s.len, 3);
    assert_int_equal(s.data[3], 0); /* wiped tail */
    mh_secret_free(&s);

    assert_int_equal(mh_secret_alloc(&s, 0), 0);
    assert_null(s.data);
    mh_secret_free(&s);
}

static void test_pages_marked_dontdump(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* under ASan secrets come from malloc on purpose */
#else
    struct mh_secret s = {0};
    assert_int_equal(mh_secret_alloc(&s, 10), 0);
    /* The VMA holding the secret must carry the "dd" (dont-dump) flag and be
     * locked ("lo") unless mlock was refused. */
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    int inside = 0, dd = 0, lo = 0;
    uintptr_t addr = (uintptr_t)s.data;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo_a, hi_a;
        if (sscanf(line, "%lx-%lx ", &lo_a, &hi_a) == 2 && strchr(line, ':') != NULL &&
            strncmp(line, "VmFlags", 7) != 0) {
            inside = lo_a <= addr && addr < hi_a;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            dd = strstr(line, " dd") != NULL;
            lo = strstr(line, " lo") != NULL;
        }
    }
    fclose(f);
    assert_true(dd);
    if (mh_secret_mlock_failures() == 0)
        assert_true(lo);
    mh_secret_free(&s);
#endif
}

/* Many secrets of every size class at once: each keeps its own bytes, and a
 * reused slot comes back zeroed. */
static void test_many_sizes_independent(void **state)
{
    (void)state;
    enum { N = 600 };
    static struct mh_secret s[N];
    for (size_t i = 0; i < N; i++) {
        size_t len = 1 + (i * 37) % 5000;
        assert_int_equal(mh_secret_alloc(&s[i], len), 0);
        for (size_t j = 0; j < len; j++)
            assert_int_equal(s[i].data[j], 0);
        memset(s[i].data, (int)(i & 0xff), len);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < s[i].len; j++)
            assert_int_equal(s[i].data[j], (uint8_t)(i & 0xff));
    for (size_t i = 0; i < N; i += 2)
        mh_secret_free(&s[i]);
    for (size_t i = 0; i < N; i += 2) {
        assert_int_equal(mh_secret_alloc(&s[i], 1 + (i * 53) % 3000), 0);
        for (size_t j = 0; j < s[i].len; j++)
            assert_int_equal(s[i].data[j], 0);
    }
    for (size_t i = 0; i < N; i++)
        mh_secret_free(&s[i]);
}

static void *churn(void *arg)
{
    uintptr_t seed = (uintptr_t)arg;
    for (int i = 0; i < 20000; i++) {
        struct mh_secret a = {0}, b = {0};
        size_t la = 1 + (seed + (size_t)i) % 200, lb = 1 + (seed * 7 + (size_t)i) % 3000;
        if (mh_secret_alloc(&a, la) != 0 || mh_secret_alloc(&b, lb) != 0)
            return (void *)1;
        memset(a.data, 0xa5, la);
        memset(b.data, 0x5a, lb);
        for (size_t j = 0; j < la; j++)
            if (a.data[j] != 0xa5)
                return (void *)1;
        mh_secret_free(&a);
        mh_secret_free(&b);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *rv;
        assert_int_equal(pthread_join(t[i], &rv), 0);
        assert_null(rv);
    }
}

static void test_ct_eq(void **state)
{
    (void)state;
    assert_int_equal(mh_ct_eq("abcd", "abcd", 4), 1);
    assert_int_equal(mh_ct_eq("abcd", "abce", 4), 0);
    assert_int_equal(mh_ct_eq("abcd", "xbcd", 4), 0);
    assert_int_equal(mh_ct_eq("", "", 0), 1);
}

static void test_process_harden(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (mh_process_harden() != 0)
            _exit(2);
        struct rlimit rl;
        if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0)
            _exit(3);
        _exit(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : 4);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_dup_free),
        cmocka_unit_test(test_pages_marked_dontdump),
        cmocka_unit_test(test_many_sizes_independent),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_ct_eq),
        cmocka_unit_test(test_process_harden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
