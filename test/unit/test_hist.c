#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "client/hist.h"

/* The histogram promises 1% relative error; the layout gives 0.4%. Test the promise. */
#define REL_ERR 0.01

static void assert_close(uint64_t got, uint64_t want)
{
    double err = got > want ? (double)(got - want) : (double)(want - got);
    if (err > REL_ERR * (double)want + 0.5)
        fail_msg("got %llu, want %llu (+-1%%)", (unsigned long long)got, (unsigned long long)want);
}

static struct mh_hist *new_hist(uint64_t highest)
{
    struct mh_hist *h = malloc(sizeof *h);
    assert_non_null(h);
    assert_int_equal(mh_hist_init(h, highest), 0);
    return h;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Exact quantile of a sorted sample, with the histogram's rank rule (ceil(q * n)). */
static uint64_t exact_q(const uint64_t *v, size_t n, double q)
{
    double r = q * (double)n;
    size_t rank = (size_t)r;
    if ((double)rank < r)
        rank++;
    if (rank == 0)
        rank = 1;
    return v[rank - 1];
}

static void test_empty(void **state)
{
    (void)state;
    struct mh_hist *h = new_hist(MH_HIST_LIMIT);
    assert_int_equal(mh_hist_count(h), 0);
    assert_int_equal(mh_hist_quantile(h, 0.5), 0);
    assert_int_equal(mh_hist_quantile(h, 1.0), 0);
    assert_int_equal(mh_hist_max(h), 0);
    assert_int_equal(mh_hist_min(h), 0);
    assert_true(mh_hist_mean(h) == 0.0);
    free(h);
}

static void test_init_rejects(void **state)
{
    (void)state;
    struct mh_hist *h = malloc(sizeof *h);
    assert_non_null(h);
    assert_int_equal(mh_hist_init(h, 0), MH_EINVAL);
    assert_int_equal(mh_hist_init(h, MH_HIST_LIMIT + 1), MH_EINVAL);
    assert_int_equal(mh_hist_init(h, 1), 0);
    free(h);
}

static void test_edges(void **state)
{
    (void)state;
    const uint64_t highest = UINT64_C(100000000000); /* 100 s in ns */
    struct mh_hist *h = new_hist(highest);
    mh_hist_record(h, 0);
    assert_int_equal(mh_hist_quantile(h, 0.5), 0);
    assert_int_equal(mh_hist_max(h), 0);
    mh_hist_record(h, 1);
    assert_int_equal(mh_hist_quantile(h, 1.0), 1);
    assert_int_equal(mh_hist_quantile(h, 0.0), 0);
    mh_hist_record(h, highest);
    assert_int_equal(mh_hist_max(h), highest);
    /* Above the ceiling: counted, at the ceiling. */
    mh_hist_record(h, highest * 5);
    mh_hist_record(h, UINT64_MAX);
    assert_int_equal(mh_hist_count(h), 5);
    assert_int_equal(mh_hist_max(h), highest);
    assert_close(mh_hist_quantile(h, 0.99), highest);
    assert_int_equal(mh_hist_min(h), 0);
    /* Exact below 256: every small value is its own slot. */
    mh_hist_reset(h);
    for (uint64_t v = 0; v < 256; v++)
        mh_hist_record(h, v);
    for (uint64_t v = 1; v <= 256; v++)
        assert_int_equal(mh_hist_quantile(h, (double)v / 256.0), v - 1);
    /* The largest trackable value of all. */
    struct mh_hist *g = new_hist(MH_HIST_LIMIT);
    mh_hist_record(g, MH_HIST_LIMIT);
    mh_hist_record(g, MH_HIST_LIMIT - 1);
    assert_int_equal(mh_hist_max(g), MH_HIST_LIMIT);
    assert_close(mh_hist_quantile(g, 0.5), MH_HIST_LIMIT - 1);
    free(g);
    free(h);
}

static void check_against_sample(struct mh_hist *h, uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    static const double QS[] = {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999};
    for (size_t i = 0; i < sizeof QS / sizeof QS[0]; i++)
        assert_close(mh_hist_quantile(h, QS[i]), exact_q(v, n, QS[i]));
    assert_int_equal(mh_hist_max(h), v[n - 1]);
    assert_int_equal(mh_hist_min(h), v[0]);
    assert_int_equal(mh_hist_count(h), n);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    double d = mh_hist_mean(h) - sum / (double)n;
    assert_true(d * d <= 1e-18 * (sum / (double)n) * (sum / (double)n) + 1e-18);
}

static void test_uniform(void **state)
{
    (void)state;
    const size_t n = 100000;
    uint64_t *v = malloc(n * sizeof *v);
    assert_non_null(v);
    struct mh_hist *h = new_hist(MH_HIST_LIMIT);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v[i] = 1000 + s % 9000000; /* 1 us .. 9 ms in ns */
        mh_hist_record(h, v[i]);
    }
    check_against_sample(h, v, n);
    free(v);
    free(h);
}

