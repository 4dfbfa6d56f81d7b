#include "testutil.h"

#include <string.h>

#include "crypto/shamir.h"

static uint8_t SECRET[32];

static void fill_secret(void)
{
    for (int i = 0; i < 32; i++)
        SECRET[i] = (uint8_t)(i * 37 + 250); /* includes 0 and 255-ish values */
    SECRET[0] = 0;
    SECRET[1] = 255;
}

/* Calls |fn| for every size-k subset of 0..n-1 (as a sorted index array). */
static void subsets(unsigned n, unsigned k, void (*fn)(const unsigned *, unsigned, void *),
                    void *arg)
{
    unsigned idx[16];
    for (unsigned i = 0; i < k; i++)
        idx[i] = i;
    for (;;) {
        fn(idx, k, arg);
        int i = (int)k - 1;
        while (i >= 0 && idx[i] == n - k + (unsigned)i)
            i--;
        if (i < 0)
            return;
        idx[i]++;
        for (unsigned j = (unsigned)i + 1; j < k; j++)
            idx[j] = idx[j - 1] + 1;
    }
}

struct ctx {
    struct mh_secret *shares;
    unsigned m;
    size_t ok, below;
};

static void try_subset(const unsigned *idx, unsigned k, void *arg)
{
    struct ctx *c = arg;
    struct mh_slice sl[16];
    /* reverse order on odd subsets: combine must not depend on order */
    for (unsigned i = 0; i < k; i++) {
        unsigned j = (k % 2) ? idx[k - 1 - i] : idx[i];
        sl[i] = mh_slice_of(c->shares[j].data, c->shares[j].len);
    }
    struct mh_secret out = {0};
    if (k == c->m) {
        assert_int_equal(mh_shamir_combine(sl, k, c->m, &out), 0);
        assert_int_equal(out.len, 32);
        assert_memory_equal(out.data, SECRET, 32);
        c->ok++;
    } else {
        /* k = m - 1 real shares: under threshold m the call is refused ... */
        assert_int_equal(mh_shamir_combine(sl, k, c->m, &out), MH_ESHARES);
        /* ... and pretending the threshold is m - 1 cannot be detected by
         * Shamir itself: it gives a wrong secret or (value > 255) MH_ESHARES,
         * never the right one (chance 257^-32). */
        if (k >= 2) {
            int rv = mh_shamir_combine(sl, k, k, &out);
            assert_true(rv == 0 || rv == MH_ESHARES);
            if (rv == 0)
                assert_memory_not_equal(out.data, SECRET, 32);
        }
        c->below++;
    }
    mh_secret_free(&out);
}

static void check_n(unsigned n, const unsigned *ms, size_t nms)
{
    fill_secret();
    for (size_t t = 0; t < nms; t++) {
        unsigned m = ms[t];
        struct mh_secret shares[16];
        assert_int_equal(mh_shamir_split(SECRET, 32, m, n, shares), 0);
        for (unsigned i = 0; i < n; i++) {
            assert_int_equal(shares[i].len, 64);
            for (size_t j = 0; j < 32; j++) {
                unsigned w = shares[i].data[2 * j] | (unsigned)shares[i].data[2 * j + 1] << 8;
                assert_int_equal(w >> 9, i + 1);
                assert_true((w & 0x1ff) <= 256);
            }
        }
        struct ctx c = {shares, m, 0, 0};
        subsets(n, m, try_subset, &c);
        subsets(n, m - 1, try_subset, &c);
        assert_true(c.ok > 0 && c.below > 0);
        for (unsigned i = 0; i < n; i++)
            mh_secret_free(&shares[i]);
    }
}

static void test_n3(void **state)
{
    (void)state;
    static const unsigned ms[] = {2, 3};
    check_n(3, ms, 2);
}

static void test_n5(void **state)
{
    (void)state;
    static const unsigned ms[] = {2, 3, 4, 5};
    check_n(5, ms, 4);
}

static void test_n10(void **state)
{
    (void)state;
    /* all subsets of every size: C(10,m) <= 252 combines each, fast */
    static const unsigned ms[] = {2, 3, 4, 5, 6, 7, 8, 9, 10};
    check_n(10, ms, 9);
}

static void test_max_shares(void **state)
{
    (void)state;
    fill_secret();
    static struct mh_secret shares[MH_SHAMIR_MAX_SHARES];
    assert_int_equal(mh_shamir_split(SECRET, 32, 5, MH_SHAMIR_MAX_SHARES, shares), 0);
    struct mh_slice sl[5];
    unsigned pick[5] = {125, 0, 77, 3, 100};
    for (int i = 0; i < 5; i++)
        sl[i] = mh_slice_of(shares[pick[i]].data, shares[pick[i]].len);
    struct mh_secret out = {0};
    assert_int_equal(mh_shamir_combine(sl, 5, 5, &out), 0);
    assert_memory_equal(out.data, SECRET, 32);
    mh_secret_free(&out);
    for (unsigned i = 0; i < MH_SHAMIR_MAX_SHARES; i++)
        mh_secret_free(&shares[i]);
    struct mh_secret s[130];
    assert_int_equal(mh_shamir_split(SECRET, 32, 5, MH_SHAMIR_MAX_SHARES + 1, s), MH_EINVAL);
}

/* Packing by hand: secret byte 0x42, m = 2; combine two hand-built shares of
 * the line f(x) = 0x42 + 5x: x=1 -> 71, x=2 -> 76, x = 3 -> 81. */
