#include "testutil.h"

#include <pthread.h>
#include <string.h>

#include "node/worker.h"

struct item {
    struct mh_work w;
    pthread_t worker_thread;
    int done;
    unsigned value;
};

static pthread_t loop_thread;
static size_t n_done;

static void work(struct mh_work *w)
{
    struct item *it = mh_container_of(w, struct item, w);
    it->worker_thread = pthread_self();
    unsigned x = it->value;
    for (int i = 0; i < 1000; i++)
        x = x * 1103515245u + 12345u;
    it->value = x;
}

static void done(struct mh_work *w)
{
    struct item *it = mh_container_of(w, struct item, w);
    assert_true(pthread_equal(pthread_self(), loop_thread));
    it->done++;
    n_done++;
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static void test_pool(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    loop_thread = pthread_self();
    struct mh_worker_pool *p = NULL;
    assert_int_equal(mh_worker_pool_new(&loop, 3, &p), 0);
    assert_int_equal(mh_worker_pool_size(p), 3);
    enum { N = 500 };
    static struct item items[N];
    memset(items, 0, sizeof items);
    n_done = 0;
    for (unsigned i = 0; i < N; i++) {
        items[i].w.work = work;
        items[i].w.done = done;
        items[i].value = i;
        mh_worker_submit(p, &items[i].w);
    }
    assert_int_equal(mh_worker_pending(p), N);
    for (int spins = 0; n_done < N && spins < 100000; spins++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(n_done, N);
    assert_int_equal(mh_worker_pending(p), 0);
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(items[i].done, 1);
        assert_false(pthread_equal(items[i].worker_thread, loop_thread));
    }
    int closed = 0;
    mh_worker_pool_stop(p, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    mh_worker_pool_free(p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Small bursts with the pool idle in between: the threads go back to sleep every
 * round, so each round needs its wakeups (a submit signals only while a sleeper
 * is left unwoken); a lost one leaves the round unfinished. */
static void test_bursts(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    loop_thread = pthread_self();
    struct mh_worker_pool *p = NULL;
    assert_int_equal(mh_worker_pool_new(&loop, 2, &p), 0);
    enum { ROUNDS = 300 };
    static struct item items[5];
    for (unsigned r = 0; r < ROUNDS; r++) {
        unsigned k = 1 + r % 5;
        memset(items, 0, sizeof items);
        n_done = 0;
        for (unsigned i = 0; i < k; i++) {
            items[i].w.work = work;
            items[i].w.done = done;
            items[i].value = r * 8 + i;
            mh_worker_submit(p, &items[i].w);
        }
        for (int spins = 0; n_done < k && spins < 100000; spins++)
            uv_run(&loop, UV_RUN_ONCE);
        assert_int_equal(n_done, k);
        assert_int_equal(mh_worker_pending(p), 0);
        for (unsigned i = 0; i < k; i++)
            assert_int_equal(items[i].done, 1);
    }
    int closed = 0;
    mh_worker_pool_stop(p, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    mh_worker_pool_free(p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool), cmocka_unit_test(test_bursts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
