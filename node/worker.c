#include "node/worker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct mh_worker_pool {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mh_work *queue_head, *queue_tail; /* waiting for a thread */
    struct mh_work *done_head;               /* finished, waiting for the loop */
    bool stopping;
    /* Threads blocked in pthread_cond_wait, and wakeups sent to them not yet taken:
     * a submit signals only when a sleeper is left to wake, so a busy pool (every
     * thread looping on a non-empty queue) costs no futex call per item. */
    unsigned sleeping, signaled;
    size_t pending; /* loop thread only */
    unsigned n_threads;
    pthread_t *threads;
    void (*closed)(void *);
    void *closed_arg;
};

static void *worker_main(void *arg)
{
    struct mh_worker_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->queue_head == NULL && !p->stopping) {
            p->sleeping++;
            pthread_cond_wait(&p->cv, &p->mu);
            p->sleeping--;
            if (p->signaled > 0)
                p->signaled--;
        }
        if (p->queue_head == NULL)
            break;
        struct mh_work *w = p->queue_head;
        p->queue_head = w->next_;
        if (p->queue_head == NULL)
            p->queue_tail = NULL;
        pthread_mutex_unlock(&p->mu);
        w->work(w);
        pthread_mutex_lock(&p->mu);
        bool first = p->done_head == NULL;
        w->next_ = p->done_head;
        p->done_head = w;
        /* A non-empty list means the loop was told and has not collected it yet:
         * run_done takes the whole list, so one notification covers the batch. */
        if (first)
            uv_async_send(&p->async);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void run_done(struct mh_worker_pool *p)
{
    pthread_mutex_lock(&p->mu);
    struct mh_work *list = p->done_head;
    p->done_head = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list != NULL) {
        struct mh_work *next = list->next_;
        p->pending--;
        list->done(list);
        list = next;
    }
}

static void on_async(uv_async_t *h)
{
    run_done(h->data);
}

int mh_worker_pool_new(uv_loop_t *loop, unsigned threads, struct mh_worker_pool **out)
{
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    struct mh_worker_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return MH_ENOMEM;
    p->threads = calloc(threads, sizeof *p->threads);
    if (p->threads == NULL) {
        free(p);
        return MH_ENOMEM;
    }
    p->loop = loop;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int rv = uv_async_init(loop, &p->async, on_async);
    if (rv != 0)
        goto err_after_alloc;
    p->async.data = p;
    for (unsigned i = 0; i < threads; i++) {
        rv = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rv != 0) {
            rv = -rv;
            pthread_mutex_lock(&p->mu);
            p->stopping = true;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            for (unsigned j = 0; j < i; j++)
                pthread_join(p->threads[j], NULL);
            uv_close((uv_handle_t *)&p->async, NULL); /* p leaks until the loop runs: rare */
            return rv;
        }
        p->n_threads++;
    }
    *out = p;
    return 0;
err_after_alloc:
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
    return rv;
}

unsigned mh_worker_pool_size(const struct mh_worker_pool *pool)
{
    return pool->n_threads;
}

void mh_worker_submit(struct mh_worker_pool *p, struct mh_work *w)
{
    w->next_ = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        /* No thread will take it and the async handle is closing. */
        pthread_mutex_unlock(&p->mu);
        w->done(w);
        return;
    }
    p->pending++;
    {
        if (p->queue_tail != NULL)
            p->queue_tail->next_ = w;
        else
            p->queue_head = w;
        p->queue_tail = w;
        if (p->sleeping > p->signaled) {
            p->signaled++;
            pthread_cond_signal(&p->cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

size_t mh_worker_pending(const struct mh_worker_pool *p)
{
    return p->pending;
}

static void on_async_closed(uv_handle_t *h)
{
    struct mh_worker_pool *p = h->data;
    if (p->closed != NULL)
        p->closed(p->closed_arg);
}

void mh_worker_pool_stop(struct mh_worker_pool *p, void (*closed)(void *arg), void *arg)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    /* Threads drain the queue before they exit (they only stop on an empty queue). */
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    p->n_threads = 0;
    run_done(p);
    p->closed = closed;
    p->closed_arg = arg;
    uv_close((uv_handle_t *)&p->async, on_async_closed);
}

void mh_worker_pool_free(struct mh_worker_pool *p)
{
    if (p == NULL)
        return;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