static void test_long_tail(void **state)
{
    (void)state;
    /* A long tail across many powers of two: every slot layer is used. */
    const size_t n = 50000;
    uint64_t *v = malloc(n * sizeof *v);
    assert_non_null(v);
    struct mh_hist *h = new_hist(MH_HIST_LIMIT);
    uint64_t s = 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned bits = (unsigned)(s % 34u); /* 1 .. ~1.7e10 */
        v[i] = 1 + ((s >> 8) & ((UINT64_C(1) << bits) - 1));
        mh_hist_record(h, v[i]);
    }
    check_against_sample(h, v, n);
    free(v);
    free(h);
}

static void test_constant(void **state)
{
    (void)state;
    struct mh_hist *h = new_hist(MH_HIST_LIMIT);
    for (int i = 0; i < 1000; i++)
        mh_hist_record(h, 123456789);
    /* Clamped to the exact min/max: a constant is reported exactly. */
    assert_int_equal(mh_hist_quantile(h, 0.5), 123456789);
    assert_int_equal(mh_hist_quantile(h, 0.99), 123456789);
    assert_true(mh_hist_mean(h) == 123456789.0);
    free(h);
}

static void test_merge(void **state)
{
    (void)state;
    struct mh_hist *a = new_hist(MH_HIST_LIMIT);
    struct mh_hist *b = new_hist(MH_HIST_LIMIT);
    struct mh_hist *all = new_hist(MH_HIST_LIMIT);
    for (uint64_t i = 1; i <= 5000; i++) {
        mh_hist_record(i % 2 ? a : b, i * 1000);
        mh_hist_record(all, i * 1000);
    }
    mh_hist_merge(a, b);
    assert_int_equal(mh_hist_count(a), 5000);
    assert_int_equal(memcmp(a->counts, all->counts, sizeof a->counts), 0);
    assert_int_equal(mh_hist_max(a), 5000000);
    assert_int_equal(mh_hist_min(a), 1000);
    assert_int_equal(mh_hist_quantile(a, 0.5), mh_hist_quantile(all, 0.5));
    assert_true(mh_hist_mean(a) == mh_hist_mean(all));
    /* Merging an empty histogram changes nothing; merging into an empty one copies. */
    struct mh_hist *e = new_hist(MH_HIST_LIMIT);
    mh_hist_merge(a, e);
    assert_int_equal(mh_hist_count(a), 5000);
    mh_hist_merge(e, a);
    assert_int_equal(mh_hist_count(e), 5000);
    assert_int_equal(mh_hist_quantile(e, 0.9), mh_hist_quantile(all, 0.9));
    /* Into a histogram with a lower ceiling: values above it count at the ceiling. */
    struct mh_hist *low = new_hist(2000000);
    mh_hist_merge(low, all);
    assert_int_equal(mh_hist_count(low), 5000);
    assert_int_equal(mh_hist_max(low), 2000000);
    assert_close(mh_hist_quantile(low, 0.2), 1000000);
    free(low);
    free(e);
    free(all);
    free(b);
    free(a);
}

/* The "latency_us" object of the benchmark tools: ns in, us out, max exact. */
static void test_latency_json(void **state)
{
    (void)state;
    struct mh_hist h;
    assert_int_equal(mh_hist_init(&h, MH_HIST_LIMIT), 0);
    for (uint64_t i = 1; i <= 100; i++)
        mh_hist_record(&h, i * 1000); /* 1 .. 100 us */
    mh_hist_record(&h, 123457);
    json_t *j = mh_hist_latency_json(&h);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 6);
    assert_true(json_real_value(json_object_get(j, "max")) == 123.457);
    double p50 = json_real_value(json_object_get(j, "p50"));
    assert_true(p50 > 50.0 * 0.99 && p50 < 51.0 * 1.01);
    double mean = json_real_value(json_object_get(j, "mean"));
    assert_true(mean > 51.0 && mean < 52.0); /* (5050000 + 123457) / 101 ns */
    const char *keys[] = {"p90", "p99", "p999"};
    double last = p50;
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(j, keys[i]);
        assert_true(json_is_real(v));
        assert_true(json_real_value(v) >= last);
        last = json_real_value(v);
    }
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),     cmocka_unit_test(test_init_rejects),
        cmocka_unit_test(test_edges),     cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_long_tail), cmocka_unit_test(test_constant),
        cmocka_unit_test(test_merge),     cmocka_unit_test(test_latency_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
