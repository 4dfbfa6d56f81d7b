/* worker: a fixed pool of threads for cryptography and key generation, off the loop thread.
 *
 * Work items are caller-owned structs (embed struct mh_work and recover the outer
 * struct with mh_container_of). work() runs on a pool thread; done() runs afterwards
 * on the loop thread, in no particular order between items. The pool never
 * allocates per item, and a busy pool makes no system call per item: a submit
 * wakes a thread only while one sleeps unwoken, and the loop is notified once per
 * batch of completions it has not collected yet. */
#ifndef MH_NODE_WORKER_H
#define MH_NODE_WORKER_H

#include <stddef.h>
#include <uv.h>

#include "common/err.h"

struct mh_work {
    void (*work)(struct mh_work *w); /* pool thread; must not touch loop-owned state */
    void (*done)(struct mh_work *w); /* loop thread */
    struct mh_work *next_;           /* private */
};

struct mh_worker_pool;

/* mh_worker_pool_new starts |threads| threads (0: one per online CPU). Loop thread.
 * Errors: MH_ENOMEM, -errno from pthread_create or uv_async_init. */
MH_MUST_USE int mh_worker_pool_new(uv_loop_t *loop, unsigned threads, struct mh_worker_pool **out);

/* Number of threads in the pool. */
unsigned mh_worker_pool_size(const struct mh_worker_pool *pool);

/* mh_worker_submit queues |w| (work and done set by the caller). Loop thread.
 * Never fails. Must not be called after mh_worker_pool_stop (the node stops taking
 * requests first); if it is, done() runs at once without work(). */
void mh_worker_submit(struct mh_worker_pool *pool, struct mh_work *w);

/* Number of items queued or running (loop thread). */
size_t mh_worker_pending(const struct mh_worker_pool *pool);

/* mh_worker_pool_stop lets running items finish, joins the threads, runs the done()
 * of everything finished, and closes the async handle; |closed| is called when the
 * pool may be freed with mh_worker_pool_free. Loop thread. */
void mh_worker_pool_stop(struct mh_worker_pool *pool, void (*closed)(void *arg), void *arg);

void mh_worker_pool_free(struct mh_worker_pool *pool);

#endif