static void test_packing_by_hand(void **state)
{
    (void)state;
    /* (1 << 9) | 71 = 0x0247 -> bytes 47 02; (3 << 9) | 81 = 0x0651 -> 51 06 */
    const uint8_t s1[] = {0x47, 0x02}, s3[] = {0x51, 0x06};
    struct mh_slice sl[2] = {mh_slice_of(s1, 2), mh_slice_of(s3, 2)};
    struct mh_secret out = {0};
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), 0);
    assert_int_equal(out.len, 1);
    assert_int_equal(out.data[0], 0x42);
    mh_secret_free(&out);
    /* v = 256 is a legal field element: line f(x) = 1 + 255x at x=1 is 256,
     * (1 << 9) | 256 = 0x0300 -> 00 03; at x=2: 511 mod 257 = 254 ->
     * (2 << 9) | 254 = 0x04fe -> fe 04 */
    const uint8_t t1[] = {0x00, 0x03}, t2[] = {0xfe, 0x04};
    struct mh_slice tl[2] = {mh_slice_of(t1, 2), mh_slice_of(t2, 2)};
    assert_int_equal(mh_shamir_combine(tl, 2, 2, &out), 0);
    assert_int_equal(out.data[0], 1);
    mh_secret_free(&out);

    /* and split's output decodes the same way: x in the top 7 bits, LE */
    uint8_t one = 0x42;
    struct mh_secret sh[3];
    assert_int_equal(mh_shamir_split(&one, 1, 2, 3, sh), 0);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(sh[i].len, 2);
        assert_int_equal(sh[i].data[1] >> 1, i + 1);
    }
    /* values lie on a line: v2 - v1 == v3 - v2 (mod 257) */
    unsigned v[3];
    for (int i = 0; i < 3; i++)
        v[i] = (sh[i].data[0] | (unsigned)sh[i].data[1] << 8) & 0x1ff;
    assert_int_equal((v[1] + 257 - v[0]) % 257, (v[2] + 257 - v[1]) % 257);
    assert_int_equal((2 * v[0] + 257 - v[1]) % 257, 0x42);
    for (int i = 0; i < 3; i++)
        mh_secret_free(&sh[i]);
}

static void test_rejects(void **state)
{
    (void)state;
    fill_secret();
    struct mh_secret sh[3];
    assert_int_equal(mh_shamir_split(SECRET, 32, 2, 3, sh), 0);
    struct mh_secret out = {0};
    struct mh_slice sl[3];

    /* duplicate x */
    sl[0] = mh_slice_of(sh[0].data, 64);
    sl[1] = mh_slice_of(sh[0].data, 64);
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);
    /* inconsistent lengths */
    sl[1] = mh_slice_of(sh[1].data, 62);
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);
    /* odd length, empty */
    sl[0] = mh_slice_of(sh[0].data, 63);
    sl[1] = mh_slice_of(sh[1].data, 63);
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);
    sl[0] = mh_slice_of(sh[0].data, 0);
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);

    uint8_t bad[64];
    memcpy(bad, sh[1].data, 64);
    sl[0] = mh_slice_of(sh[0].data, 64);
    sl[1] = mh_slice_of(bad, 64);
    /* v > 256 in the last element (x kept) */
    bad[62] = 0xff;
    bad[63] = (uint8_t)((2 << 1) | 1); /* x = 2, v = 0x1ff */
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);
    /* x changes inside a share */
    memcpy(bad, sh[1].data, 64);
    bad[33] = (uint8_t)((bad[33] & 1) | (3 << 1));
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);
    /* x = 0 */
    memset(bad, 0, 64);
    assert_int_equal(mh_shamir_combine(sl, 2, 2, &out), MH_ESHARES);
    /* a bad third share is rejected even though two would suffice */
    sl[1] = mh_slice_of(sh[1].data, 64);
    sl[2] = mh_slice_of(bad, 64);
    assert_int_equal(mh_shamir_combine(sl, 3, 2, &out), MH_ESHARES);
    /* count below m */
    assert_int_equal(mh_shamir_combine(sl, 1, 2, &out), MH_ESHARES);
    /* m out of range */
    assert_int_equal(mh_shamir_combine(sl, 2, 1, &out), MH_EINVAL);
    assert_int_equal(mh_shamir_combine(sl, 2, 127, &out), MH_EINVAL);
    assert_null(out.data);
    /* more shares than needed: first m used, result right */
    sl[2] = mh_slice_of(sh[2].data, 64);
    assert_int_equal(mh_shamir_combine(sl, 3, 2, &out), 0);
    assert_memory_equal(out.data, SECRET, 32);
    mh_secret_free(&out);

    struct mh_secret s2[4];
    assert_int_equal(mh_shamir_split(SECRET, 32, 1, 3, s2), MH_EINVAL);
    assert_int_equal(mh_shamir_split(SECRET, 32, 4, 3, s2), MH_EINVAL);
    assert_int_equal(mh_shamir_split(SECRET, 0, 2, 3, s2), MH_EINVAL);
    assert_int_equal(mh_shamir_split(NULL, 32, 2, 3, s2), MH_EINVAL);
    for (int i = 0; i < 3; i++)
        mh_secret_free(&sh[i]);
}

/* Two splits of the same secret differ (fresh coefficients), and a byte's
 * shares are not constant across x (degree >= 1 almost surely). */
static void test_randomized(void **state)
{
    (void)state;
    fill_secret();
    struct mh_secret a[3], b[3];
    assert_int_equal(mh_shamir_split(SECRET, 32, 2, 3, a), 0);
    assert_int_equal(mh_shamir_split(SECRET, 32, 2, 3, b), 0);
    assert_memory_not_equal(a[0].data, b[0].data, 64);
    for (int i = 0; i < 3; i++) {
        mh_secret_free(&a[i]);
        mh_secret_free(&b[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_n3),
        cmocka_unit_test(test_n5),
        cmocka_unit_test(test_n10),
        cmocka_unit_test(test_max_shares),
        cmocka_unit_test(test_packing_by_hand),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_randomized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
